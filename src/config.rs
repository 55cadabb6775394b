//! Configuration, with const builders, and the two knobs that can change at
//! run time (C's `mallopt`).

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use crate::{NolibcAlloc, Source, MAX_MMAP_THRESHOLD_BYTES};

/// How the allocator behaves; build it with the const methods:
///
/// ```
/// use nolibc_alloc::{Config, NolibcAlloc};
/// static ALLOC: NolibcAlloc = NolibcAlloc::with_config(
///     Config::new().mmap_threshold(256 << 10).trim_threshold(1 << 20).use_brk(false),
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Blocks of at least this many bytes get a mapping of their own.
    pub mmap_threshold: usize,
    /// Whether the threshold rises (up to [`crate::MAX_MMAP_THRESHOLD_BYTES`])
    /// when a large block is freed, as glibc's does. Off once the threshold
    /// is set explicitly.
    pub adaptive_threshold: bool,
    /// Bytes of empty runs an arena keeps before giving runs back (the last
    /// 64 KiB run of a class stays past it), and the size up to which a
    /// last, empty region is kept.
    pub trim_threshold: usize,
    /// Whether to take memory from the program break: `None` decides by
    /// target (on where `target_env` is empty, i.e. no libc shares the break).
    pub use_brk: Option<bool>,
    /// Bytes of freed large blocks' mappings the mapping cache may always
    /// keep for reuse (0 and `map_cache_percent` 0: no cache).
    pub map_cache_floor: usize,
    /// The mapping cache may also keep up to this percentage of the recent
    /// peak of live large bytes.
    pub map_cache_percent: usize,
    /// A cached mapping untouched for this many large allocations and frees
    /// is unmapped; the recent peak loses 1/this of itself per event.
    pub map_cache_age: usize,
}

/// Default mmap threshold: 128 KiB, as glibc's.
pub const DEFAULT_MMAP_THRESHOLD_BYTES: usize = 128 << 10;
/// Default trim threshold: 128 KiB, as glibc's.
pub const DEFAULT_TRIM_THRESHOLD_BYTES: usize = 128 << 10;
/// Default floor of the mapping cache (see `BENCHMARKS.md`, "Mapping cache").
pub const DEFAULT_MAP_CACHE_FLOOR_BYTES: usize = 4 << 20;
/// Default share of the recent peak of live large bytes the mapping cache keeps.
pub const DEFAULT_MAP_CACHE_PERCENT: usize = 200;
/// Default age (in large allocations and frees) at which a cached mapping goes back.
pub const DEFAULT_MAP_CACHE_AGE_EVENTS: usize = 1024;

impl Config {
    /// The defaults: 128 KiB mmap threshold (adaptive), 128 KiB trim
    /// threshold, brk by target, a mapping cache of up to twice the recent
    /// peak of live large bytes (at least 4 MiB) with an age of 1024 events.
    pub const fn new() -> Self {
        Config {
            mmap_threshold: DEFAULT_MMAP_THRESHOLD_BYTES,
            adaptive_threshold: true,
            trim_threshold: DEFAULT_TRIM_THRESHOLD_BYTES,
            use_brk: None,
            map_cache_floor: DEFAULT_MAP_CACHE_FLOOR_BYTES,
            map_cache_percent: DEFAULT_MAP_CACHE_PERCENT,
            map_cache_age: DEFAULT_MAP_CACHE_AGE_EVENTS,
        }
    }

    /// Sets the mapping cache's bound: it keeps freed large mappings for
    /// reuse up to `floor_bytes`, or `percent` % of the recent peak of live
    /// large bytes if that is more. `map_cache(0, 0)` turns it off (every
    /// freed large block is unmapped at once, and the adaptive threshold
    /// moves large blocks into regions instead, as glibc does).
    pub const fn map_cache(mut self, floor_bytes: usize, percent: usize) -> Self {
        self.map_cache_floor = floor_bytes;
        self.map_cache_percent = percent;
        self
    }

    /// Sets the mapping cache's decay: a cached mapping untouched for
    /// `events` large allocations and frees is unmapped (at least 1).
    pub const fn map_cache_age(mut self, events: usize) -> Self {
        self.map_cache_age = if events == 0 { 1 } else { events };
        self
    }

    /// Sets a fixed mmap threshold (at least 4 KiB; smaller values are raised).
    pub const fn mmap_threshold(mut self, bytes: usize) -> Self {
        self.mmap_threshold = if bytes < 4096 { 4096 } else { bytes };
        self.adaptive_threshold = false;
        self
    }

    /// Sets the trim threshold.
    pub const fn trim_threshold(mut self, bytes: usize) -> Self {
        self.trim_threshold = bytes;
        self
    }

    /// Forces the use of the program break on or off.
    pub const fn use_brk(mut self, on: bool) -> Self {
        self.use_brk = Some(on);
        self
    }

    /// Whether brk is used, after the target default is applied.
    pub const fn brk_enabled(&self) -> bool {
        match self.use_brk {
            Some(on) => on,
            None => cfg!(all(target_os = "linux", target_env = "")),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

/// A [`Config`] as the allocator keeps it: every field stored so that the
/// defaults are zero bytes, which puts a default allocator `static` in
/// `.bss` (no bytes in the executable) rather than `.data`. The trim
/// threshold and whether the mmap threshold adapts can change at run time
/// (atomics, read relaxed: a plain load on every supported architecture);
/// the mmap threshold that routes sizes to the small tier never changes,
/// since live blocks are freed by the tier their layout routes to.
#[derive(Debug)]
pub(crate) struct Tuning {
    /// `mmap_threshold ^ DEFAULT_MMAP_THRESHOLD_BYTES`.
    mmap_threshold_x: usize,
    /// `trim_threshold ^ DEFAULT_TRIM_THRESHOLD_BYTES`.
    trim_threshold_x: AtomicUsize,
    /// `!adaptive_threshold`.
    fixed_threshold: AtomicBool,
    /// `use_brk`: 0 = by target, 1 = on, 2 = off.
    brk: u8,
    /// `map_cache_floor ^ DEFAULT_MAP_CACHE_FLOOR_BYTES`.
    cache_floor_x: usize,
    /// `map_cache_percent ^ DEFAULT_MAP_CACHE_PERCENT`.
    cache_percent_x: usize,
    /// `map_cache_age ^ DEFAULT_MAP_CACHE_AGE_EVENTS`.
    cache_age_x: usize,
}

impl Tuning {
    pub(crate) const fn new(c: Config) -> Self {
        Tuning {
            // At least a page, as `Config::mmap_threshold` makes it (the
            // field is public): the 16-byte classes (up to 1 KiB) then never
            // reach it, which `small_class` relies on.
            mmap_threshold_x: (if c.mmap_threshold < 4096 {
                4096
            } else {
                c.mmap_threshold
            }) ^ DEFAULT_MMAP_THRESHOLD_BYTES,
            trim_threshold_x: AtomicUsize::new(c.trim_threshold ^ DEFAULT_TRIM_THRESHOLD_BYTES),
            fixed_threshold: AtomicBool::new(!c.adaptive_threshold),
            brk: match c.use_brk {
                None => 0,
                Some(true) => 1,
                Some(false) => 2,
            },
            cache_floor_x: c.map_cache_floor ^ DEFAULT_MAP_CACHE_FLOOR_BYTES,
            cache_percent_x: c.map_cache_percent ^ DEFAULT_MAP_CACHE_PERCENT,
            cache_age_x: c.map_cache_age ^ DEFAULT_MAP_CACHE_AGE_EVENTS,
        }
    }

    pub(crate) fn config(&self) -> Config {
        Config {
            mmap_threshold: self.mmap_threshold(),
            adaptive_threshold: self.adaptive_threshold(),
            trim_threshold: self.trim_threshold(),
            use_brk: match self.brk {
                0 => None,
                1 => Some(true),
                _ => Some(false),
            },
            map_cache_floor: self.cache_floor_x ^ DEFAULT_MAP_CACHE_FLOOR_BYTES,
            map_cache_percent: self.cache_percent_x ^ DEFAULT_MAP_CACHE_PERCENT,
            map_cache_age: self.cache_age_x ^ DEFAULT_MAP_CACHE_AGE_EVENTS,
        }
    }

    /// The mapping cache's policy, for pages of `page` bytes.
    #[inline]
    pub(crate) const fn map_cache(&self, page: usize) -> crate::map_cache::Policy {
        crate::map_cache::Policy {
            page,
            floor_bytes: self.cache_floor_x ^ DEFAULT_MAP_CACHE_FLOOR_BYTES,
            percent: self.cache_percent_x ^ DEFAULT_MAP_CACHE_PERCENT,
            age_events: self.cache_age_x ^ DEFAULT_MAP_CACHE_AGE_EVENTS,
        }
    }

    #[inline]
    pub(crate) const fn mmap_threshold(&self) -> usize {
        self.mmap_threshold_x ^ DEFAULT_MMAP_THRESHOLD_BYTES
    }

    #[inline]
    pub(crate) fn trim_threshold(&self) -> usize {
        self.trim_threshold_x.load(Relaxed) ^ DEFAULT_TRIM_THRESHOLD_BYTES
    }

    #[inline]
    pub(crate) fn adaptive_threshold(&self) -> bool {
        !self.fixed_threshold.load(Relaxed)
    }
}

/// The run-time knobs (C's `mallopt`).
impl<S: Source> NolibcAlloc<S> {
    /// Sets the mmap threshold at run time (`mallopt(M_MMAP_THRESHOLD)`):
    /// from now on blocks of at least `bytes` get a mapping of their own and
    /// the threshold no longer adapts. It acts above the configured
    /// threshold ([`Config::mmap_threshold`], 128 KiB by default), below
    /// which every size is a slot of the small tier whatever is set here (a
    /// live block must be freed by the tier its layout routed it to).
    /// Returns false, changing nothing, above
    /// [`MAX_MMAP_THRESHOLD_BYTES`].
    pub fn set_mmap_threshold(&self, bytes: usize) -> bool {
        if bytes > MAX_MMAP_THRESHOLD_BYTES {
            return false;
        }
        // Adaptation off first, so that a free racing with this call does
        // not raise the threshold again after it is set.
        self.tuning.fixed_threshold.store(true, Relaxed);
        self.threshold.store(bytes, Relaxed);
        true
    }

    /// Sets the trim threshold at run time (`mallopt(M_TRIM_THRESHOLD)`):
    /// the bytes of empty runs an arena keeps before giving runs back (the
    /// last 64 KiB run of a class stays past it), and the size up to which
    /// a last, empty region is kept.
    pub fn set_trim_threshold(&self, bytes: usize) {
        self.tuning
            .trim_threshold_x
            .store(bytes ^ DEFAULT_TRIM_THRESHOLD_BYTES, Relaxed);
    }
}

#![doc = include_str!("../README.md")]
#![no_std]
// The freestanding runtime (nightly-only targets) brings an allocation-error
// handler that needs no core::fmt.
#![cfg_attr(
    all(feature = "rt", target_os = "linux", target_env = ""),
    feature(alloc_error_handler)
)]
#![warn(missing_docs, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

#[cfg(test)]
extern crate std;

pub mod class;
mod config;
pub mod fault;
mod large;
mod lock;
mod medium;
pub mod os;
mod small;
mod stats;
pub mod sys;

#[cfg(feature = "c-abi")]
pub mod c_abi;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
#[cfg(feature = "rt")]
pub mod rt;
#[cfg(test)]
mod tests;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

pub use config::Config;
pub use os::{Linux, Source};
pub use stats::{Stats, SyscallCounts};

use class::{class_for, CLASSES};
use fault::{fault, Fault};
use large::{Owner, HEADER_BYTES};
use lock::{Guard, Mutex, Solo};
use medium::{Core, Region, Release, Victim, PURGE_BATCH};
use small::{Arena, Freed};

/// Number of arenas of the small tier (each with its own lock).
pub const ARENA_COUNT: usize = 4;

/// The largest the adaptive mmap threshold grows (glibc's 64-bit cap).
pub const MAX_MMAP_THRESHOLD_BYTES: usize = 32 << 20;

/// The allocator. See the crate documentation.
pub struct NolibcAlloc<S: Source = Linux> {
    os: os::Os<S>,
    core: Mutex<Core>,
    arenas: [Mutex<Arena>; ARENA_COUNT],
    tuning: config::Tuning,
    /// The mmap threshold once raised (0 until then): raised when
    /// large blocks are freed (unless the threshold was set explicitly).
    threshold: AtomicUsize,
    /// Lets the main thread skip the arena lock while it is alone.
    solo: Solo,
    /// The thread pointer of the thread that claimed each arena (0: none).
    /// Only steers which arena a thread locks; never stands for a lock.
    owners: [AtomicUsize; ARENA_COUNT],
}

/// An arena index from a thread's identity (scrambled, top bits).
#[inline]
fn hash_to_arena(x: usize) -> usize {
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15u64 as usize) >> (usize::BITS - 2)) % ARENA_COUNT
}

impl NolibcAlloc<Linux> {
    /// The allocator with the default [`Config`], over the Linux kernel.
    pub const fn new() -> Self {
        Self::with_config(Config::new())
    }

    /// The allocator with `config`, over the Linux kernel.
    pub const fn with_config(config: Config) -> Self {
        Self::with_source(Linux, config)
    }
}

impl Default for NolibcAlloc<Linux> {
    fn default() -> Self {
        Self::new()
    }
}

/// What kind of block a pointer is, as found by [`NolibcAlloc::locate`].
enum Block {
    Small(usize),
    Medium {
        region: NonNull<Region>,
        len: usize,
        pad: usize,
    },
    Large {
        map: NonNull<u8>,
        len: usize,
        pad: usize,
    },
}

impl<S: Source> NolibcAlloc<S> {
    /// The allocator over any [`Source`] (a fake one in tests).
    pub const fn with_source(source: S, config: Config) -> Self {
        NolibcAlloc {
            os: os::Os::new(source),
            core: Mutex::new(Core::new(config.brk_enabled())),
            arenas: [const { Mutex::new(Arena::new()) }; ARENA_COUNT],
            threshold: AtomicUsize::new(0),
            solo: Solo::new(),
            owners: [const { AtomicUsize::new(0) }; ARENA_COUNT],
            tuning: config::Tuning::new(config),
        }
    }

    /// The configuration.
    pub fn config(&self) -> Config {
        self.tuning.config()
    }

    /// The source of memory.
    pub fn source(&self) -> &S {
        &self.os.source
    }

    /// Enters for a slow public operation that locks every arena: the main
    /// thread in solo mode locks them too (harmless), another thread switches
    /// the process to locking first.
    fn enter_locked(&self) -> bool {
        self.solo.enter(&self.os.source)
    }

    fn leave_locked(&self, solo: bool) {
        if solo {
            self.solo.leave();
        }
    }

    /// Whether the main thread is still alone and skips the arena lock.
    pub fn is_solo(&self) -> bool {
        self.solo.is_solo()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let solo = self.enter_locked();
        let (mut in_use, mut peak) = (0, 0);
        for arena in &self.arenas {
            let a = arena.lock();
            in_use += a.in_use_bytes;
            peak += a.peak_in_use_bytes;
        }
        self.leave_locked(solo);
        self.os.counters.snapshot(in_use, peak)
    }

    /// The current mmap threshold in bytes.
    pub fn mmap_threshold(&self) -> usize {
        self.threshold.load(Relaxed).max(self.tuning.mmap_threshold())
    }

    /// Gives every empty run and every empty region back to the kernel;
    /// returns the bytes released.
    pub fn trim(&self) -> usize {
        let solo = self.enter_locked();
        let mut released = 0;
        for index in 0..ARENA_COUNT {
            released += self.drain_arena(index);
        }
        released += self.give_back_all();
        self.leave_locked(solo);
        released
    }

    /// Gives every dirty run and every empty region back to the kernel;
    /// returns the bytes.
    fn give_back_all(&self) -> usize {
        let mut released = 0;
        loop {
            let (victims, n) = self.core.lock().drain_dirty();
            if n == 0 {
                break;
            }
            released += victims.iter().flatten().map(|v| v.bytes).sum::<usize>();
            self.purge(&victims[..n]);
        }
        loop {
            let (release, bytes) = self.core.lock().release_empty_region(&self.os);
            if bytes == 0 {
                break;
            }
            released += bytes;
            self.finish(release);
        }
        released
    }

    /// Gives every cached empty run of an arena to the core; returns the bytes.
    fn drain_arena(&self, index: usize) -> usize {
        let mut released = 0;
        let mut runs = [(NonNull::<u8>::dangling(), 0usize, ptr::null_mut::<u8>()); 16];
        loop {
            let mut n = 0;
            self.arenas[index].lock().drain_empty(|mem, bytes, region| {
                if n < runs.len() {
                    runs[n] = (mem, bytes, region);
                    n += 1;
                    true
                } else {
                    false
                }
            });
            for &(mem, bytes, region) in &runs[..n] {
                released += bytes;
                // SAFETY: the run was unlinked from its arena and is ours alone.
                unsafe { self.release_run(mem, bytes, region, self.tuning.trim_threshold()) };
            }
            if n < runs.len() {
                return released;
            }
        }
    }

    /// Checks every invariant of every tier (arenas, runs, regions); stops
    /// the process on a violation. Returns the bytes in use in the small tier.
    /// Slow: for tests and fuzzing.
    pub fn validate(&self) -> usize {
        let solo = self.enter_locked();
        let mut small = 0;
        for arena in &self.arenas {
            small += arena.lock().validate();
        }
        self.core.lock().validate();
        self.leave_locked(solo);
        small
    }

    /// Number of regions the core holds (for tests).
    pub fn region_count(&self) -> usize {
        self.core.lock().region_count()
    }

    /// Locks an arena for the calling thread. Where the thread has an
    /// identity (a C library's thread pointer), the thread claims an arena
    /// of its own the first time and keeps it: two threads then never share
    /// one while there are arenas left. Otherwise (no C library, or all
    /// arenas claimed) the arena the caller's stack address suggests is
    /// tried, then the first free one after it.
    #[inline]
    fn lock_arena(&self) -> (usize, Guard<'_, Arena>) {
        let tp = lock::thread_pointer();
        if tp != 0 {
            let hint = hash_to_arena(tp >> 12);
            for i in 0..ARENA_COUNT {
                let index = (hint + i) % ARENA_COUNT;
                let owner = self.owners[index].load(Relaxed);
                if owner == tp || (owner == 0 && self.owners[index].compare_exchange(0, tp, Relaxed, Relaxed).is_ok()) {
                    return (index, self.arenas[index].lock());
                }
            }
        }
        let marker = 0u8;
        let sp = ptr::addr_of!(marker) as usize;
        let hint = hash_to_arena(sp >> 16);
        for i in 0..ARENA_COUNT {
            let index = (hint + i) % ARENA_COUNT;
            if let Some(guard) = self.arenas[index].try_lock() {
                return (index, guard);
            }
        }
        (hint, self.arenas[hint].lock())
    }

    #[inline]
    fn alloc_small(&self, class: usize) -> *mut u8 {
        if self.solo.enter(&self.os.source) {
            // SAFETY: solo mode: no other thread is in the allocator.
            let arena = unsafe { self.arenas[0].get_unchecked() };
            let p = match arena.alloc(class) {
                Some(p) => p.as_ptr(),
                None => self.alloc_from_new_run(arena, 0, class),
            };
            self.solo.leave();
            return p;
        }
        let (index, mut arena) = self.lock_arena();
        match arena.alloc(class) {
            Some(p) => p.as_ptr(),
            None => self.alloc_from_new_run(&mut arena, index, class),
        }
    }

    #[cold]
    fn alloc_from_new_run(&self, arena: &mut Arena, index: usize, class: usize) -> *mut u8 {
        let bytes = CLASSES[class].run_bytes as usize;
        let got = {
            let mut core = self.core.lock();
            match core.take_dirty(bytes) {
                Some(run) => Some(run),
                None => core.alloc(&self.os, bytes, bytes),
            }
        };
        match got {
            // SAFETY: the core handed us `bytes` aligned to `bytes`.
            Some((mem, region)) => unsafe {
                arena
                    .alloc_from_new_run(class, mem, index, region.as_ptr().cast())
                    .as_ptr()
            },
            None => ptr::null_mut(),
        }
    }

    /// # Safety
    /// `ptr` is a live slot of `class` (checked in part).
    #[inline]
    unsafe fn free_small(&self, ptr: NonNull<u8>, class: usize) {
        // SAFETY: the caller vouches for the slot; `run_of` checks it.
        let Some(run) = (unsafe { small::run_of(ptr, class) }) else {
            self.bad_pointer(ptr)
        };
        // SAFETY: `run` was checked.
        let index = unsafe { small::arena_of(run) };
        if index >= ARENA_COUNT {
            fault(Fault::Corrupt("run arena"), ptr.as_ptr() as usize);
        }
        let trim = self.tuning.trim_threshold();
        let freed = if self.solo.enter(&self.os.source) {
            // SAFETY: solo mode: no other thread is in the allocator; the run
            // belongs to that arena.
            let freed = unsafe { self.arenas[index].get_unchecked().free(run, ptr, trim) };
            self.solo.leave();
            freed
        } else {
            // SAFETY: the run belongs to that arena.
            unsafe { self.arenas[index].lock().free(run, ptr, trim) }
        };
        match freed {
            Freed::Done => {}
            // SAFETY: the run was unlinked and is ours alone.
            Freed::ReleaseRun(mem, bytes, region) => unsafe { self.release_run(mem, bytes, region, trim) },
            Freed::Idle => {
                self.drain_arena(index);
                if self.core.lock().live_bytes() == 0 {
                    self.give_back_all();
                }
            }
        }
    }

    /// Gives an empty run back to the core, which keeps it dirty for reuse
    /// and may pick older dirty runs to purge.
    ///
    /// # Safety
    /// The run is unlinked from its arena and nothing uses it.
    unsafe fn release_run(&self, mem: NonNull<u8>, bytes: usize, region: *mut u8, floor: usize) {
        let Some(region) = NonNull::new(region.cast::<Region>()) else {
            fault(Fault::Corrupt("run region"), mem.as_ptr() as usize);
        };
        let (victims, n, idle) = {
            let mut core = self.core.lock();
            // SAFETY: the caller hands the run over.
            let (victims, n) = unsafe { core.put_dirty(mem, bytes, region, floor) };
            (victims, n, core.idle_after_burst())
        };
        self.purge(&victims[..n]);
        if idle {
            self.give_back_all();
        }
    }

    /// Discards the pages of dirty runs (outside any lock), then returns the
    /// runs to their heaps, which may give regions back.
    fn purge(&self, victims: &[Option<Victim>]) {
        if victims.is_empty() {
            return;
        }
        for v in victims.iter().flatten() {
            // All of it: the heap then writes a hole header (faulting one
            // page back in) only where the run starts a hole of its own.
            // SAFETY: the run is ours alone (unlisted) and its contents are dead.
            unsafe { self.os.discard(v.mem, v.bytes) };
        }
        let mut releases = [const { Release::Nothing }; PURGE_BATCH];
        {
            let mut core = self.core.lock();
            for (v, out) in victims.iter().flatten().zip(releases.iter_mut()) {
                // SAFETY: the run was carved from this region with this layout.
                *out = unsafe {
                    core.dealloc(
                        &self.os,
                        v.mem,
                        v.bytes,
                        v.bytes,
                        v.region,
                        self.tuning.trim_threshold(),
                    )
                };
            }
        }
        for release in releases {
            self.finish(release);
        }
    }

    fn finish(&self, release: Release) {
        if let Release::Unmap(base, len) = release {
            // SAFETY: the core unlinked the region; nobody can reach it.
            unsafe { self.os.unmap(base, len) };
        }
    }

    /// Allocation that is not a slot: medium or large.
    #[cold]
    fn alloc_block(&self, size: usize, align: usize, zero: bool) -> *mut u8 {
        if size >= self.mmap_threshold() || align > self.os.page() {
            return large::alloc(&self.os, size, align);
        }
        let pad = large::pad_for(align);
        let Some(len) = size.checked_add(pad) else {
            return ptr::null_mut();
        };
        let got = self.core.lock().alloc(&self.os, len, align.max(16));
        let Some((block, region)) = got else {
            return ptr::null_mut();
        };
        // SAFETY: `pad` bytes at the block start hold the header.
        unsafe {
            let user = NonNull::new_unchecked(block.as_ptr().add(pad));
            large::write_header(user, region.as_ptr() as usize, len, pad, Owner::Medium);
            stats::Counters::add(&self.os.counters.block_bytes, &self.os.counters.peak_block_bytes, len);
            if zero {
                ptr::write_bytes(user.as_ptr(), 0, size);
            }
            user.as_ptr()
        }
    }

    /// The size class serving `size` and `align`, if the small tier does.
    #[inline]
    fn small_class(&self, size: usize, align: usize) -> Option<usize> {
        if size < self.tuning.mmap_threshold() {
            class_for(size, align)
        } else {
            None
        }
    }

    /// Finds the tier of a live block. With `probe`, a block with a header
    /// is first checked to be mapped (one `madvise`): a large block freed
    /// twice has no mapping left, and reading its header would crash instead
    /// of reporting the fault. `dealloc` probes; `realloc` does not.
    ///
    /// # Safety
    /// `ptr` was returned by this allocator for `layout` and is live (checked in part).
    #[inline]
    unsafe fn locate(&self, ptr: NonNull<u8>, layout: Layout, probe: bool) -> Block {
        if let Some(class) = self.small_class(layout.size(), layout.align()) {
            return Block::Small(class);
        }
        let header = ptr.as_ptr().wrapping_sub(HEADER_BYTES);
        if fault::CHECKS && probe && !self.os.source.is_mapped(header) {
            fault(Fault::InvalidPointer, ptr.as_ptr() as usize);
        }
        // SAFETY: non-slot blocks have a header, and its page is mapped.
        let Some((kind, owner, len, pad)) = (unsafe { large::read_header(ptr) }) else {
            self.bad_pointer(ptr)
        };
        // The owner's header lies in the same region or mapping as the block.
        let Some(owner) = NonNull::new(ptr.as_ptr().with_addr(owner)) else {
            fault(Fault::InvalidPointer, ptr.as_ptr() as usize);
        };
        if len < pad + layout.size() {
            fault(Fault::WrongLayout, ptr.as_ptr() as usize);
        }
        match kind {
            Owner::Medium => Block::Medium {
                region: owner.cast(),
                len,
                pad,
            },
            Owner::Large => Block::Large { map: owner, len, pad },
        }
    }

    /// # Safety
    /// `ptr` is a live non-slot block (checked in part).
    unsafe fn free_block(&self, ptr: NonNull<u8>, block: Block) {
        // SAFETY: the caller vouches for the block; its header was checked.
        unsafe { large::mark_freed(ptr) };
        match block {
            Block::Medium { region, len, pad } => {
                stats::Counters::sub(&self.os.counters.block_bytes, len);
                let (release, idle) = {
                    let mut core = self.core.lock();
                    // SAFETY: the block came from this region's heap with this length.
                    let release = unsafe {
                        let base = NonNull::new_unchecked(ptr.as_ptr().sub(pad));
                        core.dealloc(&self.os, base, len, 16, region, self.tuning.trim_threshold())
                    };
                    (release, core.idle_after_burst())
                };
                self.finish(release);
                if idle {
                    self.give_back_all();
                }
            }
            Block::Large { map, len, .. } => {
                stats::Counters::sub(&self.os.counters.block_bytes, len);
                if self.tuning.adaptive_threshold() && len > self.mmap_threshold() && len <= MAX_MMAP_THRESHOLD_BYTES {
                    self.threshold.store(len, Relaxed);
                }
                // SAFETY: the mapping is the block's alone.
                unsafe { self.os.unmap(map, len) };
            }
            Block::Small(_) => {}
        }
    }

    /// Usable bytes of the block at `ptr` allocated for `layout`.
    ///
    /// # Safety
    /// `ptr` is live and was allocated for `layout`.
    pub unsafe fn usable_size(&self, ptr: NonNull<u8>, layout: Layout) -> usize {
        // SAFETY: forwarded.
        match unsafe { self.locate(ptr, layout, false) } {
            Block::Small(class) => CLASSES[class].size as usize,
            Block::Medium { len, pad, .. } | Block::Large { len, pad, .. } => len - pad,
        }
    }

    /// Finds the tier of a live block from its address alone (for C's
    /// `free`, which has no size): a live block header in front of it means
    /// medium or large, else the run found by probing (see `small::find_run`).
    ///
    /// # Safety
    /// `ptr` was returned by this allocator and is live (checked in part).
    unsafe fn locate_unsized(&self, ptr: NonNull<u8>) -> (Block, usize) {
        // Slots start at least 64 bytes into their run, blocks have their
        // header: the 32 bytes in front are readable either way.
        // SAFETY: see above.
        if unsafe { large::has_header(ptr) } {
            // SAFETY: a live header.
            let Some((kind, owner, len, pad)) = (unsafe { large::read_header(ptr) }) else {
                self.bad_pointer(ptr)
            };
            let owner = ptr.as_ptr().with_addr(owner);
            // SAFETY: owner addresses are never null.
            let owner = unsafe { NonNull::new_unchecked(owner) };
            let block = match kind {
                Owner::Medium => Block::Medium {
                    region: owner.cast(),
                    len,
                    pad,
                },
                Owner::Large => Block::Large { map: owner, len, pad },
            };
            return (block, len - pad);
        }
        // SAFETY: not a block with a header, so a slot.
        match unsafe { small::find_run(ptr, |_| true) } {
            Some((_, class)) => (Block::Small(class), CLASSES[class].size as usize),
            None => self.bad_pointer(ptr),
        }
    }

    /// Stops the process for a pointer that is not what its layout says:
    /// "wrong layout" if it is a live block of another tier or class, else
    /// "invalid pointer". A cold path: it may make system calls to check
    /// that what it reads is mapped.
    #[cold]
    #[inline(never)]
    fn bad_pointer(&self, ptr: NonNull<u8>) -> ! {
        let addr = ptr.as_ptr() as usize;
        let readable = |p: *const u8| self.os.source.is_mapped(p);
        // SAFETY: the header bytes are read only if their page is mapped.
        if readable(ptr.as_ptr().wrapping_sub(HEADER_BYTES)) && unsafe { large::has_header(ptr) } {
            fault(Fault::WrongLayout, addr);
        }
        // SAFETY: every probed address is checked to be mapped first.
        if unsafe { small::find_run(ptr, readable) }.is_some() {
            fault(Fault::WrongLayout, addr);
        }
        fault(Fault::InvalidPointer, addr)
    }

    /// Frees a block knowing only its address (C's `free`).
    ///
    /// # Safety
    /// `ptr` was returned by this allocator and is live.
    pub unsafe fn free_unsized(&self, ptr: NonNull<u8>) {
        // SAFETY: forwarded.
        unsafe {
            let (block, _) = self.locate_unsized(ptr);
            self.dealloc_located(ptr, block);
        }
    }

    /// Usable bytes of a live block, from its address alone
    /// (`malloc_usable_size`).
    ///
    /// # Safety
    /// `ptr` was returned by this allocator and is live.
    pub unsafe fn usable_size_unsized(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: forwarded.
        unsafe { self.locate_unsized(ptr).1 }
    }

    /// Resizes a block knowing only its address (C's `realloc`): keeps
    /// `min(usable size, new_size)` bytes, aligned to `align` (C: 16);
    /// returns null (the block intact) on failure.
    ///
    /// # Safety
    /// `ptr` was returned by this allocator and is live; `align` is a power of two.
    pub unsafe fn realloc_unsized(&self, ptr: NonNull<u8>, new_size: usize, align: usize) -> *mut u8 {
        if Layout::from_size_align(new_size, align).is_err() {
            return ptr::null_mut();
        }
        // SAFETY: forwarded.
        unsafe {
            let (block, usable) = self.locate_unsized(ptr);
            self.realloc_located(ptr, block, usable, align, new_size)
        }
    }

    /// Resizes the block at `ptr`, located as `block`, holding `old_size`
    /// bytes, to `new_size` bytes aligned to `align`.
    ///
    /// # Safety
    /// `ptr` is live and located as `block`; `new_size` and `align` make a
    /// valid layout; if the block may stay in place, its alignment is `align`.
    unsafe fn realloc_located(
        &self,
        ptr: NonNull<u8>,
        block: Block,
        old_size: usize,
        align: usize,
        new_size: usize,
    ) -> *mut u8 {
        match block {
            Block::Small(class) => {
                if self.small_class(new_size, align) == Some(class) {
                    return ptr.as_ptr();
                }
            }
            // A block stays where it is only if its new layout still routes
            // away from the small tier.
            Block::Medium { len, pad, .. } => {
                let usable = len - pad;
                let aligned = (ptr.as_ptr() as usize).is_multiple_of(align);
                if aligned
                    && new_size <= usable
                    && new_size >= usable / 2
                    && self.small_class(new_size, align).is_none()
                {
                    return ptr.as_ptr();
                }
            }
            Block::Large { map, len, pad } => {
                let usable = len - pad;
                // Remapping keeps the offset in the page: aligned stays aligned
                // for alignments up to a page.
                let aligned = (ptr.as_ptr() as usize).is_multiple_of(align);
                if aligned
                    && new_size <= usable
                    && new_size >= usable / 2
                    && self.small_class(new_size, align).is_none()
                {
                    return ptr.as_ptr();
                }
                if aligned && new_size >= self.tuning.mmap_threshold() && align <= self.os.page() {
                    // SAFETY: the block is ours; remap keeps its contents.
                    if let Some(p) = unsafe { large::remap(&self.os, map, len, pad, new_size) } {
                        return p;
                    }
                }
            }
        }
        // A block that grows past the mmap threshold from a good size is
        // likely to grow again: give it a mapping of its own, which later
        // growth remaps in place.
        let grows_steadily = old_size >= self.tuning.mmap_threshold() / 4;
        let new = if new_size > old_size && grows_steadily && new_size >= self.tuning.mmap_threshold() {
            large::alloc(&self.os, new_size, align)
        } else {
            // SAFETY: a layout of the same alignment; new_size was checked by the caller.
            unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, align)) }
        };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct; copy what both hold.
            unsafe {
                ptr::copy_nonoverlapping(ptr.as_ptr(), new, old_size.min(new_size));
                self.dealloc_located(ptr, block);
            }
        }
        new
    }

    /// # Safety
    /// `ptr` is a live block located as `block`.
    #[inline]
    unsafe fn dealloc_located(&self, ptr: NonNull<u8>, block: Block) {
        match block {
            // SAFETY: located as a slot of this class.
            Block::Small(class) => unsafe { self.free_small(ptr, class) },
            // SAFETY: located as a block with a header.
            other => unsafe { self.free_block(ptr, other) },
        }
    }
}

// SAFETY: every block handed out is at least `layout.size()` bytes, aligned to
// `layout.align()`, and not handed out again until freed; out of memory
// returns null; nothing panics (misuse that is detected aborts).
unsafe impl<S: Source> GlobalAlloc for NolibcAlloc<S> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        match self.small_class(size, align) {
            Some(class) => self.alloc_small(class),
            None => self.alloc_block(size, align, false),
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        let Some(class) = self.small_class(size, align) else {
            return self.alloc_block(size, align, true);
        };
        let p = self.alloc_small(class);
        if !p.is_null() {
            // SAFETY: a fresh slot of at least `size` bytes.
            unsafe { ptr::write_bytes(p, 0, size) };
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(ptr) = NonNull::new(ptr) else { return };
        // SAFETY: the caller vouches for ptr and layout.
        unsafe {
            let block = self.locate(ptr, layout, true);
            self.dealloc_located(ptr, block)
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Layout::from_size_align(new_size, layout.align()).is_err() {
            return ptr::null_mut();
        }
        let Some(ptr) = NonNull::new(ptr) else {
            fault(Fault::InvalidPointer, 0);
        };
        // SAFETY: forwarded from the caller.
        unsafe {
            let block = self.locate(ptr, layout, false);
            self.realloc_located(ptr, block, layout.size(), layout.align(), new_size)
        }
    }
}

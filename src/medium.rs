//! Medium tier, the free-list core: a `linked_list_allocator` heap per region.
//!
//! Regions come from the program break (one region extended in place while
//! the break grows) or from mmap (when brk is off, fails, or would come too
//! close to the stack), growing geometrically. Runs of the small tier and
//! medium blocks are carved from these heaps. A region whose heap is empty is
//! given back (munmap, or the break lowered), except a small last one.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use linked_list_allocator::Heap;

use crate::fault::{fault, fault_in, Call, Fault};
use crate::map_cache::{Evicted, MapCache};
use crate::os::{align_up, Os, Source};

/// First mmap region size; each new one doubles, up to [`MAX_REGION_BYTES`].
pub const FIRST_REGION_BYTES: usize = 4 << 20;
/// The region of the process's first small blocks (see `first_blocks`),
/// when no region exists and the break does not serve: a few pages, so
/// that a program that allocates little reserves little address space.
pub const FIRST_BLOCKS_REGION_BYTES: usize = 16 << 10;
/// Largest geometric mmap region (a bigger request gets a region its size).
pub const MAX_REGION_BYTES: usize = 64 << 20;
/// Smallest step by which the break is moved.
pub const BRK_STEP_BYTES: usize = 256 << 10;
/// Alignment of region headers and heap bottoms.
const HEADER_ALIGN: usize = 64;

/// Header at the start of every region.
#[repr(C)]
pub(crate) struct Region {
    /// The free list over `[bottom, base + len)`.
    heap: Heap,
    /// Where the region starts (this header).
    base: NonNull<u8>,
    /// Bytes from `base` owned by the region (for brk: up to the break).
    len: usize,
    next: *mut Region,
    prev: *mut Region,
    /// Whether the region is the brk one (else a mapping).
    brk: bool,
    /// Bytes of this region's runs on the dirty lists. Invariant: at most
    /// `heap.used()`; equal means only dirty runs are left in the region.
    dirty: usize,
}

const HEADER_BYTES: usize = (core::mem::size_of::<Region>() + HEADER_ALIGN - 1) & !(HEADER_ALIGN - 1);

/// Whether the target's default is to use the break (no C library).
const BRK_BY_DEFAULT: bool = cfg!(all(target_os = "linux", target_env = ""));

/// How the program break may be used. The target's default state is 0, so
/// that a default allocator static is all zero bytes and lives in `.bss`
/// (no file bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum BrkState {
    /// Usable: grow it.
    On = if BRK_BY_DEFAULT { 0 } else { 1 },
    /// Off by configuration or target.
    Off = if BRK_BY_DEFAULT { 1 } else { 0 },
    /// It failed once: keep growing with mmap (as musl does).
    Failed = 2,
}

/// An empty run handed back by an arena and kept, dirty, for the next
/// arena that needs a run of its size: reused without a system call or a
/// page fault. Lives in the run's first bytes.
#[repr(C)]
struct DirtyRun {
    next: *mut DirtyRun,
    prev: *mut DirtyRun,
    region: *mut Region,
    bytes: usize,
    /// `Core::run_events` when the run became dirty.
    since: usize,
}

/// Run sizes, one dirty list each.
const RUN_SIZES: [usize; 3] = [
    crate::class::RUN_BYTES_SMALL,
    crate::class::RUN_BYTES_MID,
    crate::class::RUN_BYTES_BIG,
];

/// Dirty runs are kept up to this percentage of the recent peak of live
/// bytes (or the floor, the trim threshold, if that is more): runs that cycle
/// between empty and in use are reused without a `madvise` or a page fault,
/// and a program freeing much of what it had keeps about what it recently
/// used, until the peak decays (see [`PEAK_DECAY_EVENTS`]). Beyond that the
/// oldest runs go back to the kernel; after a burst freed entirely,
/// everything goes back at once (`idle_after_burst`). (jemalloc decays dirty
/// pages by time; this counts events, which needs no clock. The earlier rule,
/// "older than 1024 run events", cost the fragmentation workload 2,529
/// `madvise` calls, one per run; 100 % still cost 189, since `used_bytes`
/// counts whole runs while the peak decays during the frees; 125 % cost 0.)
pub(crate) const DIRTY_KEEP_PERCENT: usize = 125;

/// The recent peak of live bytes loses 1/this of itself per core event.
pub(crate) const PEAK_DECAY_EVENTS: usize = 65536;

/// A burst of at least this many live bytes, all freed, makes the allocator
/// give everything back at once (see [`Core::idle_after_burst`]).
pub(crate) const IDLE_PURGE_MIN_BYTES: usize = 2 << 20;

/// Most runs purged per call of [`Core::put_dirty`].
pub(crate) const PURGE_BATCH: usize = 4;

/// A dirty run chosen to go back to its heap (after its pages are discarded).
#[derive(Clone, Copy)]
pub(crate) struct Victim {
    pub mem: NonNull<u8>,
    pub bytes: usize,
    pub region: NonNull<Region>,
}

/// The core: every region, guarded by one lock.
pub(crate) struct Core {
    /// Dirty runs by size, newest first (`dirty[i]` holds runs of `RUN_SIZES[i]`).
    dirty: [*mut DirtyRun; 3],
    /// Oldest of each list.
    dirty_tail: [*mut DirtyRun; 3],
    /// Bytes in dirty runs. Invariant: the sum of the lists' run sizes.
    dirty_bytes: usize,
    /// Bytes carved from heaps and not returned (dirty runs included).
    used_bytes: usize,
    /// Runs handed to or taken from the dirty lists so far (the dirty runs' clock).
    pub(crate) run_events: usize,
    /// Bytes of regions whose heap is empty. Invariant: the sum of `len`
    /// over the linked regions with `heap.used() == 0`.
    idle_region_bytes: usize,
    /// A slowly decaying high-water mark of `used_bytes - dirty_bytes`: when
    /// the program has freed nearly everything it had, dirty runs go back
    /// to the kernel down to the floor; while it is busy, more are kept.
    recent_peak_bytes: usize,
    /// Regions, newest first. Invariant: `regions` links exactly `region_count` live regions.
    regions: *mut Region,
    region_count: usize,
    /// The region of the process's first small blocks (see
    /// [`Core::alloc_first`]), null if none (not yet, or given back).
    first_region: *mut Region,
    /// The region the break extends, if any. Invariant: its end is the break
    /// as last set by us.
    brk_region: *mut Region,
    pub(crate) brk_state: BrkState,
    next_region_bytes: usize,
    /// Lowest address the stack may grow down to; 0 until read.
    stack_floor: usize,
    /// Freed large blocks' mappings kept for reuse (under this lock).
    pub(crate) maps: MapCache,
}

// SAFETY: only used under the core lock; the pointers point into regions the
// allocator owns.
unsafe impl Send for Core {}

/// What the caller must do after unlocking.
#[must_use]
pub(crate) enum Release {
    Nothing,
    /// munmap this range.
    Unmap(NonNull<u8>, usize),
}

impl Core {
    pub(crate) const fn new(use_brk: bool) -> Self {
        Core {
            dirty: [ptr::null_mut(); 3],
            dirty_tail: [ptr::null_mut(); 3],
            dirty_bytes: 0,
            used_bytes: 0,
            recent_peak_bytes: 0,
            run_events: 0,
            idle_region_bytes: 0,
            regions: ptr::null_mut(),
            region_count: 0,
            first_region: ptr::null_mut(),
            brk_region: ptr::null_mut(),
            brk_state: if use_brk { BrkState::On } else { BrkState::Off },
            next_region_bytes: 0,
            stack_floor: 0,
            maps: MapCache::new(),
        }
    }

    /// Carves `size` bytes aligned to `align` from some region, growing if
    /// needed. Returns the block and its region.
    pub(crate) fn alloc<S: Source>(
        &mut self,
        os: &Os<S>,
        size: usize,
        align: usize,
    ) -> Option<(NonNull<u8>, NonNull<Region>)> {
        let layout = Layout::from_size_align(size, align).ok()?;
        let mut region = self.regions;
        while !region.is_null() {
            if let Some(p) = self.carve(region, layout) {
                // SAFETY: `region` is non-null.
                return Some((p, unsafe { NonNull::new_unchecked(region) }));
            }
            // SAFETY: linked regions are live.
            region = unsafe { (*region).next };
        }
        // Room for the block anywhere in a fresh hole, plus hole bookkeeping.
        let need = size.checked_add(align)?.checked_add(HEADER_ALIGN)?;
        let region = match self.grow_brk(os, need) {
            Some(r) => r,
            None => self.map_region(os, need)?,
        };
        // The region just got at least `need` free bytes at its end.
        let p = self.carve(region.as_ptr(), layout)?;
        Some((p, region))
    }

    /// Allocates from one region's heap, keeping the counters.
    fn carve(&mut self, region: *mut Region, layout: Layout) -> Option<NonNull<u8>> {
        // SAFETY: linked regions are live and ours under the lock.
        let r = unsafe { &mut *region };
        let was_idle = r.heap.used() == 0;
        let p = r.heap.allocate_first_fit(layout).ok()?;
        if was_idle {
            self.idle_region_bytes -= r.len;
        }
        self.used_bytes += layout.size();
        Some(p)
    }

    /// Returns a block to its region's heap; may give the region back.
    ///
    /// # Safety
    /// `ptr` was returned by [`Core::alloc`] with this `size` and `align`, and
    /// `region` with it. `call` names the entry point in a fault message
    /// (`None` for the allocator's own returns of runs).
    #[allow(clippy::too_many_arguments)] // the call name rides along for the cold fault
    pub(crate) unsafe fn dealloc<S: Source>(
        &mut self,
        os: &Os<S>,
        ptr: NonNull<u8>,
        size: usize,
        align: usize,
        region: NonNull<Region>,
        trim_threshold: usize,
        call: Option<Call>,
    ) -> Release {
        let region = region.as_ptr();
        // SAFETY: the caller vouches for block and region.
        let r = unsafe { &mut *region };
        let addr = ptr.as_ptr() as usize;
        if addr < r.heap.bottom() as usize || addr >= r.heap.top() as usize {
            match call {
                Some(call) => fault_in(call, Fault::InvalidPointer, addr),
                None => fault(Fault::InvalidPointer, addr),
            }
        }
        // SAFETY: the layout is valid: it was valid when allocated.
        let layout = unsafe { Layout::from_size_align_unchecked(size, align) };
        // SAFETY: block and layout as allocated.
        unsafe { r.heap.deallocate(ptr, layout) };
        self.used_bytes -= size;
        if r.heap.used() != 0 {
            return Release::Nothing;
        }
        self.idle_region_bytes += r.len;
        // The last region stays (until `trim`), so that a program that frees
        // and allocates again does not map and unmap a region each time; so
        // do empty regions, as many bytes as the recent peak of live bytes
        // while something is live, so that a
        // program churning big blocks does not map, fault in and unmap its
        // memory over and over (a burst freed entirely is given back by
        // `NolibcAlloc` at once, see `idle_after_burst`).
        let live = self.note_live();
        let keep_last = self.region_count == 1 && trim_threshold != 0;
        let keep_for_peak = live > 0 && self.idle_region_bytes <= self.recent_peak_bytes;
        // A brk region below a newer one cannot lower the break.
        let buried = r.brk && region != self.brk_region;
        if keep_last || keep_for_peak || buried {
            return Release::Nothing;
        }
        let (brk, base, len) = (r.brk, r.base, r.len);
        self.idle_region_bytes -= len;
        self.unlink(region);
        if brk {
            // Lower the break back to the region start.
            // SAFETY: the whole region, from base to the break, is ours and empty.
            unsafe { os.brk(base.as_ptr() as usize + len, base) };
            self.brk_region = ptr::null_mut();
            Release::Nothing
        } else {
            Release::Unmap(base, len)
        }
    }

    /// A dirty run of `bytes`, if one is kept.
    pub(crate) fn take_dirty(&mut self, bytes: usize) -> Option<(NonNull<u8>, NonNull<Region>)> {
        let i = RUN_SIZES.iter().position(|&b| b == bytes)?;
        let run = self.dirty[i];
        if run.is_null() {
            return None;
        }
        // SAFETY: listed dirty runs are live memory of ours.
        unsafe {
            self.dirty[i] = (*run).next;
            if (*run).next.is_null() {
                self.dirty_tail[i] = ptr::null_mut();
            } else {
                (*(*run).next).prev = ptr::null_mut();
            }
            self.dirty_bytes -= bytes;
            (*(*run).region).dirty -= bytes;
            self.run_events += 1;
            Some((
                NonNull::new_unchecked(run.cast()),
                NonNull::new_unchecked((*run).region),
            ))
        }
    }

    /// Keeps an empty run dirty; returns the runs to purge: the oldest,
    /// while the dirty bytes exceed `floor` and [`DIRTY_KEEP_PERCENT`] of the
    /// recent peak of live bytes.
    ///
    /// # Safety
    /// The run (`bytes` long, one of the run sizes) came from `region` and is
    /// unused.
    pub(crate) unsafe fn put_dirty(
        &mut self,
        mem: NonNull<u8>,
        bytes: usize,
        region: NonNull<Region>,
        floor: usize,
    ) -> ([Option<Victim>; PURGE_BATCH], usize) {
        let mut victims = [None; PURGE_BATCH];
        let Some(i) = RUN_SIZES.iter().position(|&b| b == bytes) else {
            victims[0] = Some(Victim { mem, bytes, region });
            return (victims, 1);
        };
        let run = mem.as_ptr().cast::<DirtyRun>();
        // SAFETY: the caller hands over the run.
        unsafe {
            run.write(DirtyRun {
                next: self.dirty[i],
                prev: ptr::null_mut(),
                region: region.as_ptr(),
                bytes,
                since: self.run_events,
            });
            if self.dirty[i].is_null() {
                self.dirty_tail[i] = run;
            } else {
                (*self.dirty[i]).prev = run;
            }
        }
        self.dirty[i] = run;
        self.dirty_bytes += bytes;
        // SAFETY: the run's region is live.
        unsafe { (*region.as_ptr()).dirty += bytes };
        self.run_events += 1;
        self.note_live();
        let mut n = 0;
        let bound = floor.max(self.recent_peak_bytes / 100 * DIRTY_KEEP_PERCENT);
        while self.dirty_bytes > bound && n < PURGE_BATCH {
            // The oldest dirty run (the first of equals), in one plain
            // loop: smaller than an iterator chain, whose closures opt-level
            // "z" does not inline; no indexing, no bounds checks.
            let (mut oldest, mut since) = (None, 0);
            for (j, &t) in self.dirty_tail.iter().enumerate() {
                // SAFETY: listed dirty runs are live memory of ours.
                if !t.is_null() && (oldest.is_none() || unsafe { (*t).since } < since) {
                    // SAFETY: as above.
                    (oldest, since) = (Some(j), unsafe { (*t).since });
                }
            }
            let Some(j) = oldest else { break };
            // Below 3 already: `min` spares the bounds checks below.
            let j = j.min(RUN_SIZES.len() - 1);
            let old = self.dirty_tail[j];
            // SAFETY: listed dirty runs are live memory of ours.
            unsafe {
                self.dirty_tail[j] = (*old).prev;
                if (*old).prev.is_null() {
                    self.dirty[j] = ptr::null_mut();
                } else {
                    (*(*old).prev).next = ptr::null_mut();
                }
                self.dirty_bytes -= (*old).bytes;
                (*(*old).region).dirty -= (*old).bytes;
                victims[n] = Some(Victim {
                    mem: NonNull::new_unchecked(old.cast()),
                    bytes: (*old).bytes,
                    region: NonNull::new_unchecked((*old).region),
                });
            }
            n += 1;
        }
        (victims, n)
    }

    /// Bytes carved from heaps for runs and blocks in use (dirty runs excluded).
    pub(crate) fn live_bytes(&self) -> usize {
        self.used_bytes - self.dirty_bytes
    }

    /// Updates the decaying peak of live bytes; returns the live bytes.
    fn note_live(&mut self) -> usize {
        let live = self.used_bytes - self.dirty_bytes;
        self.recent_peak_bytes = live.max(self.recent_peak_bytes - self.recent_peak_bytes / PEAK_DECAY_EVENTS);
        live
    }

    /// Whether the program has just freed everything (large blocks
    /// included) after using at least `IDLE_PURGE_MIN_BYTES` (then the
    /// caller gives everything back, as `trim` does). Answers `true` once
    /// per such burst.
    pub(crate) fn idle_after_burst(&mut self) -> bool {
        let live = self.note_live() + self.maps.live();
        if live == 0 && self.recent_peak_bytes.max(self.maps.recent_peak()) >= IDLE_PURGE_MIN_BYTES {
            self.recent_peak_bytes = 0;
            self.maps.reset_peak();
            return true;
        }
        false
    }

    /// Takes every dirty run out, up to `PURGE_BATCH` at a time.
    pub(crate) fn drain_dirty(&mut self) -> ([Option<Victim>; PURGE_BATCH], usize) {
        let mut victims = [None; PURGE_BATCH];
        let mut n = 0;
        while n < PURGE_BATCH {
            let Some(i) = self.dirty.iter().position(|d| !d.is_null()) else {
                break;
            };
            let Some((mem, region)) = self.take_dirty(RUN_SIZES[i]) else {
                break;
            };
            victims[n] = Some(Victim {
                mem,
                bytes: RUN_SIZES[i],
                region,
            });
            n += 1;
        }
        (victims, n)
    }

    /// Grows the brk region (or starts one) by at least `need` bytes.
    fn grow_brk<S: Source>(&mut self, os: &Os<S>, need: usize) -> Option<NonNull<Region>> {
        if self.brk_state != BrkState::On || !S::HAS_BRK {
            return None;
        }
        let grown = self.try_grow_brk(os, need);
        if grown.is_none() {
            self.brk_state = BrkState::Failed;
        }
        grown
    }

    fn try_grow_brk<S: Source>(&mut self, os: &Os<S>, need: usize) -> Option<NonNull<Region>> {
        let page = os.page();
        if self.stack_floor == 0 {
            self.stack_floor = os.source.stack_floor();
        }
        let current = os.source.brk_current()?;
        let cur = current.as_ptr() as usize;
        let extend = self.brk_region;
        // SAFETY: a non-null brk region is live.
        let in_place = !extend.is_null() && unsafe { (*extend).base.as_ptr() as usize + (*extend).len } == cur;
        let start = if in_place {
            cur
        } else {
            align_up(cur, HEADER_ALIGN)?.checked_add(HEADER_BYTES)?
        };
        let end = align_up(start.checked_add(need.max(BRK_STEP_BYTES))?, page)?;
        if end > self.stack_floor {
            return None;
        }
        let new_break = current.as_ptr().wrapping_add(end - cur);
        // SAFETY: moving the break up gives us `[cur, end)`; `new_break` is non-null.
        if !unsafe { os.brk(cur, NonNull::new_unchecked(new_break)) } {
            return None;
        }
        if in_place {
            // SAFETY: `[cur, end)` directly follows the heap's top.
            unsafe {
                if (*extend).heap.used() == 0 {
                    self.idle_region_bytes += end - cur;
                }
                // Told to the compiler (true: a live heap has a top, and
                // the growth stays below the stack), which then drops
                // linked_list_allocator's assertion and `unwrap` in `extend`.
                core::hint::assert_unchecked(!(*extend).heap.top().is_null() && end - cur <= isize::MAX as usize / 2);
                (*extend).heap.extend(end - cur);
                (*extend).len += end - cur;
                return Some(NonNull::new_unchecked(extend));
            }
        }
        let base = current.as_ptr().wrapping_add(start - HEADER_BYTES - cur);
        // SAFETY: `[base, end)` lies in the memory the break just gave us.
        let region = unsafe { self.install(NonNull::new_unchecked(base), end - (start - HEADER_BYTES), true) };
        self.brk_region = region.as_ptr();
        Some(region)
    }

    fn map_region<S: Source>(&mut self, os: &Os<S>, need: usize) -> Option<NonNull<Region>> {
        let exact = align_up(need.checked_add(HEADER_BYTES)?, os.page())?;
        // 0 stands for the first size (a zero field keeps the static in .bss).
        let next = self.next_region_bytes.max(FIRST_REGION_BYTES);
        let mut len = exact.max(next);
        let base = match os.map(len) {
            Some(base) => base,
            // Near a limit (RLIMIT_AS, RLIMIT_DATA, address space): what is
            // needed may still fit, once the mapping cache is given back.
            None => {
                let unmapped = self.unmap_cached(os);
                if len == exact && !unmapped {
                    return None;
                }
                len = exact;
                os.map(len)?
            }
        };
        if len >= next {
            self.next_region_bytes = (next * 2).min(MAX_REGION_BYTES);
        }
        // SAFETY: a fresh mapping of `len` bytes.
        Some(unsafe { self.install(base, len, false) })
    }

    /// `size` bytes aligned to `align` from the region of the first small
    /// blocks: [`FIRST_BLOCKS_REGION_BYTES`] aligned to the largest run
    /// size, so that every run-size-aligned address below a block in it is
    /// its base (mapped: the probes of a free that looks for a run read
    /// there). Mapped by the process's first request, with room to align
    /// and trimmed; `None` once that chance has passed (a region exists,
    /// or the break serves), if it is full, or if mapping fails.
    pub(crate) fn alloc_first<S: Source>(
        &mut self,
        os: &Os<S>,
        size: usize,
        align: usize,
    ) -> Option<(NonNull<u8>, NonNull<Region>)> {
        if self.first_region.is_null() {
            if self.region_count != 0 || (S::HAS_BRK && self.brk_state == BrkState::On) {
                return None;
            }
            self.first_region = self.map_first_blocks_region(os)?.as_ptr();
        }
        let region = self.first_region;
        let p = self.carve(region, Layout::from_size_align(size, align).ok()?)?;
        // SAFETY: non-null (tested above).
        Some((p, unsafe { NonNull::new_unchecked(region) }))
    }

    #[cold]
    #[inline(never)]
    fn map_first_blocks_region<S: Source>(&mut self, os: &Os<S>) -> Option<NonNull<Region>> {
        let len = FIRST_BLOCKS_REGION_BYTES.max(os.page());
        let align = crate::class::RUN_BYTES_BIG;
        let room = len + align - os.page();
        let raw = os.map(room)?;
        let head = align_up(raw.as_ptr() as usize, align)? - raw.as_ptr() as usize;
        let base = raw.as_ptr().wrapping_add(head);
        // SAFETY: both ranges are the ends of the mapping just made,
        // outside `[base, base + len)`, which is kept.
        unsafe {
            if head != 0 {
                os.unmap(raw, head);
            }
            if room - head != len {
                os.unmap(NonNull::new_unchecked(base.wrapping_add(len)), room - head - len);
            }
            // A fresh mapping of `len` bytes.
            Some(self.install(NonNull::new_unchecked(base), len, false))
        }
    }

    /// Unmaps every span of the mapping cache; returns whether there was one.
    /// Only when a mapping failed (near a limit): the system calls are made
    /// under the lock, which the allocator otherwise avoids.
    pub(crate) fn unmap_cached<S: Source>(&mut self, os: &Os<S>) -> bool {
        let mut out = Evicted::new();
        self.maps.drain(&mut out);
        let some = out.n != 0;
        out.unmap(os);
        some
    }

    /// # Safety
    /// `[base, base + len)` is fresh memory owned by the allocator, `base`
    /// aligned to `HEADER_ALIGN`, `len > HEADER_BYTES + 64`.
    unsafe fn install(&mut self, base: NonNull<u8>, len: usize, brk: bool) -> NonNull<Region> {
        let region = base.as_ptr().cast::<Region>();
        // SAFETY: the caller hands over the range; the header fits in it.
        unsafe {
            // The caller's duty, told to the compiler: it then drops the
            // assertions of linked_list_allocator's `Heap::init`.
            core::hint::assert_unchecked(
                len > HEADER_BYTES + 64 && (base.as_ptr() as usize).is_multiple_of(HEADER_ALIGN),
            );
            region.write(Region {
                heap: Heap::empty(),
                base,
                len,
                next: self.regions,
                prev: ptr::null_mut(),
                brk,
                dirty: 0,
            });
            (*region).heap.init(base.as_ptr().add(HEADER_BYTES), len - HEADER_BYTES);
            if !self.regions.is_null() {
                (*self.regions).prev = region;
            }
            self.regions = region;
            self.region_count += 1;
            self.idle_region_bytes += len;
            NonNull::new_unchecked(region)
        }
    }

    fn unlink(&mut self, region: *mut Region) {
        // SAFETY: `region` and its neighbours are live regions.
        unsafe {
            let r = &mut *region;
            if r.prev.is_null() {
                self.regions = r.next;
            } else {
                (*r.prev).next = r.next;
            }
            if !r.next.is_null() {
                (*r.next).prev = r.prev;
            }
        }
        self.region_count -= 1;
        if region == self.first_region {
            self.first_region = ptr::null_mut();
        }
    }

    /// Gives back one region that holds nothing but dirty runs, if there is
    /// one (for `trim` and after a burst): its runs leave the dirty lists and
    /// the whole region goes at once, with no `madvise` per run.
    pub(crate) fn release_dirty_region<S: Source>(&mut self, os: &Os<S>) -> (Release, usize) {
        let mut region = self.regions;
        while !region.is_null() {
            // SAFETY: linked regions are live.
            let r = unsafe { &*region };
            if r.dirty != 0 && r.dirty == r.heap.used() && (!r.brk || region == self.brk_region) {
                break;
            }
            region = r.next;
        }
        if region.is_null() {
            return (Release::Nothing, 0);
        }
        for i in 0..RUN_SIZES.len() {
            let mut run = self.dirty[i];
            while !run.is_null() {
                // SAFETY: listed dirty runs are live memory of ours.
                unsafe {
                    let next = (*run).next;
                    if (*run).region == region {
                        if (*run).prev.is_null() {
                            self.dirty[i] = next;
                        } else {
                            (*(*run).prev).next = next;
                        }
                        if next.is_null() {
                            self.dirty_tail[i] = (*run).prev;
                        } else {
                            (*next).prev = (*run).prev;
                        }
                        self.dirty_bytes -= (*run).bytes;
                    }
                    run = next;
                }
            }
        }
        // SAFETY: the region is live; nothing in it is in use.
        let (brk, base, len, dirty) = unsafe {
            let r = &*region;
            (r.brk, r.base, r.len, r.dirty)
        };
        self.used_bytes -= dirty;
        self.unlink(region);
        if brk {
            // SAFETY: the region, from base to the break, is ours and unused.
            unsafe { os.brk(base.as_ptr() as usize + len, base) };
            self.brk_region = ptr::null_mut();
            return (Release::Nothing, len);
        }
        (Release::Unmap(base, len), len)
    }

    /// Gives back one region whose heap is empty, if there is one (for `trim`).
    pub(crate) fn release_empty_region<S: Source>(&mut self, os: &Os<S>) -> (Release, usize) {
        let mut region = self.regions;
        while !region.is_null() {
            // SAFETY: linked regions are live.
            let (used, brk, base, len, next) = unsafe {
                let r = &*region;
                (r.heap.used(), r.brk, r.base, r.len, r.next)
            };
            if used == 0 && (!brk || region == self.brk_region) {
                self.idle_region_bytes -= len;
                self.unlink(region);
                if brk {
                    // SAFETY: the region, from base to the break, is ours and empty.
                    unsafe { os.brk(base.as_ptr() as usize + len, base) };
                    self.brk_region = ptr::null_mut();
                    return (Release::Nothing, len);
                }
                return (Release::Unmap(base, len), len);
            }
            region = next;
        }
        (Release::Nothing, 0)
    }

    /// Number of regions.
    pub(crate) fn region_count(&self) -> usize {
        self.region_count
    }

    /// Checks the region list and returns the bytes used in all heaps.
    pub(crate) fn validate(&self) -> usize {
        let mut used = 0;
        let mut count = 0;
        let mut prev: *mut Region = ptr::null_mut();
        let mut region = self.regions;
        while !region.is_null() {
            // SAFETY: linked regions are live.
            let r = unsafe { &*region };
            if r.prev != prev
                || r.base.as_ptr() != region.cast()
                || r.heap.used() > r.heap.size()
                || r.dirty > r.heap.used()
            {
                fault(Fault::Corrupt("region list"), region as usize);
            }
            used += r.heap.used();
            count += 1;
            prev = region;
            region = r.next;
        }
        if count != self.region_count {
            fault(Fault::Corrupt("region count"), count);
        }
        let mut idle = 0;
        let mut region = self.regions;
        while !region.is_null() {
            // SAFETY: linked regions are live.
            let r = unsafe { &*region };
            if r.heap.used() == 0 {
                idle += r.len;
            }
            region = r.next;
        }
        if idle != self.idle_region_bytes {
            fault(Fault::Corrupt("idle region bytes"), idle);
        }
        let mut dirty = 0;
        for (i, &run_bytes) in RUN_SIZES.iter().enumerate() {
            let mut prev: *mut DirtyRun = ptr::null_mut();
            let mut run = self.dirty[i];
            while !run.is_null() {
                // SAFETY: listed dirty runs are live.
                let d = unsafe { &*run };
                if d.prev != prev || d.bytes != run_bytes {
                    fault(Fault::Corrupt("dirty run list"), run as usize);
                }
                dirty += d.bytes;
                prev = run;
                run = d.next;
            }
            if self.dirty_tail[i] != prev {
                fault(Fault::Corrupt("dirty run tail"), i);
            }
        }
        if dirty != self.dirty_bytes || self.used_bytes < dirty {
            fault(Fault::Corrupt("dirty bytes"), dirty);
        }
        // Every page size is a multiple of 4096.
        self.maps.validate(4096);
        used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past the bound, dirty runs go oldest first, across the lists of
    /// the run sizes.
    #[test]
    fn put_dirty_purges_the_oldest_run_first() {
        // The runs' first words (where `put_dirty` links them) and a
        // region that owns them.
        let mut words = [[0usize; 8]; 2];
        let [a, b] = words.each_mut().map(|w| NonNull::from(w).cast::<u8>());
        let mut region = Region {
            heap: Heap::empty(),
            base: a,
            len: 0,
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            brk: false,
            dirty: 0,
        };
        let region = NonNull::from(&mut region);
        let mut core = Core::new(false);
        core.used_bytes = RUN_SIZES[0] + RUN_SIZES[1];
        // SAFETY: the runs are ours; `put_dirty` writes their first words.
        unsafe {
            // No purge: the floor holds both.
            let (_, n) = core.put_dirty(a, RUN_SIZES[0], region, usize::MAX);
            assert_eq!(n, 0);
            // A bound of 0: both go, the older (`a`, a run of the other size) first.
            core.recent_peak_bytes = 0;
            let (victims, n) = core.put_dirty(b, RUN_SIZES[1], region, 0);
            assert_eq!(n, 2);
            let order = victims.map(|v| v.map(|v| (v.mem, v.bytes)));
            assert_eq!(order[..2], [Some((a, RUN_SIZES[0])), Some((b, RUN_SIZES[1]))]);
        }
        assert_eq!(core.dirty_bytes, 0);
    }
}

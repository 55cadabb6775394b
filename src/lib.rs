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
mod first_blocks;
pub mod fork;
pub mod heap;
pub mod identity;
mod large;
mod lock;
mod map_cache;
mod medium;
pub mod os;
mod outbox;
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
#[cfg(test)]
mod tests_heaps;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

pub use config::Config;
pub use os::{Linux, Source};
pub use stats::{Stats, SyscallCounts};

use class::{class_for, TABLE as CLASSES};
use fault::{fault, fault_in, Call, Fault};
use heap::{Heap, HEAP_COUNT};
use large::{Owner, HEADER_BYTES};
use lock::{Guard, Mutex};
use medium::{Core, Region, Release, Victim, PURGE_BATCH};
use small::{Arena, Freed};

/// `p`, opaque to the optimiser, and a use of it that is never removed: an
/// empty `asm!` passes it through a register (cheaper than `black_box`,
/// which goes through the stack). Under Miri, which runs no assembly, `p`.
#[inline(always)]
pub(crate) fn opaque<T>(p: *const T) -> *const T {
    #[cfg(not(miri))]
    {
        let mut p = p;
        // SAFETY: the assembly is empty (a comment naming the register): it
        // reads and writes no memory, which is what the lint is about.
        #[allow(clippy::pointers_in_nomem_asm_block)]
        unsafe {
            core::arch::asm!("/* {0} */", inout(reg) p, options(nomem, nostack, preserves_flags))
        };
        p
    }
    #[cfg(miri)]
    p
}

/// Number of locked arenas of the small tier (each with its own lock), for
/// threads without a heap of their own.
pub const ARENA_COUNT: usize = 4;

/// The largest the adaptive mmap threshold grows, and the largest
/// `set_mmap_threshold` accepts: 32 MiB on 64-bit targets (glibc's cap
/// there), 4 MiB on 32-bit ones. glibc caps at 512 KiB on 32-bit because
/// its thread arenas are heaps of twice the cap aligned to their size,
/// which would waste address space; this allocator has no such heaps. What
/// a higher threshold costs here is that a block below it lives in a
/// region, which goes back to the kernel only when all of it is empty: 4
/// MiB, the size of the first mmap region, keeps every such block within
/// one region of the geometric sequence (4 MiB doubling to 64 MiB) rather
/// than a region of its own size, and bounds what one long-lived medium
/// block can pin in a 3 or 4 GiB address space.
pub const MAX_MMAP_THRESHOLD_BYTES: usize = if usize::BITS >= 64 { 32 << 20 } else { 4 << 20 };

/// The allocator. See the crate documentation.
///
/// In this order (`repr(C)`): the heap table first (at offset 0, which
/// the fast path's address arithmetic folds), then the locked arenas, and
/// last what every process writes at its first allocation (the counters,
/// the tuning, the core): at the static's end, next to the class table
/// that the same allocation fills, so that they share pages.
#[repr(C)]
pub struct NolibcAlloc<S: Source = Linux> {
    /// The thread heaps (see [`heap`]); a run's arena index below
    /// `HEAP_COUNT` names one.
    heaps: [Heap; HEAP_COUNT],
    /// The locked arenas; a run's arena index `HEAP_COUNT + i` names `arenas[i]`.
    arenas: [Mutex<Arena>; ARENA_COUNT],
    os: os::Os<S>,
    tuning: config::Tuning,
    /// The mmap threshold once raised (0 until then): raised when
    /// large blocks are freed (unless the threshold was set explicitly).
    threshold: AtomicUsize,
    /// Bytes of small blocks served by the free-list core (see [`first_blocks`]).
    first_block_bytes: AtomicUsize,
    core: Mutex<Core>,
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
            heaps: [const { Heap::new() }; HEAP_COUNT],
            arenas: [const { Mutex::new(Arena::new()) }; ARENA_COUNT],
            threshold: AtomicUsize::new(0),
            first_block_bytes: AtomicUsize::new(0),
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

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let (mut in_use, mut peak) = (0, 0);
        let mut add = |a: *const Arena| {
            // SAFETY: the counters are atomics, readable from any thread.
            let a = unsafe { &*a };
            in_use += a.in_use_bytes.load(Relaxed);
            peak += a.peak_in_use_bytes.load(Relaxed);
        };
        self.heaps.iter().for_each(|h| add(h.arena_shared()));
        self.arenas.iter().for_each(|m| add(m.data_ptr()));
        self.os.counters.snapshot(in_use, peak)
    }

    /// The current mmap threshold in bytes.
    pub fn mmap_threshold(&self) -> usize {
        self.threshold.load(Relaxed).max(self.tuning.mmap_threshold())
    }

    /// Gives every empty run and every empty region back to the kernel;
    /// returns the bytes released. The calling thread's heap, the heaps no
    /// thread owns and the locked arenas give their empty runs back; the
    /// heaps of other live threads keep theirs (only their owner touches them).
    pub fn trim(&self) -> usize {
        let mut released = 0;
        if let Some(index) = self.own_heap() {
            // SAFETY: the caller owns this heap.
            released += unsafe { self.tidy_heap(index) };
        }
        for index in 0..HEAP_COUNT {
            if self.heaps[index].borrow_free() {
                // SAFETY: borrowed: nobody else may touch it until handed back.
                released += unsafe { self.tidy_heap(index) };
                self.heaps[index].release();
            }
        }
        for arena in &self.arenas {
            released += self.drain_empty(&mut arena.lock());
        }
        released + self.give_back_all()
    }

    /// Drains the remote list of heap `index` and gives its empty runs to
    /// the core; returns the bytes.
    ///
    /// # Safety
    /// The caller owns the heap.
    unsafe fn tidy_heap(&self, index: usize) -> usize {
        let heap = &self.heaps[index];
        // SAFETY: the caller owns the heap.
        for chain in unsafe { heap.outbox() }.take_all().into_iter().flatten() {
            self.hand_over(chain);
        }
        // SAFETY: the caller owns the heap.
        let arena = unsafe { heap.arena() };
        self.drain_remote(heap, arena);
        self.drain_empty(arena)
    }

    /// The calling thread's heap, if it owns one.
    fn own_heap(&self) -> Option<usize> {
        let id = self.os.source.thread_identity();
        if id == 0 {
            return None;
        }
        heap::find_own(&self.heaps, id)
    }

    /// Gives every dirty run, every empty region and every cached mapping
    /// back to the kernel; returns the bytes.
    fn give_back_all(&self) -> usize {
        let mut released = 0;
        let mut out = map_cache::Evicted::new();
        loop {
            self.core.lock().maps.drain(&mut out);
            if out.n == 0 {
                break;
            }
            released += out.iter().map(|(_, len)| len).sum::<usize>();
            self.unmap_evicted(&mut out);
        }
        loop {
            let (release, bytes) = self.core.lock().release_dirty_region(&self.os);
            if bytes == 0 {
                break;
            }
            released += bytes;
            self.finish(release);
        }
        loop {
            let (victims, n) = self.core.lock().drain_dirty();
            if n == 0 {
                break;
            }
            released += victims.iter().flatten().map(|v| v.bytes).sum::<usize>();
            self.purge(&victims);
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

    /// Gives every cached empty run of an arena (owned or locked by the
    /// caller) to the core; returns the bytes.
    fn drain_empty(&self, arena: &mut Arena) -> usize {
        let mut released = 0;
        arena.drain_empty(|mem, bytes, region| {
            released += bytes;
            // SAFETY: the run is unlinked from its arena and ours alone.
            unsafe { self.release_run(mem, bytes, region, self.tuning.trim_threshold()) };
        });
        released
    }

    /// Frees, in the owner's arena, every slot other threads freed.
    fn drain_remote(&self, heap: &Heap, arena: &mut Arena) {
        let mut slot = heap.take_remote();
        while !slot.is_null() {
            // SAFETY: slots on the remote list are live slots of this heap's
            // runs, linked through their first word; the caller owns the heap.
            unsafe {
                let next = *slot.cast::<*mut u8>();
                let run = small::run_of_remote(slot);
                if !arena.free(run, NonNull::new_unchecked(slot), true, Call::Dealloc) {
                    self.free_rest(arena, run);
                }
                slot = next;
            }
        }
    }

    /// The rest of a free that [`Arena::free`] could not finish: the run was
    /// full (it is listed again) or is empty now (kept, given back, or the
    /// end of a burst).
    ///
    /// # Safety
    /// `run` is a run of `arena`, of which `Arena::free` just freed a slot.
    #[cold]
    #[inline(never)]
    unsafe fn free_rest(&self, arena: &mut Arena, run: NonNull<small::Run>) {
        // SAFETY: forwarded.
        let freed = unsafe { arena.free_tail(run, self.tuning.trim_threshold()) };
        self.after_free(arena, freed);
    }

    /// What a free left to do: a run to give back, or a burst's end.
    #[inline]
    fn after_free(&self, arena: &mut Arena, freed: Freed) {
        match freed {
            Freed::Done => {}
            // SAFETY: the run was unlinked and is ours alone.
            Freed::ReleaseRun(mem, bytes, region) => unsafe {
                self.release_run(mem, bytes, region, self.tuning.trim_threshold())
            },
            Freed::Idle => self.idle(arena),
        }
    }

    #[cold]
    fn idle(&self, arena: &mut Arena) {
        self.drain_empty(arena);
        if self.core.lock().live_bytes() == 0 {
            self.give_back_all();
        }
    }

    /// Checks every invariant of every tier (heaps, arenas, runs, regions);
    /// stops the process on a violation. Returns the bytes in use in the
    /// small tier. Slow: for tests and fuzzing; no other thread may be in
    /// the allocator meanwhile.
    pub fn validate(&self) -> usize {
        let mut small = 0;
        for (index, heap) in self.heaps.iter().enumerate() {
            if heap.is_pristine() {
                continue;
            }
            // SAFETY: no other thread is in the allocator (documented duty).
            small += unsafe { (*heap.arena_shared()).validate() };
            // SAFETY: as above; the list is this heap's.
            unsafe { small::validate_remote(heap.remote_list(), index) };
            // SAFETY: as above; each chain holds slots of its destination
            // (null-terminated, like a remote list).
            unsafe {
                for chain in (*heap.outbox_shared()).chains() {
                    small::validate_remote(chain.head, chain.dest);
                }
            }
        }
        for arena in &self.arenas {
            small += arena.lock().validate();
        }
        self.core.lock().validate();
        small
    }

    /// Number of regions the core holds (for tests).
    pub fn region_count(&self) -> usize {
        self.core.lock().region_count()
    }

    /// Number of thread heaps claimed (for tests).
    pub fn heaps_claimed(&self) -> usize {
        self.heaps.iter().filter(|h| !h.is_free()).count()
    }

    /// Locks a locked arena for the calling thread (one without a heap):
    /// the one its stack address suggests, else the first free one after it.
    #[cold]
    fn lock_arena(&self) -> (usize, Guard<'_, Arena>) {
        let hint = (heap::stack_pointer() >> 16).wrapping_mul(crate::fault::GOLDEN) >> (usize::BITS - 2);
        let hint = hint % ARENA_COUNT;
        for i in 0..ARENA_COUNT {
            let index = (hint + i) % ARENA_COUNT;
            if let Some(guard) = self.arenas[index].try_lock() {
                return (index, guard);
            }
        }
        (hint, self.arenas[hint].lock())
    }

    /// A slot of `class`: from the calling thread's heap, else by the slow
    /// path. Out of line: the fast paths of `GlobalAlloc::alloc` and C's
    /// `malloc` have their own copy of its first half; the callers of this
    /// one are their slow paths and the zeroing allocations.
    #[inline(never)]
    fn alloc_small(&self, class: usize) -> *mut u8 {
        match self.alloc_small_fast(class) {
            Some(p) => p.as_ptr(),
            None => self.alloc_small_slow(class),
        }
    }

    /// The fast path of [`Self::alloc_small`] alone: a slot of the calling
    /// thread's heap, or `None` where the slow path must decide (the C ABI's
    /// `malloc` then tail-calls a slow path of its own, so that its fast path
    /// needs no frame).
    #[inline(always)]
    pub(crate) fn alloc_small_fast(&self, class: usize) -> Option<NonNull<u8>> {
        let id = self.os.source.thread_identity_fast();
        let heap = &self.heaps[heap::home(id)];
        if id != 0 && heap.is_mine(id) {
            // SAFETY: the calling thread owns the heap.
            return unsafe { heap.arena() }.alloc(class);
        }
        None
    }

    /// A slot, the fast path having failed: for a thread with an identity,
    /// its heap found (or claimed), slots freed by other threads taken back,
    /// a new run if the class has none; else from a locked arena.
    #[cold]
    #[inline(never)]
    fn alloc_small_slow(&self, class: usize) -> *mut u8 {
        // The process's first small blocks share a page, and while they last
        // no heap is claimed: a program that allocates a handful of blocks
        // writes no page of the heap table.
        let first = self.first_block(class);
        if !first.is_null() {
            return first;
        }
        let id = self.os.source.thread_identity();
        if id == 0 {
            return self.alloc_locked(class);
        }
        // A thread whose home entry another identity took (two thread
        // pointers hashed alike) has its heap a few entries on, where the
        // fast path does not look: a slot of it, before the whole search.
        if let Some(heap) = heap::find_near(&self.heaps, id).and_then(|i| self.heaps.get(i)) {
            // SAFETY: `find_near` found a heap the calling thread owns.
            if let Some(p) = unsafe { heap.arena() }.alloc_cold(class, false) {
                return p.as_ptr();
            }
        }
        let Some(index) = heap::find(&self.heaps, id, &self.os.source) else {
            return self.alloc_locked(class);
        };
        // (`get`: no bounds-check panic to keep; `find`'s index is in range.)
        let Some(heap) = self.heaps.get(index) else {
            return self.alloc_locked(class);
        };
        // SAFETY: `self` holds this source.
        unsafe { self.os.source.note_allocator((self as *const Self).cast()) };
        // SAFETY: `find` returned a heap the calling thread owns.
        let arena = unsafe { heap.arena() };
        self.drain_remote(heap, arena);
        match arena.alloc_cold(class, true) {
            Some(p) => p.as_ptr(),
            None => self.alloc_from_new_run(arena, index, class),
        }
    }

    #[cold]
    #[inline(never)]
    fn alloc_locked(&self, class: usize) -> *mut u8 {
        let (index, mut arena) = self.lock_arena();
        match arena.alloc_cold(class, true) {
            Some(p) => p.as_ptr(),
            None => self.alloc_from_new_run(&mut arena, HEAP_COUNT + index, class),
        }
    }

    #[cold]
    fn alloc_from_new_run(&self, arena: &mut Arena, index: usize, class: usize) -> *mut u8 {
        // Before the first run: its class must be in the table (see `class::TABLE`).
        CLASSES.init();
        // `get`: no bounds-check panic (every caller's class is in range).
        let Some(info) = CLASSES.get(class) else {
            return ptr::null_mut();
        };
        let bytes = info.run_bytes as usize;
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
                    .alloc_from_new_run(class, info, mem, index, region.as_ptr().cast())
                    .as_ptr()
            },
            None => ptr::null_mut(),
        }
    }

    /// `dealloc` of a block with a header (medium or large).
    ///
    /// # Safety
    /// `ptr` is live and was allocated for `layout`.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_block(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded.
        unsafe {
            let block = self.locate(ptr, layout, true, Call::Dealloc);
            self.dealloc_located(ptr, block, Call::Dealloc)
        }
    }

    /// # Safety
    /// `ptr` is a live slot of `class` (checked in part).
    #[inline]
    unsafe fn free_small(&self, ptr: NonNull<u8>, class: usize, call: Call) {
        // SAFETY: the caller vouches for the slot; `run_of` checks it.
        let Some(run) = (unsafe { small::run_of(ptr, class, call) }) else {
            // SAFETY: forwarded.
            return unsafe { self.free_first_block(ptr, class, call) };
        };
        // SAFETY: `run` was checked.
        unsafe { self.free_slot(run, ptr, call) }
    }

    /// Frees a slot of a checked run: into the caller's own heap, onto the
    /// remote list of the heap that owns the run, or into a locked arena.
    ///
    /// # Safety
    /// `ptr` is a live slot of `run`, checked by `run_of` or `find_run`.
    #[inline]
    unsafe fn free_slot(&self, run: NonNull<small::Run>, ptr: NonNull<u8>, call: Call) {
        // SAFETY: `run` was checked.
        let index = unsafe { small::arena_of(run) };
        let id = self.os.source.thread_identity_fast();
        if let Some(heap) = self.heaps.get(index) {
            if id != 0 {
                if heap.is_mine(id) {
                    // SAFETY: the calling thread owns the heap and the run is one of its.
                    unsafe {
                        let arena = heap.arena();
                        if !arena.free(run, ptr, false, call) {
                            self.free_rest(arena, run);
                        }
                    }
                    return;
                }
                // SAFETY: forwarded; `index` is a heap's.
                return unsafe { self.free_remote(run, ptr, index, id, call) };
            }
        }
        // SAFETY: forwarded.
        unsafe { self.free_slot_other(run, ptr, index, call) }
    }

    /// A slot of heap `dest` freed by thread `id` (not its owner): checked,
    /// marked, and into the caller's outbox when the chain for `dest` is
    /// there and not full, else [`Self::send_remote`]. Out of line, with
    /// no frame of its own (its rare ends are tail calls).
    ///
    /// # Safety
    /// As [`Self::free_slot`]; `dest` is the run's arena, a heap.
    #[inline(never)]
    unsafe fn free_remote(&self, run: NonNull<small::Run>, ptr: NonNull<u8>, dest: usize, id: usize, call: Call) {
        // SAFETY: a live slot of one of the heap's runs (its boundary
        // checked here: the owner takes it back unchecked).
        unsafe {
            small::check_slot(run, ptr, call);
            small::mark_remote(run, ptr, call);
            let mine = &self.heaps[heap::home(id)];
            let size = small::slot_size(run);
            if size <= outbox::MAX_SLOT_BYTES
                && mine.is_mine(id)
                && mine.outbox().push_fast(dest, ptr.as_ptr(), outbox::units(size))
            {
                return;
            }
            self.send_remote(id, dest, run, ptr)
        }
    }

    /// [`Self::free_slot`] when the fast path does not apply: a slot of
    /// another thread's heap, of a locked arena, or a caller whose identity
    /// is not decided yet.
    ///
    /// # Safety
    /// As `free_slot`; `index` is the run's arena.
    #[cold]
    #[inline(never)]
    unsafe fn free_slot_other(&self, run: NonNull<small::Run>, ptr: NonNull<u8>, index: usize, call: Call) {
        if index < HEAP_COUNT {
            let heap = &self.heaps[index];
            let id = self.os.source.thread_identity();
            if id != 0 && heap.is_mine(id) {
                // SAFETY: the calling thread owns the heap and the run is one of its.
                unsafe {
                    let arena = heap.arena();
                    if !arena.free(run, ptr, false, call) {
                        self.free_rest(arena, run);
                    }
                }
            } else {
                // SAFETY: a live slot of one of the heap's runs (its boundary
                // checked here: the owner takes it back unchecked).
                unsafe {
                    small::check_slot(run, ptr, call);
                    small::mark_remote(run, ptr, call);
                    self.send_remote(id, index, run, ptr);
                }
            }
            return;
        }
        self.free_locked(run, ptr, index, call);
    }

    /// Hands a slot of heap `dest`, freed by thread `id` (marked and
    /// checked), to its owner: through the caller's outbox if the caller
    /// has a heap at its home entry and the slot is small, else pushed alone.
    ///
    /// # Safety
    /// `ptr` is a slot of `run`, a run of heap `dest`, marked by
    /// [`small::mark_remote`] and the caller's alone.
    #[inline(never)]
    unsafe fn send_remote(&self, id: usize, dest: usize, run: NonNull<small::Run>, ptr: NonNull<u8>) {
        // SAFETY: `run` is a checked live run.
        let size = unsafe { small::slot_size(run) };
        // The caller's heap; one claimed now for a thread that only frees
        // (a consumer) where threads give their heaps back when they end.
        // (Not only at its home: a thread whose home entry another identity
        // took has its heap a few entries on.)
        let mine = match id {
            0 => None,
            _ if size > outbox::MAX_SLOT_BYTES => None,
            _ => match heap::find_near(&self.heaps, id) {
                Some(index) => Some(index),
                None if self.os.source.threads_give_back() => self.claim_for_frees(id),
                None => None,
            },
        };
        if let Some(heap) = mine.and_then(|i| self.heaps.get(i)) {
            // SAFETY: the caller owns the heap; the slot is the caller's.
            if let Some(chain) = unsafe { heap.outbox().push(dest, ptr.as_ptr(), outbox::units(size)) } {
                self.hand_over(chain);
            }
            return;
        }
        self.hand_over(outbox::Chain {
            dest,
            head: ptr.as_ptr(),
            tail: ptr.as_ptr(),
        });
    }

    /// The heap of thread `id`, found or claimed for its outbox (see
    /// [`Self::send_remote`]).
    #[cold]
    #[inline(never)]
    fn claim_for_frees(&self, id: usize) -> Option<usize> {
        let index = heap::find(&self.heaps, id, &self.os.source)?;
        // SAFETY: `self` holds this source.
        unsafe { self.os.source.note_allocator((self as *const Self).cast()) };
        Some(index)
    }

    /// Pushes a chain of marked slots onto its destination's remote list. A
    /// destination that no thread owns any more (its owner ended and gave
    /// it back) is tidied at once: nobody else would take the slots back.
    fn hand_over(&self, chain: outbox::Chain) {
        if let Some(heap) = self.heaps.get(chain.dest) {
            // SAFETY: chains hold marked slots of the destination's runs.
            unsafe { heap.push_remote_chain(chain.head, chain.tail) };
            if heap.is_free() {
                self.reclaim(chain.dest);
            }
        }
    }

    /// Tidies heap `index`, which no thread owns, if no other thread
    /// claims or borrows it first.
    #[cold]
    #[inline(never)]
    fn reclaim(&self, index: usize) {
        let heap = &self.heaps[index];
        if heap.borrow_free() {
            // SAFETY: borrowed: nobody else may touch it until handed back.
            unsafe { self.tidy_heap(index) };
            heap.release();
        }
    }

    #[cold]
    #[inline(never)]
    fn free_locked(&self, run: NonNull<small::Run>, ptr: NonNull<u8>, index: usize, call: Call) {
        let Some(arena) = self.arenas.get(index.wrapping_sub(HEAP_COUNT)) else {
            fault_in(call, Fault::Corrupt("run arena"), ptr.as_ptr() as usize);
        };
        let mut arena = arena.lock();
        // SAFETY: the run belongs to that arena, whose lock is held.
        unsafe {
            if !arena.free(run, ptr, false, call) {
                self.free_rest(&mut arena, run);
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
        if n > 0 {
            self.purge(&victims);
        }
        if idle {
            self.give_back_all();
        }
    }

    /// Discards the pages of dirty runs (outside any lock), then returns the
    /// runs to their heaps, which may give regions back. (The whole batch,
    /// `None` past the victims: no slice to bounds-check.)
    fn purge(&self, victims: &[Option<Victim>; PURGE_BATCH]) {
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
                        None,
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
        // A block freed with a small layout by mistake is looked up in the
        // class table: filled before any block is handed out (see `class::TABLE`).
        CLASSES.init();
        if size >= self.mmap_threshold() || align > self.os.page() {
            return self.alloc_large(size, align, zero);
        }
        let pad = large::pad_for(align);
        let Some(len) = size.checked_add(pad) else {
            return ptr::null_mut();
        };
        let got = self.core.lock().alloc(&self.os, len, align.max(16));
        let Some((block, region)) = got else {
            return ptr::null_mut();
        };
        // SAFETY: the core just carved `len` bytes from `region`.
        unsafe {
            let user = self.hand_out_medium(block, region, len, pad);
            if zero {
                ptr::write_bytes(user.as_ptr(), 0, size);
            }
            user.as_ptr()
        }
    }

    /// The pointer handed out for a medium block the core carved: its
    /// header written, its bytes counted.
    ///
    /// # Safety
    /// `block` is `len` bytes the core just carved from `region`; `pad`
    /// (see [`large::pad_for`]) is below `len`.
    #[inline]
    unsafe fn hand_out_medium(
        &self,
        block: NonNull<u8>,
        region: NonNull<Region>,
        len: usize,
        pad: usize,
    ) -> NonNull<u8> {
        // SAFETY: `pad` bytes at the block start hold the header.
        unsafe {
            let user = NonNull::new_unchecked(block.as_ptr().add(pad));
            large::write_header(user, region.as_ptr() as usize, len, pad, Owner::Medium);
            os::count_up(&self.os.counters.block_bytes, &self.os.counters.peak_block_bytes, len);
            user
        }
    }

    /// `size` bytes aligned to 16 (C's `malloc`): the smallest classes by a
    /// shift, everything else through [`GlobalAlloc::alloc`]. Null when out
    /// of memory or too large.
    #[inline]
    pub fn alloc_aligned16(&self, size: usize) -> *mut u8 {
        if let Some(class) = class::fine_class(size, 1) {
            return self.alloc_small(class);
        }
        match Layout::from_size_align(size, 16) {
            // SAFETY: a non-zero size (above 1024).
            Ok(layout) => unsafe { self.alloc(layout) },
            Err(_) => ptr::null_mut(),
        }
    }

    /// The size class serving `size` and `align`, if the small tier does.
    #[inline(always)]
    fn small_class(&self, size: usize, align: usize) -> Option<usize> {
        if let Some(class) = class::fine_class(size, align) {
            return Some(class);
        }
        self.larger_class(size, align)
    }

    /// [`Self::small_class`] above the 16-byte classes.
    #[inline(never)]
    fn larger_class(&self, size: usize, align: usize) -> Option<usize> {
        if size >= self.tuning.mmap_threshold() {
            return None;
        }
        class_for(size, align)
    }

    /// Finds the tier of a live block. With `probe`, a block with a header
    /// is first checked to be mapped (one `madvise`): a large block freed
    /// twice has no mapping left, and reading its header would crash instead
    /// of reporting the fault. `dealloc` probes; `realloc` does not.
    ///
    /// # Safety
    /// `ptr` was returned by this allocator for `layout` and is live (checked in part).
    #[inline]
    unsafe fn locate(&self, ptr: NonNull<u8>, layout: Layout, probe: bool, call: Call) -> Block {
        if let Some(class) = self.small_class(layout.size(), layout.align()) {
            return Block::Small(class);
        }
        let header = ptr.as_ptr().wrapping_sub(HEADER_BYTES);
        if fault::CHECKS && probe && !self.os.source.is_mapped(header) {
            fault_in(call, Fault::InvalidPointer, ptr.as_ptr() as usize);
        }
        // SAFETY: non-slot blocks have a header, and its page is mapped.
        let Some((kind, owner, len, pad)) = (unsafe { large::read_header(ptr, call) }) else {
            self.bad_pointer(ptr, call)
        };
        // The owner's header lies in the same region or mapping as the block.
        let Some(owner) = NonNull::new(ptr.as_ptr().with_addr(owner)) else {
            fault_in(call, Fault::InvalidPointer, ptr.as_ptr() as usize);
        };
        if len < pad + layout.size() {
            fault_in(call, Fault::WrongLayout, ptr.as_ptr() as usize);
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
    unsafe fn free_block(&self, ptr: NonNull<u8>, block: Block, call: Call) {
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
                        core.dealloc(
                            &self.os,
                            base,
                            len,
                            16,
                            region,
                            self.tuning.trim_threshold(),
                            Some(call),
                        )
                    };
                    (release, core.idle_after_burst())
                };
                self.finish(release);
                if idle {
                    self.give_back_all();
                }
            }
            // SAFETY: the mapping is the block's alone.
            Block::Large { map, len, .. } => unsafe { self.free_large(map, len) },
            Block::Small(_) => {}
        }
    }

    /// Usable bytes of the block at `ptr` allocated for `layout`.
    ///
    /// # Safety
    /// `ptr` is live and was allocated for `layout`.
    pub unsafe fn usable_size(&self, ptr: NonNull<u8>, layout: Layout) -> usize {
        // SAFETY: forwarded.
        match unsafe { self.locate(ptr, layout, false, Call::UsableSize) } {
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
    unsafe fn locate_unsized(&self, ptr: NonNull<u8>, call: Call) -> (Block, usize) {
        // Slots start at least 64 bytes into their run, blocks have their
        // header: the 32 bytes in front are readable either way.
        // SAFETY: see above.
        if unsafe { large::has_header(ptr) } {
            // SAFETY: a live header.
            let Some((kind, owner, len, pad)) = (unsafe { large::read_header(ptr, call) }) else {
                self.bad_pointer(ptr, call)
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
        match unsafe { small::find_run(ptr, |_| true, call) } {
            Some((run, class)) => {
                // SAFETY: a live run.
                unsafe { small::check_slot(run, ptr, call) };
                (Block::Small(class), CLASSES[class].size as usize)
            }
            None => self.bad_pointer(ptr, call),
        }
    }

    /// Stops the process for a pointer that is not what its layout says:
    /// "wrong layout" if it is a live block of another tier or class, else
    /// "invalid pointer". A cold path: it may make system calls to check
    /// that what it reads is mapped.
    #[cold]
    #[inline(never)]
    fn bad_pointer(&self, ptr: NonNull<u8>, call: Call) -> ! {
        let addr = ptr.as_ptr() as usize;
        let readable = |p: *const u8| self.os.source.is_mapped(p);
        // SAFETY: the header bytes are read only if their page is mapped.
        if readable(ptr.as_ptr().wrapping_sub(HEADER_BYTES)) && unsafe { large::has_header(ptr) } {
            fault_in(call, Fault::WrongLayout, addr);
        }
        // SAFETY: every probed address is checked to be mapped first; a run
        // found is live.
        if let Some((run, _)) = unsafe { small::find_run(ptr, readable, call) } {
            // SAFETY: as above.
            unsafe { small::check_slot(run, ptr, call) };
            fault_in(call, Fault::WrongLayout, addr);
        }
        // A block with a header freed before: `read_header` says so.
        if readable(ptr.as_ptr().wrapping_sub(HEADER_BYTES)) {
            // SAFETY: read only if the header's page is mapped.
            let _ = unsafe { large::read_header(ptr, call) };
        }
        fault_in(call, Fault::InvalidPointer, addr)
    }

    /// Frees a block knowing only its address (C's `free`).
    ///
    /// # Safety
    /// `ptr` was returned by this allocator and is live.
    pub unsafe fn free_unsized(&self, ptr: NonNull<u8>) {
        // SAFETY: forwarded.
        unsafe {
            if !large::has_header(ptr) {
                // Not a block with a header, so a slot (the common case).
                return small::find_run_then(
                    ptr,
                    |_| true,
                    Call::CFree,
                    |run, _| self.free_slot(run, ptr, Call::CFree),
                    || self.bad_pointer(ptr, Call::CFree),
                );
            }
            self.free_unsized_block(ptr);
        }
    }

    /// [`Self::free_unsized`] of a block with a header (medium or large).
    ///
    /// # Safety
    /// As `free_unsized`.
    #[cold]
    #[inline(never)]
    unsafe fn free_unsized_block(&self, ptr: NonNull<u8>) {
        // SAFETY: forwarded.
        unsafe {
            let (block, _) = self.locate_unsized(ptr, Call::CFree);
            self.dealloc_located(ptr, block, Call::CFree);
        }
    }

    /// Usable bytes of a live block, from its address alone
    /// (`malloc_usable_size`).
    ///
    /// # Safety
    /// `ptr` was returned by this allocator and is live.
    pub unsafe fn usable_size_unsized(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: forwarded.
        unsafe { self.locate_unsized(ptr, Call::CUsableSize).1 }
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
            let (block, usable) = self.locate_unsized(ptr, Call::CRealloc);
            self.realloc_located(ptr, block, usable, align, new_size, Call::CRealloc)
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
        call: Call,
    ) -> *mut u8 {
        // Where the new layout routes: once, not once per arm.
        let new_class = self.small_class(new_size, align);
        match block {
            Block::Small(class) => {
                if new_class == Some(class) {
                    return ptr.as_ptr();
                }
            }
            // A block stays where it is only if its new layout still routes
            // away from the small tier.
            Block::Medium { len, pad, .. } | Block::Large { len, pad, .. } => {
                let usable = len - pad;
                let aligned = (ptr.as_ptr() as usize).is_multiple_of(align);
                if aligned && new_size <= usable && new_size >= usable / 2 && new_class.is_none() {
                    return ptr.as_ptr();
                }
                // Remapping keeps the offset in the page: aligned stays aligned
                // for alignments up to a page.
                if let Block::Large { map, .. } = block {
                    if aligned && new_size >= self.tuning.mmap_threshold() && align <= self.os.page() {
                        // SAFETY: the block is ours; resizing keeps its contents.
                        if let Some(p) = unsafe { self.resize_large(map, len, pad, new_size) } {
                            return p;
                        }
                    }
                }
            }
        }
        // A block that grows past the mmap threshold from a good size is
        // likely to grow again: give it a mapping of its own, which later
        // growth remaps in place.
        let grows_steadily = old_size >= self.tuning.mmap_threshold() / 4;
        let new = if new_size > old_size && grows_steadily && new_size >= self.tuning.mmap_threshold() {
            self.alloc_large(new_size, align, false)
        } else {
            // SAFETY: a layout of the same alignment; new_size was checked by the caller.
            unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, align)) }
        };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct; copy what both hold.
            unsafe {
                ptr::copy_nonoverlapping(ptr.as_ptr(), new, old_size.min(new_size));
                self.dealloc_located(ptr, block, call);
            }
        }
        new
    }

    /// # Safety
    /// `ptr` is a live block located as `block`.
    #[inline]
    unsafe fn dealloc_located(&self, ptr: NonNull<u8>, block: Block, call: Call) {
        match block {
            // SAFETY: located as a slot of this class.
            Block::Small(class) => unsafe { self.free_small(ptr, class, call) },
            // SAFETY: located as a block with a header.
            other => unsafe { self.free_block(ptr, other, call) },
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
        // The 16-byte classes from the thread's heap (as `small_class`
        // computes them); every other case in `alloc_rest`, a tail call, so
        // that this path needs no frame.
        if let Some(class) = class::fine_class(size, align) {
            if let Some(p) = self.alloc_small_fast(class) {
                return p.as_ptr();
            }
        }
        self.alloc_rest(size, align)
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
        let (size, align) = (layout.size(), layout.align());
        // The 16-byte classes inline (their runs are all of one size, which
        // the compiler then knows); every other case in `dealloc_rest`.
        if let Some(class) = class::fine_class(size, align) {
            // SAFETY: the caller vouches for ptr and layout; a slot of this class.
            return unsafe { self.free_small(ptr, class, Call::Dealloc) };
        }
        // SAFETY: as above.
        unsafe { self.dealloc_rest(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        unsafe { self.realloc_sized(ptr, layout, new_size) }
    }
}

impl<S: Source> NolibcAlloc<S> {
    /// [`GlobalAlloc::dealloc`] past the 16-byte classes.
    ///
    /// # Safety
    /// As `GlobalAlloc::dealloc`.
    #[inline(never)]
    unsafe fn dealloc_rest(&self, ptr: NonNull<u8>, layout: Layout) {
        if let Some(class) = self.small_class(layout.size(), layout.align()) {
            // SAFETY: the caller vouches for ptr and layout; a slot of `class`.
            return unsafe { self.free_small(ptr, class, Call::Dealloc) };
        }
        // SAFETY: as above.
        unsafe { self.dealloc_block(ptr, layout) }
    }

    /// [`GlobalAlloc::alloc`] past its fast path.
    #[inline(never)]
    fn alloc_rest(&self, size: usize, align: usize) -> *mut u8 {
        match self.small_class(size, align) {
            Some(class) => self.alloc_small(class),
            None => self.alloc_block(size, align, false),
        }
    }

    /// [`GlobalAlloc::realloc`], out of line: inlined, its paths (large
    /// resizing, the move) were copied into every caller (`Vec`'s growth).
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`.
    #[inline(never)]
    unsafe fn realloc_sized(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Layout::from_size_align(new_size, layout.align()).is_err() {
            return ptr::null_mut();
        }
        let Some(ptr) = NonNull::new(ptr) else {
            fault_in(Call::Realloc, Fault::InvalidPointer, 0);
        };
        // SAFETY: forwarded from the caller.
        unsafe {
            let block = self.locate(ptr, layout, false, Call::Realloc);
            self.realloc_located(ptr, block, layout.size(), layout.align(), new_size, Call::Realloc)
        }
    }
}

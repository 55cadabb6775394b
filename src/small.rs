//! Small tier: slots of one size class carved from runs.
//!
//! A *run* is a block of `run_bytes` from the core, aligned to its size, that
//! starts with a [`Run`] header, then slots. A free slot holds the free-list
//! link and a marker (its address ^ its run's ^ a constant) that a second free finds:
//! double-free detection without touching another cache line. Each run
//! keeps its own free list and live count; each [`Arena`] keeps, per class, a
//! list of the runs that have free slots. Alloc and free are O(1). A run that
//! becomes empty is given back to the core unless it fits in the arena's small
//! cache of empty runs (bounded by the trim threshold) or is the last run of
//! its class (64 KiB runs only: a class whose few slots come and go, freed
//! by another thread say, must not take a new run every round); `trim`,
//! thread exit and the end of a burst give those back too.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::class::{self, ClassInfo, CLASS_COUNT, RUN_HEADER_BYTES, TABLE as CLASSES};
use crate::fault::{self, fault, Call, Fault, CHECKS};

/// Mixed into a run's address to make its `check` word.
const RUN_MAGIC: usize = crate::fault::magic(0x6e6f_6c69_6263_7275); // "nolibcru"
/// Mixed into a free slot's address and its run's to make its marker (the
/// same on the run's free list and on a remote list, so that one comparison
/// finds a second free of either; the owner recovers the run of a remotely
/// freed slot from it).
const FREE_MAGIC: usize = crate::fault::magic(0x6672_6565_736c_6f74); // "freeslot"

/// The check word of a live run at `run_addr` of `run_bytes` (the size is
/// in it, so that probing by address alone tells the run sizes apart).
#[inline(always)]
fn run_check(run_addr: usize, run_bytes: usize) -> usize {
    run_addr ^ RUN_MAGIC ^ run_bytes
}

/// Bytes of fresh slots carved at once (see `Arena::take_slot`).
const FRESH_BATCH_BYTES: usize = 1024;
/// Most fresh slots carved at once.
const FRESH_BATCH_SLOTS: usize = 16;

/// Header at the start of every run. It repeats what the hot paths need of
/// its class (size, inverse, slots, first slot), so that they read one
/// cache line and no table.
#[repr(C)]
pub(crate) struct Run {
    /// [`run_check`] of the run's address and size while the run is live, 0 after.
    check: usize,
    /// Next run of the same class with free slots (or cached empty).
    next: *mut Run,
    /// Previous run in that list.
    prev: *mut Run,
    /// Free slots handed back, linked through their first word.
    free: *mut FreeSlot,
    /// Region the run came from (opaque to this tier).
    pub(crate) region: *mut u8,
    /// The class's slot size in bytes.
    size: u32,
    /// The class's [`ClassInfo::inverse`].
    inverse: u32,
    /// The low 32 bits of slot 0's address: a pointer's offset from slot 0,
    /// wrapped to a `u32`, in one subtraction (see [`on_carved_slot`]).
    base: u32,
    /// Index of the arena (thread heap or locked arena) owning this run.
    arena: u16,
    /// Slots carved so far; slots at or above it were never handed out.
    bump: u16,
    /// Slots in use. Invariant: `live + free-list length = bump`.
    live: u16,
    /// The class's slots per run.
    slots: u16,
    /// Size class index.
    class: u8,
    /// Whether the run is linked in its class list. Invariant: true if
    /// `live < slots` (it has a free slot); a full run stays listed until
    /// an allocation finds it at the head of its list with no slot left
    /// ([`Arena::alloc_fresh`] unlinks it), so that the fast path need not
    /// test for the last slot.
    listed: bool,
    /// Trailing zeros of `size` (see [`ClassInfo::inverse`]); kept, not
    /// derived: one load, where baseline x86_64 derives it with a bit scan
    /// and a test for zero.
    shift: u8,
    /// Written as zeros: the pointer-only lookup of a slot near the header
    /// reads these bytes, which must not be uninitialised padding. Fills the
    /// header to `RUN_HEADER_BYTES` (1 byte with 8-byte words, 21 with 4),
    /// so that the class table is the same on every target.
    reserved: [u8; RUN_RESERVED_BYTES],
}

/// What the fields of [`Run`] leave of `RUN_HEADER_BYTES`: five words,
/// three `u32`, four `u16`, three bytes.
const RUN_RESERVED_BYTES: usize = RUN_HEADER_BYTES - 5 * core::mem::size_of::<usize>() - 23;

const _: () = assert!(core::mem::size_of::<Run>() == RUN_HEADER_BYTES);

/// The class of a checked live run, below [`CLASS_COUNT`]: written so by
/// [`Arena::alloc_from_new_run`], and every way in checks it (`run_of`
/// compares it with the layout's class, `find_run` and `run_of_remote`
/// bound it, `Arena::free` indexes with it checked). Told to the compiler,
/// which then drops the bounds checks (and their panics) of the cold paths
/// that index by it.
///
/// # Safety
/// `run` is a live run that came through one of those checks.
#[inline(always)]
unsafe fn class_of(run: *mut Run) -> usize {
    // SAFETY: the caller guarantees a live, checked run.
    unsafe {
        let class = (*run).class as usize;
        core::hint::assert_unchecked(class < CLASS_COUNT);
        class
    }
}

#[repr(C)]
struct FreeSlot {
    next: *mut FreeSlot,
    /// [`free_marker`] while free; cleared when handed out.
    marker: usize,
}

/// Per-class state of an arena.
#[derive(Clone, Copy)]
struct ClassList {
    /// Runs with at least one free slot.
    head: *mut Run,
}

/// The small-tier state one lock guards.
pub(crate) struct Arena {
    classes: [ClassList; CLASS_COUNT],
    /// Bytes of runs that are empty but kept.
    cached_empty_bytes: usize,
    /// Bytes in slots handed out (slots freed by other threads count until
    /// the owner takes them back). Written by the arena's owner only (plain
    /// load and store), read by anyone.
    pub(crate) in_use_bytes: AtomicUsize,
    /// Highest `in_use_bytes` seen (same rules).
    pub(crate) peak_in_use_bytes: AtomicUsize,
    /// Highest `in_use_bytes` since the arena was last idle.
    burst_peak_bytes: usize,
}

// SAFETY: an arena is only touched under its lock; its raw pointers point into
// runs that the allocator owns.
unsafe impl Send for Arena {}

/// What a free left behind.
pub(crate) enum Freed {
    /// Nothing more to do.
    Done,
    /// The arena has nothing in use after a burst: give all its empty runs
    /// (this one included, still listed) back.
    Idle,
    /// The run is empty and unlinked: give it back to the core
    /// (run address, run bytes, region).
    ReleaseRun(NonNull<u8>, usize, *mut u8),
}

impl Arena {
    /// An arena with no runs.
    pub(crate) const fn new() -> Self {
        Arena {
            classes: [ClassList { head: ptr::null_mut() }; CLASS_COUNT],
            cached_empty_bytes: 0,
            in_use_bytes: AtomicUsize::new(0),
            peak_in_use_bytes: AtomicUsize::new(0),
            burst_peak_bytes: 0,
        }
    }

    /// Takes a slot of `class` off the free list of its first run, if it
    /// has one (not a slot never handed out: see [`Arena::alloc_fresh`]).
    #[inline(always)]
    pub(crate) fn alloc(&mut self, class: usize) -> Option<NonNull<u8>> {
        let run = self.classes.get(class)?.head;
        if run.is_null() {
            return None;
        }
        // SAFETY: listed runs are live runs of this arena with a free slot.
        unsafe {
            let s = (*run).free;
            if s.is_null() {
                return None;
            }
            let live = (*run).live;
            // The common case: a run that is not empty (an empty one leaves
            // the cached empty runs: `take_slot`). A run this makes full
            // stays listed (see `Run::listed`).
            if live == 0 {
                return Some(self.take_slot(run));
            }
            (*run).free = (*s).next;
            (*s).marker = 0;
            (*run).live = live + 1;
            let in_use = self.in_use_bytes.load(Relaxed) + (*run).size as usize;
            self.in_use_bytes.store(in_use, Relaxed);
            let slot = NonNull::new_unchecked(s.cast());
            if in_use > self.burst_peak_bytes {
                // A tail call that hands the slot back: the fast path
                // keeps nothing across a call, so it needs no frame.
                return Some(self.new_peak(in_use, slot));
            }
            Some(slot)
        }
    }

    /// [`Arena::alloc`] for the slow paths, out of line (one copy for all
    /// of them), then with `fresh` [`Arena::alloc_fresh`].
    #[inline(never)]
    pub(crate) fn alloc_cold(&mut self, class: usize, fresh: bool) -> Option<NonNull<u8>> {
        match self.alloc(class) {
            None if fresh => self.alloc_fresh(class),
            p => p,
        }
    }

    /// Takes a slot of `class` from its first run, a slot never handed out
    /// if need be (which touches memory the run has not used yet: thread
    /// heaps first take back the slots other threads freed).
    #[cold]
    #[inline(never)]
    pub(crate) fn alloc_fresh(&mut self, class: usize) -> Option<NonNull<u8>> {
        loop {
            let run = self.classes.get(class)?.head;
            if run.is_null() {
                return None;
            }
            // SAFETY: listed runs are live runs of this arena; a full one
            // (left listed by `alloc`) is unlinked, the next tried.
            unsafe {
                if (*run).live == (*run).slots {
                    self.unlink(run);
                    continue;
                }
                return Some(self.take_slot(run));
            }
        }
    }

    /// Installs a fresh run for `class` (described by `info`) at `mem` (from the core, `run_bytes`
    /// long and aligned to it) and takes a slot from it.
    ///
    /// # Safety
    /// `mem` is owned by this arena from now on, valid for `run_bytes`.
    pub(crate) unsafe fn alloc_from_new_run(
        &mut self,
        class: usize,
        info: &ClassInfo,
        mem: NonNull<u8>,
        arena_index: usize,
        region: *mut u8,
    ) -> NonNull<u8> {
        let run = mem.as_ptr().cast::<Run>();
        // SAFETY: the caller hands us `run_bytes` of memory, enough for the
        // header; nobody else sees it yet.
        unsafe {
            run.write(Run {
                check: run_check(run as usize, info.run_bytes as usize),
                next: ptr::null_mut(),
                prev: ptr::null_mut(),
                free: ptr::null_mut(),
                region,
                size: info.size,
                inverse: info.inverse,
                base: (run as usize).wrapping_add(info.slot0 as usize) as u32,
                arena: arena_index as u16,
                bump: 0,
                live: 0,
                slots: info.slots as u16,
                class: class as u8,
                listed: false,
                shift: info.size.trailing_zeros() as u8,
                reserved: [0; RUN_RESERVED_BYTES],
            });
            // A new run counts as cached-empty until its first slot is taken.
            self.cached_empty_bytes += info.run_bytes as usize;
            self.push(run);
            self.take_slot(run)
        }
    }

    /// Takes a slot of a listed run, whatever its state: a fresh slot when
    /// the free list is empty, the run's first (it leaves the cached empty
    /// runs) or its last (it leaves its class list).
    ///
    /// # Safety
    /// `run` is a listed run of this arena.
    #[cold]
    #[inline(never)]
    unsafe fn take_slot(&mut self, run: *mut Run) -> NonNull<u8> {
        // SAFETY: the caller guarantees `run` is live and has a free slot,
        // so either the free list is non-empty or `bump < slots`.
        unsafe {
            let size = (*run).size as usize;
            let slot = if !(*run).free.is_null() {
                let s = (*run).free;
                (*run).free = (*s).next;
                (*s).marker = 0;
                s.cast::<u8>()
            } else {
                let first = (*run).bump as usize;
                let s = run.cast::<u8>().add(slot0_of(run) + first * size);
                // A few more slots (a kilobyte's worth, at most 16) go onto
                // the free list at once, lowest first: the next allocations
                // then take the fast path instead of coming here for each.
                let left = (*run).slots as usize - first;
                // (`max`: no division by zero to check for; sizes are 16 or more.)
                let n = left.min(FRESH_BATCH_BYTES / size.max(16)).clamp(1, FRESH_BATCH_SLOTS);
                for i in (1..n).rev() {
                    let f = s.add(i * size).cast::<FreeSlot>();
                    (*f).next = (*run).free;
                    (*f).marker = free_marker(run, f.cast());
                    (*run).free = f;
                }
                (*run).bump += n as u16;
                // Memory reused from an old run may hold a stale marker.
                (*s.cast::<FreeSlot>()).marker = 0;
                s
            };
            if (*run).live == 0 {
                self.cached_empty_bytes -= run_bytes_of(run);
            }
            (*run).live += 1;
            if (*run).live == (*run).slots {
                self.unlink(run);
            }
            let in_use = self.in_use_bytes.load(Relaxed) + size;
            self.in_use_bytes.store(in_use, Relaxed);
            let slot = NonNull::new_unchecked(slot);
            if in_use > self.burst_peak_bytes {
                return self.new_peak(in_use, slot);
            }
            slot
        }
    }

    #[cold]
    #[inline(never)]
    fn new_peak(&mut self, in_use: usize, slot: NonNull<u8>) -> NonNull<u8> {
        self.burst_peak_bytes = in_use;
        if in_use > self.peak_in_use_bytes.load(Relaxed) {
            self.peak_in_use_bytes.store(in_use, Relaxed);
        }
        // Hidden from the optimiser, which would otherwise see that `slot`
        // comes back unchanged and keep the caller's copy across the call
        // (a saved register: a frame on the fast path) instead of the tail call.
        // SAFETY: `opaque` returns its argument, `slot`, non-null.
        unsafe { NonNull::new_unchecked(crate::opaque(slot.as_ptr().cast_const()).cast_mut()) }
    }

    /// Returns a slot of `run`; `drained`: the slot comes off a remote list
    /// (already checked when it was pushed). `false`: the run was full or is
    /// empty now, and [`Arena::free_tail`] must follow.
    ///
    /// # Safety
    /// `run` was checked by [`run_of`] and belongs to this arena.
    #[inline(always)]
    pub(crate) unsafe fn free(&mut self, run: NonNull<Run>, ptr: NonNull<u8>, drained: bool, call: Call) -> bool {
        let run = run.as_ptr();
        // SAFETY: `run_of` checked the header; this arena's lock is held.
        unsafe {
            if CHECKS && !drained && !on_carved_slot(run, ptr) {
                fault::invalid_pointer(call, ptr.as_ptr() as usize);
            }
            let slot = ptr.as_ptr().cast::<FreeSlot>();
            let marker = free_marker(run, slot.cast());
            if CHECKS && !drained && (*slot).marker == marker {
                fault::double_free(call, ptr.as_ptr() as usize);
            }
            (*slot).next = (*run).free;
            (*slot).marker = marker;
            (*run).free = slot;
            (*run).live -= 1;
            let in_use = self.in_use_bytes.load(Relaxed) - (*run).size as usize;
            self.in_use_bytes.store(in_use, Relaxed);
            (*run).listed && (*run).live > 0
        }
    }

    /// The rare end of a free: the run was full (list it again) or is empty
    /// now (keep it cached, give it back, or end a burst).
    ///
    /// # Safety
    /// `run` is a live run of this arena, whose slot [`Arena::free`] just
    /// freed, answering `false`.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn free_tail(&mut self, run: NonNull<Run>, trim_threshold: usize) -> Freed {
        let run = run.as_ptr();
        let in_use = self.in_use_bytes.load(Relaxed);
        // SAFETY: as the caller guarantees.
        unsafe {
            if !(*run).listed {
                self.push(run);
            }
            if (*run).live > 0 {
                return Freed::Done;
            }
            let bytes = run_bytes_of(run);
            // The last block of a burst was just freed: give every empty
            // run back. (A loop that allocates and frees one block makes
            // no burst: its run stays cached.)
            if in_use == 0 && self.burst_peak_bytes >= crate::medium::IDLE_PURGE_MIN_BYTES {
                self.burst_peak_bytes = 0;
                self.cached_empty_bytes += bytes;
                return Freed::Idle;
            }
            // Within the budget, or the last run of its class (of the
            // smallest run size): kept, so that a class whose few slots come
            // and go (freed by another thread, say) does not take a new run
            // for each round.
            let alone = (*run).prev.is_null() && (*run).next.is_null();
            if self.cached_empty_bytes + bytes <= trim_threshold || (alone && bytes <= class::RUN_BYTES_SMALL) {
                self.cached_empty_bytes += bytes;
                return Freed::Done;
            }
            self.unlink(run);
            (*run).check = 0;
            Freed::ReleaseRun(NonNull::new_unchecked(run.cast()), bytes, (*run).region)
        }
    }

    /// Unlinks every cached empty run and hands it to `take` (run, bytes,
    /// region), which owns it from then on.
    pub(crate) fn drain_empty(&mut self, mut take: impl FnMut(NonNull<u8>, usize, *mut u8)) {
        for (class, info) in CLASSES.iter().enumerate() {
            let mut run = self.classes[class].head;
            while !run.is_null() {
                // SAFETY: listed runs are live runs of this arena; a run is
                // unlinked before it is handed over (which overwrites it).
                unsafe {
                    let next = (*run).next;
                    let bytes = info.run_bytes as usize;
                    if (*run).live == 0 {
                        self.unlink(run);
                        self.cached_empty_bytes -= bytes;
                        (*run).check = 0;
                        take(NonNull::new_unchecked(run.cast()), bytes, (*run).region);
                    }
                    run = next;
                }
            }
        }
    }

    /// # Safety
    /// `run` is live and not listed.
    unsafe fn push(&mut self, run: *mut Run) {
        // SAFETY: the caller guarantees `run` is live; the head is live or null.
        unsafe {
            let list = &mut self.classes[class_of(run)];
            (*run).prev = ptr::null_mut();
            (*run).next = list.head;
            if !list.head.is_null() {
                (*list.head).prev = run;
            }
            list.head = run;
            (*run).listed = true;
        }
    }

    /// # Safety
    /// `run` is live and listed.
    unsafe fn unlink(&mut self, run: *mut Run) {
        // SAFETY: the caller guarantees `run` and its neighbours are live.
        unsafe {
            if (*run).prev.is_null() {
                self.classes[class_of(run)].head = (*run).next;
            } else {
                (*(*run).prev).next = (*run).next;
            }
            if !(*run).next.is_null() {
                (*(*run).next).prev = (*run).prev;
            }
            (*run).next = ptr::null_mut();
            (*run).prev = ptr::null_mut();
            (*run).listed = false;
        }
    }

    /// Checks every invariant of the arena's runs; returns the bytes in use.
    /// Aborts on a violation. For tests and fuzzing.
    pub(crate) fn validate(&self) -> usize {
        let mut cached = 0;
        for (class, list) in self.classes.iter().enumerate() {
            let info = &CLASSES[class];
            let mut prev: *mut Run = ptr::null_mut();
            let mut run = list.head;
            while !run.is_null() {
                // SAFETY: listed runs are live.
                unsafe {
                    let r = &*run;
                    check(
                        r.check == run_check(run as usize, info.run_bytes as usize),
                        "run check word",
                    );
                    check(r.class as usize == class, "run in the list of its class");
                    check(r.prev == prev, "run list back link");
                    check(r.listed, "listed runs say so");
                    validate_run(run, info);
                    if r.live == 0 {
                        cached += info.run_bytes as usize;
                    }
                    prev = run;
                    run = r.next;
                }
            }
        }
        check(cached == self.cached_empty_bytes, "cached empty bytes");
        self.in_use_bytes.load(Relaxed)
    }
}

/// Checks one run: its free list and counts agree.
///
/// # Safety
/// `run` is a live run of class `info`.
unsafe fn validate_run(run: *mut Run, info: &ClassInfo) {
    // SAFETY: the caller guarantees the run is live; its free list links
    // slots inside it (checked as we go).
    unsafe {
        let r = &*run;
        check(
            r.size == info.size
                && r.inverse == info.inverse
                && r.shift as u32 == info.size.trailing_zeros()
                && r.slots as u32 == info.slots
                && slot0_of(run) == info.slot0 as usize,
            "run header repeats its class",
        );
        check(r.bump as u32 <= info.slots, "bump within the run");
        let mut free = 0;
        let mut slot = r.free;
        while !slot.is_null() {
            let off = slot as usize - run as usize;
            check(off >= info.slot0 as usize, "free slot inside the run");
            let index = (off - info.slot0 as usize) / info.size as usize;
            check(
                (off - info.slot0 as usize).is_multiple_of(info.size as usize),
                "free slot on a slot boundary",
            );
            check(index < r.bump as usize, "free slot was carved");
            check((*slot).marker == free_marker(run, slot.cast()), "free slot marker");
            free += 1;
            check(free <= info.slots, "free list has no cycle");
            slot = (*slot).next;
        }
        check(free + r.live as u32 == r.bump as u32, "carved = free + live");
    }
}

fn check(ok: bool, what: &'static str) {
    if !ok {
        fault(Fault::Corrupt(what), 0);
    }
}

/// The marker of a free slot of `run` (on its free list or a remote list).
#[inline(always)]
fn free_marker(run: *mut Run, slot: *mut u8) -> usize {
    run as usize ^ slot as usize ^ FREE_MAGIC
}

/// Marks a slot freed by a thread that does not own its run, before it is
/// pushed onto the owner's remote list; stops the process on a double free.
///
/// # Safety
/// `ptr` is a live slot of `run` (checked by [`run_of`]).
#[inline]
pub(crate) unsafe fn mark_remote(run: NonNull<Run>, ptr: NonNull<u8>, call: Call) {
    let slot = ptr.as_ptr().cast::<FreeSlot>();
    let marker = free_marker(run.as_ptr(), slot.cast());
    // SAFETY: a live slot is the caller's to write.
    unsafe {
        if CHECKS && (*slot).marker == marker {
            fault::double_free(call, ptr.as_ptr() as usize);
        }
        (*slot).marker = marker;
    }
}

/// The run of a slot taken off a remote list, from its marker; checked.
///
/// # Safety
/// `slot` came off a remote list (marked by [`mark_remote`]).
#[inline]
pub(crate) unsafe fn run_of_remote(slot: *mut u8) -> NonNull<Run> {
    // SAFETY: a slot on a remote list holds its marker in the second word.
    let marker = unsafe { (*slot.cast::<FreeSlot>()).marker };
    let run = slot.with_addr(marker ^ slot as usize ^ FREE_MAGIC).cast::<Run>();
    let Some(run) = NonNull::new(run) else {
        fault(Fault::Corrupt("remote slot marker"), slot as usize);
    };
    // SAFETY: the marker names the run holding the slot, below it in the same
    // allocation; the check word tells whether that is still so (the class
    // byte is read only to find the run size to check it with).
    let ok = unsafe {
        let r = run.as_ptr();
        let bytes = CLASSES.get((*r).class as usize).map_or(0, |i| i.run_bytes as usize);
        (*r).check == run_check(r as usize, bytes)
    };
    if !ok {
        fault(Fault::Corrupt("remote slot marker"), slot as usize);
    }
    run
}

/// Checks the slots of a remote list: each marked, in a live run of arena
/// `index`, carved. For tests and fuzzing (nobody may push meanwhile).
///
/// # Safety
/// `slot` heads a remote list of arena `index`.
pub(crate) unsafe fn validate_remote(mut slot: *mut u8, index: usize) {
    let mut n = 0usize;
    while !slot.is_null() {
        // SAFETY: the slot came off a remote list; `run_of_remote` checks the run.
        unsafe {
            let run = run_of_remote(slot).as_ptr();
            let info = &CLASSES[(*run).class as usize];
            check((*run).arena as usize == index, "remote slot of another arena");
            let off = slot as usize - run as usize - info.slot0 as usize;
            check(off.is_multiple_of(info.size as usize), "remote slot on a slot boundary");
            check(
                off / (info.size as usize) < (*run).bump as usize,
                "remote slot was carved",
            );
            n += 1;
            check(n < usize::MAX / 2, "remote list has no cycle");
            slot = *slot.cast::<*mut u8>();
        }
    }
}

/// Finds and checks the run holding a slot of `class` at `ptr`: `None` if
/// no live run of that class is there (the caller then finds out what the
/// pointer is, to name the fault); stops the process if the run is there but
/// `ptr` is not on a slot boundary.
///
/// # Safety
/// `ptr` lies in memory the allocator handed out for this class (the
/// checks catch many violations, not all).
#[inline]
pub(crate) unsafe fn run_of(ptr: NonNull<u8>, class: usize, call: Call) -> Option<NonNull<Run>> {
    let run_bytes = class::run_bytes(class);
    let addr = ptr.as_ptr() as usize;
    let run_addr = addr & !(run_bytes - 1);
    let run = ptr.as_ptr().wrapping_sub(addr - run_addr).cast::<Run>();
    // SAFETY: a slot of this class lies in a run whose header starts at the
    // run-aligned address below it, inside the same allocation.
    let r = unsafe { &*run };
    if CHECKS && (r.check != run_check(run_addr, run_bytes) || r.class as usize != class) {
        return None;
    }
    let _ = call; // the slot itself is checked where it is freed (`Arena::free`, `check_slot`)
                  // SAFETY: `run` is derived from a non-null pointer minus its offset in the run.
    Some(unsafe { NonNull::new_unchecked(run) })
}

/// Stops the process unless `ptr` is on a slot boundary of `run`, past the
/// header (what `Arena::free` checks too, for the paths that do not reach it).
///
/// # Safety
/// `run` is a live run (checked by [`run_of`] or [`find_run`]).
#[inline]
pub(crate) unsafe fn check_slot(run: NonNull<Run>, ptr: NonNull<u8>, call: Call) {
    // SAFETY: a checked live run.
    if CHECKS && !unsafe { on_carved_slot(run.as_ptr(), ptr) } {
        fault::invalid_pointer(call, ptr.as_ptr() as usize);
    }
}

/// Whether `ptr` is on a slot boundary of `run`, past its header, at a slot
/// carved already.
///
/// # Safety
/// `run` is a live run (checked by [`run_of`] or [`find_run`]).
#[inline(always)]
unsafe fn on_carved_slot(run: *mut Run, ptr: NonNull<u8>) -> bool {
    // SAFETY: a checked live run.
    let r = unsafe { &*run };
    // The offset from slot 0 in a `u32` (runs are at most 1 MiB; below
    // slot 0 it wraps past every slot), its slot by the class's inverse
    // (see `ClassInfo::inverse`): one comparison rejects an offset inside a
    // slot, in the header and past the carved slots alike.
    let off = (ptr.as_ptr() as usize as u32).wrapping_sub(r.base);
    class::rotated_quotient(off, r.inverse, r.shift as u32) < r.bump as u32
}

/// Offset of slot 0 in a live run (from [`Run::base`]).
///
/// # Safety
/// `run` is a live run.
#[inline]
unsafe fn slot0_of(run: *mut Run) -> usize {
    // SAFETY: as the caller guarantees.
    unsafe { (*run).base.wrapping_sub(run as usize as u32) as usize }
}

/// Slot size of a live run.
///
/// # Safety
/// `run` is a live run.
#[inline]
pub(crate) unsafe fn slot_size(run: NonNull<Run>) -> usize {
    // SAFETY: as the caller guarantees.
    unsafe { (*run.as_ptr()).size as usize }
}

/// Bytes of a live run (from its class).
///
/// # Safety
/// `run` is a live run.
#[inline]
unsafe fn run_bytes_of(run: *mut Run) -> usize {
    // SAFETY: as the caller guarantees.
    class::run_bytes(unsafe { (*run).class } as usize)
}

/// Finds the run holding the slot at `ptr` from the address alone (for
/// `free` without a size): probes the run-size-aligned addresses below it,
/// smallest run size first, for a live run header. Returns the run and class.
///
/// # Safety
/// `ptr` lies in a run (the caller has ruled out medium and large blocks),
/// so every probed address is inside that run and readable — or the caller
/// checks with `readable` that each probed address can be read.
pub(crate) unsafe fn find_run(
    ptr: NonNull<u8>,
    readable: impl Fn(*const u8) -> bool,
    call: Call,
) -> Option<(NonNull<Run>, usize)> {
    // SAFETY: forwarded.
    unsafe { find_run_then(ptr, readable, call, |run, class| Some((run, class)), || None) }
}

/// [`find_run`] in continuation-passing style: `found` with the run and
/// its class, else `missing` (no `Option` of a pointer for the caller to
/// test again: C's `free` tail-calls one or the other).
///
/// # Safety
/// As [`find_run`].
#[inline(always)]
pub(crate) unsafe fn find_run_then<R>(
    ptr: NonNull<u8>,
    readable: impl Fn(*const u8) -> bool,
    call: Call,
    found: impl FnOnce(NonNull<Run>, usize) -> R,
    missing: impl FnOnce() -> R,
) -> R {
    let addr = ptr.as_ptr() as usize;
    for run_bytes in [
        crate::class::RUN_BYTES_SMALL,
        crate::class::RUN_BYTES_MID,
        crate::class::RUN_BYTES_BIG,
    ] {
        let run_addr = addr & !(run_bytes - 1);
        let run = ptr.as_ptr().wrapping_sub(addr & (run_bytes - 1)).cast::<Run>();
        if !readable(run.cast()) {
            return missing();
        }
        // SAFETY: the run holding `ptr` starts at or below `run_addr`.
        let r = unsafe { &*run };
        // (A run whose check word matches is live: its class is valid.)
        if r.check == run_check(run_addr, run_bytes) {
            let _ = call; // the slot is checked where it is freed
                          // SAFETY: `run` is derived from a non-null pointer minus its offset in the run.
            return found(unsafe { NonNull::new_unchecked(run) }, r.class as usize);
        }
    }
    missing()
}

/// The arena owning a checked run.
///
/// # Safety
/// `run` came from [`run_of`].
#[inline]
pub(crate) unsafe fn arena_of(run: NonNull<Run>) -> usize {
    // SAFETY: checked live run.
    unsafe { (*run.as_ptr()).arena as usize }
}

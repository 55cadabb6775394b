//! Thread heaps: a small tier of its own for every thread with an identity.
//!
//! A *thread heap* is an arena of the small tier that one thread owns. The owner allocates
//! from it and frees its own slots into it with plain loads and stores: no
//! lock, no atomic read-modify-write. A slot freed by another thread goes
//! onto the heap's *remote list* with one compare-and-swap (batched through
//! the freeing thread's outbox, when it has a heap of its own);
//! the owner takes the whole list with one swap when a class runs out of slots (free-list
//! sharding, after the idea in Leijen, Zorn and de Moura, "Mimalloc: Free
//! List Sharding in Action", 2019).
//!
//! **Identity.** A thread is known by its thread pointer (see
//! [`crate::os::Source::thread_identity`]), which C libraries, `origin` and
//! the `rt` runtime keep unique per live thread. The heaps form a table of
//! [`HEAP_COUNT`] entries claimed by compare-and-swap of the owner's
//! identity, probed from a hash of it. A thread without an identity, or
//! finding the table full, uses the locked arenas.
//!
//! **Shared thread pointers.** Two threads that share one thread pointer (a
//! raw `clone` without `CLONE_SETTLS`) must not share a heap. The owner's
//! stack pointer at the claim is recorded; a call from a stack pointer more
//! than [`STACK_WINDOW_BYTES`] away asks the kernel for the caller's thread
//! id: the owner re-centres its window, a thread whose id differs from a
//! live owner's goes to the locked arenas. (Threads sharing a thread
//! pointer whose stacks lie within the window of each other are not told
//! apart: such a runtime should give its threads a thread pointer each.)
//!
//! **Threads end.** [`crate::NolibcAlloc::thread_exit`] gives a heap back:
//! its remote list drained, its empty runs to the core, the entry free for
//! the next thread (the runs still in use stay with the entry); a slot freed
//! into it later is taken back at once by the freeing thread, which borrows
//! the entry for the moment. Without that
//! call, a later thread with the same thread pointer finds the heap its
//! own (C libraries reuse the thread blocks of ended threads), and a thread
//! that finds the table full adopts the heap of an owner the kernel says has
//! ended.
//!
//! **fork.** The child keeps the forking thread's heap; the heaps of the
//! other threads are given up (a thread may have been half-way through a
//! change): their blocks can still be freed, their free slots are not
//! reused.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering::*};

use crate::os::Source;
use crate::outbox::Outbox;
use crate::small::Arena;

/// Number of thread heaps in the table of each allocator.
pub const HEAP_COUNT: usize = 64;

/// A call whose stack pointer is more than this far from where its heap's
/// owner claimed it checks the thread id first (see the module docs).
pub const STACK_WINDOW_BYTES: usize = 256 << 10;

/// How far above the claiming stack pointer the window reaches (calls made
/// from frames shallower than the claim).
const STACK_SLACK_BYTES: usize = 32 << 10;

/// `owner` of an entry given up in a fork child: never claimed again.
const ORPHAN: usize = 1;

/// `owner` of an entry borrowed for a moment by `trim`.
const BORROWED: usize = 2;

/// One entry of the table, on cache lines of its own (1 KiB: the table is
/// indexed by a shift). Aligned to 128 bytes (the lock's cache-line pair),
/// not to its size: the shift needs the size only, and a 1 KiB-aligned
/// `.bss` pads every stripped program file to a 1 KiB step (lld keeps the
/// first section of a segment at a file offset congruent to its address).
#[repr(C, align(128))]
pub(crate) struct Heap {
    /// Identity of the owner; 0 while unclaimed.
    owner: AtomicUsize,
    /// Top of the owner's stack window (see [`STACK_WINDOW_BYTES`]).
    stack: AtomicUsize,
    /// Kernel thread id of the owner (0 if the source does not know).
    tid: AtomicU32,
    arena: UnsafeCell<Arena>,
    /// Slots the owner freed into other heaps, not yet handed over.
    outbox: UnsafeCell<Outbox>,
    /// Slots freed by other threads, linked through their first word; on a
    /// cache line of its own, so that other threads' pushes do not take away
    /// the line the owner reads on every call.
    remote: RemoteList,
}

/// A cache line (64 bytes; 128 would make a heap 2 KiB).
#[repr(align(64))]
struct RemoteList(AtomicPtr<u8>);

// 1 KiB with 8-byte words (the table is indexed by a shift); less with 4.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(core::mem::size_of::<Heap>() == 1024);
#[cfg(not(target_pointer_width = "64"))]
const _: () = assert!(core::mem::size_of::<Heap>() <= 1024);

// SAFETY: the arena is touched only by the owner (claimed by CAS on `owner`,
// handed over with release/acquire); the other fields are atomics.
unsafe impl Sync for Heap {}
// SAFETY: as above.
unsafe impl Send for Heap {}

/// The caller's stack pointer (near enough: any address in its frame).
#[inline(always)]
pub(crate) fn stack_pointer() -> usize {
    let sp: usize;
    // Read from the register where we can: the address of a local would
    // give the fast paths a stack frame of their own.
    #[cfg(all(not(miri), target_arch = "x86_64"))]
    // SAFETY: reads a register; no side effect.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(all(not(miri), target_arch = "aarch64"))]
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(all(not(miri), target_arch = "riscv64"))]
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("mv {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(all(not(miri), target_arch = "x86"))]
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("mov {}, esp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(all(not(miri), target_arch = "arm"))]
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(not(all(
        not(miri),
        any(
            target_arch = "x86_64",
            target_arch = "aarch64",
            target_arch = "riscv64",
            target_arch = "x86",
            target_arch = "arm"
        )
    )))]
    {
        let marker = 0u8;
        sp = ptr::addr_of!(marker) as usize;
    }
    sp
}

/// Whether the caller's stack pointer lies in the window below `top`.
/// Under Miri locals have no stack addresses to compare: always.
#[inline(always)]
fn in_window(top: usize) -> bool {
    cfg!(miri) || top.wrapping_sub(stack_pointer()) < STACK_WINDOW_BYTES
}

/// The entry a thread's identity probes first.
#[inline(always)]
pub(crate) fn home(id: usize) -> usize {
    // Thread pointers are page-spaced (or more): scramble, take the top
    // bits (which every bit of the product's factors reaches).
    id.wrapping_mul(crate::fault::GOLDEN) >> (usize::BITS - HEAP_COUNT.trailing_zeros())
}

/// Called once each time a thread claims a heap (the C ABI registers its
/// thread-exit destructor here); null: nothing to call.
// In `.data` for the C ABI, whose data page is written at start anyway
// (README, "Memory at start"); plain data, so any section serves.
#[cfg_attr(feature = "c-abi", unsafe(link_section = ".data.nolibc_alloc"))]
static ON_CLAIM: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());

/// Sets the function called when a thread claims a heap (for example to
/// arrange for [`crate::fork::thread_exit`] to run when it ends). It runs
/// outside every lock; it must not allocate through this allocator.
pub fn set_claim_hook(hook: fn()) {
    ON_CLAIM.store(hook as *mut (), Release);
}

/// Whether a claim hook is set (see [`crate::os::Source::threads_give_back`]).
pub(crate) fn claim_hook_set() -> bool {
    !ON_CLAIM.load(Relaxed).is_null()
}

impl Heap {
    pub(crate) const fn new() -> Self {
        Heap {
            owner: AtomicUsize::new(0),
            stack: AtomicUsize::new(0),
            tid: AtomicU32::new(0),
            arena: UnsafeCell::new(Arena::new()),
            outbox: UnsafeCell::new(Outbox::new()),
            remote: RemoteList(AtomicPtr::new(ptr::null_mut())),
        }
    }

    /// Whether `id` owns this heap and the caller runs where the owner does.
    #[inline(always)]
    pub(crate) fn is_mine(&self, id: usize) -> bool {
        self.owner.load(Relaxed) == id && in_window(self.stack.load(Relaxed))
    }

    /// The owner's arena.
    ///
    /// # Safety
    /// The caller owns the heap ([`Heap::is_mine`] or a claim).
    #[inline(always)]
    #[allow(clippy::mut_from_ref)] // exclusivity is the owner's, as documented
    pub(crate) unsafe fn arena(&self) -> &mut Arena {
        // SAFETY: only the owner touches the arena.
        unsafe { &mut *self.arena.get() }
    }

    /// The owner's outbox.
    ///
    /// # Safety
    /// The caller owns the heap ([`Heap::is_mine`] or a claim).
    #[inline(always)]
    #[allow(clippy::mut_from_ref)] // exclusivity is the owner's, as documented
    pub(crate) unsafe fn outbox(&self) -> &mut Outbox {
        // SAFETY: only the owner touches the outbox.
        unsafe { &mut *self.outbox.get() }
    }

    /// The outbox, for checking with no other thread in the allocator.
    pub(crate) fn outbox_shared(&self) -> *const Outbox {
        self.outbox.get()
    }

    /// The arena for reading counters that are atomics.
    pub(crate) fn arena_shared(&self) -> *const Arena {
        self.arena.get()
    }

    /// Pushes a chain of marked slots of this heap's runs, `head` to `tail`
    /// linked through their first word, in one compare-and-swap.
    ///
    /// # Safety
    /// The slots are marked by [`small::mark_remote`], slots of this heap's
    /// runs, and the caller's alone.
    pub(crate) unsafe fn push_remote_chain(&self, head: *mut u8, tail: *mut u8) {
        let mut old = self.remote.0.load(Relaxed);
        loop {
            // SAFETY: a live slot has room for the link word.
            unsafe { tail.cast::<*mut u8>().write(old) };
            match self.remote.0.compare_exchange_weak(old, head, Release, Relaxed) {
                Ok(_) => return,
                Err(now) => old = now,
            }
        }
    }

    /// Takes the whole remote list (owner only).
    #[inline]
    pub(crate) fn take_remote(&self) -> *mut u8 {
        if self.remote.0.load(Relaxed).is_null() {
            return ptr::null_mut();
        }
        self.remote.0.swap(ptr::null_mut(), Acquire)
    }

    /// Slots waiting on the remote list (walks it: for tests, with no other
    /// thread pushing).
    pub(crate) fn remote_list(&self) -> *mut u8 {
        self.remote.0.load(Acquire)
    }

    /// Gives the heap up: the next thread may claim it (owner only, after
    /// draining what it wants to).
    pub(crate) fn release(&self) {
        self.owner.store(0, Release);
    }

    /// In a fork child: keeps the heap if `id` owns it (with the child's
    /// thread id), gives it up for good otherwise.
    pub(crate) fn fork_child<S: Source>(&self, id: usize, source: &S) {
        let owner = self.owner.load(Relaxed);
        if owner == 0 || owner == ORPHAN {
            return;
        }
        if id != 0 && owner == id {
            self.tid.store(source.thread_id(), Relaxed);
        } else {
            self.owner.store(ORPHAN, Relaxed);
        }
    }

    /// Claims an unclaimed heap for a moment (see [`crate::NolibcAlloc::trim`]);
    /// [`Heap::release`] hands it back.
    pub(crate) fn borrow_free(&self) -> bool {
        self.owner.compare_exchange(0, BORROWED, Acquire, Relaxed).is_ok()
    }

    /// Whether no thread ever claimed the heap (its arena is as `new` made
    /// it: `validate` skips it).
    pub(crate) fn is_pristine(&self) -> bool {
        self.owner.load(Acquire) == 0 && self.stack.load(Acquire) == 0
    }

    /// Whether the heap is unclaimed or claimed by a thread that is gone
    /// (given up in a fork child counts as neither: never reused).
    pub(crate) fn is_free(&self) -> bool {
        self.owner.load(Acquire) == 0
    }
}

/// The heap of thread `id`, found, claimed or adopted: its index, or
/// `None` (the caller uses the locked arenas).
#[cold]
pub(crate) fn find<S: Source>(heaps: &[Heap; HEAP_COUNT], id: usize, source: &S) -> Option<usize> {
    let start = home(id);
    let mut free = None;
    for i in 0..HEAP_COUNT {
        let index = (start + i) % HEAP_COUNT;
        let heap = &heaps[index];
        let owner = heap.owner.load(Acquire);
        if owner == id {
            if heap.is_mine(id) {
                return Some(index);
            }
            return check_owner(heap, index, source);
        }
        if owner == 0 && free.is_none() {
            free = Some(index);
        }
    }
    if let Some(index) = free {
        if let Some(index) = claim(heaps, index, 0, id, source) {
            return Some(index);
        }
    }
    adopt(heaps, id, source)
}

/// The heap `id` owns, without claiming one.
pub(crate) fn find_own(heaps: &[Heap; HEAP_COUNT], id: usize) -> Option<usize> {
    let start = home(id);
    (0..HEAP_COUNT)
        .map(|i| (start + i) % HEAP_COUNT)
        .find(|&index| heaps[index].owner.load(Acquire) == id)
}

/// How many entries from a thread's home [`find_near`] looks at: a claim
/// takes the first free entry from the home, so a thread whose home was
/// taken (two identities hashed alike) is almost always within these.
const NEAR: usize = 4;

/// The heap the caller (`id`) owns among the first entries from its home,
/// if any: for paths that must not claim one (see `send_remote`).
pub(crate) fn find_near(heaps: &[Heap; HEAP_COUNT], id: usize) -> Option<usize> {
    let start = home(id);
    (0..NEAR)
        .map(|i| (start + i) % HEAP_COUNT)
        .find(|&index| heaps.get(index).is_some_and(|h| h.is_mine(id)))
}

/// Claims entry `index` for `id` (tests: to make a thread's home entry
/// another identity's).
#[cfg(test)]
pub(crate) fn claim_at<S: Source>(heaps: &[Heap; HEAP_COUNT], index: usize, id: usize, source: &S) -> Option<usize> {
    claim(heaps, index, 0, id, source)
}

/// The caller's identity owns `heap` but it runs outside the window: the
/// owner itself (re-centre), a thread that took over the identity of an
/// ended one (take the heap over), or another live thread sharing the
/// thread pointer (`None`).
#[cold]
fn check_owner<S: Source>(heap: &Heap, index: usize, source: &S) -> Option<usize> {
    let tid = source.thread_id();
    let owner_tid = heap.tid.load(Acquire);
    if tid == 0 {
        return None;
    }
    if tid == owner_tid
        || (!source.thread_alive(owner_tid) && heap.tid.compare_exchange(owner_tid, tid, AcqRel, Acquire).is_ok())
    {
        heap.stack
            .store(stack_pointer().wrapping_add(STACK_SLACK_BYTES), Relaxed);
        return Some(index);
    }
    None
}

/// Claims entry `index` if its owner is still `expected`.
fn claim<S: Source>(heaps: &[Heap; HEAP_COUNT], index: usize, expected: usize, id: usize, source: &S) -> Option<usize> {
    // `get`: no bounds-check panic (and its formatting) to keep.
    let heap = heaps.get(index)?;
    heap.owner.compare_exchange(expected, id, AcqRel, Relaxed).ok()?;
    heap.tid.store(source.thread_id(), Release);
    heap.stack
        .store(stack_pointer().wrapping_add(STACK_SLACK_BYTES), Relaxed);
    let hook = ON_CLAIM.load(Acquire);
    if !hook.is_null() {
        // SAFETY: only `fn()` values are stored (see `set_claim_hook`).
        let hook: fn() = unsafe { core::mem::transmute::<*mut (), fn()>(hook) };
        hook();
    }
    Some(index)
}

/// Counts the calls that found the table full: one in [`ADOPT_EVERY`]
/// looks for heaps to adopt (a system call per entry).
static FULL_CALLS: AtomicUsize = AtomicUsize::new(0);
const ADOPT_EVERY: usize = 256;

/// Takes over the heap of an owner that has ended without giving it back.
#[cold]
fn adopt<S: Source>(heaps: &[Heap; HEAP_COUNT], id: usize, source: &S) -> Option<usize> {
    if !FULL_CALLS.fetch_add(1, Relaxed).is_multiple_of(ADOPT_EVERY) {
        return None;
    }
    for (index, heap) in heaps.iter().enumerate() {
        let owner = heap.owner.load(Acquire);
        let tid = heap.tid.load(Acquire);
        if owner > BORROWED && tid != 0 && !source.thread_alive(tid) {
            if let Some(index) = claim(heaps, index, owner, id, source) {
                return Some(index);
            }
        }
    }
    None
}

//! `fork` and thread exit: the hooks a runtime calls.
//!
//! # The contract
//!
//! A process that forks while other threads may be inside the allocator
//! must call, around the `fork` (or a `clone` without `CLONE_VM`):
//!
//! 1. [`prepare`] (or [`NolibcAlloc::fork_prepare`]) in the forking thread,
//!    just before the system call: it takes every lock of the allocator in
//!    the one lock order (the locked arenas by index, then the core), so no
//!    other thread is half-way through a change the child would inherit;
//! 2. [`parent`] in the parent right after it, which releases them;
//! 3. [`child`] in the child right after it, which frees every lock without
//!    waking anyone and makes the child a process of one thread: the
//!    per-thread heaps of threads that do not exist in the child are given up
//!    (their blocks stay valid and may be freed; their free slots are never
//!    reused by the child), the forking thread keeps its own.
//!
//! Between `prepare` and `parent`/`child` the forking thread must not
//! allocate. The C ABI registers these three with `pthread_atfork` before
//! the program's first `fork`; the `rt` runtime's `fork` calls them. A
//! runtime without either calls them itself.
//!
//! A thread that ends should call [`thread_exit`] (or
//! [`NolibcAlloc::thread_exit`]) as the last thing it does with the
//! allocator: its heap goes back to the table, its empty runs to the core.
//! Without that call the heap is reused by a later thread with the same
//! thread pointer or adopted once its thread is seen dead.
//!
//! The process-wide functions act on every allocator registered with
//! [`NolibcAlloc::register`] (the C ABI's, and under the `rt` runtime the
//! program's global allocator, register themselves).

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::{Linux, NolibcAlloc, Source, ARENA_COUNT};

/// How many allocators [`NolibcAlloc::register`] can record.
pub const MAX_REGISTERED: usize = 4;

/// The registered allocators (null: a free slot).
// In `.data` for the C ABI, whose data page is written at start anyway
// (README, "Memory at start"); plain data, so any section serves.
#[cfg_attr(feature = "c-abi", unsafe(link_section = ".data.nolibc_alloc"))]
static REGISTERED: [AtomicPtr<NolibcAlloc<Linux>>; MAX_REGISTERED] =
    [const { AtomicPtr::new(ptr::null_mut()) }; MAX_REGISTERED];

fn each(f: impl Fn(&NolibcAlloc<Linux>)) {
    for slot in &REGISTERED {
        let a = slot.load(Ordering::Acquire);
        if !a.is_null() {
            // SAFETY: only `&'static` allocators are registered.
            f(unsafe { &*a });
        }
    }
}

/// Before `fork`: [`NolibcAlloc::fork_prepare`] on every registered allocator.
pub fn prepare() {
    each(|a| a.fork_prepare());
}

/// In the parent after `fork`: [`NolibcAlloc::fork_parent`] on every registered allocator.
pub fn parent() {
    // Release in the reverse order of `prepare`.
    for slot in REGISTERED.iter().rev() {
        let a = slot.load(Ordering::Acquire);
        if !a.is_null() {
            // SAFETY: only `&'static` allocators are registered.
            unsafe { (*a).fork_parent() };
        }
    }
}

/// In the child after `fork`: [`NolibcAlloc::fork_child`] on every registered allocator.
pub fn child() {
    each(|a| a.fork_child());
}

/// When a thread ends: [`NolibcAlloc::thread_exit`] on every registered allocator.
pub fn thread_exit() {
    each(|a| a.thread_exit());
}

impl NolibcAlloc<Linux> {
    /// Records this allocator for the process-wide [`prepare`], [`parent`],
    /// [`child`] and [`thread_exit`]; returns whether it is recorded (false
    /// only when [`MAX_REGISTERED`] others are). Registering twice is harmless.
    pub fn register(&'static self) -> bool {
        let me = self as *const Self as *mut Self;
        if REGISTERED.iter().any(|s| s.load(Ordering::Acquire) == me) {
            return true;
        }
        REGISTERED.iter().any(|s| {
            s.compare_exchange(ptr::null_mut(), me, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
                || s.load(Ordering::Acquire) == me
        })
    }
}

impl<S: Source> NolibcAlloc<S> {
    /// Takes every lock of the allocator, in the one lock order, before
    /// `fork`. See the [module docs](crate::fork) for the contract.
    pub fn fork_prepare(&self) {
        for arena in &self.arenas {
            arena.lock_held();
        }
        self.core.lock_held();
    }

    /// Releases what [`NolibcAlloc::fork_prepare`] took, in the parent.
    pub fn fork_parent(&self) {
        // SAFETY: `fork_prepare` took these in this thread and holds no guard.
        unsafe {
            self.core.unlock_held();
            for index in (0..ARENA_COUNT).rev() {
                self.arenas[index].unlock_held();
            }
        }
    }

    /// In the child: frees every lock and makes the process one of a single
    /// thread. See the [module docs](crate::fork).
    pub fn fork_child(&self) {
        // SAFETY: the child has one thread; `fork_prepare` held these locks
        // at the instant of the fork, so what they guard is consistent.
        unsafe {
            self.core.reset_in_child();
            for arena in &self.arenas {
                arena.reset_in_child();
            }
        }
        let id = self.os.source.thread_identity();
        for heap in &self.heaps {
            heap.fork_child(id, &self.os.source);
        }
        crate::class::TABLE.fork_child();
    }

    /// The calling thread is ending: gives its heap back (see the
    /// [module docs](crate::fork)). The thread must not allocate or free
    /// through this allocator afterwards.
    pub fn thread_exit(&self) {
        let Some(index) = self.own_heap() else { return };
        // SAFETY: the calling thread owns the heap.
        unsafe { self.tidy_heap(index) };
        self.heaps[index].release();
    }
}

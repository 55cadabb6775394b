//! The lock: a three-state futex mutex.
//!
//! 0 = unlocked, 1 = locked, 2 = locked with (possible) sleepers. The
//! uncontended path is one compare-exchange to lock and one swap to unlock;
//! losers spin briefly, then sleep in `FUTEX_WAIT_PRIVATE` instead of burning
//! a core (the design of std's Linux futex mutex).

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;
const SPIN_LIMIT: u32 = 100;

/// Futex system calls made by every lock of the process: (waits, wakes).
pub(crate) static FUTEX_CALLS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// A mutual-exclusion lock over `T`, on cache lines of its own (128 bytes:
/// adjacent-line prefetchers pair lines) so that two locks never share one.
#[repr(align(128))]
pub struct Mutex<T> {
    /// 0, 1 or 2 as described in the module docs.
    state: AtomicU32,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out `&mut T` to one thread at a time; T moves
// between threads with it, hence `T: Send`.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: moving the mutex moves its T.
unsafe impl<T: Send> Send for Mutex<T> {}

impl<T> Mutex<T> {
    /// An unlocked mutex.
    pub const fn new(value: T) -> Self {
        Mutex {
            state: AtomicU32::new(UNLOCKED),
            data: UnsafeCell::new(value),
        }
    }

    /// Locks, sleeping while another thread holds the lock.
    #[inline]
    pub fn lock(&self) -> Guard<'_, T> {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        Guard { mutex: self }
    }

    /// Locks if nobody holds the lock.
    #[inline]
    pub fn try_lock(&self) -> Option<Guard<'_, T>> {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Guard { mutex: self })
    }

    #[cold]
    fn lock_contended(&self) {
        let mut state = self.spin();
        if state == UNLOCKED {
            match self
                .state
                .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(s) => state = s,
            }
        }
        loop {
            // Mark the lock contended; if it was free we now hold it (as
            // CONTENDED, which only costs an extra wake at unlock).
            if state != CONTENDED && self.state.swap(CONTENDED, Ordering::Acquire) == UNLOCKED {
                return;
            }
            wait(&self.state, CONTENDED);
            state = self.spin();
            if state == UNLOCKED
                && self
                    .state
                    .compare_exchange(UNLOCKED, CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
    }

    /// Spins while the lock is held and nobody sleeps; returns the last state seen.
    fn spin(&self) -> u32 {
        let mut spins = SPIN_LIMIT;
        loop {
            let state = self.state.load(Ordering::Relaxed);
            if state != LOCKED || spins == 0 {
                return state;
            }
            core::hint::spin_loop();
            spins -= 1;
        }
    }

    /// Takes the lock and keeps it with no guard: the fork handlers hold
    /// every lock across `fork` ([`Mutex::unlock_held`] or
    /// [`Mutex::reset_in_child`] ends it).
    pub(crate) fn lock_held(&self) {
        core::mem::forget(self.lock());
    }

    /// Unlocks a lock taken with [`Mutex::lock_held`].
    ///
    /// # Safety
    /// The calling thread took it with `lock_held` and holds no guard of it.
    pub(crate) unsafe fn unlock_held(&self) {
        self.unlock();
    }

    /// In the child of a `fork`: the lock is free again. Nobody can be
    /// waiting (the child has one thread), so no wake is owed.
    ///
    /// # Safety
    /// Only in a child process that has one thread, on a lock the fork
    /// handlers held (or nobody held) at the instant of the fork.
    pub(crate) unsafe fn reset_in_child(&self) {
        self.state.store(UNLOCKED, Ordering::Relaxed);
    }

    #[inline]
    fn unlock(&self) {
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            wake(&self.state);
        }
    }
}

#[cfg(not(miri))]
fn wait(state: &AtomicU32, expected: u32) {
    FUTEX_CALLS[0].fetch_add(1, Ordering::Relaxed);
    let _ = crate::sys::futex_wait(state, expected);
}

#[cfg(not(miri))]
#[cold]
fn wake(state: &AtomicU32) {
    FUTEX_CALLS[1].fetch_add(1, Ordering::Relaxed);
    let _ = crate::sys::futex_wake(state, 1);
}

// Miri cannot run inline assembly: without a kernel, "sleeping" is spinning.
#[cfg(miri)]
fn wait(state: &AtomicU32, expected: u32) {
    while state.load(Ordering::Relaxed) == expected {
        core::hint::spin_loop();
    }
}

#[cfg(miri)]
fn wake(_: &AtomicU32) {}

/// Proof of holding a [`Mutex`]; unlocks on drop.
pub struct Guard<'a, T> {
    mutex: &'a Mutex<T>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.mutex.unlock();
    }
}

impl<T> Mutex<T> {
    /// The data, without locking.
    ///
    /// # Safety
    /// No other thread may touch the data while the reference lives (the
    /// [`Solo`] gate guarantees it for the main thread of a process that has
    /// no other thread in the allocator).
    #[inline]
    #[allow(clippy::mut_from_ref)] // exclusivity is the caller's duty, as documented
    pub unsafe fn get_unchecked(&self) -> &mut T {
        // SAFETY: the caller guarantees exclusive access.
        unsafe { &mut *self.data.get() }
    }
}

const UNDECIDED: u8 = 0;
const SOLO: u8 = 1;
const SHARED: u8 = 2;

/// How far below its start the main thread's stack may be and still be
/// recognised (Linux keeps mappings at least 128 MiB below the stack top).
const MAIN_STACK_SPAN_BYTES: usize = 64 << 20;

/// The single-thread gate: while only the main thread has entered the
/// allocator, it skips the arena lock altogether (no atomic read-modify-write
/// on the hot path). The first call from another stack switches the process
/// to locking for good: it publishes the switch, runs `membarrier` so that
/// the main thread either sees the switch or has made its `busy` flag
/// visible, and waits until the main thread is out of the allocator — the
/// asymmetric Dekker handshake. Without a known main stack or a working
/// `membarrier` (Miri, some emulators, old kernels) the process locks from
/// the start.
pub(crate) struct Solo {
    mode: AtomicU8,
    /// Set by the main thread while it is inside the allocator in solo mode.
    busy: AtomicBool,
    /// The main thread's stack: `[stack_lo, stack_lo + stack_span)`.
    stack_lo: AtomicUsize,
    stack_span: AtomicUsize,
    pub(crate) switch: Mutex<()>,
}

/// The thread pointer where a C library set one up (it is unique to each
/// live thread and never 0); 0 where there is none to trust: no C library
/// (a freestanding program's threads may all have 0, or share one), Miri,
/// other architectures.
#[inline(always)]
pub(crate) fn thread_pointer() -> usize {
    #[cfg(all(not(miri), not(target_env = ""), target_arch = "x86_64"))]
    {
        let tp: usize;
        // SAFETY: glibc and musl keep the thread control block's own address
        // at %fs:0; reading it has no side effect.
        unsafe { core::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags)) };
        tp
    }
    #[cfg(all(not(miri), not(target_env = ""), target_arch = "aarch64"))]
    {
        let tp: usize;
        // SAFETY: reads the thread pointer register; no side effect.
        unsafe { core::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nomem, nostack, preserves_flags)) };
        tp
    }
    #[cfg(all(not(miri), not(target_env = ""), target_arch = "riscv64"))]
    {
        let tp: usize;
        // SAFETY: reads the thread pointer register; no side effect.
        unsafe { core::arch::asm!("mv {}, tp", out(reg) tp, options(nomem, nostack, preserves_flags)) };
        tp
    }
    #[cfg(not(all(
        not(miri),
        not(target_env = ""),
        any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64")
    )))]
    {
        0
    }
}

#[inline(always)]
fn stack_pointer() -> usize {
    let marker = 0u8;
    core::ptr::addr_of!(marker) as usize
}

impl Solo {
    pub(crate) const fn new() -> Self {
        Solo {
            mode: AtomicU8::new(UNDECIDED),
            busy: AtomicBool::new(false),
            stack_lo: AtomicUsize::new(0),
            stack_span: AtomicUsize::new(0),
            switch: Mutex::new(()),
        }
    }

    /// Enters the allocator; `true` means the caller is the main thread in
    /// solo mode and must call [`Solo::leave`] when done, touching arena 0
    /// without its lock in between.
    #[inline]
    pub(crate) fn enter<S: crate::os::Source>(&self, source: &S) -> bool {
        match self.mode.load(Ordering::Relaxed) {
            SOLO => {
                let sp = stack_pointer();
                if sp.wrapping_sub(self.stack_lo.load(Ordering::Relaxed)) >= self.stack_span.load(Ordering::Relaxed) {
                    self.share(source);
                    return false;
                }
                self.busy.store(true, Ordering::Relaxed);
                core::sync::atomic::compiler_fence(Ordering::SeqCst);
                if self.mode.load(Ordering::Relaxed) == SOLO {
                    return true;
                }
                self.busy.store(false, Ordering::Release);
                false
            }
            SHARED => false,
            _ => {
                self.decide(source);
                self.enter(source)
            }
        }
    }

    /// Leaves the allocator after `enter` returned `true`.
    #[inline]
    pub(crate) fn leave(&self) {
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        self.busy.store(false, Ordering::Release);
    }

    /// In the child of a `fork`: the gate decides again on the next call
    /// (the forking thread may be the main thread, now alone).
    pub(crate) fn reset_in_child(&self) {
        self.busy.store(false, Ordering::Relaxed);
        self.mode.store(UNDECIDED, Ordering::SeqCst);
    }

    /// Whether the process is (still) in solo mode.
    pub(crate) fn is_solo(&self) -> bool {
        self.mode.load(Ordering::Relaxed) == SOLO
    }

    #[cold]
    fn decide<S: crate::os::Source>(&self, source: &S) {
        let _switching = self.switch.lock();
        if self.mode.load(Ordering::Relaxed) != UNDECIDED {
            return;
        }
        let mut mode = SHARED;
        if let Some(top) = source.main_thread_stack() {
            let lo = top.saturating_sub(MAIN_STACK_SPAN_BYTES);
            let span = top + 65536 - lo;
            if stack_pointer().wrapping_sub(lo) < span && source.prepare_barrier() {
                self.stack_lo.store(lo, Ordering::Relaxed);
                self.stack_span.store(span, Ordering::Relaxed);
                mode = SOLO;
            }
        }
        self.mode.store(mode, Ordering::SeqCst);
    }

    #[cold]
    #[inline(never)]
    fn share<S: crate::os::Source>(&self, source: &S) {
        let _switching = self.switch.lock();
        if self.mode.load(Ordering::Relaxed) == SHARED {
            return;
        }
        self.mode.store(SHARED, Ordering::SeqCst);
        if !source.barrier_all_threads() {
            crate::fault::fault(crate::fault::Fault::Corrupt("membarrier failed after registration"), 0);
        }
        while self.busy.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
    }
}

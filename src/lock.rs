//! The lock: a three-state futex mutex.
//!
//! 0 = unlocked, 1 = locked, 2 = locked with (possible) sleepers. The
//! uncontended path is one compare-exchange to lock and one swap to unlock;
//! losers spin briefly, then sleep in `FUTEX_WAIT_PRIVATE` instead of burning
//! a core (the design of std's Linux futex mutex).

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

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

    #[inline]
    fn lock_contended(&self) {
        lock_contended(&self.state);
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

/// The contended path of [`Mutex::lock`], over the lock word alone: one
/// copy for every `Mutex<T>` (generic, it was monomorphised once per `T`).
#[cold]
#[inline(never)]
fn lock_contended(lock: &AtomicU32) {
    let mut state = spin(lock);
    if state == UNLOCKED {
        match lock.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return,
            Err(s) => state = s,
        }
    }
    loop {
        // Mark the lock contended; if it was free we now hold it (as
        // CONTENDED, which only costs an extra wake at unlock).
        if state != CONTENDED && lock.swap(CONTENDED, Ordering::Acquire) == UNLOCKED {
            return;
        }
        wait(lock, CONTENDED);
        state = spin(lock);
        if state == UNLOCKED
            && lock
                .compare_exchange(UNLOCKED, CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return;
        }
    }
}

/// Spins while the lock is held and nobody sleeps; returns the last state seen.
fn spin(lock: &AtomicU32) -> u32 {
    let mut spins = SPIN_LIMIT;
    loop {
        let state = lock.load(Ordering::Relaxed);
        if state != LOCKED || spins == 0 {
            return state;
        }
        core::hint::spin_loop();
        spins -= 1;
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
    /// The data's address (for reading what is atomic in it without the lock).
    pub(crate) fn data_ptr(&self) -> *const T {
        self.data.get()
    }
}

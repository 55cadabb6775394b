//! Threads where a C library runs the process (`rt` on a `*-linux-gnu` or
//! `*-linux-musl` target, where [`entry!`](crate::entry) links `std`): the
//! same API as on the `*-linux-nostd` targets, over `std::thread`, so that
//! a program written for the freestanding runtime also builds and runs on
//! the host. The C library owns the thread pointer, `errno` and the stacks
//! (glibc keeps a cache of them); a panic in a thread is reported by `std`
//! and [`JoinHandle::join`] then ends the process with status 101. A
//! spawned thread calls [`crate::fork::thread_exit`] once its closure has
//! returned.

extern crate std;

use crate::sys::{self, Errno};

/// Stack size of a thread from [`spawn`]: 2 MiB, as std's.
pub const DEFAULT_STACK_BYTES: usize = 2 << 20;

/// Where the calling thread's `errno` lives: the C library's.
#[inline]
pub fn errno_location() -> *mut core::ffi::c_int {
    extern "C" {
        fn __errno_location() -> *mut core::ffi::c_int;
    }
    // SAFETY: glibc and musl export it; it never fails.
    unsafe { __errno_location() }
}

/// The calling thread's thread pointer, as the C library set it up:
/// unique among live threads and never 0.
#[inline]
pub fn thread_pointer() -> usize {
    let tp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: glibc and musl keep the thread control block's own address at %fs:0.
    unsafe {
        core::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reads the thread pointer register.
    unsafe {
        core::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(target_arch = "riscv64")]
    // SAFETY: reads the thread pointer register.
    unsafe {
        core::arch::asm!("mv {}, tp", out(reg) tp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(target_arch = "x86")]
    // SAFETY: glibc and musl keep the thread control block's own address at %gs:0.
    unsafe {
        core::arch::asm!("mov {}, gs:0", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    #[cfg(target_arch = "arm")]
    // SAFETY: reads the thread pointer register (TPIDRURO).
    unsafe {
        core::arch::asm!("mrc p15, 0, {}, c13, c0, 3", out(reg) tp, options(nomem, nostack, preserves_flags))
    };
    tp
}

/// Gives up the rest of the time slice (`sched_yield`).
pub fn yield_now() {
    sys::sched_yield();
}

/// Thread options: [`Builder::stack_size`], then [`Builder::spawn`].
#[derive(Clone, Copy, Debug)]
pub struct Builder {
    stack_bytes: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// The defaults: a stack of [`DEFAULT_STACK_BYTES`].
    pub const fn new() -> Self {
        Builder {
            stack_bytes: DEFAULT_STACK_BYTES,
        }
    }

    /// The usable stack size.
    pub const fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_bytes = bytes;
        self
    }

    /// Starts a thread running `f` (`std::thread::Builder::spawn`); fails
    /// with the OS error (`EAGAIN` when it has none).
    pub fn spawn<F, T>(self, f: F) -> Result<JoinHandle<T>, Errno>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        std::thread::Builder::new()
            .stack_size(self.stack_bytes)
            .spawn(move || {
                let result = f();
                // std may still free a few blocks of its own afterwards
                // (the result's packet, thread-locals): those go onto the
                // remote lists of their heaps, as any other thread's frees.
                crate::fork::thread_exit();
                result
            })
            .map(|inner| JoinHandle { inner })
            .map_err(|e| Errno::new(e.raw_os_error().unwrap_or(Errno::EAGAIN.into_raw())))
    }
}

/// Starts a thread running `f`, with the default [`Builder`].
///
/// # Panics
/// When the thread cannot be started.
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match Builder::new().spawn(f) {
        Ok(handle) => handle,
        Err(e) => panic!("rt::thread::spawn: cannot start a thread: {e}"),
    }
}

/// Owns a spawned thread: [`join`](JoinHandle::join) waits for its result;
/// dropping the handle detaches the thread.
#[must_use = "dropping a JoinHandle detaches the thread"]
#[derive(Debug)]
pub struct JoinHandle<T> {
    inner: std::thread::JoinHandle<T>,
}

impl<T> JoinHandle<T> {
    /// Whether the thread has finished running its closure.
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// Waits for the thread to end and returns what its closure returned.
    /// If it panicked (std has printed the message), ends the process with
    /// status 101, as a panic does on the freestanding targets.
    pub fn join(self) -> T {
        match self.inner.join() {
            Ok(result) => result,
            Err(_) => crate::rt::exit(101),
        }
    }
}

/// The calling thread's `errno` value.
pub(crate) fn errno_location_value() -> i32 {
    // SAFETY: the C library's errno of this thread, always valid.
    unsafe { *errno_location() }
}

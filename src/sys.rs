//! System calls: one typed function per call, and the only module that
//! touches the `syscalls` crate.
//!
//! Every function returns `Result<_, Errno>` except [`kernel_brk`], which
//! mirrors the kernel rather than libc: the raw `brk` system call never fails
//! with an errno; it returns the new break on success and the *old* break on
//! failure.

#![allow(clippy::missing_safety_doc)] // each fn below documents its own duties

pub use syscalls::Errno;
use syscalls::{raw_syscall, syscall, Sysno};

/// `PROT_READ | PROT_WRITE`.
pub const PROT_RW: usize = 0x1 | 0x2;
/// `PROT_NONE`.
pub const PROT_NONE: usize = 0;
/// `MAP_PRIVATE | MAP_ANONYMOUS`.
pub const MAP_PRIVATE_ANON: usize = 0x02 | 0x20;
/// `MAP_NORESERVE`: no swap space is reserved for the mapping.
pub const MAP_NORESERVE: usize = 0x4000;
/// `MAP_FIXED_NOREPLACE` (Linux 4.17): map exactly here or fail with EEXIST.
pub const MAP_FIXED_NOREPLACE: usize = 0x10_0000;
/// `MREMAP_MAYMOVE`.
pub const MREMAP_MAYMOVE: usize = 1;
/// `mremap` flag: move to the address given (with `MREMAP_MAYMOVE`).
pub const MREMAP_FIXED: usize = 2;
/// `MADV_NORMAL`: no special treatment (used as a harmless probe).
pub const MADV_NORMAL: usize = 0;
/// `MADV_DONTNEED`: drop the pages; the next touch reads zeros.
pub const MADV_DONTNEED: usize = 4;
/// `FUTEX_WAIT | FUTEX_PRIVATE_FLAG`.
pub const FUTEX_WAIT_PRIVATE: usize = 128;
/// `FUTEX_WAKE | FUTEX_PRIVATE_FLAG`.
pub const FUTEX_WAKE_PRIVATE: usize = 1 | 128;
/// `AT_FDCWD` for `openat`.
pub const AT_FDCWD: isize = -100;
/// `O_RDONLY | O_CLOEXEC`.
pub const O_RDONLY_CLOEXEC: usize = 0o2000000;
/// `RLIMIT_STACK`.
pub const RLIMIT_STACK: usize = 3;
/// `RLIMIT_DATA`.
pub const RLIMIT_DATA: usize = 2;
/// `RLIMIT_AS`.
pub const RLIMIT_AS: usize = 9;
/// `RLIM_INFINITY`.
pub const RLIM_INFINITY: u64 = u64::MAX;

/// The raw `brk` system call. `brk(0)` reads the current break.
///
/// Unlike libc's `brk`, this never reports an error: on failure the kernel
/// returns the unchanged (old) break. Callers compare the result with the
/// address they asked for.
///
/// # Safety
/// Moving the break down unmaps memory; the caller must own everything
/// between the new and the old break.
#[inline]
pub unsafe fn kernel_brk(addr: usize) -> usize {
    // SAFETY: brk takes one integer and touches no user memory; the caller
    // vouches for the memory it gives back.
    unsafe { raw_syscall!(Sysno::brk, addr) }
}

/// `mmap(addr, len, prot, flags, -1, 0)` for anonymous memory; returns the address.
///
/// # Safety
/// With `MAP_FIXED*` flags the caller must own `[addr, addr + len)`.
#[inline]
pub unsafe fn mmap_anon(addr: usize, len: usize, prot: usize, flags: usize) -> Result<usize, Errno> {
    // SAFETY: anonymous mapping; the caller owns any fixed destination.
    unsafe { syscall!(Sysno::mmap, addr, len, prot, flags, usize::MAX, 0) }
}

/// `munmap(addr, len)`.
///
/// # Safety
/// Nothing may use `[addr, addr + len)` afterwards.
#[inline]
pub unsafe fn munmap(addr: usize, len: usize) -> Result<(), Errno> {
    // SAFETY: the caller owns the range and gives it up.
    unsafe { syscall!(Sysno::munmap, addr, len).map(drop) }
}

/// `mremap(addr, old_len, new_len, flags)`; returns the (possibly new) address.
///
/// # Safety
/// The caller owns the mapping `[addr, addr + old_len)`; after a move the old
/// address is invalid.
#[inline]
pub unsafe fn mremap(addr: usize, old_len: usize, new_len: usize, flags: usize) -> Result<usize, Errno> {
    // SAFETY: the caller owns the mapping being resized.
    unsafe { syscall!(Sysno::mremap, addr, old_len, new_len, flags, 0) }
}

/// `mremap(addr, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dest)`: moves the
/// pages of a mapping onto `[dest, dest + len)`, replacing what was mapped there.
///
/// # Safety
/// The caller owns both ranges; afterwards the old one is unmapped and the
/// old contents of the destination are gone.
#[inline]
pub unsafe fn mremap_to(addr: usize, len: usize, dest: usize) -> Result<usize, Errno> {
    // SAFETY: the caller owns both ranges.
    unsafe { syscall!(Sysno::mremap, addr, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dest) }
}

/// `madvise(addr, len, advice)`.
///
/// # Safety
/// With `MADV_DONTNEED` the contents of the range are lost; the caller owns it.
#[inline]
pub unsafe fn madvise(addr: usize, len: usize, advice: usize) -> Result<(), Errno> {
    // SAFETY: the caller owns the range.
    unsafe { syscall!(Sysno::madvise, addr, len, advice).map(drop) }
}

/// `mprotect(addr, len, prot)`.
///
/// # Safety
/// The caller owns the range and nothing relies on its old protection.
#[inline]
pub unsafe fn mprotect(addr: usize, len: usize, prot: usize) -> Result<(), Errno> {
    // SAFETY: the caller owns the range.
    unsafe { syscall!(Sysno::mprotect, addr, len, prot).map(drop) }
}

/// `futex(uaddr, FUTEX_WAIT_PRIVATE, expected, NULL)`: sleeps while `*uaddr == expected`.
#[inline]
pub fn futex_wait(uaddr: &core::sync::atomic::AtomicU32, expected: u32) -> Result<(), Errno> {
    // SAFETY: the kernel only reads the 4-byte word behind a valid reference.
    unsafe { syscall!(Sysno::futex, uaddr.as_ptr(), FUTEX_WAIT_PRIVATE, expected, 0usize).map(drop) }
}

/// `futex(uaddr, FUTEX_WAKE_PRIVATE, n)`: wakes up to `n` waiters; returns how many woke.
#[inline]
pub fn futex_wake(uaddr: &core::sync::atomic::AtomicU32, n: u32) -> Result<usize, Errno> {
    // SAFETY: the kernel only uses the address of a valid 4-byte word as a key.
    unsafe { syscall!(Sysno::futex, uaddr.as_ptr(), FUTEX_WAKE_PRIVATE, n) }
}

/// `write(fd, buf)`; returns the count written.
#[inline]
pub fn write(fd: i32, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel reads at most `buf.len()` bytes of a valid slice.
    unsafe { syscall!(Sysno::write, fd, buf.as_ptr(), buf.len()) }
}

/// `read(fd, buf)`; returns the count read.
#[inline]
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into a valid slice.
    unsafe { syscall!(Sysno::read, fd, buf.as_mut_ptr(), buf.len()) }
}

/// `openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC)`; `path` must end with a NUL byte.
/// (aarch64 and riscv64 have no `open`.)
#[inline]
pub fn open_read(path: &[u8]) -> Result<i32, Errno> {
    if path.last() != Some(&0) {
        return Err(Errno::EINVAL);
    }
    // SAFETY: `path` is a valid NUL-terminated string.
    unsafe { syscall!(Sysno::openat, AT_FDCWD, path.as_ptr(), O_RDONLY_CLOEXEC, 0).map(|fd| fd as i32) }
}

/// `close(fd)`.
#[inline]
pub fn close(fd: i32) -> Result<(), Errno> {
    // SAFETY: closing a descriptor touches no memory of ours.
    unsafe { syscall!(Sysno::close, fd).map(drop) }
}

/// `prlimit64(0, resource, NULL, &old)`: the soft and hard limit of `resource`
/// for this process.
#[inline]
pub fn getrlimit(resource: usize) -> Result<(u64, u64), Errno> {
    let mut old = [0u64; 2];
    // SAFETY: the kernel writes one `struct rlimit64` (two u64) into `old`.
    unsafe { syscall!(Sysno::prlimit64, 0, resource, 0, old.as_mut_ptr()) }?;
    Ok((old[0], old[1]))
}

/// `prlimit64(0, resource, &new, NULL)`: sets the soft and hard limit.
#[inline]
pub fn setrlimit(resource: usize, soft: u64, hard: u64) -> Result<(), Errno> {
    let new = [soft, hard];
    // SAFETY: the kernel reads one `struct rlimit64` from `new`.
    unsafe { syscall!(Sysno::prlimit64, 0, resource, new.as_ptr(), 0).map(drop) }
}

/// `getpid()`.
#[inline]
pub fn getpid() -> i32 {
    // SAFETY: no arguments, no memory.
    unsafe { raw_syscall!(Sysno::getpid) as i32 }
}

/// `gettid()`.
#[inline]
pub fn gettid() -> i32 {
    // SAFETY: no arguments, no memory.
    unsafe { raw_syscall!(Sysno::gettid) as i32 }
}

/// `kill(pid, sig)`.
#[inline]
pub fn kill(pid: i32, sig: i32) -> Result<(), Errno> {
    // SAFETY: sends a signal; touches no memory of ours.
    unsafe { syscall!(Sysno::kill, pid, sig).map(drop) }
}

/// `sched_yield()`.
#[inline]
pub fn sched_yield() {
    // SAFETY: no arguments, no memory.
    unsafe {
        raw_syscall!(Sysno::sched_yield);
    }
}

/// `exit_group(code)`: ends every thread of the process.
#[inline]
pub fn exit_group(code: i32) -> ! {
    // SAFETY: the process ends; nothing after this runs.
    unsafe {
        raw_syscall!(Sysno::exit_group, code);
    }
    // exit_group does not return; keep the compiler convinced.
    loop {
        core::hint::spin_loop();
    }
}

/// Stops the process the way `abort()` does: SIGABRT to ourselves, and if that
/// is blocked or ignored, `exit_group(134)` (the status a shell shows for SIGABRT).
#[cold]
pub fn abort() -> ! {
    const SIGABRT: i32 = 6;
    let _ = kill(getpid(), SIGABRT);
    exit_group(128 + SIGABRT)
}

/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED`.
pub const MEMBARRIER_CMD_PRIVATE_EXPEDITED: usize = 1 << 3;
/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED`.
pub const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: usize = 1 << 4;

/// `membarrier(cmd, 0, 0)`: with `MEMBARRIER_CMD_PRIVATE_EXPEDITED`, every
/// running thread of the process executes a full memory barrier before it
/// returns (Linux 4.14; the process must have registered first).
#[inline]
pub fn membarrier(cmd: usize) -> Result<usize, Errno> {
    // SAFETY: touches no memory of ours.
    unsafe { syscall!(Sysno::membarrier, cmd, 0, 0) }
}

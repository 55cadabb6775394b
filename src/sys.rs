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
    // 32-bit x86 and arm: `mmap2` (offset in pages; 0 here). x86's `mmap`
    // is the old one-pointer call and arm EABI has none.
    #[cfg(any(target_arch = "x86", target_arch = "arm"))]
    let nr = Sysno::mmap2;
    #[cfg(not(any(target_arch = "x86", target_arch = "arm")))]
    let nr = Sysno::mmap;
    // SAFETY: anonymous mapping; the caller owns any fixed destination.
    unsafe { syscall!(nr, addr, len, prot, flags, usize::MAX, 0) }
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

/// `tgkill(tgid, tid, sig)`; signal 0 only checks that the thread exists.
#[inline]
pub fn tgkill(tgid: i32, tid: i32, sig: i32) -> Result<(), Errno> {
    // SAFETY: sends a signal (or none); touches no memory of ours.
    unsafe { syscall!(Sysno::tgkill, tgid, tid, sig).map(drop) }
}

/// The `%fs` base of the calling thread (`arch_prctl(ARCH_GET_FS)`).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn fs_base() -> Result<usize, Errno> {
    const ARCH_GET_FS: usize = 0x1003;
    let mut base = 0usize;
    // SAFETY: the kernel writes one word to `base`.
    unsafe { syscall!(Sysno::arch_prctl, ARCH_GET_FS, core::ptr::addr_of_mut!(base) as usize) }?;
    Ok(base)
}

/// Sets the `%fs` base of the calling thread (`arch_prctl(ARCH_SET_FS)`).
///
/// # Safety
/// Code that reads thread-local storage through `%fs` (a C library, std)
/// must not run in this thread until a valid base is set again.
#[cfg(target_arch = "x86_64")]
#[inline]
pub unsafe fn set_fs_base(base: usize) -> Result<(), Errno> {
    const ARCH_SET_FS: usize = 0x1002;
    // SAFETY: changes only this thread's %fs base; the caller's duty above.
    unsafe { syscall!(Sysno::arch_prctl, ARCH_SET_FS, base).map(drop) }
}

/// A `struct user_desc` (i686): a TLS segment descriptor for
/// `set_thread_area` and `clone(CLONE_SETTLS)`.
#[cfg(target_arch = "x86")]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UserDesc {
    /// The GDT entry; `u32::MAX` asks `set_thread_area` for a free one.
    pub entry_number: u32,
    /// The segment's base: the thread pointer.
    pub base_addr: u32,
    /// The limit, in pages (`limit_in_pages`): 0xfffff, all 4 GiB.
    pub limit: u32,
    /// `seg_32bit | limit_in_pages | useable`, as C libraries set it.
    pub flags: u32,
}

#[cfg(target_arch = "x86")]
impl UserDesc {
    /// A flat 4 GiB data segment starting at `base` in GDT entry `entry_number`.
    pub const fn tls(entry_number: u32, base: usize) -> Self {
        const SEG_32BIT: u32 = 1;
        const LIMIT_IN_PAGES: u32 = 1 << 4;
        const USEABLE: u32 = 1 << 6;
        UserDesc {
            entry_number,
            base_addr: base as u32,
            limit: 0xf_ffff,
            flags: SEG_32BIT | LIMIT_IN_PAGES | USEABLE,
        }
    }
}

/// The GDT entry `set_gs_base` got from the kernel (0: none yet); new
/// threads get their descriptor in the same entry.
#[cfg(target_arch = "x86")]
static GS_ENTRY: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Makes `base` the calling thread's `%gs` base (i686): a TLS descriptor
/// from `set_thread_area` (in the entry of an earlier call, or a free one
/// the first time), loaded into `%gs`.
///
/// # Safety
/// Code that reads thread-local storage through `%gs` (a C library) must
/// not run in this thread until a valid base is set again.
#[cfg(target_arch = "x86")]
pub unsafe fn set_gs_base(base: usize) -> Result<(), Errno> {
    use core::sync::atomic::Ordering::Relaxed;
    let entry = match GS_ENTRY.load(Relaxed) {
        0 => u32::MAX,
        e => e,
    };
    let mut desc = UserDesc::tls(entry, base);
    // SAFETY: the kernel reads and updates (entry_number) one `struct user_desc`.
    unsafe { syscall!(Sysno::set_thread_area, core::ptr::addr_of_mut!(desc)) }?;
    GS_ENTRY.store(desc.entry_number, Relaxed);
    let selector = (desc.entry_number << 3) | 3; // GDT, ring 3
                                                 // SAFETY: the selector names the descriptor just installed; the caller's duty above.
    unsafe { core::arch::asm!("mov gs, {0:x}", in(reg) selector, options(nostack, preserves_flags)) };
    Ok(())
}

/// The GDT entry of the thread pointer descriptor (i686), for `clone`.
#[cfg(target_arch = "x86")]
fn gs_entry() -> u32 {
    GS_ENTRY.load(core::sync::atomic::Ordering::Relaxed)
}

/// The base of the TLS descriptor `%gs` selects (i686), if `%gs` holds a
/// GDT selector of one (`get_thread_area`).
#[cfg(target_arch = "x86")]
pub fn gs_base() -> Result<usize, Errno> {
    let selector: u32;
    // SAFETY: reads a segment register; no memory.
    unsafe { core::arch::asm!("mov {0:e}, gs", out(reg) selector, options(nomem, nostack, preserves_flags)) };
    // A GDT selector (TI bit clear) with the user privilege level.
    if selector & 7 != 3 {
        return Err(Errno::EINVAL);
    }
    let mut desc = UserDesc::tls(selector >> 3, 0);
    // SAFETY: the kernel writes one `struct user_desc`.
    unsafe { syscall!(Sysno::get_thread_area, core::ptr::addr_of_mut!(desc)) }?;
    Ok(desc.base_addr as usize)
}

/// Sets the calling thread's thread pointer (`TPIDRURO`, what
/// `mrc p15, 0, r, c13, c0, 3` reads) with the ARM private system call
/// `__ARM_NR_set_tls`.
///
/// # Safety
/// Code that reads thread-local storage (a C library) must not run in
/// this thread until a valid value is set again.
#[cfg(target_arch = "arm")]
pub unsafe fn set_tls(value: usize) -> Result<(), Errno> {
    const ARM_NR_SET_TLS: usize = 0x0f_0005;
    // SAFETY: changes only this thread's TLS register; the caller's duty above.
    let ret = unsafe { syscalls::raw::syscall1(ARM_NR_SET_TLS, value) };
    Errno::from_ret(ret).map(drop)
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

/// `CLONE_VM`: share the address space.
pub const CLONE_VM: usize = 0x100;
/// `CLONE_FS`: share the working directory, root and umask.
pub const CLONE_FS: usize = 0x200;
/// `CLONE_FILES`: share the file descriptor table.
pub const CLONE_FILES: usize = 0x400;
/// `CLONE_SIGHAND`: share the signal handlers.
pub const CLONE_SIGHAND: usize = 0x800;
/// `CLONE_THREAD`: same thread group (same pid).
pub const CLONE_THREAD: usize = 0x1_0000;
/// `CLONE_SYSVSEM`: share System V semaphore undo values.
pub const CLONE_SYSVSEM: usize = 0x4_0000;
/// `CLONE_SETTLS`: the new thread's thread pointer is the `tls` argument.
pub const CLONE_SETTLS: usize = 0x8_0000;
/// `CLONE_PARENT_SETTID`: the kernel stores the new tid at `parent_tid` before `clone` returns.
pub const CLONE_PARENT_SETTID: usize = 0x10_0000;
/// `CLONE_CHILD_CLEARTID`: when the thread exits the kernel stores 0 at
/// `child_tid` and does a (shared, not private) futex wake on it.
pub const CLONE_CHILD_CLEARTID: usize = 0x20_0000;
/// The flags of a POSIX thread.
pub const CLONE_THREAD_FLAGS: usize = CLONE_VM
    | CLONE_FS
    | CLONE_FILES
    | CLONE_SIGHAND
    | CLONE_THREAD
    | CLONE_SYSVSEM
    | CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID;
/// `SIGCHLD`: the signal a forked child sends its parent when it ends.
pub const SIGCHLD: usize = 17;
/// `MAP_STACK`: a hint that the mapping is a thread stack.
pub const MAP_STACK: usize = 0x2_0000;
/// `FUTEX_WAIT` without `FUTEX_PRIVATE_FLAG`: the kernel's wake for
/// `CLONE_CHILD_CLEARTID` is a shared one, which a private wait never sees.
pub const FUTEX_WAIT_SHARED: usize = 0;
/// `WNOHANG` for [`wait4`].
pub const WNOHANG: usize = 1;

/// `futex(uaddr, FUTEX_WAIT, expected, NULL)`: as [`futex_wait`], but a shared
/// futex, the kind the kernel wakes when a `CLONE_CHILD_CLEARTID` thread exits.
#[inline]
pub fn futex_wait_shared(uaddr: &core::sync::atomic::AtomicU32, expected: u32) -> Result<(), Errno> {
    // SAFETY: the kernel only reads the 4-byte word behind a valid reference.
    unsafe { syscall!(Sysno::futex, uaddr.as_ptr(), FUTEX_WAIT_SHARED, expected, 0usize).map(drop) }
}

/// `clone(SIGCHLD, 0, ...)`: `fork` on every architecture (aarch64 and
/// riscv64 have no `fork` system call). Returns the child's pid in the
/// parent, 0 in the child.
///
/// # Safety
/// The child is a copy of the calling thread only: locks other threads held
/// stay held in it (see [`crate::fork`]).
#[inline]
pub unsafe fn fork() -> Result<i32, Errno> {
    // SAFETY: without CLONE_VM the child runs on its own copy of this stack,
    // so returning in both processes is sound.
    unsafe { syscall!(Sysno::clone, SIGCHLD, 0, 0, 0, 0).map(|pid| pid as i32) }
}

/// `wait4(pid, &status, options, NULL)`: the pid reaped (0 with `WNOHANG`
/// when the child is still running) and its status.
#[inline]
pub fn wait4(pid: i32, options: usize) -> Result<(i32, i32), Errno> {
    let mut status: i32 = 0;
    // SAFETY: the kernel writes one int into `status`.
    let reaped = unsafe { syscall!(Sysno::wait4, pid, &mut status as *mut i32, options, 0) }?;
    Ok((reaped as i32, status))
}

/// `setitimer(ITIMER_REAL, {0, seconds})`: `SIGALRM` (which kills the
/// process unless handled) after `seconds`; 0 cancels. A watchdog.
#[inline]
pub fn alarm(seconds: u64) -> Result<(), Errno> {
    const ITIMER_REAL: usize = 0;
    // struct itimerval: it_interval, then it_value, each { tv_sec, tv_usec },
    // all `long` (32 bits on i686 and armv7).
    let value: [core::ffi::c_long; 4] = [0, 0, seconds.min(i32::MAX as u64) as core::ffi::c_long, 0];
    // SAFETY: the kernel reads one `struct itimerval`; no old value is asked for.
    unsafe { syscall!(Sysno::setitimer, ITIMER_REAL, value.as_ptr(), 0).map(drop) }
}

/// `set_tid_address(tidptr)`: where the kernel clears and wakes when the
/// calling thread exits (null: nowhere). Returns the caller's tid.
///
/// # Safety
/// `tidptr` is null or stays valid until the thread exits.
#[inline]
pub unsafe fn set_tid_address(tidptr: *mut u32) -> i32 {
    // SAFETY: the caller keeps the word valid; set_tid_address never fails.
    unsafe { raw_syscall!(Sysno::set_tid_address, tidptr) as i32 }
}

/// `exit(code)`: ends the calling thread only (`exit_group` ends the process).
#[inline]
pub fn exit_thread(code: i32) -> ! {
    // SAFETY: the thread ends; nothing after this runs in it.
    unsafe {
        raw_syscall!(Sysno::exit, code);
    }
    loop {
        core::hint::spin_loop();
    }
}

/// `clone(CLONE_THREAD_FLAGS, stack, parent_tid, child_tid, tls)`: starts a
/// thread that begins on `stack` by calling `entry(arg)`; returns its tid.
///
/// The child runs only inside this function's assembly, which never returns
/// in it: it clears the frame pointer and return address and calls `entry`,
/// which must not return (it ends with [`exit_thread`] or similar).
///
/// # Safety
/// `stack` is the 16-byte aligned top of memory only the new thread uses,
/// large enough for `entry`; `parent_tid` and `child_tid` point at one
/// 4-byte word that stays valid until the thread has exited (the kernel
/// clears it then); `tls` is a valid thread-pointer value for the new thread
/// (see [`set_fs_base`]); `entry` is sound to call with `arg` on that
/// stack, concurrently with the caller.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "x86",
    target_arch = "arm"
))]
#[inline(never)]
pub unsafe fn clone_thread(
    stack: usize,
    parent_tid: *mut u32,
    child_tid: *mut u32,
    tls: usize,
    entry: unsafe extern "C" fn(usize) -> !,
    arg: usize,
) -> Result<i32, Errno> {
    let ret: isize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's duties above. The parent only sees rax, rcx and
    // r11 change (the syscall instruction's clobbers); the child never
    // leaves the assembly.
    unsafe {
        core::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            // The child, on its new stack (16-byte aligned: `call` pushes 8).
            "xor ebp, ebp",
            "mov rdi, r9",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") Sysno::clone as usize as isize => ret,
            in("rdi") CLONE_THREAD_FLAGS,
            in("rsi") stack,
            in("rdx") parent_tid,
            in("r10") child_tid,
            in("r8") tls,
            in("r9") arg,
            in("r12") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as for x86_64; `svc` changes only x0 in the parent. The
    // argument order is (flags, stack, parent_tid, tls, child_tid) here.
    unsafe {
        core::arch::asm!(
            "svc #0",
            "cbnz x0, 2f",
            "mov x29, xzr",
            "mov x30, xzr",
            "mov x0, x5",
            "blr x6",
            "udf #0",
            "2:",
            inlateout("x0") CLONE_THREAD_FLAGS as isize => ret,
            in("x1") stack,
            in("x2") parent_tid,
            in("x3") tls,
            in("x4") child_tid,
            in("x5") arg,
            in("x6") entry,
            in("x8") Sysno::clone as usize,
            options(nostack),
        );
    }
    #[cfg(target_arch = "riscv64")]
    // SAFETY: as for x86_64; `ecall` changes only a0 in the parent. The
    // argument order is (flags, stack, parent_tid, tls, child_tid) here.
    unsafe {
        core::arch::asm!(
            "ecall",
            "bnez a0, 2f",
            "li fp, 0",
            "li ra, 0",
            "mv a0, a5",
            "jalr a6",
            "unimp",
            "2:",
            inlateout("a0") CLONE_THREAD_FLAGS as isize => ret,
            in("a1") stack,
            in("a2") parent_tid,
            in("a3") tls,
            in("a4") child_tid,
            in("a5") arg,
            in("a6") entry,
            in("a7") Sysno::clone as usize,
            options(nostack),
        );
    }
    #[cfg(target_arch = "x86")]
    // SAFETY: as for x86_64. Here `tls` is a `struct user_desc *` (the
    // kernel copies it during the call) for the entry `%gs` selects, and
    // the arguments are (flags, stack, parent_tid, tls, child_tid) in ebx,
    // ecx, edx, esi, edi. esi cannot be an operand: it is saved and loaded
    // from `args` around the call. The child finds `arg` and `entry` on its
    // new stack, written there first: `arg` where the call wants it, with
    // the stack 16-byte aligned at the call.
    unsafe {
        let desc = UserDesc::tls(gs_entry(), tls);
        let child_sp = stack - 16;
        let slots = child_sp as *mut usize;
        slots.write(arg);
        slots.add(1).write(entry as usize);
        let args = [Sysno::clone as usize, core::ptr::addr_of!(desc) as usize];
        core::arch::asm!(
            "push esi",
            "mov esi, [eax + 4]",
            "mov eax, [eax]",
            "int 0x80",
            "test eax, eax",
            "jnz 2f",
            // The child, on its new stack: [esp] = arg, [esp + 4] = entry.
            "xor ebp, ebp",
            "call [esp + 4]",
            "ud2",
            "2:",
            "pop esi",
            inlateout("eax") args.as_ptr() => ret,
            in("ebx") CLONE_THREAD_FLAGS,
            in("ecx") child_sp,
            in("edx") parent_tid,
            in("edi") child_tid,
        );
    }
    #[cfg(target_arch = "arm")]
    // SAFETY: as for x86_64; `svc` changes only r0 in the parent. The
    // argument order is (flags, stack, parent_tid, tls, child_tid) here;
    // `entry` and `arg` travel in r8 and r5 (r6, r7 in Thumb code and r11
    // are LLVM's).
    unsafe {
        core::arch::asm!(
            "svc #0",
            "cmp r0, #0",
            "bne 2f",
            "mov fp, #0",
            "mov lr, #0",
            "mov r0, r5",
            "blx r8",
            "udf #0",
            "2:",
            inlateout("r0") CLONE_THREAD_FLAGS as isize => ret,
            in("r1") stack,
            in("r2") parent_tid,
            in("r3") tls,
            in("r4") child_tid,
            in("r5") arg,
            in("r8") entry,
            in("r7") Sysno::clone as usize,
            options(nostack),
        );
    }
    if ret < 0 {
        Err(Errno::new(-ret as i32))
    } else {
        Ok(ret as i32)
    }
}

/// `munmap(base, len)` then `exit(0)`, touching no memory in between: how a
/// detached thread frees the stack it runs on.
///
/// # Safety
/// `[base, base + len)` is a mapping nothing else uses, holding the calling
/// thread's stack; the thread has nothing left to do, and no
/// `CLONE_CHILD_CLEARTID` word inside the range (clear it with
/// [`set_tid_address`] first).
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "x86",
    target_arch = "arm"
))]
pub unsafe fn munmap_and_exit(base: usize, len: usize) -> ! {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: registers only after the munmap; the caller's duties above.
    unsafe {
        core::arch::asm!(
            "syscall",
            "mov eax, {exit}",
            "xor edi, edi",
            "syscall",
            "ud2",
            exit = const Sysno::exit as usize,
            in("rax") Sysno::munmap as usize,
            in("rdi") base,
            in("rsi") len,
            options(noreturn, nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as for x86_64.
    unsafe {
        core::arch::asm!(
            "svc #0",
            "mov x8, #{exit}",
            "mov x0, xzr",
            "svc #0",
            "udf #0",
            exit = const Sysno::exit as usize,
            in("x8") Sysno::munmap as usize,
            in("x0") base,
            in("x1") len,
            options(noreturn, nostack),
        );
    }
    #[cfg(target_arch = "riscv64")]
    // SAFETY: as for x86_64.
    unsafe {
        core::arch::asm!(
            "ecall",
            "li a7, {exit}",
            "li a0, 0",
            "ecall",
            "unimp",
            exit = const Sysno::exit as usize,
            in("a7") Sysno::munmap as usize,
            in("a0") base,
            in("a1") len,
            options(noreturn, nostack),
        );
    }
    #[cfg(target_arch = "x86")]
    // SAFETY: as for x86_64.
    unsafe {
        core::arch::asm!(
            "int 0x80",
            "mov eax, {exit}",
            "xor ebx, ebx",
            "int 0x80",
            "ud2",
            exit = const Sysno::exit as usize,
            in("eax") Sysno::munmap as usize,
            in("ebx") base,
            in("ecx") len,
            options(noreturn, nostack),
        );
    }
    #[cfg(target_arch = "arm")]
    // SAFETY: as for x86_64.
    unsafe {
        core::arch::asm!(
            "svc #0",
            "mov r7, #{exit}",
            "mov r0, #0",
            "svc #0",
            "udf #0",
            exit = const Sysno::exit as usize,
            in("r7") Sysno::munmap as usize,
            in("r0") base,
            in("r1") len,
            options(noreturn, nostack),
        );
    }
}

/// `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds (the system call, not
/// the vDSO).
#[inline]
pub fn monotonic_ns() -> u64 {
    const CLOCK_MONOTONIC: usize = 1;
    // `struct timespec`: two `long` (the old 32-bit one on i686 and armv7:
    // a 32-bit `tv_sec` of uptime lasts 68 years).
    let mut ts: [core::ffi::c_long; 2] = [0; 2];
    // SAFETY: the kernel writes one `struct timespec` into `ts`.
    let _ = unsafe { syscall!(Sysno::clock_gettime, CLOCK_MONOTONIC, ts.as_mut_ptr()) };
    (ts[0] as u64).wrapping_mul(1_000_000_000).wrapping_add(ts[1] as u64)
}

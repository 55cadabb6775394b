//! A minimal runtime for freestanding binaries (feature `rt`).
//!
//! On the `*-linux-nostd.json` targets (Linux, empty `target_env`: no C
//! library) this module provides what a C library would: the `_start` entry
//! point, the arguments, environment and auxiliary vector, `exit`, the
//! [`print!`](crate::print)/[`println!`](crate::println)/
//! [`eprint!`](crate::eprint)/[`eprintln!`](crate::eprintln) macros over
//! `write(2)`, a panic handler that prints
//! `panicked at FILE:LINE:COL:` and the message to stderr, then exits with
//! status 101, and an allocation-error handler (`memory allocation of N
//! bytes failed`, then SIGABRT, as `std`).
//!
//! Neither handler pulls `core::fmt` into a program that does not format:
//! the location and a message without arguments are written by hand; a
//! message with arguments is formatted only in programs that use the print
//! macros (they keep the formatting half linked, see the handler), and is
//! replaced by a note in the others. So `examples/tiny.rs` carries no
//! formatting machinery of the runtime.
//!
//! A program names its entry point with [`entry!`](crate::entry):
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//!
//! use nolibc_alloc::{entry, println, NolibcAlloc};
//!
//! #[global_allocator]
//! static ALLOC: NolibcAlloc = NolibcAlloc::new();
//!
//! entry!(main);
//!
//! fn main() -> i32 {
//!     println!("{} arguments", nolibc_alloc::rt::args().len());
//!     0
//! }
//! ```
//!
//! `main` takes no arguments and returns `()`, `i32` (the exit status) or
//! `Result<(), E: Debug>` (an error is printed, status 1).
//!
//! On targets that have a C library (`*-linux-gnu`, `*-linux-musl`) the same
//! program still builds: [`entry!`](crate::entry) then links `std` for its C
//! runtime and panic handler and defines C's `main`, so the examples also
//! compile (and run) on the host.
//!
//! Startup never allocates; the page size from `AT_PAGESZ` is handed to
//! [`crate::os::set_page_size`] before `main` runs.
//!
//! [`thread`] starts and joins threads (raw `clone` on the `*-linux-nostd`
//! targets, each with a thread pointer of its own; `std::thread` where a C
//! library runs the process) and [`fork()`] forks around the allocator's
//! fork hooks.

use core::ffi::CStr;
use core::fmt;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::sys;

#[cfg(all(target_os = "linux", target_env = ""))]
pub mod thread;
#[cfg(not(all(target_os = "linux", target_env = "")))]
#[path = "rt/thread_hosted.rs"]
pub mod thread;

/// Forks the process (a `clone` without `CLONE_VM`, with `SIGCHLD`) around
/// the allocator's fork hooks: [`crate::fork::prepare`] before, then
/// [`crate::fork::parent`] or [`crate::fork::child`], so the child can
/// allocate whatever the other threads were doing at the instant of the
/// fork. Returns the child's pid in the parent, 0 in the child, a negative
/// errno on failure. The child has one thread, the caller's; the
/// [`JoinHandle`](thread::JoinHandle)s it inherits name threads that do not
/// exist there and must not be joined.
#[cfg(all(target_os = "linux", target_env = ""))]
pub fn fork() -> i32 {
    crate::fork::prepare();
    // SAFETY: `prepare` holds every lock of the registered allocators, so
    // the child's copy of them is consistent; `child` frees them there.
    let forked = unsafe { sys::fork() };
    match forked {
        Ok(0) => crate::fork::child(),
        _ => crate::fork::parent(),
    }
    match forked {
        Ok(pid) => pid,
        Err(e) => -e.into_raw(),
    }
}

/// Forks the process through the C library's `fork` (which runs its
/// `pthread_atfork` handlers, the C ABI's among them), around the
/// allocator's fork hooks unless the C ABI (feature `c-abi`) registered
/// them as `pthread_atfork` handlers already. Returns the child's pid in
/// the parent, 0 in the child, a negative errno on failure.
#[cfg(not(all(target_os = "linux", target_env = "")))]
pub fn fork() -> i32 {
    extern "C" {
        fn fork() -> i32;
    }
    let hooks = !cfg!(feature = "c-abi");
    if hooks {
        crate::fork::prepare();
    }
    // SAFETY: the C library's fork; the hooks make the allocator's state consistent in the child.
    let pid = unsafe { fork() };
    if hooks {
        if pid == 0 {
            crate::fork::child()
        } else {
            crate::fork::parent()
        }
    }
    if pid < 0 {
        -thread::errno_location_value()
    } else {
        pid
    }
}

/// Whether `addr` lies in the executable's static image, between the ELF
/// header (`__ehdr_start`) and the end of `.bss` (`_end`), both defined by
/// the linker (rust-lld and GNU ld): a `static` of the program, not memory
/// from `mmap`, `brk` or a stack.
#[cfg(all(target_os = "linux", target_env = ""))]
pub(crate) fn is_static_image(addr: usize) -> bool {
    extern "C" {
        static __ehdr_start: u8;
        static _end: u8;
    }
    // Only the addresses of the linker's symbols are taken (safe since Rust 1.82).
    let (start, end) = (
        core::ptr::addr_of!(__ehdr_start) as usize,
        core::ptr::addr_of!(_end) as usize,
    );
    (start..end).contains(&addr)
}

/// `AT_NULL`: ends the auxiliary vector.
pub const AT_NULL: usize = 0;
/// `AT_PHDR`: address of the program headers.
pub const AT_PHDR: usize = 3;
/// `AT_PAGESZ`: the page size.
pub const AT_PAGESZ: usize = 6;
/// `AT_ENTRY`: the program's entry point.
pub const AT_ENTRY: usize = 9;
/// `AT_HWCAP`: CPU capability bits.
pub const AT_HWCAP: usize = 16;
/// `AT_RANDOM`: address of 16 random bytes.
pub const AT_RANDOM: usize = 25;
/// `AT_EXECFN`: the file name the program was executed as.
pub const AT_EXECFN: usize = 31;
/// `AT_SYSINFO_EHDR`: address of the vDSO.
pub const AT_SYSINFO_EHDR: usize = 33;

/// Number of arguments (`argc`).
static ARGC: AtomicUsize = AtomicUsize::new(0);
/// `argv`: `ARGC` pointers, then null. Null until startup stored it.
static ARGV: AtomicPtr<*const u8> = AtomicPtr::new(core::ptr::null_mut());
/// `envp`: pointers up to a null one. Null until startup stored it.
static ENVP: AtomicPtr<*const u8> = AtomicPtr::new(core::ptr::null_mut());
/// The auxiliary vector: (key, value) pairs up to `AT_NULL`. Null when unknown.
static AUXV: AtomicPtr<usize> = AtomicPtr::new(core::ptr::null_mut());

/// Records where the kernel put the arguments, environment and auxiliary
/// vector, and tells the allocator the page size.
///
/// # Safety
/// `argv` holds `argc` valid NUL-terminated strings followed by a null
/// pointer; `envp` holds valid strings up to a null pointer, directly followed
/// by the auxiliary vector (the layout the kernel gives a new process). All of
/// it stays valid and unchanged for the rest of the program.
unsafe fn init(argc: usize, argv: *const *const u8, envp: *const *const u8) {
    let mut end = envp;
    // SAFETY: the caller guarantees a null-terminated envp array.
    while !unsafe { *end }.is_null() {
        // SAFETY: not past the terminating null yet.
        end = unsafe { end.add(1) };
    }
    // SAFETY: the auxiliary vector starts right after envp's null pointer.
    let aux = unsafe { end.add(1) } as *mut usize;
    ARGC.store(argc, Ordering::Relaxed);
    ARGV.store(argv as *mut _, Ordering::Relaxed);
    ENVP.store(envp as *mut _, Ordering::Relaxed);
    AUXV.store(aux, Ordering::Relaxed);
    if let Some(bytes) = auxv(AT_PAGESZ) {
        crate::os::set_page_size(bytes);
    }
}

/// The hosted entry: C's `main` (defined by [`entry!`](crate::entry) on
/// targets with a C library) hands over what its C runtime was given.
///
/// # Safety
/// `argc`, `argv`, `envp` are the arguments of C's `main`, from a C runtime
/// that passes the kernel's own arrays (glibc and musl do).
#[doc(hidden)]
pub unsafe fn __init_hosted(argc: i32, argv: *const *const u8, envp: *const *const u8) {
    // SAFETY: forwarded from the caller.
    unsafe { init(argc.max(0) as usize, argv, envp) }
}

/// The value of the auxiliary vector entry `key`, if the kernel gave one.
pub fn auxv(key: usize) -> Option<usize> {
    let mut p = AUXV.load(Ordering::Relaxed) as *const usize;
    if p.is_null() {
        return None;
    }
    loop {
        // SAFETY: `init` stored the kernel's auxiliary vector, (key, value)
        // pairs ending with AT_NULL; we stop at that key.
        let (k, v) = unsafe { (*p, *p.add(1)) };
        if k == AT_NULL {
            return None;
        }
        if k == key {
            return Some(v);
        }
        // SAFETY: not past the AT_NULL pair yet.
        p = unsafe { p.add(2) };
    }
}

/// Iterator over a null-terminated array of C strings.
#[derive(Clone, Debug)]
pub struct CStrs {
    next: *const *const u8,
    left: usize,
}

impl Iterator for CStrs {
    type Item = &'static CStr;

    fn next(&mut self) -> Option<&'static CStr> {
        if self.left == 0 || self.next.is_null() {
            return None;
        }
        // SAFETY: `next` points into an array `init` recorded, before its
        // terminating null (counted by `left` or checked here).
        let s = unsafe { *self.next };
        if s.is_null() {
            self.left = 0;
            return None;
        }
        self.left -= 1;
        // SAFETY: as above; the array element is a valid C string that lives
        // as long as the process.
        unsafe {
            self.next = self.next.add(1);
            Some(CStr::from_ptr(s.cast()))
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.left == usize::MAX {
            (0, None)
        } else {
            (self.left, Some(self.left))
        }
    }
}

/// The program's arguments (`argv`), the program name first. Empty before
/// startup or when the runtime is not in charge.
pub fn args() -> Args {
    let argv = ARGV.load(Ordering::Relaxed) as *const *const u8;
    let argc = if argv.is_null() {
        0
    } else {
        ARGC.load(Ordering::Relaxed)
    };
    Args(CStrs { next: argv, left: argc })
}

/// Iterator over the arguments; see [`args`].
#[derive(Clone, Debug)]
pub struct Args(CStrs);

impl Iterator for Args {
    type Item = &'static CStr;
    fn next(&mut self) -> Option<&'static CStr> {
        self.0.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for Args {}

/// The environment, as `NAME=value` strings.
pub fn env() -> CStrs {
    CStrs {
        next: ENVP.load(Ordering::Relaxed) as *const *const u8,
        left: usize::MAX,
    }
}

/// The value of the environment variable `name`, if set.
pub fn var(name: &[u8]) -> Option<&'static [u8]> {
    env().find_map(|entry| {
        let entry = entry.to_bytes();
        let rest = entry.strip_prefix(name)?;
        rest.strip_prefix(b"=")
    })
}

/// Ends the process (all threads) with `code`.
#[inline(always)]
pub fn exit(code: i32) -> ! {
    sys::exit_group(code)
}

/// Writes all of `bytes` to `fd`, retrying partial writes and `EINTR`.
/// Other errors drop the rest (there is nobody to report them to).
pub fn write_all(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match sys::write(fd, bytes) {
            // `get`, not indexing: no bounds-check panic (and its formatted
            // message) in every program. A write of nothing (or, never, of
            // more than asked) ends it.
            Ok(n) => match bytes.get(n..) {
                Some(rest) if n > 0 => bytes = rest,
                _ => return,
            },
            Err(sys::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// A stack buffer in front of `write(2)`: one system call per `println!` in
/// the common case. For the print macros (`fmt::Write`) and the panic
/// handler's formatted messages.
pub(crate) struct FdWriter {
    fd: i32,
    /// Bytes of `buf` in use (initialised), at most `BUF`.
    len: usize,
    /// Uninitialised: no `memset` of 512 bytes per print.
    buf: [MaybeUninit<u8>; FdWriter::BUF],
}

impl FdWriter {
    const BUF: usize = 512;

    pub(crate) const fn new(fd: i32) -> Self {
        FdWriter {
            fd,
            len: 0,
            buf: [MaybeUninit::uninit(); FdWriter::BUF],
        }
    }

    /// Writes out what is buffered.
    pub(crate) fn flush(&mut self) {
        // SAFETY: the first `len` (<= BUF) bytes of `buf` were written by `put`.
        let filled = unsafe { core::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), self.len) };
        write_all(self.fd, filled);
        self.len = 0;
    }

    /// Appends `bytes`, flushing first when they do not fit.
    pub(crate) fn put(&mut self, bytes: &[u8]) {
        if bytes.len() > Self::BUF - self.len {
            self.flush();
            if bytes.len() > Self::BUF {
                write_all(self.fd, bytes);
                return;
            }
        }
        // SAFETY: `len + bytes.len() <= BUF` (checked above, `len` is 0 after
        // a flush), so the copy stays inside `buf`, which `bytes` cannot overlap.
        unsafe {
            let at = self.buf.as_mut_ptr().add(self.len).cast::<u8>();
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len());
        }
        self.len += bytes.len();
    }
}

impl fmt::Write for FdWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.put(s.as_bytes());
        Ok(())
    }
}

/// Formats `args` (then a newline if `newline`) to `fd`. Used by the macros.
#[doc(hidden)]
pub fn _print(fd: i32, args: fmt::Arguments<'_>, newline: bool) {
    // A program that prints has the formatting machinery: tell the panic
    // handler it may format messages too (see `freestanding::FORMAT_HOOK`).
    #[cfg(all(target_os = "linux", target_env = ""))]
    core::hint::black_box(&freestanding::FORMAT_HOOK);
    let mut w = FdWriter::new(fd);
    let _ = fmt::write(&mut w, args);
    if newline {
        w.put(b"\n");
    }
    w.flush();
}

/// Prints to standard output through `write(2)` (feature `rt`).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::rt::_print(1, ::core::format_args!($($arg)*), false)
    };
}

/// Prints to standard output with a newline, through `write(2)` (feature `rt`).
#[macro_export]
macro_rules! println {
    () => {
        $crate::rt::write_all(1, b"\n")
    };
    ($($arg:tt)*) => {
        $crate::rt::_print(1, ::core::format_args!($($arg)*), true)
    };
}

/// Prints to standard error through `write(2)` (feature `rt`).
#[macro_export]
macro_rules! eprint {
    ($($arg:tt)*) => {
        $crate::rt::_print(2, ::core::format_args!($($arg)*), false)
    };
}

/// Prints to standard error with a newline, through `write(2)` (feature `rt`).
#[macro_export]
macro_rules! eprintln {
    () => {
        $crate::rt::write_all(2, b"\n")
    };
    ($($arg:tt)*) => {
        $crate::rt::_print(2, ::core::format_args!($($arg)*), true)
    };
}

/// What `main` may return; turned into the exit status.
pub trait Termination {
    /// The exit status.
    fn report(self) -> i32;
}

impl Termination for () {
    fn report(self) -> i32 {
        0
    }
}

impl Termination for i32 {
    fn report(self) -> i32 {
        self
    }
}

impl<E: fmt::Debug> Termination for Result<(), E> {
    fn report(self) -> i32 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                _print(2, format_args!("Error: {e:?}"), true);
                1
            }
        }
    }
}

/// Names the program's entry point (feature `rt`): `entry!(main)`, where
/// `main` is a `fn() -> T` and `T` is `()`, `i32` or `Result<(), E: Debug>`
/// (see [`rt::Termination`](crate::rt::Termination)).
///
/// On the `*-linux-nostd` targets this defines the symbol the runtime's
/// `_start` calls. On targets with a C library it links `std` (for its C
/// runtime and panic handler) and defines C's `main`, so that the same
/// `#![no_std] #![no_main]` program builds on the host too.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[cfg(all(target_os = "linux", target_env = ""))]
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        extern "C" fn __nolibc_alloc_main() -> i32 {
            $crate::rt::Termination::report($main())
        }

        #[cfg(not(all(target_os = "linux", target_env = "")))]
        extern crate std;

        #[cfg(not(all(target_os = "linux", target_env = "")))]
        #[doc(hidden)]
        #[unsafe(export_name = "main")]
        extern "C" fn __nolibc_alloc_c_main(argc: i32, argv: *const *const u8, envp: *const *const u8) -> i32 {
            // SAFETY: called by the C runtime with its own argc/argv/envp.
            unsafe { $crate::rt::__init_hosted(argc, argv, envp) };
            $crate::rt::Termination::report($main())
        }
    };
}

/// The freestanding part: only where no C library provides `_start` and no
/// `std` provides a panic handler.
#[cfg(all(target_os = "linux", target_env = ""))]
mod freestanding {
    use core::panic::PanicMessage;
    use core::sync::atomic::{AtomicUsize, Ordering};

    use super::FdWriter;

    extern "C" {
        /// Defined by [`entry!`](crate::entry) in the program.
        fn __nolibc_alloc_main() -> i32;
    }

    /// Called by `_start` with the initial stack pointer: `argc`, then
    /// `argv[]`, null, `envp[]`, null, the auxiliary vector.
    ///
    /// # Safety
    /// `sp` is the stack pointer the kernel gave the process.
    unsafe extern "C" fn start_rust(sp: *const usize) -> ! {
        // SAFETY: first thing in the process: nothing has read the thread
        // pointer yet.
        unsafe { super::thread::init_main_thread() };
        // SAFETY: the kernel's initial stack layout (System V ABI, every
        // architecture): argc, then argv[argc], null, envp..., null, auxv.
        unsafe {
            let argc = *sp;
            let argv = sp.add(1) as *const *const u8;
            super::init(argc, argv, argv.add(argc + 1));
        }
        // SAFETY: the program defines it through `entry!`; it is an ordinary
        // Rust function behind a C ABI.
        let code = unsafe { __nolibc_alloc_main() };
        super::exit(code)
    }

    /// The process entry point: hands the initial stack pointer to
    /// `start_rust`. Naked: at entry there is no return address and the stack
    /// is 16-byte aligned, which a compiler-made prologue would misalign.
    #[cfg(target_arch = "x86_64")]
    #[unsafe(naked)]
    #[unsafe(no_mangle)]
    unsafe extern "C" fn _start() -> ! {
        core::arch::naked_asm!(
            "xor ebp, ebp",   // outermost frame
            "mov rdi, rsp",   // the kernel's stack: argc, argv, ...
            "and rsp, -16",
            "call {start}",   // pushes 8: the callee sees the ABI alignment
            "ud2",
            start = sym start_rust,
        )
    }

    /// See the x86_64 version.
    #[cfg(target_arch = "aarch64")]
    #[unsafe(naked)]
    #[unsafe(no_mangle)]
    unsafe extern "C" fn _start() -> ! {
        core::arch::naked_asm!(
            "mov x29, xzr",
            "mov x30, xzr",
            "mov x0, sp",
            "bl {start}",
            "udf #0",
            start = sym start_rust,
        )
    }

    /// See the x86_64 version. Also sets `gp` for linker relaxation.
    #[cfg(target_arch = "riscv64")]
    #[unsafe(naked)]
    #[unsafe(no_mangle)]
    unsafe extern "C" fn _start() -> ! {
        core::arch::naked_asm!(
            ".option push",
            ".option norelax",
            "lla gp, __global_pointer$",
            ".option pop",
            "li fp, 0",
            "li ra, 0",
            "mv a0, sp",
            "andi sp, sp, -16",
            "call {start}",
            "unimp",
            start = sym start_rust,
        )
    }

    /// See the x86_64 version. At entry `esp` points at argc; the stack is
    /// aligned so that it is 16-byte aligned at the call, after the argument.
    #[cfg(target_arch = "x86")]
    #[unsafe(naked)]
    #[unsafe(no_mangle)]
    unsafe extern "C" fn _start() -> ! {
        core::arch::naked_asm!(
            "xor ebp, ebp",
            "mov eax, esp",
            "and esp, -16",
            "sub esp, 12",
            "push eax",       // the argument, at a 16-byte aligned esp
            "call {start}",
            "ud2",
            start = sym start_rust,
        )
    }

    /// See the x86_64 version.
    #[cfg(target_arch = "arm")]
    #[unsafe(naked)]
    #[unsafe(no_mangle)]
    unsafe extern "C" fn _start() -> ! {
        core::arch::naked_asm!(
            "mov fp, #0",
            "mov lr, #0",
            "mov r0, sp",
            "bic sp, sp, #15",
            "bl {start}",
            "udf #0",
            start = sym start_rust,
        )
    }

    /// The thread pointer of the thread that panicked first (0: none yet), so
    /// that a panic while printing one cannot recurse, and a second thread
    /// that panics meanwhile waits for the first one's exit.
    static PANICKING: AtomicUsize = AtomicUsize::new(0);

    /// How the panic handler formats a message that has arguments, if the
    /// program formats (see [`FORMAT_HOOK`]).
    #[repr(transparent)]
    pub(super) struct FormatHook(Option<fn(&PanicMessage<'_>)>);

    /// The formatting half of the panic handler, kept only in programs that
    /// format anyway: its one reference is from [`super::_print`] (every
    /// print macro). The handler finds it between the `__start_`/`__stop_`
    /// symbols of its section, which do not keep it alive: the target specs'
    /// link script places the section at the start of `.text` and defines
    /// them there (no section header of its own); without that script the
    /// linker makes them, and `-z start-stop-gc` (in the target specs too)
    /// keeps them from retaining it. In a program that never prints, neither
    /// this nor `core::fmt::write` is linked. Without either it is always
    /// kept: every message is formatted, as before.
    #[unsafe(link_section = "nolibc_alloc_fmt")]
    pub(super) static FORMAT_HOOK: FormatHook = FormatHook(Some(format_message));

    /// Always linked (the handler names it), so that the section and its
    /// bounds exist in every program: plain symbols, no weak ones (those
    /// would go through a GOT on aarch64 and riscv64).
    #[unsafe(link_section = "nolibc_alloc_fmt")]
    static NO_FORMAT_HOOK: FormatHook = FormatHook(None);

    /// Formats `message` to stderr (through a buffer: one `write` in the
    /// common case).
    fn format_message(message: &PanicMessage<'_>) {
        let mut w = FdWriter::new(2);
        let _ = core::fmt::write(&mut w, format_args!("{message}"));
        w.flush();
    }

    #[allow(improper_ctypes)]
    extern "C" {
        static __start_nolibc_alloc_fmt: FormatHook;
        static __stop_nolibc_alloc_fmt: FormatHook;
    }

    /// `FORMAT_HOOK`'s function, if the program kept it.
    fn format_hook() -> Option<fn(&PanicMessage<'_>)> {
        // Opaque to the optimiser: the bounds are the section's, which holds
        // `NO_FORMAT_HOOK` and maybe `FORMAT_HOOK` (nothing else is placed in
        // it), back to back in an order the linker chose: one of them is
        // first, the other (or the same one) last.
        let first = crate::opaque(&raw const __start_nolibc_alloc_fmt);
        let stop = crate::opaque(&raw const __stop_nolibc_alloc_fmt);
        crate::opaque(&raw const NO_FORMAT_HOOK);
        // SAFETY: the section holds one or two `FormatHook`s (`NO_FORMAT_HOOK`
        // is always linked), so its first and its last entry are both inside.
        unsafe { (*first).0.or((*stop.sub(1)).0) }
    }

    /// Writes `bytes` to stderr. The handlers write their pieces one by
    /// one, as `std`'s unbuffered stderr does: no buffer to copy into and
    /// flush, which is most of what a program that never formats pays for
    /// its panic messages.
    fn err(bytes: &[u8]) {
        super::write_all(2, bytes)
    }

    /// Writes `prefix` and then `n` in decimal to stderr, in one `write`.
    fn err_decimal(prefix: u8, mut n: usize) {
        let mut text = [core::mem::MaybeUninit::<u8>::uninit(); 21];
        let end = text.as_mut_ptr_range().end.cast::<u8>();
        let mut first = end;
        // SAFETY: at most 20 digits (any `usize`) and the prefix are written,
        // from the end of `text` down: all inside it, and the slice handed
        // to `err` is what was written.
        unsafe {
            loop {
                first = first.sub(1);
                first.write(b'0' + (n % 10) as u8);
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            first = first.sub(1);
            first.write(prefix);
            err(core::slice::from_raw_parts(first, end.offset_from(first) as usize));
        }
    }

    /// Prints `panicked at FILE:LINE:COL:` and the message, then exits with
    /// status 101. The location and a message without arguments are written
    /// without `core::fmt`; a message with arguments is formatted when the
    /// program has the formatting machinery (see [`FORMAT_HOOK`]), else
    /// replaced by a note saying so.
    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        // Never 0 (not even before startup set it): blocks are 64-byte
        // aligned, so `| 1` keeps distinct thread pointers distinct.
        let me = super::thread::thread_pointer() | 1;
        if let Err(first) = PANICKING.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire) {
            if first == me {
                err(b"panicked while panicking\n");
                crate::sys::abort();
            }
            // Another thread is reporting its panic and will end the
            // process with status 101: wait for that.
            loop {
                crate::sys::sched_yield();
            }
        }
        if let Some(at) = info.location() {
            err(b"panicked at ");
            err(at.file().as_bytes());
            err_decimal(b':', at.line() as usize);
            err_decimal(b':', at.column() as usize);
        } else {
            err(b"panicked");
        }
        err(b":\n");
        let message = info.message();
        match (message.as_str(), format_hook()) {
            (Some(text), _) => err(text.as_bytes()),
            (None, Some(format)) => format(&message),
            (None, None) => err(b"(message not formatted: no core::fmt)"),
        }
        err(b"\n");
        super::exit(101)
    }

    /// Allocation failure (`handle_alloc_error`, e.g. a `Vec` that cannot
    /// grow): `memory allocation of N bytes failed` and SIGABRT, as `std`
    /// does, without formatting machinery (the default of `no_std` programs
    /// would panic with a formatted message).
    #[alloc_error_handler]
    fn alloc_error(layout: core::alloc::Layout) -> ! {
        err(b"memory allocation of");
        err_decimal(b' ', layout.size());
        err(b" bytes failed\n");
        crate::sys::abort()
    }
}

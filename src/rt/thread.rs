//! Threads for programs without a C library (feature `rt`, the
//! `*-linux-nostd` targets): [`spawn`], [`JoinHandle::join`], [`yield_now`].
//!
//! A thread is a raw `clone` with the flags of a POSIX thread
//! ([`sys::CLONE_THREAD_FLAGS`]) on a stack of its own: one anonymous
//! mapping per thread, a guard page (`PROT_NONE`) at its bottom, the
//! thread's block and the closure (later its result) at its top.
//!
//! **The thread pointer** (`%fs` base on x86_64, `%gs` base on i686 (a
//! `set_thread_area` descriptor), `tpidr_el0` on aarch64, `tp` on riscv64,
//! `TPIDRURO` on armv7 (set with `__ARM_NR_set_tls`)) points at the
//! thread's block, so it is unique to each live thread and never 0, as
//! under a C library: the allocator finds a thread's heap from it. On x86
//! the block's first word is its own address (the TLS ABI's convention,
//! which glibc and musl follow: `mov rax, fs:0`, `mov eax, gs:0` read the
//! thread pointer). The main thread's block is a
//! static, installed by `_start` before `main`. The block also holds the
//! thread's `errno` for the C ABI.
//!
//! **Join** waits on the word where `CLONE_PARENT_SETTID` stored the tid
//! and which the kernel clears, with a futex wake, once the thread has
//! exited (`CLONE_CHILD_CLEARTID`); then the result is moved out and the
//! mapping unmapped. Dropping a [`JoinHandle`] detaches the thread: it
//! unmaps its own stack as it exits.
//!
//! A spawned thread calls [`crate::fork::thread_exit`] after its result is
//! stored, as its last act with the allocator. A panic in any thread prints
//! the message and ends the process with status 101, as on the main thread.
//!
//! Not provided: thread-local variables (the targets have no TLS), thread
//! names, signal masks. A thread made with a raw `clone` of the program's
//! own has no block: the C ABI's `errno` must not be used in it.

use core::marker::PhantomData;
use core::mem::{self, MaybeUninit};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};

use crate::sys::{self, Errno};

/// Stack size of a thread from [`spawn`]: 2 MiB, as std's. Only the pages
/// the thread touches take memory.
pub const DEFAULT_STACK_BYTES: usize = 2 << 20;

/// What the thread pointer points at, one per live thread.
#[repr(C, align(64))]
pub(crate) struct Block {
    /// The block's own address, at offset 0 for the x86 TLS ABIs (`%fs:0`, `%gs:0`).
    self_addr: AtomicUsize,
    /// The thread's `errno`, for the C ABI; only its thread touches it.
    pub(crate) errno: AtomicI32,
}

impl Block {
    const fn new() -> Self {
        Block {
            self_addr: AtomicUsize::new(0),
            errno: AtomicI32::new(0),
        }
    }
}

/// The main thread's block.
static MAIN_BLOCK: Block = Block::new();

/// `Thread::state`: the thread has not finished, nobody detached it.
const RUNNING: u32 = 0;
/// `Thread::state`: the result is stored (the thread is exiting or gone).
const FINISHED: u32 = 1;
/// `Thread::state`: the handle was dropped; the thread frees itself.
const DETACHED: u32 = 2;

/// A spawned thread: its block (first, so the thread pointer points at
/// both) and what it needs to run and end. At the top of its mapping.
#[repr(C)]
struct Thread {
    block: Block,
    /// The tid (stored by the kernel before `clone` returns), 0 once the
    /// thread has exited (stored by the kernel, which then wakes waiters).
    tid: AtomicU32,
    /// `RUNNING`, `FINISHED` or `DETACHED`; the one who moves it second
    /// (thread or handle) drops the result and unmaps.
    state: AtomicU32,
    /// The mapping `[map_base, map_base + map_len)`: guard, stack, packet, this.
    map_base: usize,
    map_len: usize,
    /// The closure, then its result: a `Packet<F, T>`.
    packet: *mut u8,
    /// The packet's result field: a `MaybeUninit<T>`.
    result: *mut u8,
    /// Runs the closure and stores its result in the packet.
    run: unsafe fn(*mut u8),
    /// Drops the result in the packet.
    drop_result: unsafe fn(*mut u8),
}

/// The closure until the thread starts, its result once it returns.
#[repr(C)]
struct Packet<F, T> {
    f: MaybeUninit<F>,
    result: MaybeUninit<T>,
}

/// # Safety
/// `packet` is a `Packet<F, T>` holding the closure, not yet run.
unsafe fn run<F: FnOnce() -> T, T>(packet: *mut u8) {
    let packet = packet.cast::<Packet<F, T>>();
    // SAFETY: the closure was written by `Builder::spawn` and is read once.
    let f = unsafe { ptr::read((*packet).f.as_ptr()) };
    let result = f();
    // SAFETY: the packet is valid and ours until the state says FINISHED.
    unsafe { (*packet).result = MaybeUninit::new(result) };
}

/// # Safety
/// `packet` is a `Packet<F, T>` holding a result nobody else will read.
unsafe fn drop_result<F, T>(packet: *mut u8) {
    // SAFETY: as the caller guarantees.
    unsafe { ptr::drop_in_place((*packet.cast::<Packet<F, T>>()).result.as_mut_ptr()) };
}

/// Where every spawned thread starts, on its own stack.
///
/// # Safety
/// `addr` is the address of the thread's `Thread`, set up by `Builder::spawn`.
unsafe extern "C" fn thread_start(addr: usize) -> ! {
    // SAFETY: set up before the clone; shared with the handle, whose side
    // touches only the atomics until both are done.
    let thread = unsafe { &*(addr as *const Thread) };
    let (base, len, packet) = (thread.map_base, thread.map_len, thread.packet);
    // SAFETY: the packet holds the closure; it runs once, here.
    unsafe { (thread.run)(packet) };
    // AcqRel: Release publishes the result to the joiner; Acquire sees the
    // handle's last use of the packet before it detached.
    let detached = thread.state.swap(FINISHED, Ordering::AcqRel) == DETACHED;
    if detached {
        // SAFETY: the handle is gone; nobody reads the result.
        unsafe { (thread.drop_result)(packet) };
    }
    crate::fork::thread_exit();
    if detached {
        // SAFETY: the kernel must not clear a tid word that is about to be
        // unmapped (and may be reused); nothing else uses the mapping.
        unsafe {
            sys::set_tid_address(ptr::null_mut());
            sys::munmap_and_exit(base, len)
        }
    }
    sys::exit_thread(0)
}

/// Sets the calling thread's thread pointer to `block`.
///
/// # Safety
/// `block` lives as long as the thread and is its own.
unsafe fn set_thread_pointer(block: &'static Block) {
    let addr = block as *const Block as usize;
    block.self_addr.store(addr, Ordering::Relaxed);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the block has its own address at offset 0, as readers of %fs:0 expect.
    if unsafe { sys::set_fs_base(addr) }.is_err() {
        let _ = sys::write(2, b"nolibc-alloc: rt: arch_prctl failed\n");
        sys::abort();
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: tpidr_el0 is the thread pointer; no code relies on an old value.
    unsafe {
        core::arch::asm!("msr tpidr_el0, {}", in(reg) addr, options(nomem, nostack, preserves_flags))
    };
    #[cfg(target_arch = "riscv64")]
    // SAFETY: tp is the thread pointer; no code relies on an old value.
    unsafe {
        core::arch::asm!("mv tp, {}", in(reg) addr, options(nomem, nostack, preserves_flags))
    };
    #[cfg(target_arch = "x86")]
    // SAFETY: the block has its own address at offset 0, as readers of %gs:0 expect.
    if unsafe { sys::set_gs_base(addr) }.is_err() {
        let _ = sys::write(2, b"nolibc-alloc: rt: set_thread_area failed\n");
        sys::abort();
    }
    #[cfg(target_arch = "arm")]
    // SAFETY: no code relies on an old value of the TLS register.
    if unsafe { sys::set_tls(addr) }.is_err() {
        let _ = sys::write(2, b"nolibc-alloc: rt: set_tls failed\n");
        sys::abort();
    }
}

/// Gives the main thread its block; called by `_start` before anything else.
///
/// # Safety
/// Called once, by the main thread, before any code reads the thread pointer.
pub(crate) unsafe fn init_main_thread() {
    // SAFETY: the static block is the main thread's, for ever.
    unsafe { set_thread_pointer(&MAIN_BLOCK) }
}

/// The calling thread's block (the runtime gave every thread one).
#[inline]
pub(crate) fn current_block() -> &'static Block {
    let addr: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: %fs:0 holds the block's address (set_thread_pointer).
    unsafe {
        core::arch::asm!("mov {}, fs:0", out(reg) addr, options(nostack, readonly, preserves_flags))
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reads the thread pointer register.
    unsafe {
        core::arch::asm!("mrs {}, tpidr_el0", out(reg) addr, options(nomem, nostack, preserves_flags))
    };
    #[cfg(target_arch = "riscv64")]
    // SAFETY: reads the thread pointer register.
    unsafe {
        core::arch::asm!("mv {}, tp", out(reg) addr, options(nomem, nostack, preserves_flags))
    };
    #[cfg(target_arch = "x86")]
    // SAFETY: %gs:0 holds the block's address (set_thread_pointer).
    unsafe {
        core::arch::asm!("mov {}, gs:0", out(reg) addr, options(nostack, readonly, preserves_flags))
    };
    #[cfg(target_arch = "arm")]
    // SAFETY: reads the thread pointer register (TPIDRURO).
    unsafe {
        core::arch::asm!("mrc p15, 0, {}, c13, c0, 3", out(reg) addr, options(nomem, nostack, preserves_flags))
    };
    // SAFETY: _start and `spawn` point every thread's thread pointer at a
    // block that outlives the thread.
    unsafe { &*(addr as *const Block) }
}

/// Where the calling thread's `errno` lives: a field of its block, the
/// C ABI's `__errno_location()`. Valid as long as the thread lives.
#[inline]
pub fn errno_location() -> *mut core::ffi::c_int {
    current_block().errno.as_ptr()
}

/// The calling thread's thread pointer: the address of its block, unique
/// among live threads and never 0.
#[inline]
pub fn thread_pointer() -> usize {
    current_block() as *const Block as usize
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

    /// The usable stack size (the guard page and the thread's block come on
    /// top); rounded up to whole pages.
    pub const fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_bytes = bytes;
        self
    }

    /// Starts a thread running `f`. Fails with the error of `mmap`,
    /// `mprotect` or `clone` (`EINVAL` for a size that overflows). Never
    /// allocates through the global allocator.
    pub fn spawn<F, T>(self, f: F) -> Result<JoinHandle<T>, Errno>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let page = crate::os::page_size();
        let need = [
            page, // the guard
            self.stack_bytes,
            mem::size_of::<Thread>() + mem::align_of::<Thread>(),
            mem::size_of::<Packet<F, T>>() + mem::align_of::<Packet<F, T>>(),
            page - 1,
        ]
        .iter()
        .try_fold(0usize, |sum, &n| sum.checked_add(n))
        .ok_or(Errno::EINVAL)?;
        let len = need & !(page - 1);
        // SAFETY: a fresh anonymous mapping; no fixed address.
        let base = unsafe { sys::mmap_anon(0, len, sys::PROT_RW, sys::MAP_PRIVATE_ANON | sys::MAP_STACK) }?;
        // SAFETY: the first page of our own new mapping.
        if let Err(e) = unsafe { sys::mprotect(base, page, sys::PROT_NONE) } {
            // SAFETY: ours, unused.
            let _ = unsafe { sys::munmap(base, len) };
            return Err(e);
        }
        let thread_addr = (base + len - mem::size_of::<Thread>()) & !(mem::align_of::<Thread>() - 1);
        let packet_addr = (thread_addr - mem::size_of::<Packet<F, T>>()) & !(mem::align_of::<Packet<F, T>>() - 1);
        let stack_top = packet_addr & !15;
        let thread = thread_addr as *mut Thread;
        let packet = packet_addr as *mut Packet<F, T>;
        // SAFETY: both lie in the mapping, aligned, above the stack and apart.
        unsafe {
            packet.write(Packet {
                f: MaybeUninit::new(f),
                result: MaybeUninit::uninit(),
            });
            thread.write(Thread {
                block: Block::new(),
                tid: AtomicU32::new(0),
                state: AtomicU32::new(RUNNING),
                map_base: base,
                map_len: len,
                packet: packet.cast(),
                result: ptr::addr_of_mut!((*packet).result).cast(),
                run: run::<F, T>,
                drop_result: drop_result::<F, T>,
            });
            (*thread).block.self_addr.store(thread_addr, Ordering::Relaxed);
        }
        // SAFETY: written just above, and not yet shared.
        let tid = unsafe { (*thread).tid.as_ptr() };
        // SAFETY: the stack, tid word and block are the new thread's alone
        // until it exits (the handle touches only the atomics); the block
        // starts with its own address; thread_start expects this Thread.
        match unsafe { sys::clone_thread(stack_top, tid, tid, thread_addr, thread_start, thread_addr) } {
            Ok(_) => Ok(JoinHandle {
                thread: NonNull::new(thread).expect("in a mapping"),
                _result: PhantomData,
            }),
            Err(e) => {
                // SAFETY: no thread started: the closure is still ours.
                drop(unsafe { ptr::read((*packet).f.as_ptr()) });
                // SAFETY: nothing uses the mapping.
                let _ = unsafe { sys::munmap(base, len) };
                Err(e)
            }
        }
    }
}

/// Starts a thread running `f`, with the default [`Builder`].
///
/// # Panics
/// When the thread cannot be started (no memory for its stack, or `clone`
/// fails: `EAGAIN` at the process's thread limit).
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
pub struct JoinHandle<T> {
    thread: NonNull<Thread>,
    _result: PhantomData<T>,
}

// SAFETY: the handle only moves the result (T: Send) to the joining thread;
// the shared Thread is touched through atomics.
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: `&JoinHandle` only reads the tid word.
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> core::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("tid", &self.thread().tid.load(Ordering::Relaxed))
            .finish()
    }
}

impl<T> JoinHandle<T> {
    fn thread(&self) -> &Thread {
        // SAFETY: the mapping stays until join or until both sides are done.
        unsafe { self.thread.as_ref() }
    }

    /// Whether the thread has exited (then [`join`](JoinHandle::join) does not wait).
    pub fn is_finished(&self) -> bool {
        self.thread().tid.load(Ordering::Acquire) == 0
    }

    /// Blocks until the kernel has cleared the tid word: the thread is gone
    /// and no longer uses its stack.
    fn wait_exited(&self) {
        let tid = &self.thread().tid;
        loop {
            let t = tid.load(Ordering::Acquire);
            if t == 0 {
                return;
            }
            // EAGAIN (it changed) and EINTR: look again.
            let _ = sys::futex_wait_shared(tid, t);
        }
    }

    /// Waits for the thread to end and returns what its closure returned;
    /// its stack is unmapped.
    pub fn join(self) -> T {
        self.wait_exited();
        let thread = self.thread();
        // Acquire: pairs with the thread's Release swap after it stored the result.
        let state = thread.state.load(Ordering::Acquire);
        debug_assert_eq!(state, FINISHED);
        let (base, len) = (thread.map_base, thread.map_len);
        // SAFETY: the thread stored its result and is gone; it is read once.
        let result = unsafe { ptr::read(thread.result.cast::<T>()) };
        mem::forget(self);
        // SAFETY: nobody uses the mapping any more.
        let _ = unsafe { sys::munmap(base, len) };
        result
    }
}

impl<T> Drop for JoinHandle<T> {
    /// Detaches: a running thread frees its own stack when it ends; a
    /// finished one is waited for and freed here.
    fn drop(&mut self) {
        // AcqRel: Acquire sees the result the thread stored; Release hands
        // it the packet.
        if self.thread().state.swap(DETACHED, Ordering::AcqRel) != FINISHED {
            return;
        }
        self.wait_exited();
        let thread = self.thread();
        let (base, len, packet) = (thread.map_base, thread.map_len, thread.packet);
        // SAFETY: the thread is gone; its result was stored and nobody reads it.
        unsafe { (thread.drop_result)(packet) };
        // SAFETY: nobody uses the mapping any more.
        let _ = unsafe { sys::munmap(base, len) };
    }
}

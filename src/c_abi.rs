//! The C `malloc` family as exported symbols (feature `c-abi`).
//!
//! [`malloc`], [`free`], [`calloc`], [`realloc`], [`reallocarray`],
//! [`aligned_alloc`], [`posix_memalign`], [`memalign`], [`valloc`],
//! [`pvalloc`] and [`malloc_usable_size`] are defined with `#[no_mangle]`
//! over one allocator instance, [`ALLOC`]. A C program gets them from the
//! static or the shared library that the `capi/` crate builds
//! (`libnolibc_alloc_c.a` / `libnolibc_alloc_c.so`: this module plus a panic
//! handler), linked in front of the C library or preloaded with
//! `LD_PRELOAD`.
//!
//! A Rust program that enables the feature gets the same symbols in its
//! executable, where they take precedence over the C library's: they become
//! the process's `malloc`, for C code and for std's `System` allocator alike.
//!
//! # Semantics
//!
//! - Every result is aligned to 16 bytes (`alignof(max_align_t)` on the
//!   64-bit targets), or more where asked.
//! - `malloc(0)`, `calloc(0, n)`, `aligned_alloc(a, 0)`, … return a unique
//!   pointer to a minimum-size block (16 usable bytes), to be freed as usual.
//! - `realloc(p, 0)` behaves as `realloc(p, 1)`: it returns a unique
//!   minimum-size block (possibly `p` itself) that must be freed, and returns
//!   NULL only when that fails, with `p` left intact. This is musl's choice
//!   and the one consistent with `malloc(0)`; glibc instead frees `p` and
//!   returns NULL. The difference can cost a glibc program that relies on it
//!   a 16-byte leak per call, never a double free.
//! - `realloc(NULL, n)` is `malloc(n)`; `free(NULL)` does nothing;
//!   `malloc_usable_size(NULL)` is 0.
//! - Failures return NULL and set `errno` to `ENOMEM`, including
//!   `calloc`/`reallocarray` whose `n * size` overflows and requests above
//!   `PTRDIFF_MAX`. A failed `realloc` leaves the old block intact.
//! - `aligned_alloc`: the alignment must be a power of two (else NULL and
//!   `EINVAL`); the size need not be a multiple of it (C17).
//! - `posix_memalign`: returns `EINVAL` for an alignment that is not a power
//!   of two or not a multiple of `sizeof(void *)`, `ENOMEM` when out of
//!   memory; `*memptr` is written only on success; `errno` is not touched.
//! - `memalign`: an alignment that is not a power of two is rounded up to the
//!   next one (as glibc does); one that cannot be rounded gives NULL and
//!   `EINVAL`.
//! - `valloc` aligns to the page size; `pvalloc` also rounds the size up to a
//!   whole number of pages (`pvalloc(0)` is one page).
//! - Misuse that is detected (double free, a pointer this allocator never
//!   returned) stops the process with a `nolibc-alloc: ...` line on stderr
//!   and SIGABRT, as everywhere in the crate.
//!
//! # errno
//!
//! Where a C library shares the process (`target_env` is `gnu`, `musl`, or
//! any other non-empty value) `errno` is the C library's, reached through its
//! `__errno_location()`, which glibc, musl and uClibc all export. Where none
//! does (`target_env` is empty: the `*-linux-nostd` targets, a
//! `gcc -nostdlib -static` program with the `rt` runtime) this module
//! defines `errno` itself: one global `int`, exported through the same
//! `__errno_location()` so that C code compiled against a libc's
//! `<errno.h>` convention finds it. That one is **not** per-thread: such
//! programs have no threads unless they make their own with raw `clone`.
//!
//! # The program break
//!
//! [`ALLOC`] uses `brk` only where `target_env` is empty. A shared library
//! preloaded into a libc program, and a static musl program whose libc
//! internals may still call musl's own `malloc`, share the process with an
//! allocator that caches the break and would cut our memory away when it
//! moves it: there every region comes from `mmap`. A libc-free static
//! program owns the break and takes its small regions from it.
//!
//! # Overhead per allocation
//!
//! - Slots (the small tier, every request up to 128 KiB with the default
//!   threshold): **no per-object header**. `free` and
//!   `malloc_usable_size` find a slot's run from its address alone. The
//!   costs are the class rounding (the smallest class that fits, see
//!   [`crate::class`]) and the run metadata (a 64-byte header per run of
//!   64 KiB or more, under 0.1 %).
//! - Medium and large blocks: a 32-byte header in front of the block, plus
//!   page rounding for large ones (one mapping each).
//! - glibc: 8 bytes per chunk, chunks are multiples of 16 with a 32-byte
//!   minimum, i.e. `max(32, (n + 8 + 15) & !15)` bytes for `malloc(n)`.
//!
//! Averaged over `malloc(1)` … `malloc(1024)` (each size once), the bytes
//! taken beyond the request are 7.5 here against 15.6 for glibc: classes
//! step by 16 bytes up to 1 KiB and carry no header (7.5 against 16.5 bytes
//! below 128, 7.5 against 15.5 above). From 1 KiB to 8 KiB the classes step
//! by an eighth of a power of two and waste more than glibc's 16-byte steps
//! (191.5 against 15.5 bytes, 4.4 % of the request on average); above 8 KiB
//! by a quarter (8.9 % on average). In return, a slot never shares a cache
//! line with a neighbour's header and a burst of frees gives whole runs back
//! to the kernel. `tests/c_abi.rs` recomputes these figures from the class
//! table.
//!
//! # fork
//!
//! Where a C library shares the process, a constructor in `.init_array`
//! (of the shared library, of the static library's object that defines
//! `malloc`, and of a Rust program that enables the feature) records
//! [`ALLOC`] with [`NolibcAlloc::register`] and registers the process-wide
//! hooks [`crate::fork::prepare`], [`crate::fork::parent`] and
//! [`crate::fork::child`] with `pthread_atfork`, before `main` and before
//! any `fork`. The child of a multi-threaded program can then `malloc` and
//! `free` (any block, whichever thread allocated it), as under glibc. The
//! constructor allocates nothing itself (musl's `pthread_atfork` allocates
//! its list node with our `malloc`, which needs no set-up). Tested with
//! glibc (shared library preloaded, static library linked) and musl
//! (static) by `tests/c/forkstress.c`. The C library's `fork` runs them:
//! code that forks through it must not call them again (a second prepare
//! waits for ever on the locks the first took); a raw `clone` runs no
//! atfork handler and needs them called around it.
//!
//! Without a C library (`target_env` empty: `gcc -nostdlib` with the `rt`
//! runtime) there is no `pthread_atfork`: the program forks through
//! `rt::fork`, which calls the hooks, or calls them itself around its own
//! `fork` (see [`crate::fork`] for the contract).
//!
//! # Limitations
//!
//! - `mallopt`, `mallinfo`, `malloc_trim`, `malloc_stats` are not replaced:
//!   in a preloaded glibc program they report on glibc's own, unused, heap.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{c_int, c_void};
use core::ptr::{self, NonNull};

use crate::{Config, NolibcAlloc};

/// Alignment of every result: `alignof(max_align_t)`.
pub const MALLOC_ALIGN: usize = 16;

/// `EINVAL` on Linux (all architectures).
pub const EINVAL: c_int = 22;
/// `ENOMEM` on Linux (all architectures).
pub const ENOMEM: c_int = 12;

/// The allocator behind the C functions. A Rust program that links the C ABI
/// can make it its `#[global_allocator]` too, so both languages share one heap.
pub static ALLOC: NolibcAlloc = NolibcAlloc::with_config(Config::new().use_brk(USE_BRK));

/// Whether [`ALLOC`] takes memory from the program break: only where no C
/// library shares the process (see the module docs).
pub const USE_BRK: bool = cfg!(all(target_os = "linux", target_env = ""));

#[cfg(not(target_env = ""))]
mod errno {
    extern "C" {
        /// The C library's per-thread `errno`.
        fn __errno_location() -> *mut core::ffi::c_int;
    }

    pub(super) fn set(code: core::ffi::c_int) {
        // SAFETY: the C library's errno of the calling thread, always valid.
        unsafe { *__errno_location() = code };
    }
}

/// The fork handlers of a process with a C library: registered with the C
/// library's `pthread_atfork` by a constructor in `.init_array`, so they are
/// in place before `main` (and before any other constructor of a program
/// that links the static library, which runs after the shared libraries').
#[cfg(not(target_env = ""))]
mod atfork {
    use core::ffi::{c_int, c_void};
    use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    type Handler = Option<unsafe extern "C" fn()>;

    extern "C" {
        /// POSIX: `prepare` runs before `fork` in the forking thread (in the
        /// reverse order of registration), `parent` and `child` after it (in
        /// the order of registration). glibc and musl both have it.
        fn pthread_atfork(prepare: Handler, parent: Handler, child: Handler) -> c_int;
    }

    unsafe extern "C" fn prepare() {
        crate::fork::prepare();
    }

    unsafe extern "C" fn parent() {
        crate::fork::parent();
    }

    unsafe extern "C" fn child() {
        crate::fork::child();
    }

    /// Registers [`super::ALLOC`] for the process-wide hooks and the hooks
    /// with the C library. Allocates nothing itself; musl's
    /// `pthread_atfork` calls `malloc` for its list node, which is ours and
    /// needs no set-up.
    extern "C" fn register() {
        super::ALLOC.register();
        // SAFETY: three functions that live as long as the process. It fails
        // only when the C library is out of memory for its list: the
        // process then forks without them, as it would without this call.
        let _ = unsafe { pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        // SAFETY: a key whose destructor lives as long as the process; if
        // none is left, ended threads' heaps are adopted instead.
        if unsafe { pthread_key_create(EXIT_KEY.as_ptr(), Some(thread_ends)) } == 0 {
            KEY_MADE.store(true, Ordering::Release);
            crate::heap::set_claim_hook(heap_claimed);
        }
    }

    /// The key whose destructor gives a thread's heap back when it ends.
    static EXIT_KEY: AtomicU32 = AtomicU32::new(0);
    static KEY_MADE: AtomicBool = AtomicBool::new(false);

    extern "C" {
        fn pthread_key_create(key: *mut u32, destructor: Option<unsafe extern "C" fn(*mut c_void)>) -> c_int;
        fn pthread_setspecific(key: u32, value: *const c_void) -> c_int;
    }

    /// A thread claimed a heap: arrange for [`thread_ends`] to run when it
    /// ends (a non-null value makes the C library call the destructor;
    /// neither glibc nor musl allocates for it).
    fn heap_claimed() {
        if KEY_MADE.load(Ordering::Acquire) {
            // SAFETY: a key made by `register`; the value is never read.
            let _ = unsafe { pthread_setspecific(EXIT_KEY.load(Ordering::Relaxed), core::ptr::dangling::<c_void>()) };
        }
    }

    /// The C library's thread-exit destructor: the thread's heap goes back.
    /// A `free` after it (another destructor) goes onto the heap's remote
    /// list; a `malloc` after it claims a heap again and sets the key again.
    unsafe extern "C" fn thread_ends(_: *mut c_void) {
        super::ALLOC.thread_exit();
    }

    /// The constructor. In the object file that defines `malloc`, so a
    /// program that links the static library (and so that object, for
    /// `malloc`) keeps it: the linker scripts keep every `.init_array`
    /// input section of the objects they link.
    #[used]
    #[link_section = ".init_array"]
    static REGISTER: extern "C" fn() = register;
}

#[cfg(target_env = "")]
mod errno {
    use core::ffi::c_int;
    use core::sync::atomic::{AtomicI32, Ordering};

    /// `errno` of a program without a C library: one for the whole process.
    static ERRNO: AtomicI32 = AtomicI32::new(0);

    /// Where `errno` lives, for C code (`#define errno (*__errno_location())`).
    /// One global `int`, not per-thread.
    #[unsafe(no_mangle)]
    pub extern "C" fn __errno_location() -> *mut c_int {
        ERRNO.as_ptr()
    }

    pub(super) fn set(code: c_int) {
        ERRNO.store(code, Ordering::Relaxed);
    }
}

/// Allocates `size` bytes (at least 1) aligned to `align` (a power of two,
/// raised to [`MALLOC_ALIGN`]); null when out of memory or when the request
/// is too large for a `Layout`. Leaves `errno` alone.
fn alloc_aligned(size: usize, align: usize, zero: bool) -> *mut c_void {
    let Ok(layout) = Layout::from_size_align(size.max(1), align.max(MALLOC_ALIGN)) else {
        return ptr::null_mut();
    };
    // SAFETY: the layout has a non-zero size.
    let p = unsafe {
        if zero {
            ALLOC.alloc_zeroed(layout)
        } else {
            ALLOC.alloc(layout)
        }
    };
    p.cast()
}

/// [`alloc_aligned`] that sets `errno` to `ENOMEM` on failure.
fn alloc_or_enomem(size: usize, align: usize, zero: bool) -> *mut c_void {
    let p = alloc_aligned(size, align, zero);
    if p.is_null() {
        errno::set(ENOMEM);
    }
    p
}

/// C's `malloc`: `size` bytes aligned to 16; `malloc(0)` is a unique pointer.
/// NULL and `ENOMEM` when out of memory.
///
/// # Safety
/// Always safe to call; unsafe only as every C entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    let p = ALLOC.alloc_aligned16(size);
    if p.is_null() {
        errno::set(ENOMEM);
    }
    p.cast()
}

/// C's `calloc`: `n * size` zeroed bytes; NULL and `ENOMEM` when the product
/// overflows or memory runs out.
///
/// # Safety
/// Always safe to call; unsafe only as every C entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(bytes) => alloc_or_enomem(bytes, MALLOC_ALIGN, true),
        None => {
            errno::set(ENOMEM);
            ptr::null_mut()
        }
    }
}

/// C's `free`: gives back a block; `free(NULL)` does nothing.
///
/// # Safety
/// `ptr` is NULL or a live block from this allocator, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    if let Some(p) = NonNull::new(ptr.cast::<u8>()) {
        // SAFETY: the caller vouches for the block (the core checks in part).
        unsafe { ALLOC.free_unsized(p) };
    }
}

/// C's `realloc`: resizes keeping `min(old, new)` bytes; `realloc(NULL, n)`
/// is `malloc(n)`; `realloc(p, 0)` returns a minimum-size block (see the
/// module docs). NULL and `ENOMEM` on failure, the old block intact.
///
/// # Safety
/// `ptr` is NULL or a live block from this allocator; on success it must not
/// be used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    let Some(p) = NonNull::new(ptr.cast::<u8>()) else {
        return alloc_or_enomem(size, MALLOC_ALIGN, false);
    };
    // SAFETY: the caller vouches for the block; 16 is a power of two.
    let q = unsafe { ALLOC.realloc_unsized(p, size.max(1), MALLOC_ALIGN) };
    if q.is_null() {
        errno::set(ENOMEM);
    }
    q.cast()
}

/// `reallocarray` (BSD, glibc 2.26, musl 1.2.2): `realloc(ptr, n * size)`,
/// but NULL and `ENOMEM` when the product overflows, the old block intact.
///
/// # Safety
/// As [`realloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded.
        Some(bytes) => unsafe { realloc(ptr, bytes) },
        None => {
            errno::set(ENOMEM);
            ptr::null_mut()
        }
    }
}

/// C11's `aligned_alloc`: `align` must be a power of two (else NULL and
/// `EINVAL`); `size` need not be a multiple of it.
///
/// # Safety
/// Always safe to call; unsafe only as every C entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        errno::set(EINVAL);
        return ptr::null_mut();
    }
    alloc_or_enomem(size, align, false)
}

/// POSIX `posix_memalign`: stores a block of `size` bytes aligned to `align`
/// in `*memptr` and returns 0; returns `EINVAL` if `align` is not a power of
/// two multiple of `sizeof(void *)`, `ENOMEM` when out of memory, leaving
/// `*memptr` untouched. `errno` is not changed.
///
/// # Safety
/// `memptr` is valid for a pointer-sized write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // A power of two is a multiple of the pointer size iff it is at least that.
    if !align.is_power_of_two() || align < core::mem::size_of::<*mut c_void>() {
        return EINVAL;
    }
    let p = alloc_aligned(size, align, false);
    if p.is_null() {
        return ENOMEM;
    }
    // SAFETY: the caller passes a writable pointer.
    unsafe { memptr.write(p) };
    0
}

/// The obsolete `memalign`: as [`aligned_alloc`], except that an alignment
/// that is not a power of two is rounded up to one (glibc's behaviour); NULL
/// and `EINVAL` when it cannot be.
///
/// # Safety
/// Always safe to call; unsafe only as every C entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    match align.checked_next_power_of_two() {
        Some(align) => alloc_or_enomem(size, align, false),
        None => {
            errno::set(EINVAL);
            ptr::null_mut()
        }
    }
}

/// The obsolete `valloc`: `size` bytes aligned to the page size.
///
/// # Safety
/// Always safe to call; unsafe only as every C entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    alloc_or_enomem(size, crate::os::page_size(), false)
}

/// The obsolete `pvalloc`: `size` rounded up to whole pages (at least one),
/// aligned to the page size.
///
/// # Safety
/// Always safe to call; unsafe only as every C entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = crate::os::page_size();
    match size.max(1).checked_add(page - 1) {
        Some(end) => alloc_or_enomem(end & !(page - 1), page, false),
        None => {
            errno::set(ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `malloc_usable_size`: the bytes the block at `ptr` can hold (at least what
/// was asked for); 0 for NULL.
///
/// # Safety
/// `ptr` is NULL or a live block from this allocator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    match NonNull::new(ptr.cast::<u8>()) {
        // SAFETY: the caller vouches for the block.
        Some(p) => unsafe { ALLOC.usable_size_unsized(p) },
        None => 0,
    }
}

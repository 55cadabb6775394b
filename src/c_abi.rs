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
//! `<errno.h>` convention finds it. With the `rt` runtime it is per thread,
//! a field of the block the thread pointer points at (see
//! `rt::thread`); without it, one global `int`.
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
//! # Limitations
//!
//! - No `fork` handlers: a multi-threaded program that forks while another
//!   thread is inside the allocator may find a lock held in the child. A
//!   child that only calls `exec` (or async-signal-safe functions, as POSIX
//!   requires after a multi-threaded `fork`) is unaffected.
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

#[cfg(target_env = "")]
mod errno {
    use core::ffi::c_int;

    /// `errno` of a program without a C library and without the `rt`
    /// runtime: one for the whole process.
    #[cfg(not(all(feature = "rt", target_os = "linux")))]
    static ERRNO: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(0);

    /// Where `errno` lives, for C code (`#define errno (*__errno_location())`):
    /// with the `rt` runtime, in the calling thread's block (per thread);
    /// without, one global `int`.
    #[unsafe(no_mangle)]
    pub extern "C" fn __errno_location() -> *mut c_int {
        #[cfg(all(feature = "rt", target_os = "linux"))]
        return crate::rt::thread::errno_location();
        #[cfg(not(all(feature = "rt", target_os = "linux")))]
        ERRNO.as_ptr()
    }

    pub(super) fn set(code: c_int) {
        // SAFETY: the calling thread's errno (or the global one), always valid.
        unsafe { *__errno_location() = code };
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

//! The C `malloc` family as exported symbols (feature `c-abi`).
//!
//! [`malloc`], [`free`], [`calloc`], [`realloc`], [`reallocarray`],
//! [`aligned_alloc`], [`posix_memalign`], [`memalign`], [`valloc`],
//! [`pvalloc`] and [`malloc_usable_size`], and glibc's [`malloc_trim`],
//! [`mallinfo2`], [`mallinfo`], [`malloc_stats`] and [`mallopt`], are
//! defined with `#[no_mangle]` over one allocator instance, [`ALLOC`]. A C program gets them from the
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
//! # glibc's statistics and tuning
//!
//! - `malloc_trim(pad)` gives every empty run and region back to the kernel
//!   ([`NolibcAlloc::trim`]) and returns 1 if that released memory, else 0.
//!   `pad` is ignored: there is no top chunk to keep a pad of.
//! - `mallinfo2()` fills glibc's `struct mallinfo2` from
//!   [`NolibcAlloc::stats`]: `arena` is every byte taken from the kernel
//!   (brk and mmap: regions and large blocks alike), `uordblks` the bytes in
//!   use (slot, block and mapping sizes, so class rounding counts as in
//!   use), `fordblks` = `arena - uordblks` (held but free: empty slots,
//!   holes, dirty runs), `usmblks` the peak of `uordblks` (glibc leaves it
//!   0; this is its historical meaning). `hblks` and `hblkhd` are 0: large
//!   blocks are counted in `arena` and `uordblks`, so `arena + hblkhd` is
//!   the total held as with glibc. `ordblks`, `smblks`, `fsmblks` and
//!   `keepcost` are 0 (no such chunks here).
//! - `mallinfo()` is the same in glibc's older `struct mallinfo` of `int`s,
//!   each saturating at `INT_MAX` (glibc's wrap around).
//! - `malloc_stats()` writes a few lines to stderr, glibc's first two labels
//!   included (`system bytes`, `in use bytes`), with one `write(2)` and no
//!   allocation.
//! - `mallopt(param, value)` supports `M_MMAP_THRESHOLD` (-3; see
//!   [`NolibcAlloc::set_mmap_threshold`]: it acts above the configured 128
//!   KiB, below which sizes are slots; 0 for a value above 32 MiB (4 MiB
//!   on 32-bit targets: [`crate::MAX_MMAP_THRESHOLD_BYTES`]) or
//!   negative, as glibc) and `M_TRIM_THRESHOLD` (-1; a negative value means
//!   never, as glibc's cast does), returning 1. Every other parameter returns
//!   0 and changes nothing.
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
//! The same constructor makes a `pthread_key_create` key whose destructor
//! gives an ending thread's heap back ([`NolibcAlloc::thread_exit`]); each
//! thread sets it (`pthread_setspecific`, which allocates nothing in glibc
//! or musl) when it first takes a heap.
//!
//! Without a C library (`target_env` empty: `gcc -nostdlib` with the `rt`
//! runtime) there is no `pthread_atfork`: the program forks through
//! `rt::fork`, which calls the hooks, or calls them itself around its own
//! `fork` (see [`crate::fork`] for the contract).
//!
//! # Limitations
//!
//! - glibc's `malloc_info` (XML), `mcheck` and the `__malloc_hook`s are not
//!   replaced.

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
pub static ALLOC: NolibcAlloc = NolibcAlloc::with_config(Config::new());

// The default configuration uses brk exactly where `USE_BRK` says; left
// implicit, the static is all zero bytes and lives in `.bss` (no file bytes).
const _: () = assert!(Config::new().brk_enabled() == USE_BRK);

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
    // The 16-byte classes from the thread's heap; every other case in
    // `malloc_slow`, a tail call.
    if let Some(class) = crate::class::fine_class(size, 1) {
        if let Some(p) = ALLOC.alloc_small_fast(class) {
            return p.as_ptr().cast();
        }
    }
    malloc_slow(size)
}

/// [`malloc`] past its fast path: any size, `ENOMEM` on failure.
#[cold]
#[inline(never)]
fn malloc_slow(size: usize) -> *mut c_void {
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

/// `M_TRIM_THRESHOLD` of glibc's `<malloc.h>`.
pub const M_TRIM_THRESHOLD: c_int = -1;
/// `M_MMAP_THRESHOLD` of glibc's `<malloc.h>`.
pub const M_MMAP_THRESHOLD: c_int = -3;

/// glibc's `malloc_trim`: gives every empty run and region back to the
/// kernel; 1 if memory was released, else 0. `pad` is ignored.
///
/// # Safety
/// Always safe to call; unsafe only as every C entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_trim(pad: usize) -> c_int {
    let _ = pad;
    c_int::from(ALLOC.trim() > 0)
}

/// glibc's `struct mallinfo2` (glibc 2.33), filled by [`mallinfo2`]; the
/// module docs say what each field holds here.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mallinfo2 {
    /// Bytes taken from the kernel (brk and mmap).
    pub arena: usize,
    /// 0.
    pub ordblks: usize,
    /// 0.
    pub smblks: usize,
    /// 0 (large blocks are in `arena`).
    pub hblks: usize,
    /// 0 (large blocks are in `arena`).
    pub hblkhd: usize,
    /// Peak of `uordblks`.
    pub usmblks: usize,
    /// 0.
    pub fsmblks: usize,
    /// Bytes in use.
    pub uordblks: usize,
    /// `arena - uordblks`.
    pub fordblks: usize,
    /// 0.
    pub keepcost: usize,
}

/// glibc's older `struct mallinfo`: [`Mallinfo2`] in `int`s, saturated.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mallinfo {
    /// See [`Mallinfo2::arena`].
    pub arena: c_int,
    /// 0.
    pub ordblks: c_int,
    /// 0.
    pub smblks: c_int,
    /// 0.
    pub hblks: c_int,
    /// 0.
    pub hblkhd: c_int,
    /// See [`Mallinfo2::usmblks`].
    pub usmblks: c_int,
    /// 0.
    pub fsmblks: c_int,
    /// See [`Mallinfo2::uordblks`].
    pub uordblks: c_int,
    /// See [`Mallinfo2::fordblks`].
    pub fordblks: c_int,
    /// 0.
    pub keepcost: c_int,
}

/// glibc's `mallinfo2`: the counters of [`ALLOC`] (see the module docs).
///
/// # Safety
/// Always safe to call; unsafe only as every C entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mallinfo2() -> Mallinfo2 {
    let s = ALLOC.stats();
    let held = s.brk_bytes + s.mapped_bytes;
    Mallinfo2 {
        arena: held,
        usmblks: s.peak_in_use_bytes,
        uordblks: s.in_use_bytes,
        fordblks: held.saturating_sub(s.in_use_bytes),
        ..Mallinfo2::default()
    }
}

/// glibc's `mallinfo`: [`mallinfo2`] with each field saturated to `INT_MAX`.
///
/// # Safety
/// Always safe to call; unsafe only as every C entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mallinfo() -> Mallinfo {
    // SAFETY: always safe.
    let m = unsafe { mallinfo2() };
    let int = |v: usize| c_int::try_from(v).unwrap_or(c_int::MAX);
    Mallinfo {
        arena: int(m.arena),
        ordblks: int(m.ordblks),
        smblks: int(m.smblks),
        hblks: int(m.hblks),
        hblkhd: int(m.hblkhd),
        usmblks: int(m.usmblks),
        fsmblks: int(m.fsmblks),
        uordblks: int(m.uordblks),
        fordblks: int(m.fordblks),
        keepcost: int(m.keepcost),
    }
}

/// glibc's `malloc_stats`: a few lines on stderr, written at once with no
/// allocation, e.g.
///
/// ```text
/// nolibc-alloc (incl. mmap):
/// system bytes     =    4202496
/// in use bytes     =      74304
/// max in use bytes =      80016
/// brk bytes        =          0
/// mmap bytes       =    4202496
/// mmap calls       =          3
/// ```
///
/// # Safety
/// Always safe to call; unsafe only as every C entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_stats() {
    let s = ALLOC.stats();
    let mut text = Text::new();
    text.put(b"nolibc-alloc (incl. mmap):\n");
    for (label, value) in [
        (&b"system bytes     = "[..], s.brk_bytes + s.mapped_bytes),
        (b"in use bytes     = ", s.in_use_bytes),
        (b"max in use bytes = ", s.peak_in_use_bytes),
        (b"brk bytes        = ", s.brk_bytes),
        (b"mmap bytes       = ", s.mapped_bytes),
        (b"mmap calls       = ", s.syscalls.mmap),
    ] {
        text.put(label);
        text.decimal(value, 10);
        text.put(b"\n");
    }
    let _ = crate::sys::write(2, text.bytes());
}

/// A line buffer on the stack, for [`malloc_stats`].
struct Text {
    buf: [u8; 512],
    len: usize,
}

impl Text {
    fn new() -> Self {
        Text { buf: [0; 512], len: 0 }
    }

    /// Appends what fits.
    fn put(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    /// Appends `value` in decimal, right-aligned in `width` columns.
    fn decimal(&mut self, mut value: usize, width: usize) {
        let mut digits = [b' '; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        let start = i.min(digits.len().saturating_sub(width));
        self.put(&digits[start..]);
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// glibc's `mallopt`: `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD` are
/// honoured (1), everything else is not supported (0); see the module docs.
///
/// # Safety
/// Always safe to call; unsafe only as every C entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mallopt(param: c_int, value: c_int) -> c_int {
    match param {
        M_MMAP_THRESHOLD => match usize::try_from(value) {
            Ok(bytes) => c_int::from(ALLOC.set_mmap_threshold(bytes)),
            Err(_) => 0,
        },
        M_TRIM_THRESHOLD => {
            ALLOC.set_trim_threshold(usize::try_from(value).unwrap_or(usize::MAX));
            1
        }
        _ => 0,
    }
}

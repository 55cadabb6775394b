//! The OS seam: where memory comes from.
//!
//! [`Source`] is the small trait every tier above is generic over; [`Linux`]
//! implements it with the raw system calls of [`crate::sys`]. Unit tests
//! implement it with a fake over a boxed buffer, so the whole core runs without
//! a kernel (and under Miri).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::sys;

/// The largest page size of the target architecture: what must be assumed for
/// anything page-aligned when the real page size is not known.
pub const MAX_PAGE_BYTES: usize = if cfg!(any(
    target_arch = "aarch64",
    target_arch = "loongarch64",
    target_arch = "powerpc64"
)) {
    65536
} else {
    4096
};

/// `x` rounded up to a multiple of `a` (a power of two); `None` on overflow.
#[inline]
pub(crate) fn align_up(x: usize, a: usize) -> Option<usize> {
    Some(x.checked_add(a - 1)? & !(a - 1))
}

/// Page size in bytes, 0 until known.
// In `.data` for the C ABI, whose data page is written at start anyway
// (README, "Memory at start"); plain data, so any section serves.
#[cfg_attr(feature = "c-abi", unsafe(link_section = ".data.nolibc_alloc"))]
static PAGE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Tells the allocator the page size (from `AT_PAGESZ`). The `rt` runtime calls
/// this before `main`; a hosted program need not, the allocator then reads
/// `/proc/self/auxv` once, or assumes [`MAX_PAGE_BYTES`].
///
/// Ignored unless `bytes` is a power of two of at least 4096.
pub fn set_page_size(bytes: usize) {
    if bytes.is_power_of_two() && bytes >= 4096 {
        PAGE_BYTES.store(bytes, Ordering::Relaxed);
    }
}

/// The page size: as set by [`set_page_size`], else from `/proc/self/auxv`,
/// else [`MAX_PAGE_BYTES`].
pub fn page_size() -> usize {
    let known = PAGE_BYTES.load(Ordering::Relaxed);
    if known != 0 {
        return known;
    }
    page_size_unknown()
}

/// The first [`page_size`] without [`set_page_size`]: out of line, so that
/// its callers carry only the load.
#[cold]
#[inline(never)]
fn page_size_unknown() -> usize {
    let found = read_auxv_page_size().unwrap_or(MAX_PAGE_BYTES);
    PAGE_BYTES.store(found, Ordering::Relaxed);
    found
}

/// With the freestanding runtime the page size is always known before
/// `main` (its start-up hands `AT_PAGESZ` to [`set_page_size`]): no
/// `/proc/self/auxv` reader linked into every program (222 bytes on x86_64).
#[cfg(all(feature = "rt", target_os = "linux", target_env = ""))]
fn read_auxv_page_size() -> Option<usize> {
    None
}

/// Reads the start of a file (`path` ends with a NUL byte) into `buf`
/// without allocating; returns the bytes read.
pub fn read_file(path: &[u8], buf: &mut [u8]) -> Option<usize> {
    let fd = sys::open_read(path).ok()?;
    let mut len = 0;
    while len < buf.len() {
        match sys::read(fd, &mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    let _ = sys::close(fd);
    Some(len)
}

/// `AT_PAGESZ` from `/proc/self/auxv`, without allocating.
#[cfg(not(all(feature = "rt", target_os = "linux", target_env = "")))]
fn read_auxv_page_size() -> Option<usize> {
    const AT_PAGESZ: usize = 6;
    if cfg!(miri) {
        return None;
    }
    let word = core::mem::size_of::<usize>();
    let mut buf = [0u8; 1024];
    let len = read_file(b"/proc/self/auxv\0", &mut buf)?;
    let mut pairs = buf[..len].chunks_exact(2 * word);
    pairs.find_map(|pair| {
        let key = usize::from_ne_bytes(pair[..word].try_into().ok()?);
        let value = usize::from_ne_bytes(pair[word..].try_into().ok()?);
        (key == AT_PAGESZ && value.is_power_of_two()).then_some(value)
    })
}

/// Where memory comes from: the program break and anonymous mappings.
///
/// The tiers above call these with their own lock held; one error shape:
/// `None` (or `false`) for "the OS said no".
///
/// # Safety
/// Implementations must hand out memory that is readable, writable, not used
/// by anything else and, for [`Source::map`], zero-filled and aligned to
/// [`Source::page_size`]. They must not call back into the allocator (they
/// run under its lock).
pub unsafe trait Source {
    /// Whether [`Source::brk`] can ever succeed.
    const HAS_BRK: bool;

    /// Page size in bytes; a power of two.
    fn page_size(&self) -> usize;

    /// Reads the current program break (`brk(0)`), if there is one.
    fn brk_current(&self) -> Option<NonNull<u8>>;

    /// Moves the break to `addr`; returns whether it moved.
    ///
    /// pre: `addr` is page-aligned.
    ///
    /// # Safety
    /// Lowering the break gives up `[addr, old break)`: the caller must own it.
    unsafe fn brk(&self, addr: NonNull<u8>) -> bool;

    /// The lowest address the stack might reach (the break must stay below it).
    fn stack_floor(&self) -> usize;

    /// Maps `len` fresh zeroed bytes.
    ///
    /// pre: `len` is a non-zero multiple of the page size.
    fn map(&self, len: usize) -> Option<NonNull<u8>>;

    /// Unmaps `[ptr, ptr + len)`.
    ///
    /// pre: the range is page-aligned and was mapped by this source.
    ///
    /// # Safety
    /// Nothing may use the range afterwards.
    unsafe fn unmap(&self, ptr: NonNull<u8>, len: usize);

    /// Resizes a mapping, moving it if it must; returns its new address.
    ///
    /// pre: `old_len` and `new_len` are non-zero multiples of the page size.
    ///
    /// # Safety
    /// The caller owns the mapping; after a move the old address is invalid.
    unsafe fn remap(&self, ptr: NonNull<u8>, old_len: usize, new_len: usize) -> Option<NonNull<u8>>;

    /// Grows a mapping where it is (the pages after it must be free);
    /// returns whether it did. The default never does.
    ///
    /// pre: `old_len < new_len`, both non-zero multiples of the page size.
    ///
    /// # Safety
    /// The caller owns the mapping.
    unsafe fn remap_in_place(&self, ptr: NonNull<u8>, old_len: usize, new_len: usize) -> bool {
        let _ = (ptr, old_len, new_len);
        false
    }

    /// Moves the pages of `[ptr, ptr + len)` onto `[dest, dest + len)` (both
    /// mapped by this source), keeping their contents; returns whether it
    /// did. The default never does.
    ///
    /// pre: both ranges are page-aligned and do not overlap.
    ///
    /// # Safety
    /// The caller owns both ranges; afterwards `[ptr, ptr + len)` is unmapped
    /// and the old contents of the destination are gone.
    unsafe fn move_to(&self, ptr: NonNull<u8>, len: usize, dest: NonNull<u8>) -> bool {
        let _ = (ptr, len, dest);
        false
    }

    /// Whether the page holding `addr` is mapped (a check before reading
    /// memory that may have been unmapped by a double free).
    fn is_mapped(&self, addr: *const u8) -> bool {
        let _ = addr;
        true
    }

    /// The calling thread's identity: a value unique to each live thread,
    /// never 0 nor 1 and a multiple of 4; 0 where the thread has none to
    /// trust (then the thread uses the locked arenas).
    #[inline(always)]
    fn thread_identity(&self) -> usize {
        0
    }

    /// [`Source::thread_identity`] if it is cheap to know, else 0 (the
    /// caller then asks `thread_identity` on its slow path).
    #[inline(always)]
    fn thread_identity_fast(&self) -> usize {
        self.thread_identity()
    }

    /// The calling thread's kernel id; 0 if unknown.
    fn thread_id(&self) -> u32 {
        0
    }

    /// Whether every thread that claims a heap gives it back when it ends
    /// (a thread-exit hook calls [`crate::NolibcAlloc::thread_exit`], as
    /// the C ABI arranges through [`crate::heap::set_claim_hook`]). Then a
    /// thread that only frees claims a heap too, for its outbox: nothing is
    /// stranded there when it ends.
    fn threads_give_back(&self) -> bool {
        false
    }

    /// Whether thread `tid` of this process still exists (a heap whose
    /// owner does not may be adopted). When unsure: `true`.
    fn thread_alive(&self, tid: u32) -> bool {
        let _ = tid;
        true
    }

    /// Called when a thread first claims a heap of the allocator at `alloc`
    /// (the `NolibcAlloc<Self>` holding this source): the Linux source
    /// records a static allocator of a libc-free program for the
    /// process-wide fork and thread-exit hooks ([`crate::fork`]).
    ///
    /// # Safety
    /// `alloc` is the address of the `NolibcAlloc<Self>` that holds `self`.
    #[doc(hidden)]
    unsafe fn note_allocator(&self, alloc: *const ()) {
        let _ = alloc;
    }

    /// Gives the pages of `[ptr, ptr + len)` back; they read as zero afterwards.
    ///
    /// pre: the range is page-aligned.
    ///
    /// # Safety
    /// The caller owns the range and no longer needs its contents.
    unsafe fn discard(&self, ptr: NonNull<u8>, len: usize);
}

/// The Linux kernel, through raw system calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct Linux;

/// Distance kept between the break and the stack (musl keeps 8 MiB too).
pub const STACK_GAP_BYTES: usize = 8 << 20;

// SAFETY: mmap returns fresh zeroed page-aligned memory; brk memory past the
// old break is fresh; no method allocates.
unsafe impl Source for Linux {
    const HAS_BRK: bool = true;

    #[inline]
    fn page_size(&self) -> usize {
        page_size()
    }

    fn brk_current(&self) -> Option<NonNull<u8>> {
        // SAFETY: brk(0) only reads the break.
        NonNull::new(core::ptr::with_exposed_provenance_mut(unsafe { sys::kernel_brk(0) }))
    }

    unsafe fn brk(&self, addr: NonNull<u8>) -> bool {
        let want = addr.as_ptr() as usize;
        // SAFETY: the caller owns what a lowering gives up.
        unsafe { sys::kernel_brk(want) == want }
    }

    fn stack_floor(&self) -> usize {
        let here = 0u8;
        let sp = core::ptr::addr_of!(here) as usize;
        let limit = match sys::getrlimit(sys::RLIMIT_STACK) {
            Ok((soft, _)) if soft != sys::RLIM_INFINITY => usize::try_from(soft).unwrap_or(usize::MAX),
            _ => 0,
        };
        sp.saturating_sub(limit.max(STACK_GAP_BYTES))
    }

    fn map(&self, len: usize) -> Option<NonNull<u8>> {
        // SAFETY: a fresh anonymous mapping at an address the kernel picks.
        let addr = unsafe { sys::mmap_anon(0, len, sys::PROT_RW, sys::MAP_PRIVATE_ANON) }.ok()?;
        NonNull::new(core::ptr::with_exposed_provenance_mut(addr))
    }

    unsafe fn unmap(&self, ptr: NonNull<u8>, len: usize) {
        // SAFETY: the caller gives the mapping up.
        let _ = unsafe { sys::munmap(ptr.as_ptr() as usize, len) };
    }

    unsafe fn remap(&self, ptr: NonNull<u8>, old_len: usize, new_len: usize) -> Option<NonNull<u8>> {
        // SAFETY: the caller owns the mapping.
        let addr = unsafe { sys::mremap(ptr.as_ptr() as usize, old_len, new_len, sys::MREMAP_MAYMOVE) }.ok()?;
        NonNull::new(core::ptr::with_exposed_provenance_mut(addr))
    }

    unsafe fn remap_in_place(&self, ptr: NonNull<u8>, old_len: usize, new_len: usize) -> bool {
        // SAFETY: the caller owns the mapping; without MREMAP_MAYMOVE it stays put.
        unsafe { sys::mremap(ptr.as_ptr() as usize, old_len, new_len, 0) }.is_ok()
    }

    unsafe fn move_to(&self, ptr: NonNull<u8>, len: usize, dest: NonNull<u8>) -> bool {
        // SAFETY: the caller owns both ranges.
        unsafe { sys::mremap_to(ptr.as_ptr() as usize, len, dest.as_ptr() as usize) }.is_ok()
    }

    unsafe fn discard(&self, ptr: NonNull<u8>, len: usize) {
        // SAFETY: the caller no longer needs the contents.
        let _ = unsafe { sys::madvise(ptr.as_ptr() as usize, len, sys::MADV_DONTNEED) };
    }

    #[inline(always)]
    fn thread_identity(&self) -> usize {
        crate::identity::thread_pointer()
    }

    #[inline(always)]
    fn thread_identity_fast(&self) -> usize {
        crate::identity::thread_pointer_fast()
    }

    unsafe fn note_allocator(&self, alloc: *const ()) {
        #[cfg(all(feature = "rt", target_os = "linux", target_env = ""))]
        if crate::rt::is_static_image(alloc as usize) {
            // SAFETY: the caller says `alloc` is the `NolibcAlloc<Linux>`
            // holding this source, and it lies in the program's static
            // image: it lives as long as the process.
            let a: &'static crate::NolibcAlloc<Linux> = unsafe { &*alloc.cast() };
            a.register();
        }
        let _ = alloc;
    }

    fn thread_id(&self) -> u32 {
        sys::gettid() as u32
    }

    fn threads_give_back(&self) -> bool {
        crate::heap::claim_hook_set()
    }

    fn thread_alive(&self, tid: u32) -> bool {
        sys::tgkill(sys::getpid(), tid as i32, 0) != Err(sys::Errno::ESRCH)
    }

    fn is_mapped(&self, addr: *const u8) -> bool {
        let page = self.page_size();
        // madvise(MADV_NORMAL) changes nothing and fails with ENOMEM on a hole.
        // SAFETY: MADV_NORMAL has no effect on the contents.
        unsafe { sys::madvise(addr as usize & !(page - 1), page, sys::MADV_NORMAL) }.is_ok()
    }
}

/// A [`Source`] with the counters of [`crate::stats`]: every call the tiers
/// make to the OS goes through here.
pub(crate) struct Os<S> {
    pub source: S,
    pub counters: crate::stats::Counters,
}

/// [`Counters::add`](crate::stats::Counters::add) out of line: it is a
/// compare-and-swap loop (the peak), and its callers are cold (system
/// calls, large blocks): one copy, not one per caller.
#[inline(never)]
pub(crate) fn count_up(value: &AtomicUsize, peak: &AtomicUsize, by: usize) {
    crate::stats::Counters::add(value, peak, by);
}

impl<S: Source> Os<S> {
    pub const fn new(source: S) -> Self {
        Os {
            source,
            counters: crate::stats::Counters::new(),
        }
    }

    #[inline]
    pub fn page(&self) -> usize {
        self.source.page_size()
    }

    pub fn map(&self, len: usize) -> Option<NonNull<u8>> {
        use crate::stats::Counters;
        Counters::count(&self.counters.mmap);
        let p = self.source.map(len)?;
        count_up(&self.counters.mapped_bytes, &self.counters.peak_mapped_bytes, len);
        Some(p)
    }

    /// # Safety
    /// As [`Source::unmap`].
    // Out of line: a dozen cold callers (give-back paths, the mapping cache).
    #[inline(never)]
    pub unsafe fn unmap(&self, ptr: NonNull<u8>, len: usize) {
        use crate::stats::Counters;
        Counters::count(&self.counters.munmap);
        Counters::sub(&self.counters.mapped_bytes, len);
        // SAFETY: forwarded duty.
        unsafe { self.source.unmap(ptr, len) }
    }

    /// # Safety
    /// As [`Source::remap`].
    pub unsafe fn remap(&self, ptr: NonNull<u8>, old: usize, new: usize) -> Option<NonNull<u8>> {
        use crate::stats::Counters;
        Counters::count(&self.counters.mremap);
        // SAFETY: forwarded duty.
        let p = unsafe { self.source.remap(ptr, old, new) }?;
        if new > old {
            count_up(&self.counters.mapped_bytes, &self.counters.peak_mapped_bytes, new - old);
        } else {
            Counters::sub(&self.counters.mapped_bytes, old - new);
        }
        Some(p)
    }

    /// # Safety
    /// As [`Source::remap_in_place`].
    pub unsafe fn remap_in_place(&self, ptr: NonNull<u8>, old: usize, new: usize) -> bool {
        use crate::stats::Counters;
        Counters::count(&self.counters.mremap);
        // SAFETY: forwarded duty.
        let grown = unsafe { self.source.remap_in_place(ptr, old, new) };
        if grown {
            count_up(&self.counters.mapped_bytes, &self.counters.peak_mapped_bytes, new - old);
        }
        grown
    }

    /// # Safety
    /// As [`Source::move_to`].
    pub unsafe fn move_to(&self, ptr: NonNull<u8>, len: usize, dest: NonNull<u8>) -> bool {
        use crate::stats::Counters;
        Counters::count(&self.counters.mremap);
        // SAFETY: forwarded duty.
        let moved = unsafe { self.source.move_to(ptr, len, dest) };
        if moved {
            // The destination's old pages are replaced: `len` fewer bytes mapped.
            Counters::sub(&self.counters.mapped_bytes, len);
        }
        moved
    }

    /// # Safety
    /// As [`Source::discard`].
    pub unsafe fn discard(&self, ptr: NonNull<u8>, len: usize) {
        crate::stats::Counters::count(&self.counters.madvise);
        // SAFETY: forwarded duty.
        unsafe { self.source.discard(ptr, len) }
    }

    /// Moves the break from `old` to `new`; returns whether it moved.
    ///
    /// # Safety
    /// As [`Source::brk`]; `old` is the current break.
    pub unsafe fn brk(&self, old: usize, new: NonNull<u8>) -> bool {
        use crate::stats::Counters;
        Counters::count(&self.counters.brk);
        // SAFETY: forwarded duty.
        let moved = unsafe { self.source.brk(new) };
        if moved {
            let new = new.as_ptr() as usize;
            if new > old {
                count_up(&self.counters.brk_bytes, &self.counters.peak_brk_bytes, new - old);
            } else {
                Counters::sub(&self.counters.brk_bytes, old - new);
            }
        }
        moved
    }
}

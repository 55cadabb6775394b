//! Large tier: one mapping per block (`alloc_large`, `free_large`,
//! `resize_large`), reused through the mapping cache (`map_cache.rs`), and
//! the header shared with medium blocks.
//!
//! Blocks that are not slots (medium blocks from a region's heap, large
//! blocks with a mapping of their own) carry a [`BlockHeader`] in the 32
//! bytes before the pointer handed out. It says which tier owns the block,
//! where the owner's memory starts and how long it is, and holds a check
//! word that tells a live block from a freed one or from random memory.

use core::ptr::NonNull;

use core::ptr;

use core::sync::atomic::Ordering::Relaxed;

use crate::fault::{fault_in, Call, Fault};
use crate::map_cache::Evicted;
use crate::os::{align_up, count_up, Os, Source};
use crate::stats::Counters;
use crate::{NolibcAlloc, MAX_MMAP_THRESHOLD_BYTES};

/// Bytes reserved in front of every medium or large block.
pub const HEADER_BYTES: usize = 32;

const LIVE_MAGIC: usize = crate::fault::magic(0x4c49_5645_6e6f_6c63); // "LIVEnolc"
const FREED_MAGIC: usize = crate::fault::magic(0x4652_4545_6e6f_6c63); // "FREEnolc"
                                                                       // A freed block must not look live, on 32-bit targets too.
const _: () = assert!(LIVE_MAGIC != FREED_MAGIC);

/// `pad_tag` bit: a large block (its own mapping).
const TAG_LARGE: usize = 1;
/// `pad_tag` bit: a medium block handed out for a small class (pads are
/// multiples of 16, so bits 0 to 3 are free).
const TAG_SLOT: usize = 2;

/// Which tier owns a block with a header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Owner {
    /// From the heap of the region at this address.
    Medium,
    /// A mapping of its own.
    Large,
}

/// The header in front of medium and large blocks. The check word comes
/// last: a freed medium block's first 16 bytes become a heap hole header,
/// which leaves it intact so that a double free is still recognised.
#[repr(C)]
pub(crate) struct BlockHeader {
    /// Medium: the region's address; large: the mapping's address.
    pub owner: usize,
    /// Medium: bytes taken from the heap; large: bytes mapped.
    pub len: usize,
    /// Bytes from the start of the owner's block (heap block or mapping) to
    /// the pointer handed out; the tag in bit 0 (1 = large), and in bit 1
    /// a medium block that serves a small class (see `first_blocks`).
    pub pad_tag: usize,
    /// Fills the header to `HEADER_BYTES` where words are 4 bytes (none on
    /// 64-bit targets), keeping the check word last and pointers 16-aligned.
    pub reserved: [u8; HEADER_BYTES - 4 * core::mem::size_of::<usize>()],
    /// `ptr ^ LIVE_MAGIC` while live, `ptr ^ FREED_MAGIC` once freed.
    pub check: usize,
}

const _: () = assert!(core::mem::size_of::<BlockHeader>() == HEADER_BYTES);

/// Bytes between a block's start and the pointer handed out for `align`.
#[inline]
pub(crate) const fn pad_for(align: usize) -> usize {
    if align > HEADER_BYTES {
        align
    } else {
        HEADER_BYTES
    }
}

/// Writes the header of a block handed out at `user`.
///
/// # Safety
/// The 32 bytes before `user` belong to the block.
#[inline]
pub(crate) unsafe fn write_header(user: NonNull<u8>, owner: usize, len: usize, pad: usize, kind: Owner) {
    let tag = if kind == Owner::Large { TAG_LARGE } else { 0 };
    // SAFETY: the caller reserved the header bytes; `user` is 16-aligned at least.
    unsafe {
        user.as_ptr()
            .sub(HEADER_BYTES)
            .cast::<BlockHeader>()
            .write(BlockHeader {
                owner,
                len,
                pad_tag: pad | tag,
                reserved: [0; HEADER_BYTES - 4 * core::mem::size_of::<usize>()],
                check: user.as_ptr() as usize ^ LIVE_MAGIC,
            });
    }
}

/// Reads and checks the header of the block at `user`: stops the process on
/// a double free; `None` if there is no live header (the caller finds out
/// what the pointer is).
///
/// # Safety
/// The 32 bytes before `user` are readable.
#[inline]
pub(crate) unsafe fn read_header(user: NonNull<u8>, call: Call) -> Option<(Owner, usize, usize, usize)> {
    let addr = user.as_ptr() as usize;
    if !addr.is_multiple_of(16) {
        return None;
    }
    // SAFETY: the caller vouches the bytes are readable.
    let h = unsafe { &*user.as_ptr().sub(HEADER_BYTES).cast::<BlockHeader>() };
    if crate::fault::CHECKS && h.check != addr ^ LIVE_MAGIC {
        if h.check == addr ^ FREED_MAGIC {
            fault_in(call, Fault::DoubleFree, addr);
        }
        return None;
    }
    let kind = if h.pad_tag & TAG_LARGE != 0 {
        Owner::Large
    } else {
        Owner::Medium
    };
    Some((kind, h.owner, h.len, h.pad_tag & !(TAG_LARGE | TAG_SLOT)))
}

/// Whether the 32 bytes before `user` are the header of a live block.
///
/// # Safety
/// The 32 bytes before `user` are readable.
#[inline]
pub(crate) unsafe fn has_header(user: NonNull<u8>) -> bool {
    let addr = user.as_ptr() as usize;
    // SAFETY: the caller vouches the bytes are readable.
    addr.is_multiple_of(16)
        && unsafe { (*user.as_ptr().sub(HEADER_BYTES).cast::<BlockHeader>()).check } == addr ^ LIVE_MAGIC
}

/// Tags the live medium block at `user` as serving a small class: freed
/// with that class's layout, it is not a wrong layout.
///
/// # Safety
/// The block is live and has a header.
#[inline]
pub(crate) unsafe fn tag_slot(user: NonNull<u8>) {
    // SAFETY: the caller vouches for the header.
    unsafe { (*user.as_ptr().sub(HEADER_BYTES).cast::<BlockHeader>()).pad_tag |= TAG_SLOT };
}

/// Whether the live block at `user` was tagged by [`tag_slot`].
///
/// # Safety
/// The block is live and has a header.
#[inline]
pub(crate) unsafe fn is_tagged_slot(user: NonNull<u8>) -> bool {
    // SAFETY: the caller vouches for the header.
    unsafe { (*user.as_ptr().sub(HEADER_BYTES).cast::<BlockHeader>()).pad_tag & TAG_SLOT != 0 }
}

/// Marks the block at `user` freed (before it goes back to its owner).
///
/// # Safety
/// The block is live and has a header.
#[inline]
pub(crate) unsafe fn mark_freed(user: NonNull<u8>) {
    // SAFETY: the caller vouches for the header.
    unsafe {
        (*user.as_ptr().sub(HEADER_BYTES).cast::<BlockHeader>()).check = user.as_ptr() as usize ^ FREED_MAGIC;
    }
}

/// Writes the header of a large block whose mapping is new (`old` 0) or
/// changed length from `old`, and counts the bytes.
///
/// # Safety
/// The header bytes before `user` are the block's, whose mapping starts at
/// `map` and is now `len` long.
unsafe fn set_mapping<S: Source>(os: &Os<S>, user: NonNull<u8>, map: *mut u8, pad: usize, old: usize, len: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { write_header(user, map as usize, len, pad, Owner::Large) };
    if len > old {
        count_up(&os.counters.block_bytes, &os.counters.peak_block_bytes, len - old);
    } else {
        Counters::sub(&os.counters.block_bytes, old - len);
    }
}

impl<S: Source> NolibcAlloc<S> {
    /// Unmaps what the mapping cache chose to give back, and empties `out`
    /// for the next use (one `Evicted` per function, not one per step).
    #[inline]
    pub(crate) fn unmap_evicted(&self, out: &mut Evicted) {
        out.unmap(&self.os);
    }

    /// A fresh mapping of `len` bytes. After a failure (near a limit), the
    /// mapping cache goes back and the mapping is tried once more, if there
    /// was anything to give. (One copy for both paths of `alloc_large`.)
    #[inline(never)]
    fn map_fresh(&self, len: usize) -> Option<NonNull<u8>> {
        if let Some(map) = self.os.map(len) {
            return Some(map);
        }
        if self.core.lock().unmap_cached(&self.os) {
            self.os.map(len)
        } else {
            None
        }
    }

    /// A block of `size` bytes aligned to `align` in a mapping of its own
    /// (from the mapping cache if a span fits, else fresh); null if the
    /// kernel says no. Alignments above a page over-map and trim. With
    /// `zero`, a cached mapping is cleared (fresh pages are zero).
    pub(crate) fn alloc_large(&self, size: usize, align: usize, zero: bool) -> *mut u8 {
        let os = &self.os;
        let page = os.page();
        let policy = self.tuning.map_cache(page);
        let pad = pad_for(align.min(page));
        let Some(need) = size.checked_add(pad) else {
            return ptr::null_mut();
        };
        if align <= page {
            let Some(len) = align_up(need, page) else {
                return ptr::null_mut();
            };
            let (mut cached, mut grow) = (None, None);
            if policy.enabled() {
                let mut out = Evicted::new();
                {
                    let mut core = self.core.lock();
                    cached = core.maps.take(len, &policy, &mut out);
                    if cached.is_none() {
                        core.maps.add_live(len);
                        grow = core.maps.take_largest();
                    }
                }
                self.unmap_evicted(&mut out);
            }
            // No span fits: grow the largest one rather than fault in a
            // whole fresh mapping.
            if let Some((span, slen)) = grow {
                // SAFETY: the span is ours alone (out of the cache).
                match unsafe { os.remap(span, slen, len) } {
                    Some(map) => cached = Some((map, len)),
                    // SAFETY: as above.
                    None => unsafe { os.unmap(span, slen) },
                }
            }
            let (map, len, fresh) = match cached {
                Some((map, got)) => (map, got, false),
                None => match self.map_fresh(len) {
                    Some(map) => (map, len, true),
                    None => {
                        if policy.enabled() {
                            self.core.lock().maps.sub_live(len);
                        }
                        return ptr::null_mut();
                    }
                },
            };
            // SAFETY: a mapping of `len >= pad + size` bytes that is ours alone.
            unsafe {
                let user = NonNull::new_unchecked(map.as_ptr().add(pad));
                set_mapping(os, user, map.as_ptr(), pad, 0, len);
                if zero && !fresh {
                    ptr::write_bytes(user.as_ptr(), 0, size);
                }
                return user.as_ptr();
            }
        }
        // Over-map by the alignment, then trim both ends.
        let Some(total) = need.checked_add(align).and_then(|n| align_up(n, page)) else {
            return ptr::null_mut();
        };
        let Some(map) = self.map_fresh(total) else {
            return ptr::null_mut();
        };
        let base = map.as_ptr() as usize;
        let user_addr = (base + HEADER_BYTES + align - 1) & !(align - 1);
        let head = (user_addr - HEADER_BYTES - base) & !(page - 1);
        let end = (user_addr + size + page - 1) & !(page - 1);
        // SAFETY: all pointers below stay inside the fresh mapping.
        unsafe {
            if head > 0 {
                os.unmap(map, head);
            }
            if base + total > end {
                os.unmap(NonNull::new_unchecked(map.as_ptr().add(end - base)), base + total - end);
            }
            let start = map.as_ptr().add(head);
            let user = NonNull::new_unchecked(map.as_ptr().add(user_addr - base));
            let len = end - (base + head);
            set_mapping(os, user, start, user_addr - (base + head), 0, len);
            if policy.enabled() {
                self.core.lock().maps.add_live(len);
            }
            user.as_ptr()
        }
    }

    /// Frees a large block: its mapping goes to the mapping cache (which
    /// may give older spans back), or is unmapped when there is no cache.
    ///
    /// # Safety
    /// The block's mapping is `[map, map + len)`, and nothing uses it any more.
    #[inline(never)]
    pub(crate) unsafe fn free_large(&self, map: NonNull<u8>, len: usize) {
        Counters::sub(&self.os.counters.block_bytes, len);
        let policy = self.tuning.map_cache(self.os.page());
        if !policy.enabled() {
            // No cache: raise the threshold instead, so that blocks of this
            // size come from regions (glibc's answer to mmap churn).
            if self.tuning.adaptive_threshold() && len > self.mmap_threshold() && len <= MAX_MMAP_THRESHOLD_BYTES {
                self.threshold.store(len, Relaxed);
            }
            // SAFETY: the mapping is the block's alone.
            unsafe { self.os.unmap(map, len) };
            return;
        }
        let mut out = Evicted::new();
        let idle = {
            let mut core = self.core.lock();
            // SAFETY: the caller hands the mapping over.
            unsafe { core.maps.put(map, len, &policy, &mut out) };
            core.idle_after_burst()
        };
        self.unmap_evicted(&mut out);
        if idle {
            self.give_back_all();
        }
    }

    /// Resizes a large block in place or by moving its pages, without
    /// copying: shrinking gives the tail to the mapping cache; growing takes
    /// the cached span right after the block, else the free pages after the
    /// mapping (`mremap` without moving), else moves the pages onto a cached
    /// span that fits (its pages stay faulted in), else lets `mremap` move
    /// it. On growth the mapping is made half again as large as asked, so
    /// steady growth needs few steps. `None` if all of that failed.
    ///
    /// # Safety
    /// The block at `map + pad` is a live large block with this mapping.
    #[inline(never)]
    pub(crate) unsafe fn resize_large(
        &self,
        map: NonNull<u8>,
        len: usize,
        pad: usize,
        new_size: usize,
    ) -> Option<*mut u8> {
        let os = &self.os;
        let page = os.page();
        let policy = self.tuning.map_cache(page);
        if !policy.enabled() {
            // SAFETY: forwarded.
            return unsafe { remap(os, map, len, pad, new_size) };
        }
        let need = align_up(new_size.checked_add(pad)?, page)?;
        let base = map.as_ptr();
        // SAFETY: pad < len: the pointer handed out.
        let user = unsafe { NonNull::new_unchecked(base.add(pad)) };
        let mut out = Evicted::new();
        if need <= len {
            if need < len {
                // SAFETY: the tail is page-aligned and past the block's new end.
                unsafe {
                    let tail = NonNull::new_unchecked(base.add(need));
                    self.core.lock().maps.put(tail, len - need, &policy, &mut out);
                    set_mapping(os, user, base, pad, len, need);
                }
                self.unmap_evicted(&mut out);
            }
            return Some(user.as_ptr());
        }
        let want = align_up(need.max(len + len / 2), page)?;
        let after = self
            .core
            .lock()
            .maps
            .take_after(base.wrapping_add(len), need - len, want - len, &policy, &mut out);
        self.unmap_evicted(&mut out);
        if let Some(extra) = after {
            // SAFETY: the span right after the mapping is the block's now.
            unsafe { set_mapping(os, user, base, pad, len, len + extra) };
            return Some(user.as_ptr());
        }
        // SAFETY: the mapping is the block's alone.
        if unsafe { os.remap_in_place(map, len, want) } {
            self.core.lock().maps.add_live(want - len);
            // SAFETY: the mapping grew where it is.
            unsafe { set_mapping(os, user, base, pad, len, want) };
            return Some(user.as_ptr());
        }
        let span = {
            let mut core = self.core.lock();
            match core.maps.take(want, &policy, &mut out) {
                Some(span) => Some(span),
                None => core.maps.take(need, &policy, &mut out),
            }
        };
        self.unmap_evicted(&mut out);
        if let Some((dest, dlen)) = span {
            // SAFETY: the span is ours and at least `len` long; the block's
            // pages move onto its front.
            if unsafe { os.move_to(map, len, dest) } {
                self.core.lock().maps.sub_live(len);
                // SAFETY: the block now starts at `dest`, `dlen` bytes mapped.
                unsafe {
                    let moved = NonNull::new_unchecked(dest.as_ptr().add(pad));
                    set_mapping(os, moved, dest.as_ptr(), pad, len, dlen);
                    return Some(moved.as_ptr());
                }
            }
            // SAFETY: the span is untouched and ours.
            unsafe { self.core.lock().maps.put(dest, dlen, &policy, &mut out) };
            self.unmap_evicted(&mut out);
        }
        // SAFETY: the mapping is the block's alone.
        let (new_map, want) = match unsafe { os.remap(map, len, want) } {
            Some(m) => (m, want),
            // Near a limit: without the cache, what is needed may fit.
            // SAFETY: as above.
            None if self.core.lock().unmap_cached(os) => (unsafe { os.remap(map, len, need) }?, need),
            None => return None,
        };
        self.core.lock().maps.add_live(want - len);
        // SAFETY: the block keeps its offset in the moved mapping.
        unsafe {
            let moved = NonNull::new_unchecked(new_map.as_ptr().add(pad));
            set_mapping(os, moved, new_map.as_ptr(), pad, len, want);
            Some(moved.as_ptr())
        }
    }
}

/// Grows or shrinks a large block with mremap (when there is no mapping
/// cache); on growth the mapping is made half again as large as asked, so
/// steady growth needs few calls.
///
/// # Safety
/// The block at `map + pad` is a live large block with this mapping.
unsafe fn remap<S: Source>(os: &Os<S>, map: NonNull<u8>, len: usize, pad: usize, new_size: usize) -> Option<*mut u8> {
    let page = os.page();
    let need = align_up(new_size.checked_add(pad)?, page)?;
    let new_len = if need > len {
        align_up(need.max(len + len / 2), page)?
    } else {
        need
    };
    // SAFETY: the mapping is the block's alone.
    let new_map = unsafe { os.remap(map, len, new_len) }?;
    // SAFETY: the block keeps its offset in the moved mapping (pad < new_len).
    unsafe {
        let user = NonNull::new_unchecked(new_map.as_ptr().add(pad));
        set_mapping(os, user, new_map.as_ptr(), pad, len, new_len);
        Some(user.as_ptr())
    }
}

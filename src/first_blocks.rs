//! The process's first small blocks, from the free-list core instead of runs.
//!
//! A class's first run costs a page as soon as its first slot is written
//! (the run header and the first slots share it), so a program that
//! allocates a handful of blocks of different sizes would touch a page per
//! class. Until the process has taken [`FIRST_BLOCK_BUDGET`] bytes this
//! way, a class of at most 1 KiB that has no slot to give gets a medium
//! block (header and all) of its class's size instead of a new run, from
//! a small region of the core aligned for it (`Core::alloc_first`): those
//! pack into one page. The block's header is tagged, so that
//! a free with the class's layout (which looks for a run first) finds it.
//! Afterwards every arena takes runs as before; nothing is charged back
//! when these blocks are freed, so the budget is spent once.

use core::ptr::{self, NonNull};

use crate::fault::Call;
use crate::large::{self, Owner, HEADER_BYTES};
use crate::os::Source;
use crate::{Block, NolibcAlloc};
use core::sync::atomic::Ordering::Relaxed;

/// Bytes (headers included) of small blocks the process gets from the
/// free-list core before its arenas take runs only: one page.
pub(crate) const FIRST_BLOCK_BUDGET: usize = 4096;

/// Classes below this (the 16-byte spaced ones, up to 1 KiB) may be served so.
const FIRST_BLOCK_CLASSES: usize = 64;

impl<S: Source> NolibcAlloc<S> {
    /// A medium block for `class` while the budget lasts and the core's
    /// region of first blocks has room (null if not: the caller then takes
    /// a run). Threads racing past the budget overshoot it by a block
    /// each, no more.
    #[cold]
    pub(crate) fn first_block(&self, class: usize) -> *mut u8 {
        if class >= FIRST_BLOCK_CLASSES || self.first_block_bytes.load(Relaxed) >= FIRST_BLOCK_BUDGET {
            return ptr::null_mut();
        }
        let size = (class + 1) * 16;
        // The class's slots are aligned to its natural alignment: so is the block.
        let align = crate::class::natural_align(size);
        let pad = large::pad_for(align);
        let len = size + pad;
        // `usable_size` with the class's layout reads the class table.
        crate::class::TABLE.init();
        let got = self.core.lock().alloc_first(&self.os, len, align.max(16));
        let Some((block, region)) = got else {
            // No more chances (or no room): runs from now on.
            self.spend_first_blocks();
            return ptr::null_mut();
        };
        self.first_block_bytes.fetch_add(len, Relaxed);
        // SAFETY: the core just carved `len` bytes from `region`; the
        // header is then live.
        unsafe {
            let user = self.hand_out_medium(block, region, len, pad);
            large::tag_slot(user);
            user.as_ptr()
        }
    }

    /// Spends the whole budget: from now on every small block is a slot
    /// (for tests that count slots and runs from the first allocation).
    #[doc(hidden)]
    pub fn spend_first_blocks(&self) {
        self.first_block_bytes.store(FIRST_BLOCK_BUDGET, Relaxed);
    }

    /// Frees what a free with the layout of `class` found no run for: a
    /// block of [`Self::first_block`] for that class, else stops the process
    /// naming the fault.
    ///
    /// # Safety
    /// As `dealloc` with a small layout.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn free_first_block(&self, ptr: NonNull<u8>, class: usize, call: Call) {
        let header = ptr.as_ptr().wrapping_sub(HEADER_BYTES);
        if self.os.source.is_mapped(header) {
            // SAFETY: the header's page is mapped; `read_header` stops the
            // process on a block freed twice and checks a live one.
            unsafe {
                if let Some((Owner::Medium, owner, len, pad)) = large::read_header(ptr, call) {
                    // (A block of another class freed with this layout is a wrong layout.)
                    if large::is_tagged_slot(ptr) && len - pad == (class + 1) * 16 {
                        if let Some(region) = NonNull::new(ptr.as_ptr().with_addr(owner)) {
                            return self.free_block(
                                ptr,
                                Block::Medium {
                                    region: region.cast(),
                                    len,
                                    pad,
                                },
                                call,
                            );
                        }
                    }
                }
            }
        }
        self.bad_pointer(ptr, call)
    }
}

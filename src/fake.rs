//! A fake [`Source`] over a caller's buffer: for unit tests, Miri and fuzzing.
//!
//! The buffer's low part plays the brk segment (growing up from the bottom);
//! mappings are handed out from the top down, and unmapped ranges are reused.
//! It can be told to fail the Nth call, to refuse brk, and it poisons memory
//! that is unmapped so that a use after unmap shows up.

use core::cell::Cell;
use core::ptr::NonNull;

use crate::os::Source;

/// Ranges of unmapped memory remembered for reuse.
const FREE_RANGES: usize = 64;

/// A fake memory source. See the module docs.
pub struct FakeSource {
    base: NonNull<u8>,
    page: usize,
    /// Offset of the break from `base`.
    brk: Cell<usize>,
    /// The break may not pass this offset.
    brk_limit: Cell<usize>,
    /// Mappings are carved downwards from here (an offset).
    map_floor: Cell<usize>,
    free: [Cell<(usize, usize)>; FREE_RANGES],
    /// Calls made so far (map, remap, brk moves).
    calls: Cell<usize>,
    /// The call with this index fails.
    fail_at: Cell<usize>,
    /// Whether brk always fails.
    brk_refused: Cell<bool>,
    /// Bytes currently mapped.
    mapped: Cell<usize>,
}

impl FakeSource {
    /// A source over `[base, base + len)`, the lower `brk_bytes` of which are
    /// the brk segment.
    ///
    /// # Safety
    /// The buffer is valid, writable, unused by anything else for the life of
    /// the source and of every allocation from it, and `base` is aligned to
    /// `page` (a power of two of at least 4096).
    pub unsafe fn new(base: NonNull<u8>, len: usize, brk_bytes: usize, page: usize) -> Self {
        FakeSource {
            base,
            page,
            brk: Cell::new(0),
            brk_limit: Cell::new(brk_bytes & !(page - 1)),
            map_floor: Cell::new(len & !(page - 1)),
            free: [const { Cell::new((0, 0)) }; FREE_RANGES],
            calls: Cell::new(0),
            fail_at: Cell::new(usize::MAX),
            brk_refused: Cell::new(false),
            mapped: Cell::new(0),
        }
    }

    /// Makes the `n`th next call that asks for memory fail (0 = the next one).
    pub fn fail_nth(&self, n: usize) {
        self.fail_at.set(self.calls.get() + n);
    }

    /// Makes brk fail from now on (`true`) or work again.
    pub fn refuse_brk(&self, refuse: bool) {
        self.brk_refused.set(refuse);
    }

    /// Moves the limit of the brk segment (as a mapping placed above it would).
    pub fn set_brk_limit(&self, bytes: usize) {
        self.brk_limit.set(bytes & !(self.page - 1));
    }

    /// Bytes currently mapped.
    pub fn mapped_bytes(&self) -> usize {
        self.mapped.get()
    }

    /// Bytes between the bottom and the break.
    pub fn brk_bytes(&self) -> usize {
        self.brk.get()
    }

    fn fails(&self) -> bool {
        let n = self.calls.get();
        self.calls.set(n + 1);
        n == self.fail_at.get()
    }

    fn at(&self, offset: usize) -> NonNull<u8> {
        // SAFETY: offsets stay within the buffer.
        unsafe { NonNull::new_unchecked(self.base.as_ptr().add(offset)) }
    }

    fn offset(&self, p: NonNull<u8>) -> usize {
        p.as_ptr() as usize - self.base.as_ptr() as usize
    }

    fn carve(&self, len: usize) -> Option<usize> {
        for cell in &self.free {
            let (start, size) = cell.get();
            if size >= len {
                cell.set(if size == len { (0, 0) } else { (start + len, size - len) });
                return Some(start);
            }
        }
        let floor = self.map_floor.get().checked_sub(len)?;
        if floor < self.brk_limit.get().max(self.brk.get()) {
            return None;
        }
        self.map_floor.set(floor);
        Some(floor)
    }

    fn give_back(&self, start: usize, len: usize) {
        // SAFETY: the range is inside the buffer and no longer in use.
        unsafe { core::ptr::write_bytes(self.at(start).as_ptr(), 0xa5, len) };
        let (mut start, mut len) = (start, len);
        // Merge with every neighbour, then hand the result to the floor or the table.
        let mut merged = true;
        while merged {
            merged = false;
            for cell in &self.free {
                let (s, size) = cell.get();
                if size != 0 && (s + size == start || start + len == s) {
                    start = start.min(s);
                    len += size;
                    cell.set((0, 0));
                    merged = true;
                }
            }
        }
        if start == self.map_floor.get() {
            self.map_floor.set(start + len);
            return;
        }
        if let Some(cell) = self.free.iter().find(|c| c.get().1 == 0) {
            cell.set((start, len));
        }
        // Table full: the range is leaked (the fake only loses capacity).
    }
}

// SAFETY: memory handed out is inside the caller's buffer, never handed out
// twice while mapped, zeroed by `map`, page-aligned; nothing allocates.
unsafe impl Source for FakeSource {
    const HAS_BRK: bool = true;

    fn page_size(&self) -> usize {
        self.page
    }

    fn brk_current(&self) -> Option<NonNull<u8>> {
        Some(self.at(self.brk.get()))
    }

    unsafe fn brk(&self, addr: NonNull<u8>) -> bool {
        if self.brk_refused.get() || self.fails() {
            return false;
        }
        let want = self.offset(addr);
        if want > self.brk_limit.get() || want > self.map_floor.get() {
            return false;
        }
        if want > self.brk.get() {
            // Fresh brk pages read as zero.
            // SAFETY: the range is inside the brk part of the buffer.
            unsafe { core::ptr::write_bytes(self.at(self.brk.get()).as_ptr(), 0, want - self.brk.get()) };
        }
        self.brk.set(want);
        true
    }

    fn stack_floor(&self) -> usize {
        usize::MAX
    }

    fn map(&self, len: usize) -> Option<NonNull<u8>> {
        assert!(len > 0 && len.is_multiple_of(self.page), "fake map: bad length");
        if self.fails() {
            return None;
        }
        let start = self.carve(len)?;
        // SAFETY: the carved range is inside the buffer and unused.
        unsafe { core::ptr::write_bytes(self.at(start).as_ptr(), 0, len) };
        self.mapped.set(self.mapped.get() + len);
        Some(self.at(start))
    }

    unsafe fn unmap(&self, ptr: NonNull<u8>, len: usize) {
        assert!(
            self.offset(ptr).is_multiple_of(self.page) && len.is_multiple_of(self.page),
            "fake unmap: unaligned"
        );
        self.mapped.set(self.mapped.get() - len);
        self.give_back(self.offset(ptr), len);
    }

    unsafe fn remap(&self, ptr: NonNull<u8>, old_len: usize, new_len: usize) -> Option<NonNull<u8>> {
        if new_len <= old_len {
            if new_len < old_len {
                self.mapped.set(self.mapped.get() - (old_len - new_len));
                self.give_back(self.offset(ptr) + new_len, old_len - new_len);
            }
            return Some(ptr);
        }
        let new = self.map(new_len)?;
        // SAFETY: both ranges are live mappings of the buffer and distinct.
        unsafe { core::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), old_len) };
        self.mapped.set(self.mapped.get() - old_len);
        self.give_back(self.offset(ptr), old_len);
        Some(new)
    }

    unsafe fn remap_in_place(&self, ptr: NonNull<u8>, old_len: usize, new_len: usize) -> bool {
        if self.fails() {
            return false;
        }
        let (end, extra) = (self.offset(ptr) + old_len, new_len - old_len);
        // Only an unmapped range that starts right at the end can be taken.
        let Some(cell) = self.free.iter().find(|c| c.get().0 == end && c.get().1 >= extra) else {
            return false;
        };
        let (start, size) = cell.get();
        cell.set(if size == extra {
            (0, 0)
        } else {
            (start + extra, size - extra)
        });
        // SAFETY: the range was unmapped and is inside the buffer.
        unsafe { core::ptr::write_bytes(self.at(end).as_ptr(), 0, extra) };
        self.mapped.set(self.mapped.get() + extra);
        true
    }

    unsafe fn move_to(&self, ptr: NonNull<u8>, len: usize, dest: NonNull<u8>) -> bool {
        // SAFETY: both ranges are live mappings of the buffer and distinct.
        unsafe { core::ptr::copy_nonoverlapping(ptr.as_ptr(), dest.as_ptr(), len) };
        self.mapped.set(self.mapped.get() - len);
        self.give_back(self.offset(ptr), len);
        true
    }

    unsafe fn discard(&self, ptr: NonNull<u8>, len: usize) {
        // SAFETY: the caller owns the range.
        unsafe { core::ptr::write_bytes(ptr.as_ptr(), 0, len) };
    }
}

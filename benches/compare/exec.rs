//! Runs an operation stream against one allocator through `GlobalAlloc`.
//!
//! Generic over the allocator, so every call is a direct, inlinable call
//! (no `dyn`). Every block is filled with a pattern derived from its id and
//! size and checked when it is freed or resized; `driver.c` uses the same
//! pattern.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc::{Receiver, SyncSender};

use crate::workloads::{mix64, Sink};

/// Blocks up to this size are filled completely; larger ones get a tag per
/// 4 KiB and a tail tag.
pub const FULL_FILL_MAX: u64 = 512;
const TAG_STRIDE: u64 = 4096;
const TAIL_KEY: u64 = 0x7A11_7A11_7A11_7A11;

/// Writes the pattern of block `id` into `[p, p + size)` (size >= 8).
///
/// # Safety
/// `p` is valid for writes of `size` bytes.
pub unsafe fn fill(p: *mut u8, size: u64, id: u64) {
    let h = mix64(id);
    // SAFETY: the caller gives `size` writable bytes; every
    // write below stays inside them.
    unsafe {
        if size <= FULL_FILL_MAX {
            p.write_bytes(h as u8, size as usize);
        }
        let mut off = 0;
        while off + 8 <= size {
            (p.add(off as usize) as *mut u64).write_unaligned(h ^ off);
            off += TAG_STRIDE;
        }
        (p.add(size as usize - 8) as *mut u64).write_unaligned(h ^ size ^ TAIL_KEY);
    }
}

/// Checks the pattern written by [`fill`]; tags overwritten by the tail tag
/// are skipped, exactly as `fill` left them.
///
/// # Safety
/// `p` is valid for reads of `size` bytes.
pub unsafe fn check(p: *const u8, size: u64, id: u64) -> bool {
    let h = mix64(id);
    // SAFETY: the caller gives `size` readable bytes; every
    // read below stays inside them.
    unsafe {
        if (p.add(size as usize - 8) as *const u64).read_unaligned() != h ^ size ^ TAIL_KEY {
            return false;
        }
        if size <= FULL_FILL_MAX && size > 16 {
            let body = std::slice::from_raw_parts(p.add(8), size as usize - 16);
            if body.iter().any(|&b| b != h as u8) {
                return false;
            }
        }
        let mut off = 0;
        while off + 16 <= size {
            if (p.add(off as usize) as *const u64).read_unaligned() != h ^ off {
                return false;
            }
            off += TAG_STRIDE;
        }
    }
    true
}

/// A live block.
#[derive(Clone, Copy)]
pub struct Block {
    pub ptr: *mut u8,
    pub size: u64,
    pub align: usize,
    pub id: u64,
}

// SAFETY: a block is plain memory owned by whoever holds the `Block`; the
// producer/consumer workload moves that ownership to the other thread.
unsafe impl Send for Block {}

const EMPTY: Block = Block {
    ptr: std::ptr::null_mut(),
    size: 0,
    align: 0,
    id: 0,
};

/// Cell status, worst wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Oom,
    Corrupt,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Oom => "OOM",
            Status::Corrupt => "CORRUPT",
        }
    }
}

/// Executes one stream.
pub struct Exec<'a, A: GlobalAlloc> {
    a: &'a A,
    slots: Vec<Block>,
    next_id: u64,
    pub status: Status,
    /// Allocations, frees and reallocations done.
    pub ops: u64,
    pub live_bytes: u64,
    pub peak_live_bytes: u64,
    pub tx: Option<SyncSender<Block>>,
    pub rx: Option<Receiver<Block>>,
}

impl<'a, A: GlobalAlloc> Exec<'a, A> {
    /// `slots` is the slot table size; ids of stream `stream` start at `stream << 40`.
    pub fn new(a: &'a A, slots: usize, stream: usize) -> Self {
        Exec {
            a,
            slots: vec![EMPTY; slots],
            next_id: (stream as u64) << 40,
            status: Status::Ok,
            ops: 0,
            live_bytes: 0,
            peak_live_bytes: 0,
            tx: None,
            rx: None,
        }
    }

    fn fail(&mut self, s: Status) {
        self.status = self.status.max(s);
    }

    /// Checks and frees a block that left its slot.
    fn release(&mut self, b: Block) {
        // SAFETY: `b` came from `self.a` with this size and alignment and
        // nothing else refers to it.
        unsafe {
            if !check(b.ptr, b.size, b.id) {
                self.fail(Status::Corrupt);
            }
            self.a
                .dealloc(b.ptr, Layout::from_size_align_unchecked(b.size as usize, b.align));
        }
        self.live_bytes -= b.size;
        self.ops += 1;
    }
}

impl<A: GlobalAlloc> Sink for Exec<'_, A> {
    fn alloc(&mut self, slot: u32, size: u64, align_log2: u8) {
        let align = 1usize << align_log2;
        let Ok(layout) = Layout::from_size_align(size as usize, align) else {
            return self.fail(Status::Oom);
        };
        // SAFETY: the layout has a non-zero size (>= 8).
        let p = unsafe { self.a.alloc(layout) };
        self.ops += 1;
        if p.is_null() {
            return self.fail(Status::Oom);
        }
        if p as usize & (align - 1) != 0 {
            return self.fail(Status::Corrupt);
        }
        let id = self.next_id;
        self.next_id += 1;
        // SAFETY: a fresh block of `size` bytes.
        unsafe { fill(p, size, id) };
        self.slots[slot as usize] = Block {
            ptr: p,
            size,
            align,
            id,
        };
        self.live_bytes += size;
        self.peak_live_bytes = self.peak_live_bytes.max(self.live_bytes);
    }

    fn free(&mut self, slot: u32) {
        let b = std::mem::replace(&mut self.slots[slot as usize], EMPTY);
        if !b.ptr.is_null() {
            self.release(b);
        }
    }

    fn realloc(&mut self, slot: u32, new_size: u64) {
        let b = self.slots[slot as usize];
        if b.ptr.is_null() {
            return;
        }
        // SAFETY: `b` is live with this layout; `new_size` is non-zero.
        let p = unsafe {
            if !check(b.ptr, b.size, b.id) {
                return self.fail(Status::Corrupt);
            }
            self.a.realloc(
                b.ptr,
                Layout::from_size_align_unchecked(b.size as usize, b.align),
                new_size as usize,
            )
        };
        self.ops += 1;
        if p.is_null() {
            return self.fail(Status::Oom);
        }
        if p as usize & (b.align - 1) != 0 {
            return self.fail(Status::Corrupt);
        }
        // The old contents must have moved along.
        // SAFETY: the new block has `new_size >= b.size` bytes.
        unsafe {
            if new_size >= b.size && !check(p, b.size, b.id) {
                self.fail(Status::Corrupt);
            }
            fill(p, new_size, b.id);
        }
        self.slots[slot as usize] = Block {
            ptr: p,
            size: new_size,
            ..b
        };
        self.live_bytes = self.live_bytes - b.size + new_size;
        self.peak_live_bytes = self.peak_live_bytes.max(self.live_bytes);
    }

    fn send(&mut self, slot: u32) {
        let b = std::mem::replace(&mut self.slots[slot as usize], EMPTY);
        if b.ptr.is_null() {
            return;
        }
        self.live_bytes -= b.size;
        let sent = self.tx.as_ref().map(|tx| tx.send(b));
        if !matches!(sent, Some(Ok(()))) {
            // The consumer is gone (it failed); free here.
            self.live_bytes += b.size;
            self.release(b);
        }
    }

    fn recv_free(&mut self) {
        match self.rx.as_ref().map(|rx| rx.recv()) {
            Some(Ok(b)) => {
                self.live_bytes += b.size;
                self.release(b);
            }
            // The producer stopped early (it failed): nothing left to do.
            _ => self.fail(Status::Oom),
        }
    }

    fn ok(&self) -> bool {
        self.status == Status::Ok
    }
}

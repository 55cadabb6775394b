//! The `tiny` example with a bump allocator (a static buffer, no free)
//! instead of nolibc-alloc: the difference in stripped size between the two
//! is the allocator's own code size (`cargo xtask size`, BENCHMARKS.md).
//!
//! Run: `cargo xtask run --example tiny_bump [--arch aarch64|riscv64]`
//! (prints `tiny_bump: ok`).

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use nolibc_alloc::{entry, rt};

const ARENA_BYTES: usize = 64 << 10;

struct Bump {
    arena: UnsafeCell<[u8; ARENA_BYTES]>,
    next: AtomicUsize,
}

// SAFETY: blocks are handed out once each (the offset only grows, atomically).
unsafe impl Sync for Bump {}

// SAFETY: every block is inside the arena, aligned, and never handed out twice.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = self.arena.get() as usize;
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            let start = (base + next).next_multiple_of(layout.align()) - base;
            let Some(end) = start.checked_add(layout.size()).filter(|&e| e <= ARENA_BYTES) else {
                return core::ptr::null_mut();
            };
            match self
                .next
                .compare_exchange(next, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                // SAFETY: `start` is inside the arena.
                Ok(_) => return unsafe { self.arena.get().cast::<u8>().add(start) },
                Err(seen) => next = seen,
            }
        }
    }

    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}

#[global_allocator]
static ALLOC: Bump = Bump {
    arena: UnsafeCell::new([0; ARENA_BYTES]),
    next: AtomicUsize::new(0),
};

entry!(main);

fn main() -> i32 {
    let mut line = Vec::new();
    line.extend_from_slice(b"tiny_bump: ");
    line.extend_from_slice(b"ok\n");
    rt::write_all(1, &line);
    0
}

//! `tiny` with linked_list_allocator alone (its `LockedHeap`, a static arena).

#![no_std]
#![no_main]

use footprint_peers::ARENA_BYTES;
use linked_list_allocator::LockedHeap;
use nolibc_alloc::entry;

#[global_allocator]
static ALLOC: LockedHeap = LockedHeap::empty();

static mut ARENA: [u8; ARENA_BYTES] = [0; ARENA_BYTES];

entry!(main);

fn main() -> i32 {
    // SAFETY: called once, before any allocation; the arena is used by this
    // heap only.
    unsafe { ALLOC.lock().init((&raw mut ARENA).cast(), ARENA_BYTES) };
    footprint_peers::tiny(b"tiny_lla")
}

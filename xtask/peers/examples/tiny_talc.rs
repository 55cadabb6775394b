//! `tiny` with talc (a spin lock, a static arena claimed on first use).

#![no_std]
#![no_main]

use footprint_peers::ARENA_BYTES;
use nolibc_alloc::entry;
use spinning_top::RawSpinlock;
use talc::{source::Claim, TalcLock};

#[global_allocator]
static ALLOC: TalcLock<RawSpinlock, Claim> = TalcLock::new(unsafe {
    static mut ARENA: [u8; ARENA_BYTES] = [0; ARENA_BYTES];
    // SAFETY: the arena is used by this allocator only.
    Claim::array(&raw mut ARENA)
});

entry!(main);

fn main() -> i32 {
    footprint_peers::tiny(b"tiny_talc")
}

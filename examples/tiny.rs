//! The smallest useful freestanding program: one `Vec`, one `write(2)`, no
//! formatting machinery. Its stripped size per architecture is a published
//! figure (`cargo xtask size`).
//!
//! Run: `cargo xtask run --example tiny [--arch aarch64|riscv64]`
//! (prints `tiny: ok`).

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use nolibc_alloc::{entry, rt, NolibcAlloc};

#[global_allocator]
static ALLOC: NolibcAlloc = NolibcAlloc::new();

entry!(main);

fn main() -> i32 {
    let mut line = Vec::new();
    line.extend_from_slice(b"tiny: ");
    line.extend_from_slice(b"ok\n");
    rt::write_all(1, &line);
    0
}

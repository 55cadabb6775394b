//! The `tiny` program (examples/tiny.rs of nolibc-alloc) with other
//! allocators: see the examples. Each holds its heap in a static arena of
//! [`ARENA_BYTES`], as `tiny_bump` does.

#![no_std]

extern crate alloc;

use alloc::vec::Vec;

/// Bytes of each example's static heap.
pub const ARENA_BYTES: usize = 64 << 10;

/// The body of `tiny`: one `Vec`, one `write(2)`. Inlined into each
/// example's `main`, as in `tiny`.
#[inline(always)]
pub fn tiny(name: &[u8]) -> i32 {
    let mut line = Vec::new();
    line.extend_from_slice(name);
    line.extend_from_slice(b": ok\n");
    nolibc_alloc::rt::write_all(1, &line);
    0
}

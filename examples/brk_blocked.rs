//! The break cannot grow: before its first allocation this program maps a page
//! right above the current break (`MAP_FIXED_NOREPLACE` at the page-rounded
//! `brk(0)`), so `brk` fails from the start. It then allocates 100 000 blocks
//! of 64 bytes, checks their contents, and checks that none of them lies in
//! the brk segment (between the initial and the current break) or on the
//! blocking page, that the page is intact, and that the allocator's own
//! counters (`stats().brk_bytes`) report nothing from brk: the allocator must
//! fall back to mmap regions instead of failing.
//!
//! Run: `cargo xtask run --example brk_blocked [--arch aarch64|riscv64]`
//! (ends with `brk_blocked: ok`).

#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;

use nolibc_alloc::{entry, os, println, sys, NolibcAlloc};

#[global_allocator]
static ALLOC: NolibcAlloc = NolibcAlloc::new();

entry!(main);

const BLOCKS: usize = 100_000;
const BLOCK_BYTES: usize = 64;
const BLOCKER_FILL: u8 = 0xb1;

fn fill(i: usize) -> u8 {
    (i % 253) as u8
}

fn main() -> i32 {
    let page = os::page_size();
    // SAFETY: brk(0) only reads the break.
    let brk_start = unsafe { sys::kernel_brk(0) };
    let at = (brk_start + page - 1) & !(page - 1);
    // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping: the range is free
    // (and becomes ours) or the call fails.
    let blocker =
        match unsafe { sys::mmap_anon(at, page, sys::PROT_RW, sys::MAP_PRIVATE_ANON | sys::MAP_FIXED_NOREPLACE) } {
            Ok(addr) if addr == at => addr,
            Ok(addr) => {
                println!(
                    "FAILED: MAP_FIXED_NOREPLACE at {:#x} gave {:#x} (kernel older than 4.17?)",
                    at, addr
                );
                return 1;
            }
            Err(e) => {
                println!("FAILED: cannot map a page at the break {:#x}: {:?}", at, e);
                return 1;
            }
        };
    // SAFETY: the page was just mapped read-write for us alone.
    unsafe { core::ptr::write_bytes(blocker as *mut u8, BLOCKER_FILL, page) };
    println!("page size: {}", page);
    println!(
        "initial break: {:#x}; blocking page mapped at {:#x}",
        brk_start, blocker
    );

    // The premise: the break cannot grow past the blocking page.
    // SAFETY: on failure brk returns the old break and changes nothing; if it
    // succeeded the memory above `at` would be the kernel's to explain.
    let tried = unsafe { sys::kernel_brk(at + page) };
    if tried == at + page {
        println!("FAILED: brk grew over the blocking page");
        return 1;
    }

    let mut blocks: Vec<Box<[u8; BLOCK_BYTES]>> = Vec::with_capacity(BLOCKS);
    for i in 0..BLOCKS {
        blocks.push(Box::new([fill(i); BLOCK_BYTES]));
    }
    let intact = blocks.iter().enumerate().all(|(i, b)| b.iter().all(|&x| x == fill(i)));

    // SAFETY: brk(0) only reads the break.
    let brk_now = unsafe { sys::kernel_brk(0) };
    let (mut in_brk, mut on_blocker, mut lowest, mut highest) = (0, 0, usize::MAX, 0);
    for b in &blocks {
        let start = b.as_ptr() as usize;
        let end = start + BLOCK_BYTES;
        if start < brk_now && end > brk_start {
            in_brk += 1;
        }
        if start < blocker + page && end > blocker {
            on_blocker += 1;
        }
        lowest = lowest.min(start);
        highest = highest.max(start);
    }
    // SAFETY: the blocking page is still ours (nothing may have unmapped it);
    // reading it checks nobody wrote over it.
    let blocker_intact = unsafe { core::slice::from_raw_parts(blocker as *const u8, page) }
        .iter()
        .all(|&x| x == BLOCKER_FILL);

    println!(
        "break now: {:#x} (moved {} bytes)",
        brk_now,
        brk_now.wrapping_sub(brk_start)
    );
    println!(
        "{} blocks of {} bytes, {:#x}..={:#x}: {} in the brk segment, {} on the blocking page",
        BLOCKS, BLOCK_BYTES, lowest, highest, in_brk, on_blocker
    );
    let stats = ALLOC.stats();
    println!(
        "allocator: {} bytes from brk, {} bytes mapped, {} bytes in use",
        stats.brk_bytes, stats.mapped_bytes, stats.in_use_bytes
    );

    let mut failed = false;
    for (ok, what) in [
        (intact, "block contents changed"),
        (in_brk == 0, "blocks inside the brk segment"),
        (on_blocker == 0, "blocks on the blocking page"),
        (blocker_intact, "blocking page overwritten"),
        (stats.brk_bytes == 0, "the allocator reports memory from brk"),
    ] {
        if !ok {
            println!("FAILED: {}", what);
            failed = true;
        }
    }
    drop(blocks);
    // SAFETY: our own mapping, no longer used.
    let _ = unsafe { sys::munmap(blocker, page) };
    if failed {
        return 1;
    }
    println!("all blocks came from mmap regions");
    println!("brk_blocked: ok");
    0
}

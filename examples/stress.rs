//! Stress in brk mode, on the real kernel: a seeded random sequence of
//! allocations, frees and reallocs (8 B to 512 KiB, alignments up to 4 KiB),
//! every block filled with a pattern that is checked on free and after
//! realloc, alignment and overlap checked. Then it checks what the
//! allocator did with the kernel: the break grew while memory was in use,
//! and once everything is freed and trimmed, the break is back where it
//! started and every mapping is gone.
//!
//! Run: `cargo xtask run --example stress [--arch aarch64|riscv64] [-- OPS]`
//! (ends with `stress: ok`).

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};

use nolibc_alloc::{entry, println, rt, sys, NolibcAlloc};

#[global_allocator]
static ALLOC: NolibcAlloc = NolibcAlloc::new();

entry!(main);

/// Live blocks at most.
const LIVE: usize = 2000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Block {
    ptr: *mut u8,
    layout: Layout,
    tag: u8,
}

/// Writes the pattern at the start and end of the block (and every 4 KiB).
fn fill(b: &Block) {
    for off in pattern_offsets(b.layout.size()) {
        // SAFETY: offsets are inside the block.
        unsafe { b.ptr.add(off).write(b.tag ^ off as u8) };
    }
}

/// Checks the pattern written for the block's layout, below `len` bytes.
fn check(b: &Block, len: usize) -> bool {
    pattern_offsets(b.layout.size()).filter(|&off| off < len).all(|off| {
        // SAFETY: offsets are inside the block (len <= its size).
        unsafe { b.ptr.add(off).read() == b.tag ^ off as u8 }
    })
}

fn pattern_offsets(len: usize) -> impl Iterator<Item = usize> {
    let head = 0..len.min(64);
    let tail = len.saturating_sub(64).max(64)..len;
    let pages = (4096..len).step_by(4096);
    head.chain(tail).chain(pages)
}

fn random_layout(rng: &mut Rng) -> Layout {
    let size = match rng.below(16) {
        0..=11 => 1 + rng.below(512),
        12..=14 => 1 + rng.below(64 << 10),
        _ => 1 + rng.below(512 << 10),
    } as usize;
    let wide = rng.below(8) == 0;
    let align = 1usize << rng.below(if wide { 13 } else { 4 });
    Layout::from_size_align(size, align).unwrap_or(Layout::new::<u8>())
}

fn main() -> i32 {
    let ops: usize = rt::args()
        .nth(1)
        .and_then(|a| core::str::from_utf8(a.to_bytes()).ok()?.parse().ok())
        .unwrap_or(200_000);
    // SAFETY: brk(0) only reads the break.
    let brk_start = unsafe { sys::kernel_brk(0) };
    let mut rng = Rng(0x5eed);
    let mut live: Vec<Block> = Vec::with_capacity(LIVE);
    let mut peak_brk = 0;
    let mut failures = 0;
    for op in 0..ops {
        let tag = op as u8;
        match rng.below(10) {
            0..=4 if live.len() < LIVE => {
                let layout = random_layout(&mut rng);
                // SAFETY: a non-zero layout.
                let ptr = unsafe { ALLOC.alloc(layout) };
                if ptr.is_null() || !(ptr as usize).is_multiple_of(layout.align()) {
                    println!("FAILED: op {op}: alloc {layout:?} gave {ptr:p}");
                    return 1;
                }
                let b = Block { ptr, layout, tag };
                fill(&b);
                live.push(b);
            }
            0..=7 if !live.is_empty() => {
                let b = live.swap_remove(rng.below(live.len() as u64) as usize);
                failures += !check(&b, b.layout.size()) as usize;
                // SAFETY: a live block with its layout.
                unsafe { ALLOC.dealloc(b.ptr, b.layout) };
            }
            _ if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                let new_size = random_layout(&mut rng).size();
                let b = &live[i];
                // SAFETY: a live block with its layout; the size is small.
                let ptr = unsafe { ALLOC.realloc(b.ptr, b.layout, new_size) };
                if ptr.is_null() || !(ptr as usize).is_multiple_of(b.layout.align()) {
                    println!("FAILED: op {op}: realloc to {new_size} gave {ptr:p}");
                    return 1;
                }
                let kept = b.layout.size().min(new_size);
                let moved = Block {
                    ptr,
                    layout: b.layout,
                    tag: b.tag,
                };
                failures += !check(&moved, kept) as usize;
                let layout = Layout::from_size_align(new_size, b.layout.align()).unwrap_or(b.layout);
                live[i] = Block { ptr, layout, tag };
                fill(&live[i]);
            }
            _ => {}
        }
        if op % 4096 == 0 {
            peak_brk = peak_brk.max(ALLOC.stats().brk_bytes);
            let mut ranges: Vec<(usize, usize)> = live
                .iter()
                .map(|b| (b.ptr as usize, b.ptr as usize + b.layout.size()))
                .collect();
            ranges.sort_unstable();
            if ranges.windows(2).any(|w| w[0].1 > w[1].0) {
                println!("FAILED: op {op}: two live blocks overlap");
                return 1;
            }
        }
    }
    for b in live.drain(..) {
        failures += !check(&b, b.layout.size()) as usize;
        // SAFETY: a live block with its layout.
        unsafe { ALLOC.dealloc(b.ptr, b.layout) };
    }
    drop(live);
    if failures > 0 {
        println!("FAILED: {failures} blocks lost their contents");
        return 1;
    }
    let busy = ALLOC.stats();
    let released = ALLOC.trim();
    let after = ALLOC.stats();
    // SAFETY: brk(0) only reads the break.
    let brk_end = unsafe { sys::kernel_brk(0) };
    println!("{ops} operations, contents and alignment verified");
    println!(
        "break: start {brk_start:#x}, grew to {} KiB from brk, back to {brk_end:#x} after trim",
        peak_brk >> 10
    );
    println!(
        "before trim: {} bytes from brk, {} mapped, {} in use; trim released {released} bytes",
        busy.brk_bytes, busy.mapped_bytes, busy.in_use_bytes
    );
    println!(
        "after trim: {} bytes from brk, {} mapped; syscalls: {} brk, {} mmap, {} munmap, {} mremap, {} madvise",
        after.brk_bytes,
        after.mapped_bytes,
        after.syscalls.brk,
        after.syscalls.mmap,
        after.syscalls.munmap,
        after.syscalls.mremap,
        after.syscalls.madvise
    );
    if peak_brk == 0 {
        println!("FAILED: the break never grew (brk mode expected on this target)");
        return 1;
    }
    if brk_end != brk_start || after.brk_bytes != 0 || after.mapped_bytes != 0 || after.in_use_bytes != 0 {
        println!("FAILED: memory not given back");
        return 1;
    }
    println!("stress: ok");
    0
}

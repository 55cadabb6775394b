//! The single-thread gate on the real kernel: the main thread skips the arena
//! lock while it is alone, and the first allocation from another thread
//! switches the process to locking without losing or corrupting anything.
//!
//! A test without libtest (`harness = false`): libtest would run the test on
//! a thread of its own, and the gate is about the process's main thread.

use std::alloc::{GlobalAlloc, Layout};

use nolibc_alloc::NolibcAlloc;

static ALLOC: NolibcAlloc = NolibcAlloc::new();

fn fill(p: *mut u8, len: usize, tag: u8) {
    // SAFETY: the block has `len` bytes.
    unsafe { std::ptr::write_bytes(p, tag, len) };
}

fn check(p: *const u8, len: usize, tag: u8) -> bool {
    // SAFETY: the block has `len` bytes.
    (0..len).all(|i| unsafe { *p.add(i) } == tag)
}

fn run() -> i32 {
    let layout = Layout::from_size_align(48, 8).unwrap();
    let mut mine = Vec::new();
    for i in 0..10_000u32 {
        // SAFETY: non-zero layout.
        let p = unsafe { ALLOC.alloc(layout) };
        fill(p, 48, i as u8);
        mine.push((p as usize, i as u8));
    }
    if !ALLOC.is_solo() {
        eprintln!("main thread alone but not in solo mode");
        return 2;
    }
    // Threads that allocate, free their own and the main thread's blocks,
    // while the main thread keeps going.
    let shared: Vec<(usize, u8)> = mine.split_off(5_000);
    let handles: Vec<_> = shared
        .chunks(1_250)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            std::thread::spawn(move || {
                let mut ok = true;
                for (n, &(p, tag)) in chunk.iter().enumerate() {
                    ok &= check(p as *const u8, 48, tag);
                    // SAFETY: blocks handed over by the main thread, freed once.
                    unsafe { ALLOC.dealloc(p as *mut u8, layout) };
                    // SAFETY: non-zero layout.
                    let q = unsafe { ALLOC.alloc(layout) };
                    fill(q, 48, n as u8);
                    ok &= check(q, 48, n as u8);
                    // SAFETY: just allocated.
                    unsafe { ALLOC.dealloc(q, layout) };
                }
                ok
            })
        })
        .collect();
    let mut ok = true;
    for round in 0..200_000u32 {
        let i = (round as usize * 7919) % mine.len();
        let (p, tag) = mine[i];
        ok &= check(p as *const u8, 48, tag);
        // SAFETY: a live block of the main thread.
        unsafe { ALLOC.dealloc(p as *mut u8, layout) };
        // SAFETY: non-zero layout.
        let q = unsafe { ALLOC.alloc(layout) };
        fill(q, 48, round as u8);
        mine[i] = (q as usize, round as u8);
    }
    for h in handles {
        ok &= h.join().unwrap();
    }
    if ALLOC.is_solo() {
        eprintln!("other threads allocated but the allocator is still in solo mode");
        return 3;
    }
    for &(p, tag) in &mine {
        ok &= check(p as *const u8, 48, tag);
        // SAFETY: live blocks, freed once.
        unsafe { ALLOC.dealloc(p as *mut u8, layout) };
    }
    ALLOC.validate();
    if !ok {
        eprintln!("contents corrupted");
        return 4;
    }
    if ALLOC.stats().in_use_bytes != 0 {
        eprintln!("bytes still in use: {}", ALLOC.stats().in_use_bytes);
        return 5;
    }
    println!("solo: ok");
    0
}

fn main() {
    let code = run();
    println!(
        "test result: {}. {} passed; {} failed",
        if code == 0 { "ok" } else { "FAILED" },
        (code == 0) as u8,
        (code != 0) as u8
    );
    std::process::exit(code);
}

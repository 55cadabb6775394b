//! Thread churn with a memory bound: 64 threads from `rt::thread::spawn`,
//! started and joined in waves of 8. Every thread allocates 2048 blocks
//! (16 B to 1 KiB, one in 64 of 64 KiB: about 3 MiB), frees half, hands the
//! rest to its neighbour in the wave (who checks and frees them) and ends.
//! Then 8 more threads are detached, 4 while running and 4 once finished.
//!
//! Checked: every block's contents; every stack unmapped once its thread
//! is joined or, detached, has ended; and the peak RSS. Live data never
//! exceeds what one wave allocates (8 threads x at most 4064 KiB, about
//! 24 MiB on average), so the peak RSS (VmHWM) may grow over the RSS at the
//! start by at most that worst case plus a quarter (class rounding, dirty
//! runs kept for reuse) plus 8 MiB (stacks, metadata): `BOUND_KIB` =
//! 47.7 MiB, whatever the number of waves. Memory kept for each exited
//! thread would grow it with every wave (8 waves: about 190 MiB). The RSS
//! is checked natively only: under qemu-user `/proc/self/status` describes
//! qemu, translated code and all. Then, after a `trim`, the bytes in use
//! must be back to (nearly) 0. Measured on x86_64: RSS grown by 38 to
//! 44 MiB with the thread heaps (also with 32 and 64 waves), 25 to 31 MiB
//! with the earlier locked arenas.
//!
//! Run: `cargo xtask run --example thread_waves [--arch aarch64|riscv64] [-- WAVES]`
//! (ends with `thread_waves: ok`).

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use nolibc_alloc::rt::thread;
use nolibc_alloc::{entry, os, println, rt, sys, NolibcAlloc};

#[global_allocator]
static ALLOC: NolibcAlloc = NolibcAlloc::new();

entry!(main);

/// Waves by default (the first argument sets another count).
const WAVES: usize = 8;
const PER_WAVE: usize = 8;
const BLOCKS: usize = 2048;
/// Bytes one thread allocates at most: 2048 blocks, one in 64 of 64 KiB,
/// the others of at most 1 KiB (4064 KiB; about 3 MiB on average).
const THREAD_BYTES: usize = (BLOCKS - BLOCKS / 64) * 1024 + BLOCKS / 64 * (64 << 10);
/// The bound on the growth of the peak RSS, in KiB: one wave's live data
/// at most, plus a quarter, plus 8 MiB.
const BOUND_KIB: usize = (PER_WAVE * THREAD_BYTES * 5 / 4 + (8 << 20)) >> 10;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A block filled with bytes that depend on its tag.
struct Block(Vec<u8>, u64);

impl Block {
    fn new(tag: u64, len: usize) -> Self {
        Block(
            (0..len).map(|i| (tag as usize).wrapping_add(i * 7) as u8).collect(),
            tag,
        )
    }

    fn ok(&self) -> bool {
        self.0
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (self.1 as usize).wrapping_add(i * 7) as u8)
    }
}

/// One mailbox per thread of a wave: the neighbour's half, handed over
/// once (a pointer to a leaked `Vec<Block>`, 0 while empty).
static MAILBOX: [AtomicUsize; PER_WAVE] = [const { AtomicUsize::new(0) }; PER_WAVE];

fn work(wave: usize, index: usize) -> (usize, usize) {
    let stack_marker = 0u8;
    let mut rng = Rng((wave * PER_WAVE + index) as u64);
    let mut mine: Vec<Block> = (0..BLOCKS)
        .map(|i| {
            let len = if i % 64 == 63 {
                64 << 10
            } else {
                16 + rng.next() as usize % 1009
            };
            Block::new(rng.next(), len)
        })
        .collect();
    assert!(
        mine.iter().all(Block::ok),
        "wave {wave} thread {index}: own block corrupted"
    );
    // Free every other block, hand the rest to the next thread.
    let mut i = 0;
    mine.retain(|_| {
        i += 1;
        i % 2 == 0
    });
    let parcel = alloc::boxed::Box::into_raw(alloc::boxed::Box::new(mine)) as usize;
    MAILBOX[(index + 1) % PER_WAVE].store(parcel, Ordering::Release);
    let got = loop {
        // Acquire: the parcel's contents, written by the neighbour.
        let p = MAILBOX[index].swap(0, Ordering::Acquire);
        if p != 0 {
            break p;
        }
        thread::yield_now();
    };
    // SAFETY: made by `Box::into_raw` in the neighbour, taken once.
    let got = unsafe { alloc::boxed::Box::from_raw(got as *mut Vec<Block>) };
    assert_eq!(got.len(), BLOCKS / 2);
    assert!(
        got.iter().all(Block::ok),
        "wave {wave} thread {index}: received block corrupted"
    );
    drop(got);
    (core::ptr::addr_of!(stack_marker) as usize, BLOCKS / 2)
}

/// Whether `addr` lies in a mapping, by `/proc/self/maps` (which qemu-user
/// emulates for the guest; a probe such as `madvise` is not checked there).
/// Reads into a stack buffer: allocating could map memory right there.
fn mapped(addr: usize) -> bool {
    let mut buf = [0u8; 32 << 10];
    let n = os::read_file(b"/proc/self/maps\0", &mut buf).expect("/proc/self/maps");
    assert!(n < buf.len(), "/proc/self/maps too long");
    let text = core::str::from_utf8(&buf[..n]).expect("UTF-8");
    text.lines().any(|line| {
        let range = line.split(' ').next().unwrap_or("");
        let mut ends = range.split('-').map(|h| usize::from_str_radix(h, 16).unwrap_or(0));
        let (lo, hi) = (ends.next().unwrap_or(0), ends.next().unwrap_or(0));
        lo <= addr && addr < hi
    })
}

/// `VmRSS` and `VmHWM` from `/proc/self/status`, in KiB, and whether they
/// are an emulator's: qemu-user passes the file through, so there it
/// describes qemu (`Name: qemu-aarch64`), translated code and all.
fn rss_kib() -> (usize, usize, bool) {
    let mut buf = [0u8; 4096];
    let n = os::read_file(b"/proc/self/status\0", &mut buf).expect("/proc/self/status");
    let text = core::str::from_utf8(&buf[..n]).expect("UTF-8");
    let field = |name: &str| -> Option<&str> { text.lines().find_map(|l| l.strip_prefix(name)).map(str::trim) };
    let kib = |name: &str| -> usize {
        field(name)
            .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
    };
    let emulated = field("Name:").is_some_and(|n| n.starts_with("qemu-"));
    (kib("VmRSS:"), kib("VmHWM:"), emulated)
}

/// Waits (yielding) until `done` holds; fails after 30 seconds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = sys::monotonic_ns();
    while !done() {
        assert!(
            sys::monotonic_ns() - start < 30_000_000_000,
            "timed out waiting until {what}"
        );
        thread::yield_now();
    }
}

/// Whether the runtime maps the stacks (not where a C library runs the
/// threads: glibc keeps a cache of stacks).
const OWN_STACKS: bool = cfg!(target_env = "");

static DETACHED_STACKS: [AtomicUsize; PER_WAVE] = [const { AtomicUsize::new(0) }; PER_WAVE];

fn main() -> i32 {
    let _ = sys::alarm(300);
    let (rss_start, _, _) = rss_kib();

    let mut handed = 0;
    let waves: usize = rt::args()
        .nth(1)
        .and_then(|a| a.to_str().ok()?.parse().ok())
        .unwrap_or(WAVES);
    for wave in 0..waves {
        let handles: Vec<_> = (0..PER_WAVE).map(|i| thread::spawn(move || work(wave, i))).collect();
        // All gone before any join, so that nothing maps memory between a
        // join's munmap and the check below.
        wait_until("a wave's threads have exited", || {
            handles.iter().all(|h| h.is_finished())
        });
        let results: Vec<(usize, usize)> = handles.into_iter().map(|h| h.join()).collect();
        for &(stack, n) in &results {
            assert!(
                !OWN_STACKS || !mapped(stack),
                "wave {wave}: a joined thread's stack is still mapped"
            );
            handed += n;
        }
    }
    println!(
        "waves: {} threads in {waves} waves of {PER_WAVE}, {BLOCKS} blocks each, {handed} handed to a neighbour",
        waves * PER_WAVE
    );

    // Detached: 4 handles dropped at once (the thread unmaps its own stack),
    // 4 dropped once the thread has finished (the drop unmaps it).
    let mut late = Vec::new();
    for (i, slot) in DETACHED_STACKS.iter().enumerate() {
        let h = thread::spawn(move || {
            let marker = 0u8;
            let v: Vec<u8> = (0..10_000).map(|b| b as u8).collect();
            slot.store(core::ptr::addr_of!(marker) as usize, Ordering::Release);
            v
        });
        if i % 2 == 0 {
            drop(h);
        } else {
            late.push(h);
        }
    }
    wait_until("detached threads have started", || {
        DETACHED_STACKS.iter().all(|s| s.load(Ordering::Acquire) != 0)
    });
    wait_until("late handles' threads have exited", || {
        late.iter().all(|h| h.is_finished())
    });
    drop(late);
    if OWN_STACKS {
        wait_until("detached threads have unmapped their stacks", || {
            DETACHED_STACKS.iter().all(|s| !mapped(s.load(Ordering::Acquire)))
        });
        println!("detached: {PER_WAVE} threads, every stack unmapped");
    } else {
        println!("detached: {PER_WAVE} threads (stacks are the C library's)");
    }

    let (rss_end, hwm, emulated) = rss_kib();
    let growth = hwm.saturating_sub(rss_start);
    let stats = ALLOC.stats();
    println!(
        "from the kernel: peak brk {} KiB, peak mapped {} KiB",
        stats.peak_brk_bytes >> 10,
        stats.peak_mapped_bytes >> 10
    );
    if emulated {
        println!("rss: {rss_start} KiB at the start, peak {hwm} KiB: the emulator's, not checked");
    } else {
        println!(
            "rss: {rss_start} KiB at the start, {rss_end} KiB at the end, peak {hwm} KiB: grew {growth} KiB (bound {BOUND_KIB} KiB)"
        );
        assert!(
            growth <= BOUND_KIB,
            "peak RSS grew by {growth} KiB, over the bound of {BOUND_KIB} KiB"
        );
    }
    // Blocks freed into the heaps of ended threads count until a heap is
    // tidied; `trim` tidies every heap no thread owns.
    let released = ALLOC.trim();
    let in_use = ALLOC.stats().in_use_bytes;
    let (rss_trimmed, _, _) = rss_kib();
    println!(
        "in use at the end: {in_use} bytes (trim gave back {} KiB; rss then {rss_trimmed} KiB)",
        released >> 10
    );
    assert!(
        in_use <= 64 << 10,
        "{in_use} bytes still in use after every block was freed"
    );
    println!("thread_waves: ok");
    0
}

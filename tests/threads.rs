//! Threads allocating, freeing and reallocating at once, with blocks freed by
//! another thread than the one that allocated them (passed through a shared
//! queue). Every block carries a pattern checked on realloc and on free.
//!
//! The operation count (alloc + realloc + dealloc calls, summed over threads)
//! is 10^7, also in debug builds (about 7 s of CPU there);
//! `NOLIBC_ALLOC_STRESS_OPS` overrides it.

#[macro_use]
mod support;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Instant;

use nolibc_alloc::NolibcAlloc;
use support::Rng;

#[global_allocator]
static GLOBAL: NolibcAlloc = NolibcAlloc::new();

const THREADS: usize = 8;
/// Blocks a thread keeps before it must free.
const LOCAL_MAX: usize = 256;
/// Blocks waiting in the shared queue before senders free instead.
const QUEUE_MAX: usize = 4096;
/// Blocks up to this size are patterned in full; above it, the first and the
/// last 64 bytes (enough to catch a block handed out twice or cut short).
const FULL_PATTERN_MAX: usize = 512;

/// A block in flight; `usize` so it can cross threads.
#[derive(Clone, Copy, Debug)]
struct Block {
    addr: usize,
    size: usize,
    align: usize,
    id: u64,
}

impl Block {
    fn layout(&self) -> Layout {
        Layout::from_size_align(self.size, self.align).unwrap()
    }
}

fn for_each_span(size: usize, mut f: impl FnMut(usize, usize)) {
    if size <= FULL_PATTERN_MAX {
        f(0, size);
    } else {
        f(0, 64);
        f(size - 64, size);
    }
}

fn fill(b: &Block) {
    for_each_span(b.size, |from, to| {
        // SAFETY: `b` is live and owned by the caller.
        unsafe { support::fill(b.addr as *mut u8, b.id, from, to) }
    });
}

fn verify(b: &Block, upto: usize, what: &str) {
    for_each_span(b.size, |from, to| {
        let to = to.min(upto);
        // SAFETY: `b` is live and owned by the caller.
        if let Some(at) = unsafe { support::check(b.addr as *const u8, b.id, from, to) } {
            panic!("{what}: block {b:x?} corrupted at offset {at}");
        }
    });
}

fn random_size(rng: &mut Rng) -> usize {
    match rng.below(1000) {
        0..=699 => rng.range(1, 128),
        700..=949 => rng.range(129, 4096),
        950..=995 => rng.range(4097, 64 << 10),
        _ => rng.range(64 << 10, 1 << 20),
    }
}

fn random_align(rng: &mut Rng) -> usize {
    if rng.chance(90) {
        1 << rng.below(4)
    } else {
        1 << rng.range(4, 12)
    }
}

struct Shared {
    queue: Mutex<Vec<Block>>,
    next_id: AtomicU64,
    ops: AtomicUsize,
    cross_frees: AtomicUsize,
}

fn alloc_block(shared: &Shared, rng: &mut Rng) -> Block {
    let (size, align) = (random_size(rng), random_align(rng));
    let layout = Layout::from_size_align(size, align).unwrap();
    // SAFETY: non-zero size, valid layout.
    let ptr = unsafe { GLOBAL.alloc(layout) };
    assert!(!ptr.is_null(), "alloc({size}, {align}) failed");
    assert_eq!(ptr as usize % align, 0, "alloc({size}, {align}) = {ptr:p} misaligned");
    let b = Block {
        addr: ptr as usize,
        size,
        align,
        id: shared.next_id.fetch_add(1, Ordering::Relaxed),
    };
    fill(&b);
    b
}

fn free_block(b: Block, what: &str) {
    verify(&b, usize::MAX, what);
    // SAFETY: a live block, freed once, with its layout.
    unsafe { GLOBAL.dealloc(b.addr as *mut u8, b.layout()) };
}

fn realloc_block(b: Block, rng: &mut Rng) -> Block {
    verify(&b, usize::MAX, "before realloc");
    let new_size = match rng.below(4) {
        0 => random_size(rng),
        1 => b.size * 2,
        2 => (b.size / 2).max(1),
        _ => b.size,
    };
    // SAFETY: a live block with its layout; new_size > 0 and small.
    let ptr = unsafe { GLOBAL.realloc(b.addr as *mut u8, b.layout(), new_size) };
    assert!(!ptr.is_null(), "realloc {b:x?} -> {new_size} failed");
    assert_eq!(
        ptr as usize % b.align,
        0,
        "realloc {b:x?} -> {new_size} = {ptr:p} misaligned"
    );
    let moved = Block {
        addr: ptr as usize,
        ..b
    };
    verify(&moved, new_size, "after realloc");
    let nb = Block {
        size: new_size,
        ..moved
    };
    fill(&nb);
    nb
}

/// One thread: `ops` allocator calls (alloc, dealloc or realloc).
fn worker(shared: &Shared, seed: u64, ops: usize) {
    let mut rng = Rng::new(seed);
    let mut local: Vec<Block> = Vec::with_capacity(LOCAL_MAX);
    let mut done = 0;
    let mut cross = 0;
    while done < ops {
        match rng.below(100) {
            0..=39 if local.len() < LOCAL_MAX => {
                local.push(alloc_block(shared, &mut rng));
                done += 1;
            }
            0..=69 if !local.is_empty() => {
                let i = rng.below(local.len());
                free_block(local.swap_remove(i), "free by owner");
                done += 1;
            }
            70..=84 if !local.is_empty() => {
                let i = rng.below(local.len());
                local[i] = realloc_block(local[i], &mut rng);
                done += 1;
            }
            85..=92 if !local.is_empty() => {
                // Hand a block to whichever thread takes it next.
                let i = rng.below(local.len());
                let b = local.swap_remove(i);
                let mut q = shared.queue.lock().unwrap();
                if q.len() < QUEUE_MAX {
                    q.push(b);
                } else {
                    drop(q);
                    free_block(b, "free by owner (queue full)");
                    done += 1;
                }
            }
            93..=99 => {
                // Take a few blocks from the queue; free most, adopt some
                // (realloc and free them here later).
                let taken: Vec<Block> = {
                    let mut q = shared.queue.lock().unwrap();
                    let n = q.len().min(8);
                    let at = q.len() - n;
                    q.drain(at..).collect()
                };
                for b in taken {
                    if rng.chance(25) && local.len() < LOCAL_MAX {
                        local.push(realloc_block(b, &mut rng));
                    } else {
                        free_block(b, "free by another thread");
                    }
                    done += 1;
                    cross += 1;
                }
            }
            _ => {}
        }
    }
    for b in local {
        free_block(b, "final free");
        done += 1;
    }
    shared.ops.fetch_add(done, Ordering::Relaxed);
    shared.cross_frees.fetch_add(cross, Ordering::Relaxed);
}

fn stress_ops() -> usize {
    match std::env::var("NOLIBC_ALLOC_STRESS_OPS") {
        Ok(v) => v.parse().expect("NOLIBC_ALLOC_STRESS_OPS: a number"),
        Err(_) => 10_000_000,
    }
}

#[test]
fn threads_cross_free_stress() {
    let total = stress_ops();
    let shared = Shared {
        queue: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(1),
        ops: AtomicUsize::new(0),
        cross_frees: AtomicUsize::new(0),
    };
    let start = Barrier::new(THREADS);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (shared, start) = (&shared, &start);
            s.spawn(move || {
                start.wait();
                worker(shared, 0x7EAD_0000 + t as u64, total / THREADS);
            });
        }
    });
    let left = std::mem::take(&mut *shared.queue.lock().unwrap());
    let mut ops = shared.ops.load(Ordering::Relaxed);
    for b in left {
        free_block(b, "free of a queued block");
        ops += 1;
    }
    let cross = shared.cross_frees.load(Ordering::Relaxed);
    eprintln!(
        "threads: {THREADS} threads, {ops} allocator calls ({cross} on blocks from another thread) in {:.2?}",
        t0.elapsed()
    );
    assert!(ops >= total, "only {ops} of {total} operations ran");
    assert!(cross > total / 100, "too few cross-thread frees: {cross}");
    assert!(
        GLOBAL.heaps_claimed() >= 2,
        "threads with a thread pointer get heaps of their own"
    );
}

/// Threads that only free what others allocated: a producer/consumer ring
/// where every free is remote.
#[test]
fn threads_producer_consumer() {
    let per_thread = stress_ops() / 10 / THREADS;
    let queues: Vec<Mutex<Vec<Block>>> = (0..THREADS).map(|_| Mutex::new(Vec::new())).collect();
    let shared = Shared {
        queue: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(1),
        ops: AtomicUsize::new(0),
        cross_frees: AtomicUsize::new(0),
    };
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (queues, shared) = (&queues, &shared);
            s.spawn(move || {
                let mut rng = Rng::new(0xC0DE + t as u64);
                let (mine, next) = (&queues[t], &queues[(t + 1) % THREADS]);
                let mut freed = 0;
                for i in 0..per_thread {
                    let b = alloc_block(shared, &mut rng);
                    next.lock().unwrap().push(b);
                    if i % 16 == 15 {
                        let got = std::mem::take(&mut *mine.lock().unwrap());
                        for b in got {
                            free_block(b, "free by the consumer");
                            freed += 1;
                        }
                    }
                }
                shared.cross_frees.fetch_add(freed, Ordering::Relaxed);
            });
        }
    });
    let mut freed = shared.cross_frees.load(Ordering::Relaxed);
    for q in &queues {
        for b in std::mem::take(&mut *q.lock().unwrap()) {
            free_block(b, "final free");
            freed += 1;
        }
    }
    assert_eq!(freed, per_thread * THREADS);
}

/// Peak resident set of the process (`VmHWM`), in KiB.
fn peak_rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 10,000 short-lived threads in waves of 8, each allocating a few hundred
/// KiB, freeing half and handing the rest to the next wave: the heaps of
/// ended threads are reused (same thread pointer) or adopted, so memory
/// stays bounded. Bound: the peak RSS grows by less than 64 MiB over the
/// first wave's (one wave holds about 8 x 256 KiB live; without reuse, 10,000
/// heaps' runs would need gigabytes).
#[test]
fn ten_thousand_threads_stay_bounded() {
    const WAVES: usize = 1250;
    const WAVE: usize = 8;
    let l = Layout::from_size_align(512, 16).unwrap();
    let mut handed: Vec<usize> = Vec::new();
    let mut first_wave_rss = 0;
    for wave in 0..WAVES {
        let take = std::mem::take(&mut handed);
        let chunks: Vec<Vec<usize>> = (0..WAVE)
            .map(|i| take.iter().skip(i).step_by(WAVE).copied().collect())
            .collect();
        let results: Vec<Vec<usize>> = std::thread::scope(|s| {
            let hs: Vec<_> = chunks
                .into_iter()
                .map(|old| {
                    s.spawn(move || {
                        for p in old {
                            // SAFETY: a live block of layout `l` handed over by the last wave.
                            unsafe { GLOBAL.dealloc(p as *mut u8, l) };
                        }
                        let mut mine: Vec<usize> = (0..512)
                            .map(|_| {
                                // SAFETY: non-zero layout.
                                let p = unsafe { GLOBAL.alloc(l) };
                                assert!(!p.is_null());
                                // SAFETY: a fresh block of 512 bytes.
                                unsafe { p.write_bytes(0x5a, 512) };
                                p as usize
                            })
                            .collect();
                        for p in mine.drain(..256) {
                            // SAFETY: allocated above, freed once.
                            unsafe { GLOBAL.dealloc(p as *mut u8, l) };
                        }
                        mine
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        handed = results.into_iter().flatten().collect();
        if wave == 0 {
            first_wave_rss = peak_rss_kib();
        }
    }
    for p in handed {
        // SAFETY: live blocks of layout `l`.
        unsafe { GLOBAL.dealloc(p as *mut u8, l) };
    }
    let grown = peak_rss_kib().saturating_sub(first_wave_rss);
    let claimed = GLOBAL.heaps_claimed();
    eprintln!(
        "threads: 10000 threads in waves of 8: peak RSS grew {grown} KiB after the first wave, {claimed} heaps claimed"
    );
    assert!(grown < 64 << 10, "peak RSS grew by {grown} KiB over 10,000 threads");
    // The heaps of ended threads are found again (the C library reuses
    // thread blocks) or adopted, not left behind while the table fills.
    assert!(claimed <= 3 * WAVE, "{claimed} heaps claimed by at most 8 live threads");
}

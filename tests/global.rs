//! `NolibcAlloc` as the `#[global_allocator]` of this test binary, so libtest,
//! the shadow model and everything std does here allocate through it too.
//!
//! The model test drives the allocator with a long seeded random sequence of
//! alloc / alloc_zeroed / realloc / dealloc and checks every answer against a
//! shadow of the live blocks: no two live blocks overlap, every pointer has its
//! alignment, every block keeps the pattern written into it, realloc keeps
//! min(old, new) bytes, and alloc_zeroed is all zero even on reused memory.
//!
//! Seeds and op counts: `NOLIBC_ALLOC_SEED` and `NOLIBC_ALLOC_MODEL_OPS`
//! override them (a failure message names the seed and the op to replay).

#[macro_use]
mod support;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashMap};

use nolibc_alloc::NolibcAlloc;
use support::Rng;

#[global_allocator]
static GLOBAL: NolibcAlloc = NolibcAlloc::new();

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Sizes right at the edges the tiers care about: page multiples, the default
/// mmap threshold (128 KiB) and its neighbours.
const EDGE_SIZES: &[usize] = &[
    0,
    1,
    8,
    16,
    4095,
    4096,
    4097,
    8191,
    8192,
    3 * 4096,
    65535,
    65536,
    128 * KIB - 1,
    128 * KIB,
    128 * KIB + 1,
    128 * KIB + 4096,
    256 * KIB,
    MIB - 1,
    MIB,
    MIB + 1,
    4 * MIB - 1,
    4 * MIB,
];

fn random_size(rng: &mut Rng) -> usize {
    match rng.below(1000) {
        0..=599 => rng.skewed(256),
        600..=849 => rng.range(257, 8 * KIB),
        850..=949 => rng.range(8 * KIB + 1, 160 * KIB),
        950..=989 => EDGE_SIZES[rng.below(EDGE_SIZES.len())],
        _ => rng.range(160 * KIB, 4 * MIB),
    }
}

fn random_align(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=79 => 1 << rng.below(5),      // 1..=16
        80..=95 => 1 << rng.range(5, 12), // 32..=4096
        _ => 1 << rng.range(13, 16),      // 8 KiB..=64 KiB
    }
}

/// Calls `f(from, to)` for the parts of a block of `size` bytes that carry a
/// pattern. Debug builds check blocks above 16 KiB sparsely (first and last
/// 4 KiB, 64 bytes of every page between) to stay fast; release builds check
/// every byte.
fn for_each_span(size: usize, mut f: impl FnMut(usize, usize)) {
    const SPARSE_ABOVE: usize = 16 * KIB;
    if !cfg!(debug_assertions) || size <= SPARSE_ABOVE {
        f(0, size);
        return;
    }
    f(0, 4096);
    let mut at = 4096;
    while at + 4096 < size - 4096 {
        f(at, at + 64);
        at += 4096;
    }
    f(size - 4096, size);
}

struct Block {
    ptr: *mut u8,
    size: usize,
    align: usize,
    id: u64,
}

/// The shadow: live blocks, and their address ranges for the overlap check.
struct Model {
    seed: u64,
    op: usize,
    blocks: Vec<Block>,
    /// start -> end of every live block; a zero-size block counts as one byte.
    ranges: BTreeMap<usize, usize>,
    live_bytes: usize,
    next_id: u64,
}

impl Model {
    fn new(seed: u64) -> Self {
        Model {
            seed,
            op: 0,
            blocks: Vec::new(),
            ranges: BTreeMap::new(),
            live_bytes: 0,
            next_id: 1,
        }
    }

    fn ctx(&self) -> String {
        format!("seed {:#x}, op {}", self.seed, self.op)
    }

    fn claim(&mut self, ptr: *mut u8, size: usize, align: usize) {
        let start = ptr as usize;
        assert!(!ptr.is_null(), "{}: null for size {size} align {align}", self.ctx());
        assert_eq!(
            start % align,
            0,
            "{}: {ptr:p} not aligned to {align} (size {size})",
            self.ctx()
        );
        let end = start + size.max(1);
        if let Some((&s, &e)) = self.ranges.range(..end).next_back() {
            assert!(
                e <= start,
                "{}: new block {start:#x}..{end:#x} (size {size}) overlaps live {s:#x}..{e:#x}",
                self.ctx()
            );
        }
        self.ranges.insert(start, end);
    }

    fn release(&mut self, ptr: *mut u8) {
        self.ranges.remove(&(ptr as usize)).expect("shadow lost a block");
    }

    /// Checks the pattern of `b` within its first `upto` bytes.
    fn verify(&self, b: &Block, upto: usize, what: &str) {
        for_each_span(b.size, |from, to| {
            let to = to.min(upto);
            // SAFETY: the block is live and at least `to` bytes long.
            if let Some(at) = unsafe { support::check(b.ptr, b.id, from, to) } {
                panic!(
                    "{}: {what}: block {:p} (size {}, align {}, id {}) corrupted at offset {at}",
                    self.ctx(),
                    b.ptr,
                    b.size,
                    b.align,
                    b.id
                );
            }
        });
    }

    fn alloc(&mut self, rng: &mut Rng, zeroed: bool) {
        let size = random_size(rng);
        let align = random_align(rng);
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a valid layout (size 0 included: we promise a unique pointer).
        let ptr = unsafe {
            if zeroed {
                GLOBAL.alloc_zeroed(layout)
            } else {
                GLOBAL.alloc(layout)
            }
        };
        self.claim(ptr, size, align);
        let b = Block {
            ptr,
            size,
            align,
            id: self.next_id,
        };
        self.next_id += 1;
        if zeroed {
            // SAFETY: a live block of `size` bytes.
            if let Some(at) = unsafe { support::first_nonzero(ptr, size) } {
                panic!(
                    "{}: alloc_zeroed({size}, {align}) = {ptr:p} has a non-zero byte at {at}",
                    self.ctx()
                );
            }
        }
        for_each_span(size, |from, to| {
            // SAFETY: a live block of `size` bytes.
            unsafe { support::fill(ptr, b.id, from, to) }
        });
        self.live_bytes += size;
        self.blocks.push(b);
    }

    fn free(&mut self, i: usize) {
        let b = self.blocks.swap_remove(i);
        self.verify(&b, usize::MAX, "before free");
        self.release(b.ptr);
        self.live_bytes -= b.size;
        // SAFETY: a live block, freed once, with its own layout.
        unsafe { GLOBAL.dealloc(b.ptr, Layout::from_size_align(b.size, b.align).unwrap()) };
    }

    fn realloc(&mut self, rng: &mut Rng, i: usize) {
        let old = &self.blocks[i];
        let new_size = match rng.below(10) {
            0..=3 => random_size(rng),
            4 => old.size,
            5 => old.size * 2 + 1,
            6 => old.size / 2,
            7 => old.size + 1,
            8 => old.size.saturating_sub(1),
            _ => old.size + rng.range(1, 64 * KIB),
        }
        .clamp(1, 4 * MIB);
        self.verify(old, usize::MAX, "before realloc");
        let (old_ptr, old_size, align, id) = (old.ptr, old.size, old.align, old.id);
        let layout = Layout::from_size_align(old_size, align).unwrap();
        // SAFETY: a live block with its layout; new_size > 0 and small.
        let ptr = unsafe { GLOBAL.realloc(old_ptr, layout, new_size) };
        assert!(
            !ptr.is_null(),
            "{}: realloc {old_size} -> {new_size} (align {align}) failed",
            self.ctx()
        );
        self.release(old_ptr);
        self.claim(ptr, new_size, align);
        let old_block = Block {
            ptr,
            size: old_size,
            align,
            id,
        };
        self.verify(
            &old_block,
            new_size,
            &format!("after realloc {old_size} -> {new_size} from {old_ptr:p}"),
        );
        // Sparse spans depend on the size: refill all of them (same bytes
        // where the pattern survived); full spans only need the new tail.
        let keep = if cfg!(debug_assertions) { 0 } else { old_size };
        for_each_span(new_size, |from, to| {
            let from = from.max(keep);
            if from < to {
                // SAFETY: a live block of `new_size` bytes.
                unsafe { support::fill(ptr, id, from, to) }
            }
        });
        let b = Block {
            ptr,
            size: new_size,
            align,
            id,
        };
        self.live_bytes = self.live_bytes - old_size + new_size;
        self.blocks[i] = b;
    }

    fn free_all(&mut self) {
        while !self.blocks.is_empty() {
            self.free(self.blocks.len() - 1);
        }
        assert!(self.ranges.is_empty());
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .strip_prefix("0x")
            .map_or_else(|| v.parse(), |h| u64::from_str_radix(h, 16))
            .unwrap_or_else(|_| panic!("bad {name}: {v}")),
        Err(_) => default,
    }
}

/// Runs `ops` random operations from `seed`, then frees everything.
fn run_model(seed: u64, ops: usize) {
    const MAX_LIVE: usize = 1500;
    const MAX_LIVE_BYTES: usize = 64 * MIB;
    let mut rng = Rng::new(seed);
    let mut m = Model::new(seed);
    while m.op < ops {
        m.op += 1;
        let n = m.blocks.len();
        let must_free = n >= MAX_LIVE || m.live_bytes >= MAX_LIVE_BYTES;
        match rng.below(1000) {
            _ if must_free => m.free(rng.below(n)),
            0..=319 => m.alloc(&mut rng, false),
            320..=419 => m.alloc(&mut rng, true),
            420..=719 if n > 0 => m.free(rng.below(n)),
            720..=989 if n > 0 => {
                let i = rng.below(n);
                m.realloc(&mut rng, i)
            }
            990..=997 if n > 0 => {
                // A burst: free a random share of everything, so runs and
                // regions empty out and reach the OS again.
                let keep = rng.below(n + 1);
                while m.blocks.len() > keep {
                    let i = rng.below(m.blocks.len());
                    m.free(i);
                }
            }
            998 | 999 => {
                GLOBAL.trim();
            }
            _ => m.alloc(&mut rng, false),
        }
    }
    m.free_all();
}

fn model_ops() -> usize {
    let default = if cfg!(debug_assertions) { 150_000 } else { 1_000_000 };
    env_or("NOLIBC_ALLOC_MODEL_OPS", default) as usize
}

#[test]
fn model_seed_1() {
    run_model(env_or("NOLIBC_ALLOC_SEED", 0x1), model_ops());
}

#[test]
fn model_seed_2() {
    run_model(env_or("NOLIBC_ALLOC_SEED", 0x5EED_0002), model_ops());
}

#[test]
fn model_seed_3() {
    run_model(env_or("NOLIBC_ALLOC_SEED", 0xC0FF_EE03), model_ops());
}

/// alloc_zeroed must zero memory that was just freed dirty, in every tier.
#[test]
fn zeroed_reuses_dirty_memory() {
    for &size in &[
        1,
        8,
        24,
        100,
        512,
        1000,
        4096,
        5000,
        40_000,
        128 * KIB - 1,
        128 * KIB,
        300 * KIB,
        2 * MIB,
    ] {
        for &align in &[1, 16, 4096] {
            let layout = Layout::from_size_align(size, align).unwrap();
            let count = if size > 64 * KIB { 4 } else { 64 };
            let mut ptrs = Vec::with_capacity(count);
            for _ in 0..count {
                // SAFETY: a valid non-zero layout.
                let p = unsafe { GLOBAL.alloc(layout) };
                assert!(!p.is_null());
                // SAFETY: p is a live block of `size` bytes.
                unsafe { p.write_bytes(0xFF, size) };
                ptrs.push(p);
            }
            for p in ptrs.drain(..) {
                // SAFETY: freed once, with its layout.
                unsafe { GLOBAL.dealloc(p, layout) };
            }
            for _ in 0..count {
                // SAFETY: a valid non-zero layout.
                let p = unsafe { GLOBAL.alloc_zeroed(layout) };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                // SAFETY: a live block of `size` bytes.
                let bad = unsafe { support::first_nonzero(p, size) };
                assert_eq!(bad, None, "alloc_zeroed({size}, {align}) = {p:p} not zero");
                // SAFETY: as above; dirty it for the next round.
                unsafe { p.write_bytes(0xFF, size) };
                ptrs.push(p);
            }
            for p in ptrs.drain(..) {
                // SAFETY: freed once, with its layout.
                unsafe { GLOBAL.dealloc(p, layout) };
            }
        }
    }
}

trait Shape {
    fn area(&self) -> u64;
}
struct Rect(u64, u64);
struct Square(u64);
impl Shape for Rect {
    fn area(&self) -> u64 {
        self.0 * self.1
    }
}
impl Shape for Square {
    fn area(&self) -> u64 {
        self.0 * self.0
    }
}

#[test]
fn std_collections_smoke() {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..300_000u64 {
        v.push(i * 3);
    }
    assert_eq!(v.iter().sum::<u64>(), 3 * (299_999 * 300_000 / 2));
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v, (0..10).map(|i| i * 3).collect::<Vec<_>>());

    let mut bytes: Vec<u8> = Vec::new();
    for i in 0..(24 * MIB / 4096) {
        bytes.extend(std::iter::repeat_n(i as u8, 4096));
    }
    assert!(bytes
        .chunks(4096)
        .enumerate()
        .all(|(i, c)| c.iter().all(|&b| b == i as u8)));
    drop(bytes);

    let mut s = String::new();
    for i in 0..20_000 {
        s.push_str(&i.to_string());
        s.push(',');
    }
    assert!(s.starts_with("0,1,2,3,"));
    assert_eq!(s.split(',').filter(|x| !x.is_empty()).count(), 20_000);

    let mut bt = BTreeMap::new();
    let mut hm = HashMap::new();
    for i in 0..50_000u32 {
        bt.insert(i.wrapping_mul(2_654_435_761), format!("v{i}"));
        hm.insert(format!("k{i}"), vec![i; (i % 17) as usize]);
    }
    for i in (0..50_000u32).step_by(2) {
        bt.remove(&i.wrapping_mul(2_654_435_761));
        hm.remove(&format!("k{i}"));
    }
    assert_eq!(bt.len(), 25_000);
    assert_eq!(hm.len(), 25_000);
    for i in (1..50_000u32).step_by(2) {
        assert_eq!(bt[&i.wrapping_mul(2_654_435_761)], format!("v{i}"));
        assert_eq!(hm[&format!("k{i}")], vec![i; (i % 17) as usize]);
    }

    let shapes: Vec<Box<dyn Shape>> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                Box::new(Rect(i, 2)) as Box<dyn Shape>
            } else {
                Box::new(Square(i))
            }
        })
        .collect();
    let total: u64 = shapes.iter().map(|s| s.area()).sum();
    let want: u64 = (0..1000u64).map(|i| if i % 2 == 0 { i * 2 } else { i * i }).sum();
    assert_eq!(total, want);

    let big: Box<[u8; 1 << 20]> = vec![7u8; 1 << 20].into_boxed_slice().try_into().unwrap();
    assert!(big.iter().all(|&b| b == 7));

    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                (0..10_000)
                    .map(|i| vec![t as u8; i % 100])
                    .map(|v| v.len())
                    .sum::<usize>()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 100 * (99 * 100 / 2));
    }
}

/// The counters see what this test holds (other tests run concurrently, so
/// only lower bounds hold).
#[test]
fn stats_track_live_bytes() {
    let held: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 * KIB]).collect();
    let big = vec![1u8; 8 * MIB];
    let s = GLOBAL.stats();
    let live = 64 * 64 * KIB + 8 * MIB;
    assert!(
        s.in_use_bytes >= live,
        "in_use_bytes {} < {live} held here: {s:?}",
        s.in_use_bytes
    );
    assert!(
        s.mapped_bytes + s.brk_bytes >= s.in_use_bytes,
        "mapped {} + brk {} < in use {}: {s:?}",
        s.mapped_bytes,
        s.brk_bytes,
        s.in_use_bytes
    );
    drop((held, big));
}

//! Unit tests of every tier on the fake source, with the invariant walk after
//! each step. They also run under Miri (`cargo +nightly miri test --lib`).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use std::vec::Vec;

use crate::class::{CLASSES, MAX_CLASS_BYTES};
use crate::fake::FakeSource;
use crate::{Config, NolibcAlloc};

/// Buffer size of the fake: small under Miri, which is slow.
const BUF: usize = if cfg!(miri) { 48 << 20 } else { 256 << 20 };

struct Arena {
    mem: NonNull<u8>,
    layout: Layout,
}

impl Arena {
    fn new(bytes: usize) -> Self {
        // Aligned as the largest runs: the first mapping is (see `first_blocks`).
        let layout = Layout::from_size_align(bytes, 1 << 20).unwrap();
        // SAFETY: non-zero size.
        let mem = NonNull::new(unsafe { std::alloc::alloc(layout) }).unwrap();
        Arena { mem, layout }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.mem.as_ptr(), self.layout) }
    }
}

fn with_alloc(config: Config, brk_bytes: usize, page: usize, f: impl FnOnce(&NolibcAlloc<FakeSource>)) {
    with_alloc_at(0, config, brk_bytes, page, f)
}

/// [`with_alloc`] over the buffer past its first `skip` bytes (the buffer
/// itself is aligned to 1 MiB).
fn with_alloc_at(skip: usize, config: Config, brk_bytes: usize, page: usize, f: impl FnOnce(&NolibcAlloc<FakeSource>)) {
    let arena = Arena::new(BUF);
    // SAFETY: the buffer (past `skip`) outlives the allocator, which is dropped inside.
    let source = unsafe {
        let mem = NonNull::new_unchecked(arena.mem.as_ptr().add(skip));
        FakeSource::new(mem, BUF - skip, brk_bytes.min(BUF / 2), page)
    };
    {
        let alloc = NolibcAlloc::with_source(source, config);
        f(&alloc);
    }
    drop(arena);
}

fn brk_config() -> Config {
    Config::new().use_brk(true)
}

fn mmap_config() -> Config {
    Config::new().use_brk(false)
}

fn fill(p: *mut u8, len: usize, seed: u8) {
    for i in 0..len {
        // SAFETY: the block has `len` bytes.
        unsafe { p.add(i).write(seed.wrapping_add(i as u8)) };
    }
}

fn verify(p: *const u8, len: usize, seed: u8) {
    for i in 0..len {
        // SAFETY: the block has `len` bytes.
        assert_eq!(unsafe { p.add(i).read() }, seed.wrapping_add(i as u8), "byte {i}");
    }
}

#[test]
fn small_slots_are_distinct_aligned_and_reused() {
    with_alloc(brk_config(), 64 << 20, 4096, |a| {
        let layout = Layout::from_size_align(24, 8).unwrap();
        let mut ptrs = Vec::new();
        for i in 0..300 {
            // SAFETY: non-zero layout.
            let p = unsafe { a.alloc(layout) };
            assert!(!p.is_null());
            assert_eq!(p as usize % 8, 0);
            fill(p, 24, i as u8);
            ptrs.push(p);
            a.validate();
        }
        for (i, &p) in ptrs.iter().enumerate() {
            verify(p, 24, i as u8);
        }
        let mut sorted = ptrs.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ptrs.len());
        for &p in &ptrs[..150] {
            // SAFETY: allocated above with this layout.
            unsafe { a.dealloc(p, layout) };
            a.validate();
        }
        // Freed slots are reused before fresh ones.
        // SAFETY: non-zero layout.
        let again = unsafe { a.alloc(layout) };
        assert!(ptrs[..150].contains(&again));
        assert_eq!(a.stats().in_use_bytes, 151 * 32);
        // Slots come from the brk segment.
        assert!(a.source().brk_bytes() > 0);
        assert_eq!(a.source().mapped_bytes(), 0);
    });
}

#[test]
fn every_class_and_alignment_round_trips() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        let step = if cfg!(miri) { 8 } else { 1 };
        for c in (0..CLASSES.len()).step_by(step) {
            let size = CLASSES[c].size as usize;
            for align in [1usize, 8, 16, 64, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero layout.
                let p = unsafe { a.alloc(layout) };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                fill(p, size.min(64), c as u8);
                verify(p, size.min(64), c as u8);
                // SAFETY: allocated above.
                unsafe { a.dealloc(p, layout) };
            }
        }
        a.validate();
        assert_eq!(a.stats().in_use_bytes, 0);
    });
}

#[test]
fn empty_runs_and_regions_go_back() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        let layout = Layout::from_size_align(4000, 8).unwrap();
        let n = if cfg!(miri) { 200 } else { 3000 };
        let ptrs: Vec<_> = (0..n)
            .map(|_| {
                // SAFETY: non-zero layout.
                let p = unsafe { a.alloc(layout) };
                assert!(!p.is_null());
                p
            })
            .collect();
        let peak = a.source().mapped_bytes();
        assert!(peak >= n * 4000);
        for p in ptrs {
            // SAFETY: allocated above.
            unsafe { a.dealloc(p, layout) };
        }
        a.validate();
        assert_eq!(a.stats().in_use_bytes, 0);
        a.trim();
        // Regions holding nothing but dirty runs went back whole: no run
        // was discarded (madvise) one by one on the way.
        assert_eq!(a.stats().syscalls.madvise, 0);
        a.validate();
        assert!(a.region_count() <= 1);
        assert!(
            a.source().mapped_bytes() <= crate::medium::FIRST_REGION_BYTES,
            "{}",
            a.source().mapped_bytes()
        );
    });
}

#[test]
fn brk_region_grows_and_comes_back_down() {
    with_alloc(brk_config(), 128 << 20, 4096, |a| {
        let layout = Layout::from_size_align(100_000, 16).unwrap();
        let n = if cfg!(miri) { 20 } else { 200 };
        let ptrs: Vec<_> = (0..n)
            .map(|_| {
                // SAFETY: non-zero layout.
                unsafe { a.alloc(layout) }
            })
            .collect();
        assert!(ptrs.iter().all(|p| !p.is_null()));
        let grown = a.source().brk_bytes();
        assert!(grown >= n * 100_000, "brk grew to {grown}");
        assert_eq!(a.source().mapped_bytes(), 0);
        for p in ptrs {
            // SAFETY: allocated above.
            unsafe { a.dealloc(p, layout) };
        }
        a.trim();
        a.validate();
        assert_eq!(a.source().brk_bytes(), 0, "the break came back down");
        assert_eq!(a.stats().brk_bytes, 0);
    });
}

#[test]
fn brk_failure_falls_back_to_mmap_regions() {
    with_alloc(brk_config(), 64 << 20, 4096, |a| {
        a.source().set_brk_limit(0); // a mapping sits right above the break
        let layout = Layout::from_size_align(64, 8).unwrap();
        let n = if cfg!(miri) { 100 } else { 20_000 };
        for _ in 0..n {
            // SAFETY: non-zero layout.
            assert!(!unsafe { a.alloc(layout) }.is_null());
        }
        assert_eq!(a.source().brk_bytes(), 0);
        assert!(a.source().mapped_bytes() >= n * 64);
        let s = a.stats();
        assert_eq!(s.syscalls.brk, 1, "brk is not retried after it failed");
        a.validate();
    });
}

#[test]
fn out_of_memory_returns_null_and_recovers() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        let big = Layout::from_size_align(BUF / 2, 16).unwrap();
        // SAFETY: non-zero layouts.
        unsafe {
            let p = a.alloc(big);
            assert!(!p.is_null());
            assert!(a.alloc(big).is_null(), "second half-buffer block cannot fit");
            a.dealloc(p, big);
            let q = a.alloc(big);
            assert!(!q.is_null(), "works again after a free");
            a.dealloc(q, big);
        }
        // The Nth call fails: every tier returns null, nothing breaks.
        for n in 0..3 {
            a.source().fail_nth(n);
            let mut got = Vec::new();
            for size in [16usize, 5000, 40_000, 300_000] {
                let l = Layout::from_size_align(size, 16).unwrap();
                // SAFETY: non-zero layout.
                let p = unsafe { a.alloc(l) };
                if !p.is_null() {
                    got.push((p, l));
                }
            }
            a.validate();
            for (p, l) in got {
                // SAFETY: allocated above.
                unsafe { a.dealloc(p, l) };
            }
        }
        a.validate();
    });
}

#[test]
fn large_blocks_map_remap_and_adapt() {
    for cache in [false, true] {
        let config = if cache {
            mmap_config()
        } else {
            mmap_config().map_cache(0, 0)
        };
        large_blocks_map_remap(config, cache);
    }
}

fn large_blocks_map_remap(config: Config, cache: bool) {
    with_alloc(config, 0, 4096, |a| {
        let l = Layout::from_size_align(200_000, 16).unwrap();
        // Something stays live: freeing the large block is no end of a burst.
        let keep = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: non-zero layout.
        let k = unsafe { a.alloc(keep) };
        let mapped = a.stats().mapped_bytes;
        // SAFETY: non-zero layouts; blocks used within their sizes.
        unsafe {
            let p = a.alloc_zeroed(l);
            assert!(!p.is_null());
            verify_zero(p, 200_000);
            fill(p, 200_000, 7);
            let q = a.realloc(p, l, 2_000_000);
            assert!(!q.is_null());
            verify(q, 200_000, 7);
            // Growth by small steps reserves room: the second step needs no call.
            let q = a.realloc(q, Layout::from_size_align(2_000_000, 16).unwrap(), 2_004_096);
            let calls = a.stats().syscalls.mremap;
            let r = a.realloc(q, Layout::from_size_align(2_004_096, 16).unwrap(), 2_008_192);
            assert_eq!(a.stats().syscalls.mremap, calls);
            verify(r, 200_000, 7);
            a.dealloc(r, Layout::from_size_align(2_008_192, 16).unwrap());
        }
        // Without a cache the threshold rises after a large free (the block,
        // with its room for growth, is below the 4 MiB cap of 32-bit targets);
        // with one,
        // large blocks keep their own mappings, cached for the next one.
        assert_eq!(a.mmap_threshold() > 128 << 10, !cache, "threshold");
        assert_eq!(a.stats().mapped_bytes > mapped, cache, "cached mapping");
        // SAFETY: allocated above.
        unsafe { a.dealloc(k, keep) };
        assert_eq!(a.stats().in_use_bytes, 0);
        a.validate();
    });
}

fn verify_zero(p: *const u8, len: usize) {
    for i in (0..len).step_by(if cfg!(miri) { 997 } else { 1 }) {
        // SAFETY: the block has `len` bytes.
        assert_eq!(unsafe { p.add(i).read() }, 0, "byte {i}");
    }
}

#[test]
fn over_aligned_blocks() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        for align in [8192usize, 65536, 1 << 20] {
            for size in [1usize, 100, 150_000] {
                let l = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero layout.
                let p = unsafe { a.alloc(l) };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                fill(p, size.min(256), 3);
                // SAFETY: allocated above.
                unsafe { a.dealloc(p, l) };
            }
        }
        assert_eq!(a.stats().in_use_bytes, 0);
        a.validate();
    });
}

#[test]
fn realloc_in_place_and_moving_keeps_contents() {
    with_alloc(brk_config(), 64 << 20, 4096, |a| {
        let mut size = 1usize;
        let mut layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: non-zero layout.
        let mut p = unsafe { a.alloc(layout) };
        fill(p, size, 1);
        let top = if cfg!(miri) { 300_000 } else { 3_000_000 };
        while size < top {
            let new = size * 3 / 2 + 1;
            // SAFETY: p is live with `layout`.
            p = unsafe { a.realloc(p, layout, new) };
            assert!(!p.is_null());
            verify(p, size.min(4096), 1);
            fill(p, new.min(4096), 1);
            size = new;
            layout = Layout::from_size_align(size, 8).unwrap();
            a.validate();
        }
        while size > 1 {
            let new = size / 3;
            // SAFETY: p is live with `layout`.
            p = unsafe { a.realloc(p, layout, new.max(1)) };
            size = new.max(1);
            verify(p, size.min(4096), 1);
            layout = Layout::from_size_align(size, 8).unwrap();
        }
        // SAFETY: p is live.
        unsafe { a.dealloc(p, layout) };
        a.validate();
        assert_eq!(a.stats().in_use_bytes, 0);
    });
}

#[test]
fn sixty_four_k_pages() {
    with_alloc(brk_config(), 64 << 20, 65536, |a| {
        let mut v = Vec::new();
        for size in [8usize, 1000, 70_000, 131_072, 1 << 20] {
            let l = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: non-zero layout.
            let p = unsafe { a.alloc(l) };
            assert!(!p.is_null());
            fill(p, size.min(512), 9);
            v.push((p, l));
        }
        for (p, l) in v {
            verify(p, l.size().min(512), 9);
            // SAFETY: allocated above.
            unsafe { a.dealloc(p, l) };
        }
        a.validate();
    });
}

#[test]
#[should_panic(expected = "nolibc-alloc: dealloc: double free")]
fn double_free_of_a_slot_is_caught() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        let l = Layout::from_size_align(48, 8).unwrap();
        // SAFETY: the second free is the misuse under test; it stops before harm.
        unsafe {
            let keep = a.alloc(l);
            let p = a.alloc(l);
            a.dealloc(p, l);
            a.dealloc(p, l);
            a.dealloc(keep, l);
        }
    });
}

#[test]
#[should_panic(expected = "nolibc-alloc: dealloc: double free")]
fn double_free_of_a_medium_block_is_caught() {
    with_alloc(mmap_config().mmap_threshold(1 << 20), 0, 4096, |a| {
        let l = Layout::from_size_align(300_000, 8).unwrap();
        // SAFETY: the second free is the misuse under test.
        unsafe {
            let keep = a.alloc(l);
            let p = a.alloc(l);
            a.dealloc(p, l);
            a.dealloc(p, l);
            a.dealloc(keep, l);
        }
    });
}

#[test]
#[should_panic(expected = "nolibc-alloc: dealloc: invalid pointer")]
fn interior_pointer_is_caught() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        let l = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: the bad free is the misuse under test.
        unsafe {
            let p = a.alloc(l);
            a.dealloc(p.add(8), l);
        }
    });
}

/// A slot-aligned pointer past the slots a run has carved (its memory
/// holds no free marker, so only the bound on carved slots catches it).
#[test]
#[should_panic(expected = "nolibc-alloc: dealloc: invalid pointer")]
fn never_carved_slot_is_caught() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        a.spend_first_blocks();
        let l = Layout::from_size_align(32, 8).unwrap();
        // SAFETY: the bad free is the misuse under test.
        unsafe {
            let p = a.alloc(l);
            let q = a.alloc(l);
            assert_eq!(q as usize - p as usize, 32, "consecutive slots of a fresh run");
            // A fresh run carves 16 slots of 32 bytes at first: slot 40 is not one.
            a.dealloc(p.add(40 * 32), l);
        }
    });
}

/// A 16-byte-aligned pointer into a run's header, below slot 0.
#[test]
#[should_panic(expected = "nolibc-alloc: dealloc: invalid pointer")]
fn pointer_into_a_run_header_is_caught() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        a.spend_first_blocks();
        let l = Layout::from_size_align(32, 8).unwrap();
        // SAFETY: the bad free is the misuse under test.
        unsafe {
            let p = a.alloc(l);
            let run_start = p.wrapping_sub(p as usize & (crate::class::RUN_BYTES_SMALL - 1));
            a.dealloc(run_start.add(16), l);
        }
    });
}

#[test]
#[should_panic(expected = "nolibc-alloc: dealloc: wrong layout")]
fn wrong_class_is_caught() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        let l = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: the bad free is the misuse under test.
        unsafe {
            let p = a.alloc(l);
            a.dealloc(p, Layout::from_size_align(4096, 8).unwrap());
        }
    });
}

/// A small deterministic PRNG (splitmix64).
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

/// Random operations against a shadow model: contents, alignment, no overlap.
fn model_run(a: &NolibcAlloc<FakeSource>, steps: usize, seed: u64) {
    let mut rng = Rng(seed);
    let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
    for step in 0..steps {
        let op = rng.below(10);
        if (op < 5 || live.is_empty()) && live.len() < 300 {
            let size = match rng.below(10) {
                0..=6 => 1 + rng.below(600) as usize,
                7 | 8 => 1 + rng.below(MAX_CLASS_BYTES as u64 + 1000) as usize,
                // Under Miri the fake's buffer is small.
                _ => 1 + rng.below(if cfg!(miri) { 300_000 } else { 2 << 20 }) as usize,
            };
            let wide = rng.below(8) == 0;
            let align = 1usize << rng.below(if wide { 17 } else { 5 });
            let layout = Layout::from_size_align(size, align).unwrap();
            let zero = rng.below(4) == 0;
            // SAFETY: non-zero layout.
            let p = unsafe {
                if zero {
                    a.alloc_zeroed(layout)
                } else {
                    a.alloc(layout)
                }
            };
            assert!(!p.is_null(), "step {step}: OOM for {layout:?}");
            assert_eq!(p as usize % align, 0);
            if zero {
                verify_zero(p, size.min(2048));
            }
            let tag = step as u8;
            fill(p, size.min(2048), tag);
            live.push((p, layout, tag));
        } else if op < 8 {
            let i = rng.below(live.len() as u64) as usize;
            let (p, layout, tag) = live.swap_remove(i);
            verify(p, layout.size().min(2048), tag);
            // SAFETY: live block with its layout.
            unsafe { a.dealloc(p, layout) };
        } else {
            let i = rng.below(live.len() as u64) as usize;
            let (p, layout, tag) = live[i];
            let new_size = match rng.below(3) {
                0 => layout.size(),
                1 => 1 + rng.below(layout.size() as u64) as usize,
                _ => layout.size() + 1 + rng.below(if cfg!(miri) { 100_000 } else { 300_000 }) as usize,
            };
            // SAFETY: live block with its layout.
            let q = unsafe { a.realloc(p, layout, new_size) };
            assert!(
                !q.is_null(),
                "step {step}: realloc {layout:?} to {new_size}: {:?} fake mapped {} brk {}",
                a.stats(),
                a.source().mapped_bytes(),
                a.source().brk_bytes()
            );
            assert_eq!(q as usize % layout.align(), 0);
            verify(q, layout.size().min(new_size).min(2048), tag);
            let new_layout = Layout::from_size_align(new_size, layout.align()).unwrap();
            fill(q, new_size.min(2048), tag);
            live[i] = (q, new_layout, tag);
        }
        // No two live blocks overlap.
        if step % 64 == 0 || cfg!(miri) {
            let mut ranges: Vec<_> = live.iter().map(|&(p, l, _)| (p.addr(), p.addr() + l.size())).collect();
            ranges.sort();
            for w in ranges.windows(2) {
                assert!(w[0].1 <= w[1].0, "step {step}: overlap {:x?}", w);
            }
            a.validate();
        }
    }
    for (p, layout, tag) in live {
        verify(p, layout.size().min(2048), tag);
        // SAFETY: live block with its layout.
        unsafe { a.dealloc(p, layout) };
    }
    a.validate();
    assert_eq!(a.stats().in_use_bytes, 0);
}

#[test]
fn model_random_ops_brk() {
    with_alloc(brk_config(), 96 << 20, 4096, |a| {
        model_run(a, if cfg!(miri) { 300 } else { 20_000 }, 1)
    });
}

#[test]
fn model_random_ops_mmap() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        model_run(a, if cfg!(miri) { 300 } else { 20_000 }, 2)
    });
}

#[test]
fn model_random_ops_fixed_threshold_64k_pages() {
    with_alloc(brk_config().mmap_threshold(64 << 10), 96 << 20, 65536, |a| {
        model_run(a, if cfg!(miri) { 200 } else { 10_000 }, 3)
    });
}

#[test]
fn unsized_entry_points_find_every_tier() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        let cases = [
            (1usize, 16usize),
            (24, 16),
            (5000, 16),
            (40_000, 16),
            (120_000, 16),
            (300_000, 16),
            (100, 8192),
            (200_000, 1 << 16),
        ];
        for (size, align) in cases {
            let l = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero layout; the block is used within its size and
            // freed once, through the unsized entry points.
            unsafe {
                let p = a.alloc(l);
                assert!(!p.is_null());
                let usable = a.usable_size_unsized(NonNull::new(p).unwrap());
                assert!(usable >= size, "usable {usable} < {size}");
                assert_eq!(usable, a.usable_size(NonNull::new(p).unwrap(), l));
                fill(p, size.min(4096), 5);
                let q = a.realloc_unsized(NonNull::new(p).unwrap(), size * 3, 16);
                assert!(!q.is_null());
                verify(q, size.min(4096), 5);
                let q = a.realloc_unsized(NonNull::new(q).unwrap(), size / 2 + 1, 16);
                verify(q, (size / 2 + 1).min(4096), 5);
                a.free_unsized(NonNull::new(q).unwrap());
            }
            a.validate();
        }
        assert_eq!(a.stats().in_use_bytes, 0);
    });
}

#[test]
fn unsized_realloc_honours_a_larger_alignment() {
    for threshold in [128 << 10, 1 << 20] {
        with_alloc(mmap_config().mmap_threshold(threshold), 0, 4096, |a| {
            // SAFETY: a live block, reallocated once and freed once.
            unsafe {
                let p = a.alloc(Layout::from_size_align(200_000, 16).unwrap());
                let q = a.realloc_unsized(NonNull::new(p).unwrap(), 200_000, 64);
                assert_eq!(q as usize % 64, 0, "threshold {threshold}");
                a.free_unsized(NonNull::new(q).unwrap());
            }
        });
    }
}

#[test]
#[should_panic(expected = "nolibc-alloc: free(): double free of 0x")]
fn unsized_double_free_is_caught() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        // SAFETY: the second free is the misuse under test.
        unsafe {
            let keep = a.alloc(Layout::from_size_align(40, 16).unwrap());
            let p = NonNull::new(a.alloc(Layout::from_size_align(40, 16).unwrap())).unwrap();
            a.free_unsized(p);
            a.free_unsized(p);
            a.free_unsized(NonNull::new(keep).unwrap());
        }
    });
}

/// A policy for the mapping cache's own tests.
fn policy(floor_bytes: usize, percent: usize, age_events: usize) -> crate::map_cache::Policy {
    crate::map_cache::Policy {
        floor_bytes,
        percent,
        age_events,
        page: 4096,
    }
}

#[test]
fn map_cache_merges_splits_bounds_and_ages() {
    use crate::map_cache::{Evicted, MapCache};
    let arena = Arena::new(4 << 20);
    let at = |off: usize| NonNull::new(arena.mem.as_ptr().wrapping_add(off)).unwrap();
    let mut c = MapCache::new();
    let p = policy(1 << 20, 0, 8);
    let mut out = Evicted::new();
    c.add_live(3 << 18);
    // SAFETY: the cache only does arithmetic on these addresses.
    unsafe {
        c.put(at(0), 1 << 18, &p, &mut out);
        c.put(at(2 << 18), 1 << 18, &p, &mut out);
        // Fills the gap: the three merge into one span.
        c.put(at(1 << 18), 1 << 18, &p, &mut out);
    }
    assert_eq!((out.n, c.bytes(), c.live()), (0, 3 << 18, 0));
    c.validate(4096);
    // A small block splits the span; the rest stays.
    let (q, len) = c.take(64 << 10, &p, &mut out).unwrap();
    assert_eq!((q, len, c.bytes()), (at(0), 64 << 10, (3 << 18) - (64 << 10)));
    // Growth in place takes the front of the span right after the block.
    assert_eq!(
        c.take_after(at(64 << 10).as_ptr(), 4096, 128 << 10, &p, &mut out),
        Some(128 << 10)
    );
    assert_eq!(c.take_after(at(1 << 21).as_ptr(), 4096, 4096, &p, &mut out), None);
    // SAFETY: as above.
    unsafe { c.put(at(0), 192 << 10, &p, &mut out) };
    assert_eq!(c.bytes(), 3 << 18);
    // Beyond the bound (the 1 MiB floor), the oldest span's tail goes.
    c.add_live(1 << 19);
    // SAFETY: as above.
    unsafe { c.put(at(2 << 20), 1 << 19, &p, &mut out) };
    assert_eq!(c.bytes(), 1 << 20);
    assert_eq!(
        out.iter().map(|(_, l)| l).sum::<usize>(),
        (3 << 18) + (1 << 19) - (1 << 20)
    );
    c.validate(4096);
    // Untouched for `age_events` events, every span goes.
    let mut out = Evicted::new();
    for _ in 0..8 {
        assert!(c.take(8 << 20, &p, &mut out).is_none());
    }
    assert_eq!((c.bytes(), out.iter().map(|(_, l)| l).sum::<usize>()), (0, 1 << 20));
    c.validate(4096);
}

#[test]
fn map_cache_takes_the_smallest_fit_and_evicts_the_oldest() {
    use crate::map_cache::{Evicted, MapCache};
    let arena = Arena::new(4 << 20);
    let at = |off: usize| NonNull::new(arena.mem.as_ptr().wrapping_add(off)).unwrap();
    let (k, mut out) = (1usize << 10, Evicted::new());
    // Spans apart from each other (no merging), no ageing.
    let p = policy(4 << 20, 0, 1000);
    let mut c = MapCache::new();
    c.add_live(384 * k);
    // SAFETY: the cache only does arithmetic on these addresses.
    unsafe {
        c.put(at(0), 256 * k, &p, &mut out);
        c.put(at(1 << 20), 128 * k, &p, &mut out);
    }
    // The smallest span that fits, split (64 KiB are left).
    assert_eq!(c.take(64 * k, &p, &mut out), Some((at(1 << 20), 64 * k)));
    // The largest span, whole.
    assert_eq!(c.take_largest(), Some((at(0), 256 * k)));
    c.validate(4096);
    // Bound 256 KiB: a third span of 128 KiB evicts the oldest one.
    let p = policy(256 * k, 0, 1000);
    let mut c = MapCache::new();
    c.add_live(384 * k);
    // SAFETY: as above.
    unsafe {
        c.put(at(0), 128 * k, &p, &mut out);
        c.put(at(1 << 20), 128 * k, &p, &mut out);
        c.put(at(2 << 20), 128 * k, &p, &mut out);
    }
    assert_eq!(out.iter().collect::<Vec<_>>(), [(at(0), 128 * k)]);
    c.validate(4096);
}

#[test]
fn map_cache_reuses_mappings_and_zeroes_them() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        let keep = Layout::from_size_align(64, 8).unwrap();
        let l = Layout::from_size_align(1 << 20, 16).unwrap();
        // SAFETY: non-zero layouts; blocks used within their sizes.
        unsafe {
            let k = a.alloc(keep);
            let p = a.alloc(l);
            fill(p, 1 << 20, 9);
            a.dealloc(p, l);
            a.validate();
            let maps = a.stats().syscalls.mmap;
            let q = a.alloc_zeroed(l);
            assert_eq!(q, p, "the cached mapping is reused");
            assert_eq!(a.stats().syscalls.mmap, maps, "no new mapping");
            verify_zero(q, 1 << 20);
            // Growth takes the cached rest of nothing: a fresh span after a
            // shrink. Shrinking gives the tail to the cache, growing takes it back.
            let r = a.realloc(q, l, 200 << 10);
            assert_eq!(r, q);
            let calls = a.stats().syscalls;
            let s = a.realloc(r, Layout::from_size_align(200 << 10, 16).unwrap(), 900 << 10);
            assert_eq!(s, q, "grown in place into the cached tail");
            assert_eq!(a.stats().syscalls, calls, "no system call");
            a.dealloc(s, Layout::from_size_align(900 << 10, 16).unwrap());
            a.validate();
            assert!(a.trim() >= 1 << 20);
            assert_eq!(a.core.lock().maps.bytes(), 0, "trim empties the cache");
            a.dealloc(k, keep);
        }
        a.validate();
    });
}

#[test]
fn map_cache_bound_and_decay_return_memory() {
    for page in [4096, 65536] {
        map_cache_bound_and_decay(page);
    }
}

fn map_cache_bound_and_decay(page: usize) {
    let config = mmap_config().map_cache(1 << 20, 100).map_cache_age(64);
    with_alloc(config, 0, page, |a| {
        let keep = Layout::from_size_align(64, 8).unwrap();
        let big = Layout::from_size_align(6 << 20, 16).unwrap();
        let small = Layout::from_size_align(200 << 10, 16).unwrap();
        // SAFETY: non-zero layouts.
        unsafe {
            let k = a.alloc(keep);
            let p = a.alloc(big);
            a.dealloc(p, big);
            // Within 100 % of the recent peak: kept.
            assert!(a.core.lock().maps.bytes() >= 5 << 20);
            a.validate();
            // Churn of small large blocks: the peak decays towards what is
            // live, and the cache with it, down to the floor.
            for _ in 0..if cfg!(miri) { 200 } else { 1000 } {
                let q = a.alloc(small);
                assert!(!q.is_null());
                a.dealloc(q, small);
                a.validate();
            }
            let cached = a.core.lock().maps.bytes();
            assert!(cached <= 1 << 20, "decayed to the floor: {cached}");
            a.dealloc(k, keep);
        }
        a.validate();
    });
}

#[test]
fn mmap_threshold_set_at_run_time() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        let half = Layout::from_size_align(512 << 10, 16).unwrap();
        let big = Layout::from_size_align(2 << 20, 16).unwrap();
        // SAFETY: non-zero layouts; each block freed once with its layout.
        unsafe {
            assert!(a.set_mmap_threshold(1 << 20));
            assert!(!a.config().adaptive_threshold);
            // Below the threshold: a medium block, exactly the size asked.
            let p = NonNull::new(a.alloc(half)).unwrap();
            assert_eq!(a.usable_size(p, half), 512 << 10);
            // A large free no longer raises the threshold.
            let q = a.alloc(big);
            a.dealloc(q, big);
            assert_eq!(a.mmap_threshold(), 1 << 20);
            a.dealloc(p.as_ptr(), half);

            assert!(a.set_mmap_threshold(256 << 10));
            // Now a mapping of its own: page rounding shows in the usable size.
            let p = NonNull::new(a.alloc(half)).unwrap();
            assert!(a.usable_size(p, half) >= (512 << 10) + 2048);
            a.dealloc(p.as_ptr(), half);

            assert!(!a.set_mmap_threshold(64 << 20), "above the 32 MiB cap");
            // The cap is 4 MiB where words are 32 bits (`MAX_MMAP_THRESHOLD_BYTES`).
            let cap = if cfg!(target_pointer_width = "64") {
                32 << 20
            } else {
                4 << 20
            };
            assert!(!a.set_mmap_threshold(cap + 4096), "above the cap");
            assert_eq!(a.mmap_threshold(), 256 << 10);
            assert!(a.set_mmap_threshold(cap), "at the cap");
            assert_eq!(a.mmap_threshold(), cap);
            assert!(a.set_mmap_threshold(256 << 10));
            // Below the configured threshold the small tier keeps its sizes.
            assert!(a.set_mmap_threshold(4096));
            assert_eq!(a.mmap_threshold(), 128 << 10);
            let small = Layout::from_size_align(100_000, 16).unwrap();
            let p = NonNull::new(a.alloc(small)).unwrap();
            assert_eq!(
                a.usable_size(p, small),
                CLASSES[crate::class::class_for(100_000, 16).unwrap()].size as usize
            );
            a.dealloc(p.as_ptr(), small);
        }
        assert_eq!(a.stats().in_use_bytes, 0);
        a.validate();
    });
}

#[test]
fn trim_threshold_set_at_run_time() {
    // The last region, once empty, stays mapped unless the trim threshold is 0.
    for (bytes, kept) in [(1 << 20, true), (0, false), (usize::MAX, true)] {
        with_alloc(mmap_config(), 0, 4096, |a| {
            a.set_trim_threshold(bytes);
            assert_eq!(a.config().trim_threshold, bytes);
            assert!(a.set_mmap_threshold(1 << 20));
            let layout = Layout::from_size_align(512 << 10, 16).unwrap();
            // SAFETY: a non-zero layout; the block is freed once.
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                a.dealloc(p, layout);
            }
            a.validate();
            assert_eq!(a.source().mapped_bytes() > 0, kept, "trim threshold {bytes}");
        });
    }
}

/// The fork hooks (`fork_prepare` / `fork_parent` / `fork_child`): prepare
/// holds every lock, parent releases them, and after the child hook the
/// allocator works on from the state it had, blocks allocated before the
/// "fork" included.
#[test]
fn fork_hooks_hold_every_lock_and_reset_in_the_child() {
    // A fixed threshold above the classes: blocks of 200 KiB are medium.
    let config = Config::new().use_brk(false).mmap_threshold(1 << 20);
    with_alloc(config, 0, 4096, |a| {
        let sizes = [24usize, 700, 5000, 100 << 10, 200 << 10, 2 << 20];
        let blocks: Vec<(*mut u8, Layout)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let layout = Layout::from_size_align(size, 16).unwrap();
                // SAFETY: non-zero layout.
                let p = unsafe { a.alloc(layout) };
                assert!(!p.is_null());
                fill(p, size.min(2048), i as u8);
                (p, layout)
            })
            .collect();

        // Between prepare and parent every lock is held (another thread
        // could not get in; the fake source is not `Sync`, so no thread here).
        let all_free = |a: &NolibcAlloc<FakeSource>| {
            a.core.try_lock().is_some() && a.arenas.iter().all(|m| m.try_lock().is_some())
        };
        let none_free = |a: &NolibcAlloc<FakeSource>| {
            a.core.try_lock().is_none() && a.arenas.iter().all(|m| m.try_lock().is_none())
        };
        assert!(all_free(a));
        a.fork_prepare();
        assert!(none_free(a), "fork_prepare left a lock free");
        a.fork_parent();
        assert!(all_free(a), "fork_parent left a lock held");
        a.validate();

        // The "child": every lock free again, one thread, the same blocks.
        a.fork_prepare();
        a.fork_child();
        assert!(all_free(a), "fork_child left a lock held");
        for (i, &(p, layout)) in blocks.iter().enumerate() {
            verify(p, layout.size().min(2048), i as u8);
            // SAFETY: live blocks with their layouts, freed once.
            unsafe { a.dealloc(p, layout) };
        }
        for &size in &sizes {
            let layout = Layout::from_size_align(size, 16).unwrap();
            // SAFETY: non-zero layout.
            let p = unsafe { a.alloc(layout) };
            assert!(!p.is_null());
            fill(p, size.min(2048), 7);
            // SAFETY: just allocated with this layout.
            unsafe { a.dealloc(p, layout) };
        }
        a.validate();
        assert_eq!(a.stats().in_use_bytes, 0);
    });
}

#[test]
fn the_first_small_blocks_share_a_page_and_then_runs_take_over() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        // Eight classes, one block each (what xtask/peers/c/rss.c allocates).
        let sizes = [8usize, 24, 40, 72, 136, 264, 520, 1000];
        let mut blocks = std::vec::Vec::new();
        // SAFETY: every block is used within its size and freed once.
        unsafe {
            for (i, &size) in sizes.iter().enumerate() {
                let l = Layout::from_size_align(size, 8).unwrap();
                let p = a.alloc(l);
                assert!(!p.is_null());
                fill(p, size, i as u8);
                blocks.push((p, l));
            }
            assert_eq!(a.validate(), 0, "no slot of a run is in use yet");
            let lo = blocks.iter().map(|(p, _)| *p as usize).min().unwrap();
            let hi = blocks.iter().map(|(p, l)| *p as usize + l.size()).max().unwrap();
            assert!(hi - lo <= 4096, "the eight blocks lie within {} bytes", hi - lo);
            assert_eq!(a.source().mapped_bytes(), crate::medium::FIRST_BLOCKS_REGION_BYTES);
            let (p, l) = blocks[2];
            assert_eq!(a.usable_size(NonNull::new(p).unwrap(), l), 48);
            assert_eq!(a.usable_size_unsized(NonNull::new(p).unwrap()), 48);
            // Into another class: moved, contents kept.
            let q = a.realloc(p, l, 100);
            assert!(!q.is_null());
            for i in 0..40 {
                assert_eq!(*q.add(i), 2u8.wrapping_add(i as u8));
            }
            blocks[2] = (q, Layout::from_size_align(100, 8).unwrap());
            // Freed with their layouts, and without (C's free).
            for (i, &(p, l)) in blocks.iter().enumerate() {
                if i % 2 == 0 {
                    a.dealloc(p, l);
                } else {
                    a.free_unsized(NonNull::new(p).unwrap());
                }
            }
            a.validate();
            assert_eq!(a.stats().in_use_bytes, 0);
            // The budget (a page, headers included) spent, runs take over.
            let l = Layout::from_size_align(48, 8).unwrap();
            let mut n = 0;
            let mut more = std::vec::Vec::new();
            while a.validate() == 0 {
                more.push(a.alloc(l));
                n += 1;
                assert!(
                    n <= crate::first_blocks::FIRST_BLOCK_BUDGET / 80 + 1,
                    "runs took over after {n}"
                );
            }
            assert!(n > 8, "the budget served only {n} blocks");
            for p in more {
                a.dealloc(p, l);
            }
            a.validate();
            assert_eq!(a.stats().in_use_bytes, 0);
        }
    });
}

#[test]
#[should_panic(expected = "nolibc-alloc: dealloc: double free of 0x")]
fn a_first_block_freed_twice_is_caught() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        let l = Layout::from_size_align(24, 8).unwrap();
        // SAFETY: the second free is the misuse under test.
        unsafe {
            let keep = a.alloc(l);
            let p = a.alloc(l);
            a.dealloc(p, l);
            a.dealloc(p, l);
            a.dealloc(keep, l);
        }
    });
}

#[test]
#[should_panic(expected = "nolibc-alloc: dealloc: wrong layout")]
fn a_first_block_freed_with_another_class_is_caught() {
    with_alloc(mmap_config(), 0, 4096, |a| {
        // SAFETY: the bad free is the misuse under test.
        unsafe {
            let p = a.alloc(Layout::from_size_align(64, 8).unwrap());
            a.dealloc(p, Layout::from_size_align(48, 8).unwrap());
        }
    });
}

#[test]
fn the_first_region_is_aligned_where_the_mapping_is_not() {
    // The fake's mappings start 64 KiB past a 1 MiB boundary: the first
    // region is mapped with room and trimmed at both ends.
    with_alloc_at(64 << 10, mmap_config(), 0, 4096, |a| {
        let l = Layout::from_size_align(40, 8).unwrap();
        // SAFETY: allocated and freed once with its layout.
        unsafe {
            let p = a.alloc(l);
            assert!(!p.is_null());
            assert_eq!(a.validate(), 0, "a first block, not a slot");
            assert_eq!(
                p as usize & !((1 << 20) - 1),
                p as usize & !0xfff,
                "in the aligned region's first page"
            );
            assert_eq!(a.source().mapped_bytes(), crate::medium::FIRST_BLOCKS_REGION_BYTES);
            a.dealloc(p, l);
        }
        a.validate();
        assert_eq!(a.stats().in_use_bytes, 0);
    });
}

//! Requests at the edges of what `Layout` allows, through `GlobalAlloc` on
//! `NolibcAlloc` instances with several configurations: sizes no address
//! space can hold (null, never a crash, and a failed realloc leaves the old
//! block intact), alignments from 1 byte to 1 GiB (and beyond: null or
//! aligned), realloc across every tier boundary, and zero-size requests.
//!
//! Zero size: `GlobalAlloc` leaves `alloc` of size 0 undefined and std never
//! asks for it; this allocator promises a unique, aligned, non-null pointer
//! that can be freed and reallocated like any other block.

#[macro_use]
mod support;

use std::alloc::{GlobalAlloc, Layout};

use nolibc_alloc::{Config, NolibcAlloc};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

/// The configurations every test runs under, with a name for messages.
fn configs() -> Vec<(&'static str, NolibcAlloc)> {
    vec![
        ("default", NolibcAlloc::new()),
        (
            "mmap_threshold(0)",
            NolibcAlloc::with_config(Config::new().mmap_threshold(0)),
        ),
        (
            "mmap_threshold(MAX)",
            NolibcAlloc::with_config(Config::new().mmap_threshold(usize::MAX)),
        ),
        (
            "trim_threshold(0) use_brk(false)",
            NolibcAlloc::with_config(Config::new().trim_threshold(0).use_brk(false)),
        ),
        (
            "trim_threshold(MAX)",
            NolibcAlloc::with_config(Config::new().trim_threshold(usize::MAX)),
        ),
    ]
}

/// Sizes that cross the tiers: small classes, pages, the default mmap
/// threshold (128 KiB), megabytes.
const SIZES: &[usize] = &[
    1,
    7,
    24,
    100,
    1000,
    4095,
    4096,
    4097,
    20_000,
    65536,
    128 * KIB - 1,
    128 * KIB,
    128 * KIB + 1,
    MIB,
    2 * MIB + 3,
];

/// Allocates `size`/`align` and fills it with the pattern of `id`.
fn alloc_filled(a: &NolibcAlloc, size: usize, align: usize, id: u64, ctx: &str) -> *mut u8 {
    let layout = Layout::from_size_align(size, align).unwrap();
    // SAFETY: valid layout, size > 0.
    let p = unsafe { a.alloc(layout) };
    assert!(!p.is_null(), "{ctx}: alloc({size}, {align}) returned null");
    assert_eq!(
        p as usize % align,
        0,
        "{ctx}: alloc({size}, {align}) = {p:p} misaligned"
    );
    // SAFETY: a live block of `size` bytes.
    unsafe { support::fill(p, id, 0, size) };
    p
}

fn assert_pattern(p: *const u8, id: u64, len: usize, ctx: &str) {
    // SAFETY: callers pass a live block of at least `len` bytes.
    if let Some(at) = unsafe { support::check(p, id, 0, len) } {
        panic!("{ctx}: block {p:p} lost its contents at offset {at} (of {len})");
    }
}

/// Sizes no process can map, valid for `Layout` with `align` (rounded up
/// they stay <= isize::MAX). On 64-bit targets no address space holds them
/// (x86_64 user space is below 2^47). On 32-bit ones `isize::MAX` is 2 GiB
/// and a 32-bit process on a 64-bit kernel has 4 GiB: they are impossible
/// only under [`limited`]'s address-space limit, so every size here is at
/// least twice its room.
fn impossible_sizes(align: usize) -> Vec<usize> {
    let max = isize::MAX as usize - align + 1; // the largest valid size for `align`
    let mut v: Vec<usize> = (0..40).map(|k| max - k).collect();
    v.extend((1..8).map(|k| max - k * 4096));
    #[cfg(target_pointer_width = "64")]
    v.extend([max / 2 + 1, 1 << 62, 1 << 56, 1 << 48, (1 << 47) + 1, 1 << 47]);
    #[cfg(target_pointer_width = "32")]
    v.extend([max / 2 + 1, 2 * LIMIT_ROOM + 1, 2 * LIMIT_ROOM]);
    v.retain(|&s| Layout::from_size_align(s, align).is_ok() && s >= 2 * LIMIT_ROOM);
    v
}

/// Address space left to a [`limited`] test on 32-bit targets.
const LIMIT_ROOM: usize = 256 * MIB;

/// Runs `body`: at once on 64-bit targets; on 32-bit ones in a child (this
/// test binary re-run for the test `name` alone) whose `RLIMIT_AS` is what
/// it uses plus [`LIMIT_ROOM`], so that the sizes of [`impossible_sizes`]
/// really cannot be mapped. The parent asserts the child passed.
fn limited(name: &str, body: fn()) {
    if cfg!(target_pointer_width = "64") {
        return body();
    }
    if support::is_child(name) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("VmSize:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmSize in /proc/self/status");
        let (_, hard) = nolibc_alloc::sys::getrlimit(nolibc_alloc::sys::RLIMIT_AS).unwrap();
        nolibc_alloc::sys::setrlimit(nolibc_alloc::sys::RLIMIT_AS, (kib * KIB + LIMIT_ROOM) as u64, hard).unwrap();
        return body();
    }
    let out = support::run_child(name);
    assert!(
        out.status.success(),
        "{name}: child failed\n{}",
        support::describe(&out)
    );
    // The child ran the test (a filter matching nothing also succeeds).
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 passed"),
        "{name}: the child did not run it\n{}",
        support::describe(&out)
    );
}

#[test]
fn impossible_sizes_return_null() {
    limited("impossible_sizes_return_null", impossible_sizes_return_null_body);
}

fn impossible_sizes_return_null_body() {
    for (name, a) in configs() {
        for shift in [0, 1, 3, 4, 6, 12, 16, 21, 30] {
            let align = 1usize << shift;
            for size in impossible_sizes(align) {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: valid layout.
                let p = unsafe { a.alloc(layout) };
                assert!(p.is_null(), "{name}: alloc({size:#x}, {align}) = {p:p}, expected null");
                // SAFETY: valid layout.
                let p = unsafe { a.alloc_zeroed(layout) };
                assert!(
                    p.is_null(),
                    "{name}: alloc_zeroed({size:#x}, {align}) = {p:p}, expected null"
                );
            }
        }
        let s = a.stats();
        assert_eq!(s.in_use_bytes, 0, "{name}: failed requests left bytes in use: {s:?}");
    }
}

/// A realloc that cannot be served returns null and leaves the block as it
/// was: same contents, still owned by the caller, freeable with its layout.
#[test]
fn impossible_realloc_keeps_the_block() {
    limited(
        "impossible_realloc_keeps_the_block",
        impossible_realloc_keeps_the_block_body,
    );
}

fn impossible_realloc_keeps_the_block_body() {
    for (name, a) in configs() {
        for (i, &old) in [1, 48, 3000, 40_000, 200 * KIB, 3 * MIB].iter().enumerate() {
            for align in [1, 16, 4096, 2 * MIB] {
                let ctx = format!("{name}: realloc of {old}/{align}");
                let id = i as u64 * 100 + align as u64;
                let p = alloc_filled(&a, old, align, id, &ctx);
                let layout = Layout::from_size_align(old, align).unwrap();
                for new in impossible_sizes(align) {
                    // SAFETY: a live block with its layout; new rounded up to
                    // align is <= isize::MAX.
                    let q = unsafe { a.realloc(p, layout, new) };
                    assert!(q.is_null(), "{ctx}: to {new:#x} = {q:p}, expected null");
                }
                assert_pattern(p, id, old, &ctx);
                // Still usable: grow it for real, then free.
                // SAFETY: a live block with its layout.
                let q = unsafe { a.realloc(p, layout, old + 4096) };
                assert!(!q.is_null(), "{ctx}: a possible realloc failed after impossible ones");
                assert_pattern(q, id, old, &ctx);
                // SAFETY: live, with its current layout.
                unsafe { a.dealloc(q, Layout::from_size_align(old + 4096, align).unwrap()) };
            }
        }
        let s = a.stats();
        assert_eq!(s.in_use_bytes, 0, "{name}: bytes left in use: {s:?}");
    }
}

/// Every power-of-two alignment from 1 byte to 1 GiB, for sizes in every
/// tier: non-null, aligned, writable, zeroed when asked, kept by realloc.
#[test]
fn alignments_up_to_1_gib() {
    for (name, a) in configs() {
        for shift in 0..=30 {
            let align = 1usize << shift;
            for (i, &size) in [1, 24, 1000, 5000, 100 * KIB, 200 * KIB, MIB + 1].iter().enumerate() {
                let ctx = format!("{name}: size {size} align {align:#x}");
                let id = (shift * 10 + i) as u64;
                let p = alloc_filled(&a, size, align, id, &ctx);
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: valid layout, size > 0.
                let z = unsafe { a.alloc_zeroed(layout) };
                // A second block while `p` is live: an alignment of 256 MiB
                // or more is over-mapped (size + alignment in one piece),
                // which a 32-bit address space holding one such block
                // already may not have. Null is a clean answer there.
                let may_fail = cfg!(target_pointer_width = "32") && align >= 256 * MIB;
                if !(z.is_null() && may_fail) {
                    assert!(!z.is_null(), "{ctx}: alloc_zeroed returned null");
                    assert_eq!(z as usize % align, 0, "{ctx}: alloc_zeroed = {z:p} misaligned");
                    // SAFETY: a live block of `size` bytes.
                    let nonzero = unsafe { support::first_nonzero(z, size) };
                    assert_eq!(nonzero, None, "{ctx}: alloc_zeroed not zero");
                    // SAFETY: live, with its layout.
                    unsafe { a.dealloc(z, layout) };
                }
                assert_pattern(p, id, size, &ctx);
                // Grow then shrink: the alignment and the contents stay.
                let big = size * 2 + 4096;
                // SAFETY: a live block with its layout; `big` is small.
                let q = unsafe { a.realloc(p, layout, big) };
                if q.is_null() && may_fail {
                    // Growing needs a second such placement (as above); the
                    // block is as it was.
                    assert_pattern(p, id, size, &ctx);
                    // SAFETY: live, with its layout.
                    unsafe { a.dealloc(p, layout) };
                    continue;
                }
                assert!(!q.is_null(), "{ctx}: realloc to {big} failed");
                assert_eq!(q as usize % align, 0, "{ctx}: realloc to {big} = {q:p} misaligned");
                assert_pattern(q, id, size, &ctx);
                let small = size.div_ceil(3);
                // SAFETY: live, with its current layout.
                let r = unsafe { a.realloc(q, Layout::from_size_align(big, align).unwrap(), small) };
                assert!(!r.is_null(), "{ctx}: realloc to {small} failed");
                assert_eq!(r as usize % align, 0, "{ctx}: realloc to {small} = {r:p} misaligned");
                assert_pattern(r, id, small, &ctx);
                // SAFETY: live, with its current layout.
                unsafe { a.dealloc(r, Layout::from_size_align(small, align).unwrap()) };
            }
        }
        let s = a.stats();
        assert_eq!(s.in_use_bytes, 0, "{name}: bytes left in use: {s:?}");
        // The cached mappings this instance keeps sit at GiB boundaries,
        // where its 1 GiB-aligned blocks were: a 32-bit address space has
        // three, and the next configuration needs them.
        a.trim();
    }
}

/// Alignments of 2 GiB up to 2^46: the address space may not fit the
/// over-mapping, so null is allowed; a pointer must be aligned and usable.
/// (On 32-bit targets `Layout` allows no alignment above 1 GiB: see
/// [`gib_blocks_at_1_gib_alignment_are_null_or_aligned`].)
#[cfg(target_pointer_width = "64")]
#[test]
fn alignments_beyond_1_gib_are_null_or_aligned() {
    let a = NolibcAlloc::new();
    let mut served = 0;
    for shift in 31..=46 {
        let align = 1usize << shift;
        for size in [1, 4096, 200 * KIB] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: valid layout, size > 0.
            let p = unsafe { a.alloc(layout) };
            if p.is_null() {
                continue;
            }
            served += 1;
            assert_eq!(p as usize % align, 0, "alloc({size}, {align:#x}) = {p:p} misaligned");
            // SAFETY: a live block of `size` bytes.
            unsafe {
                p.write(1);
                p.add(size - 1).write(2);
                a.dealloc(p, layout);
            }
        }
    }
    // 2 GiB and 4 GiB alignments fit anywhere in a 128 TiB address space.
    assert!(served >= 6, "only {served} of the over-1-GiB alignments were served");
    assert_eq!(a.stats().in_use_bytes, 0);
}

/// Blocks of up to 1 GiB aligned to 1 GiB, the largest alignment `Layout`
/// allows on 32-bit targets: the over-mapping needs up to 2 GiB of one
/// piece, which a 32-bit address space may not have. Null or aligned and
/// usable, in every configuration; and under [`limited`]'s limit (32-bit
/// targets) always null.
#[test]
fn gib_blocks_at_1_gib_alignment_are_null_or_aligned() {
    for (name, a) in configs() {
        for size in [GIB / 2, GIB - 4096, GIB] {
            let layout = Layout::from_size_align(size, GIB).unwrap();
            for zeroed in [false, true] {
                // SAFETY: valid layout, size > 0.
                let p = unsafe {
                    if zeroed {
                        a.alloc_zeroed(layout)
                    } else {
                        a.alloc(layout)
                    }
                };
                if p.is_null() {
                    continue;
                }
                assert_eq!(
                    p as usize % GIB,
                    0,
                    "{name}: alloc({size:#x}, 1 GiB) = {p:p} misaligned"
                );
                // SAFETY: a live block of `size` bytes.
                unsafe {
                    p.write(1);
                    p.add(size - 1).write(2);
                    a.dealloc(p, layout);
                }
            }
        }
        assert_eq!(a.stats().in_use_bytes, 0, "{name}");
    }
}

/// Under the address-space limit of [`limited`] (on 32-bit targets: a 1 GiB
/// block aligned to 1 GiB cannot fit in 256 MiB of room) the same requests
/// are null, and the allocator serves again afterwards.
#[cfg(target_pointer_width = "32")]
#[test]
fn gib_alignment_under_a_limit_is_null() {
    limited("gib_alignment_under_a_limit_is_null", || {
        for (name, a) in configs() {
            for size in [GIB / 2, GIB - 4096, GIB] {
                let layout = Layout::from_size_align(size, GIB).unwrap();
                // SAFETY: valid layout, size > 0.
                let p = unsafe { a.alloc(layout) };
                assert!(
                    p.is_null(),
                    "{name}: alloc({size:#x}, 1 GiB) = {p:p} under a 256 MiB limit"
                );
                // SAFETY: valid layout, size > 0.
                let p = unsafe { a.alloc_zeroed(layout) };
                assert!(
                    p.is_null(),
                    "{name}: alloc_zeroed({size:#x}, 1 GiB) = {p:p} under a 256 MiB limit"
                );
            }
            let p = alloc_filled(&a, MIB, 4096, 1, name);
            // SAFETY: live, with its layout.
            unsafe { a.dealloc(p, Layout::from_size_align(MIB, 4096).unwrap()) };
            assert_eq!(a.stats().in_use_bytes, 0, "{name}");
        }
    });
}

/// realloc from every size to every size, grow, shrink and same size, at
/// several alignments: the first min(old, new) bytes survive.
#[test]
fn realloc_across_tiers_keeps_contents() {
    for (k, (name, a)) in configs().into_iter().enumerate() {
        // Every alignment with the defaults; two with the other configs.
        let aligns: &[usize] = if k == 0 {
            &[1, 8, 64, 4096, 64 * KIB]
        } else {
            &[8, 4096]
        };
        for &align in aligns {
            for (i, &from) in SIZES.iter().enumerate() {
                for (j, &to) in SIZES.iter().enumerate() {
                    let ctx = format!("{name}: realloc {from} -> {to} (align {align})");
                    let id = (i * 100 + j) as u64;
                    let p = alloc_filled(&a, from, align, id, &ctx);
                    let layout = Layout::from_size_align(from, align).unwrap();
                    // SAFETY: a live block with its layout; `to` > 0 and small.
                    let q = unsafe { a.realloc(p, layout, to) };
                    assert!(!q.is_null(), "{ctx}: null");
                    assert_eq!(q as usize % align, 0, "{ctx}: {q:p} misaligned");
                    assert_pattern(q, id, from.min(to), &ctx);
                    // The whole new size is usable.
                    // SAFETY: a live block of `to` bytes.
                    unsafe { support::fill(q, id, 0, to) };
                    // Same size once more.
                    let l2 = Layout::from_size_align(to, align).unwrap();
                    // SAFETY: a live block with its layout.
                    let r = unsafe { a.realloc(q, l2, to) };
                    assert!(!r.is_null(), "{ctx}: same-size realloc: null");
                    assert_pattern(r, id, to, &ctx);
                    // SAFETY: live, with its current layout.
                    unsafe { a.dealloc(r, l2) };
                }
            }
        }
        let s = a.stats();
        assert_eq!(s.in_use_bytes, 0, "{name}: bytes left in use: {s:?}");
    }
}

/// Size 0: a unique, aligned, non-null pointer; freeable; reallocatable.
#[test]
fn zero_size_is_unique_and_usable() {
    for (name, a) in configs() {
        for shift in [0, 1, 3, 4, 6, 12, 16, 21] {
            let align = 1usize << shift;
            let layout = Layout::from_size_align(0, align).unwrap();
            let mut ptrs = Vec::new();
            for k in 0..64 {
                // SAFETY: a zero-size layout: this allocator defines it.
                let p = unsafe {
                    if k % 2 == 0 {
                        a.alloc(layout)
                    } else {
                        a.alloc_zeroed(layout)
                    }
                };
                assert!(!p.is_null(), "{name}: alloc(0, {align}) returned null");
                assert_eq!(p as usize % align, 0, "{name}: alloc(0, {align}) = {p:p} misaligned");
                ptrs.push(p);
            }
            let mut sorted = ptrs.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(
                sorted.len(),
                ptrs.len(),
                "{name}: alloc(0, {align}) handed out a pointer twice"
            );
            // Grow one of them into a real block.
            let p = ptrs.pop().unwrap();
            // SAFETY: a live zero-size block with its layout; new size > 0.
            let q = unsafe { a.realloc(p, layout, 100) };
            assert!(!q.is_null(), "{name}: realloc(0 -> 100, {align}) returned null");
            assert_eq!(q as usize % align, 0);
            // SAFETY: a live block of 100 bytes.
            unsafe { support::fill(q, 7, 0, 100) };
            assert_pattern(q, 7, 100, name);
            // SAFETY: live, with its current layout.
            unsafe { a.dealloc(q, Layout::from_size_align(100, align).unwrap()) };
            for p in ptrs {
                // SAFETY: live, with its layout.
                unsafe { a.dealloc(p, layout) };
            }
        }
        let s = a.stats();
        assert_eq!(s.in_use_bytes, 0, "{name}: bytes left in use: {s:?}");
    }
}

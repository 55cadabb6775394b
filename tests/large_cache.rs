//! The mapping cache and large `realloc` on the real kernel: a freed large
//! block's mapping is reused without `mmap` (and cleared for
//! `alloc_zeroed`); growth takes the cached span after the block without a
//! system call; growth with a live block in the way moves the pages onto a
//! cached span with `mremap(MREMAP_FIXED)`; `trim` unmaps the cache.
//!
//! One test function: the steps depend on where the kernel places the
//! mappings (below the previous one), which other tests of the same binary
//! would disturb.

use std::alloc::{GlobalAlloc, Layout};

use nolibc_alloc::NolibcAlloc;

static ALLOC: NolibcAlloc = NolibcAlloc::new();

const MIB: usize = 1 << 20;

fn fill(p: *mut u8, len: usize, tag: u8) {
    for i in (0..len).step_by(4096) {
        // SAFETY: the block has `len` bytes.
        unsafe { p.add(i).write(tag ^ (i >> 12) as u8) };
    }
}

fn check(p: *const u8, len: usize, tag: u8) {
    for i in (0..len).step_by(4096) {
        // SAFETY: the block has `len` bytes.
        assert_eq!(unsafe { p.add(i).read() }, tag ^ (i >> 12) as u8, "byte {i}");
    }
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 16).unwrap()
}

#[test]
fn mapping_cache_on_the_kernel() {
    // SAFETY: non-zero layouts; every block is used within its size and
    // freed once with its layout.
    unsafe {
        // Something stays live all along: no free below is the end of a burst.
        let keep = ALLOC.alloc(layout(64));

        // Reuse: no new mapping, and alloc_zeroed clears what it reuses.
        let p = ALLOC.alloc(layout(3 * MIB));
        p.write_bytes(0xa5, 3 * MIB);
        ALLOC.dealloc(p, layout(3 * MIB));
        let maps = ALLOC.stats().syscalls.mmap;
        let q = ALLOC.alloc_zeroed(layout(3 * MIB));
        assert_eq!(q, p, "the cached mapping is reused");
        assert_eq!(ALLOC.stats().syscalls.mmap, maps, "no mmap");
        assert!(
            (0..3 * MIB).all(|i| *q.add(i) == 0),
            "alloc_zeroed on a cached mapping is zero"
        );

        // Shrink in place (the tail goes to the cache), then grow back into
        // it: no system call at all.
        fill(q, MIB, 1);
        let r = ALLOC.realloc(q, layout(3 * MIB), MIB);
        assert_eq!(r, q, "shrunk in place");
        let calls = ALLOC.stats().syscalls;
        let r = ALLOC.realloc(r, layout(MIB), 2 * MIB);
        assert_eq!(r, q, "grown into the cached tail");
        assert_eq!(ALLOC.stats().syscalls, calls, "no system call");
        check(r, MIB, 1);

        // A live block in the way: a (cached) big span elsewhere takes the
        // pages, moved by mremap(MREMAP_FIXED), not copied, not faulted anew.
        let big = ALLOC.alloc(layout(32 * MIB));
        let spacer = ALLOC.alloc(layout(MIB));
        let b = ALLOC.alloc(layout(MIB));
        fill(b, MIB, 2);
        ALLOC.dealloc(big, layout(32 * MIB));
        let maps = ALLOC.stats().syscalls.mmap;
        let moved = ALLOC.realloc(b, layout(MIB), 8 * MIB);
        assert!(!moved.is_null());
        check(moved, MIB, 2);
        assert_eq!(ALLOC.stats().syscalls.mmap, maps, "no mmap");
        // Where the kernel left the pages after `b` free (the test binary's
        // other threads map too, so the layout is not fixed), `b` grows in
        // place, which is as good: no copy, no mmap.
        let span = big as usize - 32..big as usize + 32 * MIB;
        assert!(
            moved == b || span.contains(&(moved as usize)),
            "moved onto the cached span {span:x?} or grown in place: {moved:p} (b was {b:p}, spacer {spacer:p})"
        );
        fill(moved, 8 * MIB, 3);
        check(moved, 8 * MIB, 3);

        ALLOC.dealloc(moved, layout(8 * MIB));
        ALLOC.dealloc(spacer, layout(MIB));
        ALLOC.dealloc(r, layout(2 * MIB));
        let mapped = ALLOC.stats().mapped_bytes;
        let released = ALLOC.trim();
        assert!(released >= 32 * MIB, "trim gave back {released} bytes");
        assert!(
            ALLOC.stats().mapped_bytes + 32 * MIB <= mapped,
            "trim unmapped the cache"
        );
        ALLOC.dealloc(keep, layout(64));
        ALLOC.validate();
    }
}

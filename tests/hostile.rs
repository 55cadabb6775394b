//! Hostile environments, each in a child process (this test binary re-run
//! with `NOLIBC_ALLOC_SCENARIO` naming the case): RLIMIT_AS and RLIMIT_DATA
//! just above what the process uses, the address space filled with a
//! PROT_NONE reservation, and the kernel's mapping count used up. In each,
//! a `NolibcAlloc` instance (not the global allocator: the C library's malloc
//! stays out of the way and is not called once the limit is set) must answer
//! null, never crash, and serve requests again once memory is freed.
//!
//! The child checks its own outcomes, writes `scenario ok: ...` to stderr
//! without allocating, and exits 0; any failed check is one `CHILD FAIL` line
//! and exit status 1. The parent asserts exactly that.
//!
//! A mapping placed right above the break needs brk mode, which a hosted
//! glibc program must not use (glibc's malloc owns the break): the
//! freestanding examples cover it.

#[macro_use]
mod support;

use std::alloc::{GlobalAlloc, Layout};

use nolibc_alloc::{sys, Config, NolibcAlloc};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Runs the test's child half when this process is its child, else spawns
/// the child and checks it said `scenario ok` and exited 0.
fn scenario(name: &str, child: fn() -> !) {
    if support::is_child(name) {
        child();
    }
    let out = support::run_child(name);
    let text = support::describe(&out);
    assert_eq!(out.status.code(), Some(0), "{name}: child failed\n{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("scenario ok:"), "{name}: no success line\n{text}");
    eprintln!(
        "{name}: {}",
        stderr.lines().find(|l| l.contains("scenario ok:")).unwrap()
    );
}

/// A number from `/proc/self/status` (in kB), read without allocating.
fn proc_status_kib(key: &str) -> usize {
    let mut buf = [0u8; 16 * 1024];
    let fd = match sys::open_read(b"/proc/self/status\0") {
        Ok(fd) => fd,
        Err(e) => child_fail!("open /proc/self/status: {e:?}"),
    };
    let mut len = 0;
    while len < buf.len() {
        match sys::read(fd, &mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    let _ = sys::close(fd);
    let text = std::str::from_utf8(&buf[..len]).unwrap_or("");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(key) {
            let digits = rest.trim_start_matches(':').trim().trim_end_matches("kB").trim();
            if let Ok(v) = digits.parse() {
                return v;
            }
        }
    }
    child_fail!("no {key} in /proc/self/status")
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Allocates `size`-byte blocks until the allocator says null, chaining them
/// through their first word; returns (head of the chain, count). Touches
/// every page so the memory is really there.
fn fill_until_null(a: &NolibcAlloc, size: usize, cap: usize) -> (*mut u8, usize) {
    let mut head: *mut u8 = std::ptr::null_mut();
    let mut n = 0;
    loop {
        // SAFETY: a valid non-zero layout.
        let p = unsafe { a.alloc(layout(size)) };
        if p.is_null() {
            return (head, n);
        }
        child_assert!(
            n < cap,
            "{size}-byte blocks: still served after {n} blocks: the limit is not felt"
        );
        // SAFETY: `p` is a live block of `size` >= 8 bytes, 8-aligned.
        unsafe {
            let mut at = 8;
            while at < size {
                p.add(at).write(0x5A);
                at += 4096;
            }
            p.add(size - 1).write(0xA5);
            p.cast::<*mut u8>().write(head);
        }
        head = p;
        n += 1;
    }
}

/// Frees a chain made by [`fill_until_null`].
fn free_chain(a: &NolibcAlloc, mut head: *mut u8, size: usize) {
    while !head.is_null() {
        // SAFETY: a live block of the chain; its first word is the next one.
        let next = unsafe { head.cast::<*mut u8>().read() };
        // SAFETY: the last byte of a live block (written with 0xA5 by the filler).
        let last = unsafe { head.add(size - 1).read() };
        child_assert!(last == 0xA5, "block {head:p} lost its last byte");
        // SAFETY: live, freed once, with its layout.
        unsafe { a.dealloc(head, layout(size)) };
        head = next;
    }
}

fn all_null(a: &NolibcAlloc, what: &str) {
    for size in [1, 48, 1000, 20 * KIB, 200 * KIB, 4 * MIB] {
        // SAFETY: a valid non-zero layout.
        let p = unsafe { a.alloc(layout(size)) };
        child_assert!(p.is_null(), "{what}: alloc({size}) = {p:p}, expected null");
        // SAFETY: a valid non-zero layout.
        let p = unsafe { a.alloc_zeroed(layout(size)) };
        child_assert!(p.is_null(), "{what}: alloc_zeroed({size}) = {p:p}, expected null");
    }
}

/// After everything was freed: blocks of every tier are served again, up to
/// `large_count` large ones.
fn serves_again(a: &NolibcAlloc, large_count: usize, what: &str) {
    let (small, n_small) = fill_capped(a, 48, 2000, what);
    let (medium, n_medium) = fill_capped(a, 20 * KIB, 200, what);
    let (large, n_large) = fill_capped(a, MIB, large_count, what);
    child_assert!(
        n_small == 2000 && n_medium == 200 && n_large == large_count,
        "{what}: not served again"
    );
    free_chain(a, small, 48);
    free_chain(a, medium, 20 * KIB);
    free_chain(a, large, MIB);
}

/// Like [`fill_until_null`] but stops after `count` blocks; any null fails.
fn fill_capped(a: &NolibcAlloc, size: usize, count: usize, what: &str) -> (*mut u8, usize) {
    let mut head: *mut u8 = std::ptr::null_mut();
    for n in 0..count {
        // SAFETY: a valid non-zero layout.
        let p = unsafe { a.alloc(layout(size)) };
        child_assert!(!p.is_null(), "{what}: alloc({size}) #{n} returned null after the frees");
        // SAFETY: a live block of `size` >= 8 bytes, 8-aligned.
        unsafe {
            p.add(size - 1).write(0xA5);
            p.cast::<*mut u8>().write(head);
        }
        head = p;
    }
    (head, count)
}

/// Room left under the limit in the rlimit cases.
const ROOM: usize = 64 * MIB;

/// Sets `resource` to what `/proc/self/status` says is in use (`key`) plus
/// [`ROOM`], then: large, medium and small blocks until null; every tier
/// null; a realloc past the limit null with the block intact; all freed;
/// every tier served again.
fn rlimit_case(resource: usize, key: &str) -> ! {
    let a = NolibcAlloc::with_config(Config::new().use_brk(false));
    let used = proc_status_kib(key) * 1024;
    let hard = match sys::getrlimit(resource) {
        Ok((_, hard)) => hard,
        Err(e) => child_fail!("getrlimit: {e:?}"),
    };
    if let Err(e) = sys::setrlimit(resource, (used + ROOM) as u64, hard) {
        child_fail!("setrlimit({resource}, {}): {e:?}", used + ROOM);
    }

    let (large, n_large) = fill_until_null(&a, MIB, ROOM / MIB);
    child_assert!(
        n_large >= ROOM / MIB / 2,
        "only {n_large} MiB served under {} MiB of room",
        ROOM / MIB
    );
    // A large block cannot grow past the limit; it stays as it was.
    // SAFETY: `large` is a live MiB block; the new size is valid.
    let q = unsafe { a.realloc(large, layout(MIB), 2 * ROOM) };
    child_assert!(q.is_null(), "realloc past the limit = {q:p}, expected null");
    let (medium, n_medium) = fill_until_null(&a, 20 * KIB, ROOM / (20 * KIB));
    let (small, n_small) = fill_until_null(&a, 48, ROOM / 48);
    // Null for 48-byte blocks means even a one-page mapping no longer fits
    // (unless the allocator insists on bigger regions); nothing else may be
    // served either.
    let left_kib = ((used + ROOM) / 1024).saturating_sub(proc_status_kib(key));
    say!("at the limit: {n_large} x 1 MiB, {n_medium} x 20 KiB, {n_small} x 48 B served; {left_kib} KiB left under the limit");
    all_null(&a, "at the limit");
    free_chain(&a, small, 48);
    free_chain(&a, medium, 20 * KIB);
    free_chain(&a, large, MIB);
    serves_again(&a, n_large / 2, "after the frees");
    let s = a.stats();
    child_assert!(s.in_use_bytes == 0, "bytes left in use: {s:?}");
    say!("scenario ok: {n_large} x 1 MiB, {n_medium} x 20 KiB, {n_small} x 48 B before null; served again");
    sys::exit_group(0)
}

fn rlimit_as_child() -> ! {
    rlimit_case(sys::RLIMIT_AS, "VmSize")
}

fn rlimit_data_child() -> ! {
    // Since Linux 4.7, RLIMIT_DATA counts private writable mappings (VmData).
    rlimit_case(sys::RLIMIT_DATA, "VmData")
}

#[test]
fn rlimit_as_null_then_recovers() {
    scenario("rlimit_as_null_then_recovers", rlimit_as_child);
}

#[test]
fn rlimit_data_null_then_recovers() {
    scenario("rlimit_data_null_then_recovers", rlimit_data_child);
}

/// Reservations made by [`reserve_everything`].
struct Reserved {
    spans: [(usize, usize); 512],
    count: usize,
}

/// Maps PROT_NONE (no commit charge) in chunks from 64 TiB (2 GiB on 32-bit
/// targets) down to one
/// page until nothing fits anywhere: the address space is full.
fn reserve_everything() -> Reserved {
    let mut r = Reserved {
        spans: [(0, 0); 512],
        count: 0,
    };
    // 64 TiB on 64-bit targets, 2 GiB on 32-bit ones.
    let mut len = 1usize << (usize::BITS.min(47) - 1);
    while len >= 4096 {
        // SAFETY: a fresh PROT_NONE mapping where the kernel likes.
        match unsafe { sys::mmap_anon(0, len, sys::PROT_NONE, sys::MAP_PRIVATE_ANON | sys::MAP_NORESERVE) } {
            Ok(addr) => {
                child_assert!(r.count < r.spans.len(), "too many reservations");
                r.spans[r.count] = (addr, len);
                r.count += 1;
            }
            Err(_) => len /= 2,
        }
    }
    r
}

/// The address space filled with a PROT_NONE reservation: null everywhere;
/// then 256 MiB handed back: served until null again, within 256 MiB; all
/// freed: served again.
fn address_space_child() -> ! {
    const WINDOW: usize = 256 * MIB;
    let a = NolibcAlloc::with_config(Config::new().use_brk(false));
    // Every small block a slot from the start: a window too full for a run
    // may still have a 16-byte hole in a region, which a first block
    // (`src/first_blocks.rs`, tested on its own) would take.
    a.spend_first_blocks();
    let r = reserve_everything();
    all_null(&a, "address space full");

    // Open a 256 MiB window in the first big reservation.
    let Some(&(base, _)) = r.spans[..r.count].iter().find(|&&(_, len)| len >= WINDOW) else {
        child_fail!("no reservation of {WINDOW} bytes")
    };
    // SAFETY: our own PROT_NONE reservation, unused.
    if let Err(e) = unsafe { sys::munmap(base, WINDOW) } {
        child_fail!("munmap window: {e:?}");
    }
    let (large, n_large) = fill_until_null(&a, MIB, WINDOW / MIB);
    child_assert!(
        n_large >= WINDOW / MIB / 2,
        "only {n_large} MiB served in a {} MiB window",
        WINDOW / MIB
    );
    let (medium, n_medium) = fill_until_null(&a, 20 * KIB, WINDOW / (20 * KIB));
    let (small, n_small) = fill_until_null(&a, 48, WINDOW / 48);
    all_null(&a, "window full");
    free_chain(&a, small, 48);
    free_chain(&a, medium, 20 * KIB);
    free_chain(&a, large, MIB);
    serves_again(&a, n_large / 2, "after the frees");
    say!(
        "scenario ok: {} reservations; {n_large} x 1 MiB, {n_medium} x 20 KiB, {n_small} x 48 B in the window; served again",
        r.count
    );
    sys::exit_group(0)
}

#[test]
fn address_space_exhausted_null_then_recovers() {
    scenario("address_space_exhausted_null_then_recovers", address_space_child);
}

/// Every mmap fails once the process has `vm.max_map_count` mappings.
/// One-page mappings with alternating protections (so none merge) use the
/// count up; the allocator must answer null, and serve again once some are
/// unmapped.
fn map_count_child() -> ! {
    const MAX_PAGES: usize = 1 << 20;
    let a = NolibcAlloc::with_config(Config::new().use_brk(false));
    let mut first = 0usize;
    let mut made = 0usize;
    let mut last = 0usize;
    // The pages are kept in a chain: the kernel puts each mapping right below
    // the previous one, so remember them by address in one RW page per 512.
    let mut index: *mut usize = std::ptr::null_mut();
    let mut in_index = 0;
    let mut index_pages: *mut usize = std::ptr::null_mut();
    loop {
        child_assert!(
            made < MAX_PAGES,
            "{made} mappings and mmap still works: no map count limit?"
        );
        if index.is_null() || in_index == 511 {
            // SAFETY: a fresh RW page for bookkeeping.
            match unsafe { sys::mmap_anon(0, 4096, sys::PROT_RW, sys::MAP_PRIVATE_ANON) } {
                Ok(p) => {
                    let p = p as *mut usize;
                    // SAFETY: slot 511 of a fresh page links the index pages.
                    unsafe { p.add(511).write(index_pages as usize) };
                    index_pages = p;
                    index = p;
                    in_index = 0;
                }
                Err(_) => break,
            }
        }
        let prot = if made.is_multiple_of(2) {
            sys::PROT_NONE
        } else {
            0x1 /* PROT_READ */
        };
        // SAFETY: a fresh one-page mapping.
        match unsafe { sys::mmap_anon(0, 4096, prot, sys::MAP_PRIVATE_ANON | sys::MAP_NORESERVE) } {
            Ok(p) => {
                if made == 0 {
                    first = p;
                }
                last = p;
                // SAFETY: in_index < 511 slots of our index page.
                unsafe { index.add(in_index).write(p) };
                in_index += 1;
                made += 1;
            }
            Err(_) => break,
        }
    }
    let _ = (first, last);
    all_null(&a, "map count used up");

    // Give back 64 one-page mappings (the most recent index page's entries).
    let mut freed = 0;
    for i in 0..in_index.min(64) {
        // SAFETY: entries of our index page are our own mappings.
        let p = unsafe { index.add(i).read() };
        // SAFETY: our own one-page mapping, unused.
        if unsafe { sys::munmap(p, 4096) }.is_ok() {
            freed += 1;
        }
    }
    child_assert!(freed >= 32, "could only unmap {freed} pages");
    // A few mappings are enough for a few blocks of every tier.
    let (small, _) = fill_capped(&a, 48, 100, "after unmapping");
    let (medium, _) = fill_capped(&a, 20 * KIB, 10, "after unmapping");
    let (large, _) = fill_capped(&a, MIB, 4, "after unmapping");
    free_chain(&a, small, 48);
    free_chain(&a, medium, 20 * KIB);
    free_chain(&a, large, MIB);
    say!("scenario ok: {made} one-page mappings until mmap failed; null; served again after {freed} unmapped");
    sys::exit_group(0)
}

#[test]
fn map_count_exhausted_null_then_recovers() {
    scenario("map_count_exhausted_null_then_recovers", map_count_child);
}

//! `fork` through the Rust API: a std program whose `#[global_allocator]`
//! is a `NolibcAlloc` forks with a raw `clone(SIGCHLD)` (`sys::fork`),
//! calling `fork_prepare` / `fork_parent` / `fork_child` around it, while
//! four threads churn every tier and hand blocks to each other.
//!
//! The main thread forks 100 times, then another thread 100 times (a child
//! whose one thread is not the main thread cannot skip the arena locks).
//! Each child frees every block the threads had handed over, allocates,
//! resizes and frees over every tier, checks what it frees, and leaves with
//! `exit_group(0)` (no std in the child: its locks may be held). The parent
//! reaps each child and needs status 0.
//!
//! Watchdogs: a child that has not ended 5 s after the fork is killed (a
//! failure); a thread that sees no fork complete for 20 s kills the child
//! and ends the process with status 3 (a hang in the parent).
//!
//! A test without libtest (`harness = false`): libtest would run the test on
//! a thread of its own, and the forks from the main thread matter.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nolibc_alloc::{sys, NolibcAlloc};

#[global_allocator]
static GLOBAL: NolibcAlloc = NolibcAlloc::new();

const SLOTS: usize = 256;
const THREADS: usize = 4;
const FORKS: usize = 200;
const CHILD_SECONDS: u64 = 5;
const PARENT_SECONDS: u64 = 20;

/// Blocks handed between threads. Each starts with its size and a tag and
/// ends with the tag's low byte.
static SLOT: [AtomicPtr<u8>; SLOTS] = [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS];
static STOP: AtomicBool = AtomicBool::new(false);
/// Forks completed (the parent watchdog's sign of progress).
static FORKED: AtomicUsize = AtomicUsize::new(0);
/// The child being waited for (0: none).
static CHILD: AtomicI32 = AtomicI32::new(0);

const HEAD: usize = 16;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("a valid layout")
}

fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Sizes over every tier (as `tests/c/forkstress.c`): slots of many
/// classes, blocks of the core (128 KiB .. 1 MiB, medium once a freed large
/// block raised the mmap threshold), large mappings; with `small`, slots
/// only, mostly tiny.
fn pick_size(s: &mut u64, small: bool) -> usize {
    let r = next(s);
    let x = (r >> 8) as usize;
    if small {
        return if !r.is_multiple_of(8) {
            1 + x % 256
        } else {
            1 + x % 16384
        };
    }
    match r % 16 {
        0..=6 => 1 + x % 512,
        7..=9 => 512 + x % 8192,
        10 | 11 => 8192 + x % (120 << 10),
        12..=14 => (128 << 10) + x % (896 << 10),
        _ => (1 << 20) + x % (2 << 20),
    }
}

/// Stops a child with `code` and a line (no allocation, no std lock).
fn child_fail(what: &str, code: i32) -> ! {
    let _ = sys::write(2, b"fork: child: ");
    let _ = sys::write(2, what.as_bytes());
    let _ = sys::write(2, b"\n");
    sys::exit_group(code)
}

/// Aborts the process (a parent-side failure, from any thread).
fn fail(what: &str) -> ! {
    eprintln!("fork: FAIL {what}");
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        let _ = sys::kill(child, 9);
    }
    println!("test result: FAILED. 0 passed; 1 failed");
    sys::exit_group(1)
}

fn make(size: usize, tag: u64, in_child: bool) -> *mut u8 {
    let size = size.max(HEAD);
    // SAFETY: a non-zero size.
    let p = unsafe { GLOBAL.alloc(layout(size)) };
    if p.is_null() {
        if in_child {
            child_fail("alloc returned null", 4);
        }
        fail("alloc returned null");
    }
    // SAFETY: `size` bytes, at least HEAD, aligned to 8.
    unsafe {
        p.cast::<usize>().write(size);
        p.add(8).cast::<u64>().write(tag);
        p.add(size - 1).write(tag as u8);
    }
    p
}

/// The size of a block, checked against its tag.
fn size_of(p: *mut u8, in_child: bool) -> usize {
    // SAFETY: a live block made by `make`.
    let (size, tag, last) = unsafe {
        let size = p.cast::<usize>().read();
        (size, p.add(8).cast::<u64>().read(), p.add(size.max(1) - 1).read())
    };
    if size < HEAD || last != tag as u8 {
        if in_child {
            child_fail("block corrupt", 5);
        }
        fail("block corrupt");
    }
    size
}

fn drop_block(p: *mut u8, in_child: bool) {
    let size = size_of(p, in_child);
    // SAFETY: a live block of `size` bytes from GLOBAL, freed once.
    unsafe { GLOBAL.dealloc(p, layout(size)) };
}

fn grow(p: *mut u8, new: usize, in_child: bool) -> *mut u8 {
    let old = size_of(p, in_child);
    let new = new.max(HEAD);
    // SAFETY: a live block of `old` bytes; `new` is non-zero.
    let q = unsafe { GLOBAL.realloc(p, layout(old), new) };
    if q.is_null() {
        if in_child {
            child_fail("realloc returned null", 4);
        }
        fail("realloc returned null");
    }
    // SAFETY: `new` bytes; the tag survived the move.
    unsafe {
        let tag = q.add(8).cast::<u64>().read();
        q.cast::<usize>().write(new);
        q.add(new - 1).write(tag as u8);
    }
    q
}

fn churn(id: u64) {
    let mut s = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(id) | 1;
    let small = id.is_multiple_of(2);
    let mut local = [ptr::null_mut::<u8>(); 64];
    while !STOP.load(Ordering::Relaxed) {
        let r = next(&mut s);
        let i = (r >> 32) as usize;
        match r % 4 {
            0 => {
                let p = make(pick_size(&mut s, small), r, false);
                let old = SLOT[i % SLOTS].swap(p, Ordering::AcqRel);
                if !old.is_null() {
                    drop_block(old, false);
                }
            }
            1 => {
                let old = SLOT[i % SLOTS].swap(ptr::null_mut(), Ordering::AcqRel);
                if !old.is_null() {
                    let p = grow(old, pick_size(&mut s, small), false);
                    let old = SLOT[(i >> 9) % SLOTS].swap(p, Ordering::AcqRel);
                    if !old.is_null() {
                        drop_block(old, false);
                    }
                }
            }
            _ => {
                let l = &mut local[i % 64];
                if l.is_null() {
                    *l = make(pick_size(&mut s, small), r, false);
                } else if r & 0x100 != 0 {
                    *l = grow(*l, pick_size(&mut s, small), false);
                } else {
                    drop_block(*l, false);
                    *l = ptr::null_mut();
                }
            }
        }
    }
    for p in local {
        if !p.is_null() {
            drop_block(p, false);
        }
    }
}

/// The child: one thread. Frees what the threads handed over (blocks of
/// every arena and tier), then allocates, resizes and frees over every tier.
fn child_work(seed: u64) -> ! {
    let mut s = seed | 1;
    for slot in &SLOT {
        let p = slot.swap(ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            drop_block(p, true);
        }
    }
    let mut mine = [ptr::null_mut::<u8>(); 96];
    for (i, m) in mine.iter_mut().enumerate() {
        let size = if i < 64 {
            16 << (i % 13)
        } else {
            pick_size(&mut s, false)
        };
        *m = make(size, i as u64, true);
    }
    for m in mine.iter_mut().step_by(3) {
        *m = grow(*m, pick_size(&mut s, false), true);
    }
    for m in mine {
        drop_block(m, true);
    }
    sys::exit_group(0)
}

/// The status of the child once it has ended.
fn try_wait(pid: i32) -> Option<i32> {
    match sys::wait4(pid, sys::WNOHANG) {
        Ok((0, _)) => None,
        Ok((_, status)) => Some(status),
        Err(e) => fail(&format!("wait4({pid}): {e}")),
    }
}

fn fork_once(n: usize) {
    GLOBAL.fork_prepare();
    // SAFETY: the allocator's hooks surround it; the child only allocates,
    // frees and exits.
    let pid = unsafe { sys::fork() };
    match pid {
        Ok(0) => {
            GLOBAL.fork_child();
            child_work(0x243f_6a88_85a3_08d3 + n as u64)
        }
        Ok(pid) => {
            GLOBAL.fork_parent();
            CHILD.store(pid, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(CHILD_SECONDS);
            let status = loop {
                if let Some(status) = try_wait(pid) {
                    break status;
                }
                if Instant::now() > deadline {
                    fail(&format!("fork {n}: the child hung ({CHILD_SECONDS} s): killed"));
                }
                std::thread::sleep(Duration::from_micros(200));
            };
            CHILD.store(0, Ordering::SeqCst);
            if status != 0 {
                fail(&format!("fork {n}: child status {status:#x}"));
            }
            FORKED.fetch_add(1, Ordering::SeqCst);
        }
        Err(e) => {
            GLOBAL.fork_parent();
            fail(&format!("fork {n}: {e}"));
        }
    }
}

fn main() {
    // The parent's watchdog: no fork completed for PARENT_SECONDS.
    std::thread::spawn(|| {
        let mut seen = usize::MAX;
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = FORKED.load(Ordering::SeqCst);
            if now != seen {
                (seen, since) = (now, Instant::now());
            } else if since.elapsed() > Duration::from_secs(PARENT_SECONDS) {
                let _ = sys::write(2, b"fork: FAIL the parent hung (watchdog)\n");
                let child = CHILD.load(Ordering::SeqCst);
                if child > 0 {
                    let _ = sys::kill(child, 9);
                }
                sys::exit_group(3);
            }
        }
    });
    let threads: Vec<_> = (1..=THREADS as u64)
        .map(|id| std::thread::spawn(move || churn(id)))
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    let start = Instant::now();
    for n in 0..FORKS / 2 {
        fork_once(n);
    }
    std::thread::spawn(|| {
        for n in FORKS / 2..FORKS {
            fork_once(n);
        }
    })
    .join()
    .expect("the forking thread");
    let took = start.elapsed();
    STOP.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a churning thread");
    }
    for slot in &SLOT {
        let p = slot.swap(ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            drop_block(p, false);
        }
    }
    GLOBAL.validate();
    println!("fork: {FORKS} forks with {THREADS} churning threads in {took:.2?}, every child exited 0");
    println!("test result: ok. 1 passed; 0 failed");
}

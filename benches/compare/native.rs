//! The native workloads on the Rust path (`GlobalAlloc`): the server table
//! and the malloc/free loop. `driver.c` has the same programs for the C
//! path (modes `server` and `loop64`), with the same generator, seeds and
//! block tags, so the two sides do the same work.
//!
//! What they do is not a recorded stream: in the server, which thread frees
//! which block depends on the interleaving of the threads (each thread's own
//! draws are fixed by its seed); the loop is fixed but 20 M steps long.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::allocs::{process_cpu_ns, rss_kb, Outcome};
use crate::exec::Status;
use crate::workloads::{mix64, Native, Rng, SERVER_DRAWS};

/// Seeds of thread `t`: `SEED + t` (the same in `driver.c`).
pub const SERVER_SEED: u64 = 0x5E4E_0000;
pub const LOOP_SEED: u64 = 0x100F_0000;
/// Server block sizes.
pub const SERVER_MIN: u64 = 16;
pub const SERVER_MAX: u64 = 1024;
const TAIL_KEY: u64 = 0x7A11_7A11_7A11_7A11;
/// Blocks up to this size are filled completely (as `exec.rs` does).
const FULL_FILL_MAX: u64 = 512;

/// A server slot: 0 (empty) or `ptr >> 3 | size << 45 | owner << 56`, so a
/// thread can see whose block a slot holds without touching the block (which
/// another thread may be freeing).
fn pack(ptr: *mut u8, size: u64, owner: usize) -> Option<u64> {
    let p = ptr as u64;
    if p >= 1 << 48 || p & 7 != 0 || size >= 1 << 11 || owner >= 1 << 8 {
        return None;
    }
    Some(p >> 3 | size << 45 | (owner as u64) << 56)
}

fn unpack(v: u64) -> (*mut u8, u64, usize) {
    (
        ((v & ((1 << 45) - 1)) << 3) as *mut u8,
        (v >> 45) & 0x7FF,
        (v >> 56) as usize,
    )
}

/// Server block: its id in the first 8 bytes, the byte `mix64(id)` in the
/// body (blocks up to 512 B), `mix64(id) ^ size ^ TAIL_KEY` in the last 8.
///
/// # Safety
/// `p` is valid for `size >= 16` bytes of writes, 8-aligned.
unsafe fn server_fill(p: *mut u8, size: u64, id: u64) {
    let h = mix64(id);
    // SAFETY: every write is inside the `size` bytes the caller gives.
    unsafe {
        if size <= FULL_FILL_MAX {
            p.add(8).write_bytes(h as u8, size as usize - 16);
        }
        (p as *mut u64).write(id);
        (p.add(size as usize - 8) as *mut u64).write_unaligned(h ^ size ^ TAIL_KEY);
    }
}

/// Checks a server block written by thread `owner`.
///
/// # Safety
/// `p` is valid for `size >= 16` bytes of reads, 8-aligned.
unsafe fn server_check(p: *const u8, size: u64, owner: usize) -> bool {
    // SAFETY: every read is inside the `size` bytes the caller gives.
    unsafe {
        let id = (p as *const u64).read();
        if (id >> 40) as usize != owner {
            return false;
        }
        let h = mix64(id);
        if (p.add(size as usize - 8) as *const u64).read_unaligned() != h ^ size ^ TAIL_KEY {
            return false;
        }
        size > FULL_FILL_MAX
            || std::slice::from_raw_parts(p.add(8), size as usize - 16)
                .iter()
                .all(|&b| b == h as u8)
    }
}

/// What one thread did.
#[derive(Default)]
struct Tally {
    status: Option<Status>,
    ops: u64,
    remote_frees: u64,
}

impl Tally {
    fn fail(&mut self, s: Status) {
        self.status = Some(self.status.map_or(s, |o| o.max(s)));
    }
    fn ok(&self) -> bool {
        self.status.is_none()
    }
}

/// Checks and frees a slot's old content.
///
/// # Safety
/// `old` is a packed block of `a` that nothing else refers to any more.
unsafe fn server_release<A: GlobalAlloc>(a: &A, old: u64, t: &mut Tally, me: usize) {
    let (p, size, owner) = unpack(old);
    // SAFETY: the caller hands over the block, allocated with this layout.
    unsafe {
        if !server_check(p, size, owner) {
            t.fail(Status::Corrupt);
        }
        a.dealloc(p, Layout::from_size_align_unchecked(size as usize, 8));
    }
    t.ops += 1;
    if owner != me {
        t.remote_frees += 1;
    }
}

fn server_thread<A: GlobalAlloc>(a: &A, table: &[AtomicU64], me: usize, steps: u64) -> Tally {
    let mut t = Tally::default();
    let mut r = Rng::new(SERVER_SEED + me as u64);
    let n = table.len() as u64;
    let first_id = (me as u64) << 40;
    for id in first_id..first_id + steps {
        let mut slot = r.below(n) as usize;
        for _ in 1..SERVER_DRAWS {
            let v = table[slot].load(Ordering::Relaxed);
            if v == 0 || unpack(v).2 != me {
                break;
            }
            slot = r.below(n) as usize;
        }
        let size = r.range(SERVER_MIN, SERVER_MAX);
        // SAFETY: non-zero size, alignment 8.
        let p = unsafe { a.alloc(Layout::from_size_align_unchecked(size as usize, 8)) };
        t.ops += 1;
        if p.is_null() {
            t.fail(Status::Oom);
            break;
        }
        let Some(v) = pack(p, size, me) else {
            t.fail(Status::Corrupt); // misaligned (or an address past 2^48)
            break;
        };
        // SAFETY: a fresh block of `size` bytes, 8-aligned.
        unsafe { server_fill(p, size, id) };
        // Release: the block's contents go with it; Acquire: the old one's come.
        let old = table[slot].swap(v, Ordering::AcqRel);
        if old != 0 {
            // SAFETY: swapped out of the table: this thread alone has it.
            unsafe { server_release(a, old, &mut t, me) };
        }
    }
    t
}

/// Frees every slot (`steps` per thread 0..threads) and sums the threads.
fn finish(mut ts: Vec<Tally>) -> (Status, u64, u64) {
    let status = ts
        .iter_mut()
        .filter_map(|t| t.status.take())
        .max()
        .unwrap_or(Status::Ok);
    (
        status,
        ts.iter().map(|t| t.ops).sum(),
        ts.iter().map(|t| t.remote_frees).sum(),
    )
}

/// malloc/free loop of one thread: 64 live blocks.
fn loop_thread<A: GlobalAlloc>(a: &A, me: usize, steps: u64) -> Tally {
    let mut t = Tally::default();
    let mut r = Rng::new(LOOP_SEED + me as u64);
    let mut blocks = [(std::ptr::null_mut::<u8>(), 0u64); 64];
    let alloc = |t: &mut Tally, size: u64| -> *mut u8 {
        // SAFETY: non-zero size, alignment 8.
        let p = unsafe { a.alloc(Layout::from_size_align_unchecked(size as usize, 8)) };
        t.ops += 1;
        if p.is_null() {
            t.fail(Status::Oom);
        } else if p as usize & 7 != 0 {
            t.fail(Status::Corrupt);
        } else {
            // SAFETY: a fresh block of `size >= 8` bytes.
            unsafe { loop_tag(p, size) };
        }
        p
    };
    for b in blocks.iter_mut() {
        let size = 8 + (r.next_u64() & 127);
        *b = (alloc(&mut t, size), size);
    }
    let free = |t: &mut Tally, (p, size): (*mut u8, u64)| {
        if p.is_null() {
            return;
        }
        // SAFETY: a live block of `a` with this layout.
        unsafe {
            if !loop_tag_ok(p, size) {
                t.fail(Status::Corrupt);
            }
            a.dealloc(p, Layout::from_size_align_unchecked(size as usize, 8));
        }
        t.ops += 1;
    };
    let mut step = 0;
    while step < steps && t.ok() {
        let x = r.next_u64();
        let k = (x & 63) as usize;
        let size = 8 + ((x >> 6) & 127);
        free(&mut t, blocks[k]);
        blocks[k] = (alloc(&mut t, size), size);
        step += 1;
    }
    for b in blocks {
        free(&mut t, b);
    }
    t
}

/// The loop's tag: `size ^ TAIL_KEY` in the first 8 bytes, its complement
/// in the last 8 of blocks of 16 B and more (cheap: the loop measures the
/// allocator's fast path).
///
/// # Safety
/// `p` is valid for `size >= 8` bytes of writes, 8-aligned.
pub unsafe fn loop_tag(p: *mut u8, size: u64) {
    // SAFETY: inside the block.
    unsafe {
        (p as *mut u64).write(size ^ TAIL_KEY);
        if size >= 16 {
            (p.add(size as usize - 8) as *mut u64).write_unaligned(!(size ^ TAIL_KEY));
        }
    }
}

/// # Safety
/// `p` is valid for `size >= 8` bytes of reads, 8-aligned.
pub unsafe fn loop_tag_ok(p: *const u8, size: u64) -> bool {
    // SAFETY: inside the block.
    unsafe {
        (p as *const u64).read() == size ^ TAIL_KEY
            && (size < 16 || (p.add(size as usize - 8) as *const u64).read_unaligned() == !(size ^ TAIL_KEY))
    }
}

/// Runs a native workload on `a`; times it (threads included) and reports.
pub fn run<A: GlobalAlloc + Sync>(a: &A, n: Native) -> Outcome {
    let (rss_start_kb, _) = rss_kb();
    let wall = Instant::now();
    let cpu0 = process_cpu_ns();
    let (status, ops, remote_frees, live) = match n {
        Native::Server { threads, steps, slots } => {
            let table: Vec<AtomicU64> = (0..slots).map(|_| AtomicU64::new(0)).collect();
            let ts = std::thread::scope(|sc| {
                let table = &table;
                let hs: Vec<_> = (0..threads)
                    .map(|me| sc.spawn(move || server_thread(a, table, me, steps / threads as u64)))
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| std::process::exit(4)))
                    .collect::<Vec<_>>()
            });
            // What is live at the end of the steady state (about the peak).
            let live: u64 = table.iter().map(|s| unpack(s.load(Ordering::Relaxed)).1).sum();
            let mut last = Tally::default();
            for s in &table {
                let old = s.swap(0, Ordering::Acquire);
                if old != 0 {
                    // SAFETY: the threads are gone; the table held the block.
                    unsafe { server_release(a, old, &mut last, usize::MAX) };
                }
            }
            last.remote_frees = 0; // the final cleanup is not the workload's
            let mut ts = ts;
            ts.push(last);
            let (st, ops, remote) = finish(ts);
            (st, ops, remote, live)
        }
        Native::Loop { threads, steps } => {
            let ts = if threads == 1 {
                vec![loop_thread(a, 0, steps)]
            } else {
                std::thread::scope(|sc| {
                    let hs: Vec<_> = (0..threads)
                        .map(|me| sc.spawn(move || loop_thread(a, me, steps / threads as u64)))
                        .collect();
                    hs.into_iter()
                        .map(|h| h.join().unwrap_or_else(|_| std::process::exit(4)))
                        .collect::<Vec<_>>()
                })
            };
            let (st, ops, remote) = finish(ts);
            // 64 blocks of 71.5 B on average per thread.
            (st, ops, remote, threads as u64 * 64 * 72)
        }
    };
    let cpu_ns = process_cpu_ns() - cpu0;
    let wall_ns = wall.elapsed().as_nanos() as u64;
    let (rss_end_kb, peak_rss_kb) = rss_kb();
    Outcome {
        status,
        cpu_ns,
        wall_ns,
        ops,
        peak_live_bytes: live,
        rss_start_kb,
        peak_rss_kb,
        rss_end_kb,
        remote_frees: Some(remote_frees),
    }
}

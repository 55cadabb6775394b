//! Threads and fork in a static, libc-free program: 4 threads from
//! `rt::thread::spawn` churn `Vec`, `Box` and `String`, handing blocks round
//! a ring of channels (each thread frees what its neighbour allocated),
//! while the main thread forks children that allocate, free blocks the
//! threads allocated, and exit 0. Checks every block's contents, that each
//! thread has a thread pointer and an `errno` of its own, that every child
//! exited 0 and that the memory in use is back where it started.
//!
//! Run: `cargo xtask run --example threads [--arch aarch64|riscv64] [-- ROUNDS]`
//! (ends with `threads: ok`). `-- --panic` panics in a spawned thread
//! instead: the message on stderr, exit status 101.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};

use nolibc_alloc::rt::thread;
use nolibc_alloc::{entry, println, rt, sys, NolibcAlloc};

#[global_allocator]
static ALLOC: NolibcAlloc = NolibcAlloc::new();

entry!(main);

const THREADS: usize = 4;
const FORKS: usize = 16;

/// A blocking, unbounded channel: a futex lock around a `VecDeque`, and a
/// futex word counting sends for a receiver to sleep on.
struct Channel<T> {
    /// 0 unlocked, 1 locked, 2 locked with sleepers.
    lock: AtomicU32,
    queue: UnsafeCell<VecDeque<T>>,
    sends: AtomicU32,
}

// SAFETY: the queue is only touched under the lock; T moves between threads.
unsafe impl<T: Send> Sync for Channel<T> {}

impl<T> Channel<T> {
    const fn new() -> Self {
        Channel {
            lock: AtomicU32::new(0),
            queue: UnsafeCell::new(VecDeque::new()),
            sends: AtomicU32::new(0),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut VecDeque<T>) -> R) -> R {
        if self
            .lock
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.lock.swap(2, Ordering::Acquire) != 0 {
                let _ = sys::futex_wait(&self.lock, 2);
            }
        }
        // SAFETY: the lock is held.
        let r = f(unsafe { &mut *self.queue.get() });
        if self.lock.swap(0, Ordering::Release) == 2 {
            let _ = sys::futex_wake(&self.lock, 1);
        }
        r
    }

    fn send(&self, value: T) {
        self.with(|q| q.push_back(value));
        self.sends.fetch_add(1, Ordering::Release);
        let _ = sys::futex_wake(&self.sends, 1);
    }

    fn recv(&self) -> T {
        loop {
            let seen = self.sends.load(Ordering::Acquire);
            if let Some(v) = self.with(|q| q.pop_front()) {
                return v;
            }
            let _ = sys::futex_wait(&self.sends, seen);
        }
    }

    fn try_recv(&self) -> Option<T> {
        self.with(|q| q.pop_front())
    }
}

/// What goes round the ring: blocks of three kinds, with contents that
/// depend on the sender and the sequence number only.
enum Block {
    Words(Vec<u64>),
    Bytes(Box<[u8]>),
    Text(String),
}

struct Msg {
    from: usize,
    seq: usize,
    block: Block,
}

fn seed(from: usize, seq: usize) -> u64 {
    ((from as u64) << 32 | seq as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn make(from: usize, seq: usize) -> Msg {
    let s = seed(from, seq);
    let len = 1 + (s >> 40) as usize % 700;
    let block = match seq % 3 {
        0 => Block::Words((0..len as u64).map(|i| s ^ i).collect()),
        1 => Block::Bytes((0..len * 8).map(|i| (s as usize + i) as u8).collect()),
        _ => Block::Text(format!("{from}:{seq}:{}", "x".repeat(len % 200))),
    };
    Msg { from, seq, block }
}

fn verify(m: &Msg) -> bool {
    match (&make(m.from, m.seq).block, &m.block) {
        (Block::Words(a), Block::Words(b)) => a == b,
        (Block::Bytes(a), Block::Bytes(b)) => a == b,
        (Block::Text(a), Block::Text(b)) => a == b,
        _ => false,
    }
}

/// One channel per thread: thread `i` receives on `RING[i]` from thread `i - 1`.
static RING: [Channel<Msg>; THREADS] = [const { Channel::new() }; THREADS];
/// Blocks the threads allocate for the main thread (its children free them).
static GIFTS: Channel<Msg> = Channel::new();

/// What a thread reports when it ends.
struct Report {
    received: usize,
    thread_pointer: usize,
    errno_kept: bool,
}

fn churn(id: usize, rounds: usize) -> Report {
    let errno = thread::errno_location();
    // SAFETY: this thread's own errno.
    unsafe { *errno = 1000 + id as i32 };
    for seq in 0..8 {
        GIFTS.send(make(id, rounds + seq));
    }
    let mut kept: Vec<Msg> = Vec::new();
    let mut received = 0;
    for seq in 0..rounds {
        RING[(id + 1) % THREADS].send(make(id, seq));
        // Local churn between the handovers: a growing Vec of short strings.
        let words: Vec<String> = (0..seq % 17)
            .map(|i| format!("{i:>width$}", width = seq % 40))
            .collect();
        assert!(words.iter().all(|w| w.len() >= seq % 40));
        // And the tiers behind a shared lock (the core: medium and
        // over-aligned blocks), so a fork often finds it held.
        for k in 0..4 {
            assert!(core_churn(seq + k), "thread {id}: medium block corrupted");
        }
        let m = RING[id].recv();
        assert_eq!((m.from, m.seq), ((id + THREADS - 1) % THREADS, seq), "ring order");
        assert!(verify(&m), "thread {id}: block {}:{} corrupted", m.from, m.seq);
        received += 1;
        // Keep some for a while, so blocks of many ages are live.
        if seq % 3 == 0 {
            kept.push(m);
        }
        if kept.len() > 48 {
            assert!(kept.iter().all(verify));
            kept.drain(..24);
        }
    }
    assert!(kept.iter().all(verify));
    // SAFETY: as above.
    let errno_kept = unsafe { *errno } == 1000 + id as i32;
    Report {
        received,
        thread_pointer: thread::thread_pointer(),
        errno_kept,
    }
}

/// Blocks the core serves under its lock: an over-aligned one and one
/// between the small tier's limit (128 KiB) and the mmap threshold.
fn core_churn(seed: usize) -> bool {
    let layout = Layout::from_size_align(64 + seed % 64, 4096).expect("layout");
    // SAFETY: a valid layout of non-zero size; freed below with it.
    let p = unsafe { alloc::alloc::alloc(layout) };
    assert!(!p.is_null() && (p as usize).is_multiple_of(4096));
    // SAFETY: `p` is a live block of `layout`.
    unsafe {
        p.write(seed as u8);
        alloc::alloc::dealloc(p, layout);
    }
    let mut medium: Vec<u8> = Vec::with_capacity(150_000 + seed % 4096);
    medium.resize(1000, seed as u8);
    medium.reserve_exact(200_000);
    medium.iter().all(|&b| b == seed as u8)
}

/// The child of a fork: allocates in every tier, frees blocks other threads
/// of the parent allocated, exits 0 (or 1 if something is wrong).
fn child(gifts: &mut Vec<Msg>, round: usize) -> ! {
    // A watchdog: a hang becomes SIGALRM, a failure the parent sees.
    let _ = sys::alarm(10);
    let ok = gifts.iter().all(verify);
    gifts.truncate(round % 4);
    let mut all: Vec<Msg> = (0..200).map(|seq| make(99, seq)).collect();
    all.push(Msg {
        from: 98,
        seq: 0,
        block: Block::Bytes((0..300_000).map(|i| i as u8).collect()),
    });
    let ok = ok && all[..200].iter().all(verify) && (0..20).all(core_churn);
    drop(all);
    rt::exit(if ok { 0 } else { 1 })
}

fn main() -> i32 {
    // Under an emulator a hang must not stall the test: SIGALRM ends it.
    let _ = sys::alarm(300);
    if rt::args().nth(1).is_some_and(|a| a.to_bytes() == b"--panic") {
        // The whole process ends with status 101 while main waits in join.
        let h = thread::spawn(|| -> u32 { panic!("deliberate panic in thread {}", 1) });
        h.join();
        return 0;
    }
    let rounds: usize = rt::args()
        .nth(1)
        .and_then(|a| a.to_str().ok()?.parse().ok())
        .unwrap_or(2000);
    let before = ALLOC.stats().in_use_bytes;
    let errno = thread::errno_location();
    // SAFETY: the main thread's own errno.
    unsafe { *errno = 7 };

    let handles: Vec<_> = (0..THREADS)
        .map(|id| thread::spawn(move || churn(id, rounds)))
        .collect();

    let mut gifts: Vec<Msg> = (0..THREADS * 8).map(|_| GIFTS.recv()).collect();
    // Fork for as long as the threads run (and at least FORKS times).
    let mut forked_while_running = 0;
    let mut forks = 0;
    loop {
        let running = handles.iter().filter(|h| !h.is_finished()).count();
        if running == 0 && forks >= FORKS {
            break;
        }
        let round = forks;
        forks += 1;
        let pid = rt::fork();
        if pid == 0 {
            child(&mut gifts, round);
        }
        assert!(pid > 0, "fork failed: {pid}");
        match sys::wait4(pid, 0) {
            Ok((reaped, status)) if reaped == pid => {
                assert_eq!(status, 0, "child {round} (pid {pid}) ended with status {status:#x}");
            }
            other => panic!("wait4({pid}): {other:?}"),
        }
        if running > 0 {
            forked_while_running += 1;
        }
    }
    println!(
        "fork: {forks} children allocated, freed the threads' blocks and exited 0 ({forked_while_running} forks while threads ran)"
    );

    let reports: Vec<Report> = handles.into_iter().map(|h| h.join()).collect();
    let received: usize = reports.iter().map(|r| r.received).sum();
    println!("threads: {THREADS} threads, {rounds} rounds each, {received} blocks handed over and verified");
    let mut pointers: Vec<usize> = reports.iter().map(|r| r.thread_pointer).collect();
    pointers.push(thread::thread_pointer());
    pointers.sort_unstable();
    pointers.dedup();
    assert_eq!(pointers.len(), THREADS + 1, "thread pointers not unique");
    assert!(pointers.iter().all(|&tp| tp != 0));
    println!("thread pointers: {} distinct, none 0", pointers.len());
    assert!(reports.iter().all(|r| r.errno_kept), "a thread's errno changed");
    // SAFETY: as above.
    assert_eq!(unsafe { *errno }, 7, "the main thread's errno changed");
    println!("errno: one per thread");

    assert!(gifts.iter().all(verify));
    drop(gifts);
    assert!(RING.iter().all(|c| c.try_recv().is_none()) && GIFTS.try_recv().is_none());
    // Blocks freed into the heaps of threads that have ended are counted
    // until a heap is tidied: `trim` tidies every heap no thread owns.
    ALLOC.trim();
    let after = ALLOC.stats().in_use_bytes;
    println!("in use: {before} bytes before the threads, {after} after (trimmed)");
    // The channels keep their queues' buffers.
    assert!(after <= before + (64 << 10), "{after} bytes still in use");
    println!("threads: ok");
    0
}

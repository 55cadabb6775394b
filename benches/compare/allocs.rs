//! The allocators under test, each a static, and the child-side entry that
//! runs one workload on one of them.
//!
//! The child's own bookkeeping (slot tables, the channel, threads) uses the
//! process's `#[global_allocator]`, which stays `System`; only the workload's
//! blocks go through the allocator being measured.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use crate::exec::{Exec, Status};
use crate::workloads::{generate, Params, Workload};

/// Allocator names, in report order (glibc first: it is the baseline).
pub const NAMES: [&str; 7] = [
    "glibc",
    "nolibc-alloc",
    "dlmalloc",
    "talc",
    "linked_list",
    "rlsf",
    "mimalloc",
];

/// Accepted by `--allocs` but not run by default: `floor`, the workloads
/// without an allocator's work (`floor.rs`).
pub const EXTRA: [&str; 1] = ["floor"];

/// The size of the reserved (MAP_NORESERVE) region that talc and
/// linked_list_allocator get as their whole arena.
pub const ARENA_BYTES: usize = 8 << 30;

/// One line in `allocs` of the report: how each allocator is set up.
pub fn setup_note(name: &str) -> &'static str {
    match name {
        "glibc" => "std::alloc::System (glibc malloc)",
        "nolibc-alloc" => "nolibc_alloc::NolibcAlloc::new() (defaults)",
        "dlmalloc" => "dlmalloc::GlobalDlmalloc (its own mmap source)",
        "talc" => "talc::TalcLock<spinning_top::RawSpinlock, Claim> over one 8 GiB MAP_NORESERVE region",
        "linked_list" => "linked_list_allocator::Heap over one 8 GiB MAP_NORESERVE region, behind a spin lock",
        "rlsf" => "rlsf::GlobalTlsf (grows with mmap, pthread mutex)",
        "mimalloc" => "mimalloc::MiMalloc (bundled C mimalloc, built with cc)",
        "floor" => "not an allocator: the workload's own work (compare/floor.rs: per-thread LIFO lists over a pre-faulted region, no return of a block to the thread that allocated it; prodcons: a ring per producer, free does nothing)",
        _ => "",
    }
}

static NOLIBC: nolibc_alloc::NolibcAlloc = nolibc_alloc::NolibcAlloc::new();
static TALC: talc::TalcLock<spinning_top::RawSpinlock, talc::source::Claim> =
    talc::TalcLock::new(talc::source::Claim::standby());
static LLA: SpinHeap = SpinHeap {
    locked: AtomicBool::new(false),
    heap: UnsafeCell::new(linked_list_allocator::Heap::empty()),
};
static TLSF: rlsf::GlobalTlsf = rlsf::GlobalTlsf::new();

/// `linked_list_allocator::Heap` behind a test-and-test-and-set spin lock
/// (its own `LockedHeap` needs a feature the library build does not enable).
struct SpinHeap {
    locked: AtomicBool,
    heap: UnsafeCell<linked_list_allocator::Heap>,
}

// SAFETY: `heap` is only touched while `locked` is held.
unsafe impl Sync for SpinHeap {}

impl SpinHeap {
    fn with<R>(&self, f: impl FnOnce(&mut linked_list_allocator::Heap) -> R) -> R {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.locked.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        }
        // SAFETY: the lock is held, so this is the only reference.
        let r = f(unsafe { &mut *self.heap.get() });
        self.locked.store(false, Ordering::Release);
        r
    }
}

// SAFETY: linked_list_allocator returns blocks of at least the layout's
// size and alignment, and takes back only what it handed out.
unsafe impl GlobalAlloc for SpinHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.with(|h| {
            h.allocate_first_fit(layout)
                .map_or(std::ptr::null_mut(), |p| p.as_ptr())
        })
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller returns a block this heap handed out.
        self.with(|h| unsafe { h.deallocate(std::ptr::NonNull::new_unchecked(ptr), layout) })
    }
}

/// Reserves `ARENA_BYTES` of address space without committing memory.
fn reserve_arena() -> *mut u8 {
    use nolibc_alloc::sys;
    // SAFETY: a fresh anonymous mapping at an address the kernel picks.
    match unsafe { sys::mmap_anon(0, ARENA_BYTES, sys::PROT_RW, sys::MAP_PRIVATE_ANON | sys::MAP_NORESERVE) } {
        Ok(a) => a as *mut u8,
        Err(e) => {
            eprintln!("compare: cannot reserve the arena: {e}");
            std::process::exit(3);
        }
    }
}

/// What a child reports.
pub struct Outcome {
    pub status: Status,
    pub cpu_ns: u64,
    pub wall_ns: u64,
    pub ops: u64,
    pub peak_live_bytes: u64,
    pub rss_start_kb: u64,
    pub peak_rss_kb: u64,
    pub rss_end_kb: u64,
    /// Frees of a block another thread allocated (native workloads).
    pub remote_frees: Option<u64>,
}

impl Outcome {
    /// The child's stdout line, parsed by `parse_outcome`.
    pub fn line(&self) -> String {
        let remote = self
            .remote_frees
            .map_or(String::new(), |n| format!(" remote_frees={n}"));
        format!(
            "status={} cpu_ns={} wall_ns={} ops={} peak_live_bytes={} rss_start_kb={} peak_rss_kb={} rss_end_kb={}{remote}",
            self.status.name(),
            self.cpu_ns,
            self.wall_ns,
            self.ops,
            self.peak_live_bytes,
            self.rss_start_kb,
            self.peak_rss_kb,
            self.rss_end_kb
        )
    }
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
pub fn rss_kb() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l[k.len()..].trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time of the whole process (all threads), user + system, in ns.
pub fn process_cpu_ns() -> u64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    const CLOCK_PROCESS_CPUTIME_ID: usize = 2;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: the kernel writes one timespec into `ts`.
    let r = unsafe {
        syscalls::syscall!(
            syscalls::Sysno::clock_gettime,
            CLOCK_PROCESS_CPUTIME_ID,
            &mut ts as *mut Timespec
        )
    };
    if r.is_err() {
        return 0;
    }
    ts.sec as u64 * 1_000_000_000 + ts.nsec as u64
}

/// Runs workload `w` on allocator `a`: every stream on its own thread (one
/// stream: this thread). Times the workload only.
fn run<A: GlobalAlloc + Sync>(a: &A, w: Workload, p: &Params) -> Outcome {
    if let Some(n) = w.native(p) {
        return crate::native::run(a, n);
    }
    let n = w.streams();
    let mut execs: Vec<Exec<'_, A>> = (0..n).map(|s| Exec::new(a, w.slots(p, s), s)).collect();
    if matches!(w, Workload::ProdCons | Workload::ProdCons4) {
        // Pair k: stream 2k produces, 2k + 1 consumes.
        for k in 0..n / 2 {
            let (tx, rx) = sync_channel(256);
            execs[2 * k].tx = Some(tx);
            execs[2 * k + 1].rx = Some(rx);
        }
    }
    let (rss_start_kb, _) = rss_kb();
    let wall = Instant::now();
    let cpu0 = process_cpu_ns();
    let execs: Vec<Exec<'_, A>> = if n == 1 {
        let mut e = execs.pop().unwrap_or_else(|| unreachable!());
        generate(w, p, 0, &mut e);
        vec![e]
    } else {
        std::thread::scope(|sc| {
            let hs: Vec<_> = execs
                .into_iter()
                .enumerate()
                .map(|(i, mut e)| {
                    sc.spawn(move || {
                        generate(w, p, i, &mut e);
                        // The consumer hangs up, so a stuck producer returns.
                        e.rx = None;
                        e.tx = None;
                        e
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| std::process::exit(4)))
                .collect()
        })
    };
    let cpu_ns = process_cpu_ns() - cpu0;
    let wall_ns = wall.elapsed().as_nanos() as u64;
    let (rss_end_kb, peak_rss_kb) = rss_kb();
    Outcome {
        status: execs.iter().map(|e| e.status).max().unwrap_or(Status::Ok),
        cpu_ns,
        wall_ns,
        ops: execs.iter().map(|e| e.ops).sum(),
        peak_live_bytes: execs.iter().map(|e| e.peak_live_bytes).sum(),
        rss_start_kb,
        peak_rss_kb,
        rss_end_kb,
        remote_frees: None,
    }
}

/// The child: runs `w` on the allocator called `name`. `None` for an
/// unknown name.
pub fn run_named(name: &str, w: Workload, p: &Params) -> Option<Outcome> {
    Some(match name {
        "glibc" => run(&System, w, p),
        "nolibc-alloc" => run(&NOLIBC, w, p),
        "dlmalloc" => run(&dlmalloc::GlobalDlmalloc, w, p),
        "talc" => {
            // SAFETY: the arena is fresh, writable, and used by nothing else.
            unsafe { TALC.lock().claim(reserve_arena(), ARENA_BYTES) };
            run(&TALC, w, p)
        }
        "linked_list" => {
            let base = reserve_arena();
            // SAFETY: as for talc.
            LLA.with(|h| unsafe { h.init(base, ARENA_BYTES) });
            run(&LLA, w, p)
        }
        "rlsf" => run(&TLSF, w, p),
        "mimalloc" => run(&mimalloc::MiMalloc, w, p),
        "floor" => {
            crate::floor::init(matches!(w, Workload::ProdCons | Workload::ProdCons4));
            run(&crate::floor::Floor, w, p)
        }
        // Self-checks of the suite: allocators that must be caught.
        "selftest-overlap" => run(&Overlapping, w, p),
        "selftest-oom" => run(&Refusing, w, p),
        _ => return None,
    })
}

/// A broken allocator: every 100th block overlaps the previous one by 8
/// bytes. The checks must report CORRUPT.
struct Overlapping;
static OVERLAP_COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static OVERLAP_LAST: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: deliberately broken (blocks overlap); only used by the self-check,
// whose workloads only fill and read the blocks, never free the overlapping
// one to the system allocator.
unsafe impl GlobalAlloc for Overlapping {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let n = OVERLAP_COUNT.fetch_add(1, Ordering::Relaxed);
        if n % 100 == 99 {
            let last = OVERLAP_LAST.load(Ordering::Relaxed);
            if last != 0 && layout.align() <= 8 {
                return (last + 8) as *mut u8;
            }
        }
        // Big enough for the overlap trick above; never freed (leaks).
        // SAFETY: non-zero size.
        let p = unsafe { System.alloc(Layout::from_size_align_unchecked(layout.size() + 4096, layout.align())) };
        OVERLAP_LAST.store(p as usize, Ordering::Relaxed);
        p
    }
    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

/// An allocator that runs out after 1000 blocks. The checks must report OOM.
struct Refusing;
static REFUSE_COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: forwards to System, or returns null.
unsafe impl GlobalAlloc for Refusing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if REFUSE_COUNT.fetch_add(1, Ordering::Relaxed) >= 1000 {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

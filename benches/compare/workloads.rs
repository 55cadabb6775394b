//! The workloads, as deterministic operation streams.
//!
//! A generator only decides *what* to do (which slot, which size); it never
//! looks at an address, so the stream is the same for every allocator. The
//! same generator feeds the executor (real allocations through
//! `GlobalAlloc`, `exec.rs`) and the recorder (an op file the C driver
//! replays, `cdriver.rs`).

/// splitmix64: the whole suite's only source of randomness.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// Roughly log-uniform in `[2^lo_exp, 2^hi_exp)`.
    pub fn log_uniform(&mut self, lo_exp: u32, hi_exp: u32) -> u64 {
        let e = lo_exp + self.below(u64::from(hi_exp - lo_exp)) as u32;
        (1u64 << e) + self.below(1u64 << e)
    }
}

/// The splitmix64 finalizer; also the pattern hash (`driver.c` has the same).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where a stream of operations goes. Slots are per stream.
pub trait Sink {
    /// Allocates `size` bytes aligned to `1 << align_log2` into an empty slot.
    fn alloc(&mut self, slot: u32, size: u64, align_log2: u8);
    /// Frees the block in `slot`.
    fn free(&mut self, slot: u32);
    /// Resizes the block in `slot` (alignment unchanged).
    fn realloc(&mut self, slot: u32, new_size: u64);
    /// Hands the block in `slot` to the other stream (producer side).
    fn send(&mut self, slot: u32);
    /// Takes one block from the other stream, checks and frees it.
    fn recv_free(&mut self);
    /// False once the sink has failed (OOM, CORRUPT): generators stop early.
    fn ok(&self) -> bool;
}

/// Counts the slots a stream uses.
struct SlotCounter(usize);

impl Sink for SlotCounter {
    fn alloc(&mut self, slot: u32, _: u64, _: u8) {
        self.0 = self.0.max(slot as usize + 1);
    }
    fn free(&mut self, _: u32) {}
    fn realloc(&mut self, _: u32, _: u64) {}
    fn send(&mut self, _: u32) {}
    fn recv_free(&mut self) {}
    fn ok(&self) -> bool {
        true
    }
}

/// The workloads, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Small,
    Mixed,
    Large,
    Realloc,
    Threads,
    ProdCons,
    Frag,
    Burst,
    // Added later: appended, so the seeds (`w as u64`) of the ones above stay.
    Threads4,
    ProdCons4,
    Server,
    Server4,
    Loop64,
    Loop64x4,
}

pub const ALL: [Workload; 14] = [
    Workload::Small,
    Workload::Mixed,
    Workload::Large,
    Workload::Realloc,
    Workload::Threads,
    Workload::Threads4,
    Workload::ProdCons,
    Workload::ProdCons4,
    Workload::Server,
    Workload::Server4,
    Workload::Loop64,
    Workload::Loop64x4,
    Workload::Frag,
    Workload::Burst,
];

/// How a workload runs: from an operation stream per thread (recorded to
/// files for the C driver), or as a program of its own on both sides
/// (`native.rs` and the native modes of `driver.c`), because what it does
/// depends on other threads (the shared table) or because its stream would be
/// too long to record (20 M steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Native {
    /// `threads` threads replace random blocks of one shared table of `slots`;
    /// `steps` replacements in all.
    Server { threads: usize, steps: u64, slots: usize },
    /// `threads` threads, each its own 64 live blocks of 8-135 B: free one,
    /// allocate one; `steps` in all.
    Loop { threads: usize, steps: u64 },
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Small => "small",
            Workload::Mixed => "mixed",
            Workload::Large => "large",
            Workload::Realloc => "realloc",
            Workload::Threads => "threads",
            Workload::ProdCons => "prodcons",
            Workload::Frag => "frag",
            Workload::Burst => "burst",
            Workload::Threads4 => "threads4",
            Workload::ProdCons4 => "prodcons4",
            Workload::Server => "server",
            Workload::Server4 => "server4",
            Workload::Loop64 => "loop64",
            Workload::Loop64x4 => "loop64x4",
        }
    }
    pub fn from_name(s: &str) -> Option<Workload> {
        ALL.iter().copied().find(|w| w.name() == s)
    }
    /// Streams run concurrently, one thread each (native workloads: 0).
    pub fn streams(self) -> usize {
        match self {
            Workload::Threads | Workload::ProdCons => 2,
            Workload::Threads4 | Workload::ProdCons4 => 4,
            Workload::Server | Workload::Server4 | Workload::Loop64 | Workload::Loop64x4 => 0,
            _ => 1,
        }
    }
    /// The workload's own program, if it is not an operation stream.
    pub fn native(self, p: &Params) -> Option<Native> {
        let server = |threads| Native::Server {
            threads,
            steps: p.server_steps,
            slots: p.server_slots,
        };
        match self {
            Workload::Server => Some(server(2)),
            Workload::Server4 => Some(server(4)),
            Workload::Loop64 => Some(Native::Loop {
                threads: 1,
                steps: p.loop_steps,
            }),
            Workload::Loop64x4 => Some(Native::Loop {
                threads: 4,
                steps: p.loop_steps,
            }),
            _ => None,
        }
    }
    /// One line for the report.
    pub fn describe(self, p: &Params) -> String {
        match self {
            Workload::Small => format!(
                "small churn: 8-512 B (skewed small), {} live, random replacement, {} ops",
                p.small_live, p.small_ops
            ),
            Workload::Mixed => format!(
                "mixed: 16 B-64 KiB log-uniform, {} live, random replacement, {} ops",
                p.mixed_live, p.mixed_ops
            ),
            Workload::Large => format!(
                "large: 128 KiB-8 MiB, {} live, random replacement, {} ops",
                p.large_live, p.large_ops
            ),
            Workload::Realloc => format!(
                "realloc growth: 16 B -> {} by doubling, and 4 KiB -> {} by +4 KiB steps; {} rounds",
                bytes(p.realloc_double_cap),
                bytes(p.realloc_step_cap),
                p.realloc_rounds
            ),
            Workload::Threads => format!(
                "two threads, one allocator: small churn each ({} live, {} ops per thread)",
                p.small_live / 2,
                p.small_ops / 2
            ),
            Workload::Threads4 => format!(
                "four threads, one allocator: small churn each ({} live, {} ops per thread)",
                p.small_live / 4,
                p.small_ops / 4
            ),
            Workload::ProdCons => format!(
                "producer/consumer: 16 B-4 KiB log-uniform, {} blocks through a bounded channel",
                p.prodcons_blocks
            ),
            Workload::ProdCons4 => format!(
                "two producer/consumer pairs (4 threads): 16 B-4 KiB log-uniform, {} blocks per pair, \
                 each through its own bounded channel",
                p.prodcons_blocks / 2
            ),
            Workload::Server | Workload::Server4 => format!(
                "server: {} threads replace random blocks (16 B-1 KiB) of one shared table of {} slots, \
                 drawing again (up to {SERVER_DRAWS} draws) while the slot holds their own block, so most \
                 frees are of another thread's block; {} replacements in all",
                self.streams_native(),
                p.server_slots,
                p.server_steps
            ),
            Workload::Loop64 | Workload::Loop64x4 => format!(
                "malloc/free loop: {} thread(s), each 64 live blocks of 8-135 B, each step frees a random one \
                 and allocates 8 + (rand & 127) B in its place; {} steps in all",
                self.streams_native(),
                p.loop_steps
            ),
            Workload::Frag => format!(
                "fragmentation: {} blocks of 16-256 B, free every other, then {} of 1-4 KiB",
                p.frag_small, p.frag_big
            ),
            Workload::Burst => format!(
                "burst: {} in 16 B-16 KiB blocks (log-uniform), then free all",
                bytes(p.burst_bytes)
            ),
        }
    }
    /// The thread count of a native workload.
    pub fn streams_native(self) -> usize {
        match self {
            Workload::Server => 2,
            Workload::Server4 | Workload::Loop64x4 => 4,
            Workload::Loop64 => 1,
            _ => self.streams(),
        }
    }
    /// The slot table size of `stream`: one dry run of the generator.
    pub fn slots(self, p: &Params, stream: usize) -> usize {
        let mut c = SlotCounter(0);
        generate(self, p, stream, &mut c);
        c.0
    }
}

fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{} KiB", n >> 10)
    }
}

/// Operation counts; `--quick` shrinks them.
#[derive(Clone, Debug)]
pub struct Params {
    pub small_live: usize,
    pub small_ops: u64,
    pub mixed_live: usize,
    pub mixed_ops: u64,
    pub large_live: usize,
    pub large_ops: u64,
    pub realloc_double_cap: u64,
    pub realloc_step_cap: u64,
    pub realloc_rounds: u32,
    pub prodcons_blocks: u64,
    pub frag_small: usize,
    pub frag_big: usize,
    pub burst_bytes: u64,
    pub server_slots: usize,
    pub server_steps: u64,
    pub loop_steps: u64,
}

/// Draws of a slot a server thread makes, at most, to find one that holds
/// another thread's block.
pub const SERVER_DRAWS: u32 = 4;

impl Params {
    pub fn full() -> Self {
        Params {
            small_live: 10_000,
            small_ops: 2_000_000,
            mixed_live: 2_000,
            mixed_ops: 500_000,
            large_live: 16,
            large_ops: 2_000,
            realloc_double_cap: 64 << 20,
            realloc_step_cap: 4 << 20,
            realloc_rounds: 2,
            prodcons_blocks: 400_000,
            frag_small: 200_000,
            frag_big: 50_000,
            burst_bytes: 64 << 20,
            server_slots: 32_768,
            server_steps: 2_000_000,
            loop_steps: 20_000_000,
        }
    }
    pub fn quick() -> Self {
        Params {
            small_live: 1_000,
            small_ops: 20_000,
            mixed_live: 200,
            mixed_ops: 5_000,
            large_live: 4,
            large_ops: 40,
            realloc_double_cap: 8 << 20,
            realloc_step_cap: 256 << 10,
            realloc_rounds: 1,
            prodcons_blocks: 5_000,
            frag_small: 2_000,
            frag_big: 500,
            burst_bytes: 4 << 20,
            server_slots: 256,
            server_steps: 20_000,
            loop_steps: 20_000,
        }
    }
}

fn small_size(r: &mut Rng) -> u64 {
    match r.below(100) {
        0..=49 => r.range(8, 32),
        50..=79 => r.range(33, 128),
        _ => r.range(129, 512),
    }
}

/// 8 mostly; 1 in 32 blocks asks for `2^lo..=2^hi`.
fn align_log2(r: &mut Rng, lo: u8, hi: u8) -> u8 {
    if r.below(32) == 0 {
        lo + r.below(u64::from(hi - lo + 1)) as u8
    } else {
        3
    }
}

/// Fills `live` slots, then replaces a random one until `ops` operations
/// (allocations plus frees) are done, then frees everything.
fn churn<S: Sink>(
    s: &mut S,
    r: &mut Rng,
    live: usize,
    ops: u64,
    mut size: impl FnMut(&mut Rng) -> u64,
    align: (u8, u8),
) {
    let mut done = 0u64;
    for slot in 0..live as u32 {
        let (sz, al) = (size(r), align_log2(r, align.0, align.1));
        s.alloc(slot, sz, al);
        done += 1;
    }
    while done + 2 <= ops && s.ok() {
        let slot = r.below(live as u64) as u32;
        s.free(slot);
        let (sz, al) = (size(r), align_log2(r, align.0, align.1));
        s.alloc(slot, sz, al);
        done += 2;
    }
    for slot in 0..live as u32 {
        s.free(slot);
    }
}

/// Generates stream `stream` of workload `w`.
pub fn generate<S: Sink>(w: Workload, p: &Params, stream: usize, s: &mut S) {
    let mut r = Rng::new(0x5EED_0000 + (w as u64) * 0x100 + stream as u64);
    match w {
        Workload::Small => churn(s, &mut r, p.small_live, p.small_ops, small_size, (4, 8)),
        Workload::Threads => churn(s, &mut r, p.small_live / 2, p.small_ops / 2, small_size, (4, 8)),
        Workload::Threads4 => churn(s, &mut r, p.small_live / 4, p.small_ops / 4, small_size, (4, 8)),
        // Not operation streams (`native`): nothing to generate.
        Workload::Server | Workload::Server4 | Workload::Loop64 | Workload::Loop64x4 => {}
        Workload::Mixed => churn(s, &mut r, p.mixed_live, p.mixed_ops, |r| r.log_uniform(4, 16), (4, 12)),
        Workload::Large => churn(s, &mut r, p.large_live, p.large_ops, |r| r.log_uniform(17, 23), (4, 12)),
        Workload::Realloc => {
            for _ in 0..p.realloc_rounds {
                let mut size = 16;
                s.alloc(0, size, 3);
                while size < p.realloc_double_cap && s.ok() {
                    size *= 2;
                    s.realloc(0, size);
                }
                s.free(0);
                let mut size = 4096;
                s.alloc(0, size, 3);
                while size < p.realloc_step_cap && s.ok() {
                    size += 4096;
                    s.realloc(0, size);
                }
                s.free(0);
            }
        }
        Workload::ProdCons | Workload::ProdCons4 => {
            // Even streams produce, odd ones consume (pair = stream / 2).
            let pairs = w.streams() as u64 / 2;
            for _ in 0..p.prodcons_blocks / pairs {
                if !s.ok() {
                    break;
                }
                if stream.is_multiple_of(2) {
                    let (sz, al) = (r.log_uniform(4, 12), align_log2(&mut r, 4, 8));
                    s.alloc(0, sz, al);
                    s.send(0);
                } else {
                    s.recv_free();
                }
            }
        }
        Workload::Frag => {
            for slot in 0..p.frag_small as u32 {
                s.alloc(slot, r.range(16, 256), 3);
            }
            for slot in (0..p.frag_small as u32).step_by(2) {
                s.free(slot);
            }
            for i in 0..p.frag_big as u32 {
                s.alloc(p.frag_small as u32 + i, r.range(1024, 4096), 3);
            }
            for slot in (1..p.frag_small as u32).step_by(2) {
                s.free(slot);
            }
            for i in 0..p.frag_big as u32 {
                s.free(p.frag_small as u32 + i);
            }
        }
        Workload::Burst => {
            let (mut total, mut slot) = (0u64, 0u32);
            while total < p.burst_bytes && s.ok() {
                let sz = r.log_uniform(4, 14);
                s.alloc(slot, sz, 3);
                total += sz;
                slot += 1;
            }
            for i in 0..slot {
                s.free(i);
            }
        }
    }
}

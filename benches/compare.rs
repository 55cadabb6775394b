//! `cargo bench --bench compare [-- OPTIONS]`: nolibc-alloc against its peers.
//!
//! Every allocator runs the same deterministic operation streams
//! (`compare/workloads.rs`) through `GlobalAlloc`, each allocator × workload
//! in a child process of its own (this binary, re-executed with `--child`),
//! so peak RSS belongs to one allocator. Runs are interleaved (A B C, B C A,
//! …). glibc's and musl's malloc, nolibc-alloc's C ABI, and jemalloc,
//! tcmalloc and mimalloc preloaded, run the same streams through a C driver
//! that replays recorded op files (`compare/cdriver.rs`, `c/driver.c`). The
//! native workloads (`server*`, `loop64*`) are programs of their own on both
//! sides (`compare/native.rs`, the native modes of `c/driver.c`).
//!
//! Options:
//!   --quick            tiny op counts, 1 run; exit 1 if any cell fails (CI);
//!                      also what `cargo test --all-targets` runs (no arguments);
//!                      ends with the instruction counts at 20 000 steps
//!   --runs N           timed runs per cell (default 5)
//!   --workloads a,b    only these workloads (small mixed large realloc threads threads4
//!                      prodcons prodcons4 server server4 loop64 loop64x4 frag burst)
//!   --allocs a,b       only these allocators (glibc is always added: it is the baseline);
//!                      `floor` (not in the default run) is the workloads without an
//!                      allocator's work (`compare/floor.rs`), and adds `floor-C` to the C table
//!   --timeout S        kill a child after S seconds (default 60)
//!   --no-strace        skip the syscall-counting run
//!   --no-c             skip the C driver table
//!   --no-footprint     skip `cargo xtask size`
//!   --publish          also copy the results to benches/results/ and refresh BENCHMARKS.md
//!   --instructions     only the instruction counts (valgrind cachegrind) of one
//!                      free + malloc pair on `loop64`, C and Rust paths
//!                      (`compare/instructions.rs`); writes `<target>/bench/instructions.md`
//!   --steps N          steps of the instruction-count loop (default 2 000 000)
//!   --no-instructions  skip the instruction counts of `--quick`
//!   --help             this text
//!
//! Output: markdown tables on stdout and in `<target>/bench/results.md`, plus
//! `results.json`, `results.csv` and `compare.svg` beside it (`--quick`:
//! `<target>/bench/quick/`).

#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

#[path = "compare/allocs.rs"]
mod allocs;
#[path = "compare/cdriver.rs"]
mod cdriver;
#[path = "compare/exec.rs"]
mod exec;
#[path = "compare/floor.rs"]
mod floor;
// The pinned nightly and the build directories, shared with the xtask and
// tests/c_abi.rs (for the nolibc-alloc-C driver).
#[path = "compare/footprint.rs"]
mod footprint;
#[path = "../xtask/src/freestanding.rs"]
mod freestanding;
#[path = "compare/instructions.rs"]
mod instructions;
#[path = "compare/native.rs"]
mod native;
#[path = "compare/report.rs"]
mod report;
#[path = "compare/workloads.rs"]
mod workloads;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use workloads::{Params, Workload};

/// How one child run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum RunStatus {
    Ok,
    Oom,
    Corrupt,
    Crash(String),
    Timeout(u64),
    Missing(String),
}

impl RunStatus {
    pub fn label(&self) -> String {
        match self {
            RunStatus::Ok => "OK".into(),
            RunStatus::Oom => "OOM".into(),
            RunStatus::Corrupt => "CORRUPT".into(),
            RunStatus::Crash(s) => format!("CRASH ({s})"),
            RunStatus::Timeout(s) => format!("TIMEOUT (>{s} s)"),
            RunStatus::Missing(s) => format!("MISSING ({s})"),
        }
    }
    /// A failure of the allocator (not of the machine's setup).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            RunStatus::Oom | RunStatus::Corrupt | RunStatus::Crash(_) | RunStatus::Timeout(_)
        )
    }
}

/// One child run.
#[derive(Clone, Debug)]
pub struct Sample {
    pub cpu_ns: u64,
    pub wall_ns: u64,
    pub ops: u64,
    pub peak_live_bytes: u64,
    pub rss_start_kb: u64,
    pub peak_rss_kb: u64,
    pub rss_end_kb: u64,
    /// Frees of a block another thread allocated (native workloads).
    pub remote_frees: Option<u64>,
    /// Blocks returned with less than the asked alignment (C driver).
    pub misaligned: u64,
}

impl Sample {
    pub fn ns_per_op(&self) -> f64 {
        self.cpu_ns as f64 / self.ops.max(1) as f64
    }
}

/// Memory syscalls counted by strace: brk, mmap, munmap, mremap, madvise.
pub const SYSCALLS: [&str; 5] = ["brk", "mmap", "munmap", "mremap", "madvise"];

/// Which table a cell belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Rust,
    C,
}

/// One allocator × workload.
pub struct Cell {
    pub table: Table,
    pub alloc: String,
    pub workload: Workload,
    /// Sample of run r, or None when that run failed or was skipped.
    pub runs: Vec<Option<Sample>>,
    /// The worst failure seen, if any.
    pub status: RunStatus,
    /// Counts per `SYSCALLS` entry (baseline subtracted), or why there are none.
    pub syscalls: Result<[u64; 5], String>,
}

struct Options {
    quick: bool,
    runs: usize,
    workloads: Vec<Workload>,
    allocs: Vec<String>,
    timeout: u64,
    strace: bool,
    c: bool,
    footprint: bool,
    publish: bool,
    /// Only the instruction counts.
    instructions: bool,
    /// Steps of the instruction-count loop.
    steps: u64,
    /// The instruction counts at the end of `--quick`.
    quick_instructions: bool,
}

const HELP: &str = include_str!("compare.rs");

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        quick: false,
        runs: 5,
        workloads: workloads::ALL.to_vec(),
        allocs: allocs::NAMES.iter().map(|s| s.to_string()).collect(),
        timeout: 60,
        strace: true,
        c: true,
        footprint: true,
        publish: false,
        instructions: false,
        steps: 2_000_000,
        quick_instructions: true,
    };
    let mut runs = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => o.quick = true,
            "--runs" => runs = Some(value()?.parse::<usize>().map_err(|e| format!("--runs: {e}"))?.max(1)),
            "--timeout" => o.timeout = value()?.parse().map_err(|e| format!("--timeout: {e}"))?,
            "--workloads" => {
                o.workloads = value()?
                    .split(',')
                    .map(|s| Workload::from_name(s).ok_or(format!("unknown workload {s}")))
                    .collect::<Result<_, _>>()?
            }
            "--allocs" => {
                let v = value()?;
                let mut list = vec!["glibc".to_string()];
                for s in v.split(',') {
                    if !allocs::NAMES.contains(&s) && !allocs::EXTRA.contains(&s) {
                        return Err(format!(
                            "unknown allocator {s}; known: {}, {}",
                            allocs::NAMES.join(", "),
                            allocs::EXTRA.join(", ")
                        ));
                    }
                    if !list.iter().any(|x| x == s) {
                        list.push(s.to_string());
                    }
                }
                o.allocs = list;
            }
            "--no-strace" => o.strace = false,
            "--no-c" => o.c = false,
            "--no-footprint" => o.footprint = false,
            "--publish" => o.publish = true,
            "--instructions" => o.instructions = true,
            "--no-instructions" => o.quick_instructions = false,
            "--steps" => o.steps = value()?.parse::<u64>().map_err(|e| format!("--steps: {e}"))?.max(1),
            "--help" | "-h" => {
                // The module documentation at the top of this file.
                for l in HELP.lines().take_while(|l| l.starts_with("//!")) {
                    println!("{}", l.trim_start_matches("//!").strip_prefix(' ').unwrap_or(""));
                }
                std::process::exit(0);
            }
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            _ => return Err(format!("unknown option {a}")),
        }
    }
    // `cargo test --all-targets` runs this binary with no arguments (`cargo
    // bench` adds `--bench`): then check that every cell runs and verifies.
    if args.is_empty() {
        eprintln!("compare: no arguments (test mode): running as --quick");
        o.quick = true;
    }
    o.runs = runs.unwrap_or(if o.quick { 1 } else { 5 });
    Ok(o)
}

/// Parses a child's `key=value ...` line.
fn parse_outcome(out: &str) -> Option<(String, Sample)> {
    let line = out.lines().rev().find(|l| l.starts_with("status="))?;
    let get = |k: &str| -> Option<&str> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
    };
    let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
    Some((
        get("status")?.to_string(),
        Sample {
            cpu_ns: num("cpu_ns")?,
            wall_ns: num("wall_ns")?,
            ops: num("ops")?,
            peak_live_bytes: num("peak_live_bytes")?,
            rss_start_kb: num("rss_start_kb")?,
            peak_rss_kb: num("peak_rss_kb")?,
            rss_end_kb: num("rss_end_kb")?,
            remote_frees: num("remote_frees"),
            misaligned: num("misaligned").unwrap_or(0),
        },
    ))
}

/// Runs a command with a timeout; returns (stdout, status).
pub(crate) fn run_child(cmd: &mut Command, timeout: u64) -> (String, RunStatus) {
    let mut child = match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return (String::new(), RunStatus::Missing(format!("cannot start: {e}"))),
    };
    // Drain the pipes on threads so a chatty child cannot block.
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = so.as_mut() {
            let _ = std::io::Read::read_to_string(p, &mut s);
        }
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = se.as_mut() {
            let _ = std::io::Read::read_to_string(p, &mut s);
        }
        s
    });
    let start = Instant::now();
    let exit = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() > Duration::from_secs(timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    let out = t_out.join().unwrap_or_default();
    let err = t_err.join().unwrap_or_default();
    let Some(exit) = exit else {
        return (out, RunStatus::Timeout(timeout));
    };
    if !exit.success() {
        use std::os::unix::process::ExitStatusExt;
        let why = match exit.signal() {
            Some(sig) => format!("signal {sig}"),
            None => format!("exit {}", exit.code().unwrap_or(-1)),
        };
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        let why = if first.is_empty() {
            why
        } else {
            format!("{why}: {}", first.chars().take(80).collect::<String>())
        };
        return (out, RunStatus::Crash(why));
    }
    (out, RunStatus::Ok)
}

/// The command that runs cell (table, alloc, w).
fn cell_command(table: Table, alloc: &str, w: Workload, o: &Options, ctx: &Ctx) -> Result<Command, String> {
    match table {
        Table::Rust => {
            let mut c = Command::new(&ctx.exe);
            c.args(["--child", alloc, w.name()]);
            if o.quick {
                c.arg("--quick");
            }
            Ok(c)
        }
        Table::C => {
            let d = ctx.drivers.iter().find(|d| d.name == alloc).ok_or("no such driver")?;
            let mut c = d.command()?;
            if d.name == "floor-C" && matches!(w, Workload::ProdCons | Workload::ProdCons4) {
                c.env("FLOOR_RING", "1"); // compare/floor.rs: the producer's ring
            }
            let p = if o.quick { Params::quick() } else { Params::full() };
            match w.native(&p) {
                Some(workloads::Native::Server { threads, steps, slots }) => {
                    c.args(["server", &steps.to_string(), &threads.to_string(), &slots.to_string()]);
                }
                Some(workloads::Native::Loop { threads, steps }) => {
                    c.args(["loop64", &steps.to_string(), &threads.to_string()]);
                }
                None => {
                    let files = ctx.op_files.iter().find(|(ww, _)| *ww == w).map(|(_, f)| f.clone());
                    c.args(files.ok_or("op files were not recorded")?);
                }
            }
            Ok(c)
        }
    }
}

fn run_cell_once(cell: &Cell, o: &Options, ctx: &Ctx) -> (Option<Sample>, RunStatus) {
    let mut cmd = match cell_command(cell.table, &cell.alloc, cell.workload, o, ctx) {
        Ok(c) => c,
        Err(e) => return (None, RunStatus::Missing(e)),
    };
    let (out, st) = run_child(&mut cmd, o.timeout);
    if st != RunStatus::Ok {
        return (None, st);
    }
    match parse_outcome(&out) {
        Some((s, sample)) => match s.as_str() {
            // A misaligned block fails our allocator and the C libraries; the
            // preloaded peers' are their bugs: timed anyway, reported beside.
            "OK" if sample.misaligned > 0 && !cdriver::PRELOADED.iter().any(|p| p.0 == cell.alloc) => {
                (None, RunStatus::Corrupt)
            }
            "OK" => (Some(sample), RunStatus::Ok),
            "OOM" => (None, RunStatus::Oom),
            "CORRUPT" => (None, RunStatus::Corrupt),
            other => (None, RunStatus::Crash(format!("status {other}"))),
        },
        None => (None, RunStatus::Crash("no result line".into())),
    }
}

/// strace's `-c` summary: calls per syscall name.
fn parse_strace_summary(text: &str) -> [u64; 5] {
    let mut counts = [0u64; 5];
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() < 5 {
            continue;
        }
        let name = t[t.len() - 1];
        if let (Some(i), Ok(calls)) = (SYSCALLS.iter().position(|s| *s == name), t[3].parse::<u64>()) {
            counts[i] = calls;
        }
    }
    counts
}

fn strace_counts(cmd: Command, o: &Options, ctx: &Ctx) -> Result<[u64; 5], String> {
    let file = ctx.work.join("strace.out");
    let _ = std::fs::remove_file(&file);
    let mut s = Command::new("strace");
    s.args(["-f", "-c", "-o"])
        .arg(&file)
        .args(["-e", "trace=brk,mmap,munmap,mremap,madvise"]);
    // The environment (LD_PRELOAD) is for the traced program, not for strace.
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.arg("-E")
                .arg(format!("{}={}", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    s.arg("--").arg(cmd.get_program()).args(cmd.get_args());
    let (_, st) = run_child(&mut s, o.timeout * 3);
    if st != RunStatus::Ok {
        return Err(st.label());
    }
    let text = std::fs::read_to_string(&file).map_err(|e| format!("no strace output: {e}"))?;
    Ok(parse_strace_summary(&text))
}

/// What the parent knows.
pub struct Ctx {
    exe: PathBuf,
    work: PathBuf,
    drivers: Vec<cdriver::Driver>,
    op_files: Vec<(Workload, Vec<PathBuf>)>,
}

fn child_main(args: &[String]) -> ! {
    // --child ALLOC WORKLOAD [--quick]
    let alloc = args.get(1).map(String::as_str).unwrap_or("");
    let wname = args.get(2).map(String::as_str).unwrap_or("");
    let p = if args.iter().any(|a| a == "--quick") {
        Params::quick()
    } else {
        Params::full()
    };
    if wname == "none" {
        // The syscall baseline: start, read /proc like a real child, exit.
        let _ = allocs::rss_kb();
        println!("status=OK cpu_ns=0 wall_ns=0 ops=0 peak_live_bytes=0 rss_start_kb=0 peak_rss_kb=0 rss_end_kb=0");
        std::process::exit(0);
    }
    let Some(w) = Workload::from_name(wname) else {
        eprintln!("compare: unknown workload {wname}");
        std::process::exit(2);
    };
    match allocs::run_named(alloc, w, &p) {
        Some(o) => {
            println!("{}", o.line());
            std::process::exit(0);
        }
        None => {
            eprintln!("compare: unknown allocator {alloc}");
            std::process::exit(2);
        }
    }
}

/// The suite's own check: allocators that are broken on purpose must be
/// reported CORRUPT and OOM. Returns false if the checks missed them.
fn self_check(ctx: &Ctx, o: &Options) -> bool {
    let mut ok = true;
    for (alloc, want) in [
        ("selftest-overlap", RunStatus::Corrupt),
        ("selftest-oom", RunStatus::Oom),
    ] {
        let cell = Cell {
            table: Table::Rust,
            alloc: alloc.into(),
            workload: Workload::Small,
            runs: vec![],
            status: RunStatus::Ok,
            syscalls: Err(String::new()),
        };
        let (_, st) = run_cell_once(&cell, o, ctx);
        if st != want {
            eprintln!(
                "compare: self-check FAILED: {alloc} gave {} instead of {}",
                st.label(),
                want.label()
            );
            ok = false;
        }
    }
    if ok {
        eprintln!("compare: self-check: a broken allocator is caught (CORRUPT) and an exhausted one (OOM)");
    }
    ok
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child_main(&args);
    }
    let o = match parse_options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("compare: {e}");
            std::process::exit(2);
        }
    };
    let p = if o.quick { Params::quick() } else { Params::full() };
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // A quick run must not overwrite the last full run's results.
    let out_dir = if o.quick {
        target.join("bench/quick")
    } else {
        target.join("bench")
    };
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("compare");
    let _ = std::fs::create_dir_all(&out_dir);
    let _ = std::fs::create_dir_all(&work);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from(std::env::args().next().unwrap_or_default()));

    let mut ctx = Ctx {
        exe,
        work: work.clone(),
        drivers: vec![],
        op_files: vec![],
    };
    let started = Instant::now();
    if o.instructions {
        let drivers = cdriver::build(&manifest.join("benches/c/driver.c"), &work.join("c"));
        let (md, failed) = instructions::measure(&drivers, manifest, &target, &work, o.steps, o.timeout.max(600));
        println!("{md}");
        let file = target.join("bench/instructions.md");
        let _ = std::fs::create_dir_all(target.join("bench"));
        match std::fs::write(&file, &md) {
            Ok(()) => eprintln!("compare: wrote {}", file.display()),
            Err(e) => eprintln!("compare: cannot write {}: {e}", file.display()),
        }
        std::process::exit(i32::from(failed));
    }
    let mut failed = !self_check(&ctx, &o);

    if o.c {
        ctx.drivers = cdriver::build(&manifest.join("benches/c/driver.c"), &work.join("c"));
        if o.allocs.iter().any(|a| a == "floor") {
            let glibc = ctx.drivers.iter().find(|d| d.name == "glibc-C").map(|d| d.exe.clone());
            let glibc = glibc.unwrap_or_else(|| Err("no glibc driver".into()));
            let d = cdriver::floor_driver(&manifest.join("benches/c"), &work.join("c"), &glibc);
            ctx.drivers.push(d);
        }
        for d in &ctx.drivers {
            if let Err(e) = &d.exe {
                eprintln!("compare: WARNING: {}: {e}; its cells are marked MISSING", d.name);
            }
        }
        let ops_dir = work.join(if o.quick { "ops-quick" } else { "ops" });
        for &w in &o.workloads {
            match cdriver::record(w, &p, &ops_dir) {
                Ok(files) => ctx.op_files.push((w, files)),
                Err(e) => eprintln!("compare: cannot record op files for {}: {e}", w.name()),
            }
        }
    }

    let mut cells: Vec<Cell> = Vec::new();
    for &w in &o.workloads {
        for a in &o.allocs {
            cells.push(Cell {
                table: Table::Rust,
                alloc: a.clone(),
                workload: w,
                runs: vec![None; o.runs],
                status: RunStatus::Ok,
                syscalls: Err("-".into()),
            });
        }
        for d in &ctx.drivers {
            cells.push(Cell {
                table: Table::C,
                alloc: d.name.to_string(),
                workload: w,
                runs: vec![None; o.runs],
                status: RunStatus::Ok,
                syscalls: Err("-".into()),
            });
        }
    }

    // Timed runs, interleaved: run r starts the rotation at allocator r.
    for r in 0..o.runs {
        for &w in &o.workloads {
            for table in [Table::Rust, Table::C] {
                let idx: Vec<usize> = (0..cells.len())
                    .filter(|&i| cells[i].workload == w && cells[i].table == table)
                    .collect();
                if idx.is_empty() {
                    continue;
                }
                let n = idx.len();
                let mut line = format!(
                    "[run {}/{}] {:<8} {:<4}",
                    r + 1,
                    o.runs,
                    w.name(),
                    if table == Table::C { "C" } else { "" }
                );
                for k in 0..n {
                    let i = idx[(k + r) % n];
                    let cell = &cells[i];
                    if cell.status != RunStatus::Ok {
                        continue; // failed before: one report is enough
                    }
                    let (s, st) = run_cell_once(cell, &o, &ctx);
                    let cell = &mut cells[i];
                    match s {
                        Some(s) => {
                            line += &format!(" {}={:.1}", cell.alloc, s.ns_per_op());
                            cell.runs[r] = Some(s);
                        }
                        None => {
                            line += &format!(" {}={}", cell.alloc, st.label());
                            cell.status = st;
                        }
                    }
                }
                eprintln!("{line}");
            }
        }
    }

    // One extra run per cell under strace, minus an empty child's counts.
    let have_strace = Command::new("strace")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !o.strace {
        eprintln!("compare: syscall counts skipped (--no-strace)");
    } else if !have_strace {
        eprintln!("compare: WARNING: strace is missing (apt-get install strace): the syscall column shows `-`");
    } else {
        let rust_base = {
            let mut c = Command::new(&ctx.exe);
            c.args(["--child", "glibc", "none"]);
            strace_counts(c, &o, &ctx)
        };
        let mut c_base = Vec::new();
        for d in &ctx.drivers {
            if let Ok(mut c) = d.command() {
                c.arg("none");
                c_base.push((d.name, strace_counts(c, &o, &ctx)));
            }
        }
        for cell in cells.iter_mut() {
            if cell.status != RunStatus::Ok {
                continue;
            }
            let base = match cell.table {
                Table::Rust => rust_base.clone(),
                Table::C => c_base
                    .iter()
                    .find(|(n, _)| *n == cell.alloc)
                    .map(|(_, b)| b.clone())
                    .unwrap_or(Err("no baseline".into())),
            };
            let counts =
                cell_command(cell.table, &cell.alloc, cell.workload, &o, &ctx).and_then(|c| strace_counts(c, &o, &ctx));
            cell.syscalls = match (counts, base) {
                (Ok(c), Ok(b)) => Ok(std::array::from_fn(|k| c[k].saturating_sub(b[k]))),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        eprintln!("compare: syscall counts done");
    }

    let fp = if o.footprint && !o.quick {
        Some(footprint::measure(manifest))
    } else {
        None
    };

    // --quick: the instruction counts too, briefly (every program must run).
    let instr = if o.quick && o.quick_instructions && o.c {
        let (md, bad) = instructions::measure(&ctx.drivers, manifest, &target, &work, 20_000, o.timeout.max(120));
        failed |= bad;
        Some(md)
    } else {
        None
    };

    let meta = report::Meta::collect(&o_summary(&o), &p, started.elapsed());
    let mut md = report::markdown(&cells, &o.allocs, &ctx.drivers, &o.workloads, &p, &meta, fp.as_deref());
    if let Some(i) = &instr {
        md += &format!("\n{i}");
    }
    println!("{md}");
    let svg = report::svg(&cells, &o.allocs, &o.workloads);
    let files = [
        ("results.md", md.clone()),
        ("results.json", report::json(&cells, &meta)),
        ("results.csv", report::csv(&cells)),
        ("compare.svg", svg),
    ];
    for (name, text) in &files {
        if let Err(e) = std::fs::write(out_dir.join(name), text) {
            eprintln!("compare: cannot write {}: {e}", out_dir.join(name).display());
        }
    }
    eprintln!(
        "compare: wrote {}/results.{{md,json,csv}} and compare.svg",
        out_dir.display()
    );
    if o.publish && o.quick {
        eprintln!("compare: --publish ignored with --quick (quick numbers are not measurements)");
    } else if o.publish {
        let dir = manifest.join("benches/results");
        let _ = std::fs::create_dir_all(&dir);
        for (name, text) in &files {
            if let Err(e) = std::fs::write(dir.join(name), text) {
                eprintln!("compare: cannot write {}: {e}", dir.join(name).display());
            }
        }
        match report::update_benchmarks_md(&manifest.join("BENCHMARKS.md"), &md) {
            Ok(()) => eprintln!("compare: published to benches/results/ and BENCHMARKS.md"),
            Err(e) => eprintln!("compare: cannot update BENCHMARKS.md: {e}"),
        }
    }

    let bad: Vec<String> = cells
        .iter()
        .filter(|c| c.status.is_failure())
        .map(|c| format!("{} × {}: {}", c.alloc, c.workload.name(), c.status.label()))
        .collect();
    for b in &bad {
        eprintln!("compare: FAILED cell {b}");
    }
    failed |= !bad.is_empty();
    if o.quick && failed {
        std::process::exit(1);
    }
}

/// The command line, for the report.
fn o_summary(o: &Options) -> String {
    let mut s = String::from("cargo bench --bench compare --");
    if o.quick {
        s += " --quick";
    } else {
        s += &format!(" --runs {}", o.runs);
    }
    if o.workloads != workloads::ALL {
        let names: Vec<&str> = o.workloads.iter().map(|w| w.name()).collect();
        s += &format!(" --workloads {}", names.join(","));
    }
    if o.allocs.len() != allocs::NAMES.len() {
        // glibc is always there (the baseline).
        let names: Vec<&str> = o.allocs.iter().map(String::as_str).filter(|n| *n != "glibc").collect();
        s += &format!(" --allocs {}", names.join(","));
    }
    for (off, flag) in [
        (o.strace, "--no-strace"),
        (o.c, "--no-c"),
        (o.footprint, "--no-footprint"),
    ] {
        if !off {
            s += " ";
            s += flag;
        }
    }
    s
}

//! `--instructions`: exact instruction counts of the allocators' fast path,
//! with valgrind's cachegrind (`--cache-sim=no`: instruction counts only;
//! this VM has no hardware counters and its timings are noisy).
//!
//! The program is the one-thread `loop64` (64 live blocks; each step frees a
//! random one and allocates `8 + (rand & 127)` bytes in its place), run
//! twice per allocator: the loop, and the same loop with a fixed place per
//! slot instead of malloc/free (`loop64base`). The difference divided by
//! the steps is the cost of one free + malloc pair, the loop's own work
//! (generator, tags, checks) and the program's start-up subtracted.
//!
//! The C path: `driver.c` with glibc, with musl (static), with jemalloc,
//! tcmalloc, mimalloc and `libnolibc_alloc_c.so` preloaded, and linked
//! statically with `libnolibc_alloc_c.a`. The Rust path: `benches/churn`, the
//! same loop with `NolibcAlloc` as its `#[global_allocator]`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cdriver::Driver;
use crate::{run_child, RunStatus};

/// One program measured.
struct Subject {
    name: String,
    path: &'static str,
    /// The loop's command and the baseline's, or why there are none.
    cmds: Result<(Command, Command), String>,
}

/// A cachegrind profile: the total and the count per function.
struct Profile {
    total: u64,
    per_fn: HashMap<String, u64>,
    stdout: String,
}

fn parse_profile(text: &str) -> Option<(u64, HashMap<String, u64>)> {
    let mut total = None;
    let mut per_fn: HashMap<String, u64> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("summary:") {
            total = v.trim().parse().ok();
        } else if let Some(f) = line.strip_prefix("fn=") {
            current = Some(f.to_string());
        } else if line.starts_with(|c: char| c.is_ascii_digit()) {
            let ir = line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok());
            if let (Some(f), Some(ir)) = (&current, ir) {
                *per_fn.entry(f.clone()).or_default() += ir;
            }
        }
    }
    Some((total?, per_fn))
}

/// Runs `cmd` under cachegrind; its environment (LD_PRELOAD) goes to
/// valgrind, which hands it to the program.
fn cachegrind(cmd: &Command, out: &Path, timeout: u64) -> Result<Profile, String> {
    let _ = std::fs::remove_file(out);
    let mut v = Command::new("valgrind");
    v.args(["--tool=cachegrind", "--cache-sim=no", "-q"])
        .arg(format!("--cachegrind-out-file={}", out.display()))
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, val) in cmd.get_envs() {
        if let Some(val) = val {
            v.env(k, val);
        }
    }
    let (stdout, st) = run_child(&mut v, timeout);
    if st != RunStatus::Ok {
        return Err(st.label());
    }
    if stdout.contains("status=") && !stdout.contains("status=OK") {
        let line = stdout.lines().find(|l| l.starts_with("status=")).unwrap_or("");
        return Err(format!(
            "the program failed: {}",
            line.split_whitespace().next().unwrap_or("")
        ));
    }
    let text = std::fs::read_to_string(out).map_err(|e| format!("no cachegrind output: {e}"))?;
    let (total, per_fn) = parse_profile(&text).ok_or("cachegrind output without a summary")?;
    Ok(Profile { total, per_fn, stdout })
}

/// Builds `benches/churn` (the Rust path) with `features`; returns the binary.
fn build_churn(manifest: &Path, target: &Path, features: &str) -> Result<PathBuf, String> {
    let dir = target.join(if features.is_empty() {
        "churn".into()
    } else {
        format!("churn-{features}")
    });
    eprintln!("compare: building benches/churn (the Rust path of the instruction counts) {features}...");
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--features", features, "--manifest-path"])
        .arg(manifest.join("benches/churn/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &dir)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("building benches/churn failed ({}): {last}", out.status));
    }
    Ok(dir.join("release/churn"))
}

fn subjects(drivers: &[Driver], churns: Vec<(&'static str, Result<PathBuf, String>)>, steps: u64) -> Vec<Subject> {
    let order = [
        ("glibc-C", "glibc", "C"),
        ("musl-C", "musl", "C, static"),
        ("jemalloc-C", "jemalloc", "C, preloaded"),
        ("tcmalloc-C", "tcmalloc", "C, preloaded"),
        ("mimalloc-C", "mimalloc", "C, preloaded"),
        ("nolibc-alloc-so", "nolibc-alloc", "C, preloaded .so"),
        ("nolibc-alloc-C", "nolibc-alloc", "C, static (musl)"),
    ];
    let mut v = Vec::new();
    for (driver, name, path) in order {
        let cmds = drivers
            .iter()
            .find(|d| d.name == driver)
            .ok_or_else(|| format!("no driver {driver}"))
            .and_then(|d| {
                let mut a = d.command()?;
                a.args(["loop64", &steps.to_string(), "1"]);
                let mut b = d.command()?;
                b.args(["loop64base", &steps.to_string()]);
                Ok((a, b))
            });
        v.push(Subject {
            name: name.into(),
            path,
            cmds,
        });
    }
    for (path, churn) in churns {
        v.push(Subject {
            name: "nolibc-alloc".into(),
            path,
            cmds: churn.map(|exe| {
                let mut a = Command::new(&exe);
                a.args(["loop", &steps.to_string()]);
                let mut b = Command::new(&exe);
                b.args(["base", &steps.to_string()]);
                (a, b)
            }),
        });
    }
    v
}

/// Measures and returns the markdown section and whether any program failed.
pub fn measure(
    drivers: &[Driver],
    manifest: &Path,
    target: &Path,
    work: &Path,
    steps: u64,
    timeout: u64,
) -> (String, bool) {
    let mut s = String::new();
    let _ = writeln!(s, "### Instructions per free + malloc pair (cachegrind)\n");
    let have = Command::new("valgrind")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        eprintln!("compare: WARNING: valgrind is missing (apt-get install valgrind): no instruction counts");
        let _ = writeln!(s, "Not measured: valgrind is missing (`apt-get install valgrind`).\n");
        return (s, false);
    }
    let churns = vec![("Rust, #[global_allocator]", build_churn(manifest, target, ""))];
    let subjects = subjects(drivers, churns, steps);
    let mut failed = false;
    let mut rows = Vec::new();
    let mut probe = None;
    for (i, sub) in subjects.into_iter().enumerate() {
        let res = sub.cmds.and_then(|(a, b)| {
            let pa = cachegrind(&a, &work.join(format!("cg.{i}.loop")), timeout)?;
            let pb = cachegrind(&b, &work.join(format!("cg.{i}.base")), timeout)?;
            Ok((pa, pb))
        });
        match &res {
            Ok((pa, pb)) => {
                eprintln!(
                    "compare: instructions: {} ({}): {:.1} per pair",
                    sub.name,
                    sub.path,
                    pa.total.saturating_sub(pb.total) as f64 / steps as f64
                );
                if let Some(l) = pa.stdout.lines().find(|l| l.contains("startstack_is_this_stack=")) {
                    probe = Some(l.to_string());
                }
            }
            Err(e) => {
                eprintln!("compare: instructions: {} ({}): {e}", sub.name, sub.path);
                // A missing library is the machine's setup; a failing run is not.
                failed |= !e.starts_with("install ") && !e.contains("missing");
            }
        }
        rows.push((sub.name, sub.path, res));
    }
    let per_pair = |(a, b): &(Profile, Profile)| a.total.saturating_sub(b.total) as f64 / steps as f64;
    let glibc = rows
        .iter()
        .find(|r| r.0 == "glibc")
        .and_then(|r| r.2.as_ref().ok())
        .map(per_pair);
    let _ = writeln!(
        s,
        "`loop64`, one thread, {steps} steps (64 live blocks of 8-135 B; each step frees one and allocates \
         `8 + (rand & 127)` B): valgrind {} `--tool=cachegrind --cache-sim=no`. Per pair = (instructions of the \
         loop − instructions of the same loop without malloc/free) ÷ steps: exact, not a sample.\n",
        version()
    );
    let _ = writeln!(
        s,
        "| allocator | path | instructions, loop | instructions, loop without malloc/free | per free + malloc pair | × glibc |\n|---|---|--:|--:|--:|--:|"
    );
    for (name, path, res) in &rows {
        match res {
            Ok(p) => {
                let pp = per_pair(p);
                let _ = writeln!(
                    s,
                    "| {name} | {path} | {} | {} | {pp:.1} | {} |",
                    p.0.total,
                    p.1.total,
                    glibc.map_or("-".into(), |g| format!("{:.2}", pp / g))
                );
            }
            Err(e) => {
                let _ = writeln!(s, "| {name} | {path} | **{e}** | | | |");
            }
        }
    }
    let _ = writeln!(
        s,
        "\nWhere the instructions go (loop minus baseline, per step, functions above 2):\n"
    );
    for (name, path, res) in &rows {
        let Ok((a, b)) = res else { continue };
        let mut fns: Vec<(String, f64)> = a
            .per_fn
            .iter()
            .map(|(f, &n)| {
                let base = b.per_fn.get(f).copied().unwrap_or(0);
                (f.clone(), n.saturating_sub(base) as f64 / steps as f64)
            })
            .filter(|(_, x)| *x > 2.0)
            .collect();
        fns.sort_by(|x, y| y.1.total_cmp(&x.1));
        let list: Vec<String> = fns.iter().take(8).map(|(f, x)| format!("`{f}` {x:.1}")).collect();
        let _ = writeln!(s, "- {name} ({path}): {}", list.join(", "));
    }
    let _ = writeln!(s);
    if let Some(p) = probe {
        let get = |k: &str| {
            p.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k))
                .unwrap_or("?")
                .to_string()
        };
        let (mb, ss) = (get("membarrier="), get("startstack_is_this_stack="));
        let _ = writeln!(
            s,
            "Probes in benches/churn under valgrind: `membarrier(REGISTER_PRIVATE_EXPEDITED)` {mb}; \
             `/proc/self/stat`'s start of stack is the program's own stack: {ss}. (nolibc-alloc's thread heaps \
             need neither: its rows are the heap path of a thread with a thread pointer.)\n"
        );
    }
    (s, failed)
}

fn version() -> String {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .trim_start_matches("valgrind-")
                .to_string()
        })
        .unwrap_or_else(|| "?".into())
}

//! Tables (markdown), JSON, CSV and the SVG chart.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::cdriver::Driver;
use crate::workloads::{Params, Workload};
use crate::{allocs, Cell, RunStatus, Table, SYSCALLS};

/// Machine and run facts.
pub struct Meta {
    pub date: String,
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub rustc: String,
    pub command: String,
    pub elapsed_s: u64,
}

fn cmd_out(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

impl Meta {
    pub fn collect(command: &str, _p: &Params, elapsed: Duration) -> Meta {
        let lscpu = cmd_out("lscpu", &[]);
        let cpu = lscpu
            .lines()
            .find_map(|l| l.strip_prefix("Model name:"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "?".into());
        Meta {
            date: cmd_out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            cpu,
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            rustc: cmd_out(
                &std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()),
                &["--version"],
            ),
            command: command.to_string(),
            elapsed_s: elapsed.as_secs(),
        }
    }
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Per-cell numbers derived from the runs.
pub struct Summary {
    pub ns_median: Option<f64>,
    pub ns_min: Option<f64>,
    pub ns_max: Option<f64>,
    /// Median over runs of (this cell / baseline cell of the same run).
    pub ratio: Option<f64>,
    pub peak_rss_kb: Option<f64>,
    pub rss_end_kb: Option<f64>,
    pub rss_start_kb: Option<f64>,
    /// (peak RSS − RSS at start) / peak live bytes.
    pub rss_over_live: Option<f64>,
    pub runs_ok: usize,
}

fn baseline_name(table: Table) -> &'static str {
    match table {
        Table::Rust => "glibc",
        Table::C => "glibc-C",
    }
}

pub fn summarize(cells: &[Cell], c: &Cell) -> Summary {
    let base = cells
        .iter()
        .find(|b| b.table == c.table && b.workload == c.workload && b.alloc == baseline_name(c.table));
    let ok: Vec<_> = c.runs.iter().flatten().collect();
    let mut ns: Vec<f64> = ok.iter().map(|s| s.ns_per_op()).collect();
    let mut ratios: Vec<f64> = c
        .runs
        .iter()
        .enumerate()
        .filter_map(|(r, s)| {
            let b = base?.runs.get(r)?.as_ref()?;
            Some(s.as_ref()?.ns_per_op() / b.ns_per_op())
        })
        .collect();
    let field = |f: &dyn Fn(&crate::Sample) -> f64| median(&mut ok.iter().map(|s| f(s)).collect::<Vec<_>>());
    let peak = field(&|s| s.peak_rss_kb as f64);
    let end = field(&|s| s.rss_end_kb as f64);
    let start = field(&|s| s.rss_start_kb as f64);
    let over =
        field(&|s| (s.peak_rss_kb.saturating_sub(s.rss_start_kb) as f64 * 1024.0) / (s.peak_live_bytes.max(1) as f64));
    Summary {
        ns_min: ns.iter().copied().reduce(f64::min),
        ns_max: ns.iter().copied().reduce(f64::max),
        ns_median: median(&mut ns),
        ratio: median(&mut ratios),
        peak_rss_kb: peak,
        rss_end_kb: end,
        rss_start_kb: start,
        // Blocks in the channel are not counted as live: no meaningful ratio.
        rss_over_live: if matches!(c.workload, Workload::ProdCons | Workload::ProdCons4) {
            None
        } else {
            over
        },
        runs_ok: ok.len(),
    }
}

fn mib(kb: Option<f64>) -> String {
    kb.map_or("-".into(), |k| format!("{:.1}", k / 1024.0))
}

fn ns(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
        None => "-".into(),
    }
}

fn syscalls_cell(c: &Cell) -> String {
    match &c.syscalls {
        Ok(k) => format!(
            "{} ({})",
            k.iter().sum::<u64>(),
            k.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("/")
        ),
        Err(_) => "-".into(),
    }
}

fn status_or(c: &Cell, s: &str) -> String {
    if c.status == RunStatus::Ok {
        s.to_string()
    } else {
        format!("**{}**", c.status.label())
    }
}

fn cell_row(cells: &[Cell], c: &Cell) -> String {
    let s = summarize(cells, c);
    let failed = c.status != RunStatus::Ok;
    let range = match (s.ns_min, s.ns_max) {
        (Some(a), Some(b)) => format!("{}..{}", ns(Some(a)), ns(Some(b))),
        _ => "-".into(),
    };
    let ratio = s.ratio.map_or("-".into(), |r| format!("{r:.2}"));
    let kept = match (s.rss_end_kb, s.rss_start_kb) {
        (Some(e), Some(st)) => format!("{:+.1}", (e - st) / 1024.0),
        _ => "-".into(),
    };
    if failed && s.runs_ok == 0 {
        return format!("| {} | {} | | | | | | | |", c.alloc, status_or(c, ""));
    }
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        c.alloc,
        status_or(c, &ns(s.ns_median)),
        range,
        ratio,
        mib(s.peak_rss_kb),
        mib(s.rss_end_kb),
        kept,
        s.rss_over_live.map_or("-".into(), |r| format!("{r:.2}")),
        syscalls_cell(c),
    )
}

const HEADER: &str = "| allocator | CPU ns/op (median) | min..max | × baseline | peak RSS MiB | RSS after free MiB | kept after free MiB | peak RSS / live | memory syscalls: total (brk/mmap/munmap/mremap/madvise) |\n|---|--:|--:|--:|--:|--:|--:|--:|--|";

/// The whole report.
pub fn markdown(
    cells: &[Cell],
    names: &[String],
    drivers: &[Driver],
    workloads: &[Workload],
    p: &Params,
    m: &Meta,
    footprint: Option<&str>,
) -> String {
    let mut s = String::new();
    let runs = cells.first().map_or(0, |c| c.runs.len());
    let _ = writeln!(s, "## Results\n");
    let _ = writeln!(
        s,
        "- Date: {}; machine: {}, {} cores, Linux {}; {}\n- Command: `{}` ({} runs per cell, interleaved; took {} s)\n",
        m.date, m.cpu, m.cores, m.kernel, m.rustc, m.command, runs, m.elapsed_s
    );
    let _ = writeln!(s, "### Ratio to glibc (median of per-run ratios; lower is faster)\n");
    let mut head = String::from("| workload |");
    let mut rule = String::from("|---|");
    for n in names.iter().filter(|n| *n != "glibc") {
        let _ = write!(head, " {n} |");
        rule += "--:|";
    }
    let c_names: Vec<&str> = drivers.iter().map(|d| d.name).filter(|n| *n != "glibc-C").collect();
    for n in &c_names {
        let _ = write!(head, " {n} ÷ glibc-C |");
        rule += "--:|";
    }
    let _ = writeln!(s, "{head}\n{rule}");
    for &w in workloads {
        let mut row = format!("| {} |", w.name());
        let mut add = |table: Table, n: &str| {
            if let Some(c) = cells
                .iter()
                .find(|c| c.table == table && c.workload == w && c.alloc == n)
            {
                let sm = summarize(cells, c);
                let v = match (&c.status, sm.ratio) {
                    (RunStatus::Ok, Some(r)) => format!("{r:.2}"),
                    (RunStatus::Ok, None) => "-".into(),
                    (st, _) => format!("**{}**", st.label()),
                };
                let _ = write!(row, " {v} |");
            } else {
                row += " - |";
            }
        };
        for n in names.iter().filter(|n| *n != "glibc") {
            add(Table::Rust, n);
        }
        for n in &c_names {
            add(Table::C, n);
        }
        let _ = writeln!(s, "{row}");
    }
    let _ = writeln!(s, "\n![ratio to glibc per workload](compare.svg)\n");
    if drivers.len() > 1 {
        s += &c_abi_table(cells, drivers, workloads);
    }
    if cells.iter().any(|c| c.alloc == "floor" || c.alloc == "floor-C") {
        let rust: Vec<&str> = names.iter().map(String::as_str).filter(|n| *n != "glibc").collect();
        let c_names: Vec<&str> = drivers.iter().map(|d| d.name).filter(|n| *n != "glibc-C").collect();
        s += &floor_table(cells, Table::Rust, "floor", &rust, workloads);
        s += &floor_table(cells, Table::C, "floor-C", &c_names, workloads);
    }

    let _ = writeln!(s, "### Allocators\n");
    for n in names {
        let _ = writeln!(s, "- `{n}`: {}", allocs::setup_note(n));
    }
    for d in drivers {
        let extra = match &d.exe {
            Ok(_) => String::new(),
            Err(e) => format!(" — **MISSING: {e}**"),
        };
        let _ = writeln!(s, "- `{}` (C driver): {}{extra}", d.name, d.note);
    }
    let _ = writeln!(s);

    for &w in workloads {
        let _ = writeln!(s, "### {} — {}\n", w.name(), w.describe(p));
        let _ = writeln!(s, "{HEADER}");
        for c in cells.iter().filter(|c| c.table == Table::Rust && c.workload == w) {
            let _ = writeln!(s, "{}", cell_row(cells, c));
        }
        s += &remote_line(cells, Table::Rust, w);
        if cells.iter().any(|c| c.table == Table::C && c.workload == w) {
            let _ = writeln!(
                s,
                "\nC driver (same op sequence replayed through malloc/free; baseline glibc-C):\n"
            );
            let _ = writeln!(s, "{HEADER}");
            for c in cells.iter().filter(|c| c.table == Table::C && c.workload == w) {
                let _ = writeln!(s, "{}", cell_row(cells, c));
            }
            s += &remote_line(cells, Table::C, w);
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "Columns: CPU time (user + system, all threads, `CLOCK_PROCESS_CPUTIME_ID` read in the child around the workload only; \
         the C driver subtracts the time it spends reading its op file) per allocation/free/realloc, including filling and \
         checking every block (the same work for every allocator). × baseline: median over runs of this cell's time ÷ the \
         baseline's time in the same run. Peak RSS: `VmHWM` of the child; RSS after free: `VmRSS` once every block is freed; \
         kept after free: that minus `VmRSS` before the workload; peak RSS / live: (peak RSS − RSS before) ÷ the most bytes \
         live at once. Memory syscalls: `strace -f -c` on one extra run, minus the counts of a child that does nothing; \
         they include the child's own bookkeeping (threads, the channel), which is the same for every allocator.\n"
    );
    if let Some(fp) = footprint {
        let _ = writeln!(s, "### Footprint\n\n{fp}");
    }
    s
}

/// The share of frees that were of another thread's block (native server
/// workloads), median over runs, per allocator; empty if none counted.
fn remote_line(cells: &[Cell], table: Table, w: Workload) -> String {
    let parts: Vec<String> = cells
        .iter()
        .filter(|c| c.table == table && c.workload == w)
        .filter_map(|c| {
            let mut v: Vec<f64> = c
                .runs
                .iter()
                .flatten()
                .filter_map(|s| Some(s.remote_frees? as f64 / (s.ops as f64 / 2.0).max(1.0)))
                .collect();
            median(&mut v).map(|m| format!("{} {:.0} %", c.alloc, m * 100.0))
        })
        .collect();
    if parts.is_empty() || !matches!(w, Workload::Server | Workload::Server4) {
        return String::new();
    }
    format!(
        "\nFrees of a block another thread allocated, share of all frees (median): {}\n",
        parts.join(", ")
    )
}

fn geomean(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    Some((v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
}

/// The C ABI against the allocators a C user would preload instead: per
/// workload, each C driver's time ratio to glibc-C and its peak RSS; and
/// the geometric means (of the workloads where every driver ran).
fn c_abi_table(cells: &[Cell], drivers: &[Driver], workloads: &[Workload]) -> String {
    let mut s = String::from(
        "### The C ABI against the allocators a C user would preload (C driver, one run)\n\n\
         Each cell: CPU time ÷ glibc-C's in the same run (median over runs) · peak RSS in MiB (median). \
         Last rows: geometric means over the workloads where every column has a number.\n\n",
    );
    let mut head = String::from("| workload |");
    let mut rule = String::from("|---|");
    for d in drivers {
        let _ = write!(head, " {} |", d.name);
        rule += "--:|";
    }
    let _ = writeln!(s, "{head}\n{rule}");
    let find = |w: Workload, n: &str| {
        cells
            .iter()
            .find(|c| c.table == Table::C && c.workload == w && c.alloc == n)
    };
    let mut time: Vec<Vec<f64>> = vec![Vec::new(); drivers.len()];
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); drivers.len()];
    for &w in workloads {
        let mut row = format!("| {} |", w.name());
        let mut tr = Vec::new();
        let mut rr = Vec::new();
        let base_rss = find(w, "glibc-C").and_then(|c| summarize(cells, c).peak_rss_kb);
        for d in drivers {
            match find(w, d.name) {
                Some(c) if c.status == RunStatus::Ok => {
                    let sm = summarize(cells, c);
                    let mis = c.runs.iter().flatten().map(|r| r.misaligned).max().unwrap_or(0);
                    let _ = write!(
                        row,
                        " {} · {}{} |",
                        sm.ratio.map_or("-".into(), |r| format!("{r:.2}")),
                        mib(sm.peak_rss_kb),
                        if mis > 0 {
                            format!(" ({mis} misaligned)")
                        } else {
                            String::new()
                        }
                    );
                    tr.push(sm.ratio);
                    rr.push(sm.peak_rss_kb.zip(base_rss).map(|(a, b)| a / b.max(1.0)));
                }
                Some(c) => {
                    let _ = write!(row, " **{}** |", c.status.label());
                    tr.push(None);
                    rr.push(None);
                }
                None => {
                    row += " - |";
                    tr.push(None);
                    rr.push(None);
                }
            }
        }
        if tr.iter().all(Option::is_some) && rr.iter().all(Option::is_some) {
            for (i, (t, r)) in tr.into_iter().zip(rr).enumerate() {
                time[i].extend(t);
                rss[i].extend(r);
            }
        }
        let _ = writeln!(s, "{row}");
    }
    let n = time.first().map_or(0, Vec::len);
    let mut t_row = format!("| geomean, time ÷ glibc-C ({n} workloads) |");
    let mut r_row = format!("| geomean, peak RSS ÷ glibc-C's ({n} workloads) |");
    for i in 0..drivers.len() {
        let _ = write!(
            t_row,
            " {} |",
            geomean(&time[i]).map_or("-".into(), |g| format!("{g:.2}"))
        );
        let _ = write!(
            r_row,
            " {} |",
            geomean(&rss[i]).map_or("-".into(), |g| format!("{g:.2}"))
        );
    }
    let _ = writeln!(s, "{t_row}\n{r_row}\n");
    if cells.iter().any(|c| c.runs.iter().flatten().any(|r| r.misaligned > 0)) {
        s += "(N misaligned): in a run, N blocks came back with less than the alignment asked of \
              `posix_memalign` (the C driver counts them and goes on; for a preloaded peer the cell keeps its \
              time, for glibc, musl and nolibc-alloc the cell would be CORRUPT).\n\n";
    }
    s
}

/// The median of per-run ratios to the baseline of cell (table, w, name), if it ran.
fn ratio_of(cells: &[Cell], table: Table, w: Workload, name: &str) -> Option<f64> {
    let c = cells
        .iter()
        .find(|c| c.table == table && c.workload == w && c.alloc == name)?;
    if c.status != RunStatus::Ok {
        return None;
    }
    summarize(cells, c).ratio
}

/// The floor table (`--allocs floor`): per workload the floor's time ÷ the
/// baseline's, each allocator's, and each allocator's share (time − floor)
/// ÷ the baseline's share, all from the medians of per-run ratios:
/// `(r − f) ÷ (1 − f)`.
fn floor_table(cells: &[Cell], table: Table, floor: &str, names: &[&str], workloads: &[Workload]) -> String {
    let names: Vec<&str> = names.iter().copied().filter(|n| *n != floor).collect();
    if !cells.iter().any(|c| c.table == table && c.alloc == floor) {
        return String::new();
    }
    let base = baseline_name(table);
    let mut s = format!(
        "### Floors ({}): the workloads without an allocator's work\n\n\
         `{floor}` ÷ {base}: the floor's time ÷ {base}'s (median of per-run ratios); then each allocator's time \
         ÷ {base}'s; then its allocator share, (time − floor) ÷ ({base}'s time − floor), from those medians: \
         `(r − f) ÷ (1 − f)`.\n\n",
        if table == Table::C { "C driver" } else { "Rust" }
    );
    let mut head = format!("| workload | {floor} ÷ {base} |");
    let mut rule = String::from("|---|--:|");
    for n in &names {
        let _ = write!(head, " {n} |");
        rule += "--:|";
    }
    for n in &names {
        let _ = write!(head, " {n} share |");
        rule += "--:|";
    }
    let _ = writeln!(s, "{head}\n{rule}");
    for &w in workloads {
        let f = ratio_of(cells, table, w, floor);
        let mut row = format!("| {} | {} |", w.name(), f.map_or("-".into(), |f| format!("{f:.2}")));
        let rs: Vec<Option<f64>> = names.iter().map(|n| ratio_of(cells, table, w, n)).collect();
        for r in &rs {
            let _ = write!(row, " {} |", r.map_or("-".into(), |r| format!("{r:.2}")));
        }
        for r in &rs {
            let share = match (r, f) {
                (Some(r), Some(f)) if f < 1.0 => format!("{:.2}", (r - f) / (1.0 - f)),
                _ => "-".into(),
            };
            let _ = write!(row, " {share} |");
        }
        let _ = writeln!(s, "{row}");
    }
    s + "\n"
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o += "\\\"",
            '\\' => o += "\\\\",
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o + "\""
}

fn json_num(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite()).map_or("null".into(), |x| format!("{x:.4}"))
}

pub fn json(cells: &[Cell], m: &Meta) -> String {
    let mut s = String::from("{\n");
    let _ = writeln!(
        s,
        "  \"date\": {}, \"cpu\": {}, \"cores\": {}, \"kernel\": {}, \"rustc\": {}, \"command\": {},",
        json_str(&m.date),
        json_str(&m.cpu),
        m.cores,
        json_str(&m.kernel),
        json_str(&m.rustc),
        json_str(&m.command)
    );
    s += "  \"cells\": [\n";
    for (i, c) in cells.iter().enumerate() {
        let sm = summarize(cells, c);
        let runs: Vec<String> = c
            .runs
            .iter()
            .map(|r| match r {
                Some(x) => format!(
                    "{{\"cpu_ns\": {}, \"wall_ns\": {}, \"ops\": {}, \"peak_live_bytes\": {}, \"rss_start_kb\": {}, \"peak_rss_kb\": {}, \"rss_end_kb\": {}}}",
                    x.cpu_ns, x.wall_ns, x.ops, x.peak_live_bytes, x.rss_start_kb, x.peak_rss_kb, x.rss_end_kb
                ),
                None => "null".into(),
            })
            .collect();
        let sys = match &c.syscalls {
            Ok(k) => format!(
                "{{{}}}",
                SYSCALLS
                    .iter()
                    .zip(k)
                    .map(|(n, v)| format!("\"{n}\": {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(_) => "null".into(),
        };
        let _ = write!(
            s,
            "    {{\"table\": \"{}\", \"allocator\": {}, \"workload\": \"{}\", \"status\": {}, \"ns_per_op_median\": {}, \"ns_per_op_min\": {}, \"ns_per_op_max\": {}, \"ratio_to_baseline\": {}, \"peak_rss_kb\": {}, \"rss_end_kb\": {}, \"rss_start_kb\": {}, \"syscalls\": {}, \"runs\": [{}]}}",
            if c.table == Table::Rust { "rust" } else { "c" },
            json_str(&c.alloc),
            c.workload.name(),
            json_str(&c.status.label()),
            json_num(sm.ns_median),
            json_num(sm.ns_min),
            json_num(sm.ns_max),
            json_num(sm.ratio),
            json_num(sm.peak_rss_kb),
            json_num(sm.rss_end_kb),
            json_num(sm.rss_start_kb),
            sys,
            runs.join(", ")
        );
        s += if i + 1 < cells.len() { ",\n" } else { "\n" };
    }
    s += "  ]\n}\n";
    s
}

pub fn csv(cells: &[Cell]) -> String {
    let mut s = String::from(
        "table,allocator,workload,status,ns_per_op_median,ns_per_op_min,ns_per_op_max,ratio_to_baseline,peak_rss_kb,rss_end_kb,rss_start_kb,brk,mmap,munmap,mremap,madvise\n",
    );
    let f = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.3}"));
    for c in cells {
        let sm = summarize(cells, c);
        let sys = match &c.syscalls {
            Ok(k) => k.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","),
            Err(_) => ",,,,".into(),
        };
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{}",
            if c.table == Table::Rust { "rust" } else { "c" },
            c.alloc,
            c.workload.name(),
            c.status.label().replace(',', ";"),
            f(sm.ns_median),
            f(sm.ns_min),
            f(sm.ns_max),
            f(sm.ratio),
            f(sm.peak_rss_kb),
            f(sm.rss_end_kb),
            f(sm.rss_start_kb),
            sys
        );
    }
    s
}

const COLORS: [&str; 9] = [
    "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#ff7f0e", "#7f7f7f",
];

/// Grouped bars: per workload, each allocator's ratio to glibc on a log
/// scale (and musl-C ÷ glibc-C from the C table).
pub fn svg(cells: &[Cell], names: &[String], workloads: &[Workload]) -> String {
    let mut series: Vec<(Table, String)> = names
        .iter()
        .filter(|n| *n != "glibc")
        .map(|n| (Table::Rust, n.clone()))
        .collect();
    let mut c_names: Vec<String> = Vec::new();
    for c in cells.iter().filter(|c| c.table == Table::C && c.alloc != "glibc-C") {
        if !c_names.contains(&c.alloc) {
            c_names.push(c.alloc.clone());
        }
    }
    series.extend(c_names.into_iter().map(|n| (Table::C, n)));
    let (w_px, h_px) = (1010.0f64, 460.0f64);
    let (left, right, top, bottom) = (60.0, 200.0, 40.0, 50.0);
    let plot_w = w_px - left - right;
    let plot_h = h_px - top - bottom;
    let ratio_of = |t: Table, n: &str, w: Workload| {
        cells
            .iter()
            .find(|c| c.table == t && c.alloc == n && c.workload == w)
            .map(|c| (c.status.clone(), summarize(cells, c).ratio))
    };
    let mut lo = 0.5f64;
    let mut hi = 2.0f64;
    for &w in workloads {
        for (t, n) in &series {
            if let Some((RunStatus::Ok, Some(r))) = ratio_of(*t, n, w) {
                lo = lo.min(r);
                hi = hi.max(r);
            }
        }
    }
    let (l0, l1) = (lo.log2().floor(), hi.log2().ceil());
    let y_of = |r: f64| top + plot_h * (l1 - r.log2()) / (l1 - l0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w_px}\" height=\"{h_px}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"22\" font-size=\"14\" text-anchor=\"middle\">CPU time per operation ÷ glibc (same run; log scale; lower is faster)</text>",
        left + plot_w / 2.0
    );
    let mut e = l0 as i32;
    while e as f64 <= l1 {
        let r = 2f64.powi(e);
        let y = y_of(r);
        let style = if e == 0 {
            "stroke=\"#000\" stroke-width=\"1.2\""
        } else {
            "stroke=\"#ddd\""
        };
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" {style}/>",
            left + plot_w
        );
        let label = if r >= 1.0 {
            format!("{r:.0}×")
        } else {
            format!("{r}×")
        };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            left - 6.0,
            y + 4.0
        );
        e += 1;
    }
    let gw = plot_w / workloads.len().max(1) as f64;
    let bw = (gw * 0.85) / series.len().max(1) as f64;
    for (gi, &w) in workloads.iter().enumerate() {
        let gx = left + gi as f64 * gw + gw * 0.075;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            left + gi as f64 * gw + gw / 2.0,
            top + plot_h + 18.0,
            w.name()
        );
        for (si, (t, n)) in series.iter().enumerate() {
            let x = gx + si as f64 * bw;
            let color = COLORS[si % COLORS.len()];
            match ratio_of(*t, n, w) {
                Some((RunStatus::Ok, Some(r))) => {
                    let (y1, y0) = (y_of(r), y_of(1.0));
                    let (y, h) = if y1 < y0 { (y1, y0 - y1) } else { (y0, y1 - y0) };
                    let _ = writeln!(
                        s,
                        "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{n} {}: {r:.2}×</title></rect>",
                        bw * 0.9,
                        h.max(0.5),
                        w.name()
                    );
                }
                Some((st, _)) if st != RunStatus::Ok => {
                    let short = st.label().split_whitespace().next().unwrap_or("").to_string();
                    let _ = writeln!(
                        s,
                        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" fill=\"{color}\" transform=\"rotate(-90 {:.1} {:.1})\">{short}</text>",
                        x + bw * 0.7,
                        y_of(1.0) - 4.0,
                        x + bw * 0.7,
                        y_of(1.0) - 4.0
                    );
                }
                _ => {}
            }
        }
    }
    for (si, (t, n)) in series.iter().enumerate() {
        let y = top + 10.0 + si as f64 * 18.0;
        let x = w_px - right + 15.0;
        let label = if *t == Table::C {
            format!("{n} ÷ glibc-C")
        } else {
            n.clone()
        };
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>",
            y - 10.0,
            COLORS[si % COLORS.len()]
        );
        let _ = writeln!(s, "<text x=\"{}\" y=\"{y:.1}\">{label}</text>", x + 18.0);
    }
    s += "</svg>\n";
    s
}

const BEGIN: &str = "<!-- results:begin (generated by `cargo bench --bench compare -- --publish`) -->";
const END: &str = "<!-- results:end -->";

/// Replaces the generated section of BENCHMARKS.md (between the markers).
pub fn update_benchmarks_md(path: &Path, md: &str) -> std::io::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    // In BENCHMARKS.md the chart lives under benches/results/.
    let body = md.replace("](compare.svg)", "](benches/results/compare.svg)");
    let section = format!("{BEGIN}\n{body}\n{END}");
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if b > a => format!("{}{section}{}", &old[..a], &old[b + END.len()..]),
        _ => format!("{old}\n{section}\n"),
    };
    std::fs::write(path, new)
}

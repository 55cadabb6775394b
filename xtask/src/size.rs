//! `cargo xtask size`: the footprint tables (BENCHMARKS.md, README).
//!
//! 1. Every example, stripped, per architecture.
//! 2. The same `tiny` program with other allocators (`xtask/peers/`: talc,
//!    rlsf, dlmalloc, linked_list_allocator; `tiny_bump` for a bump
//!    allocator): same nightly, target spec and `freestanding` profile.
//! 3. C on this machine's architecture: `write` only and `tiny` in C
//!    (malloc/realloc/free + write), static with musl (`musl-gcc -Os`),
//!    with glibc (`gcc -static -Os`), and with nolibc-alloc's C ABI
//!    (`capi/`, the same opt-level) in front of musl's malloc.
//! 4. Memory at start: `xtask/peers/c/rss.c` (eight small blocks of
//!    different sizes) with musl's malloc and with nolibc-alloc's.
//!
//! `--opt-levels` adds the examples and peers built with the other of
//! opt-level "s" and "z".
//! `--immediate-abort` adds `tiny`, `tiny_bump` and `hello` built with the
//! panic strategy `immediate-abort` (measured only: no panic message).
//! Every size is the file size after `--strip-all` (LLVM's objcopy for the
//! Rust programs, binutils' `strip` for the C ones: LLVM's rejects glibc's
//! static binaries).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::freestanding::{self, Arch, EXAMPLES, PEERS};

fn print_table(title: &str, rows: &[(String, Vec<Option<u64>>)]) {
    println!("{title}");
    print!("{:<24}", "example");
    for arch in Arch::ALL {
        print!("{:>10}", arch.name());
    }
    println!();
    for (name, sizes) in rows {
        print!("{name:<24}");
        for s in sizes {
            match s {
                Some(b) => print!("{b:>10}"),
                None => print!("{:>10}", "-"),
            }
        }
        println!();
    }
}

/// `cargo xtask size [--opt-levels] [--immediate-abort]`.
pub fn run(opt_levels: bool, immediate_abort: bool) -> Result<(), String> {
    let level = freestanding::profile_opt_level();
    // 1. The examples.
    let mut rows: Vec<(String, Vec<Option<u64>>)> = EXAMPLES.iter().map(|n| (n.to_string(), Vec::new())).collect();
    for arch in Arch::ALL {
        freestanding::build(arch, &[])?;
        for (i, name) in EXAMPLES.iter().enumerate() {
            rows[i].1.push(Some(freestanding::stripped_size(
                arch,
                &freestanding::binary(arch, name),
            )?));
        }
    }
    // The first table keeps its historical shape (benches/compare/footprint.rs reads it).
    println!("stripped size in bytes (profile `freestanding`, opt-level \"{level}\"):");
    print!("{:<12}", "example");
    for arch in Arch::ALL {
        print!("{:>10}", arch.name());
    }
    println!();
    for (name, sizes) in &rows {
        print!("{name:<12}");
        for s in sizes {
            print!("{:>10}", s.unwrap_or(0));
        }
        println!();
    }
    let size_of = |rows: &[(String, Vec<Option<u64>>)], name: &str| -> Vec<Option<u64>> {
        rows.iter()
            .find(|r| r.0 == name)
            .map(|r| r.1.clone())
            .unwrap_or_default()
    };
    let tiny = size_of(&rows, "tiny");
    let bump = size_of(&rows, "tiny_bump");

    // 2. The peers.
    println!();
    let peers = peer_rows(None)?;
    let mut table = vec![("nolibc-alloc (tiny)".to_string(), tiny.clone())];
    table.push(("bump (tiny_bump)".into(), bump.clone()));
    table.extend(peers);
    print_table(
        &format!("`tiny` (a Vec + write) with each allocator, stripped bytes (opt-level \"{level}\"):"),
        &table,
    );
    println!();
    let own: Vec<(String, Vec<Option<u64>>)> = table
        .iter()
        .filter(|r| !r.0.starts_with("bump"))
        .map(|(name, sizes)| {
            let d = sizes
                .iter()
                .zip(&bump)
                .map(|(s, b)| Some(s.as_ref()?.saturating_sub(*b.as_ref()?)))
                .collect();
            (name.clone(), d)
        })
        .collect();
    print_table("the allocator's own code: the row above minus tiny_bump:", &own);

    // 3. C.
    println!();
    c_table()?;

    // 4. Memory at start.
    println!();
    memory_at_start()?;

    if opt_levels {
        println!();
        opt_level_table(&level, &rows)?;
    }
    if immediate_abort {
        println!();
        immediate_abort_table(&rows)?;
    }
    Ok(())
}

/// `tiny`, `tiny_bump`, their difference and `hello`, with the default
/// panic strategy (`abort`, through the runtime's handler, which prints the
/// message) and with `immediate-abort` (a trap, nothing printed).
fn immediate_abort_table(rows: &[(String, Vec<Option<u64>>)]) -> Result<(), String> {
    const NAMES: [&str; 3] = ["tiny", "tiny_bump", "hello"];
    let mut abort_rows: Vec<Vec<Option<u64>>> = vec![Vec::new(); NAMES.len()];
    for arch in Arch::ALL {
        freestanding::build_immediate_abort(arch, &NAMES)?;
        for (i, name) in NAMES.iter().enumerate() {
            let bin = freestanding::binary_immediate_abort(arch, name);
            abort_rows[i].push(Some(freestanding::stripped_size(arch, &bin)?));
        }
    }
    let own = |tiny: &[Option<u64>], bump: &[Option<u64>]| -> Vec<Option<u64>> {
        tiny.iter()
            .zip(bump)
            .map(|(t, b)| Some(t.as_ref()?.saturating_sub(*b.as_ref()?)))
            .collect()
    };
    let find = |name: &str| {
        rows.iter()
            .find(|r| r.0 == name)
            .map(|r| r.1.clone())
            .unwrap_or_default()
    };
    let mut table = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        table.push((name.to_string(), find(name)));
        table.push(("  immediate-abort".to_string(), abort_rows[i].clone()));
    }
    table.push(("own code".to_string(), own(&find("tiny"), &find("tiny_bump"))));
    table.push(("  immediate-abort".to_string(), own(&abort_rows[0], &abort_rows[1])));
    print_table(
        "panic strategy `abort` (the default: messages printed) against `immediate-abort` (-Cpanic=immediate-abort, \
         nightly; no message), stripped bytes:",
        &table,
    );
    Ok(())
}

/// The peers, one row each, built with `opt_level` (the profile's when `None`).
fn peer_rows(opt_level: Option<&str>) -> Result<Vec<(String, Vec<Option<u64>>)>, String> {
    let names = ["talc", "rlsf", "dlmalloc", "linked_list_allocator"];
    let mut rows: Vec<(String, Vec<Option<u64>>)> = names.iter().map(|n| (n.to_string(), Vec::new())).collect();
    for arch in Arch::ALL {
        freestanding::build_peers(arch, opt_level)?;
        for (i, name) in PEERS.iter().enumerate() {
            let bin = freestanding::peer_binary(arch, name, opt_level);
            rows[i].1.push(Some(freestanding::stripped_size(arch, &bin)?));
        }
    }
    Ok(rows)
}

fn opt_level_table(level: &str, rows: &[(String, Vec<Option<u64>>)]) -> Result<(), String> {
    let other = if level == "z" { "s" } else { "z" };
    let mut z_rows: Vec<(String, Vec<Option<u64>>)> = Vec::new();
    for arch in Arch::ALL {
        freestanding::build_with_opt_level(arch, other)?;
    }
    for name in EXAMPLES {
        let mut v = Vec::new();
        for arch in Arch::ALL {
            let bin = freestanding::binary_with_opt_level(arch, name, other);
            v.push(Some(freestanding::stripped_size(arch, &bin)?));
        }
        z_rows.push((name.to_string(), v));
    }
    let mut table = Vec::new();
    for ((name, a), (_, b)) in rows.iter().zip(&z_rows) {
        table.push((format!("{name} \"{level}\""), a.clone()));
        table.push((format!("{name} \"{other}\""), b.clone()));
    }
    let peers_a = peer_rows(None)?;
    let peers_b = peer_rows(Some(other))?;
    for ((name, a), (_, b)) in peers_a.iter().zip(&peers_b) {
        table.push((format!("{name} \"{level}\""), a.clone()));
        table.push((format!("{name} \"{other}\""), b.clone()));
    }
    print_table(
        &format!("opt-level \"{level}\" against \"{other}\", stripped bytes:"),
        &table,
    );
    Ok(())
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn c_dir() -> PathBuf {
    freestanding::repo_root().join("xtask/peers/c")
}

fn out_dir() -> Result<PathBuf, String> {
    let dir = freestanding::build_dir().join("c");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Compiles `src` with `cc` and `flags` (then `extra`, e.g. a library) into `out`.
fn compile(cc: &str, flags: &[&str], src: &Path, extra: &[&Path], out: &Path) -> Result<(), String> {
    let done = Command::new(cc)
        .args(flags)
        .arg(src)
        .args(extra)
        .arg("-o")
        .arg(out)
        .output()
        .map_err(|e| format!("cannot run {cc}: {e}"))?;
    if !done.status.success() {
        return Err(format!(
            "{cc} {}: {}",
            src.display(),
            String::from_utf8_lossy(&done.stderr).trim()
        ));
    }
    Ok(())
}

/// Stripped size of a C program (binutils' strip).
fn c_stripped(bin: &Path) -> Result<u64, String> {
    let out = bin.with_extension("stripped");
    let done = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .output()
        .map_err(|e| format!("cannot run strip (binutils): {e}"))?;
    if !done.status.success() {
        return Err(format!(
            "strip {}: {}",
            bin.display(),
            String::from_utf8_lossy(&done.stderr)
        ));
    }
    std::fs::metadata(&out).map(|m| m.len()).map_err(|e| e.to_string())
}

/// `libnolibc_alloc_c.a` for `<host arch>-unknown-linux-musl`, with the
/// `freestanding` profile's opt-level and core's `optimize_for_size`
/// (the footprint build: its own directory, apart from the tests' and the
/// benchmark's opt-level 3 build).
fn capi_musl_size_build() -> Result<PathBuf, String> {
    let arch = std::env::consts::ARCH;
    freestanding::ensure_nightly()?;
    let nostd = freestanding::build_dir();
    let target_dir = nostd.parent().unwrap_or(&nostd).join("capi").join("musl-size");
    let mut cmd = freestanding::nightly("cargo");
    cmd.args(["rustc", "--release", "--lib", "--crate-type", "staticlib"])
        .args([
            "-Zbuild-std=core,compiler_builtins",
            // As the freestanding builds (xtask/src/freestanding.rs).
            "-Zbuild-std-features=optimize_for_size",
            "--target",
            &format!("{arch}-unknown-linux-musl"),
        ])
        .arg("--manifest-path")
        .arg(freestanding::repo_root().join("capi/Cargo.toml"))
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", freestanding::profile_opt_level())
        .env("CARGO_TARGET_DIR", &target_dir);
    let out = cmd.output().map_err(|e| format!("cannot run rustup: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("building capi/ for musl failed ({}): {last}", out.status));
    }
    let lib = target_dir.join(format!("{arch}-unknown-linux-musl/release/libnolibc_alloc_c.a"));
    if lib.is_file() {
        Ok(lib)
    } else {
        Err(format!("{} was not built", lib.display()))
    }
}

fn c_table() -> Result<(), String> {
    let arch = std::env::consts::ARCH;
    println!("C on {arch} (static, stripped bytes; `tiny.c` = malloc/realloc/free + write):");
    let dir = out_dir()?;
    let write_only = c_dir().join("write_only.c");
    let tiny = c_dir().join("tiny.c");
    let row = |label: &str, cc: &str, flags: &[&str], src: &Path, extra: &[&Path], out: &str| {
        let bin = dir.join(out);
        match compile(cc, flags, src, extra, &bin).and_then(|()| c_stripped(&bin)) {
            Ok(bytes) => println!("{label:<60}{bytes:>10}"),
            Err(e) => println!("{label:<60}{:>10}  ({e})", "-"),
        }
    };
    if have("musl-gcc") {
        row(
            "write only, musl-gcc -static -Os",
            "musl-gcc",
            &["-static", "-Os"],
            &write_only,
            &[],
            "write-musl",
        );
        row(
            "tiny.c, musl-gcc -static -Os (musl's malloc)",
            "musl-gcc",
            &["-static", "-Os"],
            &tiny,
            &[],
            "tiny-musl",
        );
        match capi_musl_size_build() {
            Ok(lib) => row(
                "tiny.c, musl-gcc -static -Os + libnolibc_alloc_c.a",
                "musl-gcc",
                &["-static", "-Os"],
                &tiny,
                &[&lib],
                "tiny-musl-nolibc",
            ),
            Err(e) => println!("tiny.c with nolibc-alloc's C ABI: not built ({e})"),
        }
    } else {
        println!("musl rows: musl-gcc is missing (apt-get install musl-tools)");
    }
    if have("gcc") {
        row(
            "write only, gcc -static -Os (glibc)",
            "gcc",
            &["-static", "-Os"],
            &write_only,
            &[],
            "write-glibc",
        );
        row(
            "tiny.c, gcc -static -Os (glibc's malloc)",
            "gcc",
            &["-static", "-Os"],
            &tiny,
            &[],
            "tiny-glibc",
        );
    } else {
        println!("glibc rows: gcc is missing");
    }
    Ok(())
}

fn memory_at_start() -> Result<(), String> {
    println!("memory at start: xtask/peers/c/rss.c, eight blocks of 8..1000 bytes written; KiB, before -> after:");
    if !have("musl-gcc") {
        println!("not measured: musl-gcc is missing (apt-get install musl-tools)");
        return Ok(());
    }
    let dir = out_dir()?;
    let src = c_dir().join("rss.c");
    let musl = dir.join("rss-musl");
    compile("musl-gcc", &["-static", "-O2"], &src, &[], &musl)?;
    let ours = dir.join("rss-nolibc");
    let lib = capi_musl_size_build()?;
    compile("musl-gcc", &["-static", "-O2"], &src, &[&lib], &ours)?;
    println!("{:<24}{:>16}{:>16}{:>18}", "malloc", "RssAnon", "RssFile", "VmSize");
    for (label, bin) in [("musl's", &musl), ("nolibc-alloc (C ABI)", &ours)] {
        let out = Command::new(bin)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Vec<&str> = text.split_whitespace().collect();
        if !out.status.success() || v.len() != 6 {
            return Err(format!("{} failed ({}): {text}", bin.display(), out.status));
        }
        let cell = |i: usize| format!("{} -> {}", v[i], v[i + 3]);
        println!("{label:<24}{:>16}{:>16}{:>18}", cell(0), cell(1), cell(2));
    }
    Ok(())
}

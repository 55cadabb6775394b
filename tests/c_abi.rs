//! The C ABI (`src/c_abi.rs`, built into C libraries by `capi/`):
//!
//! - `tests/c/contract.c`, the whole malloc contract, built and run three
//!   ways: without any libc (`gcc -nostdlib -static` with the `rt` runtime),
//!   statically with musl (`musl-gcc -static`, our malloc replacing musl's),
//!   and dynamically with glibc, the shared library preloaded;
//! - the shared library preloaded into installed programs that allocate
//!   heavily (python3, sqlite3, xz and zstd with two threads), their output
//!   compared with a run without it, the preload checked with
//!   `LD_DEBUG=bindings`;
//! - the per-allocation overhead quoted in the docs of `src/c_abi.rs`.
//!
//! The libraries are built by nested cargo runs into `<target>/capi/`: the
//! glibc one with the current toolchain, the musl and libc-free ones with
//! the pinned nightly and build-std (installed when missing). A missing C
//! compiler or program is a failure naming the Debian package to install.

#[path = "../xtask/src/freestanding.rs"]
mod freestanding;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use nolibc_alloc::class::{class_for, CLASSES};

/// The C libraries' build flavours.
#[derive(Clone, Copy, Debug)]
enum Flavor {
    /// Host glibc target (current toolchain): `.a` and `.so`.
    Gnu,
    /// `<arch>-unknown-linux-musl` with build-std: `.a`.
    Musl,
    /// `<arch>-linux-nostd.json` with build-std and the `rt` runtime: `.a`.
    NoLibc,
}

const ARCH: &str = std::env::consts::ARCH;

fn capi_target_dir() -> PathBuf {
    let nostd = freestanding::build_dir();
    nostd.parent().unwrap_or(&nostd).join("capi")
}

/// Where the C programs and scratch files go.
fn work_dir() -> PathBuf {
    let dir = capi_target_dir().join("c");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Builds the C library of `flavor`; returns the directory holding it.
fn build(flavor: Flavor) -> Result<PathBuf, String> {
    let root = freestanding::repo_root();
    let manifest = root.join("capi/Cargo.toml");
    let target_dir = capi_target_dir().join(format!("{flavor:?}").to_lowercase());
    let mut cmd = match flavor {
        Flavor::Gnu => {
            let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            cmd.args(["build", "--release"]);
            cmd
        }
        Flavor::Musl | Flavor::NoLibc => {
            freestanding::ensure_nightly()?;
            let mut cmd = freestanding::nightly("cargo");
            cmd.args(["rustc", "--release", "--lib", "--crate-type", "staticlib"]);
            if let Flavor::Musl = flavor {
                cmd.args([
                    "-Zbuild-std=core,compiler_builtins",
                    "--target",
                    &format!("{ARCH}-unknown-linux-musl"),
                ]);
            } else {
                cmd.args(["-Zjson-target-spec", "-Zbuild-std=core,compiler_builtins"])
                    .arg("-Zbuild-std-features=compiler-builtins-mem")
                    .arg("--target")
                    .arg(root.join(format!("{ARCH}-linux-nostd.json")))
                    .args(["--features", "rt"]);
            }
            cmd
        }
    };
    cmd.arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target_dir);
    let status = cmd.status().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !status.success() {
        return Err(format!("building the {flavor:?} C library failed ({status}): {cmd:?}"));
    }
    Ok(match flavor {
        Flavor::Gnu => target_dir.join("release"),
        Flavor::Musl => target_dir.join(format!("{ARCH}-unknown-linux-musl/release")),
        Flavor::NoLibc => target_dir.join(format!("{ARCH}-linux-nostd/release")),
    })
}

/// The library directory of `flavor`, built once per test process.
fn lib_dir(flavor: Flavor) -> PathBuf {
    static GNU: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    static MUSL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    static NOLIBC: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let cell = match flavor {
        Flavor::Gnu => &GNU,
        Flavor::Musl => &MUSL,
        Flavor::NoLibc => &NOLIBC,
    };
    cell.get_or_init(|| build(flavor))
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn shared_lib() -> PathBuf {
    lib_dir(Flavor::Gnu).join("libnolibc_alloc_c.so")
}

/// Fails with the package to install when `tool` is not on the PATH.
fn require(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{tool}` not found: install it with `apt-get install {package}`"))
}

/// Compiles `tests/c/contract.c` with `cc` and `flags` into `name`.
fn compile_contract(cc: &Path, name: &str, flags: &[&str], libs: &[PathBuf]) -> PathBuf {
    let src = freestanding::repo_root().join("tests/c/contract.c");
    let exe = work_dir().join(name);
    let out = run(Command::new(cc)
        .args(["-O2", "-g", "-Wall", "-Wextra", "-fno-builtin"])
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .args(libs));
    assert!(out.status.success(), "compiling {name}: {}", describe(&out));
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(!warnings.contains("warning"), "{name}: compiler warnings:\n{warnings}");
    exe
}

/// The line `contract.c` prints first: `malloc_usable_size` of malloc(1),
/// malloc(17) and malloc(129) as this allocator's classes have them.
fn our_usable_line() -> String {
    let usable = |n: usize| CLASSES[class_for(n, 16).expect("small")].size;
    format!("usable: {} {} {}", usable(1), usable(17), usable(129))
}

fn check_contract_output(out: &Output, threads: &str, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!("{}\n{threads}\ncontract: ok\n", our_usable_line());
    assert!(out.status.success() && stdout == want, "{what}: {}", describe(out));
}

fn readelf(flag: &str, bin: &Path) -> String {
    let out = run(Command::new("readelf").arg(flag).arg(bin));
    assert!(
        out.status.success(),
        "readelf (apt-get install binutils): {}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_static(bin: &Path) {
    let headers = readelf("-lW", bin);
    assert!(
        !headers.contains("INTERP") && !headers.contains("DYNAMIC"),
        "{} is not static:\n{headers}",
        bin.display()
    );
}

#[test]
fn contract_without_libc() {
    let gcc = require("gcc", "gcc");
    let lib = lib_dir(Flavor::NoLibc).join("libnolibc_alloc_c.a");
    let flags = [
        "-DNOLIBC",
        "-ffreestanding",
        "-fno-stack-protector",
        "-nostdlib",
        "-static",
        "-no-pie",
    ];
    let exe = compile_contract(&gcc, "contract-nolibc", &flags, &[lib]);
    assert_static(&exe);
    // No C library in the binary: the malloc family and errno are ours.
    let symbols = String::from_utf8_lossy(&run(Command::new("nm").arg(&exe)).stdout).into_owned();
    for sym in [" T malloc\n", " T __errno_location\n", " T _start\n"] {
        assert!(symbols.contains(sym), "{} lacks{sym}", exe.display());
    }
    check_contract_output(
        &run(&mut Command::new(&exe)),
        "threads: skipped (no libc)",
        "contract without libc",
    );
}

#[test]
fn contract_musl_static() {
    let musl_gcc = require("musl-gcc", "musl-tools");
    let lib = lib_dir(Flavor::Musl).join("libnolibc_alloc_c.a");
    // The library comes before musl's libc.a (musl-gcc appends -lc), so its
    // malloc is the one linked.
    let exe = compile_contract(&musl_gcc, "contract-musl", &["-static"], &[lib]);
    assert_static(&exe);
    check_contract_output(&run(&mut Command::new(&exe)), "threads: ok", "contract with musl");
}

/// `LD_DEBUG=bindings` output of a run (one file per process): the lines
/// that bind a symbol to our shared library.
fn bindings_to_us(prefix: &Path) -> String {
    let dir = prefix.parent().expect("a directory");
    let stem = prefix.file_name().expect("a file name").to_string_lossy().into_owned() + ".";
    let so = shared_lib().display().to_string();
    let mut found = String::new();
    for entry in fs::read_dir(dir).expect("readable").flatten() {
        if entry.file_name().to_string_lossy().starts_with(&stem) {
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            for line in text
                .lines()
                .filter(|l| l.contains(&format!("to {so} [0]: normal symbol")))
            {
                found.push_str(line);
                found.push('\n');
            }
            let _ = fs::remove_file(entry.path());
        }
    }
    found
}

/// Runs `cmd` with the shared library preloaded and symbol bindings logged;
/// fails unless `malloc` and `free` were bound to it.
fn run_preloaded(mut cmd: Command, name: &str) -> Output {
    let log = work_dir().join(format!("{name}.bindings"));
    bindings_to_us(&log); // clears leftovers of an earlier run
    let out = run(cmd
        .env("LD_PRELOAD", shared_lib())
        .env("LD_DEBUG", "bindings")
        .env("LD_DEBUG_OUTPUT", &log));
    let bound = bindings_to_us(&log);
    for sym in ["malloc", "free"] {
        assert!(
            bound.contains(&format!("symbol `{sym}'")),
            "{name}: `{sym}` was not bound to the preloaded library:\n{bound}"
        );
    }
    out
}

#[test]
fn contract_glibc_preloaded() {
    let gcc = require("gcc", "gcc");
    let exe = compile_contract(&gcc, "contract-glibc", &["-pthread"], &[]);
    // Without the preload glibc answers, and the usable line shows it.
    let plain = run(Command::new(&exe).arg("usable"));
    assert!(plain.status.success(), "{}", describe(&plain));
    assert_ne!(
        String::from_utf8_lossy(&plain.stdout).trim(),
        our_usable_line(),
        "glibc gives our usable sizes?"
    );

    let out = run_preloaded(Command::new(&exe), "contract");
    check_contract_output(&out, "threads: ok", "contract with glibc and LD_PRELOAD");

    // Misuse is caught by the allocator, not by glibc, and named after the call.
    for (case, message) in [
        ("double-free", "nolibc-alloc: free(): double free of 0x"),
        ("realloc-freed", "nolibc-alloc: realloc(): double free of 0x"),
        (
            "usable-inside",
            "nolibc-alloc: malloc_usable_size(): invalid pointer 0x",
        ),
    ] {
        let out = run(Command::new(&exe).arg(case).env("LD_PRELOAD", shared_lib()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(message) && stderr.lines().count() == 1 && out.status.code().is_none_or(|c| c == 134),
            "{case}: expected one line `{message}…` and SIGABRT: {}",
            describe(&out)
        );
    }
}

/// Runs `make()` without and with the preload; the outputs must match.
fn same_with_preload(name: &str, make: impl Fn() -> Command) -> Output {
    let plain = run(&mut make());
    assert!(
        plain.status.success(),
        "{name} without the preload: {}",
        describe(&plain)
    );
    let preloaded = run_preloaded(make(), name);
    assert!(
        preloaded.status.success(),
        "{name} with the preload: {}",
        describe(&preloaded)
    );
    assert!(
        plain.stdout == preloaded.stdout,
        "{name}: output differs with the preload\n--- without:\n{}\n--- with:\n{}",
        String::from_utf8_lossy(&plain.stdout),
        String::from_utf8_lossy(&preloaded.stdout)
    );
    assert!(!plain.stdout.is_empty(), "{name}: no output");
    preloaded
}

#[test]
fn preload_python() {
    let python = Path::new("/usr/bin/python3");
    let python = if python.is_file() {
        python.to_path_buf()
    } else {
        require("python3", "python3")
    };
    let script = freestanding::repo_root().join("tests/c/workload.py");
    same_with_preload("python3", || {
        let mut cmd = Command::new(&python);
        // Every object from malloc, none from pymalloc's arenas.
        cmd.arg(&script)
            .env("PYTHONMALLOC", "malloc")
            .env("PYTHONHASHSEED", "0");
        cmd
    });
}

#[test]
fn preload_sqlite3() {
    let sqlite3 = require("sqlite3", "sqlite3");
    let sql = fs::read(freestanding::repo_root().join("tests/c/workload.sql")).expect("workload.sql");
    let input = work_dir().join("workload.sql");
    fs::write(&input, sql).expect("writable");
    same_with_preload("sqlite3", || {
        let mut cmd = Command::new(&sqlite3);
        cmd.arg(":memory:").stdin(fs::File::open(&input).expect("readable"));
        cmd
    });
}

/// Some megabytes of compressible text, the same every run.
fn sample_text(path: &Path, bytes: usize) {
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words: Vec<String> = (0..4000)
        .map(|_| {
            let len = 2 + next() % 8;
            (0..len).map(|_| (b'a' + (next() % 16) as u8) as char).collect()
        })
        .collect();
    let mut text = String::with_capacity(bytes + 16);
    while text.len() < bytes {
        text.push_str(&words[(next() % words.len() as u64) as usize]);
        text.push(if next() % 12 == 0 { '\n' } else { ' ' });
    }
    fs::write(path, text).expect("writable");
}

#[test]
fn preload_xz_and_zstd() {
    let xz = require("xz", "xz-utils");
    let zstd = require("zstd", "zstd");
    let input = work_dir().join("sample.txt");
    sample_text(&input, 4 << 20);
    let original = fs::read(&input).expect("readable");
    // Small blocks, so that both threads work.
    let packed = same_with_preload("xz", || {
        let mut cmd = Command::new(&xz);
        cmd.args(["-T2", "--block-size=512KiB", "-4", "-c"]).arg(&input);
        cmd
    });
    let xz_file = work_dir().join("sample.txt.xz");
    fs::write(&xz_file, &packed.stdout).expect("writable");
    let unpacked = same_with_preload("xz -d", || {
        let mut cmd = Command::new(&xz);
        cmd.args(["-T2", "-d", "-c"]).arg(&xz_file);
        cmd
    });
    assert!(unpacked.stdout == original, "xz round trip differs");

    let packed = same_with_preload("zstd", || {
        let mut cmd = Command::new(&zstd);
        cmd.args(["-q", "-T2", "-B1MiB", "-12", "-c"]).arg(&input);
        cmd
    });
    let zst_file = work_dir().join("sample.txt.zst");
    fs::write(&zst_file, &packed.stdout).expect("writable");
    let unpacked = same_with_preload("zstd -d", || {
        let mut cmd = Command::new(&zstd);
        cmd.args(["-q", "-d", "-c"]).arg(&zst_file).stdin(Stdio::null());
        cmd
    });
    assert!(unpacked.stdout == original, "zstd round trip differs");
}

/// Average bytes taken beyond the request for malloc(n), n in `range`.
fn average_overhead(range: std::ops::RangeInclusive<usize>, taken: impl Fn(usize) -> usize) -> f64 {
    let count = range.clone().count() as f64;
    range.map(|n| (taken(n) - n) as f64).sum::<f64>() / count
}

/// The overhead figures of the docs of `src/c_abi.rs`, recomputed: slots
/// carry no header, so the cost is the class rounding; glibc's chunk is the
/// request plus an 8-byte header, rounded to 16, at least 32.
#[test]
fn overhead_figures_in_the_docs() {
    let ours = |n: usize| CLASSES[class_for(n, 16).expect("a small class")].size as usize;
    let glibc = |n: usize| ((n + 8 + 15) & !15).max(32);
    let figures = [
        (1..=1024, 7.5, 15.625),
        (1..=128, 7.5, 16.5),
        (129..=1024, 7.5, 15.5),
        (1025..=8192, 191.5, 15.5),
    ];
    for (range, want_ours, want_glibc) in figures {
        let (o, g) = (
            average_overhead(range.clone(), ours),
            average_overhead(range.clone(), glibc),
        );
        assert!(
            (o - want_ours).abs() < 0.05 && (g - want_glibc).abs() < 0.05,
            "{range:?}: ours {o}, glibc {g}: update src/c_abi.rs"
        );
    }
    let source = fs::read_to_string(freestanding::repo_root().join("src/c_abi.rs")).expect("readable");
    for quoted in ["7.5 here against 15.6 for glibc", "(191.5 against 15.5 bytes"] {
        assert!(source.contains(quoted), "src/c_abi.rs no longer quotes `{quoted}`");
    }
}

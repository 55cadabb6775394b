//! Building and running the freestanding examples: shared by the xtask
//! binary and by `tests/freestanding.rs` (which includes this file with
//! `#[path]`), so both build the same way into the same directory.
//!
//! Only `std`: the xtask must build on stable with no dependencies.

// Each includer uses a different subset.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The pinned nightly: has both `rust-src` (for build-std) and `miri`.
pub const NIGHTLY: &str = "nightly-2026-05-20";

/// The examples that are freestanding programs.
pub const EXAMPLES: [&str; 9] = [
    "hello",
    "brk_blocked",
    "tiny",
    "tiny_bump",
    "stress",
    "hostile",
    "threads",
    "thread_waves",
    "exhaust",
];

/// The `*-linux-nostd.json` target specs at the repository root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// `x86_64-linux-nostd.json`.
    X86_64,
    /// `aarch64-linux-nostd.json`.
    Aarch64,
    /// `riscv64-linux-nostd.json`.
    Riscv64,
    /// `i686-linux-nostd.json`.
    I686,
    /// `arm-linux-nostd.json`: armv7, hard-float.
    Armv7,
}

impl Arch {
    /// Every target spec.
    pub const ALL: [Arch; 5] = [Arch::X86_64, Arch::Aarch64, Arch::Riscv64, Arch::I686, Arch::Armv7];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Riscv64 => "riscv64",
            Arch::I686 => "i686",
            Arch::Armv7 => "armv7",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Result<Arch, String> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| format!("unknown arch `{name}` (expected x86_64, aarch64, riscv64, i686 or armv7)"))
    }

    /// The target spec's stem, also the directory cargo builds into.
    pub fn target(self) -> String {
        match self {
            Arch::Armv7 => "arm-linux-nostd".into(),
            _ => format!("{}-linux-nostd", self.name()),
        }
    }

    /// The qemu-user emulator needed to run it here, if any. An x86_64
    /// kernel usually runs i686 programs itself (`CONFIG_IA32_EMULATION`):
    /// that is tried once, with a minimal i686 program.
    pub fn qemu(self) -> Option<&'static str> {
        let native = match self {
            Arch::X86_64 => cfg!(target_arch = "x86_64"),
            Arch::Aarch64 => cfg!(target_arch = "aarch64"),
            Arch::Riscv64 => cfg!(target_arch = "riscv64"),
            Arch::I686 => cfg!(target_arch = "x86") || (cfg!(target_arch = "x86_64") && runs_i686()),
            Arch::Armv7 => cfg!(target_arch = "arm"),
        };
        if native {
            return None;
        }
        Some(match self {
            Arch::X86_64 => "qemu-x86_64",
            Arch::Aarch64 => "qemu-aarch64",
            Arch::Riscv64 => "qemu-riscv64",
            Arch::I686 => "qemu-i386",
            Arch::Armv7 => "qemu-arm",
        })
    }
}

/// Whether this kernel runs i686 programs: runs (once per process) a
/// 93-byte static i686 ELF that only calls `exit(0)`.
fn runs_i686() -> bool {
    static RUNS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *RUNS.get_or_init(|| {
        const BASE: u32 = 0x0804_8000;
        const CODE: [u8; 9] = [
            0xb8, 1, 0, 0, 0, // mov eax, 1 (exit)
            0x31, 0xdb, // xor ebx, ebx
            0xcd, 0x80, // int 0x80
        ];
        let size = (52 + 32 + CODE.len()) as u32;
        let mut elf = vec![0x7f, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        fn put16(elf: &mut Vec<u8>, v: u16) {
            elf.extend_from_slice(&v.to_le_bytes());
        }
        fn put32(elf: &mut Vec<u8>, v: u32) {
            elf.extend_from_slice(&v.to_le_bytes());
        }
        put16(&mut elf, 2); // ET_EXEC
        put16(&mut elf, 3); // EM_386
        put32(&mut elf, 1); // version
        put32(&mut elf, BASE + 52 + 32); // entry
        put32(&mut elf, 52); // program headers
        put32(&mut elf, 0); // no section headers
        put32(&mut elf, 0); // flags
        for v in [52, 32, 1, 0, 0, 0] {
            put16(&mut elf, v); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
        }
        // PT_LOAD of the whole file, read + execute.
        for v in [1, 0, BASE, BASE, size, size, 5, 0x1000] {
            put32(&mut elf, v);
        }
        elf.extend_from_slice(&CODE);
        let dir = build_dir();
        let path = dir.join(format!("i686-probe-{}", std::process::id()));
        let ran = (|| {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::create_dir_all(&dir).ok()?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o755)
                .open(&path)
                .ok()?;
            std::io::Write::write_all(&mut file, &elf).ok()?;
            drop(file);
            Command::new(&path).status().ok()
        })();
        let _ = std::fs::remove_file(&path);
        ran.is_some_and(|s| s.success())
    })
}

/// The repository root: the nearest ancestor of this crate's manifest
/// directory holding the target specs (the root itself for the tests, its
/// parent for the xtask).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|d| d.join("x86_64-linux-nostd.json").is_file())
        .unwrap_or(here)
        .to_path_buf()
}

/// Where freestanding builds go: `<target dir>/nostd`, apart from the host
/// builds so a nested cargo never waits for the outer one's lock.
pub fn build_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        _ => repo_root().join("target"),
    };
    target.join("nostd")
}

/// The built example `name` for `arch`.
pub fn binary(arch: Arch, name: &str) -> PathBuf {
    example_in(&build_dir(), arch, name)
}

/// A command that runs with the pinned nightly whatever toolchain the caller
/// was started with (see [`without_outer_cargo`]).
pub fn nightly(program: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", NIGHTLY, program]);
    without_outer_cargo(&mut cmd);
    cmd
}

/// Drops from `cmd`'s environment what the `cargo` running this program
/// set for itself and must not reach a nested one: its toolchain
/// (`RUSTUP_TOOLCHAIN`, set by `cargo +stable ...`), compiler, flags and
/// target, its own path and manifest.
pub fn without_outer_cargo(cmd: &mut Command) -> &mut Command {
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO",
        "CARGO_MANIFEST_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn output(cmd: &mut Command) -> Result<Output, String> {
    cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))
}

/// The nightly's sysroot, installing the nightly (with `rust-src`) first when
/// it or its `rust-src` is missing.
pub fn ensure_nightly() -> Result<PathBuf, String> {
    let sysroot = || -> Option<PathBuf> {
        let out = nightly("rustc")
            .args(["--print", "sysroot"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    };
    let has_src = |root: &Path| root.join("lib/rustlib/src/rust/library/core").is_dir();
    if let Some(root) = sysroot() {
        if has_src(&root) {
            return Ok(root);
        }
    }
    eprintln!("installing {NIGHTLY} with rust-src (for -Zbuild-std)");
    let status = Command::new("rustup")
        .args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ])
        .env_remove("RUSTUP_TOOLCHAIN")
        .status()
        .map_err(|e| format!("cannot run rustup (install it from https://rustup.rs): {e}"))?;
    match sysroot() {
        Some(root) if status.success() && has_src(&root) => Ok(root),
        _ => Err(format!(
            "toolchain {NIGHTLY} with rust-src is missing and could not be installed: \
             run `rustup toolchain install {NIGHTLY} --profile minimal --component rust-src`"
        )),
    }
}

/// Builds `examples` (all of them when empty) for `arch` in one cargo
/// invocation, so core/alloc are built once per arch.
pub fn build(arch: Arch, examples: &[&str]) -> Result<(), String> {
    let root = repo_root();
    build_package(
        arch,
        &root.join("Cargo.toml"),
        &build_dir(),
        &["rt"],
        examples,
        None,
        &[],
    )
}

/// The package of the footprint peers (`tiny` with other allocators).
pub fn peers_manifest() -> PathBuf {
    repo_root().join("xtask/peers/Cargo.toml")
}

/// The peers' examples, in table order.
pub const PEERS: [&str; 4] = ["tiny_talc", "tiny_rlsf", "tiny_dlmalloc", "tiny_lla"];

/// Where the peers are built (their own workspace, so their own directory).
pub fn peers_dir() -> PathBuf {
    build_dir().join("peers")
}

/// Builds the peers' examples for `arch`, with `opt_level` or else the main
/// manifest's (so that the peers never differ from the examples there).
pub fn build_peers(arch: Arch, opt_level: Option<&str>) -> Result<(), String> {
    let dir = match opt_level {
        Some(level) => peers_dir().join(format!("opt-{level}")),
        None => peers_dir(),
    };
    let level = opt_level.map_or_else(profile_opt_level, str::to_string);
    build_package(arch, &peers_manifest(), &dir, &[], &[], Some(&level), &[])
}

/// The opt-level of the `freestanding` profile in the main manifest.
pub fn profile_opt_level() -> String {
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap_or_default();
    let mut in_profile = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_profile = line == "[profile.freestanding]";
        } else if in_profile {
            if let Some(v) = line.strip_prefix("opt-level").and_then(|r| r.trim().strip_prefix('=')) {
                return v.trim().trim_matches('"').to_string();
            }
        }
    }
    "s".into()
}

/// The built peer example `name` for `arch`.
pub fn peer_binary(arch: Arch, name: &str, opt_level: Option<&str>) -> PathBuf {
    let dir = match opt_level {
        Some(level) => peers_dir().join(format!("opt-{level}")),
        None => peers_dir(),
    };
    example_in(&dir, arch, name)
}

/// The main examples built with another `opt-level` (into their own directory).
pub fn build_with_opt_level(arch: Arch, level: &str) -> Result<(), String> {
    let root = repo_root();
    build_package(
        arch,
        &root.join("Cargo.toml"),
        &build_dir().join(format!("opt-{level}")),
        &["rt"],
        &[],
        Some(level),
        &[],
    )
}

/// The panic strategy `immediate-abort` (nightly, `-Zunstable-options
/// -Cpanic=immediate-abort`): a panic is a trap, with no message, no
/// handler and no formatting machinery. Measured only (`cargo xtask size
/// --immediate-abort`); never the default, which prints every panic.
pub const IMMEDIATE_ABORT: [&str; 2] = ["-Zunstable-options", "-Cpanic=immediate-abort"];

/// The examples `examples` built with [`IMMEDIATE_ABORT`] (into their own
/// directory: core and alloc are built again with that strategy).
pub fn build_immediate_abort(arch: Arch, examples: &[&str]) -> Result<(), String> {
    let root = repo_root();
    build_package(
        arch,
        &root.join("Cargo.toml"),
        &build_dir().join("immediate-abort"),
        &["rt"],
        examples,
        None,
        &IMMEDIATE_ABORT,
    )
}

/// The example `name` built by [`build_immediate_abort`].
pub fn binary_immediate_abort(arch: Arch, name: &str) -> PathBuf {
    example_in(&build_dir().join("immediate-abort"), arch, name)
}

/// The example `name` built by [`build_with_opt_level`].
pub fn binary_with_opt_level(arch: Arch, name: &str, level: &str) -> PathBuf {
    example_in(&build_dir().join(format!("opt-{level}")), arch, name)
}

fn example_in(dir: &Path, arch: Arch, name: &str) -> PathBuf {
    dir.join(arch.target()).join("freestanding").join("examples").join(name)
}

/// `--remap-path-prefix` for the sources of `core`/`alloc` (built here by
/// build-std) and of the registry's crates: the panic locations those keep
/// name `/rustc/...` and `/crates/...`, not this machine's home directory
/// (128 bytes off `tiny_bump`, 256 off `tiny`, 960 off `hello` on x86_64;
/// and no build paths in the binaries). Separated by 0x1f, as
/// `CARGO_ENCODED_RUSTFLAGS` wants.
fn remap_flags(sysroot: &Path) -> String {
    let mut flags = vec![format!(
        "--remap-path-prefix={}=/rustc",
        sysroot.join("lib/rustlib/src/rust").display()
    )];
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(registry) = cargo_home.map(|h| h.join("registry/src")) {
        // One flag per index directory (`index.crates.io-<hash>`).
        for entry in std::fs::read_dir(&registry).into_iter().flatten().flatten() {
            flags.push(format!("--remap-path-prefix={}=/crates", entry.path().display()));
        }
    }
    flags.join("\x1f")
}

/// Builds `examples` (all when empty) of the package at `manifest` for
/// `arch` into `target_dir`, profile `freestanding`, optionally with its
/// `opt-level` overridden and more `rustflags` (after the path remapping).
fn build_package(
    arch: Arch,
    manifest: &Path,
    target_dir: &Path,
    features: &[&str],
    examples: &[&str],
    opt_level: Option<&str>,
    rustflags: &[&str],
) -> Result<(), String> {
    let sysroot = ensure_nightly()?;
    let root = repo_root();
    let mut flags = remap_flags(&sysroot);
    for flag in rustflags {
        flags.push('\x1f');
        flags.push_str(flag);
    }
    let mut cmd = nightly("cargo");
    cmd.current_dir(&root)
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        .arg("build")
        .arg("-Zjson-target-spec")
        .arg("-Zbuild-std=core,alloc,compiler_builtins")
        // optimize_for_size: core and alloc choose their smaller algorithms
        // (integer formatting, sorting, ...): 0.9 KB off `tiny`, 4.8 KB off `hello`.
        .arg("-Zbuild-std-features=compiler-builtins-mem,optimize_for_size")
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target")
        .arg(root.join(format!("{}.json", arch.target())))
        .args(["--profile", "freestanding"])
        .env("CARGO_TARGET_DIR", target_dir);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    if let Some(level) = opt_level {
        cmd.env("CARGO_PROFILE_FREESTANDING_OPT_LEVEL", level);
    }
    if examples.is_empty() {
        cmd.arg("--examples");
    }
    for name in examples {
        cmd.args(["--example", name]);
    }
    let status = cmd.status().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the examples of {} for {} failed ({status})",
            manifest.display(),
            arch.target()
        ));
    }
    Ok(())
}

/// Whether `program` is on the `PATH`.
fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}

/// A command running `bin` (built for `arch`) here: natively, or under
/// qemu-user with an optional guest page size (`qemu-aarch64 -p 65536`).
pub fn runner(arch: Arch, bin: &Path, page_size: Option<usize>) -> Result<Command, String> {
    match arch.qemu() {
        None => {
            if page_size.is_some() {
                return Err("a page size can only be chosen under qemu".into());
            }
            Ok(Command::new(bin))
        }
        Some(qemu) => {
            if !on_path(qemu) {
                return Err(format!(
                    "{qemu} not found: running {} binaries needs qemu-user \
                     (`apt-get install qemu-user`)",
                    arch.name()
                ));
            }
            let mut cmd = Command::new(qemu);
            if let Some(bytes) = page_size {
                cmd.arg("-p").arg(bytes.to_string());
            }
            cmd.arg(bin);
            Ok(cmd)
        }
    }
}

/// Runs `bin` and captures its output.
pub fn run_captured(arch: Arch, bin: &Path, page_size: Option<usize>, args: &[OsString]) -> Result<Output, String> {
    output(runner(arch, bin, page_size)?.args(args))
}

/// Strips a copy of `bin` into `<build dir>/stripped/<arch>/` with the
/// nightly's own `rust-objcopy` (LLVM's, so it handles every arch); returns
/// the stripped size in bytes.
pub fn stripped_size(arch: Arch, bin: &Path) -> Result<u64, String> {
    let sysroot = ensure_nightly()?;
    let host = host_triple()?;
    let objcopy = sysroot.join("lib/rustlib").join(host).join("bin/rust-objcopy");
    let out_dir = build_dir().join("stripped").join(arch.name());
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let out = out_dir.join(bin.file_name().unwrap_or_default());
    // It links the toolchain's libLLVM.
    let mut libs = vec![sysroot.join("lib")];
    libs.extend(
        std::env::var_os("LD_LIBRARY_PATH")
            .iter()
            .flat_map(std::env::split_paths),
    );
    let libs = std::env::join_paths(libs).map_err(|e| e.to_string())?;
    let done = output(
        Command::new(&objcopy)
            .env("LD_LIBRARY_PATH", libs)
            .arg("--strip-all")
            .arg(bin)
            .arg(&out),
    )?;
    if !done.status.success() {
        return Err(format!(
            "{} failed: {}",
            objcopy.display(),
            String::from_utf8_lossy(&done.stderr)
        ));
    }
    std::fs::metadata(&out)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", out.display()))
}

fn host_triple() -> Result<String, String> {
    let out = output(nightly("rustc").arg("-vV"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| "cannot find the host triple in `rustc -vV`".to_string())
}

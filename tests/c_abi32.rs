//! The C ABI on 32-bit targets: `tests/c/contract.c`, the whole malloc
//! contract, against the static library built for
//!
//! - i686 with glibc: `libnolibc_alloc_c.a` for `i686-unknown-linux-gnu`
//!   (stable, the rustup target installed when missing) linked into
//!   `gcc -m32 -static -pthread` (glibc's i386 static library, from Debian's
//!   `gcc-12-multilib`): our malloc replaces glibc's in a static binary, the
//!   threads part included; run natively;
//! - i686 without a C library: `i686-linux-nostd.json` with the `rt`
//!   runtime, `gcc -m32 -nostdlib -static`; run natively;
//! - armv7 without a C library: `arm-linux-nostd.json` with `rt`,
//!   `arm-linux-gnueabihf-gcc -nostdlib -static` (Debian's
//!   `gcc-arm-linux-gnueabihf`); run under `qemu-arm`.
//!
//! armv7 with a C library is not tested: there is no armv7 glibc or musl to
//! link against here (Debian's `musl-gcc` targets x86_64 only, and an armhf
//! glibc would need Debian's multiarch packages).
//!
//! Every block is 16-aligned on every target (the contract checks it):
//! `max_align_t` is 16 bytes on i386 and 8 on arm EABI (`contract.c`
//! asserts both fit).

#[path = "../xtask/src/freestanding.rs"]
mod freestanding;
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nolibc_alloc::class::{class_for, CLASSES};

fn capi_dir() -> PathBuf {
    let nostd = freestanding::build_dir();
    nostd.parent().unwrap_or(&nostd).join("capi")
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

/// Builds `libnolibc_alloc_c.a` for `target` (a triple, or a spec file of
/// the repository root with `rt`); returns its path.
fn build_lib(target: &str) -> PathBuf {
    let root = freestanding::repo_root();
    let spec = target.ends_with(".json");
    let dir = capi_dir().join(format!("{}-32", target.trim_end_matches(".json")));
    let mut cmd = if spec {
        freestanding::ensure_nightly().unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = freestanding::nightly("cargo");
        cmd.args(["rustc", "--release", "--lib", "--crate-type", "staticlib"])
            .args(["-Zjson-target-spec", "-Zbuild-std=core,compiler_builtins"])
            .arg("-Zbuild-std-features=compiler-builtins-mem")
            .arg("--target")
            .arg(root.join(target))
            .args(["--features", "rt"]);
        cmd
    } else {
        let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".into());
        support::tools::need_rust_target(&toolchain, target);
        let mut cmd = Command::new("rustup");
        cmd.args(["run", &toolchain, "cargo", "rustc", "--release", "--lib"])
            .args(["--crate-type", "staticlib", "--target", target]);
        freestanding::without_outer_cargo(&mut cmd);
        cmd
    };
    cmd.arg("--manifest-path")
        .arg(root.join("capi/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &dir);
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "building the C library for {target} failed: {cmd:?}");
    let lib = dir
        .join(target.trim_end_matches(".json"))
        .join("release/libnolibc_alloc_c.a");
    assert!(lib.is_file(), "{} missing", lib.display());
    lib
}

/// Compiles `tests/c/contract.c` with `cc` and `flags` against `lib`; fails
/// on any warning.
fn compile(cc: &Path, name: &str, flags: &[&str], lib: &Path) -> PathBuf {
    let src = freestanding::repo_root().join("tests/c/contract.c");
    let dir = capi_dir().join("c");
    fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(name);
    let out = run(Command::new(cc)
        .args(["-O2", "-g", "-Wall", "-Wextra", "-fno-builtin"])
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .arg(lib));
    assert!(out.status.success(), "compiling {name}: {}", describe(&out));
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(!warnings.contains("warning"), "{name}: compiler warnings:\n{warnings}");
    exe
}

/// The ELF class and machine of `exe`, as `readelf -h` says them.
fn elf_header(exe: &Path) -> String {
    let readelf = support::need_one("readelf", "binutils");
    String::from_utf8_lossy(&run(Command::new(readelf).arg("-hlW").arg(exe)).stdout).into_owned()
}

fn assert_static_32(exe: &Path, machine: &str) {
    let h = elf_header(exe);
    assert!(
        h.contains("ELF32") && h.contains(machine),
        "{} is not a {machine} ELF32:\n{h}",
        exe.display()
    );
    assert!(
        !h.contains("INTERP") && !h.contains("DYNAMIC"),
        "{} is not static:\n{h}",
        exe.display()
    );
}

fn check_contract(out: &Output, threads: &str, what: &str) {
    let usable = |n: usize| CLASSES[class_for(n, 16).expect("small")].size;
    let want = format!(
        "usable: {} {} {}\n{threads}\ncontract: ok\n",
        usable(1),
        usable(17),
        usable(129)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout == want, "{what}: {}", describe(out));
}

const NOLIBC_FLAGS: [&str; 6] = [
    "-DNOLIBC",
    "-ffreestanding",
    "-fno-stack-protector",
    "-nostdlib",
    "-static",
    "-no-pie",
];

#[test]
fn contract_i686_glibc_static() {
    let (gcc, include) = support::tools::need_gcc_m32();
    let lib = build_lib("i686-unknown-linux-gnu");
    let include = include.display().to_string();
    let exe = compile(
        &gcc,
        "contract-i686-glibc",
        &["-m32", "-static", "-pthread", "-isystem", &include],
        &lib,
    );
    assert_static_32(&exe, "Intel 80386");
    // glibc's malloc is not in the binary: ours answered (the usable line
    // shows our classes, and glibc's own malloc would have left
    // `__libc_malloc` defined).
    let nm = support::need_one("nm", "binutils");
    let symbols = String::from_utf8_lossy(&run(Command::new(nm).arg(&exe)).stdout).into_owned();
    assert!(symbols.contains(" T malloc\n"), "no malloc in {}", exe.display());
    assert!(!symbols.contains("__libc_malloc"), "glibc's malloc was linked in too");
    check_contract(
        &run(&mut Command::new(&exe)),
        "threads: ok",
        "contract, i686 glibc static",
    );
}

#[test]
fn contract_i686_without_libc() {
    let (gcc, _) = support::tools::need_gcc_m32();
    let lib = build_lib("i686-linux-nostd.json");
    let mut flags = vec!["-m32"];
    flags.extend(NOLIBC_FLAGS);
    let exe = compile(&gcc, "contract-i686-nolibc", &flags, &lib);
    assert_static_32(&exe, "Intel 80386");
    check_contract(
        &run(&mut Command::new(&exe)),
        "threads: skipped (no libc)",
        "contract, i686 without libc",
    );
}

#[test]
fn contract_armv7_without_libc() {
    let gcc = support::need_one("arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf");
    let qemu = support::need_one("qemu-arm", "qemu-user");
    let lib = build_lib("arm-linux-nostd.json");
    let mut flags = vec!["-march=armv7-a", "-mfloat-abi=hard", "-mfpu=vfpv3-d16"];
    flags.extend(NOLIBC_FLAGS);
    let exe = compile(&gcc, "contract-armv7-nolibc", &flags, &lib);
    assert_static_32(&exe, "ARM");
    check_contract(
        &run(Command::new(qemu).arg(&exe)),
        "threads: skipped (no libc)",
        "contract, armv7 without libc (qemu-arm)",
    );
}

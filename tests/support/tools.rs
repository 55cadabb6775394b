//! The programs the tests run (C compilers, qemu-user, binutils, programs to
//! preload into), provisioned by the tests themselves so that `cargo test`
//! passes on a fresh Debian or Ubuntu machine.
//!
//! [`need`] looks the tools up on the `PATH`. When one is missing and the
//! process runs as root, it installs the Debian package with `apt-get`
//! (`apt-get update` first), holding a lock file so that the test binaries
//! and threads that ask at the same time install one after another. Not
//! root: the test binary stops at once with the one command that installs
//! every package the tests use. A tool still missing after the install is a
//! test failure naming the package; nothing is ever skipped.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Every Debian package `cargo test` may need, for the one command printed
/// when the tests cannot install them themselves.
/// (`gcc-12-multilib`, not `gcc-multilib`: that one conflicts with the arm
/// cross compiler; 12 is Debian 12's gcc, see [`need_gcc_m32`].)
pub const PACKAGES: &str =
    "binutils gcc gcc-12-multilib gcc-arm-linux-gnueabihf musl-tools python3 qemu-user sqlite3 xz-utils zstd";

/// `apt-get update` is run again only when the last one is older than this.
const UPDATE_EVERY: Duration = Duration::from_secs(3600);

/// Where `tool` is on the `PATH`, if it is.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// The paths of `tools`, all from the Debian package `package`, which is
/// installed first when one of them is missing (see the module docs).
pub fn need(tools: &[&str], package: &str) -> Vec<PathBuf> {
    let found = || tools.iter().map(|t| which(t)).collect::<Option<Vec<_>>>();
    if let Some(paths) = found() {
        return paths;
    }
    let missing: Vec<&str> = tools.iter().copied().filter(|t| which(t).is_none()).collect();
    let missing = missing.join("`, `");
    if !is_root() {
        stop(&format!(
            "`{missing}` not found (Debian package {package}), and installing it needs root.\n\
             Run this once, then the tests again:\n\n    \
             sudo apt-get install -y {PACKAGES}\n"
        ));
    }
    let _lock = lock();
    // Another test may have installed it while this one waited.
    if let Some(paths) = found() {
        return paths;
    }
    if let Err(e) = install(package) {
        panic!("`{missing}` not found and the Debian package {package} could not be installed: {e}");
    }
    found().unwrap_or_else(|| panic!("`{missing}` still not found after installing the Debian package {package}"))
}

/// [`need`] for what is not a program on the `PATH` (a library, a
/// compiler mode): `present` tells whether it is there; the Debian package
/// `package` is installed first when it is not, under the same rules.
pub fn need_that(what: &str, present: impl Fn() -> bool, package: &str) {
    if present() {
        return;
    }
    if !is_root() {
        stop(&format!(
            "{what} is missing (Debian package {package}), and installing it needs root.\n\
             Run this once, then the tests again:\n\n    \
             sudo apt-get install -y {PACKAGES}\n"
        ));
    }
    let _lock = lock();
    if present() {
        return;
    }
    if let Err(e) = install(package) {
        panic!("{what} is missing and the Debian package {package} could not be installed: {e}");
    }
    assert!(
        present(),
        "{what} still missing after installing the Debian package {package}"
    );
}

/// `gcc -m32 -static` compiles and links a C program: gcc's 32-bit runtime
/// and glibc's i386 libraries (Debian's `gcc-N-multilib`, N the version of
/// `gcc`; installed when missing). Returns `gcc` and an include directory to
/// pass with `-isystem`, which holds the `asm` headers: Debian's
/// `gcc-multilib` would link `/usr/include/asm` to the x86 ones (the same
/// for i386 and x86_64), but it conflicts with the arm cross compiler
/// `tests/c_abi32.rs` also needs, so the tests make that link themselves.
pub fn need_gcc_m32() -> (PathBuf, PathBuf) {
    let gcc = need_one("gcc", "gcc");
    let shim = std::env::temp_dir().join("nolibc-alloc-m32-include");
    let _ = fs::create_dir_all(&shim);
    if !shim.join("asm").exists() {
        let _ = std::os::unix::fs::symlink("/usr/include/x86_64-linux-gnu/asm", shim.join("asm"));
    }
    let links = || {
        let dir = std::env::temp_dir().join(format!("nolibc-alloc-m32-probe-{}", std::process::id()));
        let _ = fs::create_dir_all(&dir);
        let src = dir.join("probe.c");
        let ok = fs::write(
            &src,
            "#include <errno.h>\n#include <stdio.h>\nint main(void) { return puts(\"\") < 0 || errno; }\n",
        )
        .is_ok()
            && Command::new(&gcc)
                .args(["-m32", "-static", "-isystem"])
                .arg(&shim)
                .arg("-o")
                .arg(dir.join("probe"))
                .arg(&src)
                .output()
                .is_ok_and(|o| o.status.success());
        let _ = fs::remove_dir_all(&dir);
        ok
    };
    let version = Command::new(&gcc)
        .arg("-dumpversion")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .split('.')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let package = format!("gcc-{version}-multilib");
    need_that("`gcc -m32 -static` (32-bit glibc for gcc)", links, &package);
    (gcc, shim)
}

/// `rustup target add TARGET` for `toolchain` when it is not installed yet.
pub fn need_rust_target(toolchain: &str, target: &str) {
    let installed = || {
        Command::new("rustup")
            .args(["target", "list", "--installed", "--toolchain", toolchain])
            .env_remove("RUSTUP_TOOLCHAIN")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == target))
    };
    if installed() {
        return;
    }
    let _lock = lock();
    if installed() {
        return;
    }
    let _ = nolibc_alloc::sys::write(
        2,
        format!("nolibc-alloc tests: rustup target add {target} ({toolchain})\n").as_bytes(),
    );
    let status = Command::new("rustup")
        .args(["target", "add", "--toolchain", toolchain, target])
        .env_remove("RUSTUP_TOOLCHAIN")
        .status();
    assert!(
        status.is_ok_and(|s| s.success()) && installed(),
        "`rustup target add --toolchain {toolchain} {target}` failed"
    );
}

/// [`need`] for one tool.
pub fn need_one(tool: &str, package: &str) -> PathBuf {
    need(&[tool], package).remove(0)
}

/// The effective user of this process is root (`/proc/self` is owned by it).
fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Writes `message` straight to stderr (past the test harness's capture) and
/// ends the test binary: every test after this one would stop the same way.
fn stop(message: &str) -> ! {
    let _ = nolibc_alloc::sys::write(2, format!("\nnolibc-alloc tests: {message}\n").as_bytes());
    std::process::exit(2)
}

/// An exclusive lock on a file in the temporary directory, shared by every
/// test binary on the machine; released when the file is dropped.
fn lock() -> File {
    let path = std::env::temp_dir().join("nolibc-alloc-tests-apt.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    // flock(2). The tests build on stable only; the MSRV is the library's.
    #[allow(clippy::incompatible_msrv)]
    file.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
    file
}

/// `apt-get update` (unless one ran within the hour), then `apt-get install`.
/// Called with the lock held.
fn install(package: &str) -> Result<(), String> {
    if which("apt-get").is_none() {
        return Err("no apt-get here: install it with this system's package manager".into());
    }
    let _ = nolibc_alloc::sys::write(
        2,
        format!("nolibc-alloc tests: installing {package} with apt-get\n").as_bytes(),
    );
    let stamp = std::env::temp_dir().join("nolibc-alloc-tests-apt.updated");
    let fresh = fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .is_ok_and(|t| SystemTime::now().duration_since(t).is_ok_and(|age| age < UPDATE_EVERY));
    if !fresh {
        apt(&["update", "-qq"])?;
        fs::write(&stamp, b"").map_err(|e| format!("{}: {e}", stamp.display()))?;
    }
    apt(&["install", "-y", "-qq", "--no-install-recommends", package])
}

/// Runs `apt-get ARGS` non-interactively, waiting up to 10 minutes for the
/// dpkg lock when another program holds it.
fn apt(args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new("apt-get");
    cmd.args(["-o", "DPkg::Lock::Timeout=600"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive");
    let status = cmd.status().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({status})"))
    }
}

//! The library's unit tests on a 32-bit target: `cargo test --lib --target
//! i686-unknown-linux-gnu` as a child (the x86_64 kernel runs i686 programs
//! natively). They find what assumes 64-bit words: check words, header
//! sizes, the class table as a 32-bit build computes it (`class::width32`
//! also checks it from the host), the mmap threshold cap.
//!
//! Provisioned like the other tests: the rustup target for the toolchain
//! running this test (`rustup target add`), and `gcc -m32` (Debian's
//! `gcc-N-multilib`, installed as root, else a stop with the command to run).
//! The child builds into `<target>/i686-hosted`, apart from the outer build,
//! so it never waits for the outer cargo's lock.

#[path = "../xtask/src/freestanding.rs"]
mod freestanding;
mod support;

use std::process::Command;

const TARGET: &str = "i686-unknown-linux-gnu";

#[test]
fn unit_tests_pass_on_i686() {
    // The toolchain `cargo test` runs with (rustup sets the variable for
    // the tools it starts), else the default one.
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".into());
    support::tools::need_rust_target(&toolchain, TARGET);
    let (_, m32_include) = support::tools::need_gcc_m32();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"))
        .join("i686-hosted");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", &toolchain, "cargo", "test", "--lib", "--target", TARGET])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", &target_dir)
        // The C code of the dev-dependencies (mimalloc) includes <errno.h>.
        .env(
            "CFLAGS_i686_unknown_linux_gnu",
            format!("-isystem {}", m32_include.display()),
        );
    freestanding::without_outer_cargo(&mut cmd);
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stdout.lines().find(|l| l.starts_with("test result:"));
    assert!(
        out.status.success() && summary.is_some_and(|l| l.starts_with("test result: ok.")),
        "{cmd:?}: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    // Every unit test ran (a filter or a build that finds none also "passes").
    let passed: usize = summary
        .and_then(|l| l.strip_prefix("test result: ok. "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 40, "only {passed} unit tests ran on {TARGET}:\n{stdout}");
    eprintln!("{TARGET}: {}", summary.unwrap_or_default());
}

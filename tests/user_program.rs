//! The README's "Your own libc-free program", followed to the letter: the
//! files are taken from the README's code blocks (the file name is the first
//! `code` span of the paragraph in front of each block), written into a new
//! crate in a temporary directory, and the README's command is run in it on
//! x86_64, aarch64 and riscv64 (the last two with the `--target` the README
//! names, under qemu-user). The output must be the one the README quotes.
//!
//! Two things differ from what a user does, neither in the instructions:
//! the dependency is this repository by path instead of the version on
//! crates.io (the test checks the README's version is this crate's), and the
//! repository's `Cargo.lock` is copied in so that the same dependency
//! versions are used without asking the registry. Builds go to
//! `<target>/user-program/<arch>`, kept between runs.

#[path = "../xtask/src/freestanding.rs"]
mod freestanding;
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use freestanding::Arch;

const SECTION: &str = "## Your own libc-free program";

/// What the README's section says to do.
struct Recipe {
    /// `(path, contents)` of each file to write.
    files: Vec<(String, String)>,
    /// The command, split at spaces.
    command: Vec<String>,
    /// The line the program prints.
    prints: String,
}

/// The section's text, up to the next `## ` heading.
fn section(readme: &str) -> &str {
    let start = readme
        .find(SECTION)
        .unwrap_or_else(|| panic!("README.md has no `{SECTION}`"));
    let rest = &readme[start + SECTION.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The first `code` span of `text`.
fn first_code_span(text: &str) -> Option<&str> {
    let (_, rest) = text.split_once('`')?;
    Some(rest.split_once('`')?.0)
}

fn recipe(readme: &str) -> Recipe {
    let text = section(readme);
    let mut files = Vec::new();
    let mut commands = Vec::new();
    // The paragraph being read, and the one before the blank line.
    let (mut paragraph, mut before) = (String::new(), String::new());
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            if line.trim().is_empty() {
                if !paragraph.is_empty() {
                    before = std::mem::take(&mut paragraph);
                }
            } else {
                paragraph.push_str(line);
                paragraph.push(' ');
            }
            continue;
        };
        if !paragraph.is_empty() {
            before = std::mem::take(&mut paragraph);
        }
        let mut body = String::new();
        for line in lines.by_ref().take_while(|l| *l != "```") {
            body.push_str(line);
            body.push('\n');
        }
        if info == "sh" {
            commands.extend(body.lines().map(str::to_string));
        } else {
            let name = first_code_span(&before)
                .unwrap_or_else(|| panic!("no file name in front of the {info} block: {before}"));
            files.push((name.to_string(), body));
        }
        before.clear();
    }
    assert_eq!(commands.len(), 1, "one command expected in the section: {commands:?}");
    let command: Vec<String> = commands[0].split_whitespace().map(str::to_string).collect();
    let prints = text
        .split_once("It prints `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(line, _)| line.to_string())
        .unwrap_or_else(|| panic!("the section does not say what the program prints"));
    Recipe { files, command, prints }
}

/// The dependency by path instead of by version.
fn by_path(cargo_toml: &str, root: &Path) -> String {
    let version = env!("CARGO_PKG_VERSION");
    let minor = version.rsplit_once('.').map_or(version, |(m, _)| m);
    let wanted = format!("nolibc-alloc = {{ version = \"{minor}\", features = [\"rt\"] }}");
    assert!(
        cargo_toml.lines().any(|l| l == wanted),
        "the README's Cargo.toml lacks `{wanted}` (this crate is {version}):\n{cargo_toml}"
    );
    let by_path = format!(
        "nolibc-alloc = {{ path = {:?}, features = [\"rt\"] }}",
        root.display().to_string()
    );
    cargo_toml.replace(&wanted, &by_path)
}

/// `cargo` as a user's shell finds it: the first on the `PATH` outside
/// rustup's toolchain directories (the rustup proxy, which reads
/// `rust-toolchain.toml`).
fn user_cargo() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|dir| !dir.components().any(|c| c.as_os_str() == "toolchains"))
        .map(|dir| dir.join("cargo"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no rustup `cargo` on the PATH"))
}

fn build_and_run(arch: Arch) {
    if let Some(qemu) = arch.qemu() {
        support::need_one(qemu, "qemu-user");
    }
    let root = freestanding::repo_root();
    let readme = fs::read_to_string(root.join("README.md")).expect("README.md");
    let recipe = recipe(&readme);
    let names: Vec<&str> = recipe.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["Cargo.toml", "rust-toolchain.toml", ".cargo/config.toml", "src/main.rs"],
        "the files of the README's section"
    );

    let dir = std::env::temp_dir().join(format!(
        "nolibc-alloc-user-program-{}-{}",
        arch.name(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    for (name, body) in &recipe.files {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().expect("a parent")).expect("writable temp dir");
        let body = if name == "Cargo.toml" {
            by_path(body, &root)
        } else {
            body.clone()
        };
        fs::write(&path, body).expect("writable temp dir");
    }
    let spec = format!("{}.json", arch.target());
    for arch in Arch::ALL {
        let spec = format!("{}.json", arch.target());
        assert!(
            section(&readme).contains(&format!("`{spec}`")),
            "the section does not name {spec}"
        );
        fs::copy(root.join(&spec), dir.join(&spec)).expect("copy the target spec");
    }
    fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy Cargo.lock");

    // The README's command; on the other architectures with the `--target`
    // it names, before the program's arguments.
    let mut args = recipe.command.clone();
    assert_eq!(args.first().map(String::as_str), Some("cargo"), "{args:?}");
    args.remove(0);
    if arch != Arch::X86_64 {
        let target = format!("--target {spec}");
        assert!(
            section(&readme).replace('\n', " ").contains(&format!("`{target}`")),
            "the section does not say `{target}`"
        );
        let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
        args.splice(at..at, ["--target".to_string(), spec.clone()]);
    }
    let mut cmd = Command::new(user_cargo());
    cmd.current_dir(&dir).args(&args).env(
        "CARGO_TARGET_DIR",
        freestanding::build_dir()
            .with_file_name("user-program")
            .join(arch.name()),
    );
    // i686 runs natively where the kernel runs 32-bit programs; the README
    // says to set a runner elsewhere.
    if let (Arch::I686, Some(qemu)) = (arch, arch.qemu()) {
        cmd.env("CARGO_TARGET_I686_LINUX_NOSTD_RUNNER", qemu);
    }
    // The outer `cargo test`'s toolchain and settings are not the user's.
    freestanding::without_outer_cargo(&mut cmd);
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout == format!("{}\n", recipe.prints),
        "{cmd:?} in {} on {}: {}\n--- stdout:\n{stdout}\n--- stderr:\n{}",
        dir.display(),
        arch.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn x86_64() {
    build_and_run(Arch::X86_64);
}

#[test]
fn aarch64() {
    build_and_run(Arch::Aarch64);
}

#[test]
fn riscv64() {
    build_and_run(Arch::Riscv64);
}

#[test]
fn i686() {
    build_and_run(Arch::I686);
}

#[test]
fn armv7() {
    build_and_run(Arch::Armv7);
}

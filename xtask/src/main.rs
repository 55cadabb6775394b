//! Builds and runs the freestanding examples with the pinned nightly.
//!
//! Reached through the cargo aliases in `.cargo/config.toml`:
//!
//! ```text
//! cargo hello [--arch A] [--page-size N]        build and run examples/hello.rs
//! cargo xtask build [--example NAME]... [--arch A]
//! cargo xtask run --example NAME [--arch A] [--page-size N] [-- ARGS...]
//! cargo xtask size [--opt-levels] [--immediate-abort]
//!                                               footprint tables (examples, peers, C, memory at start)
//! ```
//!
//! `A` is x86_64 (default), aarch64, riscv64, i686 or armv7; foreign arches
//! run under qemu-user (i686 natively where the kernel runs it). `--page-size` is passed to qemu as `-p` (aarch64 only honours it).

mod freestanding;
mod size;

use std::ffi::OsString;
use std::process::ExitCode;

use freestanding::{Arch, EXAMPLES};

const USAGE: &str = "\
usage:
  cargo hello [--arch A] [--page-size N]
  cargo xtask build [--example NAME]... [--arch A|all]
  cargo xtask run --example NAME [--arch A] [--page-size N] [-- ARGS...]
  cargo xtask size [--opt-levels] [--immediate-abort]
arches: x86_64 (default), aarch64, riscv64, i686, armv7 (foreign ones run under qemu-user)";

struct Options {
    arches: Vec<Arch>,
    examples: Vec<String>,
    page_size: Option<usize>,
    args: Vec<OsString>,
    opt_levels: bool,
    immediate_abort: bool,
}

fn parse(mut rest: impl Iterator<Item = OsString>) -> Result<Options, String> {
    let mut opts = Options {
        arches: vec![Arch::X86_64],
        examples: Vec::new(),
        page_size: None,
        args: Vec::new(),
        opt_levels: false,
        immediate_abort: false,
    };
    while let Some(arg) = rest.next() {
        let arg = arg.into_string().map_err(|a| format!("argument is not UTF-8: {a:?}"))?;
        let mut value = |flag: &str| {
            rest.next()
                .and_then(|v| v.into_string().ok())
                .ok_or(format!("{flag} needs a value"))
        };
        match arg.as_str() {
            "--arch" => {
                let name = value("--arch")?;
                opts.arches = if name == "all" {
                    Arch::ALL.to_vec()
                } else {
                    vec![Arch::parse(&name)?]
                };
            }
            "--example" => {
                let name = value("--example")?;
                if !EXAMPLES.contains(&name.as_str()) {
                    return Err(format!("unknown example `{name}` (expected one of {EXAMPLES:?})"));
                }
                opts.examples.push(name);
            }
            "--page-size" => {
                let n = value("--page-size")?;
                opts.page_size = Some(n.parse().map_err(|_| format!("bad page size `{n}`"))?);
            }
            "--opt-levels" => opts.opt_levels = true,
            "--immediate-abort" => opts.immediate_abort = true,
            "--" => {
                opts.args.extend(rest.by_ref());
            }
            other => return Err(format!("unexpected argument `{other}`\n{USAGE}")),
        }
    }
    Ok(opts)
}

fn run_example(arch: Arch, name: &str, page_size: Option<usize>, args: &[OsString]) -> Result<ExitCode, String> {
    freestanding::build(arch, &[name])?;
    let bin = freestanding::binary(arch, name);
    let mut cmd = freestanding::runner(arch, &bin, page_size)?;
    let status = cmd
        .args(args)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    match status.code() {
        Some(0) => Ok(ExitCode::SUCCESS),
        _ => Err(format!("{} exited with {status}", bin.display())),
    }
}

fn main() -> ExitCode {
    let mut argv = std::env::args_os().skip(1);
    let command = argv.next().and_then(|c| c.into_string().ok()).unwrap_or_default();
    let result = parse(argv).and_then(|opts| match command.as_str() {
        "hello" => {
            let arch = opts.arches[0];
            run_example(arch, "hello", opts.page_size, &opts.args)
        }
        "run" => match opts.examples.as_slice() {
            [name] => run_example(opts.arches[0], name, opts.page_size, &opts.args),
            _ => Err(format!("`run` needs exactly one --example\n{USAGE}")),
        },
        "build" => {
            let names: Vec<&str> = opts.examples.iter().map(String::as_str).collect();
            for &arch in &opts.arches {
                freestanding::build(arch, &names)?;
                for name in if names.is_empty() { &EXAMPLES[..] } else { &names[..] } {
                    println!("{}", freestanding::binary(arch, name).display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        "size" => size::run(opts.opt_levels, opts.immediate_abort).map(|()| ExitCode::SUCCESS),
        "help" | "--help" | "-h" | "" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    });
    result.unwrap_or_else(|e| {
        eprintln!("xtask: {e}");
        ExitCode::FAILURE
    })
}

//! Builds and runs the freestanding examples with the pinned nightly.
//!
//! Reached through the cargo aliases in `.cargo/config.toml`:
//!
//! ```text
//! cargo hello [--arch A] [--page-size N]        build and run examples/hello.rs
//! cargo xtask build [--example NAME]... [--arch A]
//! cargo xtask run --example NAME [--arch A] [--page-size N] [-- ARGS...]
//! cargo xtask size                              stripped size of every example per arch
//! ```
//!
//! `A` is x86_64 (default), aarch64 or riscv64; foreign arches run under
//! qemu-user. `--page-size` is passed to qemu as `-p` (aarch64 only honours it).

mod freestanding;

use std::ffi::OsString;
use std::process::ExitCode;

use freestanding::{Arch, EXAMPLES};

const USAGE: &str = "\
usage:
  cargo hello [--arch A] [--page-size N]
  cargo xtask build [--example NAME]... [--arch A|all]
  cargo xtask run --example NAME [--arch A] [--page-size N] [-- ARGS...]
  cargo xtask size
arches: x86_64 (default), aarch64, riscv64 (run under qemu-user)";

struct Options {
    arches: Vec<Arch>,
    examples: Vec<String>,
    page_size: Option<usize>,
    args: Vec<OsString>,
}

fn parse(mut rest: impl Iterator<Item = OsString>) -> Result<Options, String> {
    let mut opts = Options {
        arches: vec![Arch::X86_64],
        examples: Vec::new(),
        page_size: None,
        args: Vec::new(),
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

fn size() -> Result<ExitCode, String> {
    let mut rows = Vec::new();
    for arch in Arch::ALL {
        freestanding::build(arch, &[])?;
        for name in EXAMPLES {
            let bytes = freestanding::stripped_size(arch, &freestanding::binary(arch, name))?;
            rows.push((arch, name, bytes));
        }
    }
    println!("stripped size in bytes (profile `freestanding`, opt-level \"s\"):");
    print!("{:<12}", "example");
    for arch in Arch::ALL {
        print!("{:>10}", arch.name());
    }
    println!();
    for name in EXAMPLES {
        print!("{name:<12}");
        for arch in Arch::ALL {
            let bytes = rows.iter().find(|r| r.0 == arch && r.1 == name).map_or(0, |r| r.2);
            print!("{bytes:>10}");
        }
        println!();
    }
    Ok(ExitCode::SUCCESS)
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
        "size" => size(),
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

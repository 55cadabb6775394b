//! Footprint: the output of `cargo xtask size` (xtask/src/size.rs): the
//! stripped sizes of the freestanding examples for every target spec, the
//! same `tiny` program with the peer allocators (xtask/peers/), the C
//! programs with musl and glibc, and the memory a few small blocks cost at
//! start. The report quotes it all, and when the first table has both
//! `tiny` and its bump-allocator twin (`tiny_bump`), their difference: the
//! allocator's own code size.

use std::path::Path;
use std::process::Command;

/// A markdown section (without its heading).
pub fn measure(manifest: &Path) -> String {
    if !manifest.join("xtask").is_dir() {
        return "Not measured: there is no `xtask/` in this tree yet (`cargo xtask size` prints the sizes).\n".into();
    }
    eprintln!("compare: footprint: running `cargo xtask size` (builds the freestanding examples)...");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(manifest)
        .args(["xtask", "size"])
        // The nested build must choose its own toolchain.
        .env_remove("RUSTUP_TOOLCHAIN")
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let mut s = format!("Output of `cargo xtask size`:\n\n```text\n{}\n```\n", text.trim_end());
            s += &allocator_code_size(&text);
            s
        }
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let tail: Vec<&str> = err.lines().rev().take(8).collect();
            format!(
                "Not measured: `cargo xtask size` failed ({}):\n\n```text\n{}\n```\n",
                o.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        }
        Err(e) => format!("Not measured: cannot run cargo: {e}\n"),
    }
}

/// "tiny − tiny_bump" per column, if the table has both rows.
pub fn allocator_code_size(table: &str) -> String {
    let lines: Vec<&str> = table.lines().collect();
    let Some(header) = lines.iter().find(|l| l.trim_start().starts_with("example")) else {
        return String::new();
    };
    let arches: Vec<&str> = header.split_whitespace().skip(1).collect();
    let row = |name: &str| -> Option<Vec<i64>> {
        let l = lines.iter().find(|l| l.split_whitespace().next() == Some(name))?;
        l.split_whitespace().skip(1).map(|v| v.parse().ok()).collect()
    };
    let (Some(tiny), Some(bump)) = (row("tiny"), row("tiny_bump").or_else(|| row("tiny-bump"))) else {
        return "\nThe allocator's own code size needs a `tiny_bump` example (tiny with a bump allocator) \
                in `cargo xtask size`; there is none yet.\n"
            .into();
    };
    let mut s = String::from(
        "\nThe allocator's own code size (stripped `tiny` minus `tiny_bump`, the same program with a bump allocator):\n\n| arch | bytes |\n|---|--:|\n",
    );
    for (i, a) in arches.iter().enumerate() {
        if let (Some(t), Some(b)) = (tiny.get(i), bump.get(i)) {
            s += &format!("| {a} | {} |\n", t - b);
        }
    }
    s
}

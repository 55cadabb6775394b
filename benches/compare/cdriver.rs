//! The C side: records each workload's streams to op files, builds
//! `benches/c/driver.c` against glibc and (statically) against musl, and
//! runs the drivers, which replay the files through `malloc`/`free` (or run
//! a native workload). The glibc driver also runs with the allocators a C
//! user would preload instead (Debian's jemalloc, tcmalloc, mimalloc, and
//! our `libnolibc_alloc_c.so`), through `LD_PRELOAD`.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::workloads::{generate, Params, Sink, Workload};

const MAGIC: u32 = 0x504F_414E;
const OP_ALLOC: u8 = 1;
const OP_FREE: u8 = 2;
const OP_REALLOC: u8 = 3;
const OP_SEND: u8 = 4;
const OP_RECV_FREE: u8 = 5;

/// A sink that writes the stream as 16-byte records (see `driver.c`).
struct Recorder {
    out: BufWriter<File>,
    max_slot: u32,
    ops: u64,
    err: Option<std::io::Error>,
}

impl Recorder {
    fn record(&mut self, kind: u8, align_log2: u8, slot: u32, size: u64) {
        let mut r = [0u8; 16];
        r[0] = kind;
        r[1] = align_log2;
        r[4..8].copy_from_slice(&slot.to_le_bytes());
        r[8..16].copy_from_slice(&size.to_le_bytes());
        if let Err(e) = self.out.write_all(&r) {
            self.err.get_or_insert(e);
        }
        self.max_slot = self.max_slot.max(slot);
        self.ops += 1;
    }
}

impl Sink for Recorder {
    fn alloc(&mut self, slot: u32, size: u64, align_log2: u8) {
        self.record(OP_ALLOC, align_log2, slot, size);
    }
    fn free(&mut self, slot: u32) {
        self.record(OP_FREE, 0, slot, 0);
    }
    fn realloc(&mut self, slot: u32, new_size: u64) {
        self.record(OP_REALLOC, 0, slot, new_size);
    }
    fn send(&mut self, slot: u32) {
        self.record(OP_SEND, 0, slot, 0);
    }
    fn recv_free(&mut self) {
        self.record(OP_RECV_FREE, 0, 0, 0);
    }
    fn ok(&self) -> bool {
        self.err.is_none()
    }
}

/// Writes the op files of `w` into `dir`; returns their paths, one per stream
/// (none for a native workload).
pub fn record(w: Workload, p: &Params, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut paths = Vec::new();
    for stream in 0..w.streams() {
        let path = dir.join(format!("{}.s{stream}.ops", w.name()));
        let mut r = Recorder {
            out: BufWriter::new(File::create(&path)?),
            max_slot: 0,
            ops: 0,
            err: None,
        };
        r.out.write_all(&[0u8; 16])?;
        generate(w, p, stream, &mut r);
        if let Some(e) = r.err.take() {
            return Err(e);
        }
        let mut f = r.out.into_inner().map_err(|e| e.into_error())?;
        f.seek(SeekFrom::Start(0))?;
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        hdr[4..8].copy_from_slice(&(r.max_slot + 1).to_le_bytes());
        hdr[8..16].copy_from_slice(&r.ops.to_le_bytes());
        f.write_all(&hdr)?;
        paths.push(path);
    }
    Ok(paths)
}

/// One build of the driver: a column of the C table.
pub struct Driver {
    pub name: &'static str,
    pub note: String,
    /// The executable, or why there is none.
    pub exe: Result<PathBuf, String>,
    /// The shared library it runs with (`LD_PRELOAD`), if any.
    pub preload: Option<PathBuf>,
}

impl Driver {
    /// The command that runs the driver with `args`.
    pub fn command(&self) -> Result<Command, String> {
        let mut c = Command::new(self.exe.clone()?);
        if let Some(lib) = &self.preload {
            c.env("LD_PRELOAD", lib);
        }
        Ok(c)
    }
}

/// The preloaded allocators: (driver name, Debian package, library file name prefix).
pub const PRELOADED: [(&str, &str, &str); 3] = [
    ("jemalloc-C", "libjemalloc2", "libjemalloc.so"),
    ("tcmalloc-C", "libtcmalloc-minimal4", "libtcmalloc_minimal.so"),
    ("mimalloc-C", "libmimalloc2.0", "libmimalloc.so"),
];

/// The shared library of an installed Debian package, from `dpkg -L`: the
/// shortest file name starting with `prefix` (the soname link, not a
/// `_debug` twin).
pub fn find_package_lib(package: &str, prefix: &str) -> Result<PathBuf, String> {
    let missing = || format!("install Debian's `{package}` (apt-get install {package})");
    let out = Command::new("dpkg")
        .args(["-L", package])
        .output()
        .map_err(|_| missing())?;
    if !out.status.success() {
        return Err(missing());
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
                && p.exists()
        })
        .min_by_key(|p| p.as_os_str().len())
        .ok_or_else(missing)
}

fn compile(cc: &str, args: &[&str], src: &Path, libs: &[&Path], out: &Path) -> Result<PathBuf, String> {
    let status = Command::new(cc)
        .args(args)
        .arg("-o")
        .arg(out)
        .arg(src)
        .args(libs)
        .arg("-lpthread")
        .status();
    match status {
        Ok(s) if s.success() => Ok(out.to_path_buf()),
        Ok(s) => Err(format!("{cc} failed ({s})")),
        Err(e) => Err(format!("{cc} not runnable: {e}")),
    }
}

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Builds the driver variants into `dir`.
pub fn build(src: &Path, dir: &Path) -> Vec<Driver> {
    let _ = std::fs::create_dir_all(dir);
    let glibc = if have("gcc") {
        compile("gcc", &["-O2"], src, &[], &dir.join("driver-glibc"))
    } else {
        Err("gcc is missing".into())
    };
    let musl = if have("musl-gcc") {
        compile("musl-gcc", &["-O2", "-static"], src, &[], &dir.join("driver-musl"))
    } else {
        Err("musl-gcc is missing: install Debian's `musl-tools` (apt-get install musl-tools)".into())
    };
    let mut v = vec![
        Driver {
            name: "glibc-C",
            note: "gcc -O2, glibc malloc (the C table's baseline)".into(),
            exe: glibc.clone(),
            preload: None,
        },
        Driver {
            name: "musl-C",
            note: "musl-gcc -O2 -static, musl's malloc".into(),
            exe: musl,
            preload: None,
        },
    ];
    for (name, package, prefix) in PRELOADED {
        let lib = find_package_lib(package, prefix);
        v.push(Driver {
            name,
            note: match &lib {
                Ok(l) => format!(
                    "the glibc driver with `LD_PRELOAD={}` (Debian `{package}`)",
                    l.display()
                ),
                Err(_) => format!("the glibc driver with Debian `{package}`'s library preloaded"),
            },
            exe: glibc
                .clone()
                .and_then(|e| lib.as_ref().map(|_| e).map_err(|e| e.clone())),
            preload: lib.ok(),
        });
    }
    v.push(nolibc_c_driver(src, dir));
    let so = build_capi_gnu();
    v.push(Driver {
        name: "nolibc-alloc-so",
        note: match &so {
            Ok(l) => format!(
                "the glibc driver with `LD_PRELOAD={}` (capi/ built for the host, as tests/c_abi.rs does)",
                l.display()
            ),
            Err(_) => "the glibc driver with capi/'s libnolibc_alloc_c.so preloaded".into(),
        },
        exe: glibc.and_then(|e| so.as_ref().map(|_| e).map_err(|e| e.clone())),
        preload: so.ok(),
    });
    v
}

/// `floor-C`: the glibc driver with `c/floor.c` preloaded, the workloads
/// without an allocator's work (`compare/floor.rs`); only with `--allocs floor`.
/// `glibc` is the glibc driver's build; `c_dir` holds `floor.c`.
pub fn floor_driver(c_dir: &Path, dir: &Path, glibc: &Result<PathBuf, String>) -> Driver {
    let lib = dir.join("libfloor.so");
    let built = Command::new("gcc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(c_dir.join("floor.c"))
        .status();
    let lib = match built {
        Ok(s) if s.success() => Ok(lib),
        Ok(s) => Err(format!("gcc failed on floor.c ({s})")),
        Err(e) => Err(format!("gcc not runnable: {e}")),
    };
    Driver {
        name: "floor-C",
        note: match &lib {
            Ok(l) => format!(
                "not an allocator: the glibc driver with `LD_PRELOAD={}` (c/floor.c, compare/floor.rs's algorithm; \
                 `FLOOR_RING=1` for prodcons*)",
                l.display()
            ),
            Err(_) => "not an allocator: the glibc driver with c/floor.c preloaded".into(),
        },
        exe: glibc
            .clone()
            .and_then(|e| lib.as_ref().map(|_| e).map_err(|e| e.clone())),
        preload: lib.ok(),
    }
}

/// Builds `libnolibc_alloc_c.so` for the host (glibc) with the current
/// toolchain, into the directory tests/c_abi.rs builds it in; returns its path.
pub fn build_capi_gnu() -> Result<PathBuf, String> {
    use crate::freestanding::{build_dir, repo_root};
    let nostd = build_dir();
    let target_dir = nostd.parent().unwrap_or(&nostd).join("capi").join("gnu");
    eprintln!("compare: building capi/ for the host (nolibc-alloc-so)...");
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--manifest-path"])
        .arg(repo_root().join("capi/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("building capi/ failed ({}): {last}", out.status));
    }
    let lib = target_dir.join("release/libnolibc_alloc_c.so");
    if lib.is_file() {
        Ok(lib)
    } else {
        Err(format!("{} was not built", lib.display()))
    }
}

/// The driver with nolibc-alloc's C ABI in front of musl's malloc:
/// `capi/` built as a staticlib for `<arch>-unknown-linux-musl` (pinned
/// nightly, build-std; the same command and directory as tests/c_abi.rs, so
/// the two share the build), linked with `musl-gcc -O2 -static driver.c
/// libnolibc_alloc_c.a`. Its ratio is to glibc-C like musl-C's.
fn nolibc_c_driver(src: &Path, dir: &Path) -> Driver {
    let exe = (|| -> Result<PathBuf, String> {
        if !have("musl-gcc") {
            return Err("musl-gcc is missing: install Debian's `musl-tools` (apt-get install musl-tools)".into());
        }
        let lib = build_capi_musl()?;
        compile(
            "musl-gcc",
            &["-O2", "-static"],
            src,
            &[&lib],
            &dir.join("driver-nolibc-alloc"),
        )
    })();
    Driver {
        name: "nolibc-alloc-C",
        note: "musl-gcc -O2 -static with capi/'s libnolibc_alloc_c.a (musl target) linked in front of musl's malloc"
            .into(),
        exe,
        preload: None,
    }
}

/// Builds `libnolibc_alloc_c.a` for the musl target; returns its path.
fn build_capi_musl() -> Result<PathBuf, String> {
    use crate::freestanding::{build_dir, ensure_nightly, nightly, repo_root};
    const ARCH: &str = std::env::consts::ARCH;
    ensure_nightly()?;
    let nostd = build_dir();
    let target_dir = nostd.parent().unwrap_or(&nostd).join("capi").join("musl");
    eprintln!("compare: building capi/ for {ARCH}-unknown-linux-musl (nolibc-alloc-C)...");
    let mut cmd = nightly("cargo");
    cmd.args(["rustc", "--release", "--lib", "--crate-type", "staticlib"])
        .args([
            "-Zbuild-std=core,compiler_builtins",
            "--target",
            &format!("{ARCH}-unknown-linux-musl"),
        ])
        .arg("--manifest-path")
        .arg(repo_root().join("capi/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir);
    let out = cmd.output().map_err(|e| format!("cannot run rustup: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("building capi/ for musl failed ({}): {last}", out.status));
    }
    let lib = target_dir.join(format!("{ARCH}-unknown-linux-musl/release/libnolibc_alloc_c.a"));
    if lib.is_file() {
        Ok(lib)
    } else {
        Err(format!("{} was not built", lib.display()))
    }
}

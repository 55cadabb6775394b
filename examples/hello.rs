//! A static, libc-free program that uses `alloc` the ordinary way (`Vec`,
//! `String`, `format!`, `BTreeMap`, `Box<dyn Trait>`, static tables of
//! `&str` and of function pointers), then prints a picture of its own address
//! space — program text, data/bss, the brk heap, the open space, the mmap zone,
//! the stack — from `/proc/self/maps`, marking where a function, a static, the
//! break, a local variable, a small and a large allocation are.
//!
//! Run: `cargo hello` (x86_64, native), `cargo hello --arch aarch64` or
//! `cargo hello --arch riscv64` (under qemu-user). Ends with `hello: ok`.
//! `cargo hello -- --panic` shows the runtime's panic handler instead
//! (message on stderr, exit status 101).

#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use nolibc_alloc::{entry, os, println, rt, sys, NolibcAlloc};

#[global_allocator]
static ALLOC: NolibcAlloc = NolibcAlloc::new();

entry!(main);

/// A table of string slices: pointers in a static, fixed at link time.
static GREETINGS: [&str; 3] = ["hello", "bonjour", "hallo"];

type BinOp = fn(u64, u64) -> u64;

/// A table of function pointers.
static OPS: [(&str, BinOp); 3] = [("add", add), ("mul", mul), ("max", max)];

/// Lives in .data (non-zero initial value).
static DATA: AtomicUsize = AtomicUsize::new(42);

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn mul(a: u64, b: u64) -> u64 {
    a * b
}

fn max(a: u64, b: u64) -> u64 {
    a.max(b)
}

trait Shape {
    fn name(&self) -> String;
    fn area(&self) -> u64;
}

struct Square(u64);
struct Rect(u64, u64);

impl Shape for Square {
    fn name(&self) -> String {
        format!("square {}", self.0)
    }
    fn area(&self) -> u64 {
        self.0 * self.0
    }
}

impl Shape for Rect {
    fn name(&self) -> String {
        format!("rect {}x{}", self.0, self.1)
    }
    fn area(&self) -> u64 {
        self.0 * self.1
    }
}

/// One line of `/proc/self/maps`.
struct Region {
    start: usize,
    end: usize,
    perms: String,
    name: String,
}

fn read_file(path: &[u8]) -> Option<Vec<u8>> {
    let fd = sys::open_read(path).ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match sys::read(fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(sys::Errno::EINTR) => {}
            Err(_) => {
                let _ = sys::close(fd);
                return None;
            }
        }
    }
    let _ = sys::close(fd);
    Some(out)
}

fn parse_maps(text: &str) -> Vec<Region> {
    let mut regions = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let name = fields.nth(3).unwrap_or("").to_string();
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) else {
            continue;
        };
        regions.push(Region {
            start,
            end,
            perms: perms.to_string(),
            name,
        });
    }
    regions.sort_by_key(|r| r.start);
    regions
}

fn human(bytes: usize) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    // u64: a shift by 40 would overflow a 32-bit usize.
    let bytes = bytes as u64;
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >> (10 * (unit + 1)) != 0 {
        unit += 1;
    }
    let exact = bytes & ((1u64 << (10 * unit)) - 1) == 0;
    format!(
        "{}{} {}",
        if exact { "" } else { "~" },
        bytes >> (10 * unit),
        UNITS[unit]
    )
}

/// What a region is, in the terms of the layout picture.
fn label(r: &Region, text_at: usize, data_at: usize, brk_end: usize) -> String {
    let has = |a: usize| r.start <= a && a < r.end;
    if has(text_at) {
        "program text".to_string()
    } else if has(data_at) {
        "program data/bss".to_string()
    } else if r.name == "[heap]" {
        "brk heap".to_string()
    } else if r.name == "[stack]" {
        "main thread stack".to_string()
    } else if r.name.starts_with('[') {
        r.name.clone()
    } else if !r.name.is_empty() && r.start < brk_end {
        format!("program ({})", r.perms)
    } else if r.start >= brk_end {
        "mmap zone".to_string()
    } else if r.perms.starts_with("rw") {
        "program bss".to_string()
    } else {
        "padding".to_string()
    }
}

fn main() -> i32 {
    let mut failures = 0;
    let mut check = |what: &str, ok: bool| {
        if !ok {
            println!("FAILED: {}", what);
            failures += 1;
        }
    };

    let page = os::page_size();
    println!("hello from a static, libc-free binary");
    println!("page size: {}", page);
    println!("AT_PAGESZ: {:?}", rt::auxv(rt::AT_PAGESZ));
    let args: Vec<String> = rt::args()
        .map(|a| String::from_utf8_lossy(a.to_bytes()).into_owned())
        .collect();
    println!("args: {:?}", args);
    check("args", !args.is_empty());
    println!("environment: {} variables", rt::env().count());
    if args.get(1).map(String::as_str) == Some("--panic") {
        panic!("deliberate panic, as asked: {}", args.len());
    }

    // Vec, String, format!
    let squares: Vec<u64> = (1..=10).map(|i| i * i).collect();
    let sum: u64 = squares.iter().sum();
    println!("squares: {:?} (sum {})", squares, sum);
    check("vec sum", sum == 385);
    let mut words = String::new();
    for (i, g) in GREETINGS.iter().enumerate() {
        if i > 0 {
            words.push_str(", ");
        }
        words.push_str(g);
    }
    let line = format!("{} ({} bytes)", words, words.len());
    println!("greetings: {}", line);
    check("format!", line == "hello, bonjour, hallo (21 bytes)");

    // BTreeMap
    let mut counts = BTreeMap::new();
    for word in "the quick brown fox jumps over the lazy dog the end".split(' ') {
        *counts.entry(word).or_insert(0u32) += 1;
    }
    println!("word counts: {:?}", counts);
    check(
        "btreemap",
        counts.get("the") == Some(&3) && counts.keys().next() == Some(&"brown"),
    );

    // Box<dyn Trait> (vtables in statics) and a table of fn pointers
    let shapes: Vec<Box<dyn Shape>> = vec![Box::new(Square(3)), Box::new(Rect(2, 5))];
    let mut total = 0;
    for s in &shapes {
        println!("{}: area {}", s.name(), s.area());
        total += s.area();
    }
    check("dyn Shape", total == 19);
    let results: Vec<u64> = OPS.iter().map(|(_, op)| op(6, 7)).collect();
    for ((name, _), r) in OPS.iter().zip(&results) {
        println!("{}(6, 7) = {}", name, r);
    }
    check("fn table", results == [13, 42, 7]);

    // A small and a large allocation, filled and read back.
    let mut small = Box::new([0u8; 32]);
    small.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    let mut large = vec![0u8; 1 << 20];
    large.iter_mut().enumerate().for_each(|(i, b)| *b = (i % 251) as u8);
    check("small contents", small.iter().enumerate().all(|(i, &b)| b == i as u8));
    check(
        "large contents",
        large.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
    );

    // The picture.
    let local = 0u8;
    // SAFETY: brk(0) only reads the break.
    let brk_now = unsafe { sys::kernel_brk(0) };
    let text_at = main as fn() -> i32 as usize;
    let data_at = &DATA as *const AtomicUsize as usize;
    let small_at = &*small as *const [u8; 32] as usize;
    let large_at = large.as_ptr() as usize;
    let local_at = &local as *const u8 as usize;
    DATA.fetch_add(1, Ordering::Relaxed);
    let mut marks = [
        (text_at, "fn main"),
        (data_at, "static DATA"),
        (brk_now, "brk(0): the current break"),
        (small_at, "small allocation, Box<[u8; 32]>"),
        (large_at, "large allocation, Vec of 1 MiB"),
        (local_at, "local variable"),
    ];
    marks.sort_by_key(|m| m.0);

    let Some(maps) = read_file(b"/proc/self/maps\0") else {
        println!("FAILED: cannot read /proc/self/maps");
        return 1;
    };
    let regions = parse_maps(&String::from_utf8_lossy(&maps));
    check("maps parsed", !regions.is_empty());
    let where_is = |a: usize| {
        regions
            .iter()
            .find(|r| r.start <= a && a < r.end)
            .map(|r| label(r, text_at, data_at, brk_now))
            .unwrap_or_else(|| "not listed".to_string())
    };

    println!();
    println!("address space, low to high:");
    let mark = |(addr, what): (usize, &str)| println!("  {:#014x}                  <- {}", addr, what);
    let mut next_mark = 0;
    let mut prev_end = 0;
    for r in &regions {
        let mut gap_start = prev_end;
        while next_mark < marks.len() && marks[next_mark].0 < r.start {
            mark(marks[next_mark]);
            gap_start = gap_start.max(marks[next_mark].0);
            next_mark += 1;
        }
        if prev_end != 0 && r.start - gap_start >= 64 << 20 && r.name != "[vsyscall]" {
            println!(
                "  {:#014x}-{:#014x}  ... open space ({}) ...",
                gap_start,
                r.start,
                human(r.start - gap_start)
            );
        }
        println!(
            "  {:#014x}-{:#014x}  {} {:>9}  {}",
            r.start,
            r.end,
            r.perms,
            human(r.end - r.start),
            label(r, text_at, data_at, brk_now)
        );
        while next_mark < marks.len() && marks[next_mark].0 < r.end {
            mark(marks[next_mark]);
            next_mark += 1;
        }
        prev_end = r.end;
    }
    marks[next_mark..].iter().for_each(|&m| mark(m));
    println!();
    println!("small allocation is in: {}", where_is(small_at));
    println!("large allocation is in: {}", where_is(large_at));
    // qemu-user with guest pages larger than the host's lists only some
    // mappings: "not listed" is accepted, a wrong region is not.
    let is = |addr: usize, want: &str| matches!(where_is(addr).as_str(), w if w == want || w == "not listed");
    check("fn main in program text", is(text_at, "program text"));
    check("static in program data", is(data_at, "program data/bss"));
    check("local variable on the stack", is(local_at, "main thread stack"));

    let stats = ALLOC.stats();
    println!(
        "allocator: {} from brk, {} mapped, {} in use",
        human(stats.brk_bytes),
        human(stats.mapped_bytes),
        human(stats.in_use_bytes)
    );

    drop(large);
    drop(small);
    if failures == 0 {
        println!("hello: ok");
        0
    } else {
        println!("hello: {} checks FAILED", failures);
        1
    }
}

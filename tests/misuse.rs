//! Misuse the allocator can detect stops the process: one line on stderr,
//! `nolibc-alloc: <call>: <fault> 0x<address>`, then SIGABRT (or exit status
//! 134 when SIGABRT is blocked). Each case runs in a child process
//! (this test binary re-run with `NOLIBC_ALLOC_SCENARIO`), with a
//! `NolibcAlloc` instance of its own; the parent checks how the child died
//! and what it wrote.
//!
//! The child writes `about to misuse` to stdout right before the faulty call,
//! so a crash during setup is told apart from the detection.

#[macro_use]
mod support;

use std::alloc::{GlobalAlloc, Layout};
use std::os::unix::process::ExitStatusExt;

use nolibc_alloc::{sys, Config, NolibcAlloc};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const SIGABRT: i32 = 6;
const RLIMIT_CORE: usize = 4;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// A fresh allocator for one child.
fn allocator() -> NolibcAlloc {
    NolibcAlloc::with_config(Config::new().use_brk(false))
}

fn alloc(a: &NolibcAlloc, size: usize) -> *mut u8 {
    // SAFETY: a valid non-zero layout.
    let p = unsafe { a.alloc(layout(size)) };
    child_assert!(!p.is_null(), "setup: alloc({size}) failed");
    // SAFETY: a live block of `size` bytes.
    unsafe { p.write_bytes(0x11, size) };
    p
}

/// Marks the point of misuse on stdout (stderr is kept for the allocator).
fn about_to_misuse(what: &str, ptr: *const u8) {
    let mut line = support::StackLine::new();
    let _ = std::fmt::Write::write_fmt(&mut line, format_args!("about to misuse: {what} {ptr:p}"));
    line.emit(1);
}

/// Reached only when the misuse went unnoticed.
fn undetected() -> ! {
    let _ = sys::write(1, b"misuse NOT detected: the child carried on\n");
    sys::exit_group(0)
}

/// Runs the child half when this process is the child; else spawns it and
/// checks it died of SIGABRT (or exit 134) after exactly one stderr line,
/// `nolibc-alloc: <f> 0x<the misused pointer, 16 digits>` for one of
/// `faults` (e.g. `dealloc: double free of`).
fn misuse(name: &str, faults: &[&str], child: fn(&NolibcAlloc)) {
    if support::is_child(name) {
        // No core files from the aborts.
        let _ = sys::setrlimit(RLIMIT_CORE, 0, 0);
        let a = allocator();
        child(&a);
        undetected();
    }
    let out = support::run_child(name);
    let text = support::describe(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("about to misuse"),
        "{name}: the child failed before the misuse\n{text}"
    );
    assert!(
        out.status.signal() == Some(SIGABRT) || out.status.code() == Some(128 + SIGABRT),
        "{name}: expected SIGABRT or exit 134\n{text}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{name}: expected exactly one stderr line\n{text}");
    let addr = misused_address(&stdout).unwrap_or_else(|| panic!("{name}: no address on stdout\n{text}"));
    let expected: Vec<String> = faults
        .iter()
        .map(|f| {
            format!(
                "nolibc-alloc: {f} 0x{addr:0width$x}",
                width = 2 * std::mem::size_of::<usize>()
            )
        })
        .collect();
    assert!(
        expected.iter().any(|e| lines[0] == e),
        "{name}: the message is none of {expected:?}\n{text}"
    );
}

/// The pointer the child printed in its `about to misuse: ... 0x...` line.
fn misused_address(stdout: &str) -> Option<usize> {
    let (_, line) = stdout.split_once("about to misuse")?;
    let hex = line.lines().next()?.rsplit(' ').next()?.strip_prefix("0x")?;
    usize::from_str_radix(hex, 16).ok()
}

// ---- double free ------------------------------------------------------

#[test]
fn double_free_small() {
    misuse("double_free_small", &["dealloc: double free of"], |a| {
        let p = alloc(a, 48);
        let _keep = alloc(a, 48); // the run stays in use
                                  // SAFETY: a live block with its layout.
        unsafe { a.dealloc(p, layout(48)) };
        about_to_misuse("second free of", p);
        // SAFETY: none: this is the misuse under test.
        unsafe { a.dealloc(p, layout(48)) };
    });
}

#[test]
fn double_free_medium() {
    misuse("double_free_medium", &["dealloc: double free of"], |a| {
        let p = alloc(a, 20 * KIB);
        let _keep = alloc(a, 20 * KIB);
        // SAFETY: a live block with its layout.
        unsafe { a.dealloc(p, layout(20 * KIB)) };
        about_to_misuse("second free of", p);
        // SAFETY: none: this is the misuse under test.
        unsafe { a.dealloc(p, layout(20 * KIB)) };
    });
}

/// The mapping is gone after the first free: the allocator cannot tell a
/// second free from a pointer it never returned, so either name is right.
#[test]
fn double_free_large() {
    misuse(
        "double_free_large",
        &["dealloc: double free of", "dealloc: invalid pointer"],
        |a| {
            let p = alloc(a, MIB);
            // SAFETY: a live block with its layout.
            unsafe { a.dealloc(p, layout(MIB)) };
            about_to_misuse("second free of", p);
            // SAFETY: none: this is the misuse under test.
            unsafe { a.dealloc(p, layout(MIB)) };
        },
    );
}

#[test]
fn realloc_after_free() {
    misuse(
        "realloc_after_free",
        &["realloc: double free of", "realloc: invalid pointer"],
        |a| {
            let p = alloc(a, 48);
            let _keep = alloc(a, 48);
            // SAFETY: a live block with its layout.
            unsafe { a.dealloc(p, layout(48)) };
            about_to_misuse("realloc of freed", p);
            // SAFETY: none: this is the misuse under test.
            let _ = unsafe { a.realloc(p, layout(48), 96) };
        },
    );
}

// ---- pointers the allocator never returned ----------------------------
//
// A pointer inside a block is freed with that block's own layout, so only
// the pointer is wrong.

#[test]
fn free_stack_address() {
    misuse("free_stack_address", &["dealloc: invalid pointer"], |a| {
        let _warm = alloc(a, 48);
        let local = [0u64; 16];
        let p = local.as_ptr() as *mut u8;
        about_to_misuse("free of stack address", p);
        // SAFETY: none: this is the misuse under test.
        unsafe { a.dealloc(p, layout(64)) };
        std::hint::black_box(&local);
    });
}

static NOT_FROM_THE_HEAP: [u64; 512] = [0; 512];

#[test]
fn free_static_address() {
    misuse("free_static_address", &["dealloc: invalid pointer"], |a| {
        let _warm = alloc(a, 48);
        let p = NOT_FROM_THE_HEAP.as_ptr().wrapping_add(256) as *mut u8;
        about_to_misuse("free of static address", p);
        // SAFETY: none: this is the misuse under test.
        unsafe { a.dealloc(p, layout(2 * KIB)) };
    });
}

#[test]
fn free_inside_small_block() {
    misuse("free_inside_small_block", &["dealloc: invalid pointer"], |a| {
        let p = alloc(a, 256);
        let q = p.wrapping_add(64);
        about_to_misuse("free inside a block", q);
        // SAFETY: none: this is the misuse under test.
        unsafe { a.dealloc(q, layout(256)) };
    });
}

/// A pointer into a run, not at a slot boundary.
#[test]
fn free_misaligned_slot_in_run() {
    misuse("free_misaligned_slot_in_run", &["dealloc: invalid pointer"], |a| {
        let p = alloc(a, 32);
        let q = p.wrapping_add(8);
        about_to_misuse("free of a misaligned slot", q);
        // SAFETY: none: this is the misuse under test.
        unsafe { a.dealloc(q, layout(32)) };
    });
}

/// A slot-aligned pointer into a run, at a slot never handed out (past the
/// last one given). For the run that is a free slot, so "double free" is
/// as right as "invalid pointer".
#[test]
fn free_unused_slot_in_run() {
    misuse(
        "free_unused_slot_in_run",
        &["dealloc: invalid pointer", "dealloc: double free of"],
        |a| {
            let x = alloc(a, 32);
            let y = alloc(a, 32);
            let stride = (y as usize).wrapping_sub(x as usize);
            let q = y.wrapping_add(stride);
            let same_page = (x as usize) / 4096 == (q as usize) / 4096;
            // Consecutive slots of one run are the usual case; otherwise fall
            // back to a pointer inside `x`, also never returned.
            let q = if stride > 0 && stride <= 256 && same_page {
                q
            } else {
                x.wrapping_add(16)
            };
            about_to_misuse("free of an unused slot", q);
            // SAFETY: none: this is the misuse under test.
            unsafe { a.dealloc(q, layout(32)) };
        },
    );
}

#[test]
fn free_inside_medium_block() {
    misuse("free_inside_medium_block", &["dealloc: invalid pointer"], |a| {
        let p = alloc(a, 20 * KIB);
        let q = p.wrapping_add(4096);
        about_to_misuse("free inside a block", q);
        // SAFETY: none: this is the misuse under test.
        unsafe { a.dealloc(q, layout(20 * KIB)) };
    });
}

#[test]
fn free_inside_large_block() {
    misuse("free_inside_large_block", &["dealloc: invalid pointer"], |a| {
        let p = alloc(a, MIB);
        let q = p.wrapping_add(8 * KIB);
        about_to_misuse("free inside a block", q);
        // SAFETY: none: this is the misuse under test.
        unsafe { a.dealloc(q, layout(MIB)) };
    });
}

#[test]
fn realloc_stack_address() {
    misuse("realloc_stack_address", &["realloc: invalid pointer"], |a| {
        let _warm = alloc(a, 48);
        let local = [0u64; 16];
        let p = local.as_ptr() as *mut u8;
        about_to_misuse("realloc of stack address", p);
        // SAFETY: none: this is the misuse under test.
        let _ = unsafe { a.realloc(p, layout(64), 4096) };
        std::hint::black_box(&local);
    });
}

// ---- wrong layout -----------------------------------------------------

fn wrong_layout(a: &NolibcAlloc, size: usize, claimed: usize) {
    let p = alloc(a, size);
    let _keep = alloc(a, size);
    about_to_misuse("free with a wrong layout", p);
    // SAFETY: none: this is the misuse under test.
    unsafe { a.dealloc(p, layout(claimed)) };
}

#[test]
fn wrong_layout_small_as_other_class() {
    misuse(
        "wrong_layout_small_as_other_class",
        &["dealloc: wrong layout for"],
        |a| wrong_layout(a, 24, 2000),
    );
}

#[test]
fn wrong_layout_small_as_medium() {
    misuse("wrong_layout_small_as_medium", &["dealloc: wrong layout for"], |a| {
        wrong_layout(a, 24, 20 * KIB)
    });
}

#[test]
fn wrong_layout_small_as_large() {
    misuse("wrong_layout_small_as_large", &["dealloc: wrong layout for"], |a| {
        wrong_layout(a, 24, MIB)
    });
}

#[test]
fn wrong_layout_medium_as_small() {
    misuse("wrong_layout_medium_as_small", &["dealloc: wrong layout for"], |a| {
        wrong_layout(a, 20 * KIB, 24)
    });
}

#[test]
fn wrong_layout_large_as_small() {
    misuse("wrong_layout_large_as_small", &["dealloc: wrong layout for"], |a| {
        wrong_layout(a, MIB, 24)
    });
}

#[test]
fn wrong_layout_large_as_larger() {
    misuse("wrong_layout_large_as_larger", &["dealloc: wrong layout for"], |a| {
        wrong_layout(a, MIB, 4 * MIB)
    });
}

// ---- the other entry points name themselves -----------------------------

#[test]
fn usable_size_wrong_layout() {
    misuse("usable_size_wrong_layout", &["usable_size: wrong layout for"], |a| {
        let p = alloc(a, 48);
        about_to_misuse("usable size with a wrong layout", p);
        // SAFETY: none: this is the misuse under test.
        let _ = unsafe { a.usable_size(std::ptr::NonNull::new(p).unwrap(), layout(MIB)) };
    });
}

#[test]
fn realloc_null() {
    misuse("realloc_null", &["realloc: invalid pointer"], |a| {
        let _warm = alloc(a, 48);
        about_to_misuse("realloc of null", std::ptr::null());
        // SAFETY: none: this is the misuse under test.
        let _ = unsafe { a.realloc(std::ptr::null_mut(), layout(48), 96) };
    });
}

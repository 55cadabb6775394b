//! Helpers shared by the integration tests: a tiny PRNG, block patterns,
//! child-process scenarios (the test binary re-executed with an env var),
//! and the external tools the tests run ([`tools`]).
//!
//! Each test file includes this with `#[macro_use] mod support;` and uses
//! only part of it.
#![allow(dead_code, unused_macros, unused_imports)]

use std::fmt::Write as _;
use std::process::{Command, Output};

pub mod tools;
pub use tools::{need, need_one};

/// xorshift64*: deterministic, no dependencies, good enough to pick sizes.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator; `seed` 0 is remapped (xorshift must not start at 0).
    pub fn new(seed: u64) -> Self {
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// Log-uniform in `0..=max`: small values much more likely than big ones.
    pub fn skewed(&mut self, max: usize) -> usize {
        let bits = usize::BITS - max.leading_zeros();
        let b = self.below(bits as usize + 1);
        let v = if b == 0 {
            0
        } else {
            self.next_u64() as usize & ((1usize << b) - 1)
        };
        v.min(max)
    }
}

/// The 8 pattern bytes covering offsets `8*w .. 8*w+8` of block `id`.
#[inline]
fn pattern_word(id: u64, w: usize) -> u64 {
    let x = (id << 24) ^ (w as u64) ^ 0xA5A5_0000_0000_0000;
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (x >> 29)
}

/// The expected byte at offset `i` of block `id`.
#[inline]
pub fn pattern_byte(id: u64, i: usize) -> u8 {
    pattern_word(id, i / 8).to_le_bytes()[i % 8]
}

/// Fills bytes `from..to` of the block at `ptr` with the pattern of `id`.
///
/// Works a word at a time on 8-aligned blocks (the usual case): through
/// slices, so debug builds do not pay for a precondition check per word.
///
/// # Safety
/// `ptr..ptr+to` must be writable.
pub unsafe fn fill(ptr: *mut u8, id: u64, from: usize, to: usize) {
    let mut i = from;
    while i < to && !i.is_multiple_of(8) {
        // SAFETY: i < to, inside the caller's writable range.
        unsafe { *ptr.add(i) = pattern_byte(id, i) };
        i += 1;
    }
    if (ptr as usize).is_multiple_of(8) && i < to {
        let n = (to - i) / 8;
        // SAFETY: `ptr + i` is 8-aligned and `n` words end at or before `to`.
        let words = unsafe { std::slice::from_raw_parts_mut(ptr.add(i).cast::<u64>(), n) };
        let w0 = i / 8;
        for (k, w) in words.iter_mut().enumerate() {
            *w = pattern_word(id, w0 + k).to_le();
        }
        i += n * 8;
    }
    while i < to {
        // SAFETY: i < to.
        unsafe { *ptr.add(i) = pattern_byte(id, i) };
        i += 1;
    }
}

/// Offset of the first byte in `from..to` that is not the pattern of `id`.
///
/// # Safety
/// `ptr..ptr+to` must be readable.
pub unsafe fn check(ptr: *const u8, id: u64, from: usize, to: usize) -> Option<usize> {
    let mut i = from;
    if (ptr as usize).is_multiple_of(8) {
        while i < to && !i.is_multiple_of(8) {
            // SAFETY: i < to, inside the caller's readable range.
            if unsafe { *ptr.add(i) } != pattern_byte(id, i) {
                return Some(i);
            }
            i += 1;
        }
        if i < to {
            let n = (to - i) / 8;
            // SAFETY: `ptr + i` is 8-aligned (i % 8 == 0 here) and `n` words
            // end at or before `to`.
            let words = unsafe { std::slice::from_raw_parts(ptr.add(i).cast::<u64>(), n) };
            let w0 = i / 8;
            let bad = words
                .iter()
                .enumerate()
                .position(|(k, &w)| w != pattern_word(id, w0 + k).to_le());
            // On a mismatch, the byte loop below finds the byte in that word.
            i += bad.unwrap_or(n) * 8;
        }
    }
    while i < to {
        // SAFETY: i < to.
        if unsafe { *ptr.add(i) } != pattern_byte(id, i) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Offset of the first non-zero byte of `ptr..ptr+len`.
///
/// # Safety
/// The range must be readable.
pub unsafe fn first_nonzero(ptr: *const u8, len: usize) -> Option<usize> {
    let mut i = 0;
    if (ptr as usize).is_multiple_of(8) {
        // SAFETY: an 8-aligned start and len / 8 whole words inside the range.
        let words = unsafe { std::slice::from_raw_parts(ptr.cast::<u64>(), len / 8) };
        i = words.iter().position(|&w| w != 0).unwrap_or(words.len()) * 8;
    }
    // SAFETY: i <= len; the rest of the range is readable.
    let rest = unsafe { std::slice::from_raw_parts(ptr.add(i), len - i) };
    rest.iter().position(|&b| b != 0).map(|k| i + k)
}

/// The env var that selects a child scenario.
pub const SCENARIO_VAR: &str = "NOLIBC_ALLOC_SCENARIO";

/// Whether this process is the child running `name`.
pub fn is_child(name: &str) -> bool {
    std::env::var_os(SCENARIO_VAR).is_some_and(|v| v == name)
}

/// Re-executes this test binary to run only the test `name`, with the
/// scenario var set so that test runs its child half. Returns the output.
pub fn run_child(name: &str) -> Output {
    let exe = std::env::current_exe().expect("current_exe");
    Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(SCENARIO_VAR, name)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("spawn the test binary")
}

/// A readable account of a child's exit, for assertion messages.
pub fn describe(out: &Output) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "status: {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    s
}

/// Formats into a fixed stack buffer and writes it with one `write(2)`:
/// usable where the C library's malloc must not be called (rlimits set,
/// address space exhausted).
pub struct StackLine {
    buf: [u8; 512],
    len: usize,
}

impl StackLine {
    pub fn new() -> Self {
        StackLine { buf: [0; 512], len: 0 }
    }

    /// Writes the line (plus a newline) to `fd`.
    pub fn emit(mut self, fd: i32) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b'\n';
            self.len += 1;
        }
        let _ = nolibc_alloc::sys::write(fd, &self.buf[..self.len]);
    }
}

impl std::fmt::Write for StackLine {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.buf.len() - 1 - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes a formatted line to stderr without allocating.
macro_rules! say {
    ($($arg:tt)*) => {{
        let mut line = $crate::support::StackLine::new();
        let _ = ::std::fmt::Write::write_fmt(&mut line, format_args!($($arg)*));
        line.emit(2);
    }};
}

/// Reports a failed expectation from a child (without allocating) and exits 1.
macro_rules! child_fail {
    ($($arg:tt)*) => {{
        say!("CHILD FAIL ({}:{}): {}", file!(), line!(), format_args!($($arg)*));
        ::nolibc_alloc::sys::exit_group(1)
    }};
}

/// Asserts in a child without allocating; on failure reports and exits 1.
macro_rules! child_assert {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            child_fail!("{}: {}", stringify!($cond), format_args!($($arg)*));
        }
    };
}

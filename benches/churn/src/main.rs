//! `churn loop STEPS` / `churn base STEPS`: 64 live blocks; each step frees
//! a random one and allocates `8 + (rand & 127)` bytes in its place, through
//! the global allocator (`NolibcAlloc`). `base` runs the same loop with a
//! fixed place per slot instead of the allocator, so that the difference of
//! the two instruction counts is the allocator's. The generator, the seed
//! and the tags are those of `loop64` in benches/compare/native.rs and
//! benches/c/driver.c.
//!
//! Prints one line: `steps=N checksum=X membarrier=ok|ERRNO
//! startstack_is_this_stack=yes|no` (the probes run after the loop).

use std::alloc::{alloc, dealloc, Layout};

use nolibc_alloc::NolibcAlloc;

#[global_allocator]
static ALLOC: NolibcAlloc = NolibcAlloc::new();

const LOOP_SEED: u64 = 0x100F_0000;
const KEY: u64 = 0x7A11_7A11_7A11_7A11;

fn next(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whether the kernel (or valgrind) lets the process register for private
/// expedited membarriers, as nolibc-alloc's single-thread gate does. Run
/// after the loop, so that it cannot change what the loop measured.
fn membarrier_probe() -> String {
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: usize = 16;
    // SAFETY: registration changes no memory; flags 0.
    match unsafe {
        syscalls::syscall!(
            syscalls::Sysno::membarrier,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            0
        )
    } {
        Ok(_) => "ok".into(),
        Err(e) => format!("{e:?}"),
    }
}

/// Whether `/proc/self/stat`'s start of the stack (field 28) is near this
/// thread's stack: under valgrind it is valgrind's own stack, not the
/// program's, so an allocator that recognises the main thread by it (as
/// nolibc-alloc's single-thread gate did on 2026-12-01) does not.
fn startstack_probe() -> &'static str {
    let marker = 0u8;
    let sp = std::ptr::addr_of!(marker) as usize;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let start = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(25))
        .and_then(|f| f.parse::<usize>().ok());
    match start {
        Some(s) if s.abs_diff(sp) < 64 << 20 => "yes",
        Some(_) => "no",
        None => "unknown",
    }
}

#[repr(align(16))]
struct Pool([[u8; 136]; 64]);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = match args.get(1).map(String::as_str) {
        Some("loop") => false,
        Some("base") => true,
        _ => {
            eprintln!("usage: churn loop|base STEPS");
            std::process::exit(2);
        }
    };
    let steps: u64 = match args.get(2).and_then(|s| s.parse().ok()) {
        Some(n) => n,
        None => {
            eprintln!("usage: churn loop|base STEPS");
            std::process::exit(2);
        }
    };
    let mut pool = Box::new(Pool([[0; 136]; 64]));
    let mut r = LOOP_SEED;
    let mut p = [std::ptr::null_mut::<u8>(); 64];
    let mut sz = [0u64; 64];
    let get = |k: usize, size: u64, pool: &mut Pool| -> *mut u8 {
        let q = if base {
            pool.0[k].as_mut_ptr()
        } else {
            // SAFETY: non-zero size, alignment 8.
            unsafe { alloc(Layout::from_size_align_unchecked(size as usize, 8)) }
        };
        if q.is_null() {
            eprintln!("churn: out of memory");
            std::process::exit(3);
        }
        // SAFETY: `q` has `size >= 8` bytes, 8-aligned.
        unsafe {
            (q as *mut u64).write(size ^ KEY);
            if size >= 16 {
                (q.add(size as usize - 8) as *mut u64).write_unaligned(!(size ^ KEY));
            }
        }
        q
    };
    let put = |q: *mut u8, size: u64| -> u64 {
        // SAFETY: `q` is live with `size` bytes (the allocator's, or the pool's).
        unsafe {
            let ok = (q as *const u64).read() == size ^ KEY
                && (size < 16 || (q.add(size as usize - 8) as *const u64).read_unaligned() == !(size ^ KEY));
            if !ok {
                eprintln!("churn: CORRUPT block");
                std::process::exit(4);
            }
            if !base {
                dealloc(q, Layout::from_size_align_unchecked(size as usize, 8));
            }
        }
        size
    };
    for k in 0..64 {
        sz[k] = 8 + (next(&mut r) & 127);
        p[k] = get(k, sz[k], &mut pool);
    }
    let mut checksum = 0u64;
    for _ in 0..steps {
        let x = next(&mut r);
        let k = (x & 63) as usize;
        checksum = checksum.wrapping_add(put(p[k], sz[k]));
        sz[k] = 8 + ((x >> 6) & 127);
        p[k] = get(k, sz[k], &mut pool);
    }
    for k in 0..64 {
        checksum = checksum.wrapping_add(put(p[k], sz[k]));
    }
    println!(
        "steps={steps} checksum={checksum} membarrier={} startstack_is_this_stack={}",
        membarrier_probe(),
        startstack_probe()
    );
}

//! The address space runs out, the way it does for a real 32-bit program:
//!
//! 1. small blocks from the break (brk works);
//! 2. a page mapped right above the break (`MAP_FIXED_NOREPLACE`), as a
//!    shared library or a thread stack would land there: brk is blocked, and
//!    the next blocks come from mmap regions;
//! 3. blocks of 16 MiB, 1 MiB, 160 KiB (a mapping each), 20 KiB and 48 bytes
//!    (slots of the small tier) until the allocator returns null for each:
//!    null only when the address space is used up — the largest hole left
//!    (from `/proc/self/maps`, which qemu-user emulates for its guest) is
//!    smaller than what the failing request needs, and every tier says null;
//! 4. the address-space picture at that moment;
//! 5. everything freed, then the same large blocks again until null (as
//!    many as before: nothing leaked), freed, and every tier served again.
//!
//! On a 32-bit target the limit is the address space itself (4 GiB for an
//! i686 program on an x86_64 kernel, about 3 or 4 GiB on armv7). On a
//! 64-bit one the program first sets its own `RLIMIT_AS` to what it uses
//! plus 256 MiB, so that the same story plays out in bounded memory; where
//! that limit is not enforced (qemu-user ignores `RLIMIT_AS` for its guest)
//! each size stops at a budget instead (128 MiB of 16 MiB blocks, 64 MiB of
//! 1 MiB ones, ... 8 MiB of 48-byte ones), and the program says so.
//!
//! Blocks are chained through their first word (no bookkeeping that would
//! itself allocate) and only their first and last words are touched: the
//! run maps gigabytes but keeps its resident memory small. It must never
//! crash: every failure is a null pointer.
//!
//! Run: `cargo xtask run --example exhaust [--arch i686|armv7|...]` (ends
//! with `exhaust: ok`).

#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;

use nolibc_alloc::{entry, os, println, sys, NolibcAlloc};

#[global_allocator]
static ALLOC: NolibcAlloc = NolibcAlloc::new();

entry!(main);

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// The sizes of phase 3, largest first.
const SIZES: [usize; 5] = [16 * MIB, MIB, 160 * KIB, 20 * KIB, 48];

/// Room above what the process uses, on 64-bit targets (`RLIMIT_AS`).
const ROOM: usize = 256 * MIB;

/// No hole this large may be left when the allocator says null to a
/// 48-byte block: its class needs a 64 KiB run aligned to 64 KiB, which a
/// new region of 64 + 64 KiB plus headers, 132 KiB in pages, holds. (A
/// hole of 132 KiB would take that region: the null came too early.)
const MAX_HOLE_LEFT: usize = 132 * KIB;

/// What limits the address space.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// The address space itself (32-bit targets).
    AddressSpace,
    /// `RLIMIT_AS` at this many bytes.
    Rlimit(usize),
    /// An `RLIMIT_AS` that is not enforced: each phase stops at [`ROOM`].
    Budget,
}

/// A buffer for `/proc/self/maps`, outside the heap: it must be readable
/// when nothing can be allocated.
struct MapsBuf(UnsafeCell<[u8; 256 * KIB]>);
// SAFETY: only the main thread uses it (the program starts no threads).
unsafe impl Sync for MapsBuf {}
static MAPS: MapsBuf = MapsBuf(UnsafeCell::new([0; 256 * KIB]));

/// A field of `/proc/self/status` in bytes (its value is in kB).
fn status_bytes(field: &[u8]) -> Option<usize> {
    let mut buf = [0u8; 4096];
    let len = os::read_file(b"/proc/self/status\0", &mut buf)?;
    let line = buf[..len].split(|&b| b == b'\n').find(|l| l.starts_with(field))?;
    let digits = line.iter().filter(|b| b.is_ascii_digit());
    Some(digits.fold(0usize, |v, &d| v * 10 + (d - b'0') as usize) * 1024)
}

fn hex(s: &[u8]) -> usize {
    s.iter().fold(0usize, |v, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => 0,
        };
        v.wrapping_mul(16).wrapping_add(d as usize)
    })
}

/// `/proc/self/maps` as (start, end, line) triples, read without allocating.
fn maps() -> Option<&'static [u8]> {
    // SAFETY: one user at a time (see `MapsBuf`); the slice is read before
    // the next call.
    let buf = unsafe { &mut *MAPS.0.get() };
    let len = os::read_file(b"/proc/self/maps\0", buf)?;
    Some(&buf[..len])
}

fn map_lines(text: &[u8]) -> impl Iterator<Item = (usize, usize, &[u8])> {
    text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| {
        let range = l.split(|&b| b == b' ').next().unwrap_or_default();
        let mut ends = range.split(|&b| b == b'-');
        let start = hex(ends.next().unwrap_or_default());
        let end = hex(ends.next().unwrap_or_default());
        (start, end, l)
    })
}

/// The lowest address mmap may use: `vm.mmap_min_addr`, but at least 64
/// KiB (with a security module built in, the kernel enforces the larger of
/// that sysctl and `CONFIG_LSM_MMAP_MIN_ADDR`, 64 KiB in Debian's kernels,
/// even for root; the sysctl shows only the first).
fn mmap_min_addr() -> usize {
    let mut buf = [0u8; 32];
    let sysctl = match os::read_file(b"/proc/sys/vm/mmap_min_addr\0", &mut buf) {
        Some(len) => buf[..len]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .fold(0, |v, &d| v * 10 + (d - b'0') as usize),
        None => 0,
    };
    sysctl.max(64 * KIB)
}

/// The largest hole mmap could still use: between two mappings (what lies
/// above the last one is not the process's), above `mmap_min_addr`, and not
/// in the guard gap the kernel keeps below the main stack (256 pages).
/// `[vsyscall]` (x86_64) lies above user space.
fn largest_hole(text: &[u8]) -> (usize, usize) {
    let page = os::page_size();
    let mut prev_end = mmap_min_addr();
    let mut best = (0, 0);
    for (start, end, line) in map_lines(text) {
        if line.ends_with(b"[vsyscall]") {
            break;
        }
        let top = if line.ends_with(b"[stack]") {
            start.saturating_sub(256 * page)
        } else {
            start
        };
        if top > prev_end && top - prev_end > best.1 {
            best = (prev_end, top - prev_end);
        }
        prev_end = prev_end.max(end);
    }
    best
}

fn print_picture(text: &[u8], limit: Limit) {
    let lines = map_lines(text).count();
    let mut mapped = 0;
    for (i, (start, end, line)) in map_lines(text).enumerate() {
        mapped += end - start;
        if i < 20 || i + 20 >= lines {
            let line = core::str::from_utf8(line).unwrap_or("?");
            println!("  {:>9} KiB  {}", (end - start) / KIB, line);
        } else if i == 20 {
            println!("  ... {} more mappings ...", lines - 40);
        }
    }
    let (at, hole) = largest_hole(text);
    if limit == Limit::AddressSpace {
        println!(
            "  {} mappings, {} MiB mapped; largest hole left: {} KiB at {:#x}",
            lines,
            mapped / MIB,
            hole / KIB,
            at
        );
    } else {
        println!(
            "  {} mappings, {} MiB mapped (the limit is not the address space)",
            lines,
            mapped / MIB
        );
    }
}

/// Blocks of one size, chained through their first word.
struct Chain {
    size: usize,
    head: *mut u8,
    count: usize,
}

impl Chain {
    fn layout(&self) -> Layout {
        Layout::from_size_align(self.size, 16).unwrap()
    }

    /// Allocates until null (or until `budget` bytes more were allocated).
    fn fill(size: usize, budget: Option<usize>) -> Chain {
        let mut c = Chain {
            size,
            head: ptr::null_mut(),
            count: 0,
        };
        let layout = c.layout();
        while budget.is_none_or(|b| c.count * size < b) {
            // SAFETY: a non-zero layout.
            let p = unsafe { ALLOC.alloc(layout) };
            if p.is_null() {
                break;
            }
            // SAFETY: a fresh block of `size` >= 16 bytes, 16-aligned.
            unsafe {
                p.add(size - 1).write(0xA5);
                p.cast::<*mut u8>().write(c.head);
            }
            c.head = p;
            c.count += 1;
        }
        c
    }

    /// Checks every block's last byte; frees them all.
    fn free(self) -> bool {
        let layout = self.layout();
        let mut p = self.head;
        let mut intact = true;
        while !p.is_null() {
            // SAFETY: a live block of the chain; its first word links the next.
            unsafe {
                intact &= p.add(self.size - 1).read() == 0xA5;
                let next = p.cast::<*mut u8>().read();
                ALLOC.dealloc(p, layout);
                p = next;
            }
        }
        intact
    }
}

/// Grows the stack by `bytes` now, while memory is there: printing at the
/// moment of exhaustion must not need a stack page the kernel cannot give.
#[inline(never)]
fn touch_stack(bytes: usize) {
    let mut probe = [0u8; 4096];
    // SAFETY: a volatile write to a local array.
    unsafe { ptr::write_volatile(probe.as_mut_ptr(), 1) };
    if bytes > probe.len() {
        touch_stack(bytes - probe.len());
    }
    // SAFETY: as above; keeps the array (and the frame) alive.
    unsafe { ptr::read_volatile(probe.as_ptr()) };
}

/// Each tier answers null (the address space is used up).
fn all_null() -> Result<(), &'static str> {
    for size in [64 * MIB, 16 * MIB, MIB, 160 * KIB, 20 * KIB, 48] {
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: non-zero layouts.
        let (p, z) = unsafe { (ALLOC.alloc(layout), ALLOC.alloc_zeroed(layout)) };
        if !p.is_null() || !z.is_null() {
            println!(
                "FAILED: a block of {} bytes was served after the 48-byte ones failed",
                size
            );
            return Err("not every tier is exhausted");
        }
    }
    Ok(())
}

fn set_limit() -> Result<Limit, &'static str> {
    if usize::BITS < 64 {
        return Ok(Limit::AddressSpace);
    }
    let used = status_bytes(b"VmSize:").ok_or("cannot read VmSize in /proc/self/status")?;
    let limit = used + ROOM;
    let (_, hard) = sys::getrlimit(sys::RLIMIT_AS).map_err(|_| "getrlimit failed")?;
    sys::setrlimit(sys::RLIMIT_AS, limit as u64, hard).map_err(|_| "setrlimit failed")?;
    // Enforced? A reservation of twice the room must fail.
    // SAFETY: a fresh PROT_NONE mapping where the kernel likes, unmapped at once.
    match unsafe { sys::mmap_anon(0, 2 * ROOM, sys::PROT_NONE, sys::MAP_PRIVATE_ANON | sys::MAP_NORESERVE) } {
        Ok(addr) => {
            // SAFETY: our own mapping.
            let _ = unsafe { sys::munmap(addr, 2 * ROOM) };
            Ok(Limit::Budget)
        }
        Err(_) => Ok(Limit::Rlimit(limit)),
    }
}

fn main() -> i32 {
    match run() {
        Ok(()) => {
            println!("exhaust: ok");
            0
        }
        Err(what) => {
            println!("FAILED: {}", what);
            1
        }
    }
}

fn run() -> Result<(), &'static str> {
    let page = os::page_size();
    println!("{}-bit target, page size {}", usize::BITS, page);

    // 1. The break works.
    let early: Vec<Box<[u8; 64]>> = (0..256).map(|i| Box::new([i as u8; 64])).collect();
    let s = ALLOC.stats();
    println!(
        "1. brk works: {} bytes from brk, {} mapped",
        s.brk_bytes, s.mapped_bytes
    );
    if s.brk_bytes == 0 {
        return Err("the first blocks did not come from brk");
    }

    // 2. A mapping right above the break blocks it.
    // SAFETY: brk(0) only reads the break.
    let brk = unsafe { sys::kernel_brk(0) };
    let at = (brk + page - 1) & !(page - 1);
    // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping.
    let blocker = unsafe { sys::mmap_anon(at, page, sys::PROT_RW, sys::MAP_PRIVATE_ANON | sys::MAP_FIXED_NOREPLACE) };
    if blocker != Ok(at) {
        return Err("cannot map a page right above the break");
    }
    let brk_calls = ALLOC.stats().syscalls.brk;
    let after: Vec<Box<[u8; 4000]>> = (0..2048).map(|i| Box::new([i as u8; 4000])).collect();
    let s = ALLOC.stats();
    println!(
        "2. page mapped at the break {:#x}: brk blocked ({} more brk calls, {} bytes from brk), {} bytes mapped",
        at,
        s.syscalls.brk - brk_calls,
        s.brk_bytes,
        s.mapped_bytes
    );
    if s.syscalls.brk == brk_calls || s.mapped_bytes == 0 {
        return Err("the blocked break did not send the allocator to mmap regions");
    }

    // 3. Until null.
    let limit = set_limit()?;
    match limit {
        Limit::AddressSpace => println!("3. limit: the {}-bit address space", usize::BITS),
        Limit::Rlimit(l) => println!("3. limit: RLIMIT_AS {} MiB (what the process used + {} MiB)", l / MIB, ROOM / MIB),
        Limit::Budget => println!(
            "3. limit: RLIMIT_AS is not enforced here (qemu-user ignores it for its guest): each size stops at a budget, {} MiB for the first, half that for the next, ...",
            ROOM / 2 / MIB
        ),
    }
    touch_stack(128 * KIB);
    let mut chains: Vec<Chain> = Vec::with_capacity(SIZES.len());
    let mut total = 0;
    for (k, size) in SIZES.into_iter().enumerate() {
        // Half the room for the first size, a quarter for the next, ...
        let budget = (limit == Limit::Budget).then_some(ROOM >> (k + 1));
        let c = Chain::fill(size, budget);
        total += c.count * size;
        println!("   {:>9} x {:>7} B = {:>5} MiB", c.count, size, c.count * size / MIB);
        chains.push(c);
    }
    if limit == Limit::Budget {
        println!("   {} MiB allocated in all within the budgets", total / MIB);
    } else {
        println!("   {} MiB allocated in all before null", total / MIB);
    }
    if chains[0].count == 0 {
        return Err("not one large block was served");
    }

    // 4. The picture at exhaustion.
    if limit == Limit::Budget {
        println!("4. the address space at the end of the budgets (/proc/self/maps):");
    } else {
        println!("4. the address space at exhaustion (/proc/self/maps):");
    }
    match maps() {
        Some(text) => {
            print_picture(text, limit);
            if limit == Limit::AddressSpace && largest_hole(text).1 >= MAX_HOLE_LEFT {
                return Err("null with a large hole left in the address space");
            }
        }
        None => println!("  (no /proc/self/maps)"),
    }
    let s = ALLOC.stats();
    println!(
        "   allocator: {} MiB mapped, {} MiB in use, {} bytes from brk; {} mmap calls",
        s.mapped_bytes / MIB,
        s.in_use_bytes / MIB,
        s.brk_bytes,
        s.syscalls.mmap
    );
    if let Limit::Rlimit(l) = limit {
        let left = l.saturating_sub(status_bytes(b"VmSize:").unwrap_or(0));
        println!("   room left under the limit: {} KiB", left / KIB);
        if left >= MAX_HOLE_LEFT {
            return Err("null with room left under the limit");
        }
    }
    if limit != Limit::Budget {
        all_null()?;
        println!("   every tier answers null");
    }

    // 5. Free everything; allocate again.
    let first_large = chains[0].count;
    let mut intact = true;
    for c in chains.drain(..).rev() {
        intact &= c.free();
    }
    if !intact {
        return Err("a block lost its contents");
    }
    let again = Chain::fill(SIZES[0], (limit == Limit::Budget).then_some(ROOM / 2));
    println!("5. all freed; {} x 16 MiB again (before: {})", again.count, first_large);
    // The first round's small blocks took a few holes that large blocks
    // could use now; a leak would show as fewer.
    if again.count < first_large {
        return Err("fewer large blocks after freeing everything: address space leaked");
    }
    if !again.free() {
        return Err("a block lost its contents");
    }
    for size in SIZES {
        let c = Chain::fill(size, Some(4 * size));
        if c.count != 4 || !c.free() {
            return Err("a tier did not serve again after the frees");
        }
    }
    println!("   every tier serves again");
    drop(chains);
    drop(after);
    drop(early);
    // SAFETY: our own page, unused.
    let _ = unsafe { sys::munmap(at, page) };
    let s = ALLOC.stats();
    if s.in_use_bytes != 0 {
        println!("   {} bytes still in use", s.in_use_bytes);
        return Err("bytes left in use");
    }
    Ok(())
}

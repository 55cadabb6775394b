//! Hostile environments in brk mode, on the real kernel: each scenario
//! squeezes the process, allocates until the allocator returns null (it
//! must never crash), then gives some memory back and checks that
//! allocation works again.
//!
//! - `rlimit-data`: RLIMIT_DATA set 8 MiB above the current data size (it
//!   limits brk and, since Linux 4.7, private writable mappings);
//! - `rlimit-as`: RLIMIT_AS set 8 MiB above the current address-space size;
//! - `reserve`: the address space filled with PROT_NONE reservations until
//!   mmap fails, then one reservation given back.
//!
//! Run natively (an emulator's own memory would be squeezed too):
//! `cargo xtask run --example hostile -- rlimit-data` (ends with
//! `hostile rlimit-data: ok`).

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};

use nolibc_alloc::{entry, os, println, rt, sys, NolibcAlloc};

#[global_allocator]
static ALLOC: NolibcAlloc = NolibcAlloc::new();

entry!(main);

const BLOCK: usize = 64 << 10;
const MAX_BLOCKS: usize = 4096;

/// A field of /proc/self/status in bytes (its value is in kB).
fn status_bytes(field: &[u8]) -> Option<usize> {
    let mut buf = [0u8; 4096];
    let len = os::read_file(b"/proc/self/status\0", &mut buf)?;
    let line = buf[..len].split(|&b| b == b'\n').find(|l| l.starts_with(field))?;
    let digits = line.iter().filter(|b| b.is_ascii_digit());
    let kb = digits.fold(0usize, |v, &d| v * 10 + (d - b'0') as usize);
    Some(kb * 1024)
}

/// Allocates blocks into a fixed array (no allocation of its own) until
/// the allocator returns null; returns how many it got.
fn fill_until_null(blocks: &mut [*mut u8]) -> Result<usize, &'static str> {
    let layout = Layout::from_size_align(BLOCK, 16).unwrap();
    for (i, slot) in blocks.iter_mut().enumerate() {
        // SAFETY: a non-zero layout.
        let p = unsafe { ALLOC.alloc(layout) };
        if p.is_null() {
            return Ok(i);
        }
        // SAFETY: a fresh block of BLOCK bytes.
        unsafe { core::ptr::write_bytes(p, i as u8, BLOCK) };
        *slot = p;
    }
    Err("the limit was never reached")
}

fn free_blocks(blocks: &[*mut u8]) {
    let layout = Layout::from_size_align(BLOCK, 16).unwrap();
    for &p in blocks {
        // SAFETY: blocks from `fill_until_null`, freed once.
        unsafe { ALLOC.dealloc(p, layout) };
    }
}

/// Checks that allocation works again: one block of each tier.
fn works_again() -> bool {
    [24usize, 4000, BLOCK, 300 << 10].iter().all(|&size| {
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: a non-zero layout; the block is freed right away.
        unsafe {
            let p = ALLOC.alloc(layout);
            if p.is_null() {
                return false;
            }
            core::ptr::write_bytes(p, 0x5a, size);
            ALLOC.dealloc(p, layout);
            true
        }
    })
}

fn squeeze_rlimit(resource: usize, field: &[u8]) -> Result<(usize, usize), &'static str> {
    let current = status_bytes(field).ok_or("cannot read /proc/self/status")?;
    let limit = (current + (8 << 20)) as u64;
    sys::setrlimit(resource, limit, limit).map_err(|_| "setrlimit failed")?;
    let mut blocks = [core::ptr::null_mut(); MAX_BLOCKS];
    let got = fill_until_null(&mut blocks)?;
    // Give half back: the freed memory must be usable again.
    free_blocks(&blocks[got / 2..got]);
    ALLOC.trim();
    let again = works_again();
    free_blocks(&blocks[..got / 2]);
    if !again {
        return Err("allocation did not work again after frees");
    }
    Ok((got, limit as usize))
}

fn reserve_address_space() -> Result<(usize, usize), &'static str> {
    // Reserve in halving sizes until not even a page fits.
    let mut reservations: Vec<(usize, usize)> = Vec::with_capacity(4096);
    // 64 TiB, or half the address space where words are 32 bits.
    let mut size = (1u64 << 46).min(1 << (usize::BITS - 1)) as usize;
    let mut reserved = 0usize;
    while size >= 4096 && reservations.len() < reservations.capacity() {
        // SAFETY: a fresh PROT_NONE mapping at an address the kernel picks.
        match unsafe { sys::mmap_anon(0, size, sys::PROT_NONE, sys::MAP_PRIVATE_ANON | sys::MAP_NORESERVE) } {
            Ok(addr) => {
                reservations.push((addr, size));
                reserved += size;
            }
            Err(_) => size /= 2,
        }
    }
    let mut blocks = [core::ptr::null_mut(); MAX_BLOCKS];
    let got = fill_until_null(&mut blocks).map_err(|_| "allocation kept working in a full address space")?;
    // Give back the largest reservation of at most 64 MiB: room for regions again.
    let i = reservations
        .iter()
        .rposition(|&(_, len)| (16 << 20..=64 << 20).contains(&len))
        .ok_or("no reservation of 16..64 MiB to give back")?;
    let (addr, len) = reservations[i];
    // SAFETY: our own reservation, unused.
    unsafe { sys::munmap(addr, len) }.map_err(|_| "munmap failed")?;
    let again = works_again();
    free_blocks(&blocks[..got]);
    for &(addr, len) in &reservations {
        if addr != reservations[i].0 {
            // SAFETY: our own reservations, unused.
            let _ = unsafe { sys::munmap(addr, len) };
        }
    }
    if !again {
        return Err("allocation did not work again after a reservation was given back");
    }
    Ok((got, reserved))
}

fn main() -> i32 {
    let scenario = rt::args().nth(1).map(|a| a.to_bytes()).unwrap_or(b"");
    let (name, result) = match scenario {
        b"rlimit-data" => ("rlimit-data", squeeze_rlimit(sys::RLIMIT_DATA, b"VmData:")),
        b"rlimit-as" => ("rlimit-as", squeeze_rlimit(sys::RLIMIT_AS, b"VmSize:")),
        b"reserve" => ("reserve", reserve_address_space()),
        _ => {
            println!("usage: hostile rlimit-data|rlimit-as|reserve");
            return 2;
        }
    };
    match result {
        Ok((got, limit)) => {
            let s = ALLOC.stats();
            println!(
                "{name}: {got} blocks of {} KiB before null (limit or reservation {} MiB); \
                 works again after frees; {} brk calls, {} mmap calls",
                BLOCK >> 10,
                limit >> 20,
                s.syscalls.brk,
                s.syscalls.mmap
            );
            println!("hostile {name}: ok");
            0
        }
        Err(why) => {
            println!("FAILED: {name}: {why}");
            1
        }
    }
}

//! `floor`: a stand-in for an allocator that does as little as a correct one
//! can, so that a workload run on it measures the workload's own work (the
//! generator's random numbers, the slot tables, the channel of `prodcons`,
//! the shared table of `server`, filling and checking every block) and
//! hardly anything else. Its time is the floor under every allocator's time
//! on that workload; `time − floor` is what the allocator itself costs.
//! Not in the default run: `--allocs floor` (and its C twin, `floor-C`,
//! `c/floor.c` preloaded into the glibc driver, the same algorithm).
//!
//! How it hands out memory:
//!
//! - One reserved region (`MAP_NORESERVE`), cut into one range per size
//!   class (class `c` holds blocks of `16 c` bytes, 1..=256, so up to 4 KiB;
//!   a request of `size` aligned to `align` is class
//!   `round_up(size, max(16, align)) / 16`), the first `PREFAULT` bytes of
//!   each range written before the workload's timing starts: no page fault
//!   lands in the timed part of any listed workload.
//! - Per thread (a thread-local, no lock, no atomic on the fast paths), per
//!   class: a LIFO list of the blocks this thread freed (the link in the
//!   block's first 8 bytes), and a bump pointer into a 16 KiB piece of the
//!   class range (one `fetch_add` per piece). `alloc` pops the list, else
//!   bumps; `dealloc` pushes onto the *freeing* thread's list, whoever
//!   allocated the block. That is safe (a freed block is referenced by no
//!   one) and needs no synchronisation, because it never gives a block back
//!   to the thread that allocated it; a real allocator must (or its
//!   producer would run out): that return trip is allocator work the floor
//!   leaves out.
//! - `prodcons*` only (`set_ring`): the producer never frees, so its list
//!   would stay empty and it would bump through fresh memory (300 MB).
//!   Instead each thread allocates from a ring of `RING_BYTES` (1.5 MiB),
//!   wrapping around, and `dealloc` does nothing: a block is reused after
//!   at least 350 later blocks of the same producer (1.5 MiB ÷ 4 KiB, the
//!   largest block, with its alignment padding), and the bounded channel (256 blocks, `sync_channel(256)`
//!   here and `QUEUE_CAP` in `driver.c`) keeps the producer at most 258
//!   blocks ahead of the consumer's checks. The workload's own checks would
//!   report CORRUPT if it were not so.
//!
//! Blocks over 4 KiB or aligned to more than 4 KiB (none in the workloads it
//! is meant for) go to `System`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Class granularity and the largest class.
const GRAIN: usize = 16;
pub const MAX_SIZE: usize = 4096;
const CLASSES: usize = MAX_SIZE / GRAIN + 1;
/// Address range of one class (reserved, not committed).
const SPAN: usize = 256 << 20;
/// What a thread takes from a class range at a time.
const PIECE: usize = 16 << 10;
/// Written before timing, per class range and per ring.
const PREFAULT: usize = 1 << 20;
/// One thread's ring (`prodcons*`).
pub const RING_BYTES: usize = 3 << 19;
/// Rings in the region (threads that allocate in ring mode).
const RINGS: usize = 16;
const REGION: usize = CLASSES * SPAN + RINGS * RING_BYTES;

static BASE: AtomicUsize = AtomicUsize::new(0);
/// Next free offset in each class range; entry 0 counts the rings.
static NEXT: [AtomicUsize; CLASSES] = [const { AtomicUsize::new(0) }; CLASSES];
static RING: AtomicBool = AtomicBool::new(false);

struct Heap {
    free: [*mut u8; CLASSES],
    cur: [usize; CLASSES],
    end: [usize; CLASSES],
    ring: usize,
    ring_off: usize,
}

thread_local! {
    static HEAP: UnsafeCell<Heap> = const {
        UnsafeCell::new(Heap {
            free: [std::ptr::null_mut(); CLASSES],
            cur: [0; CLASSES],
            end: [0; CLASSES],
            ring: 0,
            ring_off: 0,
        })
    };
}

/// This thread's heap (a small closure, so that `with` is inlined: with the
/// whole fast path inside it, it was not).
#[inline(always)]
fn heap() -> *mut Heap {
    HEAP.with(UnsafeCell::get)
}

/// The stand-in. `init` must run first (before timing).
pub struct Floor;

/// Reserves the region and writes the first `PREFAULT` bytes of every class
/// range and every ring; `ring` selects the ring mode (`prodcons*`).
pub fn init(ring: bool) {
    use nolibc_alloc::sys;
    // SAFETY: a fresh anonymous mapping at an address the kernel picks.
    let base = match unsafe { sys::mmap_anon(0, REGION, sys::PROT_RW, sys::MAP_PRIVATE_ANON | sys::MAP_NORESERVE) } {
        Ok(a) => a,
        Err(e) => {
            eprintln!("compare: floor: cannot reserve the region: {e}");
            std::process::exit(3);
        }
    };
    let touch = |from: usize, len: usize| {
        for off in (0..len).step_by(4096) {
            // SAFETY: inside the fresh, writable mapping.
            unsafe { ((from + off) as *mut u8).write_volatile(0) };
        }
    };
    if ring {
        for k in 0..RINGS {
            touch(base + CLASSES * SPAN + k * RING_BYTES, RING_BYTES);
        }
    } else {
        for c in 1..CLASSES {
            touch(base + c * SPAN, PREFAULT);
        }
    }
    BASE.store(base, Ordering::Relaxed);
    RING.store(ring, Ordering::Relaxed);
}

/// The class of a layout, or None for `System`'s blocks.
#[inline(always)]
fn class(layout: Layout) -> Option<usize> {
    let a = layout.align().max(GRAIN);
    if a > MAX_SIZE {
        return None;
    }
    let rounded = (layout.size().max(1) + a - 1) & !(a - 1);
    (rounded <= MAX_SIZE).then_some(rounded / GRAIN)
}

#[cold]
fn new_piece(h: &mut Heap, c: usize) -> *mut u8 {
    let off = NEXT[c].fetch_add(PIECE, Ordering::Relaxed);
    if off + PIECE > SPAN {
        return std::ptr::null_mut(); // the class range is used up: OOM
    }
    let start = BASE.load(Ordering::Relaxed) + c * SPAN + off;
    h.cur[c] = start + c * GRAIN;
    h.end[c] = start + PIECE;
    start as *mut u8
}

#[cold]
fn new_ring(h: &mut Heap) -> bool {
    let k = NEXT[0].fetch_add(1, Ordering::Relaxed);
    if k >= RINGS {
        return false;
    }
    h.ring = BASE.load(Ordering::Relaxed) + CLASSES * SPAN + k * RING_BYTES;
    h.ring_off = 0;
    true
}

#[inline(always)]
fn ring_alloc(h: &mut Heap, c: usize, align: usize) -> *mut u8 {
    if h.ring == 0 && !new_ring(h) {
        return std::ptr::null_mut();
    }
    let size = c * GRAIN;
    let mut off = (h.ring_off + align - 1) & !(align - 1);
    if off + size > RING_BYTES {
        off = 0;
    }
    h.ring_off = off + size;
    (h.ring + off) as *mut u8
}

// SAFETY: a block is handed out only while no one else holds it: from the
// freeing thread's own list, from a piece of a class range no other thread
// has, or (ring mode, `prodcons*` only) from a ring slot whose previous
// block the bounded channel guarantees the consumer is done with (module
// docs). Blocks of class `c` are `16 c` bytes at `16 c`-multiples from a
// page-aligned piece, and `16 c` is a multiple of the layout's alignment
// (at most 4 KiB), so they are aligned to it.
unsafe impl GlobalAlloc for Floor {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(layout) else {
            // SAFETY: forwarded as is.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: this thread's own heap; nothing here re-enters it.
        let h = unsafe { &mut *heap() };
        if RING.load(Ordering::Relaxed) {
            return ring_alloc(h, c, layout.align().max(GRAIN));
        }
        let p = h.free[c];
        if !p.is_null() {
            // SAFETY: a block on the list holds the next link.
            h.free[c] = unsafe { (p as *const *mut u8).read() };
            return p;
        }
        let cur = h.cur[c];
        if cur + c * GRAIN <= h.end[c] {
            h.cur[c] = cur + c * GRAIN;
            return cur as *mut u8;
        }
        new_piece(h, c)
    }
    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(c) = class(layout) else {
            // SAFETY: a block `System` handed out with this layout.
            return unsafe { System.dealloc(ptr, layout) };
        };
        if RING.load(Ordering::Relaxed) {
            return;
        }
        // SAFETY: this thread's own heap.
        let h = unsafe { &mut *heap() };
        // SAFETY: the caller gives the block up; it is 16 c >= 16 bytes.
        unsafe { (ptr as *mut *mut u8).write(h.free[c]) };
        h.free[c] = ptr;
    }
}

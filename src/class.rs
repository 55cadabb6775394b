//! Size classes: the pure arithmetic of the small tier.
//!
//! Classes are every multiple of 16 up to 1 KiB (64 classes), then eight per
//! doubling up to 8 KiB (1152, 1280, …, 8192: 24 classes), then four per
//! doubling up to 128 KiB (10240, 12288, …, 131072: 16 classes) — 104 in
//! all. A request is served by the smallest class at least as large whose
//! natural alignment (the largest power of two dividing it, at most 4 KiB)
//! covers the requested alignment. Worst-case internal waste: 15 bytes up to
//! 1 KiB (1 B in class 16; glibc's smallest chunk is 32 bytes), below 12.5 %
//! from 1 KiB to 8 KiB (1025 B in class 1152 wastes 127 B = 11 %), below
//! 25 % above (8193 B in class 10240 wastes 20 %). The average over requests
//! of 1..=1024 bytes is 7.5 bytes, against 15.6 for glibc's chunks.
//! 16 bytes is the smallest slot because a free slot holds two words: the
//! free-list link and a marker that catches a double free.
//!
//! Each class carves its slots from *runs* of [`RUN_BYTES_SMALL`],
//! [`RUN_BYTES_MID`] or [`RUN_BYTES_BIG`] bytes, aligned to their own size so
//! that a slot finds its run by masking its address.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};

/// Number of size classes.
pub const CLASS_COUNT: usize = 104;
/// The largest class.
pub const MAX_CLASS_BYTES: usize = 128 << 10;
/// Alignment that every slot of a class with a large enough size has at most.
pub const MAX_SLOT_ALIGN: usize = 4096;

/// Runs for classes up to 8 KiB.
pub const RUN_BYTES_SMALL: usize = 64 << 10;
/// Runs for classes up to 32 KiB.
pub const RUN_BYTES_MID: usize = 256 << 10;
/// Runs for classes up to 128 KiB.
pub const RUN_BYTES_BIG: usize = 1 << 20;

/// Bytes of the fixed part of a run header (see `small::Run`).
pub const RUN_HEADER_BYTES: usize = 64;

/// What the small tier needs to know about one class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassInfo {
    /// Slot size in bytes.
    pub size: u32,
    /// Run size in bytes (a power of two; runs are aligned to it).
    pub run_bytes: u32,
    /// Offset of slot 0 from the run start (after the header).
    pub slot0: u32,
    /// Slots per run.
    pub slots: u32,
    /// The inverse of the odd part of `size` modulo 2^32: for an offset
    /// from slot 0 (as a `u32`), `(offset * inverse).rotate_right(tz)`,
    /// with `tz` the trailing zeros of `size`, is `offset / size` if `size`
    /// divides the offset and more than `u32::MAX / size` if it does not
    /// (the divisibility test of Hacker's Delight, 10-17): one
    /// multiplication and one rotation tell both the slot and whether the
    /// offset is on its boundary, and one comparison bounds it, on the free
    /// path. An offset below slot 0 wraps to near 2^32, past every slot.
    pub inverse: u32,
}

impl ClassInfo {
    /// The slot at `offset` (from slot 0, wrapped to a `u32`), if the
    /// offset is a multiple of the size.
    #[inline]
    pub const fn slot_of(&self, offset: u32) -> Option<u32> {
        let q = rotated_quotient(offset, self.inverse, self.size.trailing_zeros());
        if q <= u32::MAX / self.size {
            Some(q)
        } else {
            None
        }
    }
}

/// See [`ClassInfo::inverse`]: `offset / size` if `size` (whose odd part's
/// inverse is `inverse` and whose trailing zeros are `shift`) divides
/// `offset`, else more than `u32::MAX / size`.
#[inline(always)]
pub(crate) const fn rotated_quotient(offset: u32, inverse: u32, shift: u32) -> u32 {
    offset.wrapping_mul(inverse).rotate_right(shift)
}

/// The inverse of odd `q` modulo 2^32, by Newton's iteration (each step
/// doubles the correct low bits: 3 to start, since `q * q == 1` mod 8).
const fn inverse_mod_2_32(q: u32) -> u32 {
    let mut x = q;
    let mut i = 0;
    while i < 4 {
        x = x.wrapping_mul(2u32.wrapping_sub(q.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// The 16-byte class serving `size` and `align`, if one does (size and
/// alignment up to 1 KiB and 16 bytes): the one of `max(size, align)`,
/// size 0 counting as 1 (what [`class_for`] computes, without its search).
/// The small tier always serves them: the mmap threshold is at least
/// 4 KiB (`Tuning::new`).
#[inline(always)]
pub(crate) const fn fine_class(size: usize, align: usize) -> Option<usize> {
    if size <= 1024 && align <= 16 {
        let bytes = if size > align { size } else { align };
        Some(bytes.saturating_sub(1) >> 4)
    } else {
        None
    }
}

/// Classes spaced by 16 bytes (up to 1 KiB).
const FINE_CLASSES: usize = 64;
/// Classes at eight per doubling (1 KiB to 8 KiB).
const EIGHTH_CLASSES: usize = 24;

const fn class_size(index: usize) -> usize {
    if index < FINE_CLASSES {
        (index + 1) * 16
    } else if index < FINE_CLASSES + EIGHTH_CLASSES {
        let k = index - FINE_CLASSES;
        let base = 1024usize << (k / 8);
        base + (k % 8 + 1) * (base / 8)
    } else {
        let k = index - FINE_CLASSES - EIGHTH_CLASSES;
        let base = 8192usize << (k / 4);
        base + (k % 4 + 1) * (base / 4)
    }
}

/// Largest power of two dividing `size`, capped at [`MAX_SLOT_ALIGN`].
pub const fn natural_align(size: usize) -> usize {
    let a = 1usize << size.trailing_zeros();
    if a > MAX_SLOT_ALIGN {
        MAX_SLOT_ALIGN
    } else {
        a
    }
}

const fn run_bytes_for(size: usize) -> usize {
    if size <= 8 << 10 {
        RUN_BYTES_SMALL
    } else if size <= 32 << 10 {
        RUN_BYTES_MID
    } else {
        RUN_BYTES_BIG
    }
}

const fn align_up(x: usize, a: usize) -> usize {
    (x + a - 1) & !(a - 1)
}

const fn compute(index: usize) -> ClassInfo {
    // Never below 16 (every class is): said so, so that the divisions
    // below link no division-by-zero panic when `fill` computes the table
    // at run time.
    let size = class_size(index);
    let size = if size < 16 { 16 } else { size };
    let run = run_bytes_for(size);
    let slot0 = align_up(RUN_HEADER_BYTES, natural_align(size));
    let slots = (run - slot0) / size;
    ClassInfo {
        size: size as u32,
        run_bytes: run as u32,
        slot0: slot0 as u32,
        slots: slots as u32,
        inverse: inverse_mod_2_32((size >> size.trailing_zeros()) as u32),
    }
}

/// One class as the allocator stores it: 16 bytes (not `ClassInfo`'s 20),
/// every field a plain load, so that decoding costs nothing on the hot
/// paths; 1 664 bytes for the table. (Packing a class into 8 bytes halves
/// that, but the shifts and masks to decode it measured about ten more
/// instructions per allocate/free pair under cachegrind.)
#[derive(Clone, Copy)]
#[repr(C)]
struct Packed {
    size: u32,
    run_bytes: u32,
    inverse: u32,
    slot0: u16,
    slots: u16,
}

const fn pack(c: ClassInfo) -> Packed {
    Packed {
        size: c.size,
        run_bytes: c.run_bytes,
        inverse: c.inverse,
        slot0: c.slot0 as u16,
        slots: c.slots as u16,
    }
}

static PACKED: [Packed; CLASS_COUNT] = {
    let mut t = [Packed {
        size: 0,
        run_bytes: 0,
        inverse: 0,
        slot0: 0,
        slots: 0,
    }; CLASS_COUNT];
    let mut i = 0;
    while i < CLASS_COUNT {
        t[i] = pack(compute(i));
        i += 1;
    }
    t
};

/// What the small tier needs to know about `class` (below [`CLASS_COUNT`]),
/// from a 1 664-byte table: the allocator uses this, not [`CLASSES`], which
/// is kept for programs and tests that read the whole table.
#[inline]
pub fn info(class: usize) -> ClassInfo {
    let p = &PACKED[class];
    ClassInfo {
        size: p.size,
        run_bytes: p.run_bytes,
        slot0: p.slot0 as u32,
        slots: p.slots as u32,
        inverse: p.inverse,
    }
}

/// The last class in runs of [`RUN_BYTES_SMALL`] and of [`RUN_BYTES_MID`].
const LAST_IN_RUN: [usize; 2] = {
    let mut last = [0; 2];
    let mut i = 0;
    while i < CLASS_COUNT {
        match run_bytes_for(class_size(i)) {
            RUN_BYTES_SMALL => last[0] = i,
            RUN_BYTES_MID => last[1] = i,
            _ => {}
        }
        i += 1;
    }
    last
};

/// Run size of `class` in bytes, by two comparisons (no table); any class
/// past the last is taken to be in the largest runs.
#[inline(always)]
pub const fn run_bytes(class: usize) -> usize {
    if class <= LAST_IN_RUN[0] {
        RUN_BYTES_SMALL
    } else if class <= LAST_IN_RUN[1] {
        RUN_BYTES_MID
    } else {
        RUN_BYTES_BIG
    }
}

/// Slot size of `class` in bytes (below [`CLASS_COUNT`]).
#[inline]
pub fn size(class: usize) -> usize {
    info(class).size as usize
}

const fn build_table() -> [ClassInfo; CLASS_COUNT] {
    let mut t = [ClassInfo {
        size: 0,
        run_bytes: 0,
        slot0: 0,
        slots: 0,
        inverse: 0,
    }; CLASS_COUNT];
    let mut i = 0;
    while i < CLASS_COUNT {
        t[i] = compute(i);
        i += 1;
    }
    t
}

/// The class table, computed at compile time (the same values as
/// [`info`]; 2 KiB, linked only into programs that read it).
pub static CLASSES: [ClassInfo; CLASS_COUNT] = build_table();

/// The class table the allocator reads: the values of [`CLASSES`], computed
/// at run time into `.bss` (2 080 bytes of `.rodata` less in every program;
/// the code that fills it is about 350). Filled by [`Table::init`] before
/// the first run is carved and before the first medium or large block is
/// handed out, so it is full by the time anything can be freed, rightly or
/// by mistake. (The frees' own paths read no table: `small::run_of` finds a
/// run by [`run_bytes`] and the run header repeats its class.) A fork child
/// whose parent was filling it in another thread fills it again
/// ([`Table::fork_child`]).
pub(crate) static TABLE: Table = Table {
    entries: UnsafeCell::new(
        [ClassInfo {
            size: 0,
            run_bytes: 0,
            slot0: 0,
            slots: 0,
            inverse: 0,
        }; CLASS_COUNT],
    ),
    state: AtomicU8::new(EMPTY),
};

const EMPTY: u8 = 0;
const FILLING: u8 = 1;
const READY: u8 = 2;

/// See [`TABLE`].
pub(crate) struct Table {
    entries: UnsafeCell<[ClassInfo; CLASS_COUNT]>,
    /// `EMPTY`, `FILLING` (one thread writes the entries) or `READY`.
    state: AtomicU8,
}

// SAFETY: the entries are written once, by the one thread that moves
// `state` from EMPTY to FILLING, and read only after `state` is READY
// (acquire) in that thread or one that synchronised with it: every reader
// reads an entry of a run's class, and the run was carved after `init`.
unsafe impl Sync for Table {}

impl Table {
    #[inline(always)]
    fn entries(&self) -> &[ClassInfo; CLASS_COUNT] {
        // SAFETY: see `Sync`: no entry is written once anybody can read it.
        unsafe { &*self.entries.get() }
    }

    /// Entry `class`, if in range.
    #[inline(always)]
    pub(crate) fn get(&self, class: usize) -> Option<&ClassInfo> {
        self.entries().get(class)
    }

    /// Every entry, by class.
    pub(crate) fn iter(&self) -> core::slice::Iter<'_, ClassInfo> {
        self.entries().iter()
    }

    /// In a fork child (one thread): a fill that another thread of the
    /// parent had begun starts again, instead of being waited for forever.
    pub(crate) fn fork_child(&self) {
        if self.state.load(Relaxed) == FILLING {
            self.state.store(EMPTY, Relaxed);
        }
    }

    /// Fills the table if nobody did yet (waits for a thread filling it).
    #[inline]
    pub(crate) fn init(&self) {
        if self.state.load(Acquire) != READY {
            self.fill();
        }
    }

    #[cold]
    #[inline(never)]
    fn fill(&self) {
        if self.state.compare_exchange(EMPTY, FILLING, Acquire, Acquire).is_ok() {
            let entries = self.entries.get().cast::<ClassInfo>();
            for i in 0..CLASS_COUNT {
                // `black_box`: computed here, not folded into a constant
                // table (which would be the 2 KiB of `.rodata` again).
                let info = compute(core::hint::black_box(i));
                // SAFETY: FILLING: this thread alone writes, nobody reads yet.
                unsafe { entries.add(i).write(info) };
            }
            self.state.store(READY, Release);
        }
        while self.state.load(Acquire) != READY {
            core::hint::spin_loop();
        }
    }
}

impl core::ops::Index<usize> for Table {
    type Output = ClassInfo;

    #[inline(always)]
    fn index(&self, class: usize) -> &ClassInfo {
        &self.entries()[class]
    }
}

/// Class of sizes 1025..=8192 by `(size - 1) >> 7` (class bounds there are
/// multiples of 128), and of 8193..=131072 by `(size - 1) >> 11` (multiples of 2048).
static MID_LOOKUP: [u8; 64] = lookup(7);
static HIGH_LOOKUP: [u8; 64] = lookup(11);

const fn lookup(shift: u32) -> [u8; 64] {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        // The largest size mapping to entry i.
        let size = (i + 1) << shift;
        let mut c = 0;
        while class_size(c) < size {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
}

const _: () = {
    assert!(class_size(CLASS_COUNT - 1) == MAX_CLASS_BYTES);
    assert!(class_size(0) == 16 && class_size(63) == 1024);
    assert!(class_size(64) == 1152 && class_size(87) == 8192 && class_size(88) == 10240);
    let mut i = 0;
    while i < CLASS_COUNT {
        let c = compute(i);
        assert!(c.slots >= 7);
        // Every field survives packing.
        assert!(c.slot0 < 1 << 16 && c.slots < 1 << 16);
        // The run-size ranges are contiguous: `run_bytes` agrees.
        assert!(c.run_bytes as usize == run_bytes(i));
        if i > 0 {
            assert!(class_size(i) > class_size(i - 1));
        }
        i += 1;
    }
};

/// Class for a request of `size` bytes aligned to `align` (a power of two),
/// or `None` when the small tier cannot serve it.
#[inline]
pub fn class_for(size: usize, align: usize) -> Option<usize> {
    // Every class from 16 up is a multiple of 16, so up to that alignment
    // the smallest class of at least max(size, align) bytes fits.
    let size = if size < align { align } else { size };
    if align <= 16 {
        return class_of_size(size);
    }
    if align > MAX_SLOT_ALIGN {
        return None;
    }
    let mut c = class_of_size(size)?;
    while c < CLASS_COUNT {
        // Arithmetic, not a table: this rare path links neither table.
        if natural_align(class_size(c)) >= align {
            return Some(c);
        }
        c += 1;
    }
    None
}

/// Smallest class of at least `size` bytes (0 counts as 1).
#[inline]
fn class_of_size(size: usize) -> Option<usize> {
    if size <= 1024 {
        // Size 0 counts as 1.
        return Some(size.saturating_sub(1) >> 4);
    }
    if size <= 8192 {
        return Some(MID_LOOKUP[(size - 1) >> 7] as usize);
    }
    if size <= MAX_CLASS_BYTES {
        return Some(HIGH_LOOKUP[(size - 1) >> 11] as usize);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slow_class_for(size: usize, align: usize) -> Option<usize> {
        let size = size.max(1);
        (0..CLASS_COUNT).find(|&c| {
            let s = CLASSES[c].size as usize;
            s >= size && natural_align(s) >= align
        })
    }

    #[test]
    fn class_for_matches_linear_search() {
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096] {
            let step = if cfg!(miri) { 997 } else { 1 };
            for size in (0..=(MAX_CLASS_BYTES + 10)).step_by(step) {
                assert_eq!(
                    class_for(size, align),
                    slow_class_for(size, align),
                    "size {size} align {align}"
                );
            }
        }
        assert_eq!(class_for(1, 8192), None);
    }

    #[test]
    fn run_time_table_is_the_computed_one() {
        TABLE.init();
        TABLE.init();
        assert_eq!(TABLE.iter().len(), CLASS_COUNT);
        for (i, c) in CLASSES.iter().enumerate() {
            assert_eq!(TABLE[i], *c, "class {i}");
            assert_eq!(TABLE.get(i), Some(c));
        }
        assert_eq!(TABLE.get(CLASS_COUNT), None);
    }

    #[test]
    fn packed_table_decodes_to_the_computed_one() {
        for (i, c) in CLASSES.iter().enumerate() {
            assert_eq!(info(i), *c, "class {i}");
            assert_eq!(size(i), c.size as usize);
        }
    }

    #[test]
    fn slot_test_is_exact_in_every_run() {
        for c in (0..CLASS_COUNT).map(info) {
            let step = if cfg!(miri) { 4093 } else { 1 };
            let size = c.size;
            for off in (0..c.run_bytes).step_by(step) {
                assert_eq!(
                    c.slot_of(off),
                    (off % size == 0).then_some(off / size),
                    "size {size} offset {off}"
                );
            }
            // Below slot 0 (a pointer into the header), wrapped: past every
            // slot, whether or not it is a multiple.
            for below in (1..=c.slot0 + 4096).step_by(step) {
                let q = rotated_quotient(0u32.wrapping_sub(below), c.inverse, size.trailing_zeros());
                assert!(q >= c.slots, "size {size} offset -{below}: {q}");
            }
        }
    }

    #[test]
    fn runs_hold_header_and_slots() {
        for (i, c) in CLASSES.iter().enumerate() {
            assert!(c.slot0 as usize >= RUN_HEADER_BYTES, "class {i}");
            assert_eq!(c.slot0 as usize % natural_align(c.size as usize), 0);
            assert!(c.slot0 as usize + c.slots as usize * c.size as usize <= c.run_bytes as usize);
            assert!(c.slot0 as usize + (c.slots as usize + 1) * c.size as usize > c.run_bytes as usize);
        }
    }

    #[test]
    fn worst_case_waste_above_128_is_below_a_quarter() {
        for size in 129..=MAX_CLASS_BYTES {
            let c = CLASSES[class_for(size, 1).unwrap()].size as usize;
            assert!((c - size) * 4 < c, "size {size} class {c}");
        }
    }
}

/// The class table as a 32-bit target computes it, from u32 arithmetic only
/// (the run header is 64 bytes on every target: `small::Run` fills it).
/// On the 64-bit host this checks that the table's formulas need nothing
/// wider than 32 bits; the i686 run of the unit tests (`tests/i686.rs`)
/// checks the table as a 32-bit build computes it.
#[cfg(test)]
mod width32 {
    use super::*;

    fn class_size32(index: u32) -> u32 {
        match index {
            0..64 => (index + 1) * 16,
            64..88 => {
                let k = index - 64;
                let base = 1024u32 << (k / 8);
                base + (k % 8 + 1) * (base / 8)
            }
            _ => {
                let k = index - 88;
                let base = 8192u32 << (k / 4);
                base + (k % 4 + 1) * (base / 4)
            }
        }
    }

    fn compute32(index: u32) -> ClassInfo {
        let size = class_size32(index);
        let align = (1u32 << size.trailing_zeros()).min(4096);
        let run: u32 = if size <= 8192 {
            64 << 10
        } else if size <= 32 << 10 {
            256 << 10
        } else {
            1 << 20
        };
        let slot0 = 64u32.div_ceil(align) * align;
        ClassInfo {
            size,
            run_bytes: run,
            slot0,
            slots: (run - slot0) / size,
            // The units modulo 2^32 have order dividing 2^30: q^(2^30 - 1)
            // is q's inverse (another way than `compute`'s).
            inverse: (size >> size.trailing_zeros()).wrapping_pow((1 << 30) - 1),
        }
    }

    #[test]
    fn table_is_the_32_bit_one() {
        assert_eq!(RUN_HEADER_BYTES, 64);
        for (i, c) in CLASSES.iter().enumerate() {
            assert_eq!(*c, compute32(i as u32), "class {i}");
            assert_eq!(info(i), *c, "class {i}");
        }
    }

    #[test]
    fn inverses_invert_the_odd_parts() {
        for c in (0..CLASS_COUNT as u32).map(compute32) {
            assert_eq!(
                (c.size >> c.size.trailing_zeros()).wrapping_mul(c.inverse),
                1,
                "size {}",
                c.size
            );
        }
    }
}

#[cfg(test)]
mod waste {
    use super::*;

    fn average_waste(range: core::ops::RangeInclusive<usize>) -> f64 {
        let n = range.clone().count() as f64;
        range
            .map(|s| (CLASSES[class_for(s, 1).unwrap()].size as usize - s) as f64)
            .sum::<f64>()
            / n
    }

    #[test]
    fn waste_bounds_of_the_docs() {
        // Up to 1 KiB: 16-byte steps, 7.5 bytes on average (glibc: 15.6).
        assert_eq!(average_waste(1..=1024), 7.5);
        for size in 1..=1024 {
            assert!(CLASSES[class_for(size, 1).unwrap()].size as usize - size < 16);
        }
        for size in 1025..=8192 {
            let c = CLASSES[class_for(size, 1).unwrap()].size as usize;
            assert!((c - size) * 8 < c, "size {size} class {c}");
        }
    }
}

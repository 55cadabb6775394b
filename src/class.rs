//! Size classes: the pure arithmetic of the small tier.
//!
//! Classes are every multiple of 16 up to 128, then four per doubling (like
//! jemalloc): 160, 192, 224, 256, 320, … up to 128 KiB — 48 classes. A
//! request is served by the smallest class at least as large whose natural
//! alignment (the largest power of two dividing it, at most 4 KiB) covers the
//! requested alignment. Worst-case internal waste: 15 bytes for 1-byte
//! requests (class 16; glibc's smallest chunk is 32 bytes), below 50 % up to
//! 128 B, and below 25 % above 128 B (129 B in class 160 wastes 31 B =
//! 19.4 %; the bound is the class step, a quarter of the lower power of two).
//! 16 bytes is the smallest slot because a free slot holds two words: the
//! free-list link and a marker that catches a double free.
//!
//! Each class carves its slots from *runs* of [`RUN_BYTES_SMALL`],
//! [`RUN_BYTES_MID`] or [`RUN_BYTES_BIG`] bytes, aligned to their own size so
//! that a slot finds its run by masking its address.

/// Number of size classes.
pub const CLASS_COUNT: usize = 48;
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
}

const fn class_size(index: usize) -> usize {
    if index < 8 {
        (index + 1) * 16
    } else {
        // index 8.. : four per doubling starting at 160 = 128 + 32.
        let k = index - 8;
        let octave = k / 4; // 0 → [128, 256)
        let step = k % 4 + 1;
        let base = 128usize << octave;
        base + step * (base / 4)
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

const fn info(index: usize) -> ClassInfo {
    let size = class_size(index);
    let run = run_bytes_for(size);
    let slot0 = align_up(RUN_HEADER_BYTES, natural_align(size));
    let slots = (run - slot0) / size;
    ClassInfo {
        size: size as u32,
        run_bytes: run as u32,
        slot0: slot0 as u32,
        slots: slots as u32,
    }
}

const fn build_table() -> [ClassInfo; CLASS_COUNT] {
    let mut t = [ClassInfo {
        size: 0,
        run_bytes: 0,
        slot0: 0,
        slots: 0,
    }; CLASS_COUNT];
    let mut i = 0;
    while i < CLASS_COUNT {
        t[i] = info(i);
        i += 1;
    }
    t
}

/// The class table, computed at compile time.
pub static CLASSES: [ClassInfo; CLASS_COUNT] = build_table();

/// Class of sizes 1..=1024 by `(size + 7) / 8`: one table load on the hot path.
static SMALL_LOOKUP: [u8; 129] = {
    let mut t = [0u8; 129];
    let mut i = 1; // t[0] (size 0) stays class 0 (16 bytes)
    while i <= 128 {
        let size = i * 8;
        let mut c = 0;
        while class_size(c) < size {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
};

const _: () = {
    assert!(class_size(CLASS_COUNT - 1) == MAX_CLASS_BYTES);
    assert!(class_size(0) == 16 && class_size(7) == 128);
    assert!(class_size(8) == 160 && class_size(11) == 256 && class_size(12) == 320);
    let mut i = 0;
    while i < CLASS_COUNT {
        let c = info(i);
        assert!(c.slots >= 7);
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
        if natural_align(CLASSES[c].size as usize) >= align {
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
        return Some(SMALL_LOOKUP[(size + 7) >> 3] as usize);
    }
    class_above_1k(size)
}

#[inline]
fn class_above_1k(size: usize) -> Option<usize> {
    if size > MAX_CLASS_BYTES {
        return None;
    }
    // size in (2^k, 2^(k+1)]: octave of 2^k, step = ceil((size - 2^k) / (2^k / 4)).
    let k = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize; // 2^k < size <= 2^(k+1)
    let base = 1usize << k;
    let quarter = base >> 2;
    let step = (size - base).div_ceil(quarter); // 1..=4
    Some(8 + (k - 7) * 4 + step - 1)
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

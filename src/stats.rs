//! Counters: what the allocator holds and which system calls it made.

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// A snapshot of the allocator's counters (see [`crate::NolibcAlloc::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes between the start of the allocator's brk regions and the break.
    pub brk_bytes: usize,
    /// Bytes in mappings: mmap regions and large blocks.
    pub mapped_bytes: usize,
    /// Bytes handed out and not yet freed (slot, block or mapping sizes).
    pub in_use_bytes: usize,
    /// Highest `brk_bytes` so far.
    pub peak_brk_bytes: usize,
    /// Highest `mapped_bytes` so far.
    pub peak_mapped_bytes: usize,
    /// Highest `in_use_bytes` so far (the small tier's part is the sum of
    /// each arena's own peak, so with several threads this is an upper bound).
    pub peak_in_use_bytes: usize,
    /// Memory system calls made, by kind.
    pub syscalls: SyscallCounts,
}

/// Counts of system calls, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallCounts {
    /// `brk` calls that tried to move the break (reads excluded).
    pub brk: usize,
    /// `mmap` calls.
    pub mmap: usize,
    /// `munmap` calls.
    pub munmap: usize,
    /// `mremap` calls.
    pub mremap: usize,
    /// `madvise` calls.
    pub madvise: usize,
    /// `FUTEX_WAIT` calls (process-wide: every lock of the crate).
    pub futex_wait: usize,
    /// `FUTEX_WAKE` calls (process-wide).
    pub futex_wake: usize,
}

/// Counters updated outside the arenas (relaxed atomics: the large tier
/// updates them without the core lock).
pub(crate) struct Counters {
    pub brk_bytes: AtomicUsize,
    pub mapped_bytes: AtomicUsize,
    /// Bytes handed out by the medium and large tiers (runs excluded).
    pub block_bytes: AtomicUsize,
    pub peak_brk_bytes: AtomicUsize,
    pub peak_mapped_bytes: AtomicUsize,
    pub peak_block_bytes: AtomicUsize,
    pub brk: AtomicUsize,
    pub mmap: AtomicUsize,
    pub munmap: AtomicUsize,
    pub mremap: AtomicUsize,
    pub madvise: AtomicUsize,
}

impl Counters {
    pub const fn new() -> Self {
        Counters {
            brk_bytes: AtomicUsize::new(0),
            mapped_bytes: AtomicUsize::new(0),
            block_bytes: AtomicUsize::new(0),
            peak_brk_bytes: AtomicUsize::new(0),
            peak_mapped_bytes: AtomicUsize::new(0),
            peak_block_bytes: AtomicUsize::new(0),
            brk: AtomicUsize::new(0),
            mmap: AtomicUsize::new(0),
            munmap: AtomicUsize::new(0),
            mremap: AtomicUsize::new(0),
            madvise: AtomicUsize::new(0),
        }
    }

    #[inline]
    pub fn add(value: &AtomicUsize, peak: &AtomicUsize, by: usize) {
        let now = value.fetch_add(by, Relaxed) + by;
        peak.fetch_max(now, Relaxed);
    }

    #[inline]
    pub fn sub(value: &AtomicUsize, by: usize) {
        value.fetch_sub(by, Relaxed);
    }

    #[inline]
    pub fn count(call: &AtomicUsize) {
        call.fetch_add(1, Relaxed);
    }

    /// The snapshot, with the small tier's totals added by the caller.
    pub fn snapshot(&self, small_in_use: usize, small_peak: usize) -> Stats {
        let futex = &crate::lock::FUTEX_CALLS;
        Stats {
            brk_bytes: self.brk_bytes.load(Relaxed),
            mapped_bytes: self.mapped_bytes.load(Relaxed),
            in_use_bytes: self.block_bytes.load(Relaxed) + small_in_use,
            peak_brk_bytes: self.peak_brk_bytes.load(Relaxed),
            peak_mapped_bytes: self.peak_mapped_bytes.load(Relaxed),
            peak_in_use_bytes: self.peak_block_bytes.load(Relaxed) + small_peak,
            syscalls: SyscallCounts {
                brk: self.brk.load(Relaxed),
                mmap: self.mmap.load(Relaxed),
                munmap: self.munmap.load(Relaxed),
                mremap: self.mremap.load(Relaxed),
                madvise: self.madvise.load(Relaxed),
                futex_wait: futex[0].load(Relaxed),
                futex_wake: futex[1].load(Relaxed),
            },
        }
    }
}

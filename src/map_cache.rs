//! The mapping cache: page ranges of freed large blocks, kept mapped (and
//! faulted in) for the next large block instead of going back to the kernel.
//!
//! A freed large block's mapping becomes a *span* of the cache, merged with
//! the spans next to it; a large allocation takes the smallest span that
//! fits, split when the rest is worth keeping; a growing large block takes
//! the front of the span right after it (no system call, no page fault).
//! What the cache holds is bounded by bytes: at most [`Policy::percent`] of
//! the recent peak of live large bytes, or [`Policy::floor_bytes`] if that is
//! more. The peak decays, and a span nobody has touched for
//! [`Policy::age_events`] cache events goes back: both only while the
//! allocator is used, since it has no thread of its own. What goes back is
//! unmapped (see `BENCHMARKS.md`: `munmap` costs what `MADV_DONTNEED` costs
//! and frees the address space too; `MADV_FREE` leaves the pages in the RSS).
//!
//! The clock is an event count (takes and puts), not a clock: a decay can
//! only act when the allocator is entered anyway, events cost nothing, and a
//! clock would cost a `clock_gettime` system call (~150 ns measured) per
//! large operation where no vDSO is at hand.
//!
//! The cache is data only, under the core lock: it decides, and hands back
//! the spans to unmap ([`Evicted`]), which the caller unmaps after unlocking.

use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};

use crate::fault::{fault, Fault};

/// Most spans kept; a new span evicts the oldest when all are in use.
pub const CACHE_SPANS: usize = 32;

/// A span is split to serve a smaller block only if at least this much is
/// left over (else the block gets the whole span).
pub const SPLIT_MIN_BYTES: usize = 64 << 10;

/// How much the cache keeps, from the [`crate::Config`] knobs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    /// The cache may always hold this many bytes.
    pub floor_bytes: usize,
    /// And up to this percentage of the recent peak of live large bytes.
    pub percent: usize,
    /// Events after which an untouched span goes back; also the decay of
    /// the peak (it loses 1/`age_events` of itself per event).
    pub age_events: usize,
    /// The page size (a span's tail is cut in whole pages).
    pub page: usize,
}

impl Policy {
    /// Whether the cache keeps anything at all.
    pub(crate) const fn enabled(&self) -> bool {
        self.floor_bytes != 0 || self.percent != 0
    }
}

#[derive(Clone, Copy)]
struct Span {
    /// Start of the range; null marks an unused entry.
    ptr: *mut u8,
    len: usize,
    /// `MapCache::events` when the span was last put into or merged.
    since: usize,
}

const EMPTY: Span = Span {
    ptr: ptr::null_mut(),
    len: 0,
    since: 0,
};

/// Room for every span of the cache and one more being put (one call never
/// evicts more).
const EVICTED_MAX: usize = CACHE_SPANS + 2;

/// Spans to unmap, chosen under the lock.
pub(crate) struct Evicted {
    /// Invariant: the first `n` entries are written. The rest are not
    /// (a new `Evicted` writes nothing: no 0.5 KiB of zeros per use).
    spans: [MaybeUninit<(*mut u8, usize)>; EVICTED_MAX],
    /// Entries chosen; lowering it (to 0: emptied) keeps the invariant.
    pub n: usize,
}

impl Evicted {
    pub(crate) const fn new() -> Self {
        Evicted {
            spans: [MaybeUninit::uninit(); EVICTED_MAX],
            n: 0,
        }
    }

    fn push(&mut self, ptr: *mut u8, len: usize) -> bool {
        // `get_mut`, not indexing: no bounds-check panic linked.
        let Some(slot) = self.spans.get_mut(self.n) else {
            return false;
        };
        slot.write((ptr, len));
        self.n += 1;
        true
    }

    /// Unmaps the spans chosen and empties the list for the next use: the
    /// one copy of this loop (the cache's users, and `Core::unmap_cached`).
    #[inline(never)]
    pub(crate) fn unmap<S: crate::os::Source>(&mut self, os: &crate::os::Os<S>) {
        for (p, len) in self.iter() {
            // SAFETY: the cache gave the span up; nobody else owns it.
            unsafe { os.unmap(p, len) };
        }
        self.n = 0;
    }

    /// The spans chosen.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (NonNull<u8>, usize)> + '_ {
        self.spans.get(..self.n).unwrap_or_default().iter().filter_map(|s| {
            // SAFETY: the first `n` entries are written (the invariant).
            let (p, len) = unsafe { s.assume_init() };
            NonNull::new(p).map(|p| (p, len))
        })
    }
}

/// Entry `i` of `spans`, found by a search of them: the mask (a power of two
/// entries) spares a bounds check and the panic it links.
fn span_at(spans: &mut [Span; CACHE_SPANS], i: usize) -> &mut Span {
    const { assert!(CACHE_SPANS.is_power_of_two()) };
    &mut spans[i & (CACHE_SPANS - 1)]
}

/// The cache. All zero when new, so a default allocator stays in `.bss`.
pub(crate) struct MapCache {
    /// Invariant: the used entries (non-null `ptr`) are disjoint, page-aligned
    /// ranges that are mapped and owned by the cache alone.
    spans: [Span; CACHE_SPANS],
    /// Invariant: the sum of the used entries' `len`, and at most `bound`.
    bytes: usize,
    /// Takes and puts so far: the cache's clock.
    events: usize,
    /// Bytes in live large blocks (their mappings' lengths).
    live: usize,
    /// A decaying high-water mark of `live`.
    recent_peak: usize,
    /// The bound as last computed.
    bound: usize,
}

impl MapCache {
    pub(crate) const fn new() -> Self {
        MapCache {
            spans: [EMPTY; CACHE_SPANS],
            bytes: 0,
            events: 0,
            live: 0,
            recent_peak: 0,
            bound: 0,
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes in live large blocks.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// The decaying peak of live large bytes.
    pub(crate) fn recent_peak(&self) -> usize {
        self.recent_peak
    }

    /// Forgets the peak (after everything was given back).
    pub(crate) fn reset_peak(&mut self) {
        self.recent_peak = self.live;
    }

    /// Counts `len` more bytes as live (a fresh mapping, a grown block).
    pub(crate) fn add_live(&mut self, len: usize) {
        self.live += len;
        self.recent_peak = self.recent_peak.max(self.live);
    }

    /// Counts `len` fewer bytes as live (a failed mapping, an unmapped block).
    pub(crate) fn sub_live(&mut self, len: usize) {
        self.live -= len;
    }

    /// One event: the peak decays, the bound follows, old spans and bytes
    /// beyond the bound go out.
    fn tick(&mut self, policy: &Policy, out: &mut Evicted) {
        self.events = self.events.wrapping_add(1);
        let age = policy.age_events.max(1);
        self.recent_peak = self.live.max(self.recent_peak - self.recent_peak / age);
        let share = (self.recent_peak / 100).saturating_mul(policy.percent);
        self.bound = if policy.enabled() {
            share.max(policy.floor_bytes)
        } else {
            0
        };
        for s in self.spans.iter_mut() {
            if !s.ptr.is_null() && self.events.wrapping_sub(s.since) >= age && out.push(s.ptr, s.len) {
                self.bytes -= s.len;
                *s = EMPTY;
            }
        }
        self.shed(policy.page, out);
    }

    /// Evicts the tails of the oldest spans until `bytes <= bound`.
    fn shed(&mut self, page: usize, out: &mut Evicted) {
        while self.bytes > self.bound && out.n < EVICTED_MAX {
            let Some(i) = self.oldest() else { break };
            let s = span_at(&mut self.spans, i);
            let excess = self.bytes - self.bound;
            if excess >= s.len {
                out.push(s.ptr, s.len);
                self.bytes -= s.len;
                *s = EMPTY;
            } else {
                // Whole pages only, so the cut is rounded up (the bytes end
                // a little below the bound).
                let cut = (excess + page - 1) & !(page - 1);
                let cut = if cut >= s.len { s.len } else { cut };
                let keep = s.len - cut;
                out.push(s.ptr.wrapping_add(keep), cut);
                self.bytes -= cut;
                if keep == 0 {
                    *s = EMPTY;
                } else {
                    s.len = keep;
                }
            }
        }
    }

    /// The used entry untouched the longest (the last of equals, as
    /// `max_by_key`): one plain loop, smaller than the iterator chain.
    fn oldest(&self) -> Option<usize> {
        let (mut best, mut best_age) = (None, 0);
        for (i, s) in self.spans.iter().enumerate() {
            let age = self.events.wrapping_sub(s.since);
            if !s.ptr.is_null() && (best.is_none() || age >= best_age) {
                (best, best_age) = (Some(i), age);
            }
        }
        best
    }

    /// A mapping of at least `len` bytes (page multiple) from the cache: the
    /// smallest span that fits, split if enough is left. Returns the range
    /// and its length (`len`, or the whole span), already counted as live.
    pub(crate) fn take(&mut self, len: usize, policy: &Policy, out: &mut Evicted) -> Option<(NonNull<u8>, usize)> {
        self.tick(policy, out);
        // The first of the smallest that fit, in one plain loop.
        let (mut best, mut best_len) = (None, usize::MAX);
        for (i, s) in self.spans.iter().enumerate() {
            if !s.ptr.is_null() && s.len >= len && (best.is_none() || s.len < best_len) {
                (best, best_len) = (Some(i), s.len);
            }
        }
        Some(self.cut_front(best?, len))
    }

    /// The largest span (shorter than `len`, since [`MapCache::take`] found
    /// none that fits), taken out whole to be grown to `len` with `mremap`:
    /// its pages stay faulted in, only the rest is fresh. Not counted as
    /// live (the caller counts `len`).
    pub(crate) fn take_largest(&mut self) -> Option<(NonNull<u8>, usize)> {
        // The last of the largest, in one plain loop.
        let mut best: Option<&mut Span> = None;
        for s in self.spans.iter_mut() {
            if !s.ptr.is_null() && best.as_ref().is_none_or(|b| s.len >= b.len) {
                best = Some(s);
            }
        }
        let span = best?;
        let s = *span;
        *span = EMPTY;
        self.bytes -= s.len;
        // SAFETY: used entries are non-null.
        Some((unsafe { NonNull::new_unchecked(s.ptr) }, s.len))
    }

    /// Takes `len` bytes from the front of span `i` (the whole span if too
    /// little would be left).
    fn cut_front(&mut self, i: usize, len: usize) -> (NonNull<u8>, usize) {
        let s = span_at(&mut self.spans, i);
        let start = s.ptr;
        let got = if s.len - len >= SPLIT_MIN_BYTES { len } else { s.len };
        if got == s.len {
            *s = EMPTY;
        } else {
            s.ptr = s.ptr.wrapping_add(got);
            s.len -= got;
        }
        self.bytes -= got;
        self.add_live(got);
        // SAFETY: used entries are non-null.
        (unsafe { NonNull::new_unchecked(start) }, got)
    }

    /// For a block growing in place: takes at least `min` and at most `want`
    /// bytes from the span that starts right at `end`, if it has `min`.
    /// Returns the bytes taken (counted as live).
    pub(crate) fn take_after(
        &mut self,
        end: *mut u8,
        min: usize,
        want: usize,
        policy: &Policy,
        out: &mut Evicted,
    ) -> Option<usize> {
        self.tick(policy, out);
        let (i, avail) = (self.spans.iter().enumerate())
            .find_map(|(i, s)| (s.ptr == end && !end.is_null()).then_some((i, s.len)))?;
        if avail < min {
            return None;
        }
        Some(self.cut_front(i, want.min(avail)).1)
    }

    /// Takes back the mapping `[ptr, ptr + len)` of a freed large block (or
    /// the cut-off tail of a shrunk one): merged with its neighbours, and
    /// whatever goes beyond the bound is chosen for unmapping.
    ///
    /// # Safety
    /// The range is page-aligned, mapped, and nobody uses it any more; its
    /// bytes were counted as live.
    pub(crate) unsafe fn put(&mut self, ptr: NonNull<u8>, len: usize, policy: &Policy, out: &mut Evicted) {
        self.live -= len;
        self.tick(policy, out);
        let (mut start, mut len) = (ptr.as_ptr(), len);
        let now = self.events;
        // Merge with the spans just below and just above.
        for s in self.spans.iter_mut() {
            if s.ptr.is_null() {
                continue;
            }
            if s.ptr.wrapping_add(s.len) == start {
                start = s.ptr;
                len += s.len;
                self.bytes -= s.len;
                *s = EMPTY;
            } else if start.wrapping_add(len) == s.ptr {
                len += s.len;
                self.bytes -= s.len;
                *s = EMPTY;
            }
        }
        let slot = match self.spans.iter().position(|s| s.ptr.is_null()) {
            Some(i) => i,
            None => {
                // Every entry in use: the oldest span goes.
                let Some(i) = self.oldest() else { return };
                let s = *span_at(&mut self.spans, i);
                if !out.push(s.ptr, s.len) {
                    let _ = out.push(start, len);
                    return;
                }
                self.bytes -= s.len;
                i
            }
        };
        *span_at(&mut self.spans, slot) = Span {
            ptr: start,
            len,
            since: now,
        };
        self.bytes += len;
        self.shed(policy.page, out);
    }

    /// Empties the cache (for `trim` and after a burst); call until `n == 0`.
    pub(crate) fn drain(&mut self, out: &mut Evicted) {
        for s in self.spans.iter_mut() {
            if !s.ptr.is_null() && out.push(s.ptr, s.len) {
                self.bytes -= s.len;
                *s = EMPTY;
            }
        }
    }

    /// Checks the invariants; stops the process on a violation.
    pub(crate) fn validate(&self, page: usize) {
        let mut sum = 0;
        for (i, a) in self.spans.iter().enumerate() {
            if a.ptr.is_null() {
                continue;
            }
            let start = a.ptr as usize;
            if a.len == 0 || !start.is_multiple_of(page) || !a.len.is_multiple_of(page) {
                fault(Fault::Corrupt("cache span"), start);
            }
            for b in &self.spans[i + 1..] {
                let other = b.ptr as usize;
                if !b.ptr.is_null() && start < other + b.len && other < start + a.len {
                    fault(Fault::Corrupt("cache spans overlap"), start);
                }
            }
            sum += a.len;
        }
        if sum != self.bytes || self.bytes > self.bound {
            fault(Fault::Corrupt("cache bytes"), sum);
        }
    }
}

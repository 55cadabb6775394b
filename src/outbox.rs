//! Outboxes: slots a thread frees into other threads' heaps, batched.
//!
//! A slot freed by a thread that does not own its run goes back to the
//! owner's remote list. Pushed one by one, every such free is a
//! compare-and-swap on a cache line that the owner and every other freeing
//! thread also write: the line moves between cores on nearly every free of
//! a producer/consumer or server program. So a thread that has a heap of
//! its own first links the slot into its heap's *outbox*: a chain per
//! destination heap for a few destinations at once, kept with plain loads
//! and stores. A whole chain is handed over with one compare-and-swap when
//! it weighs [`BATCH`] units (a slot weighs one per started 512 bytes past
//! the first: 32 slots of up to 1 KiB, 4 of 4 KiB), or when a new
//! destination needs its place (the heaviest chain goes).
//!
//! **Bounded.** An outbox holds at most [`ENTRIES`] × ([`BATCH`] − 1) units,
//! a unit at most 1 KiB of slot, of slots of at most [`MAX_SLOT_BYTES`]
//! (larger ones go straight to the owner): 93 KiB per heap at worst. They count as in use in the owner's
//! heap until they reach it. [`crate::NolibcAlloc::trim`] and
//! [`crate::NolibcAlloc::thread_exit`] empty the calling thread's outbox;
//! a heap that another thread adopts keeps its outbox, which the new owner
//! goes on filling and emptying. (So a thread that ends without
//! `thread_exit` strands what its outbox holds until its heap is adopted or
//! a thread with its thread pointer comes back: one reason more for a
//! runtime to call it.)
//!
//! Slots are marked and checked (boundary, double free) before they enter
//! an outbox, exactly as before a push onto a remote list.

use core::ptr;

/// Destinations an outbox keeps a chain for at once (three fit beside the
/// arena in a heap's 1 KiB).
pub(crate) const ENTRIES: usize = 3;

/// Units (see [`units`]) per chain at which it is handed over.
pub(crate) const BATCH: u32 = 32;

/// Larger slots are pushed one by one (one would fill a chain).
pub(crate) const MAX_SLOT_BYTES: usize = ((BATCH as usize) << UNIT_SHIFT) - 1;

const UNIT_SHIFT: u32 = 9;

/// What a slot of `size` bytes (at most [`MAX_SLOT_BYTES`]) weighs in a
/// chain: 1 up to 1023 bytes, then a unit per 512 (so a unit stands for
/// at most 1 KiB: the outbox's bound holds for every slot size).
#[inline(always)]
pub(crate) fn units(size: usize) -> u32 {
    ((size >> UNIT_SHIFT) as u32).max(1)
}

/// A chain of slots for one destination heap, linked through their first
/// word, null-terminated at `tail`.
#[derive(Clone, Copy)]
pub(crate) struct Chain {
    /// Index of the heap owning every slot of the chain.
    pub(crate) dest: usize,
    pub(crate) head: *mut u8,
    pub(crate) tail: *mut u8,
}

#[derive(Clone, Copy)]
struct Entry {
    head: *mut u8,
    tail: *mut u8,
    /// Destination heap index + 1; 0 while empty (so that a new outbox is
    /// all zero and lives in `.bss`).
    dest: u32,
    /// Units (see [`units`]) of the chain's slots.
    count: u32,
}

const EMPTY: Entry = Entry {
    head: ptr::null_mut(),
    tail: ptr::null_mut(),
    dest: 0,
    count: 0,
};

/// The chain of a held entry, which is emptied.
fn take(e: &mut Entry) -> Chain {
    let c = Chain {
        dest: e.dest as usize - 1,
        head: e.head,
        tail: e.tail,
    };
    *e = EMPTY;
    c
}

/// The outbox of one heap (touched by the heap's owner only).
pub(crate) struct Outbox {
    entries: [Entry; ENTRIES],
}

impl Outbox {
    pub(crate) const fn new() -> Self {
        Outbox {
            entries: [EMPTY; ENTRIES],
        }
    }

    /// [`Outbox::push`] when it has nothing to hand over: `slot` joins the
    /// chain for `dest`, which exists and is not full after it. `false`
    /// (nothing done): the caller pushes.
    ///
    /// # Safety
    /// As `push`.
    #[inline(always)]
    pub(crate) unsafe fn push_fast(&mut self, dest: usize, slot: *mut u8, units: u32) -> bool {
        let tag = dest as u32 + 1;
        for e in self.entries.iter_mut() {
            if e.dest == tag {
                if e.count + units >= BATCH {
                    return false;
                }
                // SAFETY: the slot is ours; it heads the chain.
                unsafe { slot.cast::<*mut u8>().write(e.head) };
                e.head = slot;
                e.count += units;
                return true;
            }
        }
        false
    }

    /// Adds `slot` (marked, checked, owned by heap `dest`, weighing `units`,
    /// below [`BATCH`]) to the chain for `dest`. Returns a chain to hand
    /// over now: that one, full, or the chain of another destination it
    /// displaced.
    ///
    /// # Safety
    /// `slot` is a freed slot with room for a link word, nobody else's.
    #[inline]
    pub(crate) unsafe fn push(&mut self, dest: usize, slot: *mut u8, units: u32) -> Option<Chain> {
        let tag = dest as u32 + 1;
        if let Some(e) = self.entries.iter_mut().find(|e| e.dest == tag) {
            // SAFETY: the slot is ours; it heads the chain.
            unsafe { slot.cast::<*mut u8>().write(e.head) };
            e.head = slot;
            e.count += units;
            if e.count < BATCH {
                return None;
            }
            return Some(take(e));
        }
        // A new destination: an empty entry, else the longest chain's.
        let mut pick: Option<&mut Entry> = None;
        for e in self.entries.iter_mut() {
            if e.dest == 0 {
                pick = Some(e);
                break;
            }
            match &pick {
                Some(p) if p.count >= e.count => {}
                _ => pick = Some(e),
            }
        }
        let e = pick?; // (there are entries: always `Some`)
        let out = if e.dest == 0 { None } else { Some(take(e)) };
        // SAFETY: the slot is ours; it ends the new chain.
        unsafe { slot.cast::<*mut u8>().write(ptr::null_mut()) };
        *e = Entry {
            head: slot,
            tail: slot,
            dest: tag,
            count: units,
        };
        out
    }

    /// Takes every chain out (to hand them all over).
    pub(crate) fn take_all(&mut self) -> [Option<Chain>; ENTRIES] {
        let mut out = [None; ENTRIES];
        for (e, o) in self.entries.iter_mut().zip(out.iter_mut()) {
            if e.dest != 0 {
                *o = Some(take(e));
            }
        }
        out
    }

    /// The chains held, for checking (see `NolibcAlloc::validate`).
    pub(crate) fn chains(&self) -> impl Iterator<Item = Chain> + '_ {
        self.entries.iter().filter(|e| e.dest != 0).map(|e| Chain {
            dest: e.dest as usize - 1,
            head: e.head,
            tail: e.tail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots: 16-byte cells of a local buffer.
    fn slots(buf: &mut [[usize; 2]]) -> impl Iterator<Item = *mut u8> + '_ {
        buf.iter_mut().map(|c| c.as_mut_ptr().cast())
    }

    fn chain_len(c: &Chain) -> usize {
        let (mut n, mut p, mut last) = (0, c.head, ptr::null_mut());
        while !p.is_null() {
            n += 1;
            last = p;
            // SAFETY: chains link cells of the test's buffer.
            p = unsafe { *p.cast::<*mut u8>() };
        }
        assert_eq!(last, c.tail, "the chain ends at its tail");
        n
    }

    #[test]
    fn a_chain_is_handed_over_when_full() {
        let mut buf = [[0usize; 2]; 2 * BATCH as usize];
        let mut o = Outbox::new();
        let mut full = std::vec::Vec::new();
        for s in slots(&mut buf) {
            // SAFETY: the cells are the test's.
            if let Some(c) = unsafe { o.push(5, s, 1) } {
                full.push(c);
            }
        }
        assert_eq!(full.len(), 2);
        for c in &full {
            assert_eq!((c.dest, chain_len(c)), (5, BATCH as usize));
        }
        assert_eq!(o.chains().count(), 0, "nothing held after two full chains");
    }

    /// Slots weigh by size: chains of 4 KiB slots go at 4 slots (32 units),
    /// of 1 KiB slots at 32, of 16 KiB slots at 1 (too big for an outbox).
    #[test]
    fn a_chain_is_handed_over_by_weight() {
        assert_eq!((units(16), units(1023), units(1024), units(4096)), (1, 1, 2, 8));
        assert!(units(MAX_SLOT_BYTES) < BATCH && units(MAX_SLOT_BYTES + 1) >= BATCH);
        let mut buf = [[0usize; 2]; 8];
        let mut o = Outbox::new();
        let mut at = std::vec::Vec::new();
        for (i, s) in slots(&mut buf).enumerate() {
            // SAFETY: the cells are the test's.
            if let Some(c) = unsafe { o.push(3, s, units(4096)) } {
                at.push((i, chain_len(&c)));
            }
        }
        assert_eq!(at, [(3, 4), (7, 4)]);
    }

    /// `push_fast` joins an existing chain and leaves the rest (a new
    /// destination, the slot that fills a chain) to `push`: the same
    /// chains as with `push` alone.
    #[test]
    fn push_fast_joins_a_chain_and_leaves_its_end_to_push() {
        let mut buf = [[0usize; 2]; 2 * BATCH as usize];
        let mut o = Outbox::new();
        let mut full = std::vec::Vec::new();
        let (mut fast, mut slow) = (0, 0);
        for s in slots(&mut buf) {
            // SAFETY: the cells are the test's.
            unsafe {
                if o.push_fast(7, s, 1) {
                    fast += 1;
                } else {
                    slow += 1;
                    full.extend(o.push(7, s, 1));
                }
            }
        }
        // Per chain: the first slot (no chain yet) and the last (it fills it).
        assert_eq!((fast, slow), (2 * BATCH as usize - 4, 4));
        assert_eq!(full.len(), 2);
        for c in &full {
            assert_eq!((c.dest, chain_len(c)), (7, BATCH as usize));
        }
        assert_eq!(o.chains().count(), 0);
    }

    #[test]
    fn a_new_destination_displaces_the_longest_chain_and_take_all_empties() {
        let mut buf = [[0usize; 2]; 8];
        let mut o = Outbox::new();
        let mut it = slots(&mut buf);
        let mut push = |dest| {
            // SAFETY: the cells are the test's.
            unsafe { o.push(dest, it.next().unwrap(), 1) }
        };
        // Three destinations fill the entries; 1 has the longest chain.
        assert!(push(1).is_none());
        assert!(push(1).is_none());
        assert!(push(2).is_none());
        assert!(push(7).is_none());
        let out = push(9).expect("a fourth destination displaces one");
        assert_eq!((out.dest, chain_len(&out)), (1, 2), "the longest chain goes");
        let mut held: std::vec::Vec<(usize, usize)> = o.chains().map(|c| (c.dest, chain_len(&c))).collect();
        held.sort();
        assert_eq!(held, [(2, 1), (7, 1), (9, 1)]);
        let all: std::vec::Vec<Chain> = o.take_all().into_iter().flatten().collect();
        assert_eq!(all.len(), 3);
        assert_eq!(o.chains().count(), 0);
    }
}

//! Outboxes: slots a thread frees into other threads' heaps, batched.
//!
//! A slot freed by a thread that does not own its run goes back to the
//! owner's remote list. Pushed one by one, every such free is a
//! compare-and-swap on a cache line that the owner and every other freeing
//! thread also write: the line moves between cores on nearly every free of
//! a producer/consumer or server program. So a thread that has a heap of
//! its own first links the slot into its heap's *outbox*, a few chains kept
//! per destination heap with plain loads and stores, and hands a whole
//! chain over with one compare-and-swap when it is [`BATCH`] slots long, or
//! when another destination needs its place.
//!
//! **Bounded.** An outbox holds at most [`ENTRIES`] × ([`BATCH`] − 1) slots
//! of at most [`MAX_SLOT_BYTES`] each (larger slots go straight to the
//! owner): 124 KiB per heap at worst. They count as in use in the owner's
//! heap until they reach it. [`crate::NolibcAlloc::trim`] and
//! [`crate::NolibcAlloc::thread_exit`] empty the calling thread's outbox;
//! a heap that another thread adopts keeps its outbox, which the new owner
//! goes on filling and emptying.
//!
//! Slots are marked and checked (boundary, double free) before they enter
//! an outbox, exactly as before a push onto a remote list.

use core::ptr;

/// Destinations an outbox keeps a chain for at once (a direct-mapped
/// table indexed by the destination heap's index).
pub(crate) const ENTRIES: usize = 4;

/// Slots per chain at which it is handed over.
pub(crate) const BATCH: u32 = 32;

/// Larger slots are pushed one by one (a chain of them would hold too much).
pub(crate) const MAX_SLOT_BYTES: usize = 1024;

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
    /// Slots in the chain.
    count: u32,
}

const EMPTY: Entry = Entry {
    head: ptr::null_mut(),
    tail: ptr::null_mut(),
    dest: 0,
    count: 0,
};

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

    /// Adds `slot` (marked, checked, owned by heap `dest`) to the chain for
    /// `dest`. Returns a chain to hand over now: that one, full, or the
    /// chain of another destination it displaced.
    ///
    /// # Safety
    /// `slot` is a freed slot with room for a link word, nobody else's.
    #[inline]
    pub(crate) unsafe fn push(&mut self, dest: usize, slot: *mut u8) -> Option<Chain> {
        let e = &mut self.entries[dest % ENTRIES];
        let tag = dest as u32 + 1;
        let mut out = None;
        if e.dest != tag {
            if e.dest != 0 {
                out = Some(Chain {
                    dest: e.dest as usize - 1,
                    head: e.head,
                    tail: e.tail,
                });
            }
            // SAFETY: the slot is ours; it ends the new chain.
            unsafe { slot.cast::<*mut u8>().write(ptr::null_mut()) };
            *e = Entry {
                head: slot,
                tail: slot,
                dest: tag,
                count: 1,
            };
            return out;
        }
        // SAFETY: as above; it heads the chain.
        unsafe { slot.cast::<*mut u8>().write(e.head) };
        e.head = slot;
        e.count += 1;
        if e.count >= BATCH {
            out = Some(Chain {
                dest,
                head: e.head,
                tail: e.tail,
            });
            *e = EMPTY;
        }
        out
    }

    /// Takes every chain out (to hand them all over).
    pub(crate) fn take_all(&mut self) -> [Option<Chain>; ENTRIES] {
        let mut out = [None; ENTRIES];
        for (e, o) in self.entries.iter_mut().zip(out.iter_mut()) {
            if e.dest != 0 {
                *o = Some(Chain {
                    dest: e.dest as usize - 1,
                    head: e.head,
                    tail: e.tail,
                });
                *e = EMPTY;
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
            if let Some(c) = unsafe { o.push(5, s) } {
                full.push(c);
            }
        }
        assert_eq!(full.len(), 2);
        for c in &full {
            assert_eq!((c.dest, chain_len(c)), (5, BATCH as usize));
        }
        assert_eq!(o.chains().count(), 0, "nothing held after two full chains");
    }

    #[test]
    fn a_destination_displaces_another_of_its_entry_and_take_all_empties() {
        let mut buf = [[0usize; 2]; 8];
        let mut o = Outbox::new();
        let mut it = slots(&mut buf);
        // SAFETY: the cells are the test's (all pushes).
        unsafe {
            assert!(o.push(1, it.next().unwrap()).is_none());
            assert!(o.push(1, it.next().unwrap()).is_none());
            assert!(o.push(2, it.next().unwrap()).is_none());
            // 1 + ENTRIES shares entry 1 with destination 1.
            let out = o
                .push(1 + ENTRIES, it.next().unwrap())
                .expect("destination 1 displaced");
            assert_eq!((out.dest, chain_len(&out)), (1, 2));
        }
        let mut held: std::vec::Vec<(usize, usize)> = o.chains().map(|c| (c.dest, chain_len(&c))).collect();
        held.sort();
        assert_eq!(held, [(2, 1), (1 + ENTRIES, 1)]);
        let all: std::vec::Vec<Chain> = o.take_all().into_iter().flatten().collect();
        assert_eq!(all.len(), 2);
        assert_eq!(o.chains().count(), 0);
    }
}

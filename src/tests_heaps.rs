//! Unit tests of the thread heaps on a fake source that gives each std
//! thread an identity: remote frees, giving a heap back, fork, misuse
//! through a remote free. They run under Miri with real threads.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::ptr::NonNull;
use std::collections::HashSet;
use std::sync::Mutex;
use std::vec::Vec;

use crate::class::CLASSES;
use crate::fake::FakeSource;
use crate::os::Source;
use crate::{Config, NolibcAlloc};

const BUF: usize = if cfg!(miri) { 32 << 20 } else { 128 << 20 };

/// A [`FakeSource`] behind a lock, shared by threads, which knows every
/// thread by the address of a thread-local and can be told a thread ended.
struct Threaded {
    inner: Mutex<SendFake>,
    ended: Mutex<HashSet<u32>>,
    /// What `threads_give_back` answers.
    give_back: std::sync::atomic::AtomicBool,
}

struct SendFake(FakeSource);
// SAFETY: used only under `Threaded::inner`'s lock.
unsafe impl Send for SendFake {}

std::thread_local! {
    static ME: Cell<u32> = const { Cell::new(0) };
}

fn my_tid() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    ME.with(|c| {
        if c.get() == 0 {
            c.set(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        }
        c.get()
    })
}

impl Threaded {
    fn with<R>(&self, f: impl FnOnce(&FakeSource) -> R) -> R {
        f(&self.inner.lock().unwrap().0)
    }
}

// SAFETY: every call goes to the fake source under one lock.
unsafe impl Source for Threaded {
    const HAS_BRK: bool = true;
    fn page_size(&self) -> usize {
        self.with(|s| s.page_size())
    }
    fn brk_current(&self) -> Option<NonNull<u8>> {
        self.with(|s| s.brk_current())
    }
    unsafe fn brk(&self, addr: NonNull<u8>) -> bool {
        // SAFETY: forwarded.
        self.with(|s| unsafe { s.brk(addr) })
    }
    fn stack_floor(&self) -> usize {
        self.with(|s| s.stack_floor())
    }
    fn map(&self, len: usize) -> Option<NonNull<u8>> {
        self.with(|s| s.map(len))
    }
    unsafe fn unmap(&self, ptr: NonNull<u8>, len: usize) {
        // SAFETY: forwarded.
        self.with(|s| unsafe { s.unmap(ptr, len) })
    }
    unsafe fn remap(&self, ptr: NonNull<u8>, old_len: usize, new_len: usize) -> Option<NonNull<u8>> {
        // SAFETY: forwarded.
        self.with(|s| unsafe { s.remap(ptr, old_len, new_len) })
    }
    unsafe fn discard(&self, ptr: NonNull<u8>, len: usize) {
        // SAFETY: forwarded.
        self.with(|s| unsafe { s.discard(ptr, len) })
    }
    fn thread_identity(&self) -> usize {
        // A thread-local's address: unique per live thread, aligned.
        ME.with(|c| c as *const Cell<u32> as usize)
    }
    fn thread_id(&self) -> u32 {
        my_tid()
    }
    fn thread_alive(&self, tid: u32) -> bool {
        !self.ended.lock().unwrap().contains(&tid)
    }
    fn threads_give_back(&self) -> bool {
        self.give_back.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct Buffer(NonNull<u8>, Layout);

fn with_threaded(config: Config, f: impl FnOnce(&NolibcAlloc<Threaded>)) {
    // These tests count slots and runs from the first allocation on.
    with_threaded_first(config, true, f)
}

/// [`with_threaded`], the first blocks' budget spent beforehand or not.
fn with_threaded_first(config: Config, spend: bool, f: impl FnOnce(&NolibcAlloc<Threaded>)) {
    let layout = Layout::from_size_align(BUF, 65536).unwrap();
    // SAFETY: non-zero size.
    let buf = Buffer(NonNull::new(unsafe { std::alloc::alloc(layout) }).unwrap(), layout);
    // SAFETY: the buffer outlives the allocator, dropped inside.
    let fake = unsafe { FakeSource::new(buf.0, BUF, BUF / 4, 4096) };
    let source = Threaded {
        inner: Mutex::new(SendFake(fake)),
        ended: Mutex::new(HashSet::new()),
        give_back: std::sync::atomic::AtomicBool::new(false),
    };
    {
        let a = std::boxed::Box::new(NolibcAlloc::with_source(source, config));
        if spend {
            a.spend_first_blocks();
        }
        f(&a);
    }
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(buf.0.as_ptr(), buf.1) };
}

/// A block that may cross threads.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct P(*mut u8);
// SAFETY: the tests hand blocks between threads on purpose.
unsafe impl Send for P {}
// SAFETY: as above.
unsafe impl Sync for P {}

fn alloc_n(a: &NolibcAlloc<Threaded>, n: usize, l: Layout) -> Vec<P> {
    (0..n)
        .map(|i| {
            // SAFETY: non-zero layout.
            let p = unsafe { a.alloc(l) };
            assert!(!p.is_null());
            // SAFETY: a fresh block of `l.size()` bytes.
            unsafe { p.write_bytes(i as u8, l.size()) };
            P(p)
        })
        .collect()
}

fn free_all(a: &NolibcAlloc<Threaded>, blocks: &[P], l: Layout) {
    for &p in blocks {
        // SAFETY: live blocks of this layout, freed once.
        unsafe { a.dealloc(p.0, l) };
    }
}

/// A thread's first small blocks (the C ABI's: no break) come from the
/// core without claiming a heap, so that a program that allocates a handful
/// of blocks writes no page of the heap table; its first run claims one.
#[test]
fn no_heap_is_claimed_while_the_first_blocks_last() {
    with_threaded_first(Config::new().use_brk(false), false, |a| {
        let sizes = [8usize, 24, 40, 72, 136, 264, 520, 1000];
        let layouts: Vec<Layout> = sizes.iter().map(|&n| Layout::from_size_align(n, 8).unwrap()).collect();
        let blocks: Vec<P> = layouts.iter().flat_map(|&l| alloc_n(a, 1, l)).collect();
        assert_eq!(a.validate(), 0, "first blocks, not slots");
        assert!(
            a.heaps.iter().all(|h| h.is_free()),
            "a heap was claimed for first blocks"
        );
        // The budget spent, the next block is a slot of the thread's heap.
        let l = Layout::from_size_align(48, 8).unwrap();
        let mut more = Vec::new();
        while a.validate() == 0 {
            more.extend(alloc_n(a, 1, l));
            assert!(more.len() <= 64, "runs never took over");
        }
        assert_eq!(
            a.heaps.iter().filter(|h| !h.is_free()).count(),
            1,
            "one heap, the thread's"
        );
        for (p, &l) in blocks.iter().zip(&layouts) {
            free_all(a, &[*p], l);
        }
        free_all(a, &more, l);
        assert_eq!(a.stats().in_use_bytes, 0);
    });
}

#[test]
fn a_thread_with_an_identity_gets_a_heap_of_its_own() {
    with_threaded(Config::new().use_brk(false), |a| {
        let l = Layout::from_size_align(48, 8).unwrap();
        let mine = alloc_n(a, 10, l);
        assert_eq!(a.heaps_claimed(), 1);
        std::thread::scope(|s| {
            s.spawn(|| {
                let theirs = alloc_n(a, 10, l);
                assert_eq!(a.heaps_claimed(), 2);
                free_all(a, &theirs, l);
            });
        });
        free_all(a, &mine, l);
        a.validate();
        assert_eq!(a.stats().in_use_bytes, 0);
    });
}

#[test]
fn remote_frees_go_back_to_the_owner_and_are_reused() {
    with_threaded(Config::new().use_brk(false), |a| {
        let l = Layout::from_size_align(64, 16).unwrap();
        // More than a run holds: the owner runs out of slots and takes the
        // remote ones back instead of taking a new run.
        let class = crate::class::class_for(64, 16).unwrap();
        let n = CLASSES[class].slots as usize + 8;
        let blocks = alloc_n(a, n, l);
        let shared = blocks.clone();
        std::thread::scope(|s| {
            s.spawn(|| free_all(a, &shared, l));
        });
        // The slots wait on the owner's remote list, still counted in use.
        a.validate();
        assert_eq!(a.stats().in_use_bytes, n * 64);
        let before: HashSet<P> = blocks.iter().copied().collect();
        // The owner takes them back when its runs run out of slots.
        let again = alloc_n(a, 2 * n, l);
        let reused = again.iter().filter(|p| before.contains(p)).count();
        assert_eq!(reused, n, "every remotely freed slot is reused");
        a.validate();
        free_all(a, &again, l);
        a.validate();
        assert_eq!(a.stats().in_use_bytes, 0);
    });
}

#[test]
fn a_heap_given_back_at_thread_exit_serves_the_next_thread() {
    with_threaded(Config::new().use_brk(false), |a| {
        let l = Layout::from_size_align(200, 8).unwrap();
        let _main = alloc_n(a, 1, l);
        let left = std::thread::scope(|s| {
            s.spawn(|| {
                let b = alloc_n(a, 20, l);
                free_all(a, &b[..10], l);
                a.thread_exit();
                b[10..].to_vec()
            })
            .join()
            .unwrap()
        });
        assert_eq!(a.heaps_claimed(), 1, "the ended thread's heap is free again");
        std::thread::scope(|s| {
            s.spawn(|| {
                let b = alloc_n(a, 5, l);
                // Blocks of the ended thread, freed by the heap's new owner
                // (or, where this thread's identity has another home, through
                // its outbox, which its end hands over).
                free_all(a, &left, l);
                free_all(a, &b, l);
                a.thread_exit();
            });
        });
        free_all(a, &_main, l);
        a.validate();
        // Frees into a heap nobody owns wait on its remote list; `trim`
        // takes them back.
        a.trim();
        a.validate();
        assert_eq!(a.stats().in_use_bytes, 0);
    });
}

#[test]
fn the_fork_child_keeps_its_own_heap_and_gives_up_the_others() {
    with_threaded(Config::new().use_brk(false), |a| {
        let l = Layout::from_size_align(32, 8).unwrap();
        let mine = alloc_n(a, 8, l);
        let theirs = std::thread::scope(|s| s.spawn(|| alloc_n(a, 8, l)).join().unwrap());
        assert_eq!(a.heaps_claimed(), 2);
        a.fork_prepare();
        // As in the child of a fork: the other thread does not exist.
        a.fork_child();
        let more = alloc_n(a, 8, l);
        free_all(a, &theirs, l); // remote frees into the given-up heap
        free_all(a, &mine, l);
        free_all(a, &more, l);
        a.validate();
        std::thread::scope(|s| {
            s.spawn(|| {
                // A new thread gets a heap, never the given-up one.
                let b = alloc_n(a, 8, l);
                free_all(a, &b, l);
            });
        });
        a.validate();
    });
}

#[test]
fn fork_parent_releases_every_lock() {
    with_threaded(Config::new().use_brk(false), |a| {
        let l = Layout::from_size_align(300_000, 8).unwrap();
        a.fork_prepare();
        a.fork_parent();
        // Medium blocks and runs need the core lock, foreign frees none.
        let b = alloc_n(a, 2, l);
        free_all(a, &b, l);
        a.validate();
    });
}

#[test]
fn a_double_free_through_another_thread_is_caught() {
    with_threaded(Config::new().use_brk(false), |a| {
        let l = Layout::from_size_align(24, 8).unwrap();
        let b = alloc_n(a, 2, l);
        let one = [b[0]];
        let r = std::thread::scope(|s| {
            s.spawn(|| {
                free_all(a, &one, l);
                free_all(a, &one, l);
            })
            .join()
        });
        let msg = r
            .expect_err("the second free stops")
            .downcast::<std::string::String>()
            .unwrap();
        assert!(msg.contains("nolibc-alloc: dealloc: double free"), "{msg}");
    });
}

#[test]
fn frees_into_another_heap_wait_in_the_outbox_until_a_batch_or_thread_exit() {
    with_threaded(Config::new().use_brk(false), |a| {
        let l = Layout::from_size_align(48, 16).unwrap();
        let batch = crate::outbox::BATCH as usize;
        let n = 2 * batch + 5;
        let blocks = alloc_n(a, n, l);
        let shared = blocks.clone();
        std::thread::scope(|s| {
            s.spawn(|| {
                // A heap of its own first: its frees of the main thread's
                // blocks then go through its outbox.
                let mine = alloc_n(a, 1, l);
                free_all(a, &shared, l);
                // Two full batches handed over, five slots held: the walk
                // checks both.
                let waiting = walk(a.heaps[0..].iter().map(|h| h.remote_list()));
                assert_eq!(waiting, 2 * batch, "two batches reached the owner");
                a.validate();
                // A second free of a slot held in the outbox is caught too.
                let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| free_all(a, &shared[n - 1..], l)));
                let msg = again
                    .expect_err("double free")
                    .downcast::<std::string::String>()
                    .unwrap();
                assert!(msg.contains("nolibc-alloc: dealloc: double free"), "{msg}");
                free_all(a, &mine, l);
                a.thread_exit();
                let waiting = walk(a.heaps[0..].iter().map(|h| h.remote_list()));
                assert_eq!(waiting, n, "thread exit hands the rest over");
            });
        });
        a.validate();
        assert_eq!(
            a.stats().in_use_bytes,
            n * 48,
            "counted in use until the owner takes them"
        );
        let before: HashSet<P> = blocks.iter().copied().collect();
        // Past what the run holds: the owner takes the slots back.
        let slots = CLASSES[crate::class::class_for(48, 16).unwrap()].slots as usize;
        let again = alloc_n(a, slots + n, l);
        assert_eq!(
            again.iter().filter(|p| before.contains(p)).count(),
            n,
            "every slot is reused"
        );
        free_all(a, &again, l);
        a.validate();
        assert_eq!(a.stats().in_use_bytes, 0);
    });
}

/// The calling thread's identity and home entry, which another identity
/// (never a thread's: thread-local addresses are not this) takes first, if
/// the main thread's heap is not there already.
fn take_home_entry(a: &NolibcAlloc<Threaded>) -> (usize, usize) {
    let id = a.source().thread_identity();
    let home = crate::heap::home(id);
    if a.heaps[home].is_free() {
        assert!(crate::heap::claim_at(&a.heaps, home, usize::MAX & !3, a.source()).is_some());
    }
    (id, home)
}

/// A thread whose home entry another identity holds (two identities
/// hashed alike) claims the next entry; its frees into other heaps still
/// go through its outbox in batches.
#[test]
fn frees_batch_where_the_home_entry_is_taken() {
    with_threaded(Config::new().use_brk(false), |a| {
        let l = Layout::from_size_align(48, 16).unwrap();
        let batch = crate::outbox::BATCH as usize;
        let n = 2 * batch + 5;
        let blocks = alloc_n(a, n, l);
        let shared = blocks.clone();
        std::thread::scope(|s| {
            s.spawn(|| {
                let (id, home) = take_home_entry(a);
                let mine = alloc_n(a, 1, l);
                assert!(!a.heaps[home].is_mine(id), "the heap is not at the home entry");
                free_all(a, &shared, l);
                let waiting = walk(a.heaps[0..].iter().map(|h| h.remote_list()));
                assert_eq!(waiting, 2 * batch, "two batches reached the owner");
                free_all(a, &mine, l);
                a.thread_exit();
                let waiting = walk(a.heaps[0..].iter().map(|h| h.remote_list()));
                assert_eq!(waiting, n, "thread exit hands the rest over");
            });
        });
        a.validate();
        let again = alloc_n(a, n, l);
        free_all(a, &again, l);
        a.validate();
    });
}

/// A thread whose home entry another identity holds allocates from its
/// heap a few entries on without the whole slow path: a free slot of its
/// own is taken while a slot another thread freed stays on the remote list
/// (the slow path would have taken that back first, and handed it out).
#[test]
fn a_thread_whose_home_entry_is_taken_allocates_without_the_search() {
    with_threaded(Config::new().use_brk(false), |a| {
        a.source().give_back.store(false, std::sync::atomic::Ordering::Relaxed);
        let l = Layout::from_size_align(48, 16).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let (id, home) = take_home_entry(a);
                let blocks = alloc_n(a, 3, l);
                assert!(!a.heaps[home].is_mine(id), "the heap is not at the home entry");
                free_all(a, &blocks[2..], l);
                let remote = blocks[0..1].to_vec();
                std::thread::scope(|s| {
                    s.spawn(|| free_all(a, &remote, l));
                });
                let waiting = || walk(a.heaps[0..].iter().map(|h| h.remote_list()));
                assert_eq!(waiting(), 1, "the other thread's free waits on the remote list");
                let again = alloc_n(a, 1, l);
                assert_eq!(again[0].0, blocks[2].0, "the thread's own free slot");
                assert_eq!(waiting(), 1, "the remote list is left to the slow path");
                free_all(a, &again, l);
                free_all(a, &blocks[1..2], l);
                a.thread_exit();
            });
        });
        a.validate();
    });
}

/// Where threads give their heaps back when they end (the C ABI), a
/// thread that only frees claims a heap at its first remote free, and its
/// frees reach the owner in batches through its outbox, emptied at thread
/// exit. Elsewhere it pushes each slot alone (nothing would empty an
/// outbox of a thread that ends without `thread_exit`).
#[test]
fn a_thread_that_only_frees_batches_where_threads_give_back() {
    for give_back in [true, false] {
        with_threaded(Config::new().use_brk(false), |a| {
            a.source()
                .give_back
                .store(give_back, std::sync::atomic::Ordering::Relaxed);
            let l = Layout::from_size_align(48, 16).unwrap();
            let batch = crate::outbox::BATCH as usize;
            let blocks = alloc_n(a, batch + 3, l);
            let shared = blocks.clone();
            std::thread::scope(|s| {
                s.spawn(|| {
                    free_all(a, &shared, l);
                    let waiting = walk(a.heaps[0..].iter().map(|h| h.remote_list()));
                    let expected = if give_back { batch } else { batch + 3 };
                    assert_eq!(
                        waiting, expected,
                        "slots on the owner's remote list (give back: {give_back})"
                    );
                    a.validate();
                    a.thread_exit();
                    let waiting = walk(a.heaps[0..].iter().map(|h| h.remote_list()));
                    assert_eq!(waiting, batch + 3, "thread exit hands the rest over");
                });
            });
            assert_eq!(a.heaps_claimed(), 1, "the freeing thread's heap is given back");
            let again = alloc_n(a, batch + 3, l);
            free_all(a, &again, l);
            a.validate();
            assert_eq!(a.stats().in_use_bytes, 0);
        });
    }
}

/// A class whose only run empties keeps it, past the trim budget: a
/// program whose few slots of many classes come and go (a producer whose
/// blocks another thread frees) does not give a run back and take a new
/// one every round. Runs beside another of their class still go. (In the
/// calling thread's own heap: the locked arenas are picked by the stack
/// address, which Miri draws anew for every call.)
#[test]
fn the_last_run_of_a_class_stays_past_the_budget() {
    with_threaded(Config::new().use_brk(false).trim_threshold(0), |a| {
        let layouts = [16, 48, 100, 200, 400, 700, 1000, 2000].map(|s| Layout::from_size_align(s, 8).unwrap());
        let events = a.core.lock().run_events;
        for _ in 0..if cfg!(miri) { 8 } else { 50 } {
            for l in layouts {
                let b = alloc_n(a, 1, l);
                free_all(a, &b, l);
            }
            a.validate();
        }
        // No run went back to the core's dirty runs, none came from them.
        assert_eq!(a.core.lock().run_events, events, "runs given back and taken again");
        // A second run of a class, once empty, is over the budget: it goes.
        let l = Layout::from_size_align(2000, 8).unwrap();
        let slots = CLASSES[crate::class::class_for(2000, 8).unwrap()].slots as usize;
        let blocks = alloc_n(a, slots + 1, l);
        let before = a.core.lock().run_events;
        free_all(a, &blocks, l);
        assert!(a.core.lock().run_events > before, "the run beside another was kept");
        a.validate();
        assert_eq!(a.stats().in_use_bytes, 0);
    });
}

/// Slots on the given remote lists.
fn walk(lists: impl Iterator<Item = *mut u8>) -> usize {
    let mut n = 0;
    for mut p in lists {
        while !p.is_null() {
            n += 1;
            // SAFETY: remote lists link live slots through their first word.
            p = unsafe { *p.cast::<*mut u8>() };
        }
    }
    n
}

#[test]
fn frees_into_a_heap_given_back_are_taken_back_at_once() {
    with_threaded(Config::new().use_brk(false), |a| {
        let l = Layout::from_size_align(80, 16).unwrap();
        // Thread 1 allocates and ends, giving its heap back: its blocks live on.
        let left = std::thread::scope(|s| {
            s.spawn(|| {
                let b = alloc_n(a, 40, l);
                a.thread_exit();
                b
            })
            .join()
            .unwrap()
        });
        assert_eq!(a.heaps_claimed(), 0);
        std::thread::scope(|s| {
            // Thread 2 has no heap: it pushes each slot alone.
            s.spawn(|| free_all(a, &left[..20], l));
        });
        a.validate();
        assert_eq!(a.stats().in_use_bytes, 20 * 80, "the first 20 are back, not waiting");
        std::thread::scope(|s| {
            // Thread 3 has a heap: its outbox holds the slots until it ends.
            s.spawn(|| {
                let mine = alloc_n(a, 1, l);
                free_all(a, &left[20..], l);
                free_all(a, &mine, l);
                a.thread_exit();
            });
        });
        a.validate();
        assert_eq!(a.stats().in_use_bytes, 0, "every block is back without a trim");
        assert!(
            a.heaps.iter().all(|h| h.remote_list().is_null()),
            "no remote list holds a slot"
        );
    });
}

#[test]
fn slots_freed_by_other_threads_are_reused_before_fresh_ones() {
    with_threaded(Config::new().use_brk(false), |a| {
        let l = Layout::from_size_align(32, 16).unwrap();
        // A run far from full: fresh slots are there to carve.
        let blocks = alloc_n(a, 50, l);
        let shared = blocks.clone();
        std::thread::scope(|s| {
            s.spawn(|| free_all(a, &shared, l));
        });
        let before: HashSet<P> = blocks.iter().copied().collect();
        // (Up to 16 slots carved with the last ones wait on the free list
        // and come first.)
        let again = alloc_n(a, 50 + 16, l);
        let reused = again.iter().filter(|p| before.contains(p)).count();
        assert_eq!(
            reused, 50,
            "remotely freed slots come back before the run's untouched memory"
        );
        free_all(a, &again, l);
        a.validate();
        assert_eq!(a.stats().in_use_bytes, 0);
    });
}

//! Thread identity that cannot crash: on x86_64 a thread whose `%fs` base is
//! 0 (a `-nostartfiles` program on `*-linux-gnu`, `origin` without its
//! thread support) has no thread pointer, and reading `%fs:0` would fault.
//! The allocator must find that out and use its locked arenas.
//!
//! No test harness: while `%fs` is 0 nothing that touches thread-local
//! storage (std's output capture, glibc's malloc) may run, so the checks are
//! made with a local allocator and reported after the base is restored.

use std::alloc::{GlobalAlloc, Layout};

use nolibc_alloc::NolibcAlloc;

#[cfg(target_arch = "x86_64")]
fn main() {
    use nolibc_alloc::{identity, sys};
    let saved = sys::fs_base().expect("arch_prctl(ARCH_GET_FS)");
    let a = NolibcAlloc::new();
    let l = Layout::from_size_align(40, 8).unwrap();
    let mut blocks = [core::ptr::null_mut::<u8>(); 1000];
    identity::reset_for_tests();
    // SAFETY: until the base is restored only the local allocator (raw
    // system calls, no TLS) runs in this thread.
    let (ok, claimed, tp) = unsafe {
        sys::set_fs_base(0).expect("arch_prctl(ARCH_SET_FS, 0)");
        let tp = identity::thread_pointer();
        let mut ok = true;
        for b in blocks.iter_mut() {
            *b = a.alloc(l);
            ok &= !b.is_null();
            if !b.is_null() {
                b.write_bytes(7, 40);
            }
        }
        for &b in &blocks {
            if !b.is_null() {
                a.dealloc(b, l);
            }
        }
        let claimed = a.heaps_claimed();
        sys::set_fs_base(saved).expect("arch_prctl(ARCH_SET_FS, saved)");
        (ok, claimed, tp)
    };
    identity::reset_for_tests();
    assert!(ok, "allocation failed with no thread pointer");
    assert_eq!(tp, 0, "no thread pointer is trusted while %fs base is 0");
    assert_eq!(claimed, 0, "a thread without identity uses the locked arenas");
    // With the base back, the thread pointer is trusted again and the thread gets a heap.
    // SAFETY: non-zero layout; freed right after.
    unsafe {
        let p = a.alloc(l);
        assert!(!p.is_null());
        a.dealloc(p, l);
    }
    assert_eq!(a.heaps_claimed(), 1, "with a thread pointer the thread gets a heap");
    a.validate();
    println!("identity: %fs base 0 -> locked arenas (1000 blocks), restored -> a heap: ok");
    println!("1 passed, 0 failed");
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("identity: not run: only x86_64 reads the thread pointer through memory");
}

//! `tiny` with dlmalloc (its `Dlmalloc` behind a spin lock, over a static
//! arena handed out once as its only segment).

#![no_std]
#![no_main]

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicBool, Ordering};

use dlmalloc::Dlmalloc;
use footprint_peers::ARENA_BYTES;
use nolibc_alloc::entry;
use spinning_top::Spinlock;

/// dlmalloc's memory source: the arena, once.
struct Arena(AtomicBool);

static mut ARENA: [u8; ARENA_BYTES] = [0; ARENA_BYTES];

// SAFETY: the arena is handed out at most once and never reused.
unsafe impl dlmalloc::Allocator for Arena {
    fn alloc(&self, _size: usize) -> (*mut u8, usize, u32) {
        if self.0.swap(true, Ordering::Relaxed) {
            return (core::ptr::null_mut(), 0, 0);
        }
        ((&raw mut ARENA).cast(), ARENA_BYTES, 0)
    }
    fn remap(&self, _: *mut u8, _: usize, _: usize, _: bool) -> *mut u8 {
        core::ptr::null_mut()
    }
    fn free_part(&self, _: *mut u8, _: usize, _: usize) -> bool {
        false
    }
    fn free(&self, _: *mut u8, _: usize) -> bool {
        false
    }
    fn can_release_part(&self, _: u32) -> bool {
        false
    }
    fn allocates_zeros(&self) -> bool {
        true
    }
    fn page_size(&self) -> usize {
        4096
    }
}

struct Global(Spinlock<Dlmalloc<Arena>>);

// SAFETY: every call goes to the one `Dlmalloc` under the lock.
unsafe impl GlobalAlloc for Global {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { self.0.lock().malloc(layout.size(), layout.align()) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { self.0.lock().free(ptr, layout.size(), layout.align()) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { self.0.lock().realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}

#[global_allocator]
static ALLOC: Global = Global(Spinlock::new(Dlmalloc::new_with_allocator(Arena(AtomicBool::new(
    false,
)))));

entry!(main);

fn main() -> i32 {
    footprint_peers::tiny(b"tiny_dlmalloc")
}

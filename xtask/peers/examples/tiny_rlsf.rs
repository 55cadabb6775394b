//! `tiny` with rlsf (its `Tlsf` behind a spin lock, a static arena added on
//! first use).

#![no_std]
#![no_main]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use footprint_peers::ARENA_BYTES;
use nolibc_alloc::entry;
use rlsf::Tlsf;
use spinning_top::Spinlock;

struct Heap {
    tlsf: Tlsf<'static, u16, u16, 12, 16>,
    ready: bool,
}

struct Global(Spinlock<Heap>);

static mut ARENA: [u8; ARENA_BYTES] = [0; ARENA_BYTES];

// SAFETY: every call goes to the one `Tlsf` under the lock.
unsafe impl GlobalAlloc for Global {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut heap = self.0.lock();
        if !heap.ready {
            heap.ready = true;
            // SAFETY: the arena is handed to this pool once and used by it only.
            let arena = unsafe {
                NonNull::new_unchecked(core::ptr::slice_from_raw_parts_mut(
                    (&raw mut ARENA).cast::<u8>(),
                    ARENA_BYTES,
                ))
            };
            // SAFETY: as above.
            unsafe { heap.tlsf.insert_free_block_ptr(arena) };
        }
        heap.tlsf
            .allocate(layout)
            .map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe {
            self.0
                .lock()
                .tlsf
                .deallocate(NonNull::new_unchecked(ptr), layout.align())
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `alloc` with `layout`; the caller checked `new_size`.
        unsafe {
            let new = Layout::from_size_align_unchecked(new_size, layout.align());
            self.0
                .lock()
                .tlsf
                .reallocate(NonNull::new_unchecked(ptr), new)
                .map_or(core::ptr::null_mut(), NonNull::as_ptr)
        }
    }
}

#[global_allocator]
static ALLOC: Global = Global(Spinlock::new(Heap {
    tlsf: Tlsf::new(),
    ready: false,
}));

entry!(main);

fn main() -> i32 {
    footprint_peers::tiny(b"tiny_rlsf")
}

//! `libnolibc_alloc_c`: the C `malloc` family of nolibc-alloc
//! (`nolibc_alloc::c_abi`) as a static and a shared library.
//!
//! Everything is in the main crate; this crate only turns it into C
//! artifacts and, where no runtime provides one, brings the panic handler
//! that a `#![no_std]` staticlib or cdylib needs. The allocator never
//! panics; the handler is there for the linker, and aborts.
#![no_std]

pub use nolibc_alloc::c_abi::*;

// With the `rt` feature on a target without a C library, the runtime has
// the panic handler.
#[cfg(not(all(feature = "rt", target_os = "linux", target_env = "")))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    let _ = nolibc_alloc::sys::write(2, b"nolibc-alloc: panic in the C library\n");
    nolibc_alloc::sys::abort()
}

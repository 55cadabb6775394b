//! Declarations only (see Cargo.toml): what the unused `System` sources of
//! dlmalloc and rlsf name, with Linux's x86_64/aarch64/riscv64 values.

#![no_std]
#![allow(non_camel_case_types)]

pub type c_void = core::ffi::c_void;
pub type c_int = i32;
pub type size_t = usize;
pub type off_t = i64;
pub type c_long = i64;

pub const PROT_READ: c_int = 1;
pub const PROT_WRITE: c_int = 2;
pub const MAP_PRIVATE: c_int = 2;
pub const MAP_ANON: c_int = 0x20;
pub const MAP_ANONYMOUS: c_int = 0x20;
pub const MAP_FIXED_NOREPLACE: c_int = 0x100000;
pub const _SC_PAGESIZE: c_int = 30;
pub const MREMAP_MAYMOVE: c_int = 1;
pub const MAP_FAILED: *mut c_void = !0 as *mut c_void;

/// Opaque, never used: only named by a static of rlsf's unused global source.
#[repr(C, align(8))]
pub struct pthread_mutex_t {
    _opaque: [u8; 48],
}

pub const PTHREAD_MUTEX_INITIALIZER: pthread_mutex_t = pthread_mutex_t { _opaque: [0; 48] };

extern "C" {
    pub fn pthread_mutex_lock(m: *mut pthread_mutex_t) -> c_int;
    pub fn pthread_mutex_unlock(m: *mut pthread_mutex_t) -> c_int;
    pub fn sysconf(name: c_int) -> c_long;
    pub fn abort() -> !;
    pub fn mmap(addr: *mut c_void, len: size_t, prot: c_int, flags: c_int, fd: c_int, off: off_t) -> *mut c_void;
    pub fn mremap(addr: *mut c_void, len: size_t, new_len: size_t, flags: c_int, ...) -> *mut c_void;
    pub fn munmap(addr: *mut c_void, len: size_t) -> c_int;
}

//! Thread identity without compiler TLS: the thread pointer.
//!
//! C libraries (glibc, musl), `origin` and the `rt` runtime give every
//! thread a thread pointer of its own: `%fs` base on x86_64, `%gs` base on
//! i686, `tpidr_el0` on aarch64, `tp` on riscv64, `TPIDRURO` on armv7. It
//! is unique per live thread, so it can name a thread's heap. It is never trusted blindly:
//!
//! - aarch64, riscv64, armv7 (`TPIDRURO`, readable in every process): the
//!   register is read as it is; 0 means none.
//! - x86_64: the pointer is read as `%fs:0` (the TLS ABI keeps the thread
//!   block's own address there), which faults if `%fs` base is 0 — as in a
//!   `-nostartfiles` program that never set one. So once per process, before
//!   the first read, the base is asked of the kernel (`arch_prctl`) and the
//!   self-pointer at it checked; if either fails (no base, a base without
//!   the convention, `arch_prctl` refused by a seccomp filter) the process
//!   has no identity.
//! - i686: the same, with `%gs:0`: `%gs` must hold a GDT selector whose
//!   descriptor (`get_thread_area`) has a mapped base holding its own
//!   address (glibc, musl and `rt` set one up with `set_thread_area`).
//! - Miri and other architectures: none.

#[cfg(all(not(miri), any(target_arch = "x86_64", target_arch = "x86")))]
use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// The calling thread's thread pointer where it can be trusted, else 0.
#[inline(always)]
pub fn thread_pointer() -> usize {
    #[cfg(all(not(miri), target_arch = "x86_64"))]
    {
        if TRUST.load(Relaxed) == YES {
            let tp: usize;
            // SAFETY: the process has a `%fs` base whose first word is its
            // own address (checked once in `decide`); reading has no effect.
            unsafe { core::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags)) };
            tp
        } else {
            slow()
        }
    }
    #[cfg(all(not(miri), target_arch = "x86"))]
    {
        if TRUST.load(Relaxed) == YES {
            let tp: usize;
            // SAFETY: `%gs` selects a descriptor whose base's first word is
            // its own address (checked once in `decide`); reading has no effect.
            unsafe { core::arch::asm!("mov {}, gs:0", out(reg) tp, options(nostack, readonly, preserves_flags)) };
            tp
        } else {
            slow()
        }
    }
    #[cfg(all(not(miri), target_arch = "arm"))]
    {
        let tp: usize;
        // SAFETY: reads the thread pointer register (TPIDRURO); no side effect.
        unsafe {
            core::arch::asm!("mrc p15, 0, {}, c13, c0, 3", out(reg) tp, options(nomem, nostack, preserves_flags))
        };
        tp & !3
    }
    #[cfg(all(not(miri), target_arch = "aarch64"))]
    {
        let tp: usize;
        // SAFETY: reads the thread pointer register; no side effect.
        unsafe { core::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nomem, nostack, preserves_flags)) };
        tp & !3
    }
    #[cfg(all(not(miri), target_arch = "riscv64"))]
    {
        let tp: usize;
        // SAFETY: reads the thread pointer register; no side effect.
        unsafe { core::arch::asm!("mv {}, tp", out(reg) tp, options(nomem, nostack, preserves_flags)) };
        tp & !3
    }
    #[cfg(not(all(
        not(miri),
        any(
            target_arch = "x86_64",
            target_arch = "aarch64",
            target_arch = "riscv64",
            target_arch = "x86",
            target_arch = "arm"
        )
    )))]
    {
        0
    }
}

/// [`thread_pointer`] where that costs a few instructions, else 0: on
/// x86_64 before the once-per-process decision, and where `%fs` is not to
/// be trusted (the caller then asks [`thread_pointer`] on a slow path).
#[inline(always)]
pub fn thread_pointer_fast() -> usize {
    #[cfg(all(not(miri), target_arch = "x86_64"))]
    {
        if TRUST.load(Relaxed) == YES {
            let tp: usize;
            // SAFETY: as in `thread_pointer`.
            unsafe { core::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags)) };
            tp
        } else {
            0
        }
    }
    #[cfg(not(all(not(miri), target_arch = "x86_64")))]
    {
        thread_pointer()
    }
}

#[cfg(all(not(miri), any(target_arch = "x86_64", target_arch = "x86")))]
const UNDECIDED: u8 = 0;
#[cfg(all(not(miri), any(target_arch = "x86_64", target_arch = "x86")))]
const YES: u8 = 1;
#[cfg(all(not(miri), any(target_arch = "x86_64", target_arch = "x86")))]
const NO: u8 = 2;

/// Whether `%fs:0` may be read: undecided, yes or no.
#[cfg(all(not(miri), any(target_arch = "x86_64", target_arch = "x86")))]
static TRUST: AtomicU8 = AtomicU8::new(UNDECIDED);

#[cfg(all(not(miri), any(target_arch = "x86_64", target_arch = "x86")))]
#[cold]
#[inline(never)]
fn slow() -> usize {
    if TRUST.load(Relaxed) == UNDECIDED {
        TRUST.store(decide(), Relaxed);
    }
    if TRUST.load(Relaxed) == YES {
        thread_pointer()
    } else {
        0
    }
}

#[cfg(all(not(miri), any(target_arch = "x86_64", target_arch = "x86")))]
fn decide() -> u8 {
    #[cfg(target_arch = "x86_64")]
    let base = crate::sys::fs_base();
    #[cfg(target_arch = "x86")]
    let base = crate::sys::gs_base();
    let Ok(base) = base else { return NO };
    if base == 0 || !base.is_multiple_of(core::mem::size_of::<usize>()) {
        return NO;
    }
    // The base must be mapped before it is read: madvise(MADV_NORMAL)
    // changes nothing and fails on a hole.
    let page = crate::os::page_size();
    // SAFETY: MADV_NORMAL has no effect on the contents.
    if unsafe { crate::sys::madvise(base & !(page - 1), page, crate::sys::MADV_NORMAL) }.is_err() {
        return NO;
    }
    // SAFETY: the page is mapped; reading a word of it has no effect.
    let self_pointer = unsafe { core::ptr::with_exposed_provenance::<usize>(base).read_volatile() };
    if self_pointer == base {
        YES
    } else {
        NO
    }
}

/// Forgets the decision (tests of the negative cases change `%fs` base).
#[doc(hidden)]
pub fn reset_for_tests() {
    #[cfg(all(not(miri), any(target_arch = "x86_64", target_arch = "x86")))]
    TRUST.store(UNDECIDED, Relaxed);
}

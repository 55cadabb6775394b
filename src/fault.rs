//! Misuse that can be detected stops the process with a one-line message.
//!
//! The checks are O(1) and always on. The message goes to stderr with
//! write(2) (no allocation, no formatting machinery), then the process
//! aborts: SIGABRT, or exit status 134 if SIGABRT is blocked or ignored.

/// Whether the O(1) misuse checks are compiled in: always, except with the
/// `no-misuse-checks` feature, which exists only to measure what the checks
/// cost (see BENCHMARKS.md) and must not be used otherwise.
pub const CHECKS: bool = !cfg!(feature = "no-misuse-checks");

/// A check word from an 8-character tag: the tag itself on 64-bit targets,
/// its two halves xored on 32-bit ones. (Truncating would keep only the
/// last four characters, and "LIVEnolc" and "FREEnolc" would then be the
/// same word: a freed block would still look live.)
pub(crate) const fn magic(tag: u64) -> usize {
    if usize::BITS >= 64 {
        tag as usize
    } else {
        (tag ^ (tag >> 32)) as usize
    }
}

/// The golden-ratio multiplier of Fibonacci hashing for the word size
/// (`2^64 / phi` or `2^32 / phi`, odd).
pub(crate) const GOLDEN: usize = if usize::BITS >= 64 {
    0x9e37_79b9_7f4a_7c15u64 as usize
} else {
    0x9e37_79b9
};

/// What went wrong.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// A block was freed twice.
    DoubleFree,
    /// A pointer the allocator never returned was freed or reallocated.
    InvalidPointer,
    /// A block was freed (or reallocated) with a layout of another size class or tier.
    WrongLayout,
    /// An internal invariant does not hold (heap metadata overwritten).
    Corrupt(&'static str),
}

/// The entry point a fault was detected in, named in the message as glibc
/// does (`free(): invalid pointer`). The C names carry `()`, the Rust ones
/// do not. Callers pass a constant down to the checks: free on the hot path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Call {
    /// `GlobalAlloc::dealloc`.
    Dealloc,
    /// `GlobalAlloc::realloc`.
    Realloc,
    /// [`NolibcAlloc::usable_size`](crate::NolibcAlloc::usable_size).
    UsableSize,
    /// C's `free` ([`NolibcAlloc::free_unsized`](crate::NolibcAlloc::free_unsized)).
    CFree,
    /// C's `realloc` ([`NolibcAlloc::realloc_unsized`](crate::NolibcAlloc::realloc_unsized)).
    CRealloc,
    /// C's `malloc_usable_size`
    /// ([`NolibcAlloc::usable_size_unsized`](crate::NolibcAlloc::usable_size_unsized)).
    CUsableSize,
}

impl Call {
    /// The name in the message: `dealloc`, `realloc`, `usable_size`,
    /// `free()`, `realloc()`, `malloc_usable_size()`.
    pub const fn name(self) -> &'static str {
        match self {
            Call::Dealloc => "dealloc",
            Call::Realloc => "realloc",
            Call::UsableSize => "usable_size",
            Call::CFree => "free()",
            Call::CRealloc => "realloc()",
            Call::CUsableSize => "malloc_usable_size()",
        }
    }
}

/// Writes `nolibc-alloc: <call>: <fault> 0x<addr>` to stderr and aborts.
#[cold]
#[inline(never)]
pub fn fault_in(call: Call, kind: Fault, addr: usize) -> ! {
    report(Some(call), kind, addr)
}

/// [`fault_in`] of [`Fault::InvalidPointer`]: two arguments in registers,
/// so that the hot paths that may call it need no stack frame.
#[cold]
#[inline(never)]
pub fn invalid_pointer(call: Call, addr: usize) -> ! {
    report(Some(call), Fault::InvalidPointer, addr)
}

/// [`fault_in`] of [`Fault::DoubleFree`] (see [`invalid_pointer`]).
#[cold]
#[inline(never)]
pub fn double_free(call: Call, addr: usize) -> ! {
    report(Some(call), Fault::DoubleFree, addr)
}

/// Writes `nolibc-alloc: <fault> 0x<addr>` to stderr and aborts: for faults
/// found outside a call that frees (validation, a failed system call).
#[cold]
#[inline(never)]
pub fn fault(kind: Fault, addr: usize) -> ! {
    report(None, kind, addr)
}

#[cold]
#[inline(never)]
fn report(call: Option<Call>, kind: Fault, addr: usize) -> ! {
    let mut buf = [0u8; 160];
    let mut len = 0;
    // Byte by byte with `get_mut`: no bounds-check panic (and its formatted
    // message) linked into every program; a message too long is cut.
    let mut put = |bytes: &[u8]| {
        for &b in bytes {
            if let Some(slot) = buf.get_mut(len) {
                *slot = b;
                len += 1;
            }
        }
    };
    put(b"nolibc-alloc: ");
    if let Some(call) = call {
        put(call.name().as_bytes());
        put(b": ");
    }
    match kind {
        Fault::DoubleFree => put(b"double free of "),
        Fault::InvalidPointer => put(b"invalid pointer "),
        Fault::WrongLayout => put(b"wrong layout for "),
        Fault::Corrupt(what) => {
            put(b"heap corrupted: ");
            put(what.as_bytes());
            put(b" ");
        }
    }
    // Every digit of the word: 16 on 64-bit targets, 8 on 32-bit ones.
    const DIGITS: usize = usize::BITS as usize / 4;
    let mut hex = [0u8; 2 + DIGITS];
    hex[0] = b'0';
    hex[1] = b'x';
    for (i, h) in hex[2..].iter_mut().enumerate() {
        let nibble = (addr >> (4 * (DIGITS - 1 - i))) & 0xf;
        *h = b"0123456789abcdef"[nibble];
    }
    put(&hex);
    put(b"\n");
    abort_with(buf.get(..len).unwrap_or_default())
}

#[cfg(not(test))]
fn abort_with(msg: &[u8]) -> ! {
    let _ = crate::sys::write(2, msg);
    crate::sys::abort()
}

// Unit tests run the core directly (not as the global allocator): a fault
// panics there so that `#[should_panic]` can check it, also under Miri.
#[cfg(test)]
fn abort_with(msg: &[u8]) -> ! {
    panic!("{}", core::str::from_utf8(msg).unwrap_or("nolibc-alloc: fault"))
}

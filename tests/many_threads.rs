//! 10,000 short-lived threads, in a test binary of its own: it measures the
//! process's peak RSS, which tests running beside it would raise.

use std::alloc::{GlobalAlloc, Layout};

use nolibc_alloc::NolibcAlloc;

#[global_allocator]
static GLOBAL: NolibcAlloc = NolibcAlloc::new();

/// Peak resident set of the process (`VmHWM`), in KiB.
fn peak_rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 10,000 short-lived threads in waves of 8, each allocating a few hundred
/// KiB, freeing half and handing the rest to the next wave: the heaps of
/// ended threads are reused (same thread pointer) or adopted, so memory
/// stays bounded. Bound: the peak RSS grows by less than 64 MiB over the
/// first wave's (one wave holds about 8 x 256 KiB live; without reuse, 10,000
/// heaps' runs would need gigabytes).
#[test]
fn ten_thousand_threads_stay_bounded() {
    const WAVES: usize = 1250;
    const WAVE: usize = 8;
    let l = Layout::from_size_align(512, 16).unwrap();
    let mut handed: Vec<usize> = Vec::new();
    let mut first_wave_rss = 0;
    for wave in 0..WAVES {
        let take = std::mem::take(&mut handed);
        let chunks: Vec<Vec<usize>> = (0..WAVE)
            .map(|i| take.iter().skip(i).step_by(WAVE).copied().collect())
            .collect();
        let results: Vec<Vec<usize>> = std::thread::scope(|s| {
            let hs: Vec<_> = chunks
                .into_iter()
                .map(|old| {
                    s.spawn(move || {
                        for p in old {
                            // SAFETY: a live block of layout `l` handed over by the last wave.
                            unsafe { GLOBAL.dealloc(p as *mut u8, l) };
                        }
                        let mut mine: Vec<usize> = (0..512)
                            .map(|_| {
                                // SAFETY: non-zero layout.
                                let p = unsafe { GLOBAL.alloc(l) };
                                assert!(!p.is_null());
                                // SAFETY: a fresh block of 512 bytes.
                                unsafe { p.write_bytes(0x5a, 512) };
                                p as usize
                            })
                            .collect();
                        for p in mine.drain(..256) {
                            // SAFETY: allocated above, freed once.
                            unsafe { GLOBAL.dealloc(p as *mut u8, l) };
                        }
                        mine
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        handed = results.into_iter().flatten().collect();
        if wave == 0 {
            first_wave_rss = peak_rss_kib();
        }
    }
    for p in handed {
        // SAFETY: live blocks of layout `l`.
        unsafe { GLOBAL.dealloc(p as *mut u8, l) };
    }
    let grown = peak_rss_kib().saturating_sub(first_wave_rss);
    let claimed = GLOBAL.heaps_claimed();
    eprintln!(
        "threads: 10000 threads in waves of 8: peak RSS grew {grown} KiB after the first wave, {claimed} heaps claimed"
    );
    assert!(grown < 64 << 10, "peak RSS grew by {grown} KiB over 10,000 threads");
    // The heaps of ended threads are found again (the C library reuses
    // thread blocks) or adopted, not left behind while the table fills.
    assert!(claimed <= 3 * WAVE, "{claimed} heaps claimed by at most 8 live threads");
}

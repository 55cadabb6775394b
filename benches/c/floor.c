/* floor-C: the C twin of benches/compare/floor.rs, preloaded into the glibc
 * driver (LD_PRELOAD) so the C workloads run with an allocator that does as
 * little as a correct one can; the driver's time on it is the workload's own
 * work. Built by the bench:
 *
 *   gcc -O2 -shared -fPIC -o libfloor.so floor.c
 *
 * The same algorithm as floor.rs (its module docs say why): one reserved
 * region, one range of SPAN bytes per class (class c: blocks of 16 c bytes,
 * up to 4 KiB), the first PREFAULT bytes of each written at load time (a
 * constructor), before the driver starts its clock; per thread and class a
 * LIFO list of the blocks the thread freed and a bump pointer into a 16 KiB
 * piece; free pushes onto the freeing thread's list. With FLOOR_RING=1 in the
 * environment (prodcons, prodcons4) each thread allocates from a 1.5 MiB
 * ring and free does nothing (the driver's queue holds 256 blocks).
 * The differences from floor.rs: free has no size, so the class comes
 * from the address (offset in the region ÷ SPAN); malloc and free are
 * reached through the PLT, as every preloaded allocator is. Blocks over 4 KiB (the
 * C library's own, none of the workloads') get a mapping of their own with
 * the size in the page before them. */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define GRAIN 16u
#define MAX_SIZE 4096u
#define CLASSES (MAX_SIZE / GRAIN + 1)
#define SPAN_SHIFT 28
#define SPAN (1ull << SPAN_SHIFT)
#define PIECE (16u << 10)
#define PREFAULT (1u << 20)
#define RING_BYTES (3u << 19)
#define RINGS 16u
#define REGION (CLASSES * SPAN + RINGS * (uint64_t)RING_BYTES)
#define PAGE 4096u

#define EXPORT __attribute__((visibility("default")))

static uintptr_t base;
static int ring_mode;
static uint64_t next_off[CLASSES]; /* entry 0 counts the rings */

struct heap {
    void *free[CLASSES];
    uintptr_t cur[CLASSES], end[CLASSES];
    uintptr_t ring, ring_off;
};
static __thread struct heap heap __attribute__((tls_model("initial-exec")));

/* At load time, so that the page faults are not in the driver's timing. */
__attribute__((constructor, cold, noinline)) static void init(void) {
    static int lock;
    while (__atomic_exchange_n(&lock, 1, __ATOMIC_ACQUIRE)) {
    }
    if (!__atomic_load_n(&base, __ATOMIC_RELAXED)) {
        void *p = mmap(0, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) abort();
        uintptr_t b = (uintptr_t)p;
        const char *e = getenv("FLOOR_RING");
        ring_mode = e && e[0] == '1';
        if (ring_mode) {
            for (uint64_t off = 0; off < RINGS * (uint64_t)RING_BYTES; off += PAGE)
                *(volatile char *)(b + CLASSES * SPAN + off) = 0;
        } else {
            for (unsigned c = 1; c < CLASSES; c++)
                for (uint64_t off = 0; off < PREFAULT; off += PAGE) *(volatile char *)(b + c * SPAN + off) = 0;
        }
        __atomic_store_n(&base, b, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&lock, 0, __ATOMIC_RELEASE);
}

/* The class of (size, align), or 0 for a block of its own mapping. */
static inline unsigned class_of(size_t size, size_t align) {
    if (align < GRAIN) align = GRAIN;
    if (align > MAX_SIZE || size > MAX_SIZE) return 0;
    size_t rounded = ((size ? size : 1) + align - 1) & ~(align - 1);
    return rounded <= MAX_SIZE ? (unsigned)(rounded / GRAIN) : 0;
}

__attribute__((cold, noinline)) static void *new_piece(struct heap *h, unsigned c) {
    uint64_t off = __atomic_fetch_add(&next_off[c], PIECE, __ATOMIC_RELAXED);
    if (off + PIECE > SPAN) return NULL;
    uintptr_t start = base + c * SPAN + off;
    h->cur[c] = start + c * GRAIN;
    h->end[c] = start + PIECE;
    return (void *)start;
}

__attribute__((cold, noinline)) static int new_ring(struct heap *h) {
    uint64_t k = __atomic_fetch_add(&next_off[0], 1, __ATOMIC_RELAXED);
    if (k >= RINGS) return 0;
    h->ring = base + CLASSES * SPAN + k * RING_BYTES;
    h->ring_off = 0;
    return 1;
}

__attribute__((cold, noinline)) static void *big_alloc(size_t size, size_t align) {
    if (align > PAGE || size > ((size_t)-1) / 2) return NULL;
    size_t len = (size + 2 * PAGE - 1) & ~(size_t)(PAGE - 1);
    void *p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    *(size_t *)p = len;
    *((size_t *)p + 1) = size;
    return (char *)p + PAGE;
}

static inline void *floor_alloc(size_t size, size_t align) {
    if (__builtin_expect(!base, 0)) init();
    unsigned c = class_of(size, align);
    if (__builtin_expect(!c, 0)) return big_alloc(size, align);
    struct heap *h = &heap;
    if (ring_mode) {
        if (!h->ring && !new_ring(h)) return NULL;
        size_t a = align < GRAIN ? GRAIN : align;
        uintptr_t off = (h->ring_off + a - 1) & ~(uintptr_t)(a - 1);
        if (off + c * GRAIN > RING_BYTES) off = 0;
        h->ring_off = off + c * GRAIN;
        return (void *)(h->ring + off);
    }
    void *p = h->free[c];
    if (p) {
        h->free[c] = *(void **)p;
        return p;
    }
    uintptr_t cur = h->cur[c];
    if (cur + c * GRAIN <= h->end[c]) {
        h->cur[c] = cur + c * GRAIN;
        return (void *)cur;
    }
    return new_piece(h, c);
}

/* The usable size of a block (for realloc). */
static size_t block_size(void *p) {
    uintptr_t a = (uintptr_t)p;
    if (a >= base && a < base + CLASSES * SPAN) return (size_t)((a - base) >> SPAN_SHIFT) * GRAIN;
    if (a >= base && a < base + REGION) return RING_BYTES - (a - base - CLASSES * SPAN) % RING_BYTES;
    return *((size_t *)(a - PAGE) + 1);
}

EXPORT void free(void *p) {
    if (!p) return;
    uintptr_t a = (uintptr_t)p;
    if (a - base < CLASSES * SPAN) {
        if (ring_mode) return;
        unsigned c = (unsigned)((a - base) >> SPAN_SHIFT);
        struct heap *h = &heap;
        *(void **)p = h->free[c];
        h->free[c] = p;
        return;
    }
    if (a - base < REGION) return; /* a ring's block */
    void *m = (void *)(a - PAGE);
    munmap(m, *(size_t *)m);
}

EXPORT void *malloc(size_t n) {
    void *p = floor_alloc(n, GRAIN);
    if (!p) errno = ENOMEM;
    return p;
}

EXPORT void *calloc(size_t n, size_t m) {
    size_t t;
    if (__builtin_mul_overflow(n, m, &t)) {
        errno = ENOMEM;
        return NULL;
    }
    /* floor_alloc, not malloc: gcc turns malloc + memset 0 into a call to calloc. */
    void *p = floor_alloc(t, GRAIN);
    if (p) memset(p, 0, t);
    else errno = ENOMEM;
    return p;
}

EXPORT void *realloc(void *old, size_t n) {
    if (!old) return malloc(n);
    void *p = malloc(n);
    if (!p) return NULL;
    size_t have = block_size(old);
    memcpy(p, old, have < n ? have : n);
    free(old);
    return p;
}

EXPORT int posix_memalign(void **out, size_t align, size_t n) {
    if (align < sizeof(void *) || (align & (align - 1))) return EINVAL;
    void *p = floor_alloc(n, align);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

EXPORT void *aligned_alloc(size_t align, size_t n) {
    void *p = NULL;
    int e = posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, n);
    if (e) errno = e;
    return p;
}

EXPORT void *memalign(size_t align, size_t n) { return aligned_alloc(align, n); }
EXPORT void *valloc(size_t n) { return aligned_alloc(PAGE, n); }
EXPORT void *pvalloc(size_t n) { return aligned_alloc(PAGE, (n + PAGE - 1) & ~(size_t)(PAGE - 1)); }
EXPORT size_t malloc_usable_size(void *p) { return p ? block_size(p) : 0; }

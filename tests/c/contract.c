/* The C malloc contract, checked against nolibc-alloc's C ABI
 * (src/c_abi.rs). Built and run by tests/c_abi.rs three ways:
 *
 *   gcc -nostdlib -static -DNOLIBC contract.c libnolibc_alloc_c.a   (no libc; the
 *       `rt` runtime's _start calls __nolibc_alloc_main; no threads)
 *   musl-gcc -static contract.c libnolibc_alloc_c.a                  (replaces musl's malloc)
 *   gcc contract.c -pthread, run with LD_PRELOAD=libnolibc_alloc_c.so (glibc)
 *
 * Prints `usable: A B C` (malloc_usable_size of malloc(1), (17), (129): tells
 * which allocator answered), then `contract: ok`; on a failure prints
 * `contract: FAIL line N: what (a, b)` and exits 1.
 *
 * Modes (libc builds only): `contract usable` prints the usable line only;
 * `contract stats` calls malloc_stats() with 100 blocks of 1000 bytes live;
 * `contract double-free`, `realloc-freed`, `usable-inside` misuse the
 * allocator (it must abort).
 *
 * Compile with -fno-builtin: the compiler must not fold malloc/free pairs.
 */
#include <stddef.h>
#include <stdint.h>

#ifdef NOLIBC
void *malloc(size_t);
void *calloc(size_t, size_t);
void *realloc(void *, size_t);
void free(void *);
void *memset(void *, int, size_t);
int *__errno_location(void);
#define errno (*__errno_location())
#define EINVAL 22
#define ENOMEM 12
#define SIZE_MAX_ ((size_t)-1)

static long sys3(long n, long a, long b, long c) {
    long ret;
#if defined(__x86_64__)
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    ret = x0;
#elif defined(__riscv) && __riscv_xlen == 64
    register long a7 __asm__("a7") = n;
    register long a0 __asm__("a0") = a;
    register long a1 __asm__("a1") = b;
    register long a2 __asm__("a2") = c;
    __asm__ volatile("ecall" : "+r"(a0) : "r"(a7), "r"(a1), "r"(a2) : "memory");
    ret = a0;
#elif defined(__i386__)
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(n), "b"(a), "c"(b), "d"(c) : "memory");
#elif defined(__arm__)
    register long r7 __asm__("r7") = n;
    register long r0 __asm__("r0") = a;
    register long r1 __asm__("r1") = b;
    register long r2 __asm__("r2") = c;
    __asm__ volatile("svc 0" : "+r"(r0) : "r"(r7), "r"(r1), "r"(r2) : "memory");
    ret = r0;
#else
#error "NOLIBC: add the syscall instruction of this architecture"
#endif
    return ret;
}
#if defined(__x86_64__)
enum { SYS_WRITE = 1, SYS_BRK = 12, SYS_EXIT_GROUP = 231 };
#elif defined(__i386__)
enum { SYS_WRITE = 4, SYS_BRK = 45, SYS_EXIT_GROUP = 252 };
#elif defined(__arm__)
enum { SYS_WRITE = 4, SYS_BRK = 45, SYS_EXIT_GROUP = 248 };
#else
enum { SYS_WRITE = 64, SYS_BRK = 214, SYS_EXIT_GROUP = 94 };
#endif
static void out(const char *s, size_t n) { sys3(SYS_WRITE, 1, (long)s, (long)n); }
static uintptr_t current_break(void) { return (uintptr_t)sys3(SYS_BRK, 0, 0, 0); }
static void die(int code) {
    for (;;) sys3(SYS_EXIT_GROUP, code, 0, 0);
}
/* The runtime's AT_PAGESZ is not visible from C; the smallest page (valloc
 * and pvalloc results are checked against it, so larger pages pass too). */
static size_t page_size(void) { return 4096; }
#else
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#define SIZE_MAX_ SIZE_MAX
/* The kernel's break, not the C library's cached copy. */
static uintptr_t current_break(void) { return (uintptr_t)syscall(SYS_brk, 0); }
static void out(const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(1, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}
static void die(int code) { _exit(code); }
static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }
#endif

/* Not in every libc's headers (musl lacks pvalloc): declared here. */
void *reallocarray(void *, size_t, size_t);
void *aligned_alloc(size_t, size_t);
int posix_memalign(void **, size_t, size_t);
void *memalign(size_t, size_t);
void *valloc(size_t);
void *pvalloc(size_t);
size_t malloc_usable_size(void *);

/* glibc's statistics and tuning, declared here: <malloc.h> is glibc's only
 * (and marks mallinfo deprecated). The layouts are glibc's. */
struct mallinfo2_ {
    size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
};
struct mallinfo_ {
    int arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
};
struct mallinfo2_ mallinfo2(void);
struct mallinfo_ mallinfo(void);
int malloc_trim(size_t);
void malloc_stats(void);
int mallopt(int, int);
#define M_TRIM_THRESHOLD_ (-1)
#define M_MMAP_THRESHOLD_ (-3)
#define M_MMAP_MAX_ (-4)
#define M_MXFAST_ 1

#define PTRDIFF_MAX_ ((size_t)PTRDIFF_MAX)
#if __SIZEOF_SIZE_T__ == 8
#define HUGE_ ((size_t)1 << 62) /* a valid size no kernel can map */
#define NEAR_PTRDIFF_MAX_ (PTRDIFF_MAX_ - 4096)
#else
/* 32 bits: a 32-bit process on a 64-bit kernel has 4 GiB, so any size up to
 * PTRDIFF_MAX might be mapped; these are too large once rounded up to the
 * 16-byte alignment of every block, and must fail whatever the memory. */
#define HUGE_ (PTRDIFF_MAX_ - 7)
#define NEAR_PTRDIFF_MAX_ (PTRDIFF_MAX_ - 8)
#endif
/* Half the bits of a size_t: HALF_ * HALF_ just overflows. */
#define HALF_ ((size_t)1 << (4 * sizeof(size_t)))

/* Every block is 16-aligned (check_fresh): enough for max_align_t, which is
 * 16 on x86_64, aarch64, riscv64 and i386 (glibc), 8 on arm EABI. */
_Static_assert(_Alignof(max_align_t) <= 16, "blocks are aligned to 16 bytes");

/* ---- output without stdio ------------------------------------------------ */

static size_t cstrlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}
static void puts_(const char *s) { out(s, cstrlen(s)); }
static void putu(size_t v) {
    char buf[24];
    int i = 24;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    out(buf + i, (size_t)(24 - i));
}

static void fail(int line, const char *what, size_t a, size_t b) {
    puts_("contract: FAIL line ");
    putu((size_t)line);
    puts_(": ");
    puts_(what);
    puts_(" (");
    putu(a);
    puts_(", ");
    putu(b);
    puts_(")\n");
    die(1);
}
#define CHECK(cond, what, a, b)                                  \
    do {                                                         \
        if (!(cond)) fail(__LINE__, what, (size_t)(a), (size_t)(b)); \
    } while (0)

/* ---- helpers --------------------------------------------------------------- */

static size_t PAGE;

/* Checks a fresh block: non-null, aligned to `align` (at least 16), holding
 * at least `n` bytes, all of which (the usable size) are writable. */
static void check_fresh(void *p, size_t n, size_t align, int line) {
    if (!p) fail(line, "allocation returned NULL", n, align);
    if (align < 16) align = 16;
    if ((uintptr_t)p % align) fail(line, "misaligned", (uintptr_t)p, align);
    size_t usable = malloc_usable_size(p);
    if (usable < n) fail(line, "usable size below request", usable, n);
    memset(p, 0x5c, usable);
}
#define FRESH(p, n, align) check_fresh((p), (n), (align), __LINE__)

static unsigned char pat(size_t i, unsigned seed) { return (unsigned char)(i * 7 + (i >> 8) + seed * 31 + 3); }
static void fill(void *p, size_t n, unsigned seed) {
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++) b[i] = pat(i, seed);
}
static int intact(const void *p, size_t n, unsigned seed) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != pat(i, seed)) return 0;
    return 1;
}
static int all_zero(const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i]) return 0;
    return 1;
}

/* ---- sections -------------------------------------------------------------- */

#define NSIZES 4400
static void *blocks[NSIZES];
static size_t sizes[NSIZES];

/* Every size 0..4200 and a range of larger ones, all live at once: aligned,
 * usable >= asked, and no two overlap (each keeps its own pattern). */
static void sizes_and_overlap(void) {
    static const size_t big[] = {5000,    8191,    8192,     16385,    65536,     100000,   131071,
                                 131072,  131073,  200000,   262144,   1000000,   4 << 20,  (33 << 20) + 5};
    size_t n = 0;
    for (size_t s = 0; s <= 4200; s++) sizes[n++] = s;
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) sizes[n++] = big[i];
    for (size_t i = 0; i < n; i++) {
        blocks[i] = malloc(sizes[i]);
        FRESH(blocks[i], sizes[i], 16);
        fill(blocks[i], malloc_usable_size(blocks[i]), (unsigned)i);
    }
    for (size_t i = 0; i < n; i++) CHECK(intact(blocks[i], malloc_usable_size(blocks[i]), (unsigned)i), "overlap", i, sizes[i]);
    /* Free every other one, allocate again (reuse), check everything again. */
    for (size_t i = 0; i < n; i += 2) free(blocks[i]);
    for (size_t i = 0; i < n; i += 2) {
        blocks[i] = malloc(sizes[i]);
        FRESH(blocks[i], sizes[i], 16);
        fill(blocks[i], malloc_usable_size(blocks[i]), (unsigned)i + 1000);
    }
    for (size_t i = 0; i < n; i++) {
        unsigned seed = (unsigned)i + (i % 2 ? 0 : 1000);
        CHECK(intact(blocks[i], malloc_usable_size(blocks[i]), seed), "overlap after reuse", i, sizes[i]);
    }
    for (size_t i = n; i-- > 0;) free(blocks[i]);
}

/* malloc(0) gives unique, freeable pointers; free(NULL) does nothing. */
static void zero_sizes(void) {
    enum { N = 64 };
    void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = malloc(0);
        FRESH(p[i], 0, 16);
        for (int j = 0; j < i; j++) CHECK(p[i] != p[j], "malloc(0) not unique", i, j);
    }
    for (int i = 0; i < N; i++) free(p[i]);
    free(NULL);
    CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL)", malloc_usable_size(NULL), 0);
    void *a = calloc(0, 8), *b = calloc(8, 0), *c = aligned_alloc(64, 0);
    FRESH(a, 0, 16);
    FRESH(b, 0, 16);
    FRESH(c, 0, 64);
    CHECK(a != b && b != c && a != c, "zero-size blocks not unique", (uintptr_t)a, (uintptr_t)b);
    free(a);
    free(b);
    free(c);
}

/* Impossible sizes: NULL and ENOMEM. */
static void too_big(void) {
    static const size_t huge[] = {SIZE_MAX_, SIZE_MAX_ - 15, PTRDIFF_MAX_, NEAR_PTRDIFF_MAX_, HUGE_};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        errno = 0;
        void *p = malloc(huge[i]);
        CHECK(p == NULL, "malloc of an impossible size succeeded", huge[i], 0);
        CHECK(errno == ENOMEM, "malloc failure: errno not ENOMEM", errno, huge[i]);
    }
}

/* realloc keeps min(old, new) bytes through every tier, up and down. */
static void realloc_contents(void) {
    static const size_t steps[] = {1,       17,      100,     1000,     5000,    70000,  131072, 200000,
                                   3 << 20, 5 << 20, 4 << 20, 100000,   1000,    100,    10,     1,
                                   40000,   20000,   600000,  8 << 20,  24,      0};
    size_t have = 1;
    void *p = realloc(NULL, have);
    FRESH(p, have, 16);
    fill(p, have, 7);
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        size_t next = steps[i];
        void *q = realloc(p, next);
        /* realloc(p, 0) returns a minimum-size block (src/c_abi.rs). */
        CHECK(q != NULL, "realloc failed", have, next);
        CHECK((uintptr_t)q % 16 == 0, "realloc misaligned", (uintptr_t)q, next);
        CHECK(malloc_usable_size(q) >= next, "realloc usable size", malloc_usable_size(q), next);
        CHECK(intact(q, have < next ? have : next, 7), "realloc lost contents", have, next);
        fill(q, next, 7);
        p = q;
        have = next;
    }
    free(p);

    /* A failed realloc leaves the block intact and sets ENOMEM. */
    static const size_t olds[] = {40, 3000, 300000};
    for (size_t i = 0; i < sizeof olds / sizeof olds[0]; i++) {
        p = malloc(olds[i]);
        FRESH(p, olds[i], 16);
        fill(p, olds[i], 9);
        static const size_t bad[] = {SIZE_MAX_, PTRDIFF_MAX_, HUGE_};
        for (size_t j = 0; j < sizeof bad / sizeof bad[0]; j++) {
            errno = 0;
            CHECK(realloc(p, bad[j]) == NULL, "realloc to an impossible size succeeded", olds[i], bad[j]);
            CHECK(errno == ENOMEM, "realloc failure: errno", errno, bad[j]);
            CHECK(intact(p, olds[i], 9), "failed realloc damaged the block", olds[i], bad[j]);
        }
        free(p);
    }

    /* realloc of over-aligned blocks keeps contents (and 16-byte alignment). */
    p = aligned_alloc(4096, 100);
    FRESH(p, 100, 4096);
    fill(p, 100, 3);
    p = realloc(p, 10000);
    CHECK(p && intact(p, 100, 3), "realloc of an aligned block", 100, 10000);
    free(p);
}

/* calloc zeroes, also when it reuses memory that was dirtied and freed. */
static void calloc_zeroing(void) {
    static const size_t ns[] = {1, 15, 16, 100, 1000, 4096, 20000, 131071, 131072, 200000, 1 << 20};
    for (int round = 0; round < 2; round++) {
        if (round == 1) {
            /* Freeing a large block raises the mmap threshold (as glibc's):
             * the blocks below 2 MiB then come from the medium tier. */
            void *big = malloc(2 << 20);
            FRESH(big, 2 << 20, 16);
            free(big);
        }
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
            size_t n = ns[i];
            void *dirty[4];
            for (int k = 0; k < 4; k++) {
                dirty[k] = malloc(n);
                FRESH(dirty[k], n, 16);
                memset(dirty[k], 0xa5, malloc_usable_size(dirty[k]));
            }
            for (int k = 0; k < 4; k++) free(dirty[k]);
            void *z[4];
            for (int k = 0; k < 4; k++) {
                z[k] = k % 2 ? calloc(n, 1) : calloc(n / 8 + 1, 8);
                size_t want = k % 2 ? n : (n / 8 + 1) * 8;
                CHECK(z[k] != NULL, "calloc failed", n, k);
                CHECK((uintptr_t)z[k] % 16 == 0, "calloc misaligned", (uintptr_t)z[k], n);
                CHECK(all_zero(z[k], want), "calloc not zeroed", want, round);
                memset(z[k], 0x3c, want);
            }
            for (int k = 0; k < 4; k++) free(z[k]);
        }
    }
    /* Overflowing products. */
    static const size_t pairs[][2] = {
        {SIZE_MAX_ / 2 + 1, 2}, {HALF_, HALF_}, {SIZE_MAX_, SIZE_MAX_}, {3, SIZE_MAX_ / 2}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        errno = 0;
        CHECK(calloc(pairs[i][0], pairs[i][1]) == NULL, "calloc overflow succeeded", pairs[i][0], pairs[i][1]);
        CHECK(errno == ENOMEM, "calloc overflow: errno", errno, i);
    }
    errno = 0;
    CHECK(calloc(1, HUGE_) == NULL && errno == ENOMEM, "calloc of an impossible size", errno, 0);
}

static void reallocarray_cases(void) {
    void *p = malloc(64);
    FRESH(p, 64, 16);
    fill(p, 64, 5);
    static const size_t pairs[][2] = {{SIZE_MAX_ / 4, 8}, {HALF_ * 2, HALF_ / 2}, {SIZE_MAX_, 2}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        errno = 0;
        CHECK(reallocarray(p, pairs[i][0], pairs[i][1]) == NULL, "reallocarray overflow succeeded", pairs[i][0], pairs[i][1]);
        CHECK(errno == ENOMEM, "reallocarray overflow: errno", errno, i);
        CHECK(intact(p, 64, 5), "failed reallocarray damaged the block", i, 0);
    }
    p = reallocarray(p, 100, 8);
    CHECK(p != NULL && intact(p, 64, 5), "reallocarray lost contents", 64, 800);
    CHECK(malloc_usable_size(p) >= 800, "reallocarray usable size", malloc_usable_size(p), 800);
    free(p);
    p = reallocarray(NULL, 10, 10);
    FRESH(p, 100, 16);
    free(p);
}

static void alignment_cases(void) {
    void *const sentinel = (void *)(uintptr_t)0x1234;
    void *m;
    /* posix_memalign: EINVAL for non-powers of two and for powers of two
     * below sizeof(void *); *memptr untouched. */
    static const size_t bad_pm[] = {0, 1, 2, 4, 3, 12, 24, 48, 4097, SIZE_MAX_};
    for (size_t i = 0; i < sizeof bad_pm / sizeof bad_pm[0]; i++) {
        if (bad_pm[i] % sizeof(void *) == 0 && (bad_pm[i] & (bad_pm[i] - 1)) == 0 && bad_pm[i]) continue;
        m = sentinel;
        int r = posix_memalign(&m, bad_pm[i], 10);
        CHECK(r == EINVAL, "posix_memalign: bad alignment not EINVAL", bad_pm[i], r);
        CHECK(m == sentinel, "posix_memalign wrote *memptr on failure", bad_pm[i], 0);
    }
    m = sentinel;
    CHECK(posix_memalign(&m, 64, HUGE_) == ENOMEM && m == sentinel, "posix_memalign ENOMEM", 64, 0);
    m = sentinel;
    CHECK(posix_memalign(&m, 4096, SIZE_MAX_) == ENOMEM && m == sentinel, "posix_memalign ENOMEM", 4096, 0);
    static const size_t ns[] = {0, 1, 100, 5000, 200000};
    for (size_t a = sizeof(void *); a <= ((size_t)1 << 21); a *= 2) {
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
            m = sentinel;
            int r = posix_memalign(&m, a, ns[i]);
            CHECK(r == 0, "posix_memalign failed", a, ns[i]);
            FRESH(m, ns[i], a);
            free(m);
        }
    }

    /* aligned_alloc: the alignment must be a power of two (EINVAL); any size. */
    static const size_t bad_aa[] = {0, 3, 48, 100, SIZE_MAX_};
    for (size_t i = 0; i < sizeof bad_aa / sizeof bad_aa[0]; i++) {
        errno = 0;
        CHECK(aligned_alloc(bad_aa[i], 64) == NULL, "aligned_alloc: bad alignment accepted", bad_aa[i], 0);
        CHECK(errno == EINVAL, "aligned_alloc: bad alignment errno", errno, bad_aa[i]);
    }
    static const size_t odd[] = {1, 3, 100, 4097, 150000};
    for (size_t a = 1; a <= ((size_t)1 << 21); a *= 2) {
        for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
            void *p = aligned_alloc(a, odd[i]);
            FRESH(p, odd[i], a);
            free(p);
        }
    }
    errno = 0;
    CHECK(aligned_alloc(64, HUGE_) == NULL && errno == ENOMEM, "aligned_alloc ENOMEM", errno, 0);

    /* memalign rounds a non-power-of-two alignment up. */
    void *p = memalign(48, 100);
    FRESH(p, 100, 64);
    free(p);
    p = memalign(4096, 1);
    FRESH(p, 1, 4096);
    free(p);
    errno = 0;
    CHECK(memalign(SIZE_MAX_, 1) == NULL && errno == EINVAL, "memalign impossible alignment", errno, 0);

    /* valloc / pvalloc: page-aligned; pvalloc rounds the size up to pages. */
    static const size_t vs[] = {0, 1, 5000, 300000};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        p = valloc(vs[i]);
        FRESH(p, vs[i], PAGE);
        free(p);
        p = pvalloc(vs[i]);
        size_t pages = (vs[i] + PAGE - 1) / PAGE;
        FRESH(p, (pages ? pages : 1) * PAGE, PAGE);
        free(p);
    }
    p = pvalloc(PAGE + 1);
    FRESH(p, 2 * PAGE, PAGE);
    free(p);
    errno = 0;
    CHECK(pvalloc(SIZE_MAX_ - 10) == NULL && errno == ENOMEM, "pvalloc overflow", errno, 0);
}

static void print_usable(void) {
    static const size_t ns[] = {1, 17, 129};
    puts_("usable:");
    for (size_t i = 0; i < 3; i++) {
        void *p = malloc(ns[i]);
        CHECK(p != NULL, "malloc", ns[i], 0);
        puts_(" ");
        putu(malloc_usable_size(p));
        free(p);
    }
    puts_("\n");
}

#ifndef NOLIBC
/* ---- threads: malloc/realloc/free on 4 threads, blocks handed to the next
 * thread and freed there --------------------------------------------------- */

enum { THREADS = 4, SLOTS = 64, BOX = 32, OPS = 40000 };

typedef struct {
    unsigned char *p;
    size_t n;
    unsigned seed;
} blk;

typedef struct {
    pthread_mutex_t lock;
    blk items[BOX];
    int len;
} mailbox;

static mailbox boxes[THREADS];

static uint64_t rnd(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static size_t pick_size(uint64_t *s) {
    uint64_t r = rnd(s);
    switch (r % 16) {
    case 0: return (size_t)(r >> 8) % 300000; /* medium/large */
    case 1:
    case 2: return (size_t)(r >> 8) % 20000;
    default: return (size_t)(r >> 8) % 512;
    }
}

static void verify_free(blk b, int line) {
    if (!intact(b.p, b.n, b.seed)) fail(line, "thread block damaged", b.n, b.seed);
    free(b.p);
}

static void *worker(void *arg) {
    int me = (int)(intptr_t)arg;
    uint64_t s = 0x9E3779B97F4A7C15ull * (uint64_t)(me + 1);
    blk mine[SLOTS] = {{0}};
    unsigned seed = (unsigned)me * 100000u;
    for (int op = 0; op < OPS; op++) {
        blk *b = &mine[rnd(&s) % SLOTS];
        uint64_t what = rnd(&s) % 10;
        if (b->p && what < 3) {
            verify_free(*b, __LINE__);
            b->p = NULL;
        } else if (b->p && what < 6) {
            size_t n = pick_size(&s);
            unsigned char *q = realloc(b->p, n);
            CHECK(q != NULL, "thread realloc failed", b->n, n);
            CHECK((uintptr_t)q % 16 == 0, "thread realloc misaligned", (uintptr_t)q, n);
            CHECK(intact(q, b->n < n ? b->n : n, b->seed), "thread realloc lost contents", b->n, n);
            b->p = q;
            b->n = n;
            b->seed = ++seed;
            fill(q, n, b->seed);
        } else if (b->p && what < 8) {
            /* Hand the block to the next thread, which frees it. */
            mailbox *box = &boxes[(me + 1) % THREADS];
            pthread_mutex_lock(&box->lock);
            if (box->len < BOX) {
                box->items[box->len++] = *b;
                b->p = NULL;
            }
            pthread_mutex_unlock(&box->lock);
        } else if (!b->p) {
            size_t n = pick_size(&s);
            int zeroed = what == 9;
            b->p = zeroed ? calloc(1, n) : malloc(n);
            CHECK(b->p != NULL, "thread malloc failed", n, zeroed);
            CHECK((uintptr_t)b->p % 16 == 0, "thread malloc misaligned", (uintptr_t)b->p, n);
            CHECK(malloc_usable_size(b->p) >= n, "thread usable size", malloc_usable_size(b->p), n);
            if (zeroed) CHECK(all_zero(b->p, n), "thread calloc not zeroed", n, 0);
            b->n = n;
            b->seed = ++seed;
            fill(b->p, n, b->seed);
        }
        if (op % 16 == 0) {
            mailbox *box = &boxes[me];
            blk got[BOX];
            int len;
            pthread_mutex_lock(&box->lock);
            len = box->len;
            for (int i = 0; i < len; i++) got[i] = box->items[i];
            box->len = 0;
            pthread_mutex_unlock(&box->lock);
            for (int i = 0; i < len; i++) verify_free(got[i], __LINE__);
        }
    }
    for (int i = 0; i < SLOTS; i++)
        if (mine[i].p) verify_free(mine[i], __LINE__);
    return NULL;
}

static void threads(void) {
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_mutex_init(&boxes[i].lock, NULL);
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) == 0, "pthread_create", i, 0);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < boxes[i].len; j++) verify_free(boxes[i].items[j], __LINE__);
}
#endif

/* ---- glibc's extras: malloc_trim, mallinfo2, mallinfo, mallopt ----------- */

static void mallinfo_agrees(struct mallinfo2_ m, int line) {
    if (m.fordblks != m.arena - m.uordblks || m.arena < m.uordblks) fail(line, "arena = uordblks + fordblks", m.arena, m.uordblks);
    if (m.usmblks < m.uordblks) fail(line, "usmblks (peak) >= uordblks", m.usmblks, m.uordblks);
    if (m.hblks || m.hblkhd || m.ordblks || m.smblks || m.fsmblks || m.keepcost) fail(line, "unused fields are 0", m.hblks, m.keepcost);
}

/* Run last: mallopt fixes the mmap threshold for the rest of the process. */
static void malloc_extras(void) {
    enum { N = 256, SIZE = 1000 };
    static void *p[N];
    /* Keeps the arena in use, so that freeing the burst caches its runs
     * instead of giving everything back at once. */
    void *hold = malloc(SIZE);
    CHECK(hold != NULL, "malloc", SIZE, 0);
    struct mallinfo2_ before = mallinfo2();
    mallinfo_agrees(before, __LINE__);
    for (int i = 0; i < N; i++) {
        p[i] = malloc(SIZE);
        CHECK(p[i] != NULL, "malloc", SIZE, i);
        fill(p[i], SIZE, (unsigned)i);
    }
    struct mallinfo2_ full = mallinfo2();
    struct mallinfo_ full_int = mallinfo();
    mallinfo_agrees(full, __LINE__);
    CHECK(full.uordblks >= before.uordblks + (size_t)N * SIZE, "mallinfo2 counts the blocks", full.uordblks, before.uordblks);
    CHECK(full.arena >= before.arena, "arena", full.arena, before.arena);
    CHECK((size_t)full_int.uordblks == full.uordblks && (size_t)full_int.arena == full.arena &&
              (size_t)full_int.fordblks == full.fordblks && (size_t)full_int.usmblks == full.usmblks,
          "mallinfo = mallinfo2 in ints", full_int.uordblks, full.uordblks);
    for (int i = 0; i < N; i++) {
        CHECK(intact(p[i], SIZE, (unsigned)i), "block intact", i, 0);
        free(p[i]);
    }
    struct mallinfo2_ freed = mallinfo2();
    mallinfo_agrees(freed, __LINE__);
    CHECK(freed.uordblks + (size_t)N * SIZE <= full.uordblks, "frees leave mallinfo2", freed.uordblks, full.uordblks);
    /* The burst's empty runs are cached: trimming gives them back, once. */
    CHECK(malloc_trim(0) == 1, "malloc_trim released memory", 0, 0);
    CHECK(malloc_trim(0) == 0, "a second malloc_trim has nothing to release", 0, 0);
    struct mallinfo2_ trimmed = mallinfo2();
    mallinfo_agrees(trimmed, __LINE__);
    CHECK(trimmed.arena <= freed.arena, "malloc_trim never raises arena", trimmed.arena, freed.arena);
    free(hold);

    /* mallopt: the two thresholds, nothing else. */
    size_t n = (size_t)512 << 10;
    CHECK(mallopt(M_MMAP_THRESHOLD_, 1 << 20) == 1, "mallopt(M_MMAP_THRESHOLD, 1 MiB)", 0, 0);
    void *medium = malloc(n);
    CHECK(medium != NULL, "malloc", n, 0);
    /* Below the threshold: from a region, exactly the size asked. */
    CHECK(malloc_usable_size(medium) == n, "512 KiB below a 1 MiB threshold is not mapped", malloc_usable_size(medium), n);
    CHECK(mallopt(M_MMAP_THRESHOLD_, 256 << 10) == 1, "mallopt(M_MMAP_THRESHOLD, 256 KiB)", 0, 0);
    void *mapped = malloc(n);
    CHECK(mapped != NULL, "malloc", n, 0);
    /* A mapping of its own: page rounding shows in the usable size. */
    CHECK(malloc_usable_size(mapped) >= n + 2048, "512 KiB above a 256 KiB threshold is mapped", malloc_usable_size(mapped), n);
    free(medium);
    free(mapped);
    CHECK(mallopt(M_MMAP_THRESHOLD_, 64 << 20) == 0, "M_MMAP_THRESHOLD above 32 MiB refused", 0, 0);
#if __SIZEOF_SIZE_T__ == 4
    /* The cap is 4 MiB where words are 32 bits (MAX_MMAP_THRESHOLD_BYTES). */
    CHECK(mallopt(M_MMAP_THRESHOLD_, 8 << 20) == 0, "M_MMAP_THRESHOLD above 4 MiB refused", 0, 0);
#endif
    CHECK(mallopt(M_MMAP_THRESHOLD_, -1) == 0, "negative M_MMAP_THRESHOLD refused", 0, 0);
    CHECK(mallopt(M_TRIM_THRESHOLD_, 1 << 20) == 1, "mallopt(M_TRIM_THRESHOLD)", 0, 0);
    CHECK(mallopt(M_MXFAST_, 64) == 0, "M_MXFAST is not supported", 0, 0);
    CHECK(mallopt(M_MMAP_MAX_, 0) == 0, "M_MMAP_MAX is not supported", 0, 0);
}

static int contract(void) {
    PAGE = page_size();
    uintptr_t brk_before = current_break();
    /* Held across the check: a program that frees everything after a burst
     * gets its memory back at once (the break comes down again). */
    void *keep = malloc(24);
    CHECK(keep != NULL, "malloc(24)", 0, 0);
    print_usable();
    sizes_and_overlap();
    /* The break belongs to the allocator only where no C library shares the
     * process (src/c_abi.rs): without libc the small blocks above came from
     * it; with a libc it must not have moved. */
    uintptr_t brk_after = current_break();
    free(keep);
#ifdef NOLIBC
    CHECK(brk_after > brk_before, "the program break was not used", brk_before, brk_after);
#else
    CHECK(brk_after == brk_before, "the program break moved under a C library", brk_before, brk_after);
#endif
    zero_sizes();
    too_big();
    realloc_contents();
    calloc_zeroing();
    reallocarray_cases();
    alignment_cases();
#ifndef NOLIBC
    threads();
    puts_("threads: ok\n");
#else
    puts_("threads: skipped (no libc)\n");
#endif
    malloc_extras();
    puts_("contract: ok\n");
    return 0;
}

#ifdef NOLIBC
/* Called by the `rt` runtime's _start (src/rt.rs). */
int __nolibc_alloc_main(void) { return contract(); }
#else
static int streq(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return *a == *b;
}

int main(int argc, char **argv) {
    if (argc > 1 && streq(argv[1], "usable")) {
        print_usable();
        return 0;
    }
    /* malloc_stats() of a program holding 100 blocks of 1000 bytes. */
    if (argc > 1 && streq(argv[1], "stats")) {
        static void *p[100];
        for (int i = 0; i < 100; i++) p[i] = malloc(1000);
        malloc_stats();
        for (int i = 0; i < 100; i++) free(p[i]);
        return 0;
    }
    /* Misuse, one kind per run: the allocator must stop the process. */
    if (argc > 1 && streq(argv[1], "double-free")) {
        void *volatile p = malloc(32);
        free(p);
        free(p);
        puts_("double free not detected\n");
        return 3;
    }
    if (argc > 1 && streq(argv[1], "realloc-freed")) {
        void *volatile keep = malloc(32);
        void *volatile p = malloc(32);
        free(p);
        p = realloc(p, 64);
        puts_("realloc of a freed block not detected\n");
        free(keep);
        return 3;
    }
    if (argc > 1 && streq(argv[1], "usable-inside")) {
        char *volatile p = malloc(32);
        size_t n = malloc_usable_size(p + 8);
        puts_("malloc_usable_size inside a block not detected\n");
        return n == 0 ? 3 : 4;
    }
    return contract();
}
#endif

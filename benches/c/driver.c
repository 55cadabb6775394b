/* Replays an operation file written by benches/compare.rs against the C
 * library's malloc, so glibc's and musl's malloc (and the allocators
 * preloaded in front of glibc's) run exactly the sequence the Rust
 * allocators run; and runs the native workloads of benches/compare/native.rs
 * (the same programs, generator, seeds and tags). Built by the bench at run
 * time:
 *
 *   gcc -O2 -o driver-glibc driver.c -lpthread
 *   musl-gcc -O2 -static -o driver-musl driver.c
 *   musl-gcc -O2 -static -o driver-nolibc-alloc driver.c libnolibc_alloc_c.a
 *
 * Usage: driver STREAM0 [STREAM1 ...]        (up to 4 streams, one thread each;
 *                                            streams 2k and 2k+1 share a hand-off queue)
 *        driver server STEPS THREADS SLOTS  (threads replace blocks of a shared table)
 *        driver loop64 STEPS THREADS        (64 live blocks per thread: free one, malloc one)
 *        driver loop64base STEPS            (the same loop without malloc/free: the
 *                                            instruction-count baseline)
 *        driver none                        (start and exit: syscall baseline)
 *
 * File: header {u32 magic "NAOP", u32 slots, u64 ops}, then 16-byte records
 * {u8 kind, u8 align_log2, u16 0, u32 slot, u64 size}. The pattern (fill /
 * check) is the one in benches/compare/exec.rs. Only the replay is timed: the
 * CPU time spent reading the file is measured and subtracted. Memory for the
 * slot table and the hand-off queue comes from mmap/static storage, never
 * from malloc. Prints one line: status=... cpu_ns=... (as the Rust child),
 * and misaligned=N: blocks returned with less than the asked alignment.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { OP_ALLOC = 1, OP_FREE = 2, OP_REALLOC = 3, OP_SEND = 4, OP_RECV_FREE = 5 };
enum { ST_OK = 0, ST_OOM = 1, ST_CORRUPT = 2 };
static const char *status_names[] = {"OK", "OOM", "CORRUPT"};

#define MAGIC 0x504F414Eu
#define FULL_FILL_MAX 512u
#define TAG_STRIDE 4096u
#define TAIL_KEY 0x7A117A117A117A11ull
#define BUF_BYTES (1u << 20)
#define QUEUE_CAP 256
#define MAX_STREAMS 4
#define MAX_THREADS 64
#define SERVER_SEED 0x5E4E0000ull
#define LOOP_SEED 0x100F0000ull
#define SERVER_MIN 16u
#define SERVER_MAX 1024u
#define SERVER_DRAWS 4

typedef struct {
    unsigned char *ptr;
    uint64_t size;
    uint64_t align;
    uint64_t id;
} block;

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* splitmix64, as benches/compare/workloads.rs's Rng. */
static uint64_t rng_next(uint64_t *x) {
    *x += 0x9E3779B97F4A7C15ull;
    return mix64(*x);
}
static uint64_t rng_below(uint64_t *x, uint64_t n) { return (uint64_t)(((unsigned __int128)rng_next(x) * n) >> 64); }
static uint64_t rng_range(uint64_t *x, uint64_t lo, uint64_t hi) { return lo + rng_below(x, hi - lo + 1); }

static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static uint64_t get64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void fill(unsigned char *p, uint64_t size, uint64_t id) {
    uint64_t h = mix64(id);
    if (size <= FULL_FILL_MAX) memset(p, (unsigned char)h, size);
    for (uint64_t off = 0; off + 8 <= size; off += TAG_STRIDE) put64(p + off, h ^ off);
    put64(p + size - 8, h ^ size ^ TAIL_KEY);
}

static int check(const unsigned char *p, uint64_t size, uint64_t id) {
    uint64_t h = mix64(id);
    if (get64(p + size - 8) != (h ^ size ^ TAIL_KEY)) return 0;
    if (size <= FULL_FILL_MAX && size > 16) {
        for (uint64_t i = 8; i < size - 8; i++)
            if (p[i] != (unsigned char)h) return 0;
    }
    for (uint64_t off = 0; off + 16 <= size; off += TAG_STRIDE)
        if (get64(p + off) != (h ^ off)) return 0;
    return 1;
}

/* The producer/consumer hand-off: a bounded ring per pair of streams, no malloc. */
typedef struct {
    pthread_mutex_t m;
    pthread_cond_t not_empty, not_full;
    block items[QUEUE_CAP];
    unsigned head, count;
    int closed;
} queue;
#define QUEUE_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, {{0}}, 0, 0, 0}
static queue queues[MAX_STREAMS / 2] = {QUEUE_INIT, QUEUE_INIT};

static int q_push(queue *q, block b) {
    pthread_mutex_lock(&q->m);
    while (q->count == QUEUE_CAP && !q->closed) pthread_cond_wait(&q->not_full, &q->m);
    int ok = !q->closed;
    if (ok) {
        q->items[(q->head + q->count) % QUEUE_CAP] = b;
        q->count++;
        pthread_cond_signal(&q->not_empty);
    }
    pthread_mutex_unlock(&q->m);
    return ok;
}

static int q_pop(queue *q, block *b) {
    pthread_mutex_lock(&q->m);
    while (q->count == 0 && !q->closed) pthread_cond_wait(&q->not_empty, &q->m);
    int ok = q->count > 0;
    if (ok) {
        *b = q->items[q->head];
        q->head = (q->head + 1) % QUEUE_CAP;
        q->count--;
        pthread_cond_signal(&q->not_full);
    }
    pthread_mutex_unlock(&q->m);
    return ok;
}

static void q_close(queue *q) {
    pthread_mutex_lock(&q->m);
    q->closed = 1;
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->m);
}

static unsigned char bufs[MAX_STREAMS][BUF_BYTES];

typedef struct {
    const char *path;
    int index;
    int status;
    uint64_t ops, live, peak_live, read_ns, misaligned;
} stream;

static uint64_t clock_ns(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void fail(stream *s, int st) {
    if (st > s->status) s->status = st;
}

static void release(stream *s, block b) {
    if (!check(b.ptr, b.size, b.id)) fail(s, ST_CORRUPT);
    free(b.ptr);
    s->live -= b.size;
    s->ops++;
}

static void *replay(void *arg) {
    stream *s = arg;
    int fd = open(s->path, O_RDONLY | O_CLOEXEC);
    unsigned char hdr[16];
    uint32_t magic = 0;
    if (fd >= 0 && read(fd, hdr, 16) == 16) memcpy(&magic, hdr, 4);
    if (magic != MAGIC) {
        fprintf(stderr, "driver: cannot read %s\n", s->path);
        exit(2);
    }
    uint32_t nslots;
    memcpy(&nslots, hdr + 4, 4);
    size_t table_bytes = ((size_t)nslots + 1) * sizeof(block);
    block *slots = mmap(0, table_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (slots == MAP_FAILED) {
        fprintf(stderr, "driver: no memory for the slot table\n");
        exit(2);
    }
    uint64_t next_id = (uint64_t)s->index << 40;
    unsigned char *buf = bufs[s->index];
    queue *qp = &queues[s->index / 2];
    for (;;) {
        uint64_t t0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
        ssize_t n = read(fd, buf, BUF_BYTES);
        s->read_ns += clock_ns(CLOCK_THREAD_CPUTIME_ID) - t0;
        if (n <= 0) break;
        for (ssize_t i = 0; i + 16 <= n && s->status == ST_OK; i += 16) {
            const unsigned char *r = buf + i;
            uint32_t slot;
            memcpy(&slot, r + 4, 4);
            uint64_t size = get64(r + 8);
            block *b = &slots[slot];
            switch (r[0]) {
            case OP_ALLOC: {
                uint64_t align = 1ull << r[1];
                void *p = NULL;
                /* Only 8 is malloc's own alignment everywhere (jemalloc,
                 * tcmalloc and mimalloc return 8-byte blocks 8-aligned):
                 * larger alignments are asked for. */
                if (align <= 8) p = malloc(size);
                else if (posix_memalign(&p, align, size) != 0) p = NULL;
                s->ops++;
                if (!p) { fail(s, ST_OOM); break; }
                /* Counted, not fatal: the parent decides (a peer's misaligned
                 * block is its bug, reported beside its time; ours fail). */
                if ((uintptr_t)p % align) s->misaligned++;
                *b = (block){p, size, align, next_id++};
                fill(b->ptr, size, b->id);
                s->live += size;
                if (s->live > s->peak_live) s->peak_live = s->live;
                break;
            }
            case OP_FREE:
                if (b->ptr) release(s, *b);
                b->ptr = NULL;
                break;
            case OP_REALLOC: {
                if (!b->ptr) break;
                if (!check(b->ptr, b->size, b->id)) { fail(s, ST_CORRUPT); break; }
                unsigned char *p = realloc(b->ptr, size);
                s->ops++;
                if (!p) { fail(s, ST_OOM); break; }
                if ((uintptr_t)p % b->align) { fail(s, ST_CORRUPT); break; }
                if (size >= b->size && !check(p, b->size, b->id)) fail(s, ST_CORRUPT);
                fill(p, size, b->id);
                s->live = s->live - b->size + size;
                if (s->live > s->peak_live) s->peak_live = s->live;
                b->ptr = p;
                b->size = size;
                break;
            }
            case OP_SEND:
                if (!b->ptr) break;
                s->live -= b->size;
                if (!q_push(qp, *b)) { s->live += b->size; release(s, *b); }
                b->ptr = NULL;
                break;
            case OP_RECV_FREE: {
                block got;
                if (q_pop(qp, &got)) { s->live += got.size; release(s, got); }
                else fail(s, ST_OOM);
                break;
            }
            default:
                fprintf(stderr, "driver: bad record kind %u in %s\n", r[0], s->path);
                exit(2);
            }
        }
        if (s->status != ST_OK) break;
    }
    q_close(qp);
    close(fd);
    munmap(slots, table_bytes);
    return NULL;
}

static void rss_kb(uint64_t *rss, uint64_t *hwm) {
    static char text[8192];
    *rss = *hwm = 0;
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return;
    text[n] = 0;
    char *p = strstr(text, "VmRSS:");
    if (p) *rss = strtoull(p + 6, NULL, 10);
    p = strstr(text, "VmHWM:");
    if (p) *hwm = strtoull(p + 6, NULL, 10);
}

/* ---- Native workloads (benches/compare/native.rs has the same). ---- */

/* A server slot: 0 or ptr >> 3 | size << 45 | owner << 56. */
static uint64_t pack(void *p, uint64_t size, uint64_t owner) {
    uint64_t a = (uint64_t)(uintptr_t)p;
    if (a >= (1ull << 48) || (a & 7) || size >= (1u << 11) || owner >= 256) return 0;
    return a >> 3 | size << 45 | owner << 56;
}
static unsigned char *unpack_ptr(uint64_t v) { return (unsigned char *)(uintptr_t)((v & ((1ull << 45) - 1)) << 3); }
static uint64_t unpack_size(uint64_t v) { return (v >> 45) & 0x7FF; }
static uint64_t unpack_owner(uint64_t v) { return v >> 56; }

static void server_fill(unsigned char *p, uint64_t size, uint64_t id) {
    uint64_t h = mix64(id);
    if (size <= FULL_FILL_MAX) memset(p + 8, (unsigned char)h, size - 16);
    put64(p, id);
    put64(p + size - 8, h ^ size ^ TAIL_KEY);
}

static int server_check(const unsigned char *p, uint64_t size, uint64_t owner) {
    uint64_t id = get64(p);
    if ((id >> 40) != owner) return 0;
    uint64_t h = mix64(id);
    if (get64(p + size - 8) != (h ^ size ^ TAIL_KEY)) return 0;
    if (size <= FULL_FILL_MAX)
        for (uint64_t i = 8; i < size - 8; i++)
            if (p[i] != (unsigned char)h) return 0;
    return 1;
}

typedef struct {
    int index, status;
    uint64_t steps, ops, remote_frees;
    uint64_t *table;
    uint64_t slots;
    int base; /* loop64base: no malloc/free */
} worker;

static void server_release(worker *w, uint64_t old) {
    unsigned char *p = unpack_ptr(old);
    uint64_t size = unpack_size(old), owner = unpack_owner(old);
    if (!server_check(p, size, owner) && w->status < ST_CORRUPT) w->status = ST_CORRUPT;
    free(p);
    w->ops++;
    if (owner != (uint64_t)w->index) w->remote_frees++;
}

static void *server_thread(void *arg) {
    worker *w = arg;
    uint64_t r = SERVER_SEED + (uint64_t)w->index, next_id = (uint64_t)w->index << 40;
    for (uint64_t i = 0; i < w->steps; i++) {
        uint64_t slot = rng_below(&r, w->slots);
        for (int d = 1; d < SERVER_DRAWS; d++) {
            uint64_t v = __atomic_load_n(&w->table[slot], __ATOMIC_RELAXED);
            if (v == 0 || unpack_owner(v) != (uint64_t)w->index) break;
            slot = rng_below(&r, w->slots);
        }
        uint64_t size = rng_range(&r, SERVER_MIN, SERVER_MAX);
        unsigned char *p = malloc(size);
        w->ops++;
        if (!p) { w->status = ST_OOM; break; }
        uint64_t v = pack(p, size, (uint64_t)w->index);
        if (!v) { w->status = ST_CORRUPT; break; }
        server_fill(p, size, next_id++);
        uint64_t old = __atomic_exchange_n(&w->table[slot], v, __ATOMIC_ACQ_REL);
        if (old) server_release(w, old);
    }
    return NULL;
}

static void loop_tag(unsigned char *p, uint64_t size) {
    put64(p, size ^ TAIL_KEY);
    if (size >= 16) put64(p + size - 8, ~(size ^ TAIL_KEY));
}
static int loop_tag_ok(const unsigned char *p, uint64_t size) {
    return get64(p) == (size ^ TAIL_KEY) && (size < 16 || get64(p + size - 8) == ~(size ^ TAIL_KEY));
}

/* loop64base's stand-in for the heap: a fixed place per slot. */
static unsigned char base_pool[MAX_THREADS][64][136] __attribute__((aligned(16)));

static void *loop_thread(void *arg) {
    worker *w = arg;
    uint64_t r = LOOP_SEED + (uint64_t)w->index;
    unsigned char *p[64];
    uint64_t sz[64];
    for (int k = 0; k < 64; k++) {
        sz[k] = 8 + (rng_next(&r) & 127);
        p[k] = w->base ? base_pool[w->index][k] : malloc(sz[k]);
        w->ops++;
        if (!p[k]) { w->status = ST_OOM; return NULL; }
        loop_tag(p[k], sz[k]);
    }
    for (uint64_t i = 0; i < w->steps; i++) {
        uint64_t x = rng_next(&r);
        unsigned k = x & 63;
        if (!loop_tag_ok(p[k], sz[k])) { w->status = ST_CORRUPT; break; }
        if (!w->base) free(p[k]);
        sz[k] = 8 + ((x >> 6) & 127);
        p[k] = w->base ? base_pool[w->index][k] : malloc(sz[k]);
        w->ops += 2;
        if (!p[k]) { w->status = ST_OOM; break; }
        if ((uintptr_t)p[k] & 7) { w->status = ST_CORRUPT; break; }
        loop_tag(p[k], sz[k]);
    }
    for (int k = 0; k < 64; k++) {
        if (!p[k]) continue;
        if (!loop_tag_ok(p[k], sz[k]) && w->status < ST_CORRUPT) w->status = ST_CORRUPT;
        if (!w->base) free(p[k]);
        w->ops++;
    }
    return NULL;
}

static void rss_kb(uint64_t *rss, uint64_t *hwm);

/* Runs `threads` workers of `fn` (one: on this thread); returns the worst status. */
static int run_workers(worker *ws, int threads, void *(*fn)(void *)) {
    if (threads == 1) {
        fn(&ws[0]);
    } else {
        pthread_t t[MAX_THREADS];
        for (int i = 0; i < threads; i++)
            if (pthread_create(&t[i], NULL, fn, &ws[i]) != 0) {
                fprintf(stderr, "driver: pthread_create failed\n");
                exit(2);
            }
        for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    }
    int st = ST_OK;
    for (int i = 0; i < threads; i++)
        if (ws[i].status > st) st = ws[i].status;
    return st;
}

static uint64_t arg_u64(const char *s, const char *what) {
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end) {
        fprintf(stderr, "driver: bad %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

static int native_main(int argc, char **argv) {
    const char *mode = argv[1];
    int server = strcmp(mode, "server") == 0, base = strcmp(mode, "loop64base") == 0;
    if ((server && argc != 5) || (!server && !base && argc != 4) || (base && argc != 3)) {
        fprintf(stderr, "usage: driver server STEPS THREADS SLOTS | loop64 STEPS THREADS | loop64base STEPS\n");
        return 2;
    }
    uint64_t steps = arg_u64(argv[2], "STEPS");
    int threads = base ? 1 : (int)arg_u64(argv[3], "THREADS");
    if (threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "driver: THREADS must be 1..%d\n", MAX_THREADS);
        return 2;
    }
    uint64_t slots = server ? arg_u64(argv[4], "SLOTS") : 0;
    uint64_t *table = NULL;
    if (server) {
        if (slots == 0) return 2;
        table = mmap(0, slots * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (table == MAP_FAILED) return 2;
    }
    worker ws[MAX_THREADS];
    for (int i = 0; i < threads; i++)
        ws[i] = (worker){i, ST_OK, steps / (uint64_t)threads, 0, 0, table, slots, base};
    uint64_t rss0, hwm0, rss1, hwm1, live;
    rss_kb(&rss0, &hwm0);
    uint64_t wall0 = clock_ns(CLOCK_MONOTONIC), cpu0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    int status = run_workers(ws, threads, server ? server_thread : loop_thread);
    uint64_t ops = 0, remote = 0;
    for (int i = 0; i < threads; i++) ops += ws[i].ops, remote += ws[i].remote_frees;
    if (server) {
        /* Live at the end of the steady state (about the peak); then free all. */
        live = 0;
        for (uint64_t i = 0; i < slots; i++) live += unpack_size(table[i]);
        worker last = {-1, ST_OK, 0, 0, 0, table, slots, 0};
        for (uint64_t i = 0; i < slots; i++)
            if (table[i]) server_release(&last, table[i]), table[i] = 0;
        ops += last.ops;
        if (last.status > status) status = last.status;
    } else {
        live = (uint64_t)threads * 64 * 72;
    }
    uint64_t cpu = clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0, wall = clock_ns(CLOCK_MONOTONIC) - wall0;
    rss_kb(&rss1, &hwm1);
    printf("status=%s cpu_ns=%llu wall_ns=%llu ops=%llu peak_live_bytes=%llu rss_start_kb=%llu peak_rss_kb=%llu "
           "rss_end_kb=%llu remote_frees=%llu\n",
           status_names[status], (unsigned long long)cpu, (unsigned long long)wall, (unsigned long long)ops,
           (unsigned long long)live, (unsigned long long)rss0, (unsigned long long)hwm1, (unsigned long long)rss1,
           (unsigned long long)remote);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "server") || !strcmp(argv[1], "loop64") || !strcmp(argv[1], "loop64base")))
        return native_main(argc, argv);
    if (argc < 2 || argc > 1 + MAX_STREAMS) {
        fprintf(stderr, "usage: driver STREAM0 [STREAM1 ...] | driver server|loop64|loop64base ... | driver none\n");
        return 2;
    }
    if (strcmp(argv[1], "none") == 0) return 0;
    int n = argc - 1;
    stream st[MAX_STREAMS];
    for (int i = 0; i < n; i++) st[i] = (stream){argv[1 + i], i, ST_OK, 0, 0, 0, 0};
    uint64_t rss0, hwm0, rss1, hwm1;
    rss_kb(&rss0, &hwm0);
    uint64_t wall0 = clock_ns(CLOCK_MONOTONIC), cpu0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    if (n == 1) {
        replay(&st[0]);
    } else {
        pthread_t t[MAX_STREAMS];
        for (int i = 0; i < n; i++)
            if (pthread_create(&t[i], NULL, replay, &st[i]) != 0) {
                fprintf(stderr, "driver: pthread_create failed\n");
                return 2;
            }
        for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    }
    uint64_t cpu = clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0, wall = clock_ns(CLOCK_MONOTONIC) - wall0;
    rss_kb(&rss1, &hwm1);
    int status = ST_OK;
    uint64_t read_ns = 0, ops = 0, peak_live = 0, misaligned = 0;
    for (int i = 0; i < n; i++) {
        if (st[i].status > status) status = st[i].status;
        misaligned += st[i].misaligned;
        read_ns += st[i].read_ns;
        ops += st[i].ops;
        peak_live += st[i].peak_live;
    }
    printf("status=%s cpu_ns=%llu wall_ns=%llu ops=%llu peak_live_bytes=%llu rss_start_kb=%llu peak_rss_kb=%llu "
           "rss_end_kb=%llu misaligned=%llu\n",
           status_names[status], (unsigned long long)(cpu > read_ns ? cpu - read_ns : 0), (unsigned long long)wall,
           (unsigned long long)ops, (unsigned long long)peak_live, (unsigned long long)rss0, (unsigned long long)hwm1,
           (unsigned long long)rss1, (unsigned long long)misaligned);
    return 0;
}

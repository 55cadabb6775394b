/* Replays an operation file written by benches/compare.rs against the C
 * library's malloc, so glibc's and musl's malloc run exactly the sequence the
 * Rust allocators run. Built by the bench at run time:
 *
 *   gcc -O2 -o driver-glibc driver.c -lpthread
 *   musl-gcc -O2 -static -o driver-musl driver.c
 *   musl-gcc -O2 -static -o driver-nolibc-alloc driver.c libnolibc_alloc_c.a
 *
 * Usage: driver STREAM0 [STREAM1]   (two streams run on two threads)
 *        driver none                (start and exit: syscall baseline)
 *
 * File: header {u32 magic "NAOP", u32 slots, u64 ops}, then 16-byte records
 * {u8 kind, u8 align_log2, u16 0, u32 slot, u64 size}. The pattern (fill /
 * check) is the one in benches/compare/exec.rs. Only the replay is timed: the
 * CPU time spent reading the file is measured and subtracted. Memory for the
 * slot table and the hand-off queue comes from mmap/static storage, never
 * from malloc. Prints one line: status=... cpu_ns=... (as the Rust child).
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

/* The producer/consumer hand-off: a bounded ring, no malloc. */
static struct {
    pthread_mutex_t m;
    pthread_cond_t not_empty, not_full;
    block items[QUEUE_CAP];
    unsigned head, count;
    int closed;
} q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, {{0}}, 0, 0, 0};

static int q_push(block b) {
    pthread_mutex_lock(&q.m);
    while (q.count == QUEUE_CAP && !q.closed) pthread_cond_wait(&q.not_full, &q.m);
    int ok = !q.closed;
    if (ok) {
        q.items[(q.head + q.count) % QUEUE_CAP] = b;
        q.count++;
        pthread_cond_signal(&q.not_empty);
    }
    pthread_mutex_unlock(&q.m);
    return ok;
}

static int q_pop(block *b) {
    pthread_mutex_lock(&q.m);
    while (q.count == 0 && !q.closed) pthread_cond_wait(&q.not_empty, &q.m);
    int ok = q.count > 0;
    if (ok) {
        *b = q.items[q.head];
        q.head = (q.head + 1) % QUEUE_CAP;
        q.count--;
        pthread_cond_signal(&q.not_full);
    }
    pthread_mutex_unlock(&q.m);
    return ok;
}

static void q_close(void) {
    pthread_mutex_lock(&q.m);
    q.closed = 1;
    pthread_cond_broadcast(&q.not_empty);
    pthread_cond_broadcast(&q.not_full);
    pthread_mutex_unlock(&q.m);
}

static unsigned char bufs[2][BUF_BYTES];

typedef struct {
    const char *path;
    int index;
    int status;
    uint64_t ops, live, peak_live, read_ns;
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
                if (align <= 16) p = malloc(size);
                else if (posix_memalign(&p, align, size) != 0) p = NULL;
                s->ops++;
                if (!p) { fail(s, ST_OOM); break; }
                if ((uintptr_t)p % align) { fail(s, ST_CORRUPT); break; }
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
                if (!q_push(*b)) { s->live += b->size; release(s, *b); }
                b->ptr = NULL;
                break;
            case OP_RECV_FREE: {
                block got;
                if (q_pop(&got)) { s->live += got.size; release(s, got); }
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
    q_close();
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

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: driver STREAM0 [STREAM1] | driver none\n");
        return 2;
    }
    if (strcmp(argv[1], "none") == 0) return 0;
    int n = argc - 1;
    stream st[2] = {{argv[1], 0, ST_OK, 0, 0, 0, 0}, {n > 1 ? argv[2] : NULL, 1, ST_OK, 0, 0, 0, 0}};
    uint64_t rss0, hwm0, rss1, hwm1;
    rss_kb(&rss0, &hwm0);
    uint64_t wall0 = clock_ns(CLOCK_MONOTONIC), cpu0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    if (n == 1) {
        replay(&st[0]);
    } else {
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            if (pthread_create(&t[i], NULL, replay, &st[i]) != 0) {
                fprintf(stderr, "driver: pthread_create failed\n");
                return 2;
            }
        for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    }
    uint64_t cpu = clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0, wall = clock_ns(CLOCK_MONOTONIC) - wall0;
    rss_kb(&rss1, &hwm1);
    int status = st[0].status > st[1].status ? st[0].status : st[1].status;
    uint64_t read_ns = st[0].read_ns + st[1].read_ns;
    printf("status=%s cpu_ns=%llu wall_ns=%llu ops=%llu peak_live_bytes=%llu rss_start_kb=%llu peak_rss_kb=%llu "
           "rss_end_kb=%llu\n",
           status_names[status], (unsigned long long)(cpu > read_ns ? cpu - read_ns : 0), (unsigned long long)wall,
           (unsigned long long)(st[0].ops + st[1].ops), (unsigned long long)(st[0].peak_live + st[1].peak_live),
           (unsigned long long)rss0, (unsigned long long)hwm1, (unsigned long long)rss1);
    return 0;
}

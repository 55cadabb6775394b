/* fork while other threads are inside malloc: nolibc-alloc's fork handlers
 * (src/c_abi.rs registers them with pthread_atfork). Built and run by
 * tests/c_abi.rs three ways: glibc with libnolibc_alloc_c.so preloaded,
 * glibc linked with libnolibc_alloc_c.a, musl-gcc -static with the .a.
 *
 *   forkstress [FORKS [THREADS]]   (default 200 forks, 4 threads)
 *
 * THREADS threads churn malloc/free/realloc (the odd ones over every tier:
 * small slots, medium blocks between 128 KiB and the mmap threshold, large
 * mappings; the even ones small slots only, mostly tiny ones) and hand
 * blocks to each other through a table of slots, so that the locks of
 * every arena and of the core are held often. The main thread forks
 * FORKS / 2 times, then another thread the rest (a child whose one thread
 * is not the main thread cannot skip the arena locks). Each child frees
 * every block in the table (blocks the other threads allocated, from every
 * arena), allocates and frees over every tier, checks the contents of what
 * it frees, and _exit(0)s; the parent reaps each child and needs status 0.
 * Prints `forkstress: FORKS forks ok, usable(1) = N` (N is
 * malloc_usable_size(malloc(1)): tells which allocator answered) and exits
 * 0; on a failure prints one line and exits 1.
 *
 * Watchdog: each child sets alarm(CHILD_SECONDS) first (a hang kills it
 * with SIGALRM, signal 14: a failure); the parent sets
 * alarm(PARENT_SECONDS) before each fork, and its handler kills the child
 * and exits 2 (a hang in the parent's own fork or prepare handler).
 *
 *   forkstress bench [FORKS [THREADS]]   (default 200 forks, 4 threads)
 *
 * measures round trips (fork, child malloc+free, _exit, waitpid) while the
 * threads churn; prints `forkstress: bench N forks in S s: R forks/s`.
 *
 * Compile with -fno-builtin: the compiler must not fold malloc/free pairs.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { SLOTS = 256, LOCAL = 64, CHILD_SECONDS = 5, PARENT_SECONDS = 10 };

/* A block starts with its size and a tag, and ends with a byte from the tag. */
struct head {
    size_t size;
    uint64_t tag;
};

static _Atomic(struct head *) slots[SLOTS];
static atomic_int stop;
static atomic_long ops;
static volatile pid_t current_child;

static void die(const char *what, long a, long b) {
    char line[160];
    int n = snprintf(line, sizeof line, "forkstress: FAIL %s (%ld, %ld)\n", what, a, b);
    if (write(2, line, (size_t)n) < 0) {
        /* nothing more to do */
    }
    _exit(1);
}

static uint64_t next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Sizes over every tier: mostly slots of many classes, then blocks of the
 * core (128 KiB .. 1 MiB: medium once a freed large block has raised the
 * adaptive mmap threshold) and large mappings. With `small`, slots only,
 * mostly tiny: a thread that spends its time inside arena locks. */
static size_t pick_size(uint64_t *s, int small) {
    uint64_t r = next(s);
    if (small)
        return r % 8 ? 1 + (r >> 8) % 256 : 1 + (r >> 8) % 16384;
    switch (r % 16) {
    case 0: case 1: case 2: case 3: case 4: case 5: case 6:
        return 1 + (r >> 8) % 512;
    case 7: case 8: case 9:
        return 512 + (r >> 8) % 8192;
    case 10: case 11:
        return 8192 + (r >> 8) % (120 << 10);
    case 12: case 13: case 14:
        return (128 << 10) + (r >> 8) % (896 << 10);
    default:
        return (1 << 20) + (r >> 8) % (2 << 20);
    }
}

static void mark(struct head *h, size_t size, uint64_t tag) {
    h->size = size;
    h->tag = tag;
    ((unsigned char *)h)[size - 1] = (unsigned char)tag;
}

static void check(const struct head *h, const char *where) {
    if (h->size < sizeof *h || ((const unsigned char *)h)[h->size - 1] != (unsigned char)h->tag)
        die(where, (long)h->size, (long)h->tag);
}

static struct head *make(size_t size, uint64_t tag) {
    if (size < sizeof(struct head))
        size = sizeof(struct head);
    struct head *h = malloc(size);
    if (!h)
        die("malloc returned NULL", (long)size, 0);
    mark(h, size, tag);
    return h;
}

static struct head *grow(struct head *h, size_t size) {
    check(h, "block corrupt before realloc");
    if (size < sizeof(struct head))
        size = sizeof(struct head);
    size_t keep = h->size < size ? h->size : size;
    uint64_t tag = h->tag;
    unsigned char last = ((unsigned char *)h)[keep - 1];
    struct head *g = realloc(h, size);
    if (!g)
        die("realloc returned NULL", (long)size, 0);
    if (g->tag != tag || ((unsigned char *)g)[keep - 1] != last)
        die("realloc lost the contents", (long)keep, (long)size);
    mark(g, size, tag);
    return g;
}

static void drop(struct head *h, const char *where) {
    check(h, where);
    free(h);
}

/* Thread `arg` (1, 2, ...): the even ones churn slots only, the odd ones
 * every tier; all hand blocks to each other through `slots`. */
static void *churn(void *arg) {
    uint64_t s = 0x9e3779b97f4a7c15ull * (uintptr_t)arg + 1;
    int small = (uintptr_t)arg % 2 == 0;
    struct head *local[LOCAL] = {0};
    long n = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        uint64_t r = next(&s);
        unsigned i = (unsigned)(r >> 32);
        switch (r % 4) {
        case 0: { /* hand a block to whichever thread takes this slot next */
            struct head *h = make(pick_size(&s, small), r);
            struct head *old = atomic_exchange(&slots[i % SLOTS], h);
            if (old)
                drop(old, "handed block corrupt");
            break;
        }
        case 1: /* take one from another thread and resize it */
            {
                struct head *old = atomic_exchange(&slots[i % SLOTS], NULL);
                if (old) {
                    old = grow(old, pick_size(&s, small));
                    old = atomic_exchange(&slots[(i >> 9) % SLOTS], old);
                    if (old)
                        drop(old, "handed block corrupt");
                }
            }
            break;
        default: /* local churn: malloc, realloc, free */
            if (local[i % LOCAL]) {
                if (r & 0x100)
                    local[i % LOCAL] = grow(local[i % LOCAL], pick_size(&s, small));
                else {
                    drop(local[i % LOCAL], "local block corrupt");
                    local[i % LOCAL] = NULL;
                }
            } else {
                local[i % LOCAL] = make(pick_size(&s, small), r);
            }
        }
        n++;
    }
    for (int i = 0; i < LOCAL; i++)
        if (local[i])
            drop(local[i], "local block corrupt");
    atomic_fetch_add(&ops, n);
    return NULL;
}

/* The child: one thread now. Everything below must work. */
static void child_work(uint64_t seed) {
    uint64_t s = seed | 1;
    /* Free every block the threads had handed over: slots of every arena,
     * medium blocks of the core, large mappings. */
    for (int i = 0; i < SLOTS; i++) {
        struct head *h = atomic_exchange(&slots[i], NULL);
        if (h)
            drop(h, "child: inherited block corrupt");
    }
    /* Allocate over every tier and class, resize, free. */
    struct head *mine[96];
    for (int i = 0; i < 96; i++)
        mine[i] = make(i < 64 ? (size_t)16 << (i % 13) : pick_size(&s, 0), (uint64_t)i);
    for (int i = 0; i < 96; i += 3)
        mine[i] = grow(mine[i], pick_size(&s, 0));
    for (int i = 0; i < 96; i++)
        drop(mine[i], "child: own block corrupt");
}

static void on_alarm(int sig) {
    (void)sig;
    if (current_child > 0)
        kill(current_child, SIGKILL);
    static const char msg[] = "forkstress: FAIL the parent hung (watchdog)\n";
    if (write(2, msg, sizeof msg - 1) < 0) {
        /* nothing more to do */
    }
    _exit(2);
}

static int bench;

/* Forks `from` .. `to`: each child works and exits, the parent reaps it. */
struct range {
    long from, to;
};

static void *fork_loop(void *arg) {
    const struct range *r = arg;
    for (long f = r->from; f < r->to; f++) {
        alarm(PARENT_SECONDS);
        pid_t pid = fork();
        if (pid < 0)
            die("fork", f, 0);
        if (pid == 0) {
            signal(SIGALRM, SIG_DFL);
            alarm(CHILD_SECONDS);
            if (bench) {
                void *p = malloc(100);
                if (!p)
                    _exit(3);
                free(p);
            } else {
                child_work(0x243f6a8885a308d3ull + (uint64_t)f);
            }
            _exit(0);
        }
        current_child = pid;
        int status;
        if (waitpid(pid, &status, 0) != pid)
            die("waitpid", f, pid);
        current_child = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            die(WIFSIGNALED(status) ? "child killed by signal (14: watchdog, a hang)" : "child exit status", f,
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    }
    return NULL;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    bench = argc > 1 && strcmp(argv[1], "bench") == 0;
    int arg = bench ? 2 : 1;
    long forks = argc > arg ? atol(argv[arg]) : 200;
    long nthreads = argc > arg + 1 ? atol(argv[arg + 1]) : 4;
    if (forks < 1 || nthreads < 0 || nthreads > 64)
        die("usage: forkstress [bench] [FORKS [THREADS]]", forks, nthreads);
    signal(SIGALRM, on_alarm);

    pthread_t threads[64];
    for (long t = 0; t < nthreads; t++)
        if (pthread_create(&threads[t], NULL, churn, (void *)(t + 1)) != 0)
            die("pthread_create", t, 0);
    /* Let the threads fill the table and raise the mmap threshold. */
    usleep(20000);

    double start = now();
    /* Half the forks from the main thread, half from another one: a child
     * whose only thread is not the main thread takes every lock. */
    struct range first = {0, forks / 2}, second = {forks / 2, forks};
    fork_loop(&first);
    pthread_t forker;
    if (pthread_create(&forker, NULL, fork_loop, &second) != 0)
        die("pthread_create", 0, 0);
    pthread_join(forker, NULL);
    double took = now() - start;
    alarm(PARENT_SECONDS);

    atomic_store(&stop, 1);
    for (long t = 0; t < nthreads; t++)
        pthread_join(threads[t], NULL);
    for (int i = 0; i < SLOTS; i++) {
        struct head *h = atomic_exchange(&slots[i], NULL);
        if (h)
            drop(h, "handed block corrupt at the end");
    }
    alarm(0);
    if (bench)
        printf("forkstress: bench %ld forks in %.3f s: %.0f forks/s (%ld thread ops)\n", forks, took,
               (double)forks / took, atomic_load(&ops));
    else {
        /* Which allocator answered: malloc_usable_size(malloc(1)). */
        void *p = malloc(1);
        printf("forkstress: %ld forks ok, usable(1) = %zu\n", forks, malloc_usable_size(p));
        free(p);
    }
    return 0;
}

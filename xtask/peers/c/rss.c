/* Memory footprint at start: a handful of small blocks of different sizes
 * (each in another size class of nolibc-alloc, and of musl's mallocng),
 * every byte written. Prints the resident set and the address space from
 * /proc/self/statm before and after, in KiB:
 *   rss_before rss_after vsz_before vsz_after
 * No stdio: its own buffers would count too. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void statm(long *vsz_kib, long *rss_kib) {
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    long n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0)
        close(fd);
    *vsz_kib = *rss_kib = -1;
    if (n <= 0)
        return;
    buf[n] = 0;
    char *end;
    long page_kib = sysconf(_SC_PAGESIZE) / 1024;
    *vsz_kib = strtol(buf, &end, 10) * page_kib;
    *rss_kib = strtol(end, NULL, 10) * page_kib;
}

static char *put(char *at, long v) {
    char digits[24];
    int n = 0;
    if (v < 0) {
        *at++ = '-';
        v = -v;
    }
    do
        digits[n++] = '0' + v % 10;
    while ((v /= 10) != 0);
    while (n)
        *at++ = digits[--n];
    *at++ = ' ';
    return at;
}

int main(void) {
    static const size_t sizes[] = {8, 24, 40, 72, 136, 264, 520, 1000};
    enum { N = sizeof sizes / sizeof sizes[0] };
    void *blocks[N];
    long vsz0, rss0, vsz1, rss1;
    statm(&vsz0, &rss0);
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(sizes[i]);
        if (!blocks[i])
            return 1;
        memset(blocks[i], 0x5a, sizes[i]);
    }
    statm(&vsz1, &rss1);
    char line[128], *at = line;
    at = put(at, rss0);
    at = put(at, rss1);
    at = put(at, vsz0);
    at = put(at, vsz1);
    at[-1] = '\n';
    if (write(1, line, at - line) != at - line)
        return 1;
    for (int i = 0; i < N; i++)
        free(blocks[i]);
    return 0;
}

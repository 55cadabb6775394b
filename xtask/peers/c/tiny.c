/* `tiny` in C: malloc, realloc, free and one write(2) (what examples/tiny.rs
 * does with a Vec). Linked statically with musl's or glibc's malloc, or with
 * libnolibc_alloc_c.a in front of musl's. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    char *line = malloc(6);
    if (!line)
        return 1;
    memcpy(line, "tiny: ", 6);
    char *grown = realloc(line, 9);
    if (!grown) {
        free(line);
        return 1;
    }
    memcpy(grown + 6, "ok\n", 3);
    int ok = write(1, grown, 9) == 9;
    free(grown);
    return ok ? 0 : 1;
}

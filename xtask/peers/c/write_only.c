/* The floor of a static C program: one write(2), nothing allocated. */
#include <unistd.h>

int main(void) {
    return write(1, "tiny: ok\n", 9) == 9 ? 0 : 1;
}

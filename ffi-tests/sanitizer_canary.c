/*
 * sanitizer_canary.c: proves the sanitizer runtime `make check-asan` links is
 * live. Each mode commits one bug the runtime must report: a heap overflow
 * (ASan), a leak (LSan) and a signed overflow (UBSan). check-asan runs every
 * mode and fails unless each one exits non-zero with a sanitizer report, so a
 * build that silently lost its instrumentation cannot pass for a clean one.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Kept out of the optimiser's sight so the bugs are really executed. */
static volatile int sink;

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";

    if (strcmp(mode, "overflow") == 0) {
        char *p = malloc(8);
        if (p == NULL)
            return 2;
        p[8 + sink] = 1;
        free(p);
        return 0;
    }
    if (strcmp(mode, "leak") == 0) {
        void *volatile p = malloc(64);
        p = NULL;
        (void)p;
        return 0;
    }
    if (strcmp(mode, "ubsan") == 0) {
        volatile int big = INT_MAX;
        sink = big + 1;
        return 0;
    }
    fprintf(stderr, "usage: %s overflow|leak|ubsan\n", argv[0]);
    return 2;
}

/*
 * Benchmark: what per-block progress costs a real copy loop. A file in the
 * page cache is copied block by block into another file in the page cache
 * (pread + pwrite, both on tmpfs: /dev/shm, else $TMPDIR or /tmp, read once
 * first so no pass touches a disk), from inside a bgjob worker:
 *
 *   bgjob   bgjob_job_add_units(job, block) after every block
 *   none    the same loop with no progress call at all
 *
 * for 4 KiB and 64 KiB blocks. Figures are ns per block, medians of several
 * passes, the two loops interleaved pass by pass so drift hits both alike;
 * benches/run.py turns each pair into the overhead in percent.
 */
#include "bench.h"

#include <bgjob.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PASSES 15

struct copy {
    int src, dst;
    size_t size, block;
    bool progress;
    char *buf;
    double ns_per_block; /* out */
};

static void copy_loop(struct copy *c, bgjob_job *job)
{
    size_t blocks = 0;
    int64_t t0 = now_ns();

    for (size_t off = 0; off < c->size; off += c->block) {
        BENCH_CHECK(pread(c->src, c->buf, c->block, (off_t)off) == (ssize_t)c->block);
        BENCH_CHECK(pwrite(c->dst, c->buf, c->block, (off_t)off) == (ssize_t)c->block);
        if (c->progress)
            bgjob_job_add_units(job, c->block);
        blocks++;
    }
    c->ns_per_block = (double)(now_ns() - t0) / (double)blocks;
}

static int32_t copy_worker(void *userdata, bgjob_job *job)
{
    struct copy *c = userdata;

    if (c->progress)
        bgjob_job_set_total(job, c->size);
    copy_loop(c, job);
    return 0;
}

/* One pass in a fresh job, as a driver would run one copy. */
static double one_pass(struct copy *c)
{
    bgjob_job_options o;
    bgjob_job *job = NULL;

    bgjob_job_options_init(&o, sizeof o);
    o.name = "copy";
    BENCH_CHECK(bgjob_job_create(&o, copy_worker, c, NULL, &job) == BGJOB_RESULT_OK);
    BENCH_CHECK(bgjob_job_wait(job, -1, NULL) == BGJOB_RESULT_OK);
    bgjob_job_destroy(job);
    return c->ns_per_block;
}

/* A file of `size` bytes on tmpfs, unlinked at once (nothing is left behind
 * whatever happens); its pages stay in the page cache while it is open. */
static int scratch_file(size_t size, bool fill)
{
    const char *dirs[] = {"/dev/shm", getenv("TMPDIR"), "/tmp"};
    char path[4096];
    int fd = -1;

    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0] && fd < 0; i++) {
        if (dirs[i] == NULL)
            continue;
        snprintf(path, sizeof path, "%s/bgjob-copyloop-XXXXXX", dirs[i]);
        fd = mkstemp(path);
    }
    BENCH_CHECK(fd >= 0);
    BENCH_CHECK(unlink(path) == 0);
    if (fill) {
        char chunk[65536];
        for (size_t i = 0; i < sizeof chunk; i++)
            chunk[i] = (char)(i * 131 + 7);
        for (size_t off = 0; off < size; off += sizeof chunk)
            BENCH_CHECK(pwrite(fd, chunk, sizeof chunk, (off_t)off) == (ssize_t)sizeof chunk);
    }
    return fd;
}

int main(int argc, char **argv)
{
    static const size_t blocks[] = {4096, 65536};
    static const char *const block_names[] = {"4k", "64k"};
    bench_init(argc, argv);
    const size_t size = bench_n((size_t)32 << 20, (size_t)1 << 20);
    const size_t passes = bench_n(MAX_PASSES, 3);
    double ns[2][2][MAX_PASSES]; /* [block][progress][pass] */
    char name[96];
    int src = scratch_file(size, true), dst = scratch_file(size, false);
    char *buf = malloc(blocks[1]);

    BENCH_CHECK(buf != NULL);
    for (size_t b = 0; b < 2; b++) {
        struct copy c = {.src = src, .dst = dst, .size = size, .block = blocks[b], .buf = buf};
        /* Warm-up: the source read once and the destination's pages made. */
        c.progress = false;
        one_pass(&c);
        c.progress = true;
        one_pass(&c);
        for (size_t r = 0; r < passes; r++) {
            for (int p = 0; p < 2; p++) {
                c.progress = (r + (size_t)p) % 2 == 1; /* alternate which goes first */
                ns[b][c.progress][r] = one_pass(&c);
            }
        }
    }
    for (size_t b = 0; b < 2; b++) {
        snprintf(name, sizeof name, "copy.bgjob.ns_per_block_%s", block_names[b]);
        fig(name, median_f64(ns[b][1], passes), "ns");
        snprintf(name, sizeof name, "copy.none.ns_per_block_%s", block_names[b]);
        fig(name, median_f64(ns[b][0], passes), "ns");
    }
    free(buf);
    close(src);
    close(dst);
    return 0;
}

/*
 * Benchmark 2, burst throughput: 1,000 trivial jobs outstanding at once, each
 * completing on the caller's thread; jobs per second from the first submit to
 * the last completion.
 *
 *   bgjob         bgjob_run_in_thread with a context, no cap (a thread per job
 *                 unless an idle one is free)
 *   bgjob_capped  the same under bgjob_pool_set_max_running(GTASK_POOL_SIZE)
 *   gtask         g_task_run_in_thread; callbacks in the default GMainContext
 *
 * Each subject also reports its context switches per job (voluntary and
 * involuntary, all threads of the process, from getrusage): a burst that
 * wakes a parked thread per job pays about two. BURST_ONLY=bgjob, capped or
 * gtask runs that subject alone (for `perf stat` or `strace -c -f`).
 */
#include "bench.h"

#include <bgjob.h>
#include <gio/gio.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* GLib's GTask thread pool size (G_TASK_POOL_SIZE in gio/gtask.c). */
#define GTASK_POOL_SIZE 10

static int32_t trivial_worker(void *userdata, bgjob_job *job)
{
    (void)userdata;
    (void)job;
    return 0;
}

static void bgjob_done(void *userdata, bgjob_job *job, int32_t state)
{
    (void)job;
    BENCH_CHECK(state == BGJOB_STATE_COMPLETED);
    (*(size_t *)userdata)++;
}

static double burst_bgjob(bgjob_context *ctx, int fd, size_t jobs)
{
    size_t done = 0;
    int64_t t0 = now_ns();

    for (size_t i = 0; i < jobs; i++)
        BENCH_CHECK(bgjob_run_in_thread(ctx, "burst", trivial_worker, NULL, NULL, bgjob_done,
                                        &done, NULL, NULL) == BGJOB_RESULT_OK);
    while (done < jobs) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, -1);
        bgjob_context_dispatch(ctx, 0, NULL);
    }
    return (double)jobs * 1e9 / (double)(now_ns() - t0);
}

static void gtask_thread(GTask *task, gpointer source, gpointer data, GCancellable *c)
{
    (void)source;
    (void)data;
    (void)c;
    g_task_return_boolean(task, TRUE);
}

static void gtask_done(GObject *source, GAsyncResult *res, gpointer userdata)
{
    (void)source;
    BENCH_CHECK(g_task_propagate_boolean(G_TASK(res), NULL));
    (*(size_t *)userdata)++;
}

static double burst_gtask(size_t jobs)
{
    size_t done = 0;
    int64_t t0 = now_ns();

    for (size_t i = 0; i < jobs; i++) {
        GTask *task = g_task_new(NULL, NULL, gtask_done, &done);
        g_task_run_in_thread(task, gtask_thread);
        g_object_unref(task);
    }
    while (done < jobs)
        g_main_context_iteration(NULL, TRUE);
    return (double)jobs * 1e9 / (double)(now_ns() - t0);
}

/* Context switches of the whole process so far. */
static double ctxsw(void)
{
    struct rusage u;

    BENCH_CHECK(getrusage(RUSAGE_SELF, &u) == 0);
    return (double)u.ru_nvcsw + (double)u.ru_nivcsw;
}

/* Whether BURST_ONLY (if set) names `subject`. */
static bool runs(const char *subject)
{
    const char *only = getenv("BURST_ONLY");
    return !only || !*only || strcmp(only, subject) == 0;
}

int main(int argc, char **argv)
{
    bench_init(argc, argv);
    const size_t jobs = bench_n(1000, 100), rounds = bench_n(30, 2), warm = bench_n(3, 1);
    double *b = calloc(rounds, sizeof *b), *c = calloc(rounds, sizeof *c),
           *g = calloc(rounds, sizeof *g);
    bgjob_context *ctx = NULL;
    int fd = -1;

    BENCH_CHECK(b && c && g);
    BENCH_CHECK(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    BENCH_CHECK(bgjob_context_get_fd(ctx, &fd) == BGJOB_RESULT_OK);
    double sw[3] = {0, 0, 0};
    for (size_t r = 0; r < warm + rounds; r++) {
        double vb = 0, vc = 0, vg = 0, s0, s1, s2, s3;

        s0 = ctxsw();
        if (runs("bgjob"))
            vb = burst_bgjob(ctx, fd, jobs);
        s1 = ctxsw();
        if (runs("capped")) {
            BENCH_CHECK(bgjob_pool_set_max_running(GTASK_POOL_SIZE) == BGJOB_RESULT_OK);
            vc = burst_bgjob(ctx, fd, jobs);
            BENCH_CHECK(bgjob_pool_set_max_running(0) == BGJOB_RESULT_OK);
        }
        s2 = ctxsw();
        if (runs("gtask"))
            vg = burst_gtask(jobs);
        s3 = ctxsw();
        if (r >= warm) {
            b[r - warm] = vb;
            c[r - warm] = vc;
            g[r - warm] = vg;
            sw[0] += s1 - s0;
            sw[1] += s2 - s1;
            sw[2] += s3 - s2;
        }
    }
    const char *names[3] = {"bgjob", "bgjob_capped", "gtask"};
    const char *only[3] = {"bgjob", "capped", "gtask"};
    double *v[3] = {b, c, g};
    for (int i = 0; i < 3; i++) {
        char name[64];

        if (!runs(only[i]))
            continue;
        snprintf(name, sizeof name, "burst.%s.jobs_per_s", names[i]);
        fig(name, median_f64(v[i], rounds), "jobs/s");
        snprintf(name, sizeof name, "burst.%s.ctxsw_per_job", names[i]);
        fig(name, sw[i] / (double)(rounds * jobs), "ctxsw");
    }
    bgjob_context_destroy(ctx);
    free(b);
    free(c);
    free(g);
    return 0;
}

/*
 * Benchmark 2, burst throughput: 1,000 trivial jobs outstanding at once, each
 * completing on the caller's thread; jobs per second from the first submit to
 * the last completion.
 *
 *   bgjob         bgjob_run_in_thread with a context, no cap (a thread per job
 *                 unless an idle one is free)
 *   bgjob_capped  the same under bgjob_pool_set_max_running(GTASK_POOL_SIZE)
 *   gtask         g_task_run_in_thread; callbacks in the default GMainContext
 */
#include "bench.h"

#include <bgjob.h>
#include <gio/gio.h>
#include <poll.h>

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
    for (size_t r = 0; r < warm + rounds; r++) {
        double vb, vc, vg;

        vb = burst_bgjob(ctx, fd, jobs);
        BENCH_CHECK(bgjob_pool_set_max_running(GTASK_POOL_SIZE) == BGJOB_RESULT_OK);
        vc = burst_bgjob(ctx, fd, jobs);
        BENCH_CHECK(bgjob_pool_set_max_running(0) == BGJOB_RESULT_OK);
        vg = burst_gtask(jobs);
        if (r >= warm) {
            b[r - warm] = vb;
            c[r - warm] = vc;
            g[r - warm] = vg;
        }
    }
    fig("burst.bgjob.jobs_per_s", median_f64(b, rounds), "jobs/s");
    fig("burst.bgjob_capped.jobs_per_s", median_f64(c, rounds), "jobs/s");
    fig("burst.gtask.jobs_per_s", median_f64(g, rounds), "jobs/s");
    bgjob_context_destroy(ctx);
    free(b);
    free(c);
    free(g);
    return 0;
}

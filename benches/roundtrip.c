/*
 * Benchmark 1, job round trip, one at a time: create -> trivial worker ->
 * completion delivered on the caller's thread -> destroy.
 *
 *   bgjob    bgjob_job_create with a context completion; the caller poll()s the
 *            context fd, dispatches, destroys the job.
 *   gtask    g_task_run_in_thread; the callback runs in the default
 *            GMainContext, iterated by the caller; g_object_unref.
 *   pthread  pthread_create + pthread_join (no completion hand-off at all).
 */
#include "bench.h"

#include <bgjob.h>
#include <gio/gio.h>
#include <poll.h>
#include <pthread.h>

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
    *(int *)userdata = 1;
}

static void run_bgjob(bgjob_context *ctx, int fd, int64_t *out, size_t n)
{
    bgjob_job_options o;

    bgjob_job_options_init(&o, sizeof o);
    o.name = "roundtrip";
    o.completion = bgjob_done;
    o.context = ctx;
    for (size_t i = 0; i < n; i++) {
        int done = 0;
        bgjob_job *job = NULL;
        int64_t t0 = now_ns();

        o.completion_userdata = &done;
        BENCH_CHECK(bgjob_job_create(&o, trivial_worker, NULL, NULL, &job) == BGJOB_RESULT_OK);
        while (!done) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            poll(&p, 1, -1);
            bgjob_context_dispatch(ctx, 0, NULL);
        }
        BENCH_CHECK(bgjob_job_destroy(job) == BGJOB_RESULT_OK);
        out[i] = now_ns() - t0;
    }
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
    *(int *)userdata = 1;
}

static void run_gtask(int64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int done = 0;
        int64_t t0 = now_ns();
        GTask *task = g_task_new(NULL, NULL, gtask_done, &done);

        g_task_run_in_thread(task, gtask_thread);
        g_object_unref(task);
        while (!done)
            g_main_context_iteration(NULL, TRUE);
        out[i] = now_ns() - t0;
    }
}

static void *pthread_fn(void *arg)
{
    return arg;
}

static void run_pthread(int64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pthread_t t;
        int64_t t0 = now_ns();

        BENCH_CHECK(pthread_create(&t, NULL, pthread_fn, NULL) == 0);
        pthread_join(t, NULL);
        out[i] = now_ns() - t0;
    }
}

int main(int argc, char **argv)
{
    bench_init(argc, argv);
    const size_t rounds = bench_n(10, 2), per = bench_n(500, 50), warm = bench_n(300, 20);
    const size_t n = rounds * per;
    int64_t *b = calloc(n, sizeof *b), *g = calloc(n, sizeof *g), *p = calloc(n, sizeof *p);
    int64_t *scratch = calloc(warm, sizeof *scratch);
    bgjob_context *ctx = NULL;
    int fd = -1;

    BENCH_CHECK(b && g && p && scratch);
    BENCH_CHECK(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    BENCH_CHECK(bgjob_context_get_fd(ctx, &fd) == BGJOB_RESULT_OK);
    run_bgjob(ctx, fd, scratch, warm);
    run_gtask(scratch, warm);
    run_pthread(scratch, warm);
    for (size_t r = 0; r < rounds; r++) {
        run_bgjob(ctx, fd, b + r * per, per);
        run_gtask(g + r * per, per);
        run_pthread(p + r * per, per);
    }
    fig_latency("roundtrip.bgjob", b, n);
    fig_latency("roundtrip.gtask", g, n);
    fig_latency("roundtrip.pthread", p, n);
    bgjob_context_destroy(ctx);
    free(b);
    free(g);
    free(p);
    free(scratch);
    return 0;
}

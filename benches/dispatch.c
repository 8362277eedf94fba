/*
 * Benchmark 5, completion dispatch latency: from the moment a worker finishes
 * to its callback running on the main thread, which is blocked waiting.
 *
 *   bgjob       the worker returns; the main thread poll()s the context fd and
 *               calls bgjob_context_dispatch; the time is taken in the callback
 *   eventfd     a thread writes an eventfd; the main thread poll()s it and reads
 *               (the raw floor: no queue, no callback)
 *   gmain_invoke a thread calls g_main_context_invoke; the main thread iterates
 *               the GMainContext
 *
 * Every worker sleeps 300 us first, so the main thread is blocked when the
 * wake-up comes.
 */
#include "bench.h"

#include <bgjob.h>
#include <glib.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define WORK_US 300

static _Atomic int64_t finished_at;

static int32_t finishing_worker(void *userdata, bgjob_job *job)
{
    (void)userdata;
    (void)job;
    sleep_us(WORK_US);
    atomic_store(&finished_at, now_ns());
    return 0;
}

static void bgjob_done(void *userdata, bgjob_job *job, int32_t state)
{
    (void)job;
    (void)state;
    *(int64_t *)userdata = now_ns();
}

static void run_bgjob(bgjob_context *ctx, int fd, int64_t *out, size_t n)
{
    bgjob_job_options o;

    bgjob_job_options_init(&o, sizeof o);
    o.name = "dispatch";
    o.completion = bgjob_done;
    o.context = ctx;
    for (size_t i = 0; i < n; i++) {
        int64_t ran_at = 0;
        bgjob_job *job = NULL;

        o.completion_userdata = &ran_at;
        BENCH_CHECK(bgjob_job_create(&o, finishing_worker, NULL, NULL, &job) == BGJOB_RESULT_OK);
        while (ran_at == 0) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            poll(&p, 1, -1);
            bgjob_context_dispatch(ctx, 0, NULL);
        }
        out[i] = ran_at - atomic_load(&finished_at);
        bgjob_job_destroy(job);
    }
}

/* The peers' thread: per request, sleep WORK_US, take the time, wake main. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static enum { IDLE, EVENTFD, INVOKE, QUIT } request;
static int efd;
static GMainContext *gctx;
static int64_t invoked_at;

static gboolean invoked(gpointer data)
{
    (void)data;
    invoked_at = now_ns();
    return G_SOURCE_REMOVE;
}

static void *peer_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (request == IDLE)
            pthread_cond_wait(&cv, &mu);
        if (request == QUIT)
            break;
        int what = request;
        request = IDLE;
        pthread_mutex_unlock(&mu);
        sleep_us(WORK_US);
        atomic_store(&finished_at, now_ns());
        if (what == EVENTFD) {
            uint64_t one = 1;
            BENCH_CHECK(write(efd, &one, sizeof one) == sizeof one);
        } else {
            g_main_context_invoke(gctx, invoked, NULL);
        }
        pthread_mutex_lock(&mu);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void peer_request(int what)
{
    pthread_mutex_lock(&mu);
    request = what;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

static void run_eventfd(int64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct pollfd p = {.fd = efd, .events = POLLIN};
        uint64_t v;

        peer_request(EVENTFD);
        while (poll(&p, 1, -1) != 1) {
        }
        BENCH_CHECK(read(efd, &v, sizeof v) == sizeof v);
        out[i] = now_ns() - atomic_load(&finished_at);
    }
}

static void run_invoke(int64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        invoked_at = 0;
        peer_request(INVOKE);
        while (invoked_at == 0)
            g_main_context_iteration(gctx, TRUE);
        out[i] = invoked_at - atomic_load(&finished_at);
    }
}

int main(int argc, char **argv)
{
    bench_init(argc, argv);
    const size_t rounds = bench_n(5, 1), per = bench_n(300, 20), warm = bench_n(50, 5);
    const size_t n = rounds * per;
    int64_t *b = calloc(n, sizeof *b), *e = calloc(n, sizeof *e), *g = calloc(n, sizeof *g);
    int64_t *scratch = calloc(warm, sizeof *scratch);
    bgjob_context *ctx = NULL;
    int fd = -1;
    pthread_t peer;

    BENCH_CHECK(b && e && g && scratch);
    efd = eventfd(0, EFD_CLOEXEC);
    BENCH_CHECK(efd >= 0);
    gctx = g_main_context_default();
    BENCH_CHECK(g_main_context_acquire(gctx));
    BENCH_CHECK(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    BENCH_CHECK(bgjob_context_get_fd(ctx, &fd) == BGJOB_RESULT_OK);
    BENCH_CHECK(pthread_create(&peer, NULL, peer_thread, NULL) == 0);
    run_bgjob(ctx, fd, scratch, warm);
    run_eventfd(scratch, warm);
    run_invoke(scratch, warm);
    for (size_t r = 0; r < rounds; r++) {
        run_bgjob(ctx, fd, b + r * per, per);
        run_eventfd(e + r * per, per);
        run_invoke(g + r * per, per);
    }
    fig_latency("dispatch.bgjob", b, n);
    fig_latency("dispatch.eventfd", e, n);
    fig_latency("dispatch.gmain_invoke", g, n);
    peer_request(QUIT);
    pthread_join(peer, NULL);
    bgjob_context_destroy(ctx);
    g_main_context_release(gctx);
    close(efd);
    free(b);
    free(e);
    free(g);
    free(scratch);
    return 0;
}

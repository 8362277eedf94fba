/*
 * Benchmark 3, cancel latency: a worker is blocked waiting; the time from the
 * cancel call to the worker running again.
 *
 *   bgjob        the worker is in bgjob_job_sleep (bgjob's cancellable wait);
 *                bgjob_job_cancel
 *   gcancellable a thread in poll() on g_cancellable_get_fd; g_cancellable_cancel
 *   condvar      a thread in pthread_cond_wait; set a flag and signal
 *
 * The caller waits until the worker announced it is about to block, then
 * 200 us more so it really is blocked, before it takes the start time.
 */
#include "bench.h"

#include <bgjob.h>
#include <gio/gio.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>

#define SETTLE_US 200

static atomic_int ready;
static _Atomic int64_t woke_at;

static void wait_ready(void)
{
    while (!atomic_load(&ready))
        sleep_us(20);
    sleep_us(SETTLE_US);
}

static int32_t sleeping_worker(void *userdata, bgjob_job *job)
{
    (void)userdata;
    atomic_store(&ready, 1);
    bgjob_result r = bgjob_job_sleep(job, INT64_MAX / 2);
    atomic_store(&woke_at, now_ns());
    return r == BGJOB_RESULT_CANCELLED ? 125 : 1;
}

static void run_bgjob(int64_t *out, size_t n)
{
    bgjob_job_options o;

    bgjob_job_options_init(&o, sizeof o);
    o.name = "cancel";
    for (size_t i = 0; i < n; i++) {
        bgjob_job *job = NULL;
        int32_t state = -1;

        atomic_store(&ready, 0);
        BENCH_CHECK(bgjob_job_create(&o, sleeping_worker, NULL, NULL, &job) == BGJOB_RESULT_OK);
        wait_ready();
        int64_t t0 = now_ns();
        BENCH_CHECK(bgjob_job_cancel(job, NULL) == BGJOB_RESULT_OK);
        BENCH_CHECK(bgjob_job_wait(job, -1, &state) == BGJOB_RESULT_OK);
        BENCH_CHECK(state == BGJOB_STATE_CANCELLED);
        out[i] = atomic_load(&woke_at) - t0;
        bgjob_job_destroy(job);
    }
}

/* The peers' worker thread: takes one request at a time. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER, done_cv = PTHREAD_COND_INITIALIZER;
static enum { IDLE, POLL_FD, CONDVAR, QUIT } request;
static GCancellable *cancellable;
static bool flag, done;

static void *peer_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (request == IDLE)
            pthread_cond_wait(&cv, &mu);
        if (request == QUIT)
            break;
        if (request == POLL_FD) {
            struct pollfd p = {.fd = g_cancellable_get_fd(cancellable), .events = POLLIN};
            pthread_mutex_unlock(&mu);
            atomic_store(&ready, 1);
            while (poll(&p, 1, -1) != 1) {
            }
            atomic_store(&woke_at, now_ns());
            pthread_mutex_lock(&mu);
        } else {
            atomic_store(&ready, 1);
            while (!flag)
                pthread_cond_wait(&cv, &mu);
            atomic_store(&woke_at, now_ns());
        }
        request = IDLE;
        done = true;
        pthread_cond_signal(&done_cv);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void peer_request(int what)
{
    pthread_mutex_lock(&mu);
    atomic_store(&ready, 0);
    done = false;
    flag = false;
    request = what;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

static void peer_wait_done(void)
{
    pthread_mutex_lock(&mu);
    while (!done)
        pthread_cond_wait(&done_cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void run_gcancellable(int64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cancellable = g_cancellable_new();
        peer_request(POLL_FD);
        wait_ready();
        int64_t t0 = now_ns();
        g_cancellable_cancel(cancellable);
        peer_wait_done();
        out[i] = atomic_load(&woke_at) - t0;
        g_object_unref(cancellable);
    }
}

static void run_condvar(int64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        peer_request(CONDVAR);
        wait_ready();
        int64_t t0 = now_ns();
        pthread_mutex_lock(&mu);
        flag = true;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        peer_wait_done();
        out[i] = atomic_load(&woke_at) - t0;
    }
}

int main(int argc, char **argv)
{
    bench_init(argc, argv);
    const size_t rounds = bench_n(5, 1), per = bench_n(200, 20), warm = bench_n(50, 5);
    const size_t n = rounds * per;
    int64_t *b = calloc(n, sizeof *b), *g = calloc(n, sizeof *g), *c = calloc(n, sizeof *c);
    int64_t *scratch = calloc(warm, sizeof *scratch);
    pthread_t peer;

    BENCH_CHECK(b && g && c && scratch);
    BENCH_CHECK(pthread_create(&peer, NULL, peer_thread, NULL) == 0);
    run_bgjob(scratch, warm);
    run_gcancellable(scratch, warm);
    run_condvar(scratch, warm);
    for (size_t r = 0; r < rounds; r++) {
        run_bgjob(b + r * per, per);
        run_gcancellable(g + r * per, per);
        run_condvar(c + r * per, per);
    }
    fig_latency("cancel.bgjob", b, n);
    fig_latency("cancel.gcancellable_fd", g, n);
    fig_latency("cancel.condvar", c, n);
    pthread_mutex_lock(&mu);
    request = QUIT;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(peer, NULL);
    free(b);
    free(g);
    free(c);
    free(scratch);
    return 0;
}

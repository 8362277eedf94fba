/*
 * Benchmark 7, getinfo: the cost of one snapshot read by a manager thread,
 * with no writer (alone) and while the job's worker updates its progress in
 * a tight loop (updating).
 *
 *   bgjob    bgjob_job_get_info on a RUNNING job; its worker sleeps (alone) or
 *            calls bgjob_job_add_units(job, 1) until told to stop (updating)
 *   mutex    the classic driver implementation: a pthread mutex around the
 *            job's record (state, flags, progress, times); the reader locks,
 *            copies the record and unlocks; the writer locks, adds 1 and
 *            unlocks
 *   driver   the same mutex read, then what the driver's getinfo reports from
 *            it: the active time from CLOCK_MONOTONIC, percent, rate and
 *            time left (bench.h's derive), as bgjob_job_get_info does; not a
 *            target's peer, the same work done by hand beside it
 *
 * The reader makes a fixed number of reads; each figure is ns per read, the
 * median over interleaved rounds.
 */
#include "bench.h"

#include <bgjob.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static size_t reads;
static atomic_int stop;
static atomic_int writing;

/* The mutex peer's record: what a driver's job struct holds for getinfo. */
struct record {
    int32_t state;
    bool cancel_requested, pause_requested;
    int32_t error_code;
    uint64_t current, total;
    int64_t started_ns, paused_ns;
};

static struct {
    pthread_mutex_t mu;
    struct record r;
} peer = {.mu = PTHREAD_MUTEX_INITIALIZER};

enum subject { BGJOB, MUTEX, DRIVER };
#define SUBJECTS 3

static int32_t sleeping_worker(void *userdata, bgjob_job *job)
{
    (void)userdata;
    atomic_store(&writing, 1);
    bgjob_job_sleep(job, -1);
    return 0;
}

static int32_t updating_worker(void *userdata, bgjob_job *job)
{
    (void)userdata;
    bgjob_job_set_total(job, UINT64_MAX);
    atomic_store(&writing, 1);
    while (!atomic_load_explicit(&stop, memory_order_relaxed))
        bgjob_job_add_units(job, 1);
    return 0;
}

static void *peer_writer(void *arg)
{
    (void)arg;
    atomic_store(&writing, 1);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        pthread_mutex_lock(&peer.mu);
        peer.r.current += 1;
        pthread_mutex_unlock(&peer.mu);
    }
    return NULL;
}

/* ns per read of `reads` reads, with (updating) or without a writer. */
static double measure(enum subject s, bool updating)
{
    bgjob_job *job = NULL;
    pthread_t t;
    uint64_t sink = 0;
    int64_t t0, dt;

    atomic_store(&stop, 0);
    atomic_store(&writing, 0);
    /* As bgjob's workers: the updating one sets the largest total, the
     * sleeping one none. */
    peer.r.total = updating ? UINT64_MAX : 0;
    if (s == BGJOB) {
        bgjob_job_options o;
        bgjob_job_options_init(&o, sizeof o);
        o.name = "getinfo";
        BENCH_CHECK(bgjob_job_create(&o, updating ? updating_worker : sleeping_worker, NULL, NULL,
                                     &job) == BGJOB_RESULT_OK);
    } else if (updating) {
        BENCH_CHECK(pthread_create(&t, NULL, peer_writer, NULL) == 0);
    } else {
        atomic_store(&writing, 1);
    }
    while (!atomic_load(&writing))
        sleep_us(50);

    t0 = now_ns();
    if (s == BGJOB) {
        for (size_t i = 0; i < reads; i++) {
            bgjob_info info = {.struct_size = sizeof info};
            bgjob_job_get_info(job, &info);
            sink += info.current + (uint64_t)info.state;
        }
    } else if (s == MUTEX) {
        for (size_t i = 0; i < reads; i++) {
            struct record r;
            pthread_mutex_lock(&peer.mu);
            memcpy(&r, &peer.r, sizeof r);
            pthread_mutex_unlock(&peer.mu);
            sink += r.current + (uint64_t)r.state;
        }
    } else {
        for (size_t i = 0; i < reads; i++) {
            struct record r;
            pthread_mutex_lock(&peer.mu);
            memcpy(&r, &peer.r, sizeof r);
            pthread_mutex_unlock(&peer.mu);
            struct derived d = derive(r.current, r.total, r.started_ns, r.paused_ns);
            sink += r.current + (uint64_t)r.state + (uint64_t)d.elapsed_ms +
                    (uint64_t)d.percent;
        }
    }
    dt = now_ns() - t0;

    atomic_store(&stop, 1);
    if (s == BGJOB) {
        BENCH_CHECK(bgjob_job_cancel(job, NULL) == BGJOB_RESULT_OK);
        BENCH_CHECK(bgjob_job_wait(job, -1, NULL) == BGJOB_RESULT_OK);
        bgjob_job_destroy(job);
    } else if (updating) {
        pthread_join(t, NULL);
    }
    /* Keeps the reads from being optimised away. */
    BENCH_CHECK(sink != UINT64_MAX);
    return (double)dt / (double)reads;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"bgjob", "mutex", "driver"};
    bench_init(argc, argv);
    /* A running job's record, as the bgjob jobs below are: started now. */
    peer.r.started_ns = now_ns();
    const size_t rounds = bench_n(7, 1);
    double alone[SUBJECTS][7], updating[SUBJECTS][7];
    char name[96];

    reads = bench_n(2000000, 20000);
    for (int s = 0; s < SUBJECTS; s++)
        measure((enum subject)s, true); /* warm-up */
    for (size_t r = 0; r < rounds; r++) {
        for (int s = 0; s < SUBJECTS; s++) {
            alone[s][r] = measure((enum subject)s, false);
            updating[s][r] = measure((enum subject)s, true);
        }
    }
    for (int s = 0; s < SUBJECTS; s++) {
        snprintf(name, sizeof name, "getinfo.%s.alone", names[s]);
        fig(name, median_f64(alone[s], rounds), "ns");
        snprintf(name, sizeof name, "getinfo.%s.updating", names[s]);
        fig(name, median_f64(updating[s], rounds), "ns");
    }
    return 0;
}

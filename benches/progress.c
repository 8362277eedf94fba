/*
 * Benchmark 4, progress update cost in a worker's tight loop, alone and while
 * another thread reads the progress continuously.
 *
 *   bgjob    bgjob_job_add_units(job, 1) from the job's worker; the reader calls
 *            bgjob_job_get_info
 *   mutex    the classic driver implementation: a pthread mutex around the
 *            progress fields (lock, current += 1, unlock); the reader locks and
 *            copies them
 *   atomic   relaxed atomic stores of the counter (the floor); the reader loads
 *   stat     bgjob_job_set_stat_u64(job, 0, i) of a declared statistic from the
 *            job's worker (the per-block cost of a statistic); the reader calls
 *            bgjob_job_get_stats with the snapshot
 */
#include "bench.h"

#include <bgjob.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

static size_t updates;
static atomic_int writer_done;
static _Atomic int64_t writer_ns;
static atomic_long reads;

/* The mutex peer's progress record. */
static struct {
    pthread_mutex_t mu;
    uint64_t current, total;
} rec = {.mu = PTHREAD_MUTEX_INITIALIZER};
static _Atomic uint64_t relaxed_current;

enum subject { BGJOB, MUTEX, ATOMIC, STAT };
#define SUBJECTS 4

static int32_t bgjob_worker(void *userdata, bgjob_job *job)
{
    (void)userdata;
    bgjob_job_set_total(job, updates);
    int64_t t0 = now_ns();
    for (size_t i = 0; i < updates; i++)
        bgjob_job_add_units(job, 1);
    atomic_store(&writer_ns, now_ns() - t0);
    atomic_store(&writer_done, 1);
    return 0;
}

static int32_t stat_worker(void *userdata, bgjob_job *job)
{
    (void)userdata;
    int64_t t0 = now_ns();
    for (size_t i = 0; i < updates; i++)
        bgjob_job_set_stat_u64(job, 0, i + 1);
    atomic_store(&writer_ns, now_ns() - t0);
    atomic_store(&writer_done, 1);
    return 0;
}

static void *peer_writer(void *arg)
{
    enum subject s = *(enum subject *)arg;
    int64_t t0 = now_ns();

    if (s == MUTEX) {
        for (size_t i = 0; i < updates; i++) {
            pthread_mutex_lock(&rec.mu);
            rec.current += 1;
            pthread_mutex_unlock(&rec.mu);
        }
    } else {
        for (size_t i = 0; i < updates; i++)
            atomic_store_explicit(&relaxed_current, i + 1, memory_order_relaxed);
    }
    atomic_store(&writer_ns, now_ns() - t0);
    atomic_store(&writer_done, 1);
    return NULL;
}

/* Reads continuously until the writer is done; counts reads. */
static void read_until_done(enum subject s, bgjob_job *job)
{
    long n = 0;
    uint64_t sink = 0;

    while (!atomic_load_explicit(&writer_done, memory_order_relaxed)) {
        if (s == BGJOB) {
            bgjob_info info = {.struct_size = sizeof info};
            bgjob_job_get_info(job, &info);
            sink += info.current;
        } else if (s == STAT) {
            bgjob_info info = {.struct_size = sizeof info};
            bgjob_stat st;
            size_t count;
            bgjob_job_get_stats(job, &info, &st, 1, &count);
            sink += st.value.u64 + info.current;
        } else if (s == MUTEX) {
            pthread_mutex_lock(&rec.mu);
            sink += rec.current + rec.total;
            pthread_mutex_unlock(&rec.mu);
        } else {
            sink += atomic_load_explicit(&relaxed_current, memory_order_relaxed);
        }
        n++;
    }
    atomic_store(&reads, n + (long)(sink & 0));
}

/* One measurement: ns per update, and (with a reader) ns per read. */
static double measure(enum subject s, bool polled, double *read_ns)
{
    bgjob_job *job = NULL;
    pthread_t t;
    int64_t t0;

    atomic_store(&writer_done, 0);
    t0 = now_ns();
    if (s == BGJOB) {
        bgjob_job_options o;
        bgjob_job_options_init(&o, sizeof o);
        o.name = "progress";
        BENCH_CHECK(bgjob_job_create(&o, bgjob_worker, NULL, NULL, &job) == BGJOB_RESULT_OK);
    } else if (s == STAT) {
        bgjob_job_options o;
        uint32_t idx;
        bgjob_job_options_init(&o, sizeof o);
        o.name = "stat";
        o.flags = BGJOB_CREATE_DEFER_START;
        BENCH_CHECK(bgjob_job_create(&o, stat_worker, NULL, NULL, &job) == BGJOB_RESULT_OK);
        BENCH_CHECK(bgjob_job_add_stat(job, "copied", BGJOB_STAT_TYPE_U64, "bytes", &idx) ==
                    BGJOB_RESULT_OK);
        BENCH_CHECK(bgjob_job_start(job) == BGJOB_RESULT_OK);
    } else {
        BENCH_CHECK(pthread_create(&t, NULL, peer_writer, &s) == 0);
    }
    if (polled)
        read_until_done(s, job);
    if (s == BGJOB || s == STAT) {
        BENCH_CHECK(bgjob_job_wait(job, -1, NULL) == BGJOB_RESULT_OK);
        bgjob_job_destroy(job);
    } else {
        pthread_join(t, NULL);
    }
    if (read_ns != NULL)
        *read_ns = (double)(now_ns() - t0) / (double)(atomic_load(&reads) + 1);
    return (double)atomic_load(&writer_ns) / (double)updates;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"bgjob", "mutex", "atomic", "stat"};
    bench_init(argc, argv);
    const size_t rounds = bench_n(7, 1);
    double alone[SUBJECTS][7], polled[SUBJECTS][7], readns[SUBJECTS][7];
    char name[96];

    updates = bench_n(10000000, 200000);
    for (int s = 0; s < SUBJECTS; s++)
        measure((enum subject)s, true, NULL); /* warm-up */
    for (size_t r = 0; r < rounds; r++) {
        for (int s = 0; s < SUBJECTS; s++) {
            alone[s][r] = measure((enum subject)s, false, NULL);
            polled[s][r] = measure((enum subject)s, true, &readns[s][r]);
        }
    }
    for (int s = 0; s < SUBJECTS; s++) {
        snprintf(name, sizeof name, "progress.%s.alone", names[s]);
        fig(name, median_f64(alone[s], rounds), "ns");
        snprintf(name, sizeof name, "progress.%s.polled", names[s]);
        fig(name, median_f64(polled[s], rounds), "ns");
        snprintf(name, sizeof name, "progress.%s.read", names[s]);
        fig(name, median_f64(readns[s], rounds), "ns");
    }
    return 0;
}

/*
 * Benchmark 6, scale: 10,000 jobs running at once, each blocked in a
 * cancellable wait, on 64 KiB stacks. Times to create them all, read every
 * job's progress once, cancel them all and reap them all; memory per job
 * (the process's RSS, and the kernel's: kernel stacks, page tables and
 * unreclaimable slab, from /proc/meminfo).
 *
 *   bgjob    bgjob_job_create (stack_size 64 KiB), worker in bgjob_job_sleep;
 *            bgjob_job_get_info; bgjob_job_cancel; bgjob_job_wait + destroy
 *   pthread  pthread_create (64 KiB stack), thread in pthread_cond_wait on its
 *            own condvar; a mutex-guarded progress read; flag + signal;
 *            pthread_join
 *   driver   the pthread subject's read again, each followed by what a
 *            driver's getinfo derives from it (bench.h's derive: the clock,
 *            elapsed, percent, rate, time left), as bgjob_job_get_info
 *            does: the same work by hand, not a target's peer
 *
 * Each subject runs in a child process of its own, so neither sees the
 * other's threads or memory; each runs once more cancelling in reverse
 * creation order (cancel_reverse_ms): the last-created waiter sits at the far
 * end of its futex hash chain, so a wake that walks chains shows there.
 */
#include "bench.h"

#include <bgjob.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define STACK (64 * 1024)

static atomic_long entered;

/* Cancel the newest job first (and report only that cancel time). */
static bool reverse;

/* A field of /proc/self/status or /proc/meminfo, in kB. */
static long kb_field(const char *path, const char *key)
{
    char line[256];
    long v = -1;
    size_t k = strlen(key);
    FILE *f = fopen(path, "r");

    BENCH_CHECK(f != NULL);
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, key, k) == 0 && line[k] == ':') {
            v = strtol(line + k + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static long kernel_kb(void)
{
    return kb_field("/proc/meminfo", "KernelStack") + kb_field("/proc/meminfo", "PageTables") +
           kb_field("/proc/meminfo", "SUnreclaim");
}

static void wait_entered(long n)
{
    while (atomic_load(&entered) < n)
        sleep_us(500);
}

struct times {
    int64_t create, getinfo, cancel, reap;
    long rss_kb, kernel_kb;
};

static void report(const char *who, const struct times *t, size_t n)
{
    char name[96];

    if (reverse) {
        snprintf(name, sizeof name, "scale.%s.cancel_reverse_ms", who);
        fig(name, (double)t->cancel / 1e6, "ms");
        return;
    }

#define SCALE_FIG(field, value, unit)                                             \
    do {                                                                          \
        snprintf(name, sizeof name, "scale.%s.%s", who, field);                   \
        fig(name, value, unit);                                                   \
    } while (0)
    SCALE_FIG("create_ms", (double)t->create / 1e6, "ms");
    SCALE_FIG("getinfo_ms", (double)t->getinfo / 1e6, "ms");
    SCALE_FIG("cancel_ms", (double)t->cancel / 1e6, "ms");
    SCALE_FIG("reap_ms", (double)t->reap / 1e6, "ms");
    SCALE_FIG("create_cancel_reap_ms", (double)(t->create + t->cancel + t->reap) / 1e6, "ms");
    SCALE_FIG("rss_kib_per_job", (double)t->rss_kb / (double)n, "KiB");
    SCALE_FIG("kernel_kib_per_job", (double)t->kernel_kb / (double)n, "KiB");
#undef SCALE_FIG
}

static int32_t sleeping_worker(void *userdata, bgjob_job *job)
{
    (void)userdata;
    atomic_fetch_add(&entered, 1);
    return bgjob_job_sleep(job, INT64_MAX / 2) == BGJOB_RESULT_CANCELLED ? 125 : 1;
}

static void run_bgjob(size_t n)
{
    bgjob_job **jobs = calloc(n, sizeof *jobs);
    bgjob_job_options o;
    struct times t;
    long rss0 = kb_field("/proc/self/status", "VmRSS"), k0 = kernel_kb();
    int64_t t0;

    BENCH_CHECK(jobs != NULL);
    bgjob_job_options_init(&o, sizeof o);
    o.name = "scale";
    o.stack_size = STACK;
    t0 = now_ns();
    for (size_t i = 0; i < n; i++)
        BENCH_CHECK(bgjob_job_create(&o, sleeping_worker, NULL, NULL, &jobs[i]) ==
                    BGJOB_RESULT_OK);
    t.create = now_ns() - t0;
    wait_entered((long)n);
    t.rss_kb = kb_field("/proc/self/status", "VmRSS") - rss0;
    t.kernel_kb = kernel_kb() - k0;
    t0 = now_ns();
    for (size_t i = 0; i < n; i++) {
        bgjob_info info = {.struct_size = sizeof info};
        BENCH_CHECK(bgjob_job_get_info(jobs[i], &info) == BGJOB_RESULT_OK);
        BENCH_CHECK(info.state == BGJOB_STATE_RUNNING);
    }
    t.getinfo = now_ns() - t0;
    t0 = now_ns();
    for (size_t i = 0; i < n; i++)
        BENCH_CHECK(bgjob_job_cancel(jobs[reverse ? n - 1 - i : i], NULL) == BGJOB_RESULT_OK);
    t.cancel = now_ns() - t0;
    t0 = now_ns();
    for (size_t i = 0; i < n; i++) {
        int32_t s = -1;
        BENCH_CHECK(bgjob_job_wait(jobs[i], -1, &s) == BGJOB_RESULT_OK);
        BENCH_CHECK(s == BGJOB_STATE_CANCELLED);
        BENCH_CHECK(bgjob_job_destroy(jobs[i]) == BGJOB_RESULT_OK);
    }
    t.reap = now_ns() - t0;
    report("bgjob", &t, n);
    free(jobs);
}

struct raw {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool cancel;
    uint64_t current, total;
    int64_t started_ns, paused_ns;
};

static void *raw_thread(void *arg)
{
    struct raw *r = arg;

    pthread_mutex_lock(&r->mu);
    atomic_fetch_add(&entered, 1);
    while (!r->cancel)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

static void run_pthread(size_t n)
{
    struct raw *raws = calloc(n, sizeof *raws);
    pthread_attr_t attr;
    struct times t;
    long rss0 = kb_field("/proc/self/status", "VmRSS"), k0 = kernel_kb();
    int64_t t0;
    uint64_t sink = 0;

    BENCH_CHECK(raws != NULL);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, STACK);
    t0 = now_ns();
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_init(&raws[i].mu, NULL);
        pthread_cond_init(&raws[i].cv, NULL);
        raws[i].started_ns = now_ns();
        BENCH_CHECK(pthread_create(&raws[i].thread, &attr, raw_thread, &raws[i]) == 0);
    }
    t.create = now_ns() - t0;
    wait_entered((long)n);
    t.rss_kb = kb_field("/proc/self/status", "VmRSS") - rss0;
    t.kernel_kb = kernel_kb() - k0;
    t0 = now_ns();
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_lock(&raws[i].mu);
        sink += raws[i].current + raws[i].total;
        pthread_mutex_unlock(&raws[i].mu);
    }
    t.getinfo = now_ns() - t0;
    if (!reverse) {
        /* The driver's read, after the plain one (the same records, in
         * the same order). */
        t0 = now_ns();
        for (size_t i = 0; i < n; i++) {
            pthread_mutex_lock(&raws[i].mu);
            uint64_t current = raws[i].current, total = raws[i].total;
            int64_t started = raws[i].started_ns, paused = raws[i].paused_ns;
            pthread_mutex_unlock(&raws[i].mu);
            struct derived d = derive(current, total, started, paused);
            /* Nothing counted yet: no progress, percent unknown (-1). */
            sink += current + (uint64_t)(d.percent + 1);
        }
        fig("scale.driver.getinfo_ms", (double)(now_ns() - t0) / 1e6, "ms");
    }
    t0 = now_ns();
    for (size_t i = 0; i < n; i++) {
        struct raw *r = &raws[reverse ? n - 1 - i : i];

        pthread_mutex_lock(&r->mu);
        r->cancel = true;
        pthread_cond_signal(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
    t.cancel = now_ns() - t0;
    t0 = now_ns();
    for (size_t i = 0; i < n; i++)
        pthread_join(raws[i].thread, NULL);
    t.reap = now_ns() - t0;
    BENCH_CHECK(sink == 0);
    report("pthread", &t, n);
    pthread_attr_destroy(&attr);
    free(raws);
}

int main(int argc, char **argv)
{
    bench_init(argc, argv);
    const size_t n = bench_n(10000, 300);
    void (*const subjects[])(size_t) = {run_bgjob, run_pthread};

    for (size_t i = 0; i < 4; i++) {
        pid_t pid = fork();
        int status;

        BENCH_CHECK(pid >= 0);
        if (pid == 0) {
            reverse = i >= 2;
            subjects[i % 2](n);
            fflush(stdout);
            _exit(0);
        }
        BENCH_CHECK(waitpid(pid, &status, 0) == pid);
        BENCH_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    return 0;
}

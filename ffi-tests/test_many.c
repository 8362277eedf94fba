/*
 * test_many.c: 1,000 jobs running at once. Every worker blocks until all of
 * them have started (so all 1,000 are RUNNING at the same moment, each on its
 * own thread: no job waits behind another), bgjob_list_jobs sees them all, then
 * they are released together and all complete, and every userdata is freed
 * exactly once. A second round reuses the idle threads the first left behind.
 *
 * Under valgrind, raise its thread limit: --max-threads=1100 or more.
 */

#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define JOBS 1000

struct crowd {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started;
    bool released;
};

struct member {
    struct tracker t; /* first: the token points here */
    struct crowd *crowd;
};

static int32_t worker_crowd(void *userdata, bgjob_job *job)
{
    struct member *m = (struct member *)ud_tracker(userdata);
    struct crowd *c = m->crowd;

    atomic_store(&m->t.job_seen, job);
    atomic_fetch_add(&m->t.runs, 1);
    pthread_mutex_lock(&c->mu);
    c->started++;
    pthread_cond_broadcast(&c->cv);
    while (!c->released)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    atomic_fetch_add(&m->t.returns, 1);
    return 0;
}

/* Waits until `n` workers are in; false after LONG_MS. */
static bool crowd_wait_started(struct crowd *c, int n)
{
    struct timespec deadline;
    bool reached;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += LONG_MS / 1000;
    pthread_mutex_lock(&c->mu);
    while (c->started < n)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &deadline) != 0)
            break;
    reached = c->started >= n;
    pthread_mutex_unlock(&c->mu);
    return reached;
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* How many of the `n` ids (sorted) the entries (in id order, as
 * bgjob_list_jobs gives them) list; *running gets how many of those are
 * RUNNING. One merge pass. */
static int count_listed(const uint64_t *ids, int n, const bgjob_job_entry *e, size_t count,
                        int *running)
{
    size_t j = 0;
    int found = 0, run = 0;

    for (int i = 0; i < n; i++) {
        while (j < count && e[j].id < ids[i])
            j++;
        if (j < count && e[j].id == ids[i]) {
            found++;
            run += e[j].state == BGJOB_STATE_RUNNING;
        }
    }
    if (running != NULL)
        *running = run;
    return found;
}

static bool run_crowd(const char *round)
{
    bool ok = true;
    struct crowd c = { .started = 0, .released = false };
    struct member *m = calloc(JOBS, sizeof(*m));
    bgjob_job **jobs = calloc(JOBS, sizeof(*jobs));
    uint64_t *ids = calloc(JOBS, sizeof(*ids));
    int made = 0;
    long frees_before = atomic_load(&util_total_frees);
    bgjob_job_options o;

    REQUIRE(m != NULL && jobs != NULL && ids != NULL);
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    CHECK_RC(bgjob_job_options_init(&o, sizeof o), BGJOB_RESULT_OK);
    /* Small stacks keep 1,000 threads cheap (and exercise stack_size). */
    o.stack_size = 256 * 1024;

    for (int i = 0; i < JOBS; i++) {
        bgjob_result r;

        tracker_init(&m[i].t);
        m[i].crowd = &c;
        r = bgjob_job_create(&o, worker_crowd, ud_new(&m[i].t), ud_free, &jobs[i]);
        if (r != BGJOB_RESULT_OK) {
            tap_diag("%s: create %d: %s", round, i, bgjob_result_str(r));
            ok = false;
            break;
        }
        ids[i] = id_of(jobs[i]);
        made++;
    }

    /* Ids grow with creation, but sort anyway: count_listed needs order. */
    qsort(ids, (size_t)made, sizeof(*ids), compare_u64);

    /* All of them running at once. */
    CHECKF(crowd_wait_started(&c, made), "%s: only %d of %d workers started", round, c.started,
           made);
    int running = 0;
    for (int i = 0; i < made; i++)
        running += state_of(jobs[i]) == BGJOB_STATE_RUNNING;
    CHECK_EQ(running, made);

    /* bgjob_list_jobs sees every one, RUNNING. */
    {
        size_t n = 0, cap;
        CHECK_RC(bgjob_list_jobs(NULL, 0, &n), BGJOB_RESULT_OK);
        CHECK(n >= (size_t)made);
        cap = n + 16;
        bgjob_job_entry *e = calloc(cap, sizeof(*e));
        REQUIRE(e != NULL);
        CHECK_RC(bgjob_list_jobs(e, cap, &n), BGJOB_RESULT_OK);
        int running_listed = 0;
        int found = count_listed(ids, made, e, n < cap ? n : cap, &running_listed);
        CHECKF(found == made, "%s: bgjob_list_jobs listed %d of %d jobs", round, found, made);
        CHECK_EQ(running_listed, made);
        free(e);
    }

    pthread_mutex_lock(&c.mu);
    c.released = true;
    pthread_cond_broadcast(&c.cv);
    pthread_mutex_unlock(&c.mu);

    int completed = 0;
    for (int i = 0; i < made; i++) {
        completed += wait_end(jobs[i]) == BGJOB_STATE_COMPLETED;
        CHECK_RC(bgjob_job_destroy(jobs[i]), BGJOB_RESULT_OK);
    }
    CHECK_EQ(completed, made);
    int once = 0, ran_once = 0, right_handle = 0;
    for (int i = 0; i < made; i++) {
        once += atomic_load(&m[i].t.frees) == 1;
        ran_once += atomic_load(&m[i].t.runs) == 1;
        right_handle += atomic_load(&m[i].t.job_seen) == jobs[i];
        CHECK_EQ(atomic_load(&m[i].t.free_early), 0);
    }
    CHECK_EQ(once, made);
    CHECK_EQ(ran_once, made);
    CHECK_EQ(right_handle, made);
    CHECK_EQ(atomic_load(&util_total_frees) - frees_before, made);
    CHECK_EQ(made, JOBS);
    /* Destroyed and done: gone from the list (once each worker thread has let
     * go of its job, which may be a moment after wait returned). */
    {
        int64_t deadline = now_ms() + LONG_MS;
        int left;
        for (;;) {
            size_t n = 0, cap;
            CHECK_RC(bgjob_list_jobs(NULL, 0, &n), BGJOB_RESULT_OK);
            cap = n + 16;
            bgjob_job_entry *e = calloc(cap, sizeof(*e));
            REQUIRE(e != NULL);
            CHECK_RC(bgjob_list_jobs(e, cap, &n), BGJOB_RESULT_OK);
            left = count_listed(ids, made, e, n < cap ? n : cap, NULL);
            free(e);
            if (left == 0 || now_ms() > deadline)
                break;
            sleep_ms(5);
        }
        CHECKF(left == 0, "%s: %d destroyed jobs still listed", round, left);
    }

    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);
    free(ids);
    free(jobs);
    free(m);
    return ok;
}

static bool test_thousand_concurrent_jobs(void)
{
    return run_crowd("first round");
}

/* Again, now that idle threads from the first round are about. */
static bool test_thousand_again(void)
{
    return run_crowd("second round");
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_thousand_concurrent_jobs),
        TAP_TEST(test_thousand_again),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

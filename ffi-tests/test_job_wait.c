/*
 * test_job_wait.c: bgjob_job_wait. A running job times out (never early), a zero
 * timeout polls, huge timeouts (INT64_MAX and friends) do not overflow into an
 * immediate time-out, negative ones wait forever, many threads may wait at
 * once, a job's own worker is refused, and when wait returns OK the userdata has
 * already been freed.
 */

#include "util.h"

#include <stdlib.h>
#include <string.h>

static bool test_timed_out_on_running_job(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    bgjob_job *job = NULL;
    int32_t s = -7;
    int64_t before, took;

    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    CHECK_RC(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    if (job == NULL) {
        gate_destroy(&g);
        return false;
    }
    CHECK_RC(bgjob_job_wait(job, 0, &s), BGJOB_RESULT_TIMED_OUT);
    CHECK_EQ(s, -7);
    before = now_ms();
    CHECK_RC(bgjob_job_wait(job, 100, &s), BGJOB_RESULT_TIMED_OUT);
    took = now_ms() - before;
    /* Not early (a lower bound only: a busy machine may make it late). */
    CHECKF(took >= 99, "a 100 ms wait returned after %lld ms", (long long)took);
    CHECK_EQ(s, -7);
    CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
    CHECK_RC(bgjob_job_wait(job, 1, NULL), BGJOB_RESULT_TIMED_OUT);
    gate_open(&g);
    CHECK_RC(bgjob_job_wait(job, -1, &s), BGJOB_RESULT_OK);
    CHECK_STATE(s, BGJOB_STATE_COMPLETED);
    /* The userdata was freed before wait returned. */
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_EQ(atomic_load(&t.free_early), 0);
    /* Waiting again on an ended job returns at once, with any timeout. */
    s = -7;
    CHECK_RC(bgjob_job_wait(job, 0, &s), BGJOB_RESULT_OK);
    CHECK_STATE(s, BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_wait(job, INT64_MAX, NULL), BGJOB_RESULT_OK);
    /* -1 is forever; other negatives are refused, ended job or not. */
    CHECK_RC(bgjob_job_wait(job, -1, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_wait(job, -2, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_wait(job, INT64_MIN, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

/* A job that never started never ends by itself. */
static bool test_timed_out_on_created_job(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    int32_t s = -7;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_wait(job, 30, &s), BGJOB_RESULT_TIMED_OUT);
    CHECK_EQ(s, -7);
    CHECK_STATE(state_of(job), BGJOB_STATE_CREATED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.runs), 0);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

struct opener {
    struct gate *g;
    int64_t delay_ms;
};

static void *open_later(void *arg)
{
    struct opener *o = arg;

    sleep_ms(o->delay_ms);
    gate_open(o->g);
    return NULL;
}

/* Waits with `timeout` on a job whose gate another thread opens 50 ms later:
 * the wait must block and then return OK (an overflowed deadline would time
 * out at once). */
static bool wait_with(int64_t timeout)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    struct opener o = { &g, 50 };
    pthread_t th;
    bgjob_job *job = NULL;
    int32_t s = -7;

    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    CHECK_RC(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    if (job == NULL) {
        gate_destroy(&g);
        return false;
    }
    if (pthread_create(&th, NULL, open_later, &o) != 0)
        abort();
    CHECK_RC(bgjob_job_wait(job, timeout, &s), BGJOB_RESULT_OK);
    CHECK_STATE(s, BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&t.frees), 1);
    pthread_join(th, NULL);
    if (s != BGJOB_STATE_COMPLETED)
        wait_end(job);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    if (!ok)
        tap_diag("timeout %lld", (long long)timeout);
    return ok;
}

static bool test_huge_timeouts(void)
{
    bool ok = true;
    static const int64_t timeouts[] = {
        INT64_MAX,
        INT64_MAX - 1,
        INT64_MAX / 1000,       /* seconds that overflow a nanosecond count */
        INT64_MAX / 1000000,
        (int64_t)1 << 62,
        (int64_t)UINT32_MAX + 1, /* past 32 bits */
        (int64_t)86400 * 1000 * 365 * 1000, /* a thousand years */
        60000,
    };

    for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++)
        CHECK(wait_with(timeouts[i]));
    return ok;
}

/* -1 waits forever; any other negative is refused (the header's one time
 * convention), on a running job too (an ended one: test_wait above). */
static bool test_minus_one_waits_forever(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    bgjob_job *job = NULL;

    CHECK(wait_with(-1));
    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    REQUIRE(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_wait(job, -2, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_wait(job, -1000, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_wait(job, INT64_MIN, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    gate_open(&g);
    CHECK_RC(bgjob_job_wait(job, -1, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

#define WAITERS 4

struct waiter {
    bgjob_job *job;
    bgjob_result rc;
    int32_t state;
    atomic_int *started;
};

static void *wait_thread(void *arg)
{
    struct waiter *w = arg;

    atomic_fetch_add(w->started, 1);
    w->rc = bgjob_job_wait(w->job, -1, &w->state);
    return NULL;
}

static bool test_many_waiters(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    bgjob_job *job = NULL;
    struct waiter w[WAITERS];
    pthread_t th[WAITERS];
    atomic_int started;

    tracker_init(&t);
    gate_init(&g);
    atomic_init(&started, 0);
    t.gate = &g;
    CHECK_RC(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    if (job == NULL) {
        gate_destroy(&g);
        return false;
    }
    for (int i = 0; i < WAITERS; i++) {
        w[i] = (struct waiter){ job, -1, -1, &started };
        if (pthread_create(&th[i], NULL, wait_thread, &w[i]) != 0)
            abort();
    }
    CHECK(poll_int_eq(&started, WAITERS));
    sleep_ms(20); /* let them block in wait (not needed for correctness) */
    gate_open(&g);
    for (int i = 0; i < WAITERS; i++) {
        pthread_join(th[i], NULL);
        CHECK_RC(w[i].rc, BGJOB_RESULT_OK);
        CHECK_STATE(w[i].state, BGJOB_STATE_COMPLETED);
    }
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

struct self_waiter {
    struct tracker t;
    atomic_int rc;
    atomic_int rc_forever;
    atomic_int destroy_rc;
};

static int32_t worker_waits_for_itself(void *userdata, bgjob_job *job)
{
    struct self_waiter *w = (struct self_waiter *)ud_tracker(userdata);
    int32_t s = -7;

    atomic_fetch_add(&w->t.runs, 1);
    atomic_store(&w->rc, bgjob_job_wait(job, 10, &s));
    /* Would wait forever for itself if it were not refused. */
    atomic_store(&w->rc_forever, bgjob_job_wait(job, -1, &s));
    atomic_store(&w->destroy_rc, bgjob_job_destroy(job));
    atomic_fetch_add(&w->t.returns, 1);
    return s == -7 ? 0 : 99;
}

/* The worker may not wait for (or destroy) its own job: refused, not a hang. */
static bool test_worker_waits_for_itself(void)
{
    bool ok = true;
    struct self_waiter w;
    bgjob_job *job = NULL;

    tracker_init(&w.t);
    atomic_init(&w.rc, -1);
    atomic_init(&w.rc_forever, -1);
    atomic_init(&w.destroy_rc, -1);
    CHECK_RC(job_create(&w.t, worker_waits_for_itself, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&w.rc), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(atomic_load(&w.rc_forever), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(atomic_load(&w.destroy_rc), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&w.t.frees), 1);
    return ok;
}

/* wait reports each terminal state: completed, failed, cancelled before start. */
static bool test_wait_returns_for_each_outcome(void)
{
    bool ok = true;
    static const int32_t rcs[] = { 0, 4 };
    static const int32_t states[] = { BGJOB_STATE_COMPLETED, BGJOB_STATE_FAILED };

    for (size_t i = 0; i < 2; i++) {
        struct tracker t;
        bgjob_job *job = NULL;
        int32_t s = -7;

        tracker_init(&t);
        t.rc = rcs[i];
        CHECK_RC(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
                 BGJOB_RESULT_OK);
        if (job == NULL)
            return false;
        CHECK_RC(bgjob_job_wait(job, LONG_MS, &s), BGJOB_RESULT_OK);
        CHECK_STATE(s, states[i]);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    }
    /* Cancelled before start: wait returns at once. */
    {
        struct tracker t;
        bgjob_job *job = NULL;
        int32_t s = -7;

        tracker_init(&t);
        CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED,
                            NULL, &job),
                 BGJOB_RESULT_OK);
        if (job == NULL)
            return false;
        CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_wait(job, 0, &s), BGJOB_RESULT_OK);
        CHECK_STATE(s, BGJOB_STATE_CANCELLED);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    }
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_timed_out_on_running_job),
        TAP_TEST(test_timed_out_on_created_job),
        TAP_TEST(test_huge_timeouts),
        TAP_TEST(test_minus_one_waits_forever),
        TAP_TEST(test_many_waiters),
        TAP_TEST(test_worker_waits_for_itself),
        TAP_TEST(test_wait_returns_for_each_outcome),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

/*
 * test_thread_start.c: what happens when no thread can be started (EAGAIN).
 *
 * Each case runs in a forked child, which reports through its exit status (0
 * when every check passed; its diagnostics go to the same TAP stream). The
 * parent has used bgjob before forking, so idle worker threads of the parent
 * exist in its pool; the child must forget them (the header: after fork the
 * child may use bgjob afresh) rather than hand its job to a thread that does
 * not exist in the child.
 *
 * To make thread creation fail, the child lowers RLIMIT_NPROC below its user's
 * process count. Root ignores that limit, so a root child first becomes
 * nobody (65534). The hard limit is kept, so a case can raise the soft limit
 * again and show that a job left CREATED by a failed start can still start.
 */

#include "util.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static void *noop_thread(void *arg)
{
    return arg;
}

/* Checks that the limit works: a plain pthread_create fails with EAGAIN. */
static bool threads_forbidden(void)
{
    bool ok = true;
    pthread_t th;
    int e = pthread_create(&th, NULL, noop_thread, NULL);

    if (e == 0)
        pthread_join(th, NULL);
    CHECKF(e == EAGAIN, "pthread_create under RLIMIT_NPROC returned %d (%s)", e, strerror(e));
    return ok;
}

/* Leaves idle worker threads in the parent's pool before any fork. */
static bool test_parent_uses_bgjob_first(void)
{
    bool ok = true;

    for (int i = 0; i < 4; i++) {
        struct tracker t;
        bgjob_job *job = NULL;

        tracker_init(&t);
        CHECK_RC(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
                 BGJOB_RESULT_OK);
        if (job == NULL)
            continue;
        CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&t.frees), 1);
    }
    return ok;
}

static bool child_runs_a_job(void)
{
    bool ok = true;

    for (int i = 0; i < 3; i++) {
        struct tracker t;
        bgjob_job *job = NULL;
        int32_t s = -1;

        tracker_init(&t);
        CHECK_RC(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, "in-child", &job),
                 BGJOB_RESULT_OK);
        if (job == NULL)
            return false;
        /* A job handed to one of the parent's idle threads would never run. */
        CHECK_RC(bgjob_job_wait(job, 10000, &s), BGJOB_RESULT_OK);
        CHECK_STATE(s, BGJOB_STATE_COMPLETED);
        CHECK_EQ(atomic_load(&t.runs), 1);
        CHECK_EQ(atomic_load(&t.frees), 1);
        if (s != BGJOB_STATE_COMPLETED)
            return false; /* leave the handle: the child exits */
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    }
    return ok;
}

/* After fork, with the parent's idle threads gone, the child runs jobs. */
static bool test_child_runs_jobs_after_fork(void)
{
    return in_child(60, child_runs_a_job);
}

static bool child_create_try_again(void)
{
    bool ok = true;
    size_t live_before;
    long frees_before;

    REQUIRE(forbid_threads());
    REQUIRE(threads_forbidden());
    live_before = live_jobs();
    frees_before = atomic_load(&util_total_frees);
    for (int type = BGJOB_JOB_TYPE_BOUNDED; type <= BGJOB_JOB_TYPE_UNBOUNDED; type++) {
        struct tracker t;
        bgjob_job *job = (bgjob_job *)&t;

        tracker_init(&t);
        CHECK_RC(job_create(&t, worker_return, 0, type, "no-thread", &job),
                 BGJOB_RESULT_TRY_AGAIN);
        /* job_out untouched, userdata freed once, worker never ran. */
        CHECK(job == (bgjob_job *)&t);
        CHECK_EQ(atomic_load(&t.frees), 1);
        CHECK_EQ(atomic_load(&t.runs), 0);
        /* Nothing left behind. */
        CHECK_EQ(live_jobs(), live_before);
    }
    sleep_ms(20);
    CHECK_EQ(atomic_load(&util_total_frees) - frees_before, 2);
    CHECK(allow_threads());
    return ok;
}

static bool test_create_try_again(void)
{
    return in_child(60, child_create_try_again);
}

static bool child_start_try_again(void)
{
    bool ok = true;
    struct tracker a, b;
    bgjob_job *ja = NULL, *jb = NULL;
    bgjob_info info;

    tracker_init(&a);
    tracker_init(&b);
    /* Made before the limit: deferred jobs need no thread until started. */
    CHECK_RC(job_create(&a, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &ja),
             BGJOB_RESULT_OK);
    REQUIRE(ja != NULL);
    REQUIRE(forbid_threads());
    REQUIRE(threads_forbidden());
    /* ...and while it is in force. */
    CHECK_RC(job_create(&b, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &jb),
             BGJOB_RESULT_OK);
    REQUIRE(jb != NULL);

    /* Job a: start fails and leaves it exactly as it was. */
    CHECK_RC(bgjob_job_start(ja), BGJOB_RESULT_TRY_AGAIN);
    CHECK_STATE(state_of(ja), BGJOB_STATE_CREATED);
    if (info_of(ja, &info)) {
        CHECK(!info.cancel_requested);
        CHECK(!info.pause_requested);
        CHECK_EQ(info.elapsed_ms, 0);
    }
    CHECK_EQ(atomic_load(&a.frees), 0);
    CHECK_RC(bgjob_job_start(ja), BGJOB_RESULT_TRY_AGAIN);
    CHECK_STATE(state_of(ja), BGJOB_STATE_CREATED);
    /* Still a CREATED job: pause is refused, updates are allowed. */
    CHECK_RC(bgjob_job_pause(ja), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_set_total(ja, 10), BGJOB_RESULT_OK);

    /* Job b: start fails, then destroy frees it once; it never ran. */
    CHECK_RC(bgjob_job_start(jb), BGJOB_RESULT_TRY_AGAIN);
    CHECK_STATE(state_of(jb), BGJOB_STATE_CREATED);
    CHECK_RC(bgjob_job_destroy(jb), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&b.frees), 1);
    CHECK_EQ(atomic_load(&b.runs), 0);

    /* With threads allowed again, job a starts and completes. */
    CHECK(allow_threads());
    CHECK_RC(bgjob_job_start(ja), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(ja), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&a.runs), 1);
    CHECK_EQ(atomic_load(&a.frees), 1);
    CHECK_RC(bgjob_job_destroy(ja), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&a.frees), 1);
    return ok;
}

static bool test_start_try_again(void)
{
    return in_child(60, child_start_try_again);
}

static bool child_cancel_after_failed_start(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    int32_t status = -1;

    tracker_init(&t);
    REQUIRE(forbid_threads());
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_TRY_AGAIN);
    /* A CREATED job again: cancel ends it without running, freeing it now. */
    CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_REQUESTED);
    CHECK_STATE(state_of(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_EQ(atomic_load(&t.runs), 0);
    CHECK(allow_threads());
    return ok;
}

static bool test_cancel_after_failed_start(void)
{
    return in_child(60, child_cancel_after_failed_start);
}

/* The parent's own pool still works after all those children. */
static bool test_parent_still_works(void)
{
    return test_parent_uses_bgjob_first();
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_parent_uses_bgjob_first),
        TAP_TEST(test_child_runs_jobs_after_fork),
        TAP_TEST(test_create_try_again),
        TAP_TEST(test_start_try_again),
        TAP_TEST(test_cancel_after_failed_start),
        TAP_TEST(test_parent_still_works),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

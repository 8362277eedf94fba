/*
 * test_cancel.c: cancel before start, while running, while paused, after the
 * end, twice, from 8 threads at once, racing completion; a worker that
 * completes after cancel was requested; bgjob_job_check_cancel.
 */

#include "util.h"

#include <stdlib.h>
#include <string.h>

static bool test_cancel_before_start(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    bgjob_info info;
    int32_t status = -1, code = -1;
    char buf[64] = "";

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(state_of(job), BGJOB_STATE_CREATED);
    CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_REQUESTED);
    /* Freed before cancel returned, and ended at once, without running. */
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_STATE(state_of(job), BGJOB_STATE_CANCELLED);
    if (info_of(job, &info)) {
        CHECK(info.cancel_requested);
        CHECK_STATE(info.state, BGJOB_STATE_CANCELLED);
        CHECK_EQ(info.elapsed_ms, 0);
    }
    CHECK_RC(bgjob_job_get_error(job, &code, buf, sizeof(buf), NULL), BGJOB_RESULT_OK);
    CHECK_EQ(code, 0);
    CHECK_STR(buf, "cancelled before start");
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_NOT_ALLOWED);
    status = -1;
    CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_ALREADY_FINISHED);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    sleep_ms(20);
    CHECK_EQ(atomic_load(&t.runs), 0);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

static bool test_cancel_while_running(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    bgjob_info info;
    int32_t status = -1;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_until_cancel, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(poll_long_ge(&t.iterations, 1));
    CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
    CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_REQUESTED);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&t.saw_cancel), 1);
    CHECK_EQ(atomic_load(&t.runs), 1);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_EQ(atomic_load(&t.free_early), 0);
    if (info_of(job, &info)) {
        CHECK_STATE(info.state, BGJOB_STATE_CANCELLED);
        CHECK(info.cancel_requested);
        CHECK_EQ(info.remaining_ms, 0);
    } else {
        ok = false;
    }
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* A paused worker parked at a pause point: cancel resumes it, so it sees the
 * cancel and the job ends CANCELLED. */
static bool test_cancel_while_paused(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    bgjob_info info;
    int32_t status = -1;
    long parked;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_until_cancel, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(poll_long_ge(&t.iterations, 1));
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_PAUSED);
    /* Give the worker time to reach its next pause point and park there. */
    parked = atomic_load(&t.iterations);
    sleep_ms(50);
    CHECK(atomic_load(&t.iterations) <= parked + 2);
    CHECK_EQ(atomic_load(&t.saw_cancel), 0);

    CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_REQUESTED);
    CHECK(state_of(job) != BGJOB_STATE_PAUSED);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&t.saw_cancel), 1);
    CHECK_EQ(atomic_load(&t.frees), 1);
    if (info_of(job, &info)) {
        CHECK(info.cancel_requested);
        CHECK(!info.pause_requested);
    }
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_cancel_after_finish(void)
{
    static const int32_t rcs[] = { 0, 5 };
    static const int32_t states[] = { BGJOB_STATE_COMPLETED, BGJOB_STATE_FAILED };
    bool ok = true;

    for (size_t i = 0; i < 2; i++) {
        struct tracker t;
        bgjob_job *job = NULL;
        bgjob_info info;
        int32_t status = -1;

        tracker_init(&t);
        t.rc = rcs[i];
        CHECK_RC(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
                 BGJOB_RESULT_OK);
        if (job == NULL)
            continue;
        CHECK_STATE(wait_end(job), states[i]);
        CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
        CHECK_EQ(status, BGJOB_CANCEL_STATUS_ALREADY_FINISHED);
        CHECK_STATE(state_of(job), states[i]);
        if (info_of(job, &info))
            CHECK(!info.cancel_requested);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&t.frees), 1);
    }
    return ok;
}

static bool test_cancel_twice(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    bgjob_job *job = NULL;
    int32_t status = -1;

    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    CHECK_RC(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    if (job == NULL) {
        gate_destroy(&g);
        return false;
    }
    CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_REQUESTED);
    status = -1;
    CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_ALREADY_REQUESTED);
    /* status_out may be NULL. */
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&t.saw_cancel), 1);
    status = -1;
    CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_ALREADY_FINISHED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    gate_destroy(&g);
    return ok;
}

#define CANCELLERS 8

struct canceller {
    bgjob_job *job;
    pthread_barrier_t *barrier;
    bgjob_result rc;
    int32_t status;
};

static void *cancel_thread(void *arg)
{
    struct canceller *c = arg;

    pthread_barrier_wait(c->barrier);
    c->rc = bgjob_job_cancel(c->job, &c->status);
    return NULL;
}

/* Runs CANCELLERS threads cancelling `job` at once; counts each status. */
static bool cancel_from_threads(bgjob_job *job, int counts[3])
{
    bool ok = true;
    pthread_barrier_t barrier;
    struct canceller c[CANCELLERS];
    pthread_t th[CANCELLERS];

    pthread_barrier_init(&barrier, NULL, CANCELLERS);
    for (int i = 0; i < CANCELLERS; i++) {
        c[i] = (struct canceller){ .job = job, .barrier = &barrier, .rc = -1, .status = -1 };
        if (pthread_create(&th[i], NULL, cancel_thread, &c[i]) != 0)
            abort();
    }
    counts[0] = counts[1] = counts[2] = 0;
    for (int i = 0; i < CANCELLERS; i++) {
        pthread_join(th[i], NULL);
        CHECK_RC(c[i].rc, BGJOB_RESULT_OK);
        CHECK(c[i].status >= 0 && c[i].status <= 2);
        if (c[i].status >= 0 && c[i].status <= 2)
            counts[c[i].status]++;
    }
    pthread_barrier_destroy(&barrier);
    return ok;
}

static bool test_cancel_from_8_threads_running(void)
{
    bool ok = true;

    for (int round = 0; round < 20; round++) {
        struct tracker t;
        struct gate g;
        bgjob_job *job = NULL;
        int counts[3];

        tracker_init(&t);
        gate_init(&g);
        t.gate = &g;
        CHECK_RC(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
                 BGJOB_RESULT_OK);
        if (job == NULL) {
            gate_destroy(&g);
            return false;
        }
        CHECK(cancel_from_threads(job, counts));
        CHECKF(counts[BGJOB_CANCEL_STATUS_REQUESTED] == 1 &&
                   counts[BGJOB_CANCEL_STATUS_ALREADY_REQUESTED] == CANCELLERS - 1,
               "round %d: %d REQUESTED, %d ALREADY_REQUESTED, %d ALREADY_FINISHED", round,
               counts[0], counts[1], counts[2]);
        gate_open(&g);
        CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&t.frees), 1);
        gate_destroy(&g);
        if (!ok)
            break;
    }
    return ok;
}

/* On a job that never started, the first cancel ends it: the others find it
 * requested or finished, and its userdata is freed once. */
static bool test_cancel_from_8_threads_created(void)
{
    bool ok = true;

    for (int round = 0; round < 20; round++) {
        struct tracker t;
        bgjob_job *job = NULL;
        int counts[3];

        tracker_init(&t);
        CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED,
                            NULL, &job),
                 BGJOB_RESULT_OK);
        if (job == NULL)
            return false;
        CHECK(cancel_from_threads(job, counts));
        CHECKF(counts[BGJOB_CANCEL_STATUS_REQUESTED] == 1,
               "round %d: %d REQUESTED, %d ALREADY_REQUESTED, %d ALREADY_FINISHED", round,
               counts[0], counts[1], counts[2]);
        CHECK_STATE(state_of(job), BGJOB_STATE_CANCELLED);
        CHECK_EQ(atomic_load(&t.frees), 1);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&t.runs), 0);
        CHECK_EQ(atomic_load(&t.frees), 1);
        if (!ok)
            break;
    }
    return ok;
}

/* The virJob proposal: a job may still complete after cancel was requested; getinfo then
 * still shows that cancel was requested. */
static bool test_completes_after_cancel(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    bgjob_job *job = NULL;
    bgjob_info info;
    int32_t status = -1, code = -1;

    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    t.succeed_on_cancel = true;
    t.rc = 0;
    CHECK_RC(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    if (job == NULL) {
        gate_destroy(&g);
        return false;
    }
    CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_REQUESTED);
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&t.saw_cancel), 1);
    if (info_of(job, &info)) {
        CHECK_STATE(info.state, BGJOB_STATE_COMPLETED);
        CHECK(info.cancel_requested);
        CHECK_EQ(info.percent, 100);
        CHECK_EQ(info.error_code, 0);
    }
    CHECK_RC(bgjob_job_get_error(job, &code, NULL, 0, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(code, 0);
    status = -1;
    CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_ALREADY_FINISHED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    gate_destroy(&g);
    return ok;
}

/* Cancel raced against a worker that returns at once: whatever the order, the
 * status agrees with the outcome. */
static bool test_cancel_races_completion(void)
{
    bool ok = true;
    int requested = 0, finished = 0;

    for (int i = 0; i < 200 && ok; i++) {
        struct tracker t;
        bgjob_job *job = NULL;
        bgjob_info info;
        int32_t status = -1;

        tracker_init(&t);
        t.rc = 0;
        CHECK_RC(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
                 BGJOB_RESULT_OK);
        if (job == NULL)
            return false;
        CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
        /* The worker never looks, and returns 0: it completes either way. */
        CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
        if (info_of(job, &info)) {
            if (status == BGJOB_CANCEL_STATUS_REQUESTED) {
                requested++;
                CHECK(info.cancel_requested);
            } else {
                CHECK_EQ(status, BGJOB_CANCEL_STATUS_ALREADY_FINISHED);
                finished++;
                CHECK(!info.cancel_requested);
            }
        }
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&t.runs), 1);
        CHECK_EQ(atomic_load(&t.frees), 1);
    }
    tap_diag("cancel met a running job %d times, a finished one %d times", requested, finished);
    return ok;
}

struct checker {
    struct tracker t;
    atomic_int before;
    atomic_int after;
};

static int32_t worker_check_cancel(void *userdata, bgjob_job *job)
{
    struct checker *c = (struct checker *)ud_tracker(userdata);

    atomic_fetch_add(&c->t.runs, 1);
    atomic_store(&c->before, bgjob_job_check_cancel(job));
    gate_wait(c->t.gate);
    atomic_store(&c->after, bgjob_job_check_cancel(job));
    atomic_fetch_add(&c->t.returns, 1);
    return atomic_load(&c->after) == BGJOB_RESULT_CANCELLED ? WORKER_CANCELLED_RC : 0;
}

/* bgjob_job_check_cancel: OK before, CANCELLED after, from the worker and from
 * any other thread; it never blocks, also while the job is paused. */
static bool test_check_cancel(void)
{
    bool ok = true;
    struct checker c;
    struct gate g;
    bgjob_job *job = NULL;

    tracker_init(&c.t);
    atomic_init(&c.before, -1);
    atomic_init(&c.after, -1);
    gate_init(&g);
    c.t.gate = &g;
    CHECK_RC(job_create(&c.t, worker_check_cancel, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    if (job == NULL) {
        gate_destroy(&g);
        return false;
    }
    CHECK(poll_int_eq(&c.before, BGJOB_RESULT_OK));
    CHECK_RC(bgjob_job_check_cancel(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_check_cancel(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_check_cancel(job), BGJOB_RESULT_CANCELLED);
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&c.after), BGJOB_RESULT_CANCELLED);
    CHECK_RC(bgjob_job_check_cancel(job), BGJOB_RESULT_CANCELLED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&c.t.frees), 1);
    gate_destroy(&g);
    return ok;
}

struct after_cancel {
    struct tracker t;
    atomic_int rc[8];
};

/* After the cancel, every progress call still succeeds (an update is not a
 * failure); only the checks report it. */
static int32_t worker_updates_after_cancel(void *userdata, bgjob_job *job)
{
    struct after_cancel *a = (struct after_cancel *)ud_tracker(userdata);

    atomic_fetch_add(&a->t.runs, 1);
    gate_wait(a->t.gate);
    atomic_store(&a->rc[0], bgjob_job_set_total(job, 100));
    atomic_store(&a->rc[1], bgjob_job_set_current(job, 10));
    atomic_store(&a->rc[2], bgjob_job_add_units(job, 5));
    atomic_store(&a->rc[3], bgjob_job_set_percent(job, 20));
    atomic_store(&a->rc[4], bgjob_job_set_eta(job, 1000));
    atomic_store(&a->rc[5], bgjob_job_set_phase(job, "cleaning up"));
    atomic_store(&a->rc[6], bgjob_job_check_cancel(job));
    atomic_store(&a->rc[7], bgjob_job_pause_point(job));
    atomic_fetch_add(&a->t.returns, 1);
    return WORKER_CANCELLED_RC;
}

static bool test_progress_after_cancel(void)
{
    static const int32_t want[8] = {
        BGJOB_RESULT_OK, BGJOB_RESULT_OK, BGJOB_RESULT_OK,        BGJOB_RESULT_OK,
        BGJOB_RESULT_OK, BGJOB_RESULT_OK, BGJOB_RESULT_CANCELLED, BGJOB_RESULT_CANCELLED,
    };
    bool ok = true;
    struct after_cancel a;
    struct gate g;
    bgjob_job *job = NULL;
    char phase[32] = "";
    bgjob_info info;

    tracker_init(&a.t);
    for (int i = 0; i < 8; i++)
        atomic_init(&a.rc[i], -1);
    gate_init(&g);
    a.t.gate = &g;
    CHECK_RC(job_create(&a.t, worker_updates_after_cancel, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    if (job == NULL) {
        gate_destroy(&g);
        return false;
    }
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    for (int i = 0; i < 8; i++)
        CHECKF(atomic_load(&a.rc[i]) == want[i], "call %d after cancel returned %s", i,
               bgjob_result_str(atomic_load(&a.rc[i])));
    /* ...and the updates took effect. */
    if (info_of(job, &info)) {
        CHECK_EQ(info.current, 15);
        CHECK_EQ(info.total, 100);
    }
    CHECK_RC(bgjob_job_get_phase(job, phase, sizeof(phase), NULL), BGJOB_RESULT_OK);
    CHECK_STR(phase, "cleaning up");
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&a.t.frees), 1);
    gate_destroy(&g);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_cancel_before_start),
        TAP_TEST(test_cancel_while_running),
        TAP_TEST(test_cancel_while_paused),
        TAP_TEST(test_cancel_after_finish),
        TAP_TEST(test_cancel_twice),
        TAP_TEST(test_cancel_from_8_threads_running),
        TAP_TEST(test_cancel_from_8_threads_created),
        TAP_TEST(test_completes_after_cancel),
        TAP_TEST(test_cancel_races_completion),
        TAP_TEST(test_check_cancel),
        TAP_TEST(test_progress_after_cancel),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

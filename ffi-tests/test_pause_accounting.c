/*
 * test_pause_accounting.c: the user pause flag beside the internal pause
 * counter (QEMU's user_paused and pause_count; bgjob_job_pause_internal is
 * its drain).
 *
 * An internal pause keeps the state RUNNING and shows in info.pause_count;
 * the worker parks at its next pause point or progress call and runs again
 * only when the user pause and every internal pause are gone. Pausing twice,
 * resuming a job that is not user-paused and an unbalanced internal resume
 * are refused with NOT_ALLOWED and change nothing. Internally paused time is
 * not counted in elapsed. A cancel ends the job whatever pauses are in force.
 * An internal pause is allowed from CREATED to WAITING and refused once the
 * job has ended, as the verb table says.
 *
 * "Parks" is checked without timing assumptions: after the pause call
 * returned, the worker may finish the loop turn it is in and one more; a
 * worker that did not park would make hundreds in the time the case waits.
 */

#include "util.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

#define PARK_SLACK 2

/* The worker made at most PARK_SLACK more loop turns over 200 ms. */
static bool parked(atomic_long *iterations)
{
    long before = atomic_load(iterations);
    sleep_ms(200);
    long after = atomic_load(iterations);
    if (after - before > PARK_SLACK) {
        tap_diag("worker made %ld loop turns while paused", after - before);
        return false;
    }
    return true;
}

/* The worker runs: its loop count moves on. */
static bool runs(atomic_long *iterations)
{
    return poll_long_ge(iterations, atomic_load(iterations) + 5);
}

/* Checks state, user pause and internal pause count in one snapshot. */
static bool pauses_are(bgjob_job *job, int32_t state, bool user, uint32_t count)
{
    bool ok = true;
    bgjob_info info;

    if (!info_of(job, &info))
        return false;
    CHECK_STATE(info.state, state);
    CHECK_EQ(info.pause_requested, user);
    CHECK_EQ(info.pause_count, count);
    CHECK_EQ(info.iostatus, BGJOB_IOSTATUS_OK);
    return ok;
}

static bool start_loop(struct tracker *t, bgjob_worker_callback w, uint32_t flags, bgjob_job **job)
{
    bool ok = true;

    tracker_init(t);
    CHECK_RC(job_create(t, w, flags, BGJOB_JOB_TYPE_BOUNDED, NULL, job), BGJOB_RESULT_OK);
    REQUIRE(*job != NULL);
    if (!(flags & BGJOB_CREATE_DEFER_START))
        CHECK(poll_long_ge(&t->iterations, 1));
    return ok;
}

static bool end_cancelled(struct tracker *t, bgjob_job *job)
{
    bool ok = true;

    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&t->saw_cancel), 1);
    CHECK_EQ(atomic_load(&t->frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_internal_pause_counts(void)
{
    bool ok = true;
    static struct tracker t;
    bgjob_job *job = NULL;

    REQUIRE(start_loop(&t, worker_until_cancel, 0, &job));
    CHECK(pauses_are(job, BGJOB_STATE_RUNNING, false, 0));
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    /* The state stays RUNNING; the count shows the pause; the worker parks. */
    CHECK(pauses_are(job, BGJOB_STATE_RUNNING, false, 1));
    CHECK(parked(&t.iterations));
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    CHECK(pauses_are(job, BGJOB_STATE_RUNNING, false, 3));
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_OK);
    CHECK(pauses_are(job, BGJOB_STATE_RUNNING, false, 2));
    CHECK(parked(&t.iterations));
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_OK);
    CHECK(pauses_are(job, BGJOB_STATE_RUNNING, false, 1));
    CHECK(parked(&t.iterations));
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_OK);
    CHECK(pauses_are(job, BGJOB_STATE_RUNNING, false, 0));
    CHECK(runs(&t.iterations));
    /* Unbalanced: refused, nothing changes, the worker keeps running. */
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK(pauses_are(job, BGJOB_STATE_RUNNING, false, 0));
    CHECK(runs(&t.iterations));
    CHECK(end_cancelled(&t, job));
    return ok;
}

/* The worker of a job paused both ways runs only once both are gone, in
 * either order. */
static bool test_user_and_internal_must_both_clear(void)
{
    bool ok = true;
    static struct tracker t;
    bgjob_job *job = NULL;

    REQUIRE(start_loop(&t, worker_until_cancel, 0, &job));

    /* User pause first, internal second; user resume first. */
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    CHECK(pauses_are(job, BGJOB_STATE_PAUSED, true, 1));
    CHECK(parked(&t.iterations));
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    /* RUNNING as far as the user sees, but still held by the internal pause. */
    CHECK(pauses_are(job, BGJOB_STATE_RUNNING, false, 1));
    CHECK(parked(&t.iterations));
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_OK);
    CHECK(pauses_are(job, BGJOB_STATE_RUNNING, false, 0));
    CHECK(runs(&t.iterations));

    /* Internal first, user second; internal resume first. */
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    CHECK(parked(&t.iterations));
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK(pauses_are(job, BGJOB_STATE_PAUSED, true, 1));
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_OK);
    CHECK(pauses_are(job, BGJOB_STATE_PAUSED, true, 0));
    CHECK(parked(&t.iterations));
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK(pauses_are(job, BGJOB_STATE_RUNNING, false, 0));
    CHECK(runs(&t.iterations));
    CHECK(end_cancelled(&t, job));
    return ok;
}

/* Progress calls are pause points for the internal pause too. */
static bool test_internal_pause_parks_progress_calls(void)
{
    bool ok = true;
    static struct tracker t;
    bgjob_job *job = NULL;
    bgjob_info a, b;

    REQUIRE(start_loop(&t, worker_progress, 0, &job));
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    CHECK(parked(&t.iterations));
    /* Units stand still while parked (one call may land after the pause). */
    REQUIRE(info_of(job, &a));
    sleep_ms(100);
    REQUIRE(info_of(job, &b));
    CHECKF(b.current - a.current <= PARK_SLACK * t.step, "units went from %llu to %llu",
           (unsigned long long)a.current, (unsigned long long)b.current);
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_OK);
    CHECK(runs(&t.iterations));
    CHECK(end_cancelled(&t, job));
    return ok;
}

/* Refused verbs return NOT_ALLOWED and change nothing. */
static bool test_refusals_change_nothing(void)
{
    bool ok = true;
    static struct tracker t;
    bgjob_job *job = NULL;

    REQUIRE(start_loop(&t, worker_until_cancel, 0, &job));
    /* Resume a job that is not paused at all. */
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK(pauses_are(job, BGJOB_STATE_RUNNING, false, 0));
    CHECK(runs(&t.iterations));
    /* Resume a job that is only internally paused: the user resume does not
     * take the internal pause away. */
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK(pauses_are(job, BGJOB_STATE_RUNNING, false, 1));
    CHECK(parked(&t.iterations));
    /* Pause twice. */
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK(pauses_are(job, BGJOB_STATE_PAUSED, true, 1));
    /* One user resume undoes the one user pause; a second is refused. */
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK(pauses_are(job, BGJOB_STATE_RUNNING, false, 1));
    CHECK(parked(&t.iterations));
    /* Unbalanced internal resume after the balanced one. */
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK(pauses_are(job, BGJOB_STATE_RUNNING, false, 0));
    CHECK(runs(&t.iterations));
    /* Invalid handles. */
    CHECK_RC(bgjob_job_pause_internal(NULL), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_resume_internal(NULL), BGJOB_RESULT_INVALID_HANDLE);
    CHECK(end_cancelled(&t, job));
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_INVALID_HANDLE);
    return ok;
}

/* Internally paused time is not active time. */
static bool test_internal_pause_time_not_counted(void)
{
    bool ok = true;
    static struct tracker t;
    bgjob_job *job = NULL;
    bgjob_info a, b, d;
    int64_t start, paused_after, resumed_before, end;

    start = now_ms();
    REQUIRE(start_loop(&t, worker_until_cancel, 0, &job));
    sleep_ms(20);
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    paused_after = now_ms();
    REQUIRE(info_of(job, &a));
    sleep_ms(300);
    REQUIRE(info_of(job, &b));
    /* Stands still while paused (10 ms allows for rounding). */
    CHECKF(b.elapsed_ms - a.elapsed_ms <= 10, "elapsed went from %lld to %lld ms while paused",
           (long long)a.elapsed_ms, (long long)b.elapsed_ms);
    CHECK(b.elapsed_ms >= a.elapsed_ms);
    /* A second internal pause and a user pause on top change nothing. */
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_OK);
    sleep_ms(100);
    REQUIRE(info_of(job, &d));
    CHECKF(d.elapsed_ms - a.elapsed_ms <= 10, "elapsed went from %lld to %lld ms while paused",
           (long long)a.elapsed_ms, (long long)d.elapsed_ms);
    resumed_before = now_ms();
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_OK);
    CHECK(runs(&t.iterations));
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    end = now_ms();
    REQUIRE(info_of(job, &d));
    /* Over the whole life: no more than the wall time minus the pause. */
    CHECKF(d.elapsed_ms <= (end - start) - (resumed_before - paused_after) + 10,
           "elapsed %lld ms, wall %lld ms, paused at least %lld ms", (long long)d.elapsed_ms,
           (long long)(end - start), (long long)(resumed_before - paused_after));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* A worker parked in a cancellable sleep. */
static int32_t worker_sleeps(void *ud, bgjob_job *job)
{
    struct tracker *t = ud_tracker(ud);

    atomic_fetch_add(&t->runs, 1);
    for (;;) {
        atomic_fetch_add(&t->iterations, 1);
        bgjob_result r = bgjob_job_sleep(job, 1);
        if (r == BGJOB_RESULT_CANCELLED)
            break;
        if (r != BGJOB_RESULT_OK) {
            atomic_store(&t->worker_rc, r);
            break;
        }
    }
    atomic_store(&t->saw_cancel, 1);
    atomic_fetch_add(&t->returns, 1);
    return WORKER_CANCELLED_RC;
}

/* A cancel ends the job whatever pauses are in force. */
static bool test_cancel_overrides_pauses(void)
{
    bool ok = true;
    static struct tracker t;
    bgjob_job *job = NULL;
    bgjob_worker_callback workers[] = { worker_until_cancel, worker_progress, worker_sleeps };

    for (size_t w = 0; w < sizeof workers / sizeof workers[0]; w++) {
        /* Internal pause only. */
        REQUIRE(start_loop(&t, workers[w], 0, &job));
        CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
        CHECK(parked(&t.iterations));
        CHECK(end_cancelled(&t, job));

        /* Two internal pauses and a user pause. */
        REQUIRE(start_loop(&t, workers[w], 0, &job));
        CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
        CHECK(parked(&t.iterations));
        CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
        /* The cancel undid the user pause; the internal ones are the caller's
         * to balance, but they no longer hold the worker. */
        CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
        CHECK_EQ(atomic_load(&t.saw_cancel), 1);
        CHECK_EQ(atomic_load(&t.frees), 1);
        CHECK_EQ(atomic_load(&t.worker_rc), -1);
        /* Ended: the internal pauses can no longer be touched. */
        CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_NOT_ALLOWED);
        CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_NOT_ALLOWED);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    }
    return ok;
}

/* Drain from CREATED to WAITING; refused once ended, as the table says. */
static bool test_internal_pause_by_state(void)
{
    bool ok = true;
    static struct tracker t;
    bgjob_job *job = NULL;
    bool allowed = false;

    /* CREATED: the pause holds the worker from its first pause point. */
    REQUIRE(start_loop(&t, worker_until_cancel, BGJOB_CREATE_DEFER_START, &job));
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    CHECK(pauses_are(job, BGJOB_STATE_CREATED, false, 1));
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    CHECK(poll_long_ge(&t.calls, 1));
    CHECK(pauses_are(job, BGJOB_STATE_RUNNING, false, 1));
    CHECK(parked(&t.iterations));
    CHECK_EQ(atomic_load(&t.iterations), 0);
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_OK);
    CHECK(runs(&t.iterations));
    CHECK(end_cancelled(&t, job));

    /* CREATED, paused internally, destroyed without starting: ends cleanly. */
    REQUIRE(start_loop(&t, worker_until_cancel, BGJOB_CREATE_DEFER_START, &job));
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_EQ(atomic_load(&t.runs), 0);

    /* PENDING (manual finalize, work done). */
    tracker_init(&t);
    t.rc = 0;
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_MANUAL_FINALIZE, BGJOB_JOB_TYPE_BOUNDED,
                        NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(poll_state(job, BGJOB_STATE_PENDING));
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    CHECK(pauses_are(job, BGJOB_STATE_PENDING, false, 1));
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK(pauses_are(job, BGJOB_STATE_PENDING, false, 0));
    CHECK_RC(bgjob_job_finalize(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);

    /* Terminal: refused, in agreement with the exported table. */
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK(pauses_are(job, BGJOB_STATE_COMPLETED, false, 0));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    tracker_init(&t);
    t.rc = 7;
    CHECK_RC(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK(pauses_are(job, BGJOB_STATE_FAILED, false, 0));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    const int32_t expect[BGJOB_STATE_COUNT] = {
        [BGJOB_STATE_CREATED] = 1,   [BGJOB_STATE_RUNNING] = 1, [BGJOB_STATE_PAUSED] = 1,
        [BGJOB_STATE_WAITING] = 1,   [BGJOB_STATE_COMPLETED] = 0, [BGJOB_STATE_FAILED] = 0,
        [BGJOB_STATE_CANCELLED] = 0, [BGJOB_STATE_READY] = 1,     [BGJOB_STATE_STANDBY] = 1,
        [BGJOB_STATE_PENDING] = 1,   [BGJOB_STATE_ABORTING] = 1,
    };
    for (int32_t s = 0; s < BGJOB_STATE_COUNT; s++) {
        CHECK_RC(bgjob_verb_allowed(BGJOB_VERB_DRAIN, s, &allowed), BGJOB_RESULT_OK);
        CHECKF(allowed == (expect[s] != 0), "drain in %s: table says %d", bgjob_state_str(s),
               (int)allowed);
    }
    return ok;
}

/* Many threads pausing and resuming internally at once: the count stays
 * balanced and the worker runs at the end. */
#define DRAINERS 4
#define DRAIN_ROUNDS 2000

static atomic_int drain_errors;

static void *drainer(void *arg)
{
    bgjob_job *job = arg;

    for (int i = 0; i < DRAIN_ROUNDS; i++) {
        if (bgjob_job_pause_internal(job) != BGJOB_RESULT_OK)
            atomic_fetch_add(&drain_errors, 1);
        if (i % 3 == 0)
            sched_yield();
        if (bgjob_job_resume_internal(job) != BGJOB_RESULT_OK)
            atomic_fetch_add(&drain_errors, 1);
    }
    return NULL;
}

static bool test_internal_pause_concurrent(void)
{
    bool ok = true;
    static struct tracker t;
    bgjob_job *job = NULL;
    pthread_t th[DRAINERS];

    REQUIRE(start_loop(&t, worker_progress, 0, &job));
    atomic_store(&drain_errors, 0);
    for (int i = 0; i < DRAINERS; i++)
        REQUIRE(pthread_create(&th[i], NULL, drainer, job) == 0);
    for (int i = 0; i < DRAINERS; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(atomic_load(&drain_errors), 0);
    CHECK(pauses_are(job, BGJOB_STATE_RUNNING, false, 0));
    CHECK(runs(&t.iterations));
    CHECK(end_cancelled(&t, job));
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_internal_pause_counts),
        TAP_TEST(test_user_and_internal_must_both_clear),
        TAP_TEST(test_internal_pause_parks_progress_calls),
        TAP_TEST(test_refusals_change_nothing),
        TAP_TEST(test_internal_pause_time_not_counted),
        TAP_TEST(test_cancel_overrides_pauses),
        TAP_TEST(test_internal_pause_by_state),
        TAP_TEST(test_internal_pause_concurrent),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

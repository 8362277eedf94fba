/*
 * test_pause.c: pause and resume rules (pausing twice and resuming a job that is
 * not paused are refused), the worker parks at pause points and at each progress
 * call while paused, elapsed time and a worker-set ETA stand still while paused,
 * and a paused worker that returns without a pause point still ends the job.
 *
 * "Parks" is checked without timing assumptions: after pause() returns, the
 * worker may finish at most the call it is in and one more; a worker that did
 * not park would make hundreds of calls in the 300 ms the case waits.
 */

#include "util.h"

#include <stdlib.h>
#include <string.h>

/* How many calls a worker may still complete after pause() has returned: the
 * one in progress, and one that read the pause flag just before it was set. */
#define PARK_SLACK 2

static bool test_pause_resume_rules(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    bgjob_info info;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_until_cancel, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED,
                        NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    /* Not yet started: neither verb applies. */
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_STATE(state_of(job), BGJOB_STATE_CREATED);
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    CHECK(poll_long_ge(&t.iterations, 1));

    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_PAUSED);
    if (info_of(job, &info)) {
        CHECK(info.pause_requested);
        CHECK_STATE(info.state, BGJOB_STATE_PAUSED);
    }
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_STATE(state_of(job), BGJOB_STATE_PAUSED);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
    if (info_of(job, &info))
        CHECK(!info.pause_requested);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_NOT_ALLOWED);
    /* Pause and resume again: a job can be paused many times. */
    for (int i = 0; i < 5; i++) {
        CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    }

    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    /* Ended: neither verb applies. */
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_STATE(state_of(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

static bool test_elapsed_stops_while_paused(void)
{
    bool ok = true;
    /* Static: the early returns below leave the worker running. */
    static struct tracker t;
    bgjob_job *job = NULL;
    bgjob_info a, b, c, d;
    int64_t start, paused_after, resumed_before, end;

    tracker_init(&t);
    start = now_ms();
    CHECK_RC(job_create(&t, worker_until_cancel, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(poll_long_ge(&t.iterations, 1));
    sleep_ms(20);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    paused_after = now_ms();
    REQUIRE(info_of(job, &a));
    sleep_ms(300);
    REQUIRE(info_of(job, &b));
    /* Paused time is not counted at all; 5 ms allows for rounding. */
    CHECKF(b.elapsed_ms - a.elapsed_ms <= 5, "elapsed went from %lld to %lld ms while paused",
           (long long)a.elapsed_ms, (long long)b.elapsed_ms);
    CHECK(b.elapsed_ms >= a.elapsed_ms);
    resumed_before = now_ms();
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    sleep_ms(100);
    REQUIRE(info_of(job, &c));
    /* Running again: at least the 100 ms slept are counted (monotonic clock). */
    CHECKF(c.elapsed_ms >= b.elapsed_ms + 95, "elapsed %lld ms, 100 ms after resume at %lld",
           (long long)c.elapsed_ms, (long long)b.elapsed_ms);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    end = now_ms();
    REQUIRE(info_of(job, &d));
    /* Over the whole life: no more than the wall time minus the pause. */
    CHECKF(d.elapsed_ms <= (end - start) - (resumed_before - paused_after) + 5,
           "elapsed %lld ms, wall %lld ms, paused at least %lld ms", (long long)d.elapsed_ms,
           (long long)(end - start), (long long)(resumed_before - paused_after));
    /* Stopped at the end. */
    sleep_ms(30);
    REQUIRE(info_of(job, &a));
    CHECK_EQ(a.elapsed_ms, d.elapsed_ms);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

enum call_kind {
    CALL_PAUSE_POINT,
    CALL_ADD_UNITS,
    CALL_SET_CURRENT,
    CALL_SET_TOTAL,
    CALL_SET_PERCENT,
    CALL_SET_ETA,
    CALL_KINDS
};

static const char *const call_names[CALL_KINDS] = {
    "bgjob_job_pause_point", "bgjob_job_add_units", "bgjob_job_set_current",
    "bgjob_job_set_total", "bgjob_job_set_percent", "bgjob_job_set_eta",
};

struct parker {
    struct tracker t; /* first: the token points here */
    enum call_kind kind;
};

/* Makes one kind of call in a loop until cancelled. */
static int32_t worker_calls(void *userdata, bgjob_job *job)
{
    struct parker *p = (struct parker *)ud_tracker(userdata);
    uint64_t i = 0;

    atomic_fetch_add(&p->t.runs, 1);
    while (bgjob_job_check_cancel(job) == BGJOB_RESULT_OK) {
        bgjob_result r = BGJOB_RESULT_OK;

        i++;
        atomic_fetch_add(&p->t.calls, 1);
        switch (p->kind) {
        case CALL_PAUSE_POINT:
            r = bgjob_job_pause_point(job);
            if (r == BGJOB_RESULT_CANCELLED)
                r = BGJOB_RESULT_OK;
            break;
        case CALL_ADD_UNITS:
            r = bgjob_job_add_units(job, 1);
            break;
        case CALL_SET_CURRENT:
            r = bgjob_job_set_current(job, i);
            break;
        case CALL_SET_TOTAL:
            r = bgjob_job_set_total(job, i);
            break;
        case CALL_SET_PERCENT:
            r = bgjob_job_set_percent(job, (int32_t)(i % 101));
            break;
        case CALL_SET_ETA:
            r = bgjob_job_set_eta(job, (int64_t)(100000 - i % 1000));
            break;
        case CALL_KINDS:
            break;
        }
        atomic_fetch_add(&p->t.iterations, 1);
        if (r != BGJOB_RESULT_OK) {
            atomic_store(&p->t.worker_rc, r);
            break;
        }
        sleep_us(100);
    }
    atomic_fetch_add(&p->t.returns, 1);
    return WORKER_CANCELLED_RC;
}

static bool park_case(enum call_kind kind)
{
    bool ok = true;
    struct parker p;
    bgjob_job *job = NULL;
    long at_pause, later, resumed;

    tracker_init(&p.t);
    p.kind = kind;
    CHECK_RC(job_create(&p.t, worker_calls, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(poll_long_ge(&p.t.iterations, 3));
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    at_pause = atomic_load(&p.t.iterations);
    sleep_ms(300);
    later = atomic_load(&p.t.iterations);
    CHECKF(later <= at_pause + PARK_SLACK,
           "%s: %ld calls returned while paused (at most %d may)", call_names[kind],
           later - at_pause, PARK_SLACK);
    CHECK_STATE(state_of(job), BGJOB_STATE_PAUSED);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    resumed = atomic_load(&p.t.iterations);
    CHECK(poll_long_ge(&p.t.iterations, resumed + 3));
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(atomic_load(&p.t.worker_rc), -1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&p.t.frees), 1);
    return ok;
}

static bool test_parks_at_pause_point(void)
{
    return park_case(CALL_PAUSE_POINT);
}

static bool test_parks_at_add_units(void)
{
    return park_case(CALL_ADD_UNITS);
}

static bool test_parks_at_set_current(void)
{
    return park_case(CALL_SET_CURRENT);
}

static bool test_parks_at_set_total(void)
{
    return park_case(CALL_SET_TOTAL);
}

static bool test_parks_at_set_percent(void)
{
    return park_case(CALL_SET_PERCENT);
}

static bool test_parks_at_set_eta(void)
{
    return park_case(CALL_SET_ETA);
}

/* Progress stands still while paused: the parked worker's units are not
 * counted until it is resumed. */
static bool test_progress_stands_still_while_paused(void)
{
    bool ok = true;
    static struct tracker t; /* see test_elapsed_stops_while_paused */
    bgjob_job *job = NULL;
    bgjob_info a, b;

    tracker_init(&t);
    t.step = 3;
    CHECK_RC(job_create(&t, worker_progress, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(poll_long_ge(&t.iterations, 2));
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    sleep_ms(50);
    REQUIRE(info_of(job, &a));
    sleep_ms(200);
    REQUIRE(info_of(job, &b));
    CHECKF(b.current <= a.current + PARK_SLACK * t.step, "current went from %llu to %llu",
           (unsigned long long)a.current, (unsigned long long)b.current);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK(poll_long_ge(&t.iterations, atomic_load(&t.iterations) + 3));
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    REQUIRE(info_of(job, &b));
    /* Every call the worker made was counted once. */
    CHECK_EQ(b.current, (uint64_t)atomic_load(&t.iterations) * t.step);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

/* A worker-set ETA counts down with active time only. */
static bool test_eta_stands_still_while_paused(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    bgjob_job *job = NULL;
    bgjob_info a, b, c;

    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    CHECK_RC(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    if (job == NULL) {
        gate_destroy(&g);
        return false;
    }
    CHECK_RC(bgjob_job_set_eta(job, 100000), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    if (info_of(job, &a)) {
        CHECK(a.remaining_ms <= 100000 && a.remaining_ms > 90000);
        sleep_ms(200);
        if (info_of(job, &b))
            CHECKF(a.remaining_ms - b.remaining_ms <= 5,
                   "remaining went from %lld to %lld ms while paused",
                   (long long)a.remaining_ms, (long long)b.remaining_ms);
        CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
        sleep_ms(100);
        if (info_of(job, &c))
            CHECKF(c.remaining_ms <= b.remaining_ms - 95,
                   "remaining %lld ms, 100 ms after resume at %lld",
                   (long long)c.remaining_ms, (long long)b.remaining_ms);
    } else {
        ok = false;
        bgjob_job_resume(job);
    }
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

/* A paused job whose worker returns without reaching a pause point ends as
 * usual, and is no longer paused. */
static bool test_paused_worker_returns(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    bgjob_job *job = NULL;
    bgjob_info info;
    int64_t created, paused_after, opened, end;

    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    created = now_ms();
    CHECK_RC(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    if (job == NULL) {
        gate_destroy(&g);
        return false;
    }
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    paused_after = now_ms();
    sleep_ms(200);
    opened = now_ms();
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    end = now_ms();
    if (info_of(job, &info)) {
        CHECK(!info.pause_requested);
        CHECK(info.elapsed_ms >= 0);
        /* The pause, which lasted until the end, is not counted. */
        CHECKF(info.elapsed_ms <= (end - created) - (opened - paused_after) + 5,
               "elapsed %lld ms; alive %lld ms, paused at least %lld ms",
               (long long)info.elapsed_ms, (long long)(end - created),
               (long long)(opened - paused_after));
    }
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    gate_destroy(&g);
    return ok;
}

struct self_pauser {
    struct tracker t;
    atomic_int pause_rc;
    atomic_int point_rc;
};

/* The worker pauses its own job, then parks at its pause point until the
 * caller resumes it. */
static int32_t worker_pauses_itself(void *userdata, bgjob_job *job)
{
    struct self_pauser *s = (struct self_pauser *)ud_tracker(userdata);

    atomic_fetch_add(&s->t.runs, 1);
    atomic_store(&s->pause_rc, bgjob_job_pause(job));
    atomic_store(&s->point_rc, bgjob_job_pause_point(job));
    atomic_fetch_add(&s->t.returns, 1);
    return 0;
}

static bool test_worker_pauses_itself(void)
{
    bool ok = true;
    static struct self_pauser s; /* see test_elapsed_stops_while_paused */
    bgjob_job *job = NULL;

    tracker_init(&s.t);
    atomic_init(&s.pause_rc, -1);
    atomic_init(&s.point_rc, -1);
    CHECK_RC(job_create(&s.t, worker_pauses_itself, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    REQUIRE(poll_int_eq(&s.pause_rc, BGJOB_RESULT_OK));
    sleep_ms(50);
    CHECK_STATE(state_of(job), BGJOB_STATE_PAUSED);
    CHECK_EQ(atomic_load(&s.point_rc), -1);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&s.point_rc), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&s.t.frees), 1);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_pause_resume_rules),
        TAP_TEST(test_elapsed_stops_while_paused),
        TAP_TEST(test_parks_at_pause_point),
        TAP_TEST(test_parks_at_add_units),
        TAP_TEST(test_parks_at_set_current),
        TAP_TEST(test_parks_at_set_total),
        TAP_TEST(test_parks_at_set_percent),
        TAP_TEST(test_parks_at_set_eta),
        TAP_TEST(test_progress_stands_still_while_paused),
        TAP_TEST(test_eta_stands_still_while_paused),
        TAP_TEST(test_paused_worker_returns),
        TAP_TEST(test_worker_pauses_itself),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

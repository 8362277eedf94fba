/*
 * test_worker_record.c: the worker's own-handle fast path, attacked from C.
 *
 * A worker's progress calls on its own handle skip the handle table (the
 * library remembers, per thread, which job's worker runs there). These cases
 * check that this shortcut answers exactly as the header says and never for
 * anything else:
 *
 * - after the worker detaches its own handle, the worker may keep using it
 *   until it returns, while every other thread gets INVALID_HANDLE;
 * - a worker's call on ANOTHER job's handle is an ordinary call: it never
 *   parks on that job's pause, and a destroyed one is INVALID_HANDLE;
 * - updates are pause points on the worker's own thread (and are not with
 *   BGJOB_CREATE_UPDATES_NEVER_PARK), counting the unit of the parked call;
 * - the worker's own cancel checks and pause points (answered from the record
 *   while nothing is pending) still see a cancel and park on a pause, and on
 *   another job's handle answer for that job, not the worker's;
 * - the first check, pause point or update after a cancel, a user pause or an
 *   internal pause (ordered by gates, so nothing can be cached) reports the
 *   cancel or parks; a READY worker woken by its wake fd parks for a pause
 *   (STANDBY) and reports a (soft) cancel, and only a complete request is
 *   answered OK at once;
 * - the worker's handle released by its creator while a reference lives still
 *   answers for its job on its own thread (pause and cancel seen), and is
 *   INVALID_HANDLE elsewhere; and once its table slot is given to a new job
 *   (a handle that differs from it only in its generation), each of the two
 *   answers for its own job on the worker's thread;
 * - on a worker's thread, NULL and made-up handles near its own (another
 *   generation, another table's tag, the bare slot) are INVALID_HANDLE;
 * - a worker driving an external job gets that job's answers on its handle
 *   (pause point refused, updates never parked, its own cancel), and the
 *   external job's completion, run on the worker's thread, sees the worker's
 *   job with nothing pending;
 * - a pool thread reused for a later job keeps nothing of the earlier one: the
 *   earlier (destroyed) handle is INVALID_HANDLE there, never a shortcut to
 *   freed memory;
 * - a completion callback, run on the worker thread after the worker
 *   returned, is not the worker: once it destroyed its own handle, calls on
 *   that handle are INVALID_HANDLE;
 * - a virJob worker's updates through virJobGetBgjob are refused once it
 *   declared its outcome.
 */

#include "util.h"
#include "virjob.h"

#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static long tid(void)
{
    return (long)syscall(SYS_gettid);
}

static bgjob_job *start_job(bgjob_worker_callback worker, void *userdata, uint32_t flags)
{
    bgjob_job_options o;
    bgjob_job *job = NULL;

    if (bgjob_job_options_init(&o, sizeof o) != BGJOB_RESULT_OK)
        return NULL;
    o.flags = flags;
    if (bgjob_job_create(&o, worker, userdata, NULL, &job) != BGJOB_RESULT_OK)
        return NULL;
    return job;
}

/* ---- the worker's own handle after it detached it -------------------------- */

struct detacher {
    struct gate detached, go;
    atomic_int detach_rc, add_rc, total_rc, info_rc, cancel_rc, phase_rc;
    _Atomic uint64_t current_seen;
    atomic_int done;
};

static int32_t worker_detaches_itself(void *userdata, bgjob_job *job)
{
    struct detacher *d = userdata;
    bgjob_info info = {.struct_size = sizeof info};

    atomic_store(&d->detach_rc, bgjob_job_detach(job, 0));
    gate_open(&d->detached);
    gate_wait(&d->go);
    atomic_store(&d->total_rc, bgjob_job_set_total(job, 100));
    atomic_store(&d->add_rc, bgjob_job_add_units(job, 7));
    atomic_store(&d->phase_rc, bgjob_job_set_phase(job, "after detach"));
    atomic_store(&d->cancel_rc, bgjob_job_check_cancel(job));
    atomic_store(&d->info_rc, bgjob_job_get_info(job, &info));
    atomic_store(&d->current_seen, info.current);
    atomic_store(&d->done, 1);
    return 0;
}

static bool test_own_handle_after_detach(void)
{
    static struct detacher d;
    bool ok = true;
    bgjob_info info = {.struct_size = sizeof info};

    memset(&d, 0, sizeof d);
    gate_init(&d.detached);
    gate_init(&d.go);
    bgjob_job *job = start_job(worker_detaches_itself, &d, 0);
    REQUIRE(job != NULL);
    gate_wait(&d.detached);
    CHECK_RC(atomic_load(&d.detach_rc), BGJOB_RESULT_OK);
    /* Every other thread: the handle is gone, though its worker still runs. */
    CHECK_RC(bgjob_job_add_units(job, 1), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_set_total(job, 5), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_check_cancel(job), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_get_info(job, &info), BGJOB_RESULT_INVALID_HANDLE);
    gate_open(&d.go);
    CHECK(poll_int_eq(&d.done, 1));
    /* Its own thread: still its job. */
    CHECK_RC(atomic_load(&d.total_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&d.add_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&d.phase_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&d.cancel_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&d.info_rc), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&d.current_seen), 7);
    return ok;
}

/* ---- a worker's call on another job's handle --------------------------------- */

struct other {
    bgjob_job *victim;      /* the paused job whose handle the worker uses */
    bgjob_job *dead;        /* a destroyed handle */
    atomic_int add_rc, total_rc, dead_rc, dead_info_rc, own_rc;
    atomic_int done;
};

static int32_t worker_uses_other_handles(void *userdata, bgjob_job *job)
{
    struct other *o = userdata;
    bgjob_info info = {.struct_size = sizeof info};

    /* The victim is paused: on this thread (not its worker's) these never park. */
    atomic_store(&o->add_rc, bgjob_job_add_units(o->victim, 3));
    atomic_store(&o->total_rc, bgjob_job_set_total(o->victim, 10));
    atomic_store(&o->dead_rc, bgjob_job_add_units(o->dead, 1));
    atomic_store(&o->dead_info_rc, bgjob_job_get_info(o->dead, &info));
    atomic_store(&o->own_rc, bgjob_job_add_units(job, 1));
    atomic_store(&o->done, 1);
    return 0;
}

static bool test_other_jobs_handle_from_a_worker(void)
{
    static struct other o;
    struct tracker tv, td;
    struct gate hold;
    bool ok = true;
    bgjob_job *dead = NULL;

    memset(&o, 0, sizeof o);
    tracker_init(&tv);
    tracker_init(&td);
    gate_init(&hold);
    tv.gate = &hold;
    CHECK_RC(job_create(&tv, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &o.victim),
             BGJOB_RESULT_OK);
    REQUIRE(o.victim != NULL);
    CHECK(poll_int_eq(&tv.runs, 1));
    CHECK_RC(bgjob_job_pause(o.victim), BGJOB_RESULT_OK);
    CHECK_RC(job_create(&td, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &dead),
             BGJOB_RESULT_OK);
    REQUIRE(dead != NULL);
    CHECK_STATE(wait_end(dead), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(dead), BGJOB_RESULT_OK);
    o.dead = dead;

    bgjob_job *job = start_job(worker_uses_other_handles, &o, 0);
    REQUIRE(job != NULL);
    /* A hang here (the worker parked on the victim's pause) fails the poll. */
    CHECK(poll_int_eq(&o.done, 1));
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&o.add_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&o.total_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&o.dead_rc), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(atomic_load(&o.dead_info_rc), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(atomic_load(&o.own_rc), BGJOB_RESULT_OK);
    {
        bgjob_info info;
        if (info_of(o.victim, &info)) {
            CHECK_EQ(info.current, 3);
            CHECK_EQ(info.total, 10);
        }
        if (info_of(job, &info))
            CHECK_EQ(info.current, 1);
    }
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_resume(o.victim), BGJOB_RESULT_OK);
    gate_open(&hold);
    CHECK_STATE(wait_end(o.victim), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(o.victim), BGJOB_RESULT_OK);
    gate_destroy(&hold);
    return ok;
}

/* ---- add_units is a pause point on the worker's own thread ----------------- */

struct looper {
    atomic_long calls, returned;
    atomic_int stop;
    bool pause_points; /* loop on bgjob_job_pause_point, not add_units */
    atomic_int last_rc;
};

/* Pause points until cancelled (each one counted before and after). */
static int32_t worker_pause_point_loop(void *userdata, bgjob_job *job)
{
    struct looper *l = userdata;

    while (!atomic_load(&l->stop)) {
        atomic_fetch_add(&l->calls, 1);
        bgjob_result rc = bgjob_job_pause_point(job);
        atomic_store(&l->last_rc, rc);
        if (rc != BGJOB_RESULT_OK)
            return 1;
        if (atomic_fetch_add(&l->returned, 1) % 64 == 63)
            sched_yield();
    }
    return 0;
}

static int32_t worker_add_loop(void *userdata, bgjob_job *job)
{
    struct looper *l = userdata;

    while (!atomic_load(&l->stop) && bgjob_job_check_cancel(job) == BGJOB_RESULT_OK) {
        atomic_fetch_add(&l->calls, 1);
        if (bgjob_job_add_units(job, 1) != BGJOB_RESULT_OK)
            return 1;
        /* Lets the polling thread run now and then: valgrind runs one
         * thread at a time and would leave a spinning worker running. */
        if (atomic_fetch_add(&l->returned, 1) % 64 == 63)
            sched_yield();
    }
    return 0;
}

/* While paused, the worker sits inside one add_units call (and the unit of
 * that call is counted); with UPDATES_NEVER_PARK it keeps going. With
 * `pause_points`, the worker loops on pause points instead (which park
 * whatever the flags). */
static bool pause_case(uint32_t flags, bool parks, bool pause_points)
{
    static struct looper l;
    bool ok = true;

    memset(&l, 0, sizeof l);
    l.pause_points = pause_points;
    bgjob_job *job =
        start_job(pause_points ? worker_pause_point_loop : worker_add_loop, &l, flags);
    REQUIRE(job != NULL);
    CHECK(poll_long_ge(&l.returned, 1000));
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    if (parks) {
        /* The worker comes to rest inside one add_units call: started, not
         * returned, and still so a while later. (The call in flight when the
         * pause came may return once: the pause takes effect at the next
         * pause point, so a single look could catch that one.) Without
         * parking the counters never rest and the poll gives up. */
        int64_t deadline = now_ms() + LONG_MS;
        long c = 0, r = 0;
        bool rested = false;
        while (!rested && now_ms() < deadline) {
            c = atomic_load(&l.calls);
            r = atomic_load(&l.returned);
            sleep_ms(50);
            rested = c == r + 1 && atomic_load(&l.calls) == c && atomic_load(&l.returned) == r;
        }
        CHECKF(rested, "the worker never parked (calls %ld returned %ld)", c, r);
        sleep_ms(100);
        CHECKF(atomic_load(&l.returned) == r, "the call returned while paused (%ld -> %ld)", r,
               atomic_load(&l.returned));
        bgjob_info info;
        if (info_of(job, &info)) {
            CHECK_STATE(info.state, BGJOB_STATE_PAUSED);
            if (!pause_points)
                CHECK_EQ(info.current, (uint64_t)c);
        }
    } else {
        long r = atomic_load(&l.returned);
        CHECK(poll_long_ge(&l.returned, r + 1000));
    }
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    long r = atomic_load(&l.returned);
    CHECK(poll_long_ge(&l.returned, r + 1000));
    if (pause_points) {
        /* A cancel reaches the looping worker through its pause point. */
        CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
        CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
        CHECK_RC(atomic_load(&l.last_rc), BGJOB_RESULT_CANCELLED);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        return ok;
    }
    atomic_store(&l.stop, 1);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    {
        bgjob_info info;
        if (info_of(job, &info))
            CHECK_EQ(info.current, (uint64_t)atomic_load(&l.returned));
    }
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_add_units_parks_its_own_worker(void)
{
    return pause_case(0, true, false);
}

static bool test_add_units_never_parks_with_the_flag(void)
{
    return pause_case(BGJOB_CREATE_UPDATES_NEVER_PARK, false, false);
}

static bool test_pause_point_parks_its_own_worker_and_sees_cancel(void)
{
    return pause_case(BGJOB_CREATE_UPDATES_NEVER_PARK, true, true);
}

/* ---- the worker's own cancel check sees a cancel -------------------------- */

struct checker {
    atomic_long checks;
    atomic_int last_rc;
};

static int32_t worker_check_loop(void *userdata, bgjob_job *job)
{
    struct checker *c = userdata;
    bgjob_result rc;

    while ((rc = bgjob_job_check_cancel(job)) == BGJOB_RESULT_OK) {
        if (atomic_fetch_add(&c->checks, 1) % 64 == 63)
            sched_yield();
    }
    atomic_store(&c->last_rc, rc);
    return 1;
}

static bool test_check_cancel_sees_a_cancel_on_its_own_worker(void)
{
    static struct checker c;
    bool ok = true;

    memset(&c, 0, sizeof c);
    bgjob_job *job = start_job(worker_check_loop, &c, 0);
    REQUIRE(job != NULL);
    CHECK(poll_long_ge(&c.checks, 1000));
    /* A pause is pending too: the check still answers "not cancelled"... */
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    long n = atomic_load(&c.checks);
    CHECK(poll_long_ge(&c.checks, n + 1000));
    /* ...and after a cancel, "cancelled": the loop never ends otherwise. */
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(atomic_load(&c.last_rc), BGJOB_RESULT_CANCELLED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* ---- a worker's cancel check and pause point on a cancelled job's handle --- */

struct across {
    bgjob_job *victim; /* running, cancel requested */
    atomic_int victim_check_rc, victim_pause_rc, own_check_rc, own_pause_rc, done;
};

static int32_t worker_checks_other(void *userdata, bgjob_job *job)
{
    struct across *a = userdata;

    atomic_store(&a->own_check_rc, bgjob_job_check_cancel(job));
    atomic_store(&a->victim_check_rc, bgjob_job_check_cancel(a->victim));
    atomic_store(&a->victim_pause_rc, bgjob_job_pause_point(a->victim));
    atomic_store(&a->own_pause_rc, bgjob_job_pause_point(job));
    atomic_store(&a->done, 1);
    return 0;
}

static bool test_cancel_check_on_another_handle_answers_for_that_job(void)
{
    static struct across a;
    struct tracker tv;
    struct gate hold;
    bool ok = true;

    memset(&a, 0, sizeof a);
    tracker_init(&tv);
    gate_init(&hold);
    tv.gate = &hold;
    CHECK_RC(job_create(&tv, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &a.victim),
             BGJOB_RESULT_OK);
    REQUIRE(a.victim != NULL);
    CHECK(poll_int_eq(&tv.runs, 1));
    CHECK_RC(bgjob_job_cancel(a.victim, NULL), BGJOB_RESULT_OK);

    bgjob_job *job = start_job(worker_checks_other, &a, 0);
    REQUIRE(job != NULL);
    CHECK(poll_int_eq(&a.done, 1));
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    /* The worker's own job has nothing pending; the victim was cancelled. */
    CHECK_RC(atomic_load(&a.own_check_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&a.own_pause_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&a.victim_check_rc), BGJOB_RESULT_CANCELLED);
    CHECK_RC(atomic_load(&a.victim_pause_rc), BGJOB_RESULT_CANCELLED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_open(&hold);
    CHECK_STATE(wait_end(a.victim), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(a.victim), BGJOB_RESULT_OK);
    gate_destroy(&hold);
    return ok;
}

/* ---- the first call after a cancel or a pause, ordered by gates -------------- */

/* The worker warms its fast path (nothing pending: every answer is taken from
 * its record), tells the test, and waits; the test requests a cancel or a
 * pause, which returns before the gate opens, so the worker's very next call
 * comes strictly after it. An answer cached anywhere (or a pending bit the
 * fast path does not look at) shows as an OK here, not as a later call's. */
enum first_call { FIRST_PAUSE_POINT, FIRST_ADD_UNITS };

struct firsts {
    struct gate warm, go;
    enum first_call kind;
    atomic_int warm_rc;     /* OK if every warm-up call said OK */
    atomic_int entered;     /* the ordered call was made */
    atomic_int returned;    /* ...and returned */
    atomic_int second_returned; /* the pause point after it returned */
    atomic_int first_rc, check_rc, pause_rc, add_rc, check_again_rc;
};

static bgjob_result warm_up(bgjob_job *job)
{
    for (int i = 0; i < 100; i++) {
        bgjob_result rc;
        if ((rc = bgjob_job_check_cancel(job)) != BGJOB_RESULT_OK ||
            (rc = bgjob_job_pause_point(job)) != BGJOB_RESULT_OK ||
            (rc = bgjob_job_add_units(job, 1)) != BGJOB_RESULT_OK)
            return rc;
    }
    return BGJOB_RESULT_OK;
}

/* After a cancel: the checks report it at once; an update still succeeds. */
static int32_t worker_after_cancel(void *userdata, bgjob_job *job)
{
    struct firsts *f = userdata;

    atomic_store(&f->warm_rc, warm_up(job));
    gate_open(&f->warm);
    gate_wait(&f->go);
    atomic_store(&f->check_rc, bgjob_job_check_cancel(job));
    atomic_store(&f->pause_rc, bgjob_job_pause_point(job));
    atomic_store(&f->add_rc, bgjob_job_add_units(job, 1));
    atomic_store(&f->check_again_rc, bgjob_job_check_cancel(job));
    atomic_store(&f->returned, 1);
    return 1;
}

static bool test_first_checks_after_a_cancel_report_it(void)
{
    static struct firsts f;
    bool ok = true;

    memset(&f, 0, sizeof f);
    gate_init(&f.warm);
    gate_init(&f.go);
    bgjob_job *job = start_job(worker_after_cancel, &f, 0);
    REQUIRE(job != NULL);
    gate_wait(&f.warm);
    CHECK_RC(atomic_load(&f.warm_rc), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    gate_open(&f.go);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&f.returned), 1);
    CHECK_RC(atomic_load(&f.check_rc), BGJOB_RESULT_CANCELLED);
    CHECK_RC(atomic_load(&f.pause_rc), BGJOB_RESULT_CANCELLED);
    CHECK_RC(atomic_load(&f.add_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&f.check_again_rc), BGJOB_RESULT_CANCELLED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&f.warm);
    gate_destroy(&f.go);
    return ok;
}

/* After a pause: the first pause point (or, unless UPDATES_NEVER_PARK, the
 * first update) parks; the check says "not cancelled" meanwhile. */
static int32_t worker_after_pause(void *userdata, bgjob_job *job)
{
    struct firsts *f = userdata;
    bgjob_result rc;

    atomic_store(&f->warm_rc, warm_up(job));
    gate_open(&f->warm);
    gate_wait(&f->go);
    atomic_store(&f->check_rc, bgjob_job_check_cancel(job));
    atomic_store(&f->entered, 1);
    rc = f->kind == FIRST_PAUSE_POINT ? bgjob_job_pause_point(job) : bgjob_job_add_units(job, 1);
    atomic_store(&f->first_rc, rc);
    atomic_store(&f->returned, 1);
    /* With UPDATES_NEVER_PARK the update returned at once: the pause point
     * after it parks instead. */
    atomic_store(&f->pause_rc, bgjob_job_pause_point(job));
    atomic_store(&f->second_returned, 1);
    atomic_store(&f->check_again_rc, bgjob_job_check_cancel(job));
    return 0;
}

/* Whether the worker stays inside its call (entered, not returned) a while. */
static bool stays_parked(struct firsts *f, atomic_int *returned)
{
    if (!poll_int_eq(&f->entered, 1))
        return false;
    sleep_ms(150);
    return atomic_load(returned) == 0;
}

static bool first_after_pause_case(enum first_call kind, uint32_t flags, bool internal)
{
    static struct firsts f;
    bool ok = true;
    bool update_parks = kind == FIRST_PAUSE_POINT || !(flags & BGJOB_CREATE_UPDATES_NEVER_PARK);
    bgjob_info info;

    memset(&f, 0, sizeof f);
    f.kind = kind;
    gate_init(&f.warm);
    gate_init(&f.go);
    bgjob_job *job = start_job(worker_after_pause, &f, flags);
    REQUIRE(job != NULL);
    gate_wait(&f.warm);
    CHECK_RC(atomic_load(&f.warm_rc), BGJOB_RESULT_OK);
    CHECK_RC(internal ? bgjob_job_pause_internal(job) : bgjob_job_pause(job), BGJOB_RESULT_OK);
    gate_open(&f.go);
    if (update_parks) {
        CHECKF(stays_parked(&f, &f.returned),
               "the first %s after the pause returned (rc %d) instead of parking",
               kind == FIRST_PAUSE_POINT ? "pause point" : "add_units",
               (int)atomic_load(&f.first_rc));
    } else {
        /* It returns; the pause point after it is where the worker parks. */
        CHECK(poll_int_eq(&f.returned, 1));
        CHECK_RC(atomic_load(&f.first_rc), BGJOB_RESULT_OK);
        sleep_ms(150);
        CHECKF(atomic_load(&f.second_returned) == 0,
               "the pause point after the update did not park");
    }
    if (info_of(job, &info)) {
        CHECK_STATE(info.state, internal ? BGJOB_STATE_RUNNING : BGJOB_STATE_PAUSED);
        CHECK_EQ(info.pause_count, internal ? 1u : 0u);
        CHECK_EQ(info.pause_requested, !internal);
    }
    CHECK_RC(internal ? bgjob_job_resume_internal(job) : bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&f.check_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&f.first_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&f.pause_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&f.check_again_rc), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&f.warm);
    gate_destroy(&f.go);
    return ok;
}

static bool test_first_pause_point_after_a_pause_parks(void)
{
    return first_after_pause_case(FIRST_PAUSE_POINT, 0, false);
}

static bool test_first_pause_point_after_an_internal_pause_parks(void)
{
    return first_after_pause_case(FIRST_PAUSE_POINT, 0, true);
}

static bool test_first_update_after_a_pause_parks(void)
{
    return first_after_pause_case(FIRST_ADD_UNITS, 0, false);
}

static bool test_first_update_after_an_internal_pause_parks(void)
{
    return first_after_pause_case(FIRST_ADD_UNITS, 0, true);
}

static bool test_first_update_after_a_pause_never_parks_with_the_flag(void)
{
    return first_after_pause_case(FIRST_ADD_UNITS, BGJOB_CREATE_UPDATES_NEVER_PARK, false);
}

/* ---- a READY job's worker woken by its wake fd ------------------------------- */

/* The worker polls its wake fd and calls its pause point each time the fd
 * turns readable, as the header says a poll loop should. The fd is readable
 * for a pause (STANDBY), a cancel and a complete request alike; only the
 * complete request may be answered OK at once: the pause point parks for the
 * pause and reports the cancel. */
enum ready_verb { READY_COMPLETE, READY_SOFT_CANCEL, READY_CANCEL };

struct waker {
    atomic_int ready_rc, fd_rc, poll_failed;
    atomic_int entered, returned; /* wake-ups handled: pause point called, returned */
    atomic_int rc[4], requested[4];
    atomic_int soft;
};

static int32_t worker_polls_wake_fd(void *userdata, bgjob_job *job)
{
    struct waker *w = userdata;
    int32_t fd = -1;

    atomic_store(&w->ready_rc, bgjob_job_set_ready(job));
    atomic_store(&w->fd_rc, bgjob_job_get_wake_fd(job, &fd));
    for (int i = 0; i < 4; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        bool requested = false, soft = false;

        if (poll(&p, 1, LONG_MS) != 1) {
            atomic_store(&w->poll_failed, 1);
            return 2;
        }
        atomic_store(&w->entered, i + 1);
        bgjob_result rc = bgjob_job_pause_point(job);
        atomic_store(&w->rc[i], rc);
        atomic_store(&w->returned, i + 1);
        if (rc == BGJOB_RESULT_CANCELLED) {
            bgjob_job_cancel_is_soft(job, &soft);
            atomic_store(&w->soft, soft);
            return soft ? 0 : 1;
        }
        if (rc != BGJOB_RESULT_OK)
            return 4;
        bgjob_job_complete_requested(job, &requested);
        atomic_store(&w->requested[i], requested);
        if (requested)
            return 0;
    }
    return 3;
}

/* Polls until *v >= want (LONG_MS at most). */
static bool poll_int_ge(atomic_int *v, int want)
{
    int64_t deadline = now_ms() + LONG_MS;

    while (atomic_load(v) < want) {
        if (now_ms() > deadline)
            return false;
        sleep_ms(1);
    }
    return true;
}

static bool ready_case(enum ready_verb verb)
{
    static struct waker w;
    bool ok = true;

    memset(&w, 0, sizeof w);
    bgjob_job *job = start_job(worker_polls_wake_fd, &w, 0);
    REQUIRE(job != NULL);
    CHECK(poll_state(job, BGJOB_STATE_READY));
    CHECK_RC(atomic_load(&w.ready_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&w.fd_rc), BGJOB_RESULT_OK);

    /* A pause first: the fd wakes the worker, and its pause point parks. */
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK(poll_int_ge(&w.entered, 1));
    sleep_ms(150);
    if (atomic_load(&w.returned) != 0) {
        CHECKF(false, "the pause point of a STANDBY job's worker returned %d instead of parking",
               (int)atomic_load(&w.rc[0]));
        bgjob_job_cancel(job, NULL);
        wait_end(job);
        bgjob_job_destroy(job);
        return ok;
    }
    CHECK_STATE(state_of(job), BGJOB_STATE_STANDBY);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&w.returned, 1));
    CHECK_RC(atomic_load(&w.rc[0]), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&w.requested[0]), 0);
    CHECK_STATE(state_of(job), BGJOB_STATE_READY);

    switch (verb) {
    case READY_COMPLETE:
        CHECK_RC(bgjob_job_complete(job), BGJOB_RESULT_OK);
        CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
        CHECK_EQ(atomic_load(&w.returned), 2);
        CHECK_RC(atomic_load(&w.rc[1]), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&w.requested[1]), 1);
        break;
    case READY_SOFT_CANCEL:
        CHECK_RC(bgjob_job_cancel_soft(job, NULL), BGJOB_RESULT_OK);
        CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
        CHECK_EQ(atomic_load(&w.returned), 2);
        CHECK_RC(atomic_load(&w.rc[1]), BGJOB_RESULT_CANCELLED);
        CHECK_EQ(atomic_load(&w.soft), 1);
        break;
    case READY_CANCEL:
        CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
        CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
        CHECK_EQ(atomic_load(&w.returned), 2);
        CHECK_RC(atomic_load(&w.rc[1]), BGJOB_RESULT_CANCELLED);
        CHECK_EQ(atomic_load(&w.soft), 0);
        break;
    }
    CHECK_EQ(atomic_load(&w.poll_failed), 0);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_ready_worker_woken_for_complete(void)
{
    return ready_case(READY_COMPLETE);
}

static bool test_ready_worker_woken_for_soft_cancel(void)
{
    return ready_case(READY_SOFT_CANCEL);
}

static bool test_ready_worker_woken_for_cancel(void)
{
    return ready_case(READY_CANCEL);
}

/* ---- the worker's handle after its creator released it (a ref lives) ------- */

/* "The worker always gets the creator's handle, valid on its own thread until
 * it returns" (bgjob_job_ref): released by the creator while another
 * reference lives, it still answers for the worker's job on the worker's
 * thread, fast path or not (a cancel and a pause made through the other
 * reference are seen), and is INVALID_HANDLE everywhere else. */
struct released {
    struct gate warm, go, paused_go;
    atomic_int warm_rc, check_rc, entered, returned, pause_rc, add_rc, cancel_rc, point_rc;
    atomic_int info_rc;
    _Atomic uint64_t current_seen;
};

static int32_t worker_after_release(void *userdata, bgjob_job *job)
{
    struct released *r = userdata;
    bgjob_info info = {.struct_size = sizeof info};

    atomic_store(&r->warm_rc, warm_up(job));
    gate_open(&r->warm);
    gate_wait(&r->go);
    /* Released by now; a pause came through the other reference. */
    atomic_store(&r->check_rc, bgjob_job_check_cancel(job));
    atomic_store(&r->entered, 1);
    atomic_store(&r->pause_rc, bgjob_job_pause_point(job));
    atomic_store(&r->returned, 1);
    atomic_store(&r->add_rc, bgjob_job_add_units(job, 5));
    atomic_store(&r->info_rc, bgjob_job_get_info(job, &info));
    atomic_store(&r->current_seen, info.current);
    gate_wait(&r->paused_go);
    /* A cancel came through the other reference. */
    atomic_store(&r->cancel_rc, bgjob_job_check_cancel(job));
    atomic_store(&r->point_rc, bgjob_job_pause_point(job));
    return 1;
}

static bool test_worker_handle_released_by_its_creator(void)
{
    static struct released r;
    bool ok = true;
    bgjob_job *other = NULL;
    bgjob_info info;

    memset(&r, 0, sizeof r);
    gate_init(&r.warm);
    gate_init(&r.go);
    gate_init(&r.paused_go);
    bgjob_job *job = start_job(worker_after_release, &r, 0);
    REQUIRE(job != NULL);
    gate_wait(&r.warm);
    CHECK_RC(atomic_load(&r.warm_rc), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_ref(job, &other), BGJOB_RESULT_OK);
    REQUIRE(other != NULL);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    /* Here (not the worker's thread) the released handle names nothing. */
    CHECK_RC(bgjob_job_check_cancel(job), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_pause_point(job), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_add_units(job, 1), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_pause(other), BGJOB_RESULT_OK);
    gate_open(&r.go);
    CHECK(poll_int_eq(&r.entered, 1));
    sleep_ms(150);
    CHECKF(atomic_load(&r.returned) == 0,
           "the worker's pause point on its released handle returned %d instead of parking",
           (int)atomic_load(&r.pause_rc));
    CHECK_RC(bgjob_job_resume(other), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&r.returned, 1));
    CHECK_RC(bgjob_job_cancel(other, NULL), BGJOB_RESULT_OK);
    gate_open(&r.paused_go);
    CHECK_STATE(wait_end(other), BGJOB_STATE_CANCELLED);
    CHECK_RC(atomic_load(&r.check_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&r.pause_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&r.add_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&r.info_rc), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&r.current_seen), 105);
    CHECK_RC(atomic_load(&r.cancel_rc), BGJOB_RESULT_CANCELLED);
    CHECK_RC(atomic_load(&r.point_rc), BGJOB_RESULT_CANCELLED);
    if (info_of(other, &info))
        CHECK_EQ(info.current, 105);
    CHECK_RC(bgjob_job_destroy(other), BGJOB_RESULT_OK);
    gate_destroy(&r.warm);
    gate_destroy(&r.go);
    gate_destroy(&r.paused_go);
    return ok;
}

/* ---- the worker's released handle's slot, reused by another job -------------- */

/* The worker's handle is released by its creator (a reference lives) and its
 * table slot is given to a new job: the new handle differs from the worker's
 * only in its generation, and the worker's thread-local record still holds
 * the old value. On that thread each handle must answer for its own job: the
 * new one (an external job, cancelled) for the new job, the old one for the
 * worker's. */
struct reslot {
    struct gate warm, go;
    bgjob_job *reused;
    atomic_int warm_rc, new_check_rc, new_point_rc, new_add_rc, own_check_rc, own_add_rc;
    atomic_int done;
};

static int32_t worker_meets_its_slot_reused(void *userdata, bgjob_job *job)
{
    struct reslot *r = userdata;

    atomic_store(&r->warm_rc, warm_up(job));
    gate_open(&r->warm);
    gate_wait(&r->go);
    atomic_store(&r->new_check_rc, bgjob_job_check_cancel(r->reused));
    atomic_store(&r->new_point_rc, bgjob_job_pause_point(r->reused));
    atomic_store(&r->new_add_rc, bgjob_job_add_units(r->reused, 9));
    atomic_store(&r->own_check_rc, bgjob_job_check_cancel(job));
    atomic_store(&r->own_add_rc, bgjob_job_add_units(job, 1));
    atomic_store(&r->done, 1);
    return 0;
}

/* The low 32 bits of a handle: its table slot (index + 1). */
static uint32_t slot_of(bgjob_job *h)
{
    return (uint32_t)((uintptr_t)h & 0xffffffffu);
}

static bool test_worker_handle_slot_reused_by_another_job(void)
{
    static struct reslot r;
    bool ok = true;
    bgjob_job *other = NULL, *found = NULL;
    bgjob_job_options o;
    bgjob_info info;

    memset(&r, 0, sizeof r);
    gate_init(&r.warm);
    gate_init(&r.go);
    bgjob_job *job = start_job(worker_meets_its_slot_reused, &r, 0);
    REQUIRE(job != NULL);
    gate_wait(&r.warm);
    CHECK_RC(atomic_load(&r.warm_rc), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_ref(job, &other), BGJOB_RESULT_OK);
    REQUIRE(other != NULL);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    /* Freed slots are reused oldest first: make (and release) unstarted
     * external jobs until one gets the worker's old slot. */
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_EXTERNAL | BGJOB_CREATE_DEFER_START;
    for (int i = 0; i < 100000 && found == NULL; i++) {
        bgjob_job *h = NULL;
        if (bgjob_job_create(&o, NULL, NULL, NULL, &h) != BGJOB_RESULT_OK || h == NULL)
            break;
        if (slot_of(h) == slot_of(job))
            found = h;
        else
            CHECK_RC(bgjob_job_destroy(h), BGJOB_RESULT_OK);
    }
    REQUIRE(found != NULL);
    CHECK(found != job);
    CHECK_RC(bgjob_job_start(found), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(found, NULL), BGJOB_RESULT_OK);
    r.reused = found;
    gate_open(&r.go);
    CHECK_STATE(wait_end(other), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&r.done), 1);
    /* The new job's answers: cancelled, external (no pause point), its units. */
    CHECK_RC(atomic_load(&r.new_check_rc), BGJOB_RESULT_CANCELLED);
    CHECK_RC(atomic_load(&r.new_point_rc), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(atomic_load(&r.new_add_rc), BGJOB_RESULT_OK);
    /* The worker's own: nothing pending. */
    CHECK_RC(atomic_load(&r.own_check_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&r.own_add_rc), BGJOB_RESULT_OK);
    if (info_of(found, &info))
        CHECK_EQ(info.current, 9);
    if (info_of(other, &info))
        CHECK_EQ(info.current, 101);
    CHECK_RC(bgjob_job_end(found, 1, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(found), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(other), BGJOB_RESULT_OK);
    gate_destroy(&r.warm);
    gate_destroy(&r.go);
    return ok;
}

/* ---- NULL and made-up handles on a worker's thread ---------------------------- */

/* On a worker's thread the record holds a handle value; a NULL or made-up
 * handle near it (another generation of its slot, another table's tag, its
 * slot alone) is INVALID_HANDLE for the three calls the record answers,
 * never the worker's job. */
#define NEAR_HANDLES 4

struct near {
    atomic_int rc[NEAR_HANDLES][3];
    atomic_int own_rc, done;
};

static int32_t worker_tries_near_handles(void *userdata, bgjob_job *job)
{
    struct near *n = userdata;
    uintptr_t h = (uintptr_t)job;
    bgjob_job *near[NEAR_HANDLES] = {
        NULL,
        (bgjob_job *)(h ^ ((uintptr_t)1 << 32)), /* another generation */
        (bgjob_job *)((h & ~((uintptr_t)0xf << 60)) | ((uintptr_t)2 << 60)), /* a context's tag */
        (bgjob_job *)(h & 0xffffffffu),          /* no tag, no generation */
    };

    for (int i = 0; i < NEAR_HANDLES; i++) {
        atomic_store(&n->rc[i][0], bgjob_job_check_cancel(near[i]));
        atomic_store(&n->rc[i][1], bgjob_job_pause_point(near[i]));
        atomic_store(&n->rc[i][2], bgjob_job_add_units(near[i], 1));
    }
    atomic_store(&n->own_rc, bgjob_job_add_units(job, 1));
    atomic_store(&n->done, 1);
    return 0;
}

static bool test_made_up_handles_on_a_worker_thread(void)
{
    static struct near n;
    bool ok = true;
    bgjob_info info;

    memset(&n, 0, sizeof n);
    bgjob_job *job = start_job(worker_tries_near_handles, &n, 0);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&n.done), 1);
    for (int i = 0; i < NEAR_HANDLES; i++)
        for (int k = 0; k < 3; k++)
            CHECKF(atomic_load(&n.rc[i][k]) == BGJOB_RESULT_INVALID_HANDLE,
                   "made-up handle %d, call %d: %s", i, k,
                   bgjob_result_str(atomic_load(&n.rc[i][k])));
    CHECK_RC(atomic_load(&n.own_rc), BGJOB_RESULT_OK);
    if (info_of(job, &info))
        CHECK_EQ(info.current, 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* ---- a worker that drives an external job ------------------------------------ */

/* A threaded job's worker is the owner of an external job (no worker of its
 * own: "nothing of bgjob ever parks its owner"). On the external job's handle
 * the worker's calls answer for that job, never from the worker's record:
 * its pause point is refused, its update never parks on its pause, its
 * cancel is its own. Its completion, run on this thread by bgjob_job_end,
 * sees the worker's own job still running with nothing pending. */
struct driver {
    bgjob_job *own; /* the worker's handle, for the completion */
    atomic_int create_rc, start_rc, ext_point_rc, ext_check_rc, ext_add_rc, pause_rc;
    atomic_int paused_add_rc, cancel_rc, ext_cancelled_rc, own_check_rc, own_point_rc, end_rc;
    atomic_int in_completion_check_rc, in_completion_point_rc, completion_state, completions;
    _Atomic uint64_t ext_current, own_current;
    atomic_int done;
};

static void ext_completion(void *userdata, bgjob_job *job, bgjob_state state)
{
    struct driver *d = userdata;

    (void)job;
    atomic_store(&d->completion_state, (int)state);
    atomic_store(&d->in_completion_check_rc, bgjob_job_check_cancel(d->own));
    atomic_store(&d->in_completion_point_rc, bgjob_job_pause_point(d->own));
    atomic_fetch_add(&d->completions, 1);
}

static int32_t worker_drives_external(void *userdata, bgjob_job *job)
{
    struct driver *d = userdata;
    bgjob_job_options o;
    bgjob_job *ext = NULL;
    bgjob_info info = {.struct_size = sizeof info};

    d->own = job;
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_EXTERNAL;
    o.completion = ext_completion;
    o.completion_userdata = d;
    atomic_store(&d->create_rc, bgjob_job_create(&o, NULL, NULL, NULL, &ext));
    if (ext == NULL)
        return 1;
    atomic_store(&d->ext_point_rc, bgjob_job_pause_point(ext));
    atomic_store(&d->ext_check_rc, bgjob_job_check_cancel(ext));
    atomic_store(&d->ext_add_rc, bgjob_job_add_units(ext, 3));
    atomic_store(&d->pause_rc, bgjob_job_pause(ext));
    /* Paused, the external job's update still returns (this is its owner). */
    atomic_store(&d->paused_add_rc, bgjob_job_add_units(ext, 4));
    atomic_store(&d->cancel_rc, bgjob_job_cancel(ext, NULL));
    atomic_store(&d->ext_cancelled_rc, bgjob_job_check_cancel(ext));
    atomic_store(&d->own_check_rc, bgjob_job_check_cancel(job));
    atomic_store(&d->own_point_rc, bgjob_job_pause_point(job));
    if (bgjob_job_get_info(ext, &info) == BGJOB_RESULT_OK)
        atomic_store(&d->ext_current, info.current);
    if (bgjob_job_add_units(job, 1) == BGJOB_RESULT_OK &&
        bgjob_job_get_info(job, &info) == BGJOB_RESULT_OK)
        atomic_store(&d->own_current, info.current);
    atomic_store(&d->end_rc, bgjob_job_end(ext, 1, NULL));
    bgjob_job_destroy(ext);
    atomic_store(&d->done, 1);
    return 0;
}

static bool test_worker_driving_an_external_job(void)
{
    static struct driver d;
    bool ok = true;

    memset(&d, 0, sizeof d);
    bgjob_job *job = start_job(worker_drives_external, &d, 0);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&d.done), 1);
    CHECK_RC(atomic_load(&d.create_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&d.ext_point_rc), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(atomic_load(&d.ext_check_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&d.ext_add_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&d.pause_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&d.paused_add_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&d.cancel_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&d.ext_cancelled_rc), BGJOB_RESULT_CANCELLED);
    CHECK_RC(atomic_load(&d.own_check_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&d.own_point_rc), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&d.ext_current), 7);
    CHECK_EQ(atomic_load(&d.own_current), 1);
    CHECK_RC(atomic_load(&d.end_rc), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&d.completions), 1);
    CHECK_STATE(atomic_load(&d.completion_state), BGJOB_STATE_CANCELLED);
    CHECK_RC(atomic_load(&d.in_completion_check_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&d.in_completion_point_rc), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* ---- a pool thread reused by a later job --------------------------------------- */

struct reuse {
    atomic_long tid;
    bgjob_job *earlier; /* destroyed before the later job runs */
    atomic_int add_rc, total_rc, info_rc, cancel_rc, pause_rc, phase_rc;
};

/* Polls until no job worker runs, then lets the last one's thread settle. */
static void wait_pool_idle(void)
{
    int64_t deadline = now_ms() + LONG_MS;
    size_t running = 1;

    while (bgjob_pool_get_status(NULL, &running, NULL) == BGJOB_RESULT_OK && running > 0 &&
           now_ms() < deadline)
        sleep_ms(1);
    sleep_ms(5);
}

static int32_t worker_note_thread(void *userdata, bgjob_job *job)
{
    struct reuse *r = userdata;

    (void)job;
    atomic_store(&r->tid, tid());
    return 0;
}

static int32_t worker_uses_earlier_handle(void *userdata, bgjob_job *job)
{
    struct reuse *r = userdata;
    bgjob_info info = {.struct_size = sizeof info};

    (void)job;
    atomic_store(&r->tid, tid());
    atomic_store(&r->add_rc, bgjob_job_add_units(r->earlier, 1));
    atomic_store(&r->total_rc, bgjob_job_set_total(r->earlier, 1));
    atomic_store(&r->info_rc, bgjob_job_get_info(r->earlier, &info));
    atomic_store(&r->cancel_rc, bgjob_job_check_cancel(r->earlier));
    atomic_store(&r->pause_rc, bgjob_job_pause_point(r->earlier));
    atomic_store(&r->phase_rc, bgjob_job_set_phase(r->earlier, "stale"));
    return 0;
}

static bool test_reused_thread_forgets_the_earlier_job(void)
{
    static struct reuse first, second;
    bool ok = true;
    int reused = 0;

    for (int i = 0; i < 40 && reused < 3; i++) {
        memset(&first, 0, sizeof first);
        memset(&second, 0, sizeof second);
        bgjob_job *a = start_job(worker_note_thread, &first, 0);
        REQUIRE(a != NULL);
        CHECK_STATE(wait_end(a), BGJOB_STATE_COMPLETED);
        CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_OK);
        /* Give a's thread time to go idle, so the pool may hand it b (the
         * case needs a reuse, not any particular timing). */
        wait_pool_idle();
        second.earlier = a;
        bgjob_job *b = start_job(worker_uses_earlier_handle, &second, 0);
        REQUIRE(b != NULL);
        CHECK_STATE(wait_end(b), BGJOB_STATE_COMPLETED);
        CHECK_RC(bgjob_job_destroy(b), BGJOB_RESULT_OK);
        if (atomic_load(&first.tid) != atomic_load(&second.tid))
            continue;
        reused++;
        CHECK_RC(atomic_load(&second.add_rc), BGJOB_RESULT_INVALID_HANDLE);
        CHECK_RC(atomic_load(&second.total_rc), BGJOB_RESULT_INVALID_HANDLE);
        CHECK_RC(atomic_load(&second.info_rc), BGJOB_RESULT_INVALID_HANDLE);
        CHECK_RC(atomic_load(&second.cancel_rc), BGJOB_RESULT_INVALID_HANDLE);
        CHECK_RC(atomic_load(&second.pause_rc), BGJOB_RESULT_INVALID_HANDLE);
        CHECK_RC(atomic_load(&second.phase_rc), BGJOB_RESULT_INVALID_HANDLE);
    }
    CHECKF(reused > 0, "no pool thread was reused in 40 sequential pairs of jobs");
    return ok;
}

/* ---- a completion run on the worker thread after the worker returned --------- */

struct after {
    atomic_long worker_tid, completion_tid;
    atomic_int ended_rc, destroy_rc, gone_add_rc, gone_info_rc, gone_cancel_rc;
    atomic_int done;
};

static int32_t worker_notes(void *userdata, bgjob_job *job)
{
    struct after *a = userdata;

    atomic_store(&a->worker_tid, tid());
    return bgjob_job_add_units(job, 1) == BGJOB_RESULT_OK ? 0 : 1;
}

static void completion_on_worker_thread(void *userdata, bgjob_job *job, bgjob_state state)
{
    struct after *a = userdata;
    bgjob_info info = {.struct_size = sizeof info};

    (void)state;
    atomic_store(&a->completion_tid, tid());
    /* The job has ended: an update is refused... */
    atomic_store(&a->ended_rc, bgjob_job_add_units(job, 1));
    /* ...and once this callback destroyed the handle, it names nothing. */
    atomic_store(&a->destroy_rc, bgjob_job_destroy(job));
    atomic_store(&a->gone_add_rc, bgjob_job_add_units(job, 1));
    atomic_store(&a->gone_info_rc, bgjob_job_get_info(job, &info));
    atomic_store(&a->gone_cancel_rc, bgjob_job_check_cancel(job));
    atomic_store(&a->done, 1);
}

static bool test_completion_on_the_worker_thread_is_not_the_worker(void)
{
    static struct after a;
    bool ok = true;
    bgjob_job *job = NULL;

    memset(&a, 0, sizeof a);
    CHECK_RC(bgjob_run_in_thread(NULL, "after", worker_notes, &a, NULL,
                                 completion_on_worker_thread, &a, NULL, &job),
             BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&a.done, 1));
    CHECKF(atomic_load(&a.worker_tid) == atomic_load(&a.completion_tid),
           "the completion ran on thread %ld, the worker on %ld", atomic_load(&a.completion_tid),
           atomic_load(&a.worker_tid));
    CHECK_RC(atomic_load(&a.ended_rc), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(atomic_load(&a.destroy_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&a.gone_add_rc), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(atomic_load(&a.gone_info_rc), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(atomic_load(&a.gone_cancel_rc), BGJOB_RESULT_INVALID_HANDLE);
    return ok;
}

/* ---- a virJob worker after it declared its outcome -------------------------- */

struct vdecl {
    atomic_int before_rc, finish_rc, after_rc, after_total_rc, after_phase_rc;
    atomic_int done;
};

static void vworker_declares(virJobPtr vj, void *data)
{
    struct vdecl *v = data;
    bgjob_job *b = virJobGetBgjob(vj);

    atomic_store(&v->before_rc, bgjob_job_add_units(b, 4));
    atomic_store(&v->finish_rc, virJobFinishSuccess(vj));
    atomic_store(&v->after_rc, bgjob_job_add_units(b, 1));
    atomic_store(&v->after_total_rc, bgjob_job_set_total(b, 9));
    atomic_store(&v->after_phase_rc, bgjob_job_set_phase(b, "late"));
    atomic_store(&v->done, 1);
}

static bool test_virjob_updates_refused_after_its_finish(void)
{
    static struct vdecl v;
    static char conn;
    bool ok = true;

    memset(&v, 0, sizeof v);
    virJobPtr vj = virJobCreate((virConnectPtr)(void *)&conn, NULL, vworker_declares, NULL, &v,
                                VIR_JOB_BOUNDED);
    REQUIRE(vj != NULL);
    CHECK(poll_int_eq(&v.done, 1));
    bgjob_job *b = virJobGetBgjob(vj);
    REQUIRE(b != NULL);
    CHECK_STATE(wait_end(b), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&v.before_rc), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&v.finish_rc), 0);
    CHECK_RC(atomic_load(&v.after_rc), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(atomic_load(&v.after_total_rc), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(atomic_load(&v.after_phase_rc), BGJOB_RESULT_NOT_ALLOWED);
    {
        bgjob_info info;
        if (info_of(b, &info)) {
            CHECK_EQ(info.current, 4);
            CHECK(info.total != 9);
        }
    }
    CHECK_EQ(virJobDestroy(vj), 0);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_own_handle_after_detach),
        TAP_TEST(test_other_jobs_handle_from_a_worker),
        TAP_TEST(test_add_units_parks_its_own_worker),
        TAP_TEST(test_add_units_never_parks_with_the_flag),
        TAP_TEST(test_pause_point_parks_its_own_worker_and_sees_cancel),
        TAP_TEST(test_check_cancel_sees_a_cancel_on_its_own_worker),
        TAP_TEST(test_cancel_check_on_another_handle_answers_for_that_job),
        TAP_TEST(test_first_checks_after_a_cancel_report_it),
        TAP_TEST(test_first_pause_point_after_a_pause_parks),
        TAP_TEST(test_first_pause_point_after_an_internal_pause_parks),
        TAP_TEST(test_first_update_after_a_pause_parks),
        TAP_TEST(test_first_update_after_an_internal_pause_parks),
        TAP_TEST(test_first_update_after_a_pause_never_parks_with_the_flag),
        TAP_TEST(test_ready_worker_woken_for_complete),
        TAP_TEST(test_ready_worker_woken_for_soft_cancel),
        TAP_TEST(test_ready_worker_woken_for_cancel),
        TAP_TEST(test_worker_handle_released_by_its_creator),
        TAP_TEST(test_worker_handle_slot_reused_by_another_job),
        TAP_TEST(test_made_up_handles_on_a_worker_thread),
        TAP_TEST(test_worker_driving_an_external_job),
        TAP_TEST(test_reused_thread_forgets_the_earlier_job),
        TAP_TEST(test_completion_on_the_worker_thread_is_not_the_worker),
        TAP_TEST(test_virjob_updates_refused_after_its_finish),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

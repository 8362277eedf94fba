/*
 * test_error_policy.c: the I/O error policy (QEMU's BlockdevOnError) and the
 * error status (QEMU's iostatus).
 *
 * A worker reports an I/O error with bgjob_job_report_io_error and does what
 * the answer says: REPORT (return the error: the job FAILS with that code and
 * message), IGNORE (carry on), STOP (the job is now user-paused with iostatus
 * FAILED, or NOSPACE for ENOSPC; park at a pause point, then retry). Cases:
 * each policy, changing the policy while running, bad arguments (nothing
 * changes), and QEMU's block-job iostatus invariant checked by a thread that reads
 * every job's info without pause while several jobs hit errors and are
 * resumed, paused and cancelled: iostatus is not OK only while the job is
 * user-paused (never while cancel is requested, never once it has ended).
 */

#include "util.h"

#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define PARK_SLACK 2
#define ERR_MSG "write failed at sector 42"

/* A worker that does "operations" until told to finish, reporting the error
 * the test injects at the next one. */
struct ioc {
    struct tracker t; /* first: the token points here */
    atomic_int inject;   /* errno to report at the next operation (0: none) */
    atomic_int last_action;
    atomic_int reports, ignores, stops, retries;
    atomic_int report_rc; /* a report call that failed: its result */
    atomic_int finish;    /* return 0 at the next operation */
    atomic_long ops;      /* operations done */
};

static void ioc_init(struct ioc *c)
{
    memset(c, 0, sizeof(*c));
    tracker_init(&c->t);
    atomic_init(&c->last_action, -1);
    atomic_init(&c->report_rc, BGJOB_RESULT_OK);
}

static int32_t ioworker(void *ud, bgjob_job *job)
{
    struct ioc *c = (struct ioc *)ud_tracker(ud);
    int32_t rc = 0;

    atomic_fetch_add(&c->t.runs, 1);
    for (;;) {
        if (bgjob_job_pause_point(job) == BGJOB_RESULT_CANCELLED) {
            atomic_store(&c->t.saw_cancel, 1);
            rc = WORKER_CANCELLED_RC;
            break;
        }
        if (atomic_load(&c->finish)) {
            rc = 0;
            break;
        }
        int code = atomic_exchange(&c->inject, 0);
        if (code != 0) {
            int32_t action = -1;
            bgjob_result r = bgjob_job_report_io_error(job, code, ERR_MSG, &action);
            if (r != BGJOB_RESULT_OK) {
                atomic_store(&c->report_rc, r);
                rc = 1000 + r;
                break;
            }
            atomic_store(&c->last_action, action);
            if (action == BGJOB_ERROR_ACTION_REPORT) {
                atomic_fetch_add(&c->reports, 1);
                rc = code;
                break;
            }
            if (action == BGJOB_ERROR_ACTION_STOP) {
                atomic_fetch_add(&c->stops, 1);
                /* Parks here until resume (then retry) or cancel. */
                if (bgjob_job_pause_point(job) == BGJOB_RESULT_CANCELLED) {
                    atomic_store(&c->t.saw_cancel, 1);
                    rc = WORKER_CANCELLED_RC;
                    break;
                }
                atomic_fetch_add(&c->retries, 1);
                continue;
            }
            atomic_fetch_add(&c->ignores, 1);
        }
        atomic_fetch_add(&c->ops, 1);
        sleep_us(200);
    }
    atomic_fetch_add(&c->t.returns, 1);
    return rc;
}

static bgjob_result io_create(struct ioc *c, int32_t policy, uint32_t flags, bgjob_job **out)
{
    bgjob_job_options o;
    bgjob_result r = bgjob_job_options_init(&o, sizeof o);

    ioc_init(c);
    if (r != BGJOB_RESULT_OK)
        return r;
    o.flags = flags;
    o.error_policy = policy;
    return bgjob_job_create(&o, ioworker, ud_new(&c->t), ud_free, out);
}

/* The operation count stops moving for a while. */
static bool ops_stand_still(struct ioc *c)
{
    long before = atomic_load(&c->ops);
    sleep_ms(150);
    long after = atomic_load(&c->ops);
    if (after - before > PARK_SLACK) {
        tap_diag("worker did %ld operations while stopped", after - before);
        return false;
    }
    return true;
}

/* The worker carries on: more operations get done. */
static bool ops_move(struct ioc *c)
{
    return poll_long_ge(&c->ops, atomic_load(&c->ops) + 3);
}

/* Injects `code` and waits for the worker to get an answer. */
static bool inject(struct ioc *c, int code, int32_t want_action)
{
    bool ok = true;
    int before = atomic_load(&c->reports) + atomic_load(&c->ignores) + atomic_load(&c->stops);

    atomic_store(&c->last_action, -1);
    atomic_store(&c->inject, code);
    int64_t deadline = now_ms() + LONG_MS;
    while (atomic_load(&c->reports) + atomic_load(&c->ignores) + atomic_load(&c->stops) == before &&
           atomic_load(&c->report_rc) == BGJOB_RESULT_OK && now_ms() < deadline)
        sleep_ms(1);
    CHECK_EQ(atomic_load(&c->report_rc), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&c->last_action), want_action);
    return ok;
}

/* Checks a job stopped by an I/O error: PAUSED, user pause in force, the
 * given iostatus, the worker parked, no error recorded. */
static bool check_stopped(struct ioc *c, bgjob_job *job, int32_t iostatus)
{
    bool ok = true;
    bgjob_info info;

    CHECK_STATE(state_of(job), BGJOB_STATE_PAUSED);
    if (info_of(job, &info)) {
        CHECK_STATE(info.state, BGJOB_STATE_PAUSED);
        CHECK(info.pause_requested);
        CHECK_EQ(info.iostatus, iostatus);
        CHECK_EQ(info.error_code, 0);
        CHECK(!info.cancel_requested);
    }
    CHECK(ops_stand_still(c));
    /* Pausing a stopped job again is refused and changes nothing. */
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_NOT_ALLOWED);
    if (info_of(job, &info))
        CHECK_EQ(info.iostatus, iostatus);
    return ok;
}

/* Resumes a stopped job: the status is OK at once and the worker retries. */
static bool resume_stopped(struct ioc *c, bgjob_job *job)
{
    bool ok = true;
    bgjob_info info;
    int retries = atomic_load(&c->retries);

    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    if (info_of(job, &info)) {
        CHECK_EQ(info.iostatus, BGJOB_IOSTATUS_OK);
        CHECK(!info.pause_requested);
    }
    CHECK(poll_int_eq(&c->retries, retries + 1));
    CHECK(ops_move(c));
    CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
    return ok;
}

/* Lets the worker finish; checks the final state and that its userdata went. */
static bool finish_job(struct ioc *c, bgjob_job *job, int32_t want)
{
    bool ok = true;
    bgjob_info info;

    atomic_store(&c->finish, 1);
    CHECK_STATE(wait_end(job), want);
    if (info_of(job, &info)) {
        CHECK_EQ(info.iostatus, BGJOB_IOSTATUS_OK);
        CHECK(!info.pause_requested);
    }
    CHECK_EQ(atomic_load(&c->t.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_report(void)
{
    bool ok = true;
    static struct ioc c;
    bgjob_job *job = NULL;
    bgjob_info info;
    int32_t code = 0;
    char msg[128] = "";

    CHECK_RC(io_create(&c, BGJOB_ERROR_POLICY_REPORT, 0, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    if (info_of(job, &info))
        CHECK_EQ(info.error_policy, BGJOB_ERROR_POLICY_REPORT);
    CHECK(poll_long_ge(&c.ops, 1));
    CHECK(inject(&c, EIO, BGJOB_ERROR_ACTION_REPORT));
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(bgjob_job_get_error(job, &code, msg, sizeof msg, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(code, EIO);
    CHECK_STR(msg, ERR_MSG);
    if (info_of(job, &info)) {
        CHECK_EQ(info.error_code, EIO);
        CHECK_EQ(info.iostatus, BGJOB_IOSTATUS_OK);
        CHECK(!info.pause_requested);
    }
    CHECK_EQ(atomic_load(&c.stops), 0);
    CHECK_EQ(atomic_load(&c.t.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    /* The default policy is REPORT, and ENOSPC is no exception to it. */
    CHECK_RC(job_create(&c.t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED,
                        NULL, &job),
             BGJOB_RESULT_OK);
    if (info_of(job, &info))
        CHECK_EQ(info.error_policy, BGJOB_ERROR_POLICY_REPORT);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_RC(io_create(&c, BGJOB_ERROR_POLICY_REPORT, 0, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(inject(&c, ENOSPC, BGJOB_ERROR_ACTION_REPORT));
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(bgjob_job_get_error(job, &code, NULL, 0, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(code, ENOSPC);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_ignore(void)
{
    bool ok = true;
    static struct ioc c;
    bgjob_job *job = NULL;
    bgjob_info info;

    CHECK_RC(io_create(&c, BGJOB_ERROR_POLICY_IGNORE, 0, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(poll_long_ge(&c.ops, 1));
    for (int i = 0; i < 5; i++) {
        CHECK(inject(&c, i % 2 ? ENOSPC : EIO, BGJOB_ERROR_ACTION_IGNORE));
        CHECK(ops_move(&c));
        CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
        if (info_of(job, &info)) {
            CHECK_EQ(info.iostatus, BGJOB_IOSTATUS_OK);
            CHECK_EQ(info.error_code, 0);
            CHECK(!info.pause_requested);
        }
    }
    CHECK_EQ(atomic_load(&c.ignores), 5);
    CHECK(finish_job(&c, job, BGJOB_STATE_COMPLETED));
    return ok;
}

static bool stop_case(int32_t policy, int code, int32_t iostatus)
{
    bool ok = true;
    static struct ioc c;
    bgjob_job *job = NULL;
    int32_t err = -1;

    CHECK_RC(io_create(&c, policy, 0, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(poll_long_ge(&c.ops, 1));
    CHECK(inject(&c, code, BGJOB_ERROR_ACTION_STOP));
    CHECK(check_stopped(&c, job, iostatus));
    CHECK(resume_stopped(&c, job));
    /* Resuming a job that is no longer stopped is refused. */
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_NOT_ALLOWED);
    /* The retry fails again: stopped again; and again resumed. */
    CHECK(inject(&c, code, BGJOB_ERROR_ACTION_STOP));
    CHECK(check_stopped(&c, job, iostatus));
    CHECK(resume_stopped(&c, job));
    /* A user pause first, then the error: still one user pause, which one
     * resume ends, status and all. */
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    atomic_store(&c.inject, code);
    /* The worker is parked before it can see the injected error; resume it
     * and it stops on the error. */
    CHECK(ops_stand_still(&c));
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&c.stops, 3));
    CHECK_EQ(atomic_load(&c.last_action), BGJOB_ERROR_ACTION_STOP);
    CHECK(check_stopped(&c, job, iostatus));
    CHECK(resume_stopped(&c, job));
    CHECK_EQ(atomic_load(&c.stops), 3);
    CHECK_EQ(atomic_load(&c.retries), 3);
    CHECK(finish_job(&c, job, BGJOB_STATE_COMPLETED));
    CHECK_RC(bgjob_job_get_error(job, &err, NULL, 0, NULL), BGJOB_RESULT_INVALID_HANDLE);
    return ok;
}

static bool test_stop(void)
{
    bool ok = true;
    CHECK(stop_case(BGJOB_ERROR_POLICY_STOP, EIO, BGJOB_IOSTATUS_FAILED));
    CHECK(stop_case(BGJOB_ERROR_POLICY_STOP, ENOSPC, BGJOB_IOSTATUS_NOSPACE));
    return ok;
}

static bool test_enospc(void)
{
    bool ok = true;
    static struct ioc c;
    bgjob_job *job = NULL;
    int32_t code = 0;
    char msg[128] = "";

    CHECK(stop_case(BGJOB_ERROR_POLICY_ENOSPC, ENOSPC, BGJOB_IOSTATUS_NOSPACE));
    /* Any other error is reported. */
    CHECK_RC(io_create(&c, BGJOB_ERROR_POLICY_ENOSPC, 0, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(inject(&c, ENOSPC, BGJOB_ERROR_ACTION_STOP));
    CHECK(check_stopped(&c, job, BGJOB_IOSTATUS_NOSPACE));
    CHECK(resume_stopped(&c, job));
    CHECK(inject(&c, EIO, BGJOB_ERROR_ACTION_REPORT));
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(bgjob_job_get_error(job, &code, msg, sizeof msg, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(code, EIO);
    CHECK_STR(msg, ERR_MSG);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_set_policy_while_running(void)
{
    bool ok = true;
    static struct ioc c;
    bgjob_job *job = NULL;
    bgjob_info info;
    int32_t code = 0;

    CHECK_RC(io_create(&c, BGJOB_ERROR_POLICY_REPORT, BGJOB_CREATE_DEFER_START, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    /* Allowed before start too. */
    CHECK_RC(bgjob_job_set_error_policy(job, BGJOB_ERROR_POLICY_IGNORE), BGJOB_RESULT_OK);
    if (info_of(job, &info))
        CHECK_EQ(info.error_policy, BGJOB_ERROR_POLICY_IGNORE);
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    CHECK(poll_long_ge(&c.ops, 1));
    CHECK(inject(&c, EIO, BGJOB_ERROR_ACTION_IGNORE));

    CHECK_RC(bgjob_job_set_error_policy(job, BGJOB_ERROR_POLICY_STOP), BGJOB_RESULT_OK);
    if (info_of(job, &info))
        CHECK_EQ(info.error_policy, BGJOB_ERROR_POLICY_STOP);
    CHECK(inject(&c, EIO, BGJOB_ERROR_ACTION_STOP));
    CHECK(check_stopped(&c, job, BGJOB_IOSTATUS_FAILED));
    /* Changing the policy of a stopped job does not touch its status. */
    CHECK_RC(bgjob_job_set_error_policy(job, BGJOB_ERROR_POLICY_ENOSPC), BGJOB_RESULT_OK);
    if (info_of(job, &info)) {
        CHECK_EQ(info.error_policy, BGJOB_ERROR_POLICY_ENOSPC);
        CHECK_EQ(info.iostatus, BGJOB_IOSTATUS_FAILED);
        CHECK_STATE(info.state, BGJOB_STATE_PAUSED);
    }
    CHECK(resume_stopped(&c, job));
    CHECK(inject(&c, ENOSPC, BGJOB_ERROR_ACTION_STOP));
    CHECK(check_stopped(&c, job, BGJOB_IOSTATUS_NOSPACE));
    CHECK(resume_stopped(&c, job));

    CHECK_RC(bgjob_job_set_error_policy(job, BGJOB_ERROR_POLICY_REPORT), BGJOB_RESULT_OK);
    CHECK(inject(&c, EPIPE, BGJOB_ERROR_ACTION_REPORT));
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(bgjob_job_get_error(job, &code, NULL, 0, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(code, EPIPE);
    /* Once ended: refused, and the policy is unchanged. */
    CHECK_RC(bgjob_job_set_error_policy(job, BGJOB_ERROR_POLICY_STOP), BGJOB_RESULT_NOT_ALLOWED);
    if (info_of(job, &info))
        CHECK_EQ(info.error_policy, BGJOB_ERROR_POLICY_REPORT);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* Blocks on a gate, then reports one EIO and returns what it was told. */
static int32_t gated_reporter(void *ud, bgjob_job *job)
{
    struct ioc *c = (struct ioc *)ud_tracker(ud);
    int32_t action = -1;

    atomic_fetch_add(&c->t.runs, 1);
    gate_wait(c->t.gate);
    bgjob_result r = bgjob_job_report_io_error(job, EIO, ERR_MSG, &action);
    atomic_store(&c->report_rc, r);
    atomic_store(&c->last_action, action);
    atomic_fetch_add(&c->t.returns, 1);
    return action == BGJOB_ERROR_ACTION_STOP ? 0 : EIO;
}

static bool test_bad_args(void)
{
    bool ok = true;
    static struct ioc c;
    bgjob_job *job = NULL;
    bgjob_info info;
    int32_t action = 77;
    bgjob_job_options o;

    /* An unknown policy at create: refused, userdata freed once. */
    CHECK_RC(bgjob_job_options_init(&o, sizeof o), BGJOB_RESULT_OK);
    ioc_init(&c);
    const int32_t bad_policies[] = { -1, 4, 1000, INT32_MIN };
    for (size_t i = 0; i < sizeof bad_policies / sizeof bad_policies[0]; i++) {
        o.error_policy = bad_policies[i];
        CHECK_RC(bgjob_job_create(&o, ioworker, ud_new(&c.t), ud_free, &job),
                 BGJOB_RESULT_INVALID_ARGUMENT);
    }
    CHECK_EQ(atomic_load(&c.t.frees), 4);
    CHECK_EQ(atomic_load(&c.t.runs), 0);

    /* Not running (CREATED): refused, nothing changes. */
    CHECK_RC(io_create(&c, BGJOB_ERROR_POLICY_STOP, BGJOB_CREATE_DEFER_START, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_report_io_error(job, EIO, "x", &action), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_EQ(action, 77);
    CHECK_STATE(state_of(job), BGJOB_STATE_CREATED);
    for (size_t i = 0; i < sizeof bad_policies / sizeof bad_policies[0]; i++)
        CHECK_RC(bgjob_job_set_error_policy(job, bad_policies[i]), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    CHECK(poll_long_ge(&c.ops, 1));

    /* Running, bad arguments: refused, the job neither stops nor fails. */
    CHECK_RC(bgjob_job_report_io_error(job, 0, "x", &action), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_report_io_error(job, EIO, "x", NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_report_io_error(job, EIO, "bad \xff\xfe utf-8", &action),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_EQ(action, 77);
    for (size_t i = 0; i < sizeof bad_policies / sizeof bad_policies[0]; i++)
        CHECK_RC(bgjob_job_set_error_policy(job, bad_policies[i]), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
    if (info_of(job, &info)) {
        CHECK_EQ(info.iostatus, BGJOB_IOSTATUS_OK);
        CHECK_EQ(info.error_code, 0);
        CHECK_EQ(info.error_policy, BGJOB_ERROR_POLICY_STOP);
        CHECK(!info.pause_requested);
    }
    CHECK(ops_move(&c));
    /* A NULL message is fine, and any thread may report for the job. */
    CHECK_RC(bgjob_job_report_io_error(job, EIO, NULL, &action), BGJOB_RESULT_OK);
    CHECK_EQ(action, BGJOB_ERROR_ACTION_STOP);
    CHECK(check_stopped(&c, job, BGJOB_IOSTATUS_FAILED));
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK(ops_move(&c));
    if (info_of(job, &info))
        CHECK_EQ(info.iostatus, BGJOB_IOSTATUS_OK);
    action = 77;
    CHECK(finish_job(&c, job, BGJOB_STATE_COMPLETED));

    /* Ended: refused. */
    CHECK_RC(io_create(&c, BGJOB_ERROR_POLICY_STOP, 0, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    atomic_store(&c.finish, 1);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_report_io_error(job, EIO, NULL, &action), BGJOB_RESULT_NOT_ALLOWED);
    if (info_of(job, &info)) {
        CHECK_EQ(info.iostatus, BGJOB_IOSTATUS_OK);
        CHECK_EQ(info.error_code, 0);
    }
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    /* Invalid handles. */
    CHECK_RC(bgjob_job_report_io_error(NULL, EIO, NULL, &action), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_report_io_error(job, EIO, NULL, &action), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_set_error_policy(job, BGJOB_ERROR_POLICY_STOP),
             BGJOB_RESULT_INVALID_HANDLE);
    CHECK_EQ(action, 77);
    return ok;
}

/* PENDING (manual finalize, work done): the worker is gone; a report is
 * refused and the policy can no longer change. */
static bool test_not_running_waiting(void)
{
    bool ok = true;
    static struct ioc c;
    bgjob_job *job = NULL;
    int32_t action = 77;

    CHECK_RC(io_create(&c, BGJOB_ERROR_POLICY_STOP, BGJOB_CREATE_MANUAL_FINALIZE, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    atomic_store(&c.finish, 1);
    CHECK(poll_state(job, BGJOB_STATE_PENDING));
    CHECK_RC(bgjob_job_report_io_error(job, EIO, NULL, &action), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_EQ(action, 77);
    CHECK_RC(bgjob_job_set_error_policy(job, BGJOB_ERROR_POLICY_IGNORE), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_STATE(state_of(job), BGJOB_STATE_PENDING);
    CHECK_RC(bgjob_job_finalize(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* A job whose cancel was requested is never stopped: it is told to report,
 * its status stays OK and it ends CANCELLED. */
static bool test_cancelled_job_is_not_stopped(void)
{
    bool ok = true;
    static struct ioc c;
    struct gate g;
    bgjob_job *job = NULL;
    bgjob_job_options o;
    bgjob_info info;

    ioc_init(&c);
    gate_init(&g);
    c.t.gate = &g;
    CHECK_RC(bgjob_job_options_init(&o, sizeof o), BGJOB_RESULT_OK);
    o.error_policy = BGJOB_ERROR_POLICY_STOP;
    CHECK_RC(bgjob_job_create(&o, gated_reporter, ud_new(&c.t), ud_free, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(poll_int_eq(&c.t.runs, 1));
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&c.report_rc), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&c.last_action), BGJOB_ERROR_ACTION_REPORT);
    if (info_of(job, &info)) {
        CHECK_EQ(info.iostatus, BGJOB_IOSTATUS_OK);
        CHECK(!info.pause_requested);
        CHECK_EQ(info.error_code, EIO);
    }
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

/* Detaching a job stopped by an I/O error resumes it (nobody could later),
 * and from then on the STOP policy reports instead: a detached job that
 * stopped again would stay paused for ever, holding its thread. It fails with
 * the error and frees itself. */
static bool test_detached_job_is_not_stopped(void)
{
    bool ok = true;
    static struct ioc c;
    bgjob_job *job = NULL;
    uint64_t id = 0;

    CHECK_RC(io_create(&c, BGJOB_ERROR_POLICY_STOP, 0, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_get_id(job, &id), BGJOB_RESULT_OK);
    CHECK(poll_long_ge(&c.ops, 1));
    CHECK(inject(&c, EIO, BGJOB_ERROR_ACTION_STOP));
    CHECK(check_stopped(&c, job, BGJOB_IOSTATUS_FAILED));
    int retries = atomic_load(&c.retries);
    CHECK_RC(bgjob_job_detach(job, 0), BGJOB_RESULT_OK);
    /* Resumed by the detach: the worker retries and carries on. */
    CHECK(poll_int_eq(&c.retries, retries + 1));
    CHECK(ops_move(&c));
    CHECK_EQ(atomic_load(&c.t.frees), 0);
    /* The same error again is reported, not stopped on. */
    CHECK(inject(&c, EIO, BGJOB_ERROR_ACTION_REPORT));
    CHECK_EQ(atomic_load(&c.stops), 1);
    CHECK_EQ(atomic_load(&c.reports), 1);
    /* The worker returned the error; the job ended and freed its userdata. */
    CHECK(poll_int_eq(&c.t.frees, 1));
    CHECK_EQ(atomic_load(&c.t.free_early), 0);
    CHECK(poll_unlisted(id));
    return ok;
}

/* ---- The invariant under load ------------------------------------------ */

#define NJOBS 4
#define STRESS_RESOLVED 300   /* stops resolved (resumed or cancelled) to reach */
#define CANCEL_EVERY 5        /* every 5th stop resolved is a cancel, the rest resumes */
#define CHAOS_OPS 300         /* operations per job life */

/* A job that reports an error every few operations (EIO or ENOSPC, from a
 * per-job pseudo-random sequence) and follows the answer. */
struct chaos {
    struct tracker t; /* first */
    uint32_t seed;
    atomic_int stops;
};

static uint32_t xorshift(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static int32_t chaos_worker(void *ud, bgjob_job *job)
{
    struct chaos *c = (struct chaos *)ud_tracker(ud);
    uint32_t s = c->seed;
    int32_t rc = 0;

    atomic_fetch_add(&c->t.runs, 1);
    for (int op = 0; op < CHAOS_OPS; op++) {
        if (bgjob_job_pause_point(job) == BGJOB_RESULT_CANCELLED) {
            rc = WORKER_CANCELLED_RC;
            break;
        }
        if (xorshift(&s) % 12 == 0) {
            int code = xorshift(&s) % 3 == 0 ? EIO : ENOSPC;
            int32_t action = -1;
            if (bgjob_job_report_io_error(job, code, "chaos", &action) != BGJOB_RESULT_OK) {
                rc = 999;
                break;
            }
            if (action == BGJOB_ERROR_ACTION_REPORT) {
                rc = code;
                break;
            }
            if (action == BGJOB_ERROR_ACTION_STOP) {
                atomic_fetch_add(&c->stops, 1);
                op--; /* retry after the pause point */
            }
        }
        sleep_us(100);
    }
    atomic_fetch_add(&c->t.returns, 1);
    return rc;
}

static _Atomic(bgjob_job *) slots[NJOBS];
static atomic_int poll_stop;
static atomic_long poll_snapshots, poll_nonok, poll_violations;
static atomic_long poll_sweeps; /* full passes over the slots */

static void *poller(void *arg)
{
    (void)arg;
    while (!atomic_load(&poll_stop)) {
        for (int i = 0; i < NJOBS; i++) {
            bgjob_job *job = atomic_load(&slots[i]);
            bgjob_info info;
            if (job == NULL)
                continue;
            memset(&info, 0, sizeof info);
            info.struct_size = sizeof info;
            /* INVALID_HANDLE: the controller destroyed it meanwhile. */
            if (bgjob_job_get_info(job, &info) != BGJOB_RESULT_OK)
                continue;
            atomic_fetch_add(&poll_snapshots, 1);
            if (info.iostatus == BGJOB_IOSTATUS_OK)
                continue;
            atomic_fetch_add(&poll_nonok, 1);
            bool bad = !info.pause_requested || info.state != BGJOB_STATE_PAUSED ||
                       info.cancel_requested ||
                       (info.iostatus != BGJOB_IOSTATUS_FAILED &&
                        info.iostatus != BGJOB_IOSTATUS_NOSPACE);
            if (bad && atomic_fetch_add(&poll_violations, 1) < 5)
                tap_diag("invariant broken: iostatus %d, pause_requested %d, state %s, "
                         "cancel_requested %d",
                         (int)info.iostatus, (int)info.pause_requested,
                         bgjob_state_str(info.state), (int)info.cancel_requested);
        }
        /* Spinning without a break would only starve the workers where
         * threads run one at a time (valgrind, whose scheduler hands over
         * only at a blocking call or the end of a long time slice); it
         * proves nothing more. */
        if (atomic_fetch_add(&poll_sweeps, 1) % 8 == 7)
            sched_yield();
    }
    return NULL;
}

static bool chaos_start(struct chaos **cp, int i, uint32_t seed)
{
    bool ok = true;
    bgjob_job_options o;
    bgjob_job *job = NULL;
    struct chaos *c = calloc(1, sizeof(*c));

    REQUIRE(c != NULL);
    tracker_init(&c->t);
    c->seed = seed | 1;
    CHECK_RC(bgjob_job_options_init(&o, sizeof o), BGJOB_RESULT_OK);
    o.error_policy = seed % 2 ? BGJOB_ERROR_POLICY_STOP : BGJOB_ERROR_POLICY_ENOSPC;
    CHECK_RC(bgjob_job_create(&o, chaos_worker, ud_new(&c->t), ud_free, &job), BGJOB_RESULT_OK);
    if (job == NULL) {
        free(c);
        return false;
    }
    *cp = c;
    atomic_store(&slots[i], job);
    return ok;
}

/* Waits for the job in slot i to end, checks it, destroys it. */
static bool chaos_end(struct chaos *c, int i, int32_t want_state)
{
    bool ok = true;
    bgjob_job *job = atomic_load(&slots[i]);
    bgjob_info info;
    int32_t st = wait_end(job);

    if (want_state >= 0)
        CHECK_STATE(st, want_state);
    if (info_of(job, &info)) {
        CHECK_EQ(info.iostatus, BGJOB_IOSTATUS_OK);
        CHECK(!info.pause_requested);
    }
    CHECK_EQ(atomic_load(&c->t.frees), 1);
    CHECK_EQ(atomic_load(&c->t.free_early), 0);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    atomic_store(&slots[i], NULL);
    free(c);
    return ok;
}

static bool test_iostatus_invariant_under_load(void)
{
    bool ok = true;
    struct chaos *cs[NJOBS] = { 0 };
    pthread_t th;
    uint32_t seed = 0x9e3779b9u;
    long resumed = 0, cancelled = 0, user_pauses = 0, ended = 0;

    /* Ends on a count of events, never on a clock: every job life stops on
     * errors (each policy here stops on ENOSPC, STOP on EIO too), only this
     * thread resolves stops, and ended jobs are replaced, so the count is
     * always reached; how long it takes (valgrind, a loaded machine) is no
     * part of the test. A hang is TAP_TIMEOUT's. */
    atomic_store(&poll_stop, 0);
    atomic_store(&poll_sweeps, 0);
    for (int i = 0; i < NJOBS; i++) {
        atomic_store(&slots[i], NULL);
        REQUIRE(chaos_start(&cs[i], i, xorshift(&seed)));
    }
    REQUIRE(pthread_create(&th, NULL, poller, NULL) == 0);

    while (ok && resumed + cancelled < STRESS_RESOLVED) {
        for (int i = 0; i < NJOBS && ok; i++) {
            bgjob_job *job = atomic_load(&slots[i]);
            bgjob_info info;
            if (!info_of(job, &info)) {
                ok = false;
                break;
            }
            uint32_t r = xorshift(&seed);
            if (info.state == BGJOB_STATE_PAUSED && info.iostatus != BGJOB_IOSTATUS_OK &&
                atomic_load(&poll_nonok) == 0) {
                /* Until the poller has seen a stopped job, hold this one
                 * stopped (only this thread resolves stops) for two full
                 * sweeps: one of them read it whole while stopped. So the
                 * poller checks the invariant on a stopped job in every run,
                 * however the threads are scheduled. */
                long sweeps = atomic_load(&poll_sweeps);
                CHECK(poll_long_ge(&poll_sweeps, sweeps + 2));
                CHECK(atomic_load(&poll_nonok) > 0);
            }
            if (info.state == BGJOB_STATE_PAUSED) {
                if (info.iostatus != BGJOB_IOSTATUS_OK &&
                    (resumed + cancelled) % CANCEL_EVERY == 1) {
                    int32_t status = -1;
                    CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
                    CHECK_EQ(status, BGJOB_CANCEL_STATUS_REQUESTED);
                    /* Reset by the cancel, and never set again. */
                    if (info_of(job, &info)) {
                        CHECK_EQ(info.iostatus, BGJOB_IOSTATUS_OK);
                        CHECK(!info.pause_requested);
                    }
                    CHECK(chaos_end(cs[i], i, BGJOB_STATE_CANCELLED));
                    CHECK(chaos_start(&cs[i], i, xorshift(&seed)));
                    cancelled++;
                } else {
                    /* Only this thread resumes, so the job is still paused,
                     * unless a user pause met a worker that was returning. */
                    bgjob_result rr = bgjob_job_resume(job);
                    if (rr == BGJOB_RESULT_OK && info.iostatus != BGJOB_IOSTATUS_OK)
                        resumed++;
                    if (rr != BGJOB_RESULT_OK) {
                        CHECK(info.iostatus == BGJOB_IOSTATUS_OK);
                        CHECK_RC(rr, BGJOB_RESULT_NOT_ALLOWED);
                        int32_t now = state_of(job);
                        CHECKF(now != BGJOB_STATE_PAUSED && now != BGJOB_STATE_RUNNING,
                               "resume refused in state %s", bgjob_state_str(now));
                    }
                }
            } else if (info.state == BGJOB_STATE_RUNNING && r % 7 == 0) {
                /* A user pause with no error: it may race with a stop (then
                 * the job is already paused) or with the end. */
                bgjob_result pr = bgjob_job_pause(job);
                CHECK(pr == BGJOB_RESULT_OK || pr == BGJOB_RESULT_NOT_ALLOWED);
                if (pr == BGJOB_RESULT_OK)
                    user_pauses++;
            } else if (info.state == BGJOB_STATE_COMPLETED || info.state == BGJOB_STATE_FAILED) {
                CHECK(chaos_end(cs[i], i, -1));
                CHECK(chaos_start(&cs[i], i, xorshift(&seed)));
                ended++;
            }
        }
        sleep_us(500);
    }
    atomic_store(&poll_stop, 1);
    pthread_join(th, NULL);
    for (int i = 0; i < NJOBS; i++) {
        bgjob_job *job = atomic_load(&slots[i]);
        if (job == NULL || cs[i] == NULL)
            continue;
        CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
        CHECK(chaos_end(cs[i], i, -1));
    }
    tap_diag("resumed %ld stops, cancelled %ld stopped jobs, %ld user pauses, %ld jobs ended; "
             "%ld snapshots, %ld with iostatus not OK",
             resumed, cancelled, user_pauses, ended, atomic_load(&poll_snapshots),
             atomic_load(&poll_nonok));
    CHECKF(resumed + cancelled >= STRESS_RESOLVED, "only %ld stops resolved",
           resumed + cancelled);
    CHECK(cancelled > 0);
    CHECK(resumed > 0);
    /* The poller saw stopped jobs (else it checked nothing). */
    CHECK(atomic_load(&poll_nonok) > 0);
    CHECK_EQ(atomic_load(&poll_violations), 0);
    CHECK_EQ(atomic_load(&util_bad_tokens), 0);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_report),
        TAP_TEST(test_ignore),
        TAP_TEST(test_stop),
        TAP_TEST(test_enospc),
        TAP_TEST(test_set_policy_while_running),
        TAP_TEST(test_bad_args),
        TAP_TEST(test_not_running_waiting),
        TAP_TEST(test_cancelled_job_is_not_stopped),
        TAP_TEST(test_detached_job_is_not_stopped),
        TAP_TEST(test_iostatus_invariant_under_load),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

/*
 * test_qemu_cancel.c: QEMU's tests/unit/test-blockjob.c cancel cases, scenario
 * for scenario, on bgjob.
 *
 * QEMU makes each job with JOB_MANUAL_FINALIZE | JOB_MANUAL_DISMISS and a
 * driver whose run loop sleeps until it is cancelled, converges (READY) when
 * told to, and returns once completed; it then cancels the job in one state
 * and checks that it ends (status NULL after dismiss) with nothing left. Here
 * each job is created with BGJOB_CREATE_DEFER_START | BGJOB_CREATE_MANUAL_FINALIZE,
 * commit/abort/clean callbacks, a completion callback, and tracked userdata
 * for the worker, the finalize callbacks and the completion, and is cancelled
 * in the matching bgjob state:
 *
 *   QEMU           bgjob
 *   created        CREATED (never started)
 *   running        RUNNING
 *   paused         PAUSED (user pause)
 *   (none)         PAUSED by its error policy (STOP, iostatus FAILED / NOSPACE)
 *   ready          READY (bgjob_job_set_ready; bgjob_job_complete ends it)
 *   standby        STANDBY (READY + user pause)
 *   pending        PENDING (worker returned 0, not finalized)
 *   concluded      COMPLETED (finalized)
 *
 * Each ends where QEMU's ends: CANCELLED, with abort and clean run once (in
 * that order, before the completion) and commit never; except the concluded
 * job, whose cancel reports ALREADY_FINISHED and changes nothing. One
 * difference is QEMU's: its run loop returns 0 on cancel and a forced cancel
 * still ends CANCELLED; a bgjob worker decides its outcome, so this one
 * returns ECANCELED when it sees the cancel, as bgjob's contract asks.
 * Every case ends with each userdata freed exactly once, the iostatus OK, no
 * user pause left, and the job gone from bgjob_list_jobs after destroy.
 *
 * Every case runs twice: with a worker thread, and as an external job
 * (BGJOB_CREATE_EXTERNAL) whose owner -- a thread of the test standing in for
 * QEMU -- runs the same loop, learns of pauses and cancels from the job's
 * snapshot, reports its I/O errors and ends it with bgjob_job_end. Both must
 * end the same way: a driver may mix them in one transaction.
 */

#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* The cases run as external jobs driven by an owner thread (else with a
 * worker thread). */
static bool external_mode;

/* How many loop turns a worker may still make after a pause returned (the one
 * in progress and one that read the flag just before it was set). */
#define PARK_SLACK 2

struct qcase {
    struct tracker fin;  /* first: finalize_userdata tokens point here */
    struct tracker t;    /* the worker's userdata */
    struct tracker comp; /* the completion's userdata */
    atomic_int converge; /* worker: reach 100 % ("ready") and keep going */
    atomic_int ready;    /* worker: converged */
    atomic_int inject;   /* worker: report this errno once (0: none) */
    atomic_int io_action;
    atomic_int seq;
    atomic_int commits, aborts, cleans, completions;
    atomic_int commit_at, abort_at, clean_at, completion_at;
    atomic_int completion_state;
    atomic_int hook_bad_job; /* a finalize hook was given another handle */
    _Atomic(bgjob_job *) job;
};

static struct qcase *case_of_worker(void *ud)
{
    return (struct qcase *)((char *)ud_tracker(ud) - offsetof(struct qcase, t));
}

static struct qcase *case_of_comp(void *ud)
{
    return (struct qcase *)((char *)ud_tracker(ud) - offsetof(struct qcase, comp));
}

static void case_init(struct qcase *c)
{
    memset(c, 0, sizeof(*c));
    tracker_init(&c->fin);
    tracker_init(&c->t);
    tracker_init(&c->comp);
    atomic_init(&c->io_action, -1);
    atomic_init(&c->completion_state, -1);
    atomic_init(&c->commit_at, -1);
    atomic_init(&c->abort_at, -1);
    atomic_init(&c->clean_at, -1);
    atomic_init(&c->completion_at, -1);
}

/* An external job's owner stands still while the job is paused (user,
 * error-policy or internal pause); false once cancel is requested. */
static bool owner_may_run(bgjob_job *job)
{
    for (;;) {
        bgjob_info info = {.struct_size = sizeof info};
        if (bgjob_job_get_info(job, &info) != BGJOB_RESULT_OK || info.cancel_requested)
            return false;
        if (!info.pause_requested && info.pause_count == 0)
            return true;
        sleep_ms(1);
    }
}

/* QEMU's cancel_job_run: sleep in small steps until cancelled, converge
 * (READY) when told to, return once completed; plus one injected I/O error
 * on request. A worker's pause points are bgjob's; an external job's owner
 * has its own (owner_may_run). */
static int32_t qloop(struct qcase *c, bgjob_job *job, bool external)
{
    int32_t rc = 0;

    atomic_fetch_add(&c->t.runs, 1);
    atomic_store(&c->t.job_seen, job);
    bgjob_job_set_total(job, 100);
    for (;;) {
        bool complete = false;

        atomic_fetch_add(&c->t.iterations, 1);
        if (bgjob_job_complete_requested(job, &complete) == BGJOB_RESULT_OK && complete) {
            bgjob_job_set_current(job, 100);
            rc = 0;
            break;
        }
        int inj = atomic_exchange(&c->inject, 0);
        if (inj != 0) {
            int32_t action = -1;
            bgjob_result r = bgjob_job_report_io_error(job, inj, "injected I/O error", &action);
            atomic_store(&c->io_action, r == BGJOB_RESULT_OK ? action : -100 - r);
            if (r == BGJOB_RESULT_OK && action == BGJOB_ERROR_ACTION_REPORT) {
                rc = inj;
                break;
            }
            /* STOP: the pause point below parks until resume or cancel. */
        }
        if (atomic_load(&c->converge) && !atomic_load(&c->ready)) {
            bgjob_job_set_current(job, 100);
            bgjob_job_set_ready(job);
            atomic_store(&c->ready, 1);
        }
        bool cancelled;
        if (external) {
            cancelled = !owner_may_run(job);
            if (!cancelled)
                sleep_ms(1);
        } else {
            cancelled = bgjob_job_pause_point(job) == BGJOB_RESULT_CANCELLED ||
                        bgjob_job_sleep(job, 1) == BGJOB_RESULT_CANCELLED;
        }
        if (cancelled) {
            atomic_store(&c->t.saw_cancel, 1);
            rc = WORKER_CANCELLED_RC;
            break;
        }
    }
    atomic_fetch_add(&c->t.returns, 1);
    return rc;
}

static int32_t qworker(void *ud, bgjob_job *job)
{
    return qloop(case_of_worker(ud), job, false);
}

/* The owner of an external job: the same loop, then the end it decided. */
static void *qowner(void *arg)
{
    struct qcase *c = arg;
    bgjob_job *job = atomic_load(&c->job);
    int32_t rc = qloop(c, job, true);
    bgjob_job_end(job, rc, rc == 0 ? NULL : "ended by its owner");
    return NULL;
}

static void record(struct qcase *c, bgjob_job *job, atomic_int *count, atomic_int *at)
{
    if (job != atomic_load(&c->job))
        atomic_fetch_add(&c->hook_bad_job, 1);
    atomic_store(at, atomic_fetch_add(&c->seq, 1));
    atomic_fetch_add(count, 1);
}

static void on_commit(void *ud, bgjob_job *job)
{
    struct qcase *c = (struct qcase *)ud_tracker(ud);
    record(c, job, &c->commits, &c->commit_at);
}

static void on_abort(void *ud, bgjob_job *job)
{
    struct qcase *c = (struct qcase *)ud_tracker(ud);
    record(c, job, &c->aborts, &c->abort_at);
}

static void on_clean(void *ud, bgjob_job *job)
{
    struct qcase *c = (struct qcase *)ud_tracker(ud);
    record(c, job, &c->cleans, &c->clean_at);
}

static void on_complete(void *ud, bgjob_job *job, int32_t state)
{
    struct qcase *c = case_of_comp(ud);
    atomic_store(&c->completion_state, state);
    record(c, job, &c->completions, &c->completion_at);
}

/* QEMU's create_common: a created job with manual finalize. */
static bgjob_result create_common(struct qcase *c, int32_t policy, bgjob_job **out)
{
    bgjob_job_options o;
    bgjob_result r;

    case_init(c);
    r = bgjob_job_options_init(&o, sizeof o);
    if (r != BGJOB_RESULT_OK)
        return r;
    o.flags = BGJOB_CREATE_DEFER_START | BGJOB_CREATE_MANUAL_FINALIZE;
    if (external_mode)
        o.flags |= BGJOB_CREATE_EXTERNAL;
    o.name = "Steve";
    o.error_policy = policy;
    o.commit = on_commit;
    o.abort = on_abort;
    o.clean = on_clean;
    o.finalize_userdata = ud_new(&c->fin);
    o.finalize_free = ud_free;
    o.completion = on_complete;
    o.completion_userdata = ud_new(&c->comp);
    o.completion_free = ud_free;
    r = bgjob_job_create(&o, external_mode ? NULL : qworker, ud_new(&c->t), ud_free, out);
    if (r == BGJOB_RESULT_OK)
        atomic_store(&c->job, *out);
    return r;
}

/* Starts the job and waits for the worker's first loop turn. */
static bool start_running(struct qcase *c, bgjob_job *job)
{
    bool ok = true;

    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    if (external_mode) {
        pthread_t owner;
        REQUIRE(pthread_create(&owner, NULL, qowner, c) == 0);
        pthread_detach(owner);
    }
    CHECK(poll_long_ge(&c->t.iterations, 1));
    CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
    return ok;
}

/* Checks that the worker makes no progress for a while (it is parked). */
static bool stays_parked(struct qcase *c)
{
    long before = atomic_load(&c->t.iterations);
    sleep_ms(150);
    long after = atomic_load(&c->t.iterations);
    if (after - before > PARK_SLACK) {
        tap_diag("worker made %ld loop turns while it should have been parked", after - before);
        return false;
    }
    return true;
}

/* Waits for the worker to park after a pause: its loop count stops moving. */
static bool settle_parked(struct qcase *c)
{
    int64_t deadline = now_ms() + LONG_MS;
    long last = atomic_load(&c->t.iterations);

    for (;;) {
        sleep_ms(30);
        long now = atomic_load(&c->t.iterations);
        if (now == last)
            return true;
        if (now_ms() > deadline)
            return false;
        last = now;
    }
}

/* What a case expects at the end. */
struct expect {
    int32_t state;        /* final state */
    int worker_runs;      /* 0: never started */
    bool committed;       /* commit ran (else abort) */
    int32_t cancel_cause; /* info.cancel_cause */
};

/*
 * QEMU's cancel_common after the cancel: the job ends in the expected state,
 * abort (or commit) then clean ran once each, then the completion, every
 * userdata was freed once, nothing is left paused or in error, and after
 * destroy the job is gone.
 */
static bool end_common(struct qcase *c, bgjob_job *job, const struct expect *e)
{
    bool ok = true;
    bgjob_info info;
    uint64_t id = id_of(job);

    CHECK_STATE(wait_end(job), e->state);
    CHECK_STATE(state_of(job), e->state);
    if (info_of(job, &info)) {
        CHECK_STATE(info.state, e->state);
        CHECK_EQ(info.iostatus, BGJOB_IOSTATUS_OK);
        CHECK(!info.pause_requested);
        CHECK_EQ(info.pause_count, 0);
        CHECK_EQ(info.cancel_cause, e->cancel_cause);
        CHECK_EQ(info.cancel_requested, e->cancel_cause != BGJOB_CANCEL_CAUSE_NONE);
    }
    /* Cancel after the end: reported, and nothing changes. */
    int32_t status = -1;
    CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_ALREADY_FINISHED);
    CHECK_STATE(state_of(job), e->state);
    CHECK_RC(bgjob_job_finalize(job), BGJOB_RESULT_NOT_ALLOWED);

    CHECK(poll_int_eq(&c->completions, 1));
    CHECK(poll_int_eq(&c->comp.frees, 1));
    CHECK(poll_int_eq(&c->fin.frees, 1));
    CHECK(poll_int_eq(&c->t.frees, 1));
    CHECK_EQ(atomic_load(&c->completion_state), e->state);
    CHECK_EQ(atomic_load(&c->t.runs), e->worker_runs);
    CHECK_EQ(atomic_load(&c->t.free_early), 0);
    if (e->committed) {
        CHECK_EQ(atomic_load(&c->commits), 1);
        CHECK_EQ(atomic_load(&c->aborts), 0);
        CHECK(atomic_load(&c->commit_at) < atomic_load(&c->clean_at));
    } else {
        CHECK_EQ(atomic_load(&c->commits), 0);
        CHECK_EQ(atomic_load(&c->aborts), 1);
        CHECK(atomic_load(&c->abort_at) < atomic_load(&c->clean_at));
    }
    CHECK_EQ(atomic_load(&c->cleans), 1);
    CHECK(atomic_load(&c->clean_at) < atomic_load(&c->completion_at));
    CHECK_EQ(atomic_load(&c->hook_bad_job), 0);

    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK(poll_unlisted(id));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_INVALID_HANDLE);
    /* Nothing ran or was freed twice afterwards. */
    CHECK_EQ(atomic_load(&c->completions), 1);
    CHECK_EQ(atomic_load(&c->cleans), 1);
    CHECK_EQ(atomic_load(&c->fin.frees), 1);
    CHECK_EQ(atomic_load(&c->t.frees), 1);
    CHECK_EQ(atomic_load(&c->comp.frees), 1);
    CHECK_EQ(atomic_load(&util_bad_tokens), 0);
    return ok;
}

/* Cancels a job whose end is not settled yet: this call requests it. */
static bool cancel_requested(bgjob_job *job)
{
    bool ok = true;
    int32_t status = -1;

    CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_REQUESTED);
    return ok;
}

static const struct expect cancelled_after_run = {
    BGJOB_STATE_CANCELLED, 1, false, BGJOB_CANCEL_CAUSE_CALLER,
};

/* /blockjob/cancel/created */
static bool test_cancel_created(void)
{
    bool ok = true;
    static struct qcase c;
    bgjob_job *job = NULL;
    const struct expect e = { BGJOB_STATE_CANCELLED, 0, false, BGJOB_CANCEL_CAUSE_CALLER };

    CHECK_RC(create_common(&c, BGJOB_ERROR_POLICY_REPORT, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(state_of(job), BGJOB_STATE_CREATED);
    CHECK(cancel_requested(job));
    /* A created job ends within the cancel: its worker never runs, and its
     * userdata and finalize callbacks are done before cancel returns. */
    CHECK_STATE(state_of(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&c.t.frees), 1);
    CHECK_EQ(atomic_load(&c.aborts), 1);
    CHECK_EQ(atomic_load(&c.cleans), 1);
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK(end_common(&c, job, &e));
    return ok;
}

/* /blockjob/cancel/running */
static bool test_cancel_running(void)
{
    bool ok = true;
    static struct qcase c;
    bgjob_job *job = NULL;

    CHECK_RC(create_common(&c, BGJOB_ERROR_POLICY_REPORT, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    REQUIRE(start_running(&c, job));
    CHECK(cancel_requested(job));
    CHECK(end_common(&c, job, &cancelled_after_run));
    CHECK_EQ(atomic_load(&c.t.saw_cancel), 1);
    return ok;
}

/* /blockjob/cancel/paused */
static bool test_cancel_paused(void)
{
    bool ok = true;
    static struct qcase c;
    bgjob_job *job = NULL;
    bgjob_info info;

    CHECK_RC(create_common(&c, BGJOB_ERROR_POLICY_REPORT, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    REQUIRE(start_running(&c, job));
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_PAUSED);
    CHECK(settle_parked(&c));
    CHECK(stays_parked(&c));
    CHECK(cancel_requested(job));
    /* Cancel undoes the user pause at once, so the worker can see it. */
    if (info_of(job, &info)) {
        CHECK(!info.pause_requested);
        CHECK(info.cancel_requested);
        CHECK(info.state != BGJOB_STATE_PAUSED);
    }
    CHECK(end_common(&c, job, &cancelled_after_run));
    CHECK_EQ(atomic_load(&c.t.saw_cancel), 1);
    return ok;
}

/* Not in QEMU's file, but its block-job iostatus rule: a job paused by its
 * error policy is cancelled; the cancel resumes it and resets the iostatus. */
static bool cancel_error_stopped(int32_t policy, int32_t code, int32_t want_iostatus)
{
    bool ok = true;
    static struct qcase c;
    bgjob_job *job = NULL;
    bgjob_info info;

    CHECK_RC(create_common(&c, policy, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    REQUIRE(start_running(&c, job));
    atomic_store(&c.inject, code);
    CHECK(poll_int_eq(&c.io_action, BGJOB_ERROR_ACTION_STOP));
    CHECK_STATE(state_of(job), BGJOB_STATE_PAUSED);
    if (info_of(job, &info)) {
        CHECK_STATE(info.state, BGJOB_STATE_PAUSED);
        CHECK(info.pause_requested);
        CHECK_EQ(info.iostatus, want_iostatus);
        CHECK_EQ(info.error_policy, policy);
        CHECK_EQ(info.error_code, 0);
    }
    CHECK(settle_parked(&c));
    CHECK(stays_parked(&c));
    /* Still stopped: the error status stays while the pause lasts. */
    if (info_of(job, &info))
        CHECK_EQ(info.iostatus, want_iostatus);
    CHECK(cancel_requested(job));
    /* Reset by the cancel itself, before the worker even wakes. */
    if (info_of(job, &info)) {
        CHECK_EQ(info.iostatus, BGJOB_IOSTATUS_OK);
        CHECK(!info.pause_requested);
    }
    CHECK(end_common(&c, job, &cancelled_after_run));
    CHECK_EQ(atomic_load(&c.t.saw_cancel), 1);
    return ok;
}

static bool test_cancel_error_stopped(void)
{
    return cancel_error_stopped(BGJOB_ERROR_POLICY_STOP, EIO, BGJOB_IOSTATUS_FAILED);
}

static bool test_cancel_error_stopped_nospace(void)
{
    return cancel_error_stopped(BGJOB_ERROR_POLICY_ENOSPC, ENOSPC, BGJOB_IOSTATUS_NOSPACE);
}

/* /blockjob/cancel/ready: the work has converged; the job runs on until it
 * is completed (here: it keeps sleeping at 100 %). */
static bool test_cancel_ready(void)
{
    bool ok = true;
    static struct qcase c;
    bgjob_job *job = NULL;
    bgjob_info info;

    CHECK_RC(create_common(&c, BGJOB_ERROR_POLICY_REPORT, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    REQUIRE(start_running(&c, job));
    atomic_store(&c.converge, 1);
    CHECK(poll_int_eq(&c.ready, 1));
    CHECK_STATE(state_of(job), BGJOB_STATE_READY);
    if (info_of(job, &info))
        CHECK_EQ(info.percent, 100);
    CHECK(cancel_requested(job));
    CHECK(end_common(&c, job, &cancelled_after_run));
    return ok;
}

/* /blockjob/cancel/standby: ready, then user-paused. */
static bool test_cancel_standby(void)
{
    bool ok = true;
    static struct qcase c;
    bgjob_job *job = NULL;

    CHECK_RC(create_common(&c, BGJOB_ERROR_POLICY_REPORT, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    REQUIRE(start_running(&c, job));
    atomic_store(&c.converge, 1);
    CHECK(poll_int_eq(&c.ready, 1));
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_STANDBY);
    CHECK(settle_parked(&c));
    CHECK(cancel_requested(job));
    CHECK(end_common(&c, job, &cancelled_after_run));
    return ok;
}

/* Completes the worker of a running job and waits for PENDING (as QEMU's):
 * the work is done, nothing finalized yet. */
static bool reach_waiting(struct qcase *c, bgjob_job *job)
{
    bool ok = true;
    bgjob_info info;

    atomic_store(&c->converge, 1);
    CHECK(poll_int_eq(&c->ready, 1));
    CHECK_STATE(state_of(job), BGJOB_STATE_READY);
    CHECK_RC(bgjob_job_complete(job), BGJOB_RESULT_OK);
    CHECK(poll_state(job, BGJOB_STATE_PENDING));
    /* The worker has returned and its userdata is freed; nothing else ran. */
    CHECK(poll_int_eq(&c->t.frees, 1));
    CHECK_EQ(atomic_load(&c->t.returns), 1);
    sleep_ms(50);
    CHECK_STATE(state_of(job), BGJOB_STATE_PENDING);
    CHECK_EQ(atomic_load(&c->commits), 0);
    CHECK_EQ(atomic_load(&c->aborts), 0);
    CHECK_EQ(atomic_load(&c->cleans), 0);
    CHECK_EQ(atomic_load(&c->completions), 0);
    CHECK_EQ(atomic_load(&c->fin.frees), 0);
    if (info_of(job, &info)) {
        CHECK_STATE(info.state, BGJOB_STATE_PENDING);
        CHECK(!info.cancel_requested);
        CHECK_EQ(info.iostatus, BGJOB_IOSTATUS_OK);
    }
    /* PENDING: the worker may still be finalized, not destroyed. */
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_NOT_ALLOWED);
    return ok;
}

/* /blockjob/cancel/pending: the cancel turns the pending success into an
 * abort, on the cancelling thread. */
static bool test_cancel_pending(void)
{
    bool ok = true;
    static struct qcase c;
    bgjob_job *job = NULL;
    const struct expect e = { BGJOB_STATE_CANCELLED, 1, false, BGJOB_CANCEL_CAUSE_CALLER };
    int32_t code = -1;
    char msg[128];

    CHECK_RC(create_common(&c, BGJOB_ERROR_POLICY_REPORT, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    REQUIRE(start_running(&c, job));
    REQUIRE(reach_waiting(&c, job));
    CHECK(cancel_requested(job));
    /* Finalized within the cancel. */
    CHECK_STATE(state_of(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&c.aborts), 1);
    CHECK_EQ(atomic_load(&c.cleans), 1);
    CHECK_EQ(atomic_load(&c.t.saw_cancel), 0);
    CHECK_RC(bgjob_job_get_error(job, &code, msg, sizeof msg, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(code, ECANCELED);
    CHECK(end_common(&c, job, &e));
    return ok;
}

/* /blockjob/cancel/concluded: finalized (commit and clean ran) before the
 * cancel, which finds the job finished and changes nothing. */
static bool test_cancel_concluded(void)
{
    bool ok = true;
    static struct qcase c;
    bgjob_job *job = NULL;
    const struct expect e = { BGJOB_STATE_COMPLETED, 1, true, BGJOB_CANCEL_CAUSE_NONE };

    CHECK_RC(create_common(&c, BGJOB_ERROR_POLICY_REPORT, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    REQUIRE(start_running(&c, job));
    REQUIRE(reach_waiting(&c, job));
    CHECK_RC(bgjob_job_finalize(job), BGJOB_RESULT_OK);
    /* Finalized on this thread: commit and clean are done. */
    CHECK_STATE(state_of(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&c.commits), 1);
    CHECK_EQ(atomic_load(&c.cleans), 1);
    /* end_common cancels it again: ALREADY_FINISHED, still COMPLETED, no
     * abort. */
    CHECK(end_common(&c, job, &e));
    return ok;
}

/* Two cancels of a running job: exactly one is the request; the end is the
 * same. */
static bool test_cancel_twice(void)
{
    bool ok = true;
    static struct qcase c;
    bgjob_job *job = NULL;
    int32_t status = -1;

    CHECK_RC(create_common(&c, BGJOB_ERROR_POLICY_REPORT, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    REQUIRE(start_running(&c, job));
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK(cancel_requested(job));
    CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
    CHECK(status == BGJOB_CANCEL_STATUS_ALREADY_REQUESTED ||
          status == BGJOB_CANCEL_STATUS_ALREADY_FINISHED);
    /* A cancelled job cannot be paused again. */
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK(end_common(&c, job, &cancelled_after_run));
    return ok;
}

/* The same case, as an external job driven by an owner thread. */
#define EXTERNAL(name)                                                          \
    static bool external_##name(void)                                         \
    {                                                                           \
        external_mode = true;                                                   \
        bool ok = name();                                                       \
        external_mode = false;                                                  \
        return ok;                                                              \
    }
EXTERNAL(test_cancel_created)
EXTERNAL(test_cancel_running)
EXTERNAL(test_cancel_paused)
EXTERNAL(test_cancel_error_stopped)
EXTERNAL(test_cancel_error_stopped_nospace)
EXTERNAL(test_cancel_ready)
EXTERNAL(test_cancel_standby)
EXTERNAL(test_cancel_pending)
EXTERNAL(test_cancel_concluded)
EXTERNAL(test_cancel_twice)

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_cancel_created),
        TAP_TEST(test_cancel_running),
        TAP_TEST(test_cancel_paused),
        TAP_TEST(test_cancel_error_stopped),
        TAP_TEST(test_cancel_error_stopped_nospace),
        TAP_TEST(test_cancel_ready),
        TAP_TEST(test_cancel_standby),
        TAP_TEST(test_cancel_pending),
        TAP_TEST(test_cancel_concluded),
        TAP_TEST(test_cancel_twice),
        TAP_TEST(external_test_cancel_created),
        TAP_TEST(external_test_cancel_running),
        TAP_TEST(external_test_cancel_paused),
        TAP_TEST(external_test_cancel_error_stopped),
        TAP_TEST(external_test_cancel_error_stopped_nospace),
        TAP_TEST(external_test_cancel_ready),
        TAP_TEST(external_test_cancel_standby),
        TAP_TEST(external_test_cancel_pending),
        TAP_TEST(external_test_cancel_concluded),
        TAP_TEST(external_test_cancel_twice),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

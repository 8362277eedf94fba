/* What an external job's owner reports beyond progress and its end, as a
 * QEMU driver does: the states bgjob cannot infer (bgjob_job_report_state:
 * WAITING, PENDING, ABORTING) with the whole transition table walked, the
 * manual finalize forwarded as BGJOB_CONTROL_FINALIZE (a job alone, asked in
 * WAITING or PENDING; a transaction, told to one member only), auto-finalize
 * still possible, a forwarded verb that failed (bgjob_job_control_failed:
 * what is undone, the event, the readable error), calls back in from inside
 * the control callback, reports racing from several threads, reports on a
 * job that already ended, and bgjob_job_wait_state. */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_CONTROL 6
#define MAX_EVENTS 256

/* One job's owner: what its control callback and event callback saw, and
 * what it does inside a control call (the way a driver answers QEMU). */
struct owner {
    atomic_int calls[N_CONTROL];
    atomic_int frees;
    atomic_int completions;
    atomic_int completion_state;
    atomic_int ends; /* END events (the array below may fill up) */
    /* Inside the call: refuse PAUSE (QEMU's error), end on FINALIZE, report
     * ABORTING then end on CANCEL. */
    bool refuse_pause;
    bool end_on_finalize;
    bool abort_on_cancel;
    atomic_int inside_rc; /* the first non-OK result of a call made inside */
    pthread_mutex_t mu;
    int n_events;
    bgjob_event events[MAX_EVENTS];
};

static void owner_init(struct owner *o)
{
    memset(o, 0, sizeof *o);
    atomic_init(&o->completion_state, -1);
    pthread_mutex_init(&o->mu, NULL);
}

static void note_inside(struct owner *o, bgjob_result r)
{
    int zero = 0;
    if (r != BGJOB_RESULT_OK)
        atomic_compare_exchange_strong(&o->inside_rc, &zero, (int)r + 1000);
}

static void on_control(void *userdata, bgjob_job *job, bgjob_control what, int64_t arg)
{
    struct owner *o = userdata;
    (void)arg;
    if ((int)what >= 0 && (int)what < N_CONTROL)
        atomic_fetch_add(&o->calls[what], 1);
    if (what == BGJOB_CONTROL_PAUSE && o->refuse_pause)
        note_inside(o, bgjob_job_control_failed(job, BGJOB_CONTROL_PAUSE, 22,
                                                "Job 'm' in state 'waiting' cannot accept pause"));
    if (what == BGJOB_CONTROL_FINALIZE && o->end_on_finalize)
        note_inside(o, bgjob_job_end(job, 0, NULL));
    if (what == BGJOB_CONTROL_CANCEL && o->abort_on_cancel) {
        note_inside(o, bgjob_job_report_state(job, BGJOB_STATE_ABORTING));
        note_inside(o, bgjob_job_end(job, 125, "cancelled by QEMU"));
    }
}

static void on_control_free(void *userdata)
{
    atomic_fetch_add(&((struct owner *)userdata)->frees, 1);
}

static void on_event(void *userdata, bgjob_job *job, const bgjob_event *ev)
{
    struct owner *o = userdata;
    (void)job;
    if (ev->kind == BGJOB_EVENT_KIND_END)
        atomic_fetch_add(&o->ends, 1);
    pthread_mutex_lock(&o->mu);
    if (o->n_events < MAX_EVENTS)
        o->events[o->n_events++] = *ev;
    pthread_mutex_unlock(&o->mu);
}

static void on_complete(void *userdata, bgjob_job *job, bgjob_state state)
{
    struct owner *o = userdata;
    (void)job;
    atomic_store(&o->completion_state, state);
    atomic_fetch_add(&o->completions, 1);
}

/* An external job owned by `o` (control, events, completion); started
 * unless `flags` defers it. */
static bgjob_result ext_create(struct owner *o, uint32_t flags, bgjob_job **out)
{
    bgjob_job_options opts;
    bgjob_job_options_init(&opts, sizeof opts);
    opts.flags = flags | BGJOB_CREATE_EXTERNAL;
    opts.control = on_control;
    opts.control_userdata = o;
    opts.control_free = on_control_free;
    opts.event = on_event;
    opts.event_userdata = o;
    opts.completion = on_complete;
    opts.completion_userdata = o;
    return bgjob_job_create(&opts, NULL, NULL, NULL, out);
}

/* The STATE_CHANGED events seen, as "old>new" pairs joined by spaces. */
static void state_trail(struct owner *o, char *buf, size_t len)
{
    size_t at = 0;
    buf[0] = '\0';
    pthread_mutex_lock(&o->mu);
    for (int i = 0; i < o->n_events && at < len; i++) {
        const bgjob_event *e = &o->events[i];
        if (e->kind != BGJOB_EVENT_KIND_STATE_CHANGED)
            continue;
        at += (size_t)snprintf(buf + at, len - at, "%s%s>%s", at ? " " : "",
                               bgjob_state_str(e->old_state), bgjob_state_str(e->new_state));
    }
    pthread_mutex_unlock(&o->mu);
}

static int count_kind(struct owner *o, bgjob_event_kind kind)
{
    int n = 0;
    pthread_mutex_lock(&o->mu);
    for (int i = 0; i < o->n_events; i++)
        n += o->events[i].kind == kind;
    pthread_mutex_unlock(&o->mu);
    return n;
}

static bool finish_and_destroy(bgjob_job *job, struct owner *o)
{
    bool ok = true;
    int32_t s = state_of(job);
    if (s != BGJOB_STATE_COMPLETED && s != BGJOB_STATE_FAILED && s != BGJOB_STATE_CANCELLED &&
        s != BGJOB_STATE_CREATED) {
        bgjob_job_end(job, 5, "test over");
        if (state_of(job) == BGJOB_STATE_PENDING)
            bgjob_job_finalize(job);
        CHECK(wait_end(job) >= BGJOB_STATE_COMPLETED);
    }
    /* A completion on a bgjob thread of its own may come after the wait. */
    CHECK(poll_int_eq(&o->completions, 1));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&o->frees, 1));
    CHECK_EQ(atomic_load(&o->ends), 1);
    return ok;
}

/* Puts a fresh started external job in `from` (a state the owner or the
 * verbs can reach). */
static bool reach(bgjob_job *job, int32_t from)
{
    switch (from) {
    case BGJOB_STATE_RUNNING:
        return true;
    case BGJOB_STATE_PAUSED:
        return bgjob_job_pause(job) == BGJOB_RESULT_OK;
    case BGJOB_STATE_READY:
        return bgjob_job_set_ready(job) == BGJOB_RESULT_OK;
    case BGJOB_STATE_STANDBY:
        return bgjob_job_set_ready(job) == BGJOB_RESULT_OK &&
               bgjob_job_pause(job) == BGJOB_RESULT_OK;
    case BGJOB_STATE_WAITING:
    case BGJOB_STATE_PENDING:
    case BGJOB_STATE_ABORTING:
        return bgjob_job_report_state(job, from) == BGJOB_RESULT_OK;
    default:
        return false;
    }
}

static bool allowed_report(int32_t from, int32_t to)
{
    bool running = from == BGJOB_STATE_RUNNING || from == BGJOB_STATE_PAUSED ||
                   from == BGJOB_STATE_READY || from == BGJOB_STATE_STANDBY;
    switch (to) {
    case BGJOB_STATE_WAITING:
        return running || from == BGJOB_STATE_WAITING;
    case BGJOB_STATE_PENDING:
        return running || from == BGJOB_STATE_WAITING || from == BGJOB_STATE_PENDING;
    case BGJOB_STATE_ABORTING:
        return running || from == BGJOB_STATE_WAITING || from == BGJOB_STATE_PENDING ||
               from == BGJOB_STATE_ABORTING;
    default:
        return false;
    }
}

/* Every (from, to) pair: allowed ones land in `to`, refused ones return
 * NOT_ALLOWED (INVALID_ARGUMENT for a state that is never reported) and
 * change nothing, not even an event. */
static bool test_the_transition_table(void)
{
    bool ok = true;
    static const int32_t froms[] = {
        BGJOB_STATE_RUNNING, BGJOB_STATE_PAUSED,  BGJOB_STATE_READY,    BGJOB_STATE_STANDBY,
        BGJOB_STATE_WAITING, BGJOB_STATE_PENDING, BGJOB_STATE_ABORTING,
    };
    for (size_t i = 0; i < sizeof froms / sizeof froms[0]; i++) {
        for (int32_t to = -1; to <= BGJOB_STATE_COUNT; to++) {
            struct owner o;
            bgjob_job *job = NULL;
            owner_init(&o);
            REQUIRE(ext_create(&o, 0, &job) == BGJOB_RESULT_OK);
            REQUIRE(reach(job, froms[i]));
            CHECK_STATE(state_of(job), froms[i]);
            int before = o.n_events;
            bgjob_result r = bgjob_job_report_state(job, to);
            bool reportable = to == BGJOB_STATE_WAITING || to == BGJOB_STATE_PENDING ||
                              to == BGJOB_STATE_ABORTING;
            bgjob_result want = !reportable                  ? BGJOB_RESULT_INVALID_ARGUMENT
                                : allowed_report(froms[i], to) ? BGJOB_RESULT_OK
                                                               : BGJOB_RESULT_NOT_ALLOWED;
            if (r != want)
                tap_diag("from %s report %d", bgjob_state_str(froms[i]), to);
            CHECK_RC(r, want);
            CHECK_STATE(state_of(job), want == BGJOB_RESULT_OK ? to : froms[i]);
            if (want != BGJOB_RESULT_OK || to == froms[i])
                CHECK_EQ(o.n_events, before);
            else
                CHECK_EQ(o.n_events, before + 1);
            /* The owner heard nothing of its own report. */
            for (int c = 0; c < N_CONTROL; c++)
                if (c != BGJOB_CONTROL_PAUSE)
                    CHECK_EQ(atomic_load(&o.calls[c]), 0);
            ok = finish_and_destroy(job, &o) && ok;
        }
    }
    return ok;
}

/* Not started, threaded, ended: refused with a clear code, nothing lost. */
static bool test_reports_refused_outside_the_owner_s_work(void)
{
    bool ok = true;
    struct owner o;
    bgjob_job *job = NULL;
    owner_init(&o);
    REQUIRE(ext_create(&o, BGJOB_CREATE_DEFER_START, &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_report_state(job, BGJOB_STATE_WAITING), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_control_failed(job, BGJOB_CONTROL_PAUSE, 5, "x"), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_STATE(state_of(job), BGJOB_STATE_CREATED);
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_control_failed(job, BGJOB_CONTROL_SET_SPEED, 7, "first"), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_end(job, 5, "failed in QEMU"), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    for (int32_t s = BGJOB_STATE_WAITING; s <= BGJOB_STATE_ABORTING; s++)
        if (s == BGJOB_STATE_WAITING || s == BGJOB_STATE_PENDING || s == BGJOB_STATE_ABORTING)
            CHECK_RC(bgjob_job_report_state(job, s), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_control_failed(job, BGJOB_CONTROL_PAUSE, 9, "late"),
             BGJOB_RESULT_NOT_ALLOWED);
    CHECK_STATE(state_of(job), BGJOB_STATE_FAILED);
    /* The failure recorded before the end is still there, the late one not. */
    bool found = false;
    bgjob_control what = BGJOB_CONTROL_CANCEL;
    int32_t code = 0;
    char buf[32];
    size_t len = 0;
    CHECK_RC(bgjob_job_get_control_error(job, &found, &what, &code, buf, sizeof buf, &len),
             BGJOB_RESULT_OK);
    CHECK(found);
    CHECK_EQ(what, BGJOB_CONTROL_SET_SPEED);
    CHECK_EQ(code, 7);
    CHECK_STR(buf, "first");
    CHECK_EQ(len, 5);
    /* The job's own error is the end's. */
    char ebuf[64];
    int32_t ecode = 0;
    CHECK_RC(bgjob_job_get_error(job, &ecode, ebuf, sizeof ebuf, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(ecode, 5);
    CHECK_STR(ebuf, "failed in QEMU");
    ok = finish_and_destroy(job, &o) && ok;

    /* A threaded job has its own worker: no reported state. */
    struct tracker t;
    struct gate g;
    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    REQUIRE(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_report_state(job, BGJOB_STATE_PENDING), BGJOB_RESULT_NOT_ALLOWED);
    /* No control callback: nothing was forwarded, nothing can fail. */
    CHECK_RC(bgjob_job_control_failed(job, BGJOB_CONTROL_PAUSE, 5, NULL), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_get_control_error(job, &found, NULL, NULL, NULL, 0, NULL), BGJOB_RESULT_OK);
    CHECK(!found);
    CHECK_RC(bgjob_job_get_control_error(job, NULL, NULL, NULL, NULL, 0, NULL),
             BGJOB_RESULT_INVALID_ARGUMENT);
    gate_open(&g);
    CHECK(wait_end(job) == BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    CHECK_RC(bgjob_job_report_state(job, BGJOB_STATE_PENDING), BGJOB_RESULT_INVALID_HANDLE);
    return ok;
}

/* A manual-finalize job alone: PENDING reported, the user's finalize is told
 * to the owner once (not finalized locally), a second is refused, the
 * owner's end then completes it with no further call. */
static bool test_manual_finalize_is_forwarded(void)
{
    bool ok = true;
    char trail[512];
    for (int asked_in_waiting = 0; asked_in_waiting < 2; asked_in_waiting++) {
        struct owner o;
        bgjob_job *job = NULL;
        owner_init(&o);
        REQUIRE(ext_create(&o, BGJOB_CREATE_MANUAL_FINALIZE, &job) == BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_finalize(job), BGJOB_RESULT_NOT_ALLOWED); /* RUNNING */
        CHECK_RC(bgjob_job_report_state(job, BGJOB_STATE_WAITING), BGJOB_RESULT_OK);
        if (asked_in_waiting) {
            CHECK_RC(bgjob_job_finalize(job), BGJOB_RESULT_OK);
            /* QEMU refuses job-finalize in WAITING: not told yet. */
            CHECK_EQ(atomic_load(&o.calls[BGJOB_CONTROL_FINALIZE]), 0);
        }
        CHECK_RC(bgjob_job_report_state(job, BGJOB_STATE_PENDING), BGJOB_RESULT_OK);
        if (!asked_in_waiting) {
            CHECK_EQ(atomic_load(&o.calls[BGJOB_CONTROL_FINALIZE]), 0);
            CHECK_RC(bgjob_job_finalize(job), BGJOB_RESULT_OK);
        }
        CHECK_EQ(atomic_load(&o.calls[BGJOB_CONTROL_FINALIZE]), 1);
        CHECK_STATE(state_of(job), BGJOB_STATE_PENDING);
        CHECK_RC(bgjob_job_finalize(job), BGJOB_RESULT_NOT_ALLOWED);
        CHECK_EQ(atomic_load(&o.calls[BGJOB_CONTROL_FINALIZE]), 1);
        CHECK_EQ(atomic_load(&o.completions), 0);
        /* QEMU concluded: the owner ends it, and that is the end. */
        CHECK_RC(bgjob_job_end(job, 0, NULL), BGJOB_RESULT_OK);
        CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
        CHECK(poll_int_eq(&o.completions, 1));
        state_trail(&o, trail, sizeof trail);
        CHECK_STR(trail, "created>running running>waiting waiting>pending pending>waiting "
                         "waiting>completed");
        ok = finish_and_destroy(job, &o) && ok;
    }
    return ok;
}

/* Without manual finalize QEMU finalizes by itself: PENDING may be reported,
 * a finalize is refused, the owner's end completes the job. */
static bool test_auto_finalize_stays_possible(void)
{
    bool ok = true;
    struct owner o;
    bgjob_job *job = NULL;
    owner_init(&o);
    REQUIRE(ext_create(&o, 0, &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_report_state(job, BGJOB_STATE_PENDING), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_finalize(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_EQ(atomic_load(&o.calls[BGJOB_CONTROL_FINALIZE]), 0);
    CHECK_RC(bgjob_job_end(job, 0, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    /* And an owner that never reports anything: as before. */
    ok = finish_and_destroy(job, &o) && ok;
    owner_init(&o);
    REQUIRE(ext_create(&o, BGJOB_CREATE_MANUAL_FINALIZE, &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_end(job, 0, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_PENDING);
    CHECK_RC(bgjob_job_finalize(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&o.calls[BGJOB_CONTROL_FINALIZE]), 0);
    ok = finish_and_destroy(job, &o) && ok;
    return ok;
}

/* ABORTING: a cancel is recorded but not told (QEMU refuses job-cancel
 * there), so the failing end cancels the job; finalize and updates are
 * refused; without a cancel the failing end fails it. */
static bool test_aborting(void)
{
    bool ok = true;
    struct owner o;
    bgjob_job *job = NULL;
    bgjob_cancel_status cs = BGJOB_CANCEL_STATUS_REQUESTED;
    char trail[512];
    owner_init(&o);
    REQUIRE(ext_create(&o, BGJOB_CREATE_MANUAL_FINALIZE, &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_ready(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_report_state(job, BGJOB_STATE_ABORTING), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(job, &cs), BGJOB_RESULT_OK);
    CHECK_EQ(cs, BGJOB_CANCEL_STATUS_REQUESTED);
    CHECK_RC(bgjob_job_cancel(job, &cs), BGJOB_RESULT_OK);
    CHECK_EQ(cs, BGJOB_CANCEL_STATUS_ALREADY_REQUESTED);
    CHECK_EQ(atomic_load(&o.calls[BGJOB_CONTROL_CANCEL]), 0);
    CHECK_STATE(state_of(job), BGJOB_STATE_ABORTING);
    CHECK_RC(bgjob_job_finalize(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_set_total(job, 10), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_set_ready(job), BGJOB_RESULT_NOT_ALLOWED);
    bgjob_error_action act = BGJOB_ERROR_ACTION_IGNORE;
    CHECK_RC(bgjob_job_report_io_error(job, 5, "late", &act), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_EQ(act, BGJOB_ERROR_ACTION_IGNORE);
    CHECK_RC(bgjob_job_report_state(job, BGJOB_STATE_PENDING), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_end(job, 5, "target write failed"), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    state_trail(&o, trail, sizeof trail);
    CHECK_STR(trail, "created>running running>ready ready>standby standby>aborting aborting>waiting "
                     "waiting>cancelled");
    ok = finish_and_destroy(job, &o) && ok;

    owner_init(&o);
    REQUIRE(ext_create(&o, 0, &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_report_state(job, BGJOB_STATE_ABORTING), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_end(job, 5, "target write failed"), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    ok = finish_and_destroy(job, &o) && ok;
    return ok;
}

/* Each failure: recorded, an event, and what the verb set undone. */
static bool test_control_failed_undoes_and_tells(void)
{
    bool ok = true;
    struct owner o;
    bgjob_job *job = NULL;
    bgjob_info info = { .struct_size = sizeof info };
    bool found = false;
    bgjob_control what = BGJOB_CONTROL_CANCEL;
    int32_t code = 0;
    char buf[64];
    char trail[512];
    owner_init(&o);
    REQUIRE(ext_create(&o, BGJOB_CREATE_MANUAL_FINALIZE, &job) == BGJOB_RESULT_OK);

    /* PAUSE: back to RUNNING, no RESUME told. */
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_control_failed(job, BGJOB_CONTROL_PAUSE, 22, "cannot pause"),
             BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
    CHECK_EQ(atomic_load(&o.calls[BGJOB_CONTROL_RESUME]), 0);
    CHECK_RC(bgjob_job_get_control_error(job, &found, &what, &code, buf, sizeof buf, NULL),
             BGJOB_RESULT_OK);
    CHECK(found);
    CHECK_EQ(what, BGJOB_CONTROL_PAUSE);
    CHECK_EQ(code, 22);
    CHECK_STR(buf, "cannot pause");
    /* Pause works again after it (the flag really was undone). */
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&o.calls[BGJOB_CONTROL_PAUSE]), 2);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);

    /* An I/O-error stop was never told as PAUSE: a PAUSE failure keeps it. */
    CHECK_RC(bgjob_job_set_error_policy(job, BGJOB_ERROR_POLICY_STOP), BGJOB_RESULT_OK);
    bgjob_error_action act = BGJOB_ERROR_ACTION_REPORT;
    CHECK_RC(bgjob_job_report_io_error(job, 5, "EIO", &act), BGJOB_RESULT_OK);
    CHECK_EQ(act, BGJOB_ERROR_ACTION_STOP);
    CHECK_RC(bgjob_job_control_failed(job, BGJOB_CONTROL_PAUSE, 22, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_PAUSED);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);

    /* SET_SPEED: the value before the change comes back. */
    CHECK_RC(bgjob_job_set_speed(job, 1000), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_speed(job, 5000), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_control_failed(job, BGJOB_CONTROL_SET_SPEED, 22, "bad speed"),
             BGJOB_RESULT_OK);
    uint64_t speed = 0;
    CHECK_RC(bgjob_job_get_speed(job, &speed), BGJOB_RESULT_OK);
    CHECK_EQ(speed, 1000);

    /* COMPLETE: no longer requested; complete may be asked again. */
    CHECK_RC(bgjob_job_set_ready(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_complete(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_control_failed(job, BGJOB_CONTROL_COMPLETE, 1, "not ready in QEMU"),
             BGJOB_RESULT_OK);
    REQUIRE(bgjob_job_get_info(job, &info) == BGJOB_RESULT_OK);
    CHECK(!info.complete_requested);
    CHECK_RC(bgjob_job_complete(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&o.calls[BGJOB_CONTROL_COMPLETE]), 2);

    /* FINALIZE: the request is dropped; finalize may be asked again. */
    CHECK_RC(bgjob_job_report_state(job, BGJOB_STATE_PENDING), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_finalize(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_control_failed(job, BGJOB_CONTROL_FINALIZE, 5, "commit failed"),
             BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_PENDING);
    CHECK_RC(bgjob_job_finalize(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&o.calls[BGJOB_CONTROL_FINALIZE]), 2);

    /* CANCEL: stays requested. */
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_control_failed(job, BGJOB_CONTROL_CANCEL, 16, "busy"), BGJOB_RESULT_OK);
    REQUIRE(bgjob_job_get_info(job, &info) == BGJOB_RESULT_OK);
    CHECK(info.cancel_requested);

    /* Bad arguments change nothing. */
    CHECK_RC(bgjob_job_control_failed(job, BGJOB_CONTROL_PAUSE, 0, "zero"),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_control_failed(job, 99, 5, "what?"), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_control_failed(job, -1, 5, "what?"), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_control_failed(job, BGJOB_CONTROL_PAUSE, 5, "\xff\xfe"),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_get_control_error(job, &found, &what, &code, NULL, 4, NULL),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_get_control_error(job, &found, &what, &code, NULL, 0, NULL),
             BGJOB_RESULT_OK);
    CHECK_EQ(what, BGJOB_CONTROL_CANCEL);
    CHECK_EQ(code, 16);

    /* One CONTROL_FAILED event per accepted failure, with its code. */
    CHECK_EQ(count_kind(&o, BGJOB_EVENT_KIND_CONTROL_FAILED), 6);
    pthread_mutex_lock(&o.mu);
    int first = -1;
    for (int i = 0; i < o.n_events && first < 0; i++)
        if (o.events[i].kind == BGJOB_EVENT_KIND_CONTROL_FAILED)
            first = i;
    CHECK(first >= 0);
    if (first >= 0) {
        CHECK_EQ(o.events[first].error_code, 22);
        CHECK_STATE(o.events[first].old_state, BGJOB_STATE_PAUSED);
        /* The undo's own change follows it. */
        CHECK(first + 1 < o.n_events);
        CHECK_EQ(o.events[first + 1].kind, BGJOB_EVENT_KIND_STATE_CHANGED);
        CHECK_STATE(o.events[first + 1].new_state, BGJOB_STATE_RUNNING);
    }
    pthread_mutex_unlock(&o.mu);
    CHECK_RC(bgjob_job_end(job, 125, "cancelled"), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    state_trail(&o, trail, sizeof trail);
    tap_diag("%s", trail);
    ok = finish_and_destroy(job, &o) && ok;
    return ok;
}

/* From inside the control callback, as a driver whose QMP reply comes back
 * at once: a refused PAUSE reported from the PAUSE call, the end from the
 * FINALIZE call, ABORTING and the end from the CANCEL call. */
static bool test_calls_back_in_from_the_control_callback(void)
{
    bool ok = true;
    struct owner o;
    bgjob_job *job = NULL;
    owner_init(&o);
    o.refuse_pause = true;
    o.end_on_finalize = true;
    REQUIRE(ext_create(&o, BGJOB_CREATE_MANUAL_FINALIZE, &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
    CHECK_RC(bgjob_job_report_state(job, BGJOB_STATE_PENDING), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_finalize(job), BGJOB_RESULT_OK);
    /* The end inside the FINALIZE call ran the completion before it returned. */
    CHECK_STATE(state_of(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&o.completions), 1);
    CHECK_EQ(atomic_load(&o.inside_rc), 0);
    CHECK_EQ(count_kind(&o, BGJOB_EVENT_KIND_CONTROL_FAILED), 1);
    ok = finish_and_destroy(job, &o) && ok;

    owner_init(&o);
    o.abort_on_cancel = true;
    REQUIRE(ext_create(&o, BGJOB_CREATE_MANUAL_FINALIZE, &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_report_state(job, BGJOB_STATE_PENDING), BGJOB_RESULT_OK);
    bgjob_cancel_status cs = BGJOB_CANCEL_STATUS_ALREADY_FINISHED;
    CHECK_RC(bgjob_job_cancel(job, &cs), BGJOB_RESULT_OK);
    CHECK_EQ(cs, BGJOB_CANCEL_STATUS_REQUESTED);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&o.inside_rc), 0);
    char trail[512];
    state_trail(&o, trail, sizeof trail);
    CHECK_STR(trail, "created>running running>pending pending>aborting aborting>waiting "
                     "waiting>cancelled");
    ok = finish_and_destroy(job, &o) && ok;
    return ok;
}

/* A manual-finalize transaction of external jobs: WAITING then PENDING as
 * QEMU reports them, the transaction's finalize told to one owner only
 * (QEMU's job-finalize of one member finalizes all), asked early it waits
 * for a PENDING report, a failed forward lets it be asked again, the owners'
 * ends complete every member. */
static bool test_transaction_of_external_jobs_with_manual_finalize(void)
{
    bool ok = true;
    for (int variant = 0; variant < 3; variant++) {
        struct owner o[2];
        bgjob_job *m[2] = { NULL, NULL };
        bgjob_txn *txn = NULL;
        REQUIRE(bgjob_txn_create(BGJOB_TXN_MANUAL_FINALIZE, &txn) == BGJOB_RESULT_OK);
        for (int i = 0; i < 2; i++) {
            owner_init(&o[i]);
            REQUIRE(ext_create(&o[i], BGJOB_CREATE_DEFER_START, &m[i]) == BGJOB_RESULT_OK);
            REQUIRE(bgjob_txn_add(txn, m[i]) == BGJOB_RESULT_OK);
        }
        REQUIRE(bgjob_txn_start(txn) == BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_report_state(m[0], BGJOB_STATE_WAITING), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_report_state(m[1], BGJOB_STATE_WAITING), BGJOB_RESULT_OK);
        if (variant == 1) /* asked before QEMU says PENDING */
            CHECK_RC(bgjob_txn_finalize(txn), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&o[0].calls[BGJOB_CONTROL_FINALIZE]), 0);
        CHECK_RC(bgjob_job_report_state(m[0], BGJOB_STATE_PENDING), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_report_state(m[1], BGJOB_STATE_PENDING), BGJOB_RESULT_OK);
        if (variant == 0)
            CHECK_RC(bgjob_txn_finalize(txn), BGJOB_RESULT_OK);
        if (variant == 2) /* through the second member's finalize */
            CHECK_RC(bgjob_job_finalize(m[1]), BGJOB_RESULT_OK);
        int told0 = atomic_load(&o[0].calls[BGJOB_CONTROL_FINALIZE]);
        int told1 = atomic_load(&o[1].calls[BGJOB_CONTROL_FINALIZE]);
        CHECK_EQ(told0 + told1, 1);
        CHECK_EQ(told1, variant == 2 ? 1 : 0);
        /* Asked again while forwarded: nothing more is told. */
        CHECK_RC(bgjob_txn_finalize(txn), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&o[0].calls[BGJOB_CONTROL_FINALIZE]) +
                     atomic_load(&o[1].calls[BGJOB_CONTROL_FINALIZE]),
                 1);
        if (variant == 0) {
            /* QEMU refused: the transaction waits for another finalize. */
            CHECK_RC(bgjob_job_control_failed(m[0], BGJOB_CONTROL_FINALIZE, 5, "refused"),
                     BGJOB_RESULT_OK);
            CHECK_RC(bgjob_job_end(m[0], 0, NULL), BGJOB_RESULT_OK);
            CHECK_RC(bgjob_job_end(m[1], 0, NULL), BGJOB_RESULT_OK);
            CHECK(poll_state(m[0], BGJOB_STATE_PENDING));
            CHECK_STATE(state_of(m[1]), BGJOB_STATE_PENDING);
            CHECK_RC(bgjob_txn_finalize(txn), BGJOB_RESULT_OK);
        } else {
            CHECK_RC(bgjob_job_end(m[0], 0, NULL), BGJOB_RESULT_OK);
            CHECK_STATE(state_of(m[1]), BGJOB_STATE_PENDING);
            CHECK_RC(bgjob_job_end(m[1], 0, NULL), BGJOB_RESULT_OK);
        }
        for (int i = 0; i < 2; i++) {
            CHECK_STATE(wait_end(m[i]), BGJOB_STATE_COMPLETED);
            CHECK(poll_int_eq(&o[i].completions, 1));
        }
        CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
        for (int i = 0; i < 2; i++)
            ok = finish_and_destroy(m[i], &o[i]) && ok;
    }
    return ok;
}

/* Several threads report, fail verbs and pause at once while the owner
 * drives the job to its end: no crash, no hang, the reported states only
 * move forward, exactly one end. */
struct race {
    bgjob_job *job;
    atomic_int stop;
    atomic_int ops;
};

static void *racer(void *arg)
{
    struct race *r = arg;
    unsigned seed = (unsigned)(uintptr_t)pthread_self();
    while (!atomic_load(&r->stop)) {
        switch (rand_r(&seed) % 6) {
        case 0:
            bgjob_job_report_state(r->job, BGJOB_STATE_WAITING);
            break;
        case 1:
            bgjob_job_report_state(r->job, BGJOB_STATE_PENDING);
            break;
        case 2:
            bgjob_job_control_failed(r->job, BGJOB_CONTROL_PAUSE, 5, "racing");
            break;
        case 3:
            bgjob_job_pause(r->job);
            break;
        case 4:
            bgjob_job_finalize(r->job);
            break;
        default:
            bgjob_job_control_failed(r->job, BGJOB_CONTROL_FINALIZE, 5, "racing");
            break;
        }
        atomic_fetch_add(&r->ops, 1);
    }
    return NULL;
}

static int rank(int32_t s)
{
    switch (s) {
    case BGJOB_STATE_WAITING:
        return 1;
    case BGJOB_STATE_PENDING:
        return 2;
    case BGJOB_STATE_ABORTING:
        return 3;
    default:
        return 0;
    }
}

static bool test_reports_race_from_several_threads(void)
{
    bool ok = true;
    for (int round = 0; round < 20; round++) {
        struct owner o;
        struct race r = { 0 };
        pthread_t th[4];
        owner_init(&o);
        REQUIRE(ext_create(&o, BGJOB_CREATE_MANUAL_FINALIZE, &r.job) == BGJOB_RESULT_OK);
        for (int i = 0; i < 4; i++)
            REQUIRE(pthread_create(&th[i], NULL, racer, &r) == 0);
        while (atomic_load(&r.ops) < 200 * (round + 1))
            sleep_us(100);
        /* The racers stop before the owner's last report and end: a thread
         * that becomes a job's event deliverer delivers until the queue is
         * empty, so racers that never stop making events (CONTROL_FAILED
         * here) would keep it delivering (docs/design.md, "Events"). */
        atomic_store(&r.stop, 1);
        for (int i = 0; i < 4; i++)
            pthread_join(th[i], NULL);
        if (round % 2)
            CHECK(bgjob_job_report_state(r.job, BGJOB_STATE_ABORTING) == BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_end(r.job, round % 2 ? 5 : 0, NULL), BGJOB_RESULT_OK);
        int32_t s = state_of(r.job);
        if (s == BGJOB_STATE_PENDING)
            CHECK_RC(bgjob_job_finalize(r.job), BGJOB_RESULT_OK);
        s = wait_end(r.job);
        CHECK_STATE(s, round % 2 ? BGJOB_STATE_FAILED : BGJOB_STATE_COMPLETED);
        /* While the owner's work ran, reported states never went back. */
        pthread_mutex_lock(&o.mu);
        int ends = 0;
        if (o.n_events == MAX_EVENTS)
            ends = 1; /* END past the array: counted in o.ends */
        for (int i = 0; i < o.n_events; i++) {
            const bgjob_event *e = &o.events[i];
            ends += e->kind == BGJOB_EVENT_KIND_END;
            if (e->kind != BGJOB_EVENT_KIND_STATE_CHANGED || ends)
                continue;
            if (rank(e->old_state) > rank(e->new_state) && e->new_state != BGJOB_STATE_WAITING &&
                !(e->new_state >= BGJOB_STATE_COMPLETED && e->new_state <= BGJOB_STATE_CANCELLED)) {
                tap_diag("went back: %s > %s", bgjob_state_str(e->old_state),
                         bgjob_state_str(e->new_state));
                ok = false;
            }
        }
        pthread_mutex_unlock(&o.mu);
        CHECK(ends <= 1);
        ok = finish_and_destroy(r.job, &o) && ok;
    }
    return ok;
}

/* A detached job ends by itself: its manual finalize, which nobody can ask
 * any more, is told to the owner (at once in PENDING, else when it reports
 * PENDING), and the owner's end ends it. */
static bool test_detach_forwards_the_finalize(void)
{
    bool ok = true;
    for (int reported_first = 0; reported_first < 2; reported_first++) {
        struct owner o;
        bgjob_job *job = NULL;
        owner_init(&o);
        REQUIRE(ext_create(&o, BGJOB_CREATE_MANUAL_FINALIZE, &job) == BGJOB_RESULT_OK);
        if (reported_first)
            CHECK_RC(bgjob_job_report_state(job, BGJOB_STATE_PENDING), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_detach(job, 0), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&o.calls[BGJOB_CONTROL_FINALIZE]), reported_first);
        if (!reported_first) {
            CHECK_RC(bgjob_job_report_state(job, BGJOB_STATE_WAITING), BGJOB_RESULT_OK);
            CHECK_EQ(atomic_load(&o.calls[BGJOB_CONTROL_FINALIZE]), 0);
            CHECK_RC(bgjob_job_report_state(job, BGJOB_STATE_PENDING), BGJOB_RESULT_OK);
            CHECK_EQ(atomic_load(&o.calls[BGJOB_CONTROL_FINALIZE]), 1);
        }
        /* The owner's handle stays valid until its end, which ends the job. */
        CHECK_RC(bgjob_job_end(job, 0, NULL), BGJOB_RESULT_OK);
        CHECK(poll_int_eq(&o.completions, 1));
        CHECK_EQ(atomic_load(&o.completion_state), BGJOB_STATE_COMPLETED);
        CHECK(poll_int_eq(&o.frees, 1));
        CHECK_EQ(atomic_load(&o.ends), 1);
    }
    return ok;
}

struct later {
    bgjob_job *job;
    int what; /* 0: set_ready, 1: report PENDING, 2: end */
};

static void *do_later(void *arg)
{
    struct later *l = arg;
    sleep_ms(30);
    if (l->what == 0)
        bgjob_job_set_ready(l->job);
    else if (l->what == 1)
        bgjob_job_report_state(l->job, BGJOB_STATE_PENDING);
    else
        bgjob_job_end(l->job, 0, NULL);
    return NULL;
}

/* bgjob_job_wait_state: any state, or the end instead; timeouts; bad input. */
static bool test_wait_state(void)
{
    bool ok = true;
    struct owner o;
    bgjob_job *job = NULL;
    bgjob_state got = BGJOB_STATE_CREATED;
    owner_init(&o);
    REQUIRE(ext_create(&o, BGJOB_CREATE_MANUAL_FINALIZE, &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_wait_state(job, BGJOB_STATE_READY, 0, &got), BGJOB_RESULT_TIMED_OUT);
    CHECK_RC(bgjob_job_wait_state(job, BGJOB_STATE_READY, 20, &got), BGJOB_RESULT_TIMED_OUT);
    CHECK_RC(bgjob_job_wait_state(job, BGJOB_STATE_RUNNING, 0, &got), BGJOB_RESULT_OK);
    CHECK_STATE(got, BGJOB_STATE_RUNNING);
    CHECK_RC(bgjob_job_wait_state(job, 42, -1, &got), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_wait_state(job, BGJOB_STATE_READY, -2, &got),
             BGJOB_RESULT_INVALID_ARGUMENT);
    for (int what = 0; what < 3; what++) {
        static const int32_t want[] = { BGJOB_STATE_READY, BGJOB_STATE_PENDING,
                                        BGJOB_STATE_STANDBY };
        struct later l = { job, what };
        pthread_t th;
        if (what == 2) /* forwarded: the owner's end is the end */
            CHECK_RC(bgjob_job_finalize(job), BGJOB_RESULT_OK);
        REQUIRE(pthread_create(&th, NULL, do_later, &l) == 0);
        CHECK_RC(bgjob_job_wait_state(job, want[what], -1, &got), BGJOB_RESULT_OK);
        pthread_join(th, NULL);
        /* The end (the third) stops a wait for a state never reached. */
        CHECK_STATE(got, what == 0 ? BGJOB_STATE_READY
                         : what == 1 ? BGJOB_STATE_PENDING
                                     : BGJOB_STATE_COMPLETED);
    }
    CHECK_RC(bgjob_job_wait_state(job, BGJOB_STATE_READY, -1, &got), BGJOB_RESULT_OK);
    CHECK_STATE(got, BGJOB_STATE_COMPLETED);
    ok = finish_and_destroy(job, &o) && ok;
    CHECK_RC(bgjob_job_wait_state(job, BGJOB_STATE_READY, 0, &got), BGJOB_RESULT_INVALID_HANDLE);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_the_transition_table),
        TAP_TEST(test_reports_refused_outside_the_owner_s_work),
        TAP_TEST(test_manual_finalize_is_forwarded),
        TAP_TEST(test_auto_finalize_stays_possible),
        TAP_TEST(test_aborting),
        TAP_TEST(test_control_failed_undoes_and_tells),
        TAP_TEST(test_calls_back_in_from_the_control_callback),
        TAP_TEST(test_transaction_of_external_jobs_with_manual_finalize),
        TAP_TEST(test_reports_race_from_several_threads),
        TAP_TEST(test_detach_forwards_the_finalize),
        TAP_TEST(test_wait_state),
    };
    return tap_run(tests, TAP_COUNT(tests));
}

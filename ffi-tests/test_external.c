/* External jobs (BGJOB_CREATE_EXTERNAL: no worker thread, ended by their owner
 * with bgjob_job_end) and the control callback: outcomes, exactly-once frees
 * on every path, no thread started, control called once per verb that
 * changed something, on the verb's thread, with no bgjob lock held, never
 * after the end; deadlines, transactions mixing external and threaded
 * members, detach, contexts, hooks, and 100,000 external jobs at once. */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What one job's owner sees through its control callback. */
struct owner {
    atomic_int calls[5];       /* per bgjob_control value */
    atomic_long last_arg;
    atomic_int frees;          /* control_free ran */
    atomic_int frees_in_call;  /* control_free had run when a call began */
    atomic_int completions;
    atomic_int completion_state;
    _Atomic pthread_t completion_thread;
    _Atomic pthread_t control_thread;
    char control_comm[32];
    /* Behaviour inside a CANCEL call. */
    bool reenter;              /* get_info, cancel again, then end the job */
    atomic_int reenter_ok;
    struct gate *hold;         /* block here in every call (forced interleavings) */
    atomic_int entered;
};

static void owner_init(struct owner *o)
{
    memset(o, 0, sizeof *o);
    atomic_init(&o->completion_state, -1);
}

static void read_comm(char *buf, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld/comm", (long)gettid());
    FILE *f = fopen(path, "r");
    buf[0] = '\0';
    if (f) {
        if (fgets(buf, (int)len, f))
            buf[strcspn(buf, "\n")] = '\0';
        fclose(f);
    }
}

static void on_control(void *userdata, bgjob_job *job, bgjob_control what, int64_t arg)
{
    struct owner *o = userdata;
    if (atomic_load(&o->frees))
        atomic_fetch_add(&o->frees_in_call, 1);
    atomic_store(&o->control_thread, pthread_self());
    read_comm(o->control_comm, sizeof o->control_comm);
    atomic_store(&o->last_arg, arg);
    atomic_fetch_add(&o->entered, 1);
    if (o->hold)
        gate_wait(o->hold);
    if (what == BGJOB_CONTROL_CANCEL && o->reenter) {
        /* With a bgjob lock held any of these would deadlock. */
        bgjob_info info = { .struct_size = sizeof info };
        bgjob_cancel_status st = BGJOB_CANCEL_STATUS_REQUESTED;
        bool good = bgjob_job_get_info(job, &info) == BGJOB_RESULT_OK && info.cancel_requested;
        good = good && bgjob_job_cancel(job, &st) == BGJOB_RESULT_OK &&
               st == BGJOB_CANCEL_STATUS_ALREADY_REQUESTED;
        good = good && bgjob_job_end(job, 125, "cancelled by owner") == BGJOB_RESULT_OK;
        /* Still mine until this call returns. */
        good = good && atomic_load(&o->frees) == 0;
        atomic_store(&o->reenter_ok, good ? 1 : -1);
    }
    if ((int)what >= 0 && (int)what < 5)
        atomic_fetch_add(&o->calls[what], 1);
}

static void on_control_free(void *userdata)
{
    atomic_fetch_add(&((struct owner *)userdata)->frees, 1);
}

static void on_complete(void *userdata, bgjob_job *job, bgjob_state state)
{
    struct owner *o = userdata;
    (void)job;
    atomic_store(&o->completion_thread, pthread_self());
    atomic_store(&o->completion_state, state);
    atomic_fetch_add(&o->completions, 1);
}

static void on_hook(void *userdata, bgjob_job *job)
{
    (void)job;
    on_control_free(userdata);
}

static int total_calls(struct owner *o)
{
    int n = 0;
    for (int i = 0; i < 5; i++)
        n += atomic_load(&o->calls[i]);
    return n;
}

/* An external job with `o` as its control (and, if `complete`, completion). */
static bgjob_result ext_create(struct owner *o, struct tracker *t, uint32_t flags, bool complete,
                               int64_t deadline_ms, bgjob_job **out)
{
    bgjob_job_options opts;
    bgjob_job_options_init(&opts, sizeof opts);
    opts.flags = flags | BGJOB_CREATE_EXTERNAL;
    opts.control = on_control;
    opts.control_userdata = o;
    opts.control_free = on_control_free;
    opts.deadline_ms = deadline_ms;
    if (complete)
        opts.completion = on_complete, opts.completion_userdata = o;
    return bgjob_job_create(&opts, NULL, t ? ud_new(t) : NULL, t ? ud_free : NULL, out);
}

static int count_tasks(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static bool test_create_rules_and_frees_on_failure(void)
{
    bool ok = true;
    struct owner o;
    struct tracker t;
    owner_init(&o);
    tracker_init(&t);
    bgjob_job_options opts;
    bgjob_job_options_init(&opts, sizeof opts);
    opts.flags = BGJOB_CREATE_EXTERNAL;
    opts.control = on_control, opts.control_userdata = &o, opts.control_free = on_control_free;
    bgjob_job *job = NULL;
    /* A worker with the flag: refused, both userdata freed before return. */
    CHECK_RC(bgjob_job_create(&opts, worker_return, ud_new(&t), ud_free, &job),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK(atomic_load(&t.frees) == 1 && atomic_load(&o.frees) == 1);
    /* No worker and no flag: refused likewise. */
    opts.flags = 0;
    CHECK_RC(bgjob_job_create(&opts, NULL, ud_new(&t), ud_free, &job),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK(atomic_load(&t.frees) == 2 && atomic_load(&o.frees) == 2);
    /* An unknown flag beside it: the control userdata is freed too. */
    opts.flags = BGJOB_CREATE_EXTERNAL | 0x8000;
    CHECK_RC(bgjob_job_create(&opts, NULL, NULL, NULL, &job), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK(atomic_load(&o.frees) == 3);
    CHECK(total_calls(&o) == 0);
    return ok;
}

static bool test_outcomes_and_the_end_rules(void)
{
    bool ok = true;
    for (int c = 0; c < 3; c++) {
        struct owner o;
        struct tracker t;
        owner_init(&o);
        tracker_init(&t);
        bgjob_job *job = NULL;
        CHECK_RC(ext_create(&o, &t, 0, false, -1, &job), BGJOB_RESULT_OK);
        CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
        CHECK_RC(bgjob_job_set_total(job, 100), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_add_units(job, 40), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_set_phase(job, "copying"), BGJOB_RESULT_OK);
        bgjob_info info;
        CHECK(info_of(job, &info) && info.current == 40 && info.percent == 40);
        /* The userdata lives until the end. */
        CHECK(atomic_load(&t.frees) == 0);
        if (c == 2)
            CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_end(job, c == 0 ? 0 : 5, "disk gone"), BGJOB_RESULT_OK);
        CHECK(atomic_load(&t.frees) == 1 && atomic_load(&o.frees) == 1);
        CHECK_STATE(state_of(job), c == 0   ? BGJOB_STATE_COMPLETED
                                   : c == 1 ? BGJOB_STATE_FAILED
                                            : BGJOB_STATE_CANCELLED);
        if (c == 1) {
            int32_t code = 0;
            char buf[64];
            CHECK_RC(bgjob_job_get_error(job, &code, buf, sizeof buf, NULL), BGJOB_RESULT_OK);
            CHECK(code == 5 && strcmp(buf, "disk gone") == 0);
        }
        CHECK_RC(bgjob_job_end(job, 0, NULL), BGJOB_RESULT_NOT_ALLOWED);
        CHECK(atomic_load(&o.calls[BGJOB_CONTROL_CANCEL]) == (c == 2));
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        CHECK(atomic_load(&t.frees) == 1 && atomic_load(&o.frees) == 1);
    }
    /* Refused on a CREATED external job and on a threaded one. */
    struct owner o;
    owner_init(&o);
    bgjob_job *job = NULL;
    CHECK_RC(ext_create(&o, NULL, BGJOB_CREATE_DEFER_START, false, -1, &job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_end(job, 0, NULL), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK(atomic_load(&o.frees) == 1 && total_calls(&o) == 0);
    struct tracker t;
    struct gate g;
    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    CHECK_RC(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_end(job, 0, NULL), BGJOB_RESULT_NOT_ALLOWED);
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

static bool test_worker_only_calls_are_refused(void)
{
    bool ok = true;
    struct owner o;
    owner_init(&o);
    bgjob_job *job = NULL;
    CHECK_RC(ext_create(&o, NULL, 0, false, -1, &job), BGJOB_RESULT_OK);
    uint32_t rev = 0;
    int32_t ws = 0;
    CHECK_RC(bgjob_job_sleep(job, 1), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_pause_point(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_wait_fd(job, 0, BGJOB_FD_READABLE, 0, &rev), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_wait_child(job, 1, 0, &ws), BGJOB_RESULT_NOT_ALLOWED);
    /* Cheap worker-side reads still work. */
    CHECK_RC(bgjob_job_check_cancel(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_end(job, 0, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_no_thread_is_started(void)
{
    bool ok = true;
    enum { N = 1000 };
    static bgjob_job *jobs[N];
    static struct owner o[N];
    /* Warm up whatever bgjob starts once per process. */
    int before = count_tasks();
    for (int i = 0; i < N; i++) {
        owner_init(&o[i]);
        CHECK_RC(ext_create(&o[i], NULL, 0, true, -1, &jobs[i]), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_add_units(jobs[i], 1), BGJOB_RESULT_OK);
    }
    int during = count_tasks();
    for (int i = 0; i < N; i++) {
        CHECK_RC(bgjob_job_end(jobs[i], i % 2, NULL), BGJOB_RESULT_OK);
        CHECK(atomic_load(&o[i].completions) == 1);
        CHECK_RC(bgjob_job_destroy(jobs[i]), BGJOB_RESULT_OK);
    }
    int after = count_tasks();
    /* Idle pool threads of earlier tests may exit meanwhile, never start. */
    CHECKF(during <= before && after <= before, "tasks before %d, during %d, after %d", before,
           during, after);
    return ok;
}

static bool test_completion_runs_inside_end_without_a_context(void)
{
    bool ok = true;
    struct owner o;
    owner_init(&o);
    bgjob_job *job = NULL;
    CHECK_RC(ext_create(&o, NULL, 0, true, -1, &job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_end(job, 0, NULL), BGJOB_RESULT_OK);
    /* Already ran, on this thread, before bgjob_job_end returned. */
    CHECK(atomic_load(&o.completions) == 1);
    CHECK(pthread_equal(atomic_load(&o.completion_thread), pthread_self()));
    CHECK_STATE(atomic_load(&o.completion_state), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    /* With a context: queued, delivered by its dispatch. */
    bgjob_context *ctx = NULL;
    CHECK_RC(bgjob_context_create(&ctx), BGJOB_RESULT_OK);
    owner_init(&o);
    bgjob_job_options opts;
    bgjob_job_options_init(&opts, sizeof opts);
    opts.flags = BGJOB_CREATE_EXTERNAL;
    opts.completion = on_complete, opts.completion_userdata = &o, opts.context = ctx;
    CHECK_RC(bgjob_job_create(&opts, NULL, NULL, NULL, &job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_end(job, 7, "x"), BGJOB_RESULT_OK);
    CHECK(atomic_load(&o.completions) == 0);
    size_t ran = 0;
    CHECK_RC(bgjob_context_dispatch(ctx, 0, &ran), BGJOB_RESULT_OK);
    CHECK(ran == 1 && atomic_load(&o.completions) == 1);
    CHECK_STATE(atomic_load(&o.completion_state), BGJOB_STATE_FAILED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_context_destroy(ctx), BGJOB_RESULT_OK);
    return ok;
}

static bool test_control_once_per_verb_on_the_verb_thread(void)
{
    bool ok = true;
    struct owner o;
    owner_init(&o);
    bgjob_job *job = NULL;
    CHECK_RC(ext_create(&o, NULL, 0, false, -1, &job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK(pthread_equal(atomic_load(&o.control_thread), pthread_self()));
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_STATE(state_of(job), BGJOB_STATE_PAUSED);
    /* A progress update from the owner never parks, paused or not. */
    CHECK_RC(bgjob_job_add_units(job, 1), BGJOB_RESULT_OK);
    /* An internal pause while paused changes nothing the owner must do. */
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK(atomic_load(&o.calls[BGJOB_CONTROL_RESUME]) == 0);
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_OK);
    CHECK(atomic_load(&o.calls[BGJOB_CONTROL_PAUSE]) == 1);
    CHECK(atomic_load(&o.calls[BGJOB_CONTROL_RESUME]) == 1);
    uint64_t speed = 1;
    CHECK_RC(bgjob_job_get_speed(job, &speed), BGJOB_RESULT_OK);
    CHECK(speed == 0);
    CHECK_RC(bgjob_job_set_speed(job, 1 << 20), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_speed(job, 1 << 20), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_speed(job, UINT64_MAX), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_get_speed(job, &speed), BGJOB_RESULT_OK);
    CHECK(speed == 1 << 20 && atomic_load(&o.last_arg) == 1 << 20);
    CHECK(atomic_load(&o.calls[BGJOB_CONTROL_SET_SPEED]) == 1);
    bgjob_cancel_status st;
    CHECK_RC(bgjob_job_cancel(job, &st), BGJOB_RESULT_OK);
    CHECK(st == BGJOB_CANCEL_STATUS_REQUESTED && atomic_load(&o.last_arg) == 1);
    CHECK_RC(bgjob_job_cancel(job, &st), BGJOB_RESULT_OK);
    CHECK(st == BGJOB_CANCEL_STATUS_ALREADY_REQUESTED);
    CHECK(atomic_load(&o.calls[BGJOB_CONTROL_CANCEL]) == 1);
    CHECK_RC(bgjob_job_end(job, 125, NULL), BGJOB_RESULT_OK);
    CHECK(atomic_load(&o.frees) == 1);
    /* After the end: no more calls. */
    CHECK_RC(bgjob_job_set_speed(job, 5), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_cancel(job, &st), BGJOB_RESULT_OK);
    CHECK(st == BGJOB_CANCEL_STATUS_ALREADY_FINISHED);
    CHECK(total_calls(&o) == 4 && atomic_load(&o.frees_in_call) == 0);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK(atomic_load(&o.frees) == 1);
    return ok;
}

/* The QEMU verbs of a READY job reach an external job's owner: complete as
 * COMPLETE, a soft cancel as CANCEL with arg 0, the force cancel after it as
 * CANCEL with arg 1 -- what a driver forwards as job-complete,
 * block-job-cancel and block-job-cancel force. */
static bool test_ready_verbs_reach_the_owner(void)
{
    bool ok = true;
    struct owner o;
    owner_init(&o);
    bgjob_job *job = NULL;
    bgjob_cancel_status st;
    bool soft = false;

    CHECK_RC(ext_create(&o, NULL, 0, true, -1, &job), BGJOB_RESULT_OK);
    /* Complete is refused before READY, and tells the owner nothing. */
    CHECK_RC(bgjob_job_complete(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_set_ready(job), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_READY);
    CHECK(total_calls(&o) == 0);
    CHECK_RC(bgjob_job_complete(job), BGJOB_RESULT_OK);
    CHECK(atomic_load(&o.calls[BGJOB_CONTROL_COMPLETE]) == 1);
    CHECK(pthread_equal(atomic_load(&o.control_thread), pthread_self()));
    CHECK_RC(bgjob_job_cancel_soft(job, &st), BGJOB_RESULT_OK);
    CHECK(st == BGJOB_CANCEL_STATUS_REQUESTED);
    CHECK(atomic_load(&o.calls[BGJOB_CONTROL_CANCEL]) == 1 && atomic_load(&o.last_arg) == 0);
    CHECK_RC(bgjob_job_cancel_is_soft(job, &soft), BGJOB_RESULT_OK);
    CHECK(soft);
    CHECK_RC(bgjob_job_cancel(job, &st), BGJOB_RESULT_OK);
    CHECK(st == BGJOB_CANCEL_STATUS_REQUESTED);
    CHECK(atomic_load(&o.calls[BGJOB_CONTROL_CANCEL]) == 2 && atomic_load(&o.last_arg) == 1);
    CHECK_RC(bgjob_job_cancel_is_soft(job, &soft), BGJOB_RESULT_OK);
    CHECK(!soft);
    /* A third cancel is ALREADY_REQUESTED and not told. */
    CHECK_RC(bgjob_job_cancel(job, &st), BGJOB_RESULT_OK);
    CHECK(st == BGJOB_CANCEL_STATUS_ALREADY_REQUESTED);
    CHECK(atomic_load(&o.calls[BGJOB_CONTROL_CANCEL]) == 2);
    CHECK_RC(bgjob_job_end(job, 125, "cancelled"), BGJOB_RESULT_OK);
    CHECK(atomic_load(&o.completion_state) == BGJOB_STATE_CANCELLED);
    CHECK(atomic_load(&o.frees) == 1 && total_calls(&o) == 3);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_control_holds_no_lock_end_from_inside_cancel(void)
{
    bool ok = true;
    struct owner o;
    owner_init(&o);
    o.reenter = true;
    bgjob_job *job = NULL;
    CHECK_RC(ext_create(&o, NULL, 0, true, -1, &job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK(atomic_load(&o.reenter_ok) == 1);
    CHECK(atomic_load(&o.calls[BGJOB_CONTROL_CANCEL]) == 1);
    /* Ended inside the callback; its userdata freed once, after the call. */
    CHECK_STATE(state_of(job), BGJOB_STATE_CANCELLED);
    CHECK(atomic_load(&o.frees) == 1 && atomic_load(&o.completions) == 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

struct ender {
    bgjob_job *job;
    struct owner *o;
    atomic_int returned;
    int control_calls_seen; /* CANCEL calls finished when end returned */
};

static void *end_thread(void *arg)
{
    struct ender *e = arg;
    bgjob_job_end(e->job, 0, NULL);
    e->control_calls_seen = atomic_load(&e->o->calls[BGJOB_CONTROL_CANCEL]);
    atomic_store(&e->returned, 1);
    return NULL;
}

static void *cancel_thread(void *arg)
{
    bgjob_job_cancel(arg, NULL);
    return NULL;
}

static bool test_end_waits_for_a_control_call_on_another_thread(void)
{
    bool ok = true;
    struct owner o;
    struct gate hold;
    owner_init(&o);
    gate_init(&hold);
    o.hold = &hold;
    bgjob_job *job = NULL;
    CHECK_RC(ext_create(&o, NULL, 0, false, -1, &job), BGJOB_RESULT_OK);
    pthread_t canceller, ender_t;
    pthread_create(&canceller, NULL, cancel_thread, job);
    CHECK(poll_int_eq(&o.entered, 1));
    struct ender e = { .job = job, .o = &o };
    pthread_create(&ender_t, NULL, end_thread, &e);
    sleep_ms(50);
    /* The end cannot finish while the control call runs. */
    CHECK(atomic_load(&e.returned) == 0 && atomic_load(&o.frees) == 0);
    gate_open(&hold);
    pthread_join(ender_t, NULL);
    pthread_join(canceller, NULL);
    CHECK(e.control_calls_seen == 1 && atomic_load(&o.frees) == 1);
    CHECK(atomic_load(&o.frees_in_call) == 0);
    CHECK_STATE(state_of(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&hold);
    return ok;
}

static bool test_deadline_cancels_through_control_on_a_bgjob_thread(void)
{
    bool ok = true;
    struct owner o;
    owner_init(&o);
    bgjob_job *job = NULL;
    CHECK_RC(ext_create(&o, NULL, 0, false, 30, &job), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&o.calls[BGJOB_CONTROL_CANCEL], 1));
    CHECK(!pthread_equal(atomic_load(&o.control_thread), pthread_self()));
    CHECKF(strcmp(o.control_comm, "bgjob-deadline") == 0, "control ran on '%s'", o.control_comm);
    bgjob_info info;
    CHECK(info_of(job, &info) && info.cancel_cause == BGJOB_CANCEL_CAUSE_TIMEOUT);
    CHECK_RC(bgjob_job_end(job, 125, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK(atomic_load(&o.frees) == 1);
    return ok;
}

static bool test_io_error_stop_and_cancel_hooks(void)
{
    bool ok = true;
    struct owner o;
    owner_init(&o);
    bgjob_job *job = NULL;
    CHECK_RC(ext_create(&o, NULL, 0, false, -1, &job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_error_policy(job, BGJOB_ERROR_POLICY_STOP), BGJOB_RESULT_OK);
    bgjob_error_action act = BGJOB_ERROR_ACTION_REPORT;
    CHECK_RC(bgjob_job_report_io_error(job, 5, "EIO", &act), BGJOB_RESULT_OK);
    CHECK(act == BGJOB_ERROR_ACTION_STOP);
    CHECK_STATE(state_of(job), BGJOB_STATE_PAUSED);
    /* The owner stopped it itself: not told; the resume is. */
    CHECK(atomic_load(&o.calls[BGJOB_CONTROL_PAUSE]) == 0);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK(atomic_load(&o.calls[BGJOB_CONTROL_RESUME]) == 1);
    uint64_t hook = 0;
    CHECK_RC(bgjob_job_add_cancel_hook(job, on_hook, &o,
                                       NULL, &hook),
             BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    /* The hook (counting into frees) ran, then control was told. */
    CHECK(atomic_load(&o.frees) == 1 && atomic_load(&o.calls[BGJOB_CONTROL_CANCEL]) == 1);
    CHECK_RC(bgjob_job_end(job, 125, NULL), BGJOB_RESULT_OK);
    CHECK(atomic_load(&o.frees) == 2);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_transaction_mixing_external_and_threaded(void)
{
    bool ok = true;
    for (int round = 0; round < 2; round++) {
        struct owner o;
        struct tracker t;
        struct gate g;
        owner_init(&o);
        tracker_init(&t);
        gate_init(&g);
        t.gate = &g;
        t.rc = round == 0 ? 0 : 5;
        bgjob_txn *txn = NULL;
        bgjob_job *ext = NULL, *thr = NULL;
        CHECK_RC(bgjob_txn_create(0, &txn), BGJOB_RESULT_OK);
        CHECK_RC(ext_create(&o, NULL, BGJOB_CREATE_DEFER_START, true, -1, &ext), BGJOB_RESULT_OK);
        CHECK_RC(job_create(&t, worker_gated, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED,
                            NULL, &thr),
                 BGJOB_RESULT_OK);
        CHECK_RC(bgjob_txn_add(txn, ext), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_txn_add(txn, thr), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
        gate_open(&g);
        CHECK(poll_state(thr, BGJOB_STATE_WAITING));
        if (round == 0) {
            /* The external member's end settles the group: both complete,
             * its completion on this thread inside the end. */
            CHECK(total_calls(&o) == 0);
            CHECK_RC(bgjob_job_end(ext, 0, NULL), BGJOB_RESULT_OK);
            CHECK(atomic_load(&o.completions) == 1);
            CHECK(pthread_equal(atomic_load(&o.completion_thread), pthread_self()));
            CHECK_STATE(wait_end(thr), BGJOB_STATE_COMPLETED);
            CHECK_STATE(state_of(ext), BGJOB_STATE_COMPLETED);
        } else {
            /* The sibling's failure cancelled the external member through
             * control, on the failing worker's thread. */
            CHECK(poll_int_eq(&o.calls[BGJOB_CONTROL_CANCEL], 1));
            CHECK(!pthread_equal(atomic_load(&o.control_thread), pthread_self()));
            bgjob_info info;
            CHECK(info_of(ext, &info) && info.cancel_cause == BGJOB_CANCEL_CAUSE_TRANSACTION);
            CHECK_RC(bgjob_job_end(ext, 125, NULL), BGJOB_RESULT_OK);
            CHECK_STATE(wait_end(thr), BGJOB_STATE_FAILED);
            CHECK_STATE(state_of(ext), BGJOB_STATE_CANCELLED);
        }
        CHECK(atomic_load(&o.frees) == 1);
        CHECK_RC(bgjob_job_destroy(ext), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_destroy(thr), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
        gate_destroy(&g);
    }
    return ok;
}

static bool test_detach_keeps_the_owner_handle_until_the_end(void)
{
    bool ok = true;
    for (int cancel = 0; cancel < 2; cancel++) {
        struct owner o;
        struct tracker t;
        owner_init(&o);
        tracker_init(&t);
        bgjob_job *job = NULL;
        CHECK_RC(ext_create(&o, &t, 0, true, -1, &job), BGJOB_RESULT_OK);
        uint64_t id = id_of(job);
        if (!cancel)
            CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_detach(job, cancel ? BGJOB_DETACH_CANCEL : 0), BGJOB_RESULT_OK);
        /* Detach undid the pause (told as RESUME), or cancelled (CANCEL). */
        CHECK(atomic_load(&o.calls[cancel ? BGJOB_CONTROL_CANCEL : BGJOB_CONTROL_RESUME]) == 1);
        CHECK(job_listed(id));
        CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_NOT_ALLOWED);
        CHECK_RC(bgjob_job_add_units(job, 3), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_end(job, cancel ? 125 : 0, NULL), BGJOB_RESULT_OK);
        CHECK_STATE(atomic_load(&o.completion_state),
                    cancel ? BGJOB_STATE_CANCELLED : BGJOB_STATE_COMPLETED);
        /* Released by the end. */
        CHECK_RC(bgjob_job_add_units(job, 1), BGJOB_RESULT_INVALID_HANDLE);
        CHECK(poll_unlisted(id));
        CHECK(atomic_load(&o.frees) == 1 && atomic_load(&t.frees) == 1);
    }
    return ok;
}

/* The same when the owner's handle is not the job's last (another owner took
 * a reference): the detached handle still ends the job, and the end releases
 * it. Before, the detach only released it (the shared-reference rule), so the
 * owner could not end the job, and the other reference, the last now, could
 * not be destroyed either (NOT_ALLOWED while RUNNING): the job ran for ever.
 * `how`: 0 the other reference released before the end, 1 after it, 2 the
 * end made through the other reference (the detached handle goes with it). */
static bool test_detach_of_a_shared_owner_handle_keeps_it_until_the_end(void)
{
    bool ok = true;
    for (int how = 0; how < 3; how++) {
        for (int cancel = 0; cancel < 2; cancel++) {
            struct owner o;
            struct tracker t;
            owner_init(&o);
            tracker_init(&t);
            bgjob_job *job = NULL, *other = NULL;
            CHECK_RC(ext_create(&o, &t, 0, true, -1, &job), BGJOB_RESULT_OK);
            REQUIRE(job != NULL);
            uint64_t id = id_of(job);
            CHECK_RC(bgjob_job_ref(job, &other), BGJOB_RESULT_OK);
            CHECK_RC(bgjob_job_detach(job, cancel ? BGJOB_DETACH_CANCEL : 0), BGJOB_RESULT_OK);
            CHECK(atomic_load(&o.calls[BGJOB_CONTROL_CANCEL]) == cancel);
            CHECKF(bgjob_job_add_units(job, 1) == BGJOB_RESULT_OK,
                   "how %d: the detached owner handle no longer names the job", how);
            if (how == 0)
                CHECK_RC(bgjob_job_destroy(other), BGJOB_RESULT_OK);
            CHECK_RC(bgjob_job_end(how == 2 ? other : job, cancel ? 125 : 0, NULL), BGJOB_RESULT_OK);
            CHECK_STATE(atomic_load(&o.completion_state),
                        cancel ? BGJOB_STATE_CANCELLED : BGJOB_STATE_COMPLETED);
            /* Released by the end, whichever handle made it. */
            CHECK_RC(bgjob_job_add_units(job, 1), BGJOB_RESULT_INVALID_HANDLE);
            if (how != 0)
                CHECK_RC(bgjob_job_destroy(other), BGJOB_RESULT_OK);
            CHECKF(poll_unlisted(id), "how %d, cancel %d: the job stays listed", how, cancel);
            CHECK(atomic_load(&o.frees) == 1 && atomic_load(&t.frees) == 1);
        }
    }
    return ok;
}

static bool test_created_external_job_destroyed_or_cancelled(void)
{
    bool ok = true;
    for (int how = 0; how < 2; how++) {
        struct owner o;
        struct tracker t;
        owner_init(&o);
        tracker_init(&t);
        bgjob_job *job = NULL;
        CHECK_RC(ext_create(&o, &t, BGJOB_CREATE_DEFER_START, false, -1, &job), BGJOB_RESULT_OK);
        if (how == 0) {
            CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        } else {
            CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
            CHECK_STATE(state_of(job), BGJOB_STATE_CANCELLED);
            CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        }
        /* Never started: never told, everything freed once. */
        CHECK(total_calls(&o) == 0);
        CHECK(atomic_load(&o.frees) == 1 && atomic_load(&t.frees) == 1);
    }
    return ok;
}

static bool test_threaded_job_control(void)
{
    bool ok = true;
    struct owner o;
    struct tracker t;
    owner_init(&o);
    tracker_init(&t);
    bgjob_job_options opts;
    bgjob_job_options_init(&opts, sizeof opts);
    opts.control = on_control, opts.control_userdata = &o, opts.control_free = on_control_free;
    bgjob_job *job = NULL;
    CHECK_RC(bgjob_job_create(&opts, worker_until_cancel, ud_new(&t), ud_free, &job),
             BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK(atomic_load(&o.calls[BGJOB_CONTROL_PAUSE]) == 1);
    CHECK(atomic_load(&o.calls[BGJOB_CONTROL_RESUME]) == 1);
    CHECK(atomic_load(&o.calls[BGJOB_CONTROL_CANCEL]) == 1);
    CHECK(atomic_load(&o.frees) == 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK(atomic_load(&o.frees) == 1);
    return ok;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static bool test_100k_external_jobs_at_once(void)
{
    bool ok = true;
    enum { N = 100000 };
    bgjob_job **jobs = calloc(N, sizeof *jobs);
    if (!jobs)
        return false;
    int tasks = count_tasks();
    long before = rss_kib();
    bgjob_job_options opts;
    bgjob_job_options_init(&opts, sizeof opts);
    opts.flags = BGJOB_CREATE_EXTERNAL;
    for (int i = 0; i < N && ok; i++) {
        CHECK_RC(bgjob_job_create(&opts, NULL, NULL, NULL, &jobs[i]), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_set_total(jobs[i], 100), BGJOB_RESULT_OK);
    }
    long during = rss_kib();
    CHECK(live_jobs() >= N);
    CHECK(count_tasks() <= tasks);
    for (int i = 0; i < N; i++)
        if (jobs[i]) {
            CHECK_RC(bgjob_job_end(jobs[i], 0, NULL), BGJOB_RESULT_OK);
            CHECK_RC(bgjob_job_destroy(jobs[i]), BGJOB_RESULT_OK);
        }
    tap_diag("100000 live external jobs: RSS %ld -> %ld KiB, %.0f bytes per job", before, during,
             (double)(during - before) * 1024.0 / N);
    free(jobs);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_create_rules_and_frees_on_failure),
        TAP_TEST(test_outcomes_and_the_end_rules),
        TAP_TEST(test_worker_only_calls_are_refused),
        TAP_TEST(test_no_thread_is_started),
        TAP_TEST(test_completion_runs_inside_end_without_a_context),
        TAP_TEST(test_control_once_per_verb_on_the_verb_thread),
        TAP_TEST(test_ready_verbs_reach_the_owner),
        TAP_TEST(test_control_holds_no_lock_end_from_inside_cancel),
        TAP_TEST(test_end_waits_for_a_control_call_on_another_thread),
        TAP_TEST(test_deadline_cancels_through_control_on_a_bgjob_thread),
        TAP_TEST(test_io_error_stop_and_cancel_hooks),
        TAP_TEST(test_transaction_mixing_external_and_threaded),
        TAP_TEST(test_detach_keeps_the_owner_handle_until_the_end),
        TAP_TEST(test_detach_of_a_shared_owner_handle_keeps_it_until_the_end),
        TAP_TEST(test_created_external_job_destroyed_or_cancelled),
        TAP_TEST(test_threaded_job_control),
        TAP_TEST(test_100k_external_jobs_at_once),
    };
    return tap_run(tests, TAP_COUNT(tests));
}

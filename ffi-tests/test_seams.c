/* Seams between the job-model features that were built apart: events x shared
 * references x external jobs x sub-jobs x transactions. Each case attacks one
 * promise of bgjob.h with several threads, gates (no sleeps for ordering) and
 * callbacks that call back in. */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a per-job observer: events, completion, control ------------------- */

#define OBS_CAP 4096

struct obs {
    pthread_mutex_t mu;
    bgjob_event evs[OBS_CAP];
    pthread_t ev_threads[OBS_CAP];
    size_t n;
    uint64_t last_seq;
    atomic_int bad_order;      /* seq not strictly increasing */
    atomic_int after_end;      /* an event after END */
    atomic_int ends;           /* END events */
    atomic_int inside;         /* event callbacks running now */
    atomic_int overlapped;     /* two event callbacks of the job at once */
    atomic_int ev_info_bad;    /* get_info from a non-END event failed */
    atomic_int completions;
    atomic_int end_before_completion; /* 1: END seen when completion ran */
    atomic_int completion_info_rc;
    atomic_int completion_state;
    atomic_int ev_frees, comp_frees, ctl_frees, work_frees;
    atomic_int calls_after_free;
    /* control */
    atomic_int ctl_calls;
    atomic_int ctl_cancel, ctl_pause, ctl_resume;
    atomic_long ctl_last_arg;
    atomic_int ctl_after_end;  /* a control call began or ran on after the end returned */
    atomic_int ctl_inside;
    atomic_int end_returned;
    /* behaviour */
    bool end_from_cancel;      /* control CANCEL: bgjob_job_end(job, 125) */
    atomic_int end_from_cancel_rc;
    struct gate *ctl_gate;     /* control PAUSE blocks here */
    atomic_int ctl_blocked;
    bool reenter;              /* events: ref+lookup+destroy refs, get_info */
    atomic_int reenter_bad;
    uint64_t id;
    bool destroy_on_end;
    atomic_int destroy_on_end_rc;
};

static struct obs *obs_new(void)
{
    struct obs *o = calloc(1, sizeof *o);
    if (!o)
        abort();
    pthread_mutex_init(&o->mu, NULL);
    atomic_init(&o->completion_info_rc, -1);
    atomic_init(&o->completion_state, -1);
    atomic_init(&o->end_from_cancel_rc, -1);
    atomic_init(&o->destroy_on_end_rc, -1);
    return o;
}

static void obs_delete(struct obs *o)
{
    pthread_mutex_destroy(&o->mu);
    free(o);
}

static bool all_freed(struct obs *o)
{
    return atomic_load(&o->ev_frees) == 1 && atomic_load(&o->comp_frees) == 1;
}

static void on_event(void *ud, bgjob_job *job, const bgjob_event *ev)
{
    struct obs *o = ud;
    if (atomic_load(&o->ev_frees))
        atomic_fetch_add(&o->calls_after_free, 1);
    if (atomic_fetch_add(&o->inside, 1) != 0)
        atomic_fetch_add(&o->overlapped, 1);
    pthread_mutex_lock(&o->mu);
    if (ev->seq <= o->last_seq)
        atomic_fetch_add(&o->bad_order, 1);
    o->last_seq = ev->seq;
    if (atomic_load(&o->ends) > 0)
        atomic_fetch_add(&o->after_end, 1);
    if (o->n < OBS_CAP) {
        o->evs[o->n] = *ev;
        o->ev_threads[o->n] = pthread_self();
        o->n++;
    }
    pthread_mutex_unlock(&o->mu);
    if (ev->kind != BGJOB_EVENT_KIND_END) {
        /* "valid during the call" and "never under a lock": a read of the
         * job would deadlock or fail otherwise. */
        bgjob_info info = {.struct_size = sizeof info};
        if (bgjob_job_get_info(job, &info) != BGJOB_RESULT_OK)
            atomic_fetch_add(&o->ev_info_bad, 1);
        if (o->reenter) {
            bgjob_job *r = NULL, *l = NULL;
            if (bgjob_job_ref(job, &r) != BGJOB_RESULT_OK || r == job)
                atomic_fetch_add(&o->reenter_bad, 1);
            if (bgjob_job_lookup(o->id, &l) != BGJOB_RESULT_OK || l == job || l == r)
                atomic_fetch_add(&o->reenter_bad, 1);
            if (r && bgjob_job_destroy(r) != BGJOB_RESULT_OK)
                atomic_fetch_add(&o->reenter_bad, 1);
            if (l && bgjob_job_destroy(l) != BGJOB_RESULT_OK)
                atomic_fetch_add(&o->reenter_bad, 1);
            if (r && bgjob_job_destroy(r) != BGJOB_RESULT_INVALID_HANDLE)
                atomic_fetch_add(&o->reenter_bad, 1);
        }
    } else {
        atomic_fetch_add(&o->ends, 1);
        if (o->destroy_on_end)
            atomic_store(&o->destroy_on_end_rc, bgjob_job_destroy(job));
    }
    atomic_fetch_sub(&o->inside, 1);
}

static void on_completion(void *ud, bgjob_job *job, bgjob_state state)
{
    struct obs *o = ud;
    atomic_fetch_add(&o->completions, 1);
    atomic_store(&o->completion_state, state);
    atomic_store(&o->end_before_completion, atomic_load(&o->ends) == 1);
    bgjob_info info = {.struct_size = sizeof info};
    atomic_store(&o->completion_info_rc, bgjob_job_get_info(job, &info));
}

static void on_control(void *ud, bgjob_job *job, bgjob_control what, int64_t arg)
{
    struct obs *o = ud;
    if (atomic_load(&o->end_returned) || atomic_load(&o->ctl_frees))
        atomic_fetch_add(&o->ctl_after_end, 1);
    atomic_fetch_add(&o->ctl_inside, 1);
    atomic_fetch_add(&o->ctl_calls, 1);
    atomic_store(&o->ctl_last_arg, arg);
    switch (what) {
    case BGJOB_CONTROL_CANCEL:
        atomic_fetch_add(&o->ctl_cancel, 1);
        if (o->end_from_cancel)
            atomic_store(&o->end_from_cancel_rc, bgjob_job_end(job, WORKER_CANCELLED_RC, "cancelled"));
        break;
    case BGJOB_CONTROL_PAUSE:
        atomic_fetch_add(&o->ctl_pause, 1);
        if (o->ctl_gate) {
            atomic_store(&o->ctl_blocked, 1);
            gate_wait(o->ctl_gate);
        }
        break;
    case BGJOB_CONTROL_RESUME:
        atomic_fetch_add(&o->ctl_resume, 1);
        break;
    default:
        break;
    }
    if (atomic_load(&o->end_returned))
        atomic_fetch_add(&o->ctl_after_end, 1);
    atomic_fetch_sub(&o->ctl_inside, 1);
}

static void free_ev(void *ud) { atomic_fetch_add(&((struct obs *)ud)->ev_frees, 1); }
static void free_comp(void *ud) { atomic_fetch_add(&((struct obs *)ud)->comp_frees, 1); }
static void free_ctl(void *ud) { atomic_fetch_add(&((struct obs *)ud)->ctl_frees, 1); }

/* Options with every callback of `o`; flags and context as given. */
static bgjob_job_options opts_for(struct obs *o, uint32_t flags, bgjob_context *ctx)
{
    bgjob_job_options op;
    bgjob_job_options_init(&op, sizeof op);
    op.flags = flags;
    op.context = ctx;
    op.completion = on_completion;
    op.completion_userdata = o;
    op.completion_free = free_comp;
    op.event = on_event;
    op.event_userdata = o;
    op.event_free = free_ev;
    op.control = on_control;
    op.control_userdata = o;
    op.control_free = free_ctl;
    return op;
}

static bgjob_result make_external(struct obs *o, uint32_t flags, bgjob_job *parent,
                                  bgjob_context *ctx, bgjob_job **out)
{
    bgjob_job_options op = opts_for(o, flags | BGJOB_CREATE_EXTERNAL, ctx);
    op.parent = parent;
    return bgjob_job_create(&op, NULL, NULL, NULL, out);
}

static bgjob_result make_threaded(struct obs *o, struct tracker *t, bgjob_worker_callback w,
                                  uint32_t flags, bgjob_job *parent, bgjob_job **out)
{
    bgjob_job_options op = opts_for(o, flags, NULL);
    op.parent = parent;
    return bgjob_job_create(&op, w, ud_new(t), ud_free, out);
}

/* Checks every event rule on one finished job's observer. */
#define CHECK_EVENTS(o, terminal)                                                 \
    do {                                                                          \
        CHECK(poll_int_eq(&(o)->comp_frees, 1)); /* wait may return first */      \
        CHECK_EQ(atomic_load(&(o)->bad_order), 0);                                \
        CHECK_EQ(atomic_load(&(o)->after_end), 0);                                \
        CHECK_EQ(atomic_load(&(o)->ends), 1);                                     \
        CHECK_EQ(atomic_load(&(o)->overlapped), 0);                               \
        CHECK_EQ(atomic_load(&(o)->ev_info_bad), 0);                              \
        CHECK_EQ(atomic_load(&(o)->completions), 1);                              \
        CHECK_EQ(atomic_load(&(o)->end_before_completion), 1);                    \
        CHECK_EQ(atomic_load(&(o)->calls_after_free), 0);                         \
        CHECK_EQ(atomic_load(&(o)->ctl_after_end), 0);                            \
        CHECK((o)->n > 0 && (o)->evs[(o)->n - 1].kind == BGJOB_EVENT_KIND_END);   \
        if ((o)->n > 0)                                                           \
            CHECK_STATE((o)->evs[(o)->n - 1].new_state, (terminal));              \
        CHECK_STATE(atomic_load(&(o)->completion_state), (terminal));             \
    } while (0)

/* ---- cases --------------------------------------------------------------- */

/* An external job in a transaction with a threaded member, with events, a
 * control callback and a threaded parent. Cancelling the parent reaches the
 * external child's owner (CONTROL_CANCEL), who ends it from inside the
 * callback; the transaction then cancels its threaded sibling; the parent
 * stays WAITING until the child ended. */
static bool test_external_txn_member_with_parent(void)
{
    bool ok = true;
    struct obs *po = obs_new(), *eo = obs_new(), *to = obs_new();
    struct tracker pt, tt;
    tracker_init(&pt);
    tracker_init(&tt);
    pt.rc = 0;
    pt.succeed_on_cancel = true; /* the parent's worker returns 0 even on cancel */
    struct gate pg;
    gate_init(&pg);
    pt.gate = &pg;
    bgjob_job *p = NULL, *e = NULL, *t = NULL;
    bgjob_txn *txn = NULL;
    REQUIRE(make_threaded(po, &pt, worker_gated, 0, NULL, &p) == BGJOB_RESULT_OK);
    eo->end_from_cancel = true;
    REQUIRE(make_external(eo, BGJOB_CREATE_DEFER_START, p, NULL, &e) == BGJOB_RESULT_OK);
    REQUIRE(make_threaded(to, &tt, worker_until_cancel, BGJOB_CREATE_DEFER_START, NULL, &t) ==
            BGJOB_RESULT_OK);
    REQUIRE(bgjob_txn_create(0, &txn) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_add(txn, e), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_add(txn, t), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&tt.runs, 1));
    bgjob_cancel_status st;
    CHECK_RC(bgjob_job_cancel(p, &st), BGJOB_RESULT_OK);
    /* The owner ended the external child from inside CONTROL_CANCEL. */
    CHECK(poll_int_eq(&eo->ctl_cancel, 1));
    CHECK_EQ(atomic_load(&eo->ctl_last_arg), 1);
    CHECK_RC(atomic_load(&eo->end_from_cancel_rc), BGJOB_RESULT_OK);
    bgjob_info info;
    if (info_of(e, &info))
        CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_PARENT);
    CHECK_STATE(wait_end(t), BGJOB_STATE_CANCELLED);
    CHECK_STATE(wait_end(e), BGJOB_STATE_CANCELLED);
    /* The parent's worker has not returned yet; let it. */
    gate_open(&pg);
    int32_t ps = wait_end(p); /* its worker returned 0 after the cancel */
    CHECK(ps == BGJOB_STATE_COMPLETED || ps == BGJOB_STATE_CANCELLED);
    CHECK_EVENTS(eo, BGJOB_STATE_CANCELLED);
    CHECK_EVENTS(to, BGJOB_STATE_CANCELLED);
    CHECK_EVENTS(po, ps);
    CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(e), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(t), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_OK);
    CHECK(all_freed(eo) && all_freed(to) && all_freed(po));
    CHECK_EQ(atomic_load(&eo->ctl_frees), 1);
    CHECK_EQ(atomic_load(&pt.frees), 1);
    CHECK_EQ(atomic_load(&tt.frees), 1);
    gate_destroy(&pg);
    obs_delete(po);
    obs_delete(eo);
    obs_delete(to);
    return ok;
}

/* A threaded sub-job of an external job: the owner's bgjob_job_end(0) while
 * the child runs leaves the parent WAITING (not terminal, no END event, no
 * completion); the child's end then ends it COMPLETED, child's END first. */
static bool test_subjob_of_external(void)
{
    bool ok = true;
    struct obs *po = obs_new(), *co = obs_new();
    struct tracker ct;
    tracker_init(&ct);
    struct gate cg;
    gate_init(&cg);
    ct.gate = &cg;
    bgjob_job *p = NULL, *c = NULL;
    REQUIRE(make_external(po, 0, NULL, NULL, &p) == BGJOB_RESULT_OK);
    REQUIRE(make_threaded(co, &ct, worker_gated, 0, p, &c) == BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&ct.runs, 1));
    CHECK_RC(bgjob_job_end(p, 0, NULL), BGJOB_RESULT_OK);
    atomic_store(&po->end_returned, 1);
    CHECK_STATE(state_of(p), BGJOB_STATE_WAITING);
    CHECK_EQ(atomic_load(&po->ends), 0);
    CHECK_EQ(atomic_load(&po->completions), 0);
    CHECK_RC(bgjob_job_end(p, 0, NULL), BGJOB_RESULT_NOT_ALLOWED);
    /* control never after the end: a pause now must not reach the owner */
    bgjob_job_pause(p);
    CHECK_EQ(atomic_load(&po->ctl_pause), 0);
    gate_open(&cg);
    CHECK_STATE(wait_end(c), BGJOB_STATE_COMPLETED);
    CHECK_STATE(wait_end(p), BGJOB_STATE_COMPLETED);
    CHECK_EVENTS(co, BGJOB_STATE_COMPLETED);
    CHECK_EVENTS(po, BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_OK);
    CHECK(all_freed(po) && all_freed(co));
    CHECK_EQ(atomic_load(&po->ctl_frees), 1);
    gate_destroy(&cg);
    obs_delete(po);
    obs_delete(co);
    return ok;
}

/* Event callbacks that call back in (ref, lookup, destroy the refs,
 * get_info) while two threads pause/resume an external job; "on this
 * thread": a pause made with no other deliverer gets its event before the
 * pause returns, on the pausing thread. */
struct flipper {
    bgjob_job *job;
    struct gate *go;
    int rounds;
    atomic_int bad;
};

static void *flip_thread(void *arg)
{
    struct flipper *f = arg;
    gate_wait(f->go);
    for (int i = 0; i < f->rounds; i++) {
        bgjob_result r = bgjob_job_pause(f->job);
        if (r != BGJOB_RESULT_OK && r != BGJOB_RESULT_NOT_ALLOWED)
            atomic_fetch_add(&f->bad, 1);
        r = bgjob_job_resume(f->job);
        if (r != BGJOB_RESULT_OK && r != BGJOB_RESULT_NOT_ALLOWED)
            atomic_fetch_add(&f->bad, 1);
    }
    return NULL;
}

static bool test_events_reenter_refs_external(void)
{
    bool ok = true;
    struct obs *o = obs_new();
    bgjob_job *e = NULL;
    o->reenter = true;
    REQUIRE(make_external(o, BGJOB_CREATE_DEFER_START, NULL, NULL, &e) == BGJOB_RESULT_OK);
    o->id = id_of(e);
    CHECK_RC(bgjob_job_start(e), BGJOB_RESULT_OK);
    /* on this thread, before the call returns */
    pthread_mutex_lock(&o->mu);
    size_t before = o->n;
    pthread_mutex_unlock(&o->mu);
    CHECK_RC(bgjob_job_pause(e), BGJOB_RESULT_OK);
    pthread_mutex_lock(&o->mu);
    bool found = false;
    for (size_t i = before; i < o->n; i++)
        if (o->evs[i].kind == BGJOB_EVENT_KIND_STATE_CHANGED &&
            o->evs[i].new_state == BGJOB_STATE_PAUSED) {
            found = true;
            CHECK(pthread_equal(o->ev_threads[i], pthread_self()));
        }
    pthread_mutex_unlock(&o->mu);
    CHECKF(found, "the PAUSED event was not delivered before bgjob_job_pause returned");
    CHECK_RC(bgjob_job_resume(e), BGJOB_RESULT_OK);

    struct gate go;
    gate_init(&go);
    struct flipper f1 = {.job = e, .go = &go, .rounds = 200};
    struct flipper f2 = {.job = e, .go = &go, .rounds = 200};
    pthread_t a, b;
    pthread_create(&a, NULL, flip_thread, &f1);
    pthread_create(&b, NULL, flip_thread, &f2);
    gate_open(&go);
    for (int i = 0; i < 200; i++)
        bgjob_job_set_current(e, (uint64_t)i);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    CHECK_EQ(atomic_load(&f1.bad) + atomic_load(&f2.bad), 0);
    bgjob_job_resume(e);
    CHECK_RC(bgjob_job_end(e, 0, NULL), BGJOB_RESULT_OK);
    atomic_store(&o->end_returned, 1);
    CHECK_STATE(wait_end(e), BGJOB_STATE_COMPLETED);
    CHECK_EVENTS(o, BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&o->reenter_bad), 0);
    CHECK_EQ(atomic_load(&o->ctl_pause), atomic_load(&o->ctl_resume));
    CHECK_RC(bgjob_job_destroy(e), BGJOB_RESULT_OK);
    CHECK(all_freed(o));
    CHECK_EQ(atomic_load(&o->ctl_frees), 1);
    gate_destroy(&go);
    obs_delete(o);
    return ok;
}

/* A reference taken, then the creator destroys its handle while events flow
 * (a threaded job pausing and resuming): events keep coming with a valid
 * handle, the completion gets a valid handle, the ref still works. */
static bool test_ref_then_creator_destroys(void)
{
    bool ok = true;
    struct obs *o = obs_new();
    struct tracker t;
    tracker_init(&t);
    t.step = 1;
    bgjob_job *j = NULL, *r = NULL;
    REQUIRE(make_threaded(o, &t, worker_progress, 0, NULL, &j) == BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&t.runs, 1));
    CHECK_RC(bgjob_job_ref(j, &r), BGJOB_RESULT_OK);
    CHECK(r != j);
    struct gate go;
    gate_init(&go);
    struct flipper f = {.job = r, .go = &go, .rounds = 100};
    pthread_t a;
    pthread_create(&a, NULL, flip_thread, &f);
    gate_open(&go);
    CHECK_RC(bgjob_job_destroy(j), BGJOB_RESULT_OK); /* not the last: releases only */
    CHECK_RC(bgjob_job_get_info(j, &(bgjob_info){.struct_size = sizeof(bgjob_info)}),
             BGJOB_RESULT_INVALID_HANDLE);
    pthread_join(a, NULL);
    CHECK_EQ(atomic_load(&f.bad), 0);
    bgjob_job_resume(r);
    bgjob_cancel_status st;
    CHECK_RC(bgjob_job_cancel(r, &st), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(r), BGJOB_STATE_CANCELLED);
    CHECK_EVENTS(o, BGJOB_STATE_CANCELLED);
    CHECK_RC(atomic_load(&o->completion_info_rc), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(r), BGJOB_RESULT_OK);
    CHECK(all_freed(o));
    CHECK_EQ(atomic_load(&t.frees), 1);
    gate_destroy(&go);
    obs_delete(o);
    return ok;
}

/* The END event destroys the creator's handle while a reference lives: that
 * only releases the creator's reference, so the completion still gets a
 * handle valid for its call. */
static bool test_destroy_from_end_with_ref(void)
{
    bool ok = true;
    struct obs *o = obs_new();
    o->destroy_on_end = true;
    bgjob_job *e = NULL, *r = NULL;
    REQUIRE(make_external(o, 0, NULL, NULL, &e) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_ref(e, &r), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_end(e, 7, "boom"), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(r), BGJOB_STATE_FAILED);
    CHECK_RC(atomic_load(&o->destroy_on_end_rc), BGJOB_RESULT_OK);
    CHECK_EVENTS(o, BGJOB_STATE_FAILED);
    CHECK_RC(atomic_load(&o->completion_info_rc), BGJOB_RESULT_OK);
    bgjob_info info;
    if (info_of(r, &info))
        CHECK_EQ(info.error_code, 7);
    CHECK_RC(bgjob_job_destroy(r), BGJOB_RESULT_OK);
    CHECK(all_freed(o));
    obs_delete(o);
    return ok;
}

/* Events through a context that is destroyed mid-stream (events queued, some
 * dispatched): every free function exactly once, no callback after its free,
 * the job still ends and is destroyable. */
static bool test_context_destroyed_midstream(void)
{
    bool ok = true;
    struct obs *o = obs_new();
    bgjob_context *ctx = NULL;
    REQUIRE(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    bgjob_job *e = NULL;
    REQUIRE(make_external(o, 0, NULL, ctx, &e) == BGJOB_RESULT_OK);
    for (int i = 0; i < 20; i++) {
        CHECK_RC(bgjob_job_pause(e), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_resume(e), BGJOB_RESULT_OK);
    }
    size_t ran = 0;
    /* One dispatch delivers everything queued so far... */
    CHECK_RC(bgjob_context_dispatch(ctx, 0, &ran), BGJOB_RESULT_OK);
    CHECK(ran > 0);
    CHECK_EQ(o->n, 41); /* start + 20 x (pause, resume) */
    /* ...then more are queued, undelivered, when the context goes. */
    CHECK_RC(bgjob_job_pause(e), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_resume(e), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&o->ev_frees), 0);
    CHECK_RC(bgjob_context_destroy(ctx), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&o->ev_frees), 1); /* it held undelivered events: at once */
    size_t seen = o->n;
    CHECK_RC(bgjob_job_pause(e), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_resume(e), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_end(e, 0, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(e), BGJOB_STATE_COMPLETED);
    CHECK_EQ(o->n, seen);
    CHECK_EQ(atomic_load(&o->completions), 0);
    CHECK_RC(bgjob_job_destroy(e), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&o->ev_frees), 1);
    CHECK_EQ(atomic_load(&o->comp_frees), 1);
    CHECK_EQ(atomic_load(&o->ctl_frees), 1);
    CHECK_EQ(atomic_load(&o->calls_after_free), 0);
    obs_delete(o);
    return ok;
}

/* "Control never after the end": the owner's control callback is blocked
 * inside PAUSE when another thread calls bgjob_job_end; the end must wait
 * for it, and no control call starts after the end returned. */
struct ender {
    bgjob_job *job;
    struct obs *o;
    atomic_int rc;
};

static void *end_thread(void *arg)
{
    struct ender *en = arg;
    atomic_store(&en->rc, bgjob_job_end(en->job, 0, NULL));
    atomic_store(&en->o->end_returned, 1);
    return NULL;
}

static bool test_control_never_after_end(void)
{
    bool ok = true;
    struct obs *o = obs_new();
    struct gate cg;
    gate_init(&cg);
    o->ctl_gate = &cg;
    bgjob_job *e = NULL;
    REQUIRE(make_external(o, 0, NULL, NULL, &e) == BGJOB_RESULT_OK);
    struct gate go;
    gate_init(&go);
    struct flipper f = {.job = e, .go = &go, .rounds = 1};
    pthread_t a, b;
    pthread_create(&a, NULL, flip_thread, &f);
    gate_open(&go);
    CHECK(poll_int_eq(&o->ctl_blocked, 1));
    struct ender en = {.job = e, .o = o};
    atomic_init(&en.rc, -1);
    pthread_create(&b, NULL, end_thread, &en);
    /* One-sided check: the end must not return while PAUSE is in the owner. */
    for (int i = 0; i < 200; i++) {
        if (atomic_load(&o->end_returned))
            break;
        sleep_ms(1);
    }
    CHECKF(atomic_load(&o->end_returned) == 0,
           "bgjob_job_end returned while a control call was still running");
    CHECK_EQ(atomic_load(&o->ctl_frees), 0);
    gate_open(&cg);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    CHECK_RC(atomic_load(&en.rc), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(e), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_pause(e), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_EQ(atomic_load(&o->ctl_after_end), 0);
    CHECK_EVENTS(o, BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(e), BGJOB_RESULT_OK);
    CHECK(all_freed(o));
    CHECK_EQ(atomic_load(&o->ctl_frees), 1);
    gate_destroy(&cg);
    gate_destroy(&go);
    obs_delete(o);
    return ok;
}

/* Two owners race bgjob_job_end while a third cancels and a fourth takes and
 * drops references: exactly one end succeeds, one END, one completion. */
struct racer {
    bgjob_job *job;
    struct gate *go;
    int kind;
    atomic_int rc;
};

static void *race_thread(void *arg)
{
    struct racer *r = arg;
    gate_wait(r->go);
    if (r->kind == 0) {
        atomic_store(&r->rc, bgjob_job_end(r->job, 0, NULL));
    } else if (r->kind == 1) {
        bgjob_cancel_status st;
        atomic_store(&r->rc, bgjob_job_cancel(r->job, &st));
    } else {
        for (int i = 0; i < 50; i++) {
            bgjob_job *x = NULL;
            if (bgjob_job_ref(r->job, &x) == BGJOB_RESULT_OK)
                bgjob_job_destroy(x);
        }
        atomic_store(&r->rc, 0);
    }
    return NULL;
}

static bool test_end_race_exactly_once(void)
{
    bool ok = true;
    for (int round = 0; round < 30 && ok; round++) {
        struct obs *o = obs_new();
        bgjob_job *e = NULL;
        REQUIRE(make_external(o, 0, NULL, NULL, &e) == BGJOB_RESULT_OK);
        struct gate go;
        gate_init(&go);
        struct racer rs[4] = {{e, &go, 0, 0}, {e, &go, 0, 0}, {e, &go, 1, 0}, {e, &go, 2, 0}};
        pthread_t th[4];
        for (int i = 0; i < 4; i++)
            pthread_create(&th[i], NULL, race_thread, &rs[i]);
        gate_open(&go);
        for (int i = 0; i < 4; i++)
            pthread_join(th[i], NULL);
        atomic_store(&o->end_returned, 1);
        int oks = (rs[0].rc == BGJOB_RESULT_OK) + (rs[1].rc == BGJOB_RESULT_OK);
        CHECK_EQ(oks, 1);
        int32_t s = wait_end(e);
        CHECK(s == BGJOB_STATE_COMPLETED);
        CHECK_EVENTS(o, s);
        CHECK_RC(bgjob_job_destroy(e), BGJOB_RESULT_OK);
        CHECK(all_freed(o));
        CHECK_EQ(atomic_load(&o->ctl_frees), 1);
        CHECK(atomic_load(&o->ctl_cancel) <= 1);
        gate_destroy(&go);
        obs_delete(o);
    }
    return ok;
}

/* A chain: threaded parent -> external child -> threaded grandchild.
 * Cancelling the top cancels down (cause PARENT), the external child's owner
 * hears CANCEL; no one ends before its children. */
static bool test_cancel_chain_through_external(void)
{
    bool ok = true;
    struct obs *po = obs_new(), *co = obs_new(), *go_ = obs_new();
    struct tracker pt, gt;
    tracker_init(&pt);
    tracker_init(&gt);
    bgjob_job *p = NULL, *c = NULL, *g = NULL;
    REQUIRE(make_threaded(po, &pt, worker_until_cancel, 0, NULL, &p) == BGJOB_RESULT_OK);
    REQUIRE(make_external(co, 0, p, NULL, &c) == BGJOB_RESULT_OK);
    REQUIRE(make_threaded(go_, &gt, worker_until_cancel, 0, c, &g) == BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&gt.runs, 1));
    bgjob_cancel_status st;
    CHECK_RC(bgjob_job_cancel(p, &st), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&co->ctl_cancel, 1));
    CHECK_STATE(wait_end(g), BGJOB_STATE_CANCELLED);
    bgjob_info info;
    if (info_of(g, &info))
        CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_PARENT);
    if (info_of(c, &info))
        CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_PARENT);
    CHECK(poll_int_eq(&pt.returns, 1));
    /* The external child has not ended: the parent must not be terminal
     * (`returns` counts just before the worker's return: poll for WAITING). */
    CHECK(poll_state(p, BGJOB_STATE_WAITING));
    int32_t ps = state_of(p);
    CHECKF(ps == BGJOB_STATE_WAITING, "parent state %d (%s) while its external child runs", ps,
           bgjob_state_str(ps));
    CHECK_EQ(atomic_load(&po->completions), 0);
    CHECK_RC(bgjob_job_end(c, WORKER_CANCELLED_RC, NULL), BGJOB_RESULT_OK);
    atomic_store(&co->end_returned, 1);
    CHECK_STATE(wait_end(c), BGJOB_STATE_CANCELLED);
    CHECK_STATE(wait_end(p), BGJOB_STATE_CANCELLED);
    CHECK_EVENTS(po, BGJOB_STATE_CANCELLED);
    CHECK_EVENTS(co, BGJOB_STATE_CANCELLED);
    CHECK_EVENTS(go_, BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(g), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_OK);
    CHECK(all_freed(po) && all_freed(co) && all_freed(go_));
    obs_delete(po);
    obs_delete(co);
    obs_delete(go_);
    return ok;
}

/* fork() while external jobs (with refs and a context) live: every parent
 * handle is invalid in the child, lookup finds nothing, and the child can
 * run an external job of its own with events. */
static uint64_t fork_ids[3];

static bool fork_body(void)
{
    bool ok = true;
    for (int i = 0; i < 3; i++) {
        bgjob_job *x = NULL;
        CHECK_RC(bgjob_job_lookup(fork_ids[i], &x), BGJOB_RESULT_INVALID_ARGUMENT);
    }
    struct obs *o = obs_new();
    bgjob_job *e = NULL;
    REQUIRE(make_external(o, 0, NULL, NULL, &e) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(e), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_resume(e), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_end(e, 0, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(e), BGJOB_STATE_COMPLETED);
    CHECK_EVENTS(o, BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(e), BGJOB_RESULT_OK);
    CHECK(all_freed(o));
    obs_delete(o);
    return ok;
}

static bool test_fork_with_external_jobs(void)
{
    bool ok = true;
    struct obs *os[3];
    bgjob_job *e[3], *r[3];
    for (int i = 0; i < 3; i++) {
        os[i] = obs_new();
        REQUIRE(make_external(os[i], 0, i ? e[0] : NULL, NULL, &e[i]) == BGJOB_RESULT_OK);
        REQUIRE(bgjob_job_ref(e[i], &r[i]) == BGJOB_RESULT_OK);
        fork_ids[i] = id_of(e[i]);
    }
    if (!getenv("SEAMS_NOFORK"))
        CHECK(in_child(60, fork_body));
    for (int i = 2; i >= 0; i--) {
        CHECK_RC(bgjob_job_destroy(e[i]), BGJOB_RESULT_OK); /* not the last */
        CHECK_RC(bgjob_job_end(r[i], 0, NULL), BGJOB_RESULT_OK);
        CHECK_STATE(wait_end(r[i]), BGJOB_STATE_COMPLETED);
        CHECK_EVENTS(os[i], BGJOB_STATE_COMPLETED);
        CHECK_RC(bgjob_job_destroy(r[i]), BGJOB_RESULT_OK);
        CHECK(all_freed(os[i]));
        obs_delete(os[i]);
    }
    return ok;
}


/* An owner reacting to its external job's events: from inside the event
 * callback (no context) it ends the job, either directly (bgjob_job_end on
 * the RUNNING event) or by a cancel whose CONTROL_CANCEL ends it — both
 * allowed by the header (the event callback may cancel; the control callback
 * may end the job from inside CANCEL; bgjob_job_end is a worker's return,
 * not a wait). The end runs the completion on this thread, which must first
 * deliver END: the thread is the job's event deliverer already. Run on a
 * helper thread so a hang is reported, not waited out. */
struct end_in_event {
    struct obs o;
    int mode; /* 0: bgjob_job_end in the event; 1: cancel -> control ends it */
    atomic_int fired;
    atomic_int rc;
    atomic_int done;
};

static void end_in_event_cb(void *ud, bgjob_job *job, const bgjob_event *ev)
{
    struct end_in_event *x = ud;
    on_event(&x->o, job, ev);
    if (ev->kind == BGJOB_EVENT_KIND_STATE_CHANGED && ev->new_state == BGJOB_STATE_RUNNING &&
        atomic_fetch_add(&x->fired, 1) == 0) {
        if (x->mode == 0) {
            atomic_store(&x->rc, bgjob_job_end(job, 0, NULL));
        } else {
            bgjob_cancel_status st;
            atomic_store(&x->rc, bgjob_job_cancel(job, &st));
        }
    }
}


struct starter {
    bgjob_job *job;
    struct end_in_event *x;
};

static void *do_start(void *arg)
{
    struct starter *s = arg;
    bgjob_job_start(s->job);
    atomic_store(&s->x->done, 1);
    return NULL;
}

static bool end_in_event_case(int mode)
{
    bool ok = true;
    struct end_in_event *x = calloc(1, sizeof *x);
    REQUIRE(x != NULL);
    pthread_mutex_init(&x->o.mu, NULL);
    atomic_init(&x->o.completion_info_rc, -1);
    atomic_init(&x->o.completion_state, -1);
    atomic_init(&x->o.end_from_cancel_rc, -1);
    atomic_init(&x->rc, -1);
    x->mode = mode;
    x->o.end_from_cancel = true;
    bgjob_job_options op = opts_for(&x->o, BGJOB_CREATE_EXTERNAL | BGJOB_CREATE_DEFER_START, NULL);
    op.event = end_in_event_cb;
    op.event_userdata = x;
    bgjob_job *e = NULL;
    REQUIRE(bgjob_job_create(&op, NULL, NULL, NULL, &e) == BGJOB_RESULT_OK);
    struct starter s = {e, x};
    pthread_t th;
    pthread_create(&th, NULL, do_start, &s);
    bool finished = poll_int_eq(&x->done, 1);
    CHECKF(finished, "bgjob_job_start never returned: the end inside the event callback hung");
    if (!finished) {
        pthread_detach(th);
        return false; /* the hung thread still uses x and e: leave them */
    }
    pthread_join(th, NULL);
    CHECK_RC(atomic_load(&x->rc), BGJOB_RESULT_OK);
    if (mode == 1)
        CHECK_RC(atomic_load(&x->o.end_from_cancel_rc), BGJOB_RESULT_OK);
    int32_t s_end = wait_end(e);
    CHECK_STATE(s_end, mode == 0 ? BGJOB_STATE_COMPLETED : BGJOB_STATE_CANCELLED);
    CHECK_EVENTS(&x->o, s_end);
    CHECK_RC(bgjob_job_destroy(e), BGJOB_RESULT_OK);
    CHECK(all_freed(&x->o));
    pthread_mutex_destroy(&x->o.mu);
    free(x);
    return ok;
}

static bool test_end_from_event_callback(void)
{
    return end_in_event_case(0);
}

static bool test_cancel_from_event_ends_in_control(void)
{
    return end_in_event_case(1);
}

/* "The parent does not end while a child runs", against manual finalize: an
 * external MANUAL_FINALIZE parent ended with success while its threaded child
 * runs; a finalize then must not end it before the child has ended. */
static bool test_manual_finalize_parent_waits_for_child(void)
{
    bool ok = true;
    struct obs *po = obs_new(), *co = obs_new();
    struct tracker ct;
    tracker_init(&ct);
    struct gate cg;
    gate_init(&cg);
    ct.gate = &cg;
    bgjob_job *p = NULL, *c = NULL;
    REQUIRE(make_external(po, BGJOB_CREATE_MANUAL_FINALIZE, NULL, NULL, &p) == BGJOB_RESULT_OK);
    REQUIRE(make_threaded(co, &ct, worker_gated, 0, p, &c) == BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&ct.runs, 1));
    CHECK_RC(bgjob_job_end(p, 0, NULL), BGJOB_RESULT_OK);
    int32_t s1 = state_of(p);
    CHECKF(s1 == BGJOB_STATE_WAITING, "parent %s after its end while a child runs",
           bgjob_state_str(s1));
    bgjob_result fr = bgjob_job_finalize(p);
    int32_t s2 = state_of(p);
    CHECKF(s2 != BGJOB_STATE_COMPLETED && s2 != BGJOB_STATE_FAILED && s2 != BGJOB_STATE_CANCELLED,
           "finalize (%s) ended the parent (%s) while its child runs", bgjob_result_str(fr),
           bgjob_state_str(s2));
    CHECK_EQ(atomic_load(&po->ends), 0);
    gate_open(&cg);
    CHECK_STATE(wait_end(c), BGJOB_STATE_COMPLETED);
    if (fr != BGJOB_RESULT_OK) {
        CHECK(poll_state(p, BGJOB_STATE_PENDING));
        CHECK_RC(bgjob_job_finalize(p), BGJOB_RESULT_OK);
    }
    CHECK_STATE(wait_end(p), BGJOB_STATE_COMPLETED);
    CHECK_EVENTS(co, BGJOB_STATE_COMPLETED);
    CHECK_EVENTS(po, BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_OK);
    CHECK(all_freed(po) && all_freed(co));
    gate_destroy(&cg);
    obs_delete(po);
    obs_delete(co);
    return ok;
}

/* A threaded parent whose worker returned waits (WAITING) for its external
 * child; a cancel of the parent then reaches the child's owner (CONTROL_CANCEL,
 * cause PARENT) and must not end the parent before the child ends; the last
 * handle's destroy is refused meanwhile. */
static bool test_cancel_waiting_parent(void)
{
    bool ok = true;
    struct obs *po = obs_new(), *co = obs_new();
    struct tracker pt;
    tracker_init(&pt);
    bgjob_job *p = NULL, *c = NULL;
    struct gate pg;
    gate_init(&pg);
    pt.gate = &pg;
    REQUIRE(make_threaded(po, &pt, worker_gated, 0, NULL, &p) == BGJOB_RESULT_OK);
    REQUIRE(make_external(co, 0, p, NULL, &c) == BGJOB_RESULT_OK);
    gate_open(&pg);
    CHECK(poll_int_eq(&pt.returns, 1));
    CHECK(poll_state(p, BGJOB_STATE_WAITING));
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_NOT_ALLOWED);
    bgjob_cancel_status st;
    CHECK_RC(bgjob_job_cancel(p, &st), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&co->ctl_cancel, 1));
    bgjob_info info;
    if (info_of(c, &info))
        CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_PARENT);
    int32_t ps = state_of(p);
    CHECKF(ps == BGJOB_STATE_WAITING, "parent %s after its cancel while its child runs",
           bgjob_state_str(ps));
    CHECK_EQ(atomic_load(&po->ends), 0);
    CHECK_RC(bgjob_job_end(c, WORKER_CANCELLED_RC, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(c), BGJOB_STATE_CANCELLED);
    int32_t pe = wait_end(p);
    CHECK(pe == BGJOB_STATE_COMPLETED || pe == BGJOB_STATE_CANCELLED);
    CHECK_EVENTS(co, BGJOB_STATE_CANCELLED);
    CHECK_EVENTS(po, pe);
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_OK);
    CHECK(all_freed(po) && all_freed(co));
    gate_destroy(&pg);
    obs_delete(po);
    obs_delete(co);
    return ok;
}

/* Callbacks that call back in with references: the control callback reads,
 * refs, looks up and releases its job (never under a lock; a handle valid
 * during the call); the completion of a detached external job (no handle
 * left with the caller) takes a ref and a lookup, which both work, and
 * releases them. With DETACH_CANCEL the owner hears CANCEL and ends the job
 * from inside it; the detached handle stays valid until that end returns. */
struct ctl_reenter {
    struct obs o;
    atomic_int bad;
    atomic_int comp_ref_rc;
    atomic_int comp_lookup_rc;
    uint64_t id;
};

static void ctl_reenter_cb(void *ud, bgjob_job *job, bgjob_control what, int64_t arg)
{
    struct ctl_reenter *x = ud;
    bgjob_info info = {.struct_size = sizeof info};
    if (bgjob_job_get_info(job, &info) != BGJOB_RESULT_OK || info.id != x->id)
        atomic_fetch_add(&x->bad, 1);
    bgjob_job *r = NULL, *l = NULL;
    if (bgjob_job_ref(job, &r) != BGJOB_RESULT_OK)
        atomic_fetch_add(&x->bad, 1);
    if (bgjob_job_lookup(x->id, &l) != BGJOB_RESULT_OK)
        atomic_fetch_add(&x->bad, 1);
    if (r && bgjob_job_destroy(r) != BGJOB_RESULT_OK)
        atomic_fetch_add(&x->bad, 1);
    if (l && bgjob_job_destroy(l) != BGJOB_RESULT_OK)
        atomic_fetch_add(&x->bad, 1);
    on_control(&x->o, job, what, arg);
}

static void comp_reenter_cb(void *ud, bgjob_job *job, bgjob_state state)
{
    struct ctl_reenter *x = ud;
    bgjob_job *r = NULL, *l = NULL;
    atomic_store(&x->comp_ref_rc, bgjob_job_ref(job, &r));
    atomic_store(&x->comp_lookup_rc, bgjob_job_lookup(x->id, &l));
    if (r)
        bgjob_job_destroy(r);
    if (l)
        bgjob_job_destroy(l);
    on_completion(&x->o, job, state);
}

static bool test_control_and_completion_reenter_detached(void)
{
    bool ok = true;
    struct ctl_reenter *x = calloc(1, sizeof *x);
    REQUIRE(x != NULL);
    pthread_mutex_init(&x->o.mu, NULL);
    atomic_init(&x->o.completion_info_rc, -1);
    atomic_init(&x->o.completion_state, -1);
    atomic_init(&x->o.end_from_cancel_rc, -1);
    atomic_init(&x->comp_ref_rc, -1);
    atomic_init(&x->comp_lookup_rc, -1);
    x->o.end_from_cancel = true;
    bgjob_job_options op = opts_for(&x->o, BGJOB_CREATE_EXTERNAL | BGJOB_CREATE_DEFER_START, NULL);
    op.control = ctl_reenter_cb;
    op.control_userdata = x;
    op.completion = comp_reenter_cb;
    op.completion_userdata = x;
    bgjob_job *e = NULL;
    REQUIRE(bgjob_job_create(&op, NULL, NULL, NULL, &e) == BGJOB_RESULT_OK);
    x->id = id_of(e);
    CHECK_RC(bgjob_job_start(e), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(e), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_resume(e), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_speed(e, 1000), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&x->o.ctl_calls), 3);
    CHECK_RC(bgjob_job_detach(e, BGJOB_DETACH_CANCEL), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&x->o.ctl_cancel), 1);
    CHECK_RC(atomic_load(&x->o.end_from_cancel_rc), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&x->o.comp_frees, 1));
    CHECK_EQ(atomic_load(&x->bad), 0);
    CHECK_RC(atomic_load(&x->comp_ref_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&x->comp_lookup_rc), BGJOB_RESULT_OK);
    CHECK_EVENTS(&x->o, BGJOB_STATE_CANCELLED);
    CHECK(poll_unlisted(x->id));
    bgjob_job *l = NULL;
    CHECK_RC(bgjob_job_lookup(x->id, &l), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK(poll_int_eq(&x->o.ev_frees, 1));
    CHECK_EQ(atomic_load(&x->o.ctl_frees), 1);
    pthread_mutex_destroy(&x->o.mu);
    free(x);
    return ok;
}

/* The end-from-event seam inside a transaction: the external member is ended
 * from its own event callback (on its IO_ERROR event, as an owner reacting to
 * an error would) after its threaded sibling finished, so that end settles
 * the group on the delivering thread. Every member: END before completion,
 * each exactly once; the sibling's completion never on this thread. */
struct txn_end {
    struct obs o;
    atomic_int rc;
};

static void txn_end_ev(void *ud, bgjob_job *job, const bgjob_event *ev)
{
    struct txn_end *x = ud;
    on_event(&x->o, job, ev);
    if (ev->kind == BGJOB_EVENT_KIND_IO_ERROR)
        atomic_store(&x->rc, bgjob_job_end(job, 5, "io"));
}

static bool test_txn_settled_from_event_callback(void)
{
    bool ok = true;
    struct txn_end *x = calloc(1, sizeof *x);
    REQUIRE(x != NULL);
    pthread_mutex_init(&x->o.mu, NULL);
    atomic_init(&x->o.completion_info_rc, -1);
    atomic_init(&x->o.completion_state, -1);
    atomic_init(&x->rc, -1);
    struct obs *to = obs_new();
    struct tracker tt;
    tracker_init(&tt);
    bgjob_job_options op = opts_for(&x->o, BGJOB_CREATE_EXTERNAL | BGJOB_CREATE_DEFER_START, NULL);
    op.event = txn_end_ev;
    op.event_userdata = x;
    bgjob_job *e = NULL, *t = NULL;
    bgjob_txn *txn = NULL;
    REQUIRE(bgjob_job_create(&op, NULL, NULL, NULL, &e) == BGJOB_RESULT_OK);
    REQUIRE(make_threaded(to, &tt, worker_return, BGJOB_CREATE_DEFER_START, NULL, &t) ==
            BGJOB_RESULT_OK);
    REQUIRE(bgjob_txn_create(0, &txn) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_add(txn, e), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_add(txn, t), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
    CHECK(poll_state(t, BGJOB_STATE_WAITING));
    bgjob_error_action act;
    CHECK_RC(bgjob_job_report_io_error(e, 5, "io", &act), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&x->rc), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&x->o.completions), 1); /* on this thread, after the event */
    CHECK_STATE(wait_end(e), BGJOB_STATE_FAILED);
    CHECK_STATE(wait_end(t), BGJOB_STATE_CANCELLED);
    CHECK_EVENTS(&x->o, BGJOB_STATE_FAILED);
    CHECK_EVENTS(to, BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(e), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(t), BGJOB_RESULT_OK);
    CHECK(all_freed(&x->o) && all_freed(to));
    pthread_mutex_destroy(&x->o.mu);
    free(x);
    obs_delete(to);
    return ok;
}

/* An event callback dispatched through a context destroys that context
 * mid-stream (the job keeps changing): no event or completion after their
 * frees, each free exactly once, the job still ends. */
struct ctx_kill {
    struct obs o;
    bgjob_context *ctx;
    atomic_int killed;
};

static void ctx_kill_ev(void *ud, bgjob_job *job, const bgjob_event *ev)
{
    struct ctx_kill *x = ud;
    on_event(&x->o, job, ev);
    if (ev->kind == BGJOB_EVENT_KIND_STATE_CHANGED && ev->new_state == BGJOB_STATE_PAUSED &&
        atomic_fetch_add(&x->killed, 1) == 0)
        bgjob_context_destroy(x->ctx);
}

static bool test_event_destroys_its_context(void)
{
    bool ok = true;
    struct ctx_kill *x = calloc(1, sizeof *x);
    REQUIRE(x != NULL);
    pthread_mutex_init(&x->o.mu, NULL);
    atomic_init(&x->o.completion_info_rc, -1);
    atomic_init(&x->o.completion_state, -1);
    REQUIRE(bgjob_context_create(&x->ctx) == BGJOB_RESULT_OK);
    bgjob_job_options op = opts_for(&x->o, BGJOB_CREATE_EXTERNAL, x->ctx);
    op.event = ctx_kill_ev;
    op.event_userdata = x;
    bgjob_job *e = NULL;
    REQUIRE(bgjob_job_create(&op, NULL, NULL, NULL, &e) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(e), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_resume(e), BGJOB_RESULT_OK);
    size_t ran = 0;
    CHECK_RC(bgjob_context_dispatch(x->ctx, 0, &ran), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&x->killed), 1);
    CHECK_RC(bgjob_context_dispatch(x->ctx, 0, &ran), BGJOB_RESULT_INVALID_HANDLE);
    for (int i = 0; i < 10; i++) {
        CHECK_RC(bgjob_job_pause(e), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_resume(e), BGJOB_RESULT_OK);
    }
    CHECK_RC(bgjob_job_end(e, 0, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(e), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(e), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&x->o.ev_frees), 1);
    CHECK_EQ(atomic_load(&x->o.comp_frees), 1);
    CHECK_EQ(atomic_load(&x->o.completions), 0);
    CHECK_EQ(atomic_load(&x->o.calls_after_free), 0);
    CHECK_EQ(atomic_load(&x->o.bad_order), 0);
    pthread_mutex_destroy(&x->o.mu);
    free(x);
    return ok;
}

/* A transaction's abort flows into a member's sub-job: threaded parent P and
 * external sibling S in a transaction, external child C under P. S fails:
 * P is cancelled (TRANSACTION), C too (PARENT, its owner told), and P does
 * not end before C; the transaction settles once P does. */
static bool test_txn_abort_reaches_member_subjob(void)
{
    bool ok = true;
    struct obs *po = obs_new(), *so = obs_new(), *co = obs_new();
    struct tracker pt;
    tracker_init(&pt);
    bgjob_job *p = NULL, *s_ = NULL, *c = NULL;
    bgjob_txn *txn = NULL;
    REQUIRE(make_threaded(po, &pt, worker_until_cancel, BGJOB_CREATE_DEFER_START, NULL, &p) ==
            BGJOB_RESULT_OK);
    REQUIRE(make_external(so, BGJOB_CREATE_DEFER_START, NULL, NULL, &s_) == BGJOB_RESULT_OK);
    REQUIRE(bgjob_txn_create(0, &txn) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_add(txn, p), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_add(txn, s_), BGJOB_RESULT_OK);
    REQUIRE(make_external(co, 0, p, NULL, &c) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&pt.runs, 1));
    CHECK_RC(bgjob_job_end(s_, 3, "sibling failed"), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&co->ctl_cancel, 1));
    bgjob_info info;
    if (info_of(p, &info))
        CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_TRANSACTION);
    if (info_of(c, &info))
        CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_PARENT);
    CHECK(poll_int_eq(&pt.returns, 1));
    /* `returns` counts just before the worker's return: poll for WAITING. */
    CHECK(poll_state(p, BGJOB_STATE_WAITING));
    int32_t ps = state_of(p);
    CHECKF(ps == BGJOB_STATE_WAITING, "parent %s while its child runs", bgjob_state_str(ps));
    CHECK_EQ(atomic_load(&po->ends), 0);
    CHECK_EQ(atomic_load(&so->completions), 0); /* the group has not settled */
    CHECK_RC(bgjob_job_end(c, WORKER_CANCELLED_RC, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(c), BGJOB_STATE_CANCELLED);
    CHECK_STATE(wait_end(p), BGJOB_STATE_CANCELLED);
    CHECK_STATE(wait_end(s_), BGJOB_STATE_FAILED);
    CHECK_EVENTS(po, BGJOB_STATE_CANCELLED);
    CHECK_EVENTS(so, BGJOB_STATE_FAILED);
    CHECK_EVENTS(co, BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(s_), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_OK);
    CHECK(all_freed(po) && all_freed(so) && all_freed(co));
    obs_delete(po);
    obs_delete(so);
    obs_delete(co);
    return ok;
}

/* READY/STANDBY, soft then force cancel on an external job, seen by its
 * owner: READY and STANDBY come as events in order; the soft cancel of a
 * STANDBY job reaches the owner as CANCEL with arg 0, the later force cancel
 * (REQUESTED again, per the header) as CANCEL with arg 1; the owner ends it
 * with success and it ends COMPLETED (soft) or CANCELLED (force). */
static bool test_soft_then_force_cancel_external(void)
{
    bool ok = true;
    struct obs *o = obs_new();
    bgjob_job *e = NULL;
    REQUIRE(make_external(o, 0, NULL, NULL, &e) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_ready(e), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(e), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(e), BGJOB_STATE_STANDBY);
    bgjob_cancel_status st = -1;
    CHECK_RC(bgjob_job_cancel_soft(e, &st), BGJOB_RESULT_OK);
    CHECK_EQ(st, BGJOB_CANCEL_STATUS_REQUESTED);
    CHECK_EQ(atomic_load(&o->ctl_cancel), 1);
    CHECK_EQ(atomic_load(&o->ctl_last_arg), 0);
    st = -1;
    CHECK_RC(bgjob_job_cancel(e, &st), BGJOB_RESULT_OK);
    CHECK_EQ(st, BGJOB_CANCEL_STATUS_REQUESTED);
    CHECKF(atomic_load(&o->ctl_cancel) == 2,
           "the owner was not told the soft cancel became a force one (%d CANCEL calls)",
           atomic_load(&o->ctl_cancel));
    CHECK_EQ(atomic_load(&o->ctl_last_arg), 1);
    bool soft = true;
    CHECK_RC(bgjob_job_cancel_is_soft(e, &soft), BGJOB_RESULT_OK);
    CHECK(!soft);
    CHECK_RC(bgjob_job_end(e, WORKER_CANCELLED_RC, NULL), BGJOB_RESULT_OK);
    atomic_store(&o->end_returned, 1);
    CHECK_STATE(wait_end(e), BGJOB_STATE_CANCELLED);
    CHECK_EVENTS(o, BGJOB_STATE_CANCELLED);
    bool saw_ready = false, saw_standby = false;
    for (size_t i = 0; i < o->n; i++) {
        if (o->evs[i].kind == BGJOB_EVENT_KIND_READY)
            saw_ready = true;
        if (o->evs[i].kind == BGJOB_EVENT_KIND_STATE_CHANGED &&
            o->evs[i].new_state == BGJOB_STATE_STANDBY)
            saw_standby = saw_ready;
    }
    CHECK(saw_ready && saw_standby);
    CHECK_RC(bgjob_job_destroy(e), BGJOB_RESULT_OK);
    CHECK(all_freed(o));
    CHECK_EQ(atomic_load(&o->ctl_frees), 1);
    obs_delete(o);
    return ok;
}

/* A deadline on an external parent: its cancel (cause TIMEOUT) runs on a
 * bgjob thread named "bgjob-deadline", where the owner ends the job from
 * inside CONTROL_CANCEL; its threaded child is cancelled (PARENT) and the
 * parent waits for it; events and completions still in order, once. */
struct deadline_obs {
    struct obs o;
    char thread_name[32];
    atomic_int named;
};

static void deadline_ctl(void *ud, bgjob_job *job, bgjob_control what, int64_t arg)
{
    struct deadline_obs *x = ud;
    if (what == BGJOB_CONTROL_CANCEL && atomic_load(&x->named) == 0) {
        pthread_getname_np(pthread_self(), x->thread_name, sizeof x->thread_name);
        atomic_store(&x->named, 1);
    }
    on_control(&x->o, job, what, arg);
}

static bool test_deadline_on_external_parent(void)
{
    bool ok = true;
    struct deadline_obs *x = calloc(1, sizeof *x);
    REQUIRE(x != NULL);
    pthread_mutex_init(&x->o.mu, NULL);
    atomic_init(&x->o.completion_info_rc, -1);
    atomic_init(&x->o.completion_state, -1);
    atomic_init(&x->o.end_from_cancel_rc, -1);
    x->o.end_from_cancel = true;
    struct obs *co = obs_new();
    struct tracker ct;
    tracker_init(&ct);
    bgjob_job_options op = opts_for(&x->o, BGJOB_CREATE_EXTERNAL | BGJOB_CREATE_DEFER_START, NULL);
    op.control = deadline_ctl;
    op.control_userdata = x;
    op.deadline_ms = 1;
    bgjob_job *p = NULL, *c = NULL;
    REQUIRE(bgjob_job_create(&op, NULL, NULL, NULL, &p) == BGJOB_RESULT_OK);
    REQUIRE(make_threaded(co, &ct, worker_until_cancel, 0, p, &c) == BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&ct.runs, 1));
    CHECK_RC(bgjob_job_start(p), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&x->named, 1));
    CHECK_STR(x->thread_name, "bgjob-deadline");
    CHECK(poll_int_eq(&x->o.comp_frees, 1));
    CHECK_RC(atomic_load(&x->o.end_from_cancel_rc), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(c), BGJOB_STATE_CANCELLED);
    CHECK_STATE(wait_end(p), BGJOB_STATE_CANCELLED);
    bgjob_info info;
    if (info_of(p, &info))
        CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_TIMEOUT);
    if (info_of(c, &info))
        CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_PARENT);
    CHECK_EVENTS(&x->o, BGJOB_STATE_CANCELLED);
    CHECK_EVENTS(co, BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_OK);
    CHECK(all_freed(&x->o) && all_freed(co));
    CHECK_EQ(atomic_load(&x->o.ctl_frees), 1);
    pthread_mutex_destroy(&x->o.mu);
    free(x);
    obs_delete(co);
    return ok;
}

/* fork() from inside an event callback (this thread is the job's event
 * deliverer): in the child, a new external job ended from its own event
 * callback still completes (END first), and the parent's job still ends. */
static bool fork_in_event_body(void)
{
    return end_in_event_case(0) && end_in_event_case(1);
}

struct fork_in_event {
    struct obs o;
    atomic_int forked;
    atomic_int child_ok;
};

static void fork_in_event_cb(void *ud, bgjob_job *job, const bgjob_event *ev)
{
    struct fork_in_event *x = ud;
    on_event(&x->o, job, ev);
    if (ev->kind == BGJOB_EVENT_KIND_STATE_CHANGED && ev->new_state == BGJOB_STATE_PAUSED &&
        atomic_fetch_add(&x->forked, 1) == 0)
        atomic_store(&x->child_ok, in_child(60, fork_in_event_body) ? 1 : 2);
}

static bool test_fork_inside_event_callback(void)
{
    bool ok = true;
    struct fork_in_event *x = calloc(1, sizeof *x);
    REQUIRE(x != NULL);
    pthread_mutex_init(&x->o.mu, NULL);
    atomic_init(&x->o.completion_info_rc, -1);
    atomic_init(&x->o.completion_state, -1);
    bgjob_job_options op = opts_for(&x->o, BGJOB_CREATE_EXTERNAL, NULL);
    op.event = fork_in_event_cb;
    op.event_userdata = x;
    bgjob_job *e = NULL;
    REQUIRE(bgjob_job_create(&op, NULL, NULL, NULL, &e) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(e), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&x->child_ok), 1);
    CHECK_RC(bgjob_job_resume(e), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_end(e, 0, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(e), BGJOB_STATE_COMPLETED);
    CHECK_EVENTS(&x->o, BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(e), BGJOB_RESULT_OK);
    CHECK(all_freed(&x->o));
    pthread_mutex_destroy(&x->o.mu);
    free(x);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_external_txn_member_with_parent),
        TAP_TEST(test_subjob_of_external),
        TAP_TEST(test_events_reenter_refs_external),
        TAP_TEST(test_ref_then_creator_destroys),
        TAP_TEST(test_destroy_from_end_with_ref),
        TAP_TEST(test_context_destroyed_midstream),
        TAP_TEST(test_control_never_after_end),
        TAP_TEST(test_end_race_exactly_once),
        TAP_TEST(test_cancel_chain_through_external),
        TAP_TEST(test_fork_with_external_jobs),
        TAP_TEST(test_end_from_event_callback),
        TAP_TEST(test_cancel_from_event_ends_in_control),
        TAP_TEST(test_manual_finalize_parent_waits_for_child),
        TAP_TEST(test_cancel_waiting_parent),
        TAP_TEST(test_control_and_completion_reenter_detached),
        TAP_TEST(test_txn_settled_from_event_callback),
        TAP_TEST(test_event_destroys_its_context),
        TAP_TEST(test_txn_abort_reaches_member_subjob),
        TAP_TEST(test_soft_then_force_cancel_external),
        TAP_TEST(test_deadline_on_external_parent),
        TAP_TEST(test_fork_inside_event_callback),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

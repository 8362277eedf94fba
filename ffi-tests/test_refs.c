/* Shared references: bgjob_job_ref and bgjob_job_lookup give each owner a
 * handle of its own; only the last handle's destroy or detach acts on the job,
 * a released handle never reaches another owner's reference, a completion gets
 * a valid handle after the creator released its own, and after fork() every
 * reference is invalid in the child. */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

static bool test_ref_is_a_new_handle_for_the_same_job(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    bgjob_job *a = NULL, *b = NULL;
    REQUIRE(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &a) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_ref(a, &b), BGJOB_RESULT_OK);
    CHECK(a != b);
    CHECK_EQ(id_of(a), id_of(b));
    /* Not the last handle: released in any state, the job runs on. */
    CHECK_RC(bgjob_job_destroy(b), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(a), BGJOB_STATE_RUNNING);
    CHECK_RC(bgjob_job_get_state(b, &(int32_t){0}), BGJOB_RESULT_INVALID_HANDLE);
    /* The last one: today's meaning, refused while the worker runs. */
    CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_ref(NULL, &b), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_ref(a, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    gate_open(&g);
    CHECK_STATE(wait_end(a), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    gate_destroy(&g);
    return ok;
}

static bool test_stale_handle_never_releases_another_ref(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    bgjob_job *a = NULL, *b = NULL, *c = NULL;
    REQUIRE(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &a) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_ref(a, &b), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(b), BGJOB_RESULT_OK);
    /* A new reference never takes the released one's value. */
    CHECK_RC(bgjob_job_ref(a, &c), BGJOB_RESULT_OK);
    CHECK(c != b);
    /* The stale copy is refused everywhere, and c survives its misuse. */
    CHECK_RC(bgjob_job_destroy(b), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_detach(b, 0), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_ref(b, &(bgjob_job *){NULL}), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_STATE(state_of(c), BGJOB_STATE_RUNNING);
    /* The creator's handle released first: c is now the last one. */
    CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_NOT_ALLOWED);
    gate_open(&g);
    CHECK_STATE(wait_end(c), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    gate_destroy(&g);
    return ok;
}

struct refs_arg {
    bgjob_job *job;
    uint64_t id;
    atomic_int failures;
};

static void *ref_and_release(void *p)
{
    struct refs_arg *a = p;
    for (int i = 0; i < 2000; i++) {
        bgjob_job *r = NULL;
        /* Half by reference, half by id. */
        bgjob_result got = i % 2 ? bgjob_job_lookup(a->id, &r) : bgjob_job_ref(a->job, &r);
        if (got != BGJOB_RESULT_OK || r == a->job) {
            atomic_fetch_add(&a->failures, 1);
            continue;
        }
        int32_t s;
        if (bgjob_job_get_state(r, &s) != BGJOB_RESULT_OK)
            atomic_fetch_add(&a->failures, 1);
        /* Never the last handle (the test keeps job): a plain release. */
        if (bgjob_job_destroy(r) != BGJOB_RESULT_OK)
            atomic_fetch_add(&a->failures, 1);
    }
    return NULL;
}

static bool test_refs_from_many_threads(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    struct refs_arg a = {0};
    REQUIRE(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &a.job) == BGJOB_RESULT_OK);
    a.id = id_of(a.job);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        REQUIRE(pthread_create(&th[i], NULL, ref_and_release, &a) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(atomic_load(&a.failures), 0);
    /* Every reference was released: the creator's is the last again. */
    CHECK_RC(bgjob_job_destroy(a.job), BGJOB_RESULT_NOT_ALLOWED);
    gate_open(&g);
    CHECK_STATE(wait_end(a.job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(a.job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

struct racer {
    bgjob_job *h;
    pthread_barrier_t *start;
    bgjob_result rc;
};

static void *destroy_racer(void *p)
{
    struct racer *r = p;
    pthread_barrier_wait(r->start);
    r->rc = bgjob_job_destroy(r->h);
    return NULL;
}

/* Two owners release their handles of an ended job at the same moment: both
 * succeed (whichever is last releases the job), and the job is gone. */
static bool test_racing_releases_of_two_refs(void)
{
    bool ok = true;
    for (int round = 0; round < 200 && ok; round++) {
        struct tracker t;
        tracker_init(&t);
        bgjob_job *a = NULL, *b = NULL;
        REQUIRE(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &a) ==
                BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_ref(a, &b), BGJOB_RESULT_OK);
        uint64_t id = id_of(a);
        CHECK_STATE(wait_end(a), BGJOB_STATE_COMPLETED);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 2);
        struct racer r[2] = {{a, &start, -1}, {b, &start, -1}};
        pthread_t th[2];
        for (int i = 0; i < 2; i++)
            REQUIRE(pthread_create(&th[i], NULL, destroy_racer, &r[i]) == 0);
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&start);
        CHECK_RC(r[0].rc, BGJOB_RESULT_OK);
        CHECK_RC(r[1].rc, BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_lookup(id, &b), BGJOB_RESULT_INVALID_ARGUMENT);
        CHECK(poll_unlisted(id));
    }
    return ok;
}

static bool test_lookup_by_id(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    bgjob_job *a = NULL, *b = NULL;
    REQUIRE(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &a) == BGJOB_RESULT_OK);
    uint64_t id = id_of(a);
    CHECK_RC(bgjob_job_lookup(id, &b), BGJOB_RESULT_OK);
    CHECK(b != a);
    CHECK_EQ(id_of(b), id);
    CHECK_RC(bgjob_job_lookup(0, &b), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_lookup(UINT64_MAX, &b), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_lookup(id, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    /* The looked-up handle is a full handle: it cancels, and the creator's
     * release leaves it the last one. */
    CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(b, NULL), BGJOB_RESULT_OK);
    gate_open(&g);
    CHECK_STATE(wait_end(b), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(b), BGJOB_RESULT_OK);
    /* No handle left: not found any more. */
    CHECK_RC(bgjob_job_lookup(id, &b), BGJOB_RESULT_INVALID_ARGUMENT);
    gate_destroy(&g);
    return ok;
}

static bool test_lookup_of_a_detached_job(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    bgjob_job *a = NULL, *b = NULL;
    REQUIRE(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &a) == BGJOB_RESULT_OK);
    uint64_t id = id_of(a);
    CHECK_RC(bgjob_job_detach(a, 0), BGJOB_RESULT_OK);
    /* Found while it runs; its last handle's destroy only releases it. */
    CHECK_RC(bgjob_job_lookup(id, &b), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(b), BGJOB_STATE_RUNNING);
    CHECK_RC(bgjob_job_destroy(b), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_lookup(id, &b), BGJOB_RESULT_OK);
    gate_open(&g);
    CHECK(poll_int_eq(&t.frees, 1));
    CHECK_RC(bgjob_job_destroy(b), BGJOB_RESULT_OK);
    CHECK(poll_unlisted(id));
    CHECK_RC(bgjob_job_lookup(id, &b), BGJOB_RESULT_INVALID_ARGUMENT);
    gate_destroy(&g);
    return ok;
}

static bool test_detach_of_a_non_last_handle_is_a_release(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    bgjob_job *a = NULL, *b = NULL;
    REQUIRE(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &a) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_ref(a, &b), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_detach(b, 0), BGJOB_RESULT_OK);
    /* The job is not detached: the creator's handle still refuses destroy
     * while it runs, and owns the end. */
    CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_NOT_ALLOWED);
    gate_open(&g);
    CHECK_STATE(wait_end(a), BGJOB_STATE_COMPLETED);
    CHECK(job_listed(id_of(a)));
    CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

struct seen {
    bgjob_job *creator;
    atomic_int calls, state_rc, same_as_creator;
    atomic_ullong id;
};

static void on_done(void *userdata, bgjob_job *job, int32_t state)
{
    struct seen *s = userdata;
    (void)state;
    int32_t st;
    atomic_store(&s->state_rc, bgjob_job_get_state(job, &st));
    bgjob_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if (bgjob_job_get_info(job, &info) == BGJOB_RESULT_OK)
        atomic_store(&s->id, info.id);
    atomic_store(&s->same_as_creator, job == s->creator);
    atomic_fetch_add(&s->calls, 1);
}

static bool test_completion_gets_a_valid_handle_after_the_creator_released(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    struct seen s;
    memset(&s, 0, sizeof s);
    atomic_init(&s.state_rc, -1);
    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    bgjob_context *ctx = NULL;
    REQUIRE(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.completion = on_done;
    o.completion_userdata = &s;
    o.context = ctx;
    bgjob_job *a = NULL, *b = NULL;
    REQUIRE(bgjob_job_create(&o, worker_gated, ud_new(&t), ud_free, &a) == BGJOB_RESULT_OK);
    s.creator = a;
    uint64_t id = id_of(a);
    CHECK_RC(bgjob_job_ref(a, &b), BGJOB_RESULT_OK);
    gate_open(&g);
    CHECK_STATE(wait_end(a), BGJOB_STATE_COMPLETED);
    /* The creator lets go before the completion is dispatched. */
    CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_OK);
    size_t n = 0;
    for (int64_t end = now_ms() + LONG_MS; atomic_load(&s.calls) == 0 && now_ms() < end;)
        bgjob_context_dispatch(ctx, 100, &n);
    CHECK_EQ(atomic_load(&s.calls), 1);
    CHECK_RC(atomic_load(&s.state_rc), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&s.id), id);
    CHECK_EQ(atomic_load(&s.same_as_creator), 0);
    /* The lent handle is gone; b is still the job's and the last. */
    CHECK_STATE(state_of(b), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(b), BGJOB_RESULT_OK);
    CHECK(poll_unlisted(id));
    bgjob_context_destroy(ctx);
    gate_destroy(&g);
    return ok;
}

/* The creator's handle lent to a callback stays the creator's: released on
 * another thread while the callback runs, it is invalid for the rest of the
 * call (INVALID_HANDLE, never another job's), and the other reference is
 * untouched. */
struct lent {
    struct gate inside, released;
    bgjob_job *creator;
    atomic_int rc_before, rc_after, calls;
    atomic_int same_as_creator;
};

struct dispatcher {
    bgjob_context *ctx;
    atomic_int *calls;
};

static void *dispatch_until_called(void *p)
{
    struct dispatcher *d = p;
    size_t n = 0;
    for (int64_t end = now_ms() + LONG_MS; atomic_load(d->calls) == 0 && now_ms() < end;)
        bgjob_context_dispatch(d->ctx, 100, &n);
    return NULL;
}

/* The first call of a callback the case armed: reads the job through the
 * handle it was lent, lets the creator release it, reads again. */
static atomic_int lent_armed;

static void lent_call(struct lent *l, bgjob_job *job)
{
    int32_t st;
    if (!atomic_exchange(&lent_armed, 0))
        return;
    atomic_store(&l->same_as_creator, job == l->creator);
    atomic_store(&l->rc_before, bgjob_job_get_state(job, &st));
    gate_open(&l->inside);
    gate_wait(&l->released);
    atomic_store(&l->rc_after, bgjob_job_get_state(job, &st));
    atomic_fetch_add(&l->calls, 1);
}

static void on_done_lent(void *userdata, bgjob_job *job, int32_t state)
{
    (void)state;
    lent_call(userdata, job);
}

static void on_control_lent(void *userdata, bgjob_job *job, bgjob_control what, int64_t arg)
{
    (void)arg;
    if (what == BGJOB_CONTROL_PAUSE)
        lent_call(userdata, job);
}

static void on_event_lent(void *userdata, bgjob_job *job, const bgjob_event *ev)
{
    if (ev->kind == BGJOB_EVENT_KIND_STATE_CHANGED)
        lent_call(userdata, job);
}

struct pauser {
    bgjob_job *job;
    atomic_int rc;
};

static void *pause_it(void *p)
{
    struct pauser *x = p;
    atomic_store(&x->rc, bgjob_job_pause(x->job));
    return NULL;
}

enum lent_to { LENT_COMPLETION, LENT_CONTROL, LENT_EVENT };

/* Lent to the completion or to the event callback of the job's first state
 * change, dispatched on another thread; or to the control callback of a
 * pause made on another thread. */
static bool lent_to(enum lent_to to)
{
    bool control = to == LENT_CONTROL;
    bool ok = true;
    struct tracker t;
    struct gate g;
    struct lent l;
    memset(&l, 0, sizeof l);
    gate_init(&l.inside);
    gate_init(&l.released);
    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    bgjob_context *ctx = NULL;
    REQUIRE(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    if (control) {
        o.control = on_control_lent;
        o.control_userdata = &l;
    } else if (to == LENT_EVENT) {
        o.event = on_event_lent;
        o.event_userdata = &l;
        o.context = ctx;
    } else {
        o.completion = on_done_lent;
        o.completion_userdata = &l;
        o.context = ctx;
    }
    atomic_store(&lent_armed, 1);
    bgjob_job *a = NULL, *b = NULL;
    REQUIRE(bgjob_job_create(&o, worker_gated, ud_new(&t), ud_free, &a) == BGJOB_RESULT_OK);
    l.creator = a;
    CHECK_RC(bgjob_job_ref(a, &b), BGJOB_RESULT_OK);
    if (to == LENT_COMPLETION)
        gate_open(&g); /* the job ends; its completion waits for the dispatcher */
    pthread_t th;
    struct pauser x = {.job = b};
    struct dispatcher d = {ctx, &l.calls};
    REQUIRE(pthread_create(&th, NULL, control ? pause_it : dispatch_until_called,
                           control ? (void *)&x : (void *)&d) == 0);
    gate_wait(&l.inside);
    /* The creator lets go while its handle is lent to the running callback. */
    CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_OK);
    gate_open(&l.released);
    pthread_join(th, NULL);
    CHECK_EQ(atomic_load(&l.calls), 1);
    CHECK_EQ(atomic_load(&l.same_as_creator), 1);
    CHECK_RC(atomic_load(&l.rc_before), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&l.rc_after), BGJOB_RESULT_INVALID_HANDLE);
    if (control) {
        CHECK_RC(atomic_load(&x.rc), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_resume(b), BGJOB_RESULT_OK);
    }
    gate_open(&g);
    CHECK_STATE(wait_end(b), BGJOB_STATE_COMPLETED);
    uint64_t id = id_of(b);
    CHECK_RC(bgjob_job_destroy(b), BGJOB_RESULT_OK);
    /* The rest of the events (END) go with the context. */
    bgjob_context_destroy(ctx);
    CHECK(poll_unlisted(id));
    gate_destroy(&g);
    gate_destroy(&l.inside);
    gate_destroy(&l.released);
    return ok;
}

/* The creator's handle lent to a callback stays the creator's: released on
 * another thread while the callback runs, it is invalid for the rest of the
 * call (INVALID_HANDLE, never another job's), and the other reference is
 * untouched. */
static bool test_a_lent_handle_released_mid_call_is_invalid_for_the_rest_of_it(void)
{
    bool ok = true;
    CHECKF(lent_to(LENT_COMPLETION), "the completion");
    return ok;
}

/* The same for the control and the event callback. */
static bool test_a_lent_handle_in_control_and_event_callbacks(void)
{
    bool ok = true;
    CHECKF(lent_to(LENT_CONTROL), "the control callback");
    CHECKF(lent_to(LENT_EVENT), "the event callback");
    return ok;
}

/* The same for the finalization callbacks (commit here): `job` is the
 * handle the completion would get, lent as it is. While the creator holds
 * its handle, the commit gets it, and the creator's release of it during
 * the call (its not-last handle's destroy: the job is being finalized)
 * makes it INVALID_HANDLE for the rest of the call. Once the creator
 * released it before, the commit gets another handle, valid for the call. */
static void on_commit_lent(void *userdata, bgjob_job *job)
{
    lent_call(userdata, job);
}

static void on_commit_after_release(void *userdata, bgjob_job *job)
{
    struct lent *l = userdata;
    int32_t st;
    atomic_store(&l->same_as_creator, job == l->creator);
    atomic_store(&l->rc_before, bgjob_job_get_state(job, &st));
    atomic_fetch_add(&l->calls, 1);
}

struct finalizer {
    bgjob_job *job;
    atomic_int rc;
};

static void *finalize_it(void *p)
{
    struct finalizer *f = p;
    atomic_store(&f->rc, bgjob_job_finalize(f->job));
    return NULL;
}

static bool lent_to_commit(bool released_before)
{
    bool ok = true;
    struct tracker t;
    struct lent l;
    memset(&l, 0, sizeof l);
    gate_init(&l.inside);
    gate_init(&l.released);
    tracker_init(&t);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_MANUAL_FINALIZE;
    o.commit = released_before ? on_commit_after_release : on_commit_lent;
    o.finalize_userdata = &l;
    atomic_store(&lent_armed, 1);
    bgjob_job *a = NULL, *b = NULL;
    REQUIRE(bgjob_job_create(&o, worker_return, ud_new(&t), ud_free, &a) == BGJOB_RESULT_OK);
    l.creator = a;
    CHECK_RC(bgjob_job_ref(a, &b), BGJOB_RESULT_OK);
    int32_t st = -1;
    CHECK_RC(bgjob_job_wait_state(b, BGJOB_STATE_PENDING, LONG_MS, &st), BGJOB_RESULT_OK);
    CHECK_STATE(st, BGJOB_STATE_PENDING);
    if (released_before)
        CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_OK);
    pthread_t th;
    struct finalizer f = {.job = b};
    REQUIRE(pthread_create(&th, NULL, finalize_it, &f) == 0);
    if (!released_before) {
        gate_wait(&l.inside);
        /* The creator lets go while its handle is lent to the commit. */
        CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_OK);
        gate_open(&l.released);
    }
    pthread_join(th, NULL);
    CHECK_RC(atomic_load(&f.rc), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(b), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&l.calls), 1);
    CHECK_EQ(atomic_load(&l.same_as_creator), released_before ? 0 : 1);
    CHECK_RC(atomic_load(&l.rc_before), BGJOB_RESULT_OK);
    if (!released_before)
        CHECK_RC(atomic_load(&l.rc_after), BGJOB_RESULT_INVALID_HANDLE);
    uint64_t id = id_of(b);
    CHECK_RC(bgjob_job_destroy(b), BGJOB_RESULT_OK);
    CHECK(poll_unlisted(id));
    gate_destroy(&l.inside);
    gate_destroy(&l.released);
    return ok;
}

static bool test_a_lent_handle_in_finalize_callbacks(void)
{
    bool ok = true;
    CHECKF(lent_to_commit(false), "released during the commit");
    CHECKF(lent_to_commit(true), "released before the commit");
    return ok;
}

static bgjob_job *fork_refs[3];

static bool child_sees_refs_invalid(void)
{
    bool ok = true;
    for (int i = 0; i < 3; i++) {
        int32_t s;
        CHECK_RC(bgjob_job_get_state(fork_refs[i], &s), BGJOB_RESULT_INVALID_HANDLE);
        CHECK_RC(bgjob_job_destroy(fork_refs[i]), BGJOB_RESULT_INVALID_HANDLE);
    }
    return ok;
}

static bool test_fork_invalidates_every_ref(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    REQUIRE(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &fork_refs[0]) ==
            BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_ref(fork_refs[0], &fork_refs[1]), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_lookup(id_of(fork_refs[0]), &fork_refs[2]), BGJOB_RESULT_OK);
    CHECK(in_child(20, child_sees_refs_invalid));
    /* In the parent every reference still works. */
    for (int i = 0; i < 3; i++)
        CHECK_STATE(state_of(fork_refs[i]), BGJOB_STATE_RUNNING);
    gate_open(&g);
    CHECK_STATE(wait_end(fork_refs[0]), BGJOB_STATE_COMPLETED);
    for (int i = 0; i < 3; i++)
        CHECK_RC(bgjob_job_destroy(fork_refs[i]), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_ref_is_a_new_handle_for_the_same_job),
        TAP_TEST(test_stale_handle_never_releases_another_ref),
        TAP_TEST(test_refs_from_many_threads),
        TAP_TEST(test_racing_releases_of_two_refs),
        TAP_TEST(test_lookup_by_id),
        TAP_TEST(test_lookup_of_a_detached_job),
        TAP_TEST(test_detach_of_a_non_last_handle_is_a_release),
        TAP_TEST(test_completion_gets_a_valid_handle_after_the_creator_released),
        TAP_TEST(test_a_lent_handle_released_mid_call_is_invalid_for_the_rest_of_it),
        TAP_TEST(test_a_lent_handle_in_control_and_event_callbacks),
        TAP_TEST(test_a_lent_handle_in_finalize_callbacks),
        TAP_TEST(test_fork_invalidates_every_ref),
    };
    return tap_run(tests, TAP_COUNT(tests));
}

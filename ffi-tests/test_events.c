/* Event callbacks: every state change, I/O errors and the end, in order,
 * through a context or on the thread that made the change; bounded when
 * nobody dispatches; the userdata freed exactly once on every path. */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- an event log ------------------------------------------------------- */

#define LOG_CAP 32768

struct evlog {
    pthread_mutex_t mu;
    bgjob_event evs[LOG_CAP];
    pthread_t threads[LOG_CAP];
    size_t n;          /* events logged (at most LOG_CAP) */
    size_t total;      /* events seen (may exceed LOG_CAP) */
    atomic_int frees;
    atomic_int calls_after_free;
    atomic_int inside;     /* callbacks of this job running now */
    atomic_int overlapped; /* a callback began while another ran */
    atomic_int info_failures; /* bgjob_job_get_info from a callback failed */
    /* Completion: how many events had been seen when it ran, and whether
     * the last of them was END. */
    atomic_int completions;
    atomic_int events_at_completion;
    atomic_bool end_before_completion;
    /* Re-entrance: pause the job from the event into RUNNING. */
    bool pause_on_running;
    /* Destroy the job from its END event. */
    bool destroy_on_end;
    atomic_int destroy_rc;
    atomic_int reentrant_pause_rc;
    atomic_int reentrant_info_rc;
};

static struct evlog *evlog_new(void)
{
    struct evlog *l = calloc(1, sizeof *l);
    if (!l)
        abort();
    pthread_mutex_init(&l->mu, NULL);
    atomic_init(&l->reentrant_pause_rc, -1);
    atomic_init(&l->reentrant_info_rc, -1);
    return l;
}

static void evlog_delete(struct evlog *l)
{
    pthread_mutex_destroy(&l->mu);
    free(l);
}

/* The event userdata: a token pointing at the log, so its free is counted. */
struct token {
    struct evlog *l;
};

static void token_free(void *p)
{
    struct token *t = p;
    atomic_fetch_add(&t->l->frees, 1);
    free(t);
}

static struct token *token_new(struct evlog *l)
{
    struct token *t = malloc(sizeof *t);
    if (!t)
        abort();
    t->l = l;
    return t;
}

static void on_event(void *ud, bgjob_job *job, const bgjob_event *ev)
{
    struct evlog *l = ((struct token *)ud)->l;
    if (atomic_load(&l->frees) != 0)
        atomic_fetch_add(&l->calls_after_free, 1);
    if (atomic_fetch_add(&l->inside, 1) != 0)
        atomic_fetch_add(&l->overlapped, 1);
    /* Every event may read its job: no bgjob lock is held here (a job lock
     * held would deadlock this call). */
    bgjob_info now;
    memset(&now, 0, sizeof now);
    now.struct_size = sizeof now;
    bgjob_result info_rc = bgjob_job_get_info(job, &now);
    if (info_rc != BGJOB_RESULT_OK && info_rc != BGJOB_RESULT_INVALID_HANDLE)
        atomic_fetch_add(&l->info_failures, 1);
    pthread_mutex_lock(&l->mu);
    if (l->n < LOG_CAP) {
        l->evs[l->n] = *ev;
        l->threads[l->n] = pthread_self();
        l->n++;
    }
    l->total++;
    pthread_mutex_unlock(&l->mu);
    if (l->pause_on_running && ev->kind == BGJOB_EVENT_KIND_STATE_CHANGED &&
        ev->old_state == BGJOB_STATE_CREATED && ev->new_state == BGJOB_STATE_RUNNING) {
        bgjob_info info;
        memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        atomic_store(&l->reentrant_info_rc, bgjob_job_get_info(job, &info));
        atomic_store(&l->reentrant_pause_rc, bgjob_job_pause(job));
    }
    if (l->destroy_on_end && ev->kind == BGJOB_EVENT_KIND_END)
        atomic_store(&l->destroy_rc, bgjob_job_destroy(job));
    atomic_fetch_sub(&l->inside, 1);
}

static void on_done(void *ud, bgjob_job *job, bgjob_state state)
{
    (void)job;
    (void)state;
    struct evlog *l = ud;
    pthread_mutex_lock(&l->mu);
    atomic_store(&l->events_at_completion, (int)l->total);
    atomic_store(&l->end_before_completion,
                 l->n > 0 && l->evs[l->n - 1].kind == BGJOB_EVENT_KIND_END);
    pthread_mutex_unlock(&l->mu);
    atomic_fetch_add(&l->completions, 1);
}

/* ---- workers ------------------------------------------------------------ */

struct work {
    atomic_bool go;
    int32_t io_error; /* report this I/O error once first (0: none) */
};

/* Pause points until `go`, then returns 0. */
static int32_t worker_until_go(void *ud, bgjob_job *job)
{
    struct work *w = ud;
    if (w->io_error != 0) {
        bgjob_error_action action;
        if (bgjob_job_report_io_error(job, w->io_error, "disk full", &action) != BGJOB_RESULT_OK)
            return 1;
    }
    while (!atomic_load(&w->go)) {
        if (bgjob_job_pause_point(job) != BGJOB_RESULT_OK)
            return WORKER_CANCELLED_RC;
        sleep_us(200);
    }
    return 0;
}

static bgjob_result create_job(struct evlog *l, struct work *w, bgjob_context *ctx, uint32_t flags,
                               bool completion, bgjob_job **out)
{
    bgjob_job_options o;
    if (bgjob_job_options_init(&o, sizeof o) != BGJOB_RESULT_OK)
        return BGJOB_RESULT_INVALID_ARGUMENT;
    o.flags = flags;
    o.context = ctx;
    o.event = on_event;
    o.event_userdata = token_new(l);
    o.event_free = token_free;
    if (completion) {
        o.completion = on_done;
        o.completion_userdata = l;
    }
    if (w->io_error != 0)
        o.error_policy = BGJOB_ERROR_POLICY_STOP;
    return bgjob_job_create(&o, worker_until_go, w, NULL, out);
}

/* Every check that holds for any event sequence of one job: seq strictly
 * increasing (by 1 + coalesced), each state change starting where the
 * previous one ended, END last and once. */
static bool sequence_ok(struct evlog *l)
{
    bool ok = true;
    int32_t state = BGJOB_STATE_CREATED;
    uint64_t seq = 0;
    size_t ends = 0;
    CHECK(l->n == l->total);
    for (size_t i = 0; i < l->n; i++) {
        const bgjob_event *e = &l->evs[i];
        CHECK_EQ(e->struct_size, sizeof(bgjob_event));
        CHECKF(e->seq == seq + 1 + e->coalesced, "event %zu: seq %llu after %llu (+%u)", i,
               (unsigned long long)e->seq, (unsigned long long)seq, e->coalesced);
        seq = e->seq;
        if (e->kind == BGJOB_EVENT_KIND_STATE_CHANGED) {
            CHECKF(e->old_state == state, "event %zu: old %d, previous new %d", i,
                   e->old_state, state);
            CHECK(e->new_state != e->old_state || e->coalesced > 0);
            state = e->new_state;
        } else {
            CHECK_EQ(e->coalesced, 0);
        }
        if (e->kind == BGJOB_EVENT_KIND_END) {
            ends++;
            CHECK_EQ(e->new_state, state);
            CHECK_EQ(i, l->n - 1);
        }
    }
    CHECK_EQ(ends, 1);
    CHECK_EQ(atomic_load(&l->overlapped), 0);
    CHECK_EQ(atomic_load(&l->info_failures), 0);
    return ok;
}

/* ---- cases -------------------------------------------------------------- */

static bool test_run_pause_resume_end(void)
{
    bool ok = true;
    struct evlog *l = evlog_new();
    struct work w = {.go = false};
    bgjob_job *job = NULL;
    REQUIRE(create_job(l, &w, NULL, 0, true, &job) == BGJOB_RESULT_OK);
    CHECK_EQ(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_EQ(bgjob_job_resume(job), BGJOB_RESULT_OK);
    atomic_store(&w.go, true);
    CHECK_EQ(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK(poll_int_eq(&l->completions, 1));
    static const int32_t want[][3] = {
        {BGJOB_EVENT_KIND_STATE_CHANGED, BGJOB_STATE_CREATED, BGJOB_STATE_RUNNING},
        {BGJOB_EVENT_KIND_STATE_CHANGED, BGJOB_STATE_RUNNING, BGJOB_STATE_PAUSED},
        {BGJOB_EVENT_KIND_STATE_CHANGED, BGJOB_STATE_PAUSED, BGJOB_STATE_RUNNING},
        {BGJOB_EVENT_KIND_STATE_CHANGED, BGJOB_STATE_RUNNING, BGJOB_STATE_WAITING},
        {BGJOB_EVENT_KIND_STATE_CHANGED, BGJOB_STATE_WAITING, BGJOB_STATE_COMPLETED},
        {BGJOB_EVENT_KIND_END, BGJOB_STATE_WAITING, BGJOB_STATE_COMPLETED},
    };
    CHECK_EQ(l->n, 6);
    for (size_t i = 0; i < 6 && i < l->n; i++) {
        CHECKF(l->evs[i].kind == want[i][0] && l->evs[i].old_state == want[i][1] &&
                   l->evs[i].new_state == want[i][2],
               "event %zu: kind %d %d -> %d", i, l->evs[i].kind, l->evs[i].old_state,
               l->evs[i].new_state);
        CHECK_EQ(l->evs[i].seq, i + 1);
    }
    /* The caller's verbs' events ran on the caller's thread, inside them
     * (no context); the end's on the worker thread. */
    pthread_t me = pthread_self();
    CHECK(l->n >= 3 && pthread_equal(l->threads[0], me) && pthread_equal(l->threads[1], me) &&
          pthread_equal(l->threads[2], me));
    CHECK(l->n == 6 && !pthread_equal(l->threads[5], me));
    CHECK(atomic_load(&l->end_before_completion));
    CHECK_EQ(atomic_load(&l->events_at_completion), 6);
    CHECK(sequence_ok(l));
    CHECK_EQ(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&l->frees), 1);
    CHECK_EQ(atomic_load(&l->calls_after_free), 0);
    evlog_delete(l);
    return ok;
}

static bool test_io_error_then_paused(void)
{
    bool ok = true;
    struct evlog *l = evlog_new();
    struct work w = {.go = false, .io_error = ENOSPC};
    bgjob_job *job = NULL;
    REQUIRE(create_job(l, &w, NULL, 0, true, &job) == BGJOB_RESULT_OK);
    CHECK(poll_state(job, BGJOB_STATE_PAUSED));
    CHECK_EQ(bgjob_job_resume(job), BGJOB_RESULT_OK);
    atomic_store(&w.go, true);
    CHECK_EQ(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK(poll_int_eq(&l->completions, 1));
    REQUIRE(l->n >= 4);
    CHECK_EQ(l->evs[1].kind, BGJOB_EVENT_KIND_IO_ERROR);
    CHECK_EQ(l->evs[1].action, BGJOB_ERROR_ACTION_STOP);
    CHECK_EQ(l->evs[1].error_code, ENOSPC);
    CHECK_EQ(l->evs[1].new_state, BGJOB_STATE_RUNNING);
    CHECK_EQ(l->evs[2].kind, BGJOB_EVENT_KIND_STATE_CHANGED);
    CHECK_EQ(l->evs[2].new_state, BGJOB_STATE_PAUSED);
    CHECK_EQ(l->evs[3].new_state, BGJOB_STATE_RUNNING);
    CHECK(sequence_ok(l));
    CHECK_EQ(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&l->frees), 1);
    evlog_delete(l);
    return ok;
}

struct racer {
    bgjob_job *job;
    int rounds;
    atomic_int *changes;
};

static void *race(void *p)
{
    struct racer *r = p;
    for (int i = 0; i < r->rounds; i++) {
        if (bgjob_job_pause(r->job) == BGJOB_RESULT_OK)
            atomic_fetch_add(r->changes, 1);
        if (bgjob_job_resume(r->job) == BGJOB_RESULT_OK)
            atomic_fetch_add(r->changes, 1);
    }
    return NULL;
}

/* Two threads race pause and resume: every change is seen once (merged ones
 * counted), in order, never two callbacks at once. */
static bool test_two_threads_race(void)
{
    bool ok = true;
    struct evlog *l = evlog_new();
    struct work w = {.go = false};
    bgjob_job *job = NULL;
    REQUIRE(create_job(l, &w, NULL, 0, true, &job) == BGJOB_RESULT_OK);
    atomic_int changes;
    atomic_init(&changes, 0);
    struct racer r = {.job = job, .rounds = 3000, .changes = &changes};
    pthread_t a, b;
    REQUIRE(pthread_create(&a, NULL, race, &r) == 0);
    REQUIRE(pthread_create(&b, NULL, race, &r) == 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    if (state_of(job) == BGJOB_STATE_PAUSED) {
        CHECK_EQ(bgjob_job_resume(job), BGJOB_RESULT_OK);
        atomic_fetch_add(&changes, 1);
    }
    atomic_store(&w.go, true);
    CHECK_EQ(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK(poll_int_eq(&l->completions, 1));
    CHECK(sequence_ok(l));
    /* start + the verbs' changes + RUNNING→WAITING→COMPLETED, each event
     * standing for 1 + coalesced changes; END counts one more. */
    long seen = 0;
    for (size_t i = 0; i < l->n; i++)
        if (l->evs[i].kind == BGJOB_EVENT_KIND_STATE_CHANGED)
            seen += 1 + l->evs[i].coalesced;
    CHECK_EQ(seen, atomic_load(&changes) + 3);
    CHECK(l->n > 0 && l->evs[l->n - 1].seq == (uint64_t)atomic_load(&changes) + 4);
    CHECK_EQ(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&l->frees), 1);
    CHECK_EQ(atomic_load(&l->calls_after_free), 0);
    evlog_delete(l);
    return ok;
}

static size_t dispatch_all(bgjob_context *ctx)
{
    size_t ran = 0, total = 0;
    do {
        ran = 0;
        if (bgjob_context_dispatch(ctx, 0, &ran) != BGJOB_RESULT_OK)
            break;
        total += ran;
    } while (ran > 0);
    return total;
}

/* Through a context: delivered only by dispatch, on the dispatching thread,
 * END before the completion. */
static bool test_context_end_before_completion(void)
{
    bool ok = true;
    bgjob_context *ctx = NULL;
    REQUIRE(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    struct evlog *l = evlog_new();
    struct work w = {.go = false};
    bgjob_job *job = NULL;
    REQUIRE(create_job(l, &w, ctx, 0, true, &job) == BGJOB_RESULT_OK);
    CHECK_EQ(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_EQ(bgjob_job_resume(job), BGJOB_RESULT_OK);
    atomic_store(&w.go, true);
    CHECK_EQ(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(l->total, 0); /* nobody dispatched yet */
    dispatch_all(ctx);
    CHECK_EQ(atomic_load(&l->completions), 1);
    CHECK(atomic_load(&l->end_before_completion));
    CHECK_EQ(atomic_load(&l->events_at_completion), 6);
    CHECK_EQ(l->n, 6);
    for (size_t i = 0; i < l->n; i++)
        CHECK(pthread_equal(l->threads[i], pthread_self()));
    CHECK(sequence_ok(l));
    CHECK_EQ(atomic_load(&l->frees), 1);
    CHECK_EQ(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(bgjob_context_destroy(ctx), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&l->frees), 1);
    evlog_delete(l);
    return ok;
}

/* Nobody dispatches for 10,000 pause/resume cycles: the job's queue stays
 * bounded; the merged events still add up to every change, the chain of
 * states is unbroken, and the last state before the end is RUNNING. */
static bool test_undispatched_is_bounded(void)
{
    bool ok = true;
    bgjob_context *ctx = NULL;
    REQUIRE(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    struct evlog *l = evlog_new();
    struct work w = {.go = false};
    bgjob_job *job = NULL;
    REQUIRE(create_job(l, &w, ctx, 0, false, &job) == BGJOB_RESULT_OK);
    for (int i = 0; i < 10000; i++) {
        CHECK_EQ(bgjob_job_pause(job), BGJOB_RESULT_OK);
        CHECK_EQ(bgjob_job_resume(job), BGJOB_RESULT_OK);
        if (!ok)
            break;
    }
    size_t pending = 0;
    CHECK_EQ(bgjob_context_pending(ctx, &pending), BGJOB_RESULT_OK);
    CHECK(pending <= 1); /* one drain for the job, however many events */
    CHECK_EQ(l->total, 0);
    dispatch_all(ctx);
    /* Bounded: at most the bound, merged events standing for the rest. */
    CHECK(l->n <= BGJOB_EVENT_QUEUE_BOUND);
    long seen = 0;
    for (size_t i = 0; i < l->n; i++)
        seen += 1 + l->evs[i].coalesced;
    CHECK_EQ(seen, 1 + 20000);
    REQUIRE(l->n >= 2);
    CHECK(l->evs[l->n - 1].coalesced > 0);
    /* The last state delivered is the job's state now: RUNNING. */
    CHECK_EQ(l->evs[l->n - 1].new_state, BGJOB_STATE_RUNNING);
    CHECK_EQ(l->evs[l->n - 1].seq, 1 + 20000);
    atomic_store(&w.go, true);
    CHECK_EQ(wait_end(job), BGJOB_STATE_COMPLETED);
    dispatch_all(ctx);
    CHECK(sequence_ok(l));
    REQUIRE(l->n >= 3);
    CHECK_EQ(l->evs[l->n - 1].kind, BGJOB_EVENT_KIND_END);
    CHECK_EQ(l->evs[l->n - 1].new_state, BGJOB_STATE_COMPLETED);
    CHECK_EQ(l->evs[l->n - 1].seq, 20000 + 4);
    CHECK_EQ(atomic_load(&l->frees), 1);
    CHECK_EQ(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(bgjob_context_destroy(ctx), BGJOB_RESULT_OK);
    evlog_delete(l);
    return ok;
}

/* Pausing from inside the RUNNING event: no deadlock; the PAUSED event
 * follows, after the callback returned, on the same thread. */
static bool reentrant_case(bool with_context)
{
    bool ok = true;
    bgjob_context *ctx = NULL;
    if (with_context)
        REQUIRE(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    struct evlog *l = evlog_new();
    l->pause_on_running = true;
    struct work w = {.go = false};
    bgjob_job *job = NULL;
    REQUIRE(create_job(l, &w, ctx, 0, true, &job) == BGJOB_RESULT_OK);
    if (with_context)
        dispatch_all(ctx);
    CHECK_EQ(atomic_load(&l->reentrant_pause_rc), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&l->reentrant_info_rc), BGJOB_RESULT_OK);
    CHECK_EQ(state_of(job), BGJOB_STATE_PAUSED);
    if (with_context)
        dispatch_all(ctx);
    CHECK(l->n >= 2 && l->evs[1].new_state == BGJOB_STATE_PAUSED);
    CHECK(l->n >= 2 && pthread_equal(l->threads[1], pthread_self()));
    CHECK_EQ(bgjob_job_resume(job), BGJOB_RESULT_OK);
    atomic_store(&w.go, true);
    CHECK_EQ(wait_end(job), BGJOB_STATE_COMPLETED);
    if (with_context)
        dispatch_all(ctx);
    CHECK(poll_int_eq(&l->completions, 1));
    CHECK(sequence_ok(l));
    CHECK_EQ(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    if (ctx)
        CHECK_EQ(bgjob_context_destroy(ctx), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&l->frees), 1);
    evlog_delete(l);
    return ok;
}

static bool test_reentrant_pause(void)
{
    return reentrant_case(false);
}

static bool test_reentrant_pause_context(void)
{
    return reentrant_case(true);
}

/* Destroying the job from its END event: allowed; the completion still
 * runs once (with the handle invalid), after it; the userdata freed once. */
static bool test_destroy_from_end(void)
{
    bool ok = true;
    struct evlog *l = evlog_new();
    l->destroy_on_end = true;
    atomic_init(&l->destroy_rc, -1);
    struct work w = {.go = true};
    bgjob_job *job = NULL;
    REQUIRE(create_job(l, &w, NULL, 0, true, &job) == BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&l->completions, 1));
    CHECK(poll_int_eq(&l->frees, 1));
    CHECK_EQ(atomic_load(&l->destroy_rc), BGJOB_RESULT_OK);
    CHECK(atomic_load(&l->end_before_completion));
    CHECK_EQ(bgjob_job_destroy(job), BGJOB_RESULT_INVALID_HANDLE);
    CHECK(sequence_ok(l));
    evlog_delete(l);
    return ok;
}

/* The event userdata is freed exactly once on every path. */
static bool test_free_exactly_once(void)
{
    bool ok = true;
    struct work w = {.go = true};

    /* A failed create (bad flags): freed before create returns. */
    struct evlog *l = evlog_new();
    bgjob_job *job = NULL;
    CHECK_EQ(create_job(l, &w, NULL, 0x40000000u, false, &job), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_EQ(atomic_load(&l->frees), 1);
    CHECK_EQ(l->total, 0);
    evlog_delete(l);

    /* A bad context handle. */
    l = evlog_new();
    CHECK_EQ(create_job(l, &w, (bgjob_context *)(uintptr_t)0x12345, 0, false, &job),
             BGJOB_RESULT_INVALID_HANDLE);
    CHECK_EQ(atomic_load(&l->frees), 1);
    evlog_delete(l);

    /* Never started, destroyed: CANCELLED and END delivered inside destroy,
     * then freed. */
    l = evlog_new();
    REQUIRE(create_job(l, &w, NULL, BGJOB_CREATE_DEFER_START, false, &job) == BGJOB_RESULT_OK);
    CHECK_EQ(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&l->frees, 1));
    CHECK(l->n >= 2 && l->evs[l->n - 1].kind == BGJOB_EVENT_KIND_END &&
          l->evs[l->n - 1].new_state == BGJOB_STATE_CANCELLED);
    CHECK(sequence_ok(l));
    CHECK_EQ(atomic_load(&l->calls_after_free), 0);
    evlog_delete(l);

    /* Its context destroyed with events undelivered: freed then, unrun. */
    bgjob_context *ctx = NULL;
    REQUIRE(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    l = evlog_new();
    struct work held = {.go = false};
    REQUIRE(create_job(l, &held, ctx, 0, false, &job) == BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&l->frees), 0);
    CHECK_EQ(bgjob_context_destroy(ctx), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&l->frees), 1);
    CHECK_EQ(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_EQ(bgjob_job_resume(job), BGJOB_RESULT_OK);
    atomic_store(&held.go, true);
    CHECK_EQ(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&l->frees), 1);
    CHECK_EQ(l->total, 0);
    evlog_delete(l);

    /* No event callback, but userdata with a free function: freed at once. */
    l = evlog_new();
    bgjob_job_options o;
    REQUIRE(bgjob_job_options_init(&o, sizeof o) == BGJOB_RESULT_OK);
    o.event_userdata = token_new(l);
    o.event_free = token_free;
    REQUIRE(bgjob_job_create(&o, worker_until_go, &w, NULL, &job) == BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&l->frees), 1);
    CHECK_EQ(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&l->frees), 1);
    evlog_delete(l);
    return ok;
}

/* A caller built against the options before the event fields (V1 size)
 * gets no events, and its job runs as before. */
static bool test_old_options_size(void)
{
    bool ok = true;
    bgjob_job_options o;
    size_t v1 = OPTIONS_V1_SIZE;
    REQUIRE(bgjob_job_options_init(&o, v1) == BGJOB_RESULT_OK);
    CHECK_EQ(o.struct_size, v1);
    struct work w = {.go = true};
    bgjob_job *job = NULL;
    REQUIRE(bgjob_job_create(&o, worker_until_go, &w, NULL, &job) == BGJOB_RESULT_OK);
    CHECK_EQ(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    /* A struct_size that cuts the event pointer in two: the field is not
     * half read (no call through a torn pointer); the event fields stay
     * the caller's. */
    struct evlog *l = evlog_new();
    struct token *t = token_new(l);
    REQUIRE(bgjob_job_options_init(&o, sizeof o) == BGJOB_RESULT_OK);
    o.event = on_event;
    o.event_userdata = t;
    o.event_free = token_free;
    o.struct_size = (uint32_t)(v1 + 4);
    REQUIRE(bgjob_job_create(&o, worker_until_go, &w, NULL, &job) == BGJOB_RESULT_OK);
    CHECK_EQ(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(l->total, 0);
    CHECK_EQ(atomic_load(&l->frees), 0);
    token_free(t);
    evlog_delete(l);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_run_pause_resume_end),
        TAP_TEST(test_io_error_then_paused),
        TAP_TEST(test_two_threads_race),
        TAP_TEST(test_context_end_before_completion),
        TAP_TEST(test_undispatched_is_bounded),
        TAP_TEST(test_reentrant_pause),
        TAP_TEST(test_reentrant_pause_context),
        TAP_TEST(test_destroy_from_end),
        TAP_TEST(test_free_exactly_once),
        TAP_TEST(test_old_options_size),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

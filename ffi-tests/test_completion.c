/* Completion callbacks, contexts, results and run-in-thread (QIOTask semantics). */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* ---- helpers ------------------------------------------------------------ */

static bool fd_readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

/* Set on a thread while it is inside a bgjob call that may end a job, so a
 * completion callback can tell whether it was run synchronously inside it. */
static _Thread_local bool inside_call;

/* What one job's callbacks saw. Counters are atomics: callbacks run on other
 * threads. */
struct record {
    atomic_int worker_frees;
    atomic_int done_calls;
    atomic_int done_frees;
    atomic_int done_inside_call;
    atomic_int done_state;
    pthread_t done_thread;
    pthread_t worker_thread;
    atomic_bool have_done_thread;
    atomic_bool release;  /* worker_held returns when set */
    int32_t worker_rc;
};

static void record_init(struct record *r, int32_t worker_rc)
{
    atomic_init(&r->worker_frees, 0);
    atomic_init(&r->done_calls, 0);
    atomic_init(&r->done_frees, 0);
    atomic_init(&r->done_inside_call, 0);
    atomic_init(&r->done_state, -1);
    atomic_init(&r->have_done_thread, false);
    atomic_init(&r->release, false);
    r->worker_rc = worker_rc;
}

/* The worker's and the completion's userdata are distinct objects pointing at
 * the record, so each free function is counted apart. */
struct ud {
    struct record *r;
    bool is_done;
};

static struct ud *rec_ud_new(struct record *r, bool is_done)
{
    struct ud *u = malloc(sizeof *u);
    if (!u)
        abort();
    u->r = r;
    u->is_done = is_done;
    return u;
}

static void rec_ud_free(void *p)
{
    struct ud *u = p;
    atomic_fetch_add(u->is_done ? &u->r->done_frees : &u->r->worker_frees, 1);
    free(u);
}

static int32_t worker_held(void *p, bgjob_job *job)
{
    struct ud *u = p;
    u->r->worker_thread = pthread_self();
    while (!atomic_load(&u->r->release)) {
        if (bgjob_job_check_cancel(job) == BGJOB_RESULT_CANCELLED)
            return 125;
        sleep_ms(1);
    }
    return u->r->worker_rc;
}

static int32_t worker_now(void *p, bgjob_job *job)
{
    struct ud *u = p;
    (void)job;
    u->r->worker_thread = pthread_self();
    return u->r->worker_rc;
}

static void on_done(void *p, bgjob_job *job, int32_t state)
{
    struct ud *u = p;
    (void)job;
    if (inside_call)
        atomic_fetch_add(&u->r->done_inside_call, 1);
    u->r->done_thread = pthread_self();
    atomic_store(&u->r->have_done_thread, true);
    atomic_store(&u->r->done_state, state);
    atomic_fetch_add(&u->r->done_calls, 1);
}

/* Creates a job with its completion through `ctx` (or on the worker thread
 * when NULL), with both userdata counted in `r`. */
static bgjob_result make_job(struct record *r, bgjob_context *ctx, bgjob_worker_callback worker,
                             uint32_t flags, bgjob_job **job)
{
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.flags = flags;
    o.completion = on_done;
    o.completion_userdata = rec_ud_new(r, true);
    o.completion_free = rec_ud_free;
    o.context = ctx;
    inside_call = true;
    bgjob_result rc = bgjob_job_create(&o, worker, rec_ud_new(r, false), rec_ud_free, job);
    inside_call = false;
    return rc;
}

/* Dispatches `ctx` until `done` reaches `want` or the time runs out. */
static bool dispatch_until(bgjob_context *ctx, atomic_int *done, int want, long timeout_ms)
{
    int fd;
    if (bgjob_context_get_fd(ctx, &fd) != BGJOB_RESULT_OK)
        return false;
    long long end = now_ms() + timeout_ms;
    while (atomic_load(done) < want && now_ms() < end) {
        if (fd_readable(fd, 50))
            bgjob_context_dispatch(ctx, 0, NULL);
    }
    return atomic_load(done) == want;
}

/* ---- tests -------------------------------------------------------------- */

static bool test_worker_thread_delivery(void)
{
    bool ok = true;
    struct record r;
    record_init(&r, 0);
    bgjob_job *job;
    CHECK(make_job(&r, NULL, worker_now, 0, &job) == BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&r.done_calls, 1));
    CHECK(poll_int_eq(&r.done_frees, 1));
    CHECK(atomic_load(&r.done_state) == BGJOB_STATE_COMPLETED);
    CHECK(pthread_equal(r.done_thread, r.worker_thread));
    CHECK(!pthread_equal(r.done_thread, pthread_self()));
    CHECK(atomic_load(&r.worker_frees) == 1);
    CHECK(atomic_load(&r.done_inside_call) == 0);
    sleep_ms(20);
    CHECK(atomic_load(&r.done_calls) == 1);
    CHECK(bgjob_job_destroy(job) == BGJOB_RESULT_OK);
    return ok;
}

static bool test_context_delivery_on_dispatching_thread(void)
{
    bool ok = true;
    bgjob_context *ctx;
    CHECK(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    int fd = -1;
    CHECK(bgjob_context_get_fd(ctx, &fd) == BGJOB_RESULT_OK);
    CHECK(!fd_readable(fd, 0));
    struct record r;
    record_init(&r, 0);
    bgjob_job *job;
    CHECK(make_job(&r, ctx, worker_now, 0, &job) == BGJOB_RESULT_OK);
    CHECK(bgjob_job_wait(job, 10000, NULL) == BGJOB_RESULT_OK);
    CHECK(fd_readable(fd, 10000));
    CHECK(atomic_load(&r.done_calls) == 0); /* nothing runs before dispatch */
    size_t ran = 99;
    CHECK(bgjob_context_dispatch(ctx, 0, &ran) == BGJOB_RESULT_OK);
    CHECK(ran == 1);
    CHECK(atomic_load(&r.done_calls) == 1);
    CHECK(atomic_load(&r.done_frees) == 1);
    CHECK(pthread_equal(r.done_thread, pthread_self()));
    CHECK(!fd_readable(fd, 0));
    CHECK(bgjob_context_dispatch(ctx, 0, &ran) == BGJOB_RESULT_OK); /* empty is harmless */
    CHECK(ran == 0);
    CHECK(bgjob_job_destroy(job) == BGJOB_RESULT_OK);
    CHECK(bgjob_context_destroy(ctx) == BGJOB_RESULT_OK);
    CHECK(bgjob_context_destroy(ctx) == BGJOB_RESULT_INVALID_HANDLE);
    return ok;
}

/* Every path: success, failure, cancel before start, destroy of a created job,
 * detach (cancelling), cancel while running. Each callback and each free runs
 * exactly once, never inside the call that ended the job. */
static bool test_exactly_once_in_every_path(void)
{
    bool ok = true;
    bgjob_context *ctx;
    CHECK(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    enum { SUCCESS, FAILURE, CANCEL_CREATED, DESTROY_CREATED, DETACH, CANCEL_RUNNING, N };
    struct record r[N];
    bgjob_job *job[N];
    for (int i = 0; i < N; i++)
        record_init(&r[i], i == FAILURE ? 5 : 0);
    CHECK(make_job(&r[SUCCESS], ctx, worker_now, 0, &job[SUCCESS]) == BGJOB_RESULT_OK);
    CHECK(make_job(&r[FAILURE], ctx, worker_now, 0, &job[FAILURE]) == BGJOB_RESULT_OK);
    CHECK(make_job(&r[CANCEL_CREATED], ctx, worker_now, BGJOB_CREATE_DEFER_START,
                   &job[CANCEL_CREATED]) == BGJOB_RESULT_OK);
    CHECK(make_job(&r[DESTROY_CREATED], ctx, worker_now, BGJOB_CREATE_DEFER_START,
                   &job[DESTROY_CREATED]) == BGJOB_RESULT_OK);
    CHECK(make_job(&r[DETACH], ctx, worker_held, 0, &job[DETACH]) == BGJOB_RESULT_OK);
    CHECK(make_job(&r[CANCEL_RUNNING], ctx, worker_held, 0, &job[CANCEL_RUNNING]) ==
          BGJOB_RESULT_OK);

    inside_call = true;
    CHECK(bgjob_job_cancel(job[CANCEL_CREATED], NULL) == BGJOB_RESULT_OK);
    CHECK(bgjob_job_destroy(job[DESTROY_CREATED]) == BGJOB_RESULT_OK);
    CHECK(bgjob_job_detach(job[DETACH], BGJOB_DETACH_CANCEL) == BGJOB_RESULT_OK);
    CHECK(bgjob_job_cancel(job[CANCEL_RUNNING], NULL) == BGJOB_RESULT_OK);
    inside_call = false;

    /* Sum the callbacks as they arrive on this thread. */
    long long end = now_ms() + 10000;
    int total = 0;
    while (total < N && now_ms() < end) {
        bgjob_context_dispatch(ctx, 0, NULL);
        total = 0;
        for (int i = 0; i < N; i++)
            total += atomic_load(&r[i].done_calls);
        sleep_ms(1);
    }
    int want_state[N] = {BGJOB_STATE_COMPLETED, BGJOB_STATE_FAILED, BGJOB_STATE_CANCELLED,
                         BGJOB_STATE_CANCELLED, BGJOB_STATE_CANCELLED, BGJOB_STATE_CANCELLED};
    for (int i = 0; i < N; i++) {
        CHECK(atomic_load(&r[i].done_calls) == 1);
        CHECK(atomic_load(&r[i].done_frees) == 1);
        CHECK(atomic_load(&r[i].worker_frees) == 1);
        CHECK(atomic_load(&r[i].done_inside_call) == 0);
        CHECK(atomic_load(&r[i].done_state) == want_state[i]);
        CHECK(pthread_equal(r[i].done_thread, pthread_self()));
        if (!ok)
            tap_diag("path %d", i);
    }
    CHECK(bgjob_job_destroy(job[SUCCESS]) == BGJOB_RESULT_OK);
    CHECK(bgjob_job_destroy(job[FAILURE]) == BGJOB_RESULT_OK);
    CHECK(bgjob_job_destroy(job[CANCEL_CREATED]) == BGJOB_RESULT_OK);
    CHECK(bgjob_job_destroy(job[CANCEL_RUNNING]) == BGJOB_RESULT_OK);
    CHECK(bgjob_context_destroy(ctx) == BGJOB_RESULT_OK);
    return ok;
}

/* Worker-thread delivery for a job that never ran: not inside cancel, not on
 * the cancelling thread. */
static bool test_never_started_job_delivers_off_the_cancelling_thread(void)
{
    bool ok = true;
    struct record r;
    record_init(&r, 0);
    bgjob_job *job;
    CHECK(make_job(&r, NULL, worker_now, BGJOB_CREATE_DEFER_START, &job) == BGJOB_RESULT_OK);
    inside_call = true;
    CHECK(bgjob_job_cancel(job, NULL) == BGJOB_RESULT_OK);
    inside_call = false;
    CHECK(poll_int_eq(&r.done_calls, 1));
    CHECK(poll_int_eq(&r.done_frees, 1));
    CHECK(atomic_load(&r.done_inside_call) == 0);
    CHECK(!pthread_equal(r.done_thread, pthread_self()));
    CHECK(atomic_load(&r.worker_frees) == 1);
    CHECK(atomic_load(&r.done_state) == BGJOB_STATE_CANCELLED);
    CHECK(bgjob_job_destroy(job) == BGJOB_RESULT_OK);
    return ok;
}

/* Destroying a context with queued callbacks and with jobs still bound to it:
 * no callback runs after that, and every free function still runs once. */
static bool test_context_destroyed_first(void)
{
    bool ok = true;
    bgjob_context *ctx;
    CHECK(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    struct record queued, bound;
    record_init(&queued, 0);
    record_init(&bound, 0);
    bgjob_job *jq, *jb;
    CHECK(make_job(&queued, ctx, worker_now, 0, &jq) == BGJOB_RESULT_OK);
    CHECK(make_job(&bound, ctx, worker_held, 0, &jb) == BGJOB_RESULT_OK);
    CHECK(bgjob_job_wait(jq, 10000, NULL) == BGJOB_RESULT_OK);
    size_t pending = 0;
    CHECK(bgjob_context_pending(ctx, &pending) == BGJOB_RESULT_OK);
    CHECK(pending == 1);
    CHECK(bgjob_context_destroy(ctx) == BGJOB_RESULT_OK);
    /* The queued completion was dropped unrun, its userdata freed now. */
    CHECK(atomic_load(&queued.done_calls) == 0);
    CHECK(atomic_load(&queued.done_frees) == 1);
    atomic_store(&bound.release, true);
    CHECK(bgjob_job_wait(jb, 10000, NULL) == BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&bound.done_frees, 1));
    CHECK(atomic_load(&bound.done_calls) == 0);
    CHECK(atomic_load(&bound.worker_frees) == 1);
    CHECK(bgjob_job_destroy(jq) == BGJOB_RESULT_OK);
    CHECK(bgjob_job_destroy(jb) == BGJOB_RESULT_OK);
    /* A destroyed context is refused when binding a new job. */
    struct record late;
    record_init(&late, 0);
    bgjob_job *jl = NULL;
    CHECK(make_job(&late, ctx, worker_now, 0, &jl) == BGJOB_RESULT_INVALID_HANDLE);
    CHECK(jl == NULL);
    CHECK(atomic_load(&late.done_frees) == 1 && atomic_load(&late.worker_frees) == 1);
    return ok;
}

/* 10,000 jobs complete on one context; nothing is lost, and many completions
 * between two dispatches make one readiness. */
static atomic_int many_done;
static atomic_int many_frees;

static int32_t many_worker(void *p, bgjob_job *job)
{
    (void)p;
    (void)job;
    return 0;
}

static void many_cb(void *p, bgjob_job *job, int32_t state)
{
    (void)job;
    if (state == BGJOB_STATE_COMPLETED && (uintptr_t)p == 0x1234)
        atomic_fetch_add(&many_done, 1);
}

static void many_free(void *p)
{
    (void)p;
    atomic_fetch_add(&many_frees, 1);
}

static bool test_ten_thousand_jobs_on_one_context(void)
{
    bool ok = true;
    enum { N = 10000 };
    bgjob_context *ctx;
    CHECK(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    atomic_store(&many_done, 0);
    atomic_store(&many_frees, 0);
    for (int i = 0; i < N && ok; i++)
        CHECK(bgjob_run_in_thread(ctx, "many", many_worker, NULL, many_free, many_cb,
                                  (void *)(uintptr_t)0x1234, many_free, NULL) == BGJOB_RESULT_OK);
    /* Let them all finish before the first dispatch: one readiness for all. */
    size_t pending = 0;
    long long end = now_ms() + 30000;
    while (pending < N && now_ms() < end) {
        bgjob_context_pending(ctx, &pending);
        sleep_ms(5);
    }
    CHECK(pending == N);
    int fd;
    bgjob_context_get_fd(ctx, &fd);
    CHECK(fd_readable(fd, 0));
    size_t ran = 0;
    CHECK(bgjob_context_dispatch(ctx, 0, &ran) == BGJOB_RESULT_OK);
    CHECK(ran == N);
    CHECK(!fd_readable(fd, 0));
    CHECK(atomic_load(&many_done) == N);
    CHECK(atomic_load(&many_frees) == 2 * N);
    /* Nobody kept the handles: they were released after their callbacks. */
    size_t live = 1;
    end = now_ms() + 10000;
    do {
        bgjob_list_jobs(NULL, 0, &live);
    } while (live != 0 && now_ms() < end && (sleep_ms(1), true));
    CHECK(live == 0);
    CHECK(bgjob_context_destroy(ctx) == BGJOB_RESULT_OK);
    return ok;
}

static bool test_dispatch_with_a_maximum(void)
{
    bool ok = true;
    bgjob_context *ctx;
    CHECK(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    struct record r[5];
    bgjob_job *job[5];
    for (int i = 0; i < 5; i++) {
        record_init(&r[i], 0);
        CHECK(make_job(&r[i], ctx, worker_now, 0, &job[i]) == BGJOB_RESULT_OK);
    }
    for (int i = 0; i < 5; i++)
        CHECK(bgjob_job_wait(job[i], 10000, NULL) == BGJOB_RESULT_OK);
    int fd;
    bgjob_context_get_fd(ctx, &fd);
    size_t ran = 0;
    CHECK(bgjob_context_dispatch(ctx, 2, &ran) == BGJOB_RESULT_OK && ran == 2);
    CHECK(fd_readable(fd, 0)); /* three still queued */
    CHECK(bgjob_context_dispatch(ctx, 2, &ran) == BGJOB_RESULT_OK && ran == 2);
    CHECK(bgjob_context_dispatch(ctx, 2, &ran) == BGJOB_RESULT_OK && ran == 1);
    CHECK(!fd_readable(fd, 0));
    int calls = 0;
    for (int i = 0; i < 5; i++) {
        calls += atomic_load(&r[i].done_calls);
        CHECK(bgjob_job_destroy(job[i]) == BGJOB_RESULT_OK);
    }
    CHECK(calls == 5);
    CHECK(bgjob_context_destroy(ctx) == BGJOB_RESULT_OK);
    return ok;
}

/* Inside a callback: destroy its own job, cancel and destroy a sibling, start a
 * new job, and try a nested dispatch (refused, no recursion). */
struct reentry {
    bgjob_context *ctx;
    bgjob_job *self;
    bgjob_job *sibling;
    struct record sibling_rec;
    struct record child_rec;
    bgjob_job *child;
    bgjob_result self_destroy, sibling_cancel, nested_dispatch, child_create;
    atomic_int calls;
};

static void reentry_cb(void *p, bgjob_job *job, int32_t state)
{
    struct reentry *re = p;
    (void)state;
    if (job != re->self)
        return;
    atomic_fetch_add(&re->calls, 1);
    re->self_destroy = bgjob_job_destroy(job);
    re->sibling_cancel = bgjob_job_cancel(re->sibling, NULL);
    re->nested_dispatch = bgjob_context_dispatch(re->ctx, 0, NULL);
    re->child_create = make_job(&re->child_rec, re->ctx, worker_now, 0, &re->child);
}

static bool test_reentrancy_inside_a_callback(void)
{
    bool ok = true;
    struct reentry re;
    atomic_init(&re.calls, 0);
    record_init(&re.sibling_rec, 0);
    record_init(&re.child_rec, 0);
    CHECK(bgjob_context_create(&re.ctx) == BGJOB_RESULT_OK);
    CHECK(make_job(&re.sibling_rec, NULL, worker_held, 0, &re.sibling) == BGJOB_RESULT_OK);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.completion = reentry_cb;
    o.completion_userdata = &re;
    o.context = re.ctx;
    struct record self_rec;
    record_init(&self_rec, 0);
    CHECK(bgjob_job_create(&o, worker_now, rec_ud_new(&self_rec, false), rec_ud_free, &re.self) ==
          BGJOB_RESULT_OK);
    CHECK(dispatch_until(re.ctx, &re.calls, 1, 10000));
    CHECK(re.self_destroy == BGJOB_RESULT_OK);
    CHECK(re.sibling_cancel == BGJOB_RESULT_OK);
    CHECK(re.nested_dispatch == BGJOB_RESULT_NOT_ALLOWED);
    CHECK(re.child_create == BGJOB_RESULT_OK);
    /* The handle destroyed inside its own callback is gone. */
    CHECK(bgjob_job_destroy(re.self) == BGJOB_RESULT_INVALID_HANDLE);
    CHECK(bgjob_job_wait(re.sibling, 10000, NULL) == BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&re.sibling_rec.done_calls, 1));
    CHECK(atomic_load(&re.sibling_rec.done_state) == BGJOB_STATE_CANCELLED);
    CHECK(dispatch_until(re.ctx, &re.child_rec.done_calls, 1, 10000));
    CHECK(atomic_load(&self_rec.worker_frees) == 1);
    CHECK(bgjob_job_destroy(re.sibling) == BGJOB_RESULT_OK);
    CHECK(bgjob_job_destroy(re.child) == BGJOB_RESULT_OK);
    CHECK(bgjob_context_destroy(re.ctx) == BGJOB_RESULT_OK);
    return ok;
}

/* Results: set by the worker, read after the end, taken (then not freed). */
static atomic_int result_frees;

static void result_free(void *p)
{
    free(p);
    atomic_fetch_add(&result_frees, 1);
}

static int32_t result_worker(void *p, bgjob_job *job)
{
    (void)p;
    int *first = malloc(sizeof *first), *second = malloc(sizeof *second);
    if (!first || !second)
        abort();
    *first = 1;
    *second = 2;
    bgjob_job_set_result(job, first, result_free);  /* replaced below: freed */
    bgjob_job_set_result(job, second, result_free);
    void *early = NULL;
    if (bgjob_job_get_result(job, &early) != BGJOB_RESULT_NOT_ALLOWED)
        return 1; /* reading before the end must be refused */
    return 0;
}

static bool test_results(void)
{
    bool ok = true;
    atomic_store(&result_frees, 0);
    bgjob_job *a, *b;
    CHECK(bgjob_job_create(NULL, result_worker, NULL, NULL, &a) == BGJOB_RESULT_OK);
    CHECK(bgjob_job_create(NULL, result_worker, NULL, NULL, &b) == BGJOB_RESULT_OK);
    int32_t st = -1;
    CHECK(bgjob_job_wait(a, 10000, &st) == BGJOB_RESULT_OK && st == BGJOB_STATE_COMPLETED);
    CHECK(bgjob_job_wait(b, 10000, &st) == BGJOB_RESULT_OK && st == BGJOB_STATE_COMPLETED);
    CHECK(atomic_load(&result_frees) == 2); /* each job's first result */
    void *r = NULL;
    CHECK(bgjob_job_get_result(a, &r) == BGJOB_RESULT_OK && r && *(int *)r == 2);
    CHECK(bgjob_job_get_result(a, NULL) == BGJOB_RESULT_INVALID_ARGUMENT);
    void *taken = NULL;
    CHECK(bgjob_job_take_result(b, &taken) == BGJOB_RESULT_OK && taken && *(int *)taken == 2);
    CHECK(bgjob_job_take_result(b, &r) == BGJOB_RESULT_OK && r == NULL);
    CHECK(bgjob_job_destroy(a) == BGJOB_RESULT_OK);
    CHECK(bgjob_job_destroy(b) == BGJOB_RESULT_OK);
    CHECK(atomic_load(&result_frees) == 3); /* a's result at destroy; b's was taken */
    free(taken);
    /* set_result on an ended job is refused and still frees the value. */
    int *late = malloc(sizeof *late);
    CHECK(bgjob_job_set_result(a, late, result_free) == BGJOB_RESULT_INVALID_HANDLE);
    CHECK(atomic_load(&result_frees) == 4);
    return ok;
}

/* A job's error reaches the callback through the job handle. */
struct err_seen {
    int32_t code;
    char msg[64];
    atomic_int calls;
};

static int32_t failing_worker(void *p, bgjob_job *job)
{
    (void)p;
    bgjob_job_set_error(job, 28, "no space left on device");
    return 28;
}

static void err_cb(void *p, bgjob_job *job, int32_t state)
{
    struct err_seen *e = p;
    (void)state;
    bgjob_job_get_error(job, &e->code, e->msg, sizeof e->msg, NULL);
    atomic_fetch_add(&e->calls, 1);
}

static bool test_error_reaches_the_callback(void)
{
    bool ok = true;
    struct err_seen e = {.code = 0};
    atomic_init(&e.calls, 0);
    bgjob_context *ctx;
    CHECK(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    CHECK(bgjob_run_in_thread(ctx, "fails", failing_worker, NULL, NULL, err_cb, &e, NULL, NULL) ==
          BGJOB_RESULT_OK);
    CHECK(dispatch_until(ctx, &e.calls, 1, 10000));
    CHECK(e.code == 28);
    CHECK(strcmp(e.msg, "no space left on device") == 0);
    CHECK(bgjob_context_destroy(ctx) == BGJOB_RESULT_OK);
    return ok;
}

static bool test_bad_arguments(void)
{
    bool ok = true;
    CHECK(bgjob_context_create(NULL) == BGJOB_RESULT_INVALID_ARGUMENT);
    int fd;
    size_t n;
    CHECK(bgjob_context_get_fd(NULL, &fd) == BGJOB_RESULT_INVALID_HANDLE);
    CHECK(bgjob_context_dispatch(NULL, 0, &n) == BGJOB_RESULT_INVALID_HANDLE);
    CHECK(bgjob_context_pending(NULL, &n) == BGJOB_RESULT_INVALID_HANDLE);
    CHECK(bgjob_context_destroy(NULL) == BGJOB_RESULT_INVALID_HANDLE);
    CHECK(bgjob_context_destroy((bgjob_context *)(uintptr_t)0xdeadbeef) ==
          BGJOB_RESULT_INVALID_HANDLE);
    bgjob_context *ctx;
    CHECK(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    CHECK(bgjob_context_get_fd(ctx, NULL) == BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK(bgjob_context_pending(ctx, NULL) == BGJOB_RESULT_INVALID_ARGUMENT);
    /* A context without a callback is refused; both userdata are still freed. */
    struct record r;
    record_init(&r, 0);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.context = ctx;
    o.completion_userdata = rec_ud_new(&r, true);
    o.completion_free = rec_ud_free;
    bgjob_job *job = NULL;
    CHECK(bgjob_job_create(&o, worker_now, rec_ud_new(&r, false), rec_ud_free, &job) ==
          BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK(job == NULL);
    CHECK(atomic_load(&r.done_frees) == 1 && atomic_load(&r.worker_frees) == 1);
    /* A NULL job_out still frees the completion userdata. */
    o.completion = on_done;
    o.completion_userdata = rec_ud_new(&r, true);
    CHECK(bgjob_job_create(&o, worker_now, rec_ud_new(&r, false), rec_ud_free, NULL) ==
          BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK(atomic_load(&r.done_frees) == 2 && atomic_load(&r.worker_frees) == 2);
    CHECK(bgjob_run_in_thread(ctx, NULL, NULL, rec_ud_new(&r, false), rec_ud_free, on_done,
                              rec_ud_new(&r, true), rec_ud_free, NULL) == BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK(atomic_load(&r.done_frees) == 3 && atomic_load(&r.worker_frees) == 3);
    CHECK(atomic_load(&r.done_calls) == 0);
    CHECK(bgjob_context_destroy(ctx) == BGJOB_RESULT_OK);
    return ok;
}

/* A name that is not UTF-8 is refused after bgjob owns both userdata, so both
 * are freed; a run-in-thread job with neither completion nor job_out runs
 * detached and leaves nothing behind. */
static atomic_int forget_ran;

static int32_t forget_worker(void *p, bgjob_job *job)
{
    (void)p;
    (void)job;
    atomic_fetch_add(&forget_ran, 1);
    return 0;
}

/* Whether a live job has this name. */
static bool job_named(const char *name)
{
    bgjob_job_entry entries[256];
    size_t n = 0;
    if (bgjob_list_jobs(entries, 256, &n) != BGJOB_RESULT_OK)
        return true;
    for (size_t i = 0; i < n && i < 256; i++)
        if (strcmp(entries[i].name, name) == 0)
            return true;
    return false;
}

static bool test_run_in_thread_edges(void)
{
    bool ok = true;
    struct record r;
    record_init(&r, 0);
    bgjob_context *ctx;
    CHECK(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    static const char bad_name[] = {'j', (char)0xff, 'b', 0};
    CHECK(bgjob_run_in_thread(ctx, bad_name, worker_now, rec_ud_new(&r, false), rec_ud_free, on_done,
                              rec_ud_new(&r, true), rec_ud_free, NULL) == BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK(atomic_load(&r.worker_frees) == 1);
    CHECK(atomic_load(&r.done_frees) == 1);

    atomic_store(&forget_ran, 0);
    CHECK(bgjob_run_in_thread(NULL, "forget-me", forget_worker, NULL, NULL, NULL, NULL, NULL,
                              NULL) == BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&forget_ran, 1));
    /* Nobody holds it: it must leave the list of live jobs by itself. */
    long long end = now_ms() + 10000;
    while (job_named("forget-me") && now_ms() < end)
        sleep_ms(1);
    CHECK(!job_named("forget-me"));
    CHECK(bgjob_context_destroy(ctx) == BGJOB_RESULT_OK);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_worker_thread_delivery),
        TAP_TEST(test_context_delivery_on_dispatching_thread),
        TAP_TEST(test_exactly_once_in_every_path),
        TAP_TEST(test_never_started_job_delivers_off_the_cancelling_thread),
        TAP_TEST(test_context_destroyed_first),
        TAP_TEST(test_ten_thousand_jobs_on_one_context),
        TAP_TEST(test_dispatch_with_a_maximum),
        TAP_TEST(test_reentrancy_inside_a_callback),
        TAP_TEST(test_results),
        TAP_TEST(test_error_reaches_the_callback),
        TAP_TEST(test_bad_arguments),
        TAP_TEST(test_run_in_thread_edges),
    };
    return tap_run(tests, TAP_COUNT(tests));
}

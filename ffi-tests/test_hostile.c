/*
 * test_hostile.c: callers that misuse bgjob on purpose. Each case does
 * something a careless (or hostile) program might, and checks that bgjob
 * answers with a clear result code, loses nothing, and never crashes or hangs:
 *
 * - numbers at the edges: an ETA of INT64_MAX, progress that saturates, a rate
 *   over a total of UINT64_MAX, negative and huge sleeps, an info struct that
 *   claims to be larger than bgjob's;
 * - pause and resume from eight threads at once, unbalanced;
 * - a worker that cancels, detaches or tries to destroy its own job;
 * - cancellation hooks that destroy, wait for, start or detach the job whose
 *   cancel is calling them;
 * - a worker that never looks at the cancel flag: cancel returns at once, a
 *   wait times out cleanly, and a detach frees it when it finally ends;
 * - a context whose fd the caller closed behind bgjob's back, and whose
 *   number was then reused for another file.
 *
 * NULL and stale handles for every export, double destroy and destroy while
 * running are test_handles.c's and test_destroy.c's; thread-start failure is
 * test_thread_start.c's; fork() while jobs run is test_hostile_fork.c's.
 *
 * Calls that could hang if bgjob were wrong run on a helper thread with a
 * bounded wait (run_bounded), so a hang fails its case instead of the file.
 */

#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- a call with a time limit ------------------------------------------------- */

static bool run_bounded(struct bounded *b, void *(*fn)(void *), void *arg)
{
    pthread_t th;

    return bounded_start(b, &th, fn, arg) && bounded_join(b, th, LONG_MS);
}

/* ---- numbers at the edges ------------------------------------------------------- */

struct edge_worker {
    struct gate go;        /* the test opens it once it has read what it needs */
    struct gate ready;     /* opened by the worker after its updates */
    atomic_int results[8]; /* results of the worker's calls */
};

static int32_t worker_eta_edges(void *userdata, bgjob_job *job)
{
    struct edge_worker *w = userdata;

    atomic_store(&w->results[0], bgjob_job_set_eta(job, INT64_MAX));
    atomic_store(&w->results[1], bgjob_job_set_eta(job, -2));
    atomic_store(&w->results[2], bgjob_job_set_eta(job, INT64_MIN));
    atomic_store(&w->results[3], bgjob_job_sleep(job, -2));
    atomic_store(&w->results[4], bgjob_job_sleep(job, INT64_MIN));
    atomic_store(&w->results[5], bgjob_job_sleep(job, 0));
    gate_open(&w->ready);
    gate_wait(&w->go);
    return 0;
}

/* A worker ETA of INT64_MAX counts down without overflowing, also across a
 * pause; out-of-range ETAs and sleeps are refused. */
static bool test_eta_and_sleep_edges(void)
{
    static struct edge_worker w;
    bool ok = true;
    bgjob_job *job = NULL;
    bgjob_info info;

    gate_init(&w.go);
    gate_init(&w.ready);
    CHECK_RC(bgjob_job_create(NULL, worker_eta_edges, &w, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    gate_wait(&w.ready);
    CHECK_RC(atomic_load(&w.results[0]), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&w.results[1]), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(atomic_load(&w.results[2]), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(atomic_load(&w.results[3]), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(atomic_load(&w.results[4]), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(atomic_load(&w.results[5]), BGJOB_RESULT_OK);
    for (int i = 0; i < 3; i++) {
        CHECK(info_of(job, &info));
        CHECKF(info.remaining_ms > INT64_MAX - 60000 && info.remaining_ms <= INT64_MAX,
               "remaining %" PRId64 " after an ETA of INT64_MAX", info.remaining_ms);
        CHECK(info.elapsed_ms >= 0);
        if (i == 0)
            CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
        if (i == 1)
            CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
        sleep_ms(2);
    }
    gate_open(&w.go);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK(info_of(job, &info));
    CHECK_EQ(info.remaining_ms, 0);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&w.go);
    gate_destroy(&w.ready);
    return ok;
}

static int32_t worker_saturate(void *userdata, bgjob_job *job)
{
    struct edge_worker *w = userdata;

    atomic_store(&w->results[0], bgjob_job_set_total(job, UINT64_MAX));
    atomic_store(&w->results[1], bgjob_job_add_units(job, 1));
    gate_open(&w->ready);
    gate_wait(&w->go);
    atomic_store(&w->results[2], bgjob_job_add_units(job, UINT64_MAX));
    atomic_store(&w->results[3], bgjob_job_add_units(job, UINT64_MAX));
    atomic_store(&w->results[4], bgjob_job_set_current(job, 0));
    atomic_store(&w->results[5], bgjob_job_set_total(job, 0));
    return 0;
}

/* One unit of UINT64_MAX: the library's own ETA is enormous but never
 * negative; adding UINT64_MAX twice saturates; going back is refused. */
static bool test_progress_saturates(void)
{
    static struct edge_worker w;
    bool ok = true;
    bgjob_job *job = NULL;
    bgjob_info info;

    gate_init(&w.go);
    gate_init(&w.ready);
    CHECK_RC(bgjob_job_create(NULL, worker_saturate, &w, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    gate_wait(&w.ready);
    sleep_ms(2); /* some active time, so there is a rate */
    CHECK(info_of(job, &info));
    CHECK_EQ(info.current, 1);
    CHECK(info.total == UINT64_MAX);
    CHECK_EQ(info.percent, 0);
    CHECKF(info.remaining_ms >= 0 || info.remaining_ms == -1,
           "remaining %" PRId64 " with 1 of UINT64_MAX done", info.remaining_ms);
    CHECK(info.rate > 0 || info.rate == -1);
    gate_open(&w.go);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&w.results[0]), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&w.results[1]), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&w.results[2]), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&w.results[3]), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&w.results[4]), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(atomic_load(&w.results[5]), BGJOB_RESULT_OK);
    CHECK(info_of(job, &info));
    CHECK(info.current == UINT64_MAX);
    CHECK_EQ(info.total, 0);
    CHECK_EQ(info.percent, 100);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&w.go);
    gate_destroy(&w.ready);
    return ok;
}

/* A caller whose bgjob_info is larger than bgjob's (built against a later
 * header) gets bgjob's fields and its own tail untouched; a dispatch with
 * max SIZE_MAX and a list with a huge capacity but no array are fine or
 * refused, never overrun. */
static bool test_oversized_structs_and_counts(void)
{
    bool ok = true;
    struct {
        bgjob_info info;
        unsigned char tail[64];
    } big;
    bgjob_job *job = NULL;
    bgjob_context *ctx = NULL;
    size_t n = 0;

    static struct tracker t;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    wait_end(job);
    memset(&big, 0xa5, sizeof big);
    big.info.struct_size = (uint32_t)sizeof big;
    CHECK_RC(bgjob_job_get_info(job, &big.info), BGJOB_RESULT_OK);
    CHECK_STATE(big.info.state, BGJOB_STATE_COMPLETED);
    for (size_t i = 0; i < sizeof big.tail; i++)
        CHECKF(big.tail[i] == 0xa5, "byte %zu past bgjob_info was written", i);
    big.info.struct_size = UINT32_MAX;
    CHECK_RC(bgjob_job_get_info(job, &big.info), BGJOB_RESULT_OK);
    for (size_t i = 0; i < sizeof big.tail; i++)
        CHECKF(big.tail[i] == 0xa5, "byte %zu past bgjob_info was written", i);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    CHECK_RC(bgjob_list_jobs(NULL, SIZE_MAX, &n), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_context_create(&ctx), BGJOB_RESULT_OK);
    REQUIRE(ctx != NULL);
    CHECK_RC(bgjob_context_dispatch(ctx, SIZE_MAX, &n), BGJOB_RESULT_OK);
    CHECK_EQ(n, 0);
    CHECK_RC(bgjob_context_destroy(ctx), BGJOB_RESULT_OK);
    return ok;
}

/* ---- pause and resume from many threads ------------------------------------- */

struct pauser {
    bgjob_job *job;
    unsigned seed;
    atomic_long *pauses;
    atomic_long *resumes;
    atomic_long *bad;
};

static void *pauser_main(void *p)
{
    struct pauser *a = p;

    for (int i = 0; i < 2000; i++) {
        bgjob_result r;
        if (rand_r(&a->seed) & 1) {
            r = bgjob_job_pause(a->job);
            if (r == BGJOB_RESULT_OK)
                atomic_fetch_add(a->pauses, 1);
        } else {
            r = bgjob_job_resume(a->job);
            if (r == BGJOB_RESULT_OK)
                atomic_fetch_add(a->resumes, 1);
        }
        if (r != BGJOB_RESULT_OK && r != BGJOB_RESULT_NOT_ALLOWED)
            atomic_fetch_add(a->bad, 1);
    }
    return NULL;
}

/* Eight threads pause and resume one job at random: every call is OK or
 * NOT_ALLOWED, the successes alternate (so they differ by at most one and the
 * job's pause flag says which came last), and the job still ends normally. */
static bool test_unbalanced_pause_resume_from_8_threads(void)
{
    static struct tracker t;
    bool ok = true;
    bgjob_job *job = NULL;
    atomic_long pauses = 0, resumes = 0, bad = 0;
    struct pauser p[8];
    pthread_t th[8];
    bgjob_info info;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_progress, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_NOT_ALLOWED);
    for (int i = 0; i < 8; i++) {
        p[i] = (struct pauser){ job, 7u * (unsigned)i + 1, &pauses, &resumes, &bad };
        REQUIRE(pthread_create(&th[i], NULL, pauser_main, &p[i]) == 0);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(atomic_load(&bad), 0);
    CHECK(info_of(job, &info));
    long diff = atomic_load(&pauses) - atomic_load(&resumes);
    CHECKF(diff == 0 || diff == 1, "%ld pauses, %ld resumes succeeded", atomic_load(&pauses),
           atomic_load(&resumes));
    CHECK_EQ(info.pause_requested, diff == 1);
    CHECK_STATE(info.state, diff == 1 ? BGJOB_STATE_PAUSED : BGJOB_STATE_RUNNING);
    tap_diag("%ld pauses and %ld resumes succeeded", atomic_load(&pauses), atomic_load(&resumes));
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* ---- workers that turn on their own job -------------------------------------------- */

struct self_ops {
    atomic_int cancel_rc, cancel_status, pause_point_rc, destroy_rc, wait_rc, detach_rc,
        after_detach_rc, frees;
};

static void self_free(void *p)
{
    atomic_fetch_add(&((struct self_ops *)p)->frees, 1);
}

static int32_t worker_cancels_itself(void *userdata, bgjob_job *job)
{
    struct self_ops *s = userdata;
    int32_t st = -1;

    atomic_store(&s->cancel_rc, bgjob_job_cancel(job, &st));
    atomic_store(&s->cancel_status, st);
    atomic_store(&s->pause_point_rc, bgjob_job_pause_point(job));
    atomic_store(&s->destroy_rc, bgjob_job_destroy(job));
    atomic_store(&s->wait_rc, bgjob_job_wait(job, 0, NULL));
    return WORKER_CANCELLED_RC;
}

/* A worker cancels its own job: the cancel is REQUESTED, its next pause point
 * says CANCELLED, destroying or waiting for itself is refused, and the job
 * ends CANCELLED. */
static bool test_worker_cancels_itself(void)
{
    static struct self_ops s;
    bool ok = true;
    bgjob_job *job = NULL;

    memset(&s, 0, sizeof s);
    CHECK_RC(bgjob_job_create(NULL, worker_cancels_itself, &s, self_free, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(atomic_load(&s.cancel_rc), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&s.cancel_status), BGJOB_CANCEL_STATUS_REQUESTED);
    CHECK_RC(atomic_load(&s.pause_point_rc), BGJOB_RESULT_CANCELLED);
    CHECK_RC(atomic_load(&s.destroy_rc), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(atomic_load(&s.wait_rc), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_EQ(atomic_load(&s.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static int32_t worker_detaches_itself(void *userdata, bgjob_job *job)
{
    struct self_ops *s = userdata;

    atomic_store(&s->detach_rc, bgjob_job_detach(job, 0));
    /* The header: the job's own worker may keep using the handle. */
    atomic_store(&s->after_detach_rc, bgjob_job_add_units(job, 1));
    return 0;
}

/* A worker detaches its own job: the caller's handle dies at once, the worker
 * carries on with it until it returns, and the job then frees itself. */
static bool test_worker_detaches_itself(void)
{
    static struct self_ops s;
    bool ok = true;
    bgjob_job *job = NULL;
    bgjob_job_options o;
    uint64_t id;

    memset(&s, 0, sizeof s);
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_DEFER_START;
    CHECK_RC(bgjob_job_create(&o, worker_detaches_itself, &s, self_free, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    id = id_of(job);
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    REQUIRE(poll_int_eq(&s.frees, 1));
    CHECK_RC(atomic_load(&s.detach_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&s.after_detach_rc), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_get_state(job, &(int32_t){ 0 }), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_INVALID_HANDLE);
    CHECK(poll_unlisted(id));
    return ok;
}

/* ---- hooks that turn on the cancel calling them ------------------------------------ */

struct hook_case {
    bgjob_job *job;
    int what; /* 0 destroy, 1 wait, 2 start, 3 detach, 4 remove itself */
    uint64_t id;
    atomic_int rc;
    atomic_int calls;
    atomic_int frees;
    struct tracker t;
};

static void hook_turns(void *userdata, bgjob_job *job)
{
    struct hook_case *h = userdata;
    int32_t rc = -1;

    atomic_fetch_add(&h->calls, 1);
    switch (h->what) {
    case 0:
        rc = bgjob_job_destroy(job);
        break;
    case 1:
        rc = bgjob_job_wait(job, -1, NULL);
        break;
    case 2:
        rc = bgjob_job_start(job);
        break;
    case 3:
        rc = bgjob_job_detach(job, 0);
        break;
    default:
        rc = bgjob_job_remove_cancel_hook(job, h->id);
        break;
    }
    atomic_store(&h->rc, rc);
}

static void hook_case_free(void *userdata)
{
    atomic_fetch_add(&((struct hook_case *)userdata)->frees, 1);
}

static void *cancel_it(void *arg)
{
    bgjob_job_cancel(((struct hook_case *)arg)->job, NULL);
    return NULL;
}

/* A job that never started is cancelled; its hook then destroys the job, waits
 * for it forever, starts it, detaches it or removes itself. None of these may
 * hang the cancel (the job can only end once the hooks are done), and the job
 * ends CANCELLED with its worker never run and every userdata freed once. */
static bool hook_on_created_job(int what, int32_t want_rc)
{
    static struct bounded b;
    static struct hook_case h;
    bool ok = true;
    bool destroyed;

    memset(&h, 0, sizeof h);
    tracker_init(&h.t);
    h.what = what;
    CHECK_RC(job_create(&h.t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED,
                        NULL, &h.job),
             BGJOB_RESULT_OK);
    REQUIRE(h.job != NULL);
    CHECK_RC(bgjob_job_add_cancel_hook(h.job, hook_turns, &h, hook_case_free, &h.id),
             BGJOB_RESULT_OK);
    if (!run_bounded(&b, cancel_it, &h)) {
        tap_diag("cancel did not return: its hook's call on the same job hangs");
        return false;
    }
    CHECK_EQ(atomic_load(&h.calls), 1);
    CHECK_RC(atomic_load(&h.rc), want_rc);
    CHECK_EQ(atomic_load(&h.frees), 1);
    CHECK_EQ(atomic_load(&h.t.runs), 0);
    CHECK(poll_int_eq(&h.t.frees, 1));
    destroyed = what == 0 && want_rc == BGJOB_RESULT_OK;
    if (!destroyed) {
        CHECK_STATE(wait_end(h.job), BGJOB_STATE_CANCELLED);
        CHECK_RC(bgjob_job_destroy(h.job), BGJOB_RESULT_OK);
    } else {
        CHECK_RC(bgjob_job_destroy(h.job), BGJOB_RESULT_INVALID_HANDLE);
    }
    return ok;
}

static bool test_hook_destroys_its_unstarted_job(void)
{
    return hook_on_created_job(0, BGJOB_RESULT_OK);
}

static bool test_hook_waits_for_its_unstarted_job(void)
{
    /* It could only end after this very hook returns: refused, like a worker
     * waiting for itself. */
    return hook_on_created_job(1, BGJOB_RESULT_NOT_ALLOWED);
}

static bool test_hook_starts_its_unstarted_job(void)
{
    return hook_on_created_job(2, BGJOB_RESULT_NOT_ALLOWED);
}

static bool test_hook_detaches_its_unstarted_job(void)
{
    return hook_on_created_job(3, BGJOB_RESULT_NOT_ALLOWED);
}

static bool test_hook_removes_itself_on_unstarted_job(void)
{
    return hook_on_created_job(4, BGJOB_RESULT_NOT_FOUND);
}

/* ---- a worker that never looks --------------------------------------------------------- */

struct deaf {
    atomic_int release;
    atomic_int frees;
    atomic_int returned;
};

static int32_t worker_deaf(void *userdata, bgjob_job *job)
{
    struct deaf *d = userdata;

    (void)job;
    while (!atomic_load(&d->release))
        sleep_us(500); /* no bgjob call at all: it cannot see a cancel */
    atomic_store(&d->returned, 1);
    return 0;
}

static void deaf_free(void *p)
{
    struct deaf *d = p;

    if (!atomic_load(&d->returned))
        tap_diag("the deaf worker's userdata was freed while it ran");
    atomic_fetch_add(&d->frees, 1);
}

static void *cancel_deaf(void *arg)
{
    int32_t st = -1;

    if (bgjob_job_cancel(arg, &st) != BGJOB_RESULT_OK || st != BGJOB_CANCEL_STATUS_REQUESTED)
        tap_diag("cancel of the deaf worker: status %d", st);
    return NULL;
}

/* Cancel returns at once though the worker never checks; a bounded wait times
 * out cleanly (again and again); detach gives the handle up; the job frees
 * itself when the worker finally returns, COMPLETED since it succeeded. */
static bool test_worker_never_checks_cancel(void)
{
    static struct deaf d;
    static struct bounded b;
    bool ok = true;
    bgjob_job *job = NULL;
    bgjob_info info;
    uint64_t id;

    memset(&d, 0, sizeof d);
    CHECK_RC(bgjob_job_create(NULL, worker_deaf, &d, deaf_free, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    id = id_of(job);
    REQUIRE(run_bounded(&b, cancel_deaf, job));
    for (int i = 0; i < 3; i++)
        CHECK_RC(bgjob_job_wait(job, 20, NULL), BGJOB_RESULT_TIMED_OUT);
    CHECK(info_of(job, &info));
    CHECK_STATE(info.state, BGJOB_STATE_RUNNING);
    CHECK(info.cancel_requested);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_detach(job, BGJOB_DETACH_CANCEL), BGJOB_RESULT_OK);
    CHECK(job_listed(id));
    CHECK_EQ(atomic_load(&d.frees), 0);
    atomic_store(&d.release, 1);
    CHECK(poll_int_eq(&d.frees, 1));
    CHECK(poll_unlisted(id));
    return ok;
}

/* ---- the context fd closed behind bgjob's back ----------------------------------------- */

static void count_completion(void *userdata, bgjob_job *job, int32_t state)
{
    (void)job;
    if (state == BGJOB_STATE_COMPLETED)
        atomic_fetch_add((atomic_int *)userdata, 1);
}

/* The caller closes the context's fd and the number is reused for a pipe.
 * Completions still reach dispatch, bgjob never writes its eventfd counter into
 * the pipe nor reads from it, and destroying the context does not close the
 * pipe that now has the number. */
static bool test_context_fd_closed_behind_its_back(void)
{
    bool ok = true;
    bgjob_context *ctx = NULL;
    bgjob_job *job = NULL;
    bgjob_job_options o;
    atomic_int done = 0;
    int32_t fd = -1;
    int p[2];
    size_t ran = 0;
    struct tracker t;

    tracker_init(&t);
    CHECK_RC(bgjob_context_create(&ctx), BGJOB_RESULT_OK);
    REQUIRE(ctx != NULL);
    CHECK_RC(bgjob_context_get_fd(ctx, &fd), BGJOB_RESULT_OK);
    REQUIRE(fd >= 0);
    REQUIRE(close(fd) == 0);
    /* The lowest free number is the one just closed: the pipe's read end. */
    REQUIRE(pipe(p) == 0);
    CHECKF(p[0] == fd, "the pipe got %d, not the closed %d (test premise)", p[0], fd);
    REQUIRE(fcntl(p[0], F_SETFL, O_NONBLOCK) == 0);

    bgjob_job_options_init(&o, sizeof o);
    o.context = ctx;
    o.completion = count_completion;
    o.completion_userdata = &done;
    CHECK_RC(bgjob_job_create(&o, worker_return, ud_new(&t), ud_free, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_context_dispatch(ctx, 0, &ran), BGJOB_RESULT_OK);
    CHECK_EQ(ran, 1);
    CHECK_EQ(atomic_load(&done), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    /* Nothing of bgjob's reached the pipe; our own byte is still there. */
    char c = 'x', got[16];
    CHECK(write(p[1], &c, 1) == 1);
    CHECK_RC(bgjob_context_destroy(ctx), BGJOB_RESULT_OK);
    ssize_t n = read(p[0], got, sizeof got);
    CHECKF(n == 1 && got[0] == 'x', "the pipe read %zd bytes after bgjob used its number", n);
    CHECKF(fcntl(p[0], F_GETFD) != -1, "destroying the context closed the pipe (errno %d)",
           errno);
    close(p[0]);
    close(p[1]);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_eta_and_sleep_edges),
        TAP_TEST(test_progress_saturates),
        TAP_TEST(test_oversized_structs_and_counts),
        TAP_TEST(test_unbalanced_pause_resume_from_8_threads),
        TAP_TEST(test_worker_cancels_itself),
        TAP_TEST(test_worker_detaches_itself),
        TAP_TEST(test_hook_destroys_its_unstarted_job),
        TAP_TEST(test_hook_waits_for_its_unstarted_job),
        TAP_TEST(test_hook_starts_its_unstarted_job),
        TAP_TEST(test_hook_detaches_its_unstarted_job),
        TAP_TEST(test_hook_removes_itself_on_unstarted_job),
        TAP_TEST(test_worker_never_checks_cancel),
        TAP_TEST(test_context_fd_closed_behind_its_back),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

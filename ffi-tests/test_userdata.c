/*
 * test_userdata.c: the userdata free function runs exactly once on every path,
 * after the last callback that uses the userdata: success, failure, cancel
 * while running, cancel before start, destroy of a CREATED job, detach (with
 * and without cancel), and every failed create (NULL worker or job_out, bad
 * options). The completion userdata follows the same rule. A free function may
 * call bgjob for other objects (no bgjob lock is held while it runs).
 */

#include "util.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* A live job the reentrant free function reads, and what it got. */
static bgjob_job *bystander;
static atomic_int reentrant_calls;
static atomic_int reentrant_bad;

/* A free function that calls back into bgjob (for other objects), then frees. */
static void ud_free_reentrant(void *userdata)
{
    size_t n = 0;
    int32_t s = -1;

    atomic_fetch_add(&reentrant_calls, 1);
    if (bgjob_list_jobs(NULL, 0, &n) != BGJOB_RESULT_OK || n == 0)
        atomic_fetch_add(&reentrant_bad, 1);
    if (bgjob_job_get_state(bystander, &s) != BGJOB_RESULT_OK || s != BGJOB_STATE_CREATED)
        atomic_fetch_add(&reentrant_bad, 1);
    ud_free(userdata);
}

static bgjob_free_callback free_fn = ud_free;

static bgjob_result create(struct tracker *t, bgjob_worker_callback w, uint32_t flags,
                           bgjob_job **out)
{
    bgjob_job_options o;

    bgjob_job_options_init(&o, sizeof o);
    o.flags = flags;
    return bgjob_job_create(&o, w, ud_new(t), free_fn, out);
}

/* Each path: make a job, take it down that path, check the free count. */

/* The job ends in `state` with its userdata freed once, after the worker
 * returned; destroying it frees nothing more. */
static bool ends_freed_once(bgjob_job *job, struct tracker *t, int32_t state)
{
    bool ok = true;

    CHECK_STATE(wait_end(job), state);
    CHECK_EQ(atomic_load(&t->frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t->frees), 1);
    CHECK_EQ(atomic_load(&t->free_early), 0);
    return ok;
}

static bool path_success(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;

    tracker_init(&t);
    CHECK_RC(create(&t, worker_return, 0, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(ends_freed_once(job, &t, BGJOB_STATE_COMPLETED));
    CHECK_EQ(atomic_load(&t.runs), 1);
    return ok;
}

static bool path_failure(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;

    tracker_init(&t);
    t.rc = 17;
    t.err_code = 17;
    t.err_msg = "exists";
    CHECK_RC(create(&t, worker_return, 0, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(ends_freed_once(job, &t, BGJOB_STATE_FAILED));
    return ok;
}

static bool path_cancel_running(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;

    tracker_init(&t);
    CHECK_RC(create(&t, worker_until_cancel, 0, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(poll_long_ge(&t.iterations, 1));
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK(ends_freed_once(job, &t, BGJOB_STATE_CANCELLED));
    return ok;
}

static bool path_cancel_before_start(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;

    tracker_init(&t);
    CHECK_RC(create(&t, worker_return, BGJOB_CREATE_DEFER_START, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_EQ(atomic_load(&t.frees), 0);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_EQ(atomic_load(&t.runs), 0);
    return ok;
}

static bool path_destroy_created(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;

    tracker_init(&t);
    CHECK_RC(create(&t, worker_return, BGJOB_CREATE_DEFER_START, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_EQ(atomic_load(&t.runs), 0);
    return ok;
}

static bool path_detach(uint32_t flags)
{
    /* Static: the job frees the token on its own thread, maybe after a failed
     * check has returned from this function. */
    static struct tracker t;
    static struct gate g;
    bool ok = true;
    bgjob_job *job = NULL;

    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    CHECK_RC(create(&t, worker_gated, 0, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_detach(job, flags), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 0);
    gate_open(&g);
    REQUIRE(poll_int_eq(&t.frees, 1));
    CHECK_EQ(atomic_load(&t.saw_cancel), flags & BGJOB_DETACH_CANCEL ? 1 : 0);
    CHECK_EQ(atomic_load(&t.free_early), 0);
    sleep_ms(10);
    CHECK_EQ(atomic_load(&t.frees), 1);
    gate_destroy(&g);
    return ok;
}

static bool path_detach_plain(void)
{
    return path_detach(0);
}

static bool path_detach_cancel(void)
{
    return path_detach(BGJOB_DETACH_CANCEL);
}

/* A failed create frees the userdata before it returns and leaves job_out. */
static bool failed_create(const char *what, const bgjob_job_options *o, bgjob_worker_callback w,
                          bool null_out, bgjob_result want)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = (bgjob_job *)&t;

    tracker_init(&t);
    CHECK_RC(bgjob_job_create(o, w, ud_new(&t), free_fn, null_out ? NULL : &job), want);
    CHECK(job == (bgjob_job *)&t);
    CHECK_EQ(atomic_load(&t.frees), 1);
    if (!ok)
        tap_diag("failed create: %s", what);
    return ok;
}

static bool path_failed_creates(void)
{
    bool ok = true;
    bgjob_job_options o;

    CHECK(failed_create("NULL worker", NULL, NULL, false, BGJOB_RESULT_INVALID_ARGUMENT));
    CHECK(failed_create("NULL job_out", NULL, worker_return, true, BGJOB_RESULT_INVALID_ARGUMENT));

    bgjob_job_options_init(&o, sizeof o);
    o.job_type = 2;
    CHECK(failed_create("job type 2", &o, worker_return, false, BGJOB_RESULT_INVALID_ARGUMENT));
    o.job_type = -1;
    CHECK(failed_create("job type -1", &o, worker_return, false, BGJOB_RESULT_INVALID_ARGUMENT));

    bgjob_job_options_init(&o, sizeof o);
    o.flags = 4;
    CHECK(failed_create("flag 4", &o, worker_return, false, BGJOB_RESULT_INVALID_ARGUMENT));
    o.flags = BGJOB_CREATE_DEFER_START | 0x80000000u;
    CHECK(failed_create("high flag", &o, worker_return, false, BGJOB_RESULT_INVALID_ARGUMENT));

    bgjob_job_options_init(&o, sizeof o);
    o.name = "not \xff utf-8";
    CHECK(failed_create("bad name", &o, worker_return, false, BGJOB_RESULT_INVALID_ARGUMENT));

    bgjob_job_options_init(&o, sizeof o);
    o.stack_size = (size_t)BGJOB_MAX_STACK_SIZE + 1;
    CHECK(failed_create("stack too big", &o, worker_return, false, BGJOB_RESULT_INVALID_ARGUMENT));
    o.stack_size = SIZE_MAX;
    CHECK(failed_create("stack SIZE_MAX", &o, worker_return, false,
                        BGJOB_RESULT_INVALID_ARGUMENT));

    bgjob_job_options_init(&o, sizeof o);
    o.struct_size = 0;
    CHECK(failed_create("struct_size 0", &o, worker_return, false, BGJOB_RESULT_INVALID_ARGUMENT));
    /* One byte short of the first version (which ended with finalize_free). */
    o.struct_size = offsetof(bgjob_job_options, finalize_free) + sizeof(bgjob_free_callback) - 1;
    CHECK(failed_create("struct_size one short", &o, worker_return, false,
                        BGJOB_RESULT_INVALID_ARGUMENT));

    /* Several things wrong at once: still one free. */
    bgjob_job_options_init(&o, sizeof o);
    o.flags = 4;
    o.job_type = 9;
    CHECK(failed_create("everything wrong", &o, NULL, true, BGJOB_RESULT_INVALID_ARGUMENT));
    return ok;
}

static void completion_count(void *userdata, bgjob_job *job, int32_t state)
{
    struct tracker *t = ud_tracker(userdata);

    (void)job;
    (void)state;
    atomic_fetch_add(&t->runs, 1);
    atomic_fetch_add(&t->returns, 1);
}

/* The completion userdata too: freed once after its callback, or once when a
 * create fails (as long as bgjob could read it). */
static bool path_completion_userdata(void)
{
    bool ok = true;
    bgjob_job_options o;

    /* Runs, then freed. */
    {
        struct tracker tw, tc;
        bgjob_job *job = NULL;

        tracker_init(&tw);
        tracker_init(&tc);
        bgjob_job_options_init(&o, sizeof o);
        o.completion = completion_count;
        o.completion_userdata = ud_new(&tc);
        o.completion_free = free_fn;
        CHECK_RC(bgjob_job_create(&o, worker_return, ud_new(&tw), free_fn, &job), BGJOB_RESULT_OK);
        REQUIRE(job != NULL);
        CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
        /* On the worker thread: it may still be running when wait returns. */
        CHECK(poll_int_eq(&tc.frees, 1));
        CHECK_EQ(atomic_load(&tc.runs), 1);
        CHECK_EQ(atomic_load(&tc.free_early), 0);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&tw.frees), 1);
        CHECK_EQ(atomic_load(&tc.frees), 1);
    }
    /* A failed create frees both. */
    {
        struct tracker tw, tc;
        bgjob_job *job = NULL;

        tracker_init(&tw);
        tracker_init(&tc);
        bgjob_job_options_init(&o, sizeof o);
        o.flags = 8;
        o.completion = completion_count;
        o.completion_userdata = ud_new(&tc);
        o.completion_free = free_fn;
        CHECK_RC(bgjob_job_create(&o, worker_return, ud_new(&tw), free_fn, &job),
                 BGJOB_RESULT_INVALID_ARGUMENT);
        CHECK(job == NULL);
        CHECK_EQ(atomic_load(&tw.frees), 1);
        CHECK_EQ(atomic_load(&tc.frees), 1);
        CHECK_EQ(atomic_load(&tc.runs), 0);
    }
    /* A context without a callback is refused; both freed. */
    {
        struct tracker tw, tc;
        bgjob_context *ctx = NULL;
        bgjob_job *job = NULL;

        tracker_init(&tw);
        tracker_init(&tc);
        CHECK_RC(bgjob_context_create(&ctx), BGJOB_RESULT_OK);
        REQUIRE(ctx != NULL);
        bgjob_job_options_init(&o, sizeof o);
        o.context = ctx;
        o.completion_userdata = ud_new(&tc);
        o.completion_free = free_fn;
        CHECK_RC(bgjob_job_create(&o, worker_return, ud_new(&tw), free_fn, &job),
                 BGJOB_RESULT_INVALID_ARGUMENT);
        CHECK(job == NULL);
        CHECK_EQ(atomic_load(&tw.frees), 1);
        CHECK_EQ(atomic_load(&tc.frees), 1);
        CHECK_RC(bgjob_context_destroy(ctx), BGJOB_RESULT_OK);
    }
    /* Never started, cancelled: the callback still runs once, then the free. */
    {
        struct tracker tw, tc;
        bgjob_job *job = NULL;

        tracker_init(&tw);
        tracker_init(&tc);
        bgjob_job_options_init(&o, sizeof o);
        o.flags = BGJOB_CREATE_DEFER_START;
        o.completion = completion_count;
        o.completion_userdata = ud_new(&tc);
        o.completion_free = free_fn;
        CHECK_RC(bgjob_job_create(&o, worker_return, ud_new(&tw), free_fn, &job), BGJOB_RESULT_OK);
        REQUIRE(job != NULL);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&tw.frees), 1);
        CHECK(poll_int_eq(&tc.frees, 1));
        CHECK_EQ(atomic_load(&tc.runs), 1);
        CHECK_EQ(atomic_load(&tw.runs), 0);
    }
    return ok;
}

typedef bool (*path_fn)(void);

static const struct {
    const char *name;
    path_fn fn;
} paths[] = {
    { "success", path_success },
    { "failure", path_failure },
    { "cancel while running", path_cancel_running },
    { "cancel before start", path_cancel_before_start },
    { "destroy while created", path_destroy_created },
    { "detach", path_detach_plain },
    { "detach with cancel", path_detach_cancel },
    { "failed creates", path_failed_creates },
    { "completion userdata", path_completion_userdata },
};

static bool run_paths(void)
{
    bool ok = true;

    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        CHECKF(paths[i].fn(), "path: %s", paths[i].name);
    return ok;
}

static bool test_every_path(void)
{
    bool ok = true;
    long bad = atomic_load(&util_bad_tokens);

    free_fn = ud_free;
    CHECK(run_paths());
    CHECK_EQ(atomic_load(&util_bad_tokens), bad);
    return ok;
}

/* The same paths with a free function that calls back into bgjob. A lock
 * held around the free would deadlock here (the watchdog ends the run). */
static bool test_every_path_reentrant_free(void)
{
    bool ok = true;
    struct tracker t;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED,
                        "bystander", &bystander),
             BGJOB_RESULT_OK);
    REQUIRE(bystander != NULL);
    free_fn = ud_free_reentrant;
    CHECK(run_paths());
    free_fn = ud_free;
    CHECK(atomic_load(&reentrant_calls) > 0);
    CHECK_EQ(atomic_load(&reentrant_bad), 0);
    CHECK_RC(bgjob_job_destroy(bystander), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_every_path),
        TAP_TEST(test_every_path_reentrant_free),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

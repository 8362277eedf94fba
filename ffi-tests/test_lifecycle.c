/*
 * test_lifecycle.c: a job reaches each terminal state (COMPLETED, FAILED with
 * its code and message, CANCELLED with its error; cancelling at each stage of
 * a job is test_cancel.c's), bgjob_job_finish overrides the worker's
 * return value, options and their defaults, thread names, ids, and the first
 * snapshot of a job.
 */

#include "util.h"

#include <stddef.h>

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool test_completed(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    bgjob_info info;
    int32_t code = -1;
    size_t len = 99;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&t.runs), 1);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_EQ(atomic_load(&t.free_early), 0);
    CHECK(atomic_load(&t.job_seen) == job);
    CHECK_STATE(state_of(job), BGJOB_STATE_COMPLETED);
    if (info_of(job, &info)) {
        CHECK_STATE(info.state, BGJOB_STATE_COMPLETED);
        CHECK_EQ(info.job_type, BGJOB_JOB_TYPE_BOUNDED);
        CHECK(!info.cancel_requested);
        CHECK(!info.pause_requested);
        CHECK_EQ(info.percent, 100);
        CHECK_EQ(info.remaining_ms, 0);
        CHECK_EQ(info.error_code, 0);
        CHECK(info.elapsed_ms >= 0);
        CHECK_EQ(info.id, id_of(job));
    } else {
        ok = false;
    }
    CHECK_RC(bgjob_job_get_error(job, &code, NULL, 0, &len), BGJOB_RESULT_OK);
    CHECK_EQ(code, 0);
    CHECK_EQ(len, 0);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

static bool test_failed_with_code_and_message(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    bgjob_info info;
    int32_t code = -1;
    char buf[64];
    size_t len = 0;

    tracker_init(&t);
    t.err_code = EIO;
    t.err_msg = "disk on fire";
    t.rc = EIO;
    CHECK_RC(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(bgjob_job_get_error(job, &code, buf, sizeof(buf), &len), BGJOB_RESULT_OK);
    CHECK_EQ(code, EIO);
    CHECK_STR(buf, "disk on fire");
    CHECK_EQ(len, strlen("disk on fire"));
    if (info_of(job, &info)) {
        CHECK_STATE(info.state, BGJOB_STATE_FAILED);
        CHECK_EQ(info.error_code, EIO);
        CHECK(!info.cancel_requested);
        CHECK_EQ(info.remaining_ms, 0);
    } else {
        ok = false;
    }
    CHECK_EQ(atomic_load(&t.runs), 1);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_EQ(atomic_load(&t.free_early), 0);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* A worker that returns a code without setting an error still fails with that
 * code, and gets a message. */
static bool test_failed_with_returned_code_only(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    int32_t code = -1;
    char buf[128];
    size_t len = 0;

    tracker_init(&t);
    t.rc = 42;
    CHECK_RC(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(bgjob_job_get_error(job, &code, buf, sizeof(buf), &len), BGJOB_RESULT_OK);
    CHECK_EQ(code, 42);
    CHECK(len > 0);
    CHECK_EQ(strlen(buf), len);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* A negative return code is a failure too. */
static bool test_failed_with_negative_code(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    int32_t code = 0;

    tracker_init(&t);
    t.rc = -EINVAL;
    CHECK_RC(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(bgjob_job_get_error(job, &code, NULL, 0, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(code, -EINVAL);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/*
 * bgjob.h, bgjob_job_get_error: a CANCELLED job has "the worker's [code], else
 * its return value, with the message "cancelled" by default". This worker sets
 * none: it sees the cancel at a pause point and returns non-zero (as a worker
 * must, or the job would be COMPLETED).
 */
static bool test_cancelled_error_defaults(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    bgjob_info info;
    int32_t code = -1;
    char buf[64] = "";

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_until_cancel, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(poll_long_ge(&t.iterations, 1));
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_get_error(job, &code, buf, sizeof(buf), NULL), BGJOB_RESULT_OK);
    CHECK_STR(buf, "cancelled");
    CHECKF(code == WORKER_CANCELLED_RC, "error code of a cancelled job whose worker set no "
                                        "error: %d (the worker returned %d)",
           code, WORKER_CANCELLED_RC);
    if (info_of(job, &info))
        CHECK_EQ(info.error_code, WORKER_CANCELLED_RC);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* A worker that saw the cancel and set its own error keeps it. */
static bool test_cancelled_keeps_worker_error(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    int32_t code = -1;
    char buf[64] = "";

    tracker_init(&t);
    t.err_code = ECANCELED;
    t.err_msg = "stopped by the user";
    CHECK_RC(job_create(&t, worker_until_cancel, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(poll_long_ge(&t.iterations, 1));
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_get_error(job, &code, buf, sizeof(buf), NULL), BGJOB_RESULT_OK);
    CHECK_EQ(code, ECANCELED);
    CHECK_STR(buf, "stopped by the user");
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* Runs a job whose worker calls finish as configured and returns `rc`;
 * returns the final state and the error code. */
static bool run_finish_case(int calls, int32_t first, int32_t last, int32_t rc,
                            int32_t want_state, int32_t want_code)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    int32_t code = -1;

    tracker_init(&t);
    t.finish_calls = calls;
    t.first_finish = first;
    t.finish_status = last;
    t.rc = rc;
    CHECK_RC(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), want_state);
    CHECK_RC(bgjob_job_get_error(job, &code, NULL, 0, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(code, want_code);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    if (!ok)
        tap_diag("finish case: %d call(s), first %d, last %d, worker returned %d", calls, first,
                 last, rc);
    return ok;
}

static bool test_finish_overrides_return_value(void)
{
    bool ok = true;

    /* finish(0), return 5: success wins. */
    CHECK(run_finish_case(1, 0, 0, 5, BGJOB_STATE_COMPLETED, 0));
    /* finish(7), return 0: fails with 7. */
    CHECK(run_finish_case(1, 0, 7, 0, BGJOB_STATE_FAILED, 7));
    /* finish(3) then finish(0), return 9: the last call wins. */
    CHECK(run_finish_case(2, 3, 0, 9, BGJOB_STATE_COMPLETED, 0));
    /* finish(0) then finish(11), return 0: the last call wins. */
    CHECK(run_finish_case(2, 0, 11, 0, BGJOB_STATE_FAILED, 11));
    return ok;
}

/* finish from another thread while the worker runs; refused before start and
 * after the end. */
static bool test_finish_from_caller(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    bgjob_job *job = NULL;
    int32_t code = -1;

    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    CHECK_RC(job_create(&t, worker_gated, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_finish(job, 0), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&t.runs, 1));
    CHECK_RC(bgjob_job_finish(job, 13), BGJOB_RESULT_OK);
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(bgjob_job_get_error(job, &code, NULL, 0, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(code, 13);
    CHECK_RC(bgjob_job_finish(job, 0), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_STATE(state_of(job), BGJOB_STATE_FAILED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

static bool test_options_defaults(void)
{
    bool ok = true;
    bgjob_job_options o;

    memset(&o, 0xa5, sizeof(o));
    CHECK_RC(bgjob_job_options_init(&o, sizeof o), BGJOB_RESULT_OK);
    CHECK_EQ(o.struct_size, sizeof(bgjob_job_options));
    CHECK_EQ(o.job_type, BGJOB_JOB_TYPE_BOUNDED);
    CHECK_EQ(o.flags, 0);
    CHECK(o.name == NULL);
    CHECK_EQ(o.stack_size, 0);
    CHECK(o.completion == NULL);
    CHECK(o.completion_userdata == NULL);
    CHECK(o.completion_free == NULL);
    CHECK(o.context == NULL);
    CHECK_RC(bgjob_job_options_init(NULL, sizeof(bgjob_job_options)), BGJOB_RESULT_INVALID_ARGUMENT);
    return ok;
}

/* NULL options: bounded, started at once, named job-<id>. */
static bool test_null_options(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    bgjob_info info;
    char name[64] = "", want[64];

    tracker_init(&t);
    CHECK_RC(bgjob_job_create(NULL, worker_return, ud_new(&t), ud_free, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&t.runs), 1);
    if (info_of(job, &info))
        CHECK_EQ(info.job_type, BGJOB_JOB_TYPE_BOUNDED);
    CHECK_RC(bgjob_job_get_name(job, name, sizeof(name), NULL), BGJOB_RESULT_OK);
    snprintf(want, sizeof(want), "job-%llu", (unsigned long long)id_of(job));
    CHECK_STR(name, want);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

static atomic_int null_runs;

static int32_t worker_return_null(void *userdata, bgjob_job *job)
{
    (void)job;
    if (userdata == NULL)
        atomic_fetch_add(&null_runs, 1);
    return 0;
}

/* A NULL free function is allowed, and so is NULL userdata. */
static bool test_null_userdata_and_free(void)
{
    bool ok = true;
    bgjob_job *job = NULL;

    CHECK_RC(bgjob_job_create(NULL, worker_return_null, NULL, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&null_runs), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

struct named {
    struct tracker t; /* first, so the token's tracker pointer is this struct */
    char thread_name[32];
    int name_rc;
};

static int32_t worker_thread_name(void *userdata, bgjob_job *job)
{
    struct named *n = (struct named *)ud_tracker(userdata);

    (void)job;
    atomic_fetch_add(&n->t.runs, 1);
    n->name_rc = pthread_getname_np(pthread_self(), n->thread_name, sizeof(n->thread_name));
    atomic_fetch_add(&n->t.returns, 1);
    return 0;
}

/* Each job's thread is named after the job (cut to 15 bytes), also when the
 * thread is an idle one reused from an earlier job. */
static bool test_thread_named_after_job(void)
{
    bool ok = true;
    static const char *const names[] = { "copy-disk-image-vda", "save", "migrate-dom-42", "x" };

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        struct named n;
        bgjob_job *job = NULL;
        char want[16];

        tracker_init(&n.t);
        memset(n.thread_name, 0, sizeof(n.thread_name));
        n.name_rc = -1;
        CHECK_RC(job_create(&n.t, worker_thread_name, 0, BGJOB_JOB_TYPE_BOUNDED, names[i], &job),
                 BGJOB_RESULT_OK);
        if (job == NULL)
            continue;
        CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
        snprintf(want, sizeof(want), "%s", names[i]);
        CHECK_EQ(n.name_rc, 0);
        CHECK_STR(n.thread_name, want);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&n.t.frees), 1);
    }
    return ok;
}

static bool test_ids_unique_and_increasing(void)
{
    bool ok = true;
    uint64_t prev = 0;

    for (int i = 0; i < 20; i++) {
        struct tracker t;
        bgjob_job *job = NULL;
        uint64_t id;

        tracker_init(&t);
        CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED,
                            NULL, &job),
                 BGJOB_RESULT_OK);
        if (job == NULL)
            continue;
        id = id_of(job);
        CHECKF(id > prev, "id %llu after %llu", (unsigned long long)id, (unsigned long long)prev);
        prev = id;
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&t.frees), 1);
        CHECK_EQ(atomic_load(&t.runs), 0);
    }
    return ok;
}

/* The first snapshot of a job that has not started. */
static bool test_info_of_created_job(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    bgjob_info info;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_UNBOUNDED, NULL,
                        &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    if (info_of(job, &info)) {
        CHECK_EQ(info.struct_size, sizeof(bgjob_info));
        CHECK_STATE(info.state, BGJOB_STATE_CREATED);
        CHECK_EQ(info.job_type, BGJOB_JOB_TYPE_UNBOUNDED);
        CHECK(!info.cancel_requested);
        CHECK(!info.pause_requested);
        CHECK_EQ(info.elapsed_ms, 0);
        CHECK_EQ(info.remaining_ms, -1);
        CHECK_EQ(info.percent, -1);
        CHECK_EQ(info.error_code, 0);
        CHECK_EQ(info.current, 0);
        CHECK_EQ(info.total, 0);
        CHECK(info.rate == -1.0);
        CHECK_EQ(info.since_progress_ms, -1);
        CHECK_EQ(info.id, id_of(job));
    } else {
        ok = false;
    }
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.runs), 0);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

/* bgjob_job_options_init writes no more than the size it is given: a smaller
 * size than the first version is refused untouched, a larger (newer) struct
 * gets this version's bytes and keeps its tail. */
static bool test_options_init_size(void)
{
    bool ok = true;
    struct {
        bgjob_job_options o;
        unsigned char tail[32];
    } big;
    memset(&big, 0xab, sizeof big);
    CHECK_RC(bgjob_job_options_init(&big.o, sizeof big), BGJOB_RESULT_OK);
    CHECK_EQ(big.o.struct_size, sizeof(bgjob_job_options));
    CHECK(big.o.name == NULL && big.o.flags == 0 && big.o.completion == NULL);
    for (size_t i = 0; i < sizeof big.tail; i++)
        CHECK(big.tail[i] == 0xab);
    bgjob_job_options small;
    memset(&small, 0xcd, sizeof small);
    CHECK_RC(bgjob_job_options_init(&small, OPTIONS_V1_SIZE - 1), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK(((unsigned char *)&small)[0] == 0xcd);
    /* A caller built against the first version: its size is accepted and
     * nothing past it is written. */
    CHECK_RC(bgjob_job_options_init(&small, OPTIONS_V1_SIZE), BGJOB_RESULT_OK);
    CHECK_EQ(small.struct_size, OPTIONS_V1_SIZE);
    CHECK(((unsigned char *)&small)[OPTIONS_V1_SIZE] == 0xcd);
    return ok;
}

/* struct_size: too small is refused; a larger (newer) struct gets no more than
 * this version's bytes written. */
static bool test_info_struct_size(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    struct {
        bgjob_info info;
        unsigned char tail[32];
    } big;
    bgjob_info small;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);

    memset(&small, 0x5a, sizeof(small));
    small.struct_size = 4;
    CHECK_RC(bgjob_job_get_info(job, &small), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_EQ(small.struct_size, 4);
    CHECK_EQ(small.state, 0x5a5a5a5a);
    small.struct_size = 0;
    CHECK_RC(bgjob_job_get_info(job, &small), BGJOB_RESULT_INVALID_ARGUMENT);

    memset(&big, 0x5a, sizeof(big));
    big.info.struct_size = sizeof(big);
    CHECK_RC(bgjob_job_get_info(job, &big.info), BGJOB_RESULT_OK);
    CHECK_STATE(big.info.state, BGJOB_STATE_CREATED);
    for (size_t i = 0; i < sizeof(big.tail); i++)
        CHECKF(big.tail[i] == 0x5a, "byte %zu after bgjob_info was written", i);

    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_stack_size(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    bgjob_job_options o;

    /* A small stack runs. */
    tracker_init(&t);
    CHECK_RC(bgjob_job_options_init(&o, sizeof o), BGJOB_RESULT_OK);
    o.stack_size = 256 * 1024;
    CHECK_RC(bgjob_job_create(&o, worker_return, ud_new(&t), ud_free, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&t.runs), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);

    /* The largest allowed is accepted (deferred: no 1 GiB thread is made). */
    tracker_init(&t);
    job = NULL;
    o.stack_size = BGJOB_MAX_STACK_SIZE;
    o.flags = BGJOB_CREATE_DEFER_START;
    CHECK_RC(bgjob_job_create(&o, worker_return, ud_new(&t), ud_free, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_EQ(atomic_load(&t.runs), 0);

    /* One byte more is refused; the userdata is freed before create returns. */
    tracker_init(&t);
    job = (bgjob_job *)&t;
    o.stack_size = (size_t)BGJOB_MAX_STACK_SIZE + 1;
    CHECK_RC(bgjob_job_create(&o, worker_return, ud_new(&t), ud_free, &job),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK(job == (bgjob_job *)&t);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_EQ(atomic_load(&t.runs), 0);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_completed),
        TAP_TEST(test_failed_with_code_and_message),
        TAP_TEST(test_failed_with_returned_code_only),
        TAP_TEST(test_failed_with_negative_code),
        TAP_TEST(test_cancelled_error_defaults),
        TAP_TEST(test_cancelled_keeps_worker_error),
        TAP_TEST(test_finish_overrides_return_value),
        TAP_TEST(test_finish_from_caller),
        TAP_TEST(test_options_defaults),
        TAP_TEST(test_null_options),
        TAP_TEST(test_null_userdata_and_free),
        TAP_TEST(test_thread_named_after_job),
        TAP_TEST(test_ids_unique_and_increasing),
        TAP_TEST(test_info_of_created_job),
        TAP_TEST(test_info_struct_size),
        TAP_TEST(test_options_init_size),
        TAP_TEST(test_stack_size),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

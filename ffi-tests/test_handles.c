/*
 * test_handles.c: every function of bgjob.h that takes a handle, called with a
 * NULL, destroyed, detached, stale (slot reused) and made-up handle, returns
 * BGJOB_RESULT_INVALID_HANDLE and writes none of its outputs; NULL out-pointers
 * get BGJOB_RESULT_INVALID_ARGUMENT where the header requires them; userdata
 * handed over in a refused call is still freed exactly once.
 *
 * test_every_header_function_covered reads include/bgjob.h and fails when it
 * declares a function this file does not know, so a function added to the
 * header cannot slip past the invalid-handle checks.
 */

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SENTINEL32 0x5eed5eed
#define SENTINEL64 0x5eed5eed5eed5eedull
#define SENTINEL_SIZE ((size_t)0x5eed5eed)

/* A cancel hook that must never be called: every registration here fails. */
static void hook_never(void *userdata, bgjob_job *job)
{
    (void)userdata;
    (void)job;
    abort();
}

/* Calls every job function (job_functions below) with `h`; each must return
 * INVALID_HANDLE and leave its outputs alone. */
static void expect_invalid_everywhere(bgjob_job *h, const char *what, bool *okp)
{
    bool ok = true;
    bgjob_info info;
    int32_t i32;
    uint64_t u64;
    size_t len;
    char buf[16];

#define CALL_INVALID(expr)                                                        \
    do {                                                                          \
        int32_t r_ = (int32_t)(expr);                                             \
        if (r_ != BGJOB_RESULT_INVALID_HANDLE) {                                  \
            tap_diag("%s handle: %s returned %d (%s), expected INVALID_HANDLE",   \
                     what, #expr, r_, bgjob_result_str(r_));                      \
            ok = false;                                                           \
        }                                                                         \
    } while (0)

    memset(&info, 0x5e, sizeof(info));
    info.struct_size = sizeof(info);
    CALL_INVALID(bgjob_job_get_info(h, &info));
    CHECK_EQ(info.state, 0x5e5e5e5e);
    CHECK_EQ(info.id, 0x5e5e5e5e5e5e5e5eull);

    i32 = SENTINEL32;
    CALL_INVALID(bgjob_job_get_state(h, &i32));
    CHECK_EQ(i32, SENTINEL32);

    u64 = SENTINEL64;
    CALL_INVALID(bgjob_job_get_id(h, &u64));
    CHECK(u64 == SENTINEL64);

    i32 = SENTINEL32;
    len = SENTINEL_SIZE;
    memset(buf, 'x', sizeof(buf));
    CALL_INVALID(bgjob_job_get_error(h, &i32, buf, sizeof(buf), &len));
    CHECK_EQ(i32, SENTINEL32);
    CHECK_EQ(len, SENTINEL_SIZE);
    CHECK(buf[0] == 'x');
    CALL_INVALID(bgjob_job_get_error(h, NULL, NULL, 0, NULL));

    len = SENTINEL_SIZE;
    CALL_INVALID(bgjob_job_get_phase(h, buf, sizeof(buf), &len));
    CHECK_EQ(len, SENTINEL_SIZE);
    CHECK(buf[0] == 'x');
    CALL_INVALID(bgjob_job_get_phase(h, NULL, 0, NULL));

    CALL_INVALID(bgjob_job_get_name(h, buf, sizeof(buf), &len));
    CHECK_EQ(len, SENTINEL_SIZE);
    CHECK(buf[0] == 'x');
    CALL_INVALID(bgjob_job_get_name(h, NULL, 0, NULL));

    CALL_INVALID(bgjob_job_start(h));

    i32 = SENTINEL32;
    CALL_INVALID(bgjob_job_cancel(h, &i32));
    CHECK_EQ(i32, SENTINEL32);
    CALL_INVALID(bgjob_job_cancel(h, NULL));

    CALL_INVALID(bgjob_job_pause(h));
    CALL_INVALID(bgjob_job_resume(h));

    i32 = SENTINEL32;
    CALL_INVALID(bgjob_job_wait(h, 0, &i32));
    CHECK_EQ(i32, SENTINEL32);
    CALL_INVALID(bgjob_job_wait(h, 10, NULL));

    CALL_INVALID(bgjob_job_detach(h, 0));
    CALL_INVALID(bgjob_job_detach(h, BGJOB_DETACH_CANCEL));
    CALL_INVALID(bgjob_job_ref(h, &(bgjob_job *){NULL}));

    CALL_INVALID(bgjob_job_check_cancel(h));
    CALL_INVALID(bgjob_job_pause_point(h));
    CALL_INVALID(bgjob_job_set_total(h, 10));
    CALL_INVALID(bgjob_job_set_current(h, 5));
    CALL_INVALID(bgjob_job_add_units(h, 1));
    CALL_INVALID(bgjob_job_set_percent(h, 50));
    CALL_INVALID(bgjob_job_set_eta(h, 1000));
    CALL_INVALID(bgjob_job_set_phase(h, "phase"));
    CALL_INVALID(bgjob_job_set_error(h, 5, "message"));
    CALL_INVALID(bgjob_job_set_error(h, 5, NULL));
    CALL_INVALID(bgjob_job_finish(h, 0));

    {
        /* The result passes to bgjob even when the call fails: freed at once. */
        struct tracker rt;
        void *res = (void *)&rt;

        tracker_init(&rt);
        CALL_INVALID(bgjob_job_set_result(h, ud_new(&rt), ud_free));
        CHECK_EQ(atomic_load(&rt.frees), 1);
        CALL_INVALID(bgjob_job_set_result(h, NULL, NULL));
        CALL_INVALID(bgjob_job_get_result(h, &res));
        CHECK(res == (void *)&rt);
        CALL_INVALID(bgjob_job_take_result(h, &res));
        CHECK(res == (void *)&rt);
    }

    {
        /* A hook's userdata passes to bgjob even when the call fails. */
        struct tracker ht;
        uint64_t id = SENTINEL64;

        tracker_init(&ht);
        CALL_INVALID(bgjob_job_add_cancel_hook(h, hook_never, ud_new(&ht), ud_free, &id));
        CHECK_EQ(atomic_load(&ht.frees), 1);
        CHECK(id == SENTINEL64);
        CALL_INVALID(bgjob_job_remove_cancel_hook(h, 1));
        CALL_INVALID(bgjob_job_sleep(h, 0));
        CALL_INVALID(bgjob_job_sleep(h, INT64_MAX));
    }

    i32 = SENTINEL32;
    CALL_INVALID(bgjob_job_get_wake_fd(h, &i32));
    CHECK_EQ(i32, SENTINEL32);
    {
        uint32_t rev = SENTINEL32;
        CALL_INVALID(bgjob_job_wait_fd(h, 0, BGJOB_FD_READABLE, 0, &rev));
        CHECK_EQ(rev, (uint32_t)SENTINEL32);
    }
    CALL_INVALID(bgjob_job_set_deadline(h, 10));
    {
        /* The line callback's userdata passes to bgjob even when the call fails. */
        struct tracker lt;
        const char *argv[] = {"true", NULL};
        bgjob_child_options co;

        tracker_init(&lt);
        CHECK_RC(bgjob_child_options_init(&co, sizeof co), BGJOB_RESULT_OK);
        co.argv = argv;
        co.line_userdata = ud_new(&lt);
        co.line_free = ud_free;
        i32 = SENTINEL32;
        CALL_INVALID(bgjob_job_spawn_child(h, &co, &i32));
        CHECK_EQ(i32, SENTINEL32);
        CHECK_EQ(atomic_load(&lt.frees), 1);
    }
    CALL_INVALID(bgjob_job_watch_child(h, 1, 0));
    CALL_INVALID(bgjob_job_end(h, 0, NULL));
    CALL_INVALID(bgjob_job_set_speed(h, 1));
    {
        uint64_t speed = SENTINEL64;
        CALL_INVALID(bgjob_job_get_speed(h, &speed));
        CHECK_EQ(speed, SENTINEL64);
    }
    CALL_INVALID(bgjob_job_finalize(h));
    CALL_INVALID(bgjob_job_pause_internal(h));
    CALL_INVALID(bgjob_job_resume_internal(h));
    CALL_INVALID(bgjob_job_set_error_policy(h, BGJOB_ERROR_POLICY_STOP));
    i32 = SENTINEL32;
    CALL_INVALID(bgjob_job_report_io_error(h, 5, "x", &i32));
    CHECK_EQ(i32, SENTINEL32);
    CALL_INVALID(bgjob_job_set_ready(h));
    CALL_INVALID(bgjob_job_complete(h));
    CALL_INVALID(bgjob_job_report_state(h, BGJOB_STATE_PENDING));
    CALL_INVALID(bgjob_job_control_failed(h, BGJOB_CONTROL_PAUSE, 5, "x"));
    i32 = SENTINEL32;
    CALL_INVALID(bgjob_job_wait_state(h, BGJOB_STATE_READY, 0, &i32));
    CHECK_EQ(i32, SENTINEL32);
    {
        bool found = true;
        CALL_INVALID(bgjob_job_get_control_error(h, &found, NULL, NULL, NULL, 0, NULL));
        CHECK(found);
    }
    {
        bool flag = true;
        CALL_INVALID(bgjob_job_complete_requested(h, &flag));
        CHECK(flag);
        CALL_INVALID(bgjob_job_cancel_is_soft(h, &flag));
        CHECK(flag);
        i32 = SENTINEL32;
        CALL_INVALID(bgjob_job_cancel_soft(h, &i32));
        CHECK_EQ(i32, SENTINEL32);
        CALL_INVALID(bgjob_job_cancel_soft(h, NULL));
    }
    {
        bgjob_txn *txn = NULL;
        CHECK_RC(bgjob_txn_create(0, &txn), BGJOB_RESULT_OK);
        CALL_INVALID(bgjob_txn_add(txn, h));
        CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
    }
    i32 = SENTINEL32;
    CALL_INVALID(bgjob_job_wait_child(h, 1, 0, &i32));
    CHECK_EQ(i32, SENTINEL32);
    {
        /* Statistics, operation and owner. */
        uint32_t u32 = SENTINEL32;
        char sbuf[8] = "zzzzzzz";
        bgjob_stat st;
        bgjob_stat_update su = {.index = 0, .value.u64 = 1};
        size_t sn = SENTINEL_SIZE;
        CALL_INVALID(bgjob_job_add_stat(h, "s", BGJOB_STAT_TYPE_U64, NULL, &u32));
        CHECK_EQ(u32, SENTINEL32);
        CALL_INVALID(bgjob_job_set_stat_u64(h, 0, 1));
        CALL_INVALID(bgjob_job_set_stat_i64(h, 0, 1));
        CALL_INVALID(bgjob_job_set_stat_double(h, 0, 1.0));
        CALL_INVALID(bgjob_job_set_stat_string(h, 0, "x"));
        CALL_INVALID(bgjob_job_set_stats(h, &su, 1));
        CALL_INVALID(bgjob_job_get_stats(h, NULL, &st, 1, &sn));
        CHECK_EQ(sn, SENTINEL_SIZE);
        CALL_INVALID(bgjob_job_get_operation(h, sbuf, sizeof sbuf, &sn));
        CALL_INVALID(bgjob_job_get_owner(h, sbuf, sizeof sbuf, &sn));
        CHECK_EQ(sn, SENTINEL_SIZE);
        CHECK_STR(sbuf, "zzzzzzz");
    }

    CALL_INVALID(bgjob_job_destroy(h));

#undef CALL_INVALID
    if (!ok)
        *okp = false;
}

static atomic_int completions_run;

static void completion_count(void *userdata, bgjob_job *job, int32_t state)
{
    struct tracker *t = ud_tracker(userdata);

    (void)job;
    (void)state;
    atomic_fetch_add(&t->runs, 1);
    atomic_fetch_add(&completions_run, 1);
    atomic_fetch_add(&t->returns, 1);
}

/* Calls every context function with `c`; each must return INVALID_HANDLE, leave
 * its outputs alone, and free what it was given. A NULL context is valid for
 * bgjob_run_in_thread and job options (no context), so those are only called
 * with non-NULL values. */
static void expect_invalid_context_everywhere(bgjob_context *c, const char *what, bool *okp)
{
    bool ok = true;
    int32_t fd = SENTINEL32;
    size_t n = SENTINEL_SIZE;

#define CALL_INVALID(expr)                                                        \
    do {                                                                          \
        int32_t r_ = (int32_t)(expr);                                             \
        if (r_ != BGJOB_RESULT_INVALID_HANDLE) {                                  \
            tap_diag("%s context: %s returned %d (%s), expected INVALID_HANDLE",  \
                     what, #expr, r_, bgjob_result_str(r_));                      \
            ok = false;                                                           \
        }                                                                         \
    } while (0)

    CALL_INVALID(bgjob_context_get_fd(c, &fd));
    CHECK_EQ(fd, SENTINEL32);
    CALL_INVALID(bgjob_context_dispatch(c, 0, &n));
    CALL_INVALID(bgjob_context_dispatch(c, 1, NULL));
    CHECK_EQ(n, SENTINEL_SIZE);
    CALL_INVALID(bgjob_context_pending(c, &n));
    CHECK_EQ(n, SENTINEL_SIZE);
    if (c != NULL) {
        struct tracker tw, tc;
        bgjob_job *job = (bgjob_job *)&tw;
        bgjob_job_options o;

        tracker_init(&tw);
        tracker_init(&tc);
        CALL_INVALID(bgjob_run_in_thread(c, "bad-context", worker_return, ud_new(&tw), ud_free,
                                         completion_count, ud_new(&tc), ud_free, &job));
        CHECK(job == (bgjob_job *)&tw);
        CALL_INVALID(bgjob_run_in_thread(c, NULL, worker_return, ud_new(&tw), ud_free,
                                         completion_count, ud_new(&tc), ud_free, NULL));
        CHECK_EQ(atomic_load(&tw.frees), 2);
        CHECK_EQ(atomic_load(&tc.frees), 2);

        CHECK_RC(bgjob_job_options_init(&o, sizeof o), BGJOB_RESULT_OK);
        o.completion = completion_count;
        o.completion_userdata = ud_new(&tc);
        o.completion_free = ud_free;
        o.context = c;
        CALL_INVALID(bgjob_job_create(&o, worker_return, ud_new(&tw), ud_free, &job));
        CHECK(job == (bgjob_job *)&tw);
        CHECK_EQ(atomic_load(&tw.frees), 3);
        CHECK_EQ(atomic_load(&tc.frees), 3);
        sleep_ms(10);
        CHECK_EQ(atomic_load(&tw.runs), 0);
        CHECK_EQ(atomic_load(&tc.runs), 0);
    }
    CALL_INVALID(bgjob_context_destroy(c));
#undef CALL_INVALID
    if (!ok)
        *okp = false;
}

/*
 * Job and context handles live in separate tables with the same encoding; a
 * handle of one type used as the other is a made-up handle of that type and
 * must get INVALID_HANDLE, not reach an unrelated object that happens to sit
 * in the same slot. This runs first, in a process that has made no job and no
 * context yet, so the first job and the first context take the same slot.
 */
static bool test_job_and_context_handles_distinct(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    bgjob_context *ctx = NULL;
    int32_t s = SENTINEL32;
    size_t n = SENTINEL_SIZE;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_context_create(&ctx), BGJOB_RESULT_OK);
    REQUIRE(ctx != NULL);
    if ((uintptr_t)ctx == (uintptr_t)job)
        tap_diag("the first job and the first context have the same handle value %#llx",
                 (unsigned long long)(uintptr_t)job);
    CHECK_RC(bgjob_job_get_state((bgjob_job *)ctx, &s), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_EQ(s, SENTINEL32);
    CHECK_RC(bgjob_context_pending((bgjob_context *)job, &n), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_EQ(n, SENTINEL_SIZE);
    /* Destroying "the job" through the context's value must not touch the job. */
    CHECK_RC(bgjob_job_destroy((bgjob_job *)ctx), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_context_destroy((bgjob_context *)job), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_EQ(atomic_load(&t.frees), 0);
    /* Clean up whatever is still live. */
    if (bgjob_job_get_state(job, &s) == BGJOB_RESULT_OK)
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    if (bgjob_context_pending(ctx, &n) == BGJOB_RESULT_OK)
        CHECK_RC(bgjob_context_destroy(ctx), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

static bool test_invalid_contexts(void)
{
    bool ok = true;
    bgjob_context *ctx = NULL, *fresh = NULL;
    int32_t fd = -1;
    size_t n = SENTINEL_SIZE;

    expect_invalid_context_everywhere(NULL, "NULL", &ok);

    CHECK_RC(bgjob_context_create(&ctx), BGJOB_RESULT_OK);
    REQUIRE(ctx != NULL);
    CHECK_RC(bgjob_context_get_fd(ctx, &fd), BGJOB_RESULT_OK);
    CHECK(fd >= 0);
    CHECK_RC(bgjob_context_pending(ctx, &n), BGJOB_RESULT_OK);
    CHECK_EQ(n, 0);
    CHECK_RC(bgjob_context_destroy(ctx), BGJOB_RESULT_OK);
    expect_invalid_context_everywhere(ctx, "destroyed", &ok);

    /* Stale after its slot is reused. */
    CHECK_RC(bgjob_context_create(&fresh), BGJOB_RESULT_OK);
    REQUIRE(fresh != NULL);
    CHECK(fresh != ctx);
    expect_invalid_context_everywhere(ctx, "stale", &ok);
    CHECK_RC(bgjob_context_pending(fresh, &n), BGJOB_RESULT_OK);

    const uintptr_t values[] = {
        1, 0x1234, 0xdeadbeef, (uintptr_t)1 << 32, (uintptr_t)fresh + 1000,
        (uintptr_t)fresh + ((uintptr_t)1 << 32), UINTPTR_MAX, (uintptr_t)&n,
    };
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char what[64];

        if (values[i] == (uintptr_t)fresh)
            continue;
        snprintf(what, sizeof(what), "made-up %#llx", (unsigned long long)values[i]);
        expect_invalid_context_everywhere((bgjob_context *)values[i], what, &ok);
    }
    CHECK_RC(bgjob_context_pending(fresh, &n), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_context_destroy(fresh), BGJOB_RESULT_OK);

    /* NULL outputs. */
    CHECK_RC(bgjob_context_create(NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_context_create(&ctx), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_context_get_fd(ctx, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_context_pending(ctx, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_context_dispatch(ctx, 0, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_context_destroy(ctx), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&completions_run), 0);
    return ok;
}

/* Results with NULL out-pointers, and before the job has ended. */
static bool test_result_arguments(void)
{
    bool ok = true;
    struct tracker t, rt;
    bgjob_job *job = NULL;
    void *res = (void *)&t;

    tracker_init(&t);
    tracker_init(&rt);
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_get_result(job, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_take_result(job, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_get_result(job, &res), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_take_result(job, &res), BGJOB_RESULT_NOT_ALLOWED);
    CHECK(res == (void *)&t);
    CHECK_RC(bgjob_job_set_result(job, ud_new(&rt), ud_free), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&rt.frees), 0);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    /* Nobody took it: destroy freed it. */
    CHECK_EQ(atomic_load(&rt.frees), 1);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

static bool test_null_handle(void)
{
    bool ok = true;
    int32_t s = SENTINEL32;

    expect_invalid_everywhere(NULL, "NULL", &ok);
    /* A negative timeout waits forever for a live job; for no job it must not
     * wait at all. */
    CHECK_RC(bgjob_job_wait(NULL, -1, &s), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_wait(NULL, INT64_MAX, &s), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_EQ(s, SENTINEL32);
    return ok;
}

static bool test_destroyed_handle(void)
{
    bool ok = true;
    int kinds = 0;

    /* Destroyed after completing, and destroyed while never started. */
    for (int deferred = 0; deferred < 2; deferred++) {
        struct tracker t;
        bgjob_job *job = NULL;

        tracker_init(&t);
        CHECK_RC(job_create(&t, worker_return, deferred ? BGJOB_CREATE_DEFER_START : 0,
                            BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
                 BGJOB_RESULT_OK);
        if (job == NULL)
            continue;
        if (!deferred)
            CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        expect_invalid_everywhere(job, deferred ? "destroyed (created)" : "destroyed (completed)",
                                  &ok);
        int32_t s = SENTINEL32;
        CHECK_RC(bgjob_job_wait(job, -1, &s), BGJOB_RESULT_INVALID_HANDLE);
        CHECK_EQ(atomic_load(&t.frees), 1);
        CHECK_EQ(atomic_load(&t.runs), deferred ? 0 : 1);
        kinds++;
    }
    CHECK_EQ(kinds, 2);
    return ok;
}

static bool test_detached_handle(void)
{
    static struct tracker t;
    static struct gate g;
    bool ok = true;
    bgjob_job *job = NULL;

    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    CHECK_RC(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_detach(job, 0), BGJOB_RESULT_OK);
    /* Still running, but the caller's handle is dead. */
    expect_invalid_everywhere(job, "detached (running)", &ok);
    CHECK_EQ(atomic_load(&t.frees), 0);
    CHECK_EQ(atomic_load(&t.saw_cancel), 0);
    gate_open(&g);
    REQUIRE(poll_int_eq(&t.frees, 1));
    /* The destroy and detach calls above did not cancel or end the job. */
    CHECK_EQ(atomic_load(&t.saw_cancel), 0);
    expect_invalid_everywhere(job, "detached (ended)", &ok);
    gate_destroy(&g);
    return ok;
}

/* A destroyed handle stays dead when its table slot is reused by a new job. */
static bool test_stale_handle_after_reuse(void)
{
    bool ok = true;
    struct tracker t1, t2;
    bgjob_job *old = NULL, *fresh = NULL;
    uint64_t fresh_id;

    tracker_init(&t1);
    tracker_init(&t2);
    CHECK_RC(job_create(&t1, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &old),
             BGJOB_RESULT_OK);
    REQUIRE(old != NULL);
    CHECK_RC(bgjob_job_destroy(old), BGJOB_RESULT_OK);
    CHECK_RC(job_create(&t2, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &fresh),
             BGJOB_RESULT_OK);
    REQUIRE(fresh != NULL);
    CHECK(fresh != old);
    fresh_id = id_of(fresh);
    expect_invalid_everywhere(old, "stale (slot reused)", &ok);
    /* The new job was not touched by any of those calls. */
    CHECK_STATE(state_of(fresh), BGJOB_STATE_CREATED);
    CHECK_RC(bgjob_job_check_cancel(fresh), BGJOB_RESULT_OK);
    CHECK_EQ(id_of(fresh), fresh_id);
    CHECK_EQ(atomic_load(&t2.frees), 0);
    CHECK_RC(bgjob_job_destroy(fresh), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t2.frees), 1);
    CHECK_EQ(atomic_load(&t1.frees), 1);
    return ok;
}

/* Values that were never handles. One live job exists meanwhile, so a lookup
 * bug cannot hide behind an empty table; none of the calls may touch it. */
static bool test_made_up_handles(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *live = NULL;
    int local = 0;
    uintptr_t base;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &live),
             BGJOB_RESULT_OK);
    REQUIRE(live != NULL);
    base = (uintptr_t)live;

    const uintptr_t values[] = {
        1,
        2,
        0x1234,
        0xdeadbeef,
        (uintptr_t)1 << 32,                /* generation 1, no index */
        ((uintptr_t)0xffffffff << 32) | 1, /* index 0, a generation never used */
        base + ((uintptr_t)1 << 32),       /* the live slot, a later generation */
        base - ((uintptr_t)1 << 32),       /* the live slot, an earlier generation */
        base + 1000,                       /* an index past the table */
        UINTPTR_MAX,
        UINTPTR_MAX - 1,
        (uintptr_t)&local, /* a real pointer: never dereferenced */
        (uintptr_t)&t,
    };
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char what[64];

        if (values[i] == base)
            continue;
        snprintf(what, sizeof(what), "made-up %#llx", (unsigned long long)values[i]);
        expect_invalid_everywhere((bgjob_job *)values[i], what, &ok);
    }
    CHECK_STATE(state_of(live), BGJOB_STATE_CREATED);
    CHECK_RC(bgjob_job_check_cancel(live), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 0);
    CHECK_RC(bgjob_job_destroy(live), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

/* The functions expect_invalid_everywhere calls. */
static const char *const job_functions[] = {
    "bgjob_job_get_info",    "bgjob_job_get_state",   "bgjob_job_get_id",
    "bgjob_job_get_error",   "bgjob_job_get_phase",   "bgjob_job_get_name",
    "bgjob_job_start",       "bgjob_job_cancel",      "bgjob_job_pause",
    "bgjob_job_resume",      "bgjob_job_wait",        "bgjob_job_destroy",
    "bgjob_job_detach",      "bgjob_job_ref",         "bgjob_job_check_cancel", "bgjob_job_pause_point",
    "bgjob_job_set_total",   "bgjob_job_set_current", "bgjob_job_add_units",
    "bgjob_job_set_percent", "bgjob_job_set_eta",     "bgjob_job_set_phase",
    "bgjob_job_set_error",   "bgjob_job_finish",      "bgjob_job_set_result",
    "bgjob_job_get_result",  "bgjob_job_take_result", "bgjob_job_add_cancel_hook",
    "bgjob_job_remove_cancel_hook", "bgjob_job_sleep", "bgjob_job_get_wake_fd",
    "bgjob_job_wait_fd",     "bgjob_job_set_deadline", "bgjob_job_spawn_child",
    "bgjob_job_watch_child", "bgjob_job_wait_child", "bgjob_job_finalize",
    "bgjob_job_pause_internal", "bgjob_job_resume_internal", "bgjob_job_set_error_policy",
    "bgjob_job_report_io_error", "bgjob_txn_add", "bgjob_job_set_ready",
    "bgjob_job_complete", "bgjob_job_complete_requested", "bgjob_job_cancel_soft",
    "bgjob_job_cancel_is_soft", "bgjob_job_report_state", "bgjob_job_control_failed",
    "bgjob_job_wait_state", "bgjob_job_get_control_error",
    "bgjob_job_add_stat", "bgjob_job_set_stat_u64", "bgjob_job_set_stat_i64",
    "bgjob_job_set_stat_double", "bgjob_job_set_stat_string", "bgjob_job_set_stats",
    "bgjob_job_get_stats", "bgjob_job_get_operation", "bgjob_job_get_owner",
"bgjob_job_end", "bgjob_job_set_speed",
    "bgjob_job_get_speed",
};

/* The functions expect_invalid_context_everywhere calls. */
static const char *const context_functions[] = {
    "bgjob_context_destroy", "bgjob_context_get_fd", "bgjob_context_dispatch",
    "bgjob_context_pending", "bgjob_run_in_thread",
};

/* The exported functions that take no handle, each tested in this file or
 * another one. */
static const char *const other_functions[] = {
    "bgjob_version",      "bgjob_abi_version",  "bgjob_result_str", "bgjob_set_log_callback",
    "bgjob_list_jobs",    "bgjob_job_lookup",   "bgjob_verb_allowed", "bgjob_state_str",  "bgjob_verb_str",
    "bgjob_job_options_init", "bgjob_job_create", "bgjob_context_create",
    "bgjob_pool_set_max_running", "bgjob_pool_get_status",
    "bgjob_child_options_init",
    /* Transaction handles: invalid ones are tested in test_txn.c. */
    "bgjob_txn_create", "bgjob_txn_destroy", "bgjob_txn_start", "bgjob_txn_cancel",
    "bgjob_txn_finalize",
    /* Tested in test_list.c. */
    "bgjob_list_jobs_sized",
};

static char *read_header(void)
{
    const char *const paths[] = { getenv("BGJOB_HEADER"), "include/bgjob.h", "../include/bgjob.h" };
    return read_first_file(paths, TAP_COUNT(paths));
}

/*
 * Reads bgjob.h and checks that every function it declares is one this harness
 * knows, and that every one taking a `struct bgjob_job *` or a
 * `struct bgjob_context *` handle is among those called with invalid handles:
 * a function added to the header fails here until the harness covers it.
 */
static bool test_every_header_function_covered(void)
{
    bool ok = true;
    char *text = read_header();
    size_t found = 0, jobs = 0, contexts = 0;

    if (text == NULL) {
        tap_diag("include/bgjob.h not found from the current directory (set BGJOB_HEADER); "
                 "header scan skipped");
        return true;
    }
    /* A declaration starts at the beginning of a line with its return type,
     * has the name right before "(", and ends with ");". */
    for (char *p = text; p != NULL && *p != 0;) {
        char *eol = strchr(p, '\n');
        char *paren = strchr(p, '(');
        char *name = paren;

        if (paren != NULL && eol != NULL && paren > eol)
            paren = name = NULL;
        while (name != NULL && name > p && (name[-1] == '_' || (name[-1] >= 'a' && name[-1] <= 'z') ||
                                            (name[-1] >= '0' && name[-1] <= '9')))
            name--;
        /* A return type at the start of the line, then a bgjob_ name and "(":
         * not a typedef, a macro, a comment or an indented continuation. */
        bool decl = name != NULL && name > p && strncmp(name, "bgjob_", 6) == 0 &&
                    ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')) &&
                    strncmp(p, "typedef", 7) != 0 && strncmp(p, "struct", 6) != 0 &&
                    strncmp(p, "enum", 4) != 0;
        if (decl) {
            char *end = strstr(paren, ");");
            char fn[64];

            if (end == NULL || (size_t)(paren - name) >= sizeof(fn)) {
                tap_diag("cannot parse the declaration at: %.60s", p);
                ok = false;
                break;
            }
            memcpy(fn, name, (size_t)(paren - name));
            fn[paren - name] = 0;
            found++;
            *end = 0;
            bool job_handle = strstr(paren, "struct bgjob_job *job") != NULL;
            bool context_handle = strstr(paren, "struct bgjob_context *context") != NULL;
            *end = ')';
            if (job_handle) {
                jobs++;
                CHECKF(name_listed(fn, job_functions, TAP_COUNT(job_functions)),
                       "%s takes a job handle but is not called with invalid handles here", fn);
            } else if (context_handle) {
                contexts++;
                CHECKF(name_listed(fn, context_functions, TAP_COUNT(context_functions)),
                       "%s takes a context handle but is not called with invalid handles here",
                       fn);
            } else {
                CHECKF(name_listed(fn, other_functions, TAP_COUNT(other_functions)),
                       "%s is declared in bgjob.h but unknown to the harness", fn);
            }
            eol = strchr(end, '\n');
        }
        p = eol != NULL ? eol + 1 : NULL;
    }
    CHECK_EQ(jobs, TAP_COUNT(job_functions));
    CHECK_EQ(contexts, TAP_COUNT(context_functions));
    CHECK_EQ(found, TAP_COUNT(job_functions) + TAP_COUNT(context_functions) +
                        TAP_COUNT(other_functions));
    free(text);
    return ok;
}

/* NULL where a pointer is required: INVALID_ARGUMENT, nothing written. */
static bool test_null_out_pointers(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    size_t len = SENTINEL_SIZE, count = SENTINEL_SIZE;
    bool allowed = true;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, "nulls",
                        &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);

    CHECK_RC(bgjob_job_get_info(job, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_get_state(job, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_get_id(job, NULL), BGJOB_RESULT_INVALID_ARGUMENT);

    CHECK_RC(bgjob_job_get_error(job, NULL, NULL, 8, &len), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_EQ(len, SENTINEL_SIZE);
    CHECK_RC(bgjob_job_get_phase(job, NULL, 8, &len), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_EQ(len, SENTINEL_SIZE);
    CHECK_RC(bgjob_job_get_name(job, NULL, 8, &len), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_EQ(len, SENTINEL_SIZE);

    /* Optional outputs may be NULL. */
    CHECK_RC(bgjob_job_get_error(job, NULL, NULL, 0, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_get_phase(job, NULL, 0, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_get_name(job, NULL, 0, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_get_name(job, NULL, 0, &len), BGJOB_RESULT_OK);
    CHECK_EQ(len, strlen("nulls"));

    CHECK_RC(bgjob_job_set_phase(job, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_set_error(job, 5, NULL), BGJOB_RESULT_OK);

    CHECK_RC(bgjob_list_jobs(NULL, 0, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_list_jobs(NULL, 4, &count), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_EQ(count, SENTINEL_SIZE);
    {
        bgjob_job_entry e[2];
        CHECK_RC(bgjob_list_jobs(e, 2, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    }
    CHECK_RC(bgjob_list_jobs(NULL, 0, &count), BGJOB_RESULT_OK);
    CHECK(count >= 1 && count != SENTINEL_SIZE);

    CHECK_RC(bgjob_verb_allowed(BGJOB_VERB_START, BGJOB_STATE_CREATED, NULL),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_verb_allowed(BGJOB_VERB_START, BGJOB_STATE_CREATED, &allowed), BGJOB_RESULT_OK);
    CHECK(allowed);
    CHECK_RC(bgjob_job_options_init(NULL, sizeof(bgjob_job_options)), BGJOB_RESULT_INVALID_ARGUMENT);

    /* The handle was not harmed by any of it. */
    CHECK_STATE(state_of(job), BGJOB_STATE_CREATED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

/* bgjob_job_create: NULL worker or job_out is INVALID_ARGUMENT, and the
 * userdata is freed before create returns. */
static bool test_create_null_arguments(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = (bgjob_job *)&t;

    tracker_init(&t);
    CHECK_RC(bgjob_job_create(NULL, NULL, ud_new(&t), ud_free, &job),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK(job == (bgjob_job *)&t);
    CHECK_EQ(atomic_load(&t.frees), 1);

    tracker_init(&t);
    CHECK_RC(bgjob_job_create(NULL, worker_return, ud_new(&t), ud_free, NULL),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_EQ(atomic_load(&t.frees), 1);

    tracker_init(&t);
    CHECK_RC(bgjob_job_create(NULL, NULL, ud_new(&t), ud_free, NULL),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_EQ(atomic_load(&t.frees), 1);
    sleep_ms(20);
    CHECK_EQ(atomic_load(&t.runs), 0);

    /* No free function: nothing to call, nothing to crash. */
    CHECK_RC(bgjob_job_create(NULL, NULL, NULL, NULL, &job), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK(job == (bgjob_job *)&t);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_job_and_context_handles_distinct), /* first: see there */
        TAP_TEST(test_null_handle),
        TAP_TEST(test_destroyed_handle),
        TAP_TEST(test_detached_handle),
        TAP_TEST(test_stale_handle_after_reuse),
        TAP_TEST(test_made_up_handles),
        TAP_TEST(test_every_header_function_covered),
        TAP_TEST(test_null_out_pointers),
        TAP_TEST(test_create_null_arguments),
        TAP_TEST(test_invalid_contexts),
        TAP_TEST(test_result_arguments),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

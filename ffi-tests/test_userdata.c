/*
 * test_userdata.c: the userdata free function runs exactly once on every path,
 * after the last callback that uses the userdata: success, failure, cancel
 * while running, cancel before start, destroy of a CREATED job, detach (with
 * and without cancel), and every failed create (NULL worker or job_out, bad
 * options). The completion userdata follows the same rule. A free function may
 * call bgjob for other objects (no bgjob lock is held while it runs).
 *
 * No free function of a job runs on its worker's thread once the job's end
 * has been delivered: by then the thread has listed itself idle, and a job
 * handed to it would wait behind the free (test_frees_before_the_thread_is_free).
 */

#include "util.h"

#include <poll.h>
#include <sched.h>
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
    o.struct_size = OPTIONS_V1_SIZE - 1;
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
        o.flags = 1u << 31; /* no such flag */
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

/* test_frees_before_the_thread_is_free: which of a job's frees ran on its
 * worker's thread after its completion began. */
enum { LATE_USERDATA, LATE_COMPLETION, LATE_EVENT, LATE_CONTROL, LATE_FINALIZE, LATE_RESULT,
       LATE_KINDS };
static const char *const late_names[LATE_KINDS] = {"userdata", "completion", "event",
                                                   "control",  "finalize",   "result"};
static pthread_t late_worker;
static atomic_int late_completion_began, late_frees;
static int late_counts[LATE_KINDS];

static void late_note(int kind)
{
    if (pthread_equal(pthread_self(), late_worker) && atomic_load(&late_completion_began))
        late_counts[kind]++;
    atomic_fetch_add(&late_frees, 1);
}

static void late_free_userdata(void *u) { (void)u; late_note(LATE_USERDATA); }
static void late_free_completion(void *u) { (void)u; late_note(LATE_COMPLETION); }
static void late_free_event(void *u) { (void)u; late_note(LATE_EVENT); }
static void late_free_control(void *u) { (void)u; late_note(LATE_CONTROL); }
static void late_free_finalize(void *u) { (void)u; late_note(LATE_FINALIZE); }
static void late_free_result(void *u) { (void)u; late_note(LATE_RESULT); }

static int32_t late_worker_fn(void *userdata, bgjob_job *job)
{
    (void)userdata;
    late_worker = pthread_self();
    return bgjob_job_set_result(job, &late_worker, late_free_result) == BGJOB_RESULT_OK ? 0 : 1;
}

static void late_completion(void *userdata, bgjob_job *job, bgjob_state state)
{
    (void)userdata;
    (void)state;
    atomic_store(&late_completion_began, 1);
    bgjob_job_destroy(job);
}

static void late_event(void *u, bgjob_job *j, const bgjob_event *ev) { (void)u; (void)j; (void)ev; }
static void late_control(void *u, bgjob_job *j, bgjob_control w, int64_t a)
{
    (void)u;
    (void)j;
    (void)w;
    (void)a;
}
static void late_finalize(void *u, bgjob_job *j) { (void)u; (void)j; }

/* Runs `n` jobs on `ctx` (with every callback and free function when `all`,
 * else only a completion: a plain job's end), each destroyed by its
 * completion; false if one did not end or did not free everything. */
static bool late_rounds(bgjob_context *ctx, int fd, bool all, int n)
{
    bool ok = true;
    int frees = all ? LATE_KINDS : 3;

    for (int i = 0; i < n && ok; i++) {
        bgjob_job_options o;
        bgjob_job *job = NULL;
        int64_t until = now_ms() + LONG_MS;

        atomic_store(&late_completion_began, 0);
        atomic_store(&late_frees, 0);
        bgjob_job_options_init(&o, sizeof o);
        o.context = ctx;
        o.completion = late_completion;
        o.completion_free = late_free_completion;
        if (all) {
            o.event = late_event;
            o.event_free = late_free_event;
            o.control = late_control;
            o.control_free = late_free_control;
            o.commit = late_finalize;
            o.clean = late_finalize;
            o.finalize_free = late_free_finalize;
        }
        CHECK_RC(bgjob_job_create(&o, late_worker_fn, NULL, late_free_userdata, &job),
                 BGJOB_RESULT_OK);
        REQUIRE(ok);
        while (!atomic_load(&late_completion_began) && now_ms() < until) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            poll(&p, 1, 100);
            CHECK_RC(bgjob_context_dispatch(ctx, 0, NULL), BGJOB_RESULT_OK);
        }
        CHECKF(atomic_load(&late_completion_began), "round %d: no completion", i);
        while (atomic_load(&late_frees) < frees && now_ms() < until)
            sched_yield();
        CHECKF(atomic_load(&late_frees) == frees, "round %d: %d of %d frees", i,
               atomic_load(&late_frees), frees);
    }
    return ok;
}

/* Every free function of a job whose worker returned runs before its end is
 * delivered, or on another thread: never on the worker's thread after the
 * completion began. By then the pool thread has listed itself idle (it does
 * so inside the job's end, before the context is signalled), so a job started
 * from the completion may be handed to it; a free still to run there would
 * make that job wait behind it (a free that waits for it: never runs).
 * Pinned to one CPU as well: there the worker's thread yields as soon as it
 * has signalled, and the completion runs before the rest of its task does. */
static bool test_frees_before_the_thread_is_free(void)
{
    bool ok = true;
    bgjob_context *ctx = NULL;
    int32_t fd = -1;
    cpu_set_t saved, one;

    REQUIRE(sched_getaffinity(0, sizeof saved, &saved) == 0);
    CHECK_RC(bgjob_context_create(&ctx), BGJOB_RESULT_OK);
    REQUIRE(ctx != NULL);
    CHECK_RC(bgjob_context_get_fd(ctx, &fd), BGJOB_RESULT_OK);
    for (int pinned = 0; pinned < 2; pinned++) {
        if (pinned) {
            /* The first CPU this process may run on. */
            int cpu = 0;
            while (!CPU_ISSET(cpu, &saved))
                cpu++;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            CHECK(sched_setaffinity(0, sizeof one, &one) == 0);
        }
        memset(late_counts, 0, sizeof late_counts);
        CHECK(late_rounds(ctx, fd, true, 200));
        CHECK(late_rounds(ctx, fd, false, 200));
        for (int k = 0; k < LATE_KINDS; k++)
            CHECKF(late_counts[k] == 0, "%s free ran on the worker's thread after the "
                   "completion began, %d times (%s)", late_names[k], late_counts[k],
                   pinned ? "pinned" : "free");
    }
    CHECK(sched_setaffinity(0, sizeof saved, &saved) == 0);
    CHECK_RC(bgjob_context_destroy(ctx), BGJOB_RESULT_OK);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_every_path),
        TAP_TEST(test_every_path_reentrant_free),
        TAP_TEST(test_frees_before_the_thread_is_free),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

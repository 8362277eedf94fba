/*
 * test_destroy.c: destroy and detach rules. Destroy is refused while the job
 * runs or is paused, allowed for CREATED (the worker never runs, the userdata is
 * freed now) and for terminal jobs; a second destroy gets INVALID_HANDLE.
 * Detach (with and without BGJOB_DETACH_CANCEL) lets the job finish and free
 * itself; detaching a CREATED job is refused.
 */

#include "util.h"

#include <stdlib.h>
#include <string.h>

static bool test_destroy_running_refused(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    bgjob_job *job = NULL;

    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    CHECK_RC(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    if (job == NULL) {
        gate_destroy(&g);
        return false;
    }
    CHECK(poll_int_eq(&t.runs, 1));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_NOT_ALLOWED);
    /* Nothing changed: the handle is valid and the job runs on. */
    CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
    CHECK_EQ(atomic_load(&t.frees), 0);
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_EQ(atomic_load(&t.frees), 1);
    gate_destroy(&g);
    return ok;
}

static bool test_destroy_paused_refused(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_until_cancel, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_STATE(state_of(job), BGJOB_STATE_PAUSED);
    CHECK_EQ(atomic_load(&t.frees), 0);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

static bool test_destroy_created(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    uint64_t id;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    id = id_of(job);
    CHECK(job_listed(id));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    /* Freed before destroy returned. */
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_RC(bgjob_job_get_state(job, &(int32_t){ 0 }), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_INVALID_HANDLE);
    CHECK(poll_unlisted(id));
    /* The worker never runs, not even later. */
    sleep_ms(30);
    CHECK_EQ(atomic_load(&t.runs), 0);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

static bool test_destroy_terminal(void)
{
    bool ok = true;

    for (int which = 0; which < 3; which++) {
        struct tracker t;
        bgjob_job *job = NULL;
        int32_t want;

        tracker_init(&t);
        if (which == 2) {
            CHECK_RC(job_create(&t, worker_until_cancel, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
                     BGJOB_RESULT_OK);
            if (job == NULL)
                continue;
            CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
            want = BGJOB_STATE_CANCELLED;
        } else {
            t.rc = which == 0 ? 0 : 9;
            CHECK_RC(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
                     BGJOB_RESULT_OK);
            if (job == NULL)
                continue;
            want = which == 0 ? BGJOB_STATE_COMPLETED : BGJOB_STATE_FAILED;
        }
        CHECK_STATE(wait_end(job), want);
        uint64_t id = id_of(job);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_INVALID_HANDLE);
        CHECK(poll_unlisted(id));
        CHECK_EQ(atomic_load(&t.runs), 1);
        CHECK_EQ(atomic_load(&t.frees), 1);
    }
    return ok;
}

struct destroyer {
    bgjob_job *job;
    pthread_barrier_t *barrier;
    bgjob_result rc;
};

static void *destroy_thread(void *arg)
{
    struct destroyer *d = arg;

    pthread_barrier_wait(d->barrier);
    d->rc = bgjob_job_destroy(d->job);
    return NULL;
}

/* Of two threads destroying the same handle, one succeeds and the other gets
 * INVALID_HANDLE; the userdata is freed once. Both for ended jobs and for
 * never-started ones (whose destroy frees the userdata itself). */
static bool test_destroy_concurrent(void)
{
    bool ok = true;

    for (int round = 0; round < 100 && ok; round++) {
        struct tracker t;
        bgjob_job *job = NULL;
        pthread_barrier_t barrier;
        struct destroyer d[2];
        pthread_t th[2];
        bool created = round % 2 == 0;

        tracker_init(&t);
        CHECK_RC(job_create(&t, worker_return, created ? BGJOB_CREATE_DEFER_START : 0,
                            BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
                 BGJOB_RESULT_OK);
        if (job == NULL)
            return false;
        if (!created)
            CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
        pthread_barrier_init(&barrier, NULL, 2);
        for (int i = 0; i < 2; i++) {
            d[i] = (struct destroyer){ .job = job, .barrier = &barrier, .rc = -1 };
            if (pthread_create(&th[i], NULL, destroy_thread, &d[i]) != 0)
                abort();
        }
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&barrier);
        CHECKF((d[0].rc == BGJOB_RESULT_OK && d[1].rc == BGJOB_RESULT_INVALID_HANDLE) ||
                   (d[1].rc == BGJOB_RESULT_OK && d[0].rc == BGJOB_RESULT_INVALID_HANDLE),
               "round %d (%s): destroy results %s and %s", round, created ? "created" : "ended",
               bgjob_result_str(d[0].rc), bgjob_result_str(d[1].rc));
        CHECK_EQ(atomic_load(&t.frees), 1);
        CHECK_EQ(atomic_load(&t.runs), created ? 0 : 1);
    }
    return ok;
}

/*
 * Detach tests use static trackers: a detached job frees its userdata on its
 * own thread, and if that never happened the case must not leave a worker
 * pointing into a dead stack frame.
 */

struct own_use {
    struct tracker t;
    atomic_int phase_rc;
    atomic_int units_rc;
    atomic_int cancel_rc;
};

/* Blocks on the gate, then uses its own handle (allowed after detach until it
 * returns) and returns 0. */
static int32_t worker_uses_own_handle(void *userdata, bgjob_job *job)
{
    struct own_use *u = (struct own_use *)ud_tracker(userdata);

    atomic_fetch_add(&u->t.runs, 1);
    gate_wait(u->t.gate);
    atomic_store(&u->phase_rc, bgjob_job_set_phase(job, "after detach"));
    atomic_store(&u->units_rc, bgjob_job_add_units(job, 1));
    atomic_store(&u->cancel_rc, bgjob_job_check_cancel(job));
    atomic_fetch_add(&u->t.returns, 1);
    return 0;
}

static bool test_detach_running_no_cancel(void)
{
    static struct own_use u;
    static struct gate g;
    bool ok = true;
    bgjob_job *job = NULL;
    uint64_t id;

    tracker_init(&u.t);
    atomic_init(&u.phase_rc, -1);
    atomic_init(&u.units_rc, -1);
    atomic_init(&u.cancel_rc, -1);
    gate_init(&g);
    u.t.gate = &g;
    CHECK_RC(job_create(&u.t, worker_uses_own_handle, 0, BGJOB_JOB_TYPE_BOUNDED, "detached-1",
                        &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    id = id_of(job);
    CHECK(poll_int_eq(&u.t.runs, 1));
    CHECK_RC(bgjob_job_detach(job, 0), BGJOB_RESULT_OK);
    /* The handle is gone for the caller; the job is still there. */
    CHECK_RC(bgjob_job_get_state(job, &(int32_t){ 0 }), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_detach(job, 0), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_INVALID_HANDLE);
    CHECK(job_listed(id));
    CHECK_EQ(atomic_load(&u.t.frees), 0);
    gate_open(&g);
    REQUIRE(poll_int_eq(&u.t.frees, 1));
    CHECK_EQ(atomic_load(&u.t.free_early), 0);
    /* It was not cancelled, and its own handle kept working. */
    CHECK_RC(atomic_load(&u.phase_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&u.units_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&u.cancel_rc), BGJOB_RESULT_OK);
    CHECK(poll_unlisted(id));
    CHECK_EQ(atomic_load(&u.t.frees), 1);
    gate_destroy(&g);
    return ok;
}

static bool test_detach_with_cancel(void)
{
    static struct tracker t;
    bool ok = true;
    bgjob_job *job = NULL;
    uint64_t id;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_until_cancel, 0, BGJOB_JOB_TYPE_BOUNDED, "detached-2", &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    id = id_of(job);
    CHECK(poll_long_ge(&t.iterations, 1));
    CHECK_RC(bgjob_job_detach(job, BGJOB_DETACH_CANCEL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_get_state(job, &(int32_t){ 0 }), BGJOB_RESULT_INVALID_HANDLE);
    REQUIRE(poll_int_eq(&t.frees, 1));
    CHECK_EQ(atomic_load(&t.saw_cancel), 1);
    CHECK_EQ(atomic_load(&t.free_early), 0);
    CHECK(poll_unlisted(id));
    return ok;
}

/* A paused job detached with cancel is resumed by the cancel and ends. */
static bool test_detach_paused_with_cancel(void)
{
    static struct tracker t;
    bool ok = true;
    bgjob_job *job = NULL;
    uint64_t id;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_until_cancel, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    id = id_of(job);
    CHECK(poll_long_ge(&t.iterations, 1));
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_detach(job, BGJOB_DETACH_CANCEL), BGJOB_RESULT_OK);
    REQUIRE(poll_int_eq(&t.frees, 1));
    CHECK_EQ(atomic_load(&t.saw_cancel), 1);
    CHECK(poll_unlisted(id));
    return ok;
}

/* A paused job detached without cancel is resumed (nobody could resume it
 * later) and runs to its end. */
static atomic_int pd_iterations, pd_frees, pd_paused;

static void pd_free(void *userdata)
{
    (void)userdata;
    atomic_fetch_add(&pd_frees, 1);
}

static int32_t pd_worker(void *userdata, bgjob_job *job)
{
    (void)userdata;
    for (int i = 0; i < 50; i++) {
        if (bgjob_job_pause_point(job) == BGJOB_RESULT_CANCELLED)
            return 125;
        atomic_fetch_add(&pd_iterations, 1);
        /* After the first step, hold until the test has paused the job, so the
         * next pause point certainly parks. */
        while (i == 0 && !atomic_load(&pd_paused))
            sleep_ms(1);
        sleep_ms(1);
    }
    return 0;
}

static bool test_detach_paused_no_cancel_resumes(void)
{
    bool ok = true;
    bgjob_job *job = NULL;

    atomic_store(&pd_iterations, 0);
    atomic_store(&pd_frees, 0);
    atomic_store(&pd_paused, 0);
    CHECK_RC(bgjob_job_create(NULL, pd_worker, NULL, pd_free, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    uint64_t id = id_of(job);
    CHECK(poll_int_eq(&pd_iterations, 1));
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    atomic_store(&pd_paused, 1);
    sleep_ms(20); /* let it reach its pause point */
    int parked_at = atomic_load(&pd_iterations);
    sleep_ms(30);
    CHECK_EQ(atomic_load(&pd_iterations), parked_at);
    CHECK_EQ(parked_at, 1);
    CHECK_RC(bgjob_job_detach(job, 0), BGJOB_RESULT_OK);
    REQUIRE(poll_int_eq(&pd_frees, 1));
    CHECK_EQ(atomic_load(&pd_iterations), 50); /* resumed and ran to the end */
    CHECK(poll_unlisted(id));
    return ok;
}

static bool test_detach_created_refused(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_detach(job, 0), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_detach(job, BGJOB_DETACH_CANCEL), BGJOB_RESULT_NOT_ALLOWED);
    /* Nothing changed: still CREATED, not cancelled, handle valid. */
    CHECK_STATE(state_of(job), BGJOB_STATE_CREATED);
    CHECK_RC(bgjob_job_check_cancel(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 0);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_EQ(atomic_load(&t.runs), 0);
    return ok;
}

static bool test_detach_unknown_flag(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    bgjob_job *job = NULL;

    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    CHECK_RC(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    if (job == NULL) {
        gate_destroy(&g);
        return false;
    }
    CHECK_RC(bgjob_job_detach(job, 2), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_detach(job, BGJOB_DETACH_CANCEL | 0x80000000u),
             BGJOB_RESULT_INVALID_ARGUMENT);
    /* Nothing changed: not cancelled, handle still valid. */
    CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
    CHECK_RC(bgjob_job_check_cancel(job), BGJOB_RESULT_OK);
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    gate_destroy(&g);
    return ok;
}

/* Detaching an ended job is the same as destroying it. */
static bool test_detach_terminal(void)
{
    bool ok = true;

    for (uint32_t flags = 0; flags <= BGJOB_DETACH_CANCEL; flags++) {
        struct tracker t;
        bgjob_job *job = NULL;
        uint64_t id;

        tracker_init(&t);
        CHECK_RC(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
                 BGJOB_RESULT_OK);
        if (job == NULL)
            return false;
        CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
        id = id_of(job);
        CHECK_RC(bgjob_job_detach(job, flags), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_get_state(job, &(int32_t){ 0 }), BGJOB_RESULT_INVALID_HANDLE);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_INVALID_HANDLE);
        CHECK(poll_unlisted(id));
        CHECK_EQ(atomic_load(&t.frees), 1);
    }
    return ok;
}

/* Many detached jobs, some cancelled, all free their userdata exactly once. */
static bool test_detach_many(void)
{
    enum { N = 64 };
    static struct tracker t[N];
    static struct gate g;
    bool ok = true;
    long before = atomic_load(&util_total_frees);

    gate_init(&g);
    for (int i = 0; i < N; i++) {
        bgjob_job *job = NULL;

        tracker_init(&t[i]);
        t[i].gate = &g;
        CHECK_RC(job_create(&t[i], worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
                 BGJOB_RESULT_OK);
        if (job == NULL)
            continue;
        CHECK_RC(bgjob_job_detach(job, i % 2 ? BGJOB_DETACH_CANCEL : 0), BGJOB_RESULT_OK);
    }
    gate_open(&g);
    REQUIRE(poll_long_ge(&util_total_frees, before + N));
    for (int i = 0; i < N; i++) {
        CHECK_EQ(atomic_load(&t[i].frees), 1);
        CHECK_EQ(atomic_load(&t[i].saw_cancel), i % 2);
    }
    gate_destroy(&g);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_destroy_running_refused),
        TAP_TEST(test_destroy_paused_refused),
        TAP_TEST(test_destroy_created),
        TAP_TEST(test_destroy_terminal),
        TAP_TEST(test_destroy_concurrent),
        TAP_TEST(test_detach_running_no_cancel),
        TAP_TEST(test_detach_with_cancel),
        TAP_TEST(test_detach_paused_with_cancel),
        TAP_TEST(test_detach_paused_no_cancel_resumes),
        TAP_TEST(test_detach_created_refused),
        TAP_TEST(test_detach_unknown_flag),
        TAP_TEST(test_detach_terminal),
        TAP_TEST(test_detach_many),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

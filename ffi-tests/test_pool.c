/*
 * test_pool.c: the process-wide cap on running job workers
 * (bgjob_pool_set_max_running). Jobs started beyond the cap are queued and
 * show as RUNNING; they start oldest first as slots free; a cancelled queued
 * job ends CANCELLED before cancel returns, its worker never run and its
 * userdata freed; raising the cap starts queued jobs. Every case puts the cap
 * back to 0 (none) before it returns.
 */

#include "util.h"

#include <poll.h>

/* The order in which workers of `order_worker` jobs ran. */
static atomic_int order_next;

static int32_t order_worker(void *userdata, bgjob_job *job)
{
    struct tracker *t = ud_tracker(userdata);

    atomic_store(&t->worker_rc, atomic_fetch_add(&order_next, 1));
    return worker_return(userdata, job);
}

static bool status(uint32_t *max, size_t *running, size_t *queued)
{
    return bgjob_pool_get_status(max, running, queued) == BGJOB_RESULT_OK;
}

static bool test_status_and_null_outputs(void)
{
    bool ok = true;
    uint32_t max = 77;
    size_t running = 77, queued = 77;

    CHECK_RC(bgjob_pool_get_status(NULL, NULL, NULL), BGJOB_RESULT_OK);
    CHECK(status(&max, &running, &queued));
    CHECK_EQ(max, 0);
    CHECK_EQ(queued, 0);
    CHECK_RC(bgjob_pool_set_max_running(3), BGJOB_RESULT_OK);
    CHECK(status(&max, NULL, NULL));
    CHECK_EQ(max, 3);
    CHECK_RC(bgjob_pool_set_max_running(UINT32_MAX), BGJOB_RESULT_OK);
    CHECK(status(&max, NULL, NULL));
    CHECK_EQ(max, UINT32_MAX);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    CHECK(status(&max, NULL, NULL));
    CHECK_EQ(max, 0);
    return ok;
}

/* Cap 1: the second job waits, RUNNING, unrun; then runs when the first ends. */
static bool test_jobs_beyond_the_cap_queue_in_order(void)
{
    bool ok = true;
    struct gate gate;
    struct tracker first, later[3];
    bgjob_job *a = NULL, *b[3] = {NULL, NULL, NULL};
    size_t running = 0, queued = 0;

    gate_init(&gate);
    tracker_init(&first);
    first.gate = &gate;
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    CHECK_RC(job_create(&first, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, "capped-a", &a),
             BGJOB_RESULT_OK);
    REQUIRE(a != NULL);
    CHECK(poll_int_eq(&first.runs, 1));
    atomic_store(&order_next, 0);
    for (int i = 0; i < 3; i++) {
        tracker_init(&later[i]);
        CHECK_RC(job_create(&later[i], order_worker, 0, BGJOB_JOB_TYPE_BOUNDED, "capped-b",
                            &b[i]),
                 BGJOB_RESULT_OK);
        REQUIRE(b[i] != NULL);
        CHECK_STATE(state_of(b[i]), BGJOB_STATE_RUNNING);
    }
    CHECK(status(NULL, &running, &queued));
    CHECK_EQ(running, 1);
    CHECK_EQ(queued, 3);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(atomic_load(&later[i].runs), 0);

    gate_open(&gate);
    CHECK_STATE(wait_end(a), BGJOB_STATE_COMPLETED);
    for (int i = 0; i < 3; i++) {
        CHECK_STATE(wait_end(b[i]), BGJOB_STATE_COMPLETED);
        CHECK_EQ(atomic_load(&later[i].worker_rc), i);
        CHECK_EQ(atomic_load(&later[i].frees), 1);
        CHECK_RC(bgjob_job_destroy(b[i]), BGJOB_RESULT_OK);
    }
    CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_OK);
    CHECK(status(NULL, NULL, &queued));
    CHECK_EQ(queued, 0);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    gate_destroy(&gate);
    return ok;
}

static void count_completion(void *userdata, bgjob_job *job, int32_t state)
{
    (void)job;
    atomic_store((atomic_int *)userdata, state + 100);
}

/* A cancelled queued job ends at once, unrun, freed, its completion delivered. */
static bool test_cancel_of_a_queued_job_ends_it_unrun(void)
{
    bool ok = true;
    struct gate gate;
    struct tracker first, t;
    bgjob_job *a = NULL, *b = NULL;
    bgjob_job_options o;
    atomic_int completed = 0;
    int32_t cs = -1;
    size_t queued = 9;

    gate_init(&gate);
    tracker_init(&first);
    tracker_init(&t);
    first.gate = &gate;
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    CHECK_RC(job_create(&first, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, "capped-a", &a),
             BGJOB_RESULT_OK);
    REQUIRE(a != NULL);
    /* Running, so it holds the one slot: the previous case's last worker
     * thread may still hold it for a moment after its job was seen ended. */
    CHECK(poll_int_eq(&first.runs, 1));

    CHECK_RC(bgjob_job_options_init(&o, sizeof o), BGJOB_RESULT_OK);
    o.name = "queued";
    o.completion = count_completion;
    o.completion_userdata = &completed;
    CHECK_RC(bgjob_job_create(&o, worker_return, ud_new(&t), ud_free, &b), BGJOB_RESULT_OK);
    REQUIRE(b != NULL);
    CHECK(status(NULL, NULL, &queued));
    CHECK_EQ(queued, 1);

    CHECK_RC(bgjob_job_cancel(b, &cs), BGJOB_RESULT_OK);
    CHECK_EQ(cs, BGJOB_CANCEL_STATUS_REQUESTED);
    /* Ended before cancel returned, while the first job still holds the slot. */
    CHECK_STATE(state_of(b), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK(status(NULL, NULL, &queued));
    CHECK_EQ(queued, 0);
    CHECK(poll_int_eq(&completed, BGJOB_STATE_CANCELLED + 100));
    CHECK_RC(bgjob_job_cancel(b, &cs), BGJOB_RESULT_OK);
    CHECK_EQ(cs, BGJOB_CANCEL_STATUS_ALREADY_FINISHED);
    CHECK_RC(bgjob_job_destroy(b), BGJOB_RESULT_OK);

    gate_open(&gate);
    CHECK_STATE(wait_end(a), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.runs), 0);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    gate_destroy(&gate);
    return ok;
}

/* Detach with cancel frees a queued job; raising the cap starts a queued one. */
static bool test_detach_and_raising_the_cap(void)
{
    bool ok = true;
    struct gate gate, gate2;
    struct tracker first, detached, second;
    bgjob_job *a = NULL, *d = NULL, *b = NULL;

    gate_init(&gate);
    gate_init(&gate2);
    tracker_init(&first);
    tracker_init(&detached);
    tracker_init(&second);
    first.gate = &gate;
    second.gate = &gate2;
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    CHECK_RC(job_create(&first, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, "capped-a", &a),
             BGJOB_RESULT_OK);
    CHECK_RC(job_create(&detached, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, "capped-d", &d),
             BGJOB_RESULT_OK);
    CHECK_RC(job_create(&second, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, "capped-b", &b),
             BGJOB_RESULT_OK);
    REQUIRE(a != NULL && d != NULL && b != NULL);

    CHECK_RC(bgjob_job_detach(d, BGJOB_DETACH_CANCEL), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&detached.frees), 1);
    CHECK_EQ(atomic_load(&detached.runs), 0);

    CHECK_RC(bgjob_pool_set_max_running(2), BGJOB_RESULT_OK);
    /* The queued job runs while the first still holds its slot. */
    CHECK(poll_int_eq(&second.runs, 1));
    CHECK_EQ(atomic_load(&first.returns), 0);
    gate_open(&gate2);
    gate_open(&gate);
    CHECK_STATE(wait_end(a), BGJOB_STATE_COMPLETED);
    CHECK_STATE(wait_end(b), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(b), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    gate_destroy(&gate);
    gate_destroy(&gate2);
    return ok;
}

/* Cap 1: the thread whose job A ended runs queued B straight away. A's
 * completion reaches its context while B still runs: B waits for it (a pool
 * thread signals its job's end once it is idle or has its next work, never
 * after running that work). */
static atomic_int a_completed;

static void a_done(void *userdata, bgjob_job *job, int32_t state)
{
    (void)userdata;
    (void)job;
    atomic_store(&a_completed, state + 100);
}

static int32_t b_waits_for_a(void *userdata, bgjob_job *job)
{
    (void)userdata;
    (void)job;
    for (int i = 0; i < 10000 && atomic_load(&a_completed) == 0; i++)
        sleep_ms(1);
    return atomic_load(&a_completed) == 0 ? 1 : 0;
}

static bool test_an_ended_job_is_signalled_before_the_queued_one_runs(void)
{
    bool ok = true;
    struct gate gate;
    struct tracker first;
    bgjob_context *ctx = NULL;
    bgjob_job *a = NULL, *b = NULL;
    bgjob_job_options o;
    int fd = -1;

    gate_init(&gate);
    tracker_init(&first);
    first.gate = &gate;
    atomic_store(&a_completed, 0);
    CHECK_RC(bgjob_context_create(&ctx), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_context_get_fd(ctx, &fd), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    bgjob_job_options_init(&o, sizeof o);
    o.name = "capped-a";
    o.completion = a_done;
    o.context = ctx;
    CHECK_RC(bgjob_job_create(&o, worker_gated, ud_new(&first), ud_free, &a), BGJOB_RESULT_OK);
    REQUIRE(a != NULL);
    CHECK(poll_int_eq(&first.runs, 1));
    bgjob_job_options_init(&o, sizeof o);
    o.name = "capped-b";
    CHECK_RC(bgjob_job_create(&o, b_waits_for_a, NULL, NULL, &b), BGJOB_RESULT_OK);
    REQUIRE(b != NULL);
    gate_open(&gate);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    CHECK(poll(&p, 1, 10000) == 1);
    CHECK_RC(bgjob_context_dispatch(ctx, 0, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&a_completed), BGJOB_STATE_COMPLETED + 100);
    CHECK_STATE(wait_end(b), BGJOB_STATE_COMPLETED);
    CHECK_STATE(wait_end(a), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(b), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_context_destroy(ctx), BGJOB_RESULT_OK);
    gate_destroy(&gate);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_status_and_null_outputs),
        TAP_TEST(test_jobs_beyond_the_cap_queue_in_order),
        TAP_TEST(test_cancel_of_a_queued_job_ends_it_unrun),
        TAP_TEST(test_detach_and_raising_the_cap),
        TAP_TEST(test_an_ended_job_is_signalled_before_the_queued_one_runs),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

/*
 * test_progress.c: progress snapshots and their rules. Snapshots read by other
 * threads while the worker updates are never torn; percent out of range and
 * current going backwards are refused and change nothing; current above total
 * clamps the percent to 100; total 0 means unknown (-1); total may shrink;
 * unbounded jobs always report -1; rate, ETA and "time since progress"; no
 * update is accepted once the job has ended.
 */

#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

__extension__ typedef unsigned __int128 u128;

/* The percent bgjob must report for a bounded job that set no percent. */
static int32_t expected_percent(uint64_t current, uint64_t total)
{
    if (total == 0)
        return -1;
    u128 p = (u128)current * 100 / total;
    return p > 100 ? 100 : (int32_t)p;
}

/* A CREATED job: updates are allowed and come from this (non-worker) thread,
 * so none of them parks. */
static bgjob_job *created_job(struct tracker *t, int32_t type)
{
    bgjob_job *job = NULL;

    tracker_init(t);
    if (job_create(t, worker_return, BGJOB_CREATE_DEFER_START, type, NULL, &job) != BGJOB_RESULT_OK)
        return NULL;
    return job;
}

static bool finish_created(bgjob_job *job, struct tracker *t)
{
    bool ok = true;

    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t->frees), 1);
    CHECK_EQ(atomic_load(&t->runs), 0);
    return ok;
}

/* Reads current, total and percent; false (with a diagnostic) on error. */
static bool progress_of(bgjob_job *job, uint64_t *current, uint64_t *total, int32_t *percent)
{
    bgjob_info info;

    if (!info_of(job, &info))
        return false;
    *current = info.current;
    *total = info.total;
    *percent = info.percent;
    return true;
}

#define CHECK_PROGRESS(job, want_current, want_total, want_percent)               \
    do {                                                                          \
        uint64_t c_ = 0, t_ = 0;                                                  \
        int32_t p_ = 0;                                                           \
        if (progress_of((job), &c_, &t_, &p_)) {                                  \
            CHECK_EQ(c_, (want_current));                                         \
            CHECK_EQ(t_, (want_total));                                           \
            CHECK_EQ(p_, (want_percent));                                         \
        } else {                                                                  \
            ok = false;                                                           \
        }                                                                         \
    } while (0)

/*
 * The writer keeps, in every state it publishes, current <= total <= current +
 * 1500 (it raises total first, then current, in steps of 1000). A snapshot
 * mixing the current of one update with the total of an earlier one has
 * current > total; mixing a later total with an earlier current breaks the
 * upper bound. The percent must agree with the current and total of the same
 * snapshot, and neither may go backwards between snapshots.
 */
struct torn {
    struct tracker t;
    atomic_bool stop;
    atomic_long snapshots;
    atomic_long bad;
    bgjob_job *job;
};

static int32_t worker_torn_writer(void *userdata, bgjob_job *job)
{
    struct torn *w = (struct torn *)ud_tracker(userdata);
    uint64_t i = 0;

    atomic_fetch_add(&w->t.runs, 1);
    if (bgjob_job_set_total(job, 500) != BGJOB_RESULT_OK)
        atomic_fetch_add(&w->bad, 1);
    while (!atomic_load(&w->stop) && bgjob_job_check_cancel(job) == BGJOB_RESULT_OK) {
        i++;
        if (bgjob_job_set_total(job, 1000 * i + 500) != BGJOB_RESULT_OK ||
            bgjob_job_set_current(job, 1000 * i) != BGJOB_RESULT_OK)
            atomic_fetch_add(&w->bad, 1);
        atomic_fetch_add(&w->t.iterations, 1);
    }
    atomic_fetch_add(&w->t.returns, 1);
    return 0;
}

static void *torn_reader(void *arg)
{
    struct torn *w = arg;
    uint64_t last_current = 0, last_total = 0;

    while (!atomic_load(&w->stop)) {
        bgjob_info info;

        memset(&info, 0, sizeof(info));
        info.struct_size = sizeof(info);
        if (bgjob_job_get_info(w->job, &info) != BGJOB_RESULT_OK) {
            atomic_fetch_add(&w->bad, 1);
            break;
        }
        bool good = info.current <= info.total && info.total <= info.current + 1500 &&
                    info.percent == expected_percent(info.current, info.total) &&
                    info.current >= last_current && info.total >= last_total;
        /* The worker may have returned since `stop` was read: a completed
         * job reports 100 whatever its units say. */
        if (info.state == BGJOB_STATE_COMPLETED)
            good = true;
        if (!good) {
            if (atomic_fetch_add(&w->bad, 1) < 5)
                tap_diag("torn or inconsistent snapshot: current %llu total %llu percent %d "
                         "(previous current %llu total %llu)",
                         (unsigned long long)info.current, (unsigned long long)info.total,
                         info.percent, (unsigned long long)last_current,
                         (unsigned long long)last_total);
        }
        last_current = info.current;
        last_total = info.total;
        atomic_fetch_add(&w->snapshots, 1);
    }
    return NULL;
}

static bool test_snapshots_never_torn(void)
{
    enum { READERS = 2 };
    bool ok = true;
    struct torn w;
    pthread_t readers[READERS];
    int64_t deadline;

    tracker_init(&w.t);
    atomic_init(&w.stop, false);
    atomic_init(&w.snapshots, 0);
    atomic_init(&w.bad, 0);
    w.job = NULL;
    CHECK_RC(job_create(&w.t, worker_torn_writer, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED,
                        NULL, &w.job),
             BGJOB_RESULT_OK);
    REQUIRE(w.job != NULL);
    for (int i = 0; i < READERS; i++)
        if (pthread_create(&readers[i], NULL, torn_reader, &w) != 0)
            abort();
    CHECK_RC(bgjob_job_start(w.job), BGJOB_RESULT_OK);
    /* Run until both sides did plenty, or half a second passed. */
    deadline = now_ms() + 500;
    while (now_ms() < deadline &&
           (atomic_load(&w.t.iterations) < 200000 || atomic_load(&w.snapshots) < 200000))
        sleep_ms(5);
    atomic_store(&w.stop, true);
    for (int i = 0; i < READERS; i++)
        pthread_join(readers[i], NULL);
    CHECK_STATE(wait_end(w.job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&w.bad), 0);
    CHECK(atomic_load(&w.snapshots) > 0);
    CHECK(atomic_load(&w.t.iterations) > 0);
    tap_diag("%ld updates, %ld snapshots", atomic_load(&w.t.iterations) * 2,
             atomic_load(&w.snapshots));
    CHECK_RC(bgjob_job_destroy(w.job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&w.t.frees), 1);
    return ok;
}

static bool test_percent_out_of_range(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = created_job(&t, BGJOB_JOB_TYPE_BOUNDED);

    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_set_total(job, 200), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_current(job, 50), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, 50, 200, 25);

    CHECK_RC(bgjob_job_set_percent(job, 101), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_PROGRESS(job, 50, 200, 25);
    CHECK_RC(bgjob_job_set_percent(job, -2), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_PROGRESS(job, 50, 200, 25);
    CHECK_RC(bgjob_job_set_percent(job, INT32_MIN), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_set_percent(job, INT32_MAX), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_PROGRESS(job, 50, 200, 25);

    /* In range: a worker-set percent wins over units, -1 goes back to units. */
    CHECK_RC(bgjob_job_set_percent(job, 60), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, 50, 200, 60);
    CHECK_RC(bgjob_job_set_percent(job, 101), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_PROGRESS(job, 50, 200, 60);
    CHECK_RC(bgjob_job_set_percent(job, 0), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, 50, 200, 0);
    CHECK_RC(bgjob_job_set_percent(job, 100), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, 50, 200, 100);
    CHECK_RC(bgjob_job_set_percent(job, -1), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, 50, 200, 25);
    return finish_created(job, &t) && ok;
}

static bool test_current_backwards(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = created_job(&t, BGJOB_JOB_TYPE_BOUNDED);

    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_set_total(job, 100), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_current(job, 50), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_current(job, 49), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_PROGRESS(job, 50, 100, 50);
    CHECK_RC(bgjob_job_set_current(job, 0), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_PROGRESS(job, 50, 100, 50);
    /* The same value is not backwards. */
    CHECK_RC(bgjob_job_set_current(job, 50), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_add_units(job, 0), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_add_units(job, 5), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, 55, 100, 55);
    CHECK_RC(bgjob_job_set_current(job, 54), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_PROGRESS(job, 55, 100, 55);
    /* add_units saturates instead of wrapping. */
    CHECK_RC(bgjob_job_set_current(job, UINT64_MAX - 1), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_add_units(job, 10), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, UINT64_MAX, 100, 100);
    CHECK_RC(bgjob_job_set_total(job, UINT64_MAX), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, UINT64_MAX, UINT64_MAX, 100);
    return finish_created(job, &t) && ok;
}

static bool test_current_above_total(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = created_job(&t, BGJOB_JOB_TYPE_BOUNDED);

    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_set_total(job, 10), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_current(job, 25), BGJOB_RESULT_OK);
    /* Kept as given; the percent is clamped. */
    CHECK_PROGRESS(job, 25, 10, 100);
    CHECK_RC(bgjob_job_set_total(job, 1), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, 25, 1, 100);
    /* Large values do not overflow the percent computation. */
    CHECK_RC(bgjob_job_set_total(job, UINT64_MAX), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_current(job, UINT64_MAX / 2), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, UINT64_MAX / 2, UINT64_MAX, 49);
    return finish_created(job, &t) && ok;
}

static bool test_total_zero_is_unknown(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = created_job(&t, BGJOB_JOB_TYPE_BOUNDED);

    REQUIRE(job != NULL);
    CHECK_PROGRESS(job, 0, 0, -1);
    CHECK_RC(bgjob_job_set_current(job, 5), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, 5, 0, -1);
    CHECK_RC(bgjob_job_set_total(job, 10), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, 5, 10, 50);
    CHECK_RC(bgjob_job_set_total(job, 0), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, 5, 0, -1);
    return finish_created(job, &t) && ok;
}

static bool test_total_may_shrink_and_grow(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = created_job(&t, BGJOB_JOB_TYPE_BOUNDED);

    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_set_total(job, 100), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_current(job, 50), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, 50, 100, 50);
    CHECK_RC(bgjob_job_set_total(job, 80), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, 50, 80, 62);
    CHECK_RC(bgjob_job_set_total(job, 40), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, 50, 40, 100);
    CHECK_RC(bgjob_job_set_total(job, 200), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, 50, 200, 25);
    return finish_created(job, &t) && ok;
}

static bool test_unbounded_percent_unknown(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = created_job(&t, BGJOB_JOB_TYPE_UNBOUNDED);
    bgjob_info info;

    REQUIRE(job != NULL);
    CHECK_PROGRESS(job, 0, 0, -1);
    CHECK_RC(bgjob_job_set_total(job, 100), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_current(job, 50), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, 50, 100, -1);
    CHECK_RC(bgjob_job_set_percent(job, 50), BGJOB_RESULT_OK);
    CHECK_PROGRESS(job, 50, 100, -1);
    if (info_of(job, &info)) {
        CHECK_EQ(info.job_type, BGJOB_JOB_TYPE_UNBOUNDED);
        CHECK_EQ(info.remaining_ms, -1);
    }
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    /* Also once completed. */
    if (info_of(job, &info)) {
        CHECK_EQ(info.percent, -1);
        CHECK_EQ(info.remaining_ms, 0);
        CHECK_EQ(info.current, 50);
    }
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

/* An unbounded job doing real work from its worker still reports -1. */
static bool test_unbounded_worker_progress(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    bgjob_info info;

    tracker_init(&t);
    t.step = 7;
    CHECK_RC(job_create(&t, worker_progress, 0, BGJOB_JOB_TYPE_UNBOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(poll_long_ge(&t.iterations, 5));
    if (info_of(job, &info)) {
        CHECK_EQ(info.percent, -1);
        CHECK(info.current >= 5 * 7);
        CHECK(info.since_progress_ms >= 0);
    }
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    if (info_of(job, &info)) {
        CHECK_EQ(info.percent, -1);
        CHECK_EQ(info.current, (uint64_t)atomic_load(&t.iterations) * 7);
    }
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* A bounded job that completes reports 100 whatever its units said. */
static bool test_completed_is_100(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = created_job(&t, BGJOB_JOB_TYPE_BOUNDED);
    bgjob_info info;

    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_set_total(job, 1000), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_current(job, 10), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    if (info_of(job, &info)) {
        CHECK_EQ(info.percent, 100);
        CHECK_EQ(info.current, 10);
        CHECK_EQ(info.total, 1000);
        CHECK_EQ(info.remaining_ms, 0);
    }
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_since_progress_rate_and_eta(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    bgjob_job *job = NULL;
    bgjob_info info;

    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    CHECK_RC(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    if (job == NULL) {
        gate_destroy(&g);
        return false;
    }
    if (info_of(job, &info)) {
        CHECK_EQ(info.since_progress_ms, -1);
        CHECK(info.rate == -1.0);
        CHECK_EQ(info.remaining_ms, -1);
    }
    /* The stamps come from the coarse clock: two of its ticks of slack
     * either way (a tick may come late on a loaded VM, and the exact bound
     * under a measured lag is checked in progress/tests.rs). */
    struct timespec res;
    int64_t slack_ms = 20;
    if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0)
        slack_ms = 2 * ((int64_t)res.tv_sec * 1000 + res.tv_nsec / 1000000) + 1;
    CHECK_RC(bgjob_job_set_total(job, 1000000), BGJOB_RESULT_OK);
    int64_t before_update = now_ms();
    CHECK_RC(bgjob_job_set_current(job, 1000), BGJOB_RESULT_OK);
    sleep_ms(30);
    if (info_of(job, &info)) {
        /* About the 30 ms that passed. */
        CHECK(info.since_progress_ms >= 30 - slack_ms);
        CHECKF(info.since_progress_ms <= now_ms() - before_update + slack_ms, "since_progress %lld ms",
               (long long)info.since_progress_ms);
        CHECK(info.rate > 0);
        /* From the rate: 999000 units left at a positive rate. */
        CHECK(info.remaining_ms > 0);
    }
    /* A worker-set ETA wins, and -1 hands back to the estimate. */
    CHECK_RC(bgjob_job_set_eta(job, -2), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_set_eta(job, INT64_MIN), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_set_eta(job, 5000), BGJOB_RESULT_OK);
    if (info_of(job, &info))
        CHECK(info.remaining_ms <= 5000 && info.remaining_ms > 0);
    CHECK_RC(bgjob_job_set_eta(job, 0), BGJOB_RESULT_OK);
    if (info_of(job, &info))
        CHECK_EQ(info.remaining_ms, 0);
    CHECK_RC(bgjob_job_set_eta(job, -1), BGJOB_RESULT_OK);
    if (info_of(job, &info))
        CHECK(info.remaining_ms > 0);
    /* Progress resets the time since the last one. */
    {
        int64_t before = now_ms();
        CHECK_RC(bgjob_job_add_units(job, 1), BGJOB_RESULT_OK);
        if (info_of(job, &info))
            CHECK(info.since_progress_ms >= 0 && info.since_progress_ms <= now_ms() - before + slack_ms);
    }
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    if (info_of(job, &info))
        CHECK_EQ(info.remaining_ms, 0);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

/* Once ended, every update is refused and changes nothing. */
static bool test_updates_refused_after_end(void)
{
    bool ok = true;

    for (int which = 0; which < 3; which++) {
        struct tracker t;
        bgjob_job *job = created_job(&t, BGJOB_JOB_TYPE_BOUNDED);
        char phase[32] = "";
        int32_t code = -1;

        if (job == NULL)
            return false;
        CHECK_RC(bgjob_job_set_total(job, 100), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_set_current(job, 40), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_set_phase(job, "before"), BGJOB_RESULT_OK);
        if (which == 0) {
            CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
        } else {
            t.rc = which == 1 ? 0 : 3;
            CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
        }
        int32_t end = wait_end(job);
        CHECK(end == BGJOB_STATE_CANCELLED || end == BGJOB_STATE_COMPLETED ||
              end == BGJOB_STATE_FAILED);
        CHECK_RC(bgjob_job_set_total(job, 200), BGJOB_RESULT_NOT_ALLOWED);
        CHECK_RC(bgjob_job_set_current(job, 50), BGJOB_RESULT_NOT_ALLOWED);
        CHECK_RC(bgjob_job_add_units(job, 1), BGJOB_RESULT_NOT_ALLOWED);
        CHECK_RC(bgjob_job_set_percent(job, 10), BGJOB_RESULT_NOT_ALLOWED);
        CHECK_RC(bgjob_job_set_eta(job, 10), BGJOB_RESULT_NOT_ALLOWED);
        CHECK_RC(bgjob_job_set_phase(job, "after"), BGJOB_RESULT_NOT_ALLOWED);
        CHECK_RC(bgjob_job_set_error(job, 9, "after"), BGJOB_RESULT_NOT_ALLOWED);
        {
            uint64_t c = 0, tot = 0;
            int32_t p = 0;
            if (progress_of(job, &c, &tot, &p)) {
                CHECK_EQ(c, 40);
                CHECK_EQ(tot, 100);
            }
        }
        CHECK_RC(bgjob_job_get_phase(job, phase, sizeof(phase), NULL), BGJOB_RESULT_OK);
        CHECK_STR(phase, "before");
        CHECK_RC(bgjob_job_get_error(job, &code, NULL, 0, NULL), BGJOB_RESULT_OK);
        CHECK(code != 9);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&t.frees), 1);
    }
    return ok;
}

struct backwards {
    struct tracker t;
    atomic_int first, back, again, pct;
};

/* The same rules hold for the worker's own calls. */
static int32_t worker_backwards(void *userdata, bgjob_job *job)
{
    struct backwards *b = (struct backwards *)ud_tracker(userdata);

    atomic_fetch_add(&b->t.runs, 1);
    bgjob_job_set_total(job, 100);
    atomic_store(&b->first, bgjob_job_set_current(job, 30));
    atomic_store(&b->back, bgjob_job_set_current(job, 20));
    atomic_store(&b->again, bgjob_job_set_current(job, 30));
    atomic_store(&b->pct, bgjob_job_set_percent(job, 101));
    atomic_fetch_add(&b->t.returns, 1);
    return 0;
}

static bool test_worker_side_rules(void)
{
    bool ok = true;
    struct backwards b;
    bgjob_job *job = NULL;

    tracker_init(&b.t);
    atomic_init(&b.first, -1);
    atomic_init(&b.back, -1);
    atomic_init(&b.again, -1);
    atomic_init(&b.pct, -1);
    CHECK_RC(job_create(&b.t, worker_backwards, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&b.first), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&b.back), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(atomic_load(&b.again), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&b.pct), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_PROGRESS(job, 30, 100, 100);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&b.t.frees), 1);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_snapshots_never_torn),
        TAP_TEST(test_percent_out_of_range),
        TAP_TEST(test_current_backwards),
        TAP_TEST(test_current_above_total),
        TAP_TEST(test_total_zero_is_unknown),
        TAP_TEST(test_total_may_shrink_and_grow),
        TAP_TEST(test_unbounded_percent_unknown),
        TAP_TEST(test_unbounded_worker_progress),
        TAP_TEST(test_completed_is_100),
        TAP_TEST(test_since_progress_rate_and_eta),
        TAP_TEST(test_updates_refused_after_end),
        TAP_TEST(test_worker_side_rules),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

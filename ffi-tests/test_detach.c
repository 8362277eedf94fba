/* A detached job always ends by itself: whatever it was waiting for when the
 * handle was given up (a manual finalize, an internal pause, its manual-
 * finalize transaction whose handle is gone too), it reaches one terminal
 * state, runs its completion and its commit/abort and clean exactly once, frees
 * every userdata once, and leaves no live job. */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <stdatomic.h>
#include <string.h>

/* What one detached job reports through its callbacks. */
struct ends {
    atomic_int completions, final_state;
    atomic_int commits, aborts, cleans, finalize_frees;
    atomic_bool go;      /* the worker may return */
    atomic_bool ignore_cancel;
    atomic_long pause_points;
};

static void ends_init(struct ends *e)
{
    memset(e, 0, sizeof *e);
    atomic_init(&e->final_state, -1);
}

static void on_done(void *userdata, bgjob_job *job, int32_t state)
{
    struct ends *e = userdata;
    (void)job;
    atomic_store(&e->final_state, state);
    atomic_fetch_add(&e->completions, 1);
}

static void on_commit(void *userdata, bgjob_job *job)
{
    (void)job;
    atomic_fetch_add(&((struct ends *)userdata)->commits, 1);
}

static void on_abort(void *userdata, bgjob_job *job)
{
    (void)job;
    atomic_fetch_add(&((struct ends *)userdata)->aborts, 1);
}

static void on_clean(void *userdata, bgjob_job *job)
{
    (void)job;
    atomic_fetch_add(&((struct ends *)userdata)->cleans, 1);
}

static void on_finalize_free(void *userdata)
{
    atomic_fetch_add(&((struct ends *)userdata)->finalize_frees, 1);
}

/* Pause points until `go`; returns 0 then. A cancel ends it with 125 unless
 * it ignores cancels (it still returns 0 once `go`). */
static int32_t worker(void *userdata, bgjob_job *job)
{
    struct ends *e = userdata;
    while (!atomic_load(&e->go)) {
        atomic_fetch_add(&e->pause_points, 1);
        if (bgjob_job_pause_point(job) == BGJOB_RESULT_CANCELLED &&
            !atomic_load(&e->ignore_cancel))
            return 125;
        sleep_ms(1);
    }
    return 0;
}

static bgjob_job *create(struct ends *e, uint32_t flags)
{
    bgjob_job_options o;
    bgjob_job *job = NULL;
    if (bgjob_job_options_init(&o, sizeof o) != BGJOB_RESULT_OK)
        return NULL;
    o.flags = flags;
    o.completion = on_done;
    o.completion_userdata = e;
    o.commit = on_commit;
    o.abort = on_abort;
    o.clean = on_clean;
    o.finalize_userdata = e;
    o.finalize_free = on_finalize_free;
    if (bgjob_job_create(&o, worker, e, NULL, &job) != BGJOB_RESULT_OK)
        return NULL;
    return job;
}

/* It ended once, in `want`, with commit (or abort) and clean once each, its
 * finalize userdata freed once, and it is no longer listed. */
static bool ended_by_itself(struct ends *e, uint64_t id, int32_t want, bool committed)
{
    bool ok = true;
    CHECKF(poll_int_eq(&e->completions, 1), "the detached job's completion never ran");
    CHECK_STATE(atomic_load(&e->final_state), want);
    CHECK(poll_unlisted(id));
    CHECK(poll_int_eq(&e->finalize_frees, 1));
    CHECK_EQ(atomic_load(&e->commits), committed ? 1 : 0);
    CHECK_EQ(atomic_load(&e->aborts), committed ? 0 : 1);
    CHECK_EQ(atomic_load(&e->cleans), 1);
    sleep_ms(20);
    CHECK_EQ(atomic_load(&e->completions), 1);
    return ok;
}

/* Manual finalize, detached with cancel while running; the worker still
 * succeeds. Nobody can finalize it now: it finalizes (commits) by itself. */
static bool test_detached_manual_finalize_job_ends(void)
{
    bool ok = true;
    struct ends e;
    ends_init(&e);
    atomic_store(&e.ignore_cancel, true);
    bgjob_job *job = create(&e, BGJOB_CREATE_MANUAL_FINALIZE);
    REQUIRE(job != NULL);
    uint64_t id = id_of(job);
    CHECK_RC(bgjob_job_detach(job, BGJOB_DETACH_CANCEL), BGJOB_RESULT_OK);
    atomic_store(&e.go, true);
    CHECK(ended_by_itself(&e, id, BGJOB_STATE_COMPLETED, true));
    return ok;
}

/* The same, with the cancel requested first and the detach coming while the
 * job already waits (PENDING) for its finalize. */
static bool test_detached_waiting_job_ends(void)
{
    bool ok = true;
    for (int with_cancel = 0; with_cancel < 2; with_cancel++) {
        struct ends e;
        ends_init(&e);
        atomic_store(&e.ignore_cancel, true);
        bgjob_job *job = create(&e, BGJOB_CREATE_MANUAL_FINALIZE);
        REQUIRE(job != NULL);
        uint64_t id = id_of(job);
        CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
        atomic_store(&e.go, true);
        REQUIRE(poll_state(job, BGJOB_STATE_PENDING));
        CHECK_RC(bgjob_job_detach(job, with_cancel ? BGJOB_DETACH_CANCEL : 0), BGJOB_RESULT_OK);
        CHECK(ended_by_itself(&e, id, BGJOB_STATE_COMPLETED, true));
    }
    return ok;
}

/* Under an internal pause nobody can balance once the handle is gone: the
 * detach drops it and the worker runs to its end. */
static bool test_detached_internally_paused_job_ends(void)
{
    bool ok = true;
    struct ends e;
    ends_init(&e);
    bgjob_job *job = create(&e, 0);
    REQUIRE(job != NULL);
    uint64_t id = id_of(job);
    CHECK(poll_long_ge(&e.pause_points, 1));
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    /* Parked: the pause points stop. */
    long before = -1, now = atomic_load(&e.pause_points);
    for (int i = 0; i < 100 && before != now; i++) {
        before = now;
        sleep_ms(10);
        now = atomic_load(&e.pause_points);
    }
    CHECK_EQ(before, now);
    atomic_store(&e.go, true);
    CHECK_RC(bgjob_job_detach(job, 0), BGJOB_RESULT_OK);
    CHECK(ended_by_itself(&e, id, BGJOB_STATE_COMPLETED, true));
    return ok;
}

/* A member of a manual-finalize transaction, detached while running, then the
 * transaction's handle destroyed: nobody can finalize the group now, so it
 * finalizes by itself once every member is done. */
static bool test_detached_member_of_manual_txn_ends(void)
{
    bool ok = true;
    for (int round = 0; round < 2; round++) {
        struct ends e[2];
        bgjob_job *job[2];
        uint64_t id[2];
        bgjob_txn *txn = NULL;
        CHECK_RC(bgjob_txn_create(BGJOB_TXN_MANUAL_FINALIZE, &txn), BGJOB_RESULT_OK);
        REQUIRE(txn != NULL);
        for (int i = 0; i < 2; i++) {
            ends_init(&e[i]);
            job[i] = create(&e[i], BGJOB_CREATE_DEFER_START | BGJOB_CREATE_MANUAL_FINALIZE);
            REQUIRE(job[i] != NULL);
            id[i] = id_of(job[i]);
            CHECK_RC(bgjob_txn_add(txn, job[i]), BGJOB_RESULT_OK);
        }
        CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
        /* Round 0: only the first is detached, the second stays with the
         * caller (who could finalize it, but drops it once it ended); round 1:
         * both are detached. */
        CHECK_RC(bgjob_job_detach(job[0], 0), BGJOB_RESULT_OK);
        if (round == 1)
            CHECK_RC(bgjob_job_detach(job[1], 0), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
        atomic_store(&e[0].go, true);
        atomic_store(&e[1].go, true);
        CHECK(ended_by_itself(&e[0], id[0], BGJOB_STATE_COMPLETED, true));
        if (round == 0) {
            CHECK_STATE(wait_end(job[1]), BGJOB_STATE_COMPLETED);
            CHECK_RC(bgjob_job_destroy(job[1]), BGJOB_RESULT_OK);
        }
        CHECK(ended_by_itself(&e[1], id[1], BGJOB_STATE_COMPLETED, true));
    }
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_detached_manual_finalize_job_ends),
        TAP_TEST(test_detached_waiting_job_ends),
        TAP_TEST(test_detached_internally_paused_job_ends),
        TAP_TEST(test_detached_member_of_manual_txn_ends),
    };
    return tap_run(tests, TAP_COUNT(tests));
}

/*
 * test_getinfo_race.c: bgjob_job_get_info takes no lock and no reference
 * (a status line published as the job's lock is let go, read through a
 * lock-free mirror of the handle table). These cases attack that protocol:
 *
 * - readers polling getinfo while other threads pause, resume and cancel the
 *   job, and while it completes, never see an impossible snapshot: PAUSED
 *   without pause_requested (or RUNNING with it), a terminal state and then a
 *   non-terminal one, progress going back, cancel_requested going back or
 *   without a cause, COMPLETED without percent 100 and its final progress
 *   (elapsed time is not checked: a pause or an end stamps its time before
 *   it takes the job's lock, so a read in between may count a few µs the
 *   pause then does not — as when getinfo took that lock);
 * - a destroy from one thread while several threads read the same handle:
 *   every read returns the job's own snapshot or INVALID_HANDLE, once invalid
 *   always invalid, never another job's snapshot once the slot is reused,
 *   and never a crash (run it under valgrind to see any read of freed
 *   memory: `valgrind target/c/tests/test_getinfo_race`);
 * - the same with a shared reference (bgjob_job_ref): destroying one handle
 *   leaves the other readable throughout.
 */

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READERS 3

static bool running_like(int32_t s)
{
    return s == BGJOB_STATE_RUNNING || s == BGJOB_STATE_PAUSED || s == BGJOB_STATE_READY ||
           s == BGJOB_STATE_STANDBY;
}

static bool terminal(int32_t s)
{
    return s == BGJOB_STATE_COMPLETED || s == BGJOB_STATE_FAILED || s == BGJOB_STATE_CANCELLED;
}

/* Ends at once (COMPLETED). */
static int32_t done_worker(void *userdata, bgjob_job *job)
{
    (void)userdata;
    (void)job;
    return 0;
}

/* Runs until its gate (the userdata) opens, then completes. */
static int32_t gate_worker(void *userdata, bgjob_job *job)
{
    (void)job;
    gate_wait(userdata);
    return 0;
}

/* ---- consistent snapshots under pause/resume/cancel/complete ---------------------------- */

#define TOTAL 200000u

static atomic_int stop_readers;
static atomic_long bad;
static atomic_long reads_done;

/* Adds units one at a time with a pause point after each; completes at
 * TOTAL, or ends CANCELLED on cancel. */
static int32_t pausing_worker(void *userdata, bgjob_job *job)
{
    (void)userdata;
    bgjob_job_set_total(job, TOTAL);
    for (uint64_t i = 0; i < TOTAL; i++) {
        if (bgjob_job_add_units(job, 1) != BGJOB_RESULT_OK)
            return 1;
        if (bgjob_job_pause_point(job) == BGJOB_RESULT_CANCELLED)
            return WORKER_CANCELLED_RC;
    }
    return 0;
}

static void complain(const char *what, const bgjob_info *i)
{
    if (atomic_fetch_add(&bad, 1) < 5)
        tap_diag("impossible snapshot (%s): state %d pause_requested %d cancel_requested %d "
                 "cause %d iostatus %d current %llu total %llu percent %d elapsed %lld",
                 what, (int)i->state, i->pause_requested, i->cancel_requested,
                 (int)i->cancel_cause, (int)i->iostatus, (unsigned long long)i->current,
                 (unsigned long long)i->total, i->percent, (long long)i->elapsed_ms);
}

/* Polls one job's snapshots and checks each against the rules and against
 * the one before it. */
static void *consistency_reader(void *arg)
{
    bgjob_job *job = arg;
    bgjob_info prev = {0}; /* set before use (have_prev); zeroed for -O1 -Wmaybe-uninitialized */
    bool have_prev = false;
    long n = 0;

    while (!atomic_load(&stop_readers)) {
        bgjob_info i = {.struct_size = sizeof i};
        if (bgjob_job_get_info(job, &i) != BGJOB_RESULT_OK) {
            complain("getinfo failed", &i);
            break;
        }
        n++;
        if ((i.state == BGJOB_STATE_PAUSED || i.state == BGJOB_STATE_STANDBY) &&
            !i.pause_requested)
            complain("paused without pause_requested", &i);
        if ((i.state == BGJOB_STATE_RUNNING || i.state == BGJOB_STATE_READY) && i.pause_requested)
            complain("running with pause_requested", &i);
        if (i.cancel_requested != (i.cancel_cause != BGJOB_CANCEL_CAUSE_NONE))
            complain("cancel_requested and cause disagree", &i);
        if (i.iostatus != BGJOB_IOSTATUS_OK && !i.pause_requested)
            complain("I/O error status without a user pause", &i);
        if (i.state == BGJOB_STATE_COMPLETED && (i.percent != 100 || i.current != TOTAL))
            complain("completed without its final progress", &i);
        if (i.current > TOTAL || (i.total != 0 && i.total != TOTAL))
            complain("progress never published", &i);
        if (have_prev) {
            if (terminal(prev.state) && i.state != prev.state)
                complain("left a terminal state", &i);
            if (i.current < prev.current)
                complain("progress went back", &i);
            if (prev.cancel_requested && !i.cancel_requested)
                complain("cancel request went back", &i);
        }
        prev = i;
        have_prev = true;
    }
    atomic_fetch_add(&reads_done, n);
    return NULL;
}

/* Runs `job` with READERS readers polling it while this thread pauses and
 * resumes it `flips` times, then cancels it if `cancel`; waits for its end. */
static bool run_attacked(bgjob_job *job, int flips, bool cancel, int32_t *end)
{
    pthread_t readers[READERS];
    bool ok = true;

    atomic_store(&stop_readers, 0);
    for (int k = 0; k < READERS; k++)
        REQUIRE(pthread_create(&readers[k], NULL, consistency_reader, job) == 0);
    for (int f = 0; f < flips; f++) {
        bgjob_result r = bgjob_job_pause(job);
        if (r == BGJOB_RESULT_NOT_ALLOWED)
            break; /* it ended */
        CHECK_EQ(r, BGJOB_RESULT_OK);
        sleep_us(50);
        r = bgjob_job_resume(job);
        if (r == BGJOB_RESULT_NOT_ALLOWED)
            break;
        CHECK_EQ(r, BGJOB_RESULT_OK);
    }
    if (cancel)
        bgjob_job_cancel(job, NULL);
    CHECK_EQ(bgjob_job_wait(job, LONG_MS, end), BGJOB_RESULT_OK);
    /* A few more reads of the terminal snapshot. */
    sleep_ms(5);
    atomic_store(&stop_readers, 1);
    for (int k = 0; k < READERS; k++)
        pthread_join(readers[k], NULL);
    return ok;
}

static bool test_snapshots_are_consistent_under_pause_resume_cancel(void)
{
    bool ok = true;
    bgjob_job *job = NULL;

    atomic_store(&bad, 0);
    atomic_store(&reads_done, 0);
    REQUIRE(bgjob_job_create(NULL, pausing_worker, NULL, NULL, &job) == BGJOB_RESULT_OK);
    int32_t end = -1;
    CHECK(run_attacked(job, 300, true, &end));
    CHECKF(end == BGJOB_STATE_CANCELLED || end == BGJOB_STATE_COMPLETED, "ended %d", end);
    CHECKF(atomic_load(&bad) == 0, "%ld impossible snapshots in %ld reads", atomic_load(&bad),
           atomic_load(&reads_done));
    CHECK(atomic_load(&reads_done) > 0);
    CHECK_EQ(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_snapshots_are_consistent_through_completion(void)
{
    bool ok = true;
    bgjob_job *job = NULL;
    bgjob_info i = {.struct_size = sizeof i};

    atomic_store(&bad, 0);
    atomic_store(&reads_done, 0);
    REQUIRE(bgjob_job_create(NULL, pausing_worker, NULL, NULL, &job) == BGJOB_RESULT_OK);
    int32_t end = -1;
    CHECK(run_attacked(job, 50, false, &end));
    CHECK_EQ(end, BGJOB_STATE_COMPLETED);
    CHECKF(atomic_load(&bad) == 0, "%ld impossible snapshots in %ld reads", atomic_load(&bad),
           atomic_load(&reads_done));
    CHECK_EQ(bgjob_job_get_info(job, &i), BGJOB_RESULT_OK);
    CHECK_EQ(i.state, BGJOB_STATE_COMPLETED);
    CHECK_EQ(i.percent, 100);
    CHECK_EQ(i.current, TOTAL);
    CHECK(!i.pause_requested);
    CHECK_EQ(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* ---- destroy racing getinfo ----------------------------------------------------------------- */

#define ROUNDS 150

struct target {
    /* The handle under attack, and the id of the job it names. */
    _Atomic(bgjob_job *) handle;
    _Atomic uint64_t id;
    /* Readers that have read the current round's handle at least once. */
    atomic_int ready;
    /* Bumped by the destroyer to start a round; -1 ends the readers. */
    atomic_int round;
};

static struct target tgt;
static atomic_long wrong;

static void *race_reader(void *arg)
{
    (void)arg;
    int seen_round = 0;

    for (;;) {
        int r;
        while ((r = atomic_load(&tgt.round)) == seen_round)
            sched_yield();
        if (r < 0)
            return NULL;
        seen_round = r;
        bgjob_job *h = atomic_load(&tgt.handle);
        uint64_t id = atomic_load(&tgt.id);
        bool invalid = false, told = false;
        long oks = 0;
        /* Reads until the handle has been invalid for a while. */
        for (long n = 0; n < 200000; n++) {
            bgjob_info i;
            memset(&i, 0x5e, sizeof i);
            i.struct_size = sizeof i;
            bgjob_result res = bgjob_job_get_info(h, &i);
            if (res == BGJOB_RESULT_OK) {
                oks++;
                if (invalid || i.id != id || !terminal(i.state)) {
                    if (atomic_fetch_add(&wrong, 1) < 5)
                        tap_diag("round %d: OK read after invalid=%d: id %llu (want %llu), "
                                 "state %d",
                                 r, invalid, (unsigned long long)i.id,
                                 (unsigned long long)id, (int)i.state);
                }
            } else if (res == BGJOB_RESULT_INVALID_HANDLE) {
                if (i.id != 0x5e5e5e5e5e5e5e5eull && atomic_fetch_add(&wrong, 1) < 5)
                    tap_diag("round %d: a refused read wrote its output", r);
                if (!invalid)
                    n = 200000 - 2000; /* a little more, then the next round */
                invalid = true;
            } else if (atomic_fetch_add(&wrong, 1) < 5) {
                tap_diag("round %d: getinfo returned %d", r, (int)res);
            }
            if (oks == 1 && !told) {
                told = true;
                atomic_fetch_add(&tgt.ready, 1);
            }
        }
        if (!told)
            atomic_fetch_add(&tgt.ready, 1);
    }
}

static bool test_destroy_racing_getinfo_is_safe(void)
{
    bool ok = true;
    pthread_t readers[READERS];

    atomic_store(&wrong, 0);
    atomic_store(&tgt.round, 0);
    for (int k = 0; k < READERS; k++)
        REQUIRE(pthread_create(&readers[k], NULL, race_reader, NULL) == 0);
    for (int r = 1; r <= ROUNDS; r++) {
        bgjob_job *job = NULL;
        REQUIRE(bgjob_job_create(NULL, done_worker, NULL, NULL, &job) == BGJOB_RESULT_OK);
        CHECK_EQ(wait_end(job), BGJOB_STATE_COMPLETED);
        atomic_store(&tgt.handle, job);
        atomic_store(&tgt.id, id_of(job));
        atomic_store(&tgt.ready, 0);
        atomic_store(&tgt.round, r);
        /* Destroy once a reader is reading (or soon after): the race. */
        for (int spin = 0; spin < 100000 && atomic_load(&tgt.ready) == 0; spin++)
            sched_yield();
        if (r % 3 == 0)
            sleep_us(r % 7 * 10);
        CHECK_EQ(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        /* Reuse the slot at once: a stale read must never reach this job. */
        bgjob_job *next = NULL;
        REQUIRE(bgjob_job_create(NULL, done_worker, NULL, NULL, &next) == BGJOB_RESULT_OK);
        CHECK_EQ(wait_end(next), BGJOB_STATE_COMPLETED);
        while (atomic_load(&tgt.ready) < READERS)
            sched_yield();
        CHECK_EQ(bgjob_job_destroy(next), BGJOB_RESULT_OK);
    }
    atomic_store(&tgt.round, -1);
    for (int k = 0; k < READERS; k++)
        pthread_join(readers[k], NULL);
    CHECKF(atomic_load(&wrong) == 0, "%ld wrong reads", atomic_load(&wrong));
    return ok;
}

/* A shared reference is its own slot: destroying it while readers read both
 * handles leaves the other one valid, with the same job behind it. */
struct pair {
    bgjob_job *kept, *dropped;
    uint64_t id;
    atomic_int go, stop;
    atomic_long kept_bad, dropped_after_invalid;
};

static void *pair_reader(void *arg)
{
    struct pair *p = arg;
    bool dropped_invalid = false;

    while (!atomic_load(&p->go))
        sched_yield();
    while (!atomic_load(&p->stop)) {
        bgjob_info i = {.struct_size = sizeof i};
        if (bgjob_job_get_info(p->kept, &i) != BGJOB_RESULT_OK || i.id != p->id)
            atomic_fetch_add(&p->kept_bad, 1);
        bgjob_result r = bgjob_job_get_info(p->dropped, &i);
        if (r == BGJOB_RESULT_INVALID_HANDLE)
            dropped_invalid = true;
        else if (r != BGJOB_RESULT_OK || dropped_invalid || i.id != p->id)
            atomic_fetch_add(&p->dropped_after_invalid, 1);
    }
    return NULL;
}

static bool test_destroying_a_reference_leaves_the_other_readable(void)
{
    bool ok = true;
    for (int round = 0; round < 50; round++) {
        struct pair p = {0};
        pthread_t readers[READERS];
        struct gate g;
        bgjob_job *job = NULL, *ref = NULL;

        gate_init(&g);
        REQUIRE(bgjob_job_create(NULL, gate_worker, &g, NULL, &job) == BGJOB_RESULT_OK);
        REQUIRE(bgjob_job_ref(job, &ref) == BGJOB_RESULT_OK);
        p.kept = round % 2 ? job : ref;
        p.dropped = round % 2 ? ref : job;
        p.id = id_of(job);
        for (int k = 0; k < READERS; k++)
            REQUIRE(pthread_create(&readers[k], NULL, pair_reader, &p) == 0);
        atomic_store(&p.go, 1);
        sleep_us(200);
        /* Not the last handle: released at once, in any state. */
        CHECK_EQ(bgjob_job_destroy(p.dropped), BGJOB_RESULT_OK);
        sleep_us(200);
        atomic_store(&p.stop, 1);
        for (int k = 0; k < READERS; k++)
            pthread_join(readers[k], NULL);
        CHECKF(atomic_load(&p.kept_bad) == 0, "round %d: %ld bad reads of the kept handle", round,
               atomic_load(&p.kept_bad));
        CHECKF(atomic_load(&p.dropped_after_invalid) == 0,
               "round %d: %ld reads of the destroyed handle after it was invalid", round,
               atomic_load(&p.dropped_after_invalid));
        gate_open(&g);
        CHECK(running_like(state_of(p.kept)) || terminal(state_of(p.kept)));
        CHECK_EQ(wait_end(p.kept), BGJOB_STATE_COMPLETED);
        CHECK_EQ(bgjob_job_destroy(p.kept), BGJOB_RESULT_OK);
        gate_destroy(&g);
    }
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_snapshots_are_consistent_under_pause_resume_cancel),
        TAP_TEST(test_snapshots_are_consistent_through_completion),
        TAP_TEST(test_destroy_racing_getinfo_is_safe),
        TAP_TEST(test_destroying_a_reference_leaves_the_other_readable),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

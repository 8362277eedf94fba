/* Transactions and manual finalize (QEMU's JobTxn and JOB_MANUAL_FINALIZE):
 * the scenarios of QEMU's tests/unit/test-blockjob-txn.c (single job success,
 * failure, cancel; pairs in both orders; the fail-vs-cancel race; the
 * transaction reference dropped early), commit/abort/clean order, random
 * finish orders over many iterations, manual finalize, and misuse. The QEMU
 * scenarios run again with external members (BGJOB_CREATE_EXTERNAL, ended by
 * an owner thread with bgjob_job_end), alone and mixed with threaded ones. */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define EIO_RC 5
#define MAX_MEMBERS 4

/* Finalization events, in the order they happened (all members). */
enum { EV_COMMIT = 1, EV_ABORT, EV_CLEAN, EV_DONE };
static atomic_int ev_count;
static int ev_kind[64];
static int ev_member[64];

static void ev_reset(void)
{
    atomic_store(&ev_count, 0);
}

static void ev_add(int member, int kind)
{
    int i = atomic_fetch_add(&ev_count, 1);
    if (i < 64) {
        ev_kind[i] = kind;
        ev_member[i] = member;
    }
}

/* One member: its worker waits for `go` (or a cancel), then returns `rc`. */
struct member {
    int index;
    int32_t rc;
    atomic_bool go;
    atomic_int finalize_frees;
    atomic_int completions;
    atomic_int final_state;
    /* If set: once cancelled, the worker returns only when this is non-zero
     * (a hook of its cancel has run; hooks not yet called when the worker
     * returns are dropped uncalled). */
    atomic_int *hold_until;
    bgjob_job *job;
    bool has_owner;      /* external: `owner` drives the job */
    pthread_t owner;
    /* With member_events set: what the event callback saw and did. */
    atomic_int pending_events; /* WAITING -> PENDING */
    atomic_int end_events;
    atomic_int ends_at_done;   /* end_events when the completion ran */
    atomic_int acted;          /* the callback's verb returned */
    bgjob_result act_rc;
    int32_t act_status;
};

/* If set, member_create gives each member this event callback (userdata: the
 * member). */
static bgjob_event_callback member_events;

/* Members whose bit is set here are external jobs (bit i: member i). */
static unsigned external_mask;

static int32_t member_worker(void *userdata, bgjob_job *job)
{
    struct member *m = userdata;
    while (!atomic_load(&m->go)) {
        if (bgjob_job_sleep(job, 1) == BGJOB_RESULT_CANCELLED) {
            if (m->hold_until)
                poll_int_eq(m->hold_until, 1);
            return 125;
        }
    }
    return m->rc;
}

/* An external member's owner: the worker's loop, learning of the cancel
 * from the snapshot, ending the job with bgjob_job_end. */
static void *member_owner(void *arg)
{
    struct member *m = arg;
    bgjob_job *job = m->job;
    for (;;) {
        bgjob_info info = {.struct_size = sizeof info};
        if (bgjob_job_get_info(job, &info) != BGJOB_RESULT_OK)
            return NULL;
        if (info.state != BGJOB_STATE_CREATED && info.state != BGJOB_STATE_RUNNING &&
            info.state != BGJOB_STATE_PAUSED)
            return NULL; /* ended (or its work done) without its owner */
        if (info.state != BGJOB_STATE_CREATED) {
            if (info.cancel_requested) {
                if (m->hold_until)
                    poll_int_eq(m->hold_until, 1);
                bgjob_job_end(job, 125, "cancelled");
                return NULL;
            }
            if (atomic_load(&m->go)) {
                bgjob_job_end(job, m->rc, m->rc ? "failed" : NULL);
                return NULL;
            }
        }
        sleep_ms(1);
    }
}

static void on_commit(void *userdata, bgjob_job *job)
{
    (void)job;
    ev_add(((struct member *)userdata)->index, EV_COMMIT);
}

static void on_abort(void *userdata, bgjob_job *job)
{
    (void)job;
    ev_add(((struct member *)userdata)->index, EV_ABORT);
}

static void on_clean(void *userdata, bgjob_job *job)
{
    (void)job;
    ev_add(((struct member *)userdata)->index, EV_CLEAN);
}

static void finalize_free(void *userdata)
{
    atomic_fetch_add(&((struct member *)userdata)->finalize_frees, 1);
}

static void on_done(void *userdata, bgjob_job *job, int32_t state)
{
    struct member *m = userdata;
    (void)job;
    ev_add(m->index, EV_DONE);
    atomic_store(&m->ends_at_done, atomic_load(&m->end_events));
    atomic_store(&m->final_state, state);
    atomic_fetch_add(&m->completions, 1);
}

static bool member_create(struct member *m, int index, int32_t rc, uint32_t flags)
{
    bool ok = true;
    bgjob_job_options o;
    m->index = index;
    m->rc = rc;
    atomic_init(&m->go, false);
    atomic_init(&m->finalize_frees, 0);
    atomic_init(&m->completions, 0);
    atomic_init(&m->final_state, -1);
    m->job = NULL;
    m->hold_until = NULL;
    m->has_owner = false;
    atomic_init(&m->pending_events, 0);
    atomic_init(&m->end_events, 0);
    atomic_init(&m->ends_at_done, -1);
    atomic_init(&m->acted, 0);
    m->act_rc = -1;
    m->act_status = -1;
    bool external = (external_mask >> index) & 1;
    CHECK_RC(bgjob_job_options_init(&o, sizeof o), BGJOB_RESULT_OK);
    o.flags = BGJOB_CREATE_DEFER_START | flags | (external ? BGJOB_CREATE_EXTERNAL : 0);
    o.commit = on_commit;
    o.abort = on_abort;
    o.clean = on_clean;
    o.finalize_userdata = m;
    o.finalize_free = finalize_free;
    o.completion = on_done;
    o.completion_userdata = m;
    o.event = member_events;
    o.event_userdata = m;
    CHECK_RC(bgjob_job_create(&o, external ? NULL : member_worker, m, NULL, &m->job),
             BGJOB_RESULT_OK);
    if (ok && m->job != NULL && external) {
        CHECK(pthread_create(&m->owner, NULL, member_owner, m) == 0);
        m->has_owner = ok;
    }
    return ok && m->job != NULL;
}

/* Waits for the end, checks the state and cause, destroys. */
static bool member_finish(struct member *m, int32_t want, int32_t want_cause)
{
    bool ok = true;
    CHECK_STATE(wait_end(m->job), want);
    if (m->has_owner) {
        /* The owner returns once the job ended (it reads `m`: joined before
         * the caller's members go). */
        pthread_join(m->owner, NULL);
        m->has_owner = false;
    }
    bgjob_info info;
    if (info_of(m->job, &info))
        CHECKF(info.cancel_cause == want_cause, "member %d: cancel cause %d, expected %d",
               m->index, info.cancel_cause, want_cause);
    CHECK(poll_int_eq(&m->completions, 1));
    CHECK_STATE(atomic_load(&m->final_state), want);
    CHECK_RC(bgjob_job_destroy(m->job), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&m->finalize_frees, 1));
    return ok;
}

/* Every member got commit (or abort) once and clean once, all commits/aborts
 * before any clean, and every completion after every clean. */
static bool check_events(int n, bool committed)
{
    bool ok = true;
    int count = atomic_load(&ev_count);
    CHECK_EQ(count, 3 * n);
    int first_clean = count, last_finalize = -1, first_done = count, last_clean = -1;
    for (int m = 0; m < n; m++) {
        int fin = 0, clean = 0, done = 0, wrong = 0;
        for (int i = 0; i < count && i < 64; i++) {
            if (ev_member[i] != m)
                continue;
            switch (ev_kind[i]) {
            case EV_COMMIT:
            case EV_ABORT:
                fin++;
                wrong += ev_kind[i] != (committed ? EV_COMMIT : EV_ABORT);
                break;
            case EV_CLEAN:
                clean++;
                break;
            case EV_DONE:
                done++;
                break;
            }
        }
        CHECKF(fin == 1 && clean == 1 && done == 1 && wrong == 0,
               "member %d: %d commit/abort (%d of the wrong kind), %d clean, %d completions", m,
               fin, wrong, clean, done);
    }
    for (int i = 0; i < count && i < 64; i++) {
        if (ev_kind[i] == EV_COMMIT || ev_kind[i] == EV_ABORT)
            last_finalize = i;
        if (ev_kind[i] == EV_CLEAN) {
            last_clean = i;
            if (i < first_clean)
                first_clean = i;
        }
        if (ev_kind[i] == EV_DONE && i < first_done)
            first_done = i;
    }
    CHECKF(last_finalize < first_clean, "a commit/abort ran after a clean");
    CHECKF(last_clean < first_done, "a completion ran before the last clean");
    return ok;
}

/* QEMU's test_single_job: success, failure (-EIO) and cancel. */
static bool single(int32_t rc, bool cancel, int32_t want)
{
    bool ok = true;
    struct member m;
    ev_reset();
    bgjob_txn *txn = NULL;
    CHECK_RC(bgjob_txn_create(0, &txn), BGJOB_RESULT_OK);
    REQUIRE(member_create(&m, 0, rc, 0));
    CHECK_RC(bgjob_txn_add(txn, m.job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
    if (cancel)
        CHECK_RC(bgjob_job_cancel(m.job, NULL), BGJOB_RESULT_OK);
    else
        atomic_store(&m.go, true);
    CHECK(member_finish(&m, want, cancel ? BGJOB_CANCEL_CAUSE_CALLER : BGJOB_CANCEL_CAUSE_NONE));
    CHECK(check_events(1, want == BGJOB_STATE_COMPLETED));
    CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
    return ok;
}

static bool test_single_job(void)
{
    bool ok = true;
    CHECK(single(0, false, BGJOB_STATE_COMPLETED));
    CHECK(single(EIO_RC, false, BGJOB_STATE_FAILED));
    CHECK(single(0, true, BGJOB_STATE_CANCELLED));
    return ok;
}

/* QEMU's test_pair_jobs: `fail` is 0 (none), 1 or 2 (that member returns
 * -EIO), `cancel` likewise; the transaction handle is dropped right after the
 * start. The peer of a failed or cancelled member ends CANCELLED (cause
 * TRANSACTION). The members finish in the order given by `first`. */
static bool pair(int fail, int cancel, int first)
{
    bool ok = true;
    struct member m[2];
    ev_reset();
    bgjob_txn *txn = NULL;
    CHECK_RC(bgjob_txn_create(0, &txn), BGJOB_RESULT_OK);
    for (int i = 0; i < 2; i++) {
        REQUIRE(member_create(&m[i], i, fail == i + 1 ? EIO_RC : 0, 0));
        CHECK_RC(bgjob_txn_add(txn, m[i].job), BGJOB_RESULT_OK);
    }
    CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK); /* dropped early */
    if (cancel)
        CHECK_RC(bgjob_job_cancel(m[cancel - 1].job, NULL), BGJOB_RESULT_OK);
    /* A cancelled member's work never succeeds: only the other is let go. */
    if (cancel != first + 1)
        atomic_store(&m[first].go, true);
    sleep_ms(5);
    if (cancel != 2 - first)
        atomic_store(&m[1 - first].go, true);
    bool none = fail == 0 && cancel == 0;
    for (int i = 0; i < 2; i++) {
        int32_t want, cause;
        if (none) {
            want = BGJOB_STATE_COMPLETED;
            cause = BGJOB_CANCEL_CAUSE_NONE;
        } else if (fail == i + 1) {
            want = BGJOB_STATE_FAILED;
            cause = BGJOB_CANCEL_CAUSE_NONE;
        } else if (cancel == i + 1) {
            want = BGJOB_STATE_CANCELLED;
            cause = BGJOB_CANCEL_CAUSE_CALLER;
        } else {
            want = BGJOB_STATE_CANCELLED;
            cause = BGJOB_CANCEL_CAUSE_TRANSACTION;
        }
        CHECKF(member_finish(&m[i], want, cause), "pair fail=%d cancel=%d first=%d, member %d",
               fail, cancel, first, i);
    }
    CHECK(check_events(2, none));
    return ok;
}

static bool test_pair_jobs(void)
{
    bool ok = true;
    for (int first = 0; first < 2; first++) {
        CHECK(pair(0, 0, first));
        CHECK(pair(1, 0, first));
        CHECK(pair(2, 0, first));
        CHECK(pair(0, 1, first));
        CHECK(pair(0, 2, first));
    }
    return ok;
}

/* QEMU's test_pair_jobs_fail_cancel_race: job 1 is cancelled, and job 2
 * succeeds while job 1 is being cancelled (its cancel hook lets job 2 finish
 * and waits for it). Both end CANCELLED. */
struct race {
    struct member *other;
    atomic_int hook_ran;
};

static void race_hook(void *userdata, bgjob_job *job)
{
    struct race *r = userdata;
    (void)job;
    atomic_store(&r->other->go, true);
    /* Job 2's work is done while job 1 is still being cancelled. */
    poll_state(r->other->job, BGJOB_STATE_WAITING);
    atomic_store(&r->hook_ran, 1);
}

static bool test_pair_fail_cancel_race(void)
{
    bool ok = true;
    struct member m[2];
    struct race r;
    ev_reset();
    bgjob_txn *txn = NULL;
    CHECK_RC(bgjob_txn_create(0, &txn), BGJOB_RESULT_OK);
    for (int i = 0; i < 2; i++) {
        REQUIRE(member_create(&m[i], i, 0, 0));
        CHECK_RC(bgjob_txn_add(txn, m[i].job), BGJOB_RESULT_OK);
    }
    r.other = &m[1];
    atomic_init(&r.hook_ran, 0);
    m[0].hold_until = &r.hook_ran;
    CHECK_RC(bgjob_job_add_cancel_hook(m[0].job, race_hook, &r, NULL, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(m[0].job, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&r.hook_ran), 1);
    CHECK(member_finish(&m[0], BGJOB_STATE_CANCELLED, BGJOB_CANCEL_CAUSE_CALLER));
    CHECK(member_finish(&m[1], BGJOB_STATE_CANCELLED, BGJOB_CANCEL_CAUSE_TRANSACTION));
    CHECK(check_events(2, false));
    CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
    return ok;
}

/* Many iterations: 3 members finish in a random order, at most one fails or
 * is cancelled; the outcomes and the callbacks never depend on the order. */
static bool test_random_orders(void)
{
    bool ok = true;
    unsigned seed = (unsigned)now_ms();
    tap_diag("seed %u", seed);
    srand(seed);
    int iterations = 200;
    for (int it = 0; it < iterations && ok; it++) {
        struct member m[3];
        int order[3] = {0, 1, 2};
        for (int i = 2; i > 0; i--) {
            int j = rand() % (i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        int bad = rand() % 4 - 1;      /* -1: none; else this member fails or is cancelled */
        bool by_cancel = rand() % 2;
        ev_reset();
        bgjob_txn *txn = NULL;
        CHECK_RC(bgjob_txn_create(0, &txn), BGJOB_RESULT_OK);
        for (int i = 0; i < 3; i++) {
            REQUIRE(member_create(&m[i], i, i == bad && !by_cancel ? EIO_RC : 0, 0));
            CHECK_RC(bgjob_txn_add(txn, m[i].job), BGJOB_RESULT_OK);
        }
        CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
        if (it % 2)
            CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
        for (int k = 0; k < 3; k++) {
            int i = order[k];
            if (i == bad && by_cancel)
                CHECK_RC(bgjob_job_cancel(m[i].job, NULL), BGJOB_RESULT_OK);
            else
                atomic_store(&m[i].go, true);
            if (rand() % 2)
                sleep_us(rand() % 2000);
        }
        for (int i = 0; i < 3; i++) {
            int32_t want = bad < 0                ? BGJOB_STATE_COMPLETED
                           : i == bad && !by_cancel ? BGJOB_STATE_FAILED
                                                    : BGJOB_STATE_CANCELLED;
            int32_t cause = bad < 0     ? BGJOB_CANCEL_CAUSE_NONE
                            : i == bad  ? (by_cancel ? BGJOB_CANCEL_CAUSE_CALLER : BGJOB_CANCEL_CAUSE_NONE)
                                        : BGJOB_CANCEL_CAUSE_TRANSACTION;
            CHECKF(member_finish(&m[i], want, cause), "iteration %d member %d (bad %d, %s)", it,
                   i, bad, by_cancel ? "cancel" : "fail");
        }
        CHECK(check_events(3, bad < 0));
        if (it % 2 == 0)
            CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
    }
    return ok;
}

/* Manual finalize: successful members wait in WAITING with nothing
 * committed; finalize commits and ends them. A cancel there aborts. */
static bool test_manual_finalize(void)
{
    bool ok = true;
    struct member m[2];
    for (int round = 0; round < 2; round++) {
        bool cancel = round == 1;
        ev_reset();
        bgjob_txn *txn = NULL;
        CHECK_RC(bgjob_txn_create(BGJOB_TXN_MANUAL_FINALIZE, &txn), BGJOB_RESULT_OK);
        for (int i = 0; i < 2; i++) {
            REQUIRE(member_create(&m[i], i, 0, 0));
            CHECK_RC(bgjob_txn_add(txn, m[i].job), BGJOB_RESULT_OK);
            atomic_store(&m[i].go, true);
        }
        CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
        /* Every member's work is done: the group waits for its finalize,
         * and every member says so (PENDING, no longer WAITING). */
        for (int i = 0; i < 2; i++)
            REQUIRE(poll_state(m[i].job, BGJOB_STATE_PENDING));
        sleep_ms(20);
        CHECK_EQ(atomic_load(&ev_count), 0); /* nothing committed yet */
        CHECK_STATE(state_of(m[0].job), BGJOB_STATE_PENDING);
        int32_t st = -1;
        CHECK_RC(bgjob_job_wait(m[0].job, 20, &st), BGJOB_RESULT_TIMED_OUT);
        CHECK_RC(bgjob_job_destroy(m[0].job), BGJOB_RESULT_NOT_ALLOWED);
        if (cancel) {
            CHECK_RC(bgjob_job_cancel(m[1].job, &st), BGJOB_RESULT_OK);
            CHECK_EQ(st, BGJOB_CANCEL_STATUS_REQUESTED);
            CHECK(member_finish(&m[0], BGJOB_STATE_CANCELLED, BGJOB_CANCEL_CAUSE_TRANSACTION));
            CHECK(member_finish(&m[1], BGJOB_STATE_CANCELLED, BGJOB_CANCEL_CAUSE_CALLER));
            CHECK_RC(bgjob_txn_finalize(txn), BGJOB_RESULT_NOT_ALLOWED);
        } else {
            CHECK_RC(bgjob_txn_finalize(txn), BGJOB_RESULT_OK);
            /* Commit and clean ran inside the finalize call, on this thread. */
            CHECK(atomic_load(&ev_count) >= 4);
            CHECK(member_finish(&m[0], BGJOB_STATE_COMPLETED, BGJOB_CANCEL_CAUSE_NONE));
            CHECK(member_finish(&m[1], BGJOB_STATE_COMPLETED, BGJOB_CANCEL_CAUSE_NONE));
        }
        CHECK(check_events(2, !cancel));
        CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
    }

    /* A job on its own with manual finalize. */
    ev_reset();
    struct member one;
    REQUIRE(member_create(&one, 0, 0, BGJOB_CREATE_MANUAL_FINALIZE));
    atomic_store(&one.go, true);
    CHECK_RC(bgjob_job_start(one.job), BGJOB_RESULT_OK);
    REQUIRE(poll_state(one.job, BGJOB_STATE_PENDING));
    CHECK_EQ(atomic_load(&ev_count), 0);
    CHECK_RC(bgjob_job_finalize(one.job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_finalize(one.job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK(member_finish(&one, BGJOB_STATE_COMPLETED, BGJOB_CANCEL_CAUSE_NONE));
    CHECK(check_events(1, true));

    /* A failed manual-finalize job is finalized (aborted) at once. */
    ev_reset();
    REQUIRE(member_create(&one, 0, EIO_RC, BGJOB_CREATE_MANUAL_FINALIZE));
    atomic_store(&one.go, true);
    CHECK_RC(bgjob_job_start(one.job), BGJOB_RESULT_OK);
    CHECK(member_finish(&one, BGJOB_STATE_FAILED, BGJOB_CANCEL_CAUSE_NONE));
    CHECK(check_events(1, false));
    return ok;
}

/* A member's completion (no context) may wait for a sibling: every member is
 * terminal before any completion runs, and each runs on a thread that is no
 * other member's worker (the last worker's own completion runs on it; the
 * others on bgjob threads of their own), so nothing waits for itself. */
struct sibling {
    bgjob_job *job;
    struct sibling *other;
    atomic_bool go;
    pthread_t worker_thread;
    pthread_t completion_thread;
    atomic_int wait_rc, wait_state, completions;
};

static int32_t sibling_worker(void *userdata, bgjob_job *job)
{
    struct sibling *s = userdata;
    s->worker_thread = pthread_self();
    while (!atomic_load(&s->go))
        if (bgjob_job_sleep(job, 1) == BGJOB_RESULT_CANCELLED)
            return 125;
    return 0;
}

static void sibling_done(void *userdata, bgjob_job *job, int32_t state)
{
    struct sibling *s = userdata;
    (void)job;
    (void)state;
    s->completion_thread = pthread_self();
    int32_t st = -1;
    /* Bounded, so the deadlock shows as a result instead of a hang. */
    atomic_store(&s->wait_rc, bgjob_job_wait(s->other->job, 5000, &st));
    atomic_store(&s->wait_state, st);
    atomic_fetch_add(&s->completions, 1);
}

static bool test_member_completion_may_wait_for_a_sibling(void)
{
    bool ok = true;
    for (int round = 0; round < 4; round++) {
        struct sibling s[2];
        bgjob_txn *txn = NULL;
        CHECK_RC(bgjob_txn_create(0, &txn), BGJOB_RESULT_OK);
        REQUIRE(txn != NULL);
        for (int i = 0; i < 2; i++) {
            s[i].other = &s[1 - i];
            atomic_init(&s[i].go, false);
            atomic_init(&s[i].wait_rc, -1);
            atomic_init(&s[i].wait_state, -1);
            atomic_init(&s[i].completions, 0);
            bgjob_job_options o;
            CHECK_RC(bgjob_job_options_init(&o, sizeof o), BGJOB_RESULT_OK);
            o.flags = BGJOB_CREATE_DEFER_START;
            o.completion = sibling_done;
            o.completion_userdata = &s[i];
            s[i].job = NULL;
            CHECK_RC(bgjob_job_create(&o, sibling_worker, &s[i], NULL, &s[i].job),
                     BGJOB_RESULT_OK);
            REQUIRE(s[i].job != NULL);
            CHECK_RC(bgjob_txn_add(txn, s[i].job), BGJOB_RESULT_OK);
        }
        CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
        /* Either order of finishing; round 2 and 3 cancel one (an abort). */
        int first = round & 1;
        if (round >= 2)
            CHECK_RC(bgjob_job_cancel(s[first].job, NULL), BGJOB_RESULT_OK);
        atomic_store(&s[first].go, true);
        sleep_ms(20);
        atomic_store(&s[1 - first].go, true);
        for (int i = 0; i < 2; i++) {
            CHECK(poll_int_eq(&s[i].completions, 1));
            CHECK_RC(atomic_load(&s[i].wait_rc), BGJOB_RESULT_OK);
            CHECK(bgjob_state_str(atomic_load(&s[i].wait_state)) != NULL);
            CHECKF(!pthread_equal(s[i].completion_thread, s[1 - i].worker_thread),
                   "round %d: member %d's completion ran on its sibling's worker thread",
                   round, i);
        }
        for (int i = 0; i < 2; i++) {
            CHECK(wait_end(s[i].job) >= BGJOB_STATE_COMPLETED);
            CHECK_RC(bgjob_job_destroy(s[i].job), BGJOB_RESULT_OK);
        }
        CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
    }
    return ok;
}

/* Event callbacks run with no bgjob lock held, transaction members' too: a
 * manual-finalize transaction's members turn PENDING when the last one's work
 * is done, under the transaction's lock, and their WAITING -> PENDING events
 * come after it is let go. So member 0's callback may cancel its job (round
 * 0: the transaction aborts) or finalize it (round 1: it commits) from that
 * event. (The events were delivered under the lock, on the last member's
 * worker thread, and the callback's verb, taking the lock again, hung there:
 * wait_end below then fails.) END still comes before each completion. */
static int act_round;

static void pending_acts(void *userdata, bgjob_job *job, const bgjob_event *ev)
{
    struct member *m = userdata;
    if (ev->kind == BGJOB_EVENT_KIND_END)
        atomic_fetch_add(&m->end_events, 1);
    if (ev->kind != BGJOB_EVENT_KIND_STATE_CHANGED || ev->old_state != BGJOB_STATE_WAITING ||
        ev->new_state != BGJOB_STATE_PENDING)
        return;
    atomic_fetch_add(&m->pending_events, 1);
    if (m->index != 0)
        return;
    if (act_round == 0)
        m->act_rc = bgjob_job_cancel(job, &m->act_status);
    else
        m->act_rc = bgjob_job_finalize(job);
    atomic_store(&m->acted, 1);
}

static bool test_pending_event_may_cancel_or_finalize(void)
{
    bool ok = true;
    member_events = pending_acts;
    for (act_round = 0; act_round < 2; act_round++) {
        bool cancel = act_round == 0;
        struct member m[2];
        ev_reset();
        bgjob_txn *txn = NULL;
        CHECK_RC(bgjob_txn_create(BGJOB_TXN_MANUAL_FINALIZE, &txn), BGJOB_RESULT_OK);
        REQUIRE(txn != NULL);
        for (int i = 0; i < 2; i++) {
            REQUIRE(member_create(&m[i], i, 0, 0));
            CHECK_RC(bgjob_txn_add(txn, m[i].job), BGJOB_RESULT_OK);
        }
        CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
        /* Member 0 done first (WAITING); member 1's worker then settles the
         * group on its own thread. */
        atomic_store(&m[0].go, true);
        CHECK(poll_state(m[0].job, BGJOB_STATE_WAITING));
        atomic_store(&m[1].go, true);
        int32_t s0 = wait_end(m[0].job);
        CHECKF(s0 >= BGJOB_STATE_COMPLETED, "round %d: member 0 did not end (%s)", act_round,
               s0 < 0 ? "the wait gave up" : bgjob_state_str(s0));
        if (s0 < BGJOB_STATE_COMPLETED) {
            member_events = NULL;
            return false; /* a thread is stuck inside bgjob: nothing to tear down */
        }
        /* The job ends inside the verb, before it returns to the callback. */
        CHECK(poll_int_eq(&m[0].acted, 1));
        CHECK_RC(m[0].act_rc, BGJOB_RESULT_OK);
        if (cancel)
            CHECK_EQ(m[0].act_status, BGJOB_CANCEL_STATUS_REQUESTED);
        CHECK(member_finish(&m[0], cancel ? BGJOB_STATE_CANCELLED : BGJOB_STATE_COMPLETED,
                            cancel ? BGJOB_CANCEL_CAUSE_CALLER : BGJOB_CANCEL_CAUSE_NONE));
        CHECK(member_finish(&m[1], cancel ? BGJOB_STATE_CANCELLED : BGJOB_STATE_COMPLETED,
                            cancel ? BGJOB_CANCEL_CAUSE_TRANSACTION : BGJOB_CANCEL_CAUSE_NONE));
        for (int i = 0; i < 2; i++) {
            CHECK_EQ(atomic_load(&m[i].pending_events), 1);
            CHECK_EQ(atomic_load(&m[i].end_events), 1);
            CHECK_EQ(atomic_load(&m[i].ends_at_done), 1); /* END before the completion */
        }
        CHECK(check_events(2, !cancel));
        CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
    }
    member_events = NULL;
    return ok;
}

/* bgjob_txn_cancel gives every member cause CALLER, whichever member's worker
 * sees the cancel and returns first (a member's end must not turn the others'
 * cause into TRANSACTION behind the caller's back). */
static bool test_txn_cancel_gives_every_member_cause_caller(void)
{
    bool ok = true;
    enum { N = 3 };
    for (int round = 0; round < 20 && ok; round++) {
        struct member m[N];
        bgjob_txn *txn = NULL;
        CHECK_RC(bgjob_txn_create(0, &txn), BGJOB_RESULT_OK);
        REQUIRE(txn != NULL);
        for (int i = 0; i < N; i++) {
            REQUIRE(member_create(&m[i], i, 0, 0));
            CHECK_RC(bgjob_txn_add(txn, m[i].job), BGJOB_RESULT_OK);
        }
        CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
        sleep_ms(round % 3);
        CHECK_RC(bgjob_txn_cancel(txn), BGJOB_RESULT_OK);
        for (int i = 0; i < N; i++)
            CHECK(member_finish(&m[i], BGJOB_STATE_CANCELLED, BGJOB_CANCEL_CAUSE_CALLER));
        CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
    }
    return ok;
}

/* Misuse: adding started, finished or already-added jobs, adding to or
 * starting a started transaction, stale and NULL transaction handles. */
static bool test_misuse(void)
{
    bool ok = true;
    struct member a, b;
    bgjob_txn *txn = NULL, *other = NULL;
    CHECK_RC(bgjob_txn_create(0, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_txn_create(8, &txn), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_txn_create(0, &txn), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_create(0, &other), BGJOB_RESULT_OK);

    REQUIRE(member_create(&a, 0, 0, 0));
    REQUIRE(member_create(&b, 1, 0, 0));
    CHECK_RC(bgjob_job_start(b.job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_add(txn, b.job), BGJOB_RESULT_NOT_ALLOWED); /* started */
    atomic_store(&b.go, true);
    CHECK_STATE(wait_end(b.job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_txn_add(txn, b.job), BGJOB_RESULT_NOT_ALLOWED); /* finished */
    CHECK(member_finish(&b, BGJOB_STATE_COMPLETED, BGJOB_CANCEL_CAUSE_NONE));

    CHECK_RC(bgjob_txn_add(txn, a.job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_add(txn, a.job), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_txn_add(other, a.job), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_txn_add(txn, NULL), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_NOT_ALLOWED);
    struct member c;
    REQUIRE(member_create(&c, 2, 0, 0));
    CHECK_RC(bgjob_txn_add(txn, c.job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_destroy(c.job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_cancel(txn), BGJOB_RESULT_OK);
    CHECK(member_finish(&a, BGJOB_STATE_CANCELLED, BGJOB_CANCEL_CAUSE_CALLER));
    CHECK_RC(bgjob_txn_finalize(txn), BGJOB_RESULT_NOT_ALLOWED);

    CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
    bgjob_txn *stale = txn;
    CHECK_RC(bgjob_txn_destroy(stale), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_txn_add(stale, NULL), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_txn_start(stale), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_txn_cancel(stale), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_txn_finalize(stale), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_txn_destroy(NULL), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_txn_start(NULL), BGJOB_RESULT_INVALID_HANDLE);
    /* A job handle is not a transaction handle. */
    CHECK_RC(bgjob_txn_start((bgjob_txn *)(void *)a.job), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_txn_destroy(other), BGJOB_RESULT_OK);

    /* Destroying a created member cancels the transaction. */
    struct member d, e;
    CHECK_RC(bgjob_txn_create(0, &txn), BGJOB_RESULT_OK);
    REQUIRE(member_create(&d, 0, 0, 0));
    REQUIRE(member_create(&e, 1, 0, 0));
    CHECK_RC(bgjob_txn_add(txn, d.job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_add(txn, e.job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(d.job), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&d.completions, 1));
    CHECK(member_finish(&e, BGJOB_STATE_CANCELLED, BGJOB_CANCEL_CAUSE_TRANSACTION));
    CHECK(poll_int_eq(&d.finalize_frees, 1));
    return ok;
}

/* A job whose add was refused because the transaction began to abort is no
 * member: destroying it (it never started) ends it CANCELLED on its own --
 * abort, clean and completion -- while the members it was meant to join have
 * not ended. (test_fuzz counted such a job as a member and took its
 * completion for one that ran before its siblings ended.) */
static bool test_refused_add_ends_on_its_own(void)
{
    bool ok = true;
    struct member a, b, c;
    atomic_int release;
    bgjob_txn *txn = NULL;
    atomic_init(&release, 0);
    ev_reset();
    CHECK_RC(bgjob_txn_create(0, &txn), BGJOB_RESULT_OK);
    REQUIRE(member_create(&a, 0, 0, 0));
    REQUIRE(member_create(&b, 1, 0, 0));
    CHECK_RC(bgjob_txn_add(txn, a.job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_add(txn, b.job), BGJOB_RESULT_OK);
    /* b alone started (the transaction did not), held once cancelled. */
    b.hold_until = &release;
    CHECK_RC(bgjob_job_start(b.job), BGJOB_RESULT_OK);
    /* a ends unstarted: the transaction aborts and cancels b, which holds. */
    CHECK_RC(bgjob_job_cancel(a.job, NULL), BGJOB_RESULT_OK);
    REQUIRE(member_create(&c, 2, 0, 0));
    CHECK_RC(bgjob_txn_add(txn, c.job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_destroy(c.job), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&c.completions, 1));
    CHECK_STATE(atomic_load(&c.final_state), BGJOB_STATE_CANCELLED);
    CHECK(poll_int_eq(&c.finalize_frees, 1));
    CHECK_EQ(atomic_load(&ev_count), 3);
    static const int c_events[3] = {EV_ABORT, EV_CLEAN, EV_DONE};
    for (int i = 0; i < 3 && i < atomic_load(&ev_count); i++)
        CHECKF(ev_member[i] == 2 && ev_kind[i] == c_events[i], "event %d: member %d kind %d", i,
               ev_member[i], ev_kind[i]);
    CHECK_STATE(state_of(a.job), BGJOB_STATE_WAITING);
    CHECK_STATE(state_of(b.job), BGJOB_STATE_RUNNING);
    CHECK_EQ(atomic_load(&a.completions) + atomic_load(&b.completions), 0);
    ev_reset();
    atomic_store(&release, 1);
    CHECK(member_finish(&a, BGJOB_STATE_CANCELLED, BGJOB_CANCEL_CAUSE_CALLER));
    CHECK(member_finish(&b, BGJOB_STATE_CANCELLED, BGJOB_CANCEL_CAUSE_TRANSACTION));
    CHECK(check_events(2, false));
    CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
    return ok;
}

/* The QEMU scenarios with external members: all of them, then mixed with
 * threaded ones (members 0 and 2 external, 1 threaded). */
#define WITH_EXTERNAL(name, mask, suffix)                                       \
    static bool name##_##suffix(void)                                         \
    {                                                                           \
        external_mask = (mask);                                                 \
        bool ok = name();                                                       \
        external_mask = 0;                                                      \
        return ok;                                                              \
    }
WITH_EXTERNAL(test_single_job, ~0u, all_external)
WITH_EXTERNAL(test_single_job, 5u, mixed)
WITH_EXTERNAL(test_pair_jobs, ~0u, all_external)
WITH_EXTERNAL(test_pair_jobs, 5u, mixed)
WITH_EXTERNAL(test_pair_fail_cancel_race, ~0u, all_external)
WITH_EXTERNAL(test_pair_fail_cancel_race, 5u, mixed)
WITH_EXTERNAL(test_random_orders, ~0u, all_external)
WITH_EXTERNAL(test_random_orders, 5u, mixed)

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_single_job),
        TAP_TEST(test_pair_jobs),
        TAP_TEST(test_pair_fail_cancel_race),
        TAP_TEST(test_random_orders),
        TAP_TEST(test_manual_finalize),
        TAP_TEST(test_member_completion_may_wait_for_a_sibling),
        TAP_TEST(test_pending_event_may_cancel_or_finalize),
        TAP_TEST(test_txn_cancel_gives_every_member_cause_caller),
        TAP_TEST(test_misuse),
        TAP_TEST(test_refused_add_ends_on_its_own),
        TAP_TEST(test_single_job_all_external),
        TAP_TEST(test_single_job_mixed),
        TAP_TEST(test_pair_jobs_all_external),
        TAP_TEST(test_pair_jobs_mixed),
        TAP_TEST(test_pair_fail_cancel_race_all_external),
        TAP_TEST(test_pair_fail_cancel_race_mixed),
        TAP_TEST(test_random_orders_all_external),
        TAP_TEST(test_random_orders_mixed),
    };
    return tap_run(tests, TAP_COUNT(tests));
}

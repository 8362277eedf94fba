/*
 * test_verbs.c: the verb × state table. bgjob_verb_allowed is walked over the
 * whole BGJOB_VERB_COUNT × BGJOB_STATE_COUNT matrix against the table written
 * here (from the header and docs/design.md); out-of-range verbs and states are
 * refused. Then, for every state (WAITING through a transaction sibling,
 * PENDING through manual finalize, READY and STANDBY through
 * bgjob_job_set_ready), each verb is actually applied to a
 * fresh job in that state: allowed verbs succeed, refused ones return
 * BGJOB_RESULT_NOT_ALLOWED and change nothing.
 */

#include "util.h"

#include <stdlib.h>
#include <string.h>

#define Y true
#define N false

/* Rows: verbs; columns: states (created, running, paused, waiting, completed,
 * failed, cancelled, ready, standby, pending, aborting). READY and STANDBY
 * accept what RUNNING and PAUSED accept, plus COMPLETE in READY; PENDING
 * accepts what WAITING accepts; ABORTING (an external job's owner reports it)
 * what WAITING accepts but FINALIZE. */
static const bool expected[BGJOB_VERB_COUNT][BGJOB_STATE_COUNT] = {
    /*                      cre run pau wai com fai can rdy stb pen abo */
    [BGJOB_VERB_START] = { Y, N, N, N, N, N, N, N, N, N, N },
    /* Allowed everywhere; on an ended job it reports ALREADY_FINISHED. */
    [BGJOB_VERB_CANCEL] = { Y, Y, Y, Y, Y, Y, Y, Y, Y, Y, Y },
    [BGJOB_VERB_PAUSE] = { N, Y, N, N, N, N, N, Y, N, N, N },
    [BGJOB_VERB_RESUME] = { N, N, Y, N, N, N, N, N, Y, N, N },
    /* Refused while the worker may still run. */
    [BGJOB_VERB_DESTROY] = { Y, N, N, N, Y, Y, Y, N, N, N, N },
    /* A CREATED job would never run. */
    [BGJOB_VERB_DETACH] = { N, Y, Y, Y, Y, Y, Y, Y, Y, Y, Y },
    [BGJOB_VERB_UPDATE] = { Y, Y, Y, N, N, N, N, Y, Y, N, N },
    /* Results are read once the job has ended. */
    [BGJOB_VERB_RESULT] = { N, N, N, N, Y, Y, Y, N, N, N, N },
    /* Internal pauses may be taken and released until the job ends. */
    [BGJOB_VERB_DRAIN] = { Y, Y, Y, Y, N, N, N, Y, Y, Y, Y },
    /* Only a job whose work is done and waits for it. */
    [BGJOB_VERB_FINALIZE] = { N, N, N, Y, N, N, N, N, N, Y, N },
    /* QEMU's job-complete: only a READY job. */
    [BGJOB_VERB_COMPLETE] = { N, N, N, N, N, N, N, Y, N, N, N },
};

/* The table above has one row per verb this file knows; a new verb must be
 * added here (and to apply_verb) before this file compiles. */
_Static_assert(BGJOB_VERB_COUNT == 11, "a verb was added: extend `expected` and apply_verb");
/* ABORTING is only an external job's (test_external_states applies verbs there). */
_Static_assert(BGJOB_STATE_COUNT == 11, "a state was added: extend `expected` and make_job");

static bool test_matrix(void)
{
    bool ok = true;

    for (int32_t v = 0; v < BGJOB_VERB_COUNT; v++) {
        for (int32_t s = 0; s < BGJOB_STATE_COUNT; s++) {
            bool allowed = !expected[v][s];

            CHECK_RC(bgjob_verb_allowed(v, s, &allowed), BGJOB_RESULT_OK);
            CHECKF(allowed == expected[v][s], "verb %s in state %s: allowed %d, expected %d",
                   bgjob_verb_str(v), bgjob_state_str(s), allowed, expected[v][s]);
        }
    }
    return ok;
}

static bool test_matrix_out_of_range(void)
{
    bool ok = true;
    static const int32_t bad_verbs[] = { -1, BGJOB_VERB_COUNT, BGJOB_VERB_COUNT + 1, 100,
                                         INT32_MIN, INT32_MAX };
    static const int32_t bad_states[] = { -1, BGJOB_STATE_COUNT, BGJOB_STATE_COUNT + 1, 100,
                                          INT32_MIN, INT32_MAX };
    bool allowed;

    for (size_t i = 0; i < sizeof(bad_verbs) / sizeof(bad_verbs[0]); i++) {
        for (int32_t s = 0; s < BGJOB_STATE_COUNT; s++) {
            allowed = true;
            CHECK_RC(bgjob_verb_allowed(bad_verbs[i], s, &allowed), BGJOB_RESULT_INVALID_ARGUMENT);
            CHECK(allowed);
            allowed = false;
            CHECK_RC(bgjob_verb_allowed(bad_verbs[i], s, &allowed), BGJOB_RESULT_INVALID_ARGUMENT);
            CHECK(!allowed);
        }
    }
    for (size_t i = 0; i < sizeof(bad_states) / sizeof(bad_states[0]); i++) {
        for (int32_t v = 0; v < BGJOB_VERB_COUNT; v++) {
            allowed = true;
            CHECK_RC(bgjob_verb_allowed(v, bad_states[i], &allowed), BGJOB_RESULT_INVALID_ARGUMENT);
            CHECK(allowed);
        }
    }
    CHECK_RC(bgjob_verb_allowed(-1, -1, &allowed), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_verb_allowed(0, 0, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_verb_allowed(-1, 0, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    return ok;
}

/* One job under test: a gated worker, so RUNNING and PAUSED hold still. The
 * tracker is heap-allocated and freed only once the job's userdata has been
 * freed, so a detached job can never write to freed memory. */
struct subject {
    struct tracker *t;
    struct gate *g;
    bgjob_job *job;
    bool handle_gone; /* destroyed or detached by the verb */
    /* WAITING only: a transaction sibling still held by its own gate. */
    struct tracker *sib_t;
    struct gate *sib_g;
    bgjob_job *sib;
    bgjob_txn *txn;
};

/* Puts a fresh job in `state`. */
static bool make_job(struct subject *sub, int32_t state)
{
    bool ok = true;
    uint32_t flags = state == BGJOB_STATE_CREATED   ? BGJOB_CREATE_DEFER_START
                     : state == BGJOB_STATE_WAITING ? BGJOB_CREATE_DEFER_START
                     : state == BGJOB_STATE_PENDING ? BGJOB_CREATE_MANUAL_FINALIZE
                                                    : 0;

    sub->t = malloc(sizeof(*sub->t));
    sub->g = malloc(sizeof(*sub->g));
    if (sub->t == NULL || sub->g == NULL)
        abort();
    tracker_init(sub->t);
    gate_init(sub->g);
    sub->t->gate = sub->g;
    sub->t->rc = state == BGJOB_STATE_FAILED ? 5 : 0;
    sub->job = NULL;
    sub->handle_gone = false;
    sub->sib_t = NULL;
    sub->sib_g = NULL;
    sub->sib = NULL;
    sub->txn = NULL;
    CHECK_RC(job_create(sub->t, worker_gated, flags, BGJOB_JOB_TYPE_BOUNDED, NULL, &sub->job),
             BGJOB_RESULT_OK);
    REQUIRE(sub->job != NULL);
    if (state == BGJOB_STATE_WAITING) {
        sub->sib_t = malloc(sizeof(*sub->sib_t));
        sub->sib_g = malloc(sizeof(*sub->sib_g));
        if (sub->sib_t == NULL || sub->sib_g == NULL)
            abort();
        tracker_init(sub->sib_t);
        gate_init(sub->sib_g);
        sub->sib_t->gate = sub->sib_g;
        REQUIRE(job_create(sub->sib_t, worker_gated, BGJOB_CREATE_DEFER_START,
                           BGJOB_JOB_TYPE_BOUNDED, NULL, &sub->sib) == BGJOB_RESULT_OK);
        REQUIRE(bgjob_txn_create(0, &sub->txn) == BGJOB_RESULT_OK);
        REQUIRE(bgjob_txn_add(sub->txn, sub->job) == BGJOB_RESULT_OK);
        REQUIRE(bgjob_txn_add(sub->txn, sub->sib) == BGJOB_RESULT_OK);
        REQUIRE(bgjob_txn_start(sub->txn) == BGJOB_RESULT_OK);
    }
    switch (state) {
    case BGJOB_STATE_CREATED:
    case BGJOB_STATE_RUNNING:
        break;
    case BGJOB_STATE_PAUSED:
        CHECK_RC(bgjob_job_pause(sub->job), BGJOB_RESULT_OK);
        break;
    case BGJOB_STATE_WAITING:
        /* Its work is done; its sibling's is not. */
        gate_open(sub->g);
        REQUIRE(poll_state(sub->job, BGJOB_STATE_WAITING));
        break;
    case BGJOB_STATE_PENDING:
        /* Manual finalize: the work is done and waits for bgjob_job_finalize. */
        gate_open(sub->g);
        REQUIRE(poll_state(sub->job, BGJOB_STATE_PENDING));
        break;
    case BGJOB_STATE_READY:
        CHECK_RC(bgjob_job_set_ready(sub->job), BGJOB_RESULT_OK);
        break;
    case BGJOB_STATE_STANDBY:
        CHECK_RC(bgjob_job_set_ready(sub->job), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_pause(sub->job), BGJOB_RESULT_OK);
        break;
    case BGJOB_STATE_COMPLETED:
    case BGJOB_STATE_FAILED:
        gate_open(sub->g);
        CHECK_STATE(wait_end(sub->job), state);
        break;
    case BGJOB_STATE_CANCELLED:
        CHECK_RC(bgjob_job_cancel(sub->job, NULL), BGJOB_RESULT_OK);
        gate_open(sub->g);
        CHECK_STATE(wait_end(sub->job), state);
        break;
    default:
        REQUIRE(false);
    }
    CHECK_STATE(state_of(sub->job), state);
    return ok;
}

/* Applies `verb` and returns what each call of it returned; "refused" only if
 * every call was NOT_ALLOWED, "allowed" only if every call was OK. */
static bool apply_verb(struct subject *sub, int32_t verb, bool *allowed)
{
    bool ok = true;
    bgjob_job *job = sub->job;
    bgjob_result r[8];
    int n = 0;

    switch (verb) {
    case BGJOB_VERB_START:
        r[n++] = bgjob_job_start(job);
        break;
    case BGJOB_VERB_CANCEL: {
        int32_t status = -1;
        r[n++] = bgjob_job_cancel(job, &status);
        break;
    }
    case BGJOB_VERB_PAUSE:
        r[n++] = bgjob_job_pause(job);
        break;
    case BGJOB_VERB_RESUME:
        r[n++] = bgjob_job_resume(job);
        break;
    case BGJOB_VERB_DESTROY:
        r[n++] = bgjob_job_destroy(job);
        sub->handle_gone = r[0] == BGJOB_RESULT_OK;
        break;
    case BGJOB_VERB_DETACH:
        r[n++] = bgjob_job_detach(job, 0);
        sub->handle_gone = r[0] == BGJOB_RESULT_OK;
        break;
    case BGJOB_VERB_UPDATE: {
        /* Every update call follows the same row. Values that are valid in
         * any state, so only the state can refuse them. */
        uint64_t cur = 0;
        bgjob_info info;
        if (info_of(job, &info))
            cur = info.current;
        r[n++] = bgjob_job_set_total(job, 100);
        r[n++] = bgjob_job_set_current(job, cur + 1);
        r[n++] = bgjob_job_add_units(job, 1);
        r[n++] = bgjob_job_set_percent(job, 10);
        r[n++] = bgjob_job_set_eta(job, 1000);
        r[n++] = bgjob_job_set_phase(job, "verb test");
        r[n++] = bgjob_job_set_error(job, 7, "verb test");
        break;
    }
    case BGJOB_VERB_RESULT: {
        void *res = (void *)sub;
        r[n++] = bgjob_job_get_result(job, &res);
        r[n++] = bgjob_job_take_result(job, &res);
        break;
    }
    case BGJOB_VERB_DRAIN:
        r[n++] = bgjob_job_pause_internal(job);
        r[n++] = bgjob_job_resume_internal(job);
        break;
    case BGJOB_VERB_FINALIZE:
        r[n++] = bgjob_job_finalize(job);
        break;
    case BGJOB_VERB_COMPLETE:
        r[n++] = bgjob_job_complete(job);
        break;
    default:
        tap_diag("no call for verb %d", verb);
        return false;
    }
    bool all_ok = true, all_refused = true;
    for (int i = 0; i < n; i++) {
        all_ok = all_ok && r[i] == BGJOB_RESULT_OK;
        all_refused = all_refused && r[i] == BGJOB_RESULT_NOT_ALLOWED;
    }
    if (!all_ok && !all_refused) {
        for (int i = 0; i < n; i++)
            tap_diag("verb %s, call %d: %s", bgjob_verb_str(verb), i, bgjob_result_str(r[i]));
        ok = false;
    }
    *allowed = all_ok;
    return ok;
}

/* Lets the job end and releases everything; waits for a detached job to free
 * its userdata before freeing the tracker. */
static bool cleanup(struct subject *sub)
{
    bool ok = true;

    gate_open(sub->g);
    if (sub->sib != NULL) {
        gate_open(sub->sib_g);
        CHECK(wait_end(sub->sib) >= BGJOB_STATE_COMPLETED);
        CHECK_RC(bgjob_job_destroy(sub->sib), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_txn_destroy(sub->txn), BGJOB_RESULT_OK);
        if (!poll_int_eq(&sub->sib_t->frees, 1)) {
            tap_diag("sibling userdata never freed; leaking its tracker");
            return false;
        }
        gate_destroy(sub->sib_g);
        free(sub->sib_g);
        free(sub->sib_t);
    }
    if (!sub->handle_gone) {
        int32_t s = state_of(sub->job);
        /* A worker let go by the gate may end while still paused. */
        if ((s == BGJOB_STATE_PAUSED || s == BGJOB_STATE_STANDBY) &&
            bgjob_job_resume(sub->job) != BGJOB_RESULT_OK)
            CHECK(state_of(sub->job) != s);
        if (s == BGJOB_STATE_PENDING)
            CHECK_RC(bgjob_job_finalize(sub->job), BGJOB_RESULT_OK);
        /* A job that never started is not waited for: destroy ends it. */
        if (s != BGJOB_STATE_CREATED)
            CHECK(wait_end(sub->job) >= BGJOB_STATE_COMPLETED);
        CHECK_RC(bgjob_job_destroy(sub->job), BGJOB_RESULT_OK);
    }
    if (!poll_int_eq(&sub->t->frees, 1)) {
        tap_diag("userdata never freed; leaking the tracker rather than freeing it under a worker");
        return false;
    }
    CHECK_EQ(atomic_load(&sub->t->free_early), 0);
    gate_destroy(sub->g);
    free(sub->g);
    free(sub->t);
    return ok;
}

static bool test_calls_agree_with_matrix(void)
{
    static const int32_t reachable[] = {
        BGJOB_STATE_CREATED,   BGJOB_STATE_RUNNING, BGJOB_STATE_PAUSED,    BGJOB_STATE_WAITING,
        BGJOB_STATE_COMPLETED, BGJOB_STATE_FAILED,  BGJOB_STATE_CANCELLED, BGJOB_STATE_READY,
        BGJOB_STATE_STANDBY,   BGJOB_STATE_PENDING,
    };
    bool ok = true;

    for (size_t i = 0; i < sizeof(reachable) / sizeof(reachable[0]); i++) {
        int32_t s = reachable[i];

        for (int32_t v = 0; v < BGJOB_VERB_COUNT; v++) {
            struct subject sub;
            bool allowed = false, table = false;

            if (!make_job(&sub, s)) {
                ok = false;
                continue;
            }
            CHECK_RC(bgjob_verb_allowed(v, s, &table), BGJOB_RESULT_OK);
            CHECK(apply_verb(&sub, v, &allowed));
            CHECKF(allowed == table, "verb %s on a %s job: the call %s, the table says %s",
                   bgjob_verb_str(v), bgjob_state_str(s), allowed ? "succeeded" : "was refused",
                   table ? "allowed" : "refused");
            /* A refused verb changed nothing. */
            if (!allowed && !sub.handle_gone)
                CHECK_STATE(state_of(sub.job), s);
            if (!cleanup(&sub))
                ok = false;
        }
    }
    return ok;
}

/* The names of verbs and states used in diagnostics are the library's own. */
static bool test_names(void)
{
    static const char *const verbs[] = { "start",   "cancel", "pause",  "resume",
                                         "destroy", "detach", "update", "result",
                                         "drain",   "finalize", "complete" };
    static const char *const states[] = { "created",   "running", "paused",  "waiting",
                                          "completed", "failed",  "cancelled", "ready",
                                          "standby",   "pending", "aborting" };
    bool ok = true;

    for (int32_t v = 0; v < BGJOB_VERB_COUNT; v++)
        CHECK_STR(bgjob_verb_str(v), verbs[v]);
    for (int32_t s = 0; s < BGJOB_STATE_COUNT; s++)
        CHECK_STR(bgjob_state_str(s), states[s]);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_matrix),
        TAP_TEST(test_matrix_out_of_range),
        TAP_TEST(test_calls_agree_with_matrix),
        TAP_TEST(test_names),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

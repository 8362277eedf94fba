/* Adversarial cases for d02f8d0: (1) under bgjob_pool_set_max_running a
 * job's cap slot is let go as soon as its worker returned when its thread
 * still runs user code for the job's end, the oldest queued job starting on
 * another thread; (2) a manual-finalize job (or transaction) finalized from
 * PENDING is WAITING while its commit/abort and clean run. Written from
 * include/bgjob.h and docs/design.md. Every wait is bounded: a hang is a
 * failure. CAPATK_ONLY=<substring> runs only the matching cases.
 *
 * On d02f8d0 (every run, 5 of 5; also against the library of d02f8d0~1,
 * so not brought by the change, but left by it):
 * - the worker's userdata_free ran after the worker returned, on its
 *   thread, with the cap slot still held (the queued job did not start):
 *   the header now says the free is part of the worker's return, and
 *   test_userdata_free_is_part_of_the_workers_return_under_the_cap holds
 *   it to that;
 * - test_queued_job_not_stranded_by_a_failed_thread_start_other_stack:
 *   a queued job whose launch failed at its predecessor's settle was put
 *   back under a new ticket; a cancel of it returned REQUESTED with it
 *   still RUNNING, and its worker ran at the next submit (fixed: it keeps
 *   its ticket, the cancel ends it unrun; a thread with a stack at least
 *   as large as it asked for now takes it, and idle threads try again to
 *   start one for it every 20 ms until one can);
 * - test_log_line_of_an_end_on_a_capped_worker_may_wait_for_the_queued_job:
 *   the end's log line was delivered on the worker thread before the slot
 *   was let go (fixed).
 * The others pass on d02f8d0; those of the WAITING change and the
 * completion/commit/END-event waits fail on d02f8d0~1, as they should. */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Helpers                                                              */

static bool poll_ge_ms(atomic_int *v, int want, int64_t ms)
{
    int64_t end = now_ms() + ms;
    while (atomic_load(v) < want) {
        if (now_ms() > end)
            return false;
        sleep_ms(1);
    }
    return true;
}

static void max_update(atomic_int *m, int now)
{
    int cur = atomic_load(m);
    while (now > cur && !atomic_compare_exchange_weak(m, &cur, now))
        ;
}

/* Polls bgjob_pool_get_status until running and queued are both 0. */
static bool pool_drains(int64_t ms, size_t *running, size_t *queued)
{
    int64_t end = now_ms() + ms;
    for (;;) {
        *running = 99;
        *queued = 99;
        bgjob_pool_get_status(NULL, running, queued);
        if (*running == 0 && *queued == 0)
            return true;
        if (now_ms() > end)
            return false;
        sleep_ms(2);
    }
}

struct status_reader {
    atomic_int stop;
    atomic_int bad;
    atomic_long samples;
    size_t max_running;   /* the largest cap in force during the case */
    size_t max_queued;
    char why[160];
};

static void *status_reader_main(void *p)
{
    struct status_reader *s = p;
    while (!atomic_load(&s->stop)) {
        uint32_t m = 0;
        size_t running = 0, queued = 0;
        bgjob_pool_get_status(&m, &running, &queued);
        atomic_fetch_add(&s->samples, 1);
        if (running > s->max_running || queued > s->max_queued) {
            if (!atomic_exchange(&s->bad, 1))
                snprintf(s->why, sizeof s->why, "cap %u running %zu queued %zu", m, running,
                         queued);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* 1. The cap with completions on the worker thread                     */

static atomic_int cw_inflight, cw_max, cw_runs, cw_completions, cw_frees, cw_seq;
static int cw_order[256];

struct cw_ud {
    int index;
};

static int32_t cw_worker(void *ud, bgjob_job *job)
{
    (void)job;
    struct cw_ud *u = ud;
    int now = atomic_fetch_add(&cw_inflight, 1) + 1;
    max_update(&cw_max, now);
    int k = atomic_fetch_add(&cw_seq, 1);
    if (k < 256)
        cw_order[k] = u->index;
    atomic_fetch_add(&cw_runs, 1);
    sleep_us(500 + (u->index % 3) * 700);
    atomic_fetch_sub(&cw_inflight, 1);
    return 0;
}

static void cw_free(void *ud)
{
    atomic_fetch_add(&cw_frees, 1);
    free(ud);
}

/* A completion on the worker thread (no context) that blocks a while: the
 * slot is let go first, so the next queued worker runs meanwhile. */
static void cw_completion(void *ud, bgjob_job *job, bgjob_state s)
{
    (void)ud;
    (void)job;
    (void)s;
    sleep_ms(4);
    atomic_fetch_add(&cw_completions, 1);
}

static bgjob_job *cw_create(int index, size_t stack, bool completion, bool commit_too)
{
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.stack_size = stack;
    if (completion)
        o.completion = cw_completion;
    (void)commit_too;
    struct cw_ud *u = malloc(sizeof *u);
    u->index = index;
    bgjob_job *j = NULL;
    if (bgjob_job_create(&o, cw_worker, u, cw_free, &j) != BGJOB_RESULT_OK)
        return NULL;
    return j;
}

static void cw_reset(void)
{
    atomic_store(&cw_inflight, 0);
    atomic_store(&cw_max, 0);
    atomic_store(&cw_runs, 0);
    atomic_store(&cw_completions, 0);
    atomic_store(&cw_frees, 0);
    atomic_store(&cw_seq, 0);
    memset(cw_order, 0xff, sizeof cw_order);
}

/* "With a cap of `n`, at most `n` workers run; a job started beyond it is
 * queued (first in, first out)" and "The cap counts workers: a slot is free
 * once its worker has returned, so when that thread still runs the job's
 * end (a completion without a context ...) the queued job starts at once on
 * another thread". Caps 1 and 2, 60 jobs of three stack sizes, each with a
 * blocking completion on its worker thread: never more than the cap inside
 * workers, the status never over the cap, FIFO under cap 1, every job runs
 * and completes once, and the pool drains to 0/0. */
static bool test_cap_holds_with_blocking_completions_and_mixed_stacks(void)
{
    bool ok = true;
    enum { N = 60 };
    static const size_t stacks[3] = { 0, 256 * 1024, 384 * 1024 };
    for (int cap = 1; cap <= 2; cap++) {
        cw_reset();
        CHECK_RC(bgjob_pool_set_max_running((uint32_t)cap), BGJOB_RESULT_OK);
        struct status_reader s;
        memset(&s, 0, sizeof s);
        s.max_running = (size_t)cap;
        s.max_queued = N;
        pthread_t th;
        REQUIRE(pthread_create(&th, NULL, status_reader_main, &s) == 0);
        bgjob_job *jobs[N];
        for (int i = 0; i < N; i++) {
            jobs[i] = cw_create(i, stacks[i % 3], true, false);
            CHECK(jobs[i] != NULL);
        }
        for (int i = 0; i < N; i++) {
            if (jobs[i] == NULL)
                continue;
            CHECK_STATE(wait_end(jobs[i]), BGJOB_STATE_COMPLETED);
        }
        CHECK(poll_ge_ms(&cw_completions, N, 10000));
        atomic_store(&s.stop, 1);
        pthread_join(th, NULL);
        for (int i = 0; i < N; i++)
            if (jobs[i] != NULL)
                bgjob_job_destroy(jobs[i]);
        CHECK_EQ(atomic_load(&cw_runs), N);
        CHECK_EQ(atomic_load(&cw_completions), N);
        CHECK_EQ(atomic_load(&cw_frees), N);
        CHECKF(atomic_load(&cw_max) <= cap, "%d workers ran at once under a cap of %d",
               atomic_load(&cw_max), cap);
        CHECKF(!atomic_load(&s.bad), "status under cap %d: %s", cap, s.why);
        if (cap == 1) {
            int bad = -1;
            for (int i = 0; i < N; i++)
                if (cw_order[i] != i) {
                    bad = i;
                    break;
                }
            CHECKF(bad < 0, "FIFO broken under cap 1: position %d ran job %d", bad,
                   bad >= 0 ? cw_order[bad] : 0);
        }
        size_t running, queued;
        CHECKF(pool_drains(5000, &running, &queued), "cap %d: status stuck at running %zu queued %zu",
               cap, running, queued);
    }
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    return ok;
}

/* "Raising or removing the cap starts queued jobs at once; lowering it
 * stops nothing". A thread flips the cap between 1, 2 and 3 while 80 jobs
 * with blocking completions (so slots are let go early all the time) run:
 * never more than 3 workers at once, every job ends, and once the cap is
 * left at 1 the pool drains to running 0, queued 0 (nothing stranded). */
struct flipper {
    atomic_int stop;
};

static void *flipper_main(void *p)
{
    struct flipper *f = p;
    unsigned k = 0;
    while (!atomic_load(&f->stop)) {
        bgjob_pool_set_max_running(1 + (k++ % 3));
        sleep_us(300);
    }
    return NULL;
}

static bool test_cap_flipping_while_slots_are_let_go_early(void)
{
    bool ok = true;
    enum { N = 80 };
    static const size_t stacks[2] = { 0, 320 * 1024 };
    cw_reset();
    CHECK_RC(bgjob_pool_set_max_running(2), BGJOB_RESULT_OK);
    struct flipper f;
    atomic_store(&f.stop, 0);
    pthread_t fth;
    REQUIRE(pthread_create(&fth, NULL, flipper_main, &f) == 0);
    struct status_reader s;
    memset(&s, 0, sizeof s);
    s.max_running = 3;
    s.max_queued = N;
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, status_reader_main, &s) == 0);
    bgjob_job *jobs[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = cw_create(i, stacks[i % 2], i % 4 != 3, false);
        CHECK(jobs[i] != NULL);
    }
    for (int i = 0; i < N; i++)
        if (jobs[i] != NULL)
            CHECK_STATE(wait_end(jobs[i]), BGJOB_STATE_COMPLETED);
    atomic_store(&f.stop, 1);
    pthread_join(fth, NULL);
    atomic_store(&s.stop, 1);
    pthread_join(th, NULL);
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    for (int i = 0; i < N; i++)
        if (jobs[i] != NULL)
            bgjob_job_destroy(jobs[i]);
    CHECK_EQ(atomic_load(&cw_runs), N);
    CHECKF(atomic_load(&cw_max) <= 3, "%d workers at once, the cap was never above 3",
           atomic_load(&cw_max));
    CHECKF(!atomic_load(&s.bad), "status: %s", s.why);
    size_t running, queued;
    CHECKF(pool_drains(5000, &running, &queued), "status stuck at running %zu queued %zu",
           running, queued);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    return ok;
}

/* ------------------------------------------------------------------ */
/* 2. User code on the ended job's thread waiting for the queued job    */

static atomic_int qb_started;

static int32_t qb_worker(void *ud, bgjob_job *job)
{
    (void)ud;
    (void)job;
    atomic_store(&qb_started, 1);
    return 0;
}

/* Waits up to `ms` for the queued job's worker; records 1 (it started) or
 * 2 (it did not). */
static void wait_for_qb(atomic_int *saw, int64_t ms)
{
    int64_t end = now_ms() + ms;
    while (!atomic_load(&qb_started) && now_ms() < end)
        sleep_ms(1);
    atomic_store(saw, atomic_load(&qb_started) ? 1 : 2);
}

struct qa {
    struct gate gate;
    atomic_int saw_free, saw_commit, saw_clean, saw_end_event, saw_completion;
    atomic_int frees;
};

static struct qa qa;

static int32_t qa_worker(void *ud, bgjob_job *job)
{
    (void)ud;
    (void)job;
    gate_wait(&qa.gate);
    return 0;
}

static void qa_userdata_free(void *ud)
{
    (void)ud;
    wait_for_qb(&qa.saw_free, 3000); /* expected to run out: B waits for this free */
}
static void qa_commit(void *ud, bgjob_job *job)
{
    (void)ud;
    (void)job;
    wait_for_qb(&qa.saw_commit, 20000);
}
static void qa_clean(void *ud, bgjob_job *job)
{
    (void)ud;
    (void)job;
    wait_for_qb(&qa.saw_clean, 20000);
}
static void qa_event(void *ud, bgjob_job *job, const bgjob_event *ev)
{
    (void)ud;
    (void)job;
    if (ev->kind == BGJOB_EVENT_KIND_END)
        wait_for_qb(&qa.saw_end_event, 20000);
}
static void qa_completion(void *ud, bgjob_job *job, bgjob_state s)
{
    (void)ud;
    (void)job;
    (void)s;
    wait_for_qb(&qa.saw_completion, 20000);
}

enum qa_kind { QA_FREE, QA_COMMIT, QA_END_EVENT, QA_COMPLETION };

/* Cap 1: A runs (gated), B is queued; A's worker returns and its thread
 * runs the given user code for A's end, which waits (20 s at most; the
 * userdata free 3 s, which B cannot start before) for B's
 * worker. "a slot is free once its worker has returned". */
static bool qa_run(enum qa_kind kind, atomic_int *saw)
{
    bool ok = true;
    memset(&qa, 0, sizeof qa);
    gate_init(&qa.gate);
    atomic_store(&qb_started, 0);
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    bgjob_free_callback ufree = NULL;
    void *ud = NULL;
    switch (kind) {
    case QA_FREE:
        ufree = qa_userdata_free;
        ud = &qa;
        break;
    case QA_COMMIT:
        o.commit = qa_commit;
        o.clean = qa_clean;
        break;
    case QA_END_EVENT:
        o.event = qa_event;
        break;
    case QA_COMPLETION:
        o.completion = qa_completion;
        break;
    }
    bgjob_job *a, *b;
    REQUIRE(bgjob_job_create(&o, qa_worker, ud, ufree, &a) == BGJOB_RESULT_OK);
    REQUIRE(bgjob_job_create(NULL, qb_worker, NULL, NULL, &b) == BGJOB_RESULT_OK);
    size_t queued = 0;
    bgjob_pool_get_status(NULL, NULL, &queued);
    CHECK_EQ(queued, 1);
    gate_open(&qa.gate);
    CHECK_STATE(wait_end(a), BGJOB_STATE_COMPLETED);
    CHECK_STATE(wait_end(b), BGJOB_STATE_COMPLETED);
    CHECK(poll_ge_ms(saw, 1, 30000));
    bgjob_job_destroy(a);
    bgjob_job_destroy(b);
    size_t running;
    CHECKF(pool_drains(5000, &running, &queued), "status stuck at running %zu queued %zu",
           running, queued);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    gate_destroy(&qa.gate);
    return ok;
}

/* The worker's `userdata_free` is part of the worker's return (the header:
 * "a slot is free once its worker has returned and its userdata was
 * freed"): the queued job starts once it returns, not while it runs (its
 * 3 s wait for it times out), and both jobs end. */
static bool test_userdata_free_is_part_of_the_workers_return_under_the_cap(void)
{
    bool ok = qa_run(QA_FREE, &qa.saw_free);
    CHECKF(atomic_load(&qa.saw_free) == 2, /* 2: it did not start */
           "the queued job started while the ended job's userdata_free ran");
    return ok;
}

/* The commit and clean of a job on its own run on its worker thread after
 * the worker returned: the queued job starts meanwhile. */
static bool test_commit_and_clean_on_a_capped_worker_may_wait_for_the_queued_job(void)
{
    bool ok = qa_run(QA_COMMIT, &qa.saw_clean);
    CHECKF(atomic_load(&qa.saw_commit) == 1, "commit: queued job did not start (saw %d)",
           atomic_load(&qa.saw_commit));
    CHECKF(atomic_load(&qa.saw_clean) == 1, "clean: queued job did not start (saw %d)",
           atomic_load(&qa.saw_clean));
    return ok;
}

/* The END event (no context: on the thread that made the change, the
 * worker thread) runs after the worker returned. */
static bool test_end_event_on_a_capped_worker_may_wait_for_the_queued_job(void)
{
    bool ok = qa_run(QA_END_EVENT, &qa.saw_end_event);
    CHECKF(atomic_load(&qa.saw_end_event) == 1, "END event: queued job did not start (saw %d)",
           atomic_load(&qa.saw_end_event));
    return ok;
}

static bool test_completion_on_a_capped_worker_may_wait_for_the_queued_job(void)
{
    bool ok = qa_run(QA_COMPLETION, &qa.saw_completion);
    CHECKF(atomic_load(&qa.saw_completion) == 1, "completion: queued job did not start (saw %d)",
           atomic_load(&qa.saw_completion));
    return ok;
}

/* ------------------------------------------------------------------ */
/* 3. A cancel of the queued job racing its launch by the ended job     */

struct race {
    atomic_int go;
    bgjob_job *victim;
    atomic_int status;
    atomic_int rc;
};

static void *race_cancel_main(void *p)
{
    struct race *r = p;
    while (!atomic_load(&r->go))
        ;
    bgjob_cancel_status st = -1;
    atomic_store(&r->rc, bgjob_job_cancel(r->victim, &st));
    atomic_store(&r->status, st);
    return NULL;
}

static atomic_int rc_completions_a, rc_completions_b;
static void rc_completion_a(void *ud, bgjob_job *job, bgjob_state s)
{
    (void)ud;
    (void)job;
    (void)s;
    atomic_fetch_add(&rc_completions_a, 1);
}
static void rc_completion_b(void *ud, bgjob_job *job, bgjob_state s)
{
    (void)job;
    atomic_fetch_add(&rc_completions_b, 1);
    atomic_store((atomic_int *)ud, s);
}

/* "A queued job that is cancelled ends CANCELLED before bgjob_job_cancel
 * returns, without its worker running ...; once a thread has taken it, its
 * worker decides as for any job." Cap 1, 300 rounds: A (gated, completion
 * on its worker thread, so its slot is let go early) and B queued (a stack
 * size of its own half the time, so it is launched on another thread); A's
 * gate opens as another thread cancels B. B must end exactly once (one
 * completion, one free), its worker at most once, CANCELLED unrun when the
 * cancel found it queued; the pool drains. */
static bool test_cancel_of_the_queued_job_racing_its_launch(void)
{
    bool ok = true;
    enum { ROUNDS = 300 };
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    int cancelled_unrun = 0, ran = 0, fails = 0;
    for (int r = 0; r < ROUNDS && fails < 5; r++) {
        struct gate g;
        gate_init(&g);
        struct tracker ta, tb;
        tracker_init(&ta);
        tracker_init(&tb);
        ta.gate = &g;
        atomic_store(&rc_completions_a, 0);
        atomic_store(&rc_completions_b, 0);
        atomic_int bstate;
        atomic_store(&bstate, -1);
        bgjob_job_options o;
        bgjob_job_options_init(&o, sizeof o);
        o.completion = rc_completion_a;
        bgjob_job *a, *b;
        REQUIRE(bgjob_job_create(&o, worker_gated, ud_new(&ta), ud_free, &a) == BGJOB_RESULT_OK);
        REQUIRE(poll_int_eq(&ta.runs, 1));
        bgjob_job_options_init(&o, sizeof o);
        o.completion = rc_completion_b;
        o.completion_userdata = &bstate;
        o.stack_size = (r & 1) ? 512 * 1024 : 0;
        REQUIRE(bgjob_job_create(&o, worker_return, ud_new(&tb), ud_free, &b) == BGJOB_RESULT_OK);
        struct race rc;
        memset(&rc, 0, sizeof rc);
        rc.victim = b;
        atomic_store(&rc.status, -1);
        pthread_t th;
        REQUIRE(pthread_create(&th, NULL, race_cancel_main, &rc) == 0);
        if (r % 3 == 0)
            sleep_us(r % 50);
        atomic_store(&rc.go, 1);
        gate_open(&g);
        pthread_join(th, NULL);
        bool local = true;
        if (atomic_load(&rc.rc) != BGJOB_RESULT_OK)
            local = false;
        bgjob_state sb = -1;
        if (bgjob_job_wait(b, 10000, &sb) != BGJOB_RESULT_OK) {
            tap_diag("round %d: B never ended (cancel status %d, runs %d)", r,
                     atomic_load(&rc.status), atomic_load(&tb.runs));
            local = false;
        }
        bgjob_state sa = -1;
        if (bgjob_job_wait(a, 10000, &sa) != BGJOB_RESULT_OK || sa != BGJOB_STATE_COMPLETED) {
            tap_diag("round %d: A did not complete (%d)", r, sa);
            local = false;
        }
        /* A's completion runs on its worker thread after A is seen ended
         * (bgjob_job_wait returns at the terminal state): waited for too, or
         * under valgrind it lands in the next round's count. */
        if (!poll_ge_ms(&rc_completions_b, 1, 5000) || !poll_ge_ms(&tb.frees, 1, 5000) ||
            !poll_ge_ms(&rc_completions_a, 1, 5000)) {
            tap_diag("round %d: B's completion %d free %d", r, atomic_load(&rc_completions_b),
                     atomic_load(&tb.frees));
            local = false;
        }
        sleep_us(200);
        if (atomic_load(&rc_completions_b) != 1 || atomic_load(&tb.frees) != 1 ||
            atomic_load(&tb.runs) > 1 || atomic_load(&rc_completions_a) != 1) {
            tap_diag("round %d: B completions %d frees %d runs %d; A completions %d", r,
                     atomic_load(&rc_completions_b), atomic_load(&tb.frees),
                     atomic_load(&tb.runs), atomic_load(&rc_completions_a));
            local = false;
        }
        if (atomic_load(&tb.runs) == 0) {
            if (sb != BGJOB_STATE_CANCELLED) {
                tap_diag("round %d: B ended %s without its worker running", r,
                         bgjob_state_str(sb));
                local = false;
            }
            cancelled_unrun++;
        } else {
            ran++;
        }
        if (atomic_load(&bstate) != sb) {
            tap_diag("round %d: completion got %d, wait %d", r, atomic_load(&bstate), sb);
            local = false;
        }
        bgjob_job_destroy(a);
        bgjob_job_destroy(b);
        gate_destroy(&g);
        if (!local) {
            ok = false;
            fails++;
        }
    }
    tap_diag("cancelled unrun %d, ran %d", cancelled_unrun, ran);
    size_t running, queued;
    CHECKF(pool_drains(5000, &running, &queued), "status stuck at running %zu queued %zu",
           running, queued);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    return ok;
}

/* ------------------------------------------------------------------ */
/* 4. No thread can be started when the slot is let go                  */

static int32_t fk_child_worker(void *ud, bgjob_job *job);

static atomic_int ns_a_completions, ns_b_runs, ns_b_completions;
static struct gate ns_gate;

static void ns_completion_a(void *ud, bgjob_job *job, bgjob_state s)
{
    (void)ud;
    (void)job;
    (void)s;
    atomic_fetch_add(&ns_a_completions, 1);
}
static void ns_completion_b(void *ud, bgjob_job *job, bgjob_state s)
{
    (void)ud;
    (void)job;
    (void)s;
    atomic_fetch_add(&ns_b_completions, 1);
}
static int32_t ns_worker_a(void *ud, bgjob_job *job)
{
    (void)ud;
    (void)job;
    gate_wait(&ns_gate);
    return 0;
}
static int32_t ns_worker_b(void *ud, bgjob_job *job)
{
    (void)ud;
    (void)job;
    atomic_fetch_add(&ns_b_runs, 1);
    return 0;
}

/* Cap 1: A runs; B is queued with a stack size no thread has; thread
 * creation then fails (RLIMIT_NPROC) while A's worker returns and its
 * completion (on its thread) runs, and A's thread ends its task; then
 * threads are allowed again. B must not be stranded: it starts, or a
 * cancel of it ends it ("A queued job that is cancelled ends
 * BGJOB_STATE_CANCELLED before bgjob_job_cancel returns"). */
static bool ns_body(bool same_stack)
{
    bool ok = true;
    gate_init(&ns_gate);
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.completion = ns_completion_a;
    bgjob_job *a, *b;
    REQUIRE(bgjob_job_create(&o, ns_worker_a, NULL, NULL, &a) == BGJOB_RESULT_OK);
    bgjob_job_options_init(&o, sizeof o);
    o.completion = ns_completion_b;
    o.stack_size = same_stack ? 0 : 1024 * 1024 + 64 * 1024;
    REQUIRE(bgjob_job_create(&o, ns_worker_b, NULL, NULL, &b) == BGJOB_RESULT_OK);
    size_t running = 0, queued = 0;
    bgjob_pool_get_status(NULL, &running, &queued);
    CHECK_EQ(running, 1);
    CHECK_EQ(queued, 1);
    REQUIRE(forbid_threads());
    gate_open(&ns_gate);
    CHECK_STATE(wait_end(a), BGJOB_STATE_COMPLETED);
    CHECK(poll_ge_ms(&ns_a_completions, 1, 5000));
    sleep_ms(200);
    CHECK(allow_threads());
    bgjob_pool_get_status(NULL, &running, &queued);
    tap_diag("threads allowed again: running %zu queued %zu, B ran %d", running, queued,
             atomic_load(&ns_b_runs));
    /* Nothing else happens in the pool now: B must start by itself. */
    /* Nothing else happens in the pool now: B must start by itself (an
     * idle thread tries again while it waits). */
    bool started = poll_ge_ms(&ns_b_runs, 1, 15000);
    CHECKF(started, "B never started once threads could be had again (running %zu queued %zu)",
           running, queued);
    if (!started) {
        bgjob_cancel_status cs = -1;
        CHECK_RC(bgjob_job_cancel(b, &cs), BGJOB_RESULT_OK);
        bgjob_state sb = -1;
        bgjob_job_get_state(b, &sb);
        CHECKF(sb == BGJOB_STATE_CANCELLED || atomic_load(&ns_b_runs) == 1,
               "cancel of the queued B returned (status %d) with B %s, unrun", cs,
               bgjob_state_str(sb));
        if (sb != BGJOB_STATE_CANCELLED) {
            /* A submit restarts the queue: the cancelled B must still end
             * without its worker running. */
            bgjob_job *c;
            if (bgjob_job_create(NULL, fk_child_worker, NULL, NULL, &c) == BGJOB_RESULT_OK) {
                bgjob_job_wait(c, 3000, NULL);
                bgjob_job_wait(b, 3000, &sb);
                tap_diag("after another submit: B %s, its worker ran %d time(s)",
                         bgjob_state_str(sb), atomic_load(&ns_b_runs));
                CHECKF(atomic_load(&ns_b_runs) == 0,
                       "the worker of B, cancelled while queued, ran later");
                bgjob_job_destroy(c);
            }
        }
    }
    bgjob_state sb = -1;
    CHECKF(bgjob_job_wait(b, 10000, &sb) == BGJOB_RESULT_OK, "B never ended");
    CHECK(poll_ge_ms(&ns_b_completions, 1, 10000));
    bgjob_pool_get_status(NULL, &running, &queued);
    CHECKF(queued == 0, "still queued: %zu (running %zu)", queued, running);
    return ok;
}

static bool ns_body_other_stack(void) { return ns_body(false); }
static bool ns_body_same_stack(void) { return ns_body(true); }

static bool test_queued_job_not_stranded_by_a_failed_thread_start_other_stack(void)
{
    bool ok = true;
    CHECK(in_child(60, ns_body_other_stack));
    return ok;
}

static bool test_queued_job_not_stranded_by_a_failed_thread_start_same_stack(void)
{
    bool ok = true;
    CHECK(in_child(60, ns_body_same_stack));
    return ok;
}

/* ------------------------------------------------------------------ */
/* 5. fork() in completions while slots are let go                      */

static atomic_int fk_children_ok, fk_children_bad, fk_completions;

static int32_t fk_child_worker(void *ud, bgjob_job *job)
{
    (void)ud;
    (void)job;
    return 0;
}

static void fk_completion(void *ud, bgjob_job *job, bgjob_state s)
{
    (void)ud;
    (void)job;
    (void)s;
    pid_t pid = fork();
    if (pid == 0) {
        alarm(10);
        /* The child has the parent's cap but none of its threads. */
        bgjob_job *j;
        int code = 1;
        if (bgjob_job_create(NULL, fk_child_worker, NULL, NULL, &j) == BGJOB_RESULT_OK) {
            bgjob_state st = -1;
            if (bgjob_job_wait(j, 5000, &st) == BGJOB_RESULT_OK && st == BGJOB_STATE_COMPLETED)
                code = 0;
            else
                code = 2;
        }
        _exit(code);
    }
    if (pid > 0) {
        int ws = 0;
        int64_t end = now_ms() + 15000;
        pid_t w;
        while ((w = waitpid(pid, &ws, WNOHANG)) == 0 && now_ms() < end)
            sleep_ms(2);
        if (w == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &ws, 0);
        }
        if (w == pid && WIFEXITED(ws) && WEXITSTATUS(ws) == 0)
            atomic_fetch_add(&fk_children_ok, 1);
        else
            atomic_fetch_add(&fk_children_bad, 1);
    } else {
        atomic_fetch_add(&fk_children_bad, 1);
    }
    atomic_fetch_add(&fk_completions, 1);
}

/* Cap 2, 12 jobs (two stack sizes), each completion (on its worker thread,
 * its slot let go just before) forks a child that runs one job under the
 * inherited cap: every child's job completes, every parent job ends, the
 * pool drains. */
static bool test_fork_in_completions_while_slots_are_let_go(void)
{
    bool ok = true;
    enum { N = 12 };
    cw_reset();
    atomic_store(&fk_children_ok, 0);
    atomic_store(&fk_children_bad, 0);
    atomic_store(&fk_completions, 0);
    CHECK_RC(bgjob_pool_set_max_running(2), BGJOB_RESULT_OK);
    bgjob_job *jobs[N];
    for (int i = 0; i < N; i++) {
        bgjob_job_options o;
        bgjob_job_options_init(&o, sizeof o);
        o.completion = fk_completion;
        o.stack_size = (i & 1) ? 288 * 1024 : 0;
        struct cw_ud *u = malloc(sizeof *u);
        u->index = i;
        CHECK_RC(bgjob_job_create(&o, cw_worker, u, cw_free, &jobs[i]), BGJOB_RESULT_OK);
    }
    for (int i = 0; i < N; i++)
        CHECK_STATE(wait_end(jobs[i]), BGJOB_STATE_COMPLETED);
    CHECK(poll_ge_ms(&fk_completions, N, 30000));
    CHECK_EQ(atomic_load(&fk_children_ok), N);
    CHECK_EQ(atomic_load(&fk_children_bad), 0);
    CHECKF(atomic_load(&cw_max) <= 2, "%d workers at once under cap 2", atomic_load(&cw_max));
    for (int i = 0; i < N; i++)
        bgjob_job_destroy(jobs[i]);
    size_t running, queued;
    CHECKF(pool_drains(5000, &running, &queued), "status stuck at running %zu queued %zu",
           running, queued);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    return ok;
}

/* ------------------------------------------------------------------ */
/* 6. Sub-jobs, transactions and manual finalize under the cap          */

static atomic_int sj_children_done;

static int32_t sj_child_worker(void *ud, bgjob_job *job)
{
    (void)job;
    int now = atomic_fetch_add(&cw_inflight, 1) + 1;
    max_update(&cw_max, now);
    sleep_ms(5);
    atomic_fetch_sub(&cw_inflight, 1);
    atomic_fetch_add(&sj_children_done, 1);
    (void)ud;
    return 0;
}

static void sj_child_completion(void *ud, bgjob_job *job, bgjob_state s)
{
    (void)ud;
    (void)job;
    (void)s;
    sleep_ms(3);
}

static atomic_int sj_create_fail;

static int32_t sj_parent_worker(void *ud, bgjob_job *job)
{
    (void)ud;
    int now = atomic_fetch_add(&cw_inflight, 1) + 1;
    max_update(&cw_max, now);
    for (int i = 0; i < 4; i++) {
        bgjob_job_options o;
        bgjob_job_options_init(&o, sizeof o);
        o.parent = job;
        o.completion = sj_child_completion;
        o.stack_size = (i & 1) ? 272 * 1024 : 0;
        bgjob_job *c;
        if (bgjob_job_create(&o, sj_child_worker, NULL, NULL, &c) != BGJOB_RESULT_OK)
            atomic_fetch_add(&sj_create_fail, 1);
        else
            bgjob_job_detach(c, 0);
    }
    atomic_fetch_sub(&cw_inflight, 1);
    return 0;
}

static atomic_int sj_parent_completion_children;
static void sj_parent_completion(void *ud, bgjob_job *job, bgjob_state s)
{
    (void)ud;
    (void)job;
    (void)s;
    atomic_store(&sj_parent_completion_children, atomic_load(&sj_children_done));
}

/* Cap 1: a parent starts 4 sub-jobs (queued behind it) and returns; it
 * "stays WAITING, then ends" after them. Its slot goes when its worker
 * returns: the children run one at a time, then the parent ends. */
static bool test_subjobs_queued_behind_their_parent_under_cap_1(void)
{
    bool ok = true;
    cw_reset();
    atomic_store(&sj_children_done, 0);
    atomic_store(&sj_create_fail, 0);
    atomic_store(&sj_parent_completion_children, -1);
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.completion = sj_parent_completion;
    bgjob_job *p;
    REQUIRE(bgjob_job_create(&o, sj_parent_worker, NULL, NULL, &p) == BGJOB_RESULT_OK);
    bgjob_state sp = -1;
    CHECKF(bgjob_job_wait(p, 10000, &sp) == BGJOB_RESULT_OK, "parent never ended");
    CHECK_STATE(sp, BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&sj_create_fail), 0);
    CHECK_EQ(atomic_load(&sj_children_done), 4);
    CHECK(poll_ge_ms(&sj_parent_completion_children, 0, 5000));
    CHECK_EQ(atomic_load(&sj_parent_completion_children), 4);
    CHECKF(atomic_load(&cw_max) <= 1, "%d workers at once under cap 1", atomic_load(&cw_max));
    bgjob_job_destroy(p);
    size_t running, queued;
    CHECKF(pool_drains(5000, &running, &queued), "status stuck at running %zu queued %zu",
           running, queued);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    return ok;
}

struct tm_member {
    atomic_int commits, aborts, cleans, completions, ends;
    atomic_int state_in_commit, state_in_clean;
    bgjob_job *self;
};

static void tm_commit(void *ud, bgjob_job *job)
{
    struct tm_member *m = ud;
    atomic_fetch_add(&m->commits, 1);
    bgjob_state s = -1;
    bgjob_job_get_state(job, &s);
    atomic_store(&m->state_in_commit, s);
    sleep_ms(2);
}
static void tm_abort(void *ud, bgjob_job *job)
{
    (void)job;
    atomic_fetch_add(&((struct tm_member *)ud)->aborts, 1);
}
static void tm_clean(void *ud, bgjob_job *job)
{
    struct tm_member *m = ud;
    atomic_fetch_add(&m->cleans, 1);
    bgjob_state s = -1;
    bgjob_job_get_state(job, &s);
    atomic_store(&m->state_in_clean, s);
}
static void tm_completion(void *ud, bgjob_job *job, bgjob_state s)
{
    (void)job;
    (void)s;
    atomic_fetch_add(&((struct tm_member *)ud)->completions, 1);
}

/* A transaction of 4 members under cap 1 (a stack size of their own for
 * two): each waits WAITING for the others with its slot let go; the last
 * worker's thread commits and cleans all of them. Never more than one
 * worker at once, every member committed, cleaned and completed once. */
static bool test_transaction_under_cap_1(void)
{
    bool ok = true;
    enum { M = 4 };
    cw_reset();
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    bgjob_txn *t;
    REQUIRE(bgjob_txn_create(0, &t) == BGJOB_RESULT_OK);
    struct tm_member m[M];
    memset(m, 0, sizeof m);
    bgjob_job *j[M];
    for (int i = 0; i < M; i++) {
        bgjob_job_options o;
        bgjob_job_options_init(&o, sizeof o);
        o.flags = BGJOB_CREATE_DEFER_START;
        o.stack_size = (i & 1) ? 304 * 1024 : 0;
        o.commit = tm_commit;
        o.abort = tm_abort;
        o.clean = tm_clean;
        o.finalize_userdata = &m[i];
        o.completion = tm_completion;
        o.completion_userdata = &m[i];
        struct cw_ud *u = malloc(sizeof *u);
        u->index = i;
        REQUIRE(bgjob_job_create(&o, cw_worker, u, cw_free, &j[i]) == BGJOB_RESULT_OK);
        CHECK_RC(bgjob_txn_add(t, j[i]), BGJOB_RESULT_OK);
    }
    CHECK_RC(bgjob_txn_start(t), BGJOB_RESULT_OK);
    for (int i = 0; i < M; i++)
        CHECK_STATE(wait_end(j[i]), BGJOB_STATE_COMPLETED);
    for (int i = 0; i < M; i++) {
        CHECK(poll_ge_ms(&m[i].completions, 1, 5000));
        CHECK_EQ(atomic_load(&m[i].commits), 1);
        CHECK_EQ(atomic_load(&m[i].aborts), 0);
        CHECK_EQ(atomic_load(&m[i].cleans), 1);
        CHECK_EQ(atomic_load(&m[i].completions), 1);
        CHECK_STATE(atomic_load(&m[i].state_in_commit), BGJOB_STATE_WAITING);
        bgjob_job_destroy(j[i]);
    }
    CHECKF(atomic_load(&cw_max) <= 1, "%d workers at once under cap 1", atomic_load(&cw_max));
    bgjob_txn_destroy(t);
    size_t running, queued;
    CHECKF(pool_drains(5000, &running, &queued), "status stuck at running %zu queued %zu",
           running, queued);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    return ok;
}

/* ------------------------------------------------------------------ */
/* 7. Manual finalize from PENDING: WAITING while commit and clean run  */

#define EV_MAX 24
struct evrec {
    pthread_mutex_t mu;
    int n;
    bgjob_state from[EV_MAX], to[EV_MAX];
    atomic_int ends;
    atomic_int end_state;
    atomic_int frees;
};

static void evrec_init(struct evrec *e)
{
    memset(e, 0, sizeof *e);
    pthread_mutex_init(&e->mu, NULL);
    atomic_store(&e->end_state, -1);
}

static void evrec_event(void *ud, bgjob_job *job, const bgjob_event *ev)
{
    (void)job;
    struct evrec *e = ud;
    if (ev->kind == BGJOB_EVENT_KIND_END) {
        atomic_fetch_add(&e->ends, 1);
        atomic_store(&e->end_state, ev->new_state);
        return;
    }
    if (ev->kind != BGJOB_EVENT_KIND_STATE_CHANGED)
        return;
    pthread_mutex_lock(&e->mu);
    if (e->n < EV_MAX) {
        e->from[e->n] = ev->old_state;
        e->to[e->n] = ev->new_state;
        e->n++;
    }
    pthread_mutex_unlock(&e->mu);
}

static void evrec_free(void *ud)
{
    atomic_fetch_add(&((struct evrec *)ud)->frees, 1);
}

/* Writes "A->B, ..." and returns whether the last three changes are
 * PENDING->WAITING->terminal(want). */
static bool evrec_tail_ok(struct evrec *e, bgjob_state want, char *buf, size_t len)
{
    pthread_mutex_lock(&e->mu);
    buf[0] = 0;
    for (int i = 0; i < e->n; i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, len - l, "%s%s->%s", i ? ", " : "", bgjob_state_str(e->from[i]),
                 bgjob_state_str(e->to[i]));
    }
    bool chain = true;
    for (int i = 1; i < e->n; i++)
        if (e->from[i] != e->to[i - 1])
            chain = false;
    bool ok = chain && e->n >= 2 && e->from[e->n - 2] == BGJOB_STATE_PENDING &&
              e->to[e->n - 2] == BGJOB_STATE_WAITING && e->from[e->n - 1] == BGJOB_STATE_WAITING &&
              e->to[e->n - 1] == want;
    pthread_mutex_unlock(&e->mu);
    return ok;
}

struct vc {
    struct gate hold;          /* commit blocks here when `block` */
    bool block;
    atomic_int in_commit;
    atomic_int commits, aborts, cleans, completions, fin_frees;
    atomic_int state_commit, state_clean;
    atomic_int rc_cancel, cancel_status, rc_pause, rc_finalize, rc_destroy, rc_wait_state,
        rc_detach_ref, ws_state, rc_wait;
    bool verbs;                /* call the verbs on the job from inside commit */
};

static void vc_commit(void *ud, bgjob_job *job)
{
    struct vc *v = ud;
    atomic_fetch_add(&v->commits, 1);
    bgjob_state s = -1;
    bgjob_job_get_state(job, &s);
    atomic_store(&v->state_commit, s);
    if (v->verbs) {
        bgjob_cancel_status cs = -1;
        atomic_store(&v->rc_pause, bgjob_job_pause(job));
        atomic_store(&v->rc_finalize, bgjob_job_finalize(job));
        atomic_store(&v->rc_destroy, bgjob_job_destroy(job));
        bgjob_state ws = -1;
        atomic_store(&v->rc_wait_state, bgjob_job_wait_state(job, BGJOB_STATE_WAITING, 0, &ws));
        atomic_store(&v->ws_state, ws);
        atomic_store(&v->rc_wait, bgjob_job_wait(job, 0, NULL));
        atomic_store(&v->rc_cancel, bgjob_job_cancel(job, &cs));
        atomic_store(&v->cancel_status, cs);
    }
    atomic_store(&v->in_commit, 1);
    if (v->block)
        gate_wait(&v->hold);
}
static void vc_abort(void *ud, bgjob_job *job)
{
    (void)job;
    atomic_fetch_add(&((struct vc *)ud)->aborts, 1);
}
static void vc_clean(void *ud, bgjob_job *job)
{
    struct vc *v = ud;
    atomic_fetch_add(&v->cleans, 1);
    bgjob_state s = -1;
    bgjob_job_get_state(job, &s);
    atomic_store(&v->state_clean, s);
}
static void vc_fin_free(void *ud)
{
    atomic_fetch_add(&((struct vc *)ud)->fin_frees, 1);
}
static void vc_completion(void *ud, bgjob_job *job, bgjob_state s)
{
    (void)job;
    (void)s;
    atomic_fetch_add(&((struct vc *)ud)->completions, 1);
}

static bgjob_job *vc_create(struct vc *v, struct evrec *e, struct tracker *t, uint32_t flags)
{
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_MANUAL_FINALIZE | flags;
    o.commit = vc_commit;
    o.abort = vc_abort;
    o.clean = vc_clean;
    o.finalize_userdata = v;
    o.finalize_free = vc_fin_free;
    o.completion = vc_completion;
    o.completion_userdata = v;
    o.event = evrec_event;
    o.event_userdata = e;
    o.event_free = evrec_free;
    bgjob_job *j = NULL;
    if (bgjob_job_create(&o, worker_return, ud_new(t), ud_free, &j) != BGJOB_RESULT_OK)
        return NULL;
    return j;
}

struct fin_arg {
    bgjob_job *job;
    bgjob_txn *txn;
    atomic_int rc;
};

static void *finalize_main(void *p)
{
    struct fin_arg *f = p;
    atomic_store(&f->rc, f->txn ? bgjob_txn_finalize(f->txn) : bgjob_job_finalize(f->job));
    return NULL;
}

/* "WAITING: ... its end is being finalized right now (commit/abort and
 * clean running)" and bgjob_job_finalize: "the job WAITING while they do
 * (PENDING → WAITING → its terminal state)". From inside commit of a job
 * finalized from PENDING: pause, finalize and destroy are refused
 * (NOT_ALLOWED), wait_state(WAITING, 0) finds WAITING, wait(0) times out, a
 * cancel does not undo the commit; from another thread wait_state(WAITING)
 * returns WAITING while commit is held. The job ends COMPLETED, once:
 * events ...PENDING→WAITING→COMPLETED, one END, one completion. */
static bool test_verbs_inside_commit_of_a_job_finalized_from_pending(void)
{
    bool ok = true;
    struct vc v;
    memset(&v, 0, sizeof v);
    gate_init(&v.hold);
    v.block = true;
    v.verbs = true;
    struct evrec e;
    evrec_init(&e);
    struct tracker t;
    tracker_init(&t);
    bgjob_job *j = vc_create(&v, &e, &t, 0);
    REQUIRE(j != NULL);
    CHECK_RC(bgjob_job_wait_state(j, BGJOB_STATE_PENDING, 10000, NULL), BGJOB_RESULT_OK);
    struct fin_arg f = { .job = j };
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, finalize_main, &f) == 0);
    REQUIRE(poll_int_eq(&v.in_commit, 1));
    bgjob_state ws = -1;
    CHECK_RC(bgjob_job_wait_state(j, BGJOB_STATE_WAITING, 2000, &ws), BGJOB_RESULT_OK);
    CHECK_STATE(ws, BGJOB_STATE_WAITING);
    CHECK_STATE(state_of(j), BGJOB_STATE_WAITING);
    CHECK_RC(bgjob_job_finalize(j), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_destroy(j), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_wait(j, 0, NULL), BGJOB_RESULT_TIMED_OUT);
    gate_open(&v.hold);
    pthread_join(th, NULL);
    CHECK_RC(atomic_load(&f.rc), BGJOB_RESULT_OK);
    bgjob_state s = -1;
    CHECK_RC(bgjob_job_wait(j, 10000, &s), BGJOB_RESULT_OK);
    CHECK_STATE(s, BGJOB_STATE_COMPLETED);
    CHECK_STATE(atomic_load(&v.state_commit), BGJOB_STATE_WAITING);
    CHECK_STATE(atomic_load(&v.state_clean), BGJOB_STATE_WAITING);
    CHECK_RC(atomic_load(&v.rc_pause), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(atomic_load(&v.rc_finalize), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(atomic_load(&v.rc_destroy), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(atomic_load(&v.rc_wait_state), BGJOB_RESULT_OK);
    CHECK_STATE(atomic_load(&v.ws_state), BGJOB_STATE_WAITING);
    CHECK_RC(atomic_load(&v.rc_wait), BGJOB_RESULT_TIMED_OUT);
    CHECK_RC(atomic_load(&v.rc_cancel), BGJOB_RESULT_OK);
    tap_diag("cancel inside commit: status %d", atomic_load(&v.cancel_status));
    CHECK(atomic_load(&v.cancel_status) != BGJOB_CANCEL_STATUS_REQUESTED);
    CHECK(poll_ge_ms(&v.completions, 1, 5000));
    CHECK(poll_ge_ms(&e.frees, 1, 5000));
    CHECK_EQ(atomic_load(&v.commits), 1);
    CHECK_EQ(atomic_load(&v.aborts), 0);
    CHECK_EQ(atomic_load(&v.cleans), 1);
    CHECK_EQ(atomic_load(&v.completions), 1);
    CHECK_EQ(atomic_load(&v.fin_frees), 1);
    CHECK_EQ(atomic_load(&e.ends), 1);
    CHECK_STATE(atomic_load(&e.end_state), BGJOB_STATE_COMPLETED);
    char seq[512];
    CHECKF(evrec_tail_ok(&e, BGJOB_STATE_COMPLETED, seq, sizeof seq), "events: %s", seq);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_RC(bgjob_job_destroy(j), BGJOB_RESULT_OK);
    gate_destroy(&v.hold);
    return ok;
}

/* A cancel from another thread while commit of a job finalized from
 * PENDING is held: it must not end the job a second time nor run abort;
 * the job ends COMPLETED (commit ran) with one END and one completion. */
static bool test_cancel_from_outside_during_commit_after_pending(void)
{
    bool ok = true;
    struct vc v;
    memset(&v, 0, sizeof v);
    gate_init(&v.hold);
    v.block = true;
    struct evrec e;
    evrec_init(&e);
    struct tracker t;
    tracker_init(&t);
    bgjob_job *j = vc_create(&v, &e, &t, 0);
    REQUIRE(j != NULL);
    CHECK_RC(bgjob_job_wait_state(j, BGJOB_STATE_PENDING, 10000, NULL), BGJOB_RESULT_OK);
    struct fin_arg f = { .job = j };
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, finalize_main, &f) == 0);
    REQUIRE(poll_int_eq(&v.in_commit, 1));
    bgjob_cancel_status cs = -1;
    CHECK_RC(bgjob_job_cancel(j, &cs), BGJOB_RESULT_OK);
    tap_diag("cancel during commit: status %d", cs);
    CHECK(cs != BGJOB_CANCEL_STATUS_REQUESTED);
    CHECK_RC(bgjob_job_pause(j), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_STATE(state_of(j), BGJOB_STATE_WAITING);
    gate_open(&v.hold);
    pthread_join(th, NULL);
    bgjob_state s = -1;
    CHECK_RC(bgjob_job_wait(j, 10000, &s), BGJOB_RESULT_OK);
    CHECK_STATE(s, BGJOB_STATE_COMPLETED);
    CHECK(poll_ge_ms(&v.completions, 1, 5000));
    CHECK(poll_ge_ms(&e.frees, 1, 5000));
    sleep_ms(20);
    CHECK_EQ(atomic_load(&v.commits), 1);
    CHECK_EQ(atomic_load(&v.aborts), 0);
    CHECK_EQ(atomic_load(&v.cleans), 1);
    CHECK_EQ(atomic_load(&v.completions), 1);
    CHECK_EQ(atomic_load(&e.ends), 1);
    char seq[512];
    CHECKF(evrec_tail_ok(&e, BGJOB_STATE_COMPLETED, seq, sizeof seq), "events: %s", seq);
    CHECK_RC(bgjob_job_destroy(j), BGJOB_RESULT_OK);
    gate_destroy(&v.hold);
    return ok;
}

/* Detach while commit of a job finalized from PENDING is held: "A detached
 * job always reaches a terminal state by itself and runs its completion,
 * commit/abort and clean exactly once". */
static bool test_detach_during_commit_after_pending(void)
{
    bool ok = true;
    struct vc v;
    memset(&v, 0, sizeof v);
    gate_init(&v.hold);
    v.block = true;
    struct evrec e;
    evrec_init(&e);
    struct tracker t;
    tracker_init(&t);
    bgjob_job *j = vc_create(&v, &e, &t, 0);
    REQUIRE(j != NULL);
    uint64_t id = id_of(j);
    CHECK_RC(bgjob_job_wait_state(j, BGJOB_STATE_PENDING, 10000, NULL), BGJOB_RESULT_OK);
    struct fin_arg f = { .job = j };
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, finalize_main, &f) == 0);
    REQUIRE(poll_int_eq(&v.in_commit, 1));
    CHECK_RC(bgjob_job_detach(j, BGJOB_DETACH_CANCEL), BGJOB_RESULT_OK);
    gate_open(&v.hold);
    pthread_join(th, NULL);
    CHECK_RC(atomic_load(&f.rc), BGJOB_RESULT_OK);
    CHECK(poll_ge_ms(&v.completions, 1, 5000));
    CHECK(poll_ge_ms(&e.frees, 1, 5000));
    CHECK(poll_unlisted(id));
    sleep_ms(20);
    CHECK_EQ(atomic_load(&v.commits), 1);
    CHECK_EQ(atomic_load(&v.aborts), 0);
    CHECK_EQ(atomic_load(&v.cleans), 1);
    CHECK_EQ(atomic_load(&v.completions), 1);
    CHECK_EQ(atomic_load(&v.fin_frees), 1);
    CHECK_EQ(atomic_load(&e.ends), 1);
    CHECK_EQ(atomic_load(&t.frees), 1);
    char seq[512];
    CHECKF(evrec_tail_ok(&e, BGJOB_STATE_COMPLETED, seq, sizeof seq), "events: %s", seq);
    gate_destroy(&v.hold);
    return ok;
}

/* A manual-finalize transaction of 3 members, all PENDING, finalized: each
 * member WAITING in its commit and clean, events ...PENDING→WAITING→
 * COMPLETED, one END each. Inside member 0's commit a cancel of member 2
 * and a second bgjob_txn_finalize must change nothing (the group is being
 * finalized): no abort, all COMPLETED. The state of member 2 during member
 * 0's commit is WAITING too (it read PENDING on d02f8d0). */
struct tx3 {
    bgjob_job *members[3];
    bgjob_txn *txn;
    atomic_int st_other_in_commit0;
    atomic_int rc_cancel_other, cs_cancel_other, rc_refinalize, rc_member_finalize;
};
static struct tx3 tx3;

static void tx3_commit0(void *ud, bgjob_job *job)
{
    struct vc *v = ud;
    atomic_fetch_add(&v->commits, 1);
    bgjob_state s = -1;
    bgjob_job_get_state(job, &s);
    atomic_store(&v->state_commit, s);
    bgjob_state o = -1;
    bgjob_job_get_state(tx3.members[2], &o);
    atomic_store(&tx3.st_other_in_commit0, o);
    bgjob_cancel_status cs = -1;
    atomic_store(&tx3.rc_cancel_other, bgjob_job_cancel(tx3.members[2], &cs));
    atomic_store(&tx3.cs_cancel_other, cs);
    atomic_store(&tx3.rc_refinalize, bgjob_txn_finalize(tx3.txn));
    atomic_store(&tx3.rc_member_finalize, bgjob_job_finalize(tx3.members[1]));
}

static bool test_manual_transaction_finalized_from_pending(void)
{
    bool ok = true;
    memset(&tx3, 0, sizeof tx3);
    struct vc v[3];
    struct evrec e[3];
    struct tracker t[3];
    memset(v, 0, sizeof v);
    REQUIRE(bgjob_txn_create(BGJOB_TXN_MANUAL_FINALIZE, &tx3.txn) == BGJOB_RESULT_OK);
    for (int i = 0; i < 3; i++) {
        evrec_init(&e[i]);
        tracker_init(&t[i]);
        bgjob_job_options o;
        bgjob_job_options_init(&o, sizeof o);
        o.flags = BGJOB_CREATE_DEFER_START;
        o.commit = i == 0 ? tx3_commit0 : vc_commit;
        o.abort = vc_abort;
        o.clean = vc_clean;
        o.finalize_userdata = &v[i];
        o.finalize_free = vc_fin_free;
        o.completion = vc_completion;
        o.completion_userdata = &v[i];
        o.event = evrec_event;
        o.event_userdata = &e[i];
        o.event_free = evrec_free;
        REQUIRE(bgjob_job_create(&o, worker_return, ud_new(&t[i]), ud_free, &tx3.members[i]) ==
                BGJOB_RESULT_OK);
        CHECK_RC(bgjob_txn_add(tx3.txn, tx3.members[i]), BGJOB_RESULT_OK);
    }
    CHECK_RC(bgjob_txn_start(tx3.txn), BGJOB_RESULT_OK);
    for (int i = 0; i < 3; i++)
        CHECK_RC(bgjob_job_wait_state(tx3.members[i], BGJOB_STATE_PENDING, 10000, NULL),
                 BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_finalize(tx3.txn), BGJOB_RESULT_OK);
    for (int i = 0; i < 3; i++) {
        bgjob_state s = -1;
        CHECK_RC(bgjob_job_wait(tx3.members[i], 10000, &s), BGJOB_RESULT_OK);
        CHECK_STATE(s, BGJOB_STATE_COMPLETED);
        CHECK(poll_ge_ms(&v[i].completions, 1, 5000));
        CHECK(poll_ge_ms(&e[i].frees, 1, 5000));
    }
    sleep_ms(20);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(atomic_load(&v[i].commits), 1);
        CHECK_EQ(atomic_load(&v[i].aborts), 0);
        CHECK_EQ(atomic_load(&v[i].cleans), 1);
        CHECK_EQ(atomic_load(&v[i].completions), 1);
        CHECK_EQ(atomic_load(&v[i].fin_frees), 1);
        CHECK_EQ(atomic_load(&e[i].ends), 1);
        CHECK_STATE(atomic_load(&v[i].state_commit), BGJOB_STATE_WAITING);
        CHECK_STATE(atomic_load(&v[i].state_clean), BGJOB_STATE_WAITING);
        char seq[512];
        CHECKF(evrec_tail_ok(&e[i], BGJOB_STATE_COMPLETED, seq, sizeof seq), "member %d events: %s",
               i, seq);
    }
    CHECK_RC(atomic_load(&tx3.rc_cancel_other), BGJOB_RESULT_OK);
    CHECK(atomic_load(&tx3.cs_cancel_other) != BGJOB_CANCEL_STATUS_REQUESTED);
    CHECK_RC(atomic_load(&tx3.rc_refinalize), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(atomic_load(&tx3.rc_member_finalize), BGJOB_RESULT_NOT_ALLOWED);
    tap_diag("member 2 during member 0's commit: %s (cancel status %d)",
             bgjob_state_str(atomic_load(&tx3.st_other_in_commit0)),
             atomic_load(&tx3.cs_cancel_other));
    /* The group's end is being finalized: every member WAITING before the
     * first commit (member 2 read PENDING on d02f8d0). */
    CHECK_STATE(atomic_load(&tx3.st_other_in_commit0), BGJOB_STATE_WAITING);
    for (int i = 0; i < 3; i++)
        CHECK_RC(bgjob_job_destroy(tx3.members[i]), BGJOB_RESULT_OK);
    bgjob_txn_destroy(tx3.txn);
    return ok;
}

/* Racing bgjob_job_finalize of a PENDING job against a cancel and a
 * wait_state(WAITING) 300 times: exactly one of commit/abort, one clean,
 * one END, one completion, a terminal state matching the callbacks run
 * (commit → COMPLETED, abort → CANCELLED), events chaining. */
struct fr_arg {
    bgjob_job *job;
    atomic_int *go;
    atomic_int rc;
    atomic_int cs;
};
static void *fr_finalize(void *p)
{
    struct fr_arg *a = p;
    while (!atomic_load(a->go))
        ;
    atomic_store(&a->rc, bgjob_job_finalize(a->job));
    return NULL;
}
static void *fr_cancel(void *p)
{
    struct fr_arg *a = p;
    while (!atomic_load(a->go))
        ;
    bgjob_cancel_status cs = -1;
    atomic_store(&a->rc, bgjob_job_cancel(a->job, &cs));
    atomic_store(&a->cs, cs);
    return NULL;
}

static bool test_finalize_racing_cancel_from_pending(void)
{
    bool ok = true;
    int fails = 0, commits = 0, aborts = 0;
    for (int r = 0; r < 300 && fails < 5; r++) {
        struct vc v;
        memset(&v, 0, sizeof v);
        struct evrec e;
        evrec_init(&e);
        struct tracker t;
        tracker_init(&t);
        bgjob_job *j = vc_create(&v, &e, &t, 0);
        REQUIRE(j != NULL);
        if (bgjob_job_wait_state(j, BGJOB_STATE_PENDING, 10000, NULL) != BGJOB_RESULT_OK) {
            ok = false;
            break;
        }
        atomic_int go;
        atomic_store(&go, 0);
        struct fr_arg fa = { .job = j, .go = &go }, ca = { .job = j, .go = &go };
        pthread_t t1, t2;
        REQUIRE(pthread_create(&t1, NULL, fr_finalize, &fa) == 0);
        REQUIRE(pthread_create(&t2, NULL, fr_cancel, &ca) == 0);
        atomic_store(&go, 1);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        bgjob_state s = -1;
        bool local = bgjob_job_wait(j, 10000, &s) == BGJOB_RESULT_OK;
        local = local && poll_ge_ms(&v.completions, 1, 5000) && poll_ge_ms(&e.frees, 1, 5000);
        int c = atomic_load(&v.commits), a = atomic_load(&v.aborts);
        if (!local || c + a != 1 || atomic_load(&v.cleans) != 1 ||
            atomic_load(&v.completions) != 1 || atomic_load(&e.ends) != 1 ||
            (c == 1 && s != BGJOB_STATE_COMPLETED) || (a == 1 && s != BGJOB_STATE_CANCELLED) ||
            atomic_load(&e.end_state) != s) {
            tap_diag("round %d: state %s commits %d aborts %d cleans %d completions %d ends %d "
                     "(finalize %d, cancel %d/%d)",
                     r, bgjob_state_str(s), c, a, atomic_load(&v.cleans),
                     atomic_load(&v.completions), atomic_load(&e.ends), atomic_load(&fa.rc),
                     atomic_load(&ca.rc), atomic_load(&ca.cs));
            local = false;
        }
        char seq[512];
        if (!evrec_tail_ok(&e, s, seq, sizeof seq)) {
            tap_diag("round %d: events %s", r, seq);
            local = false;
        }
        commits += c;
        aborts += a;
        bgjob_job_destroy(j);
        if (!local) {
            ok = false;
            fails++;
        }
    }
    tap_diag("commits %d aborts %d", commits, aborts);
    return ok;
}

/* Cap 1, a manual-finalize job A PENDING: its worker returned, so B (queued)
 * runs; B's worker finalizes A (A's commit and clean run inside B's worker,
 * A WAITING meanwhile); C queued behind B must not start before B's worker
 * returns (A's commit running in B's worker must not let B's slot go). */
static atomic_int cf_c_started, cf_b_returned, cf_c_before_b;
static bgjob_job *cf_a;
static atomic_int cf_fin_rc;

static int32_t cf_b_worker(void *ud, bgjob_job *job)
{
    (void)ud;
    (void)job;
    atomic_store(&cf_fin_rc, bgjob_job_finalize(cf_a));
    sleep_ms(50);
    if (atomic_load(&cf_c_started))
        atomic_store(&cf_c_before_b, 1);
    atomic_store(&cf_b_returned, 1);
    return 0;
}
static int32_t cf_c_worker(void *ud, bgjob_job *job)
{
    (void)ud;
    (void)job;
    atomic_store(&cf_c_started, 1);
    return 0;
}
static void cf_commit(void *ud, bgjob_job *job)
{
    struct vc *v = ud;
    atomic_fetch_add(&v->commits, 1);
    bgjob_state s = -1;
    bgjob_job_get_state(job, &s);
    atomic_store(&v->state_commit, s);
    sleep_ms(30);
}

static bool test_finalize_inside_a_capped_worker_keeps_its_slot(void)
{
    bool ok = true;
    atomic_store(&cf_c_started, 0);
    atomic_store(&cf_b_returned, 0);
    atomic_store(&cf_c_before_b, 0);
    atomic_store(&cf_fin_rc, -100);
    struct vc v;
    memset(&v, 0, sizeof v);
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_MANUAL_FINALIZE;
    o.commit = cf_commit;
    o.clean = vc_clean;
    o.finalize_userdata = &v;
    o.completion = vc_completion;
    o.completion_userdata = &v;
    struct tracker ta;
    tracker_init(&ta);
    REQUIRE(bgjob_job_create(&o, worker_return, ud_new(&ta), ud_free, &cf_a) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_wait_state(cf_a, BGJOB_STATE_PENDING, 10000, NULL), BGJOB_RESULT_OK);
    bgjob_job *b, *c;
    REQUIRE(bgjob_job_create(NULL, cf_b_worker, NULL, NULL, &b) == BGJOB_RESULT_OK);
    REQUIRE(bgjob_job_create(NULL, cf_c_worker, NULL, NULL, &c) == BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(b), BGJOB_STATE_COMPLETED);
    CHECK_STATE(wait_end(c), BGJOB_STATE_COMPLETED);
    CHECK_STATE(wait_end(cf_a), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&cf_fin_rc), BGJOB_RESULT_OK);
    CHECK_STATE(atomic_load(&v.state_commit), BGJOB_STATE_WAITING);
    CHECK_STATE(atomic_load(&v.state_clean), BGJOB_STATE_WAITING);
    CHECKF(!atomic_load(&cf_c_before_b), "C started while B's worker still ran under cap 1");
    CHECK(poll_ge_ms(&v.completions, 1, 5000));
    bgjob_job_destroy(b);
    bgjob_job_destroy(c);
    bgjob_job_destroy(cf_a);
    size_t running, queued;
    CHECKF(pool_drains(5000, &running, &queued), "status stuck at running %zu queued %zu",
           running, queued);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    return ok;
}


/* A manual-finalize transaction of a threaded member T and an external
 * member X (bgjob_job_report_state PENDING): bgjob_txn_finalize is
 * forwarded to X's owner (BGJOB_CONTROL_FINALIZE), whose bgjob_job_end
 * finalizes the group: "Ending the job then passes through WAITING while
 * its commit/abort and clean callbacks run, as every job does". Both
 * commits see WAITING, X's events go ...PENDING→WAITING→COMPLETED, one END
 * each, and T's completion runs once. */
static atomic_int ext_finalize_told, ext_controls;
static void ext_control(void *ud, bgjob_job *job, bgjob_control what, int64_t arg)
{
    (void)ud;
    (void)job;
    (void)arg;
    atomic_fetch_add(&ext_controls, 1);
    if (what == BGJOB_CONTROL_FINALIZE)
        atomic_fetch_add(&ext_finalize_told, 1);
}

static bool test_manual_transaction_with_an_external_member_from_pending(void)
{
    bool ok = true;
    atomic_store(&ext_finalize_told, 0);
    atomic_store(&ext_controls, 0);
    bgjob_txn *txn;
    REQUIRE(bgjob_txn_create(BGJOB_TXN_MANUAL_FINALIZE, &txn) == BGJOB_RESULT_OK);
    struct vc v[2];
    struct evrec e[2];
    struct tracker t[2];
    memset(v, 0, sizeof v);
    bgjob_job *j[2];
    for (int i = 0; i < 2; i++) {
        evrec_init(&e[i]);
        tracker_init(&t[i]);
        bgjob_job_options o;
        bgjob_job_options_init(&o, sizeof o);
        o.flags = BGJOB_CREATE_DEFER_START | BGJOB_CREATE_MANUAL_FINALIZE |
                  (i == 1 ? BGJOB_CREATE_EXTERNAL : 0);
        o.commit = vc_commit;
        o.abort = vc_abort;
        o.clean = vc_clean;
        o.finalize_userdata = &v[i];
        o.finalize_free = vc_fin_free;
        o.completion = vc_completion;
        o.completion_userdata = &v[i];
        o.event = evrec_event;
        o.event_userdata = &e[i];
        o.event_free = evrec_free;
        if (i == 1) {
            o.control = ext_control;
        }
        REQUIRE(bgjob_job_create(&o, i == 1 ? NULL : worker_return, ud_new(&t[i]), ud_free,
                                 &j[i]) == BGJOB_RESULT_OK);
        CHECK_RC(bgjob_txn_add(txn, j[i]), BGJOB_RESULT_OK);
    }
    CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_wait_state(j[0], BGJOB_STATE_WAITING, 10000, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_report_state(j[1], BGJOB_STATE_PENDING), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_finalize(txn), BGJOB_RESULT_OK);
    CHECK(poll_ge_ms(&ext_finalize_told, 1, 5000));
    CHECK_RC(bgjob_job_end(j[1], 0, NULL), BGJOB_RESULT_OK);
    for (int i = 0; i < 2; i++) {
        bgjob_state s = -1;
        CHECK_RC(bgjob_job_wait(j[i], 10000, &s), BGJOB_RESULT_OK);
        CHECK_STATE(s, BGJOB_STATE_COMPLETED);
        CHECK(poll_ge_ms(&v[i].completions, 1, 5000));
        CHECK(poll_ge_ms(&e[i].frees, 1, 5000));
    }
    sleep_ms(20);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(atomic_load(&v[i].commits), 1);
        CHECK_EQ(atomic_load(&v[i].aborts), 0);
        CHECK_EQ(atomic_load(&v[i].cleans), 1);
        CHECK_EQ(atomic_load(&v[i].completions), 1);
        CHECK_EQ(atomic_load(&e[i].ends), 1);
        CHECK_EQ(atomic_load(&t[i].frees), 1);
        CHECK_STATE(atomic_load(&v[i].state_commit), BGJOB_STATE_WAITING);
        CHECK_STATE(atomic_load(&v[i].state_clean), BGJOB_STATE_WAITING);
    }
    char seq[512];
    CHECKF(evrec_tail_ok(&e[1], BGJOB_STATE_COMPLETED, seq, sizeof seq), "external events: %s",
           seq);
    evrec_tail_ok(&e[0], BGJOB_STATE_COMPLETED, seq, sizeof seq);
    tap_diag("threaded member events: %s", seq);
    CHECK_EQ(atomic_load(&ext_finalize_told), 1);
    for (int i = 0; i < 2; i++)
        CHECK_RC(bgjob_job_destroy(j[i]), BGJOB_RESULT_OK);
    bgjob_txn_destroy(txn);
    return ok;
}

/* Cap 1 and a log callback: the debug line of a job's end is user code on
 * the worker thread after the worker returned ("a slot is free once its
 * worker has returned"). The callback waits (20 s at most) for the queued
 * job when it sees the first job's end line. */
static atomic_int lg_saw, lg_armed;
static void lg_log(void *ud, const char *line)
{
    (void)ud;
    if (atomic_load(&lg_armed) && strstr(line, "'capatk-lgA'") != NULL &&
        strstr(line, "completed") != NULL && atomic_exchange(&lg_armed, 0))
        wait_for_qb(&lg_saw, 20000);
}

static bool test_log_line_of_an_end_on_a_capped_worker_may_wait_for_the_queued_job(void)
{
    bool ok = true;
    struct gate g;
    gate_init(&g);
    struct tracker ta;
    tracker_init(&ta);
    ta.gate = &g;
    atomic_store(&qb_started, 0);
    atomic_store(&lg_saw, 0);
    atomic_store(&lg_armed, 1);
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_set_log_callback(lg_log, NULL, NULL), BGJOB_RESULT_OK);
    bgjob_job *a, *b;
    REQUIRE(job_create(&ta, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, "capatk-lgA", &a) ==
            BGJOB_RESULT_OK);
    REQUIRE(bgjob_job_create(NULL, qb_worker, NULL, NULL, &b) == BGJOB_RESULT_OK);
    gate_open(&g);
    CHECK_STATE(wait_end(a), BGJOB_STATE_COMPLETED);
    CHECK_STATE(wait_end(b), BGJOB_STATE_COMPLETED);
    bool seen = poll_ge_ms(&lg_saw, 1, 5000);
    CHECK_RC(bgjob_set_log_callback(NULL, NULL, NULL), BGJOB_RESULT_OK);
    if (!seen)
        tap_diag("no end line for capatk-lgA seen: case inconclusive");
    else
        CHECKF(atomic_load(&lg_saw) == 1,
               "the queued job did not start while the end's log line ran on the worker thread");
    bgjob_job_destroy(a);
    bgjob_job_destroy(b);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

/* ------------------------------------------------------------------ */

static const struct tap_test tests[] = {
    TAP_TEST(test_cap_holds_with_blocking_completions_and_mixed_stacks),
    TAP_TEST(test_cap_flipping_while_slots_are_let_go_early),
    TAP_TEST(test_userdata_free_is_part_of_the_workers_return_under_the_cap),
    TAP_TEST(test_commit_and_clean_on_a_capped_worker_may_wait_for_the_queued_job),
    TAP_TEST(test_end_event_on_a_capped_worker_may_wait_for_the_queued_job),
    TAP_TEST(test_completion_on_a_capped_worker_may_wait_for_the_queued_job),
    TAP_TEST(test_cancel_of_the_queued_job_racing_its_launch),
    TAP_TEST(test_queued_job_not_stranded_by_a_failed_thread_start_other_stack),
    TAP_TEST(test_queued_job_not_stranded_by_a_failed_thread_start_same_stack),
    TAP_TEST(test_fork_in_completions_while_slots_are_let_go),
    TAP_TEST(test_subjobs_queued_behind_their_parent_under_cap_1),
    TAP_TEST(test_transaction_under_cap_1),
    TAP_TEST(test_verbs_inside_commit_of_a_job_finalized_from_pending),
    TAP_TEST(test_cancel_from_outside_during_commit_after_pending),
    TAP_TEST(test_detach_during_commit_after_pending),
    TAP_TEST(test_manual_transaction_finalized_from_pending),
    TAP_TEST(test_finalize_racing_cancel_from_pending),
    TAP_TEST(test_finalize_inside_a_capped_worker_keeps_its_slot),
    TAP_TEST(test_manual_transaction_with_an_external_member_from_pending),
    TAP_TEST(test_log_line_of_an_end_on_a_capped_worker_may_wait_for_the_queued_job),
};

int main(void)
{
    const char *only = getenv("CAPATK_ONLY");
    if (only != NULL && *only) {
        static struct tap_test picked[TAP_COUNT(tests)];
        size_t n = 0;
        for (size_t i = 0; i < TAP_COUNT(tests); i++)
            if (strstr(tests[i].name, only) != NULL)
                picked[n++] = tests[i];
        return tap_run(picked, n);
    }
    return tap_run(tests, TAP_COUNT(tests));
}

/*
 * test_deadline_timer.c: deadlines and the one process-wide timer thread.
 *
 * - A deadline's cancel runs the job's cancellation hooks off the timer
 *   thread, so a hook that blocks delays no other job's deadline and no
 *   child's SIGKILL.
 * - When the timer thread cannot be started (EAGAIN), a deadline is refused
 *   with BGJOB_RESULT_TRY_AGAIN (set_deadline, or a create or start of a job
 *   with one), never accepted and then ignored; when the thread for its cancel
 *   cannot be started, the deadline fires once one can.
 * - The log callback never runs under a bgjob lock, on that path too: one that
 *   calls bgjob about the same job does not deadlock.
 *
 * The EAGAIN cases run in a forked child (an alarm fails a hung one) that
 * lowers RLIMIT_NPROC below its process count, as test_thread_start.c does.
 */

#include "tap.h"
#include "util.h"

#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILD_ALARM_S 20

/* ---- helpers ------------------------------------------------------------------------------- */

static bgjob_result create_flags(struct tracker *t, bgjob_worker_callback worker,
                                 int64_t deadline_ms, uint32_t flags, const char *name,
                                 bgjob_job **out)
{
    bgjob_job_options o;
    bgjob_result r = bgjob_job_options_init(&o, sizeof o);

    if (r != BGJOB_RESULT_OK)
        return r;
    o.deadline_ms = deadline_ms;
    o.flags = flags;
    o.name = name;
    return bgjob_job_create(&o, worker, ud_new(t), ud_free, out);
}

static bgjob_result create_with(struct tracker *t, bgjob_worker_callback worker, int64_t deadline_ms,
                                const char *name, bgjob_job **out)
{
    return create_flags(t, worker, deadline_ms, 0, name, out);
}

/* ---- a hook that blocks delays no other job's deadline (item 3) ---------------------------- */

struct slow_hook {
    struct gate entered;
    struct gate release;
    char thread[32];
};

static void slow_hook_fn(void *userdata, bgjob_job *job)
{
    struct slow_hook *h = userdata;

    (void)job;
    pthread_getname_np(pthread_self(), h->thread, sizeof h->thread);
    gate_open(&h->entered);
    gate_wait(&h->release);
}

/* Starts job A whose 20 ms deadline cancel is, once this returns, blocked
 * inside A's cancellation hook until `h->release` opens. */
static bool block_a_deadline_hook(struct slow_hook *h, struct tracker *ta, bgjob_job **a)
{
    bool ok = true;

    memset(h, 0, sizeof *h);
    gate_init(&h->entered);
    gate_init(&h->release);
    tracker_init(ta);
    CHECK_RC(create_flags(ta, worker_until_cancel, 20, BGJOB_CREATE_DEFER_START, "slowhook", a),
             BGJOB_RESULT_OK);
    REQUIRE(*a != NULL);
    CHECK_RC(bgjob_job_add_cancel_hook(*a, slow_hook_fn, h, NULL, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_start(*a), BGJOB_RESULT_OK);
    REQUIRE(ok);
    gate_wait(&h->entered);
    return ok;
}

static bool release_a(struct slow_hook *h, struct tracker *ta, bgjob_job *a)
{
    bool ok = true;
    bgjob_info info;

    CHECKF(strcmp(h->thread, "bgjob-timer") != 0, "A's hook ran on thread '%s'", h->thread);
    gate_open(&h->release);
    CHECK_STATE(wait_end(a), BGJOB_STATE_CANCELLED);
    CHECK(info_of(a, &info));
    CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_TIMEOUT);
    CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&ta->frees), 1);
    gate_destroy(&h->entered);
    gate_destroy(&h->release);
    return ok;
}

static bool test_a_blocking_deadline_hook_delays_no_other_deadline(void)
{
    bool ok = true;
    static struct slow_hook h;
    struct tracker ta, tb;
    bgjob_job *a = NULL, *b = NULL;
    bgjob_info info;
    int32_t st = -1;

    REQUIRE(block_a_deadline_hook(&h, &ta, &a));
    /* A's deadline cancel is now blocked inside A's hook. B's must still fire. */
    tracker_init(&tb);
    CHECK_RC(create_with(&tb, worker_until_cancel, 50, "other", &b), BGJOB_RESULT_OK);
    if (b != NULL) {
        CHECK_RC(bgjob_job_wait(b, 10000, &st), BGJOB_RESULT_OK);
        CHECK_STATE(st, BGJOB_STATE_CANCELLED);
        CHECK(info_of(b, &info));
        CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_TIMEOUT);
    }
    CHECK(release_a(&h, &ta, a));
    if (b != NULL) {
        CHECK_STATE(wait_end(b), BGJOB_STATE_CANCELLED);
        CHECK_RC(bgjob_job_destroy(b), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&tb.frees), 1);
    }
    return ok;
}

/* A worker that starts a child ignoring SIGTERM and waits for it. */
struct stubborn {
    struct gate spawned;
    atomic_int wstatus;
    atomic_int wait_rc;
};

static int32_t worker_stubborn_child(void *userdata, bgjob_job *job)
{
    struct stubborn *s = userdata;
    static const char *const argv[] = {"/bin/sh", "-c", "trap '' TERM; exec sleep 30", NULL};
    bgjob_child_options o;
    int32_t pid = -1, wstatus = -1;

    bgjob_child_options_init(&o, sizeof o);
    o.argv = argv;
    o.grace_ms = 100;
    if (bgjob_job_spawn_child(job, &o, &pid) != BGJOB_RESULT_OK) {
        gate_open(&s->spawned);
        return 1;
    }
    /* The shell has set its trap before anyone cancels. */
    if (!poll_ignores_signal(pid, SIGTERM))
        tap_diag("the child never ignored SIGTERM");
    gate_open(&s->spawned);
    atomic_store(&s->wait_rc, bgjob_job_wait_child(job, pid, -1, &wstatus));
    atomic_store(&s->wstatus, wstatus);
    return WORKER_CANCELLED_RC;
}

static bool test_a_blocking_deadline_hook_delays_no_sigkill(void)
{
    bool ok = true;
    static struct slow_hook h;
    static struct stubborn s;
    struct tracker ta;
    bgjob_job *a = NULL, *c = NULL;
    bgjob_job_options o;
    int32_t st = -1, ws;

    REQUIRE(block_a_deadline_hook(&h, &ta, &a));
    memset(&s, 0, sizeof s);
    gate_init(&s.spawned);
    atomic_store(&s.wstatus, -1);
    CHECK_RC(bgjob_job_options_init(&o, sizeof o), BGJOB_RESULT_OK);
    o.name = "stubborn";
    CHECK_RC(bgjob_job_create(&o, worker_stubborn_child, &s, NULL, &c), BGJOB_RESULT_OK);
    if (c != NULL) {
        gate_wait(&s.spawned);
        /* SIGTERM now, ignored; SIGKILL is due from the timer in 100 ms. */
        CHECK_RC(bgjob_job_cancel(c, NULL), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_wait(c, 10000, &st), BGJOB_RESULT_OK);
        CHECK_STATE(st, BGJOB_STATE_CANCELLED);
        CHECK_RC(atomic_load(&s.wait_rc), BGJOB_RESULT_CANCELLED);
        ws = atomic_load(&s.wstatus);
        CHECKF(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "child wstatus %#x", ws);
    }
    CHECK(release_a(&h, &ta, a));
    if (c != NULL) {
        CHECK_STATE(wait_end(c), BGJOB_STATE_CANCELLED);
        CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    }
    gate_destroy(&s.spawned);
    return ok;
}

/* ---- many deadlines, slow hooks that call back in, several threads -------------------------- */

#define LOAD_THREADS 4
#define LOAD_JOBS 40

static bgjob_job *_Atomic load_jobs[LOAD_THREADS * LOAD_JOBS];
static atomic_int load_hook_runs;
static atomic_int load_hook_frees;

/* Sleeps a little, then calls back into bgjob: its own job (a new deadline, a
 * snapshot) and another job that may be live, ended or destroyed. */
static void load_hook(void *userdata, bgjob_job *job)
{
    unsigned i = (unsigned)(uintptr_t)userdata;
    bgjob_info info = {.struct_size = sizeof info};

    sleep_ms(i % 7);
    bgjob_job_set_deadline(job, 1);
    bgjob_job_get_info(job, &info);
    bgjob_job_cancel(atomic_load(&load_jobs[(i * 7 + 3) % (LOAD_THREADS * LOAD_JOBS)]), NULL);
    atomic_fetch_add(&load_hook_runs, 1);
}

static void load_hook_free(void *userdata)
{
    (void)userdata;
    atomic_fetch_add(&load_hook_frees, 1);
}

struct load_arg {
    int first;
    struct tracker t[LOAD_JOBS];
    bool ok;
};

static void *load_main(void *p)
{
    struct load_arg *a = p;
    bool ok = true;

    for (int k = 0; k < LOAD_JOBS; k++) {
        unsigned i = (unsigned)(a->first + k);
        bgjob_job *job = NULL;

        tracker_init(&a->t[k]);
        CHECK_RC(create_flags(&a->t[k], worker_until_cancel, 1 + i % 5, BGJOB_CREATE_DEFER_START,
                              "load", &job),
                 BGJOB_RESULT_OK);
        if (job == NULL)
            continue;
        CHECK_RC(bgjob_job_add_cancel_hook(job, load_hook, (void *)(uintptr_t)i, load_hook_free,
                                           NULL),
                 BGJOB_RESULT_OK);
        /* Published once started: another job's hook cancels whatever it
         * finds here, and a created job it cancelled could not start. */
        CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
        atomic_store(&load_jobs[i], job);
        if (i % 3 == 0) {
            /* Pauses stop the deadline's clock; the result may be NOT_ALLOWED
             * if the deadline won the race. */
            bgjob_job_pause(job);
            bgjob_job_resume(job);
        }
        if (i % 4 == 1)
            bgjob_job_set_deadline(job, 2);
    }
    for (int k = 0; k < LOAD_JOBS; k++) {
        bgjob_job *job = atomic_load(&load_jobs[a->first + k]);

        if (job == NULL)
            continue;
        CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    }
    a->ok = ok;
    return NULL;
}

static bool test_many_deadlines_with_slow_reentrant_hooks_all_fire(void)
{
    bool ok = true;
    static struct load_arg args[LOAD_THREADS];
    pthread_t th[LOAD_THREADS];
    int64_t start = now_ms();

    atomic_store(&load_hook_runs, 0);
    atomic_store(&load_hook_frees, 0);
    for (int i = 0; i < LOAD_THREADS; i++) {
        args[i].first = i * LOAD_JOBS;
        REQUIRE(pthread_create(&th[i], NULL, load_main, &args[i]) == 0);
    }
    for (int i = 0; i < LOAD_THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].ok);
    }
    tap_diag("%d jobs ended in %lld ms", LOAD_THREADS * LOAD_JOBS, (long long)(now_ms() - start));
    for (int i = 0; i < LOAD_THREADS * LOAD_JOBS; i++) {
        bgjob_job *job = atomic_exchange(&load_jobs[i], NULL);

        if (job != NULL)
            CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    }
    for (int i = 0; i < LOAD_THREADS; i++)
        for (int k = 0; k < LOAD_JOBS; k++)
            CHECK_EQ(atomic_load(&args[i].t[k].frees), 1);
    /* Every hook was freed once, by the time its job was seen ended; and none
     * runs after that (a hook the worker's return beat to it is dropped
     * uncalled, so fewer may have run than were registered). The cancels ran
     * on deadline threads, not the caller's: this is the hook promise of
     * bgjob_cancel_hook_callback kept there too. */
    {
        int runs = atomic_load(&load_hook_runs);

        CHECK_EQ(atomic_load(&load_hook_frees), LOAD_THREADS * LOAD_JOBS);
        CHECK(runs <= LOAD_THREADS * LOAD_JOBS);
        sleep_ms(50);
        CHECK_EQ(atomic_load(&load_hook_runs), runs);
    }
    return ok;
}

/* ---- a deadline that cannot be kept is refused (item 5) ------------------------------------- */

static bool child_deadline_refused_without_timer(void)
{
    bool ok = true;
    struct tracker t_run, t_idle, t_new;
    bgjob_job *run = NULL, *idle = NULL, *fresh = NULL;
    bgjob_info info;
    size_t n = 99;

    tracker_init(&t_run);
    tracker_init(&t_idle);
    tracker_init(&t_new);
    /* One running job, and one idle pool thread (the quick job's), so that
     * below only the timer thread is missing. */
    CHECK_RC(create_with(&t_run, worker_until_cancel, 0, "running", &run), BGJOB_RESULT_OK);
    CHECK_RC(create_with(&t_idle, worker_return, 0, "quick", &idle), BGJOB_RESULT_OK);
    REQUIRE(ok);
    CHECK_STATE(wait_end(idle), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(idle), BGJOB_RESULT_OK);
    REQUIRE(forbid_threads());

    CHECK_RC(bgjob_job_set_deadline(run, 30), BGJOB_RESULT_TRY_AGAIN);
    sleep_ms(200);
    CHECK_STATE(state_of(run), BGJOB_STATE_RUNNING);

    /* A create with a deadline fails as a whole and leaves nothing behind. */
    CHECK_RC(create_with(&t_new, worker_until_cancel, 30, "fresh", &fresh), BGJOB_RESULT_TRY_AGAIN);
    CHECK_EQ(atomic_load(&t_new.frees), 1);
    CHECK_RC(bgjob_list_jobs(NULL, 0, &n), BGJOB_RESULT_OK);
    CHECK_EQ(n, 1);
    if (fresh != NULL) {
        bgjob_job_cancel(fresh, NULL);
        wait_end(fresh);
        bgjob_job_destroy(fresh);
    }

    /* With threads again, the same deadline is kept. */
    CHECK(allow_threads());
    CHECK_RC(bgjob_job_set_deadline(run, 30), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(run), BGJOB_STATE_CANCELLED);
    CHECK(info_of(run, &info));
    CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_TIMEOUT);
    CHECK_RC(bgjob_job_destroy(run), BGJOB_RESULT_OK);
    return ok;
}

static bool test_a_deadline_is_refused_when_the_timer_cannot_start(void)
{
    return in_child(CHILD_ALARM_S, child_deadline_refused_without_timer);
}

/* A deadline that passes while no thread can be started for its cancel is
 * late, not lost: the timer thread does not make the cancel itself (it would
 * run the hooks there), and it fires once a thread can be started. */
static bool child_deadline_waits_for_a_thread(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    bgjob_info info;

    tracker_init(&t);
    /* The fork left this child with no idle pool thread; this makes the
     * worker's, and the far deadline the timer's. */
    CHECK_RC(create_with(&t, worker_until_cancel, -1, "late", &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    REQUIRE(poll_long_ge(&t.iterations, 1));
    CHECK_RC(bgjob_job_set_deadline(job, 3600000), BGJOB_RESULT_OK);
    REQUIRE(forbid_threads());
    /* Armed only now, 100 ms past the active time already run (however
     * slow the create and the forbidding were): it passes while no thread
     * can be started. */
    REQUIRE(info_of(job, &info));
    CHECK_RC(bgjob_job_set_deadline(job, info.elapsed_ms + 100), BGJOB_RESULT_OK);
    sleep_ms(400);
    CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
    CHECK(allow_threads());
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK(info_of(job, &info));
    CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_TIMEOUT);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

static bool test_a_deadline_fires_once_a_thread_can_start(void)
{
    return in_child(CHILD_ALARM_S, child_deadline_waits_for_a_thread);
}

/* ---- the log callback runs under no bgjob lock (item 4) ------------------------------------- */

static atomic_int log_lines;
static atomic_int log_reentry_failed;

/* Calls back into bgjob about the job the test is changing: under any of its
 * locks this would deadlock. */
static void log_reenters(void *userdata, const char *line)
{
    bgjob_job *job = userdata;
    bgjob_info info = {.struct_size = sizeof info};
    size_t n = 0;

    (void)line;
    if (bgjob_job_get_info(job, &info) != BGJOB_RESULT_OK ||
        bgjob_list_jobs(NULL, 0, &n) != BGJOB_RESULT_OK)
        atomic_store(&log_reentry_failed, 1);
    atomic_fetch_add(&log_lines, 1);
}

static bool child_log_callback_without_timer(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *run = NULL;
    int lines;

    tracker_init(&t);
    CHECK_RC(create_with(&t, worker_until_cancel, 0, "running", &run), BGJOB_RESULT_OK);
    REQUIRE(run != NULL);
    CHECK_RC(bgjob_set_log_callback(log_reenters, run, NULL), BGJOB_RESULT_OK);
    REQUIRE(forbid_threads());
    lines = atomic_load(&log_lines);
    CHECK_RC(bgjob_job_set_deadline(run, 30), BGJOB_RESULT_TRY_AGAIN);
    CHECKF(atomic_load(&log_lines) > lines, "the refusal was not logged");
    CHECK_EQ(atomic_load(&log_reentry_failed), 0);
    CHECK(allow_threads());
    CHECK_RC(bgjob_set_log_callback(NULL, NULL, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(run, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(run), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(run), BGJOB_RESULT_OK);
    return ok;
}

static bool test_the_log_callback_runs_under_no_lock_when_the_timer_cannot_start(void)
{
    return in_child(CHILD_ALARM_S, child_log_callback_without_timer);
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_a_blocking_deadline_hook_delays_no_other_deadline),
        TAP_TEST(test_a_blocking_deadline_hook_delays_no_sigkill),
        TAP_TEST(test_many_deadlines_with_slow_reentrant_hooks_all_fire),
        TAP_TEST(test_a_deadline_is_refused_when_the_timer_cannot_start),
        TAP_TEST(test_a_deadline_fires_once_a_thread_can_start),
        TAP_TEST(test_the_log_callback_runs_under_no_lock_when_the_timer_cannot_start),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

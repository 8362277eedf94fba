/* Cancellation hooks and the cancellable sleep (libxl's cancellation design). */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* A hook's record: how often it was called, on which thread, and how often its
 * userdata was freed. `phase` is 0 before the call, 1 inside, 2 after. */
struct hook_rec {
    atomic_int calls;
    atomic_int frees;
    atomic_int phase;
    atomic_int order; /* the global call order it saw */
    pthread_t thread;
};

static atomic_int call_order;

static void hook_rec_init(struct hook_rec *h)
{
    atomic_init(&h->calls, 0);
    atomic_init(&h->frees, 0);
    atomic_init(&h->phase, 0);
    atomic_init(&h->order, -1);
}

static void hook_count(void *userdata, bgjob_job *job)
{
    struct hook_rec *h = userdata;
    (void)job;
    atomic_store(&h->phase, 1);
    h->thread = pthread_self();
    atomic_store(&h->order, atomic_fetch_add(&call_order, 1));
    sched_yield();
    atomic_fetch_add(&h->calls, 1);
    atomic_store(&h->phase, 2);
}

static void hook_free(void *userdata)
{
    struct hook_rec *h = userdata;
    atomic_fetch_add(&h->frees, 1);
}

static int32_t until_cancelled(void *userdata, bgjob_job *job)
{
    (void)userdata;
    while (bgjob_job_pause_point(job) != BGJOB_RESULT_CANCELLED)
        sleep_ms(1);
    return 125;
}

static bgjob_job *running_job(void)
{
    bgjob_job *job = NULL;
    if (bgjob_job_create(NULL, until_cancelled, NULL, NULL, &job) != BGJOB_RESULT_OK)
        return NULL;
    return job;
}

/* 8 threads cancel at once: the hooks run in registration order, all on the
 * one thread whose cancel came first, each at most once; the worker sees the
 * cancel and returns meanwhile, and the hooks not yet called then are dropped
 * uncalled. So the called ones are a prefix, and every one is freed once. */
struct canceller {
    bgjob_job *job;
    pthread_barrier_t *start;
    int32_t status;
    pthread_t self;
};

static void *cancel_thread(void *arg)
{
    struct canceller *c = arg;
    c->self = pthread_self();
    pthread_barrier_wait(c->start);
    bgjob_job_cancel(c->job, &c->status);
    return NULL;
}

static bool test_hooks_once_under_eight_cancellers(void)
{
    bool ok = true;
    enum { HOOKS = 16, THREADS = 8 };
    for (int round = 0; round < 50 && ok; round++) {
        bgjob_job *job = running_job();
        REQUIRE(job != NULL);
        struct hook_rec h[HOOKS];
        atomic_store(&call_order, 0);
        for (int i = 0; i < HOOKS; i++) {
            hook_rec_init(&h[i]);
            CHECK_RC(bgjob_job_add_cancel_hook(job, hook_count, &h[i], hook_free, NULL),
                     BGJOB_RESULT_OK);
        }
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, THREADS);
        struct canceller c[THREADS];
        pthread_t t[THREADS];
        for (int i = 0; i < THREADS; i++) {
            c[i] = (struct canceller){.job = job, .start = &start, .status = -1};
            pthread_create(&t[i], NULL, cancel_thread, &c[i]);
        }
        for (int i = 0; i < THREADS; i++)
            pthread_join(t[i], NULL);
        pthread_barrier_destroy(&start);
        int winners = 0, winner = -1;
        for (int i = 0; i < THREADS; i++)
            if (c[i].status == BGJOB_CANCEL_STATUS_REQUESTED) {
                winners++;
                winner = i;
            }
        CHECK_EQ(winners, 1);
        CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
        int called = 0;
        while (called < HOOKS && atomic_load(&h[called].calls) == 1)
            called++;
        for (int i = 0; i < HOOKS && winner >= 0; i++) {
            CHECK_EQ(atomic_load(&h[i].frees), 1);
            if (i < called) {
                CHECK_EQ(atomic_load(&h[i].order), i);
                CHECK(pthread_equal(h[i].thread, c[winner].self));
            } else {
                CHECK_EQ(atomic_load(&h[i].calls), 0);
            }
        }
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    }
    return ok;
}

/* A hook registered after cancel runs at once, on the registering thread, and
 * the registration says so. */
static bool test_register_after_cancel(void)
{
    bool ok = true;
    bgjob_job *job = running_job();
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    struct hook_rec h;
    hook_rec_init(&h);
    uint64_t id = 42;
    CHECK_RC(bgjob_job_add_cancel_hook(job, hook_count, &h, hook_free, &id),
             BGJOB_RESULT_CANCELLED);
    CHECK_EQ(id, 42);
    CHECK_EQ(atomic_load(&h.calls), 1);
    CHECK_EQ(atomic_load(&h.frees), 1);
    CHECK(pthread_equal(h.thread, pthread_self()));
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    /* After the end, registration is refused and the userdata still freed. */
    hook_rec_init(&h);
    CHECK_RC(bgjob_job_add_cancel_hook(job, hook_count, &h, hook_free, NULL),
             BGJOB_RESULT_NOT_ALLOWED);
    CHECK_EQ(atomic_load(&h.calls), 0);
    CHECK_EQ(atomic_load(&h.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* Hooks still registered when the job ends are freed, not called. */
static bool test_leftover_hooks_freed_not_called(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    bgjob_job *job = NULL;
    /* The worker is held at the gate, so the hook is certainly registered on a
     * running job that then ends without a cancel. */
    CHECK_RC(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    struct hook_rec h;
    hook_rec_init(&h);
    CHECK_RC(bgjob_job_add_cancel_hook(job, hook_count, &h, hook_free, NULL), BGJOB_RESULT_OK);
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&h.calls), 0);
    CHECK_EQ(atomic_load(&h.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

/* Once any call has seen the job terminal, none of its hooks runs or is still
 * running, and the job does not become terminal while one runs (a driver
 * frees the operation's state once the job is over). The first hook blocks
 * inside the cancel on another thread while the worker, woken by the cancel,
 * returns at once: the job must stay RUNNING until that hook returns, and the
 * second hook, not yet called, must be dropped uncalled rather than called
 * after the end. */
struct slow_hook {
    struct gate entered, leave;
    atomic_int inside, done, late_calls;
    bgjob_job *job;
};

static void slow_hook_fn(void *userdata, bgjob_job *job)
{
    struct slow_hook *s = userdata;
    (void)job;
    atomic_store(&s->inside, 1);
    gate_open(&s->entered);
    gate_wait(&s->leave);
    atomic_store(&s->done, 1);
    atomic_store(&s->inside, 0);
}

static void late_hook_fn(void *userdata, bgjob_job *job)
{
    struct slow_hook *s = userdata;
    (void)job;
    atomic_fetch_add(&s->late_calls, 1);
}

static void *cancel_job_thread(void *arg)
{
    bgjob_job_cancel(arg, NULL);
    return NULL;
}

static bool test_no_hook_runs_once_the_job_is_seen_ended(void)
{
    bool ok = true;
    struct slow_hook s;
    gate_init(&s.entered);
    gate_init(&s.leave);
    atomic_init(&s.inside, 0);
    atomic_init(&s.done, 0);
    atomic_init(&s.late_calls, 0);
    struct hook_rec late;
    hook_rec_init(&late);
    bgjob_job *job = running_job();
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_add_cancel_hook(job, slow_hook_fn, &s, NULL, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_add_cancel_hook(job, late_hook_fn, &s, NULL, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_add_cancel_hook(job, hook_count, &late, hook_free, NULL),
             BGJOB_RESULT_OK);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, cancel_job_thread, job) == 0);
    gate_wait(&s.entered);
    /* The worker saw the cancel and returned long ago; the hook still runs. */
    int32_t state = -1;
    CHECK_RC(bgjob_job_wait(job, 300, &state), BGJOB_RESULT_TIMED_OUT);
    bgjob_info info;
    if (info_of(job, &info))
        CHECKF(info.state == BGJOB_STATE_RUNNING, "the job was %s while its hook ran",
               bgjob_state_str(info.state));
    gate_open(&s.leave);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    /* Seen terminal: the running hook had returned, the others never run. */
    CHECK_EQ(atomic_load(&s.done), 1);
    CHECK_EQ(atomic_load(&s.inside), 0);
    pthread_join(t, NULL);
    CHECK_EQ(atomic_load(&s.late_calls), 0);
    CHECK_EQ(atomic_load(&late.calls), 0);
    CHECK_EQ(atomic_load(&late.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&s.entered);
    gate_destroy(&s.leave);
    return ok;
}

/* Remove racing cancel on another thread: when remove returns the hook either
 * ran fully or never started, and its userdata was freed exactly once. */
struct race {
    bgjob_job *job;
    atomic_bool ready;
    atomic_bool go;
};

static void *race_cancel(void *arg)
{
    struct race *r = arg;
    atomic_store(&r->ready, true);
    while (!atomic_load(&r->go))
        ;
    bgjob_job_cancel(r->job, NULL);
    return NULL;
}

static bool test_remove_racing_cancel(void)
{
    bool ok = true;
    int ran = 0, removed = 0, dropped = 0;
    for (int i = 0; i < 3000 && ok; i++) {
        struct race r = {.job = running_job()};
        REQUIRE(r.job != NULL);
        atomic_init(&r.ready, false);
        atomic_init(&r.go, false);
        struct hook_rec h;
        hook_rec_init(&h);
        uint64_t id = 0;
        CHECK_RC(bgjob_job_add_cancel_hook(r.job, hook_count, &h, hook_free, &id),
                 BGJOB_RESULT_OK);
        pthread_t t;
        pthread_create(&t, NULL, race_cancel, &r);
        while (!atomic_load(&r.ready))
            ;
        /* Both sides are running now; a varying head start for cancel spreads
         * the outcomes over "removed first", "while running" and "after". */
        atomic_store(&r.go, true);
        for (volatile int k = 0; k < (i % 100) * 40; k++)
            ;
        bgjob_result rc = bgjob_job_remove_cancel_hook(r.job, id);
        int phase = atomic_load(&h.phase);
        if (rc == BGJOB_RESULT_OK) {
            removed++;
            CHECK_EQ(phase, 0);
        } else {
            /* Not found: it ran (and has returned), or the worker saw the
             * cancel and returned first, and it was dropped uncalled — never
             * half-way. */
            CHECK_RC(rc, BGJOB_RESULT_NOT_FOUND);
            CHECKF(phase == 2 || phase == 0, "remove returned while the hook was at phase %d",
                   phase);
            if (phase == 2)
                ran++;
            else
                dropped++;
        }
        pthread_join(t, NULL);
        CHECK_EQ(atomic_load(&h.frees), 1);
        CHECK_EQ(atomic_load(&h.calls), phase == 2 ? 1 : 0);
        CHECK_STATE(wait_end(r.job), BGJOB_STATE_CANCELLED);
        CHECK_RC(bgjob_job_destroy(r.job), BGJOB_RESULT_OK);
    }
    tap_diag("3000 races: hook removed first %d times, ran first %d times, dropped at the end "
             "%d times", removed, ran, dropped);
    return ok;
}

/* From inside a hook: removing itself and cancelling its own job return at
 * once instead of deadlocking. */
struct self_ops {
    uint64_t id;
    bgjob_result remove_rc;
    bgjob_result cancel_rc;
    int32_t cancel_status;
    atomic_int calls;
};

static void hook_self_ops(void *userdata, bgjob_job *job)
{
    struct self_ops *s = userdata;
    s->remove_rc = bgjob_job_remove_cancel_hook(job, s->id);
    s->cancel_rc = bgjob_job_cancel(job, &s->cancel_status);
    atomic_fetch_add(&s->calls, 1);
}

static bool test_remove_and_cancel_inside_a_hook(void)
{
    bool ok = true;
    bgjob_job *job = running_job();
    REQUIRE(job != NULL);
    struct self_ops s = {.cancel_status = -1};
    atomic_init(&s.calls, 0);
    CHECK_RC(bgjob_job_add_cancel_hook(job, hook_self_ops, &s, NULL, &s.id), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&s.calls), 1);
    CHECK_RC(s.remove_rc, BGJOB_RESULT_NOT_FOUND);
    CHECK_RC(s.cancel_rc, BGJOB_RESULT_OK);
    CHECK_EQ(s.cancel_status, BGJOB_CANCEL_STATUS_ALREADY_REQUESTED);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* Id 0 is never a hook's: a hook run at once by add_cancel_hook (cancel
 * already requested) has no id, and one that removes "itself" by the 0 it was
 * left with gets NOT_FOUND at once. Two such hooks of one job, inside at the
 * same time on two threads (a barrier), each remove 0: neither waits for the
 * other. (They did: a remove of 0 waited for every at-once hook running on
 * another thread, so these two waited for each other for ever; the bounded
 * poll below then fails, leaving the stuck threads behind.) */
struct at_once {
    bgjob_job *job;
    pthread_barrier_t *both_inside;
    atomic_int *removed; /* removes of 0 that returned, over both hooks */
    bgjob_result add_rc;
    bgjob_result remove_rc;
    uint64_t id;
};

static void hook_removes_zero(void *userdata, bgjob_job *job)
{
    struct at_once *a = userdata;
    pthread_barrier_wait(a->both_inside);
    a->remove_rc = bgjob_job_remove_cancel_hook(job, 0);
    atomic_fetch_add(a->removed, 1);
}

static void *add_at_once(void *arg)
{
    struct at_once *a = arg;
    a->add_rc = bgjob_job_add_cancel_hook(a->job, hook_removes_zero, a, NULL, &a->id);
    return NULL;
}

static atomic_bool held_release;

/* Ignores the cancel until released: the job stays running, so hooks added
 * meanwhile run at once. */
static int32_t held_worker(void *userdata, bgjob_job *job)
{
    (void)userdata;
    (void)job;
    while (!atomic_load(&held_release))
        sleep_ms(1);
    return 125;
}

static bool test_remove_of_id_zero_never_waits(void)
{
    bool ok = true;
    atomic_store(&held_release, false);
    bgjob_job *job = NULL;
    REQUIRE(bgjob_job_create(NULL, held_worker, NULL, NULL, &job) == BGJOB_RESULT_OK);
    /* Before the cancel: 0 names no registered hook either. */
    struct hook_rec h;
    hook_rec_init(&h);
    uint64_t id = 0;
    CHECK_RC(bgjob_job_add_cancel_hook(job, hook_count, &h, hook_free, &id), BGJOB_RESULT_OK);
    CHECK(id != 0);
    CHECK_RC(bgjob_job_remove_cancel_hook(job, 0), BGJOB_RESULT_NOT_FOUND);
    CHECK_EQ(atomic_load(&h.frees), 0); /* still registered */
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&h.calls), 1);

    pthread_barrier_t both;
    pthread_barrier_init(&both, NULL, 2);
    atomic_int removed;
    atomic_init(&removed, 0);
    struct at_once a[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        a[i] = (struct at_once){.job = job, .both_inside = &both, .removed = &removed,
                                .add_rc = -1, .remove_rc = -1, .id = 42};
        REQUIRE(pthread_create(&t[i], NULL, add_at_once, &a[i]) == 0);
    }
    bool returned = poll_int_eq(&removed, 2);
    CHECKF(returned, "the at-once hooks' removes of id 0 did not return (%d of 2)",
           atomic_load(&removed));
    if (!returned)
        return false; /* the hooks are stuck inside bgjob: nothing to tear down */
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        CHECK_RC(a[i].add_rc, BGJOB_RESULT_CANCELLED);
        CHECK_RC(a[i].remove_rc, BGJOB_RESULT_NOT_FOUND);
        CHECK_EQ(a[i].id, 42); /* not written: the hook ran at once */
    }
    pthread_barrier_destroy(&both);
    atomic_store(&held_release, true);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* getinfo never waits on a cancel in progress: while a hook is held inside its
 * call on the cancelling thread, the job can still be read (a blocked read
 * would hang here until the TAP watchdog fires). */
struct held_hook {
    atomic_int inside;
    atomic_bool release;
};

static void hook_held(void *userdata, bgjob_job *job)
{
    struct held_hook *h = userdata;
    (void)job;
    atomic_store(&h->inside, 1);
    while (!atomic_load(&h->release))
        sleep_ms(1);
}

static void *cancel_in_background(void *arg)
{
    bgjob_job_cancel(arg, NULL);
    return NULL;
}

static bool test_getinfo_during_a_long_cancel(void)
{
    bool ok = true;
    bgjob_job *job = running_job();
    REQUIRE(job != NULL);
    struct held_hook h;
    atomic_init(&h.inside, 0);
    atomic_init(&h.release, false);
    CHECK_RC(bgjob_job_add_cancel_hook(job, hook_held, &h, NULL, NULL), BGJOB_RESULT_OK);
    pthread_t t;
    pthread_create(&t, NULL, cancel_in_background, job);
    CHECK(poll_int_eq(&h.inside, 1));
    bgjob_info info;
    CHECK(info_of(job, &info));
    CHECK(info.cancel_requested);
    int32_t state = -1;
    CHECK_RC(bgjob_job_get_state(job, &state), BGJOB_RESULT_OK);
    char phase[16];
    CHECK_RC(bgjob_job_get_phase(job, phase, sizeof phase, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&h.inside), 1); /* the hook is still running */
    atomic_store(&h.release, true);
    pthread_join(t, NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* A 60 s sleep cancelled returns "cancelled" within a second. */
struct sleeper {
    atomic_int rc;
    atomic_llong took_ms;
    atomic_int entered;
};

static int32_t sleep_worker(void *userdata, bgjob_job *job)
{
    struct sleeper *s = userdata;
    int64_t t0 = now_ms();
    bgjob_result r = bgjob_job_sleep(job, 60000);
    atomic_store(&s->took_ms, now_ms() - t0);
    atomic_store(&s->rc, r);
    return r == BGJOB_RESULT_OK ? 0 : 125;
}

static bool test_long_sleep_cancelled_promptly(void)
{
    bool ok = true;
    struct sleeper s;
    atomic_init(&s.rc, -1);
    atomic_init(&s.took_ms, -1);
    atomic_init(&s.entered, 0);
    bgjob_job *job = NULL;
    CHECK_RC(bgjob_job_create(NULL, sleep_worker, &s, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    sleep_ms(50);
    int64_t t0 = now_ms();
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    int64_t took = now_ms() - t0;
    CHECK_RC(atomic_load(&s.rc), BGJOB_RESULT_CANCELLED);
    CHECKF(took < 10000, "cancel took %lld ms to end a 60 s sleep", (long long)took);
    CHECK(atomic_load(&s.took_ms) < 60000);
    CHECK_RC(bgjob_job_sleep(job, 1), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_sleep(job, -2), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* Paused time does not count toward a sleep: a 2 s sleep, paused for 300 ms
 * once the worker is in it, lasts at least the 2 s plus the pause this
 * thread measured (the 2 s leave room for a stall before the pause lands). */
static int32_t short_sleep_worker(void *userdata, bgjob_job *job)
{
    struct sleeper *s = userdata;
    int64_t t0 = now_ms();
    atomic_store(&s->entered, 1);
    bgjob_result r = bgjob_job_sleep(job, 2000);
    atomic_store(&s->took_ms, now_ms() - t0);
    atomic_store(&s->rc, r);
    return r == BGJOB_RESULT_OK ? 0 : 125;
}

static bool test_sleep_excludes_paused_time(void)
{
    bool ok = true;
    struct sleeper s;
    atomic_init(&s.rc, -1);
    atomic_init(&s.took_ms, -1);
    atomic_init(&s.entered, 0);
    bgjob_job *job = NULL;
    CHECK_RC(bgjob_job_create(NULL, short_sleep_worker, &s, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    REQUIRE(poll_int_eq(&s.entered, 1));
    sleep_ms(20);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    int64_t paused_at = now_ms();
    sleep_ms(300);
    CHECK_EQ(atomic_load(&s.rc), -1); /* still asleep: the pause did not count */
    int64_t paused_for = now_ms() - paused_at;
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&s.rc), BGJOB_RESULT_OK);
    CHECKF(atomic_load(&s.took_ms) >= 2000 + paused_for - 10, "the sleep ended after %lld ms, paused for %lld",
           (long long)atomic_load(&s.took_ms), (long long)paused_for);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_hooks_once_under_eight_cancellers),
        TAP_TEST(test_register_after_cancel),
        TAP_TEST(test_leftover_hooks_freed_not_called),
        TAP_TEST(test_no_hook_runs_once_the_job_is_seen_ended),
        TAP_TEST(test_remove_racing_cancel),
        TAP_TEST(test_remove_and_cancel_inside_a_hook),
        TAP_TEST(test_remove_of_id_zero_never_waits),
        TAP_TEST(test_getinfo_during_a_long_cancel),
        TAP_TEST(test_long_sleep_cancelled_promptly),
        TAP_TEST(test_sleep_excludes_paused_time),
    };
    return tap_run(tests, TAP_COUNT(tests));
}

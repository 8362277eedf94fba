/* Seams of the worker's end on a pool thread: the thread lists itself idle
 * (settles its task) from inside the job's end, before the end's last steps
 * ran. Each case forces the unlucky order with one CPU, gates and many
 * rounds, and turns a hang into a bounded failure. */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How long user code holding a worker's thread waits for a job started
 * meanwhile to run before it gives up (a failure: the job waited behind it).
 * A thread start takes microseconds; this is only the bound on a hang. */
#define HOLD_MS 10000

/* A stack size no other case uses: its jobs have a pool lane of their own,
 * so the thread of the job just ended is the only idle one there. */
#define LANE_STACK (512 * 1024 + 3 * 4096)

/* ---- one CPU for the case's threads ------------------------------------ */

struct pin {
    cpu_set_t saved;
    bool pinned;
};

/* Pins the calling thread (and the threads it starts from now on) to its
 * first allowed CPU: a wake-up then never runs in parallel, so who runs
 * first is decided by the scheduler's hand-offs, as on a loaded machine. */
static void pin_one_cpu(struct pin *p)
{
    cpu_set_t one;

    p->pinned = false;
    if (sched_getaffinity(0, sizeof p->saved, &p->saved) != 0)
        return;
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (CPU_ISSET(c, &p->saved)) {
            CPU_SET(c, &one);
            break;
        }
    }
    p->pinned = sched_setaffinity(0, sizeof one, &one) == 0;
}

static void unpin(struct pin *p)
{
    if (p->pinned)
        sched_setaffinity(0, sizeof p->saved, &p->saved);
}

/* ---- a flag with a bounded wait ----------------------------------------- */

struct flag {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool set;
};

static void flag_init(struct flag *f)
{
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->set = false;
}

static void flag_destroy(struct flag *f)
{
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
}

static void flag_set(struct flag *f)
{
    pthread_mutex_lock(&f->mu);
    f->set = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* True once set; false if `ms` passed first. */
static bool flag_wait(struct flag *f, int64_t ms)
{
    struct timespec ts;
    bool set;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&f->mu);
    while (!f->set) {
        if (pthread_cond_timedwait(&f->cv, &f->mu, &ts) != 0)
            break;
    }
    set = f->set;
    pthread_mutex_unlock(&f->mu);
    return set;
}

/* Polls the context's fd and dispatches until *done is set (or LONG_MS). */
static bool dispatch_until(bgjob_context *ctx, atomic_int *done)
{
    int32_t fd = -1;
    int64_t deadline = now_ms() + LONG_MS;

    if (bgjob_context_get_fd(ctx, &fd) != BGJOB_RESULT_OK)
        return false;
    while (!atomic_load(done)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};

        if (now_ms() > deadline)
            return false;
        poll(&p, 1, 100);
        if (bgjob_context_dispatch(ctx, 0, NULL) != BGJOB_RESULT_OK)
            return false;
    }
    return true;
}

/* Polls until *v != not (true) or LONG_MS passes (false). */
static bool poll_int_ne(atomic_int *v, int not)
{
    int64_t deadline = now_ms() + LONG_MS;

    while (atomic_load(v) == not) {
        if (now_ms() > deadline)
            return false;
        sleep_ms(1);
    }
    return true;
}

/* ---- user code run by a job's last release ---------------------------- */

/* Where the round's first job's last release ran user code: on the thread
 * that dispatched its completion, or held on another (its worker's thread,
 * or one the release was handed to). */
enum { FREED_NOT_YET, FREED_ON_DISPATCHER, FREED_HELD };

static struct {
    atomic_ullong id;           /* the round's first job (0: none) */
    pthread_t dispatcher;       /* the case's thread (it dispatches) */
    atomic_int freed_where;
    atomic_int held_too_long;   /* the second job never ran while held */
    atomic_int hold_done;
    struct flag second_ran;
} lr;

/* User code the last release of the round's first job runs: off the
 * dispatching thread, it holds its thread (as user code may: a log callback
 * or a free function may call any bgjob function, bgjob_job_wait included)
 * until the round's second job, started meanwhile, has run. */
static void hold_off_dispatcher(void)
{
    if (pthread_equal(pthread_self(), lr.dispatcher)) {
        atomic_store(&lr.freed_where, FREED_ON_DISPATCHER);
        return;
    }
    atomic_store(&lr.freed_where, FREED_HELD);
    if (!flag_wait(&lr.second_ran, HOLD_MS))
        atomic_store(&lr.held_too_long, 1);
    atomic_store(&lr.hold_done, 1);
}

/* The log callback: the round's first job's "freed" line. */
static void log_holds_thread(void *userdata, const char *line)
{
    char want[64];
    unsigned long long id = atomic_load(&lr.id);

    (void)userdata;
    if (id == 0)
        return;
    snprintf(want, sizeof want, "job %llu '", id);
    if (strncmp(line, want, strlen(want)) != 0 || strstr(line, " freed") == NULL)
        return;
    hold_off_dispatcher();
}

/* The result's free function of a detached job: it runs when the job's last
 * reference goes. */
static void result_free_holds_thread(void *result)
{
    (void)result;
    hold_off_dispatcher();
}

static int32_t worker_notes_thread(void *userdata, bgjob_job *job)
{
    struct gate *gate = userdata;

    if (gate) {
        /* Detached meanwhile: the result outlives every handle. */
        gate_wait(gate);
        if (bgjob_job_set_result(job, &lr, result_free_holds_thread) != BGJOB_RESULT_OK)
            return 1;
    }
    return 0;
}

/* A worker of bgjob_run_in_thread: its result lives until the job's last
 * reference goes (the handle the completion borrows is only removed). */
static int32_t worker_sets_result(void *userdata, bgjob_job *job)
{
    (void)userdata;
    return bgjob_job_set_result(job, &lr, result_free_holds_thread) == BGJOB_RESULT_OK ? 0 : 1;
}

static int32_t worker_second(void *userdata, bgjob_job *job)
{
    (void)userdata;
    (void)job;
    flag_set(&lr.second_ran);
    return 0;
}

/* The completion releases the job's only handle, as a fire-and-forget
 * caller does (bgjob_run_in_thread with no job_out does the same). */
static void completion_destroys(void *userdata, bgjob_job *job, bgjob_state state)
{
    (void)state;
    if (bgjob_job_destroy(job) == BGJOB_RESULT_OK)
        atomic_store((atomic_int *)userdata, 1);
}

/* The completion that installs the log callback (none was installed when
 * the job ended), then releases the job's only handle. */
static void completion_logs_then_destroys(void *userdata, bgjob_job *job, bgjob_state state)
{
    if (bgjob_set_log_callback(log_holds_thread, NULL, NULL) == BGJOB_RESULT_OK)
        completion_destroys(userdata, job, state);
}

/* The completion of a detached job (its handle is only lent). */
static void completion_notes(void *userdata, bgjob_job *job, bgjob_state state)
{
    (void)job;
    if (state == BGJOB_STATE_COMPLETED)
        atomic_store((atomic_int *)userdata, 1);
}

/* What user code the first job's last release runs. */
enum release {
    RELEASE_LOGS,       /* the log callback (installed by the case) */
    RELEASE_FREES,      /* a detached job's result free function */
    RELEASE_LOGS_LATE,  /* the log callback, installed by the completion */
    RELEASE_RUN_IN_THREAD, /* the result free of bgjob_run_in_thread's job */
};

/* One round: a job of the lane ends through `ctx`, its completion is
 * dispatched here, and its last reference goes on this thread or another
 * one; on another one (its worker's thread most often: the end yields to
 * this dispatcher), user code of that release holds the thread, and a
 * second job of the lane is started and must run meanwhile. Returns false
 * on a failed check; *hit tells whether the release went off this thread. */

static bool one_round(bgjob_context *ctx, enum release mode, int round, bool *hit)
{
    bool detached = mode == RELEASE_FREES;
    /* bgjob_run_in_thread's jobs have the default stack: its lane. */
    size_t lane = mode == RELEASE_RUN_IN_THREAD ? 0 : LANE_STACK;
    bool ok = true;
    atomic_int completed = 0;
    struct gate gate;
    bgjob_job_options o;
    bgjob_job *first = NULL, *second = NULL;

    *hit = false;
    gate_init(&gate);
    flag_init(&lr.second_ran);
    atomic_store(&lr.freed_where, FREED_NOT_YET);
    atomic_store(&lr.held_too_long, 0);
    atomic_store(&lr.hold_done, 0);
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_DEFER_START;
    o.stack_size = LANE_STACK;
    o.context = ctx;
    o.completion = detached                        ? completion_notes
                   : mode == RELEASE_LOGS_LATE ? completion_logs_then_destroys
                                               : completion_destroys;
    o.completion_userdata = &completed;
    if (mode == RELEASE_RUN_IN_THREAD) {
        CHECK_RC(bgjob_run_in_thread(ctx, "auto", worker_sets_result, NULL, NULL,
                                     completion_notes, &completed, NULL, NULL),
                 BGJOB_RESULT_OK);
    } else {
        CHECK_RC(bgjob_job_create(&o, worker_notes_thread, detached ? &gate : NULL, NULL,
                                  &first),
                 BGJOB_RESULT_OK);
        REQUIRE(first != NULL);
        atomic_store(&lr.id, id_of(first));
        CHECK_RC(bgjob_job_start(first), BGJOB_RESULT_OK);
    }
    if (detached) {
        CHECK_RC(bgjob_job_detach(first, 0), BGJOB_RESULT_OK);
        gate_open(&gate);
    }
    CHECK(dispatch_until(ctx, &completed));
    /* Every handle is gone; the last reference goes on one thread or the
     * other. */
    CHECK(poll_int_ne(&lr.freed_where, FREED_NOT_YET));
    if (atomic_load(&lr.freed_where) == FREED_HELD) {
        *hit = true;
        bgjob_job_options_init(&o, sizeof o);
        o.stack_size = lane;
        CHECK_RC(bgjob_job_create(&o, worker_second, NULL, NULL, &second), BGJOB_RESULT_OK);
        CHECK(poll_int_eq(&lr.hold_done, 1));
        CHECKF(!atomic_load(&lr.held_too_long),
               "round %d: the job started while job %llu's last release ran user "
               "code off the dispatching thread did not run in %d ms",
               round, (unsigned long long)atomic_load(&lr.id), HOLD_MS);
        if (second) {
            CHECK_STATE(wait_end(second), BGJOB_STATE_COMPLETED);
            CHECK_RC(bgjob_job_destroy(second), BGJOB_RESULT_OK);
        }
    }
    atomic_store(&lr.id, 0);
    if (mode == RELEASE_LOGS_LATE)
        CHECK_RC(bgjob_set_log_callback(NULL, NULL, NULL), BGJOB_RESULT_OK);
    flag_destroy(&lr.second_ran);
    gate_destroy(&gate);
    return ok;
}

/* Rounds of one_round on one CPU, until five released the job off the
 * dispatching thread. */
static bool rounds_on_one_cpu(enum release mode)
{
    bool ok = true;
    struct pin pin;
    bgjob_context *ctx = NULL;
    int hits = 0, round = 0;

    memset(&lr, 0, sizeof lr);
    lr.dispatcher = pthread_self();
    REQUIRE(bgjob_context_create(&ctx) == BGJOB_RESULT_OK);
    pin_one_cpu(&pin);
    for (; round < 300 && hits < 5 && ok; round++) {
        bool hit = false;

        ok = one_round(ctx, mode, round, &hit);
        hits += hit;
    }
    unpin(&pin);
    CHECK_RC(bgjob_context_destroy(ctx), BGJOB_RESULT_OK);
    tap_diag("%d of %d rounds released the job off the dispatching thread", hits, round);
    return ok;
}

/* "a job never waits behind another unless the caller set a cap": a job
 * whose last reference its worker's thread drops (its completion, dispatched
 * first, released the handle) runs user code there — the log callback's
 * "freed" line. A job started while that line is being delivered must get a
 * thread of its own, not the one still inside the log callback. */
static bool test_job_never_waits_behind_the_freed_line_of_another(void)
{
    bool ok = true;

    CHECK_RC(bgjob_set_log_callback(log_holds_thread, NULL, NULL), BGJOB_RESULT_OK);
    CHECK(rounds_on_one_cpu(RELEASE_LOGS));
    CHECK_RC(bgjob_set_log_callback(NULL, NULL, NULL), BGJOB_RESULT_OK);
    return ok;
}

/* The same with no log callback: a job detached while it ran keeps its
 * result until its last reference goes, and the result's free function is
 * the user code its worker's thread may run there. */
static bool test_job_never_waits_behind_the_result_free_of_another(void)
{
    return rounds_on_one_cpu(RELEASE_FREES);
}

/* The same for the job of bgjob_run_in_thread with no job_out (QIOTask's
 * way): the handle its completion gets is released after the callback, and
 * the result its worker left goes with the job's last reference. */
static bool test_job_never_waits_behind_the_result_free_of_a_run_in_thread(void)
{
    return rounds_on_one_cpu(RELEASE_RUN_IN_THREAD);
}

/* The same with a log callback installed only after the job ended: by its
 * completion, which then releases the handle. */
static bool test_job_never_waits_behind_a_freed_line_logged_late(void)
{
    return rounds_on_one_cpu(RELEASE_LOGS_LATE);
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_job_never_waits_behind_the_freed_line_of_another),
        TAP_TEST(test_job_never_waits_behind_the_result_free_of_another),
        TAP_TEST(test_job_never_waits_behind_a_freed_line_logged_late),
        TAP_TEST(test_job_never_waits_behind_the_result_free_of_a_run_in_thread),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

/* test_cancellable_waits.c: cancellable waits beyond sleep: the fd wait, the pollable cancel (wake) fd,
 * deadlines with their cancel cause, and what a caller sees while a cancelled
 * worker cleans up (libxl's cancellation design). */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

/* What a waiting worker saw. */
struct waiter {
    int fd;
    uint32_t events;
    int64_t timeout_ms;
    atomic_int entered;
    atomic_int rc;
    atomic_uint revents;
    atomic_llong took_ms;
};

static void waiter_init(struct waiter *w, int fd, uint32_t events, int64_t timeout_ms)
{
    w->fd = fd;
    w->events = events;
    w->timeout_ms = timeout_ms;
    atomic_init(&w->entered, 0);
    atomic_init(&w->rc, -1);
    atomic_init(&w->revents, 0);
    atomic_init(&w->took_ms, -1);
}

static int32_t fd_worker(void *userdata, bgjob_job *job)
{
    struct waiter *w = userdata;
    uint32_t revents = 0;
    atomic_store(&w->entered, 1);
    int64_t t0 = now_ms();
    bgjob_result r = bgjob_job_wait_fd(job, w->fd, w->events, w->timeout_ms, &revents);
    atomic_store(&w->took_ms, now_ms() - t0);
    atomic_store(&w->revents, revents);
    atomic_store(&w->rc, r);
    return r == BGJOB_RESULT_OK ? 0 : 125;
}

static bgjob_job *start(bgjob_worker_callback worker, void *userdata)
{
    bgjob_job *job = NULL;
    if (bgjob_job_create(NULL, worker, userdata, NULL, &job) != BGJOB_RESULT_OK)
        return NULL;
    return job;
}

/* Data arriving wakes the wait with READABLE. */
static bool test_fd_wait_woken_by_data(void)
{
    bool ok = true;
    int p[2];
    REQUIRE(pipe(p) == 0);
    struct waiter w;
    waiter_init(&w, p[0], BGJOB_FD_READABLE, -1);
    bgjob_job *job = start(fd_worker, &w);
    REQUIRE(job != NULL);
    REQUIRE(poll_int_eq(&w.entered, 1));
    sleep_ms(20);
    CHECK_EQ(atomic_load(&w.rc), -1); /* nothing to read yet: still waiting */
    REQUIRE(write(p[1], "x", 1) == 1);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&w.rc), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&w.revents), BGJOB_FD_READABLE);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    close(p[0]);
    close(p[1]);
    return ok;
}

/* Cancel ends a wait with no time limit, promptly, with CANCELLED. */
static bool test_fd_wait_woken_by_cancel(void)
{
    bool ok = true;
    int p[2];
    REQUIRE(pipe(p) == 0);
    struct waiter w;
    waiter_init(&w, p[0], BGJOB_FD_READABLE, -1);
    bgjob_job *job = start(fd_worker, &w);
    REQUIRE(job != NULL);
    REQUIRE(poll_int_eq(&w.entered, 1));
    sleep_ms(20);
    int64_t t0 = now_ms();
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    int64_t took = now_ms() - t0;
    CHECK_RC(atomic_load(&w.rc), BGJOB_RESULT_CANCELLED);
    CHECKF(took < 10000, "cancel took %lld ms to end an fd wait", (long long)took);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    close(p[0]);
    close(p[1]);
    return ok;
}

/* Writable ends at once; a closed writer shows as HANGUP; a timeout ends with
 * TIMED_OUT; paused time does not count toward it. */
static bool test_fd_wait_events_and_timeouts(void)
{
    bool ok = true;
    int p[2];
    REQUIRE(pipe(p) == 0);
    struct waiter w;

    waiter_init(&w, p[1], BGJOB_FD_WRITABLE, -1);
    bgjob_job *job = start(fd_worker, &w);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&w.revents), BGJOB_FD_WRITABLE);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    waiter_init(&w, p[0], BGJOB_FD_READABLE, 0);
    job = start(fd_worker, &w);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(atomic_load(&w.rc), BGJOB_RESULT_TIMED_OUT);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    /* 2 s of waiting, paused for 300 ms soon after it began: at least the
     * 2 s plus the pause this thread measured (2 s leave room for a stall
     * before the pause lands). */
    waiter_init(&w, p[0], BGJOB_FD_READABLE, 2000);
    job = start(fd_worker, &w);
    REQUIRE(job != NULL);
    REQUIRE(poll_int_eq(&w.entered, 1));
    sleep_ms(20);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    int64_t paused_at = now_ms();
    sleep_ms(300);
    CHECK_EQ(atomic_load(&w.rc), -1);
    int64_t paused_for = now_ms() - paused_at;
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(atomic_load(&w.rc), BGJOB_RESULT_TIMED_OUT);
    CHECKF(atomic_load(&w.took_ms) >= 2000 + paused_for - 10,
           "the wait timed out after %lld ms, paused for %lld", (long long)atomic_load(&w.took_ms),
           (long long)paused_for);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    close(p[1]);
    waiter_init(&w, p[0], BGJOB_FD_READABLE, -1);
    job = start(fd_worker, &w);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK(atomic_load(&w.revents) & BGJOB_FD_HANGUP);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    close(p[0]);
    return ok;
}

/* Bad arguments are refused without waiting; a job that is not running may
 * not wait at all. */
struct bad_args {
    int closed_fd;
    atomic_int rcs[6];
};

static int32_t bad_args_worker(void *userdata, bgjob_job *job)
{
    struct bad_args *b = userdata;
    uint32_t rev = 12345;
    atomic_store(&b->rcs[0], bgjob_job_wait_fd(job, -1, BGJOB_FD_READABLE, 0, &rev));
    atomic_store(&b->rcs[1], bgjob_job_wait_fd(job, 0, 0, 0, &rev));
    atomic_store(&b->rcs[2], bgjob_job_wait_fd(job, 0, 64, 0, &rev));
    atomic_store(&b->rcs[3], bgjob_job_wait_fd(job, 0, BGJOB_FD_READABLE, -2, &rev));
    atomic_store(&b->rcs[4], bgjob_job_wait_fd(job, b->closed_fd, BGJOB_FD_READABLE, -1, &rev));
    atomic_store(&b->rcs[5], rev == 12345 ? 0 : 1); /* never written on failure */
    return 0;
}

static bool test_fd_wait_bad_arguments(void)
{
    bool ok = true;
    /* A number no fd has (the worker's own fds come from the bottom). */
    int closed = fcntl(0, F_DUPFD_CLOEXEC, 900);
    REQUIRE(closed >= 900);
    close(closed);
    struct bad_args b = {.closed_fd = closed};
    bgjob_job *job = start(bad_args_worker, &b);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    for (int i = 0; i < 5; i++)
        CHECK_RC(atomic_load(&b.rcs[i]), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_EQ(atomic_load(&b.rcs[5]), 0);
    CHECK_RC(bgjob_job_wait_fd(job, 0, BGJOB_FD_READABLE, 0, NULL), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_wait_fd(job, 0, BGJOB_FD_READABLE, 0, NULL), BGJOB_RESULT_INVALID_HANDLE);
    return ok;
}

/* A worker with its own poll loop: the wake fd turns readable on pause (the
 * worker parks in pause_point until resume, then the fd is quiet again) and
 * on cancel (pause_point reports it). */
struct looper {
    int data_fd;
    atomic_int wakes;
    atomic_int polling;
    atomic_int saw_cancel;
};

static int32_t poll_loop_worker(void *userdata, bgjob_job *job)
{
    struct looper *l = userdata;
    int wake = -1;
    if (bgjob_job_get_wake_fd(job, &wake) != BGJOB_RESULT_OK)
        return 1;
    for (;;) {
        struct pollfd fds[2] = {{.fd = wake, .events = POLLIN}, {.fd = l->data_fd, .events = POLLIN}};
        atomic_store(&l->polling, 1);
        int n = poll(fds, 2, -1);
        atomic_store(&l->polling, 0);
        if (n < 0 && errno != EINTR)
            return 2;
        if (fds[0].revents & POLLIN) {
            atomic_fetch_add(&l->wakes, 1);
            if (bgjob_job_pause_point(job) == BGJOB_RESULT_CANCELLED) {
                atomic_store(&l->saw_cancel, 1);
                return 125;
            }
        }
    }
}

static bool fd_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static bool test_wake_fd_in_own_poll_loop(void)
{
    bool ok = true;
    int p[2];
    REQUIRE(pipe(p) == 0);
    struct looper l = {.data_fd = p[0]};
    atomic_init(&l.wakes, 0);
    atomic_init(&l.polling, 0);
    atomic_init(&l.saw_cancel, 0);
    bgjob_job *job = start(poll_loop_worker, &l);
    REQUIRE(job != NULL);
    int fd = -1;
    CHECK_RC(bgjob_job_get_wake_fd(job, &fd), BGJOB_RESULT_OK);
    int fd2 = -2;
    CHECK_RC(bgjob_job_get_wake_fd(job, &fd2), BGJOB_RESULT_OK);
    CHECK_EQ(fd, fd2); /* one fd per job */
    REQUIRE(poll_int_eq(&l.polling, 1));
    CHECK(!fd_readable(fd));

    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK(fd_readable(fd));
    REQUIRE(poll_int_eq(&l.wakes, 1)); /* it woke, and parks in pause_point */
    sleep_ms(50);
    CHECK_EQ(atomic_load(&l.wakes), 1); /* parked, not spinning */
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK(!fd_readable(fd));
    REQUIRE(poll_int_eq(&l.polling, 1));

    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK(fd_readable(fd));
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&l.saw_cancel), 1);
    CHECK(fd_readable(fd)); /* stays readable after a cancel */
    CHECK_RC(bgjob_job_get_wake_fd(job, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_get_wake_fd(job, &fd), BGJOB_RESULT_INVALID_HANDLE);
    close(p[0]);
    close(p[1]);
    return ok;
}

static int32_t until_cancelled(void *userdata, bgjob_job *job)
{
    (void)userdata;
    return bgjob_job_sleep(job, INT64_MAX) == BGJOB_RESULT_CANCELLED ? 125 : 0;
}

static bgjob_job *with_deadline(int64_t deadline_ms, uint32_t flags)
{
    bgjob_job_options o;
    bgjob_job *job = NULL;
    if (bgjob_job_options_init(&o, sizeof o) != BGJOB_RESULT_OK)
        return NULL;
    o.deadline_ms = deadline_ms;
    o.flags = flags;
    if (bgjob_job_create(&o, until_cancelled, NULL, NULL, &job) != BGJOB_RESULT_OK)
        return NULL;
    return job;
}

static int32_t cause_of(bgjob_job *job)
{
    bgjob_info info;
    return info_of(job, &info) ? info.cancel_cause : -1;
}

/* A deadline cancels the job with cause TIMEOUT; a caller's cancel says
 * CALLER; a job nobody cancelled says NONE. */
static bool test_deadline_fires(void)
{
    bool ok = true;
    bgjob_job *job = with_deadline(100, 0);
    REQUIRE(job != NULL);
    CHECK_EQ(cause_of(job), BGJOB_CANCEL_CAUSE_NONE);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    bgjob_info info;
    REQUIRE(info_of(job, &info));
    CHECK(info.cancel_requested);
    CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_TIMEOUT);
    CHECKF(info.elapsed_ms >= 100, "ended after %lld ms of its 100", (long long)info.elapsed_ms);
    int32_t st = -1;
    CHECK_RC(bgjob_job_cancel(job, &st), BGJOB_RESULT_OK);
    CHECK_EQ(st, BGJOB_CANCEL_STATUS_ALREADY_FINISHED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    job = with_deadline(0, 0);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(cause_of(job), BGJOB_CANCEL_CAUSE_CALLER);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    bgjob_job_options o;
    CHECK_RC(bgjob_job_options_init(&o, sizeof o), BGJOB_RESULT_OK);
    CHECK_EQ(o.deadline_ms, -1);
    o.deadline_ms = -2;
    job = NULL;
    CHECK_RC(bgjob_job_create(&o, until_cancelled, NULL, NULL, &job), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK(job == NULL);
    return ok;
}

/* Paused time does not count: a 2 s deadline, paused just after the start
 * for 600 ms, has not fired; after resume it fires once the rest of its 2 s
 * of active time has run. (What ran before the pause is read, not assumed:
 * this thread may be kept off the CPU between the start and the pause.) */
static bool test_deadline_not_while_paused(void)
{
    bool ok = true;
    bgjob_job *job = with_deadline(2000, BGJOB_CREATE_DEFER_START);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    int64_t t0 = now_ms();
    bgjob_info info;
    REQUIRE(info_of(job, &info));
    int64_t ran = info.elapsed_ms;
    sleep_ms(600);
    REQUIRE(info_of(job, &info));
    CHECK_STATE(info.state, BGJOB_STATE_PAUSED);
    CHECK(!info.cancel_requested);
    CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_NONE);
    CHECKF(info.elapsed_ms == ran, "active time ran while paused: %lld -> %lld ms", (long long)ran,
           (long long)info.elapsed_ms);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    int64_t wall = now_ms() - t0;
    REQUIRE(info_of(job, &info));
    CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_TIMEOUT);
    CHECKF(info.elapsed_ms >= 2000, "active %lld ms", (long long)info.elapsed_ms);
    CHECKF(wall >= 600 + (2000 - ran) - 10, "fired %lld ms after the pause began, %lld ms run before it",
           (long long)wall, (long long)ran);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* set_deadline replaces the option's deadline, -1 removes it, and one set on a
 * running job fires; a finished job refuses it. */
static bool test_set_deadline(void)
{
    bool ok = true;
    bgjob_job *job = with_deadline(150, BGJOB_CREATE_DEFER_START);
    REQUIRE(job != NULL);
    /* Removed before the start: no stall of this thread lets it pass first. */
    CHECK_RC(bgjob_job_set_deadline(job, -1), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    sleep_ms(400);
    CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
    CHECK_RC(bgjob_job_set_deadline(job, -2), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_set_deadline(job, INT64_MIN), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_set_deadline(job, 1), BGJOB_RESULT_OK); /* already passed */
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(cause_of(job), BGJOB_CANCEL_CAUSE_TIMEOUT);
    CHECK_RC(bgjob_job_set_deadline(job, 100), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_deadline(job, 100), BGJOB_RESULT_INVALID_HANDLE);
    return ok;
}

/* set_deadline(0) is due now: a running job is cancelled at once, cause
 * TIMEOUT (0 is "now" in the header's time convention, not "none"). */
static bool test_set_deadline_now(void)
{
    bool ok = true;
    bgjob_job *job = with_deadline(-1, 0);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_set_deadline(job, 0), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(cause_of(job), BGJOB_CANCEL_CAUSE_TIMEOUT);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static int32_t sleep_forever(void *userdata, bgjob_job *job)
{
    atomic_int *rc = userdata;
    bgjob_result r = bgjob_job_sleep(job, -1);
    atomic_store(rc, r);
    return r == BGJOB_RESULT_CANCELLED ? 125 : 0;
}

/* sleep(-1) sleeps until cancel: the job is still running after a wait that
 * timed out, and the sleep returns CANCELLED once cancel is requested. */
static bool test_sleep_forever(void)
{
    bool ok = true;
    static atomic_int rc;
    atomic_store(&rc, -1);
    bgjob_job *job = NULL;
    REQUIRE(bgjob_job_create(NULL, sleep_forever, &rc, NULL, &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_wait(job, 50, NULL), BGJOB_RESULT_TIMED_OUT);
    CHECK_EQ(atomic_load(&rc), -1);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(atomic_load(&rc), BGJOB_RESULT_CANCELLED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* A job that finishes before its deadline completes; the deadline's timer
 * holds no reference that keeps the job from being freed. */
static int32_t quick(void *userdata, bgjob_job *job)
{
    (void)userdata;
    return bgjob_job_sleep(job, 10) == BGJOB_RESULT_OK ? 0 : 125;
}

static bool test_deadline_not_reached(void)
{
    bool ok = true;
    bgjob_job_options o;
    CHECK_RC(bgjob_job_options_init(&o, sizeof o), BGJOB_RESULT_OK);
    o.deadline_ms = 60000;
    bgjob_job *job = NULL;
    CHECK_RC(bgjob_job_create(&o, quick, NULL, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(cause_of(job), BGJOB_CANCEL_CAUSE_NONE);
    uint64_t id = id_of(job);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK(poll_unlisted(id));
    return ok;
}

/* While a cancelled worker cleans up, getinfo shows the cancel, the phase it
 * set and its progress; wait returns only when the worker is done. */
struct cleaner {
    struct gate done_cleaning;
    atomic_int cleaning;
};

static int32_t cleanup_worker(void *userdata, bgjob_job *job)
{
    struct cleaner *c = userdata;
    bgjob_job_set_total(job, 10);
    bgjob_job_add_units(job, 3);
    if (bgjob_job_sleep(job, INT64_MAX) != BGJOB_RESULT_CANCELLED)
        return 0;
    bgjob_job_set_phase(job, "cleaning up");
    bgjob_job_add_units(job, 2);
    atomic_store(&c->cleaning, 1);
    gate_wait(&c->done_cleaning);
    return 125;
}

static bool test_cleanup_after_cancel_is_visible(void)
{
    bool ok = true;
    struct cleaner c;
    gate_init(&c.done_cleaning);
    atomic_init(&c.cleaning, 0);
    bgjob_job *job = start(cleanup_worker, &c);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    REQUIRE(poll_int_eq(&c.cleaning, 1));
    bgjob_info info;
    REQUIRE(info_of(job, &info));
    CHECK_STATE(info.state, BGJOB_STATE_RUNNING);
    CHECK(info.cancel_requested);
    CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_CALLER);
    CHECK_EQ(info.current, 5);
    CHECK_EQ(info.percent, 50);
    char phase[32];
    CHECK_RC(bgjob_job_get_phase(job, phase, sizeof phase, NULL), BGJOB_RESULT_OK);
    CHECK_STR(phase, "cleaning up");
    int32_t st = -1;
    CHECK_RC(bgjob_job_wait(job, 50, &st), BGJOB_RESULT_TIMED_OUT);
    CHECK_EQ(st, -1);
    gate_open(&c.done_cleaning);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&c.done_cleaning);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_fd_wait_woken_by_data),
        TAP_TEST(test_fd_wait_woken_by_cancel),
        TAP_TEST(test_fd_wait_events_and_timeouts),
        TAP_TEST(test_fd_wait_bad_arguments),
        TAP_TEST(test_wake_fd_in_own_poll_loop),
        TAP_TEST(test_deadline_fires),
        TAP_TEST(test_deadline_not_while_paused),
        TAP_TEST(test_set_deadline),
        TAP_TEST(test_set_deadline_now),
        TAP_TEST(test_sleep_forever),
        TAP_TEST(test_deadline_not_reached),
        TAP_TEST(test_cleanup_after_cancel_is_visible),
    };
    return tap_run(tests, TAP_COUNT(tests));
}

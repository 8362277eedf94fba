/*
 * test_ready.c: QEMU's READY / STANDBY / PENDING states, the complete verb,
 * soft cancel, and BGJOB_CREATE_UPDATES_NEVER_PARK.
 *
 * - set_ready makes RUNNING READY (PAUSED STANDBY), idempotently; refused in
 *   CREATED and once ended.
 * - complete wakes a worker blocked in bgjob_job_sleep and in
 *   bgjob_job_wait_fd (the worker is seen blocked in the kernel first: its
 *   thread state in /proc, no timed sleeps); sleep returns OK early, wait_fd
 *   OK with no events, the wake fd is readable until the worker reads
 *   bgjob_job_complete_requested; the job ends COMPLETED.
 * - complete is refused outside READY (and while cancel is requested).
 * - pause in READY gives STANDBY, resume READY.
 * - soft cancel of a READY job: the worker sees a cancel with soft set, no
 *   hook runs, it returns 0 and the job completes with cancel_requested;
 *   outside READY a soft cancel is a cancel; a force cancel after a soft one
 *   clears soft and calls the hooks (also those added after the soft one).
 * - PENDING: manual finalize alone (straight to PENDING) and in a
 *   transaction (WAITING while a sibling runs, then PENDING).
 * - the verb table's COMPLETE row over every state.
 * - UPDATES_NEVER_PARK: a worker holding its own mutex updates progress while
 *   the job is paused; the caller's resume path, which needs that mutex, does
 *   not deadlock. Without the flag the same progress call parks until resume.
 */

#include "util.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Polls until thread `tid` of this process is blocked (state S: sleeping in
 * the kernel, a futex or poll), or LONG_MS passes. */
static bool thread_blocked(pid_t tid)
{
    char path[64], buf[256];
    int64_t end = now_ms() + LONG_MS;

    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
    while (now_ms() < end) {
        int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            ssize_t n = read(fd, buf, sizeof(buf) - 1);
            close(fd);
            if (n > 0) {
                buf[n] = '\0';
                /* "tid (comm) S ...": the state follows the last ')'. */
                char *p = strrchr(buf, ')');
                if (p != NULL && p[1] == ' ' && p[2] == 'S')
                    return true;
            }
        }
        sleep_us(200);
    }
    return false;
}

/* One worker's script and what it saw. */
struct rw {
    int mode; /* see worker_ready */
    int fd;   /* MODE_WAIT_FD: the fd it waits on (never readable) */
    struct gate go;
    atomic_int tid;
    atomic_int before_block; /* set right before the blocking call */
    atomic_int rc;           /* what the blocking call returned */
    atomic_uint revents;
    atomic_int complete_seen;
    atomic_int wake_readable_before; /* the wake fd, before the ack */
    atomic_int wake_readable_after;  /* ... and after it */
    atomic_int soft_seen;
    atomic_int after_ack_rc; /* a second wait after the ack */
    atomic_int hooks;
    int32_t ret; /* what the worker returns */
};

enum { MODE_SLEEP, MODE_WAIT_FD, MODE_GATE };

static bool fd_readable(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void rw_init(struct rw *w, int mode)
{
    memset(w, 0, sizeof(*w));
    w->mode = mode;
    w->fd = -1;
    gate_init(&w->go);
    atomic_store(&w->rc, -1);
    atomic_store(&w->after_ack_rc, -1);
    atomic_store(&w->soft_seen, -1);
}

/* Says it is ready, waits for the test's go, then blocks in the call its
 * mode names; afterwards reads what a worker of a READY job reads. */
static int32_t worker_ready(void *userdata, bgjob_job *job)
{
    struct rw *w = userdata;
    bool requested = false, soft = false;
    int wake = -1;

    atomic_store(&w->tid, (int)syscall(SYS_gettid));
    if (bgjob_job_set_ready(job) != BGJOB_RESULT_OK)
        return 90;
    if (bgjob_job_get_wake_fd(job, &wake) != BGJOB_RESULT_OK)
        return 91;
    gate_wait(&w->go);
    atomic_store(&w->before_block, 1);
    if (w->mode == MODE_SLEEP) {
        atomic_store(&w->rc, bgjob_job_sleep(job, -1));
    } else if (w->mode == MODE_WAIT_FD) {
        uint32_t ev = 99;
        atomic_store(&w->rc, bgjob_job_wait_fd(job, w->fd, BGJOB_FD_READABLE, -1, &ev));
        atomic_store(&w->revents, ev);
    }
    atomic_store(&w->wake_readable_before, fd_readable(wake));
    if (bgjob_job_cancel_is_soft(job, &soft) == BGJOB_RESULT_OK)
        atomic_store(&w->soft_seen, soft);
    if (bgjob_job_complete_requested(job, &requested) != BGJOB_RESULT_OK)
        return 92;
    atomic_store(&w->complete_seen, requested);
    atomic_store(&w->wake_readable_after, fd_readable(wake));
    if (requested) {
        /* Acknowledged: a wait no longer ends early for it. */
        if (w->mode == MODE_SLEEP)
            atomic_store(&w->after_ack_rc, bgjob_job_sleep(job, 0));
        else if (w->mode == MODE_WAIT_FD)
            atomic_store(&w->after_ack_rc,
                         bgjob_job_wait_fd(job, w->fd, BGJOB_FD_READABLE, 0, NULL));
    }
    return w->ret;
}

static bgjob_job *make(struct rw *w, uint32_t flags)
{
    bgjob_job_options o;
    bgjob_job *job = NULL;

    bgjob_job_options_init(&o, sizeof(o));
    o.flags = flags;
    if (bgjob_job_create(&o, worker_ready, w, NULL, &job) != BGJOB_RESULT_OK)
        return NULL;
    return job;
}

static bool info_flags(bgjob_job *job, bool *complete, bool *soft, bool *cancel)
{
    bgjob_info info;
    if (!info_of(job, &info))
        return false;
    *complete = info.complete_requested;
    *soft = info.cancel_soft;
    *cancel = info.cancel_requested;
    return true;
}

static bool test_set_ready(void)
{
    bool ok = true;
    struct rw w;
    bgjob_job *job;

    rw_init(&w, MODE_GATE);
    job = make(&w, BGJOB_CREATE_DEFER_START);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_set_ready(job), BGJOB_RESULT_NOT_ALLOWED); /* CREATED */
    CHECK_STATE(state_of(job), BGJOB_STATE_CREATED);
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    REQUIRE(poll_state(job, BGJOB_STATE_READY)); /* set by the worker */
    CHECK_RC(bgjob_job_set_ready(job), BGJOB_RESULT_OK); /* idempotent, any thread */
    CHECK_STATE(state_of(job), BGJOB_STATE_READY);
    /* Pause in READY: STANDBY; resume: READY. */
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_STANDBY);
    CHECK_RC(bgjob_job_set_ready(job), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_STANDBY);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_READY);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_NOT_ALLOWED);
    /* A READY job cannot be destroyed while its worker runs. */
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_NOT_ALLOWED);
    gate_open(&w.go);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_set_ready(job), BGJOB_RESULT_NOT_ALLOWED); /* ended */
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    /* PAUSED becomes STANDBY when the owner says ready. */
    rw_init(&w, MODE_GATE);
    {
        struct tracker t;
        struct gate g;
        tracker_init(&t);
        gate_init(&g);
        t.gate = &g;
        REQUIRE(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job) ==
                BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_set_ready(job), BGJOB_RESULT_OK);
        CHECK_STATE(state_of(job), BGJOB_STATE_STANDBY);
        CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
        CHECK_STATE(state_of(job), BGJOB_STATE_READY);
        gate_open(&g);
        CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        CHECK(poll_int_eq(&t.frees, 1));
        gate_destroy(&g);
    }
    return ok;
}

/* complete wakes a worker blocked in sleep (-1: only a wake ends it). */
static bool test_complete_wakes_sleep(void)
{
    bool ok = true;
    static struct rw w;
    bool c = false, s = false, x = false;

    rw_init(&w, MODE_SLEEP);
    bgjob_job *job = make(&w, 0);
    REQUIRE(job != NULL);
    REQUIRE(poll_state(job, BGJOB_STATE_READY));
    gate_open(&w.go);
    REQUIRE(poll_int_eq(&w.before_block, 1));
    REQUIRE(thread_blocked(atomic_load(&w.tid)));
    CHECK(info_flags(job, &c, &s, &x) && !c && !s && !x);
    CHECK_RC(bgjob_job_complete(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&w.rc), BGJOB_RESULT_OK); /* an early return, not CANCELLED */
    CHECK_EQ(atomic_load(&w.complete_seen), 1);
    CHECK_EQ(atomic_load(&w.wake_readable_before), 1);
    CHECK_EQ(atomic_load(&w.wake_readable_after), 0);
    CHECK_RC(atomic_load(&w.after_ack_rc), BGJOB_RESULT_OK); /* sleep(0) after the ack */
    CHECK(info_flags(job, &c, &s, &x) && c && !s && !x);
    CHECK_RC(bgjob_job_complete(job), BGJOB_RESULT_NOT_ALLOWED); /* ended */
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* complete wakes a worker blocked in wait_fd on a pipe nobody writes. */
static bool test_complete_wakes_wait_fd(void)
{
    bool ok = true;
    static struct rw w;
    int p[2];

    REQUIRE(pipe(p) == 0);
    rw_init(&w, MODE_WAIT_FD);
    w.fd = p[0];
    bgjob_job *job = make(&w, 0);
    REQUIRE(job != NULL);
    REQUIRE(poll_state(job, BGJOB_STATE_READY));
    gate_open(&w.go);
    REQUIRE(poll_int_eq(&w.before_block, 1));
    REQUIRE(thread_blocked(atomic_load(&w.tid)));
    CHECK_RC(bgjob_job_complete(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&w.rc), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&w.revents), 0u); /* no event: the complete's wake */
    CHECK_EQ(atomic_load(&w.complete_seen), 1);
    CHECK_EQ(atomic_load(&w.wake_readable_before), 1);
    CHECK_EQ(atomic_load(&w.wake_readable_after), 0);
    /* After the ack the fd wait no longer returns early: it times out. */
    CHECK_RC(atomic_load(&w.after_ack_rc), BGJOB_RESULT_TIMED_OUT);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    close(p[0]);
    close(p[1]);
    return ok;
}

static bool test_complete_refused_outside_ready(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    bgjob_job *job = NULL;

    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    REQUIRE(job_create(&t, worker_gated, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                       &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_complete(job), BGJOB_RESULT_NOT_ALLOWED); /* CREATED */
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_complete(job), BGJOB_RESULT_NOT_ALLOWED); /* RUNNING */
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_complete(job), BGJOB_RESULT_NOT_ALLOWED); /* PAUSED */
    CHECK_RC(bgjob_job_set_ready(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_complete(job), BGJOB_RESULT_NOT_ALLOWED); /* STANDBY */
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    /* READY but draining (QEMU refuses a paused job too). */
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_complete(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_OK);
    /* READY with cancel requested. */
    t.succeed_on_cancel = true;
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_READY);
    CHECK_RC(bgjob_job_complete(job), BGJOB_RESULT_NOT_ALLOWED);
    bool c = true, s = true, x = false;
    CHECK(info_flags(job, &c, &s, &x) && !c && !s && x);
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_complete(job), BGJOB_RESULT_NOT_ALLOWED); /* COMPLETED */
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&t.frees, 1));
    gate_destroy(&g);
    return ok;
}

static void count_hook(void *userdata, bgjob_job *job)
{
    (void)job;
    atomic_fetch_add(&((struct rw *)userdata)->hooks, 1);
}

/* Soft cancel of a READY job blocked in sleep: it sees a soft cancel, no hook
 * runs, it returns 0 and the job completes with cancel_requested set. */
static bool test_soft_cancel_ready_completes(void)
{
    bool ok = true;
    static struct rw w;
    int32_t status = -1;
    bool c = true, s = false, x = false;

    rw_init(&w, MODE_SLEEP);
    w.ret = 0;
    bgjob_job *job = make(&w, 0);
    REQUIRE(job != NULL);
    REQUIRE(poll_state(job, BGJOB_STATE_READY));
    CHECK_RC(bgjob_job_add_cancel_hook(job, count_hook, &w, NULL, NULL), BGJOB_RESULT_OK);
    /* STANDBY first: the soft cancel resumes it, as a cancel does. */
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    gate_open(&w.go);
    REQUIRE(poll_int_eq(&w.before_block, 1));
    REQUIRE(thread_blocked(atomic_load(&w.tid)));
    CHECK_RC(bgjob_job_cancel_soft(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_REQUESTED);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&w.rc), BGJOB_RESULT_CANCELLED);
    CHECK_EQ(atomic_load(&w.soft_seen), 1);
    CHECK_EQ(atomic_load(&w.hooks), 0);
    CHECK(info_flags(job, &c, &s, &x) && !c && s && x);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* Outside READY a soft cancel is a cancel (hooks called, soft not set). */
static bool test_soft_cancel_outside_ready(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    static struct rw counter;
    bgjob_job *job = NULL;
    int32_t status = -1;
    bool c, s = true, x = false;

    memset(&counter, 0, sizeof(counter));
    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    REQUIRE(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job) ==
            BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_add_cancel_hook(job, count_hook, &counter, NULL, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel_soft(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_REQUESTED);
    CHECK_EQ(atomic_load(&counter.hooks), 1);
    CHECK(info_flags(job, &c, &s, &x) && !s && x);
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&t.frees, 1));

    /* A CREATED job: cancelled unrun. */
    tracker_init(&t);
    REQUIRE(job_create(&t, worker_gated, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                       &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel_soft(job, &status), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&t.runs), 0);
    CHECK_RC(bgjob_job_cancel_soft(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_ALREADY_FINISHED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&t.frees, 1));
    gate_destroy(&g);
    return ok;
}

/* A force cancel after a soft one: soft cleared, hooks called, the worker
 * (which fails on cancel) ends CANCELLED. */
static bool test_force_after_soft(void)
{
    bool ok = true;
    static struct rw w;
    int32_t status = -1;
    bool soft = true;

    rw_init(&w, MODE_GATE);
    w.ret = 5;
    bgjob_job *job = make(&w, 0);
    REQUIRE(job != NULL);
    REQUIRE(poll_state(job, BGJOB_STATE_READY));
    CHECK_RC(bgjob_job_add_cancel_hook(job, count_hook, &w, NULL, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel_soft(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_REQUESTED);
    CHECK_RC(bgjob_job_cancel_is_soft(job, &soft), BGJOB_RESULT_OK);
    CHECK(soft);
    CHECK_EQ(atomic_load(&w.hooks), 0);
    CHECK_RC(bgjob_job_cancel_soft(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_ALREADY_REQUESTED);
    CHECK_EQ(atomic_load(&w.hooks), 0);
    /* A hook added after a soft cancel is kept for the force cancel, not run
     * at once (BGJOB_RESULT_CANCELLED) as after a force cancel. */
    CHECK_RC(bgjob_job_add_cancel_hook(job, count_hook, &w, NULL, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&w.hooks), 0);
    CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_REQUESTED); /* made force */
    CHECK_EQ(atomic_load(&w.hooks), 2);
    CHECK_RC(bgjob_job_add_cancel_hook(job, count_hook, &w, NULL, NULL), BGJOB_RESULT_CANCELLED);
    CHECK_EQ(atomic_load(&w.hooks), 3);
    CHECK_RC(bgjob_job_cancel_is_soft(job, &soft), BGJOB_RESULT_OK);
    CHECK(!soft);
    CHECK_RC(bgjob_job_cancel(job, &status), BGJOB_RESULT_OK);
    CHECK_EQ(status, BGJOB_CANCEL_STATUS_ALREADY_REQUESTED);
    CHECK_EQ(atomic_load(&w.hooks), 3);
    CHECK_RC(bgjob_job_cancel_is_soft(job, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    gate_open(&w.go);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&w.soft_seen), 0);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_pending(void)
{
    bool ok = true;
    struct tracker t[2];
    struct gate g[2];
    bgjob_job *job = NULL, *m[2] = { NULL, NULL };
    bgjob_txn *txn = NULL;

    /* Alone: straight to PENDING when its worker returns. */
    tracker_init(&t[0]);
    gate_init(&g[0]);
    t[0].gate = &g[0];
    REQUIRE(job_create(&t[0], worker_gated, BGJOB_CREATE_MANUAL_FINALIZE, BGJOB_JOB_TYPE_BOUNDED,
                       NULL, &job) == BGJOB_RESULT_OK);
    CHECK_STATE(state_of(job), BGJOB_STATE_RUNNING);
    gate_open(&g[0]);
    REQUIRE(poll_state(job, BGJOB_STATE_PENDING));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_wait(job, 0, NULL), BGJOB_RESULT_TIMED_OUT);
    CHECK_RC(bgjob_job_finalize(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g[0]);

    /* In a manual-finalize transaction: WAITING while a sibling runs, then
     * both PENDING. */
    CHECK_RC(bgjob_txn_create(BGJOB_TXN_MANUAL_FINALIZE, &txn), BGJOB_RESULT_OK);
    for (int i = 0; i < 2; i++) {
        tracker_init(&t[i]);
        gate_init(&g[i]);
        t[i].gate = &g[i];
        REQUIRE(job_create(&t[i], worker_gated, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED,
                           NULL, &m[i]) == BGJOB_RESULT_OK);
        CHECK_RC(bgjob_txn_add(txn, m[i]), BGJOB_RESULT_OK);
    }
    CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
    gate_open(&g[0]);
    REQUIRE(poll_state(m[0], BGJOB_STATE_WAITING));
    CHECK_STATE(state_of(m[1]), BGJOB_STATE_RUNNING);
    gate_open(&g[1]);
    REQUIRE(poll_state(m[1], BGJOB_STATE_PENDING));
    CHECK_STATE(state_of(m[0]), BGJOB_STATE_PENDING);
    CHECK_RC(bgjob_txn_finalize(txn), BGJOB_RESULT_OK);
    for (int i = 0; i < 2; i++) {
        CHECK_STATE(wait_end(m[i]), BGJOB_STATE_COMPLETED);
        CHECK_RC(bgjob_job_destroy(m[i]), BGJOB_RESULT_OK);
        CHECK(poll_int_eq(&t[i].frees, 1));
        gate_destroy(&g[i]);
    }
    CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
    return ok;
}

static bool test_complete_row(void)
{
    bool ok = true;

    for (int32_t s = 0; s < BGJOB_STATE_COUNT; s++) {
        bool allowed = true;
        CHECK_RC(bgjob_verb_allowed(BGJOB_VERB_COMPLETE, s, &allowed), BGJOB_RESULT_OK);
        CHECKF(allowed == (s == BGJOB_STATE_READY), "complete in %s: %d", bgjob_state_str(s),
               (int)allowed);
    }
    CHECK_STR(bgjob_verb_str(BGJOB_VERB_COMPLETE), "complete");
    CHECK_STR(bgjob_state_str(BGJOB_STATE_READY), "ready");
    CHECK_STR(bgjob_state_str(BGJOB_STATE_STANDBY), "standby");
    CHECK_STR(bgjob_state_str(BGJOB_STATE_PENDING), "pending");
    return ok;
}

/* A worker that reports progress while holding its own "domain" lock. */
struct domain {
    pthread_mutex_t mu;
    struct gate go;
    atomic_int tid;
    atomic_int calling; /* about to call add_units, lock held */
    atomic_int returned; /* add_units returned */
    atomic_int rc;
};

static int32_t worker_domain(void *userdata, bgjob_job *job)
{
    struct domain *d = userdata;

    atomic_store(&d->tid, (int)syscall(SYS_gettid));
    gate_wait(&d->go);
    pthread_mutex_lock(&d->mu);
    atomic_store(&d->calling, 1);
    atomic_store(&d->rc, bgjob_job_add_units(job, 1));
    atomic_store(&d->returned, 1);
    pthread_mutex_unlock(&d->mu);
    /* Where this worker asks to park. */
    return bgjob_job_pause_point(job) == BGJOB_RESULT_OK ? 0 : 3;
}

/* The caller's resume path: takes the domain lock (bounded by LONG_MS, so a
 * deadlock fails the test instead of hanging it), then resumes. */
static bool resume_under_domain_lock(struct domain *d, bgjob_job *job)
{
    int64_t end = now_ms() + LONG_MS;
    while (pthread_mutex_trylock(&d->mu) != 0) {
        if (now_ms() > end)
            return false;
        sleep_us(200);
    }
    bgjob_result r = bgjob_job_resume(job);
    pthread_mutex_unlock(&d->mu);
    return r == BGJOB_RESULT_OK;
}

static bool run_domain(bool never_park)
{
    bool ok = true;
    static struct domain d;
    bgjob_job_options o;
    bgjob_job *job = NULL;

    memset(&d, 0, sizeof(d));
    pthread_mutex_init(&d.mu, NULL);
    gate_init(&d.go);
    bgjob_job_options_init(&o, sizeof(o));
    o.flags = never_park ? BGJOB_CREATE_UPDATES_NEVER_PARK : 0;
    REQUIRE(bgjob_job_create(&o, worker_domain, &d, NULL, &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    gate_open(&d.go);
    REQUIRE(poll_int_eq(&d.calling, 1));
    if (never_park) {
        /* The update returns while the job is paused, and the lock with it. */
        CHECK(poll_int_eq(&d.returned, 1));
        CHECK_RC(atomic_load(&d.rc), BGJOB_RESULT_OK);
        CHECK_STATE(state_of(job), BGJOB_STATE_PAUSED);
        CHECK(resume_under_domain_lock(&d, job));
    } else {
        /* The update parks: the worker is blocked inside it, lock held. */
        REQUIRE(thread_blocked(atomic_load(&d.tid)));
        CHECK_EQ(atomic_load(&d.returned), 0);
        CHECK(pthread_mutex_trylock(&d.mu) != 0);
        CHECK_STATE(state_of(job), BGJOB_STATE_PAUSED);
        /* Only a resume that does not need the lock lets it go. */
        CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
        CHECK(poll_int_eq(&d.returned, 1));
    }
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&d.go);
    pthread_mutex_destroy(&d.mu);
    return ok;
}

static bool test_updates_never_park(void)
{
    return run_domain(true);
}

static bool test_updates_park_without_the_flag(void)
{
    return run_domain(false);
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_set_ready),
        TAP_TEST(test_complete_wakes_sleep),
        TAP_TEST(test_complete_wakes_wait_fd),
        TAP_TEST(test_complete_refused_outside_ready),
        TAP_TEST(test_soft_cancel_ready_completes),
        TAP_TEST(test_soft_cancel_outside_ready),
        TAP_TEST(test_force_after_soft),
        TAP_TEST(test_pending),
        TAP_TEST(test_complete_row),
        TAP_TEST(test_updates_never_park),
        TAP_TEST(test_updates_park_without_the_flag),
    };

    return tap_run(tests, TAP_COUNT(tests));
}

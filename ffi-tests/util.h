/*
 * util.h: helpers shared by the C test files.
 *
 * - Time: a monotonic now_ms() and sleep_ms().
 * - Gates: workers block on a gate until the test opens it, so a job stays
 *   RUNNING (or PAUSED) exactly as long as the test needs, without sleeps.
 * - Trackers and userdata: every job gets a heap token (ud_new) whose free
 *   function (ud_free) counts into the job's tracker with atomics and then
 *   free()s the token, so a missing free shows as a leak under ASan/valgrind,
 *   a double free as a crash, and the counters let a case assert "exactly once".
 * - Workers: return a code, block on a gate, loop until cancelled, loop with
 *   pause points or progress calls.
 * - Bounded polls for things the library does on other threads (a detached job
 *   freeing its userdata): they never assert on timing, they only give up after
 *   a long, generous limit.
 */

#ifndef BGJOB_TEST_UTIL_H
#define BGJOB_TEST_UTIL_H

#include "bgjob.h"
#include "tap.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How long a poll or wait for something that must happen may take before the
 * case fails: generous, because the machine is a shared 2-vCPU VM and the same
 * tests run under valgrind. */
#define LONG_MS 30000

/* The code the stock workers return when they saw a cancel (ECANCELED). */
#define WORKER_CANCELLED_RC 125

/* The first released size of bgjob_job_options (it ended with
 * finalize_free; 120 on 64-bit, pinned in src/ffi/versioned.rs): the smallest
 * struct_size bgjob accepts. Later fields are appended after it, so "one byte
 * short" means one short of this. */
#define OPTIONS_V1_SIZE                                                           \
    (offsetof(bgjob_job_options, finalize_free) + sizeof(bgjob_free_callback))

/* Monotonic milliseconds (CLOCK_MONOTONIC). */
int64_t now_ms(void);

/* Sleeps at least `ms` milliseconds (restarted after signals). */
void sleep_ms(int64_t ms);

/* Sleeps at least `us` microseconds. */
void sleep_us(int64_t us);

/* A one-shot gate: gate_wait blocks until gate_open. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
};

void gate_init(struct gate *g);
void gate_open(struct gate *g);
void gate_wait(struct gate *g);
void gate_destroy(struct gate *g);

/* What one job's worker and free function report, and how the worker behaves. */
struct tracker {
    /* Configuration, set before the job is created. */
    int32_t rc;                /* what the worker returns */
    int32_t err_code;          /* if non-zero: bgjob_job_set_error before returning */
    const char *err_msg;       /* its message (may be NULL) */
    struct gate *gate;         /* worker_gated blocks here */
    bool succeed_on_cancel;    /* return rc (not WORKER_CANCELLED_RC) on cancel */
    int32_t finish_status;     /* if finish_calls > 0: bgjob_job_finish(this) */
    int finish_calls;          /* how many times to call finish (last wins) */
    int32_t first_finish;      /* the first status when finish_calls > 1 */
    uint64_t step;             /* units per progress call (worker_progress) */

    /* Observations. */
    atomic_int runs;           /* the worker was entered */
    atomic_int returns;        /* the worker is about to return */
    atomic_int frees;          /* the userdata free function ran */
    atomic_int free_early;     /* ...while the worker had not returned */
    atomic_int saw_cancel;     /* the worker saw the cancel */
    atomic_long calls;         /* progress or pause-point calls started */
    atomic_long iterations;    /* ...and returned from */
    atomic_int worker_rc;      /* a result the worker got (case-specific) */
    _Atomic(bgjob_job *) job_seen; /* the handle the worker was given */
};

void tracker_init(struct tracker *t);

/* Free calls over every tracker, and tokens whose magic was wrong when freed
 * (a free of something that was not a live token). */
extern atomic_long util_total_frees;
extern atomic_long util_bad_tokens;

/* A heap token for `t`, to pass as userdata with ud_free. */
void *ud_new(struct tracker *t);

/* The free function for ud_new tokens: counts, checks, and frees the token. */
void ud_free(void *userdata);

/* The tracker of a token (for workers). */
struct tracker *ud_tracker(void *userdata);

/* Workers. Each records runs/returns and the handle it was given. */
int32_t worker_return(void *userdata, bgjob_job *job);      /* set error if asked, return rc */
int32_t worker_gated(void *userdata, bgjob_job *job);       /* block on the gate, then as worker_return (cancel aware) */
int32_t worker_until_cancel(void *userdata, bgjob_job *job); /* pause points until cancelled */
int32_t worker_progress(void *userdata, bgjob_job *job);    /* add_units(step) until cancelled */

/* Creates a job for tracker `t` with `worker`, the given flags, type and name
 * (NULL: default). Returns the create result; *out is the handle on success. */
bgjob_result job_create(struct tracker *t, bgjob_worker_callback worker, uint32_t flags,
                        int32_t job_type, const char *name, bgjob_job **out);

/* bgjob_job_get_info with struct_size set; false (and a diagnostic) on error. */
bool info_of(bgjob_job *job, bgjob_info *info);

/* The job's state, or -1 (with a diagnostic) if it cannot be read. */
int32_t state_of(bgjob_job *job);

/* Waits (bgjob_job_wait, LONG_MS) for the job to end; returns its final state,
 * or -1 with a diagnostic. */
int32_t wait_end(bgjob_job *job);

/* Polls until *v == want (true) or LONG_MS passes (false). */
bool poll_int_eq(atomic_int *v, int want);

/* Polls until *v >= want (true) or LONG_MS passes (false). */
bool poll_long_ge(atomic_long *v, long want);

/* Polls until the job's state is `want` (true) or LONG_MS passes (false). */
bool poll_state(bgjob_job *job, int32_t want);

/* Polls /proc/<pid>/status until the process ignores `sig` (a shell's
 * `trap '' TERM` has run: true) or LONG_MS passes (false). */
bool poll_ignores_signal(int pid, int sig);

/* A call on a thread of its own, waited for with a limit, so a call that
 * hangs fails its case instead of the whole file. `b` must outlive a thread
 * that never returns (it is left behind, detached). */
struct bounded {
    void *(*fn)(void *);
    void *arg;
    atomic_int done;
};

/* Starts fn(arg) on a new thread; false if no thread could be made. */
bool bounded_start(struct bounded *b, pthread_t *th, void *(*fn)(void *), void *arg);

/* Joins the thread if fn returns within `ms` (true); else detaches it (false). */
bool bounded_join(struct bounded *b, pthread_t th, int64_t ms);

/* Forks; the child runs `body` under an alarm of `alarm_s` seconds and exits
 * with its result. The parent waits (bounded: alarm_s + 10 s, then SIGKILL)
 * and reports how the child ended: true only if `body` returned true. */
bool in_child(int alarm_s, bool (*body)(void));

/* For a forked child: makes every thread creation in this process fail with
 * EAGAIN (RLIMIT_NPROC 1; as root it first drops to nobody, whom the limit
 * binds), and allow_threads restores the limit. */
bool forbid_threads(void);
bool allow_threads(void);

/* The number of live jobs (bgjob_list_jobs), or SIZE_MAX on error. */
size_t live_jobs(void);

/* Whether bgjob_list_jobs lists a job with this id. */
bool job_listed(uint64_t id);

/* Polls until job `id` is no longer listed (true) or LONG_MS passes (false). */
bool poll_unlisted(uint64_t id);

/* The job's id, or 0 with a diagnostic. */
uint64_t id_of(bgjob_job *job);

/* Reads the first of `paths` that opens (NULL entries are skipped) into a
 * NUL-terminated heap buffer (free() it), or NULL if none does. */
char *read_first_file(const char *const *paths, size_t n);

/* Whether `name` is one of `names[0..n)`. */
bool name_listed(const char *name, const char *const *names, size_t n);


/* Compares two bgjob results and prints both with their names on mismatch. */
#define CHECK_RC(expr, want)                                                      \
    do {                                                                          \
        int32_t util_got_ = (int32_t)(expr), util_want_ = (int32_t)(want);        \
        if (util_got_ != util_want_) {                                            \
            tap_diag("%s:%d: %s returned %d (%s), expected %d (%s)", __FILE__,     \
                     __LINE__, #expr, util_got_, bgjob_result_str(util_got_),     \
                     util_want_, bgjob_result_str(util_want_));                   \
            ok = false;                                                           \
        }                                                                         \
    } while (0)

/* Compares two job states and prints both with their names on mismatch. */
#define CHECK_STATE(got, want)                                                    \
    do {                                                                          \
        int32_t util_gs_ = (int32_t)(got), util_ws_ = (int32_t)(want);            \
        if (util_gs_ != util_ws_) {                                               \
            tap_diag("%s:%d: %s is %d (%s), expected %d (%s)", __FILE__, __LINE__, \
                     #got, util_gs_, bgjob_state_str(util_gs_), util_ws_,         \
                     bgjob_state_str(util_ws_));                                  \
            ok = false;                                                           \
        }                                                                         \
    } while (0)

#endif /* BGJOB_TEST_UTIL_H */

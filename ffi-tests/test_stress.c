/*
 * test_stress.c: many threads doing random operations on a shared set of jobs.
 *
 * STRESS_THREADS actor threads (default 8) perform STRESS_OPS operations in all
 * (default 50,000; `make stress` runs a million) on SLOTS shared job slots:
 * create (started or deferred, with or without a completion on the worker
 * thread or through a context), start, cancel, pause, resume, getinfo, get
 * state, wait with short timeouts, destroy, detach (with and without cancel),
 * add and remove cancellation hooks, take results, read error/phase/name,
 * dispatch contexts, destroy and recreate a context, list jobs, and calls on
 * handles that were already released. Workers finish, fail with an error,
 * finish through bgjob_job_finish, leave results, honour cancel, ignore it for
 * a while, sleep cancellably, register their own hook, or succeed whatever
 * happens. Completion callbacks and hooks call back into bgjob.
 *
 * Threads share handles with no locking of their own around bgjob calls, so a
 * handle may be destroyed by one thread while others use it. Every result is
 * checked against what bgjob promises; INVALID_HANDLE is accepted only when
 * the job's release had begun ("no handle confusion"), and every snapshot must
 * carry the id of the job the handle was made for.
 *
 * Invariants, checked as the run goes and at the end:
 * - a job reaches exactly one terminal state, and once any thread has seen it
 *   no call that starts later sees another state;
 * - a started job's worker ran exactly once, an unstarted job's never;
 * - the outcome follows the rules (0 -> COMPLETED; non-zero -> FAILED with that
 *   code, or CANCELLED when a cancel was requested; never run -> CANCELLED);
 * - exactly one cancel per job reports REQUESTED;
 * - every userdata, completion userdata, hook userdata and result is freed
 *   exactly once, the worker's only after the worker returned; every
 *   completion ran exactly once (unless its context was destroyed first), on
 *   the right thread, never inside the call that ended its job;
 * - a hook runs at most once, on the thread that cancelled (or registered
 *   it after the cancel), never after a remove returned OK, and is never still
 *   running when a remove returns;
 * - at the end no job is left (bgjob_list_jobs is empty), no completion is
 *   queued, and (under ASan/valgrind) nothing leaked.
 *
 * Seeded and reproducible: the seed is printed (STRESS_SEED replays it); each
 * thread's sequence of operations and each job's behaviour come from it. The
 * interleaving of the threads is the machine's.
 */

#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 48
#define MAX_HOOKS 4
#define PERMANENT_CONTEXTS 3
#define GRAVEYARD 64
#define DEFAULT_OPS 50000
#define DEFAULT_THREADS 8
#define CANCELLED_RC 125

enum behaviour {
    B_QUICK,          /* progress, return 0 */
    B_FAIL,           /* set_error + phase, return the code */
    B_COOP,           /* pause points and progress until done or cancelled */
    B_STUBBORN,       /* ignores cancel for a while, then looks */
    B_SLEEP,          /* bgjob_job_sleep, cancellable */
    B_HOOKED,         /* registers its own hook around a sleep, removes it */
    B_SUCCEED_ANYWAY, /* pause points, but returns 0 even when cancelled */
    B_FINISH,         /* bgjob_job_finish(status) then returns something else */
    B_RESULT,         /* leaves a result (twice: the first is replaced) */
    B_COUNT
};

static const char *const behaviour_names[B_COUNT] = {
    "quick", "fail", "coop", "stubborn", "sleep", "hooked", "succeed-anyway", "finish", "result",
};

/* ---- violations ------------------------------------------------------------ */

static atomic_long violations;
static uint64_t seed;

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void violation(const char *fmt, ...)
{
    long n = atomic_fetch_add(&violations, 1);
    char buf[512];
    va_list ap;

    if (n >= 30)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    tap_diag("VIOLATION (seed %" PRIu64 "): %s", seed, buf);
}

/* A global logical clock: a call that starts after another returned has a
 * larger ticket, which orders observations made by different threads. */
static atomic_long clock_ticks;

static long tick(void)
{
    return atomic_fetch_add(&clock_ticks, 1) + 1;
}

/* ---- random numbers ---------------------------------------------------------- */

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned below(uint64_t *rng, unsigned n)
{
    return (unsigned)(splitmix(rng) % n);
}

/* ---- records ----------------------------------------------------------------- */

struct jrec;

/* One cancellation hook. */
struct hrec {
    struct jrec *rec;
    _Atomic uint64_t id;
    bool by_worker;
    atomic_int calls;
    atomic_int frees;
    atomic_int inside;
    atomic_int removed_ok;
    atomic_int bad_thread;
};

/* Everything known about one job; kept until the end of the run. */
struct jrec {
    uint64_t serial;
    uint64_t rng_seed;
    int behaviour;
    int32_t code;
    int ctx;          /* -1: completion on the worker thread; -2: none */
    bool ephemeral;   /* bound to the context that gets destroyed and remade */
    bool deferred;
    int slot;

    _Atomic(bgjob_job *) handle; /* as create returned it (NULL until then) */
    uint64_t id;
    atomic_int create_ok;
    atomic_int started;
    atomic_long started_tick; /* ticket after the start that succeeded */

    atomic_int worker_runs;
    atomic_int worker_returns;
    atomic_int worker_frees;
    atomic_int free_early;
    atomic_int effective_rc;
    atomic_long worker_return_tick;
    _Atomic(bgjob_job *) worker_saw;

    atomic_int completion_calls;
    atomic_int completion_frees;
    atomic_int completion_state;
    _Atomic(bgjob_job *) completion_saw;

    atomic_int cancel_requested;   /* cancels that returned REQUESTED */
    atomic_long cancel_req_tick;   /* ticket after the first of them returned */
    atomic_int detach_cancel;      /* detaches with BGJOB_DETACH_CANCEL that succeeded */
    atomic_int cancel_calls;       /* every cancel-like call made (for hooks) */

    atomic_int terminal;           /* -1, or the terminal state seen */
    atomic_long terminal_tick;     /* ticket after it was first seen */

    atomic_int release_inflight;
    atomic_int released;

    atomic_int results_set;
    atomic_int results_freed;
    atomic_int results_taken;

    pthread_mutex_t mu;            /* guards hooks[] and nhooks */
    struct hrec *hooks[MAX_HOOKS];
    int nhooks;
};

/* Userdata tokens: small heap objects freed by their free function, so a
 * missing free is a leak under ASan/valgrind and a double free a crash. */
enum token_kind { TK_WORKER = 1, TK_COMPLETION, TK_HOOK, TK_RESULT };
#define TOKEN_MAGIC 0x73747273u /* "strs" */

struct token {
    uint32_t magic;
    int kind;
    struct jrec *rec;
    struct hrec *hook;
};

static struct token *token_new(int kind, struct jrec *r, struct hrec *h)
{
    struct token *t = malloc(sizeof *t);

    if (t == NULL) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    t->magic = TOKEN_MAGIC;
    t->kind = kind;
    t->rec = r;
    t->hook = h;
    return t;
}

static void token_free(void *p)
{
    struct token *t = p;

    if (t == NULL || t->magic != TOKEN_MAGIC) {
        violation("a free function got something that is not a live token");
        return;
    }
    switch (t->kind) {
    case TK_WORKER:
        if (atomic_load(&t->rec->worker_runs) != atomic_load(&t->rec->worker_returns))
            atomic_fetch_add(&t->rec->free_early, 1);
        atomic_fetch_add(&t->rec->worker_frees, 1);
        break;
    case TK_COMPLETION:
        atomic_fetch_add(&t->rec->completion_frees, 1);
        break;
    case TK_HOOK:
        if (atomic_load(&t->hook->inside))
            violation("job %" PRIu64 ": a hook's userdata was freed while it ran", t->rec->serial);
        atomic_fetch_add(&t->hook->frees, 1);
        break;
    case TK_RESULT:
        atomic_fetch_add(&t->rec->results_freed, 1);
        break;
    default:
        violation("a token of unknown kind %d", t->kind);
    }
    t->magic = 0;
    free(t);
}

/* All records, for the final checks (append-only). */
static pthread_mutex_t all_mu = PTHREAD_MUTEX_INITIALIZER;
static struct jrec **all_jobs;
static size_t n_jobs, cap_jobs;
static struct hrec **all_hooks;
static size_t n_hooks, cap_hooks;

static void *grow(void *arr, size_t *cap, size_t elem)
{
    size_t n = *cap ? *cap * 2 : 1024;
    void *p = realloc(arr, n * elem);

    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    *cap = n;
    return p;
}

static struct jrec *jrec_new(void)
{
    struct jrec *r = calloc(1, sizeof *r);

    if (r == NULL)
        abort();
    atomic_init(&r->terminal, -1);
    atomic_init(&r->terminal_tick, LONG_MAX);
    atomic_init(&r->started_tick, LONG_MAX);
    atomic_init(&r->cancel_req_tick, LONG_MAX);
    atomic_init(&r->worker_return_tick, LONG_MAX);
    atomic_init(&r->completion_state, -1);
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_lock(&all_mu);
    if (n_jobs == cap_jobs)
        all_jobs = grow(all_jobs, &cap_jobs, sizeof *all_jobs);
    r->serial = n_jobs;
    all_jobs[n_jobs++] = r;
    pthread_mutex_unlock(&all_mu);
    return r;
}

static struct hrec *hrec_new(struct jrec *r, bool by_worker)
{
    struct hrec *h = calloc(1, sizeof *h);

    if (h == NULL)
        abort();
    h->rec = r;
    h->by_worker = by_worker;
    pthread_mutex_lock(&all_mu);
    if (n_hooks == cap_hooks)
        all_hooks = grow(all_hooks, &cap_hooks, sizeof *all_hooks);
    all_hooks[n_hooks++] = h;
    pthread_mutex_unlock(&all_mu);
    return h;
}

/* ---- shared state ------------------------------------------------------------ */

struct slot {
    pthread_mutex_t mu;
    struct jrec *rec;
};

static struct slot slots[SLOTS];
static bgjob_context *contexts[PERMANENT_CONTEXTS];

/* The context that one operation destroys and makes again. */
static pthread_mutex_t eph_mu = PTHREAD_MUTEX_INITIALIZER;
static bgjob_context *eph_ctx;
static bgjob_context *eph_dead[256]; /* destroyed ones, destroyed again at the end */
static size_t n_eph_dead;

/* Released handles, for stale-handle calls. */
static pthread_mutex_t grave_mu = PTHREAD_MUTEX_INITIALIZER;
static bgjob_job *graveyard[GRAVEYARD];
static size_t grave_n;

/* What the calling thread is doing: the job whose cancel/destroy/detach/start/
 * create/add-hook call it is inside, the context it dispatches, and whether it
 * is an actor thread. */
static _Thread_local struct jrec *tl_in_call;
static _Thread_local bgjob_context *tl_dispatching;
static _Thread_local int tl_actor = -1;

/* Counters for the summary. */
static atomic_long n_ops, n_creates, n_try_again, n_outcome[BGJOB_STATE_COUNT], n_hook_calls,
    n_hook_removed, n_completions, n_stale_calls, n_dispatched, n_destroy_in_completion,
    n_invalid_seen, n_pauses, n_resumes, n_worker_runs;

static bool is_terminal(int32_t s)
{
    return s == BGJOB_STATE_COMPLETED || s == BGJOB_STATE_FAILED || s == BGJOB_STATE_CANCELLED;
}

static void bury(bgjob_job *h)
{
    pthread_mutex_lock(&grave_mu);
    graveyard[grave_n++ % GRAVEYARD] = h;
    pthread_mutex_unlock(&grave_mu);
}

static void slot_clear(struct jrec *r)
{
    struct slot *s = &slots[r->slot];

    pthread_mutex_lock(&s->mu);
    if (s->rec == r)
        s->rec = NULL;
    pthread_mutex_unlock(&s->mu);
}

/* INVALID_HANDLE is right only once the job's release has begun. The
 * releaser raises `release_inflight` before its call and sets `released`
 * before lowering it, so reading them in this order cannot miss both. */
static bool invalid_is_legit(struct jrec *r)
{
    return atomic_load(&r->release_inflight) > 0 || atomic_load(&r->released);
}

/* Checks a result against the set the call may return. */
static void expect(struct jrec *r, const char *what, int32_t rc, unsigned allowed)
{
    if (rc == BGJOB_RESULT_INVALID_HANDLE) {
        atomic_fetch_add(&n_invalid_seen, 1);
        if (!invalid_is_legit(r))
            violation("job %" PRIu64 ": %s got INVALID_HANDLE on a handle never released",
                      r->serial, what);
        return;
    }
    if (rc < 0 || rc >= 32 || !(allowed & (1u << rc)))
        violation("job %" PRIu64 ": %s returned %d (%s)", r->serial, what, rc,
                  bgjob_result_str(rc));
}

#define RC(x) (1u << (BGJOB_RESULT_##x))

/* Records a state some call returned. `before` is the ticket taken before the
 * call. A terminal state must be the only one; once it was seen, a call that
 * began later must see it too; a job whose start returned must not be seen
 * CREATED by a call that began later. */
static void observe(struct jrec *r, int32_t state, long before)
{
    long after = tick();

    if (state < 0 || state >= BGJOB_STATE_COUNT) {
        violation("job %" PRIu64 ": state %d is not a state", r->serial, state);
        return;
    }
    /* WAITING (worker done, job not yet finalized) is passed through briefly by
     * every job; only terminal states are final. */
    if (is_terminal(state)) {
        int expected = -1;

        if (!atomic_compare_exchange_strong(&r->terminal, &expected, state) &&
            expected != state)
            violation("job %" PRIu64 ": seen %s and later %s", r->serial,
                      bgjob_state_str(expected), bgjob_state_str(state));
        long cur = atomic_load(&r->terminal_tick);
        while (after < cur && !atomic_compare_exchange_weak(&r->terminal_tick, &cur, after)) {
        }
        return;
    }
    if (before > atomic_load(&r->terminal_tick))
        violation("job %" PRIu64 ": %s after it was seen %s", r->serial, bgjob_state_str(state),
                  bgjob_state_str(atomic_load(&r->terminal)));
    if (state == BGJOB_STATE_CREATED && before > atomic_load(&r->started_tick))
        violation("job %" PRIu64 ": CREATED after its start returned", r->serial);
}

/* ---- hooks ---------------------------------------------------------------------- */

static void hook_fn(void *userdata, bgjob_job *job)
{
    struct token *t = userdata;
    struct hrec *h = t->hook;
    struct jrec *r = h->rec;

    if (atomic_fetch_add(&h->inside, 1) != 0)
        violation("job %" PRIu64 ": a hook runs twice at once", r->serial);
    if (atomic_fetch_add(&h->calls, 1) != 0)
        violation("job %" PRIu64 ": a hook was called twice", r->serial);
    if (atomic_load(&h->removed_ok))
        violation("job %" PRIu64 ": a hook ran after its remove returned OK", r->serial);
    /* On the thread that cancelled (or registered it after the cancel). */
    if (tl_in_call != r)
        atomic_store(&h->bad_thread, 1);
    if (atomic_load(&r->handle) != NULL && job != atomic_load(&r->handle))
        violation("job %" PRIu64 ": a hook got a different handle", r->serial);
    atomic_fetch_add(&n_hook_calls, 1);
    /* Re-enter: removing itself returns at once, cancel reports the race. */
    switch (r->serial % 4) {
    case 0: {
        int32_t rc = bgjob_job_remove_cancel_hook(job, atomic_load(&h->id));
        expect(r, "remove (from inside the hook)", rc, RC(NOT_FOUND));
        break;
    }
    case 1: {
        int32_t st = -1;
        int32_t rc = bgjob_job_cancel(job, &st);
        expect(r, "cancel (from inside a hook)", rc, RC(OK));
        if (rc == BGJOB_RESULT_OK && st == BGJOB_CANCEL_STATUS_REQUESTED)
            violation("job %" PRIu64 ": a cancel from inside a hook was the first", r->serial);
        break;
    }
    case 2: {
        bgjob_info info = {.struct_size = sizeof info};
        int32_t rc = bgjob_job_get_info(job, &info);
        expect(r, "getinfo (from inside a hook)", rc, RC(OK));
        if (rc == BGJOB_RESULT_OK && !info.cancel_requested && !is_terminal(info.state))
            violation("job %" PRIu64 ": a hook runs but cancel is not requested", r->serial);
        break;
    }
    default:
        sleep_us(50);
        break;
    }
    atomic_fetch_sub(&h->inside, 1);
}

/* Registers a hook on `r` (whose handle is `job`) from the calling thread. */
static void add_hook(struct jrec *r, bgjob_job *job, bool by_worker)
{
    struct hrec *h = hrec_new(r, by_worker);
    struct token *t = token_new(TK_HOOK, r, h);
    uint64_t id = 0;
    struct jrec *saved = tl_in_call;
    int32_t rc;

    pthread_mutex_lock(&r->mu);
    tl_in_call = r;
    rc = bgjob_job_add_cancel_hook(job, hook_fn, t, token_free, &id);
    tl_in_call = saved;
    atomic_store(&h->id, id);
    if (rc == BGJOB_RESULT_OK && r->nhooks < MAX_HOOKS)
        r->hooks[r->nhooks++] = h;
    pthread_mutex_unlock(&r->mu);
    expect(r, "add hook", rc, RC(OK) | RC(CANCELLED) | RC(NOT_ALLOWED));
    if (rc == BGJOB_RESULT_CANCELLED && atomic_load(&h->calls) != 1)
        violation("job %" PRIu64 ": add hook said it ran, but it did not", r->serial);
    if (rc != BGJOB_RESULT_OK && rc != BGJOB_RESULT_CANCELLED && atomic_load(&h->frees) != 1)
        violation("job %" PRIu64 ": a refused hook's userdata was not freed at once", r->serial);
    if (rc == BGJOB_RESULT_CANCELLED && atomic_load(&h->frees) != 1)
        violation("job %" PRIu64 ": a hook that ran at once was not freed", r->serial);
}

static void remove_hook(struct jrec *r, bgjob_job *job, struct hrec *h)
{
    int32_t rc = bgjob_job_remove_cancel_hook(job, atomic_load(&h->id));

    expect(r, "remove hook", rc, RC(OK) | RC(NOT_FOUND));
    /* Through a released handle nothing can be promised: the job is gone. */
    if (rc != BGJOB_RESULT_INVALID_HANDLE && atomic_load(&h->inside))
        violation("job %" PRIu64 ": a hook is still running after remove returned", r->serial);
    if (rc == BGJOB_RESULT_OK) {
        atomic_store(&h->removed_ok, 1);
        atomic_fetch_add(&n_hook_removed, 1);
        if (atomic_load(&h->calls) != 0)
            violation("job %" PRIu64 ": remove said OK for a hook that ran", r->serial);
        if (atomic_load(&h->frees) != 1)
            violation("job %" PRIu64 ": a removed hook's userdata was not freed", r->serial);
    }
}

/* ---- workers ------------------------------------------------------------------- */

static int32_t worker(void *userdata, bgjob_job *job)
{
    struct token *t = userdata;
    struct jrec *r = t->rec;
    uint64_t rng = r->rng_seed;
    int32_t rc = 0;
    unsigned n = 1 + below(&rng, 40);

    if (atomic_fetch_add(&r->worker_runs, 1) != 0)
        violation("job %" PRIu64 ": the worker ran twice", r->serial);
    atomic_fetch_add(&n_worker_runs, 1);
    atomic_store(&r->worker_saw, job);
    switch (r->behaviour) {
    case B_QUICK:
        bgjob_job_set_total(job, n);
        bgjob_job_add_units(job, n);
        break;
    case B_FAIL:
        bgjob_job_set_phase(job, "failing");
        if (bgjob_job_set_error(job, r->code, "stress failure") != BGJOB_RESULT_OK)
            violation("job %" PRIu64 ": set_error refused in the worker", r->serial);
        rc = r->code;
        break;
    case B_COOP:
        bgjob_job_set_total(job, n);
        for (unsigned i = 0; i < n; i++) {
            if (bgjob_job_pause_point(job) == BGJOB_RESULT_CANCELLED) {
                rc = CANCELLED_RC;
                break;
            }
            bgjob_job_add_units(job, 1);
            sleep_us(below(&rng, 60));
        }
        break;
    case B_STUBBORN:
        bgjob_job_set_phase(job, "not listening");
        for (unsigned i = 0; i < n; i++) {
            sleep_us(20 + below(&rng, 60));
            bgjob_job_add_units(job, 1); /* parks while paused; never looks at cancel */
        }
        rc = bgjob_job_check_cancel(job) == BGJOB_RESULT_CANCELLED ? CANCELLED_RC : 0;
        break;
    case B_SLEEP: {
        int32_t s = bgjob_job_sleep(job, below(&rng, 4));
        if (s != BGJOB_RESULT_OK && s != BGJOB_RESULT_CANCELLED)
            violation("job %" PRIu64 ": sleep returned %s", r->serial, bgjob_result_str(s));
        rc = s == BGJOB_RESULT_CANCELLED ? CANCELLED_RC : 0;
        break;
    }
    case B_HOOKED: {
        struct hrec *h;

        add_hook(r, job, true);
        pthread_mutex_lock(&r->mu);
        h = NULL;
        for (int i = 0; i < r->nhooks; i++)
            if (r->hooks[i]->by_worker)
                h = r->hooks[i];
        pthread_mutex_unlock(&r->mu);
        int32_t s = bgjob_job_sleep(job, below(&rng, 3));
        if (h != NULL)
            remove_hook(r, job, h);
        rc = s == BGJOB_RESULT_CANCELLED ? CANCELLED_RC : 0;
        break;
    }
    case B_SUCCEED_ANYWAY:
        for (unsigned i = 0; i < n; i++) {
            if (bgjob_job_pause_point(job) == BGJOB_RESULT_CANCELLED)
                break;
            sleep_us(below(&rng, 40));
        }
        rc = 0;
        break;
    case B_FINISH: {
        int32_t status = (r->code & 1) ? r->code : 0;
        if (bgjob_job_finish(job, r->code) != BGJOB_RESULT_OK ||
            bgjob_job_finish(job, status) != BGJOB_RESULT_OK)
            violation("job %" PRIu64 ": finish refused in the worker", r->serial);
        atomic_store(&r->effective_rc, status);
        rc = status ? 0 : 77; /* the finish status wins over this */
        break;
    }
    case B_RESULT:
        for (int i = 0; i < 2; i++) {
            atomic_fetch_add(&r->results_set, 1);
            if (bgjob_job_set_result(job, token_new(TK_RESULT, r, NULL), token_free) !=
                BGJOB_RESULT_OK)
                violation("job %" PRIu64 ": set_result refused in the worker", r->serial);
        }
        break;
    default:
        break;
    }
    if (r->behaviour != B_FINISH)
        atomic_store(&r->effective_rc, rc);
    atomic_store(&r->worker_return_tick, tick());
    atomic_fetch_add(&r->worker_returns, 1);
    return rc;
}

/* ---- completions --------------------------------------------------------------- */

static void completion(void *userdata, bgjob_job *job, int32_t state)
{
    struct token *t = userdata;
    struct jrec *r = t->rec;
    long before = tick();

    if (atomic_fetch_add(&r->completion_calls, 1) != 0)
        violation("job %" PRIu64 ": completion called twice", r->serial);
    atomic_fetch_add(&n_completions, 1);
    atomic_store(&r->completion_state, state);
    atomic_store(&r->completion_saw, job);
    if (!is_terminal(state))
        violation("job %" PRIu64 ": completion with non-terminal state %d", r->serial, state);
    observe(r, state, before);
    if (tl_in_call == r)
        violation("job %" PRIu64 ": completion inside the call that ended the job", r->serial);
    if (r->ctx >= 0) {
        bgjob_context *want = r->ephemeral ? NULL : contexts[r->ctx];
        if (tl_dispatching == NULL || (want != NULL && tl_dispatching != want))
            violation("job %" PRIu64 ": context completion off its dispatching thread", r->serial);
        /* A nested dispatch of the same context is refused. */
        if (tl_dispatching != NULL && (r->serial % 5) == 0) {
            int32_t rc = bgjob_context_dispatch(tl_dispatching, 0, NULL);
            /* The ephemeral context may have been destroyed meanwhile. */
            if (rc != BGJOB_RESULT_NOT_ALLOWED &&
                !(r->ephemeral && rc == BGJOB_RESULT_INVALID_HANDLE))
                violation("job %" PRIu64 ": nested dispatch returned %s", r->serial,
                          bgjob_result_str(rc));
        }
    } else if (tl_actor >= 0 || tl_dispatching != NULL) {
        violation("job %" PRIu64 ": worker-thread completion ran on an actor thread", r->serial);
    }
    /* The handle is valid here unless it was released already. */
    int32_t s = -1;
    int32_t rc = bgjob_job_get_state(job, &s);
    expect(r, "get_state (in completion)", rc, RC(OK));
    if (rc == BGJOB_RESULT_OK && s != state)
        violation("job %" PRIu64 ": completion says %s, get_state %s", r->serial,
                  bgjob_state_str(state), bgjob_state_str(s));
    /* Sometimes destroy the job from inside its own completion. */
    if ((r->serial % 3) == 0) {
        atomic_fetch_add(&r->release_inflight, 1);
        rc = bgjob_job_destroy(job);
        if (rc == BGJOB_RESULT_OK) {
            atomic_store(&r->released, 1);
            atomic_fetch_add(&n_destroy_in_completion, 1);
            bury(job);
        }
        atomic_fetch_sub(&r->release_inflight, 1);
        expect(r, "destroy (in completion)", rc, RC(OK));
        if (rc == BGJOB_RESULT_OK)
            slot_clear(r);
    }
}

/* ---- operations -------------------------------------------------------------- */

static void op_create(uint64_t *rng, int slot_index)
{
    struct slot *s = &slots[slot_index];
    struct jrec *r = jrec_new();
    bgjob_job_options opts;
    bgjob_job *h = NULL;
    bgjob_context *ctx = NULL;
    char name[32];
    int32_t rc;

    r->rng_seed = splitmix(rng);
    r->behaviour = (int)below(rng, B_COUNT);
    r->code = 1000 + (int32_t)below(rng, 200);
    r->deferred = below(rng, 4) == 0;
    r->slot = slot_index;
    switch (below(rng, 6)) {
    case 0:
    case 1:
        r->ctx = -2;
        break;
    case 2:
        r->ctx = -1;
        break;
    case 3:
        r->ctx = PERMANENT_CONTEXTS; /* the ephemeral one */
        r->ephemeral = true;
        break;
    default:
        r->ctx = (int)below(rng, PERMANENT_CONTEXTS);
        break;
    }
    bgjob_job_options_init(&opts, sizeof opts);
    snprintf(name, sizeof name, "stress-%" PRIu64, r->serial);
    opts.name = name;
    opts.flags = r->deferred ? BGJOB_CREATE_DEFER_START : 0;
    opts.job_type = below(rng, 5) == 0 ? BGJOB_JOB_TYPE_UNBOUNDED : BGJOB_JOB_TYPE_BOUNDED;
    if (r->ctx != -2) {
        opts.completion = completion;
        opts.completion_userdata = token_new(TK_COMPLETION, r, NULL);
        opts.completion_free = token_free;
        if (r->ephemeral) {
            pthread_mutex_lock(&eph_mu);
            ctx = eph_ctx;
            pthread_mutex_unlock(&eph_mu);
        } else if (r->ctx >= 0) {
            ctx = contexts[r->ctx];
        }
        opts.context = ctx;
    }
    pthread_mutex_lock(&s->mu);
    if (s->rec != NULL) {
        /* Lost the slot to another creator: this record stays a no-op. */
        pthread_mutex_unlock(&s->mu);
        if (opts.completion_userdata != NULL)
            token_free(opts.completion_userdata);
        r->ctx = -2;
        atomic_store(&r->worker_frees, 1);
        return;
    }
    tl_in_call = r;
    rc = bgjob_job_create(&opts, worker, token_new(TK_WORKER, r, NULL), token_free, &h);
    tl_in_call = NULL;
    atomic_fetch_add(&n_creates, 1);
    if (rc == BGJOB_RESULT_OK) {
        int32_t id_rc;

        atomic_store(&r->handle, h);
        /* A quick job may already have destroyed itself from its completion. */
        id_rc = bgjob_job_get_id(h, &r->id);
        expect(r, "get_id right after create", id_rc, RC(OK));
        atomic_store(&r->create_ok, 1);
        if (!r->deferred) {
            atomic_store(&r->started, 1);
            atomic_store(&r->started_tick, tick());
        }
        s->rec = r;
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != BGJOB_RESULT_OK) {
        /* A destroyed ephemeral context, or no thread: everything freed now. */
        if (!(rc == BGJOB_RESULT_TRY_AGAIN || (rc == BGJOB_RESULT_INVALID_HANDLE && r->ephemeral)))
            violation("create returned %s", bgjob_result_str(rc));
        if (rc == BGJOB_RESULT_TRY_AGAIN)
            atomic_fetch_add(&n_try_again, 1);
        if (atomic_load(&r->worker_frees) != 1 ||
            (r->ctx != -2 && atomic_load(&r->completion_frees) != 1))
            violation("job %" PRIu64 ": a failed create did not free its userdata", r->serial);
        r->ctx = -2;
    }
}

/* Destroy or detach: whoever succeeds owns the release. */
static void op_release(uint64_t *rng, struct jrec *r)
{
    unsigned how = below(rng, 8);
    int32_t rc;
    bool cancel = false;

    atomic_fetch_add(&r->release_inflight, 1);
    tl_in_call = r;
    if (how < 6) {
        rc = bgjob_job_destroy(r->handle);
    } else {
        cancel = how == 7;
        atomic_fetch_add(&r->cancel_calls, cancel);
        rc = bgjob_job_detach(r->handle, cancel ? BGJOB_DETACH_CANCEL : 0);
    }
    tl_in_call = NULL;
    if (rc == BGJOB_RESULT_OK) {
        if (cancel)
            atomic_fetch_add(&r->detach_cancel, 1);
        atomic_store(&r->released, 1);
        bury(r->handle);
    }
    atomic_fetch_sub(&r->release_inflight, 1);
    expect(r, how < 6 ? "destroy" : "detach", rc, RC(OK) | RC(NOT_ALLOWED));
    if (rc == BGJOB_RESULT_OK)
        slot_clear(r);
}

static void op_cancel(struct jrec *r)
{
    int32_t st = -1, rc;

    atomic_fetch_add(&r->cancel_calls, 1);
    tl_in_call = r;
    rc = bgjob_job_cancel(r->handle, &st);
    tl_in_call = NULL;
    expect(r, "cancel", rc, RC(OK));
    if (rc != BGJOB_RESULT_OK)
        return;
    if (st == BGJOB_CANCEL_STATUS_REQUESTED) {
        long t = tick();
        if (atomic_fetch_add(&r->cancel_requested, 1) != 0)
            violation("job %" PRIu64 ": two cancels both got REQUESTED", r->serial);
        long cur = atomic_load(&r->cancel_req_tick);
        while (t < cur && !atomic_compare_exchange_weak(&r->cancel_req_tick, &cur, t)) {
        }
    } else if (st != BGJOB_CANCEL_STATUS_ALREADY_REQUESTED &&
               st != BGJOB_CANCEL_STATUS_ALREADY_FINISHED) {
        violation("job %" PRIu64 ": cancel status %d", r->serial, st);
    }
}

static void op_info(struct jrec *r)
{
    bgjob_info info = {.struct_size = sizeof info};
    long before = tick();
    int32_t rc = bgjob_job_get_info(r->handle, &info);

    expect(r, "getinfo", rc, RC(OK));
    if (rc != BGJOB_RESULT_OK)
        return;
    if (info.id != r->id)
        violation("job %" PRIu64 ": getinfo of its handle gave id %" PRIu64 ", not %" PRIu64,
                  r->serial, info.id, r->id);
    observe(r, info.state, before);
    if (info.percent < -1 || info.percent > 100)
        violation("job %" PRIu64 ": percent %d", r->serial, info.percent);
    if (info.total != 0 && info.current > info.total)
        violation("job %" PRIu64 ": torn snapshot, current %" PRIu64 " > total %" PRIu64,
                  r->serial, info.current, info.total);
    if (info.elapsed_ms < 0 || (info.remaining_ms < 0 && info.remaining_ms != -1))
        violation("job %" PRIu64 ": elapsed %" PRId64 " remaining %" PRId64, r->serial,
                  info.elapsed_ms, info.remaining_ms);
    if (info.pause_requested != (info.state == BGJOB_STATE_PAUSED))
        violation("job %" PRIu64 ": pause_requested %d in state %s", r->serial,
                  info.pause_requested, bgjob_state_str(info.state));
    if (atomic_load(&r->cancel_req_tick) < before && !info.cancel_requested)
        violation("job %" PRIu64 ": cancel was requested, info says not", r->serial);
}

static void op_wait(uint64_t *rng, struct jrec *r)
{
    unsigned k = below(rng, 20);
    int64_t timeout = k < 12 ? 0 : k < 19 ? 1 : 3;
    int32_t st = -1;
    long before = tick();
    int32_t rc = bgjob_job_wait(r->handle, timeout, &st);

    expect(r, "wait", rc, RC(OK) | RC(TIMED_OUT));
    if (rc == BGJOB_RESULT_OK) {
        if (!is_terminal(st))
            violation("job %" PRIu64 ": wait returned non-terminal %d", r->serial, st);
        observe(r, st, before);
        if (atomic_load(&r->started) && atomic_load(&r->worker_frees) != 1)
            violation("job %" PRIu64 ": wait returned before the userdata was freed", r->serial);
    }
}

static void op_state(struct jrec *r)
{
    int32_t st = -1;
    long before = tick();
    int32_t rc = bgjob_job_get_state(r->handle, &st);

    expect(r, "get_state", rc, RC(OK));
    if (rc == BGJOB_RESULT_OK)
        observe(r, st, before);
}

static void op_start(struct jrec *r)
{
    int32_t rc;

    tl_in_call = r;
    rc = bgjob_job_start(r->handle);
    tl_in_call = NULL;
    expect(r, "start", rc, RC(OK) | RC(NOT_ALLOWED) | RC(TRY_AGAIN));
    if (rc == BGJOB_RESULT_OK) {
        if (atomic_fetch_add(&r->started, 1) != 0)
            violation("job %" PRIu64 ": started twice", r->serial);
        atomic_store(&r->started_tick, tick());
    }
}

static void op_hook_remove(uint64_t *rng, struct jrec *r)
{
    struct hrec *h = NULL;

    pthread_mutex_lock(&r->mu);
    if (r->nhooks > 0)
        h = r->hooks[below(rng, (unsigned)r->nhooks)];
    pthread_mutex_unlock(&r->mu);
    if (h != NULL && !h->by_worker)
        remove_hook(r, r->handle, h);
}

static void op_take_result(struct jrec *r)
{
    void *p = NULL;
    int32_t rc = bgjob_job_take_result(r->handle, &p);

    expect(r, "take_result", rc, RC(OK) | RC(NOT_ALLOWED));
    if (rc != BGJOB_RESULT_OK || p == NULL)
        return;
    struct token *t = p;
    if (t->magic != TOKEN_MAGIC || t->kind != TK_RESULT || t->rec != r)
        violation("job %" PRIu64 ": take_result gave someone else's result", r->serial);
    /* Ours now: freed here, not through bgjob's free function. */
    atomic_fetch_add(&r->results_taken, 1);
    t->magic = 0;
    free(t);
}

static void op_texts(uint64_t *rng, struct jrec *r)
{
    char buf[8]; /* small on purpose: truncation */
    size_t len = 0;
    int32_t code = 0, rc;

    switch (below(rng, 3)) {
    case 0:
        rc = bgjob_job_get_error(r->handle, &code, buf, sizeof buf, &len);
        break;
    case 1:
        rc = bgjob_job_get_phase(r->handle, buf, sizeof buf, &len);
        break;
    default:
        rc = bgjob_job_get_name(r->handle, buf, sizeof buf, &len);
        if (rc == BGJOB_RESULT_OK && strncmp(buf, "stress-", 7) != 0)
            violation("job %" PRIu64 ": name '%s'", r->serial, buf);
        break;
    }
    expect(r, "get text", rc, RC(OK));
    if (rc == BGJOB_RESULT_OK && strlen(buf) >= sizeof buf)
        violation("job %" PRIu64 ": text not terminated", r->serial);
}

static void dispatch_one(bgjob_context *c, uint64_t *rng, bool ephemeral)
{
    size_t ran = 0;
    int32_t rc;

    tl_dispatching = c;
    rc = bgjob_context_dispatch(c, below(rng, 3), &ran);
    tl_dispatching = NULL;
    if (rc == BGJOB_RESULT_OK)
        atomic_fetch_add(&n_dispatched, (long)ran);
    else if (!(ephemeral && rc == BGJOB_RESULT_INVALID_HANDLE))
        violation("dispatch returned %s", bgjob_result_str(rc));
}

static void op_dispatch(uint64_t *rng)
{
    unsigned i = below(rng, PERMANENT_CONTEXTS + 1);

    if (i < PERMANENT_CONTEXTS) {
        dispatch_one(contexts[i], rng, false);
    } else {
        pthread_mutex_lock(&eph_mu);
        bgjob_context *c = eph_ctx;
        pthread_mutex_unlock(&eph_mu);
        dispatch_one(c, rng, true);
    }
}

/* Destroys the ephemeral context (its queued completions are dropped, their
 * free functions run) and makes a new one. */
static void op_recycle_context(void)
{
    bgjob_context *fresh = NULL, *old;

    if (bgjob_context_create(&fresh) != BGJOB_RESULT_OK) {
        violation("context_create failed");
        return;
    }
    pthread_mutex_lock(&eph_mu);
    old = eph_ctx;
    eph_ctx = fresh;
    if (n_eph_dead < sizeof eph_dead / sizeof eph_dead[0])
        eph_dead[n_eph_dead++] = old;
    pthread_mutex_unlock(&eph_mu);
    if (bgjob_context_destroy(old) != BGJOB_RESULT_OK)
        violation("destroying the ephemeral context failed");
}

/* Every job call on a released handle is refused, whatever job now lives in
 * its table slot. */
static void op_stale(uint64_t *rng)
{
    bgjob_job *h = NULL;
    int32_t rc = BGJOB_RESULT_INVALID_HANDLE, st;
    bgjob_info info = {.struct_size = sizeof info};
    uint64_t id;

    pthread_mutex_lock(&grave_mu);
    if (grave_n > 0)
        h = graveyard[below(rng, grave_n < GRAVEYARD ? (unsigned)grave_n : GRAVEYARD)];
    pthread_mutex_unlock(&grave_mu);
    if (h == NULL)
        return;
    atomic_fetch_add(&n_stale_calls, 1);
    switch (below(rng, 9)) {
    case 0:
        rc = bgjob_job_get_info(h, &info);
        break;
    case 1:
        rc = bgjob_job_cancel(h, &st);
        break;
    case 2:
        rc = bgjob_job_destroy(h);
        break;
    case 3:
        rc = bgjob_job_pause(h);
        break;
    case 4:
        rc = bgjob_job_resume(h);
        break;
    case 5:
        rc = bgjob_job_wait(h, 0, &st);
        break;
    case 6:
        rc = bgjob_job_get_id(h, &id);
        break;
    case 7:
        rc = bgjob_job_detach(h, BGJOB_DETACH_CANCEL);
        break;
    default:
        rc = bgjob_job_start(h);
        break;
    }
    if (rc != BGJOB_RESULT_INVALID_HANDLE)
        violation("a call on a released handle returned %s", bgjob_result_str(rc));
}

static void op_list(void)
{
    bgjob_job_entry e[4];
    size_t n = 0;

    if (bgjob_list_jobs(e, 4, &n) != BGJOB_RESULT_OK)
        violation("list_jobs failed");
    for (size_t i = 0; i < n && i < 4; i++)
        if (e[i].state < 0 || e[i].state >= BGJOB_STATE_COUNT)
            violation("list_jobs state %d", e[i].state);
}

/* One operation. */
static void one_op(uint64_t *rng)
{
    int slot_index = (int)below(rng, SLOTS);
    struct slot *s = &slots[slot_index];
    unsigned k = below(rng, 1000);
    struct jrec *r;

    /* Operations that need no job. */
    if (k < 60) {
        op_dispatch(rng);
        return;
    }
    if (k < 75) {
        op_stale(rng);
        return;
    }
    if (k < 80) {
        op_list();
        return;
    }
    if (k < 81) {
        op_recycle_context();
        return;
    }
    pthread_mutex_lock(&s->mu);
    r = s->rec;
    pthread_mutex_unlock(&s->mu);
    if (r == NULL) {
        op_create(rng, slot_index);
        return;
    }
    k = below(rng, 100);
    if (k < 8)
        op_start(r);
    else if (k < 18)
        op_cancel(r);
    else if (k < 25) {
        int32_t rc = bgjob_job_pause(r->handle);
        expect(r, "pause", rc, RC(OK) | RC(NOT_ALLOWED));
        atomic_fetch_add(&n_pauses, rc == BGJOB_RESULT_OK);
    } else if (k < 33) {
        int32_t rc = bgjob_job_resume(r->handle);
        expect(r, "resume", rc, RC(OK) | RC(NOT_ALLOWED));
        atomic_fetch_add(&n_resumes, rc == BGJOB_RESULT_OK);
    } else if (k < 45)
        op_info(r);
    else if (k < 50)
        op_state(r);
    else if (k < 60)
        op_wait(rng, r);
    else if (k < 74)
        op_release(rng, r);
    else if (k < 80)
        add_hook(r, r->handle, false);
    else if (k < 85)
        op_hook_remove(rng, r);
    else if (k < 89)
        op_take_result(r);
    else
        op_texts(rng, r);
}

struct actor {
    int index;
    long ops;
    uint64_t rng;
    pthread_t th;
};

static void *actor_main(void *arg)
{
    struct actor *a = arg;

    tl_actor = a->index;
    for (long i = 0; i < a->ops; i++) {
        one_op(&a->rng);
        atomic_fetch_add(&n_ops, 1);
        /* Now and then let workers run between operations, so jobs live
         * through more of them in every state. */
        if (below(&a->rng, 8) == 0)
            sched_yield();
    }
    return NULL;
}

/* ---- the end -------------------------------------------------------------------- */

/* Waits for, checks and destroys every job still in a slot. A job may still
 * destroy itself from its completion meanwhile, so INVALID_HANDLE is checked
 * as during the run. */
static void settle_slots(void)
{
    for (int i = 0; i < SLOTS; i++) {
        bgjob_info info = {.struct_size = sizeof info};
        struct jrec *r;
        int32_t st = -1, rc;
        long before;

        pthread_mutex_lock(&slots[i].mu);
        r = slots[i].rec;
        slots[i].rec = NULL;
        pthread_mutex_unlock(&slots[i].mu);
        if (r == NULL)
            continue;
        if (!atomic_load(&r->started) && (r->serial & 1))
            op_start(r);
        expect(r, "final resume", bgjob_job_resume(r->handle), RC(OK) | RC(NOT_ALLOWED));
        if (atomic_load(&r->started)) {
            before = tick();
            rc = bgjob_job_wait(r->handle, LONG_MS, &st);
            expect(r, "final wait", rc, RC(OK));
            if (rc == BGJOB_RESULT_OK)
                observe(r, st, before);
        }
        rc = bgjob_job_get_info(r->handle, &info);
        expect(r, "final getinfo", rc, RC(OK));
        if (rc == BGJOB_RESULT_OK) {
            if (info.id != r->id)
                violation("job %" PRIu64 ": wrong id at the end", r->serial);
            if (atomic_load(&r->cancel_requested) && !info.cancel_requested)
                violation("job %" PRIu64 ": cancel requested but not in info", r->serial);
            if (info.state == BGJOB_STATE_FAILED && info.error_code != atomic_load(&r->effective_rc))
                violation("job %" PRIu64 ": FAILED with code %d, worker said %d", r->serial,
                          info.error_code, atomic_load(&r->effective_rc));
        }
        atomic_fetch_add(&r->release_inflight, 1);
        rc = bgjob_job_destroy(r->handle);
        if (rc == BGJOB_RESULT_OK)
            atomic_store(&r->released, 1);
        atomic_fetch_sub(&r->release_inflight, 1);
        expect(r, "final destroy", rc, RC(OK));
    }
}

/* Whether every job's frees and worker-thread completions are done. */
static bool all_freed(void)
{
    for (size_t i = 0; i < n_jobs; i++) {
        struct jrec *r = all_jobs[i];
        if (atomic_load(&r->worker_frees) < 1)
            return false;
        if (r->ctx != -2 && atomic_load(&r->completion_frees) < 1)
            return false;
    }
    return true;
}

static void drain_contexts(void)
{
    int64_t deadline = now_ms() + LONG_MS;
    uint64_t rng = 1;

    for (;;) {
        for (int i = 0; i < PERMANENT_CONTEXTS; i++)
            dispatch_one(contexts[i], &rng, false);
        dispatch_one(eph_ctx, &rng, true);
        if (all_freed())
            break;
        if (now_ms() > deadline) {
            violation("some userdata or completion was never freed (after %d ms)", LONG_MS);
            break;
        }
        sleep_ms(1);
    }
    for (int i = 0; i < PERMANENT_CONTEXTS; i++) {
        size_t pending = 1;
        bgjob_context_pending(contexts[i], &pending);
        if (pending != 0)
            violation("context %d still has %zu completions queued", i, pending);
        if (bgjob_context_destroy(contexts[i]) != BGJOB_RESULT_OK)
            violation("destroying context %d failed", i);
    }
    if (bgjob_context_destroy(eph_ctx) != BGJOB_RESULT_OK)
        violation("destroying the ephemeral context failed");
    for (size_t i = 0; i < n_eph_dead; i++)
        if (bgjob_context_destroy(eph_dead[i]) != BGJOB_RESULT_INVALID_HANDLE)
            violation("a destroyed context could be destroyed again");
}

static void check_job(struct jrec *r)
{
    int runs = atomic_load(&r->worker_runs);
    int term = atomic_load(&r->terminal);
    int eff = atomic_load(&r->effective_rc);
    int cancels = atomic_load(&r->cancel_requested) + atomic_load(&r->detach_cancel);

    if (!atomic_load(&r->create_ok)) {
        if (runs != 0 || atomic_load(&r->worker_frees) != 1)
            violation("job %" PRIu64 ": a job never made ran or was not freed once", r->serial);
        return;
    }
    if (atomic_load(&r->worker_frees) != 1)
        violation("job %" PRIu64 ": worker userdata freed %d times", r->serial,
                  atomic_load(&r->worker_frees));
    if (atomic_load(&r->free_early))
        violation("job %" PRIu64 ": worker userdata freed before the worker returned", r->serial);
    if (atomic_load(&r->started) != runs)
        violation("job %" PRIu64 ": started %d, worker ran %d times", r->serial,
                  atomic_load(&r->started), runs);
    if (runs && atomic_load(&r->worker_saw) != r->handle)
        violation("job %" PRIu64 ": the worker got a different handle", r->serial);
    if (r->ctx != -2) {
        int calls = atomic_load(&r->completion_calls);
        if (atomic_load(&r->completion_frees) != 1)
            violation("job %" PRIu64 ": completion userdata freed %d times", r->serial,
                      atomic_load(&r->completion_frees));
        if (calls > 1 || (calls == 0 && !r->ephemeral))
            violation("job %" PRIu64 ": completion ran %d times", r->serial, calls);
        if (calls == 1 && atomic_load(&r->completion_saw) != r->handle)
            violation("job %" PRIu64 ": the completion got a different handle", r->serial);
    }
    if (atomic_load(&r->cancel_requested) > 1)
        violation("job %" PRIu64 ": %d cancels got REQUESTED", r->serial,
                  atomic_load(&r->cancel_requested));
    if (atomic_load(&r->results_freed) + atomic_load(&r->results_taken) !=
        atomic_load(&r->results_set))
        violation("job %" PRIu64 ": %d results set, %d freed, %d taken", r->serial,
                  atomic_load(&r->results_set), atomic_load(&r->results_freed),
                  atomic_load(&r->results_taken));
    if (term >= 0)
        atomic_fetch_add(&n_outcome[term], 1);
    /* The outcome rules. */
    if (term < 0)
        return; /* released unobserved: nothing seen to check */
    if (!runs) {
        if (term != BGJOB_STATE_CANCELLED)
            violation("job %" PRIu64 ": never ran but ended %s", r->serial, bgjob_state_str(term));
        return;
    }
    if (eff == 0 && term != BGJOB_STATE_COMPLETED)
        violation("job %" PRIu64 " (%s): worker succeeded, job %s", r->serial,
                  behaviour_names[r->behaviour], bgjob_state_str(term));
    if (eff != 0 && term == BGJOB_STATE_COMPLETED)
        violation("job %" PRIu64 " (%s): worker failed (%d), job COMPLETED", r->serial,
                  behaviour_names[r->behaviour], eff);
    if (term == BGJOB_STATE_CANCELLED && cancels == 0 && eff != 0)
        violation("job %" PRIu64 ": CANCELLED with no cancel", r->serial);
    if (term == BGJOB_STATE_FAILED &&
        atomic_load(&r->cancel_req_tick) < atomic_load(&r->worker_return_tick))
        violation("job %" PRIu64 ": cancel requested before the worker failed, yet FAILED",
                  r->serial);
}

static void check_hook(struct hrec *h)
{
    struct jrec *r = h->rec;
    int calls = atomic_load(&h->calls);

    if (atomic_load(&h->frees) != 1)
        violation("job %" PRIu64 ": hook userdata freed %d times", r->serial,
                  atomic_load(&h->frees));
    if (calls > 1)
        violation("job %" PRIu64 ": hook called %d times", r->serial, calls);
    if (calls && atomic_load(&h->removed_ok))
        violation("job %" PRIu64 ": hook both removed and called", r->serial);
    if (calls && atomic_load(&r->cancel_calls) == 0)
        violation("job %" PRIu64 ": hook called without any cancel", r->serial);
    if (atomic_load(&h->bad_thread))
        violation("job %" PRIu64 ": hook ran on a thread that was not cancelling", r->serial);
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);

    return v != NULL && *v != '\0' ? strtoull(v, NULL, 0) : dflt;
}

int main(void)
{
    long total_ops = (long)env_u64("STRESS_OPS", DEFAULT_OPS);
    int nthreads = (int)env_u64("STRESS_THREADS", DEFAULT_THREADS);
    const char *timeout = getenv("TAP_TIMEOUT");
    struct actor *actors;
    int64_t t0, t_run;
    long seen;

    seed = env_u64("STRESS_SEED", 0);
    if (seed == 0)
        seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
    if (nthreads < 1)
        nthreads = 1;
    alarm(timeout != NULL ? (unsigned)strtoul(timeout, NULL, 10) : 300);
    tap_plan(4);
    tap_diag("stress: seed %" PRIu64 " (replay with STRESS_SEED=%" PRIu64 "), %ld ops, %d threads",
             seed, seed, total_ops, nthreads);

    for (int i = 0; i < SLOTS; i++)
        pthread_mutex_init(&slots[i].mu, NULL);
    for (int i = 0; i < PERMANENT_CONTEXTS; i++)
        if (bgjob_context_create(&contexts[i]) != BGJOB_RESULT_OK)
            return 1;
    if (bgjob_context_create(&eph_ctx) != BGJOB_RESULT_OK)
        return 1;

    actors = calloc((size_t)nthreads, sizeof *actors);
    if (actors == NULL)
        return 1;
    t0 = now_ms();
    for (int i = 0; i < nthreads; i++) {
        uint64_t x = seed + (uint64_t)i * 0x1000193ull;
        actors[i].index = i;
        actors[i].ops = total_ops / nthreads + (i < total_ops % nthreads);
        actors[i].rng = splitmix(&x);
        if (pthread_create(&actors[i].th, NULL, actor_main, &actors[i]) != 0)
            return 1;
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(actors[i].th, NULL);
    t_run = now_ms() - t0;
    seen = atomic_load(&violations);
    tap_ok(seen == 0, "%ld operations on %d threads: no violation during the run",
           atomic_load(&n_ops), nthreads);

    settle_slots();
    drain_contexts();
    {
        int64_t deadline = now_ms() + LONG_MS;
        while (live_jobs() != 0 && now_ms() < deadline)
            sleep_ms(1);
        size_t left = live_jobs();
        if (left != 0) {
            bgjob_job_entry e[8];
            size_t n = 0;
            violation("%zu jobs still exist at the end", left);
            bgjob_list_jobs(e, 8, &n);
            for (size_t i = 0; i < n && i < 8; i++)
                tap_diag("left: %s, %s, phase '%s'", e[i].name, bgjob_state_str(e[i].state),
                         e[i].phase);
        }
    }
    tap_ok(atomic_load(&violations) == seen,
           "every job settled, every context drained, no job left");
    seen = atomic_load(&violations);

    for (size_t i = 0; i < n_jobs; i++)
        check_job(all_jobs[i]);
    for (size_t i = 0; i < n_hooks; i++)
        check_hook(all_hooks[i]);
    tap_ok(atomic_load(&violations) == seen,
           "%zu jobs: one terminal state each, every worker, completion and free exactly once",
           n_jobs);
    tap_ok(atomic_load(&n_ops) == total_ops, "ran all %ld operations", total_ops);

    tap_diag("stress: %ld ops in %" PRId64 " ms; %ld creates (%ld TRY_AGAIN), %ld workers ran, "
             "%ld pauses, %ld resumes; completed %ld, failed %ld, cancelled %ld, unobserved %ld",
             atomic_load(&n_ops), t_run, atomic_load(&n_creates), atomic_load(&n_try_again),
             atomic_load(&n_worker_runs), atomic_load(&n_pauses), atomic_load(&n_resumes),
             atomic_load(&n_outcome[BGJOB_STATE_COMPLETED]),
             atomic_load(&n_outcome[BGJOB_STATE_FAILED]),
             atomic_load(&n_outcome[BGJOB_STATE_CANCELLED]),
             atomic_load(&n_creates) - atomic_load(&n_outcome[BGJOB_STATE_COMPLETED]) -
                 atomic_load(&n_outcome[BGJOB_STATE_FAILED]) -
                 atomic_load(&n_outcome[BGJOB_STATE_CANCELLED]));
    tap_diag("stress: %zu hooks (%ld called, %ld removed), %ld completions (%ld dispatched, "
             "%ld destroyed their own job), %ld stale-handle calls, %ld INVALID_HANDLE on "
             "racing releases",
             n_hooks, atomic_load(&n_hook_calls), atomic_load(&n_hook_removed),
             atomic_load(&n_completions), atomic_load(&n_dispatched),
             atomic_load(&n_destroy_in_completion), atomic_load(&n_stale_calls),
             atomic_load(&n_invalid_seen));
    tap_diag("stress: %ld invariant violations (seed %" PRIu64 ")", atomic_load(&violations),
             seed);

    for (size_t i = 0; i < n_jobs; i++) {
        pthread_mutex_destroy(&all_jobs[i]->mu);
        free(all_jobs[i]);
    }
    for (size_t i = 0; i < n_hooks; i++)
        free(all_hooks[i]);
    free(all_jobs);
    free(all_hooks);
    free(actors);
    for (int i = 0; i < SLOTS; i++)
        pthread_mutex_destroy(&slots[i].mu);
    return tap_done();
}

/*
 * test_fuzz.c: a seeded, multi-threaded adversarial fuzzer over the C API,
 * run in CI, written against bgjob.h only.
 *
 * Where test_stress.c hammers single jobs, this program plays whole
 * *scenarios* -- what a driver does with a job from create to release -- on
 * FUZZ_THREADS actor threads (default 4), with the choices and timings drawn
 * from a seed, while service threads change the world under them (a
 * canceller thread that cancels on request, a dispatcher thread that runs
 * context completions, a chaos thread for the cap and the log callback).
 * The scenario classes, each switchable:
 *
 *   hooks      workers register cancel hooks and return at once on cancel;
 *              another thread (the canceller, the deadline timer, the actor
 *              after a pause) cancels while the actor waits and destroys;
 *              hooks sleep to widen the window
 *   txn        transactions of 2-4 members: create/add (and a refused second
 *              add)/start (txn_start or each job_start)/cancel/destroy, auto
 *              or manual finalize (txn_finalize or job_finalize of a member),
 *              members failing, cancelled, paused, internally paused,
 *              detached with and without cancel, the transaction destroyed
 *              early or with every member detached
 *   txnwait    (with txn) member completions wait for a sibling with
 *              bgjob_job_wait; a class of its own because, where the
 *              completion-thread bug stands, it deadlocks and the watchdog
 *              ends the run
 *   finalize   manual-finalize jobs: finalize, cancel while PENDING, destroy
 *              refused and wait timing out while PENDING, detach with and
 *              without cancel while running or PENDING, a cancel then detach,
 *              workers that succeed despite a cancel
 *   detach     detach with and without cancel of running, user-paused,
 *              internally paused (once, twice), user+internally paused,
 *              error-stopped and PENDING jobs
 *   errpolicy  report_io_error under every policy with EIO and ENOSPC; the
 *              answer checked against the policy; stops resumed (after
 *              set_error_policy), cancelled or detached; iostatus only while
 *              PAUSED
 *   deadline   deadlines from the options and set later (CREATED or
 *              running), with pauses (worker hooks included)
 *   child      workers spawn short children (true, sleep 0.02, sh -c echo with
 *              captured lines) and wait for them; cancels (here and from the
 *              canceller), pauses and detach+cancel while they run
 *   rit        bgjob_run_in_thread fire-and-forget, through a context with no
 *              handle, and with a kept handle
 *   wrongtype  a transaction or context handle given as a job, and back
 *   reenter    callbacks (completion, hooks, commit/abort/clean, the log
 *              callback, workers) list jobs (taking every job's lock), read
 *              and cancel other jobs, create jobs, destroy or detach jobs
 *              another callback made, and a completion destroys its own job
 *   external   external jobs (BGJOB_CREATE_EXTERNAL, no worker) driven by the
 *              actor as an event loop would: pause, resume, set_speed,
 *              set_ready, complete, soft and force cancel, progress, owner
 *              report_io_error, references taken and dropped, detach; ended
 *              with bgjob_job_end by the actor, by the canceller thread at a
 *              random moment, from inside the control callback's CANCEL or
 *              from the event callback (racing ends: one succeeds); deferred
 *              starts, destroyed or cancelled while CREATED, deadlines. The
 *              control callback re-enters (get_info, ref, list, cancel)
 *   events     threaded jobs that become READY (STANDBY when paused), are
 *              completed or soft/force cancelled, with an event callback and
 *              often a control callback, both re-entering (a quarter destroy
 *              the job from its END event, as allowed); with this class on,
 *              a quarter of the jobs of every other class get an event
 *              callback too (through their context, or on the causing thread)
 *   refs       1-4 more handles per job (bgjob_job_ref, bgjob_job_lookup),
 *              used for verbs, then released in random orders by the actor,
 *              the canceller thread and the job's completion (destroy, detach,
 *              detach+cancel) while one kept handle stays; lookups of ids
 *              never given, and after the last handle went
 *   subjobs    trees of 2-3 levels (up to 7 jobs, threaded and external
 *              nodes, options.parent), a parent cancelled before a child is
 *              made, cancels, pauses and ends at random levels, the root's
 *              handle detached at once, the listing's parent ids, a child
 *              refused under an ended parent
 *   stats      statistics declared while CREATED (1-5 in a batch group, 0-2
 *              single ones, every type), batches written by the worker (or
 *              owner), the actor and the canceller thread at once, refused
 *              batches, wrong types and indexes, reads all along and after
 *              the end
 *   cap        the chaos thread sets a concurrency cap of 1-8 and lifts it,
 *              over and over, under load
 *   log        the chaos thread installs, replaces and removes a log callback
 *   hook0      with reenter, a cancel hook run at once by add_cancel_hook
 *              (cancel already requested, so its id is not known yet and
 *              reads 0) removes "itself" with bgjob_job_remove_cancel_hook(
 *              job, 0), which must be NOT_FOUND at once: 0 is never a hook's
 *              id (hook0 also makes the hooks scenario cancel before both the
 *              worker and the actor add their hook, so two such hooks of one
 *              job run on two threads at once). Before the fix a remove of 0
 *              waited for every at-once hook of the job on another thread,
 *              and two of them waited for each other for ever
 *              (FUZZ_ONLY=hooks,reenter,hook0 stalled at FUZZ_SEED=1, 2, 3)
 *   evtxn      with events, the event callbacks of transaction members
 *              cancel their job too, from the PENDING event in particular: a
 *              manual-finalize transaction's members turn PENDING under the
 *              transaction's lock, and their events must come after it is let
 *              go ("never under a lock"). Before the fix they were delivered
 *              under it, and a callback cancelling its PENDING member waited
 *              for that lock for ever (FUZZ_ONLY=txn,events,evtxn stalled at
 *              FUZZ_SEED=1, 2, 3)
 *   list       half of every listing (actors and callbacks) is
 *              bgjob_list_jobs_sized with a stride past the entry, checked for
 *              bytes written past each entry, plus refused entry sizes; every
 *              entry's cancel cause, operation and owner checked
 *
 * Environment: FUZZ_ONLY=hooks,txn,... runs only those classes (default all;
 * external, events, refs, subjobs and stats make jobs of their own, list
 * changes how everyone lists);
 * FUZZ_SKIP=... leaves some out; FUZZ_OPS (default 20000) is how many API calls
 * the actors make (workers and callbacks make more; STRESS_OPS is read when
 * FUZZ_OPS is unset); FUZZ_SEED (or STRESS_SEED) replays a run's choices (the
 * interleaving of threads is the machine's); FUZZ_THREADS; FUZZ_STALL_S
 * (watchdog, default 20); FUZZ_SETTLE_MS (how long detached jobs get to end,
 * default 15000); FUZZ_REPORTS (violations printed, default 40 plus 3 per
 * class). `make test` runs it briefly, `make fuzz` and `make stress` a
 * million calls, `make check-asan` / `make check-valgrind` shorter runs.
 *
 * Invariants, checked as it runs and at the end; each violation is printed
 * with its class, the job's scenario and choices, and the seed, and the end
 * groups the jobs that broke a promise by scenario:
 * - a job reaches exactly one terminal state and never leaves it;
 * - once any call observed a job terminal (wait, get_state, get_info, its
 *   completion) no cancel hook of it starts or is still running, and none
 *   runs after destroy returned; commit, abort and clean run before the job
 *   ends and before its completion (hook-after-end);
 * - every worker, commit/abort, clean and hook runs at most once, the
 *   completion exactly once; every userdata (worker, completion, finalize,
 *   hook, child line, log, run-in-thread) is freed exactly once, the
 *   worker's only after the worker returned, none while its callback runs;
 * - a completion without a context runs on its own worker's thread (a
 *   manual-finalize job's may run on the finalizing thread or a bgjob
 *   thread), a context's on the dispatching thread, never inside the call
 *   that ended the job (completion-thread); hooks, finalizers and log lines never
 *   run on a bgjob-internal thread that is not a job's (named after it), such
 *   as the timer (internal-thread);
 * - a transaction commits all members or aborts all, consistently with
 *   their outcomes;
 * - a detached job always ends by itself: its completion and finalizers run
 *   and it leaves the list (detached-vanished, detached-never-ended); no job is left at the end,
 *   no completion stays queued;
 * - handles: a released handle is INVALID_HANDLE for its owner; wrong-type
 *   handles get INVALID_HANDLE; get_info through a handle gives its job;
 * - control (external, events): the control callback is never called after
 *   bgjob_job_end returned, after any call saw the job end, after its
 *   userdata was freed, or for a job that never started; none is running
 *   (on another thread than the one that ended the job) when the end is
 *   seen; CANCEL at most once force and once soft, with cancel_requested
 *   set; PAUSE, RESUME, COMPLETE, SET_SPEED no more often than the verbs
 *   that took effect (RESUME: pauses plus error stops), SET_SPEED with a
 *   speed set on that job; bgjob_job_end succeeds exactly once per started
 *   external job; both userdata are freed before a wait sees the end; a
 *   completion without a context runs on a thread that called
 *   bgjob_job_end (never on a caller's thread that did not); after the end
 *   set_speed, pause and a second end are refused;
 * - event: one job's events never overlap, seq grows by 1 + coalesced,
 *   each state change starts where the previous ended, READY follows a
 *   change into READY, END exactly once, terminal, in the last state, and
 *   before the completion; no event after END, after the completion or
 *   after its userdata was freed (exactly once); through a context only on
 *   the dispatcher;
 * - ref: ref and lookup give a new handle value naming the same id; the
 *   release of a handle that is not the last is OK in every state, and the
 *   released value is INVALID_HANDLE for get_state, get_id, cancel, ref and
 *   destroy (never another job's); lookup of an id never given, or after the
 *   last handle was released, is INVALID_ARGUMENT. A callback (control,
 *   event, completion) is lent the creator's handle while the creator holds
 *   it, and the creator's release of it during the call (allowed: another
 *   reference lives) makes it INVALID_HANDLE mid-call, as the header says of
 *   each of those callbacks: counted in the summary; any other result there
 *   fails;
 * - subjob: a parent is never seen ended (its wait, completion, END event)
 *   while a sub-job is not terminal; after a cancel returns, every sub-job
 *   below that has not ended has cancel requested, cause PARENT unless
 *   cancelled itself; a child made under a cancelled parent is born
 *   cancelled; a parent ends with its own worker's outcome; the listing
 *   shows each child's parent id; create under an ended parent is refused;
 * - stats: a batch is never seen torn (every batch statistic equal), a
 *   refused batch never seen at all; count, types and the snapshot's job as
 *   declared; after the end setters are refused and reads are final;
 * - list: no byte past an entry written at a longer stride; cancel_requested
 *   exactly when the cause is not NONE; operation and owner as given;
 * - no deadlock: a watchdog watches every actor and service thread; one that
 *   makes no progress for FUZZ_STALL_S seconds fails the run after printing
 *   what each stuck thread was doing and to which job, the live jobs, and
 *   every thread's stack (gdb, else eu-stack) on stderr.
 *
 * At commit ab47c89, before the fixes, each of these runs reproduces its bug
 * class, whatever the seed (these are the seeds first recorded):
 *       FUZZ_ONLY=hooks FUZZ_SEED=1        hook-after-end: a hook runs while
 *                                          wait/the completion saw the job end,
 *                                          and after destroy returned
 *       FUZZ_ONLY=txn FUZZ_SEED=1          completion-thread: a member's
 *                                          completion runs while a sibling is
 *                                          still WAITING
 *       FUZZ_ONLY=txn,txnwait FUZZ_SEED=1  the deadlock itself: the watchdog
 *                                          fires, stacks show completion ->
 *                                          bgjob_job_wait on a worker thread
 *       FUZZ_ONLY=finalize FUZZ_SEED=1     detached-vanished (detach+cancel
 *                                          while running; cancel, then
 *                                          detach+cancel while PENDING)
 *       FUZZ_ONLY=detach FUZZ_SEED=1       detached-never-ended (internally
 *                                          paused, with or without a user pause)
 *       FUZZ_ONLY=txn FUZZ_SEED=1          detached-never-ended ("manual
 *                                          finalize, all members detached, then
 *                                          the txn destroyed")
 *       FUZZ_ONLY=deadline,log FUZZ_SEED=5 internal-thread: hooks and log
 *                                          lines on 'bgjob-timer'
 * With those fixed (commit 144b1e7 for all but internal-thread, which was
 * fixed later) none of these runs reports its class any more (0 violations
 * in each).
 */

#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define DEFAULT_OPS 20000
#define DEFAULT_THREADS 4
#define CANCELLED_RC 125
#define REG_SLOTS 64
#define MAX_MEMBERS 4
#define MAX_HOOKS 3
#define N_CONTEXTS 2
#define MAX_ACTORS 64

/* ---- classes of scenario ---------------------------------------------------- */

enum scn {
    S_HOOKS,
    S_TXN,
    S_FINALIZE,
    S_DETACH,
    S_ERRPOLICY,
    S_DEADLINE,
    S_CHILD,
    S_RIT,
    S_WRONGTYPE,
    S_REENTER,
    S_EXTERNAL,
    S_EVENTS,
    S_REFS,
    S_SUBJOBS,
    S_STATS,
    S_CAP,
    S_LOG,
    S_TXNWAIT,
    S_LIST,
    S_HOOK0,
    S_EVTXN,
    S_COUNT
};

static const char *const scn_names[S_COUNT] = {
    "hooks", "txn", "finalize", "detach", "errpolicy", "deadline", "child",
    "rit", "wrongtype", "reenter", "external", "events", "refs", "subjobs", "stats",
    "cap", "log", "txnwait", "list", "hook0", "evtxn",
};

/* Scenarios an actor picks from (the last two are background threads). */
#define N_ACTOR_SCN S_CAP

static bool enabled[S_COUNT];

/* ---- violations --------------------------------------------------------------- */

enum vclass {
    V_HOOK_AFTER_END,
    V_FIN_AFTER_END,
    V_COMPLETION_THREAD,
    V_INTERNAL_THREAD,
    V_VANISHED,
    V_NEVER_ENDED,
    V_ONCE,
    V_STATE,
    V_RESULT,
    V_TXN,
    V_IOSTATUS,
    V_HANDLE,
    V_LEFT,
    V_CONTROL,
    V_EVENT,
    V_REF,
    V_FAMILY,
    V_STATS,
    V_LIST,
    V_COUNT
};

static const char *const vclass_names[V_COUNT] = {
    "hook-after-end",
    "finalizer-after-end",
    "completion-thread",
    "internal-thread",
    "detached-vanished",
    "detached-never-ended",
    "exactly-once",
    "state",
    "result-code",
    "txn-outcome",
    "iostatus",
    "wrong-type-handle",
    "job-left",
    "control",
    "event",
    "ref",
    "subjob",
    "stats",
    "list",
};

static atomic_long violations;
static atomic_long vcount[V_COUNT];
static uint64_t seed;
static long max_reports = 40; /* FUZZ_REPORTS */

static void violation(int cls, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void violation(int cls, const char *fmt, ...)
{
    long n = atomic_fetch_add(&violations, 1);
    long c = atomic_fetch_add(&vcount[cls], 1);
    char buf[600];
    va_list ap;

    /* Every class gets its first few reports, whatever the others did. */
    if (n >= max_reports && c >= 3)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    /* tap_diag prints in pieces: one line at a time across threads. */
    flockfile(stdout);
    tap_diag("VIOLATION [%s] (FUZZ_SEED=%" PRIu64 "): %s", vclass_names[cls], seed, buf);
    funlockfile(stdout);
    /* Also on stderr, which prove shows: a CI log then says what broke. */
    fprintf(stderr, "test_fuzz: VIOLATION [%s] (FUZZ_SEED=%" PRIu64 "): %s\n", vclass_names[cls],
            seed, buf);
}

/* ---- random numbers ------------------------------------------------------------- */

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned below(uint64_t *rng, unsigned n)
{
    return n == 0 ? 0 : (unsigned)(splitmix(rng) % n);
}

static bool chance(uint64_t *rng, unsigned one_in)
{
    return below(rng, one_in) == 0;
}

/* ---- threads: roles, heartbeats ---------------------------------------------------- */

enum role { ROLE_NONE, ROLE_WORKER, ROLE_ACTOR, ROLE_DISPATCHER, ROLE_CANCELLER, ROLE_CHAOS, ROLE_MAIN };

static const char *const role_names[] = {
    "a bgjob-internal thread", "a worker thread", "an actor", "the dispatcher",
    "the canceller", "the chaos thread", "main",
};

static _Thread_local int tl_role;
static _Thread_local int tl_depth;          /* inside one of our callbacks */
static _Thread_local long tl_ops;           /* API calls made on this thread */
static _Thread_local struct rec *tl_call_rec;   /* inside cancel/destroy/... of this job */
static _Thread_local struct txnrec *tl_call_txn; /* inside txn_cancel/start/destroy */
/* Control calls of one job nested on this thread, and whether this thread
 * ended that job from inside them: the end waits for control calls on
 * other threads only. */
static _Thread_local struct rec *tl_ctl_rec;
static _Thread_local int tl_ctl_n;
static _Thread_local bool tl_ctl_ended;
static _Thread_local const char *tl_ctl_step = ""; /* what the innermost control call is doing */

/* A thread the watchdog watches: it must beat at least every stall_ms. */
struct watched {
    const char *name;
    int index;
    atomic_llong beat;              /* now_ms() of the last progress; 0: not watched */
    _Atomic(const char *) step;     /* what it is doing */
    _Atomic(struct rec *) job;      /* the job it is doing it to */
    pthread_t th;
};

static struct watched actors[MAX_ACTORS];
static struct watched svc_dispatcher, svc_canceller, svc_chaos, svc_main;
static int nactors = DEFAULT_THREADS;
static int64_t stall_ms = 20000;
static atomic_int stopping;

static _Thread_local struct watched *tl_self;

static void beat(const char *step, struct rec *r)
{
    if (tl_self == NULL)
        return;
    atomic_store(&tl_self->step, step);
    atomic_store(&tl_self->job, r);
    atomic_store(&tl_self->beat, (long long)now_ms());
}

/* Steps that may block: the step is recorded but the beat is not renewed. */
static void step(const char *what, struct rec *r)
{
    if (tl_self == NULL)
        return;
    atomic_store(&tl_self->step, what);
    atomic_store(&tl_self->job, r);
}

static atomic_long n_ops;
#define API(x) (atomic_fetch_add(&n_ops, 1), tl_ops++, (x))

/* ---- records -------------------------------------------------------------------- */

enum plan {
    P_RETURN,  /* short sleep, return rc_plan */
    P_LOOP,    /* pause points + progress, `iters` times, or until cancel/go */
    P_HOOKS,   /* register hooks, spin on check_cancel, return at once on cancel */
    P_IOERR,   /* report_io_error and act on the answer */
    P_CHILD,   /* spawn a child and wait for it */
    P_READY,   /* set_ready, then loop until complete or cancel (soft: succeed) */
    P_STATS,   /* statistics batches and single sets, pause points */
};

struct txnrec;

struct rec {
    uint64_t serial;
    int scn;
    char what[240];       /* the scenario and its choices, for reports */
    uint64_t rng_seed;

    /* The plan (set before create). */
    int plan;
    int32_t rc_plan;
    int iters;
    int nhooks;
    int hook_sleep_us;
    bool remove_hooks;    /* P_HOOKS: remove them before returning on cancel */
    bool succeed_anyway;  /* return rc_plan even when cancelled */
    int io_policy;
    int32_t io_code;
    int child_kind;
    bool has_comp, comp_ctx, has_fin, self_destroy, nested, sibling_wait;
    bool manual; /* manual finalize (its own flag or its transaction's) */
    struct txnrec *txn; /* the transaction it was made for: see txn_of() */
    int member;
    /* Set by the actor once bgjob_txn_add returned: 1 it is a member, -1
     * the add was refused (NOT_ALLOWED: the job was cancelled, or the
     * transaction began to abort) and it is a job on its own. */
    atomic_int joined;

    _Atomic(bgjob_job *) h;
    uint64_t id;
    atomic_int created;
    atomic_int go;

    atomic_int runs, returns, wfrees, wfree_early;
    atomic_int started_thread_set;
    pthread_t wthread;

    atomic_int comp_calls, comp_frees, comp_inside, comp_done;
    atomic_int commits, aborts, cleans, fin_frees, fin_inside;
    atomic_int hooks_inside, hook_regs, hook_calls;
    atomic_int observed, terminal;
    atomic_int detached, released, release_claim;
    atomic_int destroyed; /* released by a destroy (not a detach) */
    atomic_int line_regs, line_frees;
    atomic_int cancels; /* cancel-like calls made on it (any thread) */
    atomic_int policy_changed;
    atomic_int stuck; /* reported as never ended: its other checks would only repeat it */
    struct hookrec *wh[MAX_HOOKS]; /* hooks its worker registered (worker only) */
    int nwh;

    /* The driver-grade model: external jobs, control and event callbacks,
     * references, sub-jobs, statistics. */
    bool ext;               /* BGJOB_CREATE_EXTERNAL: no worker, ended by bgjob_job_end */
    bool has_ctl, has_ev;   /* a control / an event callback */
    bool ev_ctx;            /* its events come through a context */
    bool ctl_end_on_cancel; /* the control callback ends the job from inside CANCEL */
    bool ctl_reenter;       /* ... and reads, refs, cancels it again, lists */
    bool ev_reenter;        /* the event callback reads the job, lists, ends or cancels it */
    bool ev_destroy;        /* the END event destroys the job (its last handle) */
    bool never_started;     /* destroyed or cancelled while CREATED */
    int ready_at;           /* P_READY: iteration that calls set_ready */
    atomic_int ctl_last;
    atomic_int ctl_calls[5], ctl_inside, ctl_ending, ctl_frees, ctl_force, ctl_soft;
    atomic_int end_ok, end_done;   /* bgjob_job_end succeeded / a successful one returned */
    _Atomic(const char *) end_by;  /* who made the successful bgjob_job_end (for reports) */
    pthread_t end_thread;          /* and on which thread (set before end_done) */
    _Atomic(const char *) end_refused_by; /* the last refused bgjob_job_end, for reports */
    atomic_int end_in_ctl;         /* the successful one was made inside its control call */
    char trail[400];               /* what happened to it, for some reports (trail_add) */
    atomic_int end_refused_state;  /* the job's state right after it */
    atomic_int comp_ender;         /* completion ran on a thread that called end: 1, not: 2 */
    _Atomic pthread_t enders[8];   /* threads that called bgjob_job_end on it */
    atomic_int n_enders;
    atomic_int pauses_ok, completes_ok, speeds_ok, io_stops, speed_k;
    atomic_int ev_calls, ev_inside, ev_frees, ev_ends, ev_state;
    _Atomic uint64_t ev_seq;
    /* refs: extra handles released elsewhere (the completion releases stash[]) */
    int nrefs;
    atomic_int refs_released;
    atomic_int creator_going; /* the creator's handle is being released (not the keeper) */
    _Atomic(bgjob_job *) stash[5];
    atomic_int nstash;
    /* subjobs */
    struct rec *parent;
    struct rec *kids[3];
    atomic_int nkids;
    atomic_int kid_tries, kid_refused; /* creates under it, and those refused */
    /* stats: batch statistics 0..nbatch-1, single ones after */
    int nbatch, nsingle;
    int32_t stype[8];
    atomic_int batches;
};

struct hookrec {
    struct rec *r;
    atomic_int calls, frees, inside, removed_ok;
    _Atomic uint64_t id;
};

struct txnrec {
    uint64_t serial;
    char what[160];
    bool manual;
    int n;
    struct rec *m[MAX_MEMBERS];
    atomic_int nm;              /* members added so far (callbacks read this) */
    bgjob_txn *t;               /* the actor's */
    _Atomic(bgjob_txn *) th;    /* for callbacks: set once, may be stale */
};

/* The transaction r is a member of, or NULL. r->txn only names the one it
 * was made for: a job whose bgjob_txn_add was refused is no member and ends on
 * its own (its destroy ends it at once, and its completion may run while the
 * members have not even started). Until the add returned membership is not
 * known; with `wait`, the caller waits for it (the actor decides it at once:
 * nothing it does between create and the add waits for a callback). */
static struct txnrec *txn_of(struct rec *r, bool wait)
{
    if (r->txn == NULL)
        return NULL;
    if (wait) {
        int64_t t0 = now_ms();
        while (atomic_load(&r->joined) == 0 && now_ms() - t0 < 60000)
            sleep_us(50);
        if (atomic_load(&r->joined) == 0)
            violation(V_STATE, "job %" PRIu64 " [%s]: its bgjob_txn_add never returned", r->serial,
                      r->what);
    }
    return atomic_load(&r->joined) > 0 ? r->txn : NULL;
}

/* A member's callback cancels its whole transaction (the handle may be
 * destroyed by then: INVALID_HANDLE). */
static void cancel_own_txn(struct rec *r)
{
    struct txnrec *tx = txn_of(r, false);
    bgjob_txn *t;
    int32_t rc;

    if (tx == NULL || (t = atomic_load(&tx->th)) == NULL)
        return;
    rc = API(bgjob_txn_cancel(t));
    if (rc != BGJOB_RESULT_OK && rc != BGJOB_RESULT_INVALID_HANDLE)
        violation(V_RESULT, "job %" PRIu64 " [%s]: txn_cancel from a member's callback returned %s",
                  r->serial, r->what, bgjob_result_str(rc));
}

enum token_kind { TK_WORKER = 1, TK_COMPLETION, TK_FIN, TK_HOOK, TK_LINE, TK_LOG, TK_CONTROL, TK_EVENT };
#define TOKEN_MAGIC 0x667a7a21u /* "fzz!" */

struct token {
    uint32_t magic;
    int kind;
    struct rec *r;
    struct hookrec *hk;
};

static atomic_long log_installs, log_frees, log_lines, log_lines_internal, n_line_late;
static atomic_long n_subjob_comp_elsewhere, n_end_destroys;
static char subjob_comp_example[400];

static struct token *token_new(int kind, struct rec *r, struct hookrec *hk)
{
    struct token *t = malloc(sizeof *t);

    if (t == NULL)
        abort();
    t->magic = TOKEN_MAGIC;
    t->kind = kind;
    t->r = r;
    t->hk = hk;
    return t;
}

static void token_free(void *p)
{
    struct token *t = p;

    if (t == NULL || t->magic != TOKEN_MAGIC) {
        violation(V_ONCE, "a free function got something that is not a live token (double free?)");
        return;
    }
    switch (t->kind) {
    case TK_WORKER:
        if (atomic_load(&t->r->runs) != atomic_load(&t->r->returns))
            atomic_fetch_add(&t->r->wfree_early, 1);
        atomic_fetch_add(&t->r->wfrees, 1);
        break;
    case TK_COMPLETION:
        if (atomic_load(&t->r->comp_inside))
            violation(V_ONCE, "job %" PRIu64 " [%s]: completion userdata freed while it runs",
                      t->r->serial, t->r->what);
        atomic_fetch_add(&t->r->comp_frees, 1);
        break;
    case TK_FIN:
        if (atomic_load(&t->r->fin_inside))
            violation(V_ONCE, "job %" PRIu64 " [%s]: finalize userdata freed while a finalizer runs",
                      t->r->serial, t->r->what);
        atomic_fetch_add(&t->r->fin_frees, 1);
        break;
    case TK_HOOK:
        if (atomic_load(&t->hk->inside))
            violation(V_ONCE, "job %" PRIu64 " [%s]: hook userdata freed while the hook runs",
                      t->r->serial, t->r->what);
        atomic_fetch_add(&t->hk->frees, 1);
        break;
    case TK_LINE:
        atomic_fetch_add(&t->r->line_frees, 1);
        break;
    case TK_LOG:
        atomic_fetch_add(&log_frees, 1);
        break;
    case TK_CONTROL:
        if (atomic_load(&t->r->ctl_inside))
            violation(V_CONTROL, "job %" PRIu64 " [%s]: control userdata freed while the control "
                      "callback runs", t->r->serial, t->r->what);
        atomic_fetch_add(&t->r->ctl_frees, 1);
        break;
    case TK_EVENT:
        if (atomic_load(&t->r->ev_inside))
            violation(V_EVENT, "job %" PRIu64 " [%s]: event userdata freed while the event "
                      "callback runs", t->r->serial, t->r->what);
        atomic_fetch_add(&t->r->ev_frees, 1);
        break;
    default:
        violation(V_ONCE, "token of unknown kind %d", t->kind);
    }
    t->magic = 0;
    free(t);
}

/* Append-only lists of every record, for the final checks. */
static pthread_mutex_t all_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rec **all_recs;
static size_t n_recs, cap_recs;
static struct hookrec **all_hooks;
static size_t n_hookrecs, cap_hookrecs;
static struct txnrec **all_txns;
static size_t n_txns, cap_txns;

#define PUSH(arr, n, cap, p)                                                         \
    do {                                                                             \
        pthread_mutex_lock(&all_mu);                                                 \
        if ((n) == (cap)) {                                                          \
            size_t c_ = (cap) ? (cap) * 2 : 1024;                                    \
            void *q_ = realloc((arr), c_ * sizeof *(arr));                           \
            if (q_ == NULL)                                                          \
                abort();                                                             \
            (arr) = q_;                                                              \
            (cap) = c_;                                                              \
        }                                                                            \
        (arr)[(n)++] = (p);                                                          \
        pthread_mutex_unlock(&all_mu);                                               \
    } while (0)

/* The i-th record; the arrays may grow (realloc) while the end reads them. */
static struct rec *rec_at(size_t i)
{
    struct rec *r;

    pthread_mutex_lock(&all_mu);
    r = i < n_recs ? all_recs[i] : NULL;
    pthread_mutex_unlock(&all_mu);
    return r;
}

static size_t recs_count(void)
{
    size_t n;

    pthread_mutex_lock(&all_mu);
    n = n_recs;
    pthread_mutex_unlock(&all_mu);
    return n;
}

static atomic_ullong serials;

static struct rec *rec_new(int scn, uint64_t *rng)
{
    struct rec *r = calloc(1, sizeof *r);

    if (r == NULL)
        abort();
    r->serial = atomic_fetch_add(&serials, 1) + 1;
    r->scn = scn;
    r->rng_seed = splitmix(rng);
    atomic_init(&r->terminal, -1);
    snprintf(r->what, sizeof r->what, "%s", scn_names[scn]);
    PUSH(all_recs, n_recs, cap_recs, r);
    return r;
}

/* Appends a step to r's trail (under one lock for all jobs; the first 400
 * characters are kept), for reports that need the order of events. */
static pthread_mutex_t trail_mu = PTHREAD_MUTEX_INITIALIZER;
static void trail_add(struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void trail_add(struct rec *r, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&trail_mu);
    size_t n = strlen(r->trail);
    if (n + 2 < sizeof r->trail) {
        va_start(ap, fmt);
        vsnprintf(r->trail + n, sizeof r->trail - n, fmt, ap);
        va_end(ap);
        n = strlen(r->trail);
        if (n + 1 < sizeof r->trail)
            strcat(r->trail, ";");
    }
    pthread_mutex_unlock(&trail_mu);
}

static void describe(struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void describe(struct rec *r, const char *fmt, ...)
{
    size_t len = strlen(r->what);
    va_list ap;

    if (len + 2 >= sizeof r->what)
        return;
    r->what[len++] = ',';
    r->what[len++] = ' ';
    r->what[len] = '\0';
    va_start(ap, fmt);
    vsnprintf(r->what + len, sizeof r->what - len, fmt, ap);
    va_end(ap);
}

static bool is_terminal(int32_t s)
{
    return s == BGJOB_STATE_COMPLETED || s == BGJOB_STATE_FAILED || s == BGJOB_STATE_CANCELLED;
}

/* INVALID_HANDLE is right for a job only once its release began. */
static bool invalid_ok(struct rec *r)
{
    return atomic_load(&r->release_claim) || atomic_load(&r->released) || atomic_load(&r->detached);
}

/* A callback of a job with references gets the creator's handle while the
 * creator holds it; the creator may release it during the call (a non-last
 * release is allowed in every state), and the handle then answers
 * INVALID_HANDLE for the rest of the call, as the header says of the
 * completion, event, control and finalize callbacks. Counted. */
static atomic_long n_lent_handle_died;

static bool lent_handle_died(struct rec *r, int32_t rc)
{
    if (rc != BGJOB_RESULT_INVALID_HANDLE || !atomic_load(&r->creator_going))
        return false;
    atomic_fetch_add(&n_lent_handle_died, 1);
    return true;
}

#define RC(x) (1u << (BGJOB_RESULT_##x))

static void expect(struct rec *r, const char *what, int32_t rc, unsigned allowed)
{
    if (rc == BGJOB_RESULT_INVALID_HANDLE && r != NULL && invalid_ok(r))
        return;
    if (rc < 0 || rc >= 32 || !(allowed & (1u << rc))) {
        if (r != NULL)
            violation(V_RESULT, "job %" PRIu64 " [%s]: %s returned %d (%s)", r->serial, r->what,
                      what, rc, bgjob_result_str(rc));
        else
            violation(V_RESULT, "%s returned %d (%s)", what, rc, bgjob_result_str(rc));
    }
}

static const char *ctl_name(int what);

/* Some call saw the job terminal. From now on no hook or finalizer of it may
 * run or still be running. (Dekker order: the flag is set before the inside
 * counters are read; the callbacks raise their counter before reading it.) */
static void observe(struct rec *r, int32_t state, const char *by)
{
    int expected = -1;

    if (!is_terminal(state))
        return;
    if (!atomic_compare_exchange_strong(&r->terminal, &expected, state) && expected != state)
        violation(V_STATE, "job %" PRIu64 " [%s]: seen %s, then %s (by %s)", r->serial, r->what,
                  bgjob_state_str(expected), bgjob_state_str(state), by);
    atomic_store(&r->observed, 1);
    if (atomic_load(&r->hooks_inside) > 0)
        violation(V_HOOK_AFTER_END,
                  "job %" PRIu64 " [%s]: %s saw it %s while a cancel hook of it was running",
                  r->serial, r->what, by, bgjob_state_str(state));
    if (atomic_load(&r->fin_inside) > 0)
        violation(V_FIN_AFTER_END,
                  "job %" PRIu64 " [%s]: %s saw it %s while its commit/abort/clean was running",
                  r->serial, r->what, by, bgjob_state_str(state));
    /* The end waits for a control call on another thread; one that ended
     * the job from inside itself (ctl_ending) may still be returning. */
    int ending = atomic_load(&r->ctl_ending);
    if (atomic_load(&r->ctl_inside) - ending > 0)
        violation(V_CONTROL, "job %" PRIu64 " [%s]: %s saw it %s while its control callback was running "
                  "(last told: %s; %d of its calls on this thread, %s, which is in '%s')",
                  r->serial, r->what, by, bgjob_state_str(state), ctl_name(atomic_load(&r->ctl_last)),
                  tl_ctl_rec == r ? tl_ctl_n : 0, role_names[tl_role], tl_ctl_rec == r ? tl_ctl_step : "-");
}

/* A non-terminal state read by a call that began after the job was seen terminal. */
static void observe_nonterminal(struct rec *r, int32_t state, bool was_observed, const char *by)
{
    if (was_observed && !is_terminal(state))
        violation(V_STATE, "job %" PRIu64 " [%s]: %s saw %s after it was seen %s", r->serial,
                  r->what, by, bgjob_state_str(state), bgjob_state_str(atomic_load(&r->terminal)));
}

/* ---- the registry: live handles any callback may target ---------------------------- */

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rec *reg[REG_SLOTS];
static atomic_ullong reg_rng = 12345;

static void reg_add(struct rec *r)
{
    uint64_t x = atomic_fetch_add(&reg_rng, 0x9e3779b97f4a7c15ull);
    unsigned i = (unsigned)(splitmix(&x) % REG_SLOTS);

    pthread_mutex_lock(&reg_mu);
    reg[i] = r; /* overwrite: the registry is a sample, not a list */
    pthread_mutex_unlock(&reg_mu);
}

static void reg_del(struct rec *r)
{
    pthread_mutex_lock(&reg_mu);
    for (int i = 0; i < REG_SLOTS; i++)
        if (reg[i] == r)
            reg[i] = NULL;
    pthread_mutex_unlock(&reg_mu);
}

static struct rec *reg_pick(void)
{
    uint64_t x = atomic_fetch_add(&reg_rng, 0x9e3779b97f4a7c15ull);
    unsigned i = (unsigned)(splitmix(&x) % REG_SLOTS);
    struct rec *r;

    pthread_mutex_lock(&reg_mu);
    r = reg[i];
    pthread_mutex_unlock(&reg_mu);
    return r;
}

static void check_entry(const bgjob_job_entry *e, const char *by)
{
    if (e->state < 0 || e->state >= BGJOB_STATE_COUNT)
        violation(V_LIST, "%s gave state %d", by, e->state);
    if (e->cancel_requested != (e->cancel_cause != BGJOB_CANCEL_CAUSE_NONE))
        violation(V_LIST, "%s: job %" PRIu64 " ('%s'): cancel_requested %d with cause %d", by, e->id,
                  e->name, e->cancel_requested, e->cancel_cause);
    if (memchr(e->name, '\0', sizeof e->name) == NULL || memchr(e->phase, '\0', sizeof e->phase) == NULL ||
        memchr(e->operation, '\0', sizeof e->operation) == NULL || memchr(e->owner, '\0', sizeof e->owner) == NULL)
        violation(V_LIST, "%s: job %" PRIu64 ": a text field is not NUL-terminated", by, e->id);
    /* Our jobs carry their class as the operation and "fz-owner-<serial>". */
    if (strncmp(e->name, "fz-", 3) == 0 && strncmp(e->name, "fz-rit", 6) != 0) {
        const char *dash = strchr(e->name + 3, '-');
        size_t digits = dash != NULL ? (size_t)(dash - e->name - 3) : 0;
        if (dash != NULL && strcmp(dash + 1, e->operation) != 0)
            violation(V_LIST, "%s: job '%s' listed with operation '%s'", by, e->name, e->operation);
        if (dash != NULL && (strncmp(e->owner, "fz-owner-", 9) != 0 ||
                             strncmp(e->owner + 9, e->name + 3, digits) != 0 || e->owner[9 + digits] != '\0'))
            violation(V_LIST, "%s: job '%s' listed with owner '%s'", by, e->name, e->owner);
    }
}

/* bgjob_list_jobs_sized with a stride longer than the entry: the bytes
 * past it stay untouched; sizes it cannot use are refused. */
static void list_sized(uint64_t x)
{
    enum { N = 12, PAD = 24 };
    uint64_t buf[N * (sizeof(bgjob_job_entry) + PAD) / 8 + 1]; /* not static: a log callback
                                                                  * run inside the call lists too */
    size_t es = sizeof(bgjob_job_entry), stride = es + 8 * (x % 4), n = 0;
    unsigned char *b = (unsigned char *)buf;
    int32_t rc;

    memset(buf, 0xa5, sizeof buf);
    rc = API(bgjob_list_jobs_sized((bgjob_job_entry *)(void *)buf, stride, N, &n));
    expect(NULL, "list_jobs_sized", rc, RC(OK));
    for (size_t i = 0; rc == BGJOB_RESULT_OK && i < n && i < N; i++) {
        check_entry((const bgjob_job_entry *)(const void *)(b + i * stride), "list_jobs_sized");
        for (size_t k = es; k < stride; k++)
            if (b[i * stride + k] != 0xa5) {
                violation(V_LIST, "list_jobs_sized (stride %zu) wrote byte %zu of entry %zu, past the "
                          "entry's %zu bytes", stride, k, i, es);
                break;
            }
    }
    if (n < N)
        for (size_t k = n * stride; k < N * stride; k++)
            if (b[k] != 0xa5) {
                violation(V_LIST, "list_jobs_sized wrote past its %zu entries (byte %zu)", n, k);
                break;
            }
    if ((x >> 3) % 4 == 0) {
        rc = API(bgjob_list_jobs_sized((bgjob_job_entry *)(void *)buf, es + 4, N, &n));
        expect(NULL, "list_jobs_sized (an entry size not a multiple of 8)", rc, RC(INVALID_ARGUMENT));
        rc = API(bgjob_list_jobs_sized((bgjob_job_entry *)(void *)buf, 8, N, &n));
        expect(NULL, "list_jobs_sized (an entry of 8 bytes)", rc, RC(INVALID_ARGUMENT));
        rc = API(bgjob_list_jobs_sized(NULL, es, 0, &n));
        expect(NULL, "list_jobs_sized (count only)", rc, RC(OK));
    }
}

/* Lists every job: takes each job's lock inside bgjob. */
static void list_all(void)
{
    bgjob_job_entry e[16];
    size_t n = 0;
    static atomic_ullong lx = 1;
    uint64_t x = atomic_fetch_add(&lx, 0x9e3779b97f4a7c15ull);

    if (enabled[S_LIST] && (splitmix(&x) & 1)) {
        list_sized(splitmix(&x));
        return;
    }
    int32_t rc = API(bgjob_list_jobs(e, 16, &n));

    expect(NULL, "list_jobs", rc, RC(OK));
    for (size_t i = 0; i < n && i < 16; i++) {
        if (e[i].state < 0 || e[i].state >= BGJOB_STATE_COUNT)
            violation(V_STATE, "list_jobs gave state %d", e[i].state);
        if (enabled[S_LIST])
            check_entry(&e[i], "list_jobs");
    }
}

/* A callback touches some other job: reads it, maybe cancels it. */
static void poke_other(uint64_t *rng, bool may_cancel)
{
    struct rec *o = reg_pick();
    bgjob_job *h;

    if (o == NULL)
        return;
    h = atomic_load(&o->h);
    if (h == NULL)
        return;
    if (may_cancel && chance(rng, 3)) {
        int32_t st = -1;
        struct rec *saved = tl_call_rec;
        atomic_fetch_add(&o->cancels, 1);
        tl_call_rec = o;
        int32_t rc = API(bgjob_job_cancel(h, &st));
        tl_call_rec = saved;
        /* The registry may hand out a job that was released meanwhile. */
        if (rc != BGJOB_RESULT_INVALID_HANDLE)
            expect(o, "cancel (of another job, from a callback)", rc, RC(OK));
    } else {
        bgjob_info info = {.struct_size = sizeof info};
        bool was = atomic_load(&o->observed);
        int32_t rc = API(bgjob_job_get_info(h, &info));
        if (rc == BGJOB_RESULT_OK) {
            if (info.id != o->id)
                violation(V_HANDLE, "job %" PRIu64 " [%s]: get_info gave id %" PRIu64 ", not %" PRIu64,
                          o->serial, o->what, info.id, o->id);
            observe(o, info.state, "get_info (from a callback)");
            observe_nonterminal(o, info.state, was, "get_info (from a callback)");
        } else if (rc != BGJOB_RESULT_INVALID_HANDLE) {
            expect(o, "get_info (of another job, from a callback)", rc, RC(OK));
        }
    }
}

/* ---- callbacks ------------------------------------------------------------------- */

/* User code must never run on the timer thread (internal-thread): a hook or
 * finalizer on a thread that never ran a worker, is none of ours, and is not
 * named after one of our jobs ("fz-...": a job thread, or a pool thread
 * running a deadline's cancel for that job) is on bgjob's own. */
static void check_user_thread(struct rec *r, const char *what)
{
    if (tl_role == ROLE_NONE && tl_depth <= 1) {
        char name[32] = "?";
        pthread_getname_np(pthread_self(), name, sizeof name);
        if (strncmp(name, "fz-", 3) != 0)
            violation(V_INTERNAL_THREAD,
                      "job %" PRIu64 " [%s]: its %s ran on bgjob-internal thread '%s' (not a "
                      "job's thread, not a caller)",
                      r->serial, r->what, what, name);
    }
}

static void nested_job(uint64_t *rng);
#define ORPHANS 16
static struct rec *orphan_swap(unsigned i, struct rec *r);
static void reap_orphan(struct rec *o, uint64_t *rng);

static void hook_fn(void *userdata, bgjob_job *job)
{
    struct token *t = userdata;
    struct hookrec *hk = t->hk;
    struct rec *r = t->r;
    uint64_t rng = r->rng_seed ^ (uint64_t)atomic_load(&hk->id);
    bool released;

    tl_depth++;
    atomic_fetch_add(&r->hooks_inside, 1);
    atomic_fetch_add(&hk->inside, 1);
    released = atomic_load(&r->destroyed); /* a detached job lives on: its handle is just gone */
    if (atomic_load(&r->observed))
        violation(V_HOOK_AFTER_END,
                  "job %" PRIu64 " [%s]: a cancel hook started after the job was seen %s%s",
                  r->serial, r->what, bgjob_state_str(atomic_load(&r->terminal)),
                  released ? " and destroyed" : "");
    if (atomic_fetch_add(&hk->calls, 1) != 0)
        violation(V_ONCE, "job %" PRIu64 " [%s]: a hook ran twice", r->serial, r->what);
    if (atomic_load(&hk->removed_ok))
        violation(V_ONCE, "job %" PRIu64 " [%s]: a hook ran after its removal returned OK",
                  r->serial, r->what);
    atomic_fetch_add(&r->hook_calls, 1);
    check_user_thread(r, "cancel hook");
    /* Widen the window a worker that returns at once leaves open. */
    if (r->hook_sleep_us > 0)
        sleep_us(r->hook_sleep_us);
    {
        int32_t st = -1;
        int32_t rc = API(bgjob_job_get_state(job, &st));
        if (rc == BGJOB_RESULT_OK && is_terminal(st))
            violation(V_HOOK_AFTER_END, "job %" PRIu64 " [%s]: a cancel hook runs while the job is %s",
                      r->serial, r->what, bgjob_state_str(st));
        else if (rc == BGJOB_RESULT_INVALID_HANDLE && atomic_load(&r->destroyed))
            violation(V_HOOK_AFTER_END,
                      "job %" PRIu64 " [%s]: a cancel hook runs after bgjob_job_destroy returned",
                      r->serial, r->what);
    }
    if (enabled[S_REENTER]) {
        switch (below(&rng, 4)) {
        case 0:
            list_all();
            break;
        case 1: {
            int32_t st = -1;
            int32_t rc = API(bgjob_job_cancel(job, &st));
            if (rc == BGJOB_RESULT_OK && st == BGJOB_CANCEL_STATUS_REQUESTED)
                violation(V_STATE, "job %" PRIu64 " [%s]: a cancel from inside its hook was the first",
                          r->serial, r->what);
            break;
        }
        case 2:
            poke_other(&rng, true);
            reap_orphan(orphan_swap(below(&rng, ORPHANS), NULL), &rng);
            cancel_own_txn(r);
            break;
        default: {
            /* A hook run at once by add_cancel_hook (cancel already
             * requested) does not know its id yet: 0, one bgjob never gives,
             * so NOT_FOUND at once. Two such hooks of one job on two threads
             * each removing "0" once waited for each other for ever (see
             * hook0 in the header comment): only with hook0 on. */
            if (atomic_load(&hk->id) == 0 && !enabled[S_HOOK0])
                break;
            if (atomic_load(&hk->id) == 0)
                sleep_us(2000); /* hook0: let the other at-once hook get here too */
            int32_t rc = API(bgjob_job_remove_cancel_hook(job, atomic_load(&hk->id)));
            if (rc != BGJOB_RESULT_NOT_FOUND && rc != BGJOB_RESULT_INVALID_HANDLE)
                expect(r, "remove_cancel_hook (from inside itself)", rc, RC(NOT_FOUND));
            break;
        }
        }
    }
    atomic_fetch_sub(&hk->inside, 1);
    atomic_fetch_sub(&r->hooks_inside, 1);
    tl_depth--;
}

static struct hookrec *add_hook(struct rec *r, bgjob_job *job)
{
    struct hookrec *hk = calloc(1, sizeof *hk);
    uint64_t id = 0;
    int32_t rc;

    if (hk == NULL)
        abort();
    hk->r = r;
    PUSH(all_hooks, n_hookrecs, cap_hookrecs, hk);
    atomic_fetch_add(&r->hook_regs, 1);
    step("add_cancel_hook (it may run at once)", r);
    rc = API(bgjob_job_add_cancel_hook(job, hook_fn, token_new(TK_HOOK, r, hk), token_free, &id));
    atomic_store(&hk->id, id);
    expect(r, "add_cancel_hook", rc, RC(OK) | RC(CANCELLED) | RC(NOT_ALLOWED));
    if (rc == BGJOB_RESULT_CANCELLED && atomic_load(&hk->calls) != 1)
        violation(V_ONCE, "job %" PRIu64 " [%s]: add_cancel_hook said CANCELLED, hook did not run",
                  r->serial, r->what);
    if (rc != BGJOB_RESULT_OK && atomic_load(&hk->frees) != 1)
        violation(V_ONCE, "job %" PRIu64 " [%s]: a hook that ran at once or was refused was not freed",
                  r->serial, r->what);
    return rc == BGJOB_RESULT_OK ? hk : NULL;
}

static void fin_cb(struct rec *r, bgjob_job *job, int which)
{
    static const char *const names[] = {"commit", "abort", "clean"};
    uint64_t rng = r->rng_seed + (uint64_t)which;

    tl_depth++;
    atomic_fetch_add(&r->fin_inside, 1);
    if (atomic_load(&r->observed))
        violation(V_FIN_AFTER_END, "job %" PRIu64 " [%s]: %s ran after the job was seen %s",
                  r->serial, r->what, names[which], bgjob_state_str(atomic_load(&r->terminal)));
    if (atomic_load(&r->comp_calls))
        violation(V_FIN_AFTER_END, "job %" PRIu64 " [%s]: %s ran after its completion", r->serial,
                  r->what, names[which]);
    check_user_thread(r, names[which]);
    if (which == 0 && atomic_fetch_add(&r->commits, 1) != 0)
        violation(V_ONCE, "job %" PRIu64 " [%s]: commit ran twice", r->serial, r->what);
    if (which == 1 && atomic_fetch_add(&r->aborts, 1) != 0)
        violation(V_ONCE, "job %" PRIu64 " [%s]: abort ran twice", r->serial, r->what);
    if (which == 2) {
        if (atomic_fetch_add(&r->cleans, 1) != 0)
            violation(V_ONCE, "job %" PRIu64 " [%s]: clean ran twice", r->serial, r->what);
        if (atomic_load(&r->commits) + atomic_load(&r->aborts) != 1)
            violation(V_TXN, "job %" PRIu64 " [%s]: clean ran after %d commits and %d aborts",
                      r->serial, r->what, atomic_load(&r->commits), atomic_load(&r->aborts));
    }
    if (atomic_load(&r->commits) && atomic_load(&r->aborts))
        violation(V_TXN, "job %" PRIu64 " [%s]: both commit and abort ran", r->serial, r->what);
    {
        int32_t st = -1;
        int32_t rc = API(bgjob_job_get_state(job, &st));
        if (rc == BGJOB_RESULT_OK && is_terminal(st))
            violation(V_FIN_AFTER_END, "job %" PRIu64 " [%s]: %s runs while the job is %s",
                      r->serial, r->what, names[which], bgjob_state_str(st));
    }
    if (enabled[S_REENTER]) {
        if (chance(&rng, 2))
            list_all();
        if (chance(&rng, 3))
            poke_other(&rng, true);
        if (chance(&rng, 6))
            reap_orphan(orphan_swap(below(&rng, ORPHANS), NULL), &rng);
        if (chance(&rng, 4)) {
            /* Being finalized: a finalize from inside is refused. */
            int32_t rc = API(bgjob_job_finalize(job));
            if (rc != BGJOB_RESULT_NOT_ALLOWED &&
                !(rc == BGJOB_RESULT_INVALID_HANDLE && invalid_ok(r)))
                violation(V_RESULT, "job %" PRIu64 " [%s]: bgjob_job_finalize from its own %s returned %s",
                          r->serial, r->what, names[which], bgjob_result_str(rc));
        }
        if (chance(&rng, 6))
            cancel_own_txn(r);
    }
    atomic_fetch_sub(&r->fin_inside, 1);
    tl_depth--;
}

static void commit_cb(void *ud, bgjob_job *job) { fin_cb(((struct token *)ud)->r, job, 0); }
static void abort_cb(void *ud, bgjob_job *job) { fin_cb(((struct token *)ud)->r, job, 1); }
static void clean_cb(void *ud, bgjob_job *job) { fin_cb(((struct token *)ud)->r, job, 2); }

static void release_job(struct rec *r, bool detach, uint32_t flags);
static void check_kids_ended(struct rec *r, const char *by);
static bool is_ender(struct rec *r);
static void ref_roundtrip(struct rec *r, bgjob_job *h, const char *where);
static void release_ref(struct rec *r, bgjob_job *h, int how, const char *where);

static void completion(void *userdata, bgjob_job *job, int32_t state)
{
    struct token *t = userdata;
    struct rec *r = t->r;
    uint64_t rng = r->rng_seed ^ 0xc0ffeeull;
    struct txnrec *tx = txn_of(r, true);

    tl_depth++;
    atomic_fetch_add(&r->comp_inside, 1);
    if (atomic_fetch_add(&r->comp_calls, 1) != 0)
        violation(V_ONCE, "job %" PRIu64 " [%s]: completion ran twice", r->serial, r->what);
    if (!is_terminal(state))
        violation(V_STATE, "job %" PRIu64 " [%s]: completion with non-terminal state %s", r->serial,
                  r->what, bgjob_state_str(state));
    observe(r, state, "its completion");
    if (r->has_ev && atomic_load(&r->ev_ends) != 1)
        violation(V_EVENT, "job %" PRIu64 " [%s]: completion (%s) after %d END events, not 1", r->serial,
                  r->what, bgjob_state_str(state), atomic_load(&r->ev_ends));
    check_kids_ended(r, "its completion");
    /* bgjob_job_end is the worker's return, not a call that ends the job:
     * made from a callback run inside another call on the job (an event or
     * control callback inside a cancel), the completion follows there. */
    if ((tl_call_rec == r && !(r->ext && is_ender(r))) || (tx != NULL && tl_call_txn == tx))
        violation(V_COMPLETION_THREAD,
                  "job %" PRIu64 " [%s]: completion ran inside the call that ended the job",
                  r->serial, r->what);
    if (r->comp_ctx) {
        if (tl_role != ROLE_DISPATCHER)
            violation(V_COMPLETION_THREAD,
                      "job %" PRIu64 " [%s]: context completion ran on %s, not the dispatcher",
                      r->serial, r->what, role_names[tl_role]);
    } else if (tx != NULL) {
        /* A transaction member's completion comes only once every member
         * is terminal (so it may wait for a sibling), on a bgjob thread:
         * the settling member's worker thread or one of its own, never one
         * after another on a sibling's worker before the sibling ended
         * (completion-thread: a completion waiting for a sibling deadlocked). */
        int nm = atomic_load(&tx->nm);
        for (int i = 0; i < nm; i++) {
            struct rec *sib = tx->m[i];
            bgjob_job *sh = sib != NULL && sib != r ? atomic_load(&sib->h) : NULL;
            int32_t st = -1;
            if (sh == NULL || API(bgjob_job_get_state(sh, &st)) != BGJOB_RESULT_OK)
                continue; /* released: it ended, or its owner gave it up */
            observe(sib, st, "a sibling's completion (get_state)");
            if (!is_terminal(st))
                violation(V_COMPLETION_THREAD,
                          "job %" PRIu64 " [%s]: its completion (state %s) runs while sibling %" PRIu64
                          " is %s (it runs on %s; the sibling's worker ran %d returned %d, %d "
                          "cancels, commit %d abort %d clean %d, %s)",
                          r->serial, r->what, bgjob_state_str(state), sib->serial,
                          bgjob_state_str(st),
                          tl_role == ROLE_WORKER ? "a worker thread" : role_names[tl_role],
                          atomic_load(&sib->runs), atomic_load(&sib->returns),
                          atomic_load(&sib->cancels), atomic_load(&sib->commits),
                          atomic_load(&sib->aborts), atomic_load(&sib->cleans),
                          atomic_load(&sib->detached) ? "detached" : "kept");
        }
        if (tl_role != ROLE_NONE && tl_role != ROLE_WORKER)
            violation(V_COMPLETION_THREAD,
                      "job %" PRIu64 " [%s]: completion (no context) ran on %s, not a bgjob thread",
                      r->serial, r->what, role_names[tl_role]);
    } else if (atomic_load(&r->kid_tries) > 0 && r->ext) {
        /* An external parent: the thread that ended it, or one of its own
         * once its last sub-job ended; only never inside a call on it
         * (checked above). */
    } else if (atomic_load(&r->kid_tries) > 0) {
        /* A parent (one that tried to make a sub-job: a child's create may
         * link it and the child end before the create returns and is
         * counted): on its worker's thread, or, when its last sub-job ended
         * after its worker returned, a bgjob thread of its own named after it
         * -- never a caller's thread. */
        bool own = atomic_load(&r->started_thread_set) && pthread_equal(pthread_self(), r->wthread);
        char tname[32] = "?";
        pthread_getname_np(pthread_self(), tname, sizeof tname);
        if (!own && ((tl_role != ROLE_NONE && tl_role != ROLE_WORKER) || strncmp(tname, "fz-", 3) != 0))
            violation(V_COMPLETION_THREAD,
                      "job %" PRIu64 " [%s]: parent's completion (no context) ran on %s ('%s'), "
                      "neither its worker's thread nor a bgjob thread of its own",
                      r->serial, r->what, role_names[tl_role], tname);
    } else if (r->ext) {
        /* bgjob_job_end is the worker's return: its caller's thread (or,
         * ended from an event callback, that thread after it returned);
         * a job that never started: a bgjob thread. */
        bool ender = is_ender(r);
        atomic_store(&r->comp_ender, ender ? 1 : 2); /* checked at the end, once end_ok is known */
        if (!ender && tl_role != ROLE_NONE && tl_role != ROLE_WORKER)
            violation(V_COMPLETION_THREAD,
                      "job %" PRIu64 " [%s]: external job's completion (no context) ran on %s, which "
                      "never called bgjob_job_end on it", r->serial, r->what, role_names[tl_role]);
    } else if (atomic_load(&r->runs) > 0) {
        /* Without a context: a job whose worker's return ended it gets it on
         * its worker's thread, right after the worker returned; one ended by
         * a call (manual finalize: finalize, a cancel while PENDING, detach)
         * on a bgjob thread of its own -- never on a caller's thread. */
        bool own = atomic_load(&r->started_thread_set) && pthread_equal(pthread_self(), r->wthread);
        bool bgjob_thread = r->manual && (tl_role == ROLE_NONE || tl_role == ROLE_WORKER);
        /* A sub-job tree's node that never tried to make a child, on a
         * bgjob thread not its worker's: none seen since parents are told
         * by kid_tries (a child's create may link it, and the child end,
         * before the create returns and nkids counts it); still counted
         * rather than failed, and reported. */
        if (!own && r->scn == S_SUBJOBS && (tl_role == ROLE_NONE || tl_role == ROLE_WORKER)) {
            if (atomic_fetch_add(&n_subjob_comp_elsewhere, 1) == 0) {
                char tname[32] = "?";
                pthread_getname_np(pthread_self(), tname, sizeof tname);
                snprintf(subjob_comp_example, sizeof subjob_comp_example,
                         "job %" PRIu64 " [%s] on '%s': %s, %s, cancels %d, pauses %d, %d sub-jobs, "
                         "%d creates under it refused", r->serial, r->what, tname,
                         bgjob_state_str(state), atomic_load(&r->detached) ? "detached" : "kept",
                         atomic_load(&r->cancels), atomic_load(&r->pauses_ok), atomic_load(&r->nkids),
                         atomic_load(&r->kid_refused));
            }
            bgjob_thread = true;
        }
        if (!own && !bgjob_thread) {
            char tname[32] = "?";
            pthread_getname_np(pthread_self(), tname, sizeof tname);
            violation(V_COMPLETION_THREAD,
                      "job %" PRIu64 " [%s]: completion (no context) ran on %s ('%s'), not on its own "
                      "worker's thread%s (cancel requested %d times, %d sub-jobs made, %d creates under "
                      "it refused, parent %" PRIu64 ")",
                      r->serial, r->what,
                      tl_role == ROLE_WORKER ? "another job's worker thread" : role_names[tl_role], tname,
                      r->manual ? " nor a bgjob thread" : "", atomic_load(&r->cancels),
                      atomic_load(&r->nkids), atomic_load(&r->kid_refused), r->parent ? r->parent->serial : 0);
        }
    }
    if (r->has_fin && atomic_load(&r->runs) > 0 &&
        (atomic_load(&r->commits) + atomic_load(&r->aborts) != 1 || atomic_load(&r->cleans) != 1))
        violation(V_TXN,
                  "job %" PRIu64 " [%s]: completion (%s) after %d commits, %d aborts, %d cleans",
                  r->serial, r->what, bgjob_state_str(state), atomic_load(&r->commits),
                  atomic_load(&r->aborts), atomic_load(&r->cleans));
    if (r->has_fin && state == BGJOB_STATE_COMPLETED && atomic_load(&r->commits) != 1)
        violation(V_TXN, "job %" PRIu64 " [%s]: COMPLETED without its commit", r->serial, r->what);
    {
        int32_t st = -1;
        int32_t rc = API(bgjob_job_get_state(job, &st));
        if (!lent_handle_died(r, rc))
            expect(r, "get_state (in its completion)", rc, RC(OK));
        if (rc == BGJOB_RESULT_OK && st != state)
            violation(V_STATE, "job %" PRIu64 " [%s]: completion says %s, get_state %s", r->serial,
                      r->what, bgjob_state_str(state), bgjob_state_str(st));
    }
    /* A transaction member waits for a sibling: the header lets it call any
     * bgjob function, and its own job is over. */
    if (r->sibling_wait && tx != NULL && atomic_load(&tx->nm) > 1) {
        struct rec *sib = tx->m[(r->member + 1) % atomic_load(&tx->nm)];
        bgjob_job *sh = atomic_load(&sib->h);
        if (sib != r && sh != NULL) {
            int32_t st = -1;
            int32_t rc = API(bgjob_job_wait(sh, 600000, &st));
            if (rc == BGJOB_RESULT_OK)
                observe(sib, st, "a sibling's completion (wait)");
            else if (rc != BGJOB_RESULT_INVALID_HANDLE)
                expect(sib, "wait (for a sibling, in a completion)", rc, RC(OK));
        }
    }
    /* References: the handle is valid for the call (the creator's, or one
     * made for it); the other owners' handles left here are released now
     * (each not the last: the actor keeps one until all are). */
    if (r->scn == S_REFS) {
        ref_roundtrip(r, job, "in its completion");
        int ns = atomic_load(&r->nstash);
        for (int i = 0; i < ns; i++) {
            bgjob_job *sh = atomic_exchange(&r->stash[i], NULL);
            if (sh != NULL)
                release_ref(r, sh, (int)below(&rng, 3) == 2 ? 1 : 0, "in its completion");
        }
    }
    if (enabled[S_REENTER] && !r->nested) {
        if (chance(&rng, 2))
            list_all();
        if (chance(&rng, 3))
            poke_other(&rng, true);
        if (chance(&rng, 8))
            nested_job(&rng);
        if (chance(&rng, 8))
            reap_orphan(orphan_swap(below(&rng, ORPHANS), NULL), &rng);
        if (chance(&rng, 6))
            cancel_own_txn(r);
    }
    atomic_fetch_sub(&r->comp_inside, 1);
    atomic_store(&r->comp_done, 1);
    if (r->self_destroy) {
        /* The completion may come before create returned the handle. */
        bgjob_job *none = NULL;
        atomic_compare_exchange_strong(&r->h, &none, job);
        release_job(r, false, 0);
    }
    tl_depth--;
}

static void line_cb(void *ud, bgjob_job *job, int32_t stream, const char *line, size_t len)
{
    struct token *t = ud;

    (void)job;
    if (t == NULL || t->magic != TOKEN_MAGIC || t->kind != TK_LINE)
        violation(V_ONCE, "a line callback got a bad token");
    else if (stream != BGJOB_CHILD_STDOUT || len == 0 || line[len] != '\0')
        violation(V_RESULT, "job %" PRIu64 ": line callback stream %d len %zu", t->r->serial,
                  stream, len);
}

/* ---- the driver-grade model: control and event callbacks, handles, statistics ----- */

static const char *ctl_name(int what)
{
    static const char *const names[] = {"CANCEL", "PAUSE", "RESUME", "COMPLETE", "SET_SPEED"};
    return what >= 0 && what < 5 ? names[what] : "unknown";
}

static int ctl_total(struct rec *r)
{
    int n = 0;

    for (int i = 0; i < 5; i++)
        n += atomic_load(&r->ctl_calls[i]);
    return n;
}

/* The threads that called bgjob_job_end on r: a completion without a
 * context runs on one of them (it is the worker's return). */
static bool is_ender(struct rec *r)
{
    int n = atomic_load(&r->n_enders);

    for (int i = 0; i < n && i < 8; i++)
        if (pthread_equal(atomic_load(&r->enders[i]), pthread_self()))
            return true;
    return false;
}

static void add_ender(struct rec *r)
{
    if (is_ender(r))
        return;
    int i = atomic_fetch_add(&r->n_enders, 1);
    if (i < 8)
        atomic_store(&r->enders[i], pthread_self());
}

/* bgjob_job_end by the owner (any thread, callbacks included): exactly one
 * success per job. Not a call that "ended the job" for the completion's
 * rule: it is the worker's return, so the completion may run inside it. */
static int32_t ext_end(struct rec *r, bgjob_job *h, int32_t code, const char *by)
{
    struct rec *saved = tl_call_rec;
    int32_t rc;

    bool in_ctl = tl_ctl_rec == r && tl_ctl_n > 0 && !tl_ctl_ended;

    add_ender(r);
    /* Ending from inside its own control calls: those (on this thread) may
     * still run when the end is seen. Counted before the end is published. */
    if (in_ctl) {
        atomic_fetch_add(&r->ctl_ending, tl_ctl_n);
        tl_ctl_ended = true;
    }
    tl_call_rec = NULL;
    step("bgjob_job_end", r);
    rc = API(bgjob_job_end(h, code, code == 0 ? NULL : "fuzz: ended by its owner"));
    trail_add(r, "end by %s: %d", by, rc);
    tl_call_rec = saved;
    if (in_ctl && rc != BGJOB_RESULT_OK) {
        atomic_fetch_sub(&r->ctl_ending, tl_ctl_n);
        tl_ctl_ended = false;
    }
    if (rc == BGJOB_RESULT_OK) {
        if (in_ctl)
            atomic_store(&r->end_in_ctl, 1);
        if (atomic_fetch_add(&r->end_ok, 1) != 0)
            violation(V_CONTROL, "job %" PRIu64 " [%s]: bgjob_job_end succeeded twice (the second: %s)",
                      r->serial, r->what, by);
        r->end_thread = pthread_self();
        atomic_store(&r->end_by, by);
        atomic_store(&r->end_done, 1);
    } else {
        int32_t st = -1;
        /* From a callback lent the creator's handle, released during the
         * call: INVALID_HANDLE, as the header says. */
        if (!lent_handle_died(r, rc))
            expect(r, by, rc, RC(NOT_ALLOWED));
        bgjob_job_get_state(h, &st);
        atomic_store(&r->end_refused_state, st);
        atomic_store(&r->end_refused_by, by);
    }
    return rc;
}

/* A released handle: every call on it is INVALID_HANDLE, whatever other
 * references of the job (or later jobs) live. */
static void stale_check(struct rec *r, bgjob_job *h, const char *how)
{
    int32_t st = -1, rc;
    uint64_t id = 0;
    bgjob_job *x = NULL;

#define STALE(call, call_name)                                                                   \
    do {                                                                                         \
        rc = API(call);                                                                          \
        if (rc != BGJOB_RESULT_INVALID_HANDLE)                                                   \
            violation(V_REF, "job %" PRIu64 " [%s]: %s on a handle released by %s returned %s", \
                      r->serial, r->what, call_name, how, bgjob_result_str(rc));                 \
    } while (0)
    STALE(bgjob_job_get_state(h, &st), "get_state");
    STALE(bgjob_job_get_id(h, &id), "get_id");
    STALE(bgjob_job_cancel(h, NULL), "cancel");
    STALE(bgjob_job_ref(h, &x), "ref");
    STALE(bgjob_job_destroy(h), "destroy");
#undef STALE
    if (x != NULL && rc == BGJOB_RESULT_OK)
        bgjob_job_destroy(x);
}

/* Releases a handle that is not the job's last one: OK in every state. */
static void release_ref(struct rec *r, bgjob_job *h, int how, const char *where)
{
    int32_t rc;
    char by[96];

    if (how == 2)
        atomic_fetch_add(&r->cancels, 1);
    rc = how == 0 ? API(bgjob_job_destroy(h)) : API(bgjob_job_detach(h, how == 2 ? BGJOB_DETACH_CANCEL : 0));
    snprintf(by, sizeof by, "%s %s", how == 0 ? "destroy" : how == 1 ? "detach" : "detach+cancel", where);
    if (rc != BGJOB_RESULT_OK)
        violation(V_REF, "job %" PRIu64 " [%s]: %s of a handle that is not the last returned %s",
                  r->serial, r->what, by, bgjob_result_str(rc));
    else if (!(how != 0 && r->ext && !atomic_load(&r->end_done)))
        /* (A detached handle of an external job its owner has not ended
         * lives until bgjob_job_end returns: its owner may end it by it.) */
        stale_check(r, h, by);
    atomic_fetch_add(&r->refs_released, 1);
}

/* Takes a reference and releases it at once: a new handle naming the same job. */
static void ref_roundtrip(struct rec *r, bgjob_job *h, const char *where)
{
    bgjob_job *x = NULL;
    uint64_t id = 0;
    int32_t rc = API(bgjob_job_ref(h, &x));

    if (rc != BGJOB_RESULT_OK) {
        /* A callback gets the creator's handle while the creator holds it:
         * the creator's release during the call invalidates it. */
        if (!(rc == BGJOB_RESULT_INVALID_HANDLE && invalid_ok(r)) && !lent_handle_died(r, rc))
            violation(V_REF, "job %" PRIu64 " [%s]: bgjob_job_ref %s returned %s", r->serial, r->what,
                      where, bgjob_result_str(rc));
        return;
    }
    if (x == h)
        violation(V_REF, "job %" PRIu64 " [%s]: bgjob_job_ref %s gave the same handle value", r->serial,
                  r->what, where);
    if (API(bgjob_job_get_id(x, &id)) != BGJOB_RESULT_OK || (r->id != 0 && id != r->id))
        violation(V_REF, "job %" PRIu64 " [%s]: a reference taken %s names id %" PRIu64 ", not %" PRIu64,
                  r->serial, r->what, where, id, r->id);
    trail_add(r, "ref %s", where);
    rc = API(bgjob_job_destroy(x));
    trail_add(r, "unref %s: %d", where, rc);
    if (rc != BGJOB_RESULT_OK)
        violation(V_REF, "job %" PRIu64 " [%s]: destroy of a reference taken %s (not the last handle) "
                  "returned %s", r->serial, r->what, where, bgjob_result_str(rc));
}

/* A parent is never seen ended while one of its sub-jobs is not. */
static void check_kids_ended(struct rec *r, const char *by)
{
    int n = atomic_load(&r->nkids);

    for (int i = 0; i < n; i++) {
        struct rec *k = r->kids[i];
        bgjob_job *kh = atomic_load(&k->h);
        int32_t st = -1;
        if (kh == NULL || API(bgjob_job_get_state(kh, &st)) != BGJOB_RESULT_OK)
            continue;
        if (!is_terminal(st))
            violation(V_FAMILY, "job %" PRIu64 " [%s]: seen ended by %s while its sub-job %" PRIu64
                      " [%s] is %s", r->serial, r->what, by, k->serial, k->what, bgjob_state_str(st));
    }
}

/* User code on a thread of bgjob's own: the timer never; "bgjob-deadline"
 * only for an external job's deadline (the header names it). */
static void check_cb_thread(struct rec *r, const char *what)
{
    if (tl_role == ROLE_NONE && tl_depth <= 1) {
        char name[32] = "?";
        pthread_getname_np(pthread_self(), name, sizeof name);
        if (strncmp(name, "fz-", 3) != 0 && !(r->ext && strcmp(name, "bgjob-deadline") == 0))
            violation(V_INTERNAL_THREAD, "job %" PRIu64 " [%s]: its %s ran on bgjob-internal thread '%s'",
                      r->serial, r->what, what, name);
    }
}

/* A cancel made inside this thread's control calls of r may end the job
 * right here (a job still queued under the cap ends at once, unrun): those
 * calls then run on after the end, on the thread that ended it, as after an
 * end from inside CANCEL. Counted as such when the job is terminal after it. */
static void cancel_from_cb(struct rec *r, bgjob_job *job, const char *by)
{
    bool in_ctl = tl_ctl_rec == r && tl_ctl_n > 0 && !tl_ctl_ended;
    int32_t st = -1;

    if (in_ctl)
        atomic_fetch_add(&r->ctl_ending, tl_ctl_n);
    atomic_fetch_add(&r->cancels, 1);
    int32_t rc = API(bgjob_job_cancel(job, NULL));
    if (!lent_handle_died(r, rc))
        expect(r, by, rc, RC(OK));
    if (in_ctl) {
        if (API(bgjob_job_get_state(job, &st)) == BGJOB_RESULT_OK && is_terminal(st))
            tl_ctl_ended = true;
        else
            atomic_fetch_sub(&r->ctl_ending, tl_ctl_n);
    }
}

static void ctl_cb(void *userdata, bgjob_job *job, bgjob_control what, int64_t arg)
{
    struct token *t = userdata;
    struct rec *r = t->r;
    uint64_t rng = r->rng_seed ^ ((uint64_t)ctl_total(r) << 32) ^ (uint64_t)what ^ 0x5151ull;
    struct rec *saved_rec = tl_ctl_rec;
    int saved_n = tl_ctl_n;
    bool saved_ended = tl_ctl_ended;

    if (tl_ctl_rec != r) {
        tl_ctl_rec = r;
        tl_ctl_n = 0;
        tl_ctl_ended = false;
    }
    tl_ctl_n++;
    tl_depth++;
    tl_ctl_step = "checks";
    trail_add(r, "ctl %d/%" PRId64 " on %s", (int)what, arg, role_names[tl_role]);
    if (tl_ctl_ended) /* a call after this thread ended it: a violation below; keep the count even */
        atomic_fetch_add(&r->ctl_ending, 1);
    atomic_fetch_add(&r->ctl_inside, 1);
    atomic_store(&r->ctl_last, (int)what);
    if (atomic_load(&r->ctl_frees))
        violation(V_CONTROL, "job %" PRIu64 " [%s]: control callback (%s) after its userdata was freed",
                  r->serial, r->what, ctl_name(what));
    if (atomic_load(&r->end_done))
        violation(V_CONTROL, "job %" PRIu64 " [%s]: control callback (%s, arg %" PRId64 ") after "
                  "bgjob_job_end returned (%s, on %s; this thread: %s, depth %d, %d control calls "
                  "of it here, %s)",
                  r->serial, r->what, ctl_name(what), arg, atomic_load(&r->end_by),
                  pthread_equal(r->end_thread, pthread_self()) ? "this thread" : "another thread",
                  role_names[tl_role], tl_depth, tl_ctl_n,
                  tl_call_rec == r ? "inside a call on it" : "not inside a call on it");
    if (atomic_load(&r->observed))
        violation(V_CONTROL, "job %" PRIu64 " [%s]: control callback (%s) after the job was seen %s",
                  r->serial, r->what, ctl_name(what), bgjob_state_str(atomic_load(&r->terminal)));
    if (r->never_started)
        violation(V_CONTROL, "job %" PRIu64 " [%s]: control callback (%s) for a job that never started",
                  r->serial, r->what, ctl_name(what));
    check_cb_thread(r, "control callback");
    switch (what) {
    case BGJOB_CONTROL_CANCEL: {
        bgjob_info info = {.struct_size = sizeof info};
        if (arg != 0 && arg != 1)
            violation(V_CONTROL, "job %" PRIu64 " [%s]: CANCEL with arg %" PRId64, r->serial, r->what, arg);
        else if (atomic_fetch_add(arg ? &r->ctl_force : &r->ctl_soft, 1) != 0)
            violation(V_CONTROL, "job %" PRIu64 " [%s]: told CANCEL (%s) twice", r->serial, r->what,
                      arg ? "force" : "soft");
        if (API(bgjob_job_get_info(job, &info)) == BGJOB_RESULT_OK && !info.cancel_requested)
            violation(V_CONTROL, "job %" PRIu64 " [%s]: told CANCEL, but get_info says no cancel requested",
                      r->serial, r->what);
        if (r->ext && r->ctl_end_on_cancel)
            ext_end(r, job, CANCELLED_RC, "bgjob_job_end (inside its control callback's CANCEL)");
        break;
    }
    case BGJOB_CONTROL_PAUSE:
    case BGJOB_CONTROL_RESUME:
    case BGJOB_CONTROL_COMPLETE:
        if (arg != 0)
            violation(V_CONTROL, "job %" PRIu64 " [%s]: %s with arg %" PRId64, r->serial, r->what,
                      ctl_name(what), arg);
        break;
    case BGJOB_CONTROL_SET_SPEED:
        if (arg <= 0 || ((uint64_t)arg >> 16) != (r->serial & 0xffffffffu))
            violation(V_CONTROL, "job %" PRIu64 " [%s]: SET_SPEED %" PRId64 ", a speed never set on it",
                      r->serial, r->what, arg);
        break;
    default:
        violation(V_CONTROL, "job %" PRIu64 " [%s]: control callback with unknown verb %d", r->serial,
                  r->what, what);
        break;
    }
    if (what >= 0 && what < 5)
        atomic_fetch_add(&r->ctl_calls[what], 1);
    if (r->ctl_reenter && !tl_ctl_ended) {
        /* No bgjob lock is held here: each of these would deadlock otherwise. */
        bgjob_info info = {.struct_size = sizeof info};
        tl_ctl_step = "get_info";
        int32_t rc = API(bgjob_job_get_info(job, &info));
        if (rc != BGJOB_RESULT_OK && !lent_handle_died(r, rc))
            violation(V_CONTROL, "job %" PRIu64 " [%s]: get_info in its control callback (%s) returned %s",
                      r->serial, r->what, ctl_name(what), bgjob_result_str(rc));
        tl_ctl_step = "ref";
        if (chance(&rng, 2))
            ref_roundtrip(r, job, "in its control callback");
        tl_ctl_step = "list";
        if (chance(&rng, 3))
            list_all();
        tl_ctl_step = "cancel";
        if (chance(&rng, 4))
            cancel_from_cb(r, job, "cancel (in its control callback)");
        tl_ctl_step = "poke";
        if (chance(&rng, 4))
            poke_other(&rng, false);
    }
    tl_ctl_step = "returning";
    atomic_fetch_sub(&r->ctl_inside, 1);
    if (tl_ctl_ended)
        atomic_fetch_sub(&r->ctl_ending, 1);
    tl_depth--;
    if (saved_rec != r) {
        tl_ctl_rec = saved_rec;
        tl_ctl_n = saved_n;
        tl_ctl_ended = saved_ended;
    } else {
        tl_ctl_n--;
        if (tl_ctl_n == 0)
            tl_ctl_ended = false;
    }
}

static void ev_cb(void *userdata, bgjob_job *job, const bgjob_event *ev)
{
    struct token *t = userdata;
    struct rec *r = t->r;
    uint64_t prev = atomic_load(&r->ev_seq);
    uint64_t rng = r->rng_seed ^ (ev->seq * 0x9e3779b97f4a7c15ull);
    int32_t st = atomic_load(&r->ev_state);

    tl_depth++;
    if (atomic_fetch_add(&r->ev_inside, 1) != 0)
        violation(V_EVENT, "job %" PRIu64 " [%s]: two of its event callbacks run at once", r->serial, r->what);
    atomic_fetch_add(&r->ev_calls, 1);
    if (atomic_load(&r->ev_frees))
        violation(V_EVENT, "job %" PRIu64 " [%s]: event after its userdata was freed", r->serial, r->what);
    if (atomic_load(&r->comp_calls))
        violation(V_EVENT, "job %" PRIu64 " [%s]: event (kind %d, seq %" PRIu64 ") after its completion",
                  r->serial, r->what, ev->kind, ev->seq);
    if (atomic_load(&r->ev_ends))
        violation(V_EVENT, "job %" PRIu64 " [%s]: event (kind %d) after its END", r->serial, r->what, ev->kind);
    if (ev->struct_size < sizeof *ev)
        violation(V_EVENT, "job %" PRIu64 " [%s]: event struct_size %u", r->serial, r->what, ev->struct_size);
    if (ev->seq != prev + 1 + ev->coalesced)
        violation(V_EVENT, "job %" PRIu64 " [%s]: event seq %" PRIu64 " (+%u merged) after %" PRIu64,
                  r->serial, r->what, ev->seq, ev->coalesced, prev);
    atomic_store(&r->ev_seq, ev->seq);
    switch (ev->kind) {
    case BGJOB_EVENT_KIND_STATE_CHANGED:
        if (ev->old_state != st || (ev->new_state == ev->old_state && ev->coalesced == 0))
            violation(V_EVENT, "job %" PRIu64 " [%s]: state change %s -> %s after one into %s", r->serial,
                      r->what, bgjob_state_str(ev->old_state), bgjob_state_str(ev->new_state),
                      bgjob_state_str(st));
        atomic_store(&r->ev_state, ev->new_state);
        break;
    case BGJOB_EVENT_KIND_END:
        if (!is_terminal(ev->new_state) || ev->new_state != st)
            violation(V_EVENT, "job %" PRIu64 " [%s]: END in %s after a change into %s", r->serial, r->what,
                      bgjob_state_str(ev->new_state), bgjob_state_str(st));
        observe(r, ev->new_state, "its END event");
        check_kids_ended(r, "its END event");
        atomic_fetch_add(&r->ev_ends, 1);
        /* Allowed from END: the completion then gets the handle invalid. */
        if (r->ev_destroy && atomic_load(&r->created) && !atomic_load(&r->release_claim)) {
            release_job(r, false, 0);
            if (atomic_load(&r->destroyed))
                atomic_fetch_add(&n_end_destroys, 1);
        }
        break;
    case BGJOB_EVENT_KIND_READY:
        if (st != BGJOB_STATE_READY)
            violation(V_EVENT, "job %" PRIu64 " [%s]: READY event after a change into %s", r->serial,
                      r->what, bgjob_state_str(st));
        break;
    case BGJOB_EVENT_KIND_IO_ERROR:
        break;
    default:
        violation(V_EVENT, "job %" PRIu64 " [%s]: event of unknown kind %d", r->serial, r->what, ev->kind);
    }
    if (ev->kind != BGJOB_EVENT_KIND_STATE_CHANGED && ev->coalesced != 0)
        violation(V_EVENT, "job %" PRIu64 " [%s]: event kind %d merged %u", r->serial, r->what, ev->kind,
                  ev->coalesced);
    if (r->ev_ctx) {
        if (tl_role != ROLE_DISPATCHER)
            violation(V_EVENT, "job %" PRIu64 " [%s]: event (context) on %s, not the dispatcher", r->serial,
                      r->what, role_names[tl_role]);
    } else {
        check_cb_thread(r, "event callback");
    }
    if (r->ev_reenter && ev->kind != BGJOB_EVENT_KIND_END) {
        if (chance(&rng, 3)) {
            bgjob_info info = {.struct_size = sizeof info};
            int32_t rc = API(bgjob_job_get_info(job, &info));
            if (rc == BGJOB_RESULT_OK && atomic_load(&r->created) && info.id != r->id)
                violation(V_HANDLE, "job %" PRIu64 " [%s]: get_info in its event callback gave id %" PRIu64,
                          r->serial, r->what, info.id);
            else if (rc != BGJOB_RESULT_OK && !lent_handle_died(r, rc))
                expect(r, "get_info (in its event callback)", rc, RC(OK));
        }
        if (chance(&rng, 8))
            list_all();
        if (chance(&rng, 8))
            poke_other(&rng, false);
        if (r->ext && ev->kind == BGJOB_EVENT_KIND_STATE_CHANGED && !is_terminal(ev->new_state) &&
            ev->new_state != BGJOB_STATE_WAITING && ev->new_state != BGJOB_STATE_PENDING && chance(&rng, 6)) {
            int32_t rc = ext_end(r, job, chance(&rng, 2) ? 0 : 23, "bgjob_job_end (in its event callback)");
            (void)rc;
        } else if ((r->txn == NULL || enabled[S_EVTXN]) &&
                   (chance(&rng, 16) || (r->txn != NULL && ev->new_state == BGJOB_STATE_PENDING))) {
            /* (A transaction member's PENDING event once ran under the
             * transaction's lock, where this cancel hung: see evtxn.) */
            cancel_from_cb(r, job, "cancel (in its event callback)");
        }
    }
    atomic_fetch_sub(&r->ev_inside, 1);
    tl_depth--;
}

/* ---- statistics --------------------------------------------------------------------- */

#define STAT_REFUSED (1ull << 47) /* a value only refused batches carry */

/* A batch: every batch statistic gets the same value (unique per batch). */
static void stats_batch(struct rec *r, bgjob_job *h, unsigned tag, bool refused)
{
    bgjob_stat_update u[9];
    char text[8][24];
    uint64_t v = ((r->serial & 0xfffffu) << 27) | ((uint64_t)tag << 24) |
                 ((uint64_t)atomic_fetch_add(&r->batches, 1) & 0xffffffu);
    size_t n = (size_t)r->nbatch;
    int32_t rc;

    if (refused)
        v |= STAT_REFUSED;
    for (int i = 0; i < r->nbatch; i++) {
        u[i].index = (uint32_t)i;
        u[i].text = NULL;
        switch (r->stype[i]) {
        case BGJOB_STAT_TYPE_U64:
            u[i].value.u64 = v;
            break;
        case BGJOB_STAT_TYPE_I64:
            u[i].value.i64 = (int64_t)v;
            break;
        case BGJOB_STAT_TYPE_DOUBLE:
            u[i].value.f64 = (double)v;
            break;
        default:
            snprintf(text[i], sizeof text[i], "%" PRIu64, v);
            u[i].value.u64 = 0;
            u[i].text = text[i];
            break;
        }
    }
    if (refused) /* an undeclared index: the whole batch is refused */
        u[n++] = (bgjob_stat_update){.index = 60, .value.u64 = v, .text = "x"};
    rc = API(bgjob_job_set_stats(h, u, n));
    if (refused)
        expect(r, "set_stats (an undeclared index)", rc, RC(INVALID_ARGUMENT) | RC(NOT_ALLOWED));
    else
        expect(r, "set_stats", rc, RC(OK) | RC(NOT_ALLOWED));
}

static void stats_single(struct rec *r, bgjob_job *h, uint64_t *rng)
{
    uint32_t i;
    uint64_t v = splitmix(rng) & 0xffffffffu;
    int32_t rc;

    if (r->nsingle == 0)
        return;
    i = (uint32_t)(r->nbatch + (int)below(rng, (unsigned)r->nsingle));
    switch (r->stype[i]) {
    case BGJOB_STAT_TYPE_U64:
        rc = API(bgjob_job_set_stat_u64(h, i, v));
        break;
    case BGJOB_STAT_TYPE_I64:
        rc = API(bgjob_job_set_stat_i64(h, i, -(int64_t)v));
        break;
    case BGJOB_STAT_TYPE_DOUBLE:
        rc = API(bgjob_job_set_stat_double(h, i, (double)v / 7.0));
        break;
    default: {
        char text[24];
        snprintf(text, sizeof text, "s%" PRIu64, v);
        rc = API(bgjob_job_set_stat_string(h, i, text));
        break;
    }
    }
    expect(r, "set_stat (single)", rc, RC(OK) | RC(NOT_ALLOWED));
}

static uint64_t stat_as_u64(const bgjob_stat *s)
{
    switch (s->type) {
    case BGJOB_STAT_TYPE_U64:
        return s->value.u64;
    case BGJOB_STAT_TYPE_I64:
        return (uint64_t)s->value.i64;
    case BGJOB_STAT_TYPE_DOUBLE:
        return (uint64_t)s->value.f64;
    default:
        return strtoull(s->text, NULL, 10);
    }
}

/* One read: the batch statistics all equal (never torn), no refused value,
 * the declared types, the snapshot of the same job. Returns false when the
 * handle is gone. */
static bool stats_read(struct rec *r, bgjob_job *h, bgjob_stat *out, const char *by)
{
    bgjob_stat st[8];
    bgjob_info info = {.struct_size = sizeof info};
    size_t cnt = 0, want = (size_t)(r->nbatch + r->nsingle);
    int32_t rc;

    memset(st, 0, sizeof st);
    rc = API(bgjob_job_get_stats(h, &info, st, 8, &cnt));
    if (rc != BGJOB_RESULT_OK) {
        expect(r, "get_stats", rc, RC(OK));
        return false;
    }
    if (cnt != want)
        violation(V_STATS, "job %" PRIu64 " [%s]: get_stats (%s) counted %zu statistics, %zu declared",
                  r->serial, r->what, by, cnt, want);
    if (atomic_load(&r->created) && info.id != r->id)
        violation(V_HANDLE, "job %" PRIu64 " [%s]: get_stats' snapshot is of job id %" PRIu64, r->serial,
                  r->what, info.id);
    for (size_t i = 0; i < want && i < 8; i++) {
        if (st[i].type != r->stype[i])
            violation(V_STATS, "job %" PRIu64 " [%s]: statistic %zu read as type %d, declared %d", r->serial,
                      r->what, i, st[i].type, r->stype[i]);
        if ((int)i < r->nbatch && (stat_as_u64(&st[i]) & STAT_REFUSED))
            violation(V_STATS, "job %" PRIu64 " [%s]: statistic %zu shows a value of a refused batch (%s)",
                      r->serial, r->what, i, by);
        if ((int)i < r->nbatch && i > 0 && stat_as_u64(&st[i]) != stat_as_u64(&st[0]))
            violation(V_STATS, "job %" PRIu64 " [%s]: torn batch (%s, state %s): statistic 0 = %#" PRIx64
                      ", statistic %zu = %#" PRIx64, r->serial, r->what, by, bgjob_state_str(info.state),
                      stat_as_u64(&st[0]), i, stat_as_u64(&st[i]));
    }
    if (out != NULL)
        memcpy(out, st, sizeof st);
    return true;
}

/* ---- workers ------------------------------------------------------------------------ */

static int32_t worker_child(struct rec *r, bgjob_job *job, uint64_t *rng)
{
    static const char *const argv_true[] = {"true", NULL};
    static const char *const argv_sleep[] = {"sleep", "0.02", NULL};
    static const char *const argv_echo[] = {"sh", "-c", "echo fuzz-line; exec sleep 0.01", NULL};
    bgjob_child_options o;
    int32_t pid = -1, ws = -1, rc;

    bgjob_child_options_init(&o, sizeof o);
    o.grace_ms = below(rng, 30);
    o.flags = BGJOB_CHILD_NULL_STDERR;
    switch (r->child_kind) {
    case 0:
        o.argv = argv_true;
        o.flags |= BGJOB_CHILD_NULL_STDOUT;
        break;
    case 1:
        o.argv = argv_sleep;
        o.flags |= BGJOB_CHILD_NULL_STDOUT;
        break;
    default:
        o.argv = argv_echo;
        o.flags |= BGJOB_CHILD_CAPTURE_STDOUT;
        o.on_line = line_cb;
        o.line_userdata = token_new(TK_LINE, r, NULL);
        o.line_free = token_free;
        atomic_fetch_add(&r->line_regs, 1);
        break;
    }
    rc = API(bgjob_job_spawn_child(job, &o, &pid));
    if (rc == BGJOB_RESULT_NOT_ALLOWED || rc == BGJOB_RESULT_SYSTEM)
        return bgjob_job_check_cancel(job) == BGJOB_RESULT_CANCELLED ? CANCELLED_RC : 0;
    if (rc == BGJOB_RESULT_CANCELLED) {
        /* A spawn after cancel (without SURVIVES_CANCEL) is refused before
         * anything runs: only once cancel was requested. */
        if (bgjob_job_check_cancel(job) != BGJOB_RESULT_CANCELLED)
            violation(V_RESULT, "job %" PRIu64 " [%s]: spawn_child refused as cancelled, but "
                      "cancel was not requested", r->serial, r->what);
        return r->succeed_anyway ? 0 : CANCELLED_RC;
    }
    expect(r, "spawn_child", rc, RC(OK));
    if (rc != BGJOB_RESULT_OK)
        return 0;
    rc = API(bgjob_job_wait_child(job, pid, -1, &ws));
    expect(r, "wait_child", rc, RC(OK) | RC(CANCELLED));
    if (rc == BGJOB_RESULT_OK || rc == BGJOB_RESULT_CANCELLED) {
        if (kill(pid, 0) == 0)
            violation(V_STATE, "job %" PRIu64 " [%s]: child %d still exists after wait_child",
                      r->serial, r->what, pid);
        /* The header says "when the child has been waited for": not said
         * to be before wait_child returns, so only counted (checked exactly
         * once at the end). */
        if (o.line_userdata != NULL && atomic_load(&r->line_frees) != 1)
            atomic_fetch_add(&n_line_late, 1);
    }
    if (rc == BGJOB_RESULT_CANCELLED)
        return r->succeed_anyway ? 0 : CANCELLED_RC;
    return r->rc_plan;
}

static int32_t worker_ioerr(struct rec *r, bgjob_job *job)
{
    for (int attempt = 0; attempt < 4; attempt++) {
        int32_t act = -1, rc;
        if (API(bgjob_job_pause_point(job)) == BGJOB_RESULT_CANCELLED)
            return CANCELLED_RC;
        rc = API(bgjob_job_report_io_error(job, r->io_code, "fuzz io error", &act));
        expect(r, "report_io_error", rc, RC(OK) | RC(NOT_ALLOWED));
        if (rc != BGJOB_RESULT_OK) {
            sleep_us(200);
            continue;
        }
        bool stop_policy = r->io_policy == BGJOB_ERROR_POLICY_STOP ||
                           (r->io_policy == BGJOB_ERROR_POLICY_ENOSPC && r->io_code == ENOSPC);
        int want = r->io_policy == BGJOB_ERROR_POLICY_IGNORE ? BGJOB_ERROR_ACTION_IGNORE
                   : stop_policy                             ? BGJOB_ERROR_ACTION_STOP
                                                             : BGJOB_ERROR_ACTION_REPORT;
        /* A cancelled or detached job is told to report instead of stopping. */
        if (act != want && !(want == BGJOB_ERROR_ACTION_STOP && act == BGJOB_ERROR_ACTION_REPORT) &&
            !atomic_load(&r->policy_changed))
            violation(V_RESULT, "job %" PRIu64 " [%s]: policy %d, code %d: action %d, expected %d",
                      r->serial, r->what, r->io_policy, r->io_code, act, want);
        if (act == BGJOB_ERROR_ACTION_REPORT)
            return r->io_code;
        if (act == BGJOB_ERROR_ACTION_STOP &&
            API(bgjob_job_pause_point(job)) == BGJOB_RESULT_CANCELLED)
            return r->succeed_anyway ? 0 : CANCELLED_RC;
        API(bgjob_job_add_units(job, 1));
    }
    return 0;
}

static int32_t fz_worker(void *userdata, bgjob_job *job)
{
    struct token *t = userdata;
    struct rec *r = t->r;
    uint64_t rng = r->rng_seed;
    int32_t rc = r->rc_plan;

    tl_role = ROLE_WORKER;
    tl_depth++;
    r->wthread = pthread_self();
    atomic_store(&r->started_thread_set, 1);
    if (atomic_fetch_add(&r->runs, 1) != 0)
        violation(V_ONCE, "job %" PRIu64 " [%s]: the worker ran twice", r->serial, r->what);
    if (atomic_load(&r->observed))
        violation(V_STATE, "job %" PRIu64 " [%s]: the worker started after the job was seen %s",
                  r->serial, r->what, bgjob_state_str(atomic_load(&r->terminal)));
    switch (r->plan) {
    case P_RETURN:
        sleep_us(below(&rng, 300));
        break;
    case P_LOOP:
        API(bgjob_job_set_total(job, (uint64_t)r->iters));
        for (int i = 0; i < r->iters && !atomic_load(&r->go); i++) {
            if (API(bgjob_job_pause_point(job)) == BGJOB_RESULT_CANCELLED) {
                rc = r->succeed_anyway ? 0 : CANCELLED_RC;
                break;
            }
            API(bgjob_job_add_units(job, 1));
            sleep_us(50 + below(&rng, 150));
        }
        break;
    case P_HOOKS:
        if (enabled[S_HOOK0]) /* register as the actor cancels and adds its own */
            sleep_us(below(&rng, 1500));
        for (int i = 0; i < r->nhooks && i < MAX_HOOKS; i++) {
            struct hookrec *hk = add_hook(r, job);
            if (hk != NULL)
                r->wh[r->nwh++] = hk;
        }
        for (int i = 0; i < r->iters && !atomic_load(&r->go); i++) {
            if (API(bgjob_job_check_cancel(job)) == BGJOB_RESULT_CANCELLED) {
                rc = r->succeed_anyway ? 0 : CANCELLED_RC;
                break;
            }
            /* A pause point too, so pauses (user and internal) park it. */
            if (chance(&rng, 4) && API(bgjob_job_pause_point(job)) == BGJOB_RESULT_CANCELLED) {
                rc = r->succeed_anyway ? 0 : CANCELLED_RC;
                break;
            }
            sleep_us(50 + below(&rng, 100));
        }
        /* Usually return with the hooks still registered: the job ends while
         * the canceller may be between hooks. */
        if (r->remove_hooks) {
            for (int i = 0; i < r->nwh; i++) {
                struct hookrec *hk = r->wh[i];
                int32_t x = API(bgjob_job_remove_cancel_hook(job, atomic_load(&hk->id)));
                expect(r, "remove_cancel_hook (worker)", x, RC(OK) | RC(NOT_FOUND));
                if (x == BGJOB_RESULT_OK)
                    atomic_store(&hk->removed_ok, 1);
                if (atomic_load(&hk->inside))
                    violation(V_ONCE, "job %" PRIu64 " [%s]: hook still running after remove returned",
                              r->serial, r->what);
            }
        }
        break;
    case P_IOERR:
        rc = worker_ioerr(r, job);
        break;
    case P_CHILD:
        rc = worker_child(r, job, &rng);
        break;
    case P_READY:
        for (int i = 0; i < r->iters && !atomic_load(&r->go); i++) {
            bool req = false, soft = false;
            if (API(bgjob_job_pause_point(job)) == BGJOB_RESULT_CANCELLED) {
                /* A soft cancel of a READY job finishes without pivoting: success. */
                API(bgjob_job_cancel_is_soft(job, &soft));
                rc = soft || r->succeed_anyway ? 0 : CANCELLED_RC;
                break;
            }
            if (i == r->ready_at)
                expect(r, "set_ready (worker)", API(bgjob_job_set_ready(job)), RC(OK) | RC(NOT_ALLOWED));
            if (API(bgjob_job_complete_requested(job, &req)) == BGJOB_RESULT_OK && req) {
                rc = 0;
                break;
            }
            if (r->nbatch > 0 && chance(&rng, 3))
                stats_batch(r, job, 1, false);
            API(bgjob_job_add_units(job, 1));
            sleep_us(50 + below(&rng, 150));
        }
        break;
    case P_STATS:
        for (int i = 0; i < r->iters && !atomic_load(&r->go); i++) {
            if (API(bgjob_job_pause_point(job)) == BGJOB_RESULT_CANCELLED) {
                rc = r->succeed_anyway ? 0 : CANCELLED_RC;
                break;
            }
            stats_batch(r, job, 1, false);
            if (chance(&rng, 3))
                stats_single(r, job, &rng);
            sleep_us(20 + below(&rng, 100));
        }
        break;
    default:
        break;
    }
    if (enabled[S_REENTER] && !r->nested && chance(&rng, 10)) {
        list_all();
        poke_other(&rng, false);
    }
    atomic_fetch_add(&r->returns, 1);
    tl_depth--;
    return rc;
}

/* ---- making and releasing jobs ---------------------------------------------------------- */

static bgjob_context *contexts[N_CONTEXTS];

struct mk {
    uint32_t flags;
    int64_t deadline_ms;
    int32_t policy;
    bgjob_job *parent;  /* a sub-job of this job */
    bool may_refuse;    /* create may be NOT_ALLOWED / INVALID_HANDLE (a parent that ended) */
};

/* Creates the job for `r` (plan already set). Returns the create result. */
static int32_t make_job(struct rec *r, uint64_t *rng, const struct mk *m)
{
    bgjob_job_options o;
    char name[48], owner[48];
    bgjob_job *h = NULL;
    int32_t rc;

    bgjob_job_options_init(&o, sizeof o);
    snprintf(name, sizeof name, "fz-%" PRIu64 "-%s", r->serial, scn_names[r->scn]);
    snprintf(owner, sizeof owner, "fz-owner-%" PRIu64, r->serial);
    o.name = name;
    o.operation = scn_names[r->scn];
    o.owner = owner;
    o.parent = m->parent;
    o.flags = m->flags | (r->ext ? BGJOB_CREATE_EXTERNAL : 0);
    /* Events on jobs of every class (their own class drives them harder). */
    if (enabled[S_EVENTS] && !r->has_ev && !r->nested &&
        (chance(rng, 4) || (enabled[S_EVTXN] && r->txn != NULL))) {
        r->has_ev = true;
        r->ev_reenter = chance(rng, 2) || (enabled[S_EVTXN] && r->txn != NULL);
        if (!r->has_comp && chance(rng, 3))
            r->comp_ctx = true;
    }
    if (r->has_ctl) {
        o.control = ctl_cb;
        o.control_userdata = token_new(TK_CONTROL, r, NULL);
        o.control_free = token_free;
    }
    if (r->has_ev) {
        o.event = ev_cb;
        o.event_userdata = token_new(TK_EVENT, r, NULL);
        o.event_free = token_free;
        r->ev_ctx = r->comp_ctx;
        if (r->ev_ctx && !r->has_comp)
            o.context = contexts[below(rng, N_CONTEXTS)];
    }
    o.deadline_ms = m->deadline_ms;
    o.error_policy = m->policy;
    o.job_type = chance(rng, 5) ? BGJOB_JOB_TYPE_UNBOUNDED : BGJOB_JOB_TYPE_BOUNDED;
    if (r->has_comp) {
        o.completion = completion;
        o.completion_userdata = token_new(TK_COMPLETION, r, NULL);
        o.completion_free = token_free;
        if (r->comp_ctx)
            o.context = contexts[below(rng, N_CONTEXTS)];
    }
    if (m->flags & BGJOB_CREATE_MANUAL_FINALIZE)
        r->manual = true;
    if (r->has_fin) {
        o.commit = commit_cb;
        o.abort = abort_cb;
        o.clean = clean_cb;
        o.finalize_userdata = token_new(TK_FIN, r, NULL);
        o.finalize_free = token_free;
    }
    describe(r, "completion %s%s%s%s", !r->has_comp ? "none" : r->comp_ctx ? "via context" : "on worker",
             m->flags & BGJOB_CREATE_MANUAL_FINALIZE ? ", manual finalize" : "",
             r->has_ev ? (r->ev_ctx ? ", events via context" : ", events") : "",
             r->has_ev && r->ev_reenter ? " (re-entering)" : "");
    step("create", r);
    rc = API(bgjob_job_create(&o, r->ext ? NULL : fz_worker, token_new(TK_WORKER, r, NULL), token_free, &h));
    if (rc == BGJOB_RESULT_OK) {
        uint64_t id = 0;
        int32_t x = API(bgjob_job_get_id(h, &id));
        r->id = id;
        if (x != BGJOB_RESULT_OK && !(r->self_destroy && x == BGJOB_RESULT_INVALID_HANDLE))
            expect(r, "get_id", x, RC(OK));
        bgjob_job *none = NULL;
        atomic_compare_exchange_strong(&r->h, &none, h);
        atomic_store(&r->created, 1);
        if (!r->self_destroy)
            reg_add(r);
    } else {
        expect(r, "create", rc, RC(TRY_AGAIN) | (m->may_refuse ? RC(NOT_ALLOWED) | RC(INVALID_HANDLE) : 0));
        if (atomic_load(&r->wfrees) != 1 || (r->has_comp && atomic_load(&r->comp_frees) != 1) ||
            (r->has_fin && atomic_load(&r->fin_frees) != 1) ||
            (r->has_ctl && atomic_load(&r->ctl_frees) != 1) || (r->has_ev && atomic_load(&r->ev_frees) != 1))
            violation(V_ONCE, "job %" PRIu64 " [%s]: a failed create did not free every userdata",
                      r->serial, r->what);
    }
    return rc;
}

/* Destroys (or detaches) r's handle; exactly one caller wins the claim. */
static void release_job(struct rec *r, bool detach, uint32_t flags)
{
    bgjob_job *h = atomic_load(&r->h);
    struct rec *saved = tl_call_rec;
    int32_t rc;

    if (h == NULL || atomic_exchange(&r->release_claim, 1))
        return;
    reg_del(r);
    if (detach)
        atomic_store(&r->detached, 1);
    if (flags & BGJOB_DETACH_CANCEL)
        atomic_fetch_add(&r->cancels, 1);
    step(detach ? "detach" : "destroy", r);
    tl_call_rec = r;
    rc = detach ? API(bgjob_job_detach(h, flags)) : API(bgjob_job_destroy(h));
    tl_call_rec = saved;
    trail_add(r, "%s %u: %d", detach ? "detach" : "destroy", flags, rc);
    if (rc == BGJOB_RESULT_OK) {
        if (!detach)
            atomic_store(&r->destroyed, 1);
        atomic_store(&r->released, 1);
        /* The handle is invalid for the caller from now on (a detached
         * external job's stays valid for its owner until bgjob_job_end). */
        int32_t st;
        if (detach && r->ext && !atomic_load(&r->end_done))
            return;
        int32_t x = API(bgjob_job_get_state(h, &st));
        if (x != BGJOB_RESULT_INVALID_HANDLE)
            violation(V_HANDLE, "job %" PRIu64 " [%s]: get_state after %s returned %s", r->serial,
                      r->what, detach ? "detach" : "destroy", bgjob_result_str(x));
        return;
    }
    /* Refused: the caller still owns it. */
    if (detach)
        atomic_store(&r->detached, 0);
    atomic_store(&r->release_claim, 0);
    expect(r, detach ? "detach" : "destroy", rc, RC(NOT_ALLOWED));
}

/* Waits for the end (no timeout: the watchdog catches a job that never ends). */
static int32_t wait_end_rec(struct rec *r)
{
    bgjob_job *h = atomic_load(&r->h);
    int32_t st = -1, rc;

    step("wait for the end", r);
    for (;;) {
        rc = API(bgjob_job_wait(h, 1000, &st));
        if (rc != BGJOB_RESULT_TIMED_OUT)
            break;
    }
    expect(r, "wait", rc, RC(OK));
    if (rc != BGJOB_RESULT_OK)
        return -1;
    if (!is_terminal(st))
        violation(V_STATE, "job %" PRIu64 " [%s]: wait returned non-terminal %s", r->serial, r->what,
                  bgjob_state_str(st));
    observe(r, st, "bgjob_job_wait");
    if (atomic_load(&r->runs) && atomic_load(&r->wfrees) != 1)
        violation(V_ONCE, "job %" PRIu64 " [%s]: wait returned before the worker userdata was freed",
                  r->serial, r->what);
    if (r->has_fin && atomic_load(&r->runs) && atomic_load(&r->cleans) != 1)
        violation(V_TXN, "job %" PRIu64 " [%s]: wait returned %s before its clean ran", r->serial,
                  r->what, bgjob_state_str(st));
    /* bgjob_job_end frees both userdata before it publishes the end (made
     * inside a control call, the control userdata once that call returns:
     * counted at the end of the run). */
    if (r->ext && atomic_load(&r->end_ok) &&
        (atomic_load(&r->wfrees) != 1 ||
         (r->has_ctl && !atomic_load(&r->end_in_ctl) && atomic_load(&r->ctl_frees) != 1)))
        violation(V_ONCE, "job %" PRIu64 " [%s]: wait returned before the external job's userdata (%d) "
                  "and control userdata (%d) were freed", r->serial, r->what, atomic_load(&r->wfrees),
                  atomic_load(&r->ctl_frees));
    check_kids_ended(r, "bgjob_job_wait");
    return st;
}

/* Polls the state until `want` or a terminal state; no timeout (watchdog). */
static int32_t poll_until(struct rec *r, int32_t want)
{
    bgjob_job *h = atomic_load(&r->h);
    int32_t st = -1;

    step(want == BGJOB_STATE_PENDING ? "poll for PENDING" : "poll for a state", r);
    for (;;) {
        bool was = atomic_load(&r->observed);
        int32_t rc = API(bgjob_job_get_state(h, &st));
        expect(r, "get_state", rc, RC(OK));
        if (rc != BGJOB_RESULT_OK)
            return -1;
        observe(r, st, "get_state");
        observe_nonterminal(r, st, was, "get_state");
        if (st == want || is_terminal(st))
            return st;
        sleep_us(100);
    }
}

static void do_cancel(struct rec *r)
{
    int32_t st = -1, rc;
    struct rec *saved = tl_call_rec;

    atomic_fetch_add(&r->cancels, 1);
    tl_call_rec = r;
    rc = API(bgjob_job_cancel(atomic_load(&r->h), &st));
    tl_call_rec = saved;
    expect(r, "cancel", rc, RC(OK));
}

static void do_info(struct rec *r)
{
    bgjob_info info = {.struct_size = sizeof info};
    bool was = atomic_load(&r->observed);
    int32_t rc = API(bgjob_job_get_info(atomic_load(&r->h), &info));

    expect(r, "get_info", rc, RC(OK));
    if (rc != BGJOB_RESULT_OK)
        return;
    observe(r, info.state, "get_info");
    observe_nonterminal(r, info.state, was, "get_info");
    if (info.iostatus != BGJOB_IOSTATUS_OK && info.state != BGJOB_STATE_PAUSED &&
        info.state != BGJOB_STATE_STANDBY) /* STANDBY: READY and user-paused */
        violation(V_IOSTATUS, "job %" PRIu64 " [%s]: iostatus %d in state %s", r->serial, r->what,
                  info.iostatus, bgjob_state_str(info.state));
    if (info.cancel_requested && info.cancel_cause == BGJOB_CANCEL_CAUSE_NONE)
        violation(V_STATE, "job %" PRIu64 " [%s]: cancel requested, cause NONE", r->serial, r->what);
}

/* ---- detached jobs and the canceller service ------------------------------------------- */

static void detach_now(struct rec *r, uint32_t flags)
{
    release_job(r, true, flags);
}

/* What the canceller thread does for an actor: cancel (the default), or, as
 * another owner would, end an external job, release a reference, write a
 * statistics batch. */
enum { A_CANCEL, A_END, A_RELEASE, A_STATS };

struct cancel_req {
    struct rec *r;
    int delay_us;
    int action;
    bgjob_job *h; /* A_RELEASE: the handle */
    int32_t arg;  /* A_END: the code; A_RELEASE: 0 destroy, 1 detach, 2 detach+cancel */
};

#define CQ 256
static pthread_mutex_t cq_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cq_cv = PTHREAD_COND_INITIALIZER;
static struct cancel_req cq[CQ];
static size_t cq_head, cq_tail;

/* Asks the canceller thread to cancel r (after delay_us). */
static void do_cancel(struct rec *r);

static void svc_run(struct cancel_req *q);

static void svc_request(struct rec *r, int delay_us, int action, bgjob_job *h, int32_t arg)
{
    struct cancel_req q = {r, delay_us, action, h, arg};
    bool queued = false;

    pthread_mutex_lock(&cq_mu);
    if (cq_tail - cq_head < CQ) {
        cq[cq_tail % CQ] = q;
        cq_tail++;
        queued = true;
        pthread_cond_signal(&cq_cv);
    }
    pthread_mutex_unlock(&cq_mu);
    if (!queued) { /* never drop it: a paused job would wait for ever */
        q.delay_us = 0;
        svc_run(&q);
    }
}

static void cancel_elsewhere(struct rec *r, int delay_us)
{
    svc_request(r, delay_us, A_CANCEL, NULL, 0);
}

static void svc_run(struct cancel_req *q)
{
    bgjob_job *h = atomic_load(&q->r->h);
    struct rec *saved = tl_call_rec;

    switch (q->action) {
    case A_END:
        ext_end(q->r, h, q->arg, "bgjob_job_end (canceller thread)");
        break;
    case A_RELEASE:
        release_ref(q->r, q->h, q->arg, "on the canceller thread");
        break;
    case A_STATS:
        stats_batch(q->r, h, 3, false);
        break;
    default: {
        int32_t st = -1;
        atomic_fetch_add(&q->r->cancels, 1);
        tl_call_rec = q->r;
        int32_t rc = API(bgjob_job_cancel(h, &st));
        tl_call_rec = saved;
        expect(q->r, "cancel (canceller thread)", rc, RC(OK));
    }
    }
}

static void *canceller_main(void *arg)
{
    (void)arg;
    tl_role = ROLE_CANCELLER;
    tl_self = &svc_canceller;
    for (;;) {
        struct cancel_req q;
        struct timespec ts;

        beat("idle", NULL);
        pthread_mutex_lock(&cq_mu);
        while (cq_head == cq_tail && !atomic_load(&stopping)) {
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&cq_cv, &cq_mu, &ts);
            pthread_mutex_unlock(&cq_mu);
            beat("idle", NULL);
            pthread_mutex_lock(&cq_mu);
        }
        if (cq_head == cq_tail) {
            pthread_mutex_unlock(&cq_mu);
            break;
        }
        q = cq[cq_head % CQ];
        cq_head++;
        pthread_mutex_unlock(&cq_mu);
        beat("cancel (hooks run here)", q.r);
        if (q.delay_us > 0)
            sleep_us(q.delay_us);
        svc_run(&q);
    }
    atomic_store(&svc_canceller.beat, 0);
    return NULL;
}

/* Jobs made inside callbacks that nobody owns yet: a later callback (of any
 * job) destroys or detaches them, the end reaps the rest. "The end" is the
 * whole settle, not a moment before it: the completions of detached jobs
 * still running then (and those the dispatcher still delivers) may make more
 * orphans after any one pass, so settle() reaps on every round until every
 * completion returned and no job is listed. */
static pthread_mutex_t orphan_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rec *orphans[ORPHANS];
static atomic_long n_orphans_reaped;

static struct rec *orphan_swap(unsigned i, struct rec *r)
{
    struct rec *old;

    pthread_mutex_lock(&orphan_mu);
    old = orphans[i % ORPHANS];
    orphans[i % ORPHANS] = r;
    pthread_mutex_unlock(&orphan_mu);
    return old;
}

/* Releases an orphan from wherever we are: destroy if it ended, else detach. */
static void reap_orphan(struct rec *o, uint64_t *rng)
{
    if (o == NULL)
        return;
    atomic_fetch_add(&n_orphans_reaped, 1);
    release_job(o, false, 0);
    if (!atomic_load(&o->released))
        release_job(o, true, chance(rng, 2) ? BGJOB_DETACH_CANCEL : 0);
}

/* A job made from inside a callback: quick; detached at once or left for
 * another callback to destroy. */
static atomic_long n_nested;

static void nested_job(uint64_t *rng)
{
    struct rec *r = rec_new(S_REENTER, rng);
    struct mk m = {.flags = 0, .deadline_ms = 0, .policy = 0};

    r->nested = true;
    r->plan = P_RETURN;
    r->rc_plan = chance(rng, 3) ? 7 : 0;
    r->has_comp = true;
    describe(r, "made inside a callback");
    if (make_job(r, rng, &m) == BGJOB_RESULT_OK) {
        atomic_fetch_add(&n_nested, 1);
        if (chance(rng, 2))
            detach_now(r, chance(rng, 2) ? BGJOB_DETACH_CANCEL : 0);
        else
            reap_orphan(orphan_swap(below(rng, ORPHANS), r), rng);
    }
}

/* ---- scenarios -------------------------------------------------------------------------- */

static void set_completion(struct rec *r, uint64_t *rng)
{
    unsigned k = below(rng, 4);

    r->has_comp = k != 0;
    r->comp_ctx = k == 3;
}

/* A released job is checked at the end; a kept one is waited for and destroyed. */
static void finish_kept(struct rec *r)
{
    if (atomic_load(&r->release_claim))
        return;
    wait_end_rec(r);
    release_job(r, false, 0);
}

static void scn_hooks(uint64_t *rng)
{
    struct rec *r = rec_new(S_HOOKS, rng);
    struct mk m = {.flags = 0, .deadline_ms = 0, .policy = 0};
    unsigned how = below(rng, enabled[S_DEADLINE] ? 4 : 3);

    r->plan = P_HOOKS;
    r->nhooks = 1 + (int)below(rng, MAX_HOOKS);
    r->hook_sleep_us = chance(rng, 3) ? 0 : (int)below(rng, 3000);
    r->iters = 200 + (int)below(rng, 2000);
    r->remove_hooks = chance(rng, 5);
    r->succeed_anyway = chance(rng, 4);
    set_completion(r, rng);
    if (how == 3)
        m.deadline_ms = 1 + below(rng, 5);
    describe(r, "%d worker hooks, hook sleeps %d us, cancel by %s%s", r->nhooks, r->hook_sleep_us,
             how == 0 ? "canceller thread" : how == 1 ? "this actor" : how == 2 ? "a pause+cancel" : "deadline",
             r->remove_hooks ? ", worker removes them" : "");
    if (make_job(r, rng, &m) != BGJOB_RESULT_OK)
        return;
    /* Let the worker register its hooks. */
    sleep_us(below(rng, 1500));
    if (enabled[S_HOOK0] && how == 1) {
        /* Cancel first: the caller's hook and the worker's run at once. */
        do_cancel(r);
        add_hook(r, atomic_load(&r->h));
    } else if (chance(rng, 4)) {
        add_hook(r, atomic_load(&r->h)); /* a caller's hook too */
    }
    switch (how) {
    case 0:
        cancel_elsewhere(r, (int)below(rng, 500));
        break;
    case 1:
        do_cancel(r);
        break;
    case 2:
        expect(r, "pause", API(bgjob_job_pause(atomic_load(&r->h))), RC(OK) | RC(NOT_ALLOWED));
        cancel_elsewhere(r, 0);
        break;
    default:
        break;
    }
    do_info(r);
    if (chance(rng, 6)) {
        detach_now(r, chance(rng, 2) ? BGJOB_DETACH_CANCEL : 0);
        return;
    }
    finish_kept(r);
}

/* Whether a member was cancelled from elsewhere (a callback's poke). */
static bool txn_hit(struct txnrec *tx)
{
    for (int i = 0; i < atomic_load(&tx->nm); i++)
        if (atomic_load(&tx->m[i]->cancels) > 0)
            return true;
    return false;
}

static void scn_txn(uint64_t *rng)
{
    struct txnrec *tx = calloc(1, sizeof *tx);
    bgjob_txn *t = NULL;
    int32_t rc;
    unsigned dmode = below(rng, 4); /* 0-1: keep all, 2: detach some, 3: detach all */
    bool any_detach = dmode >= 2;
    bool sibling_wait = enabled[S_TXNWAIT] && !any_detach && chance(rng, 2);
    bool destroy_early = chance(rng, 3);

    if (tx == NULL)
        abort();
    tx->serial = atomic_fetch_add(&serials, 1) + 1;
    tx->manual = chance(rng, 3);
    tx->n = 2 + (int)below(rng, MAX_MEMBERS - 1);
    snprintf(tx->what, sizeof tx->what, "txn %" PRIu64 " (%d members%s%s%s%s)", tx->serial, tx->n,
             tx->manual ? ", manual finalize" : "",
             dmode == 3 ? ", all members detached, then the txn destroyed" : any_detach ? ", some members detached" : "",
             sibling_wait ? ", completions wait for a sibling" : "",
             destroy_early ? ", txn destroyed early" : "");
    PUSH(all_txns, n_txns, cap_txns, tx);
    step("txn_create", NULL);
    rc = API(bgjob_txn_create(tx->manual ? BGJOB_TXN_MANUAL_FINALIZE : 0, &t));
    expect(NULL, "txn_create", rc, RC(OK));
    if (rc != BGJOB_RESULT_OK) {
        tx->n = 0;
        return;
    }
    tx->t = t;
    atomic_store(&tx->th, t);
    for (int i = 0; i < tx->n; i++) {
        struct rec *r = rec_new(S_TXN, rng);
        struct mk m = {.flags = BGJOB_CREATE_DEFER_START, .deadline_ms = 0, .policy = 0};
        unsigned k = below(rng, 10);

        r->txn = tx;
        r->manual = tx->manual;
        r->member = i;
        r->has_fin = true;
        r->has_comp = true;
        r->comp_ctx = chance(rng, 5);
        r->sibling_wait = sibling_wait && !r->comp_ctx;
        r->plan = k < 5 ? P_RETURN : k < 8 ? P_LOOP : P_HOOKS;
        r->rc_plan = chance(rng, 4) ? 40 + (int32_t)i : 0;
        r->iters = 20 + (int)below(rng, 300);
        r->nhooks = 1;
        r->hook_sleep_us = (int)below(rng, 500);
        r->succeed_anyway = chance(rng, 3);
        describe(r, "%s member %d, rc %d", tx->what, i, r->rc_plan);
        if (make_job(r, rng, &m) != BGJOB_RESULT_OK) {
            tx->n = i;
            break;
        }
        rc = API(bgjob_txn_add(t, atomic_load(&r->h)));
        /* A callback's cancel of a member already added aborts the
         * transaction: adding is then refused. */
        expect(r, "txn_add", rc,
               RC(OK) | (txn_hit(tx) || atomic_load(&r->cancels) ? RC(NOT_ALLOWED) : 0));
        if (rc != BGJOB_RESULT_OK) {
            /* Not a member: its destroy ends it on its own, and its
             * completion does not wait for the transaction. */
            atomic_store(&r->joined, -1);
            release_job(r, false, 0);
            tx->n = i;
            break;
        }
        tx->m[i] = r;
        atomic_store(&tx->nm, i + 1);
        atomic_store(&r->joined, 1);
        if (chance(rng, 8)) /* a second add is refused */
            expect(r, "txn_add (again)", API(bgjob_txn_add(t, atomic_load(&r->h))),
                   RC(INVALID_ARGUMENT) | RC(NOT_ALLOWED));
    }
    if (tx->n == 0) {
        API(bgjob_txn_destroy(t));
        return;
    }
    step("txn_start", NULL);
    tl_call_txn = tx;
    if (chance(rng, 5)) {
        for (int i = 0; i < tx->n; i++) {
            tl_call_rec = tx->m[i];
            expect(tx->m[i], "job_start (txn member)", API(bgjob_job_start(atomic_load(&tx->m[i]->h))),
                   RC(OK) | RC(NOT_ALLOWED));
            tl_call_rec = NULL;
        }
    } else {
        int32_t x = API(bgjob_txn_start(t));
        if (x != BGJOB_RESULT_OK && !(x == BGJOB_RESULT_NOT_ALLOWED && txn_hit(tx))) {
            char st[160] = "";
            for (int i = 0; i < tx->n; i++) {
                int32_t ms = -1;
                bgjob_job_get_state(atomic_load(&tx->m[i]->h), &ms);
                snprintf(st + strlen(st), sizeof st - strlen(st), " m%d=%s/%dc", i, bgjob_state_str(ms),
                         atomic_load(&tx->m[i]->cancels));
            }
            violation(V_RESULT, "%s: txn_start returned %s; members:%s", tx->what, bgjob_result_str(x), st);
        }
    }
    tl_call_txn = NULL;
    if (destroy_early) {
        expect(NULL, "txn_destroy", API(bgjob_txn_destroy(t)), RC(OK));
        tx->t = NULL;
    }
    /* Stir. */
    for (int i = 0; i < tx->n; i++) {
        struct rec *r = tx->m[i];
        bgjob_job *h = atomic_load(&r->h);
        switch (below(rng, 12)) {
        case 0:
            do_cancel(r);
            break;
        case 1:
            if (tx->t != NULL) {
                tl_call_txn = tx;
                expect(NULL, "txn_cancel", API(bgjob_txn_cancel(tx->t)), RC(OK));
                tl_call_txn = NULL;
            }
            break;
        case 2:
            expect(r, "pause", API(bgjob_job_pause(h)), RC(OK) | RC(NOT_ALLOWED));
            sleep_us(below(rng, 300));
            expect(r, "resume", API(bgjob_job_resume(h)), RC(OK) | RC(NOT_ALLOWED));
            break;
        case 3:
            if (API(bgjob_job_pause_internal(h)) == BGJOB_RESULT_OK) {
                sleep_us(below(rng, 300));
                expect(r, "resume_internal", API(bgjob_job_resume_internal(h)),
                       RC(OK) | RC(NOT_ALLOWED));
            }
            break;
        case 4:
            do_info(r);
            break;
        default:
            break;
        }
        if (dmode == 3 || (any_detach && chance(rng, 2)))
            detach_now(r, chance(rng, 4) ? BGJOB_DETACH_CANCEL : 0);
    }
    if (dmode == 3 && tx->t != NULL) {
        /* Nobody is left to finalize: the members must end by themselves. */
        expect(NULL, "txn_destroy", API(bgjob_txn_destroy(tx->t)), RC(OK));
        tx->t = NULL;
    }
    /* Manual finalize: once every kept member is PENDING (or ended). */
    if (tx->manual) {
        struct rec *kept = NULL;
        for (int i = 0; i < tx->n; i++) {
            if (atomic_load(&tx->m[i]->release_claim))
                continue;
            kept = tx->m[i];
            poll_until(tx->m[i], BGJOB_STATE_PENDING);
        }
        if (chance(rng, 6) && kept != NULL) {
            int32_t st = -1;
            expect(kept, "wait (PENDING member, 0 ms)", API(bgjob_job_wait(atomic_load(&kept->h), 0, &st)),
                   RC(OK) | RC(TIMED_OUT));
            /* Refused while PENDING; allowed if it ended meanwhile. */
            release_job(kept, false, 0);
            if (atomic_load(&kept->released))
                kept = NULL;
        }
        step("finalize", kept);
        /* Never inside the call that ended the job: finalize included. */
        tl_call_txn = tx;
        if (tx->t != NULL && chance(rng, 2)) {
            expect(NULL, "txn_finalize", API(bgjob_txn_finalize(tx->t)), RC(OK) | RC(NOT_ALLOWED));
        } else if (kept != NULL) {
            tl_call_rec = kept;
            expect(kept, "job_finalize (member)", API(bgjob_job_finalize(atomic_load(&kept->h))),
                   RC(OK) | RC(NOT_ALLOWED));
        }
        tl_call_txn = NULL;
        tl_call_rec = NULL;
    }
    for (int i = 0; i < tx->n; i++)
        finish_kept(tx->m[i]);
    if (tx->t != NULL) {
        bgjob_txn *old = tx->t;
        expect(NULL, "txn_destroy", API(bgjob_txn_destroy(old)), RC(OK));
        tx->t = NULL;
        /* A destroyed transaction handle is dead for every call. */
        int32_t x = chance(rng, 2) ? API(bgjob_txn_cancel(old)) : API(bgjob_txn_destroy(old));
        if (x != BGJOB_RESULT_INVALID_HANDLE)
            violation(V_HANDLE, "%s: a call on the destroyed txn handle returned %s", tx->what,
                      bgjob_result_str(x));
    }
}

static void scn_finalize(uint64_t *rng)
{
    struct rec *r = rec_new(S_FINALIZE, rng);
    struct mk m = {.flags = BGJOB_CREATE_MANUAL_FINALIZE, .deadline_ms = 0, .policy = 0};
    unsigned how = below(rng, 9);
    static const char *const hows[] = {
        "finalize when PENDING", "cancel when PENDING, then finalize",
        "detach+cancel while running", "cancel when PENDING, then detach",
        "detach when PENDING", "detach+cancel when PENDING", "detach while running",
        "destroy refused when PENDING, then finalize",
        "cancel while running, detach when PENDING",
    };
    uint32_t dflags = chance(rng, 2) ? BGJOB_DETACH_CANCEL : 0;
    bgjob_job *h;

    r->has_fin = true;
    r->has_comp = chance(rng, 8) ? false : true;
    r->comp_ctx = chance(rng, 4);
    r->plan = how == 2 || how == 6 || how == 8 ? P_LOOP : (chance(rng, 2) ? P_RETURN : P_LOOP);
    r->iters = 5 + (int)below(rng, 100);
    r->rc_plan = chance(rng, 5) ? 33 : 0;
    r->succeed_anyway = chance(rng, 2);
    describe(r, "%s%s, rc %d%s", hows[how], (how == 3 || how == 8) && dflags ? " (detach+cancel)" : "",
             r->rc_plan, r->succeed_anyway ? ", succeeds despite cancel" : "");
    if (make_job(r, rng, &m) != BGJOB_RESULT_OK)
        return;
    h = atomic_load(&r->h);
    switch (how) {
    case 2:
        sleep_us(below(rng, 500));
        detach_now(r, BGJOB_DETACH_CANCEL);
        return;
    case 6:
        sleep_us(below(rng, 500));
        detach_now(r, 0);
        return;
    case 8:
        sleep_us(below(rng, 300));
        do_cancel(r);
        break;
    default:
        break;
    }
    if (poll_until(r, BGJOB_STATE_PENDING) == BGJOB_STATE_PENDING) {
        switch (how) {
        case 8:
            detach_now(r, dflags);
            return;
        case 1:
        case 3:
            do_cancel(r);
            if (how == 3) {
                detach_now(r, dflags);
                return;
            }
            break;
        case 4:
            detach_now(r, 0);
            return;
        case 5:
            detach_now(r, BGJOB_DETACH_CANCEL);
            return;
        case 7: {
            int32_t st = -1;
            expect(r, "wait 0 (PENDING)", API(bgjob_job_wait(h, 0, &st)), RC(TIMED_OUT) | RC(OK));
            /* Refused while PENDING; a cancel from a callback may have ended it. */
            release_job(r, false, 0);
            if (atomic_load(&r->released))
                return;
            break;
        }
        default:
            break;
        }
        step("finalize", r);
        tl_call_rec = r;
        expect(r, "finalize", API(bgjob_job_finalize(h)), RC(OK) | RC(NOT_ALLOWED));
        tl_call_rec = NULL;
    }
    finish_kept(r);
}

static void scn_detach(uint64_t *rng)
{
    struct rec *r = rec_new(S_DETACH, rng);
    struct mk m = {.flags = 0, .deadline_ms = 0, .policy = 0};
    unsigned state = below(rng, 7);
    static const char *const states[] = {
        "running", "user-paused", "internally paused", "internally paused twice",
        "user- and internally paused", "error-stopped", "PENDING (manual finalize)",
    };
    uint32_t flags = chance(rng, 2) ? BGJOB_DETACH_CANCEL : 0;
    bgjob_job *h;

    r->has_comp = true;
    r->comp_ctx = chance(rng, 4);
    r->plan = chance(rng, 4) ? P_HOOKS : P_LOOP;
    r->iters = 30 + (int)below(rng, 400);
    r->nhooks = 1;
    r->rc_plan = chance(rng, 4) ? 21 : 0;
    r->succeed_anyway = chance(rng, 3);
    if (state == 5) {
        r->plan = P_IOERR;
        r->io_policy = BGJOB_ERROR_POLICY_STOP;
        r->io_code = EIO;
        m.policy = BGJOB_ERROR_POLICY_STOP;
    }
    if (state == 6) {
        r->plan = P_RETURN;
        r->has_fin = true;
        m.flags = BGJOB_CREATE_MANUAL_FINALIZE;
    }
    describe(r, "detach%s when %s", flags ? "+cancel" : "", states[state]);
    if (make_job(r, rng, &m) != BGJOB_RESULT_OK)
        return;
    h = atomic_load(&r->h);
    sleep_us(below(rng, 400));
    switch (state) {
    case 1:
        expect(r, "pause", API(bgjob_job_pause(h)), RC(OK) | RC(NOT_ALLOWED));
        break;
    case 2:
    case 3:
        expect(r, "pause_internal", API(bgjob_job_pause_internal(h)), RC(OK) | RC(NOT_ALLOWED));
        if (state == 3)
            expect(r, "pause_internal", API(bgjob_job_pause_internal(h)), RC(OK) | RC(NOT_ALLOWED));
        break;
    case 4:
        expect(r, "pause", API(bgjob_job_pause(h)), RC(OK) | RC(NOT_ALLOWED));
        expect(r, "pause_internal", API(bgjob_job_pause_internal(h)), RC(OK) | RC(NOT_ALLOWED));
        break;
    case 5:
        for (int i = 0; i < 200; i++) {
            bgjob_info info = {.struct_size = sizeof info};
            if (API(bgjob_job_get_info(h, &info)) != BGJOB_RESULT_OK || is_terminal(info.state))
                break;
            if (info.iostatus != BGJOB_IOSTATUS_OK) {
                if (info.state != BGJOB_STATE_PAUSED)
                    violation(V_IOSTATUS, "job %" PRIu64 " [%s]: iostatus %d in state %s",
                              r->serial, r->what, info.iostatus, bgjob_state_str(info.state));
                break;
            }
            sleep_us(100);
        }
        break;
    case 6:
        poll_until(r, BGJOB_STATE_PENDING);
        break;
    default:
        break;
    }
    sleep_us(below(rng, 300));
    do_info(r);
    detach_now(r, flags);
    if (!atomic_load(&r->released)) /* refused: end it ourselves */
        finish_kept(r);
}

static void scn_errpolicy(uint64_t *rng)
{
    struct rec *r = rec_new(S_ERRPOLICY, rng);
    struct mk m = {.flags = 0, .deadline_ms = 0, .policy = 0};
    bgjob_job *h;
    unsigned what = below(rng, 4);

    r->plan = P_IOERR;
    r->io_policy = (int32_t)below(rng, 4);
    r->io_code = chance(rng, 2) ? ENOSPC : EIO;
    r->succeed_anyway = chance(rng, 4);
    set_completion(r, rng);
    m.policy = r->io_policy;
    describe(r, "policy %d, code %s, then %s", r->io_policy, r->io_code == ENOSPC ? "ENOSPC" : "EIO",
             what == 0 ? "resume" : what == 1 ? "cancel" : what == 2 ? "detach" : "resume after set_error_policy");
    if (make_job(r, rng, &m) != BGJOB_RESULT_OK)
        return;
    h = atomic_load(&r->h);
    expect(r, "set_error_policy (bad)", API(bgjob_job_set_error_policy(h, 99)),
           RC(INVALID_ARGUMENT) | RC(NOT_ALLOWED));
    /* Until it ends: every error stop is answered, so nothing waits for ever. */
    for (bool cancelled = false;;) {
        bgjob_info info = {.struct_size = sizeof info};
        bool was = atomic_load(&r->observed);
        int32_t rc = API(bgjob_job_get_info(h, &info));
        expect(r, "get_info", rc, RC(OK));
        if (rc != BGJOB_RESULT_OK)
            break;
        observe(r, info.state, "get_info");
        observe_nonterminal(r, info.state, was, "get_info");
        if (is_terminal(info.state))
            break;
        if (info.iostatus != BGJOB_IOSTATUS_OK) {
            if (info.state != BGJOB_STATE_PAUSED)
                violation(V_IOSTATUS, "job %" PRIu64 " [%s]: iostatus %d in state %s", r->serial,
                          r->what, info.iostatus, bgjob_state_str(info.state));
            if (what == 1 && !cancelled) {
                do_cancel(r);
                cancelled = true;
            } else if (what == 2) {
                detach_now(r, chance(rng, 2) ? BGJOB_DETACH_CANCEL : 0);
                return;
            } else {
                if (what == 3) {
                    atomic_store(&r->policy_changed, 1);
                    expect(r, "set_error_policy", API(bgjob_job_set_error_policy(h, BGJOB_ERROR_POLICY_IGNORE)),
                           RC(OK) | RC(NOT_ALLOWED));
                }
                expect(r, "resume (error-stopped)", API(bgjob_job_resume(h)), RC(OK) | RC(NOT_ALLOWED));
            }
        }
        sleep_us(200 + below(rng, 500));
    }
    finish_kept(r);
}

static void scn_deadline(uint64_t *rng)
{
    struct rec *r = rec_new(S_DEADLINE, rng);
    struct mk m = {.flags = 0, .deadline_ms = 0, .policy = 0};
    bgjob_job *h;
    bool later = chance(rng, 2);

    r->plan = chance(rng, 2) ? P_LOOP : P_HOOKS;
    r->iters = 20 + (int)below(rng, 200);
    r->nhooks = 1 + (int)below(rng, 2);
    r->hook_sleep_us = (int)below(rng, 1000);
    r->succeed_anyway = chance(rng, 5);
    set_completion(r, rng);
    if (!later)
        m.deadline_ms = 1 + below(rng, 10);
    else
        m.flags = chance(rng, 2) ? BGJOB_CREATE_DEFER_START : 0;
    describe(r, "deadline %s", later ? "set later" : "from options");
    if (make_job(r, rng, &m) != BGJOB_RESULT_OK)
        return;
    h = atomic_load(&r->h);
    if (later) {
        expect(r, "set_deadline", API(bgjob_job_set_deadline(h, 1 + below(rng, 8))),
               RC(OK) | RC(NOT_ALLOWED));
        if (m.flags & BGJOB_CREATE_DEFER_START) {
            tl_call_rec = r;
            expect(r, "start", API(bgjob_job_start(h)), RC(OK));
            tl_call_rec = NULL;
        }
    }
    if (chance(rng, 3)) {
        expect(r, "pause", API(bgjob_job_pause(h)), RC(OK) | RC(NOT_ALLOWED));
        sleep_us(below(rng, 3000));
        expect(r, "resume", API(bgjob_job_resume(h)), RC(OK) | RC(NOT_ALLOWED));
    }
    finish_kept(r);
}

static void scn_child(uint64_t *rng)
{
    struct rec *r = rec_new(S_CHILD, rng);
    struct mk m = {.flags = 0, .deadline_ms = 0, .policy = 0};
    unsigned what = below(rng, 4);

    r->plan = P_CHILD;
    r->child_kind = (int)below(rng, 3);
    r->succeed_anyway = chance(rng, 5);
    set_completion(r, rng);
    describe(r, "child %s, %s", r->child_kind == 0 ? "true" : r->child_kind == 1 ? "sleep" : "sh echo",
             what == 0 ? "cancelled" : what == 1 ? "paused and resumed" : what == 2 ? "detached+cancel" : "left alone");
    if (make_job(r, rng, &m) != BGJOB_RESULT_OK)
        return;
    sleep_us(below(rng, 20000));
    switch (what) {
    case 0:
        if (chance(rng, 2))
            cancel_elsewhere(r, 0);
        else
            do_cancel(r);
        break;
    case 1:
        expect(r, "pause", API(bgjob_job_pause(atomic_load(&r->h))), RC(OK) | RC(NOT_ALLOWED));
        sleep_us(below(rng, 5000));
        expect(r, "resume", API(bgjob_job_resume(atomic_load(&r->h))), RC(OK) | RC(NOT_ALLOWED));
        break;
    case 2:
        detach_now(r, BGJOB_DETACH_CANCEL);
        return;
    default:
        break;
    }
    finish_kept(r);
}

static void scn_rit(uint64_t *rng)
{
    struct rec *r = rec_new(S_RIT, rng);
    unsigned mode = below(rng, 3);
    bgjob_job *h = NULL;
    bgjob_context *c = contexts[below(rng, N_CONTEXTS)];
    int32_t rc;

    r->plan = chance(rng, 2) ? P_RETURN : P_LOOP;
    r->iters = 5 + (int)below(rng, 50);
    r->rc_plan = chance(rng, 4) ? 9 : 0;
    describe(r, "run_in_thread %s", mode == 0 ? "fire-and-forget" : mode == 1 ? "through a context, no handle" : "kept handle");
    if (mode == 0) {
        r->has_comp = false;
        atomic_store(&r->detached, 1);
        atomic_store(&r->release_claim, 1);
        rc = API(bgjob_run_in_thread(NULL, "fz-rit", fz_worker, token_new(TK_WORKER, r, NULL),
                                     token_free, NULL, NULL, NULL, NULL));
    } else {
        r->has_comp = true;
        r->comp_ctx = true;
        if (mode == 1) {
            atomic_store(&r->detached, 1);
            atomic_store(&r->release_claim, 1);
        }
        rc = API(bgjob_run_in_thread(c, "fz-rit", fz_worker, token_new(TK_WORKER, r, NULL),
                                     token_free, completion, token_new(TK_COMPLETION, r, NULL),
                                     token_free, mode == 2 ? &h : NULL));
    }
    expect(r, "run_in_thread", rc, RC(OK) | RC(TRY_AGAIN));
    if (rc != BGJOB_RESULT_OK)
        return;
    atomic_store(&r->created, 1);
    if (mode == 2) {
        uint64_t id = 0;
        API(bgjob_job_get_id(h, &id));
        r->id = id;
        atomic_store(&r->h, h);
        finish_kept(r);
    }
}

static void scn_wrongtype(uint64_t *rng)
{
    struct rec *r = rec_new(S_WRONGTYPE, rng);
    struct mk m = {.flags = BGJOB_CREATE_DEFER_START, .deadline_ms = 0, .policy = 0};
    bgjob_txn *t = NULL;
    bgjob_context *c = contexts[below(rng, N_CONTEXTS)];
    bgjob_job *h;
    int32_t st, fd;
    size_t n;
    bgjob_info info = {.struct_size = sizeof info};

    r->plan = P_RETURN;
    r->has_comp = chance(rng, 2);
    describe(r, "handles of the wrong type");
    if (make_job(r, rng, &m) != BGJOB_RESULT_OK)
        return;
    h = atomic_load(&r->h);
    expect(NULL, "txn_create", API(bgjob_txn_create(0, &t)), RC(OK));
#define WRONG(call, what)                                                                  \
    do {                                                                                   \
        int32_t w_ = API(call);                                                            \
        if (w_ != BGJOB_RESULT_INVALID_HANDLE)                                             \
            violation(V_HANDLE, "%s returned %s, not INVALID_HANDLE", what,               \
                      bgjob_result_str(w_));                                               \
    } while (0)
    switch (below(rng, 8)) {
    case 0:
        WRONG(bgjob_job_get_state((bgjob_job *)(void *)t, &st), "get_state(a txn handle)");
        break;
    case 1:
        WRONG(bgjob_job_get_info((bgjob_job *)(void *)c, &info), "get_info(a context handle)");
        break;
    case 2:
        WRONG(bgjob_txn_cancel((bgjob_txn *)(void *)h), "txn_cancel(a job handle)");
        break;
    case 3:
        WRONG(bgjob_context_pending((bgjob_context *)(void *)h, &n), "context_pending(a job handle)");
        break;
    case 4:
        WRONG(bgjob_context_get_fd((bgjob_context *)(void *)t, &fd), "context_get_fd(a txn handle)");
        break;
    case 5:
        WRONG(bgjob_txn_finalize((bgjob_txn *)(void *)c), "txn_finalize(a context handle)");
        break;
    case 6:
        WRONG(bgjob_job_cancel((bgjob_job *)(void *)t, &st), "job_cancel(a txn handle)");
        break;
    default:
        WRONG(bgjob_txn_add((bgjob_txn *)(void *)h, (bgjob_job *)(void *)t), "txn_add(job, txn) swapped");
        break;
    }
#undef WRONG
    if (t != NULL)
        expect(NULL, "txn_destroy", API(bgjob_txn_destroy(t)), RC(OK));
    /* Destroying a CREATED job cancels it; its completion still comes. */
    release_job(r, false, 0);
}

static void scn_reenter(uint64_t *rng)
{
    struct rec *r = rec_new(S_REENTER, rng);
    struct mk m = {.flags = 0, .deadline_ms = 0, .policy = 0};
    bgjob_job *h;

    r->plan = chance(rng, 2) ? P_RETURN : P_LOOP;
    r->iters = 5 + (int)below(rng, 80);
    r->rc_plan = chance(rng, 4) ? 5 : 0;
    r->has_comp = true;
    r->comp_ctx = chance(rng, 3);
    r->self_destroy = true;
    describe(r, "completion destroys its own job, callbacks poke others");
    if (make_job(r, rng, &m) != BGJOB_RESULT_OK)
        return;
    h = atomic_load(&r->h);
    /* The completion may destroy the handle under us: INVALID_HANDLE then. */
    for (int i = 0; i < 3; i++) {
        int32_t st;
        switch (below(rng, 4)) {
        case 0:
            atomic_fetch_add(&r->cancels, 1);
            expect(r, "cancel", API(bgjob_job_cancel(h, &st)), RC(OK));
            break;
        case 1:
            expect(r, "pause", API(bgjob_job_pause(h)), RC(OK) | RC(NOT_ALLOWED));
            expect(r, "resume", API(bgjob_job_resume(h)), RC(OK) | RC(NOT_ALLOWED));
            break;
        default:
            list_all();
            poke_other(rng, false);
            break;
        }
    }
    step("wait for a self-destroying job's completion", r);
    while (atomic_load(&r->comp_calls) == 0)
        sleep_us(200);
}

/* ---- the driver-grade model's scenarios ------------------------------------------------- */

static uint64_t next_speed(struct rec *r)
{
    return ((r->serial & 0xffffffffu) << 16) | (uint64_t)(atomic_fetch_add(&r->speed_k, 1) % 65535 + 1);
}

/* One verb or owner call on a running job, as a driver's loop would make it. */
static void ext_verb(struct rec *r, bgjob_job *h, unsigned v, uint64_t *rng)
{
    int32_t rc;

    trail_add(r, "verb %u", v);
    switch (v) {
    case 0:
        rc = API(bgjob_job_pause(h));
        expect(r, "pause", rc, RC(OK) | RC(NOT_ALLOWED));
        if (rc == BGJOB_RESULT_OK)
            atomic_fetch_add(&r->pauses_ok, 1);
        break;
    case 1:
        expect(r, "resume", API(bgjob_job_resume(h)), RC(OK) | RC(NOT_ALLOWED));
        break;
    case 2:
        rc = API(bgjob_job_set_speed(h, next_speed(r)));
        expect(r, "set_speed", rc, RC(OK) | RC(NOT_ALLOWED));
        if (rc == BGJOB_RESULT_OK)
            atomic_fetch_add(&r->speeds_ok, 1);
        break;
    case 3:
        expect(r, "set_ready", API(bgjob_job_set_ready(h)), RC(OK) | RC(NOT_ALLOWED));
        break;
    case 4:
        rc = API(bgjob_job_complete(h));
        expect(r, "complete", rc, RC(OK) | RC(NOT_ALLOWED));
        if (rc == BGJOB_RESULT_OK)
            atomic_fetch_add(&r->completes_ok, 1);
        break;
    case 5:
        if (chance(rng, 2)) {
            do_cancel(r);
        } else {
            struct rec *saved = tl_call_rec;
            atomic_fetch_add(&r->cancels, 1);
            tl_call_rec = r;
            expect(r, "cancel_soft", API(bgjob_job_cancel_soft(h, NULL)), RC(OK));
            tl_call_rec = saved;
        }
        break;
    case 6:
        if (!r->ext)
            break;
        expect(r, "set_total (owner)", API(bgjob_job_set_total(h, 100)), RC(OK) | RC(NOT_ALLOWED));
        expect(r, "add_units (owner)", API(bgjob_job_add_units(h, 1)), RC(OK) | RC(NOT_ALLOWED));
        expect(r, "set_phase (owner)", API(bgjob_job_set_phase(h, "mirroring")), RC(OK) | RC(NOT_ALLOWED));
        break;
    case 7: {
        bgjob_error_action act = -1;
        if (!r->ext)
            break;
        rc = API(bgjob_job_report_io_error(h, chance(rng, 2) ? EIO : ENOSPC, "fuzz io error", &act));
        expect(r, "report_io_error (owner)", rc, RC(OK) | RC(NOT_ALLOWED));
        if (rc == BGJOB_RESULT_OK && act == BGJOB_ERROR_ACTION_STOP)
            atomic_fetch_add(&r->io_stops, 1);
        break;
    }
    case 8:
        ref_roundtrip(r, h, "by its actor");
        break;
    case 9:
        cancel_elsewhere(r, (int)below(rng, 500));
        break;
    case 10:
        if (r->ext)
            svc_request(r, (int)below(rng, 800), A_END, NULL, chance(rng, 2) ? 0 : 19);
        break;
    default:
        do_info(r);
        break;
    }
}

/* External jobs: the actor drives them as an event loop would, the
 * canceller thread (another owner) and callbacks end them at random
 * moments while verbs reach the control callback. */
static void scn_external(uint64_t *rng)
{
    struct rec *r = rec_new(S_EXTERNAL, rng);
    struct mk m = {.flags = 0, .deadline_ms = 0, .policy = 0, .parent = NULL, .may_refuse = false};
    unsigned nact = 2 + below(rng, 10);
    bool detached = false;
    bgjob_job *h;

    r->ext = true;
    r->has_ctl = true;
    r->ctl_end_on_cancel = chance(rng, 3);
    r->ctl_reenter = chance(rng, 2);
    set_completion(r, rng);
    if (enabled[S_EVENTS] && chance(rng, 2)) {
        r->has_ev = true;
        r->ev_reenter = chance(rng, 2);
    }
    m.flags = chance(rng, 3) ? BGJOB_CREATE_DEFER_START : 0;
    if (chance(rng, 8))
        m.deadline_ms = 1 + below(rng, 20);
    m.policy = (int32_t)below(rng, 4);
    describe(r, "%u verbs, control %s%s, policy %d%s", nact,
             r->ctl_end_on_cancel ? "ends it on CANCEL" : "records", r->ctl_reenter ? " and re-enters" : "",
             m.policy, m.deadline_ms ? ", deadline" : "");
    if (make_job(r, rng, &m) != BGJOB_RESULT_OK)
        return;
    h = atomic_load(&r->h);
    if (m.flags & BGJOB_CREATE_DEFER_START) {
        if (chance(rng, 6)) {
            /* Never started: its control callback is never called. */
            r->never_started = true;
            if (chance(rng, 2)) {
                release_job(r, false, 0);
                return;
            }
            do_cancel(r);
            finish_kept(r);
            return;
        }
        tl_call_rec = r;
        int32_t rc = API(bgjob_job_start(h));
        tl_call_rec = NULL;
        expect(r, "start", rc, RC(OK) | RC(NOT_ALLOWED));
        if (rc != BGJOB_RESULT_OK) { /* a callback's poke cancelled it while CREATED */
            r->never_started = true;
            finish_kept(r);
            return;
        }
    }
    for (unsigned i = 0; i < nact; i++) {
        if (chance(rng, 14)) {
            detach_now(r, chance(rng, 2) ? BGJOB_DETACH_CANCEL : 0);
            detached = atomic_load(&r->released);
            if (detached)
                break;
        }
        ext_verb(r, h, below(rng, 12), rng);
        sleep_us(below(rng, 300));
    }
    /* The owner ends it (if nobody did): success, a failure, or as cancelled. */
    if (chance(rng, 3)) {
        for (unsigned i = 0; i < 3; i++)
            ext_verb(r, h, below(rng, 3), rng);
    }
    ext_end(r, h, chance(rng, 3) ? 0 : chance(rng, 2) ? 17 : CANCELLED_RC, "bgjob_job_end (actor)");
    if (detached)
        return;
    if (wait_end_rec(r) >= 0) {
        /* Its work is done: verbs that need it running are refused, the
         * control callback hears nothing more. */
        expect(r, "set_speed (ended)", API(bgjob_job_set_speed(h, next_speed(r))), RC(NOT_ALLOWED));
        expect(r, "bgjob_job_end (ended)", API(bgjob_job_end(h, 0, NULL)), RC(NOT_ALLOWED));
        expect(r, "pause (ended)", API(bgjob_job_pause(h)), RC(NOT_ALLOWED));
    }
    release_job(r, false, 0);
}

/* Events: a threaded job that becomes READY, paused (STANDBY), completed,
 * soft- or force-cancelled, with an event and usually a control callback
 * that re-enter. */
static void scn_events(uint64_t *rng)
{
    struct rec *r = rec_new(S_EVENTS, rng);
    struct mk m = {.flags = 0, .deadline_ms = 0, .policy = 0, .parent = NULL, .may_refuse = false};
    unsigned nact = 2 + below(rng, 8);
    bgjob_job *h;

    r->plan = P_READY;
    r->iters = 40 + (int)below(rng, 300);
    r->ready_at = (int)below(rng, 20);
    r->succeed_anyway = chance(rng, 5);
    r->has_ev = true;
    r->ev_reenter = chance(rng, 2);
    r->has_ctl = chance(rng, 3) != 0;
    r->ctl_reenter = chance(rng, 2);
    r->ev_destroy = chance(rng, 4);
    set_completion(r, rng);
    if (!r->has_comp && chance(rng, 3))
        r->comp_ctx = true; /* events alone through a context */
    if (chance(rng, 3))
        m.flags |= BGJOB_CREATE_UPDATES_NEVER_PARK;
    describe(r, "READY at %d of %d, %u verbs%s%s", r->ready_at, r->iters, nact,
             r->has_ctl ? ", control callback" : "", r->ev_destroy ? ", END destroys it" : "");
    if (make_job(r, rng, &m) != BGJOB_RESULT_OK)
        return;
    h = atomic_load(&r->h);
    for (unsigned i = 0; i < nact; i++) {
        static const unsigned verbs[] = {0, 1, 2, 4, 5, 8, 9, 11, 0, 1, 4};
        ext_verb(r, h, verbs[below(rng, sizeof verbs / sizeof verbs[0])], rng);
        sleep_us(below(rng, 400));
    }
    /* Let it end: no pause stays (the error policy is REPORT). */
    atomic_store(&r->go, 1);
    step("resume until it ends", r);
    for (;;) {
        int32_t st = -1;
        if (atomic_load(&r->release_claim) || API(bgjob_job_get_state(h, &st)) != BGJOB_RESULT_OK || is_terminal(st) ||
            st == BGJOB_STATE_WAITING || st == BGJOB_STATE_PENDING)
            break;
        if (st == BGJOB_STATE_PAUSED || st == BGJOB_STATE_STANDBY)
            expect(r, "resume", API(bgjob_job_resume(h)), RC(OK) | RC(NOT_ALLOWED));
        sleep_us(200);
    }
    finish_kept(r);
}

/* References: N handles for one job across actors and threads, released in
 * random orders and from its completion while one is kept; a released
 * handle is refused everywhere; lookup finds the job until its last handle
 * is gone. */
static void scn_refs(uint64_t *rng)
{
    struct rec *r = rec_new(S_REFS, rng);
    struct mk m = {.flags = 0, .deadline_ms = 0, .policy = 0, .parent = NULL, .may_refuse = false};
    bgjob_job *hs[5];
    int n, keeper, pending = 0;
    bool detach_keeper = chance(rng, 5);

    r->ext = enabled[S_EXTERNAL] && chance(rng, 3);
    r->has_ctl = r->ext;
    r->ctl_reenter = chance(rng, 2);
    r->plan = chance(rng, 3) ? P_HOOKS : P_LOOP;
    r->iters = 10 + (int)below(rng, 200);
    r->nhooks = 1;
    r->has_comp = chance(rng, 4) != 0;
    r->comp_ctx = chance(rng, 3);
    n = 1 + (int)below(rng, 4);
    keeper = (int)below(rng, (unsigned)n + 1);
    r->nrefs = n;
    describe(r, "%s, %d more handles, keeper %d%s", r->ext ? "external" : "threaded", n, keeper,
             detach_keeper ? ", keeper detaches" : "");
    if (make_job(r, rng, &m) != BGJOB_RESULT_OK)
        return;
    hs[0] = atomic_load(&r->h);
    for (int i = 1; i <= n; i++) {
        uint64_t id = 0;
        int32_t rc = chance(rng, 2) ? API(bgjob_job_ref(hs[below(rng, (unsigned)i)], &hs[i]))
                                    : API(bgjob_job_lookup(r->id, &hs[i]));
        if (rc != BGJOB_RESULT_OK) {
            violation(V_REF, "job %" PRIu64 " [%s]: ref/lookup of a live job returned %s", r->serial, r->what,
                      bgjob_result_str(rc));
            n = i - 1;
            r->nrefs = n;
            if (keeper > n)
                keeper = n;
            break;
        }
        for (int j = 0; j < i; j++)
            if (hs[j] == hs[i])
                violation(V_REF, "job %" PRIu64 " [%s]: a new reference has the value of handle %d", r->serial,
                          r->what, j);
        if (API(bgjob_job_get_id(hs[i], &id)) != BGJOB_RESULT_OK || id != r->id)
            violation(V_REF, "job %" PRIu64 " [%s]: reference %d names id %" PRIu64, r->serial, r->what, i, id);
    }
    {
        bgjob_job *x = NULL;
        expect(r, "lookup (an id never given)", API(bgjob_job_lookup(UINT64_MAX - below(rng, 1000), &x)),
               RC(INVALID_ARGUMENT));
        expect(r, "lookup (id 0)", API(bgjob_job_lookup(0, &x)), RC(INVALID_ARGUMENT));
    }
    /* The keeper becomes the record's handle (the others may go any time). */
    atomic_store(&r->h, hs[keeper]);
    for (int i = 0; i <= n; i++) {
        unsigned way;
        if (i == keeper)
            continue;
        /* Use it first: a verb through any handle acts on the one job. */
        if (chance(rng, 3)) {
            bgjob_info info = {.struct_size = sizeof info};
            if (API(bgjob_job_get_info(hs[i], &info)) != BGJOB_RESULT_OK || info.id != r->id)
                violation(V_REF, "job %" PRIu64 " [%s]: get_info through reference %d gave id %" PRIu64,
                          r->serial, r->what, i, info.id);
        }
        if (chance(rng, 6)) {
            atomic_fetch_add(&r->cancels, 1);
            expect(r, "cancel (through a reference)", API(bgjob_job_cancel(hs[i], NULL)), RC(OK));
        }
        way = below(rng, r->has_comp ? 5 : 4);
        if (i == 0 && way < 4)
            atomic_store(&r->creator_going, 1);
        switch (way) {
        case 0:
        case 1:
            release_ref(r, hs[i], (int)below(rng, 3), "by the actor");
            break;
        case 2:
        case 3:
            svc_request(r, (int)below(rng, 300), A_RELEASE, hs[i], (int32_t)below(rng, 3));
            break;
        default:
            atomic_store(&r->stash[atomic_fetch_add(&r->nstash, 1)], hs[i]);
            pending++;
            break;
        }
        sleep_us(below(rng, 200));
    }
    if (r->ext)
        ext_end(r, hs[keeper], chance(rng, 2) ? 0 : 5, "bgjob_job_end (refs actor)");
    else
        atomic_store(&r->go, 1);
    if (detach_keeper && pending == 0) {
        /* The last handle's detach is the job's; a lookup may still find
         * it until it ended, and that handle's release is only its own. */
        step("wait for the other handles' release", r);
        while (atomic_load(&r->refs_released) < n)
            sleep_us(100);
        detach_now(r, chance(rng, 2) ? BGJOB_DETACH_CANCEL : 0);
        bgjob_job *x = NULL;
        int32_t rc = API(bgjob_job_lookup(r->id, &x));
        expect(r, "lookup (a detached job)", rc, RC(OK) | RC(INVALID_ARGUMENT));
        if (rc == BGJOB_RESULT_OK && API(bgjob_job_destroy(x)) != BGJOB_RESULT_OK)
            violation(V_REF, "job %" PRIu64 " [%s]: destroy of a looked-up handle of a detached job refused",
                      r->serial, r->what);
        return;
    }
    wait_end_rec(r);
    /* Handles left for a completion that ran before they were left. */
    /* (Its own reference, taken inside, is gone once it returned; so is the
     * handle bgjob holds for the call, made when the creator's was released
     * first, once its userdata was freed -- not yet when the callback's last
     * line ran (seed 128: a lookup then found that handle); the same for an
     * event call once the END event's userdata was freed.) */
    step("wait for the completion and the last event", r);
    while ((r->has_comp && atomic_load(&r->comp_frees) == 0) || (r->has_ev && atomic_load(&r->ev_frees) == 0))
        sleep_us(100);
    for (int i = 0; i < atomic_load(&r->nstash); i++) {
        bgjob_job *sh = atomic_exchange(&r->stash[i], NULL);
        if (sh != NULL)
            release_ref(r, sh, 0, "by the actor, after the completion");
    }
    step("wait for the other handles' release", r);
    while (atomic_load(&r->refs_released) < n)
        sleep_us(100);
    release_job(r, false, 0);
    if (atomic_load(&r->released)) {
        bgjob_job *x = NULL;
        int32_t rc = API(bgjob_job_lookup(r->id, &x));
        if (rc != BGJOB_RESULT_INVALID_ARGUMENT)
            violation(V_REF, "job %" PRIu64 " [%s]: lookup after its last handle was released returned %s",
                      r->serial, r->what, bgjob_result_str(rc));
        if (rc == BGJOB_RESULT_OK)
            bgjob_job_destroy(x);
        stale_check(r, hs[keeper], "the keeper's destroy");
    }
}

static bool listed_in(const bgjob_job_entry *e, size_t n, uint64_t id, int32_t *state);

/* After a cancel of x returned: every sub-job below it that has not ended
 * has its cancel requested, with cause PARENT unless cancelled itself. */
static void check_flow(struct rec *x, int depth)
{
    int n = atomic_load(&x->nkids);

    for (int i = 0; i < n && depth < 4; i++) {
        struct rec *d = x->kids[i];
        bgjob_info info = {.struct_size = sizeof info};
        bgjob_job *dh = atomic_load(&d->h);
        if (dh != NULL && API(bgjob_job_get_info(dh, &info)) == BGJOB_RESULT_OK) {
            bool running = info.state == BGJOB_STATE_CREATED || info.state == BGJOB_STATE_RUNNING ||
                           info.state == BGJOB_STATE_PAUSED || info.state == BGJOB_STATE_READY ||
                           info.state == BGJOB_STATE_STANDBY;
            if (running && !info.cancel_requested)
                violation(V_FAMILY, "job %" PRIu64 " [%s]: %s, not cancelled, after the cancel of its "
                          "ancestor %" PRIu64 " returned", d->serial, d->what, bgjob_state_str(info.state),
                          x->serial);
            if (info.cancel_requested && atomic_load(&d->cancels) == 0 &&
                info.cancel_cause != BGJOB_CANCEL_CAUSE_PARENT)
                violation(V_FAMILY, "job %" PRIu64 " [%s]: cancelled only through its parent, cause %d",
                          d->serial, d->what, info.cancel_cause);
        }
        check_flow(d, depth + 1);
    }
}

static void node_end(struct rec *r, uint64_t *rng)
{
    if (r->ext)
        ext_end(r, atomic_load(&r->h), chance(rng, 3) ? 13 : 0, "bgjob_job_end (sub-job owner)");
    else
        atomic_store(&r->go, 1);
}

/* Sub-jobs: trees of 2-3 levels, threaded and external nodes, cancels at
 * random levels; parents stay WAITING until their children ended. */
static void scn_subjobs(uint64_t *rng)
{
    struct rec *node[7];
    bool cancelled[7] = {false};
    int n = 0;
    unsigned nact = 1 + below(rng, 5);
    bool detach_root = chance(rng, 6);

    for (int want = 1 + (int)below(rng, 6); n < want && n < 7;) {
        int p = n == 0 ? -1 : (int)below(rng, (unsigned)n);
        struct rec *r, *pr = p >= 0 ? node[p] : NULL;
        struct mk m = {.flags = 0, .deadline_ms = 0, .policy = 0, .parent = NULL, .may_refuse = p >= 0};
        int depth = 0;
        for (struct rec *a = pr; a != NULL; a = a->parent)
            depth++;
        if (pr != NULL && (depth >= 3 || atomic_load(&pr->nkids) >= 3))
            break;
        if (pr != NULL && chance(rng, 10) && !cancelled[p]) {
            do_cancel(pr); /* the child is born cancelled */
            cancelled[p] = true;
        }
        r = rec_new(S_SUBJOBS, rng);
        r->ext = enabled[S_EXTERNAL] && chance(rng, 3);
        r->has_ctl = r->ext;
        r->ctl_end_on_cancel = chance(rng, 2);
        r->plan = P_LOOP;
        r->iters = 400 + (int)below(rng, 1000);
        r->rc_plan = chance(rng, 4) ? 11 : 0;
        r->has_comp = chance(rng, 3) != 0;
        r->comp_ctx = chance(rng, 3);
        r->parent = pr;
        describe(r, "node %d of a tree, under %" PRIu64 ", %s, rc %d", n, pr ? pr->serial : 0,
                 r->ext ? "external" : "threaded", r->rc_plan);
        m.parent = pr != NULL ? atomic_load(&pr->h) : NULL;
        if (pr != NULL)
            atomic_fetch_add(&pr->kid_tries, 1);
        if (make_job(r, rng, &m) != BGJOB_RESULT_OK) {
            if (pr != NULL)
                atomic_fetch_add(&pr->kid_refused, 1);
            break;
        }
        if (pr != NULL) {
            pr->kids[atomic_load(&pr->nkids)] = r;
            atomic_fetch_add(&pr->nkids, 1);
            if (cancelled[p]) {
                bgjob_info info = {.struct_size = sizeof info};
                if (API(bgjob_job_get_info(atomic_load(&r->h), &info)) == BGJOB_RESULT_OK &&
                    (!info.cancel_requested ||
                     (atomic_load(&r->cancels) == 0 && info.cancel_cause != BGJOB_CANCEL_CAUSE_PARENT)))
                    violation(V_FAMILY, "job %" PRIu64 " [%s]: made under a cancelled parent, cancel "
                              "requested %d, cause %d", r->serial, r->what, info.cancel_requested,
                              info.cancel_cause);
            }
        }
        node[n++] = r;
    }
    if (n == 0)
        return;
    if (detach_root)
        detach_now(node[0], 0); /* only the link is kept */
    for (unsigned i = 0; i < nact; i++) {
        int x = (int)below(rng, (unsigned)n);
        bgjob_job *xh = atomic_load(&node[x]->h);
        if (x == 0 && detach_root)
            continue;
        switch (below(rng, 5)) {
        case 0:
        case 1:
            do_cancel(node[x]);
            cancelled[x] = true;
            check_flow(node[x], 0);
            break;
        case 2:
            node_end(node[x], rng);
            break;
        case 3: {
            int32_t rc = API(bgjob_job_pause(xh));
            expect(node[x], "pause", rc, RC(OK) | RC(NOT_ALLOWED));
            if (rc == BGJOB_RESULT_OK)
                atomic_fetch_add(&node[x]->pauses_ok, 1);
            sleep_us(below(rng, 300));
            expect(node[x], "resume", API(bgjob_job_resume(xh)), RC(OK) | RC(NOT_ALLOWED));
            break;
        }
        default: {
            /* The listing shows the tree. */
            size_t cnt = 0, cap;
            bgjob_job_entry *e;
            API(bgjob_list_jobs_sized(NULL, sizeof *e, 0, &cnt));
            cap = cnt + 32;
            e = calloc(cap, sizeof *e);
            if (e == NULL)
                abort();
            if (API(bgjob_list_jobs_sized(e, sizeof *e, cap, &cnt)) == BGJOB_RESULT_OK)
                for (size_t k = 0; k < cnt && k < cap; k++)
                    for (int j = 0; j < n; j++)
                        if (e[k].id == node[j]->id) {
                            uint64_t want = node[j]->parent ? node[j]->parent->id : 0;
                            int32_t pst = -1;
                            bool plisted = want != 0 && listed_in(e, cnt < cap ? cnt : cap, want, &pst);
                            /* The parent's id, also once the parent was freed (it
                             * ended, detached): it once read 0 then. */
                            if (e[k].parent_id != want)
                                violation(V_FAMILY, "job %" PRIu64 " [%s]: listed %s with parent id %" PRIu64
                                          ", not %" PRIu64 " (the parent %s%s%s, %d of its sub-jobs)",
                                          node[j]->serial, node[j]->what, bgjob_state_str(e[k].state),
                                          e[k].parent_id, want, plisted ? "listed " : "not listed",
                                          plisted ? bgjob_state_str(pst) : "",
                                          atomic_load(&node[j]->parent->detached) ? ", detached" : "",
                                          atomic_load(&node[j]->parent->nkids));
                            check_entry(&e[k], "list_jobs_sized (tree)");
                        }
            free(e);
            break;
        }
        }
        sleep_us(below(rng, 300));
    }
    /* Every node's work ends, in a random order; a parent then waits for its children. */
    /* (A detached external root's handle stays valid for its owner until
     * bgjob_job_end returns.) */
    for (int k = 0; k < n; k++) {
        int j = (int)below(rng, (unsigned)n);
        if (!(j == 0 && detach_root && !node[0]->ext))
            node_end(node[j], rng);
    }
    for (int j = 0; j < n; j++)
        if (!(j == 0 && detach_root && !node[0]->ext))
            node_end(node[j], rng); /* a second end of an external node: NOT_ALLOWED */
    for (int j = 0; j < n; j++) {
        struct rec *r = node[j];
        if (j == 0 && detach_root)
            continue;
        int32_t st = wait_end_rec(r); /* checks its children ended first */
        bgjob_info info = {.struct_size = sizeof info};
        if (st >= 0 && API(bgjob_job_get_info(atomic_load(&r->h), &info)) == BGJOB_RESULT_OK &&
            !info.cancel_requested && !r->ext) {
            /* Its own outcome: a child's failure does not fail it. */
            int32_t want = r->rc_plan == 0 ? BGJOB_STATE_COMPLETED : BGJOB_STATE_FAILED;
            if (st != want)
                violation(V_FAMILY, "job %" PRIu64 " [%s]: ended %s, not %s (its worker's outcome)", r->serial,
                          r->what, bgjob_state_str(st), bgjob_state_str(want));
        }
        if (j == 0 && st >= 0) {
            /* A parent whose work is done takes no child. */
            struct rec *c = rec_new(S_SUBJOBS, rng);
            struct mk m = {.flags = 0, .deadline_ms = 0, .policy = 0, .parent = atomic_load(&r->h), .may_refuse = true};
            int32_t rc;
            c->plan = P_RETURN;
            describe(c, "made under an ended parent");
            rc = make_job(c, rng, &m);
            if (rc == BGJOB_RESULT_OK) {
                violation(V_FAMILY, "job %" PRIu64 " [%s]: create under an ended parent succeeded", c->serial,
                          c->what);
                finish_kept(c);
            }
        }
    }
    for (int j = n - 1; j >= 0; j--)
        if (!(j == 0 && detach_root))
            release_job(node[j], false, 0);
}

/* Statistics: batches written by the worker (or owner), the actor and the
 * canceller thread at once, read by the actor: never torn, never a refused
 * batch's value; final after the end. */
static void scn_stats(uint64_t *rng)
{
    struct rec *r = rec_new(S_STATS, rng);
    struct mk m = {.flags = BGJOB_CREATE_DEFER_START, .deadline_ms = 0, .policy = 0, .parent = NULL, .may_refuse = false};
    unsigned reads = 5 + below(rng, 30);
    bgjob_job *h;
    uint32_t idx = 99;
    int32_t rc;

    r->ext = enabled[S_EXTERNAL] && chance(rng, 4);
    r->has_ctl = r->ext;
    r->plan = P_STATS;
    r->iters = 50 + (int)below(rng, 400);
    r->nbatch = 1 + (int)below(rng, 5);
    r->nsingle = (int)below(rng, 3);
    for (int i = 0; i < r->nbatch + r->nsingle; i++)
        r->stype[i] = (int32_t)below(rng, 4);
    set_completion(r, rng);
    if (chance(rng, 2))
        m.flags |= BGJOB_CREATE_UPDATES_NEVER_PARK;
    describe(r, "%s, %d batch and %d single statistics, %u reads", r->ext ? "external" : "threaded",
             r->nbatch, r->nsingle, reads);
    if (make_job(r, rng, &m) != BGJOB_RESULT_OK)
        return;
    h = atomic_load(&r->h);
    for (int i = 0; i < r->nbatch + r->nsingle; i++) {
        char name[16];
        snprintf(name, sizeof name, "%s%d", i < r->nbatch ? "b" : "s", i);
        rc = API(bgjob_job_add_stat(h, name, r->stype[i], chance(rng, 2) ? "B" : NULL, &idx));
        expect(r, "add_stat", rc, RC(OK) | RC(NOT_ALLOWED));
        if (rc != BGJOB_RESULT_OK) { /* a poke cancelled it while CREATED */
            r->nbatch = r->nsingle = 0;
            finish_kept(r);
            return;
        }
        if (idx != (uint32_t)i)
            violation(V_STATS, "job %" PRIu64 " [%s]: statistic %d got index %u", r->serial, r->what, i, idx);
    }
    expect(r, "add_stat (a name it has)", API(bgjob_job_add_stat(h, "b0", BGJOB_STAT_TYPE_U64, NULL, &idx)),
           RC(INVALID_ARGUMENT) | RC(NOT_ALLOWED));
    expect(r, "add_stat (type 99)", API(bgjob_job_add_stat(h, "bad", 99, NULL, &idx)),
           RC(INVALID_ARGUMENT) | RC(NOT_ALLOWED));
    tl_call_rec = r;
    rc = API(bgjob_job_start(h));
    tl_call_rec = NULL;
    expect(r, "start", rc, RC(OK) | RC(NOT_ALLOWED));
    if (rc != BGJOB_RESULT_OK) {
        /* A callback's poke cancelled it while CREATED: it never runs. Until
         * that cancel has ended it, it is still CREATED, and another add_stat
         * would be taken (seed 107). */
        r->never_started = true;
        r->nbatch = r->nsingle = 0;
        finish_kept(r);
        return;
    }
    expect(r, "add_stat (started)", API(bgjob_job_add_stat(h, "late", BGJOB_STAT_TYPE_U64, NULL, &idx)),
           RC(NOT_ALLOWED));
    for (unsigned i = 0; i < reads; i++) {
        switch (below(rng, 8)) {
        case 0:
        case 1:
            stats_batch(r, h, 2, false);
            break;
        case 2:
            svc_request(r, (int)below(rng, 300), A_STATS, NULL, 0);
            break;
        case 3:
            stats_batch(r, h, 2, true);
            break;
        case 4:
            stats_single(r, h, rng);
            if (r->stype[0] != BGJOB_STAT_TYPE_DOUBLE)
                expect(r, "set_stat_double (a statistic of another type)",
                       API(bgjob_job_set_stat_double(h, 0, 1.5)), RC(INVALID_ARGUMENT) | RC(NOT_ALLOWED));
            expect(r, "set_stat_u64 (an undeclared index)", API(bgjob_job_set_stat_u64(h, 63, 1)),
                   RC(INVALID_ARGUMENT) | RC(NOT_ALLOWED));
            break;
        case 5: {
            bgjob_stat one;
            size_t cnt = 0;
            rc = API(bgjob_job_get_stats(h, NULL, &one, 1, &cnt));
            expect(r, "get_stats (capacity 1)", rc, RC(OK));
            if (rc == BGJOB_RESULT_OK && cnt != (size_t)(r->nbatch + r->nsingle))
                violation(V_STATS, "job %" PRIu64 " [%s]: get_stats with capacity 1 counted %zu", r->serial,
                          r->what, cnt);
            break;
        }
        case 6:
            if (chance(rng, 4))
                do_cancel(r);
            break;
        default:
            break;
        }
        stats_read(r, h, NULL, "the actor's read");
        sleep_us(below(rng, 200));
    }
    if (r->ext)
        ext_end(r, h, chance(rng, 3) ? 7 : 0, "bgjob_job_end (stats owner)");
    else
        atomic_store(&r->go, 1);
    if (wait_end_rec(r) >= 0) {
        bgjob_stat a[8], b[8];
        /* Final: setters refused, two reads the same. */
        expect(r, "set_stats (ended)", API(bgjob_job_set_stats(h, NULL, 0)), RC(OK) | RC(NOT_ALLOWED));
        stats_batch(r, h, 2, false);
        if (stats_read(r, h, a, "a read after the end") && stats_read(r, h, b, "a read after the end") &&
            memcmp(a, b, sizeof a) != 0)
            violation(V_STATS, "job %" PRIu64 " [%s]: two reads after the end differ", r->serial, r->what);
        if (r->nbatch > 0) {
            uint64_t before = stat_as_u64(&a[0]);
            stats_batch(r, h, 2, false);
            stats_read(r, h, b, "a read after a refused set");
            if (stat_as_u64(&b[0]) != before)
                violation(V_STATS, "job %" PRIu64 " [%s]: a set after the end changed a statistic", r->serial,
                          r->what);
        }
    }
    release_job(r, false, 0);
}

typedef void (*scn_fn)(uint64_t *rng);

static const scn_fn scn_fns[N_ACTOR_SCN] = {
    scn_hooks, scn_txn, scn_finalize, scn_detach, scn_errpolicy,
    scn_deadline, scn_child, scn_rit, scn_wrongtype, scn_reenter,
    scn_external, scn_events, scn_refs, scn_subjobs, scn_stats,
};

static const unsigned scn_weight[N_ACTOR_SCN] = {
    /* hooks txn finalize detach errpolicy deadline child rit wrongtype reenter */
    6, 5, 5, 6, 3, 3, 2, 3, 1, 3,
    /* external events refs subjobs stats */
    4, 3, 3, 2, 2,
};

static long ops_per_actor;

static void *actor_main(void *arg)
{
    struct watched *w = arg;
    uint64_t rng = seed + (uint64_t)w->index * 0x1000193ull;
    unsigned total = 0;

    splitmix(&rng);
    tl_role = ROLE_ACTOR;
    tl_self = w;
    for (int i = 0; i < N_ACTOR_SCN; i++)
        total += enabled[i] ? scn_weight[i] : 0;
    while (tl_ops < ops_per_actor && total > 0) {
        unsigned k = below(&rng, total);
        int s = 0;
        for (; s < N_ACTOR_SCN; s++) {
            unsigned wgt = enabled[s] ? scn_weight[s] : 0;
            if (k < wgt)
                break;
            k -= wgt;
        }
        beat(scn_names[s], NULL);
        scn_fns[s](&rng);
        if (chance(&rng, 4))
            list_all();
    }
    /* An actor with nothing enabled still makes its API calls. */
    while (tl_ops < ops_per_actor) {
        beat("list", NULL);
        list_all();
    }
    atomic_store(&w->beat, 0);
    return NULL;
}

/* ---- service threads ---------------------------------------------------------------- */

static void *dispatcher_main(void *arg)
{
    (void)arg;
    tl_role = ROLE_DISPATCHER;
    tl_self = &svc_dispatcher;
    /* Runs on while detached jobs settle (stopping 1), until stopping 2. */
    while (atomic_load(&stopping) < 2) {
        struct pollfd p[N_CONTEXTS];
        beat("poll", NULL);
        for (int i = 0; i < N_CONTEXTS; i++) {
            int32_t fd = -1;
            bgjob_context_get_fd(contexts[i], &fd);
            p[i].fd = fd;
            p[i].events = POLLIN;
            p[i].revents = 0;
        }
        poll(p, N_CONTEXTS, 10);
        for (int i = 0; i < N_CONTEXTS; i++) {
            if (!(p[i].revents & POLLIN))
                continue;
            beat("dispatch (completions run here)", NULL);
            step("dispatch (completions run here)", NULL);
            expect(NULL, "context_dispatch", API(bgjob_context_dispatch(contexts[i], 0, NULL)), RC(OK));
        }
    }
    atomic_store(&svc_dispatcher.beat, 0);
    return NULL;
}

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_internal_name[32];

static void log_cb(void *ud, const char *line)
{
    struct token *t = ud;

    if (t == NULL || t->magic != TOKEN_MAGIC || t->kind != TK_LOG) {
        violation(V_ONCE, "log callback with a bad or freed userdata");
        return;
    }
    tl_depth++;
    if (tl_role == ROLE_NONE) {
        /* A thread that never ran a worker: a fresh job thread (named after
         * its job, "fz-...") may log before its worker starts; any other is
         * bgjob's own (the timer thread), where no user code may run. */
        char name[32] = "?";
        pthread_getname_np(pthread_self(), name, sizeof name);
        if (strncmp(name, "fz-", 3) != 0) {
            if (atomic_fetch_add(&log_lines_internal, 1) == 0) {
                pthread_mutex_lock(&log_mu);
                snprintf(log_internal_name, sizeof log_internal_name, "%s", name);
                pthread_mutex_unlock(&log_mu);
            }
            violation(V_INTERNAL_THREAD, "the log callback ran on bgjob-internal thread '%s': \"%.120s\"",
                      name, line);
        }
    }
    if ((atomic_fetch_add(&log_lines, 1) & 31) == 0 && enabled[S_REENTER]) {
        list_all();
        uint64_t x = (uint64_t)atomic_load(&log_lines);
        poke_other(&x, false);
    }
    tl_depth--;
}

static void *chaos_main(void *arg)
{
    uint64_t rng = seed ^ 0xcafe;

    (void)arg;
    tl_role = ROLE_CHAOS;
    tl_self = &svc_chaos;
    while (!atomic_load(&stopping)) {
        beat("chaos", NULL);
        if (enabled[S_CAP]) {
            static const uint32_t caps[] = {1, 2, 3, 8};
            uint32_t cap = caps[below(&rng, 4)], got = 99;
            size_t running = 0, queued = 0;
            step("pool cap", NULL);
            expect(NULL, "pool_set_max_running", API(bgjob_pool_set_max_running(cap)), RC(OK));
            expect(NULL, "pool_get_status", API(bgjob_pool_get_status(&got, &running, &queued)), RC(OK));
            sleep_us(500 + below(&rng, 5000));
            expect(NULL, "pool_set_max_running", API(bgjob_pool_set_max_running(0)), RC(OK));
        }
        if (enabled[S_LOG] && chance(&rng, 10)) {
            step("log callback", NULL);
            if (chance(&rng, 3)) {
                expect(NULL, "set_log_callback(NULL)", API(bgjob_set_log_callback(NULL, NULL, NULL)), RC(OK));
            } else {
                atomic_fetch_add(&log_installs, 1);
                expect(NULL, "set_log_callback",
                       API(bgjob_set_log_callback(log_cb, token_new(TK_LOG, NULL, NULL), token_free)),
                       RC(OK));
            }
        }
        sleep_us(1000 + below(&rng, 10000));
    }
    bgjob_pool_set_max_running(0);
    bgjob_set_log_callback(NULL, NULL, NULL);
    atomic_store(&svc_chaos.beat, 0);
    return NULL;
}

/* ---- the watchdog ------------------------------------------------------------------- */

struct list_arg {
    bgjob_job_entry e[64];
    size_t n;
    int32_t rc;
};

static void *list_thread(void *p)
{
    struct list_arg *a = p;
    a->rc = bgjob_list_jobs(a->e, 64, &a->n);
    return NULL;
}

static void print_jobs(const char *why)
{
    static struct list_arg a;
    pthread_t th;
    struct timespec ts;

    memset(&a, 0, sizeof a);
    a.rc = -1;
    if (pthread_create(&th, NULL, list_thread, &a) != 0)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 3;
    if (pthread_timedjoin_np(th, NULL, &ts) != 0) {
        tap_diag("%s: bgjob_list_jobs itself hangs (a job lock is held for ever)", why);
        return;
    }
    tap_diag("%s: %zu live jobs", why, a.n);
    for (size_t i = 0; i < a.n && i < 64; i++)
        tap_diag("  %s: %s, phase '%s', age %" PRId64 " ms", a.e[i].name, bgjob_state_str(a.e[i].state),
                 a.e[i].phase, a.e[i].age_ms);
}

/* Runs a shell command and waits for it. posix_spawn, not system(): fork
 * runs bgjob's atfork handlers, which take bgjob's process-wide locks, and a
 * deadlocked bgjob may hold one of them for ever. */
static int run_sh(const char *cmd)
{
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    pid_t pid;
    int st = 0;

    if (posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ) != 0)
        return -1;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void dump_stacks(void)
{
    char cmd[300];
    int pid = (int)getpid();

    fflush(stdout);
    if (run_sh("command -v gdb >/dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof cmd,
                 "timeout 120 gdb -p %d -batch -nx -ex 'set pagination off' -ex 'thread apply all bt' "
                 "2>&1 | sed 's/^/# /' 1>&2",
                 pid);
    } else if (run_sh("command -v eu-stack >/dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof cmd, "timeout 60 eu-stack -p %d 2>&1 | sed 's/^/# /' 1>&2", pid);
    } else {
        tap_diag("watchdog: neither gdb nor eu-stack is installed: no stacks");
        return;
    }
    tap_diag("watchdog: every thread's stack follows (on stderr)");
    if (run_sh(cmd) != 0)
        tap_diag("watchdog: the stack dump command failed");
}

static void report_stuck(struct watched *w, int64_t now)
{
    const char *st = atomic_load(&w->step);
    struct rec *r = atomic_load(&w->job);

    tap_diag("WATCHDOG (FUZZ_SEED=%" PRIu64 "): %s %d made no progress for %" PRId64
             " ms; it is in '%s'%s%s%s",
             seed, w->name, w->index, (int64_t)(now - atomic_load(&w->beat)), st ? st : "?",
             r ? " on job [" : "", r ? r->what : "", r ? "]" : "");
}

static void *watchdog_main(void *arg)
{
    (void)arg;
    for (;;) {
        int64_t now = now_ms();
        bool stuck = false;
        struct watched *all[MAX_ACTORS + 4];
        int n = 0;

        for (int i = 0; i < nactors; i++)
            all[n++] = &actors[i];
        all[n++] = &svc_dispatcher;
        all[n++] = &svc_canceller;
        all[n++] = &svc_chaos;
        all[n++] = &svc_main;
        for (int i = 0; i < n; i++) {
            long long b = atomic_load(&all[i]->beat);
            if (b != 0 && now - b > stall_ms)
                stuck = true;
        }
        if (stuck) {
            tap_diag("WATCHDOG: a stall of more than %" PRId64 " ms: deadlock or a job that never ends",
                     stall_ms);
            for (int i = 0; i < n; i++) {
                long long b = atomic_load(&all[i]->beat);
                if (b != 0 && now - b > stall_ms)
                    report_stuck(all[i], now);
            }
            print_jobs("watchdog");
            dump_stacks();
            tap_ok(false, "no deadlock, no stall (watchdog fired; FUZZ_SEED=%" PRIu64 ")", seed);
            tap_diag("fuzz: %ld violations before the stall", atomic_load(&violations));
            fflush(stdout);
            _exit(1);
        }
        sleep_ms(250);
    }
    return NULL;
}

/* ---- the end -------------------------------------------------------------------------- */

static bool listed_in(const bgjob_job_entry *e, size_t n, uint64_t id, int32_t *state)
{
    for (size_t i = 0; i < n; i++)
        if (e[i].id == id) {
            *state = e[i].state;
            return true;
        }
    return false;
}

static bool rec_settled(struct rec *r)
{
    if (!atomic_load(&r->created))
        return true;
    if (atomic_load(&r->wfrees) < 1)
        return false;
    if (r->has_comp && atomic_load(&r->comp_frees) < 1)
        return false;
    if (r->has_fin && atomic_load(&r->fin_frees) < 1)
        return false;
    if (r->has_ctl && atomic_load(&r->ctl_frees) < 1)
        return false;
    if (r->has_ev && atomic_load(&r->ev_frees) < 1)
        return false;
    return true;
}

static bgjob_job_entry *snapshot(size_t *n_out)
{
    for (;;) {
        size_t n = 0;
        bgjob_list_jobs(NULL, 0, &n);
        size_t cap = n + 64;
        bgjob_job_entry *e = calloc(cap, sizeof *e);
        if (e == NULL)
            abort();
        if (bgjob_list_jobs(e, cap, &n) == BGJOB_RESULT_OK && n <= cap) {
            *n_out = n;
            return e;
        }
        free(e);
    }
}

/* Groups of jobs that broke one promise, by their scenario with numbers
 * blanked: one line per kind of failure, for the summary. */
#define MAX_GROUPS 64
struct group {
    int cls;
    char what[240];
    long n;
    uint64_t example;
};
static struct group groups[MAX_GROUPS];
static int n_groups;

static void group_add(int cls, struct rec *r)
{
    char w[240];
    size_t i;

    size_t k = 0;

    /* Numbers (serials, codes, sleeps) become one '#'. */
    for (i = 0; r->what[i] != '\0' && k + 1 < sizeof w; i++) {
        bool digit = r->what[i] >= '0' && r->what[i] <= '9';
        if (!digit)
            w[k++] = r->what[i];
        else if (k == 0 || w[k - 1] != '#')
            w[k++] = '#';
    }
    w[k] = '\0';
    for (int g = 0; g < n_groups; g++)
        if (groups[g].cls == cls && strcmp(groups[g].what, w) == 0) {
            groups[g].n++;
            return;
        }
    if (n_groups < MAX_GROUPS) {
        groups[n_groups].cls = cls;
        memcpy(groups[n_groups].what, w, sizeof w);
        groups[n_groups].n = 1;
        groups[n_groups].example = r->serial;
        n_groups++;
    }
}

static void settle(int64_t settle_ms)
{
    int64_t deadline = now_ms() + settle_ms;
    size_t n = 0;
    bgjob_job_entry *e;
    uint64_t x = seed;
    long rounds = 0, late = 0;

    for (;;) {
        bool all = true;
        beat("settle: waiting for detached jobs", NULL);
        /* Orphans first, on every round: a completion still to run (its
         * job's completion userdata not freed, so not settled below) may put
         * one in the table after this pass; it is then listed (it has a
         * handle), so the round after reaps it. */
        for (unsigned i = 0; i < ORPHANS; i++) {
            struct rec *o = orphan_swap(i, NULL);
            if (o != NULL && rounds > 0)
                late++;
            reap_orphan(o, &x);
        }
        rounds++;
        size_t nr = recs_count();
        for (size_t i = 0; i < nr && all; i++)
            if (!rec_settled(rec_at(i)))
                all = false;
        if (all && live_jobs() == 0)
            break;
        if (now_ms() > deadline)
            break;
        sleep_ms(5);
    }
    if (late > 0)
        tap_diag("settle: %ld jobs made inside completions after the first pass over the orphans "
                 "were reaped by a later one",
                 late);
    e = snapshot(&n);
    /* A completion queued on a context whose fd is not readable would look
     * like a job that never ends: say which it is. */
    for (int i = 0; i < N_CONTEXTS; i++) {
        size_t pending = 0;
        int32_t fd = -1;
        bgjob_context_pending(contexts[i], &pending);
        bgjob_context_get_fd(contexts[i], &fd);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ready = poll(&p, 1, 0);
        if (pending > 0)
            violation(V_LEFT, "context %d has %zu completions queued after settling, its fd is %s", i,
                      pending, ready > 0 ? "readable (the dispatcher is stuck?)" : "NOT readable (lost wake-up)");
    }
    size_t nr = recs_count();
    for (size_t i = 0; i < nr; i++) {
        struct rec *r = rec_at(i);
        int32_t st = -1;
        bool listed;

        if (!atomic_load(&r->created))
            continue;
        listed = r->id != 0 && listed_in(e, n, r->id, &st);
        if (atomic_load(&r->detached)) {
            bool ended = r->has_comp ? atomic_load(&r->comp_calls) == 1 : !listed;
            if (listed) {
                atomic_store(&r->stuck, 1);
                group_add(V_NEVER_ENDED, r);
            } else if (!ended || (r->has_fin && atomic_load(&r->runs) &&
                                  (atomic_load(&r->commits) + atomic_load(&r->aborts) != 1 ||
                                   atomic_load(&r->cleans) != 1))) {
                group_add(V_VANISHED, r);
            }
            if (listed)
                violation(V_NEVER_ENDED,
                          "job %" PRIu64 " [%s]: detached, still listed %s after %" PRId64
                          " ms; completion ran %d times, worker ran %d returned %d, commit %d abort %d "
                          "clean %d",
                          r->serial, r->what, bgjob_state_str(st), settle_ms, atomic_load(&r->comp_calls),
                          atomic_load(&r->runs), atomic_load(&r->returns), atomic_load(&r->commits),
                          atomic_load(&r->aborts), atomic_load(&r->cleans));
            else if (!ended)
                violation(V_VANISHED,
                          "job %" PRIu64 " [%s]: detached, gone from the list without ending: "
                          "completion never ran; worker ran %d, commit %d abort %d clean %d, "
                          "userdata freed %d/%d/%d (worker/completion/finalize)",
                          r->serial, r->what, atomic_load(&r->runs), atomic_load(&r->commits),
                          atomic_load(&r->aborts), atomic_load(&r->cleans), atomic_load(&r->wfrees),
                          atomic_load(&r->comp_frees), atomic_load(&r->fin_frees));
            else if (r->has_fin && atomic_load(&r->runs) &&
                     (atomic_load(&r->commits) + atomic_load(&r->aborts) != 1 ||
                      atomic_load(&r->cleans) != 1))
                violation(V_VANISHED,
                          "job %" PRIu64 " [%s]: detached, ended without its finalizers (commit %d "
                          "abort %d clean %d)",
                          r->serial, r->what, atomic_load(&r->commits), atomic_load(&r->aborts),
                          atomic_load(&r->cleans));
        } else if (listed && atomic_load(&r->destroyed)) {
            violation(V_LEFT, "job %" PRIu64 " [%s]: destroyed by its owner, still listed %s",
                      r->serial, r->what, bgjob_state_str(st));
        } else if (listed) {
            /* Not bgjob's fault: a job with a handle is listed. */
            violation(V_LEFT,
                      "job %" PRIu64 " [%s]: never released by the fuzzer (a bookkeeping bug of "
                      "this program: its handle was lost), still listed %s",
                      r->serial, r->what, bgjob_state_str(st));
        }
    }
    if (n > 0) {
        size_t unknown = 0;
        for (size_t i = 0; i < n; i++)
            if (strncmp(e[i].name, "fz-", 3) != 0)
                unknown++;
        violation(V_LEFT, "%zu jobs still listed at the end (%zu not made by a scenario)", n, unknown);
        for (size_t i = 0; i < n && i < 10; i++)
            tap_diag("left: %s, %s, phase '%s'", e[i].name, bgjob_state_str(e[i].state), e[i].phase);
    }
    free(e);
}

static void check_rec(struct rec *r)
{
    if (atomic_load(&r->stuck))
        return;
    if (!atomic_load(&r->created)) {
        if (atomic_load(&r->runs) != 0)
            violation(V_ONCE, "job %" PRIu64 " [%s]: never made, but its worker ran", r->serial, r->what);
        return;
    }
    if (atomic_load(&r->runs) > 1 || atomic_load(&r->returns) != atomic_load(&r->runs))
        violation(V_ONCE, "job %" PRIu64 " [%s]: worker ran %d times, returned %d", r->serial, r->what,
                  atomic_load(&r->runs), atomic_load(&r->returns));
    if (atomic_load(&r->wfrees) != 1)
        violation(V_ONCE, "job %" PRIu64 " [%s]: worker userdata freed %d times", r->serial, r->what,
                  atomic_load(&r->wfrees));
    if (atomic_load(&r->wfree_early))
        violation(V_ONCE, "job %" PRIu64 " [%s]: worker userdata freed while the worker ran", r->serial,
                  r->what);
    if (r->has_comp) {
        if (atomic_load(&r->comp_frees) != 1)
            violation(V_ONCE, "job %" PRIu64 " [%s]: completion userdata freed %d times", r->serial,
                      r->what, atomic_load(&r->comp_frees));
        if (atomic_load(&r->comp_calls) != 1 && !atomic_load(&r->detached))
            violation(V_ONCE, "job %" PRIu64 " [%s]: completion ran %d times", r->serial, r->what,
                      atomic_load(&r->comp_calls));
    }
    if (r->has_fin) {
        if (atomic_load(&r->fin_frees) != 1)
            violation(V_ONCE, "job %" PRIu64 " [%s]: finalize userdata freed %d times", r->serial,
                      r->what, atomic_load(&r->fin_frees));
        int term = atomic_load(&r->terminal);
        if (term == BGJOB_STATE_COMPLETED && atomic_load(&r->commits) != 1)
            violation(V_TXN, "job %" PRIu64 " [%s]: COMPLETED, commit ran %d times", r->serial, r->what,
                      atomic_load(&r->commits));
        if ((term == BGJOB_STATE_FAILED || term == BGJOB_STATE_CANCELLED) && atomic_load(&r->commits))
            violation(V_TXN, "job %" PRIu64 " [%s]: %s, yet committed", r->serial, r->what,
                      bgjob_state_str(term));
    }
    if (atomic_load(&r->line_frees) != atomic_load(&r->line_regs))
        violation(V_ONCE, "job %" PRIu64 " [%s]: %d child line userdata given, %d freed", r->serial,
                  r->what, atomic_load(&r->line_regs), atomic_load(&r->line_frees));
    if (r->has_ctl && atomic_load(&r->ctl_frees) != 1)
        violation(V_ONCE, "job %" PRIu64 " [%s]: control userdata freed %d times", r->serial, r->what,
                  atomic_load(&r->ctl_frees));
    if (r->has_ev) {
        if (atomic_load(&r->ev_frees) != 1)
            violation(V_ONCE, "job %" PRIu64 " [%s]: event userdata freed %d times", r->serial, r->what,
                      atomic_load(&r->ev_frees));
        if (atomic_load(&r->ev_ends) != 1)
            violation(V_EVENT, "job %" PRIu64 " [%s]: %d END events (%d events in all, last state %s)",
                      r->serial, r->what, atomic_load(&r->ev_ends), atomic_load(&r->ev_calls),
                      bgjob_state_str(atomic_load(&r->ev_state)));
    }
    if (r->ext && !r->never_started && atomic_load(&r->end_ok) != 1)
        violation(V_CONTROL, "job %" PRIu64 " [%s]: bgjob_job_end succeeded %d times (the last refused: "
                  "%s, the job then %s; cancels %d, detached %d)", r->serial, r->what,
                  atomic_load(&r->end_ok), atomic_load(&r->end_refused_by) ? atomic_load(&r->end_refused_by) : "none",
                  bgjob_state_str(atomic_load(&r->end_refused_state)), atomic_load(&r->cancels),
                  atomic_load(&r->detached));
    if (r->ext && !r->never_started && atomic_load(&r->end_ok) != 1)
        tap_diag("fuzz: job %" PRIu64 "'s trail: %s", r->serial, r->trail);
    if (r->ext && r->has_comp && !r->comp_ctx && atomic_load(&r->end_ok) == 1 && atomic_load(&r->nkids) == 0 &&
        atomic_load(&r->n_enders) <= 8 && atomic_load(&r->comp_ender) == 2)
        violation(V_COMPLETION_THREAD, "job %" PRIu64 " [%s]: ended by bgjob_job_end, its completion (no "
                  "context) ran on a thread that never called it", r->serial, r->what);
    if (r->has_ctl) {
        int c = atomic_load(&r->ctl_calls[BGJOB_CONTROL_CANCEL]);
        int p = atomic_load(&r->ctl_calls[BGJOB_CONTROL_PAUSE]);
        int q = atomic_load(&r->ctl_calls[BGJOB_CONTROL_RESUME]);
        int k = atomic_load(&r->ctl_calls[BGJOB_CONTROL_COMPLETE]);
        int v = atomic_load(&r->ctl_calls[BGJOB_CONTROL_SET_SPEED]);
        if (r->never_started && ctl_total(r) != 0)
            violation(V_CONTROL, "job %" PRIu64 " [%s]: never started, control called %d times", r->serial,
                      r->what, ctl_total(r));
        if (p > atomic_load(&r->pauses_ok) || q > p + atomic_load(&r->io_stops) ||
            k > atomic_load(&r->completes_ok) || v > atomic_load(&r->speeds_ok) || c > 2)
            violation(V_CONTROL, "job %" PRIu64 " [%s]: control told CANCEL %d, PAUSE %d, RESUME %d, "
                      "COMPLETE %d, SET_SPEED %d times for %d pauses, %d error stops, %d completes, %d "
                      "speed changes that took effect", r->serial, r->what, c, p, q, k, v,
                      atomic_load(&r->pauses_ok), atomic_load(&r->io_stops), atomic_load(&r->completes_ok),
                      atomic_load(&r->speeds_ok));
    }
}

static void check_txn(struct txnrec *tx)
{
    int commits = 0, aborts = 0, completed = 0, ended = 0;

    for (int i = 0; i < tx->n; i++) {
        struct rec *r = tx->m[i];
        int term = atomic_load(&r->terminal);
        commits += atomic_load(&r->commits);
        aborts += atomic_load(&r->aborts);
        completed += term == BGJOB_STATE_COMPLETED;
        ended += term >= 0;
    }
    if (commits && aborts)
        violation(V_TXN, "%s: %d members committed and %d aborted", tx->what, commits, aborts);
    if (aborts && completed)
        violation(V_TXN, "%s: aborted, yet %d members COMPLETED", tx->what, completed);
    if (commits && completed != ended)
        violation(V_TXN, "%s: committed, yet only %d of %d ended members COMPLETED", tx->what,
                  completed, ended);
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);

    return v != NULL && *v != '\0' ? strtoull(v, NULL, 0) : dflt;
}

static bool parse_classes(void)
{
    const char *only = getenv("FUZZ_ONLY");
    const char *skip = getenv("FUZZ_SKIP");

    for (int i = 0; i < S_COUNT; i++)
        enabled[i] = only == NULL || *only == '\0';
    for (int pass = 0; pass < 2; pass++) {
        const char *list = pass == 0 ? only : skip;
        for (const char *p = list; p != NULL && *p != '\0';) {
            const char *end = strchr(p, ',');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            int found = -1;
            for (int i = 0; i < S_COUNT; i++)
                if (strlen(scn_names[i]) == len && strncmp(p, scn_names[i], len) == 0)
                    found = i;
            if (found < 0) {
                tap_diag("FUZZ_%s: unknown class '%.*s'", pass == 0 ? "ONLY" : "SKIP", (int)len, p);
                return false;
            }
            enabled[found] = pass == 0;
            p = end ? end + 1 : NULL;
        }
    }
    return true;
}

int main(void)
{
    const char *ops_env = getenv("FUZZ_OPS");
    long total_ops = (long)env_u64(ops_env != NULL && *ops_env ? "FUZZ_OPS" : "STRESS_OPS", DEFAULT_OPS);
    const char *timeout = getenv("TAP_TIMEOUT");
    int64_t settle_ms = (int64_t)env_u64("FUZZ_SETTLE_MS", 15000);
    pthread_t th_disp, th_canc, th_chaos, th_watch;
    char classes[256] = "";
    int64_t t0;
    long seen;

    /* Let the watchdog's gdb attach to us under Yama's ptrace_scope=1. */
#ifdef PR_SET_PTRACER
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
#endif
    seed = env_u64("FUZZ_SEED", 0);
    if (seed == 0)
        seed = env_u64("STRESS_SEED", 0);
    if (seed == 0)
        seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    nactors = (int)env_u64("FUZZ_THREADS", DEFAULT_THREADS);
    if (nactors < 1)
        nactors = 1;
    if (nactors > MAX_ACTORS)
        nactors = MAX_ACTORS;
    stall_ms = (int64_t)env_u64("FUZZ_STALL_S", 20) * 1000;
    max_reports = (long)env_u64("FUZZ_REPORTS", 40);
    alarm(timeout != NULL ? (unsigned)strtoul(timeout, NULL, 10) : 600);
    tap_plan(4);
    if (!parse_classes())
        return 1;
    for (int i = 0; i < S_COUNT; i++)
        if (enabled[i]) {
            strncat(classes, scn_names[i], sizeof classes - strlen(classes) - 2);
            strncat(classes, ",", sizeof classes - strlen(classes) - 1);
        }
    tap_diag("fuzz: FUZZ_SEED=%" PRIu64 " FUZZ_OPS=%ld FUZZ_THREADS=%d FUZZ_ONLY=%s (replay: same "
             "values; the thread interleaving is the machine's)",
             seed, total_ops, nactors, classes);
    ops_per_actor = total_ops / nactors + 1;

    for (int i = 0; i < N_CONTEXTS; i++)
        if (bgjob_context_create(&contexts[i]) != BGJOB_RESULT_OK)
            return 1;
    svc_dispatcher.name = "the dispatcher thread";
    svc_canceller.name = "the canceller thread";
    svc_chaos.name = "the chaos thread";
    svc_main.name = "the main thread";
    tl_role = ROLE_MAIN;
    tl_self = &svc_main;
    atomic_store(&svc_dispatcher.beat, (long long)now_ms());
    atomic_store(&svc_canceller.beat, (long long)now_ms());
    atomic_store(&svc_chaos.beat, (long long)now_ms());
    if (pthread_create(&th_watch, NULL, watchdog_main, NULL) != 0 ||
        pthread_create(&th_disp, NULL, dispatcher_main, NULL) != 0 ||
        pthread_create(&th_canc, NULL, canceller_main, NULL) != 0 ||
        pthread_create(&th_chaos, NULL, chaos_main, NULL) != 0)
        return 1;
    pthread_detach(th_watch);

    t0 = now_ms();
    for (int i = 0; i < nactors; i++) {
        actors[i].name = "actor";
        actors[i].index = i;
        atomic_store(&actors[i].beat, (long long)now_ms());
        if (pthread_create(&actors[i].th, NULL, actor_main, &actors[i]) != 0)
            return 1;
    }
    step("join the actors", NULL);
    for (int i = 0; i < nactors; i++)
        pthread_join(actors[i].th, NULL);
    int64_t t_run = now_ms() - t0;
    seen = atomic_load(&violations);
    tap_ok(seen == 0, "%ld API calls by %d actors: no violation during the run", atomic_load(&n_ops),
           nactors);

    /* Background changes stop; detached jobs must now end by themselves. */
    atomic_store(&stopping, 1);
    pthread_join(th_chaos, NULL);
    pthread_join(th_canc, NULL);
    beat("settle", NULL);
    settle(settle_ms);
    atomic_store(&stopping, 2);
    pthread_join(th_disp, NULL);
    /* Completions queued after the dispatcher stopped. */
    for (int i = 0; i < N_CONTEXTS; i++) {
        tl_role = ROLE_DISPATCHER;
        bgjob_context_dispatch(contexts[i], 0, NULL);
        tl_role = ROLE_MAIN;
        size_t pending = 1;
        bgjob_context_pending(contexts[i], &pending);
        if (pending != 0)
            violation(V_LEFT, "context %d still has %zu completions queued", i, pending);
        bgjob_context_destroy(contexts[i]);
    }
    tap_ok(atomic_load(&violations) == seen, "every detached job ended by itself, no job left");
    seen = atomic_load(&violations);

    beat("final checks", NULL);
    for (size_t i = 0; i < recs_count(); i++)
        check_rec(rec_at(i));
    for (size_t i = 0; i < n_hookrecs; i++) {
        struct hookrec *hk = all_hooks[i];
        if (atomic_load(&hk->frees) != 1 && atomic_load(&hk->r->created) && !atomic_load(&hk->r->stuck))
            violation(V_ONCE, "job %" PRIu64 " [%s]: hook userdata freed %d times", hk->r->serial,
                      hk->r->what, atomic_load(&hk->frees));
        if (atomic_load(&hk->calls) > 1)
            violation(V_ONCE, "job %" PRIu64 " [%s]: hook called %d times", hk->r->serial, hk->r->what,
                      atomic_load(&hk->calls));
    }
    for (size_t i = 0; i < n_txns; i++)
        check_txn(all_txns[i]);
    if (atomic_load(&log_frees) != atomic_load(&log_installs))
        violation(V_ONCE, "%ld log callbacks installed, %ld userdata freed", atomic_load(&log_installs),
                  atomic_load(&log_frees));
    tap_ok(atomic_load(&violations) == seen,
           "%zu jobs, %zu hooks, %zu transactions: every callback and free exactly once, outcomes "
           "consistent",
           n_recs, n_hookrecs, n_txns);
    tap_ok(atomic_load(&n_ops) >= total_ops, "made at least %ld API calls (%ld)", total_ops,
           atomic_load(&n_ops));

    {
        long per[S_COUNT] = {0}, hooks_called = 0, ctl = 0, evs = 0, ends = 0, with_ev = 0;
        for (size_t i = 0; i < n_recs; i++) {
            per[all_recs[i]->scn]++;
            hooks_called += atomic_load(&all_recs[i]->hook_calls);
            ctl += ctl_total(all_recs[i]);
            evs += atomic_load(&all_recs[i]->ev_calls);
            ends += atomic_load(&all_recs[i]->end_ok);
            with_ev += all_recs[i]->has_ev;
        }
        tap_diag("fuzz: driver model: external %ld, events %ld, refs %ld, subjobs %ld, stats %ld jobs; "
                 "%ld control calls, %ld bgjob_job_end, %ld events to %ld jobs with an event callback "
                 "(%ld destroyed from their END event); %ld sub-job completions (no context) on a bgjob "
                 "thread not their worker's; %ld calls from a callback on a lent creator's handle that "
                 "its creator released during the call",
                 per[S_EXTERNAL], per[S_EVENTS], per[S_REFS], per[S_SUBJOBS], per[S_STATS], ctl, ends, evs,
                 with_ev, atomic_load(&n_end_destroys), atomic_load(&n_subjob_comp_elsewhere),
                 atomic_load(&n_lent_handle_died));
        if (atomic_load(&n_subjob_comp_elsewhere))
            tap_diag("fuzz: the first: %s", subjob_comp_example);
        tap_diag("fuzz: %ld API calls in %" PRId64 " ms; jobs by scenario: hooks %ld, txn %ld, "
                 "finalize %ld, detach %ld, errpolicy %ld, deadline %ld, child %ld, rit %ld, "
                 "wrongtype %ld, reenter %ld (%ld made inside callbacks, %ld released by another "
                 "callback or at the end); %ld hooks called; %ld log "
                 "lines (%ld on bgjob-internal threads, first '%s'); %ld child line userdata still unfreed when "
                 "wait_child returned",
                 atomic_load(&n_ops), t_run, per[S_HOOKS], per[S_TXN], per[S_FINALIZE], per[S_DETACH],
                 per[S_ERRPOLICY], per[S_DEADLINE], per[S_CHILD], per[S_RIT], per[S_WRONGTYPE],
                 per[S_REENTER], atomic_load(&n_nested), atomic_load(&n_orphans_reaped), hooks_called, atomic_load(&log_lines),
                 atomic_load(&log_lines_internal), log_internal_name, atomic_load(&n_line_late));
    }
    for (int g = 0; g < n_groups; g++)
        tap_diag("fuzz: %s: %ld x [%s] (e.g. job %" PRIu64 ")", vclass_names[groups[g].cls], groups[g].n,
                 groups[g].what, groups[g].example);
    for (int c = 0; c < V_COUNT; c++)
        if (atomic_load(&vcount[c]))
            tap_diag("fuzz: %ld violations of class %s", atomic_load(&vcount[c]), vclass_names[c]);
    tap_diag("fuzz: %ld invariant violations (FUZZ_SEED=%" PRIu64 ")", atomic_load(&violations), seed);
    atomic_store(&svc_main.beat, 0);
    return tap_done();
}

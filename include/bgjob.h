/*
 * bgjob.h: background jobs for C programs.
 *
 * A job is one long operation run by a worker callback on its own OS thread. The
 * caller holds an opaque handle and reads progress (bgjob_job_get_info), pauses,
 * resumes, cancels, waits for and destroys the job.
 *
 * Conventions
 * -----------
 * - Every function returns a bgjob_result (BGJOB_RESULT_OK == 0) unless it only
 *   returns a static string or number; bgjob_result_str() names each code.
 *   Outputs are *_out parameters, written only on success.
 * - Handles are generation-tagged table entries, never pointers to memory: NULL,
 *   destroyed, detached or made-up handles get BGJOB_RESULT_INVALID_HANDLE from
 *   every function. A stale handle never names a later object, however long
 *   the process lives: a table slot whose generation would wrap is retired,
 *   never reused. Verbs refused in the job's state get BGJOB_RESULT_NOT_ALLOWED
 *   (bgjob_verb_allowed() exports the table).
 * - A job may have several handles (bgjob_job_ref, bgjob_job_lookup), each its
 *   own reference: releasing one never invalidates another, and only the job's
 *   last handle's destroy or detach acts on the job (the others just release
 *   themselves). A handle a callback receives is valid for that call.
 * - Userdata is always given with a free function (which may be NULL); bgjob
 *   calls it exactly once, after the last callback that uses the userdata, on
 *   every path, including a failed create.
 * - Time: every timeout or duration argument is an int64_t of milliseconds,
 *   where -1 means no limit (wait forever, sleep until cancel, no deadline),
 *   0 means now (poll, due at once) and any other negative value is refused
 *   with BGJOB_RESULT_INVALID_ARGUMENT. Waits and deadlines count a job's
 *   active time where they say so (paused time excluded). The one exception
 *   is bgjob_job_options.deadline_ms, where 0 also means "no deadline", so a
 *   zero-filled struct sets none. A child's grace (time between SIGTERM and
 *   SIGKILL) is a length, not a limit: 0 kills at once, negatives are refused.
 * - Pointers: a pointer argument may be NULL only where its function says so
 *   (an output marked "may be NULL" is then skipped); a NULL where one is
 *   needed gets BGJOB_RESULT_INVALID_ARGUMENT. A non-NULL pointer must be
 *   valid for its use: an output writable, a buffer `len` bytes long, a string
 *   NUL-terminated (and UTF-8, else BGJOB_RESULT_INVALID_ARGUMENT), a function
 *   pointer a function of its type. Each function's Returns: line lists its
 *   codes; BGJOB_RESULT_PANIC (an internal error) can come from any of them.
 * - Enums are int32_t-sized; every argument and field that holds one is
 *   declared with its enum's typedef (bgjob_state, ...). A number that is not
 *   one of its values is refused with BGJOB_RESULT_INVALID_ARGUMENT (the *_str
 *   functions return "unknown" for it).
 *
 * Threads
 * -------
 * - Every function may be called from any thread, concurrently, unless its
 *   Threads: line says otherwise ("meant for the job's worker thread").
 * - No bgjob lock is held while user code runs (workers, free functions, log
 *   callbacks), so user code may call back into bgjob; each callback type says
 *   which calls it may make.
 * - Each running job has its own thread, named after the job. Finished threads
 *   wait a few seconds for the next job, then exit.
 * - No user code runs on bgjob's one timer thread: a deadline's cancel, and
 *   the cancellation hooks it calls, run on a bgjob thread named after the job,
 *   so a slow hook of one job delays no other job's deadline and no child's
 *   SIGKILL.
 * - C callbacks must not longjmp out of, or throw C++ exceptions through, a
 *   bgjob frame.
 *
 * What callbacks may call
 * -----------------------
 * - A worker (bgjob_worker_callback) runs on its job's thread and may call any
 *   function on its own handle or others; on its own handle bgjob_job_wait and
 *   bgjob_job_destroy are refused (BGJOB_RESULT_NOT_ALLOWED). Its progress
 *   calls park it while the job is paused.
 * - A completion callback (bgjob_completion_callback) may destroy its own job,
 *   cancel or destroy other jobs, create and start jobs, and destroy its
 *   context; a nested bgjob_context_dispatch of its own context is refused.
 * - Free functions (bgjob_free_callback) and the log callback run with no bgjob
 *   lock held and may call bgjob; a free function must not use the object whose
 *   userdata it frees.
 *
 * - Worker threads are reused: a thread whose job ended may run the next job.
 *   A C worker that changes per-thread state (signal mask, CPU affinity,
 *   priority, locale, thread-locals) must restore it before returning.
 *
 * Shutdown and fork
 * -----------------
 * - Wait for (or detach) every job before unloading the library. Idle worker
 *   threads exit on their own.
 * - fork() is safe while jobs run and other threads are inside bgjob calls
 *   (bgjob takes every one of its process-wide locks around the fork, as
 *   malloc does). The child has none of the parent's threads or objects: every
 *   parent handle of every type (job, context, transaction) gets
 *   BGJOB_RESULT_INVALID_HANDLE there at once (a virJobPtr: -1 or NULL), and
 *   the child may exec, or make, run and destroy objects of every type of its
 *   own, deadlines included; no call there waits on a parent thread.
 *
 * Debugging: BGJOB_DEBUG=1 logs job lifecycle events to stderr;
 * bgjob_set_log_callback() sends them elsewhere. bgjob is silent otherwise.
 */

#ifndef BGJOB_H
#define BGJOB_H

/* Generated by cbindgen from src/ffi by build.rs; do not edit. Run `make` to regenerate. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BGJOB_VERSION_MAJOR 0
#define BGJOB_VERSION_MINOR 1
#define BGJOB_VERSION_PATCH 0
#define BGJOB_VERSION_STRING "0.1.0"


/**
 * Queued events per job past which consecutive state changes merge.
 */
#define QUEUE_BOUND 64

/**
 * Most statistics one job may declare.
 */
#define MAX_STATS 64

/**
 * Longest name, in bytes (a C reader's array holds it with its NUL).
 */
#define MAX_NAME_LEN 63

/**
 * Longest unit, in bytes.
 */
#define MAX_UNIT_LEN 15

/* ---- Constants and types ---- */

/**
 * The ABI version this header describes; equals the SONAME number of the
 * library (`libbgjob.so.0`). See `bgjob_abi_version()`.
 */
#define BGJOB_ABI_VERSION 0

/**
 * Number of result codes (`bgjob_result` values are 0 .. BGJOB_RESULT_COUNT-1).
 */
#define BGJOB_RESULT_COUNT 10

/**
 * Number of states (`bgjob_state` values are 0 .. BGJOB_STATE_COUNT-1).
 */
#define BGJOB_STATE_COUNT 11

/**
 * Number of verbs (`bgjob_verb` values are 0 .. BGJOB_VERB_COUNT-1).
 */
#define BGJOB_VERB_COUNT 11

/**
 * `bgjob_job_options.flags`: create the job in `BGJOB_STATE_CREATED` and do not
 * start it; `bgjob_job_start` starts it (lets the caller configure it first).
 */
#define BGJOB_CREATE_DEFER_START 1

/**
 * `bgjob_job_options.flags`: QEMU's `JOB_MANUAL_FINALIZE`. Once its work is
 * done and succeeded, the job waits in `BGJOB_STATE_PENDING` until
 * `bgjob_job_finalize`; only then do its commit and clean callbacks run and
 * the job end. A failed or cancelled job is finalized at once. For a job in a
 * transaction, the transaction's setting applies instead.
 */
#define BGJOB_CREATE_MANUAL_FINALIZE 2

/**
 * `bgjob_job_options.flags`: progress calls on the worker's own thread never
 * park it. Without it, `bgjob_job_set_total`, `_set_current`,
 * `_add_units`, `_set_percent`, `_set_eta` and `_set_phase` made by the
 * worker are pause points: while the job is paused the worker parks inside
 * them. With it they only record and return, and the worker parks only where
 * it asks to: `bgjob_job_pause_point`, `bgjob_job_sleep`, `bgjob_job_wait_fd`
 * and `bgjob_job_wait_child`. Use it when the worker reports progress while
 * holding a lock of its own that the caller's resume path needs (a domain
 * lock): parked with the lock held, it would deadlock the resume.
 */
#define BGJOB_CREATE_UPDATES_NEVER_PARK 8

/**
 * `bgjob_job_options.flags`: an external job. It has no worker and no
 * thread: pass a NULL `worker` to `bgjob_job_create` (a worker with this flag
 * is refused). Started (at once, or by `bgjob_job_start`), it is RUNNING and
 * its owner drives it from any thread — progress, phase, errors, result —
 * and ends it with `bgjob_job_end`. Verbs reach the owner through
 * `bgjob_job_options.control`. See `bgjob_job_end`.
 */
#define BGJOB_CREATE_EXTERNAL 4

/**
 * `bgjob_txn_create` flag: the transaction finalizes manually (see
 * `BGJOB_CREATE_MANUAL_FINALIZE`); `bgjob_txn_finalize` or
 * `bgjob_job_finalize` on any member finalizes it.
 */
#define BGJOB_TXN_MANUAL_FINALIZE 1

/**
 * `bgjob_job_detach` flag: cancel the job as it is detached.
 */
#define BGJOB_DETACH_CANCEL 1

/**
 * Largest stack a job may ask for (1 GiB).
 */
#define BGJOB_MAX_STACK_SIZE (1 << 30)

/**
 * Events queued for one job past which consecutive state changes merge
 * (see `bgjob_event.coalesced`).
 */
#define BGJOB_EVENT_QUEUE_BOUND 64

/**
 * `bgjob_job_wait_fd` events (and the events it reports): the fd is readable.
 */
#define BGJOB_FD_READABLE 1

/**
 * The fd is writable.
 */
#define BGJOB_FD_WRITABLE 2

/**
 * Reported only: an error condition on the fd (`POLLERR`).
 */
#define BGJOB_FD_ERROR 4

/**
 * Reported only: the other end hung up (`POLLHUP`).
 */
#define BGJOB_FD_HANGUP 8

/**
 * `bgjob_child_options.flags`: capture the child's stdout and hand it to
 * `on_line` line by line (default: the parent's stdout).
 */
#define BGJOB_CHILD_CAPTURE_STDOUT 1

/**
 * Capture the child's stderr likewise (default: the parent's stderr).
 */
#define BGJOB_CHILD_CAPTURE_STDERR 2

/**
 * Give the child the parent's stdin (default: `/dev/null`).
 */
#define BGJOB_CHILD_INHERIT_STDIN 4

/**
 * Send the child's stdout to `/dev/null` (not with CAPTURE_STDOUT).
 */
#define BGJOB_CHILD_NULL_STDOUT 8

/**
 * Send the child's stderr to `/dev/null` (not with CAPTURE_STDERR).
 */
#define BGJOB_CHILD_NULL_STDERR 16

/**
 * A child that cancel does not signal: a cleanup step (`lvremove`, a hook
 * script) run in the "cleaning up" phase after a cancel, or one a cancel
 * must not interrupt. It may be spawned after cancel was requested
 * (without this flag that is refused with `BGJOB_RESULT_CANCELLED`);
 * `bgjob_job_wait_child` waits for it to its end and returns
 * `BGJOB_RESULT_OK` with its status, cancel or not. It is still killed
 * (SIGKILL, with its process group) and reaped if it runs when the worker
 * returns.
 */
#define BGJOB_CHILD_SURVIVES_CANCEL 32

/**
 * Start the child in a new session (`setsid`) rather than only a new process
 * group: it has no controlling terminal and gets no terminal signals.
 */
#define BGJOB_CHILD_NEW_SESSION 64

/**
 * `bgjob_child_fd.child_fd`: give the child the descriptor under the same
 * number it has in the parent.
 */
#define BGJOB_CHILD_FD_SAME -1

/**
 * `bgjob_line_callback` stream: the child's stdout.
 */
#define BGJOB_CHILD_STDOUT 1

/**
 * `bgjob_line_callback` stream: the child's stderr.
 */
#define BGJOB_CHILD_STDERR 2

/**
 * Default `bgjob_child_options.grace_ms`: time from SIGTERM to SIGKILL.
 */
#define BGJOB_CHILD_DEFAULT_GRACE_MS 5000

/**
 * Capacity of the name and phase arrays in `bgjob_job_entry`, NUL included.
 */
#define BGJOB_ENTRY_TEXT_SIZE 64

/**
 * Most statistics one job may declare.
 */
#define BGJOB_MAX_STATS 64

/**
 * Capacity of `bgjob_stat.unit`, NUL included: a unit is at most 15 bytes.
 */
#define BGJOB_STAT_UNIT_SIZE 16

/**
 * The result of every call that can fail. 0 is success; the numbers are stable
 * and a retired number is never reused.
 */
enum bgjob_result
#ifdef __cplusplus
  : int32_t
#endif // __cplusplus
 {
    /**
     * Success.
     */
    BGJOB_RESULT_OK = 0,
    /**
     * NULL, destroyed, detached or never-valid handle.
     */
    BGJOB_RESULT_INVALID_HANDLE = 1,
    /**
     * A NULL pointer where one is required, a string that is not UTF-8, a number
     * out of range, or an unknown flag. Nothing was changed.
     */
    BGJOB_RESULT_INVALID_ARGUMENT = 2,
    /**
     * The verb is not allowed in the job's current state (see
     * `bgjob_verb_allowed`). Nothing was changed.
     */
    BGJOB_RESULT_NOT_ALLOWED = 3,
    /**
     * No thread could be started (EAGAIN); nothing was left behind.
     */
    BGJOB_RESULT_TRY_AGAIN = 4,
    /**
     * A wait ran out of time.
     */
    BGJOB_RESULT_TIMED_OUT = 5,
    /**
     * The job was cancelled (returned to workers by pause points and checks).
     */
    BGJOB_RESULT_CANCELLED = 6,
    /**
     * bgjob hit an internal error (a Rust panic, caught at the boundary).
     */
    BGJOB_RESULT_PANIC = 7,
    /**
     * No such item (a cancel hook that already ran, an unknown id, a child
     * the job does not hold).
     */
    BGJOB_RESULT_NOT_FOUND = 8,
    /**
     * An operating-system call failed (starting a child, making an fd,
     * polling); `errno` holds its error when the call returns.
     */
    BGJOB_RESULT_SYSTEM = 9,
};
#ifndef __cplusplus
typedef int32_t bgjob_result;
#endif // __cplusplus

/**
 * Job states. Terminal: COMPLETED, FAILED, CANCELLED.
 *
 * ```text
 * CREATED → RUNNING ⇄ PAUSED
 *              ↓ set_ready (PAUSED → STANDBY)
 *            READY ⇄ STANDBY
 * RUNNING/PAUSED/READY/STANDBY → (WAITING) → (PENDING) → COMPLETED | FAILED | CANCELLED
 * ```
 * WAITING: the worker returned, other members of its transaction have not;
 * PENDING: the work of the job and its whole transaction succeeded, a
 * manual finalize is awaited. An external job's owner reports WAITING,
 * PENDING and ABORTING itself (`bgjob_job_report_state`).
 */
enum bgjob_state
#ifdef __cplusplus
  : int32_t
#endif // __cplusplus
 {
    /**
     * Made, not started.
     */
    BGJOB_STATE_CREATED = 0,
    /**
     * The worker is running.
     */
    BGJOB_STATE_RUNNING = 1,
    /**
     * User-paused; the worker parks at its next pause point.
     */
    BGJOB_STATE_PAUSED = 2,
    /**
     * The worker finished (an external job: `bgjob_job_end` was called);
     * other members of its transaction have not yet, or its sub-jobs have
     * not ended, or its end is being finalized right now (commit/abort and
     * clean running). A job alone passes through it briefly on the way to
     * its terminal state, as QEMU's jobs pass through "waiting": an event
     * callback sees RUNNING → WAITING → COMPLETED.
     */
    BGJOB_STATE_WAITING = 3,
    /**
     * The worker succeeded.
     */
    BGJOB_STATE_COMPLETED = 4,
    /**
     * The worker failed.
     */
    BGJOB_STATE_FAILED = 5,
    /**
     * Cancelled before start, or the worker saw the cancel and did not succeed.
     */
    BGJOB_STATE_CANCELLED = 6,
    /**
     * The worker said the job is ready (`bgjob_job_set_ready`: a mirror has
     * converged); it keeps running until `bgjob_job_complete` or a cancel.
     */
    BGJOB_STATE_READY = 7,
    /**
     * READY and user-paused (as PAUSED is RUNNING paused).
     */
    BGJOB_STATE_STANDBY = 8,
    /**
     * The work of the job (and of its whole transaction) is done and
     * succeeded; it waits for `bgjob_job_finalize` / `bgjob_txn_finalize`
     * (manual finalize).
     */
    BGJOB_STATE_PENDING = 9,
    /**
     * Only an external job, only reported by its owner
     * (`bgjob_job_report_state`): its work failed or was cancelled and the
     * abort is under way (QEMU's ABORTING); it ends when the owner calls
     * `bgjob_job_end`. It accepts what WAITING accepts, but finalize.
     */
    BGJOB_STATE_ABORTING = 10,
};
#ifndef __cplusplus
typedef int32_t bgjob_state;
#endif // __cplusplus

/**
 * What a control callback is told (`bgjob_control_callback`).
 */
enum bgjob_control
#ifdef __cplusplus
  : int32_t
#endif // __cplusplus
 {
    /**
     * Cancel was requested; `arg` 1 = force, 0 = soft (a READY job asked
     * to finish without completing).
     */
    BGJOB_CONTROL_CANCEL = 0,
    /**
     * The job is paused: stop the work.
     */
    BGJOB_CONTROL_PAUSE = 1,
    /**
     * The job may run again: go on with the work.
     */
    BGJOB_CONTROL_RESUME = 2,
    /**
     * Complete was requested (a READY job).
     */
    BGJOB_CONTROL_COMPLETE = 3,
    /**
     * The speed limit changed; `arg` is the new one in bytes/s (0 =
     * unlimited).
     */
    BGJOB_CONTROL_SET_SPEED = 4,
    /**
     * Finalize was requested (`bgjob_job_finalize`, `bgjob_txn_finalize`)
     * for an external job created with `BGJOB_CREATE_MANUAL_FINALIZE` (or a
     * member of a manual-finalize transaction) that its owner reported
     * `BGJOB_STATE_PENDING` (`bgjob_job_report_state`): send QEMU's
     * `job-finalize`, then end the job with `bgjob_job_end` when it
     * concludes. A transaction's finalize is told to one member only (the
     * one finalized, else the first pending one), as QEMU's `job-finalize`
     * of one member finalizes its whole transaction.
     */
    BGJOB_CONTROL_FINALIZE = 5,
};
#ifndef __cplusplus
typedef int32_t bgjob_control;
#endif // __cplusplus

/**
 * What a `bgjob_event` reports (`bgjob_event.kind`).
 */
enum bgjob_event_kind
#ifdef __cplusplus
  : int32_t
#endif // __cplusplus
 {
    /**
     * The state changed from `old_state` to `new_state` (possibly several
     * changes merged: see `bgjob_event.coalesced`).
     */
    BGJOB_EVENT_KIND_STATE_CHANGED = 0,
    /**
     * The worker reported an I/O error (`bgjob_job_report_io_error`):
     * `action` is what it was told to do, `error_code` the error. With
     * action STOP, the change to PAUSED follows as its own event.
     */
    BGJOB_EVENT_KIND_IO_ERROR = 1,
    /**
     * The job became ready: right after the STATE_CHANGED event into
     * `BGJOB_STATE_READY`.
     */
    BGJOB_EVENT_KIND_READY = 2,
    /**
     * The job ended in `new_state` (terminal). The last event of the job,
     * delivered before its completion callback.
     */
    BGJOB_EVENT_KIND_END = 3,
    /**
     * The job's owner said a verb it was told through its control callback
     * failed (`bgjob_job_control_failed`: QEMU refused the command):
     * `error_code` is the owner's code; `bgjob_job_get_control_error` gives
     * the verb and the message. A state change the failure undid (a refused
     * pause: PAUSED back to RUNNING) follows as its own event.
     */
    BGJOB_EVENT_KIND_CONTROL_FAILED = 4,
};
#ifndef __cplusplus
typedef int32_t bgjob_event_kind;
#endif // __cplusplus

/**
 * What `bgjob_job_report_io_error` tells the worker to do.
 */
enum bgjob_error_action
#ifdef __cplusplus
  : int32_t
#endif // __cplusplus
 {
    /**
     * Give up: return the error (it is recorded as the job's error).
     */
    BGJOB_ERROR_ACTION_REPORT = 0,
    /**
     * Carry on.
     */
    BGJOB_ERROR_ACTION_IGNORE = 1,
    /**
     * The job is now paused with an error status: call
     * `bgjob_job_pause_point` (it parks until resume, or returns CANCELLED),
     * then retry the operation.
     */
    BGJOB_ERROR_ACTION_STOP = 2,
};
#ifndef __cplusplus
typedef int32_t bgjob_error_action;
#endif // __cplusplus

/**
 * Bounded jobs have a total (units or percent); unbounded ones do not.
 */
enum bgjob_job_type
#ifdef __cplusplus
  : int32_t
#endif // __cplusplus
 {
    /**
     * Reports a percentage and an ETA.
     */
    BGJOB_JOB_TYPE_BOUNDED = 0,
    /**
     * Reports elapsed time and units done only.
     */
    BGJOB_JOB_TYPE_UNBOUNDED = 1,
};
#ifndef __cplusplus
typedef int32_t bgjob_job_type;
#endif // __cplusplus

/**
 * Why cancel was requested (`bgjob_info.cancel_cause`).
 */
enum bgjob_cancel_cause
#ifdef __cplusplus
  : int32_t
#endif // __cplusplus
 {
    /**
     * Cancel was not requested.
     */
    BGJOB_CANCEL_CAUSE_NONE = 0,
    /**
     * A caller cancelled it (cancel, detach with cancel, destroy of a created
     * job).
     */
    BGJOB_CANCEL_CAUSE_CALLER = 1,
    /**
     * Its deadline passed (`bgjob_job_options.deadline_ms`,
     * `bgjob_job_set_deadline`).
     */
    BGJOB_CANCEL_CAUSE_TIMEOUT = 2,
    /**
     * Another member of its transaction failed or was cancelled.
     */
    BGJOB_CANCEL_CAUSE_TRANSACTION = 3,
    /**
     * Its parent job was cancelled (`bgjob_job_options.parent`); passed down
     * to its own children too.
     */
    BGJOB_CANCEL_CAUSE_PARENT = 4,
};
#ifndef __cplusplus
typedef int32_t bgjob_cancel_cause;
#endif // __cplusplus

/**
 * A job's error status (`bgjob_info.iostatus`, QEMU's iostatus). It is not OK
 * only while the job is user-paused by its error policy; resume and cancel
 * reset it.
 */
enum bgjob_iostatus
#ifdef __cplusplus
  : int32_t
#endif // __cplusplus
 {
    /**
     * No error pending.
     */
    BGJOB_IOSTATUS_OK = 0,
    /**
     * Stopped by an I/O error.
     */
    BGJOB_IOSTATUS_FAILED = 1,
    /**
     * Stopped by ENOSPC.
     */
    BGJOB_IOSTATUS_NOSPACE = 2,
};
#ifndef __cplusplus
typedef int32_t bgjob_iostatus;
#endif // __cplusplus

/**
 * What a job does when its worker reports an I/O error
 * (`bgjob_job_report_io_error`); QEMU's `BlockdevOnError`.
 */
enum bgjob_error_policy
#ifdef __cplusplus
  : int32_t
#endif // __cplusplus
 {
    /**
     * The worker gives up; the error becomes the job's.
     */
    BGJOB_ERROR_POLICY_REPORT = 0,
    /**
     * The worker carries on.
     */
    BGJOB_ERROR_POLICY_IGNORE = 1,
    /**
     * The job is user-paused with an error status; the worker retries after
     * resume.
     */
    BGJOB_ERROR_POLICY_STOP = 2,
    /**
     * STOP on ENOSPC, REPORT otherwise.
     */
    BGJOB_ERROR_POLICY_ENOSPC = 3,
};
#ifndef __cplusplus
typedef int32_t bgjob_error_policy;
#endif // __cplusplus

/**
 * What `bgjob_job_cancel` found (libxl's abort contract).
 */
enum bgjob_cancel_status
#ifdef __cplusplus
  : int32_t
#endif // __cplusplus
 {
    /**
     * This call requested it; the job may still complete.
     */
    BGJOB_CANCEL_STATUS_REQUESTED = 0,
    /**
     * It had been requested before; nothing new happened.
     */
    BGJOB_CANCEL_STATUS_ALREADY_REQUESTED = 1,
    /**
     * The job had already ended (or its virJob worker had declared its
     * outcome with a `virJobFinish*` call); nothing happened.
     */
    BGJOB_CANCEL_STATUS_ALREADY_FINISHED = 2,
};
#ifndef __cplusplus
typedef int32_t bgjob_cancel_status;
#endif // __cplusplus

/**
 * The type of a job statistic (`bgjob_job_add_stat`).
 */
enum bgjob_stat_type
#ifdef __cplusplus
  : int32_t
#endif // __cplusplus
 {
    /**
     * `uint64_t`, in `bgjob_stat_value.u64`.
     */
    BGJOB_STAT_TYPE_U64 = 0,
    /**
     * `int64_t`, in `bgjob_stat_value.i64`.
     */
    BGJOB_STAT_TYPE_I64 = 1,
    /**
     * `double`, in `bgjob_stat_value.f64`.
     */
    BGJOB_STAT_TYPE_DOUBLE = 2,
    /**
     * A UTF-8 string, in `bgjob_stat.text`.
     */
    BGJOB_STAT_TYPE_STRING = 3,
};
#ifndef __cplusplus
typedef int32_t bgjob_stat_type;
#endif // __cplusplus

/**
 * Verbs of the verb × state table (`bgjob_verb_allowed`).
 */
enum bgjob_verb
#ifdef __cplusplus
  : int32_t
#endif // __cplusplus
 {
    /**
     * `bgjob_job_start`.
     */
    BGJOB_VERB_START = 0,
    /**
     * `bgjob_job_cancel` (allowed in every state; on a finished job it reports
     * `BGJOB_CANCEL_STATUS_ALREADY_FINISHED`).
     */
    BGJOB_VERB_CANCEL = 1,
    /**
     * `bgjob_job_pause`.
     */
    BGJOB_VERB_PAUSE = 2,
    /**
     * `bgjob_job_resume`.
     */
    BGJOB_VERB_RESUME = 3,
    /**
     * `bgjob_job_destroy`.
     */
    BGJOB_VERB_DESTROY = 4,
    /**
     * `bgjob_job_detach`.
     */
    BGJOB_VERB_DETACH = 5,
    /**
     * Progress, ETA, phase, error and result updates (`bgjob_job_set_*`,
     * `bgjob_job_add_units`).
     */
    BGJOB_VERB_UPDATE = 6,
    /**
     * `bgjob_job_get_result`, `bgjob_job_take_result`.
     */
    BGJOB_VERB_RESULT = 7,
    /**
     * `bgjob_job_pause_internal`, `bgjob_job_resume_internal` (QEMU's drain).
     */
    BGJOB_VERB_DRAIN = 8,
    /**
     * `bgjob_job_finalize` (manual finalize).
     */
    BGJOB_VERB_FINALIZE = 9,
    /**
     * `bgjob_job_complete` (allowed only in READY).
     */
    BGJOB_VERB_COMPLETE = 10,
};
#ifndef __cplusplus
typedef int32_t bgjob_verb;
#endif // __cplusplus

/**
 * An opaque completion context handle: a queue of completions plus one
 * pollable fd (see `bgjob_context_create`). Like job handles, a table entry
 * tagged with a generation, safe to misuse, usable from any thread.
 */
typedef struct bgjob_context bgjob_context;

/**
 * An opaque job handle.
 *
 * A handle is an index into bgjob's handle table tagged with a generation; it is
 * never dereferenced. Any value (NULL, destroyed, detached, made up) is safe to
 * pass: a handle that does not name a live job gets `BGJOB_RESULT_INVALID_HANDLE`.
 * A destroyed handle never comes to name a later job, however long the
 * process lives (a slot whose generation would wrap is retired). Handles may
 * be used from any thread.
 */
typedef struct bgjob_job bgjob_job;

/**
 * An opaque transaction handle (QEMU's `JobTxn`): jobs grouped before they
 * start, cancelled together, finalized together. Like job handles, a table
 * entry tagged with a generation, safe to misuse, usable from any thread.
 */
typedef struct bgjob_txn bgjob_txn;

/**
 * Called exactly once when a job that has one has ended: `state` is its
 * terminal `bgjob_state`, and `job` its handle, still valid during the call
 * (read its error or result here) unless the caller destroyed it earlier.
 * With shared references (`bgjob_job_ref`, `bgjob_job_lookup`): the
 * creator's handle while the creator holds it; once the creator released it
 * while another reference lives, a handle bgjob holds for the call (valid
 * until the callback returns; take `bgjob_job_ref` to keep the job longer).
 * The creator's handle stays the creator's while it is lent: released on
 * another thread during the call, calls through it return
 * `BGJOB_RESULT_INVALID_HANDLE` for the rest of the call (never another
 * job's result).
 *
 * Thread: with a context, the thread that calls `bgjob_context_dispatch`.
 * Without one:
 * - a job on its own whose worker's return ended it: its worker thread, right
 *   after the worker returned (and after its commit/abort and clean);
 * - a transaction member: only once every member is terminal (so it may wait
 *   for a sibling); the member whose worker's return settled the group gets
 *   it on that worker thread, last, every other member on a bgjob thread of
 *   its own — never on a sibling's worker thread;
 * - an external job (`BGJOB_CREATE_EXTERNAL`): `bgjob_job_end` is its
 *   worker's return, so the rules above hold with "its worker thread" read
 *   as "the thread calling `bgjob_job_end`, before that call returns"
 *   (called from inside the job's own event callback: on that thread once
 *   the event callback returned and END was delivered);
 * - a job ended by a call (a cancel of a job that never ran, destroy,
 *   `bgjob_job_finalize`, `bgjob_txn_finalize`, a cancel while WAITING or
 *   PENDING, a
 *   detach): a bgjob thread of its own;
 * - a parent whose worker returned before its last sub-job let go of it (it
 *   was WAITING for it; a sub-job lets go of its parent right after its own
 *   end is published, so a sub-job seen ended a moment earlier may still
 *   hold it): once that sub-job has, a bgjob thread of its own (named after
 *   the parent).
 *
 * Never inside the call that ended the job (create, start, cancel, destroy,
 * detach, finalize) — `bgjob_job_end`, being a worker's return, is not such
 * a call — never with a bgjob lock held. The one exception: when
 * no thread can be started (EAGAIN) for a callback that needs one of its
 * own, it runs at the end of the call that ended the job, rather than never.
 *
 * It may call any bgjob function: destroy this job (the handle is then
 * invalid), cancel or destroy other jobs, create and start new ones. A
 * `bgjob_context_dispatch` of the context dispatching it is refused with
 * `BGJOB_RESULT_NOT_ALLOWED`. It must not `longjmp` out.
 */
typedef void (*bgjob_completion_callback)(void *userdata, struct bgjob_job *job, bgjob_state state);

/**
 * Frees userdata. Called exactly once, after the last callback that uses the
 * userdata has returned, on whichever thread ends its use; it must not call back
 * into bgjob for the object it belonged to.
 */
typedef void (*bgjob_free_callback)(void *userdata);

/**
 * A finalization callback (`bgjob_job_options.commit`, `.abort`, `.clean`;
 * QEMU's job driver callbacks of the same names), called at most once with
 * the options' `finalize_userdata` and the job's handle, after the work of
 * the job (and of its whole transaction) is done and before the job ends.
 * See `bgjob_job_options.commit` for which runs, in what order and on which
 * thread. `job` is the handle the completion would get, lent as it is (see
 * `bgjob_completion_callback`). It runs with no bgjob lock held. It must
 * not `longjmp` out.
 */
typedef void (*bgjob_finalize_callback)(void *userdata, struct bgjob_job *job);

/**
 * A job's control callback (`bgjob_job_options.control`): tells the job's
 * owner that a verb took effect, so it can forward it to whatever does the
 * work (QMP's `job-cancel`, `job-pause`, a signal to a child process).
 * `what` says which; `arg` is 1 (force) or 0 (soft) for
 * `BGJOB_CONTROL_CANCEL`, the new speed in bytes/s for
 * `BGJOB_CONTROL_SET_SPEED`, 0 otherwise. `job` is the job's handle, valid
 * during the call; with shared references the handle the completion would
 * get, lent as it is (see `bgjob_completion_callback`: the creator's
 * release of the creator's handle on another thread during the call makes
 * calls through it return `BGJOB_RESULT_INVALID_HANDLE`, never another
 * job's result).
 *
 * When: once per verb call that changed something, after the change took
 * effect — the first cancel (not one that finds it ALREADY_REQUESTED or
 * finished); a pause that stops the job (user pause, or the first internal
 * pause) and a resume that lets it run again (the last pause gone; also a
 * detach that undoes the pauses); a speed change; a complete; a finalize.
 * A verb the owner could not carry out is reported back with
 * `bgjob_job_control_failed`. Only while
 * the job's work is not done: a finalize (FINALIZE) only for an external
 * job in a state its owner reported (`bgjob_job_report_state`); never for a job that never started (a
 * CREATED job's cancel ends it at once; an external job that starts with
 * its cancel requested — born under a cancelled parent, or cancelled inside
 * its create — is told CANCEL, force, once, as it starts), never once
 * `bgjob_job_end` has
 * been called (or a threaded job's worker has returned). A pause made by the
 * owner's own `bgjob_job_report_io_error` (policy STOP) is not told; its
 * resume is. A cancel of a paused job ends the pause: CANCEL then also means
 * "go on, and wind down".
 *
 * Thread: the one that called the verb, with no bgjob lock held — a
 * deadline's cancel: a bgjob thread (named "bgjob-deadline" for an external
 * job, which runs no job); a transaction's abort: the thread whose call or
 * worker's return failed the sibling. Calls may come on several threads at
 * once (a pause on one, a cancel on another). The job's end
 * (`bgjob_job_end`, a worker's return) waits for a call running on another
 * thread to return, so none runs once the end has been seen; the callback
 * therefore must not wait for the job's end itself. It may call any other
 * bgjob function, on this job too: read it, cancel it again, end it (from
 * inside CANCEL, say). It must not `longjmp` out.
 */
typedef void (*bgjob_control_callback)(void *userdata,
                                       struct bgjob_job *job,
                                       bgjob_control what,
                                       int64_t arg);

/**
 * One event of a job, as its event callback gets it (valid during the call
 * only). Later versions may append fields: read `struct_size` before any.
 */
typedef struct bgjob_event {
    /**
     * `sizeof(bgjob_event)` of the library that wrote it.
     */
    uint32_t struct_size;
    /**
     * What happened.
     */
    bgjob_event_kind kind;
    /**
     * The state before the change; for IO_ERROR the state it happened in.
     */
    bgjob_state old_state;
    /**
     * The state after the change; for END the terminal state; for
     * IO_ERROR the state it happened in.
     */
    bgjob_state new_state;
    /**
     * IO_ERROR only: what the worker was told to do (REPORT otherwise).
     */
    bgjob_error_action action;
    /**
     * IO_ERROR only: the error code reported; 0 otherwise.
     */
    int32_t error_code;
    /**
     * Per job, from 1, one number per change: events arrive with `seq`
     * strictly increasing. A merged event carries the number of the last
     * change it holds, so `seq` grows by `coalesced + 1`.
     */
    uint64_t seq;
    /**
     * STATE_CHANGED only: how many later state changes were merged into
     * this one (0 normally). More than `BGJOB_EVENT_QUEUE_BOUND` events
     * queued for a job that nobody delivers (its context not dispatched)
     * merge consecutive state changes: `old_state` of the first, `new_state`
     * of the last. IO_ERROR, READY and END are never merged or dropped.
     */
    uint32_t coalesced;
} bgjob_event;

/**
 * A job's event callback (`bgjob_job_options.event`): called with each
 * event of the job, in order — every state change (old → new), every I/O
 * error its worker reports, READY, and END last, before the completion
 * callback. `job` is the job's handle, valid during the call (unless the
 * caller destroyed it: an event caused by `bgjob_job_destroy` itself gets
 * the handle already invalid, and calls on it return
 * `BGJOB_RESULT_INVALID_HANDLE`); `ev` is valid during the call only. With
 * shared references it is the handle the completion would get (see
 * `bgjob_completion_callback`): the creator's, lent while the creator holds
 * it, so the creator's release of it on another thread during the call
 * makes calls through it return `BGJOB_RESULT_INVALID_HANDLE` for the rest
 * of the call (never another job's result).
 *
 * Thread: with `bgjob_job_options.context`, the thread that calls
 * `bgjob_context_dispatch`, like the completion (same fd). Without one, the
 * thread that made the change (a caller's pause, cancel or start; the
 * worker's own return, error report or update; a bgjob thread for a
 * deadline), after it let go of every bgjob lock — unless another thread is
 * delivering the same job's events at that moment: that thread then
 * delivers this one too, after the one it is in. So one job's events never
 * run at once and never out of order; different jobs' events may run
 * concurrently. The completion without a context waits until the job's
 * events (END included) have been delivered.
 *
 * It may call bgjob functions on this job (get_info, pause, resume,
 * cancel: the events those cause are delivered after this call returns, on
 * this thread) and on others. It must not wait for this job's end or its
 * completion (`bgjob_job_wait` from an event callback without a context
 * may wait for itself), must not destroy the job before its END event, and
 * must not `longjmp` out. It may destroy the job from its END event (the
 * completion that follows then gets the handle already invalid, as after any
 * earlier destroy).
 */
typedef void (*bgjob_event_callback)(void *userdata,
                                     struct bgjob_job *job,
                                     const struct bgjob_event *ev);

/**
 * Options for `bgjob_job_create`. Fill with
 * `bgjob_job_options_init(&opts, sizeof opts)` first: later versions only add
 * fields at the end, and bgjob reads no more than `struct_size` bytes, giving
 * fields the caller's struct lacks their defaults.
 */
typedef struct bgjob_job_options {
    /**
     * `sizeof(bgjob_job_options)` as the caller compiled it; set by
     * `bgjob_job_options_init`. At least the size of the first version.
     */
    uint32_t struct_size;
    /**
     * The job's type. Default BOUNDED.
     */
    bgjob_job_type job_type;
    /**
     * `BGJOB_CREATE_*` flags. Default 0 (start at once).
     */
    uint32_t flags;
    /**
     * UTF-8 name, copied; also the worker thread's name (cut to 15 bytes).
     * NULL (default) gives `job-<id>`.
     */
    const char *name;
    /**
     * Worker stack size in bytes, at most `BGJOB_MAX_STACK_SIZE`; 0 (default)
     * is the platform's default.
     */
    size_t stack_size;
    /**
     * Called once when the job has ended (see `bgjob_completion_callback`).
     * Default NULL: no callback.
     */
    bgjob_completion_callback completion;
    /**
     * Passed to `completion`. Ownership passes to bgjob with `bgjob_job_create`.
     */
    void *completion_userdata;
    /**
     * Frees `completion_userdata`, exactly once: after the callback ran, or
     * when it never will (the create failed, or its context was destroyed
     * first). May be NULL.
     */
    bgjob_free_callback completion_free;
    /**
     * Deliver the completion (and the events, if `event` is set) through
     * this context, on the thread that dispatches it. Default NULL: the
     * completion on the worker thread, events on the thread that made each
     * change.
     */
    struct bgjob_context *context;
    /**
     * Cancel the job (cause `BGJOB_CANCEL_CAUSE_TIMEOUT`) once it has run this
     * many ms of active time: from start, paused time not counted. Default −1:
     * no deadline. Unlike the header's other times, 0 also means no deadline
     * here, so a zero-filled struct sets none (`bgjob_job_set_deadline(job, 0)`
     * is "now"). Below −1 is refused. Starting a job with a deadline fails
     * with `BGJOB_RESULT_TRY_AGAIN` if bgjob's timer thread cannot be started
     * (see `bgjob_job_set_deadline`).
     */
    int64_t deadline_ms;
    /**
     * The job's error policy (see `bgjob_job_set_error_policy`). Default
     * REPORT.
     */
    bgjob_error_policy error_policy;
    /**
     * Finalization callbacks (QEMU's commit, abort and clean), each called at
     * most once with `finalize_userdata` and the job, after the job's work
     * (and its whole transaction's) is done and before the job ends: `commit`
     * if all succeeded, else `abort`; then `clean` either way — every
     * member's commit/abort first, then every member's clean, each pass in
     * the order the members were added to the transaction. They run on the
     * thread that finished the group's last worker, or the one calling
     * `bgjob_job_finalize` / `bgjob_txn_finalize` / the cancel or detach
     * that ended it, with no bgjob lock held. Each may be NULL.
     */
    bgjob_finalize_callback commit;
    /**
     * See `commit`.
     */
    bgjob_finalize_callback abort;
    /**
     * See `commit`.
     */
    bgjob_finalize_callback clean;
    /**
     * Passed to `commit`, `abort` and `clean`. Ownership passes to bgjob with
     * `bgjob_job_create`.
     */
    void *finalize_userdata;
    /**
     * Frees `finalize_userdata` exactly once, after the last of those
     * callbacks (or when none will run). May be NULL.
     */
    bgjob_free_callback finalize_free;
    /**
     * The operation, UTF-8, copied ("mirror", "save", "migrate"): shown by
     * `bgjob_job_get_operation`, `bgjob_list_jobs` and the debug log.
     * Default NULL: none ("").
     */
    const char *operation;
    /**
     * An owner tag, UTF-8, copied ("domain vm1"), so a listing tells whose
     * job it is: shown by `bgjob_job_get_owner` and `bgjob_list_jobs`.
     * Default NULL: none ("").
     */
    const char *owner;
    /**
     * Told of each verb that took effect while the job's work is not
     * done (see `bgjob_control_callback`): how the owner of an external job
     * hears of cancel, pause, resume, complete and speed changes. Works for
     * threaded jobs too. Default NULL.
     */
    bgjob_control_callback control;
    /**
     * Passed to `control`. Ownership passes to bgjob with `bgjob_job_create`.
     */
    void *control_userdata;
    /**
     * Frees `control_userdata` exactly once, after the last call of
     * `control`: when the job's work is done (`bgjob_job_end`, the worker's
     * return; a `bgjob_job_end` made inside a control call: once that call
     * returns), when a job that never ran is cancelled or destroyed, or
     * before `bgjob_job_create` returns if it fails. May be NULL.
     */
    bgjob_free_callback control_free;
    /**
     * Called with every event of the job, in order (see
     * `bgjob_event_callback`). Through `context` when one is set (an event
     * callback alone makes a context allowed without a completion). Default
     * NULL: no events.
     */
    bgjob_event_callback event;
    /**
     * Passed to `event`. Ownership passes to bgjob with `bgjob_job_create`.
     */
    void *event_userdata;
    /**
     * Frees `event_userdata` exactly once, after the last event call: after
     * END was delivered, or when no further event will be — the create
     * failed (before it returns); the context was destroyed (at once if it
     * held undelivered events of the job, else at the job's next change or
     * when the job is freed). May be NULL.
     */
    bgjob_free_callback event_free;
    /**
     * A job handle (NULL: none): the new job is its sub-job. Cancelling the
     * parent cancels the child (cause `BGJOB_CANCEL_CAUSE_PARENT`, passed on
     * to the child's own children); the parent does not end while the child
     * has not ended — after its worker returned it stays WAITING, then ends
     * with its own outcome (a child's failure does not fail it). The parent
     * must be CREATED, RUNNING or PAUSED (its worker not returned), else
     * create fails with `BGJOB_RESULT_NOT_ALLOWED`; a bad handle is
     * `BGJOB_RESULT_INVALID_HANDLE`. Under a parent whose cancel was requested
     * already, the child is born cancelled: its worker runs with the cancel
     * requested (cause PARENT); queued under the pool's cap, it ends
     * CANCELLED unrun instead, as a queued job cancelled does; an external
     * child's owner is told `BGJOB_CONTROL_CANCEL` as it starts. Only the
     * link is kept: the parent's handle may be released at once.
     */
    struct bgjob_job *parent;
} bgjob_job_options;

/**
 * The function a job runs on its own thread.
 *
 * Called once, on the job's worker thread (named after the job), with the
 * `userdata` given at create and the job's handle. Return 0 for success; any
 * other value fails the job with that value as its error code (or, if cancel
 * was requested, ends it `BGJOB_STATE_CANCELLED`). `bgjob_job_finish` may record
 * the status before returning instead.
 *
 * The worker may call every bgjob function on its own handle; `bgjob_job_wait`
 * and `bgjob_job_destroy` are refused with `BGJOB_RESULT_NOT_ALLOWED` (it would
 * wait for itself; the job is running). Progress
 * calls made here park the worker while the job is paused, unless the job
 * was created with `BGJOB_CREATE_UPDATES_NEVER_PARK` (then it parks only in
 * `bgjob_job_pause_point` and the cancellable waits). It must not
 * `longjmp` out of the call or throw a C++ exception through it.
 */
typedef int32_t (*bgjob_worker_callback)(void *userdata, struct bgjob_job *job);

/**
 * A consistent snapshot of a job (`bgjob_job_get_info`). Set `struct_size` to
 * `sizeof(bgjob_info)` before the call; later versions only add fields at the
 * end and fill no more than `struct_size` bytes.
 */
typedef struct bgjob_info {
    /**
     * Set by the caller; bgjob writes at most this many bytes.
     */
    uint32_t struct_size;
    /**
     * The job's type.
     */
    bgjob_job_type job_type;
    /**
     * The job's state.
     */
    bgjob_state state;
    /**
     * Whether cancel was requested (also for a job that then completed).
     */
    bool cancel_requested;
    /**
     * Whether a user pause is in force.
     */
    bool pause_requested;
    /**
     * Active time since start in ms (monotonic; paused time excluded).
     */
    int64_t elapsed_ms;
    /**
     * Estimated time to completion in ms; the worker's own ETA if it set one,
     * else computed from the rate; −1 when unknown; 0 once finished.
     */
    int64_t remaining_ms;
    /**
     * 0–100 (clamped); −1 when unknown and always for unbounded jobs. A
     * bounded job that ended COMPLETED reads 100 whatever `current` and
     * `total` say (they keep the last values the worker reported: 50/100
     * with percent 100 is possible); a FAILED or CANCELLED one keeps its
     * last percent.
     */
    int32_t percent;
    /**
     * The job's error code; 0 while it has none.
     */
    int32_t error_code;
    /**
     * Units done.
     */
    uint64_t current;
    /**
     * Units in all; 0 when unknown.
     */
    uint64_t total;
    /**
     * Units per second of active time; −1 when unknown.
     */
    double rate;
    /**
     * Time since the last progress update in ms; −1 if there was none.
     * Never more than the true time (a stall is never reported early), up
     * to two ticks of `CLOCK_MONOTONIC_COARSE` less (`clock_getres`; 8 ms
     * with a 250 Hz tick): updates read that clock, not the precise one.
     */
    int64_t since_progress_ms;
    /**
     * The job's process-unique id.
     */
    uint64_t id;
    /**
     * Why cancel was requested (`BGJOB_CANCEL_CAUSE_NONE` if it was not).
     */
    bgjob_cancel_cause cancel_cause;
    /**
     * Internal pauses in force (`bgjob_job_pause_internal`); the worker runs
     * only when this is 0 and `pause_requested` is false.
     */
    uint32_t pause_count;
    /**
     * The I/O status: not OK only while user-paused by the error policy.
     */
    bgjob_iostatus iostatus;
    /**
     * The job's error policy.
     */
    bgjob_error_policy error_policy;
    /**
     * Whether complete was requested (`bgjob_job_complete`).
     */
    bool complete_requested;
    /**
     * Whether the cancel request is a soft one (`bgjob_job_cancel_soft`; a
     * later force cancel clears it).
     */
    bool cancel_soft;
} bgjob_info;

/**
 * One live job, as listed by `bgjob_list_jobs`. Later versions add fields
 * at the end only; `bgjob_list_jobs_sized` lets a program built against an
 * older, shorter entry keep working.
 */
typedef struct bgjob_job_entry {
    /**
     * Process-unique id.
     */
    uint64_t id;
    /**
     * The job's state.
     */
    bgjob_state state;
    /**
     * Time since creation in ms.
     */
    int64_t age_ms;
    /**
     * Time since the last progress update in ms; −1 if none. As in
     * `bgjob_info`: never more than the truth, up to two coarse-clock ticks
     * less.
     */
    int64_t since_progress_ms;
    /**
     * The name, NUL-terminated, cut to fit.
     */
    char name[BGJOB_ENTRY_TEXT_SIZE];
    /**
     * The phase, NUL-terminated, cut to fit.
     */
    char phase[BGJOB_ENTRY_TEXT_SIZE];
    /**
     * The operation (`bgjob_job_options.operation`; "" for none),
     * NUL-terminated, cut to fit.
     */
    char operation[BGJOB_ENTRY_TEXT_SIZE];
    /**
     * The owner tag (`bgjob_job_options.owner`; "" for none),
     * NUL-terminated, cut to fit.
     */
    char owner[BGJOB_ENTRY_TEXT_SIZE];
    /**
     * Internal pauses in force (as `bgjob_info.pause_count`).
     */
    uint32_t pause_count;
    /**
     * Whether cancel was requested.
     */
    bool cancel_requested;
    /**
     * Why cancel was requested (`BGJOB_CANCEL_CAUSE_NONE` if it was not).
     */
    bgjob_cancel_cause cancel_cause;
    /**
     * The parent job's id (`bgjob_job_options.parent`), 0 for none: the
     * listing's tree. It stays the parent's id after the parent ended or was
     * freed (then no entry of the listing has it).
     */
    uint64_t parent_id;
} bgjob_job_entry;

/**
 * A number-typed statistic's value: the member its `bgjob_stat_type` names
 * (`u64`, `i64` or `f64`; unused for a string).
 */
typedef union bgjob_stat_value {
    /**
     * For `BGJOB_STAT_TYPE_U64`.
     */
    uint64_t u64;
    /**
     * For `BGJOB_STAT_TYPE_I64`.
     */
    int64_t i64;
    /**
     * For `BGJOB_STAT_TYPE_DOUBLE`.
     */
    double f64;
} bgjob_stat_value;

/**
 * One value of a batch (`bgjob_job_set_stats`).
 */
typedef struct bgjob_stat_update {
    /**
     * The statistic's index (from `bgjob_job_add_stat`).
     */
    uint32_t index;
    /**
     * The value for a number: the member of the statistic's declared type.
     */
    union bgjob_stat_value value;
    /**
     * The value for a string, UTF-8, copied; ignored for a number.
     */
    const char *text;
} bgjob_stat_update;

/**
 * One statistic as read by `bgjob_job_get_stats`.
 */
typedef struct bgjob_stat {
    /**
     * Its name, NUL-terminated (never cut: names are at most 63 bytes).
     */
    char name[BGJOB_ENTRY_TEXT_SIZE];
    /**
     * Its unit ("" for none), NUL-terminated.
     */
    char unit[BGJOB_STAT_UNIT_SIZE];
    /**
     * Its type: which of `value` and `text` holds it.
     */
    bgjob_stat_type type;
    /**
     * A number's value (0 until set).
     */
    union bgjob_stat_value value;
    /**
     * A string's value ("" until set), NUL-terminated, cut to 63 bytes on a
     * UTF-8 character boundary; "" for a number.
     */
    char text[BGJOB_ENTRY_TEXT_SIZE];
} bgjob_stat;

/**
 * A cancellation hook (libxl's design): anything a worker waits on (a timer,
 * a child process, an fd) registers one, and `bgjob_job_cancel` calls it.
 *
 * Called at most once, with its userdata and the job's handle: on the thread
 * that cancels the job (hooks run one at a time in registration order, with no
 * bgjob lock held), or at once on the registering thread when cancel had
 * already been requested. A cancel made by the job's deadline runs on a bgjob
 * thread named after the job, started for it (never bgjob's timer thread), so
 * a hook that blocks holds back no other job's deadline.
 *
 * The job's end and its hooks never overlap: the job does not become WAITING
 * or terminal while one of its hooks runs (its end waits for the hook to
 * return), and the hooks not yet called when its worker returns — a worker
 * that saw the cancel and returned before the cancel got to them — are
 * removed without being called. So once any call has seen the job end (wait,
 * get_info, the completion), none of its hooks runs or is still running, and
 * a driver may free what they point to.
 *
 * It may call any bgjob function, including removing itself or cancelling
 * its job (both return at once); `bgjob_job_wait` on its own job is refused
 * with `BGJOB_RESULT_NOT_ALLOWED` (the job cannot end before the hook
 * returns). It must not block on something only the job's end would bring.
 * It must not `longjmp` out.
 */
typedef void (*bgjob_cancel_hook_callback)(void *userdata, struct bgjob_job *job);

/**
 * Receives a child's captured output one line at a time
 * (`bgjob_child_options.on_line`): `stream` is `BGJOB_CHILD_STDOUT` or
 * `BGJOB_CHILD_STDERR`; `line` has `len` bytes without the terminator, plus a
 * NUL after them (the bytes may contain NULs of their own). A line ends at
 * `\n`, `\r` (progress meters redraw with it) or `\r\n`; empty lines are
 * skipped; a line over 64 KiB comes in pieces.
 *
 * Thread: the one calling `bgjob_job_wait_child` (normally the worker), with
 * no bgjob lock held. It may call any bgjob function except waiting for the
 * same child.
 */
typedef void (*bgjob_line_callback)(void *userdata,
                                    struct bgjob_job *job,
                                    int32_t stream,
                                    const char *line,
                                    size_t len);

/**
 * One descriptor passed to a child (`bgjob_child_options.fds`).
 */
typedef struct bgjob_child_fd {
    /**
     * The parent's descriptor. The child gets a copy of it; this one stays
     * the caller's, open and unchanged (bgjob neither closes it nor changes
     * its flags). It must be open during `bgjob_job_spawn_child`.
     */
    int32_t fd;
    /**
     * The number the child has it under: 3 or more for an extra descriptor
     * (QEMU's and libvirt's helpers get sockets and files this way), 0, 1 or
     * 2 to replace stdin, stdout or stderr (not with a flag that sets the
     * same stream: `BGJOB_CHILD_INHERIT_STDIN`, `_CAPTURE_`/`_NULL_STDOUT`,
     * `_CAPTURE_`/`_NULL_STDERR`), or `BGJOB_CHILD_FD_SAME` for `fd`'s own
     * number. Each number at most once. It is not close-on-exec in the child.
     */
    int32_t child_fd;
} bgjob_child_fd;

/**
 * How to start a child process (`bgjob_job_spawn_child`). Fill with
 * `bgjob_child_options_init(&opts, sizeof opts)` first; like
 * `bgjob_job_options` it only grows at the end.
 */
typedef struct bgjob_child_options {
    /**
     * `sizeof(bgjob_child_options)` as the caller compiled it.
     */
    uint32_t struct_size;
    /**
     * `BGJOB_CHILD_*` flags. Default 0: stdout and stderr inherited, stdin
     * `/dev/null`, signalled on cancel, a process group of its own.
     */
    uint32_t flags;
    /**
     * NULL-terminated argument vector; `argv[0]` is the program, looked up in
     * `PATH` when it has no `/`. Required. Copied.
     */
    const char *const *argv;
    /**
     * NULL-terminated `NAME=value` strings: the child's whole environment.
     * Default NULL: the parent's. Copied.
     */
    const char *const *envp;
    /**
     * The child's working directory. Default NULL: the parent's. Copied.
     */
    const char *cwd;
    /**
     * After a cancel: ms from SIGTERM to SIGKILL. Default
     * `BGJOB_CHILD_DEFAULT_GRACE_MS`; 0 sends SIGKILL at once.
     */
    int64_t grace_ms;
    /**
     * Receives captured lines. Default NULL: captured output is dropped.
     */
    bgjob_line_callback on_line;
    /**
     * Passed to `on_line`. Ownership passes to bgjob with the spawn call.
     */
    void *line_userdata;
    /**
     * Frees `line_userdata` exactly once: when the child has been waited for,
     * when its job ends, or when the spawn fails. May be NULL.
     */
    bgjob_free_callback line_free;
    /**
     * Descriptors passed to the child, `fd_count` of them (read during the
     * call, not kept). Besides these the child has only stdin, stdout and
     * stderr: every other descriptor of the parent's, close-on-exec or not,
     * is closed in it. Default NULL. (A field added after the first layout:
     * a caller built against an older header passes a smaller `struct_size`
     * and passes none.)
     */
    const struct bgjob_child_fd *fds;
    /**
     * Entries in `fds`. Default 0.
     */
    size_t fd_count;
} bgjob_child_options;

/**
 * Called with each lifecycle log line (no trailing newline).
 *
 * Runs on whichever thread the event happened on (never bgjob's timer thread),
 * with no bgjob lock held, on every path (a failed thread start included). It
 * may call any bgjob function, `bgjob_set_log_callback` included: a
 * replacement takes effect from the next line, and the replaced callback's
 * free function runs once the line being delivered to it is done. `line` is
 * valid only during the call.
 */
typedef void (*bgjob_log_callback)(void *userdata, const char *line);

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/* ---- Create and run ---- */

/**
 * Fills `options` with the defaults: bounded, started at once, named
 * `job-<id>`, default stack, no completion callback. Pass `sizeof *options`
 * as `size`: bgjob writes no more than that, and sets `struct_size` to the
 * bytes it wrote — `size`, so a program built against an older, shorter
 * struct keeps working; or, for one built against a later header whose
 * struct is longer than this library's, this library's own size: the later
 * fields are left as they were, a create reads none of them, and the program
 * can tell from `struct_size` which fields this library has.
 *
 * Returns: `BGJOB_RESULT_OK`, or `BGJOB_RESULT_INVALID_ARGUMENT` if `options` is
 * NULL or `size` is smaller than the first version of the struct.
 *
 * `options` points to `size` writable bytes.
 */
bgjob_result bgjob_job_options_init(struct bgjob_job_options *options, size_t size);

/**
 * Creates a job that runs `worker(userdata, job)` on its own thread.
 *
 * Unless `options->flags` has `BGJOB_CREATE_DEFER_START`, the job starts at once;
 * otherwise it stays `BGJOB_STATE_CREATED` until `bgjob_job_start`. The worker
 * thread is named after the job; an idle thread is reused when one is free, else
 * a new one is started, so a job never waits behind another unless the caller
 * set a cap (`bgjob_pool_set_max_running`: the job then queues, RUNNING). With
 * `options->completion` set, that callback runs once when the job has ended,
 * on the worker thread or through `options->context`. With `options->event`
 * set, that callback gets every event of the job, in order, END before the
 * completion (see `bgjob_event_callback`); the RUNNING event of a job started
 * here is delivered before this function returns when there is no context.
 *
 * Ownership: `userdata` passes to bgjob on every path. `userdata_free` (may be
 * NULL) is called exactly once: after the worker has returned, or when a job that
 * never ran is cancelled or destroyed, or before this function returns if it
 * fails. The same holds for `options->completion_userdata` and
 * `options->completion_free` (after the completion callback), and for
 * `options->event_userdata` and `options->event_free` (after the last event
 * call: see `bgjob_job_options.event_free`), except when
 * `options->struct_size` is too small for bgjob to read them. On success
 * `*job_out` is a new handle; release it with `bgjob_job_destroy` (once the job
 * has ended) or `bgjob_job_detach`. The job can be reached before this
 * call returns (`bgjob_job_lookup` of its id, its parent's cancel flowing
 * down): a cancel that comes then does not make the create fail or end the
 * job unrun; the job starts with its cancel requested, as a sub-job of a
 * cancelled parent does (`bgjob_job_options.parent`). A start through such
 * a handle then is refused (`BGJOB_RESULT_NOT_ALLOWED`: this create starts
 * it); if this create fails, such a handle finds the job CANCELLED, never
 * run, and its destroy releases it.
 *
 * `options` may be NULL (all defaults); `job_out` may not; `worker` must be
 * NULL exactly when `options->flags` has `BGJOB_CREATE_EXTERNAL` (an external
 * job has no worker and no thread: see `bgjob_job_end`; its `userdata` is
 * freed when its owner ends it, or when it is cancelled or destroyed
 * unstarted).
 *
 * The control callback's userdata (`options->control_userdata`) is freed
 * exactly once as well: after its last call, when the job's work is done,
 * or before this function returns if it fails.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL worker
 * without `BGJOB_CREATE_EXTERNAL` (or a worker with it), a NULL `job_out`, an unknown type or flag, a name that is not UTF-8, a stack size over
 * `BGJOB_MAX_STACK_SIZE`, a `struct_size` smaller than this version's, or a
 * context without a completion or event callback; `BGJOB_RESULT_INVALID_HANDLE` for a bad
 * `options->context`; `BGJOB_RESULT_TRY_AGAIN` when no thread could be started —
 * the worker's, or for a job with a deadline bgjob's timer thread (nothing is left
 * behind).
 */
bgjob_result bgjob_job_create(const struct bgjob_job_options *options,
                              bgjob_worker_callback worker,
                              void *userdata,
                              bgjob_free_callback userdata_free,
                              struct bgjob_job **job_out);

/**
 * Starts a job created with `BGJOB_CREATE_DEFER_START`.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_NOT_ALLOWED` unless the job is CREATED; `BGJOB_RESULT_TRY_AGAIN`
 * when no thread could be started — the worker's, or for a job with a deadline
 * bgjob's timer thread (the job stays CREATED and may be started again or
 * destroyed).
 */
bgjob_result bgjob_job_start(struct bgjob_job *job);

/**
 * Runs `worker` on a new job's thread and delivers `completion` through
 * `context` (QIOTask's `qio_task_run_in_thread`): one call makes the job,
 * starts it, and calls `completion(completion_userdata, job, state)` on the
 * thread that dispatches `context` once it has ended.
 *
 * With `job_out` NULL nobody keeps the job: its handle is valid inside the
 * completion callback (read its error and result there) and released right
 * after it, or when the callback will never run (the context was destroyed
 * first); with no completion either, the job runs detached and frees itself.
 * With `job_out` non-NULL the caller keeps the handle and destroys it.
 *
 * A QIOTask-style "source object" is kept alive by taking a reference before
 * the call and passing its unref as `completion_free` (see
 * `examples/poll_loop.c`).
 *
 * Ownership: both userdata pointers pass to bgjob on every path; each free
 * function (may be NULL) runs exactly once, as for `bgjob_job_create`.
 * `name` may be NULL; `context` may be NULL (the completion then runs on the
 * worker thread); `completion` may be NULL only when `context` is.
 *
 * Returns: as `bgjob_job_create`, plus `BGJOB_RESULT_INVALID_HANDLE` for a bad
 * `context`.
 */
bgjob_result bgjob_run_in_thread(struct bgjob_context *context,
                                 const char *name,
                                 bgjob_worker_callback worker,
                                 void *worker_userdata,
                                 bgjob_free_callback worker_free,
                                 bgjob_completion_callback completion,
                                 void *completion_userdata,
                                 bgjob_free_callback completion_free,
                                 struct bgjob_job **job_out);

/* ---- Read: info, state, lists ---- */

/**
 * Fills `*info_out` with one consistent snapshot of the job. Never waits on the
 * worker (or on a cancel in progress).
 *
 * The caller sets `info_out->struct_size` to `sizeof(bgjob_info)` first; bgjob
 * writes at most that many bytes, so a program built against an older, shorter
 * `bgjob_info` keeps working.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` if `info_out` is NULL or its `struct_size` is
 * smaller than the first version of the struct.
 *
 * `info_out` points to at least `info_out->struct_size` writable bytes.
 */
bgjob_result bgjob_job_get_info(struct bgjob_job *job, struct bgjob_info *info_out);

/**
 * Writes the job's current `bgjob_state` to `*state_out`.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` if `state_out` is NULL.
 */
bgjob_result bgjob_job_get_state(struct bgjob_job *job, bgjob_state *state_out);

/**
 * Writes the job's process-unique id to `*id_out`.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` if `id_out` is NULL.
 */
bgjob_result bgjob_job_get_id(struct bgjob_job *job, uint64_t *id_out);

/**
 * Reads the job's error: `*code_out` gets its code (0 if it has none) and
 * `buf` its message, snprintf-style: at most `len - 1` bytes plus a NUL, cut on
 * a UTF-8 character boundary; `*len_out` gets the message's full length in bytes
 * (without the NUL), so a caller can size a buffer and call again.
 *
 * A FAILED job has the code and message its worker set, else the value it
 * returned and "worker failed with code N". A CANCELLED job has the same code
 * rules (the worker's, else its return value) with the message "cancelled" by
 * default; one cancelled before it ran has code 0 and "cancelled before
 * start". Readable until destroy.
 *
 * `code_out` and `len_out` may be NULL; `buf` may be NULL when `len` is 0.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `buf` with non-zero `len`.
 */
bgjob_result bgjob_job_get_error(struct bgjob_job *job,
                                 int32_t *code_out,
                                 char *buf,
                                 size_t len,
                                 size_t *len_out);

/**
 * Reads the job's phase name (empty before the worker sets one) into `buf`,
 * snprintf-style like `bgjob_job_get_error`.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `buf` with non-zero `len`.
 */
bgjob_result bgjob_job_get_phase(struct bgjob_job *job, char *buf, size_t len, size_t *len_out);

/**
 * Reads the job's name into `buf`, snprintf-style like `bgjob_job_get_error`.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `buf` with non-zero `len`.
 */
bgjob_result bgjob_job_get_name(struct bgjob_job *job, char *buf, size_t len, size_t *len_out);

/**
 * Reads the job's operation name (`bgjob_job_options.operation`; empty for
 * none) into `buf`, snprintf-style like `bgjob_job_get_error`.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `buf` with non-zero `len`.
 */
bgjob_result bgjob_job_get_operation(struct bgjob_job *job, char *buf, size_t len, size_t *len_out);

/**
 * Reads the job's owner tag (`bgjob_job_options.owner`; empty for none) into
 * `buf`, snprintf-style like `bgjob_job_get_error`.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `buf` with non-zero `len`.
 */
bgjob_result bgjob_job_get_owner(struct bgjob_job *job, char *buf, size_t len, size_t *len_out);

/**
 * Lists the jobs that exist now (with a handle, a running worker, or both —
 * detached jobs included), in id order, so a stuck job can be found: its state,
 * phase, age, time since its last progress, operation, owner, pauses and
 * cancel state.
 *
 * Fills at most `capacity` entries of `entries` and writes the number of live
 * jobs to `*count_out` (which may exceed `capacity`: call again with a larger
 * array). `entries` may be NULL when `capacity` is 0, to count only.
 *
 * `bgjob_job_entry` grows at the end in later versions; this call writes
 * entries of the size this header declares. A program that must keep
 * working with a later library without being rebuilt calls
 * `bgjob_list_jobs_sized` with `sizeof(bgjob_job_entry)` instead.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` if `count_out` is
 * NULL, or `entries` is NULL with a non-zero `capacity`.
 *
 * `entries` is valid for `capacity` elements.
 */
bgjob_result bgjob_list_jobs(struct bgjob_job_entry *entries, size_t capacity, size_t *count_out);

/**
 * `bgjob_list_jobs` for entries of `entry_size` bytes each: pass
 * `sizeof(bgjob_job_entry)` as compiled. bgjob writes the first
 * `entry_size` bytes of each entry (at most its own entry's size) at a stride
 * of `entry_size`, so a program built against an older, shorter entry keeps
 * working with a later library.
 *
 * Returns: as `bgjob_list_jobs`; also `BGJOB_RESULT_INVALID_ARGUMENT` if
 * `entry_size` is smaller than the first version of the entry or not a
 * multiple of its alignment (8).
 *
 * `entries` is valid for `capacity * entry_size` bytes.
 */
bgjob_result bgjob_list_jobs_sized(struct bgjob_job_entry *entries,
                                   size_t entry_size,
                                   size_t capacity,
                                   size_t *count_out);

/**
 * Answers whether `verb` (a `bgjob_verb`) may be applied to a job in `state`
 * (a `bgjob_state`): the same table every verb consults. A refused verb returns
 * `BGJOB_RESULT_NOT_ALLOWED`.
 *
 * Returns: `BGJOB_RESULT_OK` with `*allowed_out` set;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for an unknown verb or state or a NULL
 * `allowed_out`.
 */
bgjob_result bgjob_verb_allowed(bgjob_verb verb, bgjob_state state, bool *allowed_out);

/**
 * A static lower-case name for a `bgjob_state` ("running"), or "unknown".
 * Never NULL; never free it.
 */
const char *bgjob_state_str(bgjob_state state);

/**
 * A static lower-case name for a `bgjob_verb` ("pause"), or "unknown".
 * Never NULL; never free it.
 */
const char *bgjob_verb_str(bgjob_verb verb);

/* ---- Control: cancel, pause, resume, wait, destroy, detach ---- */

/**
 * Requests cancellation and returns at once (it never waits for the worker).
 *
 * Cancel is cooperative: the worker learns of it from `bgjob_job_check_cancel`
 * and `bgjob_job_pause_point` (both return `BGJOB_RESULT_CANCELLED`), and a
 * worker parked at a pause point or progress call wakes up. Progress calls
 * themselves still succeed after a cancel (an update is not a failure), so a
 * worker must check. The worker decides the outcome (a job may still complete). A
 * CREATED job ends CANCELLED without its worker running (its userdata is freed
 * before this returns). A paused job is resumed so its worker can see the cancel.
 *
 * `status_out` (may be NULL) gets which race this call met: REQUESTED,
 * ALREADY_REQUESTED or ALREADY_FINISHED.
 *
 * Returns: `BGJOB_RESULT_OK` (in every state); `BGJOB_RESULT_INVALID_HANDLE`.
 *
 * Threads: any number of threads may cancel the same job at once: exactly one gets
 * REQUESTED.
 */
bgjob_result bgjob_job_cancel(struct bgjob_job *job, bgjob_cancel_status *status_out);

/**
 * Pauses a running job: its worker parks at its next pause point, and elapsed
 * time stops counting.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_NOT_ALLOWED` unless the job is RUNNING (it becomes PAUSED) or
 * READY (it becomes STANDBY), so pausing twice is refused.
 */
bgjob_result bgjob_job_pause(struct bgjob_job *job);

/**
 * Resumes a paused job: PAUSED becomes RUNNING, STANDBY becomes READY.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_NOT_ALLOWED` unless the job is PAUSED or STANDBY.
 */
bgjob_result bgjob_job_resume(struct bgjob_job *job);

/**
 * Waits until the job has ended, for at most `timeout_ms` milliseconds (−1:
 * forever; 0: just look). WAITING and PENDING are not an end: a job waiting
 * for its transaction or for a manual finalize keeps this waiting (and a finite
 * wait times out) until it is finalized. When it returns OK the job is terminal, its
 * userdata has been freed, and a completion bound to a context is already
 * queued there (one delivered on the worker thread may still be running). The
 * handle stays valid: destroy it afterwards.
 *
 * `state_out` (may be NULL) gets the final `bgjob_state` on success.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_TIMED_OUT`;
 * `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_INVALID_ARGUMENT` for a
 * `timeout_ms` below −1; `BGJOB_RESULT_NOT_ALLOWED` when called from the job's own
 * worker (it would wait for itself).
 */
bgjob_result bgjob_job_wait(struct bgjob_job *job, int64_t timeout_ms, bgjob_state *state_out);

/**
 * Waits until the job is in `state` (any `bgjob_state`, e.g.
 * `BGJOB_STATE_READY` or `BGJOB_STATE_PENDING`) or has ended, for at most
 * `timeout_ms` milliseconds (−1: forever; 0: just look). `*state_out` (may be
 * NULL) gets the state found: `state`, or the terminal state the job ended
 * in instead. A state the job passed through between two looks may be
 * missed (READY then COMPLETED at once gives COMPLETED); the event callback
 * sees every change. The job's state changes wake it; a change that does
 * not is seen within 20 ms.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_TIMED_OUT`;
 * `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_INVALID_ARGUMENT` for an
 * unknown state or a `timeout_ms` below −1; `BGJOB_RESULT_NOT_ALLOWED` when
 * called from the job's own worker.
 */
bgjob_result bgjob_job_wait_state(struct bgjob_job *job,
                                  bgjob_state state,
                                  int64_t timeout_ms,
                                  bgjob_state *state_out);

/**
 * Releases a job that has ended, or one that never started (which is cancelled
 * first: its worker never runs and its userdata is freed now). Its result, if
 * it has one and nobody took it, is freed now too. The handle and every copy
 * of it are invalid afterwards.
 *
 * Shared references (`bgjob_job_ref`, `bgjob_job_lookup`): on a handle that is
 * not the job's last one, destroy releases that reference only, in any state
 * (always OK; the job runs on, the other handles stay valid). Only the last
 * handle's destroy has the meaning above. On a detached job (a handle from
 * `bgjob_job_lookup`), even the last handle's destroy only releases it.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE` (also for a double
 * destroy); `BGJOB_RESULT_NOT_ALLOWED` on the last handle while the worker may
 * still run (RUNNING, PAUSED, READY, STANDBY) or the job waits for its end
 * (WAITING, PENDING): wait for it, or use `bgjob_job_detach`.
 *
 * Threads: of two threads destroying the same handle, one succeeds and the other
 * gets INVALID_HANDLE.
 */
bgjob_result bgjob_job_destroy(struct bgjob_job *job);

/**
 * Gives up the handle; the job frees itself when it ends. With
 * `BGJOB_DETACH_CANCEL` in `flags` it is cancelled first, else it runs on (a
 * paused job is resumed and its internal pauses are dropped: nobody could
 * resume them later, and from then on its STOP error policy reports instead
 * of stopping).
 *
 * A detached job always reaches a terminal state by itself and runs its
 * completion, commit/abort and clean exactly once: nobody can finalize it
 * now, so a manual-finalize job (one PENDING already included) finalizes as
 * soon as its work is done — committing if its worker succeeded, even after
 * the cancel — and a manual-finalize transaction with a detached member
 * finalizes by itself once every member is done.
 * Detaching an ended job is the same as destroying it. The handle is invalid
 * afterwards for the caller (the job's own worker may keep using it until it
 * returns).
 *
 * Shared references: detaching a handle that is not the job's last one (or a
 * handle of a job already detached) releases that reference only (a handle
 * of an external job not ended yet: once its end returns, see below); with
 * `BGJOB_DETACH_CANCEL` the job is cancelled too. The job is detached when
 * its last handle is.
 *
 * An external job (`BGJOB_CREATE_EXTERNAL`) whose owner has not ended it
 * yet is the exception: its owner still drives it by this handle, so the
 * handle stays valid until `bgjob_job_end` returns, which releases it (with
 * `BGJOB_DETACH_CANCEL` the owner hears `BGJOB_CONTROL_CANCEL` and ends it as
 * usual). That holds while other references live too: they are untouched
 * (and may be released while the job runs), the end releases the detached
 * handle whichever handle makes it, and the job counts as detached once no
 * handle is left then. Pause is refused from then on, as for any detached job. Its manual
 * finalize, which nobody can ask any more, is told to the owner as
 * `BGJOB_CONTROL_FINALIZE`: at once if the owner reported it PENDING
 * (`bgjob_job_report_state`), else when it does.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for an unknown flag; `BGJOB_RESULT_NOT_ALLOWED`
 * for a CREATED job (it would never run: start or destroy it instead).
 */
bgjob_result bgjob_job_detach(struct bgjob_job *job, uint32_t flags);

/**
 * Takes a new reference to a job: `*job_out` is a new handle value naming the
 * same job (GTask's `g_object_ref`, QIOTask holding its source). Each handle
 * is its own reference: releasing one (`bgjob_job_destroy`,
 * `bgjob_job_detach`) never invalidates another, and a released handle's
 * value stays invalid for ever, so one owner's stale handle can never release
 * another owner's reference. The job's last handle keeps the usual meaning of
 * destroy and detach; the others only release themselves. Every handle works
 * for every call (verbs, info, waits) in every state.
 *
 * Completion and commit/abort/clean callbacks get the creator's handle while
 * the creator holds it; once the creator has released theirs while another
 * reference lives, a handle valid for the duration of the callback (take a
 * reference inside it to keep the job longer). A lent creator's handle
 * stays the creator's: released during the callback, it is invalid for the
 * rest of the call too (calls through it return `BGJOB_RESULT_INVALID_HANDLE`).
 * The worker always gets the creator's handle, valid on its own
 * thread until it returns. After fork() every reference is invalid in the
 * child, like any handle.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` if `job_out` is NULL.
 */
bgjob_result bgjob_job_ref(struct bgjob_job *job, struct bgjob_job **job_out);

/**
 * Finds a job by id (`bgjob_info.id`, `bgjob_job_entry.id`) and gives a new
 * handle for it, a reference as `bgjob_job_ref` makes: release it with
 * `bgjob_job_destroy` or `bgjob_job_detach`.
 *
 * Found: any job some handle still names, in any state, and a detached job
 * that has not ended (QIOTask/GTask let a listing reach a task nobody else
 * holds). A detached job stays detached: destroy or detach of a looked-up
 * handle only releases that handle, and the job still frees itself when it
 * ends. Not found: ids never given, jobs whose last handle was released, and
 * detached jobs that have ended.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` if `job_out` is
 * NULL or no such job is found.
 */
bgjob_result bgjob_job_lookup(uint64_t id, struct bgjob_job **job_out);

/**
 * Sets the job's speed limit in bytes per second (0 = unlimited; QEMU's
 * `job-set-speed`). bgjob only stores it (`bgjob_job_get_speed`) and, when
 * it changed, tells the job's control callback (`BGJOB_CONTROL_SET_SPEED`
 * with the new value), on this thread, before this returns; the worker or
 * owner applies it.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a speed over `INT64_MAX`;
 * `BGJOB_RESULT_NOT_ALLOWED` once the job's work is done (WAITING or ended).
 */
bgjob_result bgjob_job_set_speed(struct bgjob_job *job, uint64_t bytes_per_second);

/**
 * Reads the speed limit last set with `bgjob_job_set_speed` (0 = unlimited,
 * the default) into `*bytes_per_second_out`. Readable until destroy.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `bytes_per_second_out`.
 */
bgjob_result bgjob_job_get_speed(struct bgjob_job *job, uint64_t *bytes_per_second_out);

/* ---- Completion contexts ---- */

/**
 * Creates a completion context: a queue of completions and one pollable fd.
 *
 * The fd (`bgjob_context_get_fd`) is an eventfd, close-on-exec and
 * non-blocking, readable while completions are queued; any number of
 * completions between two dispatches make one readiness. (Rarely, a dispatch
 * that raced a finishing job leaves it readable with nothing queued: the next
 * dispatch runs nothing and clears it, like any spurious wake-up.) Add it to
 * your event loop for reading (poll, GLib's `g_unix_fd_add`, libvirt's
 * `virEventAddHandle`, libuv, asyncio's `add_reader`) and call
 * `bgjob_context_dispatch` when it is readable: the callbacks then run on that
 * thread, so the caller needs no locking of its own (QIOTask's "callback in
 * the main event thread").
 *
 * Ownership: release it with `bgjob_context_destroy`.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` if `context_out` is
 * NULL; `BGJOB_RESULT_TRY_AGAIN` if no eventfd could be made (EMFILE and the
 * like).
 */
bgjob_result bgjob_context_create(struct bgjob_context **context_out);

/**
 * Destroys a context. Completions still queued are dropped without running
 * (their userdata free functions run now, on this thread); jobs still bound to
 * it run on, and their completions are dropped the same way when they end
 * (their free functions run then, on the worker thread). Nothing is leaked and
 * no free function is skipped. Remove the fd from your event loop first: it is
 * closed once no bound job refers to it any more.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE` (also for a double
 * destroy).
 *
 * Threads: may also be called from a completion callback of this context (the
 * remaining queued callbacks then do not run).
 */
bgjob_result bgjob_context_destroy(struct bgjob_context *context);

/**
 * Writes the context's fd to `*fd_out`. Poll it for reading; do not read,
 * write or close it. It is level-triggered: readable for as long as
 * completions are queued, so a poll loop, `g_unix_fd_add` or
 * `virEventAddHandle` may dispatch a few at a time; an edge-triggered
 * watcher (`EPOLLET`) must dispatch until the queue is empty.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` if `fd_out` is NULL.
 */
bgjob_result bgjob_context_get_fd(struct bgjob_context *context, int32_t *fd_out);

/**
 * Runs queued completion callbacks on the calling thread: at most `max` of
 * them, or (with `max` 0) all that were queued when the call began. Callbacks
 * queued meanwhile wait for the next dispatch, so a callback that starts a job
 * cannot make one dispatch run forever. An empty dispatch is harmless.
 * `ran_out` (may be NULL) gets how many ran.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_NOT_ALLOWED` when called from inside a callback this context is
 * dispatching (no recursion).
 *
 * Threads: several threads may dispatch one context; each callback runs once, on
 * one of them.
 */
bgjob_result bgjob_context_dispatch(struct bgjob_context *context, size_t max, size_t *ran_out);

/**
 * Writes the number of completions queued now to `*count_out`.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` if `count_out` is NULL.
 */
bgjob_result bgjob_context_pending(struct bgjob_context *context, size_t *count_out);

/* ---- Worker side: checks, progress, error, outcome ---- */

/**
 * Tells a worker whether cancel was requested. Never blocks.
 *
 * Returns: `BGJOB_RESULT_OK` if not; `BGJOB_RESULT_CANCELLED` if it was;
 * `BGJOB_RESULT_INVALID_HANDLE`.
 */
bgjob_result bgjob_job_check_cancel(struct bgjob_job *job);

/**
 * A pause point: while the job is paused, the calling worker parks here until
 * it is resumed or cancelled.
 *
 * Returns: `BGJOB_RESULT_OK` to carry on (for a READY job's worker woken by
 * the wake fd, `bgjob_job_complete_requested` tells whether complete was
 * requested); `BGJOB_RESULT_CANCELLED` once cancel was requested (the worker
 * should stop and return; `bgjob_job_cancel_is_soft` tells a soft cancel);
 * `BGJOB_RESULT_INVALID_HANDLE`.
 *
 * Threads: meant for the job's worker thread; another thread calling it would park
 * there instead.
 */
bgjob_result bgjob_job_pause_point(struct bgjob_job *job);

/**
 * Sets the total number of units (bytes, blocks…). It may move either way; 0
 * means unknown.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_NOT_ALLOWED` once the job has ended.
 *
 * Threads: any thread; on the job's worker thread it is a pause point (it
 * parks while the job is paused), unless the job was created with
 * `BGJOB_CREATE_UPDATES_NEVER_PARK`.
 */
bgjob_result bgjob_job_set_total(struct bgjob_job *job, uint64_t total);

/**
 * Sets the units done. Progress only grows: a smaller value than the current one
 * is refused and changes nothing. A value above the total is kept (the percent
 * is clamped to 100).
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` if it would go
 * backwards; `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED` once ended.
 *
 * Threads: any thread; on the job's worker thread it is a pause point (it
 * parks while the job is paused), unless the job was created with
 * `BGJOB_CREATE_UPDATES_NEVER_PARK`.
 */
bgjob_result bgjob_job_set_current(struct bgjob_job *job, uint64_t current);

/**
 * Adds `units` to the units done (saturating). The cheapest progress call:
 * meant to be called once per block in a copy loop.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_NOT_ALLOWED` once ended.
 *
 * Threads: any thread; on the job's worker thread it is a pause point (it
 * parks while the job is paused), unless the job was created with
 * `BGJOB_CREATE_UPDATES_NEVER_PARK`.
 */
bgjob_result bgjob_job_add_units(struct bgjob_job *job, uint64_t units);

/**
 * Sets the percent done directly, for workers that count in percent rather
 * than units; −1 goes back to the percent computed from units. Unlike
 * `bgjob_job_set_current`, the percent may go down: it is the worker's
 * estimate, and an estimate may be revised.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` outside −1..100
 * (nothing changed); `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED`
 * once ended.
 *
 * Threads: any thread; on the job's worker thread it is a pause point (it
 * parks while the job is paused), unless the job was created with
 * `BGJOB_CREATE_UPDATES_NEVER_PARK`.
 */
bgjob_result bgjob_job_set_percent(struct bgjob_job *job, int32_t percent);

/**
 * Sets the remaining time as the worker estimates it, in ms. It counts down
 * with active (unpaused) time until set again; −1 goes back to bgjob's own
 * estimate from the rate.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` below −1;
 * `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED` once ended.
 *
 * Threads: any thread; on the job's worker thread it is a pause point (it
 * parks while the job is paused), unless the job was created with
 * `BGJOB_CREATE_UPDATES_NEVER_PARK`.
 */
bgjob_result bgjob_job_set_eta(struct bgjob_job *job, int64_t remaining_ms);

/**
 * Sets the phase name ("copying", "cleaning up"), copied; readable with
 * `bgjob_job_get_phase` and listed by `bgjob_list_jobs`.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for NULL or
 * non-UTF-8; `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED` once ended.
 */
bgjob_result bgjob_job_set_phase(struct bgjob_job *job, const char *phase);

/**
 * Records the job's error: a non-zero code (an errno value is usual) and a
 * message (copied; NULL means none). The job fails only when the worker returns
 * non-zero (or finishes with a non-zero status); this only says why.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for code 0 or a
 * message that is not UTF-8; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_NOT_ALLOWED` once ended.
 */
bgjob_result bgjob_job_set_error(struct bgjob_job *job, int32_t code, const char *message);

/**
 * Records the status the worker reports when it returns (the virJob
 * "finish" style): 0 for success, any other value for failure with that code.
 * The last call wins and it overrides the worker's return value. The job ends
 * when the worker returns, not here.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_NOT_ALLOWED` unless the worker is running.
 */
bgjob_result bgjob_job_finish(struct bgjob_job *job, int32_t status);

/**
 * Ends an external job (`BGJOB_CREATE_EXTERNAL`) as a worker's return ends a
 * threaded one: `code` 0 is success (COMPLETED); any other is failure with
 * that code and `message` (copied; NULL means none) — FAILED, or CANCELLED
 * after a cancel request. A status recorded with `bgjob_job_finish` wins, as
 * for a worker. Transactions (the job waits in WAITING for its siblings),
 * manual finalize, commit/abort/clean and the completion follow as for a
 * threaded job. The job's `userdata` and its control callback's are freed
 * during this call, before the end is published; a control callback running
 * on another thread is waited for first (see `bgjob_control_callback`).
 * Called from inside one of the job's own control calls, the control
 * callback's userdata is in use: it is freed when that call returns, which
 * may be after a waiter has seen the end.
 *
 * This call is the job's worker's return: a completion without a context
 * runs on this thread, before it returns (after the commit or abort and
 * clean; in a transaction, only once every member has ended — the member
 * whose end settled the group gets its completion here, the others on
 * bgjob threads of their own). Called from inside one of the job's own
 * event callbacks (directly, or from its control callback's CANCEL), the
 * completion must follow the END event that this end queues: it then runs
 * on this thread right after that event callback returns and END was
 * delivered, not before this call returns. With a context it is queued
 * there. A detached external job's handle stays valid for its owner until this call
 * returns, and is released by it (see `bgjob_job_detach`).
 *
 * Calls that need a worker thread — `bgjob_job_pause_point`,
 * `bgjob_job_sleep`, `bgjob_job_wait_fd`, `bgjob_job_spawn_child`,
 * `bgjob_job_watch_child`, `bgjob_job_wait_child` — are refused with
 * `BGJOB_RESULT_NOT_ALLOWED` on an external job: nothing of bgjob ever parks
 * its owner. Progress, phase, ETA, errors (`bgjob_job_report_io_error`:
 * policy STOP pauses the job; the owner learns of the resume through
 * `BGJOB_CONTROL_RESUME`), results and cancel hooks work from any thread.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a message that is not UTF-8;
 * `BGJOB_RESULT_NOT_ALLOWED` for a threaded job, one not started (CREATED),
 * and once ended (a second `bgjob_job_end`: exactly one of two racing calls
 * succeeds).
 *
 * Threads: any thread, the control callback included (to end the job from
 * inside its `BGJOB_CONTROL_CANCEL`). A failure ended here aborts the job's
 * transaction inside this call: the siblings' control callbacks hear
 * `BGJOB_CONTROL_CANCEL` on this thread before it returns, so a driver whose
 * callback talks to the hypervisor should queue the verb for its loop rather
 * than send it from the callback (it would re-enter the loop that called
 * `bgjob_job_end`).
 */
bgjob_result bgjob_job_end(struct bgjob_job *job, int32_t code, const char *message);

/* ---- Statistics: declare, set, read with the snapshot ---- */

/**
 * Declares a statistic of the job: a name (UTF-8, 1 to 63 bytes, unique in
 * the job), a type and an optional unit (UTF-8, at most 15 bytes; NULL or ""
 * for none). `*index_out` gets its index, 0, 1, 2… in declaration order,
 * which the setters take. At most `BGJOB_MAX_STATS` per job. Until set, a
 * number reads 0 and a string "".
 *
 * Only while the job is CREATED (create it with `BGJOB_CREATE_DEFER_START`,
 * declare, then start): the set of statistics is fixed while it runs.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_NOT_ALLOWED` once the job has started;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL, empty, too long or non-UTF-8
 * name, a name the job already has, an unknown type, a too long or non-UTF-8
 * unit, a NULL `index_out`, or a job that already has `BGJOB_MAX_STATS`
 * (nothing is declared).
 */
bgjob_result bgjob_job_add_stat(struct bgjob_job *job,
                                const char *name,
                                bgjob_stat_type type,
                                const char *unit,
                                uint32_t *index_out);

/**
 * Sets a `BGJOB_STAT_TYPE_U64` statistic. As cheap as `bgjob_job_add_units`:
 * an atomic compare-and-swap and two stores, no lock, no system call — meant
 * for once per block.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for an index the job did not declare or a
 * statistic of another type; `BGJOB_RESULT_NOT_ALLOWED` once the job has
 * ended (its statistics are final).
 *
 * Threads: any thread; on the job's worker thread it follows the rule of the
 * progress calls (a pause point there).
 */
bgjob_result bgjob_job_set_stat_u64(struct bgjob_job *job, uint32_t index, uint64_t value);

/**
 * Sets a `BGJOB_STAT_TYPE_I64` statistic; as `bgjob_job_set_stat_u64`.
 *
 * Returns: as `bgjob_job_set_stat_u64`.
 *
 * Threads: as `bgjob_job_set_stat_u64`.
 */
bgjob_result bgjob_job_set_stat_i64(struct bgjob_job *job, uint32_t index, int64_t value);

/**
 * Sets a `BGJOB_STAT_TYPE_DOUBLE` statistic; as `bgjob_job_set_stat_u64`.
 *
 * Returns: as `bgjob_job_set_stat_u64`.
 *
 * Threads: as `bgjob_job_set_stat_u64`.
 */
bgjob_result bgjob_job_set_stat_double(struct bgjob_job *job, uint32_t index, double value);

/**
 * Sets a `BGJOB_STAT_TYPE_STRING` statistic to a copy of `value` (UTF-8; a
 * reader gets at most its first 63 bytes). Unlike the number setters it
 * allocates and takes a short per-job lock.
 *
 * Returns: as `bgjob_job_set_stat_u64`; also `BGJOB_RESULT_INVALID_ARGUMENT`
 * for a NULL or non-UTF-8 `value`.
 *
 * Threads: as `bgjob_job_set_stat_u64`.
 */
bgjob_result bgjob_job_set_stat_string(struct bgjob_job *job, uint32_t index, const char *value);

/**
 * Sets `count` statistics as one update: a reader (`bgjob_job_get_stats`)
 * sees all of them or none, never some old and some new. Each entry names a
 * statistic and gives a value of its declared type (`value` for a number,
 * `text` for a string). Every entry is checked first: on an error nothing is
 * set. Without a string it takes no lock, like the single setters.
 *
 * Returns: `BGJOB_RESULT_OK` (also for `count` 0); `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `updates` with non-zero `count`,
 * an undeclared index, or a NULL or non-UTF-8 `text` for a string;
 * `BGJOB_RESULT_NOT_ALLOWED` once the job has ended.
 *
 * Threads: as `bgjob_job_set_stat_u64` (one pause point for the batch).
 *
 * `updates` is valid for `count` elements.
 */
bgjob_result bgjob_job_set_stats(struct bgjob_job *job,
                                 const struct bgjob_stat_update *updates,
                                 size_t count);

/**
 * Reads every statistic of the job, in declaration order, together with its
 * snapshot: fills at most `capacity` entries of `stats_out`, writes the
 * number the job has to `*count_out` (which may exceed `capacity`: the
 * entries written are the first ones; call again with a larger array, as
 * with `bgjob_list_jobs`), and, when `info_out` is not NULL, fills it as
 * `bgjob_job_get_info` does.
 *
 * Consistent: the statistics read are one set the setters published — a
 * batch (`bgjob_job_set_stats`) is seen whole or not at all — and no
 * statistic was set between the start of the snapshot and the statistics'
 * read, so `*info_out` and the statistics describe the same moment as far as
 * statistics go. (Should statistics be set so often that 16 attempts in a row
 * each overlap a set, the statistics are read right after the snapshot: still
 * one published set.) Progress and statistics are separate: a worker that
 * wants a reader to see them in step sets progress first.
 *
 * Readable in every state, also after the job ended (the values it ended
 * with: setters are refused then) until it is destroyed. Never waits on the
 * worker.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `count_out`, a NULL `stats_out`
 * with non-zero `capacity`, or an `info_out` whose `struct_size` is smaller
 * than the first version's.
 *
 * `stats_out` is valid for `capacity` elements; `info_out`, when not NULL,
 * for its `struct_size` bytes.
 */
bgjob_result bgjob_job_get_stats(struct bgjob_job *job,
                                 struct bgjob_info *info_out,
                                 struct bgjob_stat *stats_out,
                                 size_t capacity,
                                 size_t *count_out);

/* ---- Results ---- */

/**
 * Worker side: leaves a result for the caller, replacing an earlier one (which
 * is freed now). Ownership of `result` passes to bgjob on every path:
 * `result_free` (may be NULL) runs exactly once — when replaced, when the job
 * is destroyed, or at once if this call fails — unless the caller takes it
 * with `bgjob_job_take_result`.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_NOT_ALLOWED` once the job has ended.
 */
bgjob_result bgjob_job_set_result(struct bgjob_job *job,
                                  void *result,
                                  bgjob_free_callback result_free);

/**
 * Writes the job's result pointer to `*result_out` (NULL if the worker left
 * none). The job still owns it: it stays valid until the job is destroyed.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` if `result_out` is NULL;
 * `BGJOB_RESULT_NOT_ALLOWED` before the job has ended.
 */
bgjob_result bgjob_job_get_result(struct bgjob_job *job, void **result_out);

/**
 * Takes the job's result: `*result_out` gets the pointer (NULL if none) and
 * the caller now owns it; bgjob will not call its free function.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` if `result_out` is NULL;
 * `BGJOB_RESULT_NOT_ALLOWED` before the job has ended.
 */
bgjob_result bgjob_job_take_result(struct bgjob_job *job, void **result_out);

/* ---- Cancellation and waits: hooks, sleep, wake fd, fd waits, deadlines ---- */

/**
 * Registers a cancellation hook on a job: `bgjob_job_cancel` will call
 * `hook(userdata, job)` once, on the cancelling thread, with no lock held;
 * hooks run one at a time in registration order. (A deadline's cancel calls
 * them on a bgjob thread named after the job, never on the timer thread.) If
 * cancel was already requested, the hook runs at once on this thread before
 * this returns, and the call returns `BGJOB_RESULT_CANCELLED` to say so —
 * unless it was a soft cancel (`bgjob_job_cancel_soft`): then the hook is
 * registered for a later force cancel. Hooks
 * still registered when the job's worker returns are removed without being
 * called, and the job does not end while one of its hooks runs (see
 * `bgjob_cancel_hook_callback`): once any call has seen the job end, none of its
 * hooks runs or is still running.
 *
 * Ownership: `userdata` passes to bgjob on every path; `userdata_free` (may be
 * NULL) runs exactly once: after the hook ran, when it is removed, when the job
 * ends, or at once if this call fails.
 *
 * Returns: `BGJOB_RESULT_OK` with `*hook_id_out` set to the hook's id, never 0
 * (`hook_id_out` may be NULL); `BGJOB_RESULT_CANCELLED` when the hook already
 * ran (`*hook_id_out` is not written: a hook run at once has no id, and one
 * that removes "itself" by a 0 it was given gets `BGJOB_RESULT_NOT_FOUND` at
 * once);
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL hook; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_NOT_ALLOWED` once the job has ended.
 */
bgjob_result bgjob_job_add_cancel_hook(struct bgjob_job *job,
                                       bgjob_cancel_hook_callback hook,
                                       void *userdata,
                                       bgjob_free_callback userdata_free,
                                       uint64_t *hook_id_out);

/**
 * Removes a cancellation hook. When this returns, the hook is not running and
 * will not run: one being called on another thread is waited for. Called from
 * inside the hook itself it returns at once (`BGJOB_RESULT_NOT_FOUND`).
 *
 * Returns: `BGJOB_RESULT_OK` if the hook had not run (its userdata is freed now);
 * `BGJOB_RESULT_NOT_FOUND` if it already ran (or is this very call's caller), or
 * the id is unknown, or 0 (never a hook's id: at once, waiting for no hook);
 * `BGJOB_RESULT_INVALID_HANDLE`.
 */
bgjob_result bgjob_job_remove_cancel_hook(struct bgjob_job *job, uint64_t hook_id);

/**
 * A cancellable sleep for the worker: returns after `ms` milliseconds of active
 * time, or at once when cancel is requested. While the job is paused the worker
 * parks here and the paused time does not count; spurious wake-ups never
 * shorten it. −1 sleeps until cancel is requested; 0 only checks for it.
 * A complete request (`bgjob_job_complete`) ends it early with
 * `BGJOB_RESULT_OK` (at once while the worker has not acknowledged it with
 * `bgjob_job_complete_requested`): after an OK, a worker of a READY job
 * asks `bgjob_job_complete_requested` whether the time passed or it was told
 * to finish.
 *
 * Returns: `BGJOB_RESULT_OK` when the time has passed (or complete was
 * requested); `BGJOB_RESULT_CANCELLED`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for an `ms` below −1;
 * `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED` unless the job is
 * running.
 *
 * Threads: meant for the job's worker thread.
 */
bgjob_result bgjob_job_sleep(struct bgjob_job *job, int64_t ms);

/**
 * Gives the job's wake fd, for a worker with its own `poll` loop: readable
 * once cancel was requested (it stays so), while a user pause is pending
 * (until resume), and while a complete request's wake is pending (until the
 * worker calls `bgjob_job_complete_requested`). When it turns readable, call
 * `bgjob_job_pause_point`: it parks while the job is paused and returns
 * `BGJOB_RESULT_CANCELLED` once cancel was requested; on OK, a READY job's
 * worker asks `bgjob_job_complete_requested`. bgjob owns the fd (close-on-exec, non-blocking; do
 * not read, write or close it); it lives until the job is destroyed.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `fd_out`;
 * `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_SYSTEM` if no fd could be made.
 */
bgjob_result bgjob_job_get_wake_fd(struct bgjob_job *job, int32_t *fd_out);

/**
 * A cancellable wait for an fd, for the worker: waits until `fd` is ready for
 * `events` (`BGJOB_FD_READABLE`, `BGJOB_FD_WRITABLE` or both), for at most
 * `timeout_ms` of active time (−1: no limit; 0: just look), and returns at
 * once when cancel is requested. While the job is paused the worker parks
 * here and the paused time does not count. A complete request
 * (`bgjob_job_complete`) ends it early with `BGJOB_RESULT_OK` and
 * `*revents_out` 0 (at once while the worker has not acknowledged it with
 * `bgjob_job_complete_requested`).
 *
 * Returns: `BGJOB_RESULT_OK` with `*revents_out` (may be NULL) set to what
 * happened: `BGJOB_FD_*` bits, possibly `BGJOB_FD_ERROR` or `BGJOB_FD_HANGUP`
 * alone, or 0 for a complete request's wake; `BGJOB_RESULT_TIMED_OUT`; `BGJOB_RESULT_CANCELLED`;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a negative or closed fd, no or unknown
 * `events` bits, or a timeout below −1; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_NOT_ALLOWED` unless the job is running; `BGJOB_RESULT_SYSTEM` if
 * poll itself failed (errno says why).
 *
 * Threads: meant for the job's worker thread.
 */
bgjob_result bgjob_job_wait_fd(struct bgjob_job *job,
                               int32_t fd,
                               uint32_t events,
                               int64_t timeout_ms,
                               uint32_t *revents_out);

/**
 * Gives the job a deadline: once it has run `ms` milliseconds of active time
 * (counted from its start, paused time excluded) it is cancelled, and
 * `bgjob_info.cancel_cause` says `BGJOB_CANCEL_CAUSE_TIMEOUT`. −1 removes the
 * deadline. One that has already passed (0 always has) cancels a running or
 * PAUSED job at once (on another thread, shortly after this returns; the
 * paused one is resumed to see it, as by `bgjob_job_cancel`), a CREATED one
 * as it starts. A later one set on a PAUSED job waits for the resume: paused
 * time is not active time. Allowed in CREATED, RUNNING and PAUSED (it
 * replaces the one from `bgjob_job_options.deadline_ms`).
 *
 * bgjob's one timer thread (started by the first deadline) only notices the
 * time; the cancel, with the job's cancellation hooks, runs on a bgjob thread
 * named after the job, so a hook that blocks delays no other job's deadline.
 * If that thread cannot be started when the deadline passes (EAGAIN), the
 * cancel is tried again every 20 ms until it can be: the deadline is late,
 * never lost.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for an `ms` below
 * −1; `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED` once the job has
 * ended; `BGJOB_RESULT_TRY_AGAIN` if the timer thread could not be started (the
 * job's deadline is then unchanged).
 */
bgjob_result bgjob_job_set_deadline(struct bgjob_job *job, int64_t ms);

/* ---- Child processes ---- */

/**
 * Fills `options` with the defaults (no argv; stdout and stderr inherited;
 * stdin `/dev/null`; grace `BGJOB_CHILD_DEFAULT_GRACE_MS`; no flags; no fds
 * passed). Pass `sizeof *options` as `size`; a `size` from an older header
 * (down to the first layout) gets that many bytes written.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for NULL or a `size`
 * smaller than the first version of the struct.
 *
 * `options` points to `size` writable bytes.
 */
bgjob_result bgjob_child_options_init(struct bgjob_child_options *options, size_t size);

/**
 * Starts a child process bound to a running job, as libvirt's virCommand
 * does: the child gets stdin (`/dev/null` unless asked), stdout, stderr and
 * the descriptors in `options->fds`, and no other descriptor of this process,
 * close-on-exec or not; every signal disposition is reset to the default
 * (one the host ignores, such as SIGTERM or SIGPIPE, is not ignored in the
 * child) and its signal mask is empty; it leads a new process group (a new
 * session with `BGJOB_CHILD_NEW_SESSION`), and every signal bgjob sends it
 * goes to that whole group, so the programs it starts (a shell's commands)
 * get them too. The program is found in `PATH` when `argv[0]` has no `/`:
 * the `PATH` of `envp` if it sets one, else this process's.
 *
 * On cancel bgjob sends the group SIGTERM, then SIGKILL when `grace_ms` has
 * passed; once the child itself has exited after a cancel, whatever is left
 * of its group gets SIGKILL at once. The worker waits for it with
 * `bgjob_job_wait_child`, which also delivers captured output. A child still
 * bound when the worker returns is killed with its group and reaped before
 * the job ends, so none outlives its job and none is left a zombie. Once
 * cancel has been requested (not counting a soft cancel,
 * `bgjob_job_cancel_soft`, which lets the worker finish its work, children
 * included), only a child with `BGJOB_CHILD_SURVIVES_CANCEL`
 * is started (a cleanup step); any other is refused with
 * `BGJOB_RESULT_CANCELLED` and nothing runs, as a program started only to be
 * killed at once may leave half its work done.
 *
 * The child and a process descriptor (pidfd) for it are made in one system
 * call (`clone3` with `CLONE_PIDFD`; `clone` where clone3 is refused), so
 * `BGJOB_RESULT_OK` means the program was started, and `BGJOB_RESULT_SYSTEM`
 * that it did not run: bgjob has the child before anyone can reap it. bgjob
 * reaps it through the pidfd (without one — kernels before 5.2 — by its pid,
 * which nothing else reaps): it installs no SIGCHLD handler and never calls
 * `waitpid(-1)`. A host that does may still take the child's exit status
 * first; the child did run, and `bgjob_job_wait_child` then fails with
 * `BGJOB_RESULT_SYSTEM`, errno ECHILD.
 *
 * Returns: `BGJOB_RESULT_OK` with `*pid_out` (may be NULL) set: the program runs;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for NULL options, a NULL or empty `argv`, an
 * environment entry without `=`, unknown or conflicting flags, a negative grace,
 * `fd_count` > 0 with NULL `fds`, a negative `fd`, a `child_fd` below −1 or given
 * twice, or one that replaces a stream a flag sets; `BGJOB_RESULT_INVALID_HANDLE`;
 * `BGJOB_RESULT_NOT_ALLOWED` unless the job is running; `BGJOB_RESULT_CANCELLED`
 * once cancel was requested, without `BGJOB_CHILD_SURVIVES_CANCEL` (nothing was
 * started); `BGJOB_RESULT_SYSTEM` if the program could not be started, and did not
 * run (errno: ENOENT, EACCES, ...; EBADF for a passed `fd` that is not open;
 * EINVAL or EMFILE when the highest `child_fd` leaves no room below the fd limit,
 * `RLIMIT_NOFILE`: bgjob first copies every fd the child gets above it).
 *
 * `options` points to a `bgjob_child_options` of `struct_size` bytes whose vectors
 * are NULL-terminated, whose strings are NUL-terminated and whose `fds` points to
 * `fd_count` entries.
 */
bgjob_result bgjob_job_spawn_child(struct bgjob_job *job,
                                   const struct bgjob_child_options *options,
                                   int32_t *pid_out);

/**
 * Binds a child the worker started itself (with `fork`/`posix_spawn`) to the
 * job, as `bgjob_job_spawn_child` does: cancel signals it (SIGTERM, then
 * SIGKILL after `grace_ms`), `bgjob_job_wait_child` reaps it, and it is killed
 * and reaped if still running when the worker returns. It must be a child of
 * this process that nobody has waited for; from now on only bgjob waits for
 * it. Signals go to its process group as well if it leads one when bound
 * (the worker made it with `setpgid(0, 0)` or `setsid`), else to it alone. A
 * child bound after a (force) cancel was requested is signalled at once; one
 * bound after a soft cancel is signalled by a later force cancel: cancel cannot
 * spare a watched child (spawn one with `BGJOB_CHILD_SURVIVES_CANCEL` for
 * that).
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_FOUND` if no such process exists;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a pid ≤ 0, a process that is not this
 * process's child, a pid already watched, or a negative grace;
 * `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED` unless the job is
 * running; `BGJOB_RESULT_SYSTEM` (errno set) otherwise.
 */
bgjob_result bgjob_job_watch_child(struct bgjob_job *job, int32_t pid, int64_t grace_ms);

/**
 * Waits for a child bound to the job, delivering its captured output to its
 * line callback on this thread. Returns when the child has ended and been
 * reaped, with `*wstatus_out` (may be NULL) in `waitpid` form (`WIFEXITED`,
 * `WEXITSTATUS`, `WIFSIGNALED`, `WTERMSIG` apply). A cancel does not cut the
 * wait short: bgjob has signalled the child, which ends within its grace
 * period, and the call then returns `BGJOB_RESULT_CANCELLED` with the status
 * set — so a worker that gets CANCELLED knows the child is gone. A child
 * spawned with `BGJOB_CHILD_SURVIVES_CANCEL` is not signalled: the wait lasts
 * until it ends (or `timeout_ms`) and returns `BGJOB_RESULT_OK` with its
 * status, cancel or not. While the job
 * is paused the worker parks here (the child keeps running) and the paused
 * time does not count toward `timeout_ms` (−1: no limit; 0: just look).
 *
 * Returns: `BGJOB_RESULT_OK` (status set); `BGJOB_RESULT_CANCELLED` (status set);
 * `BGJOB_RESULT_TIMED_OUT` (the child still runs and stays bound);
 * `BGJOB_RESULT_NOT_FOUND` for a pid the job does not hold (never bound, or
 * already waited for); `BGJOB_RESULT_INVALID_ARGUMENT` for a timeout below −1 or
 * when another thread is waiting for the same child;
 * `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED` unless the job is
 * running; `BGJOB_RESULT_SYSTEM` (errno set) if waiting failed.
 *
 * Threads: meant for the job's worker thread.
 */
bgjob_result bgjob_job_wait_child(struct bgjob_job *job,
                                  int32_t pid,
                                  int64_t timeout_ms,
                                  int32_t *wstatus_out);

/* ---- QEMU semantics: finalize, internal pause, error policy ---- */

/**
 * Finalizes a job created with `BGJOB_CREATE_MANUAL_FINALIZE` (QEMU's
 * `job_finalize`) once its work is done: its commit (or abort) and clean
 * callbacks run on this thread, the job WAITING while they do (PENDING →
 * WAITING → its terminal state, as every job's end), then it ends. For a member of a transaction
 * it finalizes the transaction (as soon as every member is done).
 *
 * An external job whose owner reported it WAITING or PENDING
 * (`bgjob_job_report_state`: QEMU runs the job) is not finalized here: the
 * request is forwarded to its owner as `BGJOB_CONTROL_FINALIZE` (at once in
 * PENDING, when the owner reports PENDING if asked in WAITING), which sends
 * QEMU's `job-finalize` and ends the job with `bgjob_job_end` when it
 * concludes; that end then finalizes at once (no second call). Refused for
 * such a job without `BGJOB_CREATE_MANUAL_FINALIZE` (QEMU finalizes it by
 * itself) and in ABORTING. A failed forward (`bgjob_job_control_failed`)
 * drops the request: finalize may be called again.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` unless the job is
 * `BGJOB_STATE_PENDING` or `BGJOB_STATE_WAITING` (and not already being
 * finalized, nor its finalize already forwarded);
 * `BGJOB_RESULT_INVALID_HANDLE`.
 */
bgjob_result bgjob_job_finalize(struct bgjob_job *job);

/**
 * An internal pause (QEMU's drain): a counter beside the user pause. The
 * worker runs only while both are clear; it parks at its next pause point,
 * cancellable wait or progress update, and paused time does not count. The
 * state stays RUNNING (`bgjob_info.pause_count` shows it). Balance each with
 * `bgjob_job_resume_internal`.
 *
 * A cancel overrides internal pauses, as QEMU's force-cancel does: the
 * worker's pause points stop parking and report the cancel, so a cancelled
 * job may run to its end with the count above 0. Once the job has ended the
 * count reads 0 and a balancing `bgjob_job_resume_internal` returns
 * `BGJOB_RESULT_NOT_ALLOWED`, which the caller may ignore. A detach drops
 * every internal pause (nobody could balance them later).
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` once the job has ended;
 * `BGJOB_RESULT_INVALID_HANDLE`.
 */
bgjob_result bgjob_job_pause_internal(struct bgjob_job *job);

/**
 * Undoes one `bgjob_job_pause_internal`.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` for an unbalanced resume
 * (no internal pause in force) or a job that has ended;
 * `BGJOB_RESULT_INVALID_HANDLE`.
 */
bgjob_result bgjob_job_resume_internal(struct bgjob_job *job);

/**
 * Changes the job's `bgjob_error_policy` (set at create with
 * `bgjob_job_options.error_policy`).
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for an unknown
 * policy; `BGJOB_RESULT_NOT_ALLOWED` once the work is done;
 * `BGJOB_RESULT_INVALID_HANDLE`.
 */
bgjob_result bgjob_job_set_error_policy(struct bgjob_job *job, bgjob_error_policy policy);

/**
 * For the worker: an I/O error happened (`code` errno-style, non-zero;
 * `message` may be NULL). The job's error policy decides, and
 * `*action_out` says what to do:
 * - `BGJOB_ERROR_ACTION_REPORT`: give up; `code` and `message` are now the
 *   job's error — return non-zero.
 * - `BGJOB_ERROR_ACTION_IGNORE`: carry on.
 * - `BGJOB_ERROR_ACTION_STOP`: the job is now user-paused (PAUSED) with
 *   `iostatus` FAILED (NOSPACE for ENOSPC); call `bgjob_job_pause_point`,
 *   which parks until a resume (resetting `iostatus` to OK) or returns
 *   CANCELLED (a cancel resets it too), then retry.
 *
 * Which answer each policy gives (`code` 28 is ENOSPC):
 *
 * | policy | `code` == ENOSPC       | any other `code`      |
 * |--------|------------------------|-----------------------|
 * | REPORT | REPORT                 | REPORT                |
 * | IGNORE | IGNORE                 | IGNORE                |
 * | STOP   | STOP, iostatus NOSPACE | STOP, iostatus FAILED |
 * | ENOSPC | STOP, iostatus NOSPACE | REPORT                |
 *
 * A job whose cancel was requested is never stopped, nor is a detached one
 * (nobody could resume it): either is told to report.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL
 * `action_out`, a zero code or a message that is not UTF-8;
 * `BGJOB_RESULT_NOT_ALLOWED` unless the job is running (an external job:
 * also once its owner reported WAITING, PENDING or ABORTING);
 * `BGJOB_RESULT_INVALID_HANDLE`.
 *
 * Threads: the job's worker thread; for an external job (no worker), its
 * owner on any thread — a STOP then pauses the job without calling its
 * control callback, and the resume that follows is one
 * `BGJOB_CONTROL_RESUME`.
 */
bgjob_result bgjob_job_report_io_error(struct bgjob_job *job,
                                       int32_t code,
                                       const char *message,
                                       bgjob_error_action *action_out);

/**
 * Says the job is ready (QEMU's `job_transition_to_ready`: a mirror has
 * converged and keeps mirroring): RUNNING becomes `BGJOB_STATE_READY`,
 * PAUSED becomes `BGJOB_STATE_STANDBY`. The worker keeps running until
 * `bgjob_job_complete` (or a cancel) asks it to finish. A READY job accepts
 * every verb a RUNNING one does (STANDBY: a PAUSED one), plus complete.
 *
 * Returns: `BGJOB_RESULT_OK`, also when the job is READY or STANDBY already;
 * `BGJOB_RESULT_NOT_ALLOWED` unless its worker is running (RUNNING, PAUSED),
 * once its worker declared its outcome, and once an external job's owner
 * reported WAITING, PENDING or ABORTING; `BGJOB_RESULT_INVALID_HANDLE`.
 *
 * Threads: any thread (usually the worker); it never parks.
 */
bgjob_result bgjob_job_set_ready(struct bgjob_job *job);

/**
 * Asks a READY job to finish (QEMU's `job_complete`; a mirror pivots). It
 * sets "complete requested" (`bgjob_job_complete_requested`,
 * `bgjob_info.complete_requested`; it stays set) and wakes the worker as a
 * cancel does:
 * - the wake fd (`bgjob_job_get_wake_fd`) becomes readable;
 * - `bgjob_job_sleep` returns `BGJOB_RESULT_OK` early (before its time);
 * - `bgjob_job_wait_fd` returns `BGJOB_RESULT_OK` with `*events_out` 0 (no
 *   event: the wake was the complete request);
 * - `bgjob_job_pause_point` returns `BGJOB_RESULT_OK` (it never parks for
 *   it).
 *
 * The wake lasts until the worker calls `bgjob_job_complete_requested` on
 * its own thread: until then the wake fd stays readable and every sleep and
 * fd wait returns at once, so a worker that wakes early should ask. The
 * worker then finishes and returns 0 (the job ends COMPLETED, through
 * PENDING with manual finalize). `bgjob_job_wait_child` does not end early
 * for it. Asking again wakes again.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` unless the job is
 * READY (so also in STANDBY: resume first), and while cancel is requested,
 * an internal pause (`bgjob_job_pause_internal`) is in force or the worker
 * declared its outcome; `BGJOB_RESULT_INVALID_HANDLE`.
 */
bgjob_result bgjob_job_complete(struct bgjob_job *job);

/**
 * Tells whether complete was requested (`bgjob_job_complete`); once true it
 * stays true. Called on the job's worker thread it also acknowledges the
 * wake the request gave (see `bgjob_job_complete`): the wake fd is no longer
 * readable for it, and sleeps and fd waits no longer return early for it.
 * On any other thread it only reads.
 *
 * Returns: `BGJOB_RESULT_OK` with `*requested_out` set;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `requested_out`;
 * `BGJOB_RESULT_INVALID_HANDLE`.
 */
bgjob_result bgjob_job_complete_requested(struct bgjob_job *job, bool *requested_out);

/**
 * Soft cancel (QEMU's `block-job-cancel` without force on a ready job): on a
 * READY or STANDBY job, cancel is requested with "soft" set. The worker sees
 * the cancel as usual (`bgjob_job_check_cancel`, pause points and waits
 * return `BGJOB_RESULT_CANCELLED`; a STANDBY job is resumed), reads
 * `bgjob_job_cancel_is_soft`, and is meant to finish without pivoting and
 * return 0: the job then ends COMPLETED (with `cancel_requested` true).
 * A soft cancel calls no cancellation hooks and signals no child process
 * (they abort what the worker waits on); a later `bgjob_job_cancel` makes it
 * a force cancel: soft is cleared, the hooks are called, and that call gets
 * `BGJOB_CANCEL_STATUS_REQUESTED`. In every other state this is
 * `bgjob_job_cancel`.
 *
 * `status_out` (may be NULL) gets which race this call met, as for
 * `bgjob_job_cancel`.
 *
 * Returns: `BGJOB_RESULT_OK` (in every state); `BGJOB_RESULT_INVALID_HANDLE`.
 */
bgjob_result bgjob_job_cancel_soft(struct bgjob_job *job, bgjob_cancel_status *status_out);

/**
 * Tells the worker whether the cancel request is a soft one
 * (`bgjob_job_cancel_soft`; false when cancel was not requested, and after a
 * force cancel).
 *
 * Returns: `BGJOB_RESULT_OK` with `*soft_out` set;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `soft_out`;
 * `BGJOB_RESULT_INVALID_HANDLE`.
 */
bgjob_result bgjob_job_cancel_is_soft(struct bgjob_job *job, bool *soft_out);

/**
 * For an external job's owner: reports a state of the work that bgjob
 * cannot infer (the QEMU job's `JOB_STATUS_CHANGE`): `BGJOB_STATE_WAITING`
 * (the work is done, the job waits for the other members of its
 * transaction), `BGJOB_STATE_PENDING` (done and succeeded, a finalize is
 * awaited) or `BGJOB_STATE_ABORTING` (failed or cancelled, the abort under
 * way). The job shows that state until the owner ends it with
 * `bgjob_job_end` (the end is still the owner's: it passes the outcome QEMU
 * concluded with). Each change fires a STATE_CHANGED event as any other.
 *
 * Allowed transitions (from the job's current state; reporting the state the
 * job is in is OK and changes nothing; every other pair is refused with
 * `BGJOB_RESULT_NOT_ALLOWED` and changes nothing):
 *
 * | from \ to                          | WAITING | PENDING | ABORTING |
 * |------------------------------------|---------|---------|----------|
 * | RUNNING, PAUSED, READY, STANDBY    | yes     | yes     | yes      |
 * | WAITING                            | (same)  | yes     | yes      |
 * | PENDING                            | no      | (same)  | yes      |
 * | ABORTING                           | no      | no      | (same)   |
 * | CREATED, ended (`bgjob_job_end` called), terminal | no | no | no |
 *
 * In a reported state: a user pause has ended (the work no longer runs; the
 * owner is not told RESUME), the deadline no longer fires, progress and
 * other updates are refused (the verb table's WAITING/PENDING/ABORTING
 * columns), cancel is forwarded as `BGJOB_CONTROL_CANCEL` (QEMU cancels a
 * WAITING or PENDING job) — in ABORTING it is recorded (the owner's failing
 * end then ends the job CANCELLED, with the cancel's cause: a transaction
 * QEMU aborts as a group keeps its causes) but not forwarded — and in
 * PENDING a finalize of a manual-finalize job (or transaction) is forwarded
 * as `BGJOB_CONTROL_FINALIZE`, also when it was asked earlier, in WAITING.
 * Ending the job then passes through WAITING while its commit/abort and clean
 * callbacks run, as every job does.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for any other
 * state (the others have calls of their own: `bgjob_job_set_ready`,
 * `bgjob_job_end`, the verbs); `BGJOB_RESULT_NOT_ALLOWED` for a threaded job
 * and for a refused transition (above); `BGJOB_RESULT_INVALID_HANDLE`.
 *
 * Threads: any thread, the control callback included (it never waits).
 */
bgjob_result bgjob_job_report_state(struct bgjob_job *job, bgjob_state state);

/**
 * For a job's owner: a verb its control callback was told failed (QEMU
 * answered the `job-pause`, `job-complete`… with an error). `what` is the
 * `bgjob_control` it was told, `code` a non-zero errno-style code, `message`
 * (may be NULL) QEMU's text. The failure becomes visible to the user: a
 * `BGJOB_EVENT_CONTROL_FAILED` event (`error_code` = `code`) and
 * `bgjob_job_get_control_error` (the last one, readable until destroy). What
 * the verb set is undone where bgjob can undo it:
 *
 * | `what`     | undone                                                        |
 * |------------|---------------------------------------------------------------|
 * | PAUSE      | the user pause, if in force and not an I/O-error stop: PAUSED → RUNNING, STANDBY → READY (a STATE_CHANGED event follows) |
 * | COMPLETE   | "complete requested" is cleared: complete may be asked again |
 * | SET_SPEED  | the speed goes back to its value before the last change      |
 * | FINALIZE   | the finalize request is dropped: the job (its transaction) stays PENDING and may be finalized again |
 * | CANCEL     | nothing: the cancel stays requested (its hooks and sub-jobs were told) |
 * | RESUME     | nothing: a refused resume means the work was not paused       |
 *
 * No control call is made for the undo (the owner knows).
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for an unknown
 * `what`, a zero `code` or a `message` that is not UTF-8;
 * `BGJOB_RESULT_NOT_ALLOWED` (nothing recorded) for a job with no control
 * callback, and once its work is done — `bgjob_job_end` was called, a
 * threaded job's worker returned — or it never started;
 * `BGJOB_RESULT_INVALID_HANDLE`.
 *
 * Threads: any thread, the control callback included.
 */
bgjob_result bgjob_job_control_failed(struct bgjob_job *job,
                                      bgjob_control what,
                                      int32_t code,
                                      const char *message);

/**
 * Reads the last failure the owner reported with `bgjob_job_control_failed`:
 * `*found_out` true and `*what_out`, `*code_out`, `buf` (snprintf-style, like
 * `bgjob_job_get_error`; `*len_out` the full length) set, or `*found_out`
 * false (the others untouched) when none was reported. Readable until
 * destroy. `what_out`, `code_out` and `len_out` may be NULL; `buf` may be
 * NULL when `len` is 0.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL
 * `found_out` or a NULL `buf` with non-zero `len`;
 * `BGJOB_RESULT_INVALID_HANDLE`.
 */
bgjob_result bgjob_job_get_control_error(struct bgjob_job *job,
                                         bool *found_out,
                                         bgjob_control *what_out,
                                         int32_t *code_out,
                                         char *buf,
                                         size_t len,
                                         size_t *len_out);

/* ---- Transactions ---- */

/**
 * Creates an empty transaction (QEMU's `JobTxn`). Add jobs that have not
 * started with `bgjob_txn_add`, then start them with `bgjob_txn_start` (or
 * each with `bgjob_job_start`). When any member fails or is cancelled, every
 * other member is cancelled (`cancel_cause` TRANSACTION). Members whose work
 * is done wait in `BGJOB_STATE_WAITING` until all are done; then each
 * member's commit callback runs if all succeeded, else its abort callback;
 * then each one's clean callback; then the members end (a member that failed
 * ends FAILED, every other one of an aborted transaction CANCELLED) and their
 * completions run. `flags`: 0 or `BGJOB_TXN_MANUAL_FINALIZE` (then, once
 * every member's work is done and succeeded, every member turns
 * `BGJOB_STATE_PENDING` and the group waits for `bgjob_txn_finalize`).
 *
 * Returns: `BGJOB_RESULT_OK` with `*txn_out` set; `BGJOB_RESULT_INVALID_ARGUMENT`
 * for a NULL `txn_out` or unknown flags.
 */
bgjob_result bgjob_txn_create(uint32_t flags, struct bgjob_txn **txn_out);

/**
 * Releases the caller's reference to the transaction; the handle is invalid
 * afterwards. Safe at any time: the members keep the transaction going and
 * it settles as it would have.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`.
 */
bgjob_result bgjob_txn_destroy(struct bgjob_txn *txn);

/**
 * Adds a job that has not started (created with `BGJOB_CREATE_DEFER_START`).
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` for a job that started,
 * ended or is being cancelled, or a transaction that already started, is aborting
 * (one of its members was cancelled or failed) or settled;
 * `BGJOB_RESULT_INVALID_ARGUMENT` for a job already in a transaction;
 * `BGJOB_RESULT_INVALID_HANDLE` for either handle.
 */
bgjob_result bgjob_txn_add(struct bgjob_txn *txn, struct bgjob_job *job);

/**
 * Starts every member that has not started. If a thread cannot be had for
 * one, the whole transaction is cancelled and `BGJOB_RESULT_TRY_AGAIN`
 * returned.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` if it was started before;
 * `BGJOB_RESULT_TRY_AGAIN`; `BGJOB_RESULT_INVALID_HANDLE`.
 */
bgjob_result bgjob_txn_start(struct bgjob_txn *txn);

/**
 * Cancels every member, each with `cancel_cause` CALLER; returns at once.
 * The cause is fixed before any member is cancelled, so a member's worker
 * returning meanwhile cannot turn another's into TRANSACTION. The one
 * exception: a transaction already aborting (a member failed or was
 * cancelled on its own before this call) keeps its members' cause
 * TRANSACTION, and this call changes nothing.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`.
 */
bgjob_result bgjob_txn_cancel(struct bgjob_txn *txn);

/**
 * Finalizes a `BGJOB_TXN_MANUAL_FINALIZE` transaction: at once (on this
 * thread) if every member is done, else as soon as the last one is.
 *
 * Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` once it has settled;
 * `BGJOB_RESULT_INVALID_HANDLE`.
 */
bgjob_result bgjob_txn_finalize(struct bgjob_txn *txn);

/* ---- Worker pool ---- */

/**
 * Caps the number of job workers that run at once, process-wide; 0 (the
 * default) removes the cap.
 *
 * Without a cap every started job gets a thread at once (an idle one, else a
 * new one), so no job ever waits behind another. With a cap of `n`, at most
 * `n` workers run; a job started beyond it is queued (first in, first out)
 * and shows as `BGJOB_STATE_RUNNING` — it may be paused, cancelled, waited
 * for and detached like any running job — and a thread whose job ended takes
 * the oldest queued one straight away, as GLib's thread pool (GTask's pool
 * has 10 threads) and QEMU's thread pool do. The cap counts workers: a slot
 * is free once its worker has returned and its userdata was freed, so when
 * that thread still runs the job's end (a completion without a context, an
 * event callback, commit, abort or clean, the log callback's line) the
 * queued job starts at once on another thread, and those may wait for it.
 * A queued job no thread can be started for (`pthread_create` failing: a
 * thread limit reached) is tried again every 20 ms by an idle pool thread,
 * which stays alive for it, and at the next job's end or start; a cancel
 * still ends it unrun meanwhile. A queued job that is cancelled
 * ends `BGJOB_STATE_CANCELLED` before `bgjob_job_cancel` returns, without
 * its worker running (its userdata is freed, its completion is delivered as
 * usual); once a thread has taken it, its worker decides as for any job. A
 * queued job that was paused starts when its turn comes and parks at its
 * first pause point, holding its slot.
 *
 * Raising or removing the cap starts queued jobs at once; lowering it stops
 * nothing: running workers finish and queued jobs start only while fewer
 * than the new cap run. Jobs of the process all share this one cap, so
 * workers that wait for other jobs can deadlock under a cap no larger than
 * the chain of waits (GTask's livelock): leave the cap off for such jobs.
 *
 * Returns: `BGJOB_RESULT_OK`.
 */
bgjob_result bgjob_pool_set_max_running(uint32_t max_running);

/**
 * Reads the process-wide pool's state: `*max_running_out` gets the cap (0 =
 * none), `*running_out` the job workers running now, `*queued_out` the
 * started jobs waiting for a slot. Each output may be NULL. The figures are a
 * snapshot: other threads may change them right after.
 *
 * Returns: `BGJOB_RESULT_OK`.
 */
bgjob_result bgjob_pool_get_status(uint32_t *max_running_out,
                                   size_t *running_out,
                                   size_t *queued_out);

/* ---- Library: versions, result texts, log callback ---- */

/**
 * The version of this library, e.g. `"0.1.0"`. Static; never free it.
 */
const char *bgjob_version(void);

/**
 * The ABI version of the loaded library: the number in its SONAME
 * (`libbgjob.so.<n>`). Compare with `BGJOB_ABI_VERSION` from the header you
 * compiled against; they differ only when the library is incompatible.
 */
uint32_t bgjob_abi_version(void);

/**
 * A static, human-readable string for a result code; `"unknown result"` for a
 * number that is not one. Never NULL; never free it.
 */
const char *bgjob_result_str(bgjob_result result);

/**
 * Installs a log callback, replacing any earlier one (whose free function then
 * runs once the last line being delivered to it is done), or removes it when
 * `callback` is NULL. With a callback installed, lines go to it whatever
 * `BGJOB_DEBUG` says; without, they go to stderr only when `BGJOB_DEBUG=1`.
 *
 * Ownership: `userdata` passes to bgjob; `userdata_free` (may be NULL) is called
 * exactly once when the callback is replaced or removed — or at once, if this
 * call fails or `callback` is NULL.
 *
 * Returns: `BGJOB_RESULT_OK`.
 */
bgjob_result bgjob_set_log_callback(bgjob_log_callback callback,
                                    void *userdata,
                                    bgjob_free_callback userdata_free);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* BGJOB_H */

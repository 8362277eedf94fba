//! The C types: handles, callbacks, option and snapshot structs, enums.

use crate::core;
use std::ffi::{c_char, c_void};

/// The ABI version this header describes; equals the SONAME number of the
/// library (`libbgjob.so.0`). See `bgjob_abi_version()`.
pub const BGJOB_ABI_VERSION: u32 = 0;

/// Number of result codes (`bgjob_result` values are 0 .. BGJOB_RESULT_COUNT-1).
pub const BGJOB_RESULT_COUNT: i32 = 10;

/// Number of states (`bgjob_state` values are 0 .. BGJOB_STATE_COUNT-1).
pub const BGJOB_STATE_COUNT: i32 = 11;
/// Number of verbs (`bgjob_verb` values are 0 .. BGJOB_VERB_COUNT-1).
pub const BGJOB_VERB_COUNT: i32 = 11;

/// `bgjob_job_options.flags`: create the job in `BGJOB_STATE_CREATED` and do not
/// start it; `bgjob_job_start` starts it (lets the caller configure it first).
pub const BGJOB_CREATE_DEFER_START: u32 = 1;

/// `bgjob_job_options.flags`: QEMU's `JOB_MANUAL_FINALIZE`. Once its work is
/// done and succeeded, the job waits in `BGJOB_STATE_PENDING` until
/// `bgjob_job_finalize`; only then do its commit and clean callbacks run and
/// the job end. A failed or cancelled job is finalized at once. For a job in a
/// transaction, the transaction's setting applies instead.
pub const BGJOB_CREATE_MANUAL_FINALIZE: u32 = 2;

/// `bgjob_job_options.flags`: progress calls on the worker's own thread never
/// park it. Without it, `bgjob_job_set_total`, `_set_current`,
/// `_add_units`, `_set_percent`, `_set_eta` and `_set_phase` made by the
/// worker are pause points: while the job is paused the worker parks inside
/// them. With it they only record and return, and the worker parks only where
/// it asks to: `bgjob_job_pause_point`, `bgjob_job_sleep`, `bgjob_job_wait_fd`
/// and `bgjob_job_wait_child`. Use it when the worker reports progress while
/// holding a lock of its own that the caller's resume path needs (a domain
/// lock): parked with the lock held, it would deadlock the resume.
pub const BGJOB_CREATE_UPDATES_NEVER_PARK: u32 = 8;

/// `bgjob_job_options.flags`: an external job. It has no worker and no
/// thread: pass a NULL `worker` to `bgjob_job_create` (a worker with this flag
/// is refused). Started (at once, or by `bgjob_job_start`), it is RUNNING and
/// its owner drives it from any thread — progress, phase, errors, result —
/// and ends it with `bgjob_job_end`. Verbs reach the owner through
/// `bgjob_job_options.control`. See `bgjob_job_end`.
pub const BGJOB_CREATE_EXTERNAL: u32 = 4;

/// `bgjob_txn_create` flag: the transaction finalizes manually (see
/// `BGJOB_CREATE_MANUAL_FINALIZE`); `bgjob_txn_finalize` or
/// `bgjob_job_finalize` on any member finalizes it.
pub const BGJOB_TXN_MANUAL_FINALIZE: u32 = 1;

/// `bgjob_job_detach` flag: cancel the job as it is detached.
pub const BGJOB_DETACH_CANCEL: u32 = 1;

/// Largest stack a job may ask for (1 GiB).
pub const BGJOB_MAX_STACK_SIZE: usize = 1 << 30;

/// Events queued for one job past which consecutive state changes merge
/// (see `bgjob_event.coalesced`).
pub const BGJOB_EVENT_QUEUE_BOUND: u32 = 64;
const _: () = assert!(BGJOB_MAX_STACK_SIZE == core::threads::MAX_STACK_SIZE);

/// `bgjob_job_wait_fd` events (and the events it reports): the fd is readable.
pub const BGJOB_FD_READABLE: u32 = 1;
/// The fd is writable.
pub const BGJOB_FD_WRITABLE: u32 = 2;
/// Reported only: an error condition on the fd (`POLLERR`).
pub const BGJOB_FD_ERROR: u32 = 4;
/// Reported only: the other end hung up (`POLLHUP`).
pub const BGJOB_FD_HANGUP: u32 = 8;

/// `bgjob_child_options.flags`: capture the child's stdout and hand it to
/// `on_line` line by line (default: the parent's stdout).
pub const BGJOB_CHILD_CAPTURE_STDOUT: u32 = 1;
/// Capture the child's stderr likewise (default: the parent's stderr).
pub const BGJOB_CHILD_CAPTURE_STDERR: u32 = 2;
/// Give the child the parent's stdin (default: `/dev/null`).
pub const BGJOB_CHILD_INHERIT_STDIN: u32 = 4;
/// Send the child's stdout to `/dev/null` (not with CAPTURE_STDOUT).
pub const BGJOB_CHILD_NULL_STDOUT: u32 = 8;
/// Send the child's stderr to `/dev/null` (not with CAPTURE_STDERR).
pub const BGJOB_CHILD_NULL_STDERR: u32 = 16;
/// A child that cancel does not signal: a cleanup step (`lvremove`, a hook
/// script) run in the "cleaning up" phase after a cancel, or one a cancel
/// must not interrupt. It may be spawned after cancel was requested
/// (without this flag that is refused with `BGJOB_RESULT_CANCELLED`);
/// `bgjob_job_wait_child` waits for it to its end and returns
/// `BGJOB_RESULT_OK` with its status, cancel or not. It is still killed
/// (SIGKILL, with its process group) and reaped if it runs when the worker
/// returns.
pub const BGJOB_CHILD_SURVIVES_CANCEL: u32 = 32;
/// Start the child in a new session (`setsid`) rather than only a new process
/// group: it has no controlling terminal and gets no terminal signals.
pub const BGJOB_CHILD_NEW_SESSION: u32 = 64;

/// `bgjob_child_fd.child_fd`: give the child the descriptor under the same
/// number it has in the parent.
pub const BGJOB_CHILD_FD_SAME: i32 = -1;

/// `bgjob_line_callback` stream: the child's stdout.
pub const BGJOB_CHILD_STDOUT: i32 = 1;
/// `bgjob_line_callback` stream: the child's stderr.
pub const BGJOB_CHILD_STDERR: i32 = 2;
const _: () = assert!(BGJOB_CHILD_STDOUT == core::Stream::Stdout as i32);
const _: () = assert!(BGJOB_CHILD_STDERR == core::Stream::Stderr as i32);

/// Default `bgjob_child_options.grace_ms`: time from SIGTERM to SIGKILL.
pub const BGJOB_CHILD_DEFAULT_GRACE_MS: i64 = 5000;

/// Capacity of the name and phase arrays in `bgjob_job_entry`, NUL included.
pub const BGJOB_ENTRY_TEXT_SIZE: usize = 64;

/// An opaque job handle.
///
/// A handle is an index into bgjob's handle table tagged with a generation; it is
/// never dereferenced. Any value (NULL, destroyed, detached, made up) is safe to
/// pass: a handle that does not name a live job gets `BGJOB_RESULT_INVALID_HANDLE`.
/// A destroyed handle never comes to name a later job, however long the
/// process lives (a slot whose generation would wrap is retired). Handles may
/// be used from any thread.
pub struct bgjob_job {
    _private: [u8; 0],
}

/// An opaque completion context handle: a queue of completions plus one
/// pollable fd (see `bgjob_context_create`). Like job handles, a table entry
/// tagged with a generation, safe to misuse, usable from any thread.
pub struct bgjob_context {
    _private: [u8; 0],
}

/// An opaque transaction handle (QEMU's `JobTxn`): jobs grouped before they
/// start, cancelled together, finalized together. Like job handles, a table
/// entry tagged with a generation, safe to misuse, usable from any thread.
pub struct bgjob_txn {
    _private: [u8; 0],
}

/// Called exactly once when a job that has one has ended: `state` is its
/// terminal `bgjob_state`, and `job` its handle, still valid during the call
/// (read its error or result here) unless the caller destroyed it earlier.
/// With shared references (`bgjob_job_ref`, `bgjob_job_lookup`): the
/// creator's handle while the creator holds it; once the creator released it
/// while another reference lives, a handle bgjob holds for the call (valid
/// until the callback returns; take `bgjob_job_ref` to keep the job longer).
/// The creator's handle stays the creator's while it is lent: released on
/// another thread during the call, calls through it return
/// `BGJOB_RESULT_INVALID_HANDLE` for the rest of the call (never another
/// job's result).
///
/// Thread: with a context, the thread that calls `bgjob_context_dispatch`.
/// Without one:
/// - a job on its own whose worker's return ended it: its worker thread, right
///   after the worker returned (and after its commit/abort and clean);
/// - a transaction member: only once every member is terminal (so it may wait
///   for a sibling); the member whose worker's return settled the group gets
///   it on that worker thread, last, every other member on a bgjob thread of
///   its own — never on a sibling's worker thread;
/// - an external job (`BGJOB_CREATE_EXTERNAL`): `bgjob_job_end` is its
///   worker's return, so the rules above hold with "its worker thread" read
///   as "the thread calling `bgjob_job_end`, before that call returns"
///   (called from inside the job's own event callback: on that thread once
///   the event callback returned and END was delivered);
/// - a job ended by a call (a cancel of a job that never ran, destroy,
///   `bgjob_job_finalize`, `bgjob_txn_finalize`, a cancel while WAITING or
///   PENDING, a
///   detach): a bgjob thread of its own;
/// - a parent whose worker returned before its last sub-job let go of it (it
///   was WAITING for it; a sub-job lets go of its parent right after its own
///   end is published, so a sub-job seen ended a moment earlier may still
///   hold it): once that sub-job has, a bgjob thread of its own (named after
///   the parent).
///
/// Never inside the call that ended the job (create, start, cancel, destroy,
/// detach, finalize) — `bgjob_job_end`, being a worker's return, is not such
/// a call — never with a bgjob lock held. The one exception: when
/// no thread can be started (EAGAIN) for a callback that needs one of its
/// own, it runs at the end of the call that ended the job, rather than never.
///
/// It may call any bgjob function: destroy this job (the handle is then
/// invalid), cancel or destroy other jobs, create and start new ones. A
/// `bgjob_context_dispatch` of the context dispatching it is refused with
/// `BGJOB_RESULT_NOT_ALLOWED`. It must not `longjmp` out.
pub type bgjob_completion_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, job: *mut bgjob_job, state: bgjob_state)>;

/// One event of a job, as its event callback gets it (valid during the call
/// only). Later versions may append fields: read `struct_size` before any.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bgjob_event {
    /// `sizeof(bgjob_event)` of the library that wrote it.
    pub struct_size: u32,
    /// What happened.
    pub kind: bgjob_event_kind,
    /// The state before the change; for IO_ERROR the state it happened in.
    pub old_state: bgjob_state,
    /// The state after the change; for END the terminal state; for
    /// IO_ERROR the state it happened in.
    pub new_state: bgjob_state,
    /// IO_ERROR only: what the worker was told to do (REPORT otherwise).
    pub action: bgjob_error_action,
    /// IO_ERROR only: the error code reported; 0 otherwise.
    pub error_code: i32,
    /// Per job, from 1, one number per change: events arrive with `seq`
    /// strictly increasing. A merged event carries the number of the last
    /// change it holds, so `seq` grows by `coalesced + 1`.
    pub seq: u64,
    /// STATE_CHANGED only: how many later state changes were merged into
    /// this one (0 normally). More than `BGJOB_EVENT_QUEUE_BOUND` events
    /// queued for a job that nobody delivers (its context not dispatched)
    /// merge consecutive state changes: `old_state` of the first, `new_state`
    /// of the last. IO_ERROR, READY and END are never merged or dropped.
    pub coalesced: u32,
}

/// A job's event callback (`bgjob_job_options.event`): called with each
/// event of the job, in order — every state change (old → new), every I/O
/// error its worker reports, READY, and END last, before the completion
/// callback. `job` is the job's handle, valid during the call (unless the
/// caller destroyed it: an event caused by `bgjob_job_destroy` itself gets
/// the handle already invalid, and calls on it return
/// `BGJOB_RESULT_INVALID_HANDLE`); `ev` is valid during the call only. With
/// shared references it is the handle the completion would get (see
/// `bgjob_completion_callback`): the creator's, lent while the creator holds
/// it, so the creator's release of it on another thread during the call
/// makes calls through it return `BGJOB_RESULT_INVALID_HANDLE` for the rest
/// of the call (never another job's result).
///
/// Thread: with `bgjob_job_options.context`, the thread that calls
/// `bgjob_context_dispatch`, like the completion (same fd). Without one, the
/// thread that made the change (a caller's pause, cancel or start; the
/// worker's own return, error report or update; a bgjob thread for a
/// deadline), after it let go of every bgjob lock — unless another thread is
/// delivering the same job's events at that moment: that thread then
/// delivers this one too, after the one it is in. So one job's events never
/// run at once and never out of order; different jobs' events may run
/// concurrently. The completion without a context waits until the job's
/// events (END included) have been delivered.
///
/// It may call bgjob functions on this job (get_info, pause, resume,
/// cancel: the events those cause are delivered after this call returns, on
/// this thread) and on others. It must not wait for this job's end or its
/// completion (`bgjob_job_wait` from an event callback without a context
/// may wait for itself), must not destroy the job before its END event, and
/// must not `longjmp` out. It may destroy the job from its END event (the
/// completion that follows then gets the handle already invalid, as after any
/// earlier destroy).
pub type bgjob_event_callback = Option<
    unsafe extern "C" fn(userdata: *mut c_void, job: *mut bgjob_job, ev: *const bgjob_event),
>;

/// A cancellation hook (libxl's design): anything a worker waits on (a timer,
/// a child process, an fd) registers one, and `bgjob_job_cancel` calls it.
///
/// Called at most once, with its userdata and the job's handle: on the thread
/// that cancels the job (hooks run one at a time in registration order, with no
/// bgjob lock held), or at once on the registering thread when cancel had
/// already been requested. A cancel made by the job's deadline runs on a bgjob
/// thread named after the job, started for it (never bgjob's timer thread), so
/// a hook that blocks holds back no other job's deadline.
///
/// The job's end and its hooks never overlap: the job does not become WAITING
/// or terminal while one of its hooks runs (its end waits for the hook to
/// return), and the hooks not yet called when its worker returns — a worker
/// that saw the cancel and returned before the cancel got to them — are
/// removed without being called. So once any call has seen the job end (wait,
/// get_info, the completion), none of its hooks runs or is still running, and
/// a driver may free what they point to.
///
/// It may call any bgjob function, including removing itself or cancelling
/// its job (both return at once); `bgjob_job_wait` on its own job is refused
/// with `BGJOB_RESULT_NOT_ALLOWED` (the job cannot end before the hook
/// returns). It must not block on something only the job's end would bring.
/// It must not `longjmp` out.
pub type bgjob_cancel_hook_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, job: *mut bgjob_job)>;

/// A finalization callback (`bgjob_job_options.commit`, `.abort`, `.clean`;
/// QEMU's job driver callbacks of the same names), called at most once with
/// the options' `finalize_userdata` and the job's handle, after the work of
/// the job (and of its whole transaction) is done and before the job ends.
/// See `bgjob_job_options.commit` for which runs, in what order and on which
/// thread. `job` is the handle the completion would get, lent as it is (see
/// `bgjob_completion_callback`). It runs with no bgjob lock held. It must
/// not `longjmp` out.
pub type bgjob_finalize_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, job: *mut bgjob_job)>;

/// Receives a child's captured output one line at a time
/// (`bgjob_child_options.on_line`): `stream` is `BGJOB_CHILD_STDOUT` or
/// `BGJOB_CHILD_STDERR`; `line` has `len` bytes without the terminator, plus a
/// NUL after them (the bytes may contain NULs of their own). A line ends at
/// `\n`, `\r` (progress meters redraw with it) or `\r\n`; empty lines are
/// skipped; a line over 64 KiB comes in pieces.
///
/// Thread: the one calling `bgjob_job_wait_child` (normally the worker), with
/// no bgjob lock held. It may call any bgjob function except waiting for the
/// same child.
pub type bgjob_line_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        job: *mut bgjob_job,
        stream: i32,
        line: *const c_char,
        len: usize,
    ),
>;

/// The function a job runs on its own thread.
///
/// Called once, on the job's worker thread (named after the job), with the
/// `userdata` given at create and the job's handle. Return 0 for success; any
/// other value fails the job with that value as its error code (or, if cancel
/// was requested, ends it `BGJOB_STATE_CANCELLED`). `bgjob_job_finish` may record
/// the status before returning instead.
///
/// The worker may call every bgjob function on its own handle; `bgjob_job_wait`
/// and `bgjob_job_destroy` are refused with `BGJOB_RESULT_NOT_ALLOWED` (it would
/// wait for itself; the job is running). Progress
/// calls made here park the worker while the job is paused, unless the job
/// was created with `BGJOB_CREATE_UPDATES_NEVER_PARK` (then it parks only in
/// `bgjob_job_pause_point` and the cancellable waits). It must not
/// `longjmp` out of the call or throw a C++ exception through it.
pub type bgjob_worker_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, job: *mut bgjob_job) -> i32>;

/// Frees userdata. Called exactly once, after the last callback that uses the
/// userdata has returned, on whichever thread ends its use; it must not call back
/// into bgjob for the object it belonged to.
pub type bgjob_free_callback = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

/// Job states. Terminal: COMPLETED, FAILED, CANCELLED.
///
/// ```text
/// CREATED → RUNNING ⇄ PAUSED
///              ↓ set_ready (PAUSED → STANDBY)
///            READY ⇄ STANDBY
/// RUNNING/PAUSED/READY/STANDBY → (WAITING) → (PENDING) → COMPLETED | FAILED | CANCELLED
/// ```
/// WAITING: the worker returned, other members of its transaction have not;
/// PENDING: the work of the job and its whole transaction succeeded, a
/// manual finalize is awaited. An external job's owner reports WAITING,
/// PENDING and ABORTING itself (`bgjob_job_report_state`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum bgjob_state {
    /// Made, not started.
    Created = 0,
    /// The worker is running.
    Running = 1,
    /// User-paused; the worker parks at its next pause point.
    Paused = 2,
    /// The worker finished (an external job: `bgjob_job_end` was called);
    /// other members of its transaction have not yet, or its sub-jobs have
    /// not ended, or its end is being finalized right now (commit/abort and
    /// clean running). A job alone passes through it briefly on the way to
    /// its terminal state, as QEMU's jobs pass through "waiting": an event
    /// callback sees RUNNING → WAITING → COMPLETED.
    Waiting = 3,
    /// The worker succeeded.
    Completed = 4,
    /// The worker failed.
    Failed = 5,
    /// Cancelled before start, or the worker saw the cancel and did not succeed.
    Cancelled = 6,
    /// The worker said the job is ready (`bgjob_job_set_ready`: a mirror has
    /// converged); it keeps running until `bgjob_job_complete` or a cancel.
    Ready = 7,
    /// READY and user-paused (as PAUSED is RUNNING paused).
    Standby = 8,
    /// The work of the job (and of its whole transaction) is done and
    /// succeeded; it waits for `bgjob_job_finalize` / `bgjob_txn_finalize`
    /// (manual finalize).
    Pending = 9,
    /// Only an external job, only reported by its owner
    /// (`bgjob_job_report_state`): its work failed or was cancelled and the
    /// abort is under way (QEMU's ABORTING); it ends when the owner calls
    /// `bgjob_job_end`. It accepts what WAITING accepts, but finalize.
    Aborting = 10,
}

/// Verbs of the verb × state table (`bgjob_verb_allowed`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum bgjob_verb {
    /// `bgjob_job_start`.
    Start = 0,
    /// `bgjob_job_cancel` (allowed in every state; on a finished job it reports
    /// `BGJOB_CANCEL_STATUS_ALREADY_FINISHED`).
    Cancel = 1,
    /// `bgjob_job_pause`.
    Pause = 2,
    /// `bgjob_job_resume`.
    Resume = 3,
    /// `bgjob_job_destroy`.
    Destroy = 4,
    /// `bgjob_job_detach`.
    Detach = 5,
    /// Progress, ETA, phase, error and result updates (`bgjob_job_set_*`,
    /// `bgjob_job_add_units`).
    Update = 6,
    /// `bgjob_job_get_result`, `bgjob_job_take_result`.
    Result = 7,
    /// `bgjob_job_pause_internal`, `bgjob_job_resume_internal` (QEMU's drain).
    Drain = 8,
    /// `bgjob_job_finalize` (manual finalize).
    Finalize = 9,
    /// `bgjob_job_complete` (allowed only in READY).
    Complete = 10,
}

/// Bounded jobs have a total (units or percent); unbounded ones do not.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum bgjob_job_type {
    /// Reports a percentage and an ETA.
    Bounded = 0,
    /// Reports elapsed time and units done only.
    Unbounded = 1,
}

/// What a job does when its worker reports an I/O error
/// (`bgjob_job_report_io_error`); QEMU's `BlockdevOnError`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum bgjob_error_policy {
    /// The worker gives up; the error becomes the job's.
    Report = 0,
    /// The worker carries on.
    Ignore = 1,
    /// The job is user-paused with an error status; the worker retries after
    /// resume.
    Stop = 2,
    /// STOP on ENOSPC, REPORT otherwise.
    Enospc = 3,
}

/// What `bgjob_job_report_io_error` tells the worker to do.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum bgjob_error_action {
    /// Give up: return the error (it is recorded as the job's error).
    Report = 0,
    /// Carry on.
    Ignore = 1,
    /// The job is now paused with an error status: call
    /// `bgjob_job_pause_point` (it parks until resume, or returns CANCELLED),
    /// then retry the operation.
    Stop = 2,
}

/// A job's error status (`bgjob_info.iostatus`, QEMU's iostatus). It is not OK
/// only while the job is user-paused by its error policy; resume and cancel
/// reset it.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum bgjob_iostatus {
    /// No error pending.
    Ok = 0,
    /// Stopped by an I/O error.
    Failed = 1,
    /// Stopped by ENOSPC.
    Nospace = 2,
}

/// Why cancel was requested (`bgjob_info.cancel_cause`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum bgjob_cancel_cause {
    /// Cancel was not requested.
    None = 0,
    /// A caller cancelled it (cancel, detach with cancel, destroy of a created
    /// job).
    Caller = 1,
    /// Its deadline passed (`bgjob_job_options.deadline_ms`,
    /// `bgjob_job_set_deadline`).
    Timeout = 2,
    /// Another member of its transaction failed or was cancelled.
    Transaction = 3,
    /// Its parent job was cancelled (`bgjob_job_options.parent`); passed down
    /// to its own children too.
    Parent = 4,
}

/// What `bgjob_job_cancel` found (libxl's abort contract).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum bgjob_cancel_status {
    /// This call requested it; the job may still complete.
    Requested = 0,
    /// It had been requested before; nothing new happened.
    AlreadyRequested = 1,
    /// The job had already ended (or its virJob worker had declared its
    /// outcome with a `virJobFinish*` call); nothing happened.
    AlreadyFinished = 2,
}

/// What a `bgjob_event` reports (`bgjob_event.kind`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum bgjob_event_kind {
    /// The state changed from `old_state` to `new_state` (possibly several
    /// changes merged: see `bgjob_event.coalesced`).
    StateChanged = 0,
    /// The worker reported an I/O error (`bgjob_job_report_io_error`):
    /// `action` is what it was told to do, `error_code` the error. With
    /// action STOP, the change to PAUSED follows as its own event.
    IoError = 1,
    /// The job became ready: right after the STATE_CHANGED event into
    /// `BGJOB_STATE_READY`.
    Ready = 2,
    /// The job ended in `new_state` (terminal). The last event of the job,
    /// delivered before its completion callback.
    End = 3,
    /// The job's owner said a verb it was told through its control callback
    /// failed (`bgjob_job_control_failed`: QEMU refused the command):
    /// `error_code` is the owner's code; `bgjob_job_get_control_error` gives
    /// the verb and the message. A state change the failure undid (a refused
    /// pause: PAUSED back to RUNNING) follows as its own event.
    ControlFailed = 4,
}

/// The type of a job statistic (`bgjob_job_add_stat`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum bgjob_stat_type {
    /// `uint64_t`, in `bgjob_stat_value.u64`.
    U64 = 0,
    /// `int64_t`, in `bgjob_stat_value.i64`.
    I64 = 1,
    /// `double`, in `bgjob_stat_value.f64`.
    Double = 2,
    /// A UTF-8 string, in `bgjob_stat.text`.
    String = 3,
}

/// What a control callback is told (`bgjob_control_callback`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum bgjob_control {
    /// Cancel was requested; `arg` 1 = force, 0 = soft (a READY job asked
    /// to finish without completing).
    Cancel = 0,
    /// The job is paused: stop the work.
    Pause = 1,
    /// The job may run again: go on with the work.
    Resume = 2,
    /// Complete was requested (a READY job).
    Complete = 3,
    /// The speed limit changed; `arg` is the new one in bytes/s (0 =
    /// unlimited).
    SetSpeed = 4,
    /// Finalize was requested (`bgjob_job_finalize`, `bgjob_txn_finalize`)
    /// for an external job created with `BGJOB_CREATE_MANUAL_FINALIZE` (or a
    /// member of a manual-finalize transaction) that its owner reported
    /// `BGJOB_STATE_PENDING` (`bgjob_job_report_state`): send QEMU's
    /// `job-finalize`, then end the job with `bgjob_job_end` when it
    /// concludes. A transaction's finalize is told to one member only (the
    /// one finalized, else the first pending one), as QEMU's `job-finalize`
    /// of one member finalizes its whole transaction.
    Finalize = 5,
}

/// A job's control callback (`bgjob_job_options.control`): tells the job's
/// owner that a verb took effect, so it can forward it to whatever does the
/// work (QMP's `job-cancel`, `job-pause`, a signal to a child process).
/// `what` says which; `arg` is 1 (force) or 0 (soft) for
/// `BGJOB_CONTROL_CANCEL`, the new speed in bytes/s for
/// `BGJOB_CONTROL_SET_SPEED`, 0 otherwise. `job` is the job's handle, valid
/// during the call; with shared references the handle the completion would
/// get, lent as it is (see `bgjob_completion_callback`: the creator's
/// release of the creator's handle on another thread during the call makes
/// calls through it return `BGJOB_RESULT_INVALID_HANDLE`, never another
/// job's result).
///
/// When: once per verb call that changed something, after the change took
/// effect — the first cancel (not one that finds it ALREADY_REQUESTED or
/// finished); a pause that stops the job (user pause, or the first internal
/// pause) and a resume that lets it run again (the last pause gone; also a
/// detach that undoes the pauses); a speed change; a complete; a finalize.
/// A verb the owner could not carry out is reported back with
/// `bgjob_job_control_failed`. Only while
/// the job's work is not done: a finalize (FINALIZE) only for an external
/// job in a state its owner reported (`bgjob_job_report_state`); never for a job that never started (a
/// CREATED job's cancel ends it at once; an external job that starts with
/// its cancel requested — born under a cancelled parent, or cancelled inside
/// its create — is told CANCEL, force, once, as it starts), never once
/// `bgjob_job_end` has
/// been called (or a threaded job's worker has returned). A pause made by the
/// owner's own `bgjob_job_report_io_error` (policy STOP) is not told; its
/// resume is. A cancel of a paused job ends the pause: CANCEL then also means
/// "go on, and wind down".
///
/// Thread: the one that called the verb, with no bgjob lock held — a
/// deadline's cancel: a bgjob thread (named "bgjob-deadline" for an external
/// job, which runs no job); a transaction's abort: the thread whose call or
/// worker's return failed the sibling. Calls may come on several threads at
/// once (a pause on one, a cancel on another). The job's end
/// (`bgjob_job_end`, a worker's return) waits for a call running on another
/// thread to return, so none runs once the end has been seen; the callback
/// therefore must not wait for the job's end itself. It may call any other
/// bgjob function, on this job too: read it, cancel it again, end it (from
/// inside CANCEL, say). It must not `longjmp` out.
pub type bgjob_control_callback = Option<
    unsafe extern "C" fn(userdata: *mut c_void, job: *mut bgjob_job, what: bgjob_control, arg: i64),
>;

/// Ties each C enum to its core enum. The C numbers are written once, in the
/// C enums above (which cbindgen turns into the header); core's enums carry no
/// numbers. For each pair this generates the conversions both ways as
/// exhaustive matches — a variant added on one side only does not compile —
/// and `TryFrom<i32>` for the C enum, the one place a C integer is parsed
/// (`BGJOB_RESULT_INVALID_ARGUMENT` for a number with no variant).
macro_rules! mirror {
    ($c:ident <=> $core:ident { $($cv:ident <=> $corev:ident),+ $(,)? }) => {
        impl From<core::$core> for $c {
            fn from(v: core::$core) -> $c {
                match v {
                    $(core::$core::$corev => $c::$cv,)+
                }
            }
        }

        impl From<$c> for core::$core {
            fn from(v: $c) -> core::$core {
                match v {
                    $($c::$cv => core::$core::$corev,)+
                }
            }
        }

        impl TryFrom<i32> for $c {
            type Error = super::bgjob_result;

            fn try_from(n: i32) -> Result<$c, super::bgjob_result> {
                [$($c::$cv),+]
                    .into_iter()
                    .find(|v| *v as i32 == n)
                    .ok_or(super::bgjob_result::InvalidArgument)
            }
        }
    };
}

mirror!(bgjob_event_kind <=> EventKind {
    StateChanged <=> StateChanged,
    IoError <=> IoError,
    Ready <=> Ready,
    End <=> End,
    ControlFailed <=> ControlFailed,
});
mirror!(bgjob_state <=> State {
    Created <=> Created,
    Running <=> Running,
    Paused <=> Paused,
    Waiting <=> Waiting,
    Completed <=> Completed,
    Failed <=> Failed,
    Cancelled <=> Cancelled,
    Ready <=> Ready,
    Standby <=> Standby,
    Pending <=> Pending,
    Aborting <=> Aborting,
});
mirror!(bgjob_verb <=> Verb {
    Start <=> Start,
    Cancel <=> Cancel,
    Pause <=> Pause,
    Resume <=> Resume,
    Destroy <=> Destroy,
    Detach <=> Detach,
    Update <=> Update,
    Result <=> Result,
    Drain <=> Drain,
    Finalize <=> Finalize,
    Complete <=> Complete,
});
mirror!(bgjob_job_type <=> JobType {
    Bounded <=> Bounded,
    Unbounded <=> Unbounded,
});
mirror!(bgjob_error_policy <=> ErrorPolicy {
    Report <=> Report,
    Ignore <=> Ignore,
    Stop <=> Stop,
    Enospc <=> Enospc,
});
mirror!(bgjob_error_action <=> ErrorAction {
    Report <=> Report,
    Ignore <=> Ignore,
    Stop <=> Stop,
});
mirror!(bgjob_iostatus <=> IoStatus {
    Ok <=> Ok,
    Failed <=> Failed,
    Nospace <=> NoSpace,
});
mirror!(bgjob_cancel_cause <=> CancelCause {
    None <=> None,
    Caller <=> Caller,
    Timeout <=> Timeout,
    Transaction <=> Transaction,
    Parent <=> Parent,
});
mirror!(bgjob_control <=> Control {
    Cancel <=> Cancel,
    Pause <=> Pause,
    Resume <=> Resume,
    Complete <=> Complete,
    SetSpeed <=> SetSpeed,
    Finalize <=> Finalize,
});
mirror!(bgjob_cancel_status <=> CancelStatus {
    Requested <=> Requested,
    AlreadyRequested <=> AlreadyRequested,
    AlreadyFinished <=> AlreadyFinished,
});
mirror!(bgjob_stat_type <=> StatType {
    U64 <=> U64,
    I64 <=> I64,
    Double <=> Double,
    String <=> String,
});

/// An enum as C passes it *in* (an argument or an input struct field): the raw
/// `int32_t`, parsed with `TryFrom<i32>` before use, so no number from C ever
/// becomes an invalid Rust enum. The header spells each one as its enum's
/// typedef (`bgjob_state` and so on: `cbindgen.toml` renames these aliases and
/// leaves their definitions out), so C sees one name per enum everywhere, with
/// the `int32_t` size the C typedef has. Outputs use the Rust enums themselves
/// (bgjob writes only valid values).
pub type bgjob_state_in = i32;
/// See [`bgjob_state_in`].
pub type bgjob_verb_in = i32;
/// See [`bgjob_state_in`].
pub type bgjob_job_type_in = i32;
/// See [`bgjob_state_in`].
pub type bgjob_error_policy_in = i32;
/// See [`bgjob_state_in`].
pub type bgjob_result_in = i32;
/// See [`bgjob_state_in`].
pub type bgjob_stat_type_in = i32;
/// See [`bgjob_state_in`].
pub type bgjob_control_in = i32;

#[cfg(test)]
mod tests {
    use super::super::bgjob_result;
    use super::*;

    /// Every core value survives the trip through its C number, and numbers
    /// with no variant are refused.
    #[test]
    fn c_numbers_round_trip() {
        for s in core::State::ALL {
            let n = bgjob_state::from(s) as i32;
            assert_eq!(bgjob_state::try_from(n).map(core::State::from), Ok(s));
        }
        for v in core::Verb::ALL {
            let n = bgjob_verb::from(v) as i32;
            assert_eq!(bgjob_verb::try_from(n).map(core::Verb::from), Ok(v));
        }
        for n in [-1, 11, i32::MIN, i32::MAX] {
            assert_eq!(bgjob_state::try_from(n), Err(bgjob_result::InvalidArgument));
        }
        assert_eq!(bgjob_verb::try_from(11), Err(bgjob_result::InvalidArgument));
        assert_eq!(
            bgjob_error_policy::try_from(4),
            Err(bgjob_result::InvalidArgument)
        );
        assert_eq!(
            bgjob_error_policy::try_from(3).map(core::ErrorPolicy::from),
            Ok(core::ErrorPolicy::Enospc)
        );
        assert_eq!(
            bgjob_job_type::try_from(2),
            Err(bgjob_result::InvalidArgument)
        );
    }
}

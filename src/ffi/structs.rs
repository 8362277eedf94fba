//! The C structs: the create options, the info snapshot, the child-process
//! options and the listing entry (enums, handles and callbacks are in
//! `types.rs`). Each grows only at its end; `versioned.rs` reads old sizes.

use super::types::*;
use std::ffi::{c_char, c_void};

/// Options for `bgjob_job_create`. Fill with
/// `bgjob_job_options_init(&opts, sizeof opts)` first: later versions only add
/// fields at the end, and bgjob reads no more than `struct_size` bytes, giving
/// fields the caller's struct lacks their defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bgjob_job_options {
    /// `sizeof(bgjob_job_options)` as the caller compiled it; set by
    /// `bgjob_job_options_init`. At least the size of the first version.
    pub struct_size: u32,
    /// The job's type. Default BOUNDED.
    pub job_type: bgjob_job_type_in,
    /// `BGJOB_CREATE_*` flags. Default 0 (start at once).
    pub flags: u32,
    /// UTF-8 name, copied; also the worker thread's name (cut to 15 bytes).
    /// NULL (default) gives `job-<id>`.
    pub name: *const c_char,
    /// Worker stack size in bytes, at most `BGJOB_MAX_STACK_SIZE`; 0 (default)
    /// is the platform's default.
    pub stack_size: usize,
    /// Called once when the job has ended (see `bgjob_completion_callback`).
    /// Default NULL: no callback.
    pub completion: bgjob_completion_callback,
    /// Passed to `completion`. Ownership passes to bgjob with `bgjob_job_create`.
    pub completion_userdata: *mut c_void,
    /// Frees `completion_userdata`, exactly once: after the callback ran, or
    /// when it never will (the create failed, or its context was destroyed
    /// first). May be NULL.
    pub completion_free: bgjob_free_callback,
    /// Deliver the completion (and the events, if `event` is set) through
    /// this context, on the thread that dispatches it. Default NULL: the
    /// completion on the worker thread, events on the thread that made each
    /// change.
    pub context: *mut bgjob_context,
    /// Cancel the job (cause `BGJOB_CANCEL_CAUSE_TIMEOUT`) once it has run this
    /// many ms of active time: from start, paused time not counted. Default −1:
    /// no deadline. Unlike the header's other times, 0 also means no deadline
    /// here, so a zero-filled struct sets none (`bgjob_job_set_deadline(job, 0)`
    /// is "now"). Below −1 is refused. Starting a job with a deadline fails
    /// with `BGJOB_RESULT_TRY_AGAIN` if bgjob's timer thread cannot be started
    /// (see `bgjob_job_set_deadline`).
    pub deadline_ms: i64,
    /// The job's error policy (see `bgjob_job_set_error_policy`). Default
    /// REPORT.
    pub error_policy: bgjob_error_policy_in,
    /// Finalization callbacks (QEMU's commit, abort and clean), each called at
    /// most once with `finalize_userdata` and the job, after the job's work
    /// (and its whole transaction's) is done and before the job ends: `commit`
    /// if all succeeded, else `abort`; then `clean` either way — every
    /// member's commit/abort first, then every member's clean, each pass in
    /// the order the members were added to the transaction. They run on the
    /// thread that finished the group's last worker, or the one calling
    /// `bgjob_job_finalize` / `bgjob_txn_finalize` / the cancel or detach
    /// that ended it, with no bgjob lock held. Each may be NULL.
    pub commit: bgjob_finalize_callback,
    /// See `commit`.
    pub abort: bgjob_finalize_callback,
    /// See `commit`.
    pub clean: bgjob_finalize_callback,
    /// Passed to `commit`, `abort` and `clean`. Ownership passes to bgjob with
    /// `bgjob_job_create`.
    pub finalize_userdata: *mut c_void,
    /// Frees `finalize_userdata` exactly once, after the last of those
    /// callbacks (or when none will run). May be NULL.
    pub finalize_free: bgjob_free_callback,
    /// The operation, UTF-8, copied ("mirror", "save", "migrate"): shown by
    /// `bgjob_job_get_operation`, `bgjob_list_jobs` and the debug log.
    /// Default NULL: none ("").
    pub operation: *const c_char,
    /// An owner tag, UTF-8, copied ("domain vm1"), so a listing tells whose
    /// job it is: shown by `bgjob_job_get_owner` and `bgjob_list_jobs`.
    /// Default NULL: none ("").
    pub owner: *const c_char,
    /// Told of each verb that took effect while the job's work is not
    /// done (see `bgjob_control_callback`): how the owner of an external job
    /// hears of cancel, pause, resume, complete and speed changes. Works for
    /// threaded jobs too. Default NULL.
    pub control: bgjob_control_callback,
    /// Passed to `control`. Ownership passes to bgjob with `bgjob_job_create`.
    pub control_userdata: *mut c_void,
    /// Frees `control_userdata` exactly once, after the last call of
    /// `control`: when the job's work is done (`bgjob_job_end`, the worker's
    /// return; a `bgjob_job_end` made inside a control call: once that call
    /// returns), when a job that never ran is cancelled or destroyed, or
    /// before `bgjob_job_create` returns if it fails. May be NULL.
    pub control_free: bgjob_free_callback,
    /// Called with every event of the job, in order (see
    /// `bgjob_event_callback`). Through `context` when one is set (an event
    /// callback alone makes a context allowed without a completion). Default
    /// NULL: no events.
    pub event: bgjob_event_callback,
    /// Passed to `event`. Ownership passes to bgjob with `bgjob_job_create`.
    pub event_userdata: *mut c_void,
    /// Frees `event_userdata` exactly once, after the last event call: after
    /// END was delivered, or when no further event will be — the create
    /// failed (before it returns); the context was destroyed (at once if it
    /// held undelivered events of the job, else at the job's next change or
    /// when the job is freed). May be NULL.
    pub event_free: bgjob_free_callback,
    /// A job handle (NULL: none): the new job is its sub-job. Cancelling the
    /// parent cancels the child (cause `BGJOB_CANCEL_CAUSE_PARENT`, passed on
    /// to the child's own children); the parent does not end while the child
    /// has not ended — after its worker returned it stays WAITING, then ends
    /// with its own outcome (a child's failure does not fail it). The parent
    /// must be CREATED, RUNNING or PAUSED (its worker not returned), else
    /// create fails with `BGJOB_RESULT_NOT_ALLOWED`; a bad handle is
    /// `BGJOB_RESULT_INVALID_HANDLE`. Under a parent whose cancel was requested
    /// already, the child is born cancelled: its worker runs with the cancel
    /// requested (cause PARENT); queued under the pool's cap, it ends
    /// CANCELLED unrun instead, as a queued job cancelled does; an external
    /// child's owner is told `BGJOB_CONTROL_CANCEL` as it starts. Only the
    /// link is kept: the parent's handle may be released at once.
    pub parent: *mut bgjob_job,
}

/// A consistent snapshot of a job (`bgjob_job_get_info`). Set `struct_size` to
/// `sizeof(bgjob_info)` before the call; later versions only add fields at the
/// end and fill no more than `struct_size` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bgjob_info {
    /// Set by the caller; bgjob writes at most this many bytes.
    pub struct_size: u32,
    /// The job's type.
    pub job_type: bgjob_job_type,
    /// The job's state.
    pub state: bgjob_state,
    /// Whether cancel was requested (also for a job that then completed).
    pub cancel_requested: bool,
    /// Whether a user pause is in force.
    pub pause_requested: bool,
    /// Active time since start in ms (monotonic; paused time excluded).
    pub elapsed_ms: i64,
    /// Estimated time to completion in ms; the worker's own ETA if it set one,
    /// else computed from the rate; −1 when unknown; 0 once finished.
    pub remaining_ms: i64,
    /// 0–100 (clamped); −1 when unknown and always for unbounded jobs. A
    /// bounded job that ended COMPLETED reads 100 whatever `current` and
    /// `total` say (they keep the last values the worker reported: 50/100
    /// with percent 100 is possible); a FAILED or CANCELLED one keeps its
    /// last percent.
    pub percent: i32,
    /// The job's error code; 0 while it has none.
    pub error_code: i32,
    /// Units done.
    pub current: u64,
    /// Units in all; 0 when unknown.
    pub total: u64,
    /// Units per second of active time; −1 when unknown.
    pub rate: f64,
    /// Time since the last progress update in ms; −1 if there was none.
    /// Never more than the true time (a stall is never reported early), up
    /// to two ticks of `CLOCK_MONOTONIC_COARSE` less (`clock_getres`; 8 ms
    /// with a 250 Hz tick): updates read that clock, not the precise one.
    pub since_progress_ms: i64,
    /// The job's process-unique id.
    pub id: u64,
    /// Why cancel was requested (`BGJOB_CANCEL_CAUSE_NONE` if it was not).
    pub cancel_cause: bgjob_cancel_cause,
    /// Internal pauses in force (`bgjob_job_pause_internal`); the worker runs
    /// only when this is 0 and `pause_requested` is false.
    pub pause_count: u32,
    /// The I/O status: not OK only while user-paused by the error policy.
    pub iostatus: bgjob_iostatus,
    /// The job's error policy.
    pub error_policy: bgjob_error_policy,
    /// Whether complete was requested (`bgjob_job_complete`).
    pub complete_requested: bool,
    /// Whether the cancel request is a soft one (`bgjob_job_cancel_soft`; a
    /// later force cancel clears it).
    pub cancel_soft: bool,
}

/// One descriptor passed to a child (`bgjob_child_options.fds`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bgjob_child_fd {
    /// The parent's descriptor. The child gets a copy of it; this one stays
    /// the caller's, open and unchanged (bgjob neither closes it nor changes
    /// its flags). It must be open during `bgjob_job_spawn_child`.
    pub fd: i32,
    /// The number the child has it under: 3 or more for an extra descriptor
    /// (QEMU's and libvirt's helpers get sockets and files this way), 0, 1 or
    /// 2 to replace stdin, stdout or stderr (not with a flag that sets the
    /// same stream: `BGJOB_CHILD_INHERIT_STDIN`, `_CAPTURE_`/`_NULL_STDOUT`,
    /// `_CAPTURE_`/`_NULL_STDERR`), or `BGJOB_CHILD_FD_SAME` for `fd`'s own
    /// number. Each number at most once. It is not close-on-exec in the child.
    pub child_fd: i32,
}

/// How to start a child process (`bgjob_job_spawn_child`). Fill with
/// `bgjob_child_options_init(&opts, sizeof opts)` first; like
/// `bgjob_job_options` it only grows at the end.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bgjob_child_options {
    /// `sizeof(bgjob_child_options)` as the caller compiled it.
    pub struct_size: u32,
    /// `BGJOB_CHILD_*` flags. Default 0: stdout and stderr inherited, stdin
    /// `/dev/null`, signalled on cancel, a process group of its own.
    pub flags: u32,
    /// NULL-terminated argument vector; `argv[0]` is the program, looked up in
    /// `PATH` when it has no `/`. Required. Copied.
    pub argv: *const *const c_char,
    /// NULL-terminated `NAME=value` strings: the child's whole environment.
    /// Default NULL: the parent's. Copied.
    pub envp: *const *const c_char,
    /// The child's working directory. Default NULL: the parent's. Copied.
    pub cwd: *const c_char,
    /// After a cancel: ms from SIGTERM to SIGKILL. Default
    /// `BGJOB_CHILD_DEFAULT_GRACE_MS`; 0 sends SIGKILL at once.
    pub grace_ms: i64,
    /// Receives captured lines. Default NULL: captured output is dropped.
    pub on_line: bgjob_line_callback,
    /// Passed to `on_line`. Ownership passes to bgjob with the spawn call.
    pub line_userdata: *mut c_void,
    /// Frees `line_userdata` exactly once: when the child has been waited for,
    /// when its job ends, or when the spawn fails. May be NULL.
    pub line_free: bgjob_free_callback,
    /// Descriptors passed to the child, `fd_count` of them (read during the
    /// call, not kept). Besides these the child has only stdin, stdout and
    /// stderr: every other descriptor of the parent's, close-on-exec or not,
    /// is closed in it. Default NULL. (A field added after the first layout:
    /// a caller built against an older header passes a smaller `struct_size`
    /// and passes none.)
    pub fds: *const bgjob_child_fd,
    /// Entries in `fds`. Default 0.
    pub fd_count: usize,
}

/// One live job, as listed by `bgjob_list_jobs`. Later versions add fields
/// at the end only; `bgjob_list_jobs_sized` lets a program built against an
/// older, shorter entry keep working.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bgjob_job_entry {
    /// Process-unique id.
    pub id: u64,
    /// The job's state.
    pub state: bgjob_state,
    /// Time since creation in ms.
    pub age_ms: i64,
    /// Time since the last progress update in ms; −1 if none. As in
    /// `bgjob_info`: never more than the truth, up to two coarse-clock ticks
    /// less.
    pub since_progress_ms: i64,
    /// The name, NUL-terminated, cut to fit.
    pub name: [c_char; BGJOB_ENTRY_TEXT_SIZE],
    /// The phase, NUL-terminated, cut to fit.
    pub phase: [c_char; BGJOB_ENTRY_TEXT_SIZE],
    /// The operation (`bgjob_job_options.operation`; "" for none),
    /// NUL-terminated, cut to fit.
    pub operation: [c_char; BGJOB_ENTRY_TEXT_SIZE],
    /// The owner tag (`bgjob_job_options.owner`; "" for none),
    /// NUL-terminated, cut to fit.
    pub owner: [c_char; BGJOB_ENTRY_TEXT_SIZE],
    /// Internal pauses in force (as `bgjob_info.pause_count`).
    pub pause_count: u32,
    /// Whether cancel was requested.
    pub cancel_requested: bool,
    /// Why cancel was requested (`BGJOB_CANCEL_CAUSE_NONE` if it was not).
    pub cancel_cause: bgjob_cancel_cause,
    /// The parent job's id (`bgjob_job_options.parent`), 0 for none: the
    /// listing's tree. It stays the parent's id after the parent ended or was
    /// freed (then no entry of the listing has it).
    pub parent_id: u64,
}

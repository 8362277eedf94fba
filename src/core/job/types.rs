//! The public value types of jobs: errors, policies, causes, snapshots.

use super::*;
pub use crate::core::error::Error;
pub use crate::core::outcome::{CancelCause, Declare, JobError};

/// Bounded jobs know (or estimate) how much work there is and report a
/// percentage; unbounded jobs report only elapsed time and units done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum JobType {
    /// Has a total (units or percent).
    #[default]
    Bounded,
    /// Has no known end.
    Unbounded,
}

/// What a job does when its worker reports an I/O error
/// ([`Job::report_io_error`]); QEMU's `BlockdevOnError`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Fail: the worker is told to give up, and the error is the job's.
    #[default]
    Report,
    /// Carry on as if nothing happened.
    Ignore,
    /// User-pause the job with an error status; the worker parks and retries
    /// after resume.
    Stop,
    /// Stop on ENOSPC (space can be added, then resume); report otherwise.
    Enospc,
}

/// What [`Job::report_io_error`] tells the worker to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorAction {
    /// Give up: return the error (it is recorded as the job's).
    Report,
    /// Carry on.
    Ignore,
    /// The job is now user-paused with an error status: call a pause point
    /// (it parks until resume, or reports a cancel), then retry.
    Stop,
}

/// The error status of a job stopped by its error policy (QEMU's iostatus).
/// Not `Ok` only while the job is user-paused; resume and cancel reset it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IoStatus {
    /// No error pending.
    #[default]
    Ok,
    /// Stopped by an I/O error.
    Failed,
    /// Stopped by ENOSPC.
    NoSpace,
}

/// What [`Job::wait_fd`] waits for, and what it found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FdEvents {
    /// Readable (`POLLIN`).
    pub readable: bool,
    /// Writable (`POLLOUT`).
    pub writable: bool,
    /// Found only: an error condition (`POLLERR`).
    pub error: bool,
    /// Found only: the other end hung up (`POLLHUP`).
    pub hangup: bool,
}

/// Which race a cancel request met (libxl's abort contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelStatus {
    /// This call asked first; the job will end soon (and may still succeed).
    Requested,
    /// Someone asked before; nothing new happened.
    AlreadyRequested,
    /// The job had already ended; nothing happened.
    AlreadyFinished,
}

/// A consistent snapshot of a job, as returned by [`Job::info`].
#[derive(Clone, Debug, PartialEq)]
pub struct Info {
    /// Process-unique id.
    pub id: u64,
    /// Bounded or unbounded.
    pub job_type: JobType,
    /// The state at the moment of the snapshot.
    pub state: State,
    /// Whether cancel was requested (also on a job that then completed).
    pub cancel_requested: bool,
    /// Whether a user pause is in force.
    pub pause_requested: bool,
    /// Internal pauses in force ([`Job::pause_internal`]).
    pub pause_count: u32,
    /// The error status (not `Ok` only while user-paused by the error policy).
    pub iostatus: IoStatus,
    /// The current error policy.
    pub error_policy: ErrorPolicy,
    /// Time since start, paused time excluded, in ms (0 before start).
    pub elapsed_ms: i64,
    /// Estimated remaining time in ms; −1 when unknown; 0 once finished.
    pub remaining_ms: i64,
    /// 0–100, or −1 when unknown (always −1 for unbounded jobs).
    pub percent: i32,
    /// Units done.
    pub current: u64,
    /// Units in all (0 = not known).
    pub total: u64,
    /// Units per second of active time, or −1 when unknown.
    pub rate: f64,
    /// Time since the last progress update in ms, or −1 if there was none.
    pub since_progress_ms: i64,
    /// The job's error code (0 while it has none).
    pub error_code: i32,
    /// Why cancel was requested ([`CancelCause::None`] if it was not).
    pub cancel_cause: CancelCause,
    /// Whether complete was requested ([`Job::complete`]).
    pub complete_requested: bool,
    /// Whether the cancel request is a soft one ([`Job::cancel_soft`]).
    pub cancel_soft: bool,
}

/// A live job, as listed by [`list`].
#[derive(Clone, Debug, PartialEq)]
pub struct Listing {
    /// Process-unique id.
    pub id: u64,
    /// The job's name.
    pub name: String,
    /// Current state.
    pub state: State,
    /// Current phase name (may be empty).
    pub phase: String,
    /// Time since creation in ms.
    pub age_ms: i64,
    /// Time since the last progress update in ms, or −1.
    pub since_progress_ms: i64,
    /// The operation name ("" if none).
    pub operation: String,
    /// The owner tag ("" if none).
    pub owner: String,
    /// Internal pauses in force.
    pub pause_count: u32,
    /// Whether cancel was requested.
    pub cancel_requested: bool,
    /// Why cancel was requested.
    pub cancel_cause: CancelCause,
    /// The parent job's id ([`Job::set_parent`]), 0 for none.
    pub parent_id: u64,
}

/// Runs once when a job has ended; see [`Builder::on_complete`].
pub type CompleteFn = Box<dyn FnOnce(&Job) + Send + 'static>;

/// A cancellation hook ([`Job::add_cancel_hook`]): called at most once, with the
/// job, on the thread that cancels it.
pub type HookFn = Box<dyn FnOnce(&Job) + Send + 'static>;

/// Names a registered hook for [`Job::remove_cancel_hook`].
pub type HookId = u64;

/// What [`Job::add_cancel_hook`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookAdded {
    /// Registered; cancel will call it.
    Registered(HookId),
    /// Cancel had already been requested: the hook ran at once, on this thread.
    RanAtOnce,
}

/// What [`Job::remove_cancel_hook`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookRemoved {
    /// It had not run; it never will, and what it captured was dropped.
    Removed,
    /// No such hook waiting: it ran (and has finished, unless this is its own
    /// thread calling from inside it), or the id is unknown.
    NotFound,
}

/// A result value a worker leaves for the caller ([`Job::set_result`]).
pub type ResultValue = Box<dyn std::any::Any + Send + 'static>;

/// What [`Job::begin_release`] took out of a job; dropping it finishes the
/// release with no lock of the caller's held.
#[must_use = "dropping the Release is what frees the job's worker and result"]
pub struct Release {
    pub(super) job: Job,
    pub(super) worker: Option<WorkerFn>,
    pub(super) wait: bool,
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.job.end_unstarted(worker);
        } else if self.wait {
            let _ = self.job.wait(None);
        }
        // The result goes now, not when the last reference does (the worker
        // thread or a queued completion may hold one a little longer).
        let result = self.job.0.lock().result.take();
        drop(result);
    }
}

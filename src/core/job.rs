//! The job: one long operation run by a worker on its own thread.
//!
//! A [`Job`] is a cheap, clonable reference. The caller side starts, cancels,
//! pauses, resumes, waits for and reads it; the worker gets a [`Worker`] for
//! progress, pause points and cancellation checks. All rules about which verb is
//! allowed when come from [`super::state::verb_allowed`]; this module applies them
//! under the job's lock and never calls user code (worker, free functions) with
//! that lock held.

use super::atomic::{AtomicU8, Ordering};
use super::child::{self, Child, ChildExit};
use super::context::Context;
use super::errno::{ECANCELED, EIO, ENOSPC};
use super::log;
use super::progress::{self, Fields, Progress};
use super::state::{State, Verb, verb_allowed};
use super::sync::{Mutex, MutexGuard, Signal, ThreadId, current_thread_id};
use super::threads::{Pool, Submitted, Ticket};
use super::timer::{self, TimerId};
use super::txn::Txn;
use crate::sys::{self, EventFd};
use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

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

/// Why a job failed: an errno-style code chosen by the worker and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobError {
    /// Non-zero, worker-defined (an errno value is usual).
    pub code: i32,
    /// Human-readable; may be empty.
    pub message: String,
}

impl JobError {
    /// An error with this code and message.
    pub fn new(code: i32, message: impl Into<String>) -> JobError {
        JobError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for JobError {}

/// Why a verb was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The verb is not allowed in the job's current state (see the verb table).
    NotAllowed {
        /// What was asked.
        verb: Verb,
        /// The state the job was in.
        state: State,
    },
    /// No thread could be started (EAGAIN); nothing was left behind.
    TryAgain,
    /// A wait ran out of time.
    TimedOut,
    /// The job was cancelled (returned by pause points and waits).
    Cancelled,
    /// An argument was out of range; nothing was changed.
    InvalidArgument(&'static str),
    /// The job's own worker asked to wait for the job: it would wait forever.
    OwnWorker,
    /// An operating-system call failed with this errno (spawning a child,
    /// making an fd, polling).
    System(i32),
    /// No such item (a child pid the job does not watch).
    NotFound,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotAllowed { verb, state } => {
                write!(f, "{verb} is not allowed in state {state}")
            }
            Error::TryAgain => f.write_str("no thread could be started; try again"),
            Error::TimedOut => f.write_str("timed out"),
            Error::Cancelled => f.write_str("cancelled"),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::OwnWorker => f.write_str("a job's worker cannot wait for its own job"),
            Error::System(errno) => {
                write!(f, "{}", std::io::Error::from_raw_os_error(*errno))
            }
            Error::NotFound => f.write_str("not found"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        // Errors without an errno (std's own, e.g. an argument with a NUL) are
        // argument errors in practice; EINVAL says so.
        Error::System(e.raw_os_error().unwrap_or(22))
    }
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

/// Why cancel was requested (shown by [`Job::info`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CancelCause {
    /// Cancel was not requested.
    #[default]
    None,
    /// A caller cancelled it (cancel, destroy of a created job, detach).
    Caller,
    /// Its deadline passed ([`Builder::deadline`], [`Job::set_deadline`]).
    Timeout,
    /// Another member of its transaction failed or was cancelled.
    Transaction,
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
    job: Job,
    worker: Option<WorkerFn>,
    wait: bool,
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

/// The job whose worker runs on this thread, with the tag the layer above
/// named it by (ffi: the handle its worker was given; 0 until tagged). The one
/// record, for every layer, of "this thread is that job's worker".
type WorkerThread = std::cell::RefCell<Option<(Job, usize)>>;

#[cfg(not(loom))]
thread_local! {
    static CURRENT_WORKER: WorkerThread = const { std::cell::RefCell::new(None) };
}
#[cfg(loom)]
loom::thread_local! {
    static CURRENT_WORKER: WorkerThread = std::cell::RefCell::new(None);
}

/// Marks the calling thread as `job`'s worker until dropped.
pub(crate) struct WorkerScope(());

impl WorkerScope {
    pub(crate) fn enter(job: &Job) -> WorkerScope {
        CURRENT_WORKER.with(|c| *c.borrow_mut() = Some((job.clone(), 0)));
        WorkerScope(())
    }
}

impl Drop for WorkerScope {
    fn drop(&mut self) {
        // Taken out first so the job reference drops after the borrow ends.
        let old = CURRENT_WORKER.with(|c| c.borrow_mut().take());
        drop(old);
    }
}

/// Names the worker running on this thread with `tag` (the layer above's
/// handle for it), so [`with_tagged_worker`] finds it without a lookup. Does
/// nothing on a thread that runs no worker.
pub fn tag_worker_thread(tag: usize) {
    CURRENT_WORKER.with(|c| {
        if let Ok(mut cur) = c.try_borrow_mut()
            && let Some((_, t)) = cur.as_mut()
        {
            *t = tag;
        }
    });
}

/// Runs `f` on the job whose worker runs on this thread if it was tagged
/// `tag` (non-zero); `None` (and `f` not called) otherwise. No lock, no
/// reference count.
pub fn with_tagged_worker<R>(tag: usize, f: impl FnOnce(&Job) -> R) -> Option<R> {
    CURRENT_WORKER.with(|c| {
        let cur = c.try_borrow().ok()?;
        match &*cur {
            Some((job, t)) if *t == tag && tag != 0 => Some(f(job)),
            _ => None,
        }
    })
}

/// In a forked child: the parent's worker that ran on this thread does not run
/// here; its record is forgotten (not dropped: the job's memory belongs to
/// the parent's threads) so nothing can reach it.
pub fn forget_worker_thread_after_fork() {
    CURRENT_WORKER.with(|c| {
        if let Ok(mut cur) = c.try_borrow_mut() {
            std::mem::forget(cur.take());
        }
    });
}

/// A completion that settle could not hand to a context queue.
enum Undelivered {
    /// The context was closed: drop it unrun, outside the job's lock.
    Dropped(Box<dyn FnOnce() + Send>),
    /// No context: run it on the worker (or a fresh) thread.
    Direct(Box<dyn FnOnce() + Send>),
}

/// The function a job runs. It gets a [`Worker`]; `Ok` completes the job, `Err`
/// fails it (or cancels it, when cancel was requested).
pub type WorkerFn = Box<dyn FnOnce(&Worker<'_>) -> Result<(), JobError> + Send + 'static>;

const ATTN_CANCEL: u8 = 1;
const ATTN_PAUSE: u8 = 2;
/// Set once the job is terminal, so updates after the end take the slow path and
/// are refused by the verb table.
const ATTN_DONE: u8 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Created,
    Running,
    /// The worker has returned (or never will run); its outcome waits for the
    /// rest of its transaction, or for a manual finalize.
    Waiting,
    Done(State),
}

struct St {
    life: Life,
    cancel_requested: bool,
    /// A user pause is in force (QEMU's `user_paused`).
    user_paused: bool,
    /// Internal pauses in force (QEMU's `pause_count` without the user's).
    pause_count: u32,
    /// Job-clock time the job stopped running (user or internal pause);
    /// `Some` exactly while it is halted.
    halted_since_ns: Option<i64>,
    iostatus: IoStatus,
    error_policy: ErrorPolicy,
    manual_finalize: bool,
    /// The transaction the job belongs to.
    txn: Option<Txn>,
    /// Commit, abort and clean callbacks (run once, at finalization).
    commit: Option<HookFn>,
    abort: Option<HookFn>,
    clean: Option<HookFn>,
    /// The worker's outcome while the job is `Waiting`.
    pending: Option<(State, Option<JobError>)>,
    /// A job on its own: its finalization has been claimed (once).
    finalizing: bool,
    /// Job-clock time the worker started.
    started_ns: Option<i64>,
    /// Total time spent in finished user pauses.
    paused_ns: i64,
    finished_ns: Option<i64>,
    error: Option<JobError>,
    /// A status recorded with [`Job::finish`] before the worker returned.
    finish_status: Option<i32>,
    worker: Option<WorkerFn>,
    /// Taken (once) when the job settles.
    completion: Option<(Option<Context>, CompleteFn)>,
    result: Option<ResultValue>,
    /// Cancellation hooks in registration order.
    hooks: std::collections::VecDeque<(HookId, HookFn)>,
    next_hook: HookId,
    /// The hooks being called right now, each with the thread calling it (id
    /// 0: one that ran at once as it was added). The worker's end waits until
    /// this is empty, so no hook runs once the job is seen done.
    busy_hooks: Vec<(HookId, ThreadId)>,
    /// Detached: nobody holds a handle that could resume it, so a pause that
    /// raced the detach (a caller who looked the job up just before) is refused.
    detached: bool,
    /// Started but waiting for a slot under the pool's cap: the queue ticket and
    /// the worker's slot, so a cancel can take it back unrun.
    queued: Option<(Ticket, WorkerSlot)>,
    cancel_cause: CancelCause,
    /// Readable while cancel is requested or a user pause is pending; made on
    /// first use ([`Job::wake_fd`]).
    wake: Option<Arc<EventFd>>,
    /// Active time at which the job is cancelled with cause `Timeout`.
    deadline_ns: Option<i64>,
    /// The armed deadline timer, and the generation that names the current
    /// arming (a timer that fires for an older one does nothing).
    deadline_timer: Option<TimerId>,
    deadline_gen: u64,
    /// Child processes bound to the job, by pid; `None` once the worker has
    /// returned (its children were reaped, no new one may be bound).
    children: Option<HashMap<i32, Arc<Child>>>,
}

/// Where a started job's worker waits for its thread.
type WorkerSlot = Arc<Mutex<Option<WorkerFn>>>;

impl St {
    fn state(&self) -> State {
        match self.life {
            Life::Created => State::Created,
            Life::Running if self.user_paused => State::Paused,
            Life::Running => State::Running,
            Life::Waiting => State::Waiting,
            Life::Done(s) => s,
        }
    }

    fn user_paused(&self) -> bool {
        self.user_paused
    }

    /// The worker may not run: a user or an internal pause is in force.
    fn halted(&self) -> bool {
        self.user_paused || self.pause_count > 0
    }

    /// Starts or stops the job's clock as the pauses say (paused time is not
    /// active time).
    fn reclock(&mut self, now: i64) {
        match (self.halted(), self.halted_since_ns) {
            (true, None) => self.halted_since_ns = Some(now),
            (false, Some(since)) => {
                self.halted_since_ns = None;
                if let Some(started) = self.started_ns {
                    self.paused_ns += now - since.max(started);
                }
            }
            _ => {}
        }
    }

    /// Active (unpaused) time at job-clock `now`.
    fn active_ns(&self, now: i64) -> i64 {
        let Some(started) = self.started_ns else {
            return 0;
        };
        let end = self.finished_ns.unwrap_or(now);
        // A pause that began after `now` was read (while waiting for the lock) has
        // not taken any of it yet.
        let current_pause = self
            .halted_since_ns
            .map_or(0, |p| (end - p.max(started)).max(0));
        (end - started - self.paused_ns - current_pause).max(0)
    }

    /// Whether the calling thread is inside one of this job's cancellation
    /// hooks (called by its own cancel).
    fn in_own_hook(&self) -> bool {
        let me = current_thread_id();
        self.busy_hooks.iter().any(|&(_, t)| t == me)
    }

    /// Whether a hook is being called on a thread other than this one.
    fn hook_busy_elsewhere(&self) -> bool {
        let me = current_thread_id();
        self.busy_hooks.iter().any(|&(_, t)| t != me)
    }

    /// Brings the wake fd (if there is one) in line with the job: readable
    /// while cancel is requested or a user pause is pending.
    fn sync_wake(&self) {
        if let Some(w) = &self.wake {
            if self.cancel_requested || self.halted() {
                w.signal();
            } else {
                w.clear();
            }
        }
    }

    fn disarm_deadline(&mut self) {
        self.deadline_gen += 1;
        if let Some(id) = self.deadline_timer.take() {
            timer::cancel(id);
        }
    }

    /// Worker-side calls (waits, children, error reports) need a running
    /// worker: refused (as an update) in every other state.
    fn check_running(&self) -> Result<(), Error> {
        if self.life == Life::Running {
            Ok(())
        } else {
            Err(Error::NotAllowed {
                verb: Verb::Update,
                state: self.state(),
            })
        }
    }

    /// Active time left before `target` (`None`: no limit), at job-clock `now`.
    fn left_ns(&self, target: Option<i64>, now: i64) -> Option<i64> {
        target.map(|t| t.saturating_sub(self.active_ns(now)).max(0))
    }

    fn check(&self, verb: Verb) -> Result<(), Error> {
        let state = self.state();
        if verb_allowed(verb, state) {
            Ok(())
        } else {
            Err(Error::NotAllowed { verb, state })
        }
    }
}

struct Inner {
    id: u64,
    name: String,
    job_type: JobType,
    stack_size: usize,
    pool: &'static Pool,
    epoch: Instant,
    /// ATTN_* bits: the worker's fast path reads only this.
    attention: AtomicU8,
    progress: Progress,
    phase: Mutex<Arc<str>>,
    st: Mutex<St>,
    cv: Signal,
}

impl Drop for Inner {
    fn drop(&mut self) {
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        log::debug(format_args!("job {} '{}' freed", self.id, self.name));
    }
}

/// Held across fork() (see `crate::ffi::fork`); in the child the parent's jobs
/// are forgotten, so listing them there never waits on a parent thread.
pub(crate) struct RegistryHold(std::sync::MutexGuard<'static, HashMap<u64, Weak<Inner>>>);

impl RegistryHold {
    pub(crate) fn take() -> RegistryHold {
        RegistryHold(registry().lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn forget_all(mut self) {
        self.0.clear();
    }
}

// A std lock even under loom: it outlives every model execution.
fn registry() -> &'static std::sync::Mutex<HashMap<u64, Weak<Inner>>> {
    static REGISTRY: OnceLock<std::sync::Mutex<HashMap<u64, Weak<Inner>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| std::sync::Mutex::new(HashMap::new()))
}

/// Every job that still exists (has a handle, a running worker, or a clone).
pub fn list() -> Vec<Listing> {
    let jobs: Vec<Job> = registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter_map(Weak::upgrade)
        .map(Job)
        .collect();
    let mut out: Vec<Listing> = jobs
        .iter()
        .map(|j| {
            let info = j.info();
            Listing {
                id: j.id(),
                name: j.name().to_owned(),
                state: info.state,
                phase: j.phase().to_string(),
                age_ms: ms(j.0.now_ns()),
                since_progress_ms: info.since_progress_ms,
            }
        })
        .collect();
    out.sort_by_key(|l| l.id);
    out
}

/// How long a deadline whose cancel found no thread to run on (EAGAIN) waits
/// before it tries again.
const DEADLINE_RETRY: Duration = Duration::from_millis(20);

/// A deadline's timer task: all it does on the timer thread is start the
/// thread that makes the cancel.
struct DeadlineFire {
    job: Weak<Inner>,
    arming: u64,
    pool: &'static Pool,
    name: String,
    stack_size: usize,
}

impl DeadlineFire {
    /// On the timer thread: never upgrades the job (so never drops its last
    /// reference here) and never calls user code.
    fn fire(self) {
        if self.job.strong_count() == 0 {
            return; // the job is gone: nothing to cancel, no retry
        }
        let job = self.job.clone();
        let arming = self.arming;
        let started = self.pool.spawn(
            &self.name,
            self.stack_size,
            Box::new(move || {
                if let Some(inner) = job.upgrade() {
                    Job(inner).deadline_due(arming);
                }
            }),
        );
        if started.is_err() {
            // No thread now: the deadline still fires, as soon as one can be
            // started. A disarmed deadline (the job ended, was paused, got a new
            // deadline) makes the retry a no-op through `arming`.
            let _ = timer::schedule(Instant::now() + DEADLINE_RETRY, move || self.fire());
        }
    }
}

/// Builds a job.
#[derive(Default)]
pub struct Builder {
    name: Option<String>,
    job_type: JobType,
    stack_size: usize,
    pool: Option<&'static Pool>,
    completion: Option<(Option<Context>, CompleteFn)>,
    deadline: Option<Duration>,
    error_policy: ErrorPolicy,
    manual_finalize: bool,
    commit: Option<HookFn>,
    abort: Option<HookFn>,
    clean: Option<HookFn>,
}

impl Builder {
    /// A bounded job with a generated name, default stack, on the global pool.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// The job's name (its thread's name, cut to 15 bytes). Default `job-<id>`.
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Bounded (default) or unbounded.
    pub fn job_type(mut self, t: JobType) -> Builder {
        self.job_type = t;
        self
    }

    /// Worker stack size in bytes; 0 (default) is the platform default. Over
    /// [`super::threads::MAX_STACK_SIZE`], start is refused.
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = bytes;
        self
    }

    /// Run on this pool instead of the global one.
    pub fn pool(mut self, pool: &'static Pool) -> Builder {
        self.pool = Some(pool);
        self
    }

    /// Runs `f` exactly once after the job has ended (whatever the outcome, also
    /// when it never ran): through `context` on the thread that dispatches it, or
    /// with `None` on the worker thread right after the worker returned (on a
    /// pool thread for a job that never ran). Never inside the call that ended the
    /// job (start, cancel, release), never with a lock held. If the context is
    /// closed first, `f` is dropped unrun.
    pub fn on_complete<F>(mut self, context: Option<Context>, f: F) -> Builder
    where
        F: FnOnce(&Job) + Send + 'static,
    {
        self.completion = Some((context, Box::new(f)));
        self
    }

    /// Cancels the job (cause [`CancelCause::Timeout`]) once it has been running
    /// for `after` of active time: measured from start, paused time not counted.
    pub fn deadline(mut self, after: Duration) -> Builder {
        self.deadline = Some(after);
        self
    }

    /// What the job does when its worker reports an I/O error (default
    /// [`ErrorPolicy::Report`]); see [`Job::report_io_error`].
    pub fn error_policy(mut self, policy: ErrorPolicy) -> Builder {
        self.error_policy = policy;
        self
    }

    /// QEMU's `JOB_MANUAL_FINALIZE`: once the work is done (and every member of
    /// its transaction succeeded) the job waits in `Waiting` until
    /// [`Job::finalize`]; only then do commit and clean run and the job end.
    /// A failed or cancelled group is finalized at once. In a transaction, the
    /// transaction's setting applies instead.
    pub fn manual_finalize(mut self, yes: bool) -> Builder {
        self.manual_finalize = yes;
        self
    }

    /// Runs once at finalization if the job (and every member of its
    /// transaction) succeeded, before clean and before the job ends.
    pub fn on_commit<F: FnOnce(&Job) + Send + 'static>(mut self, f: F) -> Builder {
        self.commit = Some(Box::new(f));
        self
    }

    /// Runs once at finalization if the job or any member of its transaction
    /// failed or was cancelled, before clean and before the job ends.
    pub fn on_abort<F: FnOnce(&Job) + Send + 'static>(mut self, f: F) -> Builder {
        self.abort = Some(Box::new(f));
        self
    }

    /// Runs once at finalization, after commit or abort, whatever the outcome.
    pub fn on_clean<F: FnOnce(&Job) + Send + 'static>(mut self, f: F) -> Builder {
        self.clean = Some(Box::new(f));
        self
    }

    /// Makes the job in `Created`; [`Job::start`] runs it.
    pub fn create<F>(self, worker: F) -> Job
    where
        F: FnOnce(&Worker<'_>) -> Result<(), JobError> + Send + 'static,
    {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::new(Inner {
            id,
            name: self.name.unwrap_or_else(|| format!("job-{id}")),
            job_type: self.job_type,
            stack_size: self.stack_size,
            pool: self.pool.unwrap_or_else(Pool::global),
            epoch: Instant::now(),
            attention: AtomicU8::new(0),
            progress: Progress::default(),
            phase: Mutex::new(Arc::from("")),
            st: Mutex::new(St {
                life: Life::Created,
                cancel_requested: false,
                user_paused: false,
                pause_count: 0,
                halted_since_ns: None,
                iostatus: IoStatus::Ok,
                error_policy: self.error_policy,
                manual_finalize: self.manual_finalize,
                txn: None,
                commit: self.commit,
                abort: self.abort,
                clean: self.clean,
                pending: None,
                finalizing: false,
                started_ns: None,
                paused_ns: 0,
                finished_ns: None,
                error: None,
                finish_status: None,
                worker: Some(Box::new(worker)),
                completion: self.completion,
                result: None,
                hooks: std::collections::VecDeque::new(),
                next_hook: 0,
                busy_hooks: Vec::new(),
                detached: false,
                queued: None,
                cancel_cause: CancelCause::None,
                wake: None,
                deadline_ns: self.deadline.map(duration_ns),
                deadline_timer: None,
                deadline_gen: 0,
                children: Some(HashMap::new()),
            }),
            cv: Signal::new(),
        });
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::downgrade(&inner));
        log::debug(format_args!("job {id} '{}' created", inner.name));
        Job(inner)
    }

    /// Makes the job and starts it. On [`Error::TryAgain`] the job and the worker
    /// closure (with everything it captured) are dropped.
    pub fn spawn<F>(self, worker: F) -> Result<Job, Error>
    where
        F: FnOnce(&Worker<'_>) -> Result<(), JobError> + Send + 'static,
    {
        let job = self.create(worker);
        if let Err(e) = job.start() {
            job.discard();
            return Err(e);
        }
        Ok(job)
    }
}

/// A reference to a job. Clones refer to the same job; the job's memory lives
/// until the last clone and its worker are gone.
#[derive(Clone)]
pub struct Job(Arc<Inner>);

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.0.id)
            .field("name", &self.0.name)
            .field("state", &self.state())
            .finish()
    }
}

impl PartialEq for Job {
    fn eq(&self, other: &Job) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Job {}

impl Inner {
    fn now_ns(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(i64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, St> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a change to the pauses: the clock, the worker's attention bit and
    /// the wake fd follow.
    fn repause(&self, st: &mut St, now: i64) {
        st.reclock(now);
        if st.halted() {
            self.attention.fetch_or(ATTN_PAUSE, Ordering::Release);
        } else {
            self.attention.fetch_and(!ATTN_PAUSE, Ordering::Release);
        }
        st.sync_wake();
    }

    /// Ends the user pause (if any) and resets the error status with it: the
    /// error status is not OK only while user-paused (QEMU's block jobs).
    fn end_user_pause(&self, st: &mut St, now: i64) {
        st.user_paused = false;
        st.iostatus = IoStatus::Ok;
        self.repause(st, now);
    }

    fn set_attention(&self, bit: u8) {
        self.attention.fetch_or(bit, Ordering::Release);
    }
}

fn ms(ns: i64) -> i64 {
    ns / 1_000_000
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Job {
    /// A new [`Builder`].
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// Process-unique id (never reused).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Bounded or unbounded.
    pub fn job_type(&self) -> JobType {
        self.0.job_type
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.0.lock().state()
    }

    /// Starts the worker of a created job on a thread of the job's pool. Under
    /// the pool's cap ([`Pool::set_max_running`]) it may wait in the pool's queue,
    /// already `Running`; a cancel then ends it unrun.
    ///
    /// Errors: `NotAllowed` unless `Created` (and not being cancelled);
    /// `TryAgain` if no thread could be started, in which case the job stays
    /// `Created` (or ends `Cancelled` if a cancel arrived meanwhile).
    pub fn start(&self) -> Result<(), Error> {
        let inner = &self.0;
        // The job's lock is held across the spawn, so nobody ever sees RUNNING
        // before the thread exists, nor a RUNNING job fall back to CREATED when
        // the spawn fails. It is safe: the new thread takes this lock only after
        // we let go of it, and the pool never takes a job's lock.
        if inner.stack_size > super::threads::MAX_STACK_SIZE {
            return Err(Error::InvalidArgument("stack size over MAX_STACK_SIZE"));
        }
        let mut st = inner.lock();
        st.check(Verb::Start)?;
        if st.deadline_ns.is_some()
            && let Err(e) = timer::ensure_running()
        {
            // Refused rather than run without its deadline; still CREATED.
            drop(st);
            self.log_no_timer(&e);
            return Err(Error::TryAgain);
        }
        let worker = self.begin_start(&mut st)?;
        // The slot lets a failed spawn give the worker itself back (the task that
        // comes back is opaque).
        let slot: WorkerSlot = Arc::new(Mutex::new(Some(worker)));
        let job = self.clone();
        let task_slot = slot.clone();
        let spawned = inner.pool.submit(
            &inner.name,
            inner.stack_size,
            Box::new(move || {
                let worker = task_slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(worker) = worker {
                    job.run(worker);
                }
            }),
        );
        match spawned {
            Ok(submitted) => {
                let launch = match submitted {
                    Submitted::Running(launch) => Some(launch),
                    Submitted::Queued(ticket) => {
                        st.queued = Some((ticket, slot));
                        None
                    }
                };
                self.arm_deadline(&mut st);
                drop(st);
                // Wakes the thread only now, so it never runs into our lock.
                drop(launch);
                log::debug(format_args!("job {} '{}' started", inner.id, inner.name));
                Ok(())
            }
            Err((e, task)) => {
                st.life = Life::Created;
                st.started_ns = None;
                st.worker = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                drop(st);
                // Holds only a clone of this job and the (now empty) slot.
                drop(task);
                log::debug(format_args!(
                    "job {} '{}' could not start a thread: {e}",
                    inner.id, inner.name
                ));
                Err(Error::TryAgain)
            }
        }
    }

    /// The job becomes `Running` and its worker is taken to be run. Refused
    /// unless `Created`, or while another thread is cancelling it.
    fn begin_start(&self, st: &mut St) -> Result<WorkerFn, Error> {
        st.check(Verb::Start)?;
        let Some(worker) = st.worker.take() else {
            // Being cancelled by another thread right now.
            return Err(Error::NotAllowed {
                verb: Verb::Start,
                state: State::Cancelled,
            });
        };
        st.life = Life::Running;
        st.started_ns = Some(self.0.now_ns());
        Ok(worker)
    }

    /// `make loom`: what [`Job::start`] does up to handing the worker to the
    /// pool. The model runs it with [`Job::run_for_model`] on a loom thread
    /// (the pool's threads are real ones, which loom cannot schedule).
    #[cfg(all(test, loom))]
    pub(super) fn start_for_model(&self) -> WorkerFn {
        self.begin_start(&mut self.0.lock()).expect("a created job")
    }

    /// `make loom`: the worker thread's body, as a pool thread runs it.
    #[cfg(all(test, loom))]
    pub(super) fn run_for_model(&self, worker: WorkerFn) {
        self.run(worker);
    }

    /// Drops what a job that will never run still owns (worker, completion,
    /// result) now, on this thread, whoever else holds a reference: a failed
    /// create must free everything before it returns.
    pub fn discard(&self) {
        let owned = {
            let mut st = self.0.lock();
            (st.worker.take(), st.completion.take(), st.result.take())
        };
        drop(owned);
    }

    /// The worker thread's body: run, then decide the outcome (docs/design.md).
    fn run(&self, worker: WorkerFn) {
        let w = Worker { job: self };
        let scope = WorkerScope::enter(self);
        // The closure is consumed by the call, so everything it captured (the C
        // userdata and its free function) is dropped before the outcome is
        // published: a waiter that wakes sees the free done.
        // A panic payload is user data: turned into a message and dropped here,
        // before the job's lock is taken.
        let result = catch_unwind(AssertUnwindSafe(|| worker(&w))).map_err(|payload| {
            JobError::new(EIO, format!("worker panicked: {}", panic_message(&payload)))
        });
        drop(scope);
        // Children the worker left running are killed and reaped before the
        // job ends: none outlives it, none is left a zombie.
        let children = self.0.lock().children.take().unwrap_or_default();
        for child in children.into_values() {
            child.reap_now();
        }
        let (life, error) = {
            let st = self.0.lock();
            let result = match (st.finish_status, result) {
                (_, Err(panicked)) => Err(panicked),
                (Some(0), Ok(_)) => Ok(()),
                (Some(code), Ok(_)) => Err(JobError::new(code, "")),
                (None, Ok(r)) => r,
            };
            match result {
                Ok(()) => (State::Completed, None),
                Err(e) if st.cancel_requested => (State::Cancelled, Some(e)),
                Err(e) => (State::Failed, Some(e)),
            }
        };
        self.worker_done(life, error, true);
    }

    /// The worker has returned with `outcome` (or a created job was
    /// cancelled): the job waits in `Waiting` while its transaction settles or
    /// for a manual finalize; a job on its own with nothing to wait for is
    /// finalized at once.
    fn worker_done(&self, outcome: State, error: Option<JobError>, on_worker: bool) {
        let inner = &self.0;
        let (unused_hooks, txn, finalize_now) = {
            let mut st = inner.lock();
            // The one place a job's hooks end. Those nobody called are taken
            // (and dropped uncalled, with no lock held); one being called on
            // another thread right now, by a cancel that took it before the
            // worker returned, is waited for. So no hook runs, or is still
            // running, once anyone can see the job's work done.
            let mut hooks = Vec::new();
            loop {
                hooks.extend(st.hooks.drain(..));
                if !st.hook_busy_elsewhere() {
                    break;
                }
                st = inner.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            let now = inner.now_ns();
            inner.end_user_pause(&mut st, now);
            st.disarm_deadline();
            st.finished_ns = Some(now);
            st.pending = Some((outcome, error));
            st.life = Life::Waiting;
            inner.set_attention(ATTN_DONE);
            let txn = st.txn.clone();
            let finalize_now = txn.is_none()
                && (outcome != State::Completed || !st.manual_finalize)
                && !std::mem::replace(&mut st.finalizing, true);
            (hooks, txn, finalize_now)
        };
        drop(unused_hooks);
        inner.cv.notify_all();
        let worker_of = on_worker.then_some(self);
        if let Some(txn) = txn {
            txn.member_done(self, outcome, worker_of);
        } else if finalize_now {
            let abort = (outcome != State::Completed).then_some(CancelCause::None);
            finalize_group(vec![self.clone()], abort, worker_of);
        }
    }

    /// Publishes a terminal state and queues the completion on its context.
    /// A completion without a context is returned, for [`finalize_group`] to
    /// run once every member of the group is terminal. Called once per job,
    /// by the thread that finalizes its group.
    #[must_use = "a completion without a context must be run"]
    fn settle(&self, life: Life, error: Option<JobError>) -> Option<Box<dyn FnOnce() + Send>> {
        let inner = &self.0;
        let now = inner.now_ns();
        let mut st = inner.lock();
        inner.end_user_pause(&mut st, now);
        st.disarm_deadline();
        // Internal pauses still in force can never be balanced now (the verb
        // table refuses them once the job has ended): they end with it.
        st.pause_count = 0;
        st.finished_ns.get_or_insert(now);
        let state = match life {
            Life::Done(s) => s,
            _ => unreachable!("settle is only given terminal states"),
        };
        if let Some(returned) = error {
            // An error the worker recorded with set_error wins as a whole (code
            // and message), over the bare value it returned; a panic's own
            // message wins over both.
            let recorded = st.error.take();
            let mut e = match recorded {
                Some(recorded) if returned.message.is_empty() => recorded,
                _ => returned,
            };
            if e.message.is_empty() {
                e.message = match state {
                    State::Cancelled => "cancelled".to_owned(),
                    _ => format!("worker failed with code {}", e.code),
                };
            }
            st.error = Some(e);
        } else if state == State::Cancelled && st.error.is_none() {
            st.error = Some(JobError::new(0, "cancelled before start"));
        }
        st.life = life;
        inner.set_attention(ATTN_DONE);
        // A context completion is queued in the same step that makes the job
        // terminal, so a caller whose wait returned finds it queued. Lock order
        // is job, then context queue; nothing takes them the other way round.
        let mut wake = None;
        let pending = st.completion.take().and_then(|(context, f)| {
            let job = self.clone();
            let run: Box<dyn FnOnce() + Send> = Box::new(move || f(&job));
            let Some(ctx) = context else {
                return Some(Undelivered::Direct(run));
            };
            match ctx.post(run) {
                Ok(w) => {
                    wake = Some(w);
                    None
                }
                Err(run) => Some(Undelivered::Dropped(run)),
            }
        });
        drop(st);
        // The context's fd is signalled with no lock held, so its dispatcher,
        // woken at once, does not run into the job's or the queue's lock.
        drop(wake);
        inner.cv.notify_all();
        log::debug(format_args!("job {} '{}' {state}", inner.id, inner.name));
        match pending {
            // Its context was closed: dropped unrun, its free functions run here.
            Some(Undelivered::Dropped(run)) => {
                drop(run);
                None
            }
            Some(Undelivered::Direct(run)) => Some(run),
            None => None,
        }
    }

    /// Runs a completion without a context on a bgjob thread of its own: the
    /// job's end was not its worker's return (it never ran, a verb on another
    /// thread ended it, or it is a transaction member another member's end
    /// settled), and the callback must run neither inside that verb nor on
    /// another job's thread. With no thread to be had (EAGAIN) it runs here,
    /// late rather than never (documented with bgjob_completion_callback).
    fn spawn_completion(&self, run: Box<dyn FnOnce() + Send>) {
        if let Err((_, run)) = self.0.pool.spawn(&self.0.name, 0, run) {
            run();
        }
    }

    /// Leaves a result for the caller, replacing (and dropping) an earlier one.
    /// Allowed while the job may still update (see [`Verb::Update`]).
    pub fn set_result(&self, value: ResultValue) -> Result<(), Error> {
        let old = {
            let mut st = self.0.lock();
            st.check(Verb::Update)?;
            st.result.replace(value)
        };
        drop(old);
        Ok(())
    }

    /// Runs `f` on the result, if there is one, once the job has ended (refused
    /// before: the worker could still replace it). `f` runs under the job's lock:
    /// keep it short and do not call back into this job.
    pub fn with_result<R>(&self, f: impl FnOnce(Option<&ResultValue>) -> R) -> Result<R, Error> {
        let st = self.0.lock();
        st.check(Verb::Result)?;
        Ok(f(st.result.as_ref()))
    }

    /// Takes the result out once the job has ended; the job no longer owns or
    /// drops it.
    pub fn take_result(&self) -> Result<Option<ResultValue>, Error> {
        let mut st = self.0.lock();
        st.check(Verb::Result)?;
        Ok(st.result.take())
    }

    /// Requests cancellation and returns at once.
    ///
    /// A created job ends `Cancelled` without its worker running (its closure is
    /// dropped before this returns). A paused job is resumed so it can see the
    /// cancel. A running worker decides: it may still complete.
    pub fn cancel(&self) -> CancelStatus {
        self.cancel_with(CancelCause::Caller)
    }

    /// [`Job::cancel`], recording why (shown by [`Job::info`]). The first
    /// request's cause is kept.
    pub fn cancel_with(&self, cause: CancelCause) -> CancelStatus {
        let inner = &self.0;
        let now = inner.now_ns();
        let mut st = inner.lock();
        if matches!(st.life, Life::Done(_)) {
            return CancelStatus::AlreadyFinished;
        }
        if st.cancel_requested {
            return CancelStatus::AlreadyRequested;
        }
        if st.life == Life::Waiting {
            // The work is done; the cancel turns a pending success into an
            // abort (QEMU cancels PENDING jobs the same way).
            if let Some(txn) = st.txn.clone() {
                drop(st);
                return txn.cancel_waiting_member(self, cause);
            }
            if std::mem::replace(&mut st.finalizing, true) {
                return CancelStatus::AlreadyFinished;
            }
            st.cancel_requested = true;
            st.cancel_cause = cause;
            inner.set_attention(ATTN_CANCEL);
            drop(st);
            finalize_group(vec![self.clone()], Some(cause), None);
            return CancelStatus::Requested;
        }
        st.cancel_cause = cause;
        if st.life == Life::Created {
            let worker = self.take_unstarted(&mut st);
            drop(st);
            self.run_cancel_hooks();
            if let Some(worker) = worker {
                self.end_unstarted(worker);
            }
            return CancelStatus::Requested;
        }
        st.cancel_requested = true;
        inner.set_attention(ATTN_CANCEL);
        // QEMU's block jobs: cancel undoes a user pause so the worker can see it.
        inner.end_user_pause(&mut st, now);
        st.disarm_deadline();
        st.sync_wake();
        let queued = st.queued.take();
        // With no hook registered there is nothing to call: the hook pass (one
        // more hold of the lock, which the woken worker wants) is skipped.
        let has_hooks = !st.hooks.is_empty();
        drop(st);
        inner.cv.notify_all();
        log::debug(format_args!(
            "job {} cancel requested ({cause:?})",
            inner.id
        ));
        if has_hooks {
            self.run_cancel_hooks();
        }
        // A job still waiting for a slot under the cap ends now, unrun, as a
        // created one does; once a thread has taken it, its worker decides.
        if let Some((ticket, slot)) = queued
            && let Some(task) = inner.pool.withdraw(ticket)
        {
            drop(task);
            let worker = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(worker) = worker {
                self.end_unstarted(worker);
            }
        }
        CancelStatus::Requested
    }

    /// libxl's design: takes the hooks off one at a time, in registration order, and
    /// calls each once with no lock held. Only the thread whose cancel was the
    /// first gets here; hooks registered from now on run at once instead. The
    /// worker's end takes whatever is left, uncalled (see `worker_done`).
    fn run_cancel_hooks(&self) {
        loop {
            let (id, hook) = {
                let mut st = self.0.lock();
                let Some(next) = st.hooks.pop_front() else {
                    return;
                };
                st.busy_hooks.push((next.0, current_thread_id()));
                next
            };
            self.call_hook(id, hook);
        }
    }

    /// Calls one hook that `busy_hooks` lists (as `id` on this thread), then
    /// takes it off the list and wakes whoever waits for it: a remove, or the
    /// worker's end.
    fn call_hook(&self, id: HookId, hook: HookFn) {
        let inner = &self.0;
        // A panicking Rust hook must not stay listed (a remove or the job's
        // end would wait for it forever) nor stop the hooks after it.
        let _ = catch_unwind(AssertUnwindSafe(|| hook(self)));
        {
            let mut st = inner.lock();
            let me = current_thread_id();
            if let Some(pos) = st.busy_hooks.iter().position(|&e| e == (id, me)) {
                st.busy_hooks.swap_remove(pos);
            }
        }
        inner.cv.notify_all();
        log::debug(format_args!("job {} cancel hook {id} ran", inner.id));
    }

    /// Registers a cancellation hook: anything the worker waits on (a timer, a
    /// child process, an fd) registers one, and cancel calls it once, on the
    /// cancelling thread, with no lock held. If cancel was already requested it
    /// runs at once on this thread instead, and [`HookAdded::RanAtOnce`] says so.
    /// Hooks still registered when the job ends are dropped, not called.
    /// Refused once the job has ended.
    pub fn add_cancel_hook<F>(&self, hook: F) -> Result<HookAdded, Error>
    where
        F: FnOnce(&Job) + Send + 'static,
    {
        let mut st = self.0.lock();
        st.check(Verb::Update)?;
        if st.cancel_requested {
            // Listed while it runs, as the cancel's own calls are: the job
            // does not end under it.
            st.busy_hooks.push((0, current_thread_id()));
            drop(st);
            self.call_hook(0, Box::new(hook));
            return Ok(HookAdded::RanAtOnce);
        }
        st.next_hook += 1;
        let id = st.next_hook;
        st.hooks.push_back((id, Box::new(hook)));
        Ok(HookAdded::Registered(id))
    }

    /// Removes a hook. When this returns, the hook is not running and will not
    /// run: a hook being called on another thread is waited for. Called from
    /// inside the hook itself (or from anything it calls on its thread), it
    /// returns at once instead of waiting for itself.
    pub fn remove_cancel_hook(&self, id: HookId) -> HookRemoved {
        let inner = &self.0;
        let mut st = inner.lock();
        if let Some(pos) = st.hooks.iter().position(|(i, _)| *i == id) {
            let removed = st.hooks.remove(pos);
            drop(st);
            drop(removed);
            return HookRemoved::Removed;
        }
        let me = current_thread_id();
        while st
            .busy_hooks
            .iter()
            .any(|&(running, thread)| running == id && thread != me)
        {
            st = inner.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        HookRemoved::NotFound
    }

    /// A cancellable sleep for the worker: returns `Ok` once `duration` of active
    /// time has passed, `Cancelled` as soon as cancel is requested. While the job
    /// is paused the worker parks here and the paused time does not count;
    /// spurious wake-ups never shorten it. Refused unless the job is running.
    pub fn sleep(&self, duration: Duration) -> Result<(), Error> {
        let inner = &self.0;
        let mut st = inner.lock();
        st.check_running()?;
        let wanted = i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX);
        let target = st.active_ns(inner.now_ns()).saturating_add(wanted);
        loop {
            if st.cancel_requested {
                return Err(Error::Cancelled);
            }
            if st.halted() {
                st = inner.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let active = st.active_ns(inner.now_ns());
            if active >= target {
                return Ok(());
            }
            let left = Duration::from_nanos((target - active) as u64);
            st = inner
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The job's wake fd, made on first use: readable once cancel was requested
    /// (it stays so) and while a user pause is pending (until resume). A worker
    /// with its own poll loop adds it to its set and, when it turns readable,
    /// calls [`Job::pause_point`], which parks while paused and reports the
    /// cancel. It lives as long as the job.
    pub fn wake_fd(&self) -> Result<i32, Error> {
        Ok(self.wake()?.raw())
    }

    fn wake(&self) -> Result<Arc<EventFd>, Error> {
        let mut st = self.0.lock();
        if let Some(w) = &st.wake {
            return Ok(w.clone());
        }
        let w = Arc::new(EventFd::new()?);
        st.wake = Some(w.clone());
        st.sync_wake();
        Ok(w)
    }

    /// Gives the job a deadline (`None` removes it): once it has been running
    /// for `after` of active time — from start, paused time not counted — it is
    /// cancelled with cause [`CancelCause::Timeout`]. A deadline already passed
    /// cancels it at once. Allowed until the job ends. Fails with
    /// [`Error::TryAgain`], changing nothing, if the timer thread could not be
    /// started: a deadline is never accepted and then ignored.
    ///
    /// The cancel a deadline makes runs the job's cancellation hooks on a
    /// thread of the job's pool (named after the job), never on the timer
    /// thread, so a slow hook delays no other job's deadline.
    pub fn set_deadline(&self, after: Option<Duration>) -> Result<(), Error> {
        let mut st = self.0.lock();
        st.check(Verb::Update)?;
        if after.is_some()
            && let Err(e) = timer::ensure_running()
        {
            drop(st);
            self.log_no_timer(&e);
            return Err(Error::TryAgain);
        }
        st.deadline_ns = after.map(duration_ns);
        self.arm_deadline(&mut st);
        Ok(())
    }

    /// Says (with no lock held) that a deadline was refused for want of a
    /// timer thread.
    fn log_no_timer(&self, e: &std::io::Error) {
        log::debug(format_args!(
            "job {} '{}': the timer thread could not start: {e}",
            self.0.id, self.0.name
        ));
    }

    /// (Re)arms the deadline timer for a running, unpaused, uncancelled job.
    ///
    /// The timer thread runs no user code: when the time comes it only starts
    /// a thread of the job's pool (named after the job) that makes the cancel
    /// and runs its hooks, so a slow or blocking hook delays no other job's
    /// deadline nor any child's SIGKILL. If no thread can be started then
    /// (EAGAIN), the timer tries again every [`DEADLINE_RETRY`] until one can.
    /// The timer task holds the job weakly: the timer thread never holds the
    /// last reference to a job.
    fn arm_deadline(&self, st: &mut St) {
        st.disarm_deadline();
        let Some(deadline) = st.deadline_ns else {
            return;
        };
        if st.life != Life::Running || st.halted() || st.cancel_requested {
            return;
        }
        let left = st.left_ns(Some(deadline), self.0.now_ns()).unwrap_or(0);
        let at = Instant::now()
            .checked_add(Duration::from_nanos(left as u64))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365 * 100));
        let fire = DeadlineFire {
            job: Arc::downgrade(&self.0),
            arming: st.deadline_gen,
            pool: self.0.pool,
            name: self.0.name.clone(),
            stack_size: self.0.stack_size,
        };
        // Cannot fail: a deadline is only set (set_deadline) or started with
        // (start) once the timer thread runs in this process, and it runs for
        // the life of the process. (Only a job carried into a forked child, whose
        // worker does not run there, could see it fail.)
        st.deadline_timer = timer::schedule(at, move || fire.fire()).ok();
    }

    /// The deadline timer fired (on a pool thread, with no lock held).
    fn deadline_due(&self, arming: u64) {
        let mut st = self.0.lock();
        if st.deadline_gen != arming {
            return;
        }
        st.deadline_timer = None;
        let Some(deadline) = st.deadline_ns else {
            return;
        };
        if st.life != Life::Running || st.halted() || st.cancel_requested {
            return;
        }
        if st.active_ns(self.0.now_ns()) < deadline {
            // Early by the timer's slack: try again for the rest.
            self.arm_deadline(&mut st);
            return;
        }
        drop(st);
        log::debug(format_args!("job {} deadline passed", self.0.id));
        self.cancel_with(CancelCause::Timeout);
    }

    /// The worker side of a cancellable wait: parks while user-paused, fails
    /// with `Cancelled` once cancel is requested, and gives the active time
    /// left before `target` (`None`: no limit).
    fn wait_round(&self, target: Option<i64>) -> Result<Option<i64>, Error> {
        let inner = &self.0;
        let mut st = inner.lock();
        loop {
            st.check_running()?;
            if st.cancel_requested {
                return Err(Error::Cancelled);
            }
            if !st.halted() {
                break;
            }
            st = inner.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        Ok(st.left_ns(target, inner.now_ns()))
    }

    fn active_target(&self, timeout: Option<Duration>) -> Option<i64> {
        let st = self.0.lock();
        timeout.map(|t| st.active_ns(self.0.now_ns()).saturating_add(duration_ns(t)))
    }

    /// A cancellable wait for `fd`: returns the `poll(2)` events that happened
    /// (of `events`, plus error and hang-up) once it is ready; `TimedOut` after
    /// `timeout` of active time (`None` = no limit); `Cancelled` as soon as
    /// cancel is requested. While the job is paused the worker parks here and
    /// the time does not count. Refused unless the job is running; an fd that
    /// is not open is `InvalidArgument`.
    pub fn wait_fd(
        &self,
        fd: i32,
        want: FdEvents,
        timeout: Option<Duration>,
    ) -> Result<FdEvents, Error> {
        if fd < 0 {
            return Err(Error::InvalidArgument("fd must not be negative"));
        }
        if !want.readable && !want.writable {
            return Err(Error::InvalidArgument(
                "wait for readable, writable or both",
            ));
        }
        let events = if want.readable { sys::POLLIN } else { 0 }
            | if want.writable { sys::POLLOUT } else { 0 };
        let wake = self.wake()?;
        let target = self.active_target(timeout);
        loop {
            let left = self.wait_round(target)?;
            let mut set = [
                sys::PollFd::new(fd, events),
                sys::PollFd::new(wake.raw(), sys::POLLIN),
            ];
            sys::poll(&mut set, poll_ms(left))?;
            let got = set[0].revents;
            if got & sys::POLLNVAL != 0 {
                return Err(Error::InvalidArgument("fd is not open"));
            }
            if got != 0 {
                return Ok(FdEvents {
                    readable: got & sys::POLLIN != 0,
                    writable: got & sys::POLLOUT != 0,
                    error: got & sys::POLLERR != 0,
                    hangup: got & sys::POLLHUP != 0,
                });
            }
            if left == Some(0) && set[1].revents == 0 {
                return Err(Error::TimedOut);
            }
        }
    }

    /// Starts a child process bound to the job (see [`child`]): cancel sends
    /// it and its process group SIGTERM, then SIGKILL after the grace period;
    /// [`Job::wait_child`] reaps it; one still running when the worker returns
    /// is killed and reaped. Refused unless the job is running. Returns its
    /// pid.
    ///
    /// Once cancel has been requested only a child that survives cancel
    /// ([`child::Spawn::survives_cancel`]) is started; any other is refused
    /// with [`Error::Cancelled`] before anything runs — starting a program
    /// only to kill it at once could leave half its work done. (A cancel that
    /// comes while the call runs meets the child as it meets any running one.)
    pub fn spawn_child(&self, spec: child::Spawn) -> Result<i32, Error> {
        self.check_running()?;
        if !spec.survives_cancel && self.is_cancel_requested() {
            return Err(Error::Cancelled);
        }
        self.bind_child(Child::spawn(spec)?)
    }

    /// Binds a child the worker started itself (it must be this process's
    /// child and not yet reaped), as [`Job::spawn_child`] does. bgjob reaps it:
    /// nobody else may wait for it.
    pub fn watch_child(&self, pid: i32, grace: Duration) -> Result<(), Error> {
        self.check_running()?;
        if self
            .0
            .lock()
            .children
            .as_ref()
            .is_some_and(|c| c.contains_key(&pid))
        {
            return Err(Error::InvalidArgument("pid is already watched"));
        }
        self.bind_child(Child::watch(pid, grace)?).map(drop)
    }

    fn check_running(&self) -> Result<(), Error> {
        self.0.lock().check_running()
    }

    fn bind_child(&self, child: Arc<Child>) -> Result<i32, Error> {
        let pid = child.pid;
        {
            let mut st = self.0.lock();
            let state = st.state();
            let running = st.life == Life::Running;
            match st.children.as_mut() {
                Some(children) if running => {
                    children.insert(pid, child.clone());
                }
                _ => {
                    drop(st);
                    child.reap_now();
                    return Err(Error::NotAllowed {
                        verb: Verb::Update,
                        state,
                    });
                }
            }
        }
        let c = child.clone();
        // A cancel that came first runs the hook here: the child is signalled
        // at once. The job cannot end meanwhile without reaping the child
        // (the worker's return does that), so an error here is only that.
        // A child that survives cancel gets no hook at all.
        if !child.survives_cancel
            && let Ok(HookAdded::Registered(id)) = self.add_cancel_hook(move |_| c.terminate())
        {
            child.set_hook(id);
        }
        log::debug(format_args!("job {} bound child {pid}", self.0.id));
        Ok(pid)
    }

    /// Waits for a child bound to the job, reading its captured output (the
    /// line callback runs here, on this thread). Returns once it has ended and
    /// been reaped; `cancelled` says cancel was requested meanwhile — bgjob then
    /// signalled it, so the wait lasts at most its grace period. A child that
    /// survives cancel is waited for to its end and `cancelled` stays false. `TimedOut`
    /// after `timeout` of active time (the child keeps running and stays
    /// bound). While the job is paused the worker parks here (the child keeps
    /// running). `NotFound` for a pid the job does not hold (never bound, or
    /// already waited for).
    pub fn wait_child(&self, pid: i32, timeout: Option<Duration>) -> Result<ChildExit, Error> {
        let child = {
            let st = self.0.lock();
            st.check_running()?;
            st.children
                .as_ref()
                .and_then(|c| c.get(&pid))
                .cloned()
                .ok_or(Error::NotFound)?
        };
        let wake = self.wake()?;
        let target = self.active_target(timeout);
        let mut io = child.begin_wait()?;
        let waited = self.wait_child_loop(&child, &mut io, &wake, target);
        child.end_wait(io);
        let status = waited?;
        // Reaped: the job lets go of it.
        if let Some(children) = self.0.lock().children.as_mut() {
            children.remove(&pid);
        }
        if let Some(hook) = child.done() {
            self.remove_cancel_hook(hook);
        }
        Ok(ChildExit {
            status,
            cancelled: child.was_terminated()
                || !child.survives_cancel && self.is_cancel_requested(),
        })
    }

    fn wait_child_loop(
        &self,
        child: &Child,
        io: &mut child::Io,
        wake: &EventFd,
        target: Option<i64>,
    ) -> Result<i32, Error> {
        loop {
            if let Some(status) = child.step(self, io)? {
                return Ok(status);
            }
            // A cancel does not end this wait: the hook has signalled the
            // child, which ends within its grace period. The wake fd then stays
            // readable, so it leaves the poll set.
            let (left, watch_wake) = match self.wait_round(target) {
                Ok(left) => (left, true),
                Err(Error::Cancelled) => {
                    let left = self.0.lock().left_ns(target, self.0.now_ns());
                    (left, false)
                }
                Err(e) => return Err(e),
            };
            if left == Some(0) {
                return Err(Error::TimedOut);
            }
            let mut set = child.poll_set(io);
            if watch_wake {
                set.push(sys::PollFd::new(wake.raw(), sys::POLLIN));
            }
            sys::poll(&mut set, poll_ms(left))?;
        }
    }

    /// For a transaction cancelling a member whose work is done: records the
    /// cancel. False if it had been requested already.
    pub(super) fn mark_cancelled_waiting(&self, cause: CancelCause) -> bool {
        let mut st = self.0.lock();
        if st.cancel_requested {
            return false;
        }
        st.cancel_requested = true;
        st.cancel_cause = cause;
        self.0.set_attention(ATTN_CANCEL);
        true
    }

    /// For [`Txn::add`]: makes a created job a member of `txn`.
    pub(super) fn join_txn(&self, txn: &Txn) -> Result<(), Error> {
        let mut st = self.0.lock();
        if st.life != Life::Created || st.cancel_requested {
            return Err(Error::NotAllowed {
                verb: Verb::Start,
                state: st.state(),
            });
        }
        if st.txn.is_some() {
            return Err(Error::InvalidArgument(
                "the job is in a transaction already",
            ));
        }
        st.txn = Some(txn.clone());
        Ok(())
    }

    /// Manual finalize: once the job's work is done (and, in a transaction,
    /// every member's), commit (or abort) and clean run on this thread and the
    /// job ends. Called on a member whose transaction is still running, it
    /// asks for the transaction to be finalized as soon as it can be. Allowed
    /// only in `Waiting`.
    pub fn finalize(&self) -> Result<(), Error> {
        let mut st = self.0.lock();
        st.check(Verb::Finalize)?;
        if let Some(txn) = st.txn.clone() {
            drop(st);
            return txn.finalize();
        }
        let state = st.state();
        if std::mem::replace(&mut st.finalizing, true) {
            return Err(Error::NotAllowed {
                verb: Verb::Finalize,
                state,
            });
        }
        let abort = match st.pending {
            Some((State::Completed, _)) => None,
            _ => Some(st.cancel_cause),
        };
        drop(st);
        finalize_group(vec![self.clone()], abort, None);
        Ok(())
    }

    /// An internal pause (QEMU's `job_pause`, used for drain): a counter beside
    /// the user pause; the worker parks at its next pause point while either
    /// is in force, and the paused time does not count. Balanced by
    /// [`Job::resume_internal`]. Allowed until the job ends.
    pub fn pause_internal(&self) -> Result<(), Error> {
        let inner = &self.0;
        let now = inner.now_ns();
        let mut st = inner.lock();
        st.check(Verb::Drain)?;
        st.pause_count = st
            .pause_count
            .checked_add(1)
            .ok_or(Error::InvalidArgument("too many internal pauses"))?;
        inner.repause(&mut st, now);
        st.disarm_deadline();
        Ok(())
    }

    /// Undoes one [`Job::pause_internal`]. An unbalanced resume is refused
    /// (`NotAllowed`) and changes nothing.
    pub fn resume_internal(&self) -> Result<(), Error> {
        let inner = &self.0;
        let now = inner.now_ns();
        let mut st = inner.lock();
        st.check(Verb::Drain)?;
        if st.pause_count == 0 {
            return Err(Error::NotAllowed {
                verb: Verb::Drain,
                state: st.state(),
            });
        }
        st.pause_count -= 1;
        inner.repause(&mut st, now);
        self.arm_deadline(&mut st);
        drop(st);
        inner.cv.notify_all();
        Ok(())
    }

    /// Changes the error policy (allowed until the work is done).
    pub fn set_error_policy(&self, policy: ErrorPolicy) -> Result<(), Error> {
        let mut st = self.0.lock();
        st.check(Verb::Update)?;
        st.error_policy = policy;
        Ok(())
    }

    /// The worker hit an I/O error (`code` errno-style, non-zero): the job's
    /// error policy decides what it does next.
    /// - [`ErrorAction::Report`]: the error is recorded as the job's; return it.
    /// - [`ErrorAction::Ignore`]: carry on.
    /// - [`ErrorAction::Stop`]: the job is now user-paused with error status
    ///   `Failed` (`NoSpace` for ENOSPC); call a pause point (it parks until
    ///   resume, which resets the status, or reports a cancel), then retry.
    ///
    /// A job being cancelled is never stopped, nor is a detached one (nobody
    /// could resume it): either is told to report.
    pub fn report_io_error(&self, code: i32, message: &str) -> Result<ErrorAction, Error> {
        if code == 0 {
            return Err(Error::InvalidArgument("an error code must be non-zero"));
        }
        let inner = &self.0;
        let now = inner.now_ns();
        let mut st = inner.lock();
        st.check_running()?;
        let stop = match st.error_policy {
            ErrorPolicy::Report => false,
            ErrorPolicy::Ignore => return Ok(ErrorAction::Ignore),
            ErrorPolicy::Stop => true,
            ErrorPolicy::Enospc => code == ENOSPC,
        };
        if stop && !st.cancel_requested && !st.detached {
            st.user_paused = true;
            st.iostatus = if code == ENOSPC {
                IoStatus::NoSpace
            } else {
                IoStatus::Failed
            };
            inner.repause(&mut st, now);
            st.disarm_deadline();
            drop(st);
            log::debug(format_args!(
                "job {} stopped by I/O error {code}: {message}",
                inner.id
            ));
            return Ok(ErrorAction::Stop);
        }
        st.error = Some(JobError::new(code, message));
        Ok(ErrorAction::Report)
    }

    /// User pause: the worker parks at its next pause point, cancellable wait or
    /// progress update. Refused unless `Running` (pausing twice is refused).
    pub fn pause(&self) -> Result<(), Error> {
        let inner = &self.0;
        let now = inner.now_ns();
        let mut st = inner.lock();
        st.check(Verb::Pause)?;
        if st.cancel_requested || st.detached {
            // A cancelled job is winding down (QEMU's ABORTING): its pause points
            // no longer park, so a pause would only stop the clock. A detached
            // one could never be resumed: it would stay paused forever.
            return Err(Error::NotAllowed {
                verb: Verb::Pause,
                state: st.state(),
            });
        }
        st.user_paused = true;
        inner.repause(&mut st, now);
        st.disarm_deadline();
        drop(st);
        log::debug(format_args!("job {} paused", inner.id));
        Ok(())
    }

    /// Undoes a user pause. Refused unless `Paused`.
    pub fn resume(&self) -> Result<(), Error> {
        let inner = &self.0;
        let now = inner.now_ns();
        let mut st = inner.lock();
        st.check(Verb::Resume)?;
        inner.end_user_pause(&mut st, now);
        st.sync_wake();
        self.arm_deadline(&mut st);
        drop(st);
        inner.cv.notify_all();
        log::debug(format_args!("job {} resumed", inner.id));
        Ok(())
    }

    /// Waits until the job is terminal, or `timeout` passes (`None` = forever).
    /// A timeout too large to represent waits forever. Returns the final state.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<State, Error> {
        let inner = &self.0;
        if self.on_own_worker() {
            return Err(Error::OwnWorker);
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = inner.lock();
        // The job does not end while one of its hooks runs: from inside one
        // this would wait for itself.
        if st.in_own_hook() {
            return Err(Error::OwnWorker);
        }
        loop {
            if let Life::Done(s) = st.life {
                return Ok(s);
            }
            st = match deadline {
                None => inner.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(Error::TimedOut);
                    }
                    inner
                        .cv
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Releases the job (the C API's destroy): allowed when it has ended or never
    /// started. A created job is cancelled, so its worker never runs. Its result
    /// is dropped now. Refused while the worker may still run.
    pub fn release(&self) -> Result<(), Error> {
        self.begin_release().map(drop)
    }

    /// The deciding half of [`Job::release`], under one hold of the job's lock so
    /// no start can slip in between the check and the cancel of a created job.
    /// The returned [`Release`] does the rest (dropping the worker, settling,
    /// dropping the result) when dropped: the caller may hold its own locks now
    /// and drop it after letting go of them.
    pub fn begin_release(&self) -> Result<Release, Error> {
        let mut st = self.0.lock();
        st.check(Verb::Destroy)?;
        let mut release = Release {
            job: self.clone(),
            worker: None,
            wait: false,
        };
        if st.life == Life::Created {
            match self.take_unstarted(&mut st) {
                Some(worker) => release.worker = Some(worker),
                // Another thread is cancelling it right now (it only drops the
                // closure), so the wait in Release::drop is short. From inside
                // one of the hooks that cancel is calling, the job ends when
                // the hook returns: waiting here would never end.
                None => release.wait = !st.in_own_hook(),
            }
        }
        Ok(release)
    }

    /// Marks a created job cancelled and takes its worker, so no start can run
    /// it; [`Job::end_unstarted`] finishes the job with no lock held.
    fn take_unstarted(&self, st: &mut St) -> Option<WorkerFn> {
        st.cancel_requested = true;
        if st.cancel_cause == CancelCause::None {
            st.cancel_cause = CancelCause::Caller;
        }
        st.sync_wake();
        self.0.set_attention(ATTN_CANCEL);
        st.worker.take()
    }

    fn end_unstarted(&self, worker: WorkerFn) {
        drop(worker);
        log::debug(format_args!("job {} cancelled before start", self.0.id));
        self.worker_done(State::Cancelled, None, false);
    }

    /// Whether `verb` is allowed in the job's current state (the verb table).
    pub fn check(&self, verb: Verb) -> Result<(), Error> {
        self.0.lock().check(verb)
    }

    /// Checks that the job may be detached, then cancels it if asked, or else
    /// lets it run. Detaching an ended job releases it. The job's memory is
    /// freed when its worker ends and the last reference is gone.
    ///
    /// Nobody holds a handle that could resume, finalize or balance it later,
    /// so a detached job always ends by itself: a user pause (an error stop
    /// included) is undone, internal pauses are dropped, and its manual
    /// finalize — its transaction's too, if it is a member — becomes automatic:
    /// it finalizes as soon as its work (every member's) is done, committing
    /// or aborting as the outcome says.
    pub fn detach(&self, cancel: bool) -> Result<(), Error> {
        let inner = &self.0;
        let now = inner.now_ns();
        let (ended, txn) = {
            let mut st = inner.lock();
            st.check(Verb::Detach)?;
            st.detached = true;
            st.manual_finalize = false;
            // With cancel, the cancel undoes the pauses (and the worker sees
            // the cancel, not a resume, at its pause point).
            if !cancel && !st.state().is_terminal() {
                inner.end_user_pause(&mut st, now);
                st.pause_count = 0;
                inner.repause(&mut st, now);
                st.sync_wake();
                self.arm_deadline(&mut st);
            }
            (st.state().is_terminal(), st.txn.clone())
        };
        inner.cv.notify_all();
        if ended {
            return self.release();
        }
        if let Some(txn) = txn {
            txn.finalize_on_its_own();
        }
        if cancel {
            self.cancel();
        }
        // A job whose work is done (or that the cancel just ended with its
        // work done) waits for a finalize nobody will call: it finalizes now.
        // Refused harmlessly when the cancel finalized it, or when it is
        // already being finalized.
        if inner.lock().life == Life::Waiting {
            let _ = self.finalize();
        }
        log::debug(format_args!("job {} detached", self.0.id));
        Ok(())
    }

    /// One consistent snapshot; never waits on the worker.
    pub fn info(&self) -> Info {
        let inner = &self.0;
        // One clock reading serves the active time and the time since progress
        // (an update landing after it counts as "just now", never negative).
        let now = inner.now_ns();
        let (state, cancel_requested, pause_requested, active, error_code, cancel_cause);
        let (pause_count, iostatus, error_policy);
        {
            let st = inner.lock();
            (state, cancel_requested, pause_requested, active) = (
                st.state(),
                st.cancel_requested,
                st.user_paused(),
                st.active_ns(now),
            );
            error_code = st.error.as_ref().map_or(0, |e| e.code);
            cancel_cause = st.cancel_cause;
            (pause_count, iostatus, error_policy) = (st.pause_count, st.iostatus, st.error_policy);
        }
        let f = inner.progress.snapshot();
        let bounded = inner.job_type == JobType::Bounded;
        let percent = match (bounded, state) {
            (false, _) => -1,
            (true, State::Completed) => 100,
            (true, _) => progress::percent(&f),
        };
        let active_ms = ms(active);
        let rate = if active > 0 && f.current > 0 {
            f.current as f64 * 1e9 / active as f64
        } else {
            -1.0
        };
        let remaining_ms = if state.is_terminal() {
            0
        } else {
            remaining(&f, bounded, active, rate)
        };
        Info {
            id: inner.id,
            job_type: inner.job_type,
            state,
            cancel_requested,
            pause_requested,
            elapsed_ms: active_ms,
            remaining_ms,
            percent,
            current: f.current,
            total: f.total,
            rate,
            since_progress_ms: inner.progress.since_last_ns(&f, now).map_or(-1, ms),
            error_code,
            cancel_cause,
            pause_count,
            iostatus,
            error_policy,
        }
    }

    /// The job's error, if it has one: set by the worker, or given at its end.
    pub fn error(&self) -> Option<JobError> {
        self.0.lock().error.clone()
    }

    /// The phase name the worker set last ("" before any).
    pub fn phase(&self) -> Arc<str> {
        self.0
            .phase
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn check_update(&self) -> Result<(), Error> {
        self.0.lock().check(Verb::Update)
    }

    fn update(&self, f: impl FnOnce(&mut Fields) -> Result<(), Error>) -> Result<(), Error> {
        // The state check is one uncontended read of the attention bits in the
        // common case; the lock is only taken when something happened to the job
        // (cancel, pause, or its end).
        if self.0.attention.load(Ordering::Acquire) != 0 {
            self.check_update()?;
        }
        self.0.progress.update(|| self.0.now_ns(), f)
    }

    /// Sets the number of units in all (may move either way; 0 = unknown).
    pub fn set_total(&self, total: u64) -> Result<(), Error> {
        self.update(|f| {
            f.total = total;
            Ok(())
        })
    }

    /// Sets the units done. Refused (nothing changed) if it would go backwards.
    pub fn set_current(&self, current: u64) -> Result<(), Error> {
        self.update(|f| {
            if current < f.current {
                return Err(Error::InvalidArgument("current progress may only grow"));
            }
            f.current = current;
            Ok(())
        })
    }

    /// Adds to the units done (saturating).
    pub fn add_units(&self, n: u64) -> Result<(), Error> {
        self.update(|f| {
            f.current = f.current.saturating_add(n);
            Ok(())
        })
    }

    /// Sets a percentage directly, for workers that count in percent.
    /// Refused outside 0–100; −1 goes back to units-based percent.
    pub fn set_percent(&self, percent: i32) -> Result<(), Error> {
        if !(-1..=100).contains(&percent) {
            return Err(Error::InvalidArgument("percent must be -1 or 0..=100"));
        }
        self.update(|f| {
            f.percent = percent;
            Ok(())
        })
    }

    /// Sets the remaining time as the worker estimates it, in ms; it counts down
    /// with active time. −1 goes back to the library's estimate.
    pub fn set_eta(&self, remaining_ms: i64) -> Result<(), Error> {
        if remaining_ms < -1 {
            return Err(Error::InvalidArgument("eta must be -1 or >= 0"));
        }
        let active = {
            let st = self.0.lock();
            st.active_ns(self.0.now_ns())
        };
        self.update(|f| {
            f.eta_ms = remaining_ms;
            f.eta_set_active_ns = active;
            Ok(())
        })
    }

    /// Sets the phase name ("copying", "cleaning up").
    pub fn set_phase(&self, phase: &str) -> Result<(), Error> {
        self.check_update()?;
        *self.0.phase.lock().unwrap_or_else(|e| e.into_inner()) = Arc::from(phase);
        log::debug(format_args!("job {} phase '{phase}'", self.0.id));
        Ok(())
    }

    /// Records the job's error code and message. The job fails only when the
    /// worker returns an error (or records a non-zero [`Job::finish`] status).
    pub fn set_error(&self, code: i32, message: &str) -> Result<(), Error> {
        if code == 0 {
            return Err(Error::InvalidArgument("an error code must be non-zero"));
        }
        let mut st = self.0.lock();
        st.check(Verb::Update)?;
        st.error = Some(JobError::new(code, message));
        Ok(())
    }

    /// Records the outcome the worker will report when it returns (the virJob
    /// "finish" style): 0 = success, anything else = failure with that code. The
    /// last call wins, and it overrides the worker's return value.
    pub fn finish(&self, status: i32) -> Result<(), Error> {
        let mut st = self.0.lock();
        st.check_running()?;
        st.finish_status = Some(status);
        Ok(())
    }

    /// Whether cancel was requested. One atomic load.
    pub fn is_cancel_requested(&self) -> bool {
        self.0.attention.load(Ordering::Acquire) & ATTN_CANCEL != 0
    }

    /// Whether the calling thread is this job's worker.
    pub fn on_own_worker(&self) -> bool {
        CURRENT_WORKER.with(|c| {
            c.try_borrow()
                .is_ok_and(|cur| matches!(&*cur, Some((j, _)) if j == self))
        })
    }

    /// The rule for every layer, after a progress update: on the job's own
    /// worker thread an update is a pause point too (docs/design.md, "Pause"),
    /// so a paused worker parks here; on any other thread it never blocks. A
    /// cancel does not fail the update; the worker sees it at its next check.
    /// One atomic load when nothing is pending.
    pub fn after_update(&self) {
        if self.0.attention.load(Ordering::Acquire) != 0 && self.on_own_worker() {
            let _ = self.pause_point();
        }
    }

    /// Worker side: parks while the job is user-paused; returns `Cancelled` if
    /// cancel was requested. One atomic load when nothing is pending.
    pub fn pause_point(&self) -> Result<(), Error> {
        let inner = &self.0;
        if inner.attention.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let mut st = inner.lock();
        while st.halted() && !st.cancel_requested {
            st = inner.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.cancel_requested {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Finalizes a group whose work is done (a transaction, or one job): commit
/// (all succeeded) or abort for each member, then clean for each — all on
/// this thread, in the order the members were added — then every member ends.
/// In an aborted group (`abort` names the cause the group was aborted with) a
/// member that failed ends `Failed`, every other one `Cancelled`; one whose own
/// work succeeded takes the group's cause unless it was cancelled itself.
///
/// Completions without a context run only once every member is terminal (a
/// completion that waits for a sibling returns at once): the one of
/// `worker_of` — the job whose worker thread this is, its return having ended
/// the group — runs here, last; every other one on a bgjob thread of its own,
/// never on a sibling's worker thread nor inside a verb. The caller has
/// claimed the group (exactly once).
pub(super) fn finalize_group(
    members: Vec<Job>,
    abort: Option<CancelCause>,
    worker_of: Option<&Job>,
) {
    let call = |job: &Job, f: Option<HookFn>| {
        if let Some(f) = f {
            // A panicking Rust callback must not stop the others.
            let _ = catch_unwind(AssertUnwindSafe(|| f(job)));
        }
    };
    for m in &members {
        let (run, unused) = {
            let mut st = m.0.lock();
            let (commit, abort_fn) = (st.commit.take(), st.abort.take());
            if abort.is_some() {
                (abort_fn, commit)
            } else {
                (commit, abort_fn)
            }
        };
        drop(unused);
        call(m, run);
    }
    for m in &members {
        let clean = m.0.lock().clean.take();
        call(m, clean);
    }
    let mut own = None;
    let mut others = Vec::new();
    for m in members {
        let (state, error) = {
            let mut st = m.0.lock();
            // The group is settled: the member lets go of the transaction
            // (which held it), breaking the reference cycle. It is claimed in
            // the same step, so a finalize or cancel that finds it WAITING
            // without a transaction until `settle` below is refused, instead
            // of finalizing it again on its own (a second end, and a
            // completion before its siblings end).
            st.txn = None;
            st.finalizing = true;
            let (outcome, error) = st.pending.take().unwrap_or((State::Cancelled, None));
            match (abort, outcome) {
                (None, _) => (State::Completed, None),
                (Some(_), State::Failed) => (State::Failed, error),
                (Some(_), State::Cancelled) => (State::Cancelled, error),
                (Some(cause), _) => {
                    st.cancel_requested = true;
                    if st.cancel_cause == CancelCause::None {
                        st.cancel_cause = match cause {
                            CancelCause::None => CancelCause::Transaction,
                            c => c,
                        };
                    }
                    m.0.set_attention(ATTN_CANCEL);
                    let message = match st.cancel_cause {
                        CancelCause::Transaction => {
                            "cancelled: another member of its transaction failed or was cancelled"
                        }
                        _ => "cancelled before it was finalized",
                    };
                    (State::Cancelled, Some(JobError::new(ECANCELED, message)))
                }
            }
        };
        if let Some(run) = m.settle(Life::Done(state), error) {
            if worker_of == Some(&m) {
                own = Some(run);
            } else {
                others.push((m, run));
            }
        }
    }
    for (m, run) in others {
        m.spawn_completion(run);
    }
    if let Some(run) = own {
        run();
    }
}

/// A poll timeout in ms for `left` ns (rounded up, so a wait never ends early;
/// `None` = no limit).
fn poll_ms(left: Option<i64>) -> i32 {
    match left {
        None => -1,
        Some(ns) => i32::try_from((ns + 999_999) / 1_000_000).unwrap_or(i32::MAX),
    }
}

fn remaining(f: &Fields, bounded: bool, active_ns: i64, rate: f64) -> i64 {
    if f.eta_ms >= 0 {
        let spent = ms(active_ns - f.eta_set_active_ns).max(0);
        return (f.eta_ms - spent).max(0);
    }
    if !bounded {
        return -1;
    }
    if f.percent < 0 && f.total > 0 && rate > 0.0 {
        let left = f.total.saturating_sub(f.current) as f64;
        return (left / rate * 1000.0).min(i64::MAX as f64) as i64;
    }
    let p = progress::percent(f);
    if (1..100).contains(&p) && f.percent >= 0 {
        return ms(active_ns) * i64::from(100 - p) / i64::from(p);
    }
    if p == 100 { 0 } else { -1 }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// What a worker gets: its job, plus the calls that park at pause points.
pub struct Worker<'a> {
    job: &'a Job,
}

impl Worker<'_> {
    /// The job this worker runs.
    pub fn job(&self) -> &Job {
        self.job
    }

    /// Whether cancel was requested. One atomic load.
    pub fn is_cancelled(&self) -> bool {
        self.job.is_cancel_requested()
    }

    /// Parks while user-paused; `Err(Cancelled)` once cancel was requested.
    pub fn pause_point(&self) -> Result<(), Error> {
        self.job.pause_point()
    }

    fn after_update(&self, r: Result<(), Error>) -> Result<(), Error> {
        r?;
        self.job.after_update();
        Ok(())
    }

    /// See [`Job::set_total`]; parks if paused.
    pub fn set_total(&self, total: u64) -> Result<(), Error> {
        self.after_update(self.job.set_total(total))
    }

    /// See [`Job::set_current`]; parks if paused.
    pub fn set_current(&self, current: u64) -> Result<(), Error> {
        self.after_update(self.job.set_current(current))
    }

    /// See [`Job::add_units`]; parks if paused.
    pub fn add_units(&self, n: u64) -> Result<(), Error> {
        self.after_update(self.job.add_units(n))
    }

    /// See [`Job::set_percent`]; parks if paused.
    pub fn set_percent(&self, percent: i32) -> Result<(), Error> {
        self.after_update(self.job.set_percent(percent))
    }

    /// See [`Job::set_eta`].
    pub fn set_eta(&self, remaining_ms: i64) -> Result<(), Error> {
        self.job.set_eta(remaining_ms)
    }

    /// See [`Job::set_phase`].
    pub fn set_phase(&self, phase: &str) -> Result<(), Error> {
        self.job.set_phase(phase)
    }
}

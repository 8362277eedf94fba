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

mod builder;
mod cancel;
mod lifecycle;
mod pause;
mod types;
mod update;
mod waits;

pub use builder::Builder;
pub(super) use lifecycle::finalize_group;
pub use types::*;
pub use update::Worker;

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
    /// The outcome the worker declared once, before returning
    /// ([`Job::declare`]): it is the job's end, whatever comes after.
    declared: Option<State>,
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
}

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
use super::errno::{EIO, ENOSPC};
use super::log;
use super::outcome::{self, Declared, Returned};
use super::progress::{self, Fields, Progress};
use super::state::{State, Verb, verb_allowed};
use super::stats::Stats;
use super::sync::{Mutex, MutexGuard, Signal, ThreadId, current_thread_id};
use super::threads::{Pool, Submitted, Ticket};
use super::timer::{self, TimerId};
use crate::sys::{self, EventFd};
use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

mod builder;
mod cancel;
mod events;
mod external;
mod family;
mod finalize;
mod info;
mod lifecycle;
mod owner;
mod pause;
mod ready;
mod st;
mod stat;
mod txn;
mod types;
mod update;
mod waits;

pub use builder::Builder;
pub use events::{Event, EventFn, EventKind, QUEUE_BOUND};
use events::{Events, JobSignal, StGuard};
pub use external::{Control, ControlFn};
pub use family::lookup;
pub(super) use finalize::finalize_group;
pub use owner::report_allowed;
use st::{Life, St, WorkerSlot};
pub use txn::Txn;
pub use types::*;
pub use update::Worker;

/// The job whose worker runs on this thread: the one record, for every
/// layer, of "this thread is that job's worker" (the C layer keeps its own
/// record of the handle, for its lookups). `inner` (identity only, never
/// dereferenced) is a plain cell, so the check is a load and a compare.
struct WorkerThread {
    inner: std::cell::Cell<*const Inner>,
}

#[cfg(not(loom))]
thread_local! {
    static CURRENT_WORKER: WorkerThread = const {
        WorkerThread {
            inner: std::cell::Cell::new(std::ptr::null()),
        }
    };
}
#[cfg(loom)]
loom::thread_local! {
    static CURRENT_WORKER: WorkerThread = WorkerThread {
        inner: std::cell::Cell::new(std::ptr::null()),
    };
}

/// Marks the calling thread as `job`'s worker until dropped; the job's
/// progress record knows its worker runs (solo updates, see `progress`).
pub(crate) struct WorkerScope(Job);

impl WorkerScope {
    pub(crate) fn enter(job: &Job) -> WorkerScope {
        job.0.progress.worker_enter();
        CURRENT_WORKER.with(|w| w.inner.set(Arc::as_ptr(&job.0)));
        WorkerScope(job.clone())
    }
}

impl Drop for WorkerScope {
    fn drop(&mut self) {
        let mine = CURRENT_WORKER.with(|w| {
            // Forgotten after fork: the parent's job is not touched.
            if !std::ptr::eq(w.inner.get(), Arc::as_ptr(&self.0.0)) {
                return false;
            }
            w.inner.set(std::ptr::null());
            true
        });
        if mine {
            self.0.0.progress.worker_leave();
        }
    }
}

/// Whether `inner` is the job whose worker runs on this thread: one
/// thread-local load.
fn is_current_worker(inner: &Inner) -> bool {
    CURRENT_WORKER.with(|w| std::ptr::eq(w.inner.get(), inner))
}

/// In a forked child: the parent's worker that ran on this thread does not run
/// here; its record is forgotten so nothing can reach it.
pub fn forget_worker_thread_after_fork() {
    CURRENT_WORKER.with(|w| w.inner.set(std::ptr::null()));
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
/// Set once the job is terminal or its worker declared its outcome, so
/// updates after either take the slow path and are refused.
const ATTN_DONE: u8 = 4;

/// A job's shared state. Only [`Job::hot`] lends it out of this module: for
/// the C layer's worker record, which reaches the worker's fast paths through
/// it with one load fewer than through a `&Job`.
pub(crate) struct Inner {
    id: u64,
    name: String,
    job_type: JobType,
    stack_size: usize,
    /// Progress updates on the worker's thread are not pause points
    /// ([`Builder::updates_never_park`]).
    updates_never_park: bool,
    /// No worker thread: the owner drives the job and ends it ([`Job::end`]).
    external: bool,
    pool: &'static Pool,
    epoch: Instant,
    /// ATTN_* bits: the worker's fast path reads only this.
    attention: AtomicU8,
    progress: Progress,
    /// The status line getinfo reads with no lock ([`info`]); written as
    /// the job's lock is let go.
    status: info::StatusLine,
    /// `None` until the worker sets one (""): a job allocates nothing for it.
    phase: Mutex<Option<Arc<str>>>,
    st: Mutex<St>,
    cv: JobSignal,
    /// How many C handles (table slots) name this job: kept by the ffi layer
    /// under its handle table's lock, never read by core.
    c_handles: std::sync::atomic::AtomicUsize,
    /// Typed statistics ([`Job::add_stat`]).
    stats: Stats,
    /// The operation name ("mirror"; "" if none).
    operation: String,
    /// The owner tag ("domain vm1"; "" if none).
    owner: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A child dropped without ever ending (a created job nobody started)
        // no longer holds its parent.
        let link = family::take_link(&mut self.lock().family);
        family::resume_parent(family::leave(link));
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        log::debug(format_args!(
            "job {} '{}'{} freed",
            self.id,
            self.name,
            op_label(&self.operation)
        ));
    }
}

/// Held across fork() (see `crate::ffi::fork`); in the child the parent's jobs
/// are forgotten, so listing them there never waits on a parent thread.
pub(crate) struct RegistryHold(std::sync::MutexGuard<'static, Registry>);

impl RegistryHold {
    pub(crate) fn take() -> RegistryHold {
        RegistryHold(registry().lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn forget_all(mut self) {
        self.0.clear();
    }
}

/// Every job by id.
type Registry = HashMap<u64, Weak<Inner>, std::hash::BuildHasherDefault<IdHasher>>;

/// The registry's hash: job ids are distinct values of one counter, so one
/// multiply by an odd constant (Fibonacci hashing) spreads them over the
/// table as well as SipHash does, at a fraction of its cost — paid under the
/// registry's lock by every create and every free.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

// A std lock even under loom: it outlives every model execution.
fn registry() -> &'static std::sync::Mutex<Registry> {
    static REGISTRY: OnceLock<std::sync::Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| std::sync::Mutex::new(Registry::default()))
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
                operation: j.0.operation.clone(),
                owner: j.0.owner.clone(),
                pause_count: info.pause_count,
                cancel_requested: info.cancel_requested,
                cancel_cause: info.cancel_cause,
                parent_id: j.parent_id(),
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

impl Job {
    /// The job's shared state, for the worker's fast paths
    /// ([`Inner::add_units_as_worker`], [`Inner::nothing_pending`]).
    #[inline(always)]
    pub(crate) fn hot(&self) -> &Inner {
        &self.0
    }
}

impl Inner {
    fn now_ns(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(i64::MAX)
    }

    /// The job's lock; its guard queues the events of the state change the
    /// hold made (see [`events`]).
    fn lock(&self) -> StGuard<'_> {
        StGuard::new(
            self.st.lock().unwrap_or_else(|e| e.into_inner()),
            &self.status,
        )
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
        st.pauses.user = false;
        st.pauses.iostatus = IoStatus::Ok;
        self.repause(st, now);
    }

    fn set_attention(&self, bit: u8) {
        self.attention.fetch_or(bit, Ordering::Release);
    }
}

/// " (mirror)" for the debug log, "" without an operation.
fn op_label(operation: &str) -> String {
    if operation.is_empty() {
        String::new()
    } else {
        format!(" ({operation})")
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

//! The job model in safe Rust: states and the verb table, progress, jobs and
//! their workers, threads. Usable directly as a Rust API; the C ABI in
//! [`crate::ffi`] only checks, converts and forwards to it.
//!
//! Nothing here uses `unsafe`, libc or FFI types. The OS facilities std lacks
//! (renaming a reused thread after its job, eventfd, poll, pidfd) come from the
//! safe wrappers in `crate::sys`.
#![forbid(unsafe_code)]

pub(crate) mod atomic;
pub mod child;
pub mod context;
pub(crate) mod errno;
pub mod error;
pub mod job;
pub mod log;
pub(crate) mod outcome;
pub(crate) mod progress;
pub mod state;
pub mod stats;
pub(crate) mod sync;
pub mod threads;
pub(crate) mod timer;

pub use child::{ChildExit, Output, Spawn, Stream};
pub use context::{Completion, Context, DispatchError};
pub(crate) use job::Inner as JobHot;
pub use job::{
    Builder, CancelCause, CancelStatus, CompleteFn, Control, ControlFn, Declare, Error,
    ErrorAction, ErrorPolicy, Event, EventFn, EventKind, FdEvents, HookAdded, HookFn, HookId,
    HookRemoved, Info, IoStatus, Job, JobError, JobType, Listing, Release, ResultValue, Txn,
    Worker, WorkerFn, list, report_allowed,
};
pub use state::{State, Verb, verb_allowed};
pub use stats::{Stat, StatType, StatValue};
pub use threads::{Pool, PoolConfig};

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, loom))]
mod testing;
#[cfg(test)]
mod tests;

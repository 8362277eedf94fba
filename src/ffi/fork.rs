//! fork() while jobs run.
//!
//! A forked child has only the thread that called fork(). Whatever lock another
//! thread held at that moment stays held in the child forever, and the
//! parent's jobs never run there. So that a child can always exec, or call
//! bgjob and get a clean answer, never a hang:
//!
//! - before the fork, the forking thread takes every process-wide lock bgjob
//!   has (the handle tables, the job registry, the thread pool, the log sink),
//!   in the documented lock order, so none is mid-use by another thread
//!   (glibc's malloc does the same for its arenas);
//! - in the parent they are simply released;
//! - in the child the parent's handles are invalidated and their jobs and
//!   contexts forgotten (never touched: their own locks may be held), and the
//!   locks are released (the pool forgets the parent's idle threads by itself,
//!   through `sys::fork_generation`). Parent handles then get
//!   `BGJOB_RESULT_INVALID_HANDLE`; new jobs and contexts work as usual.
//!
//! The handlers are registered the first time a handle is made, so a program
//! that never uses the C API pays nothing.

use super::handles::{CONTEXTS, JOBS, TableHold, forget_current_after_fork};
use crate::core::threads::{Pool, PoolHold};
use crate::core::{Context, Job, job::RegistryHold, log};
use std::cell::RefCell;
use std::sync::Once;

struct Held {
    jobs: TableHold<Job>,
    contexts: TableHold<Context>,
    registry: RegistryHold,
    pool: PoolHold,
    sink: std::sync::MutexGuard<'static, Option<log::Sink>>,
}

thread_local! {
    /// Set by `prepare` and taken by `parent` or `child`, which run on the same
    /// thread (the one calling fork()).
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Registers the fork handlers, once per process.
pub(crate) fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Without handlers (ENOMEM at startup) the child is as safe as before:
        // fine for fork-then-exec.
        let _ = crate::sys::at_fork(prepare, parent, child);
    });
}

/// A panic must not unwind into libc's fork(); it cannot happen here (only lock
/// calls, which recover from poisoning), but if it did, aborting is the only
/// safe answer.
fn no_unwind(f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        std::process::abort();
    }
}

unsafe extern "C" fn prepare() {
    no_unwind(|| {
        // The documented lock order: handle tables, then (never nested with
        // these elsewhere) the registry, the pool and the log sink.
        let held = Held {
            jobs: JOBS.hold_for_fork(),
            contexts: CONTEXTS.hold_for_fork(),
            registry: RegistryHold::take(),
            pool: Pool::global().hold_for_fork(),
            sink: log::hold_for_fork(),
        };
        HELD.with(|h| *h.borrow_mut() = Some(held));
    });
}

unsafe extern "C" fn parent() {
    no_unwind(|| drop(HELD.with(|h| h.borrow_mut().take())));
}

unsafe extern "C" fn child() {
    no_unwind(|| {
        let Some(held) = HELD.with(|h| h.borrow_mut().take()) else {
            return;
        };
        let Held {
            jobs,
            contexts,
            registry,
            pool,
            sink,
        } = held;
        jobs.forget_all();
        contexts.forget_all();
        registry.forget_all();
        drop(pool);
        drop(sink);
        forget_current_after_fork();
    });
}

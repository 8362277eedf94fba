//! The locks a job's own state is guarded by, and a condition variable that
//! makes no system call when nobody waits.
//!
//! Built with `--cfg loom`, [`Mutex`], [`Condvar`], the thread identity and
//! [`Signal`]'s waiter count are loom's, so `make loom` can check the job
//! protocols that rest on them (cancel against the worker's end, hook removal
//! against the cancel calling the hooks) under every interleaving. Everything
//! else uses std's directly.
//!
//! std's `Condvar::notify_all` always enters the kernel (a futex wake), and a
//! job notifies on every change a waiter might care about (its end, resume,
//! cancel, a hook finishing), usually with nobody waiting. [`Signal`] counts
//! its waiters and skips the wake when there are none.
//!
//! Why no wake is lost: a waiter counts itself while holding the mutex, before
//! `wait` releases it; a notifier changes the state under the same mutex and
//! looks at the count after taking it. Either the waiter saw the new state and
//! does not wait, or its count was made before the notifier took the mutex and
//! is visible to it.

#[cfg(loom)]
use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard, WaitTimeoutResult};
#[cfg(loom)]
pub(crate) use loom::thread::ThreadId;
use std::sync::LockResult;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard, WaitTimeoutResult};
#[cfg(not(loom))]
pub(crate) use std::thread::ThreadId;
use std::time::Duration;

/// The calling thread's identity (a loom thread's under loom, where every
/// modelled thread runs on the same OS thread).
pub(crate) fn current_thread_id() -> ThreadId {
    #[cfg(loom)]
    return loom::thread::current().id();
    #[cfg(not(loom))]
    return std::thread::current().id();
}

/// A `Condvar` with a waiter count; see the module docs.
pub(crate) struct Signal {
    cv: Condvar,
    waiters: AtomicUsize,
}

impl Signal {
    pub(crate) fn new() -> Signal {
        Signal {
            cv: Condvar::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    /// As `Condvar::wait`.
    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let r = self.cv.wait(guard);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// As `Condvar::wait_timeout`.
    pub(crate) fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let r = self.cv.wait_timeout(guard, timeout);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// As `Condvar::notify_all`, but free when nobody waits. Call it after
    /// changing the state under the mutex the waiters use.
    pub(crate) fn notify_all(&self) {
        if self.waiters.load(Ordering::SeqCst) != 0 {
            self.cv.notify_all();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_waiter_is_woken_and_a_lone_notify_is_harmless() {
        let pair = Arc::new((Mutex::new(false), Signal::new()));
        pair.1.notify_all();
        let p = pair.clone();
        let waiter = std::thread::spawn(move || {
            let mut ready = p.0.lock().unwrap();
            while !*ready {
                ready = p.1.wait(ready).unwrap();
            }
        });
        *pair.0.lock().unwrap() = true;
        pair.1.notify_all();
        waiter.join().unwrap();
        assert_eq!(pair.1.waiters.load(Ordering::SeqCst), 0);
    }
}

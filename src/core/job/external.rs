//! External jobs (no worker thread; the owner drives them and ends them with
//! [`Job::end`]) and the control callback, through which verbs reach a job's
//! owner (docs/design.md, "External jobs").

use super::*;

/// What a verb asks of the job's owner, through its control callback
/// ([`Builder::on_control`]). The `i64` beside it: for `Cancel` 1 = force,
/// 0 = soft; for `SetSpeed` the new speed in bytes/s (0 = unlimited); 0
/// otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Cancel was requested (the first request only).
    Cancel,
    /// The job stopped running: a user pause, or the first internal pause.
    Pause,
    /// The job may run again: the last pause ended (a resume, the last
    /// internal resume, a detach undoing the pauses).
    Resume,
    /// Complete was requested (a READY job).
    Complete,
    /// The speed limit changed ([`Job::set_speed`]).
    SetSpeed,
    /// Finalize was requested for an external job its owner reported
    /// `Pending` ([`Job::report_state`], [`Job::finalize`]).
    Finalize,
}

/// A control callback: called with no lock held, on the thread whose verb
/// took effect.
pub type ControlFn = Arc<dyn Fn(&Job, Control, i64) + Send + Sync + 'static>;

impl Builder {
    /// Makes an external job in `Created`: it has no worker and no thread;
    /// [`Job::start`] makes it `Running` and its owner drives it (progress,
    /// phase, errors) from any thread and ends it with [`Job::end`].
    pub fn create_external(self) -> Job {
        self.external().create(|_| Ok(()))
    }

    /// Makes the job external (see [`Builder::create_external`]): the
    /// closure given to [`Builder::create`] is never called; it is dropped
    /// (with what it captured) when the owner ends the job, or when the job
    /// is released unrun.
    pub fn external(mut self) -> Builder {
        self.external = true;
        self
    }

    /// Calls `f` after each verb that changed something the job's owner must
    /// act on (see [`Control`] and [`Job::control`]); dropped after its last
    /// call, when the job's work is done (or it is released unrun).
    pub fn on_control<F>(mut self, f: F) -> Builder
    where
        F: Fn(&Job, Control, i64) + Send + Sync + 'static,
    {
        self.control = Some(Arc::new(f));
        self
    }
}

impl Job {
    /// Whether the job is external (no worker thread; see
    /// [`Builder::create_external`]).
    pub fn is_external(&self) -> bool {
        self.0.external
    }

    /// For calls that need the job's worker thread (sleep, waits, child
    /// processes, pause points): refused on an external job, whose owner
    /// must not be parked by them.
    pub(super) fn refuse_external(&self) -> Result<(), Error> {
        if self.is_external() {
            return Err(Error::NotAllowed {
                verb: Verb::Update,
                state: self.state(),
            });
        }
        Ok(())
    }

    /// The owner ends an external job, as a worker's return would: `Ok`
    /// succeeds, `Err` fails — or ends `Cancelled` after a cancel request —
    /// and transactions, manual finalize and the outcome rules apply as for
    /// a threaded job ([`outcome::worker_outcome`]). A status recorded with
    /// [`Job::finish`] or an outcome declared with [`Job::declare`] wins, as
    /// for a worker. This call is the job's worker's return: a completion
    /// without a context runs here, before it returns (after the commit or
    /// abort and clean, once its whole transaction has ended). It waits for a
    /// control callback running on another thread to return first.
    ///
    /// Errors: `NotAllowed` for a threaded job, one not started, and once
    /// ended (a second end).
    pub fn end(&self, result: Result<(), JobError>) -> Result<(), Error> {
        let kept;
        let (life, error) = {
            let mut st = self.0.lock();
            if !self.is_external() || st.life != Life::Running || st.end.external_ended {
                return Err(Error::NotAllowed {
                    verb: Verb::Update,
                    state: st.state(),
                });
            }
            st.end.external_ended = true;
            kept = st.work.worker.take();
            outcome::worker_outcome(
                Returned::Value(result),
                st.end.finish_status,
                st.end.declared,
                st.cancel.requested,
            )
        };
        // What the never-called closure captured is freed before the end is
        // published, as a worker's is.
        drop(kept);
        log::debug(format_args!("job {} ended by its owner", self.0.id));
        self.worker_done(life, error, true);
        Ok(())
    }

    /// Stores the speed limit (bytes/s, 0 = unlimited) and, if it changed,
    /// forwards it to the owner as [`Control::SetSpeed`]. Allowed until the
    /// job's work is done.
    pub fn set_speed(&self, bytes_per_second: u64) -> Result<(), Error> {
        let changed = {
            let mut st = self.0.lock();
            st.check(Verb::Update)?;
            let before = std::mem::replace(&mut st.speed, bytes_per_second);
            if before != bytes_per_second {
                st.owner.speed_before = before;
            }
            before != bytes_per_second
        };
        if changed {
            self.control(
                Control::SetSpeed,
                i64::try_from(bytes_per_second).unwrap_or(i64::MAX),
            );
        }
        Ok(())
    }

    /// The speed limit last set (0 = unlimited).
    pub fn speed(&self) -> u64 {
        self.0.lock().speed
    }

    /// Tells the job's owner, through its control callback, that `what` took
    /// effect: called by each verb after it changed something, with no lock
    /// held, on the verb's thread. Nothing happens when the job has no
    /// callback, or once its work is done (the owner ended it, its worker
    /// returned, or it never started): no control call comes after the end
    /// has been seen. The end waits for a call in progress on another thread.
    pub fn control(&self, what: Control, arg: i64) {
        let inner = &self.0;
        let f = {
            let mut st = inner.lock();
            if st.life != Life::Running || st.end.external_ended {
                return;
            }
            let Some(f) = st.control.clone() else {
                return;
            };
            st.control_busy.push(current_thread_id());
            f
        };
        log::debug(format_args!("job {} control {what:?} ({arg})", inner.id));
        // A panicking Rust callback must not stay listed (the end would wait
        // for it forever).
        let _ = catch_unwind(AssertUnwindSafe(|| f(self, what, arg)));
        drop(f);
        {
            let mut st = inner.lock();
            let me = current_thread_id();
            if let Some(pos) = st.control_busy.iter().position(|&t| t == me) {
                st.control_busy.swap_remove(pos);
            }
        }
        inner.cv.notify_all();
    }

    /// Whether a control call runs on a thread other than this one.
    pub(super) fn control_busy_elsewhere(st: &St) -> bool {
        let me = current_thread_id();
        st.control_busy.iter().any(|&t| t != me)
    }

    /// For the C layer: keeps the handle value `h` until the owner's end,
    /// which hands it back ([`Job::take_release_at_end`]): an external job's
    /// owner that detaches its handle while other references live still ends
    /// the job by it. False (nothing kept) once the end has happened: the
    /// caller releases the handle now.
    pub fn release_at_end(&self, h: usize) -> bool {
        let mut st = self.0.lock();
        if !self.is_external() || st.end.external_ended || st.life != Life::Running {
            return false;
        }
        st.end.release_at_end.push(h);
        true
    }

    /// The handle values [`Job::release_at_end`] kept, taken once the
    /// owner's end returned.
    pub fn take_release_at_end(&self) -> Vec<usize> {
        std::mem::take(&mut self.0.lock().end.release_at_end)
    }

    /// Whether the owner's end (or the worker's return) has happened.
    pub fn work_done(&self) -> bool {
        let st = self.0.lock();
        st.end.external_ended || !matches!(st.life, Life::Created | Life::Running)
    }
}

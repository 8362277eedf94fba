//! User and internal pauses, the error policy, and pause points.

use super::*;

impl Job {
    /// An internal pause (QEMU's `job_pause`, used for drain): a counter beside
    /// the user pause; the worker parks at its next pause point while either
    /// is in force, and the paused time does not count. Balanced by
    /// [`Job::resume_internal`]. Allowed until the job ends.
    pub fn pause_internal(&self) -> Result<(), Error> {
        let inner = &self.0;
        let now = inner.now_ns();
        let mut st = inner.lock();
        st.check(Verb::Drain)?;
        st.pauses.internal = st
            .pauses
            .internal
            .checked_add(1)
            .ok_or(Error::InvalidArgument("too many internal pauses"))?;
        let was_halted = st.halted();
        inner.repause(&mut st, now);
        st.deadline.disarm();
        drop(st);
        if !was_halted {
            self.control(Control::Pause, 0);
        }
        Ok(())
    }

    /// Undoes one [`Job::pause_internal`]. An unbalanced resume is refused
    /// (`NotAllowed`) and changes nothing.
    pub fn resume_internal(&self) -> Result<(), Error> {
        let inner = &self.0;
        let now = inner.now_ns();
        let mut st = inner.lock();
        st.check(Verb::Drain)?;
        if st.pauses.internal == 0 {
            return Err(Error::NotAllowed {
                verb: Verb::Drain,
                state: st.state(),
            });
        }
        st.pauses.internal -= 1;
        inner.repause(&mut st, now);
        self.arm_deadline(&mut st);
        let resumed = !st.halted();
        drop(st);
        inner.cv.notify_all();
        if resumed {
            self.control(Control::Resume, 0);
        }
        Ok(())
    }

    /// Changes the error policy (allowed until the work is done).
    pub fn set_error_policy(&self, policy: ErrorPolicy) -> Result<(), Error> {
        let mut st = self.0.lock();
        st.check(Verb::Update)?;
        st.pauses.error_policy = policy;
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
        // An external job its owner reported WAITING, PENDING or ABORTING:
        // the work is over, nothing can stop on an error any more.
        st.check_owner_running()?;
        let stop = match st.pauses.error_policy {
            ErrorPolicy::Report => false,
            ErrorPolicy::Ignore => {
                st.io_error_event(ErrorAction::Ignore, code);
                return Ok(ErrorAction::Ignore);
            }
            ErrorPolicy::Stop => true,
            ErrorPolicy::Enospc => code == ENOSPC,
        };
        if stop && !st.cancel.requested && !st.detached {
            // Queued before the change to PAUSED below (QEMU's order).
            st.io_error_event(ErrorAction::Stop, code);
            st.pauses.user = true;
            st.pauses.iostatus = if code == ENOSPC {
                IoStatus::NoSpace
            } else {
                IoStatus::Failed
            };
            inner.repause(&mut st, now);
            st.deadline.disarm();
            drop(st);
            log::debug(format_args!(
                "job {} stopped by I/O error {code}: {message}",
                inner.id
            ));
            return Ok(ErrorAction::Stop);
        }
        st.io_error_event(ErrorAction::Report, code);
        st.end.error = Some(JobError::new(code, message));
        Ok(ErrorAction::Report)
    }

    /// User pause: the worker parks at its next pause point, cancellable wait or
    /// progress update. Refused unless `Running` (pausing twice is refused).
    pub fn pause(&self) -> Result<(), Error> {
        let inner = &self.0;
        let now = inner.now_ns();
        let mut st = inner.lock();
        st.check(Verb::Pause)?;
        if st.cancel.requested || st.detached {
            // A cancelled job is winding down (QEMU's ABORTING): its pause points
            // no longer park, so a pause would only stop the clock. A detached
            // one could never be resumed: it would stay paused forever.
            return Err(Error::NotAllowed {
                verb: Verb::Pause,
                state: st.state(),
            });
        }
        let was_halted = st.halted();
        st.pauses.user = true;
        inner.repause(&mut st, now);
        st.deadline.disarm();
        drop(st);
        log::debug(format_args!("job {} paused", inner.id));
        if !was_halted {
            self.control(Control::Pause, 0);
        }
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
        let resumed = !st.halted();
        drop(st);
        inner.cv.notify_all();
        log::debug(format_args!("job {} resumed", inner.id));
        if resumed {
            self.control(Control::Resume, 0);
        }
        Ok(())
    }

    /// Worker side: parks while the job is user-paused; returns `Cancelled` if
    /// cancel was requested. One atomic load when nothing is pending.
    pub fn pause_point(&self) -> Result<(), Error> {
        let inner = &self.0;
        if inner.external {
            return self.refuse_external();
        }
        if inner.attention.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let mut st = inner.lock();
        while st.halted() && !st.cancel.requested {
            st = inner.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.cancel.requested {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

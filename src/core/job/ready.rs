//! READY, STANDBY and the complete verb (QEMU's `job_transition_to_ready`,
//! `job_complete` and soft `block-job-cancel`).

use super::*;

impl Job {
    /// The worker (or owner) says the job is ready: `Running` becomes
    /// `Ready`, `Paused` becomes `Standby`. It keeps running until completed
    /// ([`Job::complete`]) or cancelled. Idempotent once ready. Refused
    /// (`NotAllowed`) unless the worker is running, once its outcome is
    /// declared, and once an external job's owner reported a state
    /// ([`Job::report_state`]).
    pub fn set_ready(&self) -> Result<(), Error> {
        let mut st = self.0.lock();
        // Reported WAITING, PENDING or ABORTING by its owner: too late.
        st.check_owner_running()?;
        if st.ready.ready && st.life == Life::Running {
            return Ok(());
        }
        st.check_running()?;
        st.check_worker_update()?;
        st.ready.ready = true;
        let state = st.state();
        drop(st);
        log::debug(format_args!("job {} {state}", self.0.id));
        Ok(())
    }

    /// Asks a ready job to finish (QEMU's `job-complete`): sets "complete
    /// requested" and wakes the worker as a cancel does — the wake fd turns
    /// readable, [`Job::sleep`] returns `Ok` early, [`Job::wait_fd`] returns
    /// no events, a pause point returns — until the worker acknowledges it by
    /// reading [`Job::complete_requested`] on its own thread. Refused
    /// (`NotAllowed`) unless `Ready`, and while cancel is requested, an
    /// internal pause is in force or an outcome is declared (QEMU refuses a
    /// paused or cancelled job too). Asking twice wakes again.
    pub fn complete(&self) -> Result<(), Error> {
        let inner = &self.0;
        let mut st = inner.lock();
        st.check(Verb::Complete)?;
        if st.cancel.requested || st.pauses.internal > 0 || st.end.declared.is_some() {
            return Err(Error::NotAllowed {
                verb: Verb::Complete,
                state: st.state(),
            });
        }
        st.ready.complete_requested = true;
        st.ready.complete_wake = true;
        st.sync_wake();
        drop(st);
        inner.cv.notify_all();
        log::debug(format_args!("job {} complete requested", inner.id));
        self.control(Control::Complete, 0);
        Ok(())
    }

    /// Whether complete was requested (it stays so). Read on the job's own
    /// worker thread it also acknowledges the wake the request gave: the wake
    /// fd is no longer readable for it, and sleeps and fd waits no longer
    /// return early for it. Read on another thread it only reads.
    pub fn complete_requested(&self) -> bool {
        let mut st = self.0.lock();
        if st.ready.complete_wake && self.on_own_worker() {
            st.ready.complete_wake = false;
            st.sync_wake();
        }
        st.ready.complete_requested
    }

    /// Soft cancel (QEMU's `block-job-cancel` without force): on a `Ready` or
    /// `Standby` job, cancel is requested with "soft" set — the worker sees a
    /// cancel as usual and reads [`Job::cancel_is_soft`]; it is meant to
    /// finish without pivoting and return success (the job then completes).
    /// A soft cancel calls no cancellation hooks (they abort what the worker
    /// waits on; a soft cancel lets it finish) and signals no children; a
    /// later [`Job::cancel`] makes it a force cancel and calls them. In every
    /// other state it is [`Job::cancel`].
    pub fn cancel_soft(&self) -> CancelStatus {
        let inner = &self.0;
        let now = inner.now_ns();
        let mut st = inner.lock();
        let ready = matches!(st.state(), State::Ready | State::Standby);
        if !ready || st.end.declared.is_some() {
            drop(st);
            return self.cancel();
        }
        if st.cancel.requested {
            return CancelStatus::AlreadyRequested;
        }
        st.cancel.requested = true;
        st.cancel.soft = true;
        st.cancel.cause = CancelCause::Caller;
        inner.set_attention(ATTN_CANCEL);
        inner.end_user_pause(&mut st, now);
        st.deadline.disarm();
        st.sync_wake();
        drop(st);
        inner.cv.notify_all();
        log::debug(format_args!("job {} soft cancel requested", inner.id));
        self.control(Control::Cancel, 0);
        CancelStatus::Requested
    }

    /// Whether the cancel request is a soft one ([`Job::cancel_soft`]; a
    /// force cancel clears it). False when cancel was not requested.
    pub fn cancel_is_soft(&self) -> bool {
        self.0.lock().cancel.soft
    }
}

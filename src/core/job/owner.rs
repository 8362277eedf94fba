//! What an external job's owner tells bgjob beyond progress and its end: the
//! states QEMU reports that bgjob cannot infer (WAITING, PENDING, ABORTING),
//! the manual finalize forwarded to it ([`Control::Finalize`]), and a
//! forwarded verb that failed (docs/design.md, "External jobs").
//!
//! A reported state is shown while the job's life is still `Running` (its
//! work has not ended in bgjob's eyes: the owner still ends it with
//! [`Job::end`]), so the control callback stays in place for FINALIZE and
//! CANCEL, and the verb table applies to the reported state.

use super::*;

/// Where a manual finalize of an external job stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Forward {
    /// Not asked (or its forward failed).
    #[default]
    None,
    /// Asked while WAITING: told to the owner once it reports PENDING.
    Wanted,
    /// Told to the owner as [`Control::Finalize`].
    Sent,
}

/// The owner's side of an external job, in its [`St`].
#[derive(Default)]
pub(super) struct Owner {
    /// The state the owner reported last (WAITING, PENDING, ABORTING), shown
    /// while the job's life is `Running`.
    pub(super) reported: Option<State>,
    /// A job on its own: its manual finalize (a member's is its
    /// transaction's).
    pub(super) finalize: Forward,
    /// The last forwarded verb the owner said failed, with its error.
    pub(super) control_error: Option<(Control, JobError)>,
    /// The speed before the last change, restored when SET_SPEED fails.
    pub(super) speed_before: u64,
}

/// Whether the owner may report `to` for a job shown in `from` (QEMU's
/// transitions: WAITING and ABORTING from a running job, PENDING from a
/// running or waiting one, ABORTING from any of those; never back). Reporting
/// the state the job is in is allowed and changes nothing. Only WAITING,
/// PENDING and ABORTING are ever reported: the other states have calls of
/// their own ([`Job::set_ready`], [`Job::end`], the verbs).
pub fn report_allowed(from: State, to: State) -> bool {
    use State::{Aborting, Paused, Pending, Ready, Running, Standby, Waiting};
    matches!(
        (from, to),
        (
            Running | Paused | Ready | Standby,
            Waiting | Pending | Aborting
        ) | (Waiting, Waiting | Pending | Aborting)
            | (Pending, Pending | Aborting)
            | (Aborting, Aborting)
    )
}

impl St {
    /// Refused (`NotAllowed`) once the owner reported a state: the work is
    /// over for the calls that need it running.
    pub(super) fn check_owner_running(&self) -> Result<(), Error> {
        match self.owner.reported {
            Some(state) => Err(Error::NotAllowed {
                verb: Verb::Update,
                state,
            }),
            None => Ok(()),
        }
    }
}

impl Job {
    /// The owner of an external job reports a state bgjob cannot infer:
    /// `Waiting` (its work is done, it waits for its transaction), `Pending`
    /// (done, awaiting finalize) or `Aborting` (failed or cancelled, the
    /// abort under way). The job shows it until the owner ends it with
    /// [`Job::end`]; events fire as for any change. A user pause ends (the
    /// work is no longer running) and the deadline is disarmed. Reporting
    /// `Pending` forwards a finalize asked for earlier ([`Control::Finalize`]).
    ///
    /// Errors: `InvalidArgument` for any other state; `NotAllowed` (nothing
    /// changes) for a threaded job, one not started or already ended, and a
    /// transition [`report_allowed`] refuses.
    pub fn report_state(&self, to: State) -> Result<(), Error> {
        if !matches!(to, State::Waiting | State::Pending | State::Aborting) {
            return Err(Error::InvalidArgument(
                "only WAITING, PENDING or ABORTING can be reported",
            ));
        }
        let inner = &self.0;
        let now = inner.now_ns();
        let (forward, txn) = {
            let mut st = inner.lock();
            let from = st.state();
            if !inner.external
                || st.life != Life::Running
                || st.end.external_ended
                || !report_allowed(from, to)
            {
                return Err(Error::NotAllowed {
                    verb: Verb::Update,
                    state: from,
                });
            }
            if from == to {
                return Ok(());
            }
            st.owner.reported = Some(to);
            // Updates now take the slow path, where the verb table refuses
            // them (the work is over).
            inner.set_attention(ATTN_DONE);
            inner.end_user_pause(&mut st, now);
            st.deadline.disarm();
            let mut forward = false;
            let mut txn = None;
            if to == State::Pending {
                match st.finalize.txn.clone() {
                    Some(t) => txn = Some(t),
                    None if st.owner.finalize == Forward::Wanted => {
                        st.owner.finalize = Forward::Sent;
                        forward = true;
                    }
                    None => {}
                }
            }
            (forward, txn)
        };
        inner.cv.notify_all();
        log::debug(format_args!("job {} reported {to} by its owner", inner.id));
        if forward || txn.is_some_and(|t| t.claim_forward()) {
            self.control(Control::Finalize, 0);
        }
        Ok(())
    }

    /// Whether the owner reported the job `Pending` and has not ended it.
    pub(in crate::core) fn owner_pending(&self) -> bool {
        let st = self.0.lock();
        st.life == Life::Running && st.owner.reported == Some(State::Pending)
    }

    /// Whether the owner reported the job `Aborting` and has not ended it
    /// (a cancel is then recorded, so the owner's failure ends it
    /// `Cancelled`, but not told: there is nothing left to ask).
    pub(super) fn owner_aborting(st: &St) -> bool {
        st.life == Life::Running && st.owner.reported == Some(State::Aborting)
    }

    /// [`Job::finalize`] of an external job in a reported state: `None` for
    /// any other job. A job on its own with manual finalize is asked once:
    /// the request is forwarded as [`Control::Finalize`] now if the owner
    /// reported `Pending`, else when it does; the owner's end then finalizes
    /// at once. A member asks its transaction.
    pub(super) fn finalize_external(&self) -> Option<Result<(), Error>> {
        let mut st = self.0.lock();
        if st.life != Life::Running || st.owner.reported.is_none() {
            return None;
        }
        let state = st.state();
        if let Err(e) = st.check(Verb::Finalize) {
            return Some(Err(e));
        }
        if let Some(txn) = st.finalize.txn.clone() {
            drop(st);
            return Some(txn.finalize_from(Some(self)));
        }
        if !st.finalize.manual || st.owner.finalize != Forward::None {
            return Some(Err(Error::NotAllowed {
                verb: Verb::Finalize,
                state,
            }));
        }
        st.finalize.manual = false;
        let send = state == State::Pending;
        st.owner.finalize = if send { Forward::Sent } else { Forward::Wanted };
        drop(st);
        log::debug(format_args!("job {} finalize requested", self.0.id));
        if send {
            self.control(Control::Finalize, 0);
        }
        Some(Ok(()))
    }

    /// A detached manual-finalize external job finalizes by itself, as every
    /// detached job does: the finalize nobody can ask any more is told to
    /// the owner now if it reported `Pending`, else when it does. A member's
    /// is its transaction's (`Txn::finalize_on_its_own`).
    pub(super) fn finalize_on_detach(&self) {
        let send = {
            let mut st = self.0.lock();
            if !self.0.external
                || st.life != Life::Running
                || st.end.external_ended
                || st.finalize.txn.is_some()
                || st.owner.finalize != Forward::None
            {
                return;
            }
            let pending = st.owner.reported == Some(State::Pending);
            st.owner.finalize = if pending {
                Forward::Sent
            } else {
                Forward::Wanted
            };
            pending
        };
        if send {
            self.control(Control::Finalize, 0);
        }
    }

    /// The owner says `what`, which its control callback was told, failed
    /// (`code` non-zero, errno-style; QEMU refused the command). It is
    /// recorded ([`Job::control_error`]) and a [`EventKind::ControlFailed`]
    /// event queued; what the verb set is undone where bgjob can undo it:
    /// - `Pause`: the user pause (if one is in force and not an I/O-error
    ///   stop) ends — PAUSED back to RUNNING, STANDBY back to READY;
    /// - `Complete`: "complete requested" is cleared (complete may be asked
    ///   again);
    /// - `SetSpeed`: the speed goes back to the value before the last change;
    /// - `Finalize`: the finalize request is dropped (the job, or its
    ///   transaction, waits for another);
    /// - `Cancel` and `Resume`: nothing (a cancel's hooks and children were
    ///   told already; a refused resume means the work was not paused).
    ///
    /// Errors: `InvalidArgument` for a zero code; `NotAllowed` once the
    /// job's work is done (ended by the owner, its worker returned) or for a
    /// job with no control callback — nothing is recorded then.
    pub fn control_failed(&self, what: Control, code: i32, message: &str) -> Result<(), Error> {
        if code == 0 {
            return Err(Error::InvalidArgument("an error code must be non-zero"));
        }
        let inner = &self.0;
        let now = inner.now_ns();
        let txn = {
            let mut st = inner.lock();
            let state = st.state();
            if st.life != Life::Running || st.end.external_ended || st.control.is_none() {
                return Err(Error::NotAllowed {
                    verb: Verb::Update,
                    state,
                });
            }
            st.owner.control_error = Some((what, JobError::new(code, message)));
            if let Some(ev) = st.events.as_mut() {
                ev.control_failed(state, code);
            }
            let mut txn = None;
            match what {
                Control::Pause => {
                    if st.pauses.user
                        && st.pauses.iostatus == IoStatus::Ok
                        && st.owner.reported.is_none()
                    {
                        inner.end_user_pause(&mut st, now);
                        self.arm_deadline(&mut st);
                    }
                }
                Control::Complete => {
                    st.ready.complete_requested = false;
                    st.ready.complete_wake = false;
                    st.sync_wake();
                }
                Control::SetSpeed => st.speed = st.owner.speed_before,
                Control::Finalize => match st.finalize.txn.clone() {
                    Some(t) => txn = Some(t),
                    None => {
                        if st.owner.finalize != Forward::None {
                            st.owner.finalize = Forward::None;
                            st.finalize.manual = true;
                        }
                    }
                },
                Control::Cancel | Control::Resume => {}
            }
            txn
        };
        if let Some(t) = txn {
            t.finalize_refused();
        }
        inner.cv.notify_all();
        log::debug(format_args!(
            "job {} control {what:?} failed: {message} ({code})",
            inner.id
        ));
        Ok(())
    }

    /// The last forwarded verb the owner said failed, with its error
    /// (readable until the job is released).
    pub fn control_error(&self) -> Option<(Control, JobError)> {
        self.0.lock().owner.control_error.clone()
    }

    /// Waits until the job is in `state` or terminal, for at most `timeout`
    /// (`None` = forever), and returns the state it found. A state passed
    /// through between two looks may be missed (a wait for READY on a job
    /// that went READY → COMPLETED returns COMPLETED); the event callback
    /// sees every change.
    pub fn wait_state(&self, state: State, timeout: Option<Duration>) -> Result<State, Error> {
        let inner = &self.0;
        if self.on_own_worker() {
            return Err(Error::OwnWorker);
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = inner.lock();
        loop {
            let now_state = st.state();
            if now_state == state || now_state.is_terminal() {
                return Ok(now_state);
            }
            // Not every change notifies the condition variable (ready, an
            // update): a slice bounds the time one can go unseen.
            let mut slice = Duration::from_millis(20);
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    return Err(Error::TimedOut);
                }
                slice = slice.min(d - now);
            }
            st = inner
                .cv
                .wait_timeout(st, slice)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The owner's transitions, every pair: only WAITING, PENDING and
    /// ABORTING are ever reached, never backwards, and only from a job whose
    /// work may still run (or a reported state).
    #[test]
    fn report_table() {
        use State::*;
        let running = [Running, Paused, Ready, Standby];
        for from in State::ALL {
            for to in State::ALL {
                let want = match to {
                    Waiting => running.contains(&from) || from == Waiting,
                    Pending => running.contains(&from) || matches!(from, Waiting | Pending),
                    Aborting => {
                        running.contains(&from) || matches!(from, Waiting | Pending | Aborting)
                    }
                    _ => false,
                };
                assert_eq!(report_allowed(from, to), want, "{from} -> {to}");
            }
        }
    }
}

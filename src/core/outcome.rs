//! The outcome rules, in one place, as pure functions of the facts they read:
//! how a job's end is decided from its worker's return, a status recorded with
//! `finish`, an outcome declared with `declare`, a cancel request and its
//! cause, and its group's (transaction's) abort. The job code gathers the
//! facts under the job's lock and applies what these return; nothing else in
//! the crate (ffi, virjob) decides an outcome. docs/design.md states the same
//! rules in prose; the tests below list every row.

use super::errno::ECANCELED;
use super::state::State;
use std::fmt;

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

/// Why cancel was requested (shown by [`crate::core::Job::info`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CancelCause {
    /// Cancel was not requested.
    #[default]
    None,
    /// A caller cancelled it (cancel, destroy of a created job, detach).
    Caller,
    /// Its deadline passed ([`crate::core::Builder::deadline`],
    /// [`crate::core::Job::set_deadline`]).
    Timeout,
    /// Another member of its transaction failed or was cancelled.
    Transaction,
    /// Its parent job was cancelled ([`crate::core::Job::set_parent`]).
    Parent,
}

/// Sub-jobs: a job whose worker has returned is held (WAITING) while
/// `live_children` of its children are not terminal, and then ends with its
/// own outcome: a child's end, failure included, never changes the parent's.
pub fn held_for_children(live_children: usize) -> bool {
    live_children > 0
}

/// An outcome a worker declares once before it returns
/// ([`crate::core::Job::declare`]): the libvirt virJob proposal's finish calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Declare {
    /// Success: the job completes, even after a cancel request.
    Success,
    /// Failure with this error: the job fails — or, if cancel was requested,
    /// ends cancelled (a cancelled job that did not succeed).
    Failure(JobError),
    /// Cancelled, if cancel was requested; otherwise nothing is declared.
    IfCancelled,
}

/// An outcome the worker declared: the state the job will end in, and the
/// code its end carries (0 for success).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Declared {
    pub(crate) state: State,
    pub(crate) code: i32,
}

/// How the worker's call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Returned {
    /// It returned this value.
    Value(Result<(), JobError>),
    /// It panicked (the error names the panic).
    Panicked(JobError),
}

/// The rule of [`Declare`]: what `declare` decides given whether cancel was
/// requested. `None`: nothing is declared ([`Declare::IfCancelled`] with no
/// cancel). Otherwise the declared outcome, and the error to record as the
/// job's (a failure not overridden by a cancel).
pub(crate) fn declare(
    declare: Declare,
    cancel_requested: bool,
) -> Option<(Declared, Option<JobError>)> {
    let declared = |state, code| Declared { state, code };
    match declare {
        Declare::Success => Some((declared(State::Completed, 0), None)),
        Declare::IfCancelled if !cancel_requested => None,
        Declare::IfCancelled => Some((declared(State::Cancelled, ECANCELED), None)),
        Declare::Failure(e) if cancel_requested => Some((declared(State::Cancelled, e.code), None)),
        Declare::Failure(e) => Some((declared(State::Failed, e.code), Some(e))),
    }
}

/// The worker's own outcome (what the job ends as unless its group aborts):
/// a declared outcome is the end whatever came after it (a return value, a
/// panic, a later `finish`); else a panic is an error; else a `finish` status
/// overrides the return value (0 success, else an error with that code);
/// then success completes, an error fails — or cancels, when cancel was
/// requested. The error returned carries the bare code; [`final_error`]
/// gives it its message. A soft cancel (QEMU's cancel of a ready job without
/// force) is a cancel request here like any other: a worker that finishes
/// successfully completes, one that fails ends cancelled — "soft" only tells
/// the worker which of the two to aim for, so it adds no row.
pub(crate) fn worker_outcome(
    returned: Returned,
    finish_status: Option<i32>,
    declared: Option<Declared>,
    cancel_requested: bool,
) -> (State, Option<JobError>) {
    if let Some(d) = declared {
        let error = (d.code != 0).then(|| JobError::new(d.code, ""));
        return (d.state, error);
    }
    let result = match (returned, finish_status) {
        (Returned::Panicked(e), _) => Err(e),
        (Returned::Value(_), Some(0)) => Ok(()),
        (Returned::Value(_), Some(code)) => Err(JobError::new(code, "")),
        (Returned::Value(r), None) => r,
    };
    match result {
        Ok(()) => (State::Completed, None),
        Err(e) if cancel_requested => (State::Cancelled, Some(e)),
        Err(e) => (State::Failed, Some(e)),
    }
}

/// Whether a group (a transaction, or one job on its own) aborts because of
/// a member's work ending in `outcome`, and with which cause: any end but
/// success aborts it.
pub(crate) fn group_abort(outcome: State, cause: CancelCause) -> Option<CancelCause> {
    (outcome != State::Completed).then_some(cause)
}

/// A member's end when its group is finalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemberEnd {
    pub(crate) state: State,
    /// `Some`: the member is cancelled now (its work had succeeded), with
    /// this cause — the job's cause from now on.
    pub(crate) cancelled_with: Option<CancelCause>,
    pub(crate) error: Option<JobError>,
}

/// A member's end, from its worker's outcome (`None`: it never ran to an
/// outcome — cancelled) and the group's abort (`None`: the group commits).
/// In a committed group every member completes. In an aborted one a member
/// that failed stays failed and one cancelled stays cancelled; one whose
/// own work succeeded is cancelled — with its own cause if cancel was
/// requested for it, else the group's (an abort with no cause of its own is a
/// transaction's).
pub(crate) fn member_end(
    outcome: Option<(State, Option<JobError>)>,
    abort: Option<CancelCause>,
    own_cause: CancelCause,
) -> MemberEnd {
    let end = |state, cancelled_with, error| MemberEnd {
        state,
        cancelled_with,
        error,
    };
    let (outcome, error) = outcome.unwrap_or((State::Cancelled, None));
    match (abort, outcome) {
        (None, _) => end(State::Completed, None, None),
        (Some(_), State::Failed) => end(State::Failed, None, error),
        (Some(_), State::Cancelled) => end(State::Cancelled, None, error),
        (Some(group_cause), _) => {
            let cause = match (own_cause, group_cause) {
                (CancelCause::None, CancelCause::None) => CancelCause::Transaction,
                (CancelCause::None, c) => c,
                (own, _) => own,
            };
            let message = match cause {
                CancelCause::Transaction => {
                    "cancelled: another member of its transaction failed or was cancelled"
                }
                _ => "cancelled before it was finalized",
            };
            end(
                State::Cancelled,
                Some(cause),
                Some(JobError::new(ECANCELED, message)),
            )
        }
    }
}

/// The error a job ends with, from the one its end carries (`returned`) and
/// the one the worker recorded (`recorded`, with `set_error` or an I/O error
/// report): a recorded error wins as a whole (code and message) over a bare
/// code; a message of its own (a panic's) wins over both; an error with no
/// message gets one from the state. With no error carried, a cancelled job
/// that recorded none ended before it started; any other keeps what it
/// recorded.
pub(crate) fn final_error(
    state: State,
    returned: Option<JobError>,
    recorded: Option<JobError>,
) -> Option<JobError> {
    let Some(returned) = returned else {
        return match (state, recorded) {
            (State::Cancelled, None) => Some(JobError::new(0, "cancelled before start")),
            (_, recorded) => recorded,
        };
    };
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
    Some(e)
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // the row types of the tables
mod tests {
    use super::*;
    use CancelCause as C;
    use State::{Cancelled, Completed, Failed};

    fn e(code: i32, m: &str) -> JobError {
        JobError::new(code, m)
    }

    #[test]
    fn a_parent_is_held_while_a_child_lives() {
        assert!(!held_for_children(0));
        assert!(held_for_children(1));
        assert!(held_for_children(usize::MAX));
    }

    #[test]
    fn declare_table() {
        let boom = e(5, "boom");
        // (declare, cancel requested) → (state, code, recorded error) or nothing
        #[rustfmt::skip]
        let rows: Vec<(Declare, bool, Option<(State, i32, Option<JobError>)>)> = vec![
            (Declare::Success,              false, Some((Completed, 0, None))),
            (Declare::Success,              true,  Some((Completed, 0, None))),
            (Declare::IfCancelled,          false, None),
            (Declare::IfCancelled,          true,  Some((Cancelled, ECANCELED, None))),
            (Declare::Failure(boom.clone()), false, Some((Failed, 5, Some(boom.clone())))),
            (Declare::Failure(boom.clone()), true,  Some((Cancelled, 5, None))),
        ];
        for (i, (d, cancel, want)) in rows.into_iter().enumerate() {
            let got = declare(d, cancel).map(|(d, rec)| (d.state, d.code, rec));
            assert_eq!(got, want, "row {i}");
        }
    }

    #[test]
    fn worker_outcome_table() {
        let ok = || Returned::Value(Ok(()));
        let err = || Returned::Value(Err(e(7, "bad")));
        let panic = || Returned::Panicked(e(5, "worker panicked: x"));
        let dec = |state, code| Some(Declared { state, code });
        // (returned, finish status, declared, cancel requested) → (state, error)
        #[rustfmt::skip]
        let rows: Vec<(Returned, Option<i32>, Option<Declared>, bool, State, Option<JobError>)> = vec![
            // The return value alone.
            (ok(),    None,    None, false, Completed, None),
            (ok(),    None,    None, true,  Completed, None),
            (err(),   None,    None, false, Failed,    Some(e(7, "bad"))),
            (err(),   None,    None, true,  Cancelled, Some(e(7, "bad"))),
            // A finish status overrides the return value.
            (ok(),    Some(0), None, false, Completed, None),
            (ok(),    Some(0), None, true,  Completed, None),
            (err(),   Some(0), None, false, Completed, None),
            (err(),   Some(0), None, true,  Completed, None),
            (ok(),    Some(9), None, false, Failed,    Some(e(9, ""))),
            (ok(),    Some(9), None, true,  Cancelled, Some(e(9, ""))),
            (err(),   Some(9), None, false, Failed,    Some(e(9, ""))),
            (err(),   Some(9), None, true,  Cancelled, Some(e(9, ""))),
            // A panic overrides both.
            (panic(), None,    None, false, Failed,    Some(e(5, "worker panicked: x"))),
            (panic(), None,    None, true,  Cancelled, Some(e(5, "worker panicked: x"))),
            (panic(), Some(0), None, false, Failed,    Some(e(5, "worker panicked: x"))),
            (panic(), Some(9), None, true,  Cancelled, Some(e(5, "worker panicked: x"))),
            // A declared outcome overrides everything that came after it.
            (ok(),    None,    dec(Completed, 0),         false, Completed, None),
            (err(),   Some(9), dec(Completed, 0),         false, Completed, None),
            (panic(), None,    dec(Completed, 0),         true,  Completed, None),
            (ok(),    None,    dec(Failed, 5),            false, Failed,    Some(e(5, ""))),
            (panic(), Some(0), dec(Failed, 5),            false, Failed,    Some(e(5, ""))),
            (ok(),    None,    dec(Cancelled, ECANCELED), true,  Cancelled, Some(e(ECANCELED, ""))),
            (ok(),    Some(0), dec(Cancelled, 5),         true,  Cancelled, Some(e(5, ""))),
        ];
        for (i, (r, finish, declared, cancel, state, error)) in rows.into_iter().enumerate() {
            assert_eq!(
                worker_outcome(r, finish, declared, cancel),
                (state, error),
                "row {i}"
            );
        }
    }

    #[test]
    fn group_abort_table() {
        #[rustfmt::skip]
        let rows = [
            (Completed, C::None,        None),
            (Completed, C::Transaction, None),
            (Completed, C::Caller,      None),
            (Failed,    C::None,        Some(C::None)),
            (Failed,    C::Transaction, Some(C::Transaction)),
            (Cancelled, C::Caller,      Some(C::Caller)),
            (Cancelled, C::Timeout,     Some(C::Timeout)),
        ];
        for (i, (outcome, cause, want)) in rows.into_iter().enumerate() {
            assert_eq!(group_abort(outcome, cause), want, "row {i}");
        }
    }

    #[test]
    fn member_end_table() {
        let tx = "cancelled: another member of its transaction failed or was cancelled";
        let fin = "cancelled before it was finalized";
        let canc = |m: &str| Some(e(ECANCELED, m));
        // (worker outcome, group abort, own cause) → (state, cancelled with, error)
        #[rustfmt::skip]
        let rows: Vec<(Option<(State, Option<JobError>)>, Option<C>, C, State, Option<C>, Option<JobError>)> = vec![
            // The group commits: every member completes.
            (Some((Completed, None)),            None,                 C::None,    Completed, None, None),
            // Aborted: a failed or cancelled member keeps its end and error.
            (Some((Failed, Some(e(3, "x")))),    Some(C::None),        C::None,    Failed,    None, Some(e(3, "x"))),
            (Some((Failed, Some(e(3, "x")))),    Some(C::Transaction), C::None,    Failed,    None, Some(e(3, "x"))),
            (Some((Cancelled, Some(e(4, "y")))), Some(C::Caller),      C::Caller,  Cancelled, None, Some(e(4, "y"))),
            (Some((Cancelled, None)),            Some(C::Transaction), C::Timeout, Cancelled, None, None),
            // Never reached an outcome: cancelled.
            (None,                               Some(C::Caller),      C::Caller,  Cancelled, None, None),
            // Its work succeeded: cancelled now, its own cause first, else the group's.
            (Some((Completed, None)),            Some(C::None),        C::None,    Cancelled, Some(C::Transaction), canc(tx)),
            (Some((Completed, None)),            Some(C::Transaction), C::None,    Cancelled, Some(C::Transaction), canc(tx)),
            (Some((Completed, None)),            Some(C::Caller),      C::None,    Cancelled, Some(C::Caller),      canc(fin)),
            (Some((Completed, None)),            Some(C::Timeout),     C::None,    Cancelled, Some(C::Timeout),     canc(fin)),
            (Some((Completed, None)),            Some(C::Transaction), C::Caller,  Cancelled, Some(C::Caller),      canc(fin)),
            (Some((Completed, None)),            Some(C::Caller),      C::Timeout, Cancelled, Some(C::Timeout),     canc(fin)),
            (Some((Completed, None)),            Some(C::Caller),      C::Transaction, Cancelled, Some(C::Transaction), canc(tx)),
        ];
        for (i, (outcome, abort, own, state, with, error)) in rows.into_iter().enumerate() {
            assert_eq!(
                member_end(outcome, abort, own),
                MemberEnd {
                    state,
                    cancelled_with: with,
                    error
                },
                "row {i}"
            );
        }
    }

    #[test]
    fn final_error_table() {
        let rec = || Some(e(28, "disk full"));
        // (state, carried, recorded) → final error
        #[rustfmt::skip]
        let rows: Vec<(State, Option<JobError>, Option<JobError>, Option<JobError>)> = vec![
            // Nothing carried.
            (Completed, None, None,  None),
            (Completed, None, rec(), rec()),
            (Cancelled, None, None,  Some(e(0, "cancelled before start"))),
            (Cancelled, None, rec(), rec()),
            (Failed,    None, rec(), rec()),
            // A bare code: the recorded error wins whole, else a message from the state.
            (Failed,    Some(e(5, "")), rec(), rec()),
            (Failed,    Some(e(5, "")), None,  Some(e(5, "worker failed with code 5"))),
            (Cancelled, Some(e(125, "")), None, Some(e(125, "cancelled"))),
            (Cancelled, Some(e(125, "")), rec(), rec()),
            // A message of its own wins over a recorded error.
            (Failed,    Some(e(5, "worker panicked: x")), rec(), Some(e(5, "worker panicked: x"))),
            (Cancelled, Some(e(125, "saw it")), rec(), Some(e(125, "saw it"))),
        ];
        for (i, (state, carried, recorded, want)) in rows.into_iter().enumerate() {
            assert_eq!(final_error(state, carried, recorded), want, "row {i}");
        }
    }
}

//! Job states and the verb × state table.
//!
//! This table is the only place that decides whether a verb may be applied to a job
//! in a given state (QEMU's `job.c` keeps the same kind of table). Every verb in
//! [`crate::core::Job`] asks [`verb_allowed`] first and refuses with
//! [`crate::core::Error::NotAllowed`] otherwise; the C API exports the table so tests
//! can walk the whole matrix.

use std::fmt;

/// The state of a job as a caller sees it.
///
/// `Created → Running ⇄ Paused → (Waiting) → (Pending) → Completed | Failed |
/// Cancelled` (an external job's owner may also report `Aborting`), with
/// `Running → Ready ⇄ Standby` for a job whose worker said it
/// is ready (`Paused → Standby` likewise). The three last are terminal: a job
/// reaches exactly one of them, once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Made, not started; the worker has not run.
    Created,
    /// The worker is running.
    Running,
    /// Paused by the user; the worker parks at its next pause point.
    Paused,
    /// The worker has finished; the job waits for the other members of its
    /// transaction to finish theirs.
    Waiting,
    /// The worker succeeded.
    Completed,
    /// The worker failed (or panicked).
    Failed,
    /// Cancelled: before start, or the worker saw the cancel and did not succeed.
    Cancelled,
    /// The worker said the job is ready (a mirror has converged); it keeps
    /// running until completed ([`Verb::Complete`]) or cancelled.
    Ready,
    /// Ready and paused by the user (as `Paused` is `Running` paused).
    Standby,
    /// The work is done (the job's and its whole transaction's); the job waits
    /// for a manual finalize.
    Pending,
    /// An external job's owner said its work failed or was cancelled and the
    /// abort is under way (QEMU's ABORTING); it ends when the owner ends it.
    Aborting,
}

impl State {
    /// Every state, in the order of the verb table's columns (the C numbers
    /// live in `ffi`, tied to these by its conversions).
    pub const ALL: [State; 11] = [
        State::Created,
        State::Running,
        State::Paused,
        State::Waiting,
        State::Completed,
        State::Failed,
        State::Cancelled,
        State::Ready,
        State::Standby,
        State::Pending,
        State::Aborting,
    ];

    /// True for `Completed`, `Failed` and `Cancelled`.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Completed | State::Failed | State::Cancelled)
    }

    /// A stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Waiting => "waiting",
            State::Completed => "completed",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::Ready => "ready",
            State::Standby => "standby",
            State::Pending => "pending",
            State::Aborting => "aborting",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Something a caller or worker asks of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// Start the worker of a created job.
    Start,
    /// Request cancellation. Allowed in every state: on a finished job it reports
    /// "already finished" (libxl's abort contract) instead of doing anything.
    Cancel,
    /// User pause.
    Pause,
    /// Undo a user pause.
    Resume,
    /// Release the job. Refused while the worker may still run.
    Destroy,
    /// Give up the handle and let the job free itself when it ends.
    Detach,
    /// Progress, phase, ETA, error and result updates.
    Update,
    /// Read or take the job's result (only once it has ended, so the worker can
    /// no longer replace, and free, what the caller holds).
    Result,
    /// Internal pause and resume (QEMU's drain): a counter beside the user
    /// pause; the worker runs only when both are clear.
    Drain,
    /// Finalize a job (or its transaction) created with manual finalize, once
    /// its work is done: commit or abort, clean, then the end.
    Finalize,
    /// Ask a ready job to finish (QEMU's `job-complete`): allowed only in
    /// `Ready`.
    Complete,
}

impl Verb {
    /// Every verb, in the order of the verb table's rows.
    pub const ALL: [Verb; 11] = [
        Verb::Start,
        Verb::Cancel,
        Verb::Pause,
        Verb::Resume,
        Verb::Destroy,
        Verb::Detach,
        Verb::Update,
        Verb::Result,
        Verb::Drain,
        Verb::Finalize,
        Verb::Complete,
    ];

    /// A stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Cancel => "cancel",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::Destroy => "destroy",
            Verb::Detach => "detach",
            Verb::Update => "update",
            Verb::Result => "result",
            Verb::Drain => "drain",
            Verb::Finalize => "finalize",
            Verb::Complete => "complete",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const Y: bool = true;
const N: bool = false;

/// Rows are verbs, columns are states, both in numeric order:
/// created, running, paused, waiting, completed, failed, cancelled, ready,
/// standby, pending, aborting. Ready and standby accept what running and
/// paused accept (plus complete in ready); pending accepts what waiting
/// accepts; aborting what waiting accepts but finalize.
const TABLE: [[bool; 11]; 11] = [
    //              cr run pau wai com fai can rdy stb pen abo
    /* start   */
    [Y, N, N, N, N, N, N, N, N, N, N],
    /* cancel  */ [Y, Y, Y, Y, Y, Y, Y, Y, Y, Y, Y],
    /* pause   */ [N, Y, N, N, N, N, N, Y, N, N, N],
    /* resume  */ [N, N, Y, N, N, N, N, N, Y, N, N],
    /* destroy */ [Y, N, N, N, Y, Y, Y, N, N, N, N],
    /* detach  */ [N, Y, Y, Y, Y, Y, Y, Y, Y, Y, Y],
    /* update  */ [Y, Y, Y, N, N, N, N, Y, Y, N, N],
    /* result  */ [N, N, N, N, Y, Y, Y, N, N, N, N],
    /* drain   */ [Y, Y, Y, Y, N, N, N, Y, Y, Y, Y],
    /* finalize*/ [N, N, N, Y, N, N, N, N, N, Y, N],
    /* complete*/ [N, N, N, N, N, N, N, Y, N, N, N],
];

/// Whether `verb` may be applied to a job in `state`.
pub fn verb_allowed(verb: Verb, state: State) -> bool {
    TABLE[verb as usize][state as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_follow_the_table_order() {
        for (i, s) in State::ALL.into_iter().enumerate() {
            assert_eq!(s as usize, i);
        }
        for (i, v) in Verb::ALL.into_iter().enumerate() {
            assert_eq!(v as usize, i);
        }
    }

    #[test]
    fn terminal_states_accept_only_cancel_destroy_detach() {
        for s in State::ALL.into_iter().filter(|s| s.is_terminal()) {
            let allowed: Vec<Verb> = Verb::ALL
                .into_iter()
                .filter(|&v| verb_allowed(v, s))
                .collect();
            assert_eq!(
                allowed,
                vec![Verb::Cancel, Verb::Destroy, Verb::Detach, Verb::Result]
            );
        }
    }

    #[test]
    fn pause_and_resume_are_exclusive() {
        for s in State::ALL {
            assert!(!(verb_allowed(Verb::Pause, s) && verb_allowed(Verb::Resume, s)));
        }
    }

    #[test]
    fn a_running_job_cannot_be_destroyed() {
        assert!(!verb_allowed(Verb::Destroy, State::Running));
        assert!(!verb_allowed(Verb::Destroy, State::Paused));
        assert!(!verb_allowed(Verb::Destroy, State::Waiting));
        assert!(!verb_allowed(Verb::Destroy, State::Ready));
        assert!(!verb_allowed(Verb::Destroy, State::Standby));
        assert!(!verb_allowed(Verb::Destroy, State::Pending));
        assert!(!verb_allowed(Verb::Destroy, State::Aborting));
    }

    /// Aborting accepts what waiting accepts, but finalize: the work failed
    /// or was cancelled, there is nothing to commit.
    #[test]
    fn aborting_is_waiting_without_finalize() {
        for v in Verb::ALL {
            assert_eq!(
                verb_allowed(v, State::Aborting),
                verb_allowed(v, State::Waiting) && v != Verb::Finalize,
                "{v} in aborting"
            );
        }
    }

    /// Ready and standby are running and paused with the ready mark: they
    /// accept the same verbs, plus complete in ready only; pending accepts
    /// what waiting does.
    #[test]
    fn ready_standby_pending_mirror_their_plain_states() {
        for v in Verb::ALL {
            let extra = v == Verb::Complete;
            assert_eq!(
                verb_allowed(v, State::Ready),
                verb_allowed(v, State::Running) || extra,
                "{v} in ready"
            );
            assert_eq!(
                verb_allowed(v, State::Standby),
                verb_allowed(v, State::Paused),
                "{v} in standby"
            );
            assert_eq!(
                verb_allowed(v, State::Pending),
                verb_allowed(v, State::Waiting),
                "{v} in pending"
            );
        }
        let complete: Vec<State> = State::ALL
            .into_iter()
            .filter(|&s| verb_allowed(Verb::Complete, s))
            .collect();
        assert_eq!(complete, vec![State::Ready]);
    }
}

//! Transactions (QEMU's `JobTxn`): jobs grouped before they start.
//! When one fails or is cancelled, every other member is cancelled (cause
//! [`CancelCause::Transaction`]). Members whose work is done wait in
//! `Waiting` until every member is done; then each member's commit (all
//! succeeded) or abort callback runs, then each one's clean, then they end —
//! the same outcomes whatever order they finished in.
//!
//! Lock order: a transaction's lock may be held while taking a member's lock,
//! never the other way round (job code clones the [`Txn`] out of its own
//! state and lets go before calling in here).
//!
//! Events: a member's state may change under the transaction's lock (it
//! turns `Pending`, or its cancel is recorded); the events of such changes
//! are queued there but delivered only once that lock is let go (the
//! guard holds a [`DeferScope`]), so an event callback never runs under it
//! and may cancel or finalize its job.

use super::events::DeferScope;
use super::{CancelCause, CancelStatus, Control, Error, Job, finalize_group};
use crate::core::log;
use crate::core::outcome;
use crate::core::state::{State, Verb};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};

/// A transaction. Clones refer to the same one; members keep it alive, so a
/// caller may drop its own reference at any time after adding them.
#[derive(Clone)]
pub struct Txn(Arc<Inner>);

struct Inner {
    manual_finalize: bool,
    st: Mutex<St>,
}

struct St {
    /// In the order they were added; taken when the group is finalized.
    members: Vec<Job>,
    started: bool,
    /// Why the group aborts (`None`: it does not): `Caller` when the
    /// caller cancelled the whole transaction, `Transaction` when a member
    /// failed or was cancelled on its own and the others follow it. Set once,
    /// by whoever aborts first under this lock, so every member's cause is
    /// decided in one place.
    abort: Option<CancelCause>,
    /// Members whose work is done.
    done: usize,
    finalize_requested: bool,
    /// The finalize was told to an external member's owner (once; undone
    /// when the owner says it failed).
    forwarded: bool,
    finalized: bool,
}

/// A hold of a transaction's lock. Events of the members' state changes
/// made under it are delivered after it is let go: the fields drop in order,
/// the lock first, then the scope (whose end delivers, if this thread holds
/// no job lock either).
struct TxnGuard<'a> {
    g: MutexGuard<'a, St>,
    _defer: DeferScope,
}

impl Deref for TxnGuard<'_> {
    type Target = St;
    fn deref(&self) -> &St {
        &self.g
    }
}

impl DerefMut for TxnGuard<'_> {
    fn deref_mut(&mut self) -> &mut St {
        &mut self.g
    }
}

impl St {
    /// Claims the finalization (once) when every member is done and nothing
    /// holds it back: an abort never waits, a success waits for a manual
    /// finalize if the transaction asked for one.
    fn try_claim(&mut self, manual: bool) -> Option<(Vec<Job>, Option<CancelCause>)> {
        let ready = !self.finalized
            && !self.members.is_empty()
            && self.done == self.members.len()
            && (self.abort.is_some() || !manual || self.finalize_requested);
        if !ready {
            return None;
        }
        self.finalized = true;
        Some((std::mem::take(&mut self.members), self.abort))
    }

    /// Every member's work is done, nothing aborts, and the group has not
    /// settled: it waits for a manual finalize.
    fn all_done_awaiting_finalize(&self) -> bool {
        !self.finalized
            && !self.members.is_empty()
            && self.done == self.members.len()
            && self.abort.is_none()
    }

    /// Starts the abort (once) with `cause`: the members other than `except`
    /// are returned, to be cancelled with the group's cause. Empty when the
    /// group was aborting already (whoever began it cancels them).
    fn begin_abort(&mut self, cause: CancelCause, except: Option<&Job>) -> Vec<Job> {
        if self.abort.is_some() {
            return Vec::new();
        }
        self.abort = Some(cause);
        self.members
            .iter()
            .filter(|m| Some(*m) != except)
            .cloned()
            .collect()
    }
}

impl fmt::Debug for Txn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("Txn")
            .field("members", &st.members.len())
            .field("abort", &st.abort)
            .field("finalized", &st.finalized)
            .finish()
    }
}

use std::fmt;

impl Txn {
    /// A new, empty transaction. With `manual_finalize`, a transaction whose
    /// members all succeeded waits in `Pending` (each member `Waiting` until
    /// the last is done) for [`Txn::finalize`] (or
    /// [`Job::finalize`] on any member).
    pub fn new(manual_finalize: bool) -> Txn {
        Txn(Arc::new(Inner {
            manual_finalize,
            st: Mutex::new(St {
                members: Vec::new(),
                started: false,
                abort: None,
                done: 0,
                finalize_requested: false,
                forwarded: false,
                finalized: false,
            }),
        }))
    }

    fn lock(&self) -> TxnGuard<'_> {
        // Entered before the lock is taken: deferred events are delivered
        // only after it is let go.
        let defer = DeferScope::enter();
        TxnGuard {
            g: self.0.st.lock().unwrap_or_else(|e| e.into_inner()),
            _defer: defer,
        }
    }

    /// Adds a job that has not started. Refused (`NotAllowed`) for a job that
    /// started, ended or is being cancelled, and once the transaction started,
    /// began to abort (a member was cancelled or failed: a job added now
    /// would miss the abort) or settled; `InvalidArgument` for a job already
    /// in a transaction.
    pub fn add(&self, job: &Job) -> Result<(), Error> {
        let mut st = self.lock();
        if st.started || st.finalized || st.abort.is_some() {
            return Err(Error::NotAllowed {
                verb: Verb::Start,
                state: job.state(),
            });
        }
        job.join_txn(self)?;
        st.members.push(job.clone());
        Ok(())
    }

    /// The members, in the order they were added (empty once settled).
    pub fn members(&self) -> Vec<Job> {
        self.lock().members.clone()
    }

    /// Starts every member that has not started. If one cannot start (no
    /// thread), the whole transaction is cancelled and the error returned.
    /// Refused once started.
    pub fn start(&self) -> Result<(), Error> {
        let members = {
            let mut st = self.lock();
            if st.started || st.finalized {
                return Err(Error::NotAllowed {
                    verb: Verb::Start,
                    state: State::Running,
                });
            }
            st.started = true;
            st.members.clone()
        };
        for m in &members {
            match m.start() {
                Ok(()) | Err(Error::NotAllowed { .. }) => {}
                Err(e) => {
                    self.cancel();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Cancels every member, each with cause `Caller` — unless the group
    /// was aborting already because a member failed or was cancelled on its
    /// own: then it changes nothing (the others are being cancelled with
    /// cause `Transaction`). The cause is decided under the transaction's
    /// lock before any member is cancelled, so no member's end can race it.
    pub fn cancel(&self) {
        let members = self.lock().begin_abort(CancelCause::Caller, None);
        for m in members {
            m.cancel_with(CancelCause::Caller);
        }
    }

    /// Asks for a manual-finalize transaction to be finalized: at once if every
    /// member is done, else as soon as the last one is. Refused once settled.
    ///
    /// With external members, the request is told to one of their owners as
    /// [`Control::Finalize`] (QEMU's `job-finalize` of one member finalizes
    /// its whole transaction): the member finalized if its owner reported it
    /// `Pending`, else the first such member, else the first whose owner
    /// reports `Pending` later.
    pub fn finalize(&self) -> Result<(), Error> {
        self.finalize_from(None)
    }

    /// [`Txn::finalize`], asked through `from`'s [`Job::finalize`].
    pub(in crate::core) fn finalize_from(&self, from: Option<&Job>) -> Result<(), Error> {
        let (group, forward) = {
            let mut st = self.lock();
            if st.finalized {
                return Err(Error::NotAllowed {
                    verb: Verb::Finalize,
                    state: State::Completed,
                });
            }
            st.finalize_requested = true;
            let group = st.try_claim(self.0.manual_finalize);
            let mut forward = None;
            if group.is_none() && self.0.manual_finalize && !st.forwarded {
                // Lock order: the transaction's, then a member's.
                forward = from
                    .filter(|j| j.owner_pending())
                    .cloned()
                    .or_else(|| st.members.iter().find(|m| m.owner_pending()).cloned());
                st.forwarded = forward.is_some();
            }
            (group, forward)
        };
        if let Some(m) = forward {
            m.control(Control::Finalize, 0);
        }
        if let Some((members, abort)) = group {
            finalize_group(members, abort, None);
        }
        Ok(())
    }

    /// An external member's owner reported it `Pending`: whether the
    /// finalize asked for earlier is to be told to it now (once).
    pub(in crate::core) fn claim_forward(&self) -> bool {
        let mut st = self.lock();
        let claim = self.0.manual_finalize && st.finalize_requested && !st.forwarded;
        if claim && !st.finalized {
            st.forwarded = true;
            return true;
        }
        false
    }

    /// The owner told of the finalize said it failed: the transaction waits
    /// for another finalize.
    pub(in crate::core) fn finalize_refused(&self) {
        let mut st = self.lock();
        if !st.finalized {
            st.finalize_requested = false;
            st.forwarded = false;
        }
    }

    /// A member was detached: its owner can no longer finalize the group, so
    /// a manual-finalize transaction finalizes by itself once every member is
    /// done (at once if they are).
    pub(in crate::core) fn finalize_on_its_own(&self) {
        let _ = self.finalize();
    }

    /// A member's work is done with `outcome`; `worker_of` is the member
    /// itself when this is its worker thread.
    pub(in crate::core) fn member_done(&self, job: &Job, outcome: State, worker_of: Option<&Job>) {
        let (others, group) = {
            let mut st = self.lock();
            st.done += 1;
            let others = match outcome::group_abort(outcome, CancelCause::Transaction) {
                Some(cause) => st.begin_abort(cause, Some(job)),
                None => Vec::new(),
            };
            let group = st.try_claim(self.0.manual_finalize);
            if group.is_none() && st.all_done_awaiting_finalize() {
                // Every member's work is done and succeeded: the group waits
                // for its manual finalize, and its members say so (PENDING).
                // Their events wait for this lock to be let go (`TxnGuard`).
                for m in &st.members {
                    m.mark_pending();
                }
            }
            (others, group)
        };
        self.abort_others(job, others);
        if let Some((members, abort)) = group {
            finalize_group(members, abort, worker_of);
        }
    }

    /// Cancel of a member whose work is done (it waits for the others, or for
    /// a manual finalize): the transaction aborts.
    pub(in crate::core) fn cancel_waiting_member(
        &self,
        job: &Job,
        cause: CancelCause,
    ) -> CancelStatus {
        let (others, group) = {
            let mut st = self.lock();
            if st.finalized {
                return CancelStatus::AlreadyFinished;
            }
            if !job.mark_cancelled_waiting(cause) {
                return CancelStatus::AlreadyRequested;
            }
            let others = st.begin_abort(CancelCause::Transaction, Some(job));
            (others, st.try_claim(self.0.manual_finalize))
        };
        self.abort_others(job, others);
        if let Some((members, abort)) = group {
            finalize_group(members, abort, None);
        }
        CancelStatus::Requested
    }

    fn abort_others(&self, job: &Job, others: Vec<Job>) {
        if others.is_empty() {
            return;
        }
        log::debug(format_args!(
            "transaction aborted by job {}: cancelling {} other member(s)",
            job.id(),
            others.len()
        ));
        for m in others {
            m.cancel_with(CancelCause::Transaction);
        }
    }
}

//! Sub-jobs (libxl's nested operations, tokio's child tokens, GCancellable
//! chaining): a job made a child of another is cancelled with it (cause
//! [`CancelCause::Parent`], recursively), and the parent is held in `Waiting`
//! after its worker returned until every child is terminal; then it ends with
//! its own outcome (`outcome::held_for_children`).
//!
//! A parent lists its children by `Weak`; a child holds its parent strongly
//! only until the child is terminal (so a detached parent held for its
//! children stays alive), then keeps only its id: no reference cycle at any
//! time. Lock order: a parent's lock, then
//! its child's (only in [`Job::set_parent`]); everything else takes one job's
//! lock at a time.

use super::*;

#[derive(Default)]
pub(in crate::core) struct Family {
    /// The parent's id, 0 for none. An id, not a link: it stays the parent's
    /// after the parent was freed (a detached parent that ended).
    pub(super) parent: u64,
    /// The parent, while this job is counted in its `live_children`: until
    /// this job is terminal (or dropped unrun).
    pub(super) holds: Option<Arc<Inner>>,
    pub(super) children: Vec<Weak<Inner>>,
    /// Children linked and not yet terminal.
    pub(super) live_children: usize,
    /// The worker's outcome while the job is held for its children.
    pub(super) held: Option<(State, Option<JobError>)>,
}

/// Under the child's lock: the parent whose count this job is to leave (once).
pub(super) fn take_link(f: &mut Family) -> Option<Arc<Inner>> {
    f.holds.take()
}

/// With no lock held: takes a child out of `parent`'s count; returns the
/// parent with the outcome to end it with if that was its last live child and
/// it is held.
pub(super) fn leave(parent: Option<Arc<Inner>>) -> Option<(Arc<Inner>, State, Option<JobError>)> {
    let parent = parent?;
    let mut pst = parent.lock();
    pst.family.live_children = pst.family.live_children.saturating_sub(1);
    if outcome::held_for_children(pst.family.live_children) {
        return None;
    }
    let (state, error) = pst.family.held.take()?;
    drop(pst);
    Some((parent, state, error))
}

/// Ends a parent that [`leave`] found free to end (with no lock held).
pub(super) fn resume_parent(left: Option<(Arc<Inner>, State, Option<JobError>)>) {
    if let Some((parent, state, error)) = left {
        Job(parent).worker_done(state, error, false);
    }
}

impl Job {
    /// Makes this created job a child of `parent`: cancelling `parent` cancels
    /// it (cause [`CancelCause::Parent`]), and `parent` does not end while this
    /// job is not terminal. Under a parent whose cancel was requested already,
    /// the child is born cancelled (its cancel requested, cause `Parent`; a
    /// started worker sees it at once), as a tokio child token of a cancelled
    /// token is.
    ///
    /// Errors: `InvalidArgument` for the job itself, or a job that has a parent
    /// already; `NotAllowed` unless this job is `Created` and `parent` is
    /// `Created`, `Running` or `Paused` (its worker has not returned).
    pub fn set_parent(&self, parent: &Job) -> Result<(), Error> {
        if self == parent {
            return Err(Error::InvalidArgument("a job cannot be its own parent"));
        }
        let mut pst = parent.0.lock();
        if !matches!(pst.life, Life::Created | Life::Running) || pst.family.held.is_some() {
            return Err(Error::NotAllowed {
                verb: Verb::Start,
                state: pst.state(),
            });
        }
        let mut st = self.0.lock();
        if st.family.parent != 0 {
            return Err(Error::InvalidArgument("the job has a parent already"));
        }
        if st.life != Life::Created {
            return Err(Error::NotAllowed {
                verb: Verb::Start,
                state: st.state(),
            });
        }
        pst.family.children.retain(|w| w.strong_count() > 0);
        pst.family.children.push(Arc::downgrade(&self.0));
        pst.family.live_children += 1;
        st.family.parent = parent.0.id;
        st.family.holds = Some(parent.0.clone());
        if pst.cancel.requested && !st.cancel.requested {
            st.cancel.requested = true;
            st.cancel.cause = CancelCause::Parent;
            self.0.set_attention(ATTN_CANCEL);
            st.sync_wake();
        }
        Ok(())
    }

    /// The parent's id, 0 for none; still the parent's once it was freed.
    pub fn parent_id(&self) -> u64 {
        self.0.lock().family.parent
    }

    /// Cancels every child (cause `Parent`); each passes it to its own.
    pub(super) fn cancel_children(&self) {
        let children: Vec<Job> = {
            let st = self.0.lock();
            st.family
                .children
                .iter()
                .filter_map(Weak::upgrade)
                .map(Job)
                .collect()
        };
        for c in children {
            c.cancel_with(CancelCause::Parent);
        }
    }

    /// This job is terminal: its parent, held for it, may end now.
    pub(super) fn leave_parent(&self) {
        let link = take_link(&mut self.0.lock().family);
        resume_parent(leave(link));
    }

    /// For the ffi layer: the count of C handles naming this job (changed
    /// only under that layer's table lock).
    pub fn c_handles(&self) -> &std::sync::atomic::AtomicUsize {
        &self.0.c_handles
    }

    /// Whether the job was detached (it then frees itself when it ends).
    pub fn is_detached(&self) -> bool {
        self.0.lock().detached
    }
}

/// A job by id, if it still exists.
pub fn lookup(id: u64) -> Option<Job> {
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
        .and_then(Weak::upgrade)
        .map(Job)
}

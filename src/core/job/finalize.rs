//! Finalizing a group whose work is done (a transaction, or one job on its
//! own): commit or abort, clean, then every member's end.

use super::*;

/// Finalizes a group whose work is done (a transaction, or one job): commit
/// (all succeeded) or abort for each member, then clean for each — all on
/// this thread, in the order the members were added — then every member ends.
/// In an aborted group (`abort` names the cause the group was aborted with) a
/// member that failed ends `Failed`, every other one `Cancelled`; one whose own
/// work succeeded takes the group's cause unless it was cancelled itself.
///
/// Completions without a context run only once every member is terminal (a
/// completion that waits for a sibling returns at once): the one of
/// `worker_of` — the job whose worker thread this is, its return having ended
/// the group — runs here, last; every other one on a bgjob thread of its own,
/// never on a sibling's worker thread nor inside a verb. The caller has
/// claimed the group (exactly once).
pub(in crate::core) fn finalize_group(
    members: Vec<Job>,
    abort: Option<CancelCause>,
    worker_of: Option<&Job>,
) {
    let call = |job: &Job, f: Option<HookFn>| {
        if let Some(f) = f {
            // A panicking Rust callback must not stop the others.
            let _ = catch_unwind(AssertUnwindSafe(|| f(job)));
        }
    };
    // The group's end is being finalized: every member WAITING while any
    // commit/abort and clean runs, as the header says of every job, from
    // PENDING too (a transaction's members all, before the first commit).
    for m in &members {
        let mut st = m.0.lock();
        if st.life == Life::Pending {
            st.life = Life::Waiting;
        }
    }
    for m in &members {
        let (run, unused) = {
            let mut st = m.0.lock();
            let (commit, abort_fn) = (st.finalize.commit.take(), st.finalize.abort.take());
            if abort.is_some() {
                (abort_fn, commit)
            } else {
                (commit, abort_fn)
            }
        };
        drop(unused);
        call(m, run);
    }
    for m in &members {
        let clean = m.0.lock().finalize.clean.take();
        call(m, clean);
    }
    let mut own = None;
    let mut others = Vec::new();
    let settled = members.clone();
    for m in members {
        let (state, error) = {
            let mut st = m.0.lock();
            // The group is settled: the member lets go of the transaction
            // (which held it), breaking the reference cycle. It is claimed in
            // the same step, so a finalize or cancel that finds it WAITING
            // without a transaction until `settle` below is refused, instead
            // of finalizing it again on its own (a second end, and a
            // completion before its siblings end).
            st.finalize.txn = None;
            st.finalize.claimed = true;
            let end = outcome::member_end(st.finalize.pending.take(), abort, st.cancel.cause);
            if let Some(cause) = end.cancelled_with {
                st.cancel.requested = true;
                st.cancel.cause = cause;
                m.0.set_attention(ATTN_CANCEL);
            }
            (end.state, end.error)
        };
        if let Some(run) = m.settle(Life::Done(state), error) {
            if worker_of == Some(&m) {
                own = Some(run);
            } else {
                others.push((m, run));
            }
        }
    }
    for (m, run) in others {
        m.spawn_completion(run);
    }
    if let Some(run) = own {
        run();
    }
    // Sub-jobs: a parent held for these children may end now (after them).
    for m in settled {
        m.leave_parent();
    }
}

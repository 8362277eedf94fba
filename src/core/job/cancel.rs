//! Cancel and cancellation hooks (libxl's design).

use super::*;

impl Job {
    /// Requests cancellation and returns at once.
    ///
    /// A created job ends `Cancelled` without its worker running (its closure is
    /// dropped before this returns). A paused job is resumed so it can see the
    /// cancel. A running worker decides: it may still complete.
    pub fn cancel(&self) -> CancelStatus {
        self.cancel_with(CancelCause::Caller)
    }

    /// [`Job::cancel`], recording why (shown by [`Job::info`]). The first
    /// request's cause is kept.
    pub fn cancel_with(&self, cause: CancelCause) -> CancelStatus {
        let status = self.cancel_one(cause);
        // Sub-jobs: the children are cancelled too, whatever this job's own
        // answer (a parent held for its children after its worker returned
        // still passes the cancel down).
        self.cancel_children();
        status
    }

    fn cancel_one(&self, cause: CancelCause) -> CancelStatus {
        let inner = &self.0;
        let now = inner.now_ns();
        let mut st = inner.lock();
        // A declared outcome is the job's end: a cancel after it finds the job
        // finished (the worker may still be on its way out).
        if matches!(st.life, Life::Done(_)) || st.end.declared.is_some() {
            return CancelStatus::AlreadyFinished;
        }
        if st.family.held.is_some() {
            // Its worker has returned: the cancel is recorded and passed to
            // the children; the job's outcome stays its worker's.
            if std::mem::replace(&mut st.cancel.requested, true) {
                return CancelStatus::AlreadyRequested;
            }
            st.cancel.cause = cause;
            return CancelStatus::AlreadyFinished;
        }
        if st.cancel.requested {
            if st.cancel.soft && st.life == Life::Running {
                // A force cancel after a soft one: the worker is told (soft
                // is cleared) and the hooks it skipped are called now.
                st.cancel.soft = false;
                let has_hooks = !st.cancel.hooks.is_empty();
                drop(st);
                inner.cv.notify_all();
                log::debug(format_args!("job {} soft cancel made force", inner.id));
                if has_hooks {
                    self.run_cancel_hooks();
                }
                // The owner hears the cancel is now a force one.
                self.control(Control::Cancel, 1);
                return CancelStatus::Requested;
            }
            return CancelStatus::AlreadyRequested;
        }
        if matches!(st.life, Life::Waiting | Life::Pending) {
            // The work is done; the cancel turns a pending success into an
            // abort (QEMU cancels PENDING jobs the same way).
            if let Some(txn) = st.finalize.txn.clone() {
                drop(st);
                return txn.cancel_waiting_member(self, cause);
            }
            if std::mem::replace(&mut st.finalize.claimed, true) {
                return CancelStatus::AlreadyFinished;
            }
            st.cancel.requested = true;
            st.cancel.cause = cause;
            inner.set_attention(ATTN_CANCEL);
            drop(st);
            finalize_group(vec![self.clone()], Some(cause), None);
            return CancelStatus::Requested;
        }
        st.cancel.cause = cause;
        if st.life == Life::Created && st.work.start_pending.is_some() {
            // Its create starts it next: the cancel is recorded for the
            // worker to see (as for a job born under a cancelled parent),
            // and its hooks run now; the create does not fail for it.
            st.cancel.requested = true;
            inner.set_attention(ATTN_CANCEL);
            st.sync_wake();
            let has_hooks = !st.cancel.hooks.is_empty();
            drop(st);
            inner.cv.notify_all();
            if has_hooks {
                self.run_cancel_hooks();
            }
            return CancelStatus::Requested;
        }
        if st.life == Life::Created {
            let worker = self.take_unstarted(&mut st);
            drop(st);
            self.run_cancel_hooks();
            if let Some(worker) = worker {
                self.end_unstarted(worker);
            }
            return CancelStatus::Requested;
        }
        st.cancel.requested = true;
        inner.set_attention(ATTN_CANCEL);
        // The owner hears of it only while the work is not done, and not
        // once it said the work is being aborted (recorded: its end cancels).
        let tell_owner = st.control.is_some() && !Job::owner_aborting(&st);
        // QEMU's block jobs: cancel undoes a user pause so the worker can see it.
        inner.end_user_pause(&mut st, now);
        st.deadline.disarm();
        st.sync_wake();
        let queued = st.work.queued.take();
        // With no hook registered there is nothing to call: the hook pass (one
        // more hold of the lock, which the woken worker wants) is skipped.
        let has_hooks = !st.cancel.hooks.is_empty();
        drop(st);
        inner.cv.notify_all();
        log::debug(format_args!(
            "job {} cancel requested ({cause:?})",
            inner.id
        ));
        if has_hooks {
            self.run_cancel_hooks();
        }
        self.end_if_queued(queued);
        if tell_owner {
            self.control(Control::Cancel, 1);
        }
        CancelStatus::Requested
    }

    /// A job still waiting for a slot under the cap (its ticket and slot,
    /// taken from it) ends now, unrun, as a created one does; once a thread
    /// has taken it, its worker decides.
    pub(super) fn end_if_queued(&self, queued: Option<(Ticket, WorkerSlot)>) {
        if let Some((ticket, slot)) = queued
            && let Some(task) = self.0.pool.withdraw(ticket)
        {
            drop(task);
            let worker = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(worker) = worker {
                self.end_unstarted(worker);
            }
        }
    }

    /// libxl's design: takes the hooks off one at a time, in registration order, and
    /// calls each once with no lock held. Only the thread whose cancel was the
    /// first gets here; hooks registered from now on run at once instead. The
    /// worker's end takes whatever is left, uncalled (see `worker_done`).
    pub(super) fn run_cancel_hooks(&self) {
        loop {
            let (id, hook) = {
                let mut st = self.0.lock();
                let Some(next) = st.cancel.hooks.pop_front() else {
                    return;
                };
                st.cancel.busy_hooks.push((next.0, current_thread_id()));
                next
            };
            self.call_hook(id, hook);
        }
    }

    /// Calls one hook that `busy_hooks` lists (as `id` on this thread), then
    /// takes it off the list and wakes whoever waits for it: a remove, or the
    /// worker's end.
    pub(super) fn call_hook(&self, id: HookId, hook: HookFn) {
        let inner = &self.0;
        // A panicking Rust hook must not stay listed (a remove or the job's
        // end would wait for it forever) nor stop the hooks after it.
        let _ = catch_unwind(AssertUnwindSafe(|| hook(self)));
        {
            let mut st = inner.lock();
            let me = current_thread_id();
            if let Some(pos) = st.cancel.busy_hooks.iter().position(|&e| e == (id, me)) {
                st.cancel.busy_hooks.swap_remove(pos);
            }
        }
        inner.cv.notify_all();
        log::debug(format_args!("job {} cancel hook {id} ran", inner.id));
    }

    /// Registers a cancellation hook: anything the worker waits on (a timer, a
    /// child process, an fd) registers one, and cancel calls it once, on the
    /// cancelling thread, with no lock held. If cancel was already requested it
    /// runs at once on this thread instead, and [`HookAdded::RanAtOnce`] says so
    /// — unless the request is a soft one ([`Job::cancel_soft`]): then it is
    /// registered, for a later force cancel to call.
    /// Hooks still registered when the job ends are dropped, not called.
    /// Refused once the job has ended.
    pub fn add_cancel_hook<F>(&self, hook: F) -> Result<HookAdded, Error>
    where
        F: FnOnce(&Job) + Send + 'static,
    {
        let mut st = self.0.lock();
        st.check(Verb::Update)?;
        if st.cancel.requested && !st.cancel.soft {
            // Listed while it runs, as the cancel's own calls are: the job
            // does not end under it. As id 0, which no remove waits for (the
            // caller has no id to remove it by).
            st.cancel.busy_hooks.push((0, current_thread_id()));
            drop(st);
            self.call_hook(0, Box::new(hook));
            return Ok(HookAdded::RanAtOnce);
        }
        st.cancel.next_hook += 1;
        let id = st.cancel.next_hook;
        st.cancel.hooks.push_back((id, Box::new(hook)));
        Ok(HookAdded::Registered(id))
    }

    /// Removes a hook. When this returns, the hook is not running and will not
    /// run: a hook being called on another thread is waited for. Called from
    /// inside the hook itself (or from anything it calls on its thread), it
    /// returns at once instead of waiting for itself. Id 0 is never a hook's
    /// (ids start at 1): `NotFound` at once.
    pub fn remove_cancel_hook(&self, id: HookId) -> HookRemoved {
        // A hook run at once by `add_cancel_hook` is listed in `busy_hooks`
        // as 0 (it never got an id): a remove of 0 must not wait for those,
        // or two of them removing "themselves" wait for each other for ever.
        if id == 0 {
            return HookRemoved::NotFound;
        }
        let inner = &self.0;
        let mut st = inner.lock();
        if let Some(pos) = st.cancel.hooks.iter().position(|(i, _)| *i == id) {
            let removed = st.cancel.hooks.remove(pos);
            drop(st);
            drop(removed);
            return HookRemoved::Removed;
        }
        let me = current_thread_id();
        while st
            .cancel
            .busy_hooks
            .iter()
            .any(|&(running, thread)| running == id && thread != me)
        {
            st = inner.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        HookRemoved::NotFound
    }
}

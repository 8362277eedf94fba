//! A job's life: start, the worker's run, its end (the outcome rules,
//! transactions' finalization), results, waits for the end, release, detach.

use super::*;
use crate::core::context::Wake;
use crate::core::threads;

impl Job {
    /// Starts the worker of a created job on a thread of the job's pool. Under
    /// the pool's cap ([`Pool::set_max_running`]) it may wait in the pool's queue,
    /// already `Running`; a cancel then ends it unrun.
    ///
    /// Errors: `NotAllowed` unless `Created` (and not being cancelled);
    /// `TryAgain` if no thread could be started, in which case the job stays
    /// `Created` (or ends `Cancelled` if a cancel arrived meanwhile).
    pub fn start(&self) -> Result<(), Error> {
        let inner = &self.0;
        // The job's lock is held across the spawn, so nobody ever sees RUNNING
        // before the thread exists, nor a RUNNING job fall back to CREATED when
        // the spawn fails. It is safe: the new thread takes this lock only after
        // we let go of it, and the pool never takes a job's lock.
        if inner.stack_size > crate::core::threads::MAX_STACK_SIZE {
            return Err(Error::InvalidArgument("stack size over MAX_STACK_SIZE"));
        }
        let mut st = inner.lock();
        st.check(Verb::Start)?;
        if st.deadline.at_ns.is_some()
            && let Err(e) = timer::ensure_running()
        {
            // Refused rather than run without its deadline; still CREATED.
            drop(st);
            self.log_no_timer(&e);
            return Err(Error::TryAgain);
        }
        let worker = self.begin_start(&mut st)?;
        if inner.external {
            // No thread: the owner drives the job from here on.
            self.arm_deadline(&mut st);
            // Kept (never called) until the owner's end drops it.
            st.work.worker = Some(worker);
            // A cancel recorded before this start (born under a cancelled
            // parent, or in its create's window) is told now, once.
            let cancelled = st.cancel.requested;
            drop(st);
            log::debug(format_args!(
                "job {} '{}' started (external)",
                inner.id, inner.name
            ));
            if cancelled {
                self.control(Control::Cancel, 1);
            }
            return Ok(());
        }
        // The slot lets a failed spawn give the worker itself back (the task that
        // comes back is opaque).
        let slot: WorkerSlot = Arc::new(Mutex::new(Some(worker)));
        let job = self.clone();
        let task_slot = slot.clone();
        let spawned = inner.pool.submit(
            &inner.name,
            inner.stack_size,
            Box::new(move || {
                let worker = task_slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(worker) = worker {
                    job.run(worker);
                }
                job.drop_on_worker();
            }),
        );
        match spawned {
            Ok(submitted) => {
                let launch = match submitted {
                    Submitted::Running(launch) => Some(launch),
                    Submitted::Queued(ticket) => {
                        st.work.queued = Some((ticket, slot));
                        None
                    }
                };
                // Queued with its cancel requested already (born cancelled,
                // or cancelled in its create's window): it ends unrun, as a
                // queued job cancelled now does.
                let withdraw = st.cancel.requested && st.work.queued.is_some();
                self.arm_deadline(&mut st);
                // The RUNNING event is delivered once the thread is awake.
                let defer = events::DeferScope::enter();
                drop(st);
                // Wakes the thread only now, so it never runs into our lock.
                drop(launch);
                drop(defer);
                log::debug(format_args!(
                    "job {} '{}'{} started",
                    inner.id,
                    inner.name,
                    op_label(&inner.operation)
                ));
                if withdraw {
                    let queued = inner.lock().work.queued.take();
                    self.end_if_queued(queued);
                }
                Ok(())
            }
            Err((e, task)) => {
                st.life = Life::Created;
                st.clock.started_ns = None;
                st.work.worker = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                drop(st);
                // Holds only a clone of this job and the (now empty) slot.
                drop(task);
                log::debug(format_args!(
                    "job {} '{}' could not start a thread: {e}",
                    inner.id, inner.name
                ));
                Err(Error::TryAgain)
            }
        }
    }

    /// The worker task's last step: its reference to the job goes. When it
    /// is the last one and the job's end listed the thread idle (or gave it
    /// its next work: see `publish_end`), the job's drop runs on another pool
    /// thread if it may run user code — the "freed" line to a log sink
    /// installed since the end — so nothing handed to this thread waits
    /// behind it (a result, whose free function is the other such code,
    /// kept the end from settling early).
    fn drop_on_worker(self) {
        // The sink first: one atomic load where the thread's record is a
        // thread-local's lookup.
        if log::has_sink() && threads::task_settled_early() {
            self.drop_elsewhere_if_last();
        }
    }

    /// [`Job::drop_on_worker`]'s hand-off, out of line: the job taken out of
    /// its last reference is a kilobyte on the stack, and inlined into the
    /// worker task's frame it pushed every frame above it (the worker's
    /// included) a page deeper: +4 KiB of RSS per running job (the scale
    /// benchmark's memory per job, 10.9 -> 15.0 KiB).
    #[cold]
    #[inline(never)]
    fn drop_elsewhere_if_last(self) {
        let Some(inner) = Arc::into_inner(self.0) else {
            return;
        };
        let (pool, name) = (inner.pool, inner.name.clone());
        if let Err((_, task)) = pool.spawn(&name, 0, Box::new(move || drop(inner))) {
            task();
        }
    }

    /// The job becomes `Running` and its worker is taken to be run. Refused
    /// unless `Created`, or while another thread is cancelling it.
    pub(super) fn begin_start(&self, st: &mut St) -> Result<WorkerFn, Error> {
        st.check(Verb::Start)?;
        if st
            .work
            .start_pending
            .is_some_and(|t| t != current_thread_id())
        {
            return Err(Error::NotAllowed {
                verb: Verb::Start,
                state: State::Running,
            });
        }
        let Some(worker) = st.work.worker.take() else {
            // Being cancelled by another thread right now.
            return Err(Error::NotAllowed {
                verb: Verb::Start,
                state: State::Cancelled,
            });
        };
        st.life = Life::Running;
        st.work.start_pending = None;
        st.clock.started_ns = Some(self.0.now_ns());
        Ok(worker)
    }

    /// `make loom`: what [`Job::start`] does up to handing the worker to the
    /// pool. The model runs it with [`Job::run_for_model`] on a loom thread
    /// (the pool's threads are real ones, which loom cannot schedule).
    #[cfg(all(test, loom))]
    pub(in crate::core) fn start_for_model(&self) -> WorkerFn {
        self.begin_start(&mut self.0.lock()).expect("a created job")
    }

    /// `make loom`: the worker thread's body, as a pool thread runs it.
    #[cfg(all(test, loom))]
    pub(in crate::core) fn run_for_model(&self, worker: WorkerFn) {
        self.run(worker);
    }

    /// The worker thread's body: run, then decide the outcome (docs/design.md).
    pub(super) fn run(&self, worker: WorkerFn) {
        let w = Worker { job: self };
        let scope = WorkerScope::enter(self);
        // The closure is consumed by the call, so everything it captured (the C
        // userdata and its free function) is dropped before the outcome is
        // published: a waiter that wakes sees the free done.
        // A panic payload is user data: turned into a message and dropped here,
        // before the job's lock is taken.
        let returned = match catch_unwind(AssertUnwindSafe(|| worker(&w))) {
            Ok(r) => Returned::Value(r),
            Err(payload) => Returned::Panicked(JobError::new(
                EIO,
                format!("worker panicked: {}", panic_message(&payload)),
            )),
        };
        drop(scope);
        let returned = match self.end_plain(returned) {
            Ok(()) => return,
            Err(returned) => returned,
        };
        // The worker has returned: its cap slot is free for a queued job
        // while this thread ends the job (user code may run in that end).
        threads::release_cap_slot_now();
        // Children the worker left running are killed and reaped before the
        // job ends: none outlives it, none is left a zombie.
        let children = self.0.lock().work.children.take().unwrap_or_default();
        for child in children.into_values() {
            child.reap_now();
        }
        let (life, error) = {
            let st = self.0.lock();
            outcome::worker_outcome(
                returned,
                st.end.finish_status,
                st.end.declared,
                st.cancel.requested,
            )
        };
        self.worker_done(life, error, true);
    }

    /// The end of a plain job, in one hold of its lock: a job on its own with
    /// no event callback, no child process or sub-job left, no parent to
    /// leave, no hook, no control callback, no transaction, no manual
    /// finalize and no commit, abort or clean callback. What `worker_done`,
    /// `finalize_group` and `settle` would do for it in seven holds, three
    /// clock reads and a `Vec`, done at once, with the same outcome rules:
    /// it becomes terminal, its completion is queued (or run here last, when
    /// it has no context), the context's fd is signalled as soon as the lock
    /// is let go, then waiters are woken.
    /// It never shows `Waiting` (nothing could be seen there: no event
    /// callback, nothing to wait for). Any other job gets `returned` back,
    /// for the general path.
    fn end_plain(&self, returned: Returned) -> Result<(), Returned> {
        let inner = &self.0;
        let mut st = inner.lock();
        // `&`, not `&&`: every field is read anyway, and one branch on the
        // whole is cheaper than fourteen on a cold path (after a worker's
        // sleep, little of this is cached or predicted).
        let plain = st.events.is_none()
            & st.work.children.as_ref().is_none_or(HashMap::is_empty)
            & (st.family.live_children == 0)
            & st.family.holds.is_none()
            & st.cancel.hooks.is_empty()
            & st.cancel.busy_hooks.is_empty()
            & st.control.is_none()
            & st.control_busy.is_empty()
            & st.finalize.txn.is_none()
            & !st.finalize.manual
            & !st.finalize.claimed
            & st.finalize.commit.is_none()
            & st.finalize.abort.is_none()
            & st.finalize.clean.is_none();
        if !plain {
            return Err(returned);
        }
        st.work.children = None;
        let (outcome, error) = outcome::worker_outcome(
            returned,
            st.end.finish_status,
            st.end.declared,
            st.cancel.requested,
        );
        let now = inner.now_ns();
        inner.end_user_pause(&mut st, now);
        st.deadline.disarm();
        st.pauses.internal = 0;
        st.clock.finished_ns = Some(now);
        // Claimed and finalized as `finalize_group` does a group of one.
        st.finalize.claimed = true;
        let abort = outcome::group_abort(outcome, CancelCause::None);
        let end = outcome::member_end(Some((outcome, error)), abort, st.cancel.cause);
        if let Some(cause) = end.cancelled_with {
            st.cancel.requested = true;
            st.cancel.cause = cause;
            inner.set_attention(ATTN_CANCEL);
        }
        let pending = self.publish_end(st, end.state, end.error, true);
        match pending {
            Some(Undelivered::Dropped(run)) => drop(run),
            // No context: its own worker thread runs it, last.
            Some(Undelivered::Direct(run)) => run(),
            None => {}
        }
        Ok(())
    }

    /// The worker has returned with `outcome` (or a created job was
    /// cancelled): the job waits in `Waiting` while its transaction settles or
    /// for a manual finalize; a job on its own with nothing to wait for is
    /// finalized at once.
    pub(super) fn worker_done(&self, outcome: State, error: Option<JobError>, on_worker: bool) {
        let inner = &self.0;
        let (unused_hooks, txn, finalize_now, control) = {
            let mut st = inner.lock();
            // The one place a job's hooks end. Those nobody called are taken
            // (and dropped uncalled, with no lock held); one being called on
            // another thread right now, by a cancel that took it before the
            // worker returned, is waited for. So no hook runs, or is still
            // running, once anyone can see the job's work done.
            let mut hooks = Vec::new();
            // No control call starts once the end has begun (the header:
            // none once the worker returned or `bgjob_job_end` was called);
            // taken before the wait below, or verbs racing it on other
            // threads could keep a call running for ever and the end would
            // wait for ever.
            let control = st.control.take();
            loop {
                hooks.extend(st.cancel.hooks.drain(..));
                // A control call on another thread is waited for too: none
                // comes after the end has been seen.
                if !st.cancel.hook_busy_elsewhere() && !Job::control_busy_elsewhere(&st) {
                    break;
                }
                st = inner.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            // A user pause ends with the work, and so does active time (a
            // held parent's work ended at its first pass).
            let now = inner.now_ns();
            inner.end_user_pause(&mut st, now);
            st.clock.finished_ns.get_or_insert(now);
            if outcome::held_for_children(st.family.live_children) {
                // Sub-jobs: WAITING until the last child is terminal; that
                // child's end calls this again with the same outcome. The
                // work is done all the same: its hooks and control callback
                // end here, as for any job (a later cancel still reaches the
                // children, and calls neither).
                st.family.held = Some((outcome, error));
                st.life = Life::Waiting;
                drop(st);
                drop(hooks);
                drop(control);
                inner.cv.notify_all();
                return;
            }
            st.deadline.disarm();
            st.finalize.pending = Some((outcome, error));
            let txn = st.finalize.txn.clone();
            // On its own, a success waiting for a manual finalize is PENDING
            // at once; a member is WAITING until its transaction says the
            // whole group is done (Txn::member_done).
            let manual_wait = txn.is_none() && outcome == State::Completed && st.finalize.manual;
            st.life = if manual_wait {
                Life::Pending
            } else {
                Life::Waiting
            };
            inner.set_attention(ATTN_DONE);
            let finalize_now =
                txn.is_none() && !manual_wait && !std::mem::replace(&mut st.finalize.claimed, true);
            (hooks, txn, finalize_now, control)
        };
        drop(unused_hooks);
        // The control callback's userdata is freed here, after its last call
        // (one still running on this thread holds it until it returns).
        drop(control);
        inner.cv.notify_all();
        let worker_of = on_worker.then_some(self);
        if let Some(txn) = txn {
            txn.member_done(self, outcome, worker_of);
        } else if finalize_now {
            let abort = outcome::group_abort(outcome, CancelCause::None);
            finalize_group(vec![self.clone()], abort, worker_of);
        }
    }

    /// Publishes a terminal state and queues the completion on its context.
    /// A completion without a context is returned, for [`finalize_group`] to
    /// run once every member of the group is terminal. Called once per job,
    /// by the thread that finalizes its group.
    #[must_use = "a completion without a context must be run"]
    pub(super) fn settle(
        &self,
        life: Life,
        error: Option<JobError>,
    ) -> Option<Box<dyn FnOnce() + Send>> {
        let inner = &self.0;
        let now = inner.now_ns();
        let mut st = inner.lock();
        inner.end_user_pause(&mut st, now);
        st.deadline.disarm();
        // Internal pauses still in force can never be balanced now (the verb
        // table refuses them once the job has ended): they end with it.
        st.pauses.internal = 0;
        st.clock.finished_ns.get_or_insert(now);
        let state = match life {
            Life::Done(s) => s,
            _ => unreachable!("settle is only given terminal states"),
        };
        let pending = self.publish_end(st, state, error, false);
        match pending {
            // Its context was closed: dropped unrun, its free functions run here.
            Some(Undelivered::Dropped(run)) => {
                drop(run);
                None
            }
            Some(Undelivered::Direct(run)) => Some(run),
            None => None,
        }
    }

    /// The last step of every end, in the hold `st` that made it: the final
    /// error and terminal state written, the completion taken (see
    /// [`Self::queue_completion`]), then the lock let go, the end logged, and
    /// the context's fd signalled with no lock held (its dispatcher, woken at
    /// once, runs into neither the job's nor the queue's lock, while this
    /// thread wakes waiters — free when none wait). `own_end`: the worker's
    /// own end on its pool thread, which settles the thread's task first
    /// ([`threads::settle_task_now`]).
    pub(super) fn publish_end(
        &self,
        mut st: StGuard<'_>,
        state: State,
        error: Option<JobError>,
        own_end: bool,
    ) -> Option<Undelivered> {
        let inner = &self.0;
        let recorded = st.end.error.take();
        st.end.error = outcome::final_error(state, error, recorded);
        st.life = Life::Done(state);
        inner.set_attention(ATTN_DONE);
        let (wake, pending) = self.queue_completion(&mut st);
        // The task's last step may drop the job's last reference (its
        // completion dispatched and its handle released first), and that
        // drop runs user code when the job still holds a result (its free
        // function) or a log sink is installed (the "freed" line): the thread
        // must not be listed idle then, or a job handed to it would wait
        // behind that code. (A sink installed after this check still gets
        // that line there.)
        let quiet = st.result.is_none() && !log::has_sink();
        let settle_early = own_end && quiet && wake.is_some();
        drop(st);
        if own_end && !settle_early && (pending.is_some() || !quiet) {
            // User code is left to run here (the log line below, a
            // completion, a free function): only the cap slot is let go, so
            // no queued job waits behind it.
            threads::release_cap_slot_now();
        }
        log::debug(format_args!(
            "job {} '{}'{} {state}",
            inner.id,
            inner.name,
            op_label(&inner.operation)
        ));
        // On a pool thread, the worker's own end: the thread lists itself
        // idle (or takes its next work) first, then signals (and wakes
        // waiters). The dispatcher woken most often shares this CPU (a
        // wake-up lands on the waker's), so it could not run before the
        // thread gives the CPU up anyway; listed idle, the thread yields it
        // at once, and the dispatcher finds it idle for the next job it
        // starts (waking it is then a store). What is left of the task (its
        // return, the drops of its captures) runs after. Not with a
        // completion left to run here (no context) or to drop (a closed
        // context): that is user code, which must not run on a thread
        // listed idle. No yield when the thread has its next work: in a
        // burst the fd wakes nobody (the dispatcher is busy), and a yield
        // per job cost the pinned burst.
        let idle = if settle_early {
            threads::settle_task_now()
        } else {
            None
        };
        let signalled = wake.is_some_and(Wake::signal);
        inner.cv.notify_all();
        if signalled && idle == Some(true) {
            std::thread::yield_now();
        }
        pending
    }

    /// Takes the completion of a job made terminal in this hold: queued on its
    /// context (the returned `Wake` signals the fd once dropped, after every
    /// lock is let go), or handed back to be run (no context) or dropped (a
    /// closed context). A context completion is queued in the same step that
    /// makes the job terminal, so a caller whose wait returned finds it
    /// queued. Lock order is job, then context queue; nothing takes them the
    /// other way round.
    fn queue_completion(&self, st: &mut St) -> (Option<Wake>, Option<Undelivered>) {
        let mut wake = None;
        let pending = st.completion.take().and_then(|(context, f)| {
            // The job's events (END last) go first; a job with no event
            // callback (none can be added once it exists) has none to wait
            // for, and runs it with no lock and no second box.
            let (job, events) = (self.clone(), st.events.is_some());
            let run: Box<dyn FnOnce() + Send> = Box::new(move || job.run_completion(f, events));
            let Some(ctx) = context else {
                return Some(Undelivered::Direct(run));
            };
            match ctx.post(run) {
                Ok(w) => {
                    wake = Some(w);
                    None
                }
                Err(run) => Some(Undelivered::Dropped(run)),
            }
        });
        (wake, pending)
    }

    /// Runs the completion `f` of this ended job on this thread: after the
    /// job's queued events (END last) are delivered when it has an event
    /// callback (`events`) — and, when due inside one of its own event
    /// callbacks (an external job ended there), once that delivery is over.
    fn run_completion(self, f: CompleteFn, events: bool) {
        if events {
            let j = self.clone();
            self.after_events(Box::new(move || f(&j)));
        } else {
            f(&self);
        }
    }

    /// Runs a completion without a context on a bgjob thread of its own: the
    /// job's end was not its worker's return (it never ran, a verb on another
    /// thread ended it, or it is a transaction member another member's end
    /// settled), and the callback must run neither inside that verb nor on
    /// another job's thread. With no thread to be had (EAGAIN) it runs here,
    /// late rather than never (documented with bgjob_completion_callback).
    pub(super) fn spawn_completion(&self, run: Box<dyn FnOnce() + Send>) {
        if let Err((_, run)) = self.0.pool.spawn(&self.0.name, 0, run) {
            run();
        }
    }

    /// Leaves a result for the caller, replacing (and dropping) an earlier one.
    /// Allowed while the job may still update (see [`Verb::Update`]).
    pub fn set_result(&self, value: ResultValue) -> Result<(), Error> {
        let old = {
            let mut st = self.0.lock();
            st.check(Verb::Update)?;
            st.result.replace(value)
        };
        drop(old);
        Ok(())
    }

    /// Runs `f` on the result, if there is one, once the job has ended (refused
    /// before: the worker could still replace it). `f` runs under the job's lock:
    /// keep it short and do not call back into this job.
    pub fn with_result<R>(&self, f: impl FnOnce(Option<&ResultValue>) -> R) -> Result<R, Error> {
        let st = self.0.lock();
        st.check(Verb::Result)?;
        Ok(f(st.result.as_ref()))
    }

    /// Takes the result out once the job has ended; the job no longer owns or
    /// drops it.
    pub fn take_result(&self) -> Result<Option<ResultValue>, Error> {
        let mut st = self.0.lock();
        st.check(Verb::Result)?;
        Ok(st.result.take())
    }

    /// For a transaction cancelling a member whose work is done: records the
    /// cancel. False if it had been requested already.
    pub(in crate::core) fn mark_cancelled_waiting(&self, cause: CancelCause) -> bool {
        let mut st = self.0.lock();
        if st.cancel.requested {
            return false;
        }
        st.cancel.requested = true;
        st.cancel.cause = cause;
        self.0.set_attention(ATTN_CANCEL);
        true
    }

    /// For a transaction whose every member's work is done and succeeded,
    /// waiting for a manual finalize: the member turns from `Waiting` to
    /// `Pending`. Called under the transaction's lock (its lock, then the
    /// member's: the documented order).
    pub(in crate::core) fn mark_pending(&self) {
        let mut st = self.0.lock();
        if st.life == Life::Waiting {
            st.life = Life::Pending;
        }
        drop(st);
        self.0.cv.notify_all();
    }

    /// For [`Txn::add`]: makes a created job a member of `txn`.
    pub(in crate::core) fn join_txn(&self, txn: &Txn) -> Result<(), Error> {
        let mut st = self.0.lock();
        if st.life != Life::Created || st.cancel.requested {
            return Err(Error::NotAllowed {
                verb: Verb::Start,
                state: st.state(),
            });
        }
        if st.finalize.txn.is_some() {
            return Err(Error::InvalidArgument(
                "the job is in a transaction already",
            ));
        }
        st.finalize.txn = Some(txn.clone());
        Ok(())
    }

    /// Manual finalize: once the job's work is done (and, in a transaction,
    /// every member's), commit (or abort) and clean run on this thread and the
    /// job ends. Called on a member whose transaction is still running, it
    /// asks for the transaction to be finalized as soon as it can be. Allowed
    /// only in `Pending` and `Waiting`.
    pub fn finalize(&self) -> Result<(), Error> {
        // An external job its owner reported PENDING: forwarded (owner.rs).
        let mut st = loop {
            if let Some(r) = self.finalize_external() {
                return r;
            }
            let st = self.0.lock();
            // The owner may have reported a state since `finalize_external`
            // let go of the lock (a report only moves forward): forward then,
            // never finalize here a job whose owner has not ended it.
            if !(self.0.external && st.life == Life::Running && st.owner.reported.is_some()) {
                break st;
            }
        };
        st.check(Verb::Finalize)?;
        if st.family.held.is_some() {
            // Waiting for its children, not for a finalize.
            return Err(Error::NotAllowed {
                verb: Verb::Finalize,
                state: st.state(),
            });
        }
        if let Some(txn) = st.finalize.txn.clone() {
            drop(st);
            return txn.finalize();
        }
        let state = st.state();
        if std::mem::replace(&mut st.finalize.claimed, true) {
            return Err(Error::NotAllowed {
                verb: Verb::Finalize,
                state,
            });
        }
        let outcome = st
            .finalize
            .pending
            .as_ref()
            .map_or(State::Cancelled, |p| p.0);
        let abort = outcome::group_abort(outcome, st.cancel.cause);
        drop(st);
        finalize_group(vec![self.clone()], abort, None);
        Ok(())
    }

    /// Waits until the job is terminal, or `timeout` passes (`None` = forever).
    /// A timeout too large to represent waits forever. Returns the final state.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<State, Error> {
        let inner = &self.0;
        if self.on_own_worker() {
            return Err(Error::OwnWorker);
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = inner.lock();
        // The job does not end while one of its hooks runs: from inside one
        // this would wait for itself.
        if st.cancel.in_own_hook() {
            return Err(Error::OwnWorker);
        }
        loop {
            if let Life::Done(s) = st.life {
                return Ok(s);
            }
            st = match deadline {
                None => inner.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(Error::TimedOut);
                    }
                    inner
                        .cv
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Releases the job (the C API's destroy): allowed when it has ended or never
    /// started. A created job is cancelled, so its worker never runs. Its result
    /// is dropped now. Refused while the worker may still run.
    pub fn release(&self) -> Result<(), Error> {
        self.begin_release().map(drop)
    }

    /// The deciding half of [`Job::release`], under one hold of the job's lock so
    /// no start can slip in between the check and the cancel of a created job.
    /// The returned [`Release`] does the rest (dropping the worker, settling,
    /// dropping the result) when dropped: the caller may hold its own locks now
    /// and drop it after letting go of them.
    pub fn begin_release(&self) -> Result<Release, Error> {
        let mut st = self.0.lock();
        st.check(Verb::Destroy)?;
        let mut release = Release {
            job: self.clone(),
            worker: None,
            wait: false,
        };
        if st.life == Life::Created {
            match self.take_unstarted(&mut st) {
                Some(worker) => release.worker = Some(worker),
                // Another thread is cancelling it right now (it only drops the
                // closure), so the wait in Release::drop is short. From inside
                // one of the hooks that cancel is calling, the job ends when
                // the hook returns: waiting here would never end.
                None => release.wait = !st.cancel.in_own_hook(),
            }
        }
        Ok(release)
    }

    /// Marks a created job cancelled and takes its worker, so no start can run
    /// it; [`Job::end_unstarted`] finishes the job with no lock held.
    pub(super) fn take_unstarted(&self, st: &mut St) -> Option<WorkerFn> {
        st.cancel.requested = true;
        if st.cancel.cause == CancelCause::None {
            st.cancel.cause = CancelCause::Caller;
        }
        st.sync_wake();
        self.0.set_attention(ATTN_CANCEL);
        st.work.worker.take()
    }

    pub(super) fn end_unstarted(&self, worker: WorkerFn) {
        drop(worker);
        // Its cancel reaches its children as any cancel does.
        self.cancel_children();
        log::debug(format_args!("job {} cancelled before start", self.0.id));
        self.worker_done(State::Cancelled, None, false);
    }

    /// Whether `verb` is allowed in the job's current state (the verb table).
    pub fn check(&self, verb: Verb) -> Result<(), Error> {
        self.0.lock().check(verb)
    }

    /// Checks that the job may be detached, then cancels it if asked, or else
    /// lets it run. Detaching an ended job releases it. The job's memory is
    /// freed when its worker ends and the last reference is gone.
    ///
    /// Nobody holds a handle that could resume, finalize or balance it later,
    /// so a detached job always ends by itself: a user pause (an error stop
    /// included) is undone, internal pauses are dropped, and its manual
    /// finalize — its transaction's too, if it is a member — becomes automatic:
    /// it finalizes as soon as its work (every member's) is done, committing
    /// or aborting as the outcome says.
    pub fn detach(&self, cancel: bool) -> Result<(), Error> {
        let inner = &self.0;
        let now = inner.now_ns();
        let mut resumed = false;
        let (ended, txn, was_manual) = {
            let mut st = inner.lock();
            st.check(Verb::Detach)?;
            st.detached = true;
            let was_manual = std::mem::replace(&mut st.finalize.manual, false);
            // With cancel, the cancel undoes the pauses (and the worker sees
            // the cancel, not a resume, at its pause point).
            if !cancel && !st.state().is_terminal() {
                resumed = st.halted();
                inner.end_user_pause(&mut st, now);
                st.pauses.internal = 0;
                inner.repause(&mut st, now);
                st.sync_wake();
                self.arm_deadline(&mut st);
            }
            (
                st.state().is_terminal(),
                st.finalize.txn.clone(),
                was_manual,
            )
        };
        inner.cv.notify_all();
        if ended {
            return self.release();
        }
        if was_manual {
            // An external job's finalize is its owner's to make (owner.rs).
            self.finalize_on_detach();
        }
        if resumed {
            self.control(Control::Resume, 0);
        }
        if let Some(txn) = txn {
            txn.finalize_on_its_own();
        }
        if cancel {
            self.cancel();
        }
        // A job whose work is done (or that the cancel just ended with its
        // work done) waits for a finalize nobody will call: it finalizes now.
        // Refused harmlessly when the cancel finalized it, or when it is
        // already being finalized.
        if matches!(inner.lock().life, Life::Waiting | Life::Pending) {
            let _ = self.finalize();
        }
        log::debug(format_args!("job {} detached", self.0.id));
        Ok(())
    }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

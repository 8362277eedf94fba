//! The job's state under its one lock, grouped by concern: a reader finds each
//! concern's fields (and the small rules that only read them) in one place.
//! One lock guards all of it ([`super::Inner::st`]); the groups are plain
//! structs inside [`St`], not locks of their own.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Life {
    Created,
    Running,
    /// The worker has returned (or never will run); its outcome waits for the
    /// rest of its transaction (or, only for as long as the finalization
    /// takes, for nothing).
    Waiting,
    /// The work of the job and of its whole transaction is done and
    /// succeeded; the job waits for a manual finalize.
    Pending,
    Done(State),
}

/// Where a started job's worker waits for its thread.
pub(super) type WorkerSlot = Arc<Mutex<Option<WorkerFn>>>;

pub(super) struct St {
    pub(super) life: Life,
    /// The worker and what it runs with: its closure, its place in the pool's
    /// queue, its child processes.
    pub(super) work: Work,
    /// Start, pause and end times: the job's active-time clock.
    pub(super) clock: Clock,
    /// User and internal pauses, and the error policy that turns an I/O error
    /// into a user pause.
    pub(super) pauses: Pauses,
    /// Cancel request, its cause and the cancellation hooks.
    pub(super) cancel: Cancel,
    /// What the worker said about its own end before returning.
    pub(super) end: End,
    /// Transaction membership, manual finalize and the finalization callbacks.
    pub(super) finalize: Finalize,
    /// The active-time deadline and its timer.
    pub(super) deadline: Deadline,
    /// READY and the complete verb (QEMU's `job_transition_to_ready`,
    /// `job_complete`).
    pub(super) ready: Ready,
    /// Detached: nobody holds a handle that could resume it, so a pause that
    /// raced the detach (a caller who looked the job up just before) is refused.
    pub(super) detached: bool,
    /// Parent and children (sub-jobs).
    pub(super) family: super::family::Family,
    /// Readable while cancel is requested or a pause is in force; made on
    /// first use ([`Job::wake_fd`]).
    pub(super) wake: Option<Arc<EventFd>>,
    /// Taken (once) when the job settles.
    pub(super) completion: Option<(Option<Context>, CompleteFn)>,
    pub(super) result: Option<ResultValue>,
    /// The event callback and its queue ([`super::events`]), if the job has one.
    pub(super) events: Option<super::Events>,
    /// The control callback; dropped once the job's work is done (after the
    /// last call: the worker's end waits for calls on other threads).
    pub(super) control: Option<ControlFn>,
    /// The threads calling the control callback right now.
    pub(super) control_busy: Vec<ThreadId>,
    /// The speed limit (bytes/s, 0 = unlimited), forwarded as SET_SPEED.
    pub(super) speed: u64,
    /// What an external job's owner reported (WAITING, PENDING, ABORTING),
    /// the finalize forwarded to it, and the last verb it said failed.
    pub(super) owner: super::owner::Owner,
}

pub(super) struct Work {
    /// The closure, until it is started (or dropped unrun).
    pub(super) worker: Option<WorkerFn>,
    /// Started but waiting for a slot under the pool's cap: the queue ticket and
    /// the worker's slot, so a cancel can take it back unrun.
    pub(super) queued: Option<(Ticket, WorkerSlot)>,
    /// Its create starts it next ([`Builder::start_at_once`]): visible
    /// already (a lookup, a parent's cancel flowing down), a cancel before
    /// that start is recorded and the worker runs with it, as a job born
    /// under a cancelled parent does; it does not end the job inside its
    /// create. Cleared by the start. The creating thread: a start on any
    /// other (a lookup's, in that moment) is refused, as for a started job.
    pub(super) start_pending: Option<ThreadId>,
    /// Child processes bound to the job, by pid; `None` once the worker has
    /// returned (its children were reaped, no new one may be bound).
    pub(super) children: Option<HashMap<i32, Arc<Child>>>,
}

pub(super) struct Clock {
    /// Job-clock time the worker started.
    pub(super) started_ns: Option<i64>,
    /// Total time spent in finished pauses.
    pub(super) paused_ns: i64,
    /// Job-clock time the job stopped running (user or internal pause);
    /// `Some` exactly while it is halted.
    pub(super) halted_since_ns: Option<i64>,
    pub(super) finished_ns: Option<i64>,
}

pub(super) struct Pauses {
    /// A user pause is in force (QEMU's `user_paused`).
    pub(super) user: bool,
    /// Internal pauses in force (QEMU's `pause_count` without the user's).
    pub(super) internal: u32,
    /// Not `Ok` only while an I/O error holds the job user-paused.
    pub(super) iostatus: IoStatus,
    pub(super) error_policy: ErrorPolicy,
}

pub(super) struct Cancel {
    pub(super) requested: bool,
    /// The request is a soft one (QEMU's `block-job-cancel` without force on
    /// a ready job): the worker finishes without pivoting; its hooks were not
    /// called. A later force cancel clears it.
    pub(super) soft: bool,
    pub(super) cause: CancelCause,
    /// Cancellation hooks in registration order.
    pub(super) hooks: std::collections::VecDeque<(HookId, HookFn)>,
    pub(super) next_hook: HookId,
    /// The hooks being called right now, each with the thread calling it (id
    /// 0: one that ran at once as it was added). The worker's end waits until
    /// this is empty, so no hook runs once the job is seen done.
    pub(super) busy_hooks: Vec<(HookId, ThreadId)>,
}

pub(super) struct End {
    /// A status recorded with [`Job::finish`] before the worker returned.
    pub(super) finish_status: Option<i32>,
    /// The outcome the worker declared once, before returning
    /// ([`Job::declare`]): it is the job's end, whatever comes after.
    pub(super) declared: Option<Declared>,
    /// The error recorded by the worker (set_error, an I/O error report), and
    /// once the job has ended, its final error.
    pub(super) error: Option<JobError>,
    /// An external job's owner has ended it ([`Job::end`]).
    pub(super) external_ended: bool,
    /// For the C layer: handles its owner detached while other references
    /// lived, released once the owner's end returned ([`Job::release_at_end`]).
    pub(super) release_at_end: Vec<usize>,
}

pub(super) struct Finalize {
    pub(super) manual: bool,
    /// The transaction the job belongs to.
    pub(super) txn: Option<Txn>,
    /// Commit, abort and clean callbacks (run once, at finalization).
    pub(super) commit: Option<HookFn>,
    pub(super) abort: Option<HookFn>,
    pub(super) clean: Option<HookFn>,
    /// The worker's outcome while the job is `Waiting`.
    pub(super) pending: Option<(State, Option<JobError>)>,
    /// Its finalization has been claimed (once): by the job on its own, or by
    /// its transaction as the group settles.
    pub(super) claimed: bool,
}

pub(super) struct Ready {
    /// The worker (or owner) said the job is ready; it stays so until the end.
    pub(super) ready: bool,
    /// Complete was requested (sticky: read with [`Job::complete_requested`]).
    pub(super) complete_requested: bool,
    /// The wake a complete request gives the worker, pending until a sleep,
    /// fd wait or pause point returns early for it, or the worker reads
    /// [`Job::complete_requested`]: the wake fd is readable meanwhile.
    pub(super) complete_wake: bool,
}

pub(super) struct Deadline {
    /// Active time at which the job is cancelled with cause `Timeout`.
    pub(super) at_ns: Option<i64>,
    /// The armed timer, and the generation that names the current arming (a
    /// timer that fires for an older one does nothing).
    pub(super) timer: Option<TimerId>,
    pub(super) generation: u64,
}

impl St {
    pub(super) fn new(
        worker: WorkerFn,
        completion: Option<(Option<Context>, CompleteFn)>,
        finalize: Finalize,
        error_policy: ErrorPolicy,
        deadline_ns: Option<i64>,
    ) -> St {
        St {
            life: Life::Created,
            work: Work {
                worker: Some(worker),
                queued: None,
                start_pending: None,
                children: Some(HashMap::new()),
            },
            clock: Clock {
                started_ns: None,
                paused_ns: 0,
                halted_since_ns: None,
                finished_ns: None,
            },
            pauses: Pauses {
                user: false,
                internal: 0,
                iostatus: IoStatus::Ok,
                error_policy,
            },
            cancel: Cancel {
                requested: false,
                soft: false,
                cause: CancelCause::None,
                hooks: std::collections::VecDeque::new(),
                next_hook: 0,
                busy_hooks: Vec::new(),
            },
            end: End {
                finish_status: None,
                declared: None,
                error: None,
                external_ended: false,
                release_at_end: Vec::new(),
            },
            finalize,
            deadline: Deadline {
                at_ns: deadline_ns,
                timer: None,
                generation: 0,
            },
            ready: Ready {
                ready: false,
                complete_requested: false,
                complete_wake: false,
            },
            detached: false,
            family: super::family::Family::default(),
            wake: None,
            completion,
            result: None,
            events: None,
            control: None,
            control_busy: Vec::new(),
            speed: 0,
            owner: super::owner::Owner::default(),
        }
    }

    pub(super) fn state(&self) -> State {
        match self.life {
            Life::Created => State::Created,
            Life::Running if self.owner.reported.is_some() => {
                self.owner.reported.unwrap_or(State::Running)
            }
            Life::Running => match (self.ready.ready, self.pauses.user) {
                (false, false) => State::Running,
                (false, true) => State::Paused,
                (true, false) => State::Ready,
                (true, true) => State::Standby,
            },
            Life::Waiting => State::Waiting,
            Life::Pending => State::Pending,
            Life::Done(s) => s,
        }
    }

    /// The worker may not run: a user or an internal pause is in force.
    pub(super) fn halted(&self) -> bool {
        self.pauses.halted()
    }

    /// Starts or stops the job's clock as the pauses say (paused time is not
    /// active time).
    pub(super) fn reclock(&mut self, now: i64) {
        let halted = self.pauses.halted();
        self.clock.reclock(halted, now);
    }

    /// Active (unpaused) time at job-clock `now`.
    pub(super) fn active_ns(&self, now: i64) -> i64 {
        self.clock.active_ns(now)
    }

    /// Brings the wake fd (if there is one) in line with the job: readable
    /// while cancel is requested, a pause is in force, or a complete request's
    /// wake is pending.
    pub(super) fn sync_wake(&self) {
        if let Some(w) = &self.wake {
            if self.cancel.requested || self.halted() || self.ready.complete_wake {
                w.signal();
            } else {
                w.clear();
            }
        }
    }

    /// Worker-side calls (waits, children, error reports) need a running
    /// worker: refused (as an update) in every other state.
    pub(super) fn check_running(&self) -> Result<(), Error> {
        if self.life == Life::Running {
            Ok(())
        } else {
            Err(Error::NotAllowed {
                verb: Verb::Update,
                state: self.state(),
            })
        }
    }

    /// Active time left before `target` (`None`: no limit), at job-clock `now`.
    pub(super) fn left_ns(&self, target: Option<i64>, now: i64) -> Option<i64> {
        target.map(|t| t.saturating_sub(self.active_ns(now)).max(0))
    }

    pub(super) fn check(&self, verb: Verb) -> Result<(), Error> {
        let state = self.state();
        if verb_allowed(verb, state) {
            Ok(())
        } else {
            Err(Error::NotAllowed { verb, state })
        }
    }

    /// A worker-side update (progress, phase, ETA, error, ready): allowed as
    /// the verb table says, and refused once the worker has declared its
    /// outcome ([`Job::declare`]) — the job is as good as ended then, and
    /// what a reader sees must not move any more.
    pub(super) fn check_worker_update(&self) -> Result<(), Error> {
        self.check(Verb::Update)?;
        if self.end.declared.is_some() {
            return Err(Error::NotAllowed {
                verb: Verb::Update,
                state: self.state(),
            });
        }
        Ok(())
    }
}

impl Clock {
    /// Starts or stops the clock as `halted` says.
    fn reclock(&mut self, halted: bool, now: i64) {
        match (halted, self.halted_since_ns) {
            (true, None) => self.halted_since_ns = Some(now),
            (false, Some(since)) => {
                self.halted_since_ns = None;
                if let Some(started) = self.started_ns {
                    // Time after the job's work ended was never active:
                    // a pause there (a drain in WAITING) takes none of it.
                    let end = self.finished_ns.map_or(now, |f| now.min(f));
                    self.paused_ns += (end - since.max(started)).max(0);
                }
            }
            _ => {}
        }
    }

    fn active_ns(&self, now: i64) -> i64 {
        let Some(started) = self.started_ns else {
            return 0;
        };
        let end = self.finished_ns.unwrap_or(now);
        // A pause that began after `now` was read (while waiting for the lock) has
        // not taken any of it yet.
        let current_pause = self
            .halted_since_ns
            .map_or(0, |p| (end - p.max(started)).max(0));
        (end - started - self.paused_ns - current_pause).max(0)
    }
}

impl Pauses {
    pub(super) fn halted(&self) -> bool {
        self.user || self.internal > 0
    }
}

impl Cancel {
    /// Whether the calling thread is inside one of this job's cancellation
    /// hooks (called by its own cancel).
    pub(super) fn in_own_hook(&self) -> bool {
        let me = current_thread_id();
        self.busy_hooks.iter().any(|&(_, t)| t == me)
    }

    /// Whether a hook is being called on a thread other than this one.
    pub(super) fn hook_busy_elsewhere(&self) -> bool {
        let me = current_thread_id();
        self.busy_hooks.iter().any(|&(_, t)| t != me)
    }
}

impl Deadline {
    /// Forgets the current arming: a timer already firing finds a newer
    /// generation and does nothing.
    pub(super) fn disarm(&mut self) {
        self.generation += 1;
        if let Some(id) = self.timer.take() {
            timer::cancel(id);
        }
    }
}

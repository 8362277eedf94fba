//! [`Builder`]: a job's options, then its creation.

use super::*;

/// Builds a job.
#[derive(Default)]
pub struct Builder {
    name: Option<String>,
    job_type: JobType,
    stack_size: usize,
    pool: Option<&'static Pool>,
    completion: Option<(Option<Context>, CompleteFn)>,
    deadline: Option<Duration>,
    error_policy: ErrorPolicy,
    manual_finalize: bool,
    updates_never_park: bool,
    commit: Option<HookFn>,
    abort: Option<HookFn>,
    clean: Option<HookFn>,
    events: Option<(Option<Context>, EventFn)>,
    operation: String,
    owner: String,
    pub(super) external: bool,
    pub(super) control: Option<ControlFn>,
    start_at_once: bool,
}

impl Builder {
    /// A bounded job with a generated name, default stack, on the global pool.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// The job's name (its thread's name, cut to 15 bytes). Default `job-<id>`.
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Bounded (default) or unbounded.
    pub fn job_type(mut self, t: JobType) -> Builder {
        self.job_type = t;
        self
    }

    /// Worker stack size in bytes; 0 (default) is the platform default. Over
    /// [`super::threads::MAX_STACK_SIZE`], start is refused.
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = bytes;
        self
    }

    /// Run on this pool instead of the global one.
    pub fn pool(mut self, pool: &'static Pool) -> Builder {
        self.pool = Some(pool);
        self
    }

    /// Runs `f` exactly once after the job has ended (whatever the outcome, also
    /// when it never ran): through `context` on the thread that dispatches it, or
    /// with `None` on the worker thread right after the worker returned (on a
    /// pool thread for a job that never ran). Never inside the call that ended the
    /// job (start, cancel, release), never with a lock held. If the context is
    /// closed first, `f` is dropped unrun.
    pub fn on_complete<F>(mut self, context: Option<Context>, f: F) -> Builder
    where
        F: FnOnce(&Job) + Send + 'static,
    {
        self.completion = Some((context, Box::new(f)));
        self
    }

    /// Cancels the job (cause [`CancelCause::Timeout`]) once it has been running
    /// for `after` of active time: measured from start, paused time not counted.
    pub fn deadline(mut self, after: Duration) -> Builder {
        self.deadline = Some(after);
        self
    }

    /// What the job does when its worker reports an I/O error (default
    /// [`ErrorPolicy::Report`]); see [`Job::report_io_error`].
    pub fn error_policy(mut self, policy: ErrorPolicy) -> Builder {
        self.error_policy = policy;
        self
    }

    /// QEMU's `JOB_MANUAL_FINALIZE`: once the work is done (and every member of
    /// its transaction succeeded) the job waits in `Waiting` until
    /// [`Job::finalize`]; only then do commit and clean run and the job end.
    /// A failed or cancelled group is finalized at once. In a transaction, the
    /// transaction's setting applies instead.
    pub fn manual_finalize(mut self, yes: bool) -> Builder {
        self.manual_finalize = yes;
        self
    }

    /// Progress, phase and ETA updates made on the worker's own thread never
    /// park it (default: they are pause points, so a paused worker parks in
    /// them). With this the worker parks only where it asks to: pause points
    /// and cancellable waits. For a worker that updates progress while
    /// holding a lock of its own which the caller's resume path needs.
    pub fn updates_never_park(mut self, yes: bool) -> Builder {
        self.updates_never_park = yes;
        self
    }

    /// Runs once at finalization if the job (and every member of its
    /// transaction) succeeded, before clean and before the job ends.
    pub fn on_commit<F: FnOnce(&Job) + Send + 'static>(mut self, f: F) -> Builder {
        self.commit = Some(Box::new(f));
        self
    }

    /// Runs once at finalization if the job or any member of its transaction
    /// failed or was cancelled, before clean and before the job ends.
    pub fn on_abort<F: FnOnce(&Job) + Send + 'static>(mut self, f: F) -> Builder {
        self.abort = Some(Box::new(f));
        self
    }

    /// Runs once at finalization, after commit or abort, whatever the outcome.
    pub fn on_clean<F: FnOnce(&Job) + Send + 'static>(mut self, f: F) -> Builder {
        self.clean = Some(Box::new(f));
        self
    }

    /// Calls `f` with every event of the job, in order ([`Event`]): each
    /// state change, each I/O error its worker reports, READY and the end
    /// (last, before the completion). Through `context` on the thread that
    /// dispatches it, or with `None` on the thread that made the change
    /// (never with a lock held; while another thread delivers the job's
    /// events, that thread delivers it). `f` is dropped after its last call
    /// (after END), or when the job is freed or discarded, or its context
    /// closed, first.
    pub fn on_event<F>(mut self, context: Option<Context>, f: F) -> Builder
    where
        F: Fn(&Job, &Event) + Send + Sync + 'static,
    {
        self.events = Some((context, Box::new(f)));
        self
    }

    /// The operation name ("mirror", "save", "migrate"): shown in the
    /// listing and the debug log. Default "".
    pub fn operation(mut self, operation: impl Into<String>) -> Builder {
        self.operation = operation.into();
        self
    }

    /// The owner tag ("domain vm1"): shown in the listing. Default "".
    pub fn owner(mut self, owner: impl Into<String>) -> Builder {
        self.owner = owner.into();
        self
    }

    /// The caller starts the job right after [`Builder::create`] (and after
    /// linking it to a parent), as one step of its own create: a cancel
    /// that reaches the job in between (it is visible to a lookup, and to
    /// its parent's cancel, from its creation) is recorded and seen by the
    /// worker, instead of ending the job unrun before that start. The start
    /// then succeeds ([`Builder::spawn`] sets it). That start is made on
    /// the creating thread; another thread's, until then, is refused.
    pub fn start_at_once(mut self) -> Builder {
        self.start_at_once = true;
        self
    }

    /// Makes the job in `Created`; [`Job::start`] runs it.
    pub fn create<F>(self, worker: F) -> Job
    where
        F: FnOnce(&Worker<'_>) -> Result<(), JobError> + Send + 'static,
    {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut st = St::new(
            Box::new(worker),
            self.completion,
            st::Finalize {
                manual: self.manual_finalize,
                txn: None,
                commit: self.commit,
                abort: self.abort,
                clean: self.clean,
                pending: None,
                claimed: false,
            },
            self.error_policy,
            self.deadline.map(duration_ns),
        );
        st.work.start_pending = self.start_at_once.then(current_thread_id);
        let epoch = Instant::now();
        let status = info::StatusLine::new(
            &info::Status::of(&st),
            id,
            self.job_type,
            info::monotonic_ns(),
        );
        let inner = Arc::new(Inner {
            id,
            name: self.name.unwrap_or_else(|| format!("job-{id}")),
            job_type: self.job_type,
            stack_size: self.stack_size,
            updates_never_park: self.updates_never_park,
            external: self.external,
            pool: self.pool.unwrap_or_else(Pool::global),
            epoch,
            attention: AtomicU8::new(0),
            progress: Progress::default(),
            phase: Mutex::new(None),
            status,
            st: Mutex::new(st),
            cv: JobSignal::new(),
            c_handles: std::sync::atomic::AtomicUsize::new(0),
            stats: Default::default(),
            operation: self.operation,
            owner: self.owner,
        });
        inner.raw_lock().control = self.control;
        if let Some((context, f)) = self.events {
            inner.raw_lock().events = Some(Events::new(Arc::downgrade(&inner), context, f));
        }
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::downgrade(&inner));
        log::debug(format_args!(
            "job {id} '{}'{} created",
            inner.name,
            op_label(&inner.operation)
        ));
        Job(inner)
    }

    /// Makes the job and starts it. On [`Error::TryAgain`] the job and the worker
    /// closure (with everything it captured) are dropped.
    pub fn spawn<F>(self, worker: F) -> Result<Job, Error>
    where
        F: FnOnce(&Worker<'_>) -> Result<(), JobError> + Send + 'static,
    {
        let job = self.start_at_once().create(worker);
        if let Err(e) = job.start() {
            job.discard();
            return Err(e);
        }
        Ok(job)
    }
}

impl Job {
    /// Drops what a job that will never run still owns (worker, completion,
    /// result) now, on this thread, whoever else holds a reference: a failed
    /// create must free everything before it returns.
    pub fn discard(&self) {
        let link = family::take_link(&mut self.0.lock().family);
        family::resume_parent(family::leave(link));
        let mut st = self.0.lock();
        let owned = (
            st.work.worker.take(),
            st.completion.take(),
            st.result.take(),
            st.events.as_mut().and_then(Events::close),
            st.control.take(),
        );
        // It ends CANCELLED, unrun: a handle taken meanwhile (a lookup) can
        // wait for it and release it (with nothing left to call).
        if st.life == Life::Created {
            st.work.start_pending = None;
            drop(self.publish_end(st, State::Cancelled, None, false));
        } else {
            drop(st);
        }
        drop(owned);
    }
}

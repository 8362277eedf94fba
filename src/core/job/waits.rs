//! The worker's cancellable waits: sleep, fds, children; and deadlines.

use super::*;

impl Job {
    /// A cancellable sleep for the worker: returns `Ok` once `duration` of active
    /// time has passed, `Cancelled` as soon as cancel is requested. While the job
    /// is paused the worker parks here and the paused time does not count;
    /// spurious wake-ups never shorten it. A complete request ([`Job::complete`])
    /// ends it early with `Ok` (at once while its wake is not acknowledged: see
    /// [`Job::complete_requested`]). Refused unless the job is running.
    pub fn sleep(&self, duration: Duration) -> Result<(), Error> {
        self.refuse_external()?;
        let inner = &self.0;
        let mut st = inner.lock();
        st.check_running()?;
        let wanted = i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX);
        let target = st.active_ns(inner.now_ns()).saturating_add(wanted);
        loop {
            if st.cancel.requested {
                return Err(Error::Cancelled);
            }
            if st.halted() {
                st = inner.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            if st.ready.complete_wake {
                return Ok(());
            }
            let active = st.active_ns(inner.now_ns());
            if active >= target {
                return Ok(());
            }
            let left = Duration::from_nanos((target - active) as u64);
            st = inner
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The job's wake fd, made on first use: readable once cancel was requested
    /// (it stays so) and while a user pause is pending (until resume). A worker
    /// with its own poll loop adds it to its set and, when it turns readable,
    /// calls [`Job::pause_point`], which parks while paused and reports the
    /// cancel. It lives as long as the job.
    pub fn wake_fd(&self) -> Result<i32, Error> {
        Ok(self.wake()?.raw())
    }

    pub(super) fn wake(&self) -> Result<Arc<EventFd>, Error> {
        let mut st = self.0.lock();
        if let Some(w) = &st.wake {
            return Ok(w.clone());
        }
        let w = Arc::new(EventFd::new()?);
        st.wake = Some(w.clone());
        st.sync_wake();
        Ok(w)
    }

    /// Gives the job a deadline (`None` removes it): once it has been running
    /// for `after` of active time — from start, paused time not counted — it is
    /// cancelled with cause [`CancelCause::Timeout`]. A deadline already passed
    /// cancels it at once. Allowed until the job ends. Fails with
    /// [`Error::TryAgain`], changing nothing, if the timer thread could not be
    /// started: a deadline is never accepted and then ignored.
    ///
    /// The cancel a deadline makes runs the job's cancellation hooks on a
    /// thread of the job's pool (named after the job), never on the timer
    /// thread, so a slow hook delays no other job's deadline.
    pub fn set_deadline(&self, after: Option<Duration>) -> Result<(), Error> {
        let mut st = self.0.lock();
        st.check(Verb::Update)?;
        if after.is_some()
            && let Err(e) = timer::ensure_running()
        {
            drop(st);
            self.log_no_timer(&e);
            return Err(Error::TryAgain);
        }
        st.deadline.at_ns = after.map(duration_ns);
        self.arm_deadline(&mut st);
        Ok(())
    }

    /// Says (with no lock held) that a deadline was refused for want of a
    /// timer thread.
    pub(super) fn log_no_timer(&self, e: &std::io::Error) {
        log::debug(format_args!(
            "job {} '{}': the timer thread could not start: {e}",
            self.0.id, self.0.name
        ));
    }

    /// (Re)arms the deadline timer for a running, uncancelled job: an
    /// unpaused one for the active time left, a paused one only if its
    /// deadline has already passed (set while paused: `set_deadline(0)`), at
    /// once — paused, the active time stands still, so any other deadline
    /// waits for the resume, which re-arms it.
    ///
    /// The timer thread runs no user code: when the time comes it only starts
    /// a thread of the job's pool (named after the job) that makes the cancel
    /// and runs its hooks, so a slow or blocking hook delays no other job's
    /// deadline nor any child's SIGKILL. If no thread can be started then
    /// (EAGAIN), the timer tries again every [`DEADLINE_RETRY`] until one can.
    /// The timer task holds the job weakly: the timer thread never holds the
    /// last reference to a job.
    pub(super) fn arm_deadline(&self, st: &mut St) {
        st.deadline.disarm();
        let Some(deadline) = st.deadline.at_ns else {
            return;
        };
        if st.life != Life::Running || st.cancel.requested {
            return;
        }
        let left = st.left_ns(Some(deadline), self.0.now_ns()).unwrap_or(0);
        if left > 0 && st.halted() {
            return;
        }
        let at = Instant::now()
            .checked_add(Duration::from_nanos(left as u64))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365 * 100));
        let fire = DeadlineFire {
            job: Arc::downgrade(&self.0),
            arming: st.deadline.generation,
            pool: self.0.pool,
            // An external job has no thread named after it, not even for
            // the moment its deadline's cancel runs.
            name: if self.0.external {
                "bgjob-deadline".to_owned()
            } else {
                self.0.name.clone()
            },
            stack_size: self.0.stack_size,
        };
        // Cannot fail: a deadline is only set (set_deadline) or started with
        // (start) once the timer thread runs in this process, and it runs for
        // the life of the process. (Only a job carried into a forked child, whose
        // worker does not run there, could see it fail.)
        st.deadline.timer = timer::schedule(at, move || fire.fire()).ok();
    }

    /// The deadline timer fired (on a pool thread, with no lock held).
    pub(super) fn deadline_due(&self, arming: u64) {
        let mut st = self.0.lock();
        if st.deadline.generation != arming {
            return;
        }
        st.deadline.timer = None;
        let Some(deadline) = st.deadline.at_ns else {
            return;
        };
        if st.life != Life::Running || st.cancel.requested {
            return;
        }
        if st.active_ns(self.0.now_ns()) < deadline {
            // Early by the timer's slack: try again for the rest (or, paused
            // since, at the resume).
            self.arm_deadline(&mut st);
            return;
        }
        drop(st);
        log::debug(format_args!("job {} deadline passed", self.0.id));
        self.cancel_with(CancelCause::Timeout);
    }

    /// The worker side of a cancellable wait: parks while user-paused, fails
    /// with `Cancelled` once cancel is requested, and gives the active time
    /// left before `target` (`None`: no limit) and whether a complete
    /// request's wake is pending.
    pub(super) fn wait_round(&self, target: Option<i64>) -> Result<(Option<i64>, bool), Error> {
        self.refuse_external()?;
        let inner = &self.0;
        let mut st = inner.lock();
        loop {
            st.check_running()?;
            if st.cancel.requested {
                return Err(Error::Cancelled);
            }
            if !st.halted() {
                break;
            }
            st = inner.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        Ok((st.left_ns(target, inner.now_ns()), st.ready.complete_wake))
    }

    pub(super) fn active_target(&self, timeout: Option<Duration>) -> Option<i64> {
        let st = self.0.lock();
        timeout.map(|t| st.active_ns(self.0.now_ns()).saturating_add(duration_ns(t)))
    }

    /// A cancellable wait for `fd`: returns the `poll(2)` events that happened
    /// (of `events`, plus error and hang-up) once it is ready; `TimedOut` after
    /// `timeout` of active time (`None` = no limit); `Cancelled` as soon as
    /// cancel is requested. While the job is paused the worker parks here and
    /// the time does not count. A complete request ([`Job::complete`]) ends it
    /// early with no events (empty [`FdEvents`]; at once while its wake is not
    /// acknowledged: see [`Job::complete_requested`]). Refused unless the job
    /// is running; an fd that is not open is `InvalidArgument`.
    pub fn wait_fd(
        &self,
        fd: i32,
        want: FdEvents,
        timeout: Option<Duration>,
    ) -> Result<FdEvents, Error> {
        self.refuse_external()?;
        if fd < 0 {
            return Err(Error::InvalidArgument("fd must not be negative"));
        }
        if !want.readable && !want.writable {
            return Err(Error::InvalidArgument(
                "wait for readable, writable or both",
            ));
        }
        let events = if want.readable { sys::POLLIN } else { 0 }
            | if want.writable { sys::POLLOUT } else { 0 };
        let wake = self.wake()?;
        let target = self.active_target(timeout);
        loop {
            let (left, completing) = self.wait_round(target)?;
            if completing {
                return Ok(FdEvents::default());
            }
            let mut set = [
                sys::PollFd::new(fd, events),
                sys::PollFd::new(wake.raw(), sys::POLLIN),
            ];
            sys::poll(&mut set, poll_ms(left))?;
            let got = set[0].revents;
            if got & sys::POLLNVAL != 0 {
                return Err(Error::InvalidArgument("fd is not open"));
            }
            if got != 0 {
                return Ok(FdEvents {
                    readable: got & sys::POLLIN != 0,
                    writable: got & sys::POLLOUT != 0,
                    error: got & sys::POLLERR != 0,
                    hangup: got & sys::POLLHUP != 0,
                });
            }
            if left == Some(0) && set[1].revents == 0 {
                return Err(Error::TimedOut);
            }
        }
    }

    /// Starts a child process bound to the job (see [`child`]): cancel sends
    /// it and its process group SIGTERM, then SIGKILL after the grace period;
    /// [`Job::wait_child`] reaps it; one still running when the worker returns
    /// is killed and reaped. Refused unless the job is running. Returns its
    /// pid.
    ///
    /// Once cancel has been requested (a force cancel: a soft one lets the
    /// worker finish, children included) only a child that survives cancel
    /// ([`child::Spawn::survives_cancel`]) is started; any other is refused
    /// with [`Error::Cancelled`] before anything runs — starting a program
    /// only to kill it at once could leave half its work done. (A cancel that
    /// comes while the call runs meets the child as it meets any running one.)
    pub fn spawn_child(&self, spec: child::Spawn) -> Result<i32, Error> {
        self.check_running()?;
        if !spec.survives_cancel && self.is_cancel_requested() && !self.cancel_is_soft() {
            return Err(Error::Cancelled);
        }
        self.bind_child(Child::spawn(spec)?)
    }

    /// Binds a child the worker started itself (it must be this process's
    /// child and not yet reaped), as [`Job::spawn_child`] does. bgjob reaps it:
    /// nobody else may wait for it.
    pub fn watch_child(&self, pid: i32, grace: Duration) -> Result<(), Error> {
        self.check_running()?;
        if self
            .0
            .lock()
            .work
            .children
            .as_ref()
            .is_some_and(|c| c.contains_key(&pid))
        {
            return Err(Error::InvalidArgument("pid is already watched"));
        }
        self.bind_child(Child::watch(pid, grace)?).map(drop)
    }

    pub(super) fn check_running(&self) -> Result<(), Error> {
        self.refuse_external()?;
        self.0.lock().check_running()
    }

    pub(super) fn bind_child(&self, child: Arc<Child>) -> Result<i32, Error> {
        let pid = child.pid;
        {
            let mut st = self.0.lock();
            let state = st.state();
            let running = st.life == Life::Running;
            match st.work.children.as_mut() {
                Some(children) if running => {
                    children.insert(pid, child.clone());
                }
                _ => {
                    drop(st);
                    child.reap_now();
                    return Err(Error::NotAllowed {
                        verb: Verb::Update,
                        state,
                    });
                }
            }
        }
        let c = child.clone();
        // A cancel that came first runs the hook here: the child is signalled
        // at once. The job cannot end meanwhile without reaping the child
        // (the worker's return does that), so an error here is only that.
        // A child that survives cancel gets no hook at all.
        if !child.survives_cancel
            && let Ok(HookAdded::Registered(id)) = self.add_cancel_hook(move |_| c.terminate())
        {
            child.set_hook(id);
        }
        log::debug(format_args!("job {} bound child {pid}", self.0.id));
        Ok(pid)
    }

    /// Waits for a child bound to the job, reading its captured output (the
    /// line callback runs here, on this thread). Returns once it has ended and
    /// been reaped; `cancelled` says cancel was requested meanwhile — bgjob then
    /// signalled it, so the wait lasts at most its grace period. A child that
    /// survives cancel is waited for to its end and `cancelled` stays false. `TimedOut`
    /// after `timeout` of active time (the child keeps running and stays
    /// bound). While the job is paused the worker parks here (the child keeps
    /// running). `NotFound` for a pid the job does not hold (never bound, or
    /// already waited for).
    pub fn wait_child(&self, pid: i32, timeout: Option<Duration>) -> Result<ChildExit, Error> {
        self.refuse_external()?;
        let child = {
            let st = self.0.lock();
            st.check_running()?;
            st.work
                .children
                .as_ref()
                .and_then(|c| c.get(&pid))
                .cloned()
                .ok_or(Error::NotFound)?
        };
        let wake = self.wake()?;
        let target = self.active_target(timeout);
        let mut io = child.begin_wait()?;
        let waited = self.wait_child_loop(&child, &mut io, &wake, target);
        child.end_wait(io);
        let status = waited?;
        // Reaped: the job lets go of it.
        if let Some(children) = self.0.lock().work.children.as_mut() {
            children.remove(&pid);
        }
        if let Some(hook) = child.done() {
            self.remove_cancel_hook(hook);
        }
        Ok(ChildExit {
            status,
            cancelled: child.was_terminated()
                || !child.survives_cancel && self.is_cancel_requested(),
        })
    }

    pub(super) fn wait_child_loop(
        &self,
        child: &Child,
        io: &mut child::Io,
        wake: &EventFd,
        target: Option<i64>,
    ) -> Result<i32, Error> {
        loop {
            if let Some(status) = child.step(io)? {
                return Ok(status);
            }
            // A cancel does not end this wait: the hook has signalled the
            // child, which ends within its grace period. The wake fd then stays
            // readable, so it leaves the poll set.
            // A pending complete wake keeps the wake fd readable: it leaves
            // the poll set too (the wait does not end for it), and a pause
            // that comes meanwhile is seen within COMPLETE_WAKE_ROUND.
            let (left, watch_wake) = match self.wait_round(target) {
                Ok((left, false)) => (left, true),
                Ok((left, true)) => {
                    let round = duration_ns(COMPLETE_WAKE_ROUND);
                    (Some(left.map_or(round, |l| l.min(round))), false)
                }
                Err(Error::Cancelled) => {
                    let left = self.0.lock().left_ns(target, self.0.now_ns());
                    (left, false)
                }
                Err(e) => return Err(e),
            };
            if left == Some(0) {
                return Err(Error::TimedOut);
            }
            let mut set = child.poll_set(io);
            if watch_wake {
                set.push(sys::PollFd::new(wake.raw(), sys::POLLIN));
            }
            sys::poll(&mut set, poll_ms(left))?;
        }
    }
}

/// A poll timeout in ms for `left` ns (rounded up, so a wait never ends early;
/// `None` = no limit).
fn poll_ms(left: Option<i64>) -> i32 {
    match left {
        None => -1,
        Some(ns) => i32::try_from((ns + 999_999) / 1_000_000).unwrap_or(i32::MAX),
    }
}

/// How long a child wait polls at most per round while a complete request's
/// wake is pending (the wake fd is then out of its poll set).
const COMPLETE_WAKE_ROUND: Duration = Duration::from_millis(50);

/// How long a deadline whose cancel found no thread to run on (EAGAIN) waits
/// before it tries again.
const DEADLINE_RETRY: Duration = Duration::from_millis(20);

/// A deadline's timer task: all it does on the timer thread is start the
/// thread that makes the cancel.
struct DeadlineFire {
    job: Weak<Inner>,
    arming: u64,
    pool: &'static Pool,
    name: String,
    stack_size: usize,
}

impl DeadlineFire {
    /// On the timer thread: never upgrades the job (so never drops its last
    /// reference here) and never calls user code.
    fn fire(self) {
        if self.job.strong_count() == 0 {
            return; // the job is gone: nothing to cancel, no retry
        }
        let job = self.job.clone();
        let arming = self.arming;
        let started = self.pool.spawn(
            &self.name,
            self.stack_size,
            Box::new(move || {
                if let Some(inner) = job.upgrade() {
                    Job(inner).deadline_due(arming);
                }
            }),
        );
        if started.is_err() {
            // No thread now: the deadline still fires, as soon as one can be
            // started. A disarmed deadline (the job ended, was paused, got a new
            // deadline) makes the retry a no-op through `arming`.
            let _ = timer::schedule(Instant::now() + DEADLINE_RETRY, move || self.fire());
        }
    }
}

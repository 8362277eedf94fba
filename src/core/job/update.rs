//! Progress and the other worker-side updates, the snapshot, and the
//! [`Worker`] handle.

use super::*;

impl Job {
    /// The job's error, if it has one: set by the worker, or given at its end.
    pub fn error(&self) -> Option<JobError> {
        self.0.lock().end.error.clone()
    }

    /// The phase name the worker set last ("" before any).
    pub fn phase(&self) -> Arc<str> {
        let phase = self
            .0
            .phase
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        phase.unwrap_or_else(|| Arc::from(""))
    }

    /// Whether a worker-side update (progress, phase, ETA, error, ready)
    /// would be accepted now: as the verb table says for [`Verb::Update`],
    /// and never once the worker has declared its outcome ([`Job::declare`]).
    /// The layers above ask this rather than deciding it themselves.
    pub fn check_update(&self) -> Result<(), Error> {
        self.0.lock().check_worker_update()
    }

    #[inline]
    pub(super) fn update(
        &self,
        f: impl FnOnce(&mut Fields) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.update_from(false, f)
    }

    /// [`Job::update`] for a caller that may already know it runs on this
    /// job's worker thread (`on_worker`, as in [`Job::add_units_from`]).
    #[inline]
    pub(super) fn update_from(
        &self,
        on_worker: bool,
        f: impl FnOnce(&mut Fields) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let inner = &*self.0;
        // The state check is one uncontended read of the attention bits in the
        // common case; the lock is only taken when something happened to the job
        // (cancel, pause, or its end).
        if inner.attention.load(Ordering::Acquire) != 0 {
            self.check_update()?;
        }
        // The time is read before the record's write window, so a reader
        // never waits on a clock read.
        let now = inner.progress.stamp(&inner.epoch);
        if on_worker || is_current_worker(inner) {
            inner.progress.update_own(now, f)
        } else {
            inner.progress.update(now, f)
        }
    }

    /// Sets the number of units in all (may move either way; 0 = unknown).
    pub fn set_total(&self, total: u64) -> Result<(), Error> {
        self.set_total_from(false, total)
    }

    /// [`Job::set_total`] with the `on_worker` hint of [`Job::add_units_from`].
    #[inline]
    pub(crate) fn set_total_from(&self, on_worker: bool, total: u64) -> Result<(), Error> {
        self.update_from(on_worker, |f| {
            f.total = total;
            Ok(())
        })
    }

    /// Sets the units done. Refused (nothing changed) if it would go backwards.
    pub fn set_current(&self, current: u64) -> Result<(), Error> {
        self.set_current_from(false, current)
    }

    /// [`Job::set_current`] with the `on_worker` hint of [`Job::add_units_from`].
    #[inline]
    pub(crate) fn set_current_from(&self, on_worker: bool, current: u64) -> Result<(), Error> {
        self.update_from(on_worker, |f| {
            if current < f.current {
                return Err(Error::InvalidArgument("current progress may only grow"));
            }
            f.current = current;
            Ok(())
        })
    }

    /// Adds to the units done (saturating). The copy loop's call: on the
    /// job's own worker it stores only the units and the time.
    #[inline]
    pub fn add_units(&self, n: u64) -> Result<(), Error> {
        self.add_units_from(false, n)
    }

    /// [`Job::add_units`] for a caller that already knows it runs on this
    /// job's worker thread (`on_worker`; the C API learns it from the handle
    /// lookup), saving a second thread-local read. `false` means "not
    /// known": it is then checked.
    #[inline]
    pub(crate) fn add_units_from(&self, on_worker: bool, n: u64) -> Result<(), Error> {
        let inner = &*self.0;
        if inner.attention.load(Ordering::Acquire) != 0 {
            self.check_update()?;
        }
        let now = inner.progress.stamp(&inner.epoch);
        if on_worker || is_current_worker(inner) {
            inner.progress.add_own(now, n);
            Ok(())
        } else {
            inner.progress.update(now, |f| {
                f.current = f.current.saturating_add(n);
                Ok(())
            })
        }
    }

    /// Sets a percentage directly, for workers that count in percent.
    /// Refused outside 0–100; −1 goes back to units-based percent.
    pub fn set_percent(&self, percent: i32) -> Result<(), Error> {
        if !(-1..=100).contains(&percent) {
            return Err(Error::InvalidArgument("percent must be -1 or 0..=100"));
        }
        self.update(|f| {
            f.percent = percent;
            Ok(())
        })
    }

    /// Sets the remaining time as the worker estimates it, in ms; it counts down
    /// with active time. −1 goes back to the library's estimate.
    pub fn set_eta(&self, remaining_ms: i64) -> Result<(), Error> {
        if remaining_ms < -1 {
            return Err(Error::InvalidArgument("eta must be -1 or >= 0"));
        }
        let active = {
            let st = self.0.lock();
            st.check_worker_update()?;
            st.active_ns(self.0.now_ns())
        };
        self.update(|f| {
            f.eta_ms = remaining_ms;
            f.eta_set_active_ns = active;
            Ok(())
        })
    }

    /// Sets the phase name ("copying", "cleaning up").
    pub fn set_phase(&self, phase: &str) -> Result<(), Error> {
        self.check_update()?;
        *self.0.phase.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::from(phase));
        log::debug(format_args!("job {} phase '{phase}'", self.0.id));
        Ok(())
    }

    /// Records the job's error code and message. The job fails only when the
    /// worker returns an error (or records a non-zero [`Job::finish`] status).
    pub fn set_error(&self, code: i32, message: &str) -> Result<(), Error> {
        if code == 0 {
            return Err(Error::InvalidArgument("an error code must be non-zero"));
        }
        let mut st = self.0.lock();
        st.check_worker_update()?;
        st.end.error = Some(JobError::new(code, message));
        Ok(())
    }

    /// Records the outcome the worker will report when it returns (the virJob
    /// "finish" style): 0 = success, anything else = failure with that code. The
    /// last call wins, and it overrides the worker's return value.
    pub fn finish(&self, status: i32) -> Result<(), Error> {
        let mut st = self.0.lock();
        st.check_running()?;
        st.end.finish_status = Some(status);
        Ok(())
    }

    /// The worker declares the job's outcome, once, before it returns (the
    /// virJob proposal's finish calls): the outcome rules are applied now, under
    /// the job's lock, so what [`Job::declared`] reports is what the job ends
    /// as. From then on a cancel finds the job finished
    /// ([`CancelStatus::AlreadyFinished`]) and the worker's return value is
    /// ignored. `Ok(None)`: [`Declare::IfCancelled`] without a cancel request
    /// (nothing declared). Refused (`NotAllowed`) unless the job is running
    /// and has declared nothing yet.
    pub fn declare(&self, declare: Declare) -> Result<Option<State>, Error> {
        let mut st = self.0.lock();
        st.check_running()?;
        if st.end.declared.is_some() {
            return Err(Error::NotAllowed {
                verb: Verb::Update,
                state: st.state(),
            });
        }
        let Some((declared, recorded)) = outcome::declare(declare, st.cancel.requested) else {
            return Ok(None);
        };
        if recorded.is_some() {
            st.end.error = recorded;
        }
        st.end.declared = Some(declared);
        // Updates from now on take the slow path, which refuses them.
        self.0.set_attention(ATTN_DONE);
        Ok(Some(declared.state))
    }

    /// The outcome decided so far: the final state once the job has ended,
    /// else the one its worker declared ([`Job::declare`]), else `None`.
    pub fn decided_outcome(&self) -> Option<State> {
        let st = self.0.lock();
        match st.life {
            Life::Done(s) => Some(s),
            _ => st.end.declared.map(|d| d.state),
        }
    }

    /// Whether cancel was requested. One atomic load.
    pub fn is_cancel_requested(&self) -> bool {
        self.0.attention.load(Ordering::Acquire) & ATTN_CANCEL != 0
    }

    /// Whether the calling thread is this job's worker. One thread-local read.
    pub fn on_own_worker(&self) -> bool {
        is_current_worker(&self.0)
    }

    /// The rule for every layer, after a progress update: on the job's own
    /// worker thread an update is a pause point too (docs/design.md, "Pause"),
    /// so a paused worker parks here — unless the job was made with
    /// [`Builder::updates_never_park`], whose updates never park; on any other
    /// thread it never blocks. A cancel does not fail the update; the worker
    /// sees it at its next check. One atomic load when nothing is pending.
    #[inline]
    pub fn after_update(&self) {
        if self.0.updates_never_park {
            return;
        }
        if self.0.attention.load(Ordering::Acquire) != 0 && self.on_own_worker() {
            let _ = self.pause_point();
        }
    }
}

impl Inner {
    /// [`Job::add_units`] by the job's own worker thread when nothing is
    /// pending on the job (no cancel, pause or end): the attention bits, the
    /// coarse clock and the solo window. `false`: something is pending,
    /// nothing was done; take the general path (which parks or refuses).
    /// Nothing here can panic (the C layer calls it outside its panic
    /// catcher). The C layer's per-block call (it knows the caller is the
    /// worker from its own thread-local record).
    ///
    /// A pause or cancel requested while the update is being made is seen
    /// at the worker's next call, as if it had come just after this one.
    #[inline(always)]
    pub(crate) fn add_units_as_worker(&self, n: u64) -> bool {
        if !self.nothing_pending() {
            return false;
        }
        let now = self.progress.stamp(&self.epoch);
        self.progress.add_own(now, n);
        true
    }

    /// No cancel, pause or end is pending: a pause point returns at once,
    /// and a cancel check says "not cancelled". One atomic load.
    #[inline(always)]
    pub(crate) fn nothing_pending(&self) -> bool {
        self.attention.load(Ordering::Acquire) == 0
    }
}

/// What a worker gets: its job, plus the calls that park at pause points.
pub struct Worker<'a> {
    pub(super) job: &'a Job,
}

impl Worker<'_> {
    /// The job this worker runs.
    pub fn job(&self) -> &Job {
        self.job
    }

    /// Whether cancel was requested. One atomic load.
    pub fn is_cancelled(&self) -> bool {
        self.job.is_cancel_requested()
    }

    /// Parks while user-paused; `Err(Cancelled)` once cancel was requested.
    pub fn pause_point(&self) -> Result<(), Error> {
        self.job.pause_point()
    }

    /// See [`Job::set_ready`].
    pub fn set_ready(&self) -> Result<(), Error> {
        self.job.set_ready()
    }

    /// See [`Job::complete_requested`] (read here, it acknowledges the wake).
    pub fn complete_requested(&self) -> bool {
        self.job.complete_requested()
    }

    fn after_update(&self, r: Result<(), Error>) -> Result<(), Error> {
        r?;
        self.job.after_update();
        Ok(())
    }

    /// See [`Job::set_total`]; parks if paused (unless the job never parks
    /// in updates).
    pub fn set_total(&self, total: u64) -> Result<(), Error> {
        self.after_update(self.job.set_total(total))
    }

    /// See [`Job::set_current`]; parks if paused.
    pub fn set_current(&self, current: u64) -> Result<(), Error> {
        self.after_update(self.job.set_current(current))
    }

    /// See [`Job::add_units`]; parks if paused.
    pub fn add_units(&self, n: u64) -> Result<(), Error> {
        self.after_update(self.job.add_units(n))
    }

    /// See [`Job::set_percent`]; parks if paused.
    pub fn set_percent(&self, percent: i32) -> Result<(), Error> {
        self.after_update(self.job.set_percent(percent))
    }

    /// See [`Job::set_eta`].
    pub fn set_eta(&self, remaining_ms: i64) -> Result<(), Error> {
        self.job.set_eta(remaining_ms)
    }

    /// See [`Job::set_phase`].
    pub fn set_phase(&self, phase: &str) -> Result<(), Error> {
        self.job.set_phase(phase)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// The worker adds units solo while another thread adds units to the
    /// same job through `Job::add_units` (switching the record to shared
    /// mid-run) and reads snapshots: nothing is lost, nothing goes back.
    #[test]
    fn worker_and_another_thread_add_units_together() {
        const EACH: u64 = 100_000;
        let halfway = Arc::new(AtomicBool::new(false));
        let other_done = Arc::new(AtomicBool::new(false));
        let (seen, done) = (halfway.clone(), other_done.clone());
        let job = Job::builder().create(move |w| {
            for i in 0..EACH {
                w.add_units(1).unwrap();
                if i == EACH / 4 {
                    seen.store(true, Ordering::Release);
                }
            }
            // Updates after the job's end are refused: it ends after the
            // other thread's last one.
            while !done.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            Ok(())
        });
        job.start().unwrap();
        while !halfway.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        let mut last = 0;
        for _ in 0..EACH {
            job.add_units(1).unwrap();
            let now = job.info().current;
            assert!(now >= last, "progress went back: {last} then {now}");
            last = now;
        }
        other_done.store(true, Ordering::Release);
        assert_eq!(job.wait(None).unwrap(), State::Completed);
        assert_eq!(job.info().current, 2 * EACH, "an update was lost");
        assert!(job.0.progress.is_shared());
    }

    /// A worker whose job nobody else updates keeps writing solo, and its
    /// updates are dated (the time since progress is known).
    #[test]
    fn a_worker_alone_stays_solo() {
        let job = Job::builder().create(|w| {
            for _ in 0..1000 {
                w.add_units(3)?;
            }
            w.set_total(3000)?;
            Ok(())
        });
        job.start().unwrap();
        assert_eq!(job.wait(None).unwrap(), State::Completed);
        let info = job.info();
        assert_eq!((info.current, info.total), (3000, 3000));
        assert!(info.since_progress_ms >= 0);
        // membarrier may be unavailable (then every record starts shared).
        if crate::sys::clock::membarrier_register() {
            assert!(!job.0.progress.is_shared(), "nobody else updated it");
        }
    }

    /// A total set by the creator before the start does not cost the worker
    /// its solo path.
    #[test]
    fn a_total_set_before_the_start_keeps_the_worker_solo() {
        let job = Job::builder().create(|w| {
            for _ in 0..100 {
                w.add_units(1)?;
            }
            Ok(())
        });
        job.set_total(100).unwrap();
        job.start().unwrap();
        assert_eq!(job.wait(None).unwrap(), State::Completed);
        let info = job.info();
        assert_eq!((info.current, info.total), (100, 100));
        if crate::sys::clock::membarrier_register() {
            assert!(!job.0.progress.is_shared(), "the early total switched it");
        }
    }
}

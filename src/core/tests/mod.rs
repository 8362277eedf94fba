//! Tests of the job model through its public Rust API, without the C layer.

use super::job::{HookAdded, HookRemoved};
use super::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Counts drops, to prove a worker closure (and what it captured) is dropped
/// exactly once on every path.
#[derive(Clone, Default)]
struct Drops(Arc<AtomicUsize>);

struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drops {
    fn guard(&self) -> Guard {
        Guard(self.0.clone())
    }
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

const LONG: Option<Duration> = Some(Duration::from_secs(30));

/// A worker that loops at pause points until cancelled, counting units.
fn until_cancelled(w: &Worker<'_>) -> Result<(), JobError> {
    loop {
        if w.pause_point().is_err() {
            return Err(JobError::new(125, ""));
        }
        w.add_units(1).expect("update while running");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn completes_and_drops_the_closure_before_waiters_wake() {
    let drops = Drops::default();
    let g = drops.guard();
    let job = Job::builder()
        .name("ok")
        .spawn(move |w| {
            let _g = &g;
            w.set_total(10)?;
            w.set_current(10)?;
            Ok(())
        })
        .unwrap();
    assert_eq!(job.wait(LONG), Ok(State::Completed));
    assert_eq!(drops.count(), 1);
    let info = job.info();
    assert_eq!(info.percent, 100);
    assert_eq!(info.remaining_ms, 0);
    assert_eq!(info.error_code, 0);
    assert!(job.error().is_none());
}

impl From<Error> for JobError {
    fn from(e: Error) -> JobError {
        JobError::new(22, e.to_string())
    }
}

#[test]
fn failure_keeps_code_and_message() {
    let job = Job::builder()
        .spawn(|w| {
            w.job().set_error(28, "no space left on device")?;
            Err(JobError::new(28, ""))
        })
        .unwrap();
    assert_eq!(job.wait(LONG), Ok(State::Failed));
    assert_eq!(
        job.error(),
        Some(JobError::new(28, "no space left on device"))
    );
    assert_eq!(job.info().error_code, 28);

    let job = Job::builder().spawn(|_| Err(JobError::new(5, ""))).unwrap();
    assert_eq!(job.wait(LONG), Ok(State::Failed));
    assert_eq!(job.error().unwrap().message, "worker failed with code 5");
}

#[test]
fn a_panicking_worker_fails_its_job() {
    let drops = Drops::default();
    let g = drops.guard();
    let job = Job::builder()
        .spawn(move |_| {
            let _g = &g;
            panic!("disk on fire")
        })
        .unwrap();
    assert_eq!(job.wait(LONG), Ok(State::Failed));
    let e = job.error().unwrap();
    assert_eq!(e.code, 5);
    assert!(e.message.contains("disk on fire"), "{e:?}");
    assert_eq!(drops.count(), 1);
}

#[test]
fn cancel_before_start_never_runs_the_worker() {
    let ran = Arc::new(AtomicBool::new(false));
    let drops = Drops::default();
    let (r, g) = (ran.clone(), drops.guard());
    let job = Job::builder().create(move |_| {
        let _g = &g;
        r.store(true, Ordering::SeqCst);
        Ok(())
    });
    assert_eq!(job.state(), State::Created);
    assert_eq!(job.cancel(), CancelStatus::Requested);
    // The closure is gone by the time cancel returns.
    assert_eq!(drops.count(), 1);
    assert_eq!(job.state(), State::Cancelled);
    assert_eq!(job.cancel(), CancelStatus::AlreadyFinished);
    assert!(matches!(
        job.start(),
        Err(Error::NotAllowed {
            verb: Verb::Start,
            state: State::Cancelled
        })
    ));
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(job.error().unwrap().message, "cancelled before start");
}

#[test]
fn cancel_running_then_twice_then_after_end() {
    let job = Job::builder().spawn(until_cancelled).unwrap();
    while job.info().current == 0 {
        std::thread::yield_now();
    }
    assert_eq!(job.cancel(), CancelStatus::Requested);
    assert_eq!(job.cancel(), CancelStatus::AlreadyRequested);
    assert_eq!(job.wait(LONG), Ok(State::Cancelled));
    assert_eq!(job.cancel(), CancelStatus::AlreadyFinished);
    assert_eq!(job.error().unwrap().code, 125);
}

#[test]
fn exactly_one_of_many_cancellers_wins() {
    for _ in 0..50 {
        let job = Job::builder().spawn(until_cancelled).unwrap();
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (job, barrier) = (job.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    job.cancel()
                })
            })
            .collect();
        let results: Vec<CancelStatus> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let won = results
            .iter()
            .filter(|s| **s == CancelStatus::Requested)
            .count();
        assert_eq!(won, 1, "{results:?}");
        assert_eq!(job.wait(LONG), Ok(State::Cancelled));
    }
}

#[test]
fn a_job_may_succeed_after_cancel_was_requested() {
    let (tx, rx) = mpsc::channel::<()>();
    let job = Job::builder()
        .spawn(move |_| {
            rx.recv().unwrap();
            Ok(())
        })
        .unwrap();
    assert_eq!(job.cancel(), CancelStatus::Requested);
    tx.send(()).unwrap();
    assert_eq!(job.wait(LONG), Ok(State::Completed));
    assert!(job.info().cancel_requested);
}

#[test]
fn pause_parks_the_worker_and_stops_the_clock() {
    let job = Job::builder().spawn(until_cancelled).unwrap();
    while job.info().current < 3 {
        std::thread::yield_now();
    }
    job.pause().unwrap();
    assert_eq!(job.state(), State::Paused);
    assert!(matches!(
        job.pause(),
        Err(Error::NotAllowed {
            verb: Verb::Pause,
            state: State::Paused
        })
    ));
    // Let the worker reach its pause point (it may make one more update
    // first, however long it is kept off the CPU), then nothing may move.
    let mut a = job.info();
    let settled = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let again = job.info();
        if again.current == a.current {
            break;
        }
        assert!(
            settled.elapsed() < LONG.unwrap(),
            "worker kept going while paused"
        );
        a = again;
    }
    std::thread::sleep(Duration::from_millis(200));
    let b = job.info();
    assert_eq!(a.current, b.current, "worker kept going while paused");
    assert!(
        b.elapsed_ms - a.elapsed_ms < 100,
        "elapsed ran while paused: {} -> {}",
        a.elapsed_ms,
        b.elapsed_ms
    );
    assert!(b.pause_requested);
    job.resume().unwrap();
    assert!(matches!(
        job.resume(),
        Err(Error::NotAllowed {
            verb: Verb::Resume,
            ..
        })
    ));
    let resumed_at = job.info().current;
    while job.info().current == resumed_at {
        std::thread::yield_now();
    }
    job.cancel();
    assert_eq!(job.wait(LONG), Ok(State::Cancelled));
}

#[test]
fn cancel_of_a_paused_job_resumes_it() {
    let job = Job::builder().spawn(until_cancelled).unwrap();
    job.pause().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(job.cancel(), CancelStatus::Requested);
    let info = job.info();
    assert!(!info.pause_requested, "cancel must undo the user pause");
    assert_eq!(job.wait(LONG), Ok(State::Cancelled));
}

#[test]
fn wait_times_out_and_huge_timeouts_do_not_overflow() {
    let (tx, rx) = mpsc::channel::<()>();
    let job = Job::builder()
        .spawn(move |_| {
            rx.recv().unwrap();
            Ok(())
        })
        .unwrap();
    assert_eq!(
        job.wait(Some(Duration::from_millis(20))),
        Err(Error::TimedOut)
    );
    assert_eq!(job.wait(Some(Duration::ZERO)), Err(Error::TimedOut));
    tx.send(()).unwrap();
    assert_eq!(job.wait(Some(Duration::MAX)), Ok(State::Completed));
}

#[test]
fn release_is_refused_while_running_and_cancels_a_created_job() {
    let drops = Drops::default();
    let g = drops.guard();
    let created = Job::builder().create(move |_| {
        let _g = &g;
        Ok(())
    });
    created.release().unwrap();
    assert_eq!(created.state(), State::Cancelled);
    assert_eq!(drops.count(), 1);

    let running = Job::builder().spawn(until_cancelled).unwrap();
    assert!(matches!(
        running.release(),
        Err(Error::NotAllowed {
            verb: Verb::Destroy,
            ..
        })
    ));
    running.pause().unwrap();
    assert!(running.release().is_err());
    running.cancel();
    running.wait(LONG).unwrap();
    running.release().unwrap();
}

#[test]
fn progress_rules() {
    let job = Job::builder().create(|_| Ok(()));
    assert_eq!(job.info().percent, -1, "no total: unknown");
    job.set_total(200).unwrap();
    job.set_current(50).unwrap();
    assert_eq!(job.info().percent, 25);
    assert_eq!(
        job.set_current(49),
        Err(Error::InvalidArgument("current progress may only grow"))
    );
    assert_eq!(job.info().current, 50, "a refused update changes nothing");
    job.set_total(40).unwrap();
    assert_eq!(job.info().percent, 100, "current > total clamps");
    job.add_units(u64::MAX).unwrap();
    assert_eq!(job.info().current, u64::MAX, "saturates");
    assert!(job.set_percent(101).is_err());
    assert!(job.set_percent(-2).is_err());
    job.set_percent(42).unwrap();
    assert_eq!(job.info().percent, 42);
    assert!(job.set_eta(-2).is_err());
    assert!(job.set_error(0, "zero is not an error").is_err());
    assert!(job.info().since_progress_ms >= 0);
    job.cancel();
    assert!(matches!(
        job.set_current(u64::MAX),
        Err(Error::NotAllowed {
            verb: Verb::Update,
            ..
        })
    ));
    assert!(job.set_phase("late").is_err());
}

#[test]
fn updates_after_a_clean_end_are_refused() {
    let job = Job::builder().spawn(|_| Ok(())).unwrap();
    job.wait(LONG).unwrap();
    assert!(matches!(
        job.add_units(1),
        Err(Error::NotAllowed {
            state: State::Completed,
            ..
        })
    ));
}

#[test]
fn unbounded_jobs_have_no_percent_or_eta() {
    let (tx, rx) = mpsc::channel::<()>();
    let job = Job::builder()
        .job_type(JobType::Unbounded)
        .spawn(move |w| {
            w.add_units(7)?;
            rx.recv().unwrap();
            Ok(())
        })
        .unwrap();
    while job.info().current == 0 {
        std::thread::yield_now();
    }
    let i = job.info();
    assert_eq!((i.percent, i.remaining_ms, i.current), (-1, -1, 7));
    tx.send(()).unwrap();
    job.wait(LONG).unwrap();
    assert_eq!(job.info().percent, -1);
}

#[test]
fn eta_comes_from_the_worker_or_the_rate() {
    let (tx, rx) = mpsc::channel::<()>();
    let job = Job::builder()
        .spawn(move |w| {
            w.set_total(1000)?;
            std::thread::sleep(Duration::from_millis(50));
            w.set_current(500)?;
            rx.recv().unwrap();
            Ok(())
        })
        .unwrap();
    while job.info().current == 0 {
        std::thread::yield_now();
    }
    let i = job.info();
    assert!(i.rate > 0.0);
    // Half done after >= 50 ms: about as long again, estimated from the rate.
    assert!(i.remaining_ms >= 40, "{i:?}");
    job.set_eta(60_000).unwrap();
    let r = job.info().remaining_ms;
    assert!((59_000..=60_000).contains(&r), "{r}");
    job.set_eta(-1).unwrap();
    assert!(job.info().remaining_ms < 59_000);
    tx.send(()).unwrap();
    job.wait(LONG).unwrap();
}

#[test]
fn finish_overrides_the_return_value() {
    let job = Job::builder()
        .spawn(|w| {
            w.job().finish(61).unwrap();
            Ok(())
        })
        .unwrap();
    assert_eq!(job.wait(LONG), Ok(State::Failed));
    assert_eq!(job.error().unwrap().code, 61);
    let job = Job::builder()
        .spawn(|w| {
            w.job().finish(0).unwrap();
            Err(JobError::new(1, "ignored"))
        })
        .unwrap();
    assert_eq!(job.wait(LONG), Ok(State::Completed));
    assert!(job.finish(0).is_err(), "finish after the end");
}

#[test]
fn live_jobs_are_listed_until_dropped() {
    let job = Job::builder().name("listed-job").create(|_| Ok(()));
    job.set_phase("configuring").unwrap();
    let id = job.id();
    let l = list().into_iter().find(|l| l.id == id).expect("listed");
    assert_eq!(l.name, "listed-job");
    assert_eq!(l.state, State::Created);
    assert_eq!(l.phase, "configuring");
    drop(job);
    assert!(list().iter().all(|l| l.id != id));
}

#[test]
fn worker_threads_carry_the_job_name() {
    let job = Job::builder()
        .name("vm1-migrate")
        .stack_size(256 * 1024)
        .spawn(|_| {
            let name = std::thread::current().name().map(str::to_owned);
            if name.as_deref() == Some("vm1-migrate") {
                Ok(())
            } else {
                Err(JobError::new(1, format!("{name:?}")))
            }
        })
        .unwrap();
    assert_eq!(job.wait(LONG), Ok(State::Completed), "{:?}", job.error());
}

#[test]
fn a_burst_of_short_jobs_all_complete() {
    let drops = Drops::default();
    let jobs: Vec<Job> = (0..500)
        .map(|i| {
            let g = drops.guard();
            Job::builder()
                .name(format!("burst-{i}"))
                .spawn(move |w| {
                    let _g = &g;
                    w.add_units(1)?;
                    Ok(())
                })
                .unwrap()
        })
        .collect();
    for j in &jobs {
        assert_eq!(j.wait(LONG), Ok(State::Completed));
    }
    assert_eq!(drops.count(), 500);
}

#[test]
fn completion_runs_once_on_the_worker_thread_after_the_end() {
    let (tx, rx) = mpsc::channel();
    let job = Job::builder()
        .on_complete(None, move |j| {
            tx.send((std::thread::current().id(), j.state())).unwrap();
        })
        .spawn(|w| {
            w.job().set_result(Box::new(42u32))?;
            Ok(())
        })
        .unwrap();
    let (thread, state) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_ne!(thread, std::thread::current().id());
    assert_eq!(state, State::Completed, "runs after the job is terminal");
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "once");
    assert_eq!(
        job.with_result(|r| r.and_then(|v| v.downcast_ref::<u32>()).copied()),
        Ok(Some(42))
    );
    let taken = job.take_result().unwrap().unwrap();
    assert_eq!(*taken.downcast::<u32>().unwrap(), 42);
    assert!(job.take_result().unwrap().is_none());
    let running = Job::builder().create(|_| Ok(()));
    assert!(matches!(
        running.take_result(),
        Err(Error::NotAllowed {
            verb: Verb::Result,
            ..
        })
    ));
}

#[test]
fn completion_through_a_context_runs_on_the_dispatching_thread() {
    let ctx = Context::new().unwrap();
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let jobs: Vec<Job> = (0..50)
        .map(|_| {
            let r = ran_on.clone();
            Job::builder()
                .on_complete(Some(ctx.clone()), move |j| {
                    r.lock()
                        .unwrap()
                        .push((std::thread::current().id(), j.id()));
                })
                .spawn(|_| Ok(()))
                .unwrap()
        })
        .collect();
    for j in &jobs {
        j.wait(LONG).unwrap();
    }
    assert!(
        ran_on.lock().unwrap().is_empty(),
        "nothing runs before dispatch"
    );
    assert_eq!(ctx.pending(), 50);
    assert_eq!(ctx.dispatch(10), Ok(10));
    assert_eq!(ctx.dispatch(0), Ok(40));
    let ran = ran_on.lock().unwrap();
    assert_eq!(ran.len(), 50);
    assert!(ran.iter().all(|(t, _)| *t == std::thread::current().id()));
    let mut ids: Vec<u64> = ran.iter().map(|(_, id)| *id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50, "each job's callback exactly once");
}

#[test]
fn completion_of_a_never_started_job_is_not_run_inside_cancel() {
    let (tx, rx) = mpsc::channel();
    let caller = std::thread::current().id();
    let job = Job::builder()
        .on_complete(None, move |j| {
            tx.send((std::thread::current().id(), j.state())).unwrap();
        })
        .create(|_| Ok(()));
    job.cancel();
    let (thread, state) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_ne!(thread, caller);
    assert_eq!(state, State::Cancelled);
}

#[test]
fn a_closed_context_drops_completions_unrun() {
    let ctx = Context::new().unwrap();
    let drops = Drops::default();
    let ran = Arc::new(AtomicBool::new(false));
    let (g, r) = (drops.guard(), ran.clone());
    let (tx, rx) = mpsc::channel::<()>();
    let job = Job::builder()
        .on_complete(Some(ctx.clone()), move |_| {
            let _g = &g;
            r.store(true, Ordering::SeqCst);
        })
        .spawn(move |_| {
            rx.recv().unwrap();
            Ok(())
        })
        .unwrap();
    ctx.close();
    tx.send(()).unwrap();
    job.wait(LONG).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while drops.count() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        drops.count(),
        1,
        "the completion's captures were dropped once"
    );
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(ctx.dispatch(0), Ok(0));
}

#[test]
fn pause_is_refused_once_cancel_was_requested() {
    let job = Job::builder().spawn(until_cancelled).unwrap();
    job.cancel();
    assert!(matches!(
        job.pause(),
        Err(Error::NotAllowed {
            verb: Verb::Pause,
            ..
        })
    ));
    assert!(!job.info().pause_requested);
    assert_eq!(job.wait(LONG), Ok(State::Cancelled));
}

#[test]
fn a_recorded_error_wins_over_the_bare_return_value() {
    let job = Job::builder()
        .spawn(|w| {
            w.job().set_error(28, "disk full")?;
            Err(JobError::new(-1, ""))
        })
        .unwrap();
    assert_eq!(job.wait(LONG), Ok(State::Failed));
    assert_eq!(job.error(), Some(JobError::new(28, "disk full")));
}

#[test]
fn a_panic_payload_is_dropped_with_no_job_lock_held() {
    // The payload's Drop reads the job: under the job's lock it would deadlock.
    struct ReadsJobOnDrop(Job, mpsc::Sender<State>);
    impl Drop for ReadsJobOnDrop {
        fn drop(&mut self) {
            let _ = self.1.send(self.0.info().state);
        }
    }
    let (tx, rx) = mpsc::channel();
    let job = Job::builder().create(move |w| {
        std::panic::panic_any(ReadsJobOnDrop(w.job().clone(), tx));
    });
    job.start().unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(State::Running));
    assert_eq!(job.wait(LONG), Ok(State::Failed));
    assert!(job.error().unwrap().message.contains("non-string"));
}

#[test]
fn a_worker_waiting_for_its_own_job_is_refused() {
    let job = Job::builder()
        .spawn(|w| match w.job().wait(None) {
            Err(Error::OwnWorker) => Ok(()),
            other => Err(JobError::new(1, format!("{other:?}"))),
        })
        .unwrap();
    assert_eq!(job.wait(LONG), Ok(State::Completed), "{:?}", job.error());
}

mod cancel;
mod child;
mod external;
mod family;
mod pool;
mod ready;
mod threads;
mod window;

//! READY / STANDBY / PENDING, complete, soft cancel, updates that never park,
//! and the after-declare update rule, through core's Rust API.

use super::*;

/// Waits until `job` is in `want` (bounded).
fn reach(job: &Job, want: State) {
    let until = Instant::now() + Duration::from_secs(30);
    while job.state() != want {
        assert!(Instant::now() < until, "never {want}: {}", job.state());
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn complete_ends_a_ready_workers_sleep_early_until_acknowledged() {
    let (tx, rx) = mpsc::channel();
    let job = Job::builder()
        .spawn(move |w| {
            w.set_ready().unwrap();
            // Only a complete (or cancel) ends this sleep.
            let slept = w.job().sleep(Duration::MAX);
            let before_ack = w.job().sleep(Duration::ZERO);
            let requested = w.complete_requested();
            tx.send((slept, before_ack, requested)).unwrap();
            Ok(())
        })
        .unwrap();
    reach(&job, State::Ready);
    assert!(!job.complete_requested());
    job.complete().unwrap();
    let (slept, before_ack, requested) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(slept, Ok(()));
    assert_eq!(before_ack, Ok(()));
    assert!(requested);
    assert_eq!(job.wait(LONG), Ok(State::Completed));
    assert!(job.info().complete_requested);
    assert_eq!(
        job.complete(),
        Err(Error::NotAllowed {
            verb: Verb::Complete,
            state: State::Completed
        })
    );
}

#[test]
fn soft_cancel_calls_no_hook_and_force_calls_it_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let job = Job::builder()
        .spawn(move |w| {
            w.set_ready().unwrap();
            let _ = go_rx.recv();
            if w.job().cancel_is_soft() {
                Ok(())
            } else {
                Err(JobError::new(125, ""))
            }
        })
        .unwrap();
    reach(&job, State::Ready);
    let c = calls.clone();
    job.add_cancel_hook(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    assert_eq!(job.cancel_soft(), CancelStatus::Requested);
    assert!(job.cancel_is_soft());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(job.cancel(), CancelStatus::Requested);
    assert!(!job.cancel_is_soft());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(job.cancel(), CancelStatus::AlreadyRequested);
    go_tx.send(()).unwrap();
    assert_eq!(job.wait(LONG), Ok(State::Cancelled));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn manual_finalize_alone_goes_straight_to_pending() {
    let job = Job::builder()
        .manual_finalize(true)
        .spawn(|_| Ok(()))
        .unwrap();
    reach(&job, State::Pending);
    assert!(verb_allowed(Verb::Finalize, job.state()));
    job.finalize().unwrap();
    assert_eq!(job.wait(LONG), Ok(State::Completed));
}

#[test]
fn updates_are_refused_once_an_outcome_is_declared() {
    let (tx, rx) = mpsc::channel();
    let job = Job::builder()
        .spawn(move |w| {
            let before = w.set_current(1);
            w.job().declare(Declare::Success).unwrap();
            let after = (
                w.set_current(2),
                w.job().set_phase("late"),
                w.job().set_error(5, "late"),
                w.set_ready(),
                w.job().check_update(),
            );
            tx.send((before, after)).unwrap();
            Ok(())
        })
        .unwrap();
    let (before, after) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(before, Ok(()));
    let refused = |r: &Result<(), Error>| {
        matches!(
            r,
            Err(Error::NotAllowed {
                verb: Verb::Update,
                ..
            })
        )
    };
    assert!(refused(&after.0), "set_current: {:?}", after.0);
    assert!(refused(&after.1), "set_phase: {:?}", after.1);
    assert!(refused(&after.2), "set_error: {:?}", after.2);
    assert!(refused(&after.3), "set_ready: {:?}", after.3);
    assert!(refused(&after.4), "check_update: {:?}", after.4);
    assert_eq!(job.wait(LONG), Ok(State::Completed));
    assert_eq!(job.info().current, 1);
    assert_eq!(job.error(), None);
}

/// With `updates_never_park`, a progress update while paused returns; the
/// worker parks only at its pause point.
#[test]
fn updates_never_park_returns_while_paused() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    let job = Job::builder()
        .updates_never_park(true)
        .spawn(move |w| {
            let _ = go_rx.recv();
            done_tx.send(w.add_units(1)).unwrap();
            w.pause_point().map_err(|_| JobError::new(125, ""))
        })
        .unwrap();
    job.pause().unwrap();
    go_tx.send(()).unwrap();
    assert_eq!(
        done_rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        Ok(())
    );
    assert_eq!(job.state(), State::Paused);
    job.resume().unwrap();
    assert_eq!(job.wait(LONG), Ok(State::Completed));
}

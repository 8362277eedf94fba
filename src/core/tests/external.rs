//! External jobs and the control callback, through the Rust API.

use super::*;

type Calls = Arc<Mutex<Vec<(Control, i64)>>>;

/// An external job whose control calls are recorded and whose callback's
/// drop is counted.
fn external(b: Builder, drops: &Drops) -> (Job, Calls) {
    let calls: Calls = Arc::default();
    let (c, g) = (calls.clone(), drops.guard());
    let job = b
        .on_control(move |_, what, arg| {
            let _ = &g;
            c.lock().unwrap().push((what, arg));
        })
        .create_external();
    (job, calls)
}

#[test]
fn an_external_job_runs_without_a_thread_and_ends_by_its_owner() {
    let drops = Drops::default();
    let (job, calls) = external(Builder::new(), &drops);
    let idle = Pool::global().running();
    job.start().unwrap();
    assert_eq!(job.state(), State::Running);
    assert!(job.is_external());
    assert_eq!(Pool::global().running(), idle, "no pool slot taken");
    job.set_total(10).unwrap();
    job.add_units(5).unwrap();
    job.set_phase("copying").unwrap();
    assert_eq!(job.info().current, 5);
    job.end(Ok(())).unwrap();
    assert_eq!(job.state(), State::Completed);
    assert_eq!(drops.count(), 1, "control dropped at the end");
    assert!(calls.lock().unwrap().is_empty());
    assert!(matches!(job.end(Ok(())), Err(Error::NotAllowed { .. })));
}

#[test]
fn end_after_cancel_is_cancelled_and_control_hears_it_once() {
    let drops = Drops::default();
    let (job, calls) = external(Builder::new(), &drops);
    job.start().unwrap();
    assert_eq!(job.cancel(), CancelStatus::Requested);
    assert_eq!(job.cancel(), CancelStatus::AlreadyRequested);
    assert_eq!(*calls.lock().unwrap(), vec![(Control::Cancel, 1)]);
    job.end(Err(JobError::new(125, "stopped"))).unwrap();
    assert_eq!(job.state(), State::Cancelled);
    assert_eq!(drops.count(), 1);
    assert_eq!(job.cancel(), CancelStatus::AlreadyFinished);
}

#[test]
fn a_failure_keeps_its_code_and_a_success_after_cancel_completes() {
    let job = Builder::new().create_external();
    job.start().unwrap();
    job.end(Err(JobError::new(5, "io"))).unwrap();
    assert_eq!(job.state(), State::Failed);
    assert_eq!(job.error(), Some(JobError::new(5, "io")));
    let job = Builder::new().create_external();
    job.start().unwrap();
    job.cancel();
    job.end(Ok(())).unwrap();
    assert_eq!(job.state(), State::Completed);
}

#[test]
fn pause_resume_and_speed_reach_the_owner_and_time_stops() {
    let drops = Drops::default();
    let (job, calls) = external(Builder::new(), &drops);
    job.start().unwrap();
    job.pause().unwrap();
    assert_eq!(job.state(), State::Paused);
    // An internal pause on a paused job changes nothing for the owner.
    job.pause_internal().unwrap();
    let frozen = job.info().elapsed_ms;
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(job.info().elapsed_ms, frozen, "paused time does not count");
    job.resume().unwrap();
    job.resume_internal().unwrap();
    job.set_speed(1000).unwrap();
    job.set_speed(1000).unwrap();
    assert_eq!(job.speed(), 1000);
    // Updates from this (non-worker) thread never park, paused or not.
    job.pause().unwrap();
    job.add_units(1).unwrap();
    job.after_update();
    assert_eq!(
        *calls.lock().unwrap(),
        vec![
            (Control::Pause, 0),
            (Control::Resume, 0),
            (Control::SetSpeed, 1000),
            (Control::Pause, 0),
        ]
    );
    job.cancel();
    job.end(Ok(())).unwrap();
    assert_eq!(drops.count(), 1);
}

#[test]
fn calls_that_need_a_worker_thread_are_refused() {
    let job = Builder::new().create_external();
    job.start().unwrap();
    let na = |r: Result<(), Error>| assert!(matches!(r, Err(Error::NotAllowed { .. })), "{r:?}");
    na(job.sleep(Duration::from_millis(1)));
    na(job.pause_point());
    na(job
        .wait_fd(
            0,
            FdEvents {
                readable: true,
                ..Default::default()
            },
            None,
        )
        .map(drop));
    na(job.wait_child(1, None).map(drop));
    na(job.spawn_child(Spawn::new(["true"])).map(drop));
    job.end(Ok(())).unwrap();
    // And end is refused on a threaded job.
    let t = Builder::new().create(|_| Ok(()));
    assert!(matches!(t.end(Ok(())), Err(Error::NotAllowed { .. })));
    t.release().unwrap();
}

#[test]
fn a_created_external_job_cancelled_or_released_drops_its_control_uncalled() {
    let drops = Drops::default();
    let (job, calls) = external(Builder::new(), &drops);
    job.cancel();
    assert_eq!(job.state(), State::Cancelled);
    assert_eq!(drops.count(), 1);
    let (job2, calls2) = external(Builder::new(), &drops);
    job2.release().unwrap();
    assert_eq!(drops.count(), 2);
    let (job3, _) = external(Builder::new(), &drops);
    job3.discard();
    assert_eq!(drops.count(), 3);
    assert!(calls.lock().unwrap().is_empty() && calls2.lock().unwrap().is_empty());
}

#[test]
fn a_deadline_cancels_an_external_job_through_control() {
    let (tx, rx) = mpsc::channel();
    let job = Builder::new()
        .deadline(Duration::from_millis(20))
        .on_control(move |j, what, arg| {
            // The OS name (the pool renames reused threads; std's name is
            // the one the thread was started with).
            let name = std::fs::read_to_string("/proc/thread-self/comm")
                .ok()
                .map(|n| n.trim_end().to_owned());
            tx.send((what, arg, j.info().cancel_cause, name)).unwrap();
        })
        .create_external();
    job.start().unwrap();
    let (what, arg, cause, thread) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        (what, arg, cause),
        (Control::Cancel, 1, CancelCause::Timeout)
    );
    assert_eq!(thread.as_deref(), Some("bgjob-deadline"));
    job.end(Err(JobError::new(1, "x"))).unwrap();
    assert_eq!(job.state(), State::Cancelled);
}

#[test]
fn the_end_waits_for_a_control_call_on_another_thread() {
    let entered = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let returned = Arc::new(AtomicBool::new(false));
    let (e, r, done) = (entered.clone(), release.clone(), returned.clone());
    let job = Builder::new()
        .on_control(move |_, _, _| {
            e.wait();
            r.wait();
            done.store(true, Ordering::SeqCst);
        })
        .create_external();
    job.start().unwrap();
    let j = job.clone();
    let canceller = std::thread::spawn(move || j.cancel());
    entered.wait();
    let j = job.clone();
    let ret = returned.clone();
    let ender = std::thread::spawn(move || {
        j.end(Ok(())).unwrap();
        ret.load(Ordering::SeqCst)
    });
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        !job.state().is_terminal(),
        "ended under a running control call"
    );
    release.wait();
    assert!(
        ender.join().unwrap(),
        "end returned before the control call"
    );
    canceller.join().unwrap();
}

#[test]
fn a_transaction_sibling_failure_cancels_the_external_member() {
    let drops = Drops::default();
    let txn = Txn::new(false);
    let (ext, calls) = external(Builder::new(), &drops);
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let threaded = Builder::new().create(move |_| {
        g.wait();
        Err(JobError::new(5, "boom"))
    });
    txn.add(&ext).unwrap();
    txn.add(&threaded).unwrap();
    txn.start().unwrap();
    gate.wait();
    // The threaded member waits for the external one, which was told to cancel.
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(*calls.lock().unwrap(), vec![(Control::Cancel, 1)]);
    assert_eq!(ext.info().cancel_cause, CancelCause::Transaction);
    assert_eq!(threaded.state(), State::Waiting);
    ext.end(Err(JobError::new(125, "cancelled"))).unwrap();
    assert_eq!(ext.state(), State::Cancelled);
    assert_eq!(threaded.wait(None).unwrap(), State::Failed);
}

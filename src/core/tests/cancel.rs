//! Cancellation hooks, cancellable waits, deadlines and child processes.

use super::*;

#[test]
fn hooks_run_once_in_order_on_the_cancelling_thread() {
    let job = Job::builder().spawn(until_cancelled).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let drops = Drops::default();
    for i in 0..3 {
        let (seen, g) = (seen.clone(), drops.guard());
        let added = job
            .add_cancel_hook(move |_| {
                let _g = &g;
                seen.lock().unwrap().push((i, std::thread::current().id()));
            })
            .unwrap();
        assert!(matches!(added, HookAdded::Registered(_)));
    }
    assert_eq!(job.cancel(), CancelStatus::Requested);
    let seen = seen.lock().unwrap().clone();
    let me = std::thread::current().id();
    assert_eq!(seen, vec![(0, me), (1, me), (2, me)]);
    assert_eq!(drops.count(), 3);
    job.wait(LONG).unwrap();
}

#[test]
fn a_hook_added_after_cancel_runs_at_once_and_leftovers_are_dropped_unrun() {
    let job = Job::builder().spawn(until_cancelled).unwrap();
    job.cancel();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    assert_eq!(
        job.add_cancel_hook(move |_| r.store(true, Ordering::SeqCst)),
        Ok(HookAdded::RanAtOnce)
    );
    assert!(ran.load(Ordering::SeqCst));
    job.wait(LONG).unwrap();
    assert!(
        job.add_cancel_hook(|_| {}).is_err(),
        "refused after the end"
    );

    let drops = Drops::default();
    let g = drops.guard();
    let finished = Job::builder().create(|_| Ok(()));
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    finished
        .add_cancel_hook(move |_| {
            let _g = &g;
            r.store(true, Ordering::SeqCst);
        })
        .unwrap();
    finished.start().unwrap();
    finished.wait(LONG).unwrap();
    assert_eq!(drops.count(), 1, "dropped when the job ended");
    assert!(!ran.load(Ordering::SeqCst), "never called");
}

#[test]
fn removing_a_hook_waits_for_it_unless_called_from_inside_it() {
    // Removed before cancel: never runs, dropped at once.
    let job = Job::builder().spawn(until_cancelled).unwrap();
    let drops = Drops::default();
    let g = drops.guard();
    let HookAdded::Registered(id) = job.add_cancel_hook(move |_| drop(g)).unwrap() else {
        panic!("registered")
    };
    assert_eq!(job.remove_cancel_hook(id), HookRemoved::Removed);
    assert_eq!(drops.count(), 1);
    assert_eq!(job.remove_cancel_hook(id), HookRemoved::NotFound);

    // From inside itself, and cancelling its own job from inside: both return.
    let inner_results = Arc::new(Mutex::new(None));
    let (r, slot) = (inner_results.clone(), Arc::new(Mutex::new(0)));
    let id_slot = slot.clone();
    let HookAdded::Registered(id) = job
        .add_cancel_hook(move |j| {
            let id = *id_slot.lock().unwrap();
            *r.lock().unwrap() = Some((j.remove_cancel_hook(id), j.cancel()));
        })
        .unwrap()
    else {
        panic!("registered")
    };
    *slot.lock().unwrap() = id;
    job.cancel();
    assert_eq!(
        *inner_results.lock().unwrap(),
        Some((HookRemoved::NotFound, CancelStatus::AlreadyRequested))
    );
    job.wait(LONG).unwrap();
}

#[test]
fn remove_racing_cancel_never_sees_a_half_run_hook() {
    for _ in 0..300 {
        let job = Job::builder().spawn(until_cancelled).unwrap();
        let state = Arc::new(AtomicUsize::new(0)); // 0 idle, 1 running, 2 done
        let drops = Drops::default();
        let (s, g) = (state.clone(), drops.guard());
        let HookAdded::Registered(id) = job
            .add_cancel_hook(move |_| {
                let _g = &g;
                s.store(1, Ordering::SeqCst);
                std::thread::yield_now();
                s.store(2, Ordering::SeqCst);
            })
            .unwrap()
        else {
            panic!("registered")
        };
        let canceller = {
            let job = job.clone();
            std::thread::spawn(move || job.cancel())
        };
        job.remove_cancel_hook(id);
        let seen = state.load(Ordering::SeqCst);
        assert!(seen == 0 || seen == 2, "remove returned while the hook ran");
        canceller.join().unwrap();
        assert_eq!(drops.count(), 1);
        job.wait(LONG).unwrap();
    }
}

#[test]
fn sleep_is_cancellable_and_paused_time_does_not_count() {
    let (tx, rx) = mpsc::channel();
    let job = Job::builder()
        .spawn(move |w| {
            let start = Instant::now();
            let r = w.job().sleep(Duration::from_secs(60));
            tx.send((r, start.elapsed())).unwrap();
            Ok(())
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    job.cancel();
    let (r, took) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(r, Err(Error::Cancelled));
    assert!(took < Duration::from_secs(5), "{took:?}");
    job.wait(LONG).unwrap();

    // The pause must land while the sleep still has time left: a round in
    // which this thread was kept off the CPU until (nearly) the sleep's end
    // tells nothing, and is run again.
    let sleep = Duration::from_millis(1000);
    let mut round = 0;
    let job = loop {
        round += 1;
        assert!(round <= 20, "never paused inside the sleep in 20 rounds");
        let (entered_tx, entered_rx) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        let job = Job::builder()
            .spawn(move |w| {
                let start = Instant::now();
                entered_tx.send(start).unwrap();
                let r = w.job().sleep(sleep);
                tx.send((r, start.elapsed())).unwrap();
                Ok(())
            })
            .unwrap();
        let start = entered_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        job.pause().unwrap();
        let paused_at = Instant::now();
        if paused_at - start > sleep * 7 / 10 {
            job.resume().unwrap();
            job.wait(LONG).unwrap();
            continue;
        }
        std::thread::sleep(Duration::from_millis(200));
        let paused_for = paused_at.elapsed();
        job.resume().unwrap();
        let (r, took) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(r, Ok(()));
        assert!(
            took + Duration::from_millis(20) >= sleep + paused_for,
            "paused time counted: slept {took:?}, paused {paused_for:?}"
        );
        break job;
    };
    job.wait(LONG).unwrap();
    assert!(job.sleep(Duration::ZERO).is_err(), "refused once ended");
}

#[test]
fn an_impossible_stack_size_is_refused_not_a_panic() {
    let drops = Drops::default();
    let g = drops.guard();
    let r = Job::builder().stack_size(usize::MAX).spawn(move |_| {
        let _g = &g;
        Ok(())
    });
    assert!(matches!(r, Err(Error::InvalidArgument(_))));
    assert_eq!(drops.count(), 1, "the worker closure was dropped");
}

#[test]
fn a_deadline_cancels_with_cause_timeout_and_a_cancel_says_caller() {
    let job = Builder::new()
        .deadline(Duration::from_millis(30))
        .spawn(|w| {
            w.job()
                .sleep(Duration::MAX)
                .map_err(|_| JobError::new(125, ""))
        })
        .unwrap();
    assert_eq!(job.wait(LONG), Ok(State::Cancelled));
    let info = job.info();
    assert_eq!(info.cancel_cause, CancelCause::Timeout);
    assert!(info.elapsed_ms >= 30);

    let job = Builder::new().spawn(until_cancelled).unwrap();
    assert_eq!(job.info().cancel_cause, CancelCause::None);
    job.cancel();
    assert_eq!(job.wait(LONG), Ok(State::Cancelled));
    assert_eq!(job.info().cancel_cause, CancelCause::Caller);
}

/// A deadline set while the job is paused: one already passed (0 always
/// has) cancels it at once, paused as it is; a later one waits for active
/// time, which a pause stops.
#[test]
fn a_passed_deadline_cancels_a_paused_job_and_a_later_one_waits_for_the_resume() {
    let job = Builder::new().spawn(until_cancelled).unwrap();
    job.pause().unwrap();
    job.set_deadline(Some(Duration::from_millis(60_000)))
        .unwrap();
    job.set_deadline(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        job.wait(LONG),
        Ok(State::Cancelled),
        "cancelled while paused"
    );
    assert_eq!(job.info().cancel_cause, CancelCause::Timeout);

    // A deadline counts the active time since the start: this one is set
    // 300 ms past what ran before the pause, however long that was.
    let job = Builder::new().spawn(until_cancelled).unwrap();
    job.pause().unwrap();
    let ran = Duration::from_millis(job.info().elapsed_ms.unsigned_abs());
    job.set_deadline(Some(ran + Duration::from_millis(300)))
        .unwrap();
    assert_eq!(
        job.wait(Some(Duration::from_millis(500))),
        Err(Error::TimedOut)
    );
    assert!(!job.info().cancel_requested, "paused: no active time ran");
    job.resume().unwrap();
    assert_eq!(job.wait(LONG), Ok(State::Cancelled));
    assert_eq!(job.info().cancel_cause, CancelCause::Timeout);
}

#[test]
fn wait_fd_sees_data_and_is_cut_short_by_cancel() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let (r, mut w) = std::io::pipe().unwrap();
    let fd = r.as_raw_fd();
    let (tx, rx) = mpsc::channel();
    let want = FdEvents {
        readable: true,
        ..FdEvents::default()
    };
    let job = Builder::new()
        .spawn(move |wk| {
            let first = wk.job().wait_fd(fd, want, None);
            let second = wk.job().wait_fd(fd, want, Some(Duration::from_millis(20)));
            tx.send((first, second)).unwrap();
            // Data is still unread, so it stays readable; only cancel ends this.
            let mut buf = [0u8; 1];
            std::io::Read::read(&mut &r, &mut buf).unwrap();
            let third = wk.job().wait_fd(fd, want, None);
            tx.send((third, Ok(FdEvents::default()))).unwrap();
            Ok(())
        })
        .unwrap();
    w.write_all(b"x").unwrap();
    let (first, second) = rx.recv().unwrap();
    assert!(first.unwrap().readable);
    assert!(second.unwrap().readable, "unread data keeps it readable");
    std::thread::sleep(Duration::from_millis(20));
    job.cancel();
    let (third, _) = rx.recv().unwrap();
    assert_eq!(third, Err(Error::Cancelled));
    assert_eq!(job.wait(LONG), Ok(State::Completed));
}

#[test]
fn a_child_reports_its_exit_and_is_killed_on_cancel() {
    child_exit_and_cancel();
}

/// The same without pidfds (kernels before 5.3, valgrind): bgjob holds the
/// pid, and a watcher thread stands in for the pidfd's readability. Other
/// tests spawning children meanwhile use the fallback too, which they must
/// also pass with.
#[test]
fn a_child_without_pidfds_reports_its_exit_and_is_killed_on_cancel() {
    use std::sync::atomic::Ordering;
    let _one_at_a_time = crate::sys::FORCE_PID_FALLBACK_TESTS
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let before = crate::sys::PID_FALLBACK_OPENS.load(Ordering::SeqCst);
    crate::sys::FORCE_PID_FALLBACK.store(true, Ordering::SeqCst);
    let ran = std::panic::catch_unwind(child_exit_and_cancel);
    crate::sys::FORCE_PID_FALLBACK.store(false, Ordering::SeqCst);
    if let Err(panic) = ran {
        std::panic::resume_unwind(panic);
    }
    let used = crate::sys::PID_FALLBACK_OPENS.load(Ordering::SeqCst) - before;
    assert!(
        used >= 2,
        "the fallback held {used} of the test's two children"
    );
}

fn child_exit_and_cancel() {
    let (tx, rx) = mpsc::channel();
    let job = Builder::new()
        .spawn(move |w| {
            let pid = w
                .job()
                .spawn_child(Spawn::new(["sh", "-c", "exit 4"]))
                .unwrap();
            let exit = w.job().wait_child(pid, None).unwrap();
            tx.send((pid, exit)).unwrap();
            let pid = w.job().spawn_child(Spawn::new(["sleep", "60"])).unwrap();
            tx.send((pid, exit)).unwrap();
            let exit = w.job().wait_child(pid, None).unwrap();
            tx.send((pid, exit)).unwrap();
            Err(JobError::new(125, ""))
        })
        .unwrap();
    let (_, exit) = rx.recv().unwrap();
    assert_eq!((exit.code(), exit.cancelled), (Some(4), false));
    let (sleeper, _) = rx.recv().unwrap();
    job.cancel();
    let (pid, exit) = rx.recv().unwrap();
    assert_eq!(pid, sleeper);
    assert!(exit.cancelled);
    assert_eq!(exit.signal(), Some(15));
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(job.wait(LONG), Ok(State::Cancelled));
}

/// A caller that looked the job up just before another detached it (without
/// cancel) must not be able to pause it: nobody could ever resume it, and the
/// job would never end or free anything. Found by the stress test.
#[test]
fn a_detached_job_cannot_be_paused_by_a_stale_reference() {
    let drops = Drops::default();
    let g = drops.guard();
    let job = Job::builder()
        .spawn(move |w| {
            let _g = &g;
            until_cancelled(w)
        })
        .unwrap();
    let stale = job.clone();
    assert_eq!(job.detach(false), Ok(()));
    assert!(matches!(stale.pause(), Err(Error::NotAllowed { .. })));
    assert_eq!(stale.state(), State::Running);
    stale.cancel();
    assert_eq!(stale.wait(LONG), Ok(State::Cancelled));
    assert_eq!(drops.count(), 1);
}

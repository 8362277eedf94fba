//! The two changes of this round seen from outside: a cancel that reaches a
//! job between its create and the start its create makes (recorded, seen
//! once it started), and a parent whose work is done while a sub-job runs
//! (it ends its work as any job does, then waits in `Waiting`).

use super::*;
use crate::core::job::CancelCause;

type Calls = Arc<Mutex<Vec<(Control, i64, State)>>>;

/// An external job its create starts at once, whose control calls are
/// recorded with the state the job was in.
fn external_started_at_once() -> (Job, Calls) {
    let calls: Calls = Arc::default();
    let c = calls.clone();
    let job = Job::builder()
        .start_at_once()
        .on_control(move |j, what, arg| c.lock().unwrap().push((what, arg, j.state())))
        .create_external();
    (job, calls)
}

/// "Verbs reach the owner through the control callback": an external job
/// cancelled between its create and its create's start runs with its cancel
/// requested, and its owner — who has no worker to poll it for him — is
/// told CANCEL (force) once, as soon as it started. Before, nobody told it:
/// the cancel came while the job was CREATED (no control call then), and
/// every later cancel answered ALREADY_REQUESTED, so an owner waiting for
/// CANCEL ran the cancelled job for ever. The same for an external sub-job
/// born under a cancelled parent.
#[test]
fn an_external_job_cancelled_before_its_creates_start_is_told_cancel_once_started() {
    let (job, calls) = external_started_at_once();
    assert_eq!(job.cancel(), CancelStatus::Requested);
    assert!(calls.lock().unwrap().is_empty(), "told while CREATED");
    job.start().expect("its create's start");
    assert_eq!(
        *calls.lock().unwrap(),
        vec![(Control::Cancel, 1, State::Running)],
        "the owner was not told the cancel its job started with"
    );
    assert_eq!(job.cancel(), CancelStatus::AlreadyRequested);
    job.end(Err(JobError::new(125, "cancelled"))).unwrap();
    assert_eq!(job.wait(None).unwrap(), State::Cancelled);
    assert_eq!(calls.lock().unwrap().len(), 1, "told twice");

    // Born cancelled under a cancelled parent (set_parent, then start).
    let parent = Job::builder().create_external();
    parent.start().unwrap();
    parent.cancel();
    let (child, calls) = external_started_at_once();
    child.set_parent(&parent).unwrap();
    child.start().unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        vec![(Control::Cancel, 1, State::Running)]
    );
    assert_eq!(child.info().cancel_cause, CancelCause::Parent);
    child.end(Err(JobError::new(125, "cancelled"))).unwrap();
    parent.end(Err(JobError::new(125, "cancelled"))).unwrap();
    assert_eq!(parent.wait(None).unwrap(), State::Cancelled);
}

/// A child that runs until it is told to stop (a channel), not cancellable.
fn held_child(parent: &Job) -> (Job, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let child = Job::builder().create(move |_| {
        let _ = rx.recv();
        Ok(())
    });
    child.set_parent(parent).unwrap();
    child.start().unwrap();
    (child, tx)
}

/// A user pause in force when a parent's work ends while a sub-job runs
/// ends with that work, as it does for any job (a transaction member's, a
/// job's on its own): the WAITING parent no longer reports a pause nobody
/// can undo (resume is refused in WAITING), and its active time stops at
/// its end of work whether it was paused or not. Before, the held path
/// skipped that step: `pause_requested` stayed set while WAITING, and the
/// elapsed time of a held parent was frozen when it was paused but went on
/// counting the wait for its child when it was not.
#[test]
fn a_held_parent_ends_its_user_pause_and_its_active_time_with_its_work() {
    for paused in [true, false] {
        let parent = Job::builder().create_external();
        parent.start().unwrap();
        let (child, tx) = held_child(&parent);
        if paused {
            parent.pause().unwrap();
            assert_eq!(parent.state(), State::Paused);
        }
        parent.end(Ok(())).unwrap();
        assert_eq!(parent.state(), State::Waiting);
        let info = parent.info();
        assert!(
            !info.pause_requested,
            "paused {paused}: a WAITING parent reports a user pause"
        );
        assert!(matches!(parent.resume(), Err(Error::NotAllowed { .. })));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            parent.info().elapsed_ms,
            info.elapsed_ms,
            "paused {paused}: the held parent's active time went on after its work ended"
        );
        tx.send(()).unwrap();
        assert_eq!(child.wait(None).unwrap(), State::Completed);
        assert_eq!(parent.wait(None).unwrap(), State::Completed);
        let done = parent.info();
        assert!(!done.pause_requested);
        assert_eq!(done.elapsed_ms, info.elapsed_ms, "paused {paused}");
    }
}

/// An internal pause (QEMU's drain) is allowed in WAITING; made and undone
/// there, after the job's work ended, it takes nothing off the job's active
/// time — none of that time was active. Before, the pause's length was
/// subtracted from the time the job had run (a WAITING transaction member,
/// and a held parent once its active time stops at its end of work), so
/// `elapsed_ms` went down, to 0 for a pause longer than the work.
#[test]
fn an_internal_pause_in_waiting_takes_nothing_off_the_active_time() {
    // A held parent.
    let parent = Job::builder().create_external();
    parent.start().unwrap();
    let (child, tx) = held_child(&parent);
    std::thread::sleep(Duration::from_millis(30));
    parent.end(Ok(())).unwrap();
    // A transaction member waiting for its sibling.
    let txn = Txn::new(false);
    let member = Job::builder().create_external();
    let sibling = Job::builder().create_external();
    txn.add(&member).unwrap();
    txn.add(&sibling).unwrap();
    txn.start().unwrap();
    std::thread::sleep(Duration::from_millis(30));
    member.end(Ok(())).unwrap();
    for (what, job) in [("held parent", &parent), ("transaction member", &member)] {
        assert_eq!(job.state(), State::Waiting, "{what}");
        let before = job.info().elapsed_ms;
        assert!(before >= 30, "{what}: ran {before} ms");
        job.pause_internal().unwrap();
        std::thread::sleep(Duration::from_millis(60));
        job.resume_internal().unwrap();
        assert_eq!(job.info().elapsed_ms, before, "{what}");
    }
    tx.send(()).unwrap();
    assert_eq!(child.wait(None).unwrap(), State::Completed);
    assert_eq!(parent.wait(None).unwrap(), State::Completed);
    sibling.end(Ok(())).unwrap();
    assert_eq!(member.wait(None).unwrap(), State::Completed);
    assert_eq!(sibling.wait(None).unwrap(), State::Completed);
}

/// A job whose C create failed after it became visible (its parent refused
/// the link, or its start found no thread) is discarded: its worker,
/// completion and userdata are freed before the create returns. A handle
/// another thread took in between (`bgjob_job_lookup` of its id: here a
/// clone) must still be releasable: its release found a CREATED job with no
/// worker, took it for one "being cancelled by another thread right now"
/// and waited for its end, which never comes.
#[test]
fn a_job_discarded_by_a_failed_create_can_be_released_by_another_holder() {
    for cancelled in [false, true] {
        let job = Job::builder().start_at_once().create(|_| Ok(()));
        let looked_up = job.clone();
        if cancelled {
            // A cancel in the create's window, before its failure.
            assert_eq!(looked_up.cancel(), CancelStatus::Requested);
        }
        job.discard();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send((looked_up.cancel(), looked_up.release()));
        });
        let (_, released) = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("cancelled {cancelled}: release hung"));
        assert!(released.is_ok(), "cancelled {cancelled}: {released:?}");
        assert!(
            job.state().is_terminal(),
            "cancelled {cancelled}: {:?}",
            job.state()
        );
    }
}

/// In the same window, another holder's start (`bgjob_job_start` on a
/// handle from `bgjob_job_lookup`) started the job its create was about to
/// start: the create's own start was then refused, so the create failed
/// with NOT_ALLOWED (not one of its results) and discarded a running job —
/// its completion taken, its userdata freed under its worker. The start
/// belongs to the create: another thread's is refused as for a started job.
#[test]
fn another_threads_start_in_a_creates_window_is_refused() {
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let job = Job::builder().start_at_once().create(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    let looked_up = job.clone();
    let other = std::thread::spawn(move || looked_up.start())
        .join()
        .unwrap();
    assert!(
        matches!(other, Err(Error::NotAllowed { .. })),
        "a lookup's start in the window: {other:?}"
    );
    job.start().expect("its create's start");
    assert_eq!(job.wait(None).unwrap(), State::Completed);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

/// Under the pool's cap, a job started with its cancel already requested
/// (reached in its create's window, or born under a cancelled parent) is
/// "a queued job that is cancelled": it ends CANCELLED unrun rather than
/// holding its place until a slot frees only to see the cancel — where no
/// later cancel could take it back (each found the cancel requested). As
/// the header has it for a queued job, its completion is delivered as
/// usual and its closure dropped.
#[test]
fn a_job_queued_under_the_cap_with_its_cancel_requested_ends_unrun() {
    use crate::core::threads::PoolConfig;
    let pool: &'static Pool = Box::leak(Box::new(Pool::new(PoolConfig {
        max_running: 1,
        ..PoolConfig::default()
    })));
    let (tx, rx) = mpsc::channel::<()>();
    let first = Job::builder()
        .pool(pool)
        .spawn(move |_| {
            let _ = rx.recv();
            Ok(())
        })
        .unwrap();
    for born in [false, true] {
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let job = Job::builder().pool(pool).start_at_once().create(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let parent = Job::builder().create_external();
        if born {
            parent.start().unwrap();
            parent.cancel();
            job.set_parent(&parent).unwrap();
        } else {
            assert_eq!(job.cancel(), CancelStatus::Requested);
        }
        job.start().expect("its create's start");
        let end = Instant::now() + Duration::from_secs(10);
        while !job.state().is_terminal() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(job.state(), State::Cancelled, "born {born}: still queued");
        assert_eq!(pool.queued(), 0, "born {born}");
        assert_eq!(ran.load(Ordering::SeqCst), 0, "born {born}");
        if born {
            parent.end(Err(JobError::new(125, "cancelled"))).unwrap();
            assert_eq!(parent.wait(None).unwrap(), State::Cancelled);
        } else {
            drop(parent);
        }
    }
    tx.send(()).unwrap();
    assert_eq!(first.wait(None).unwrap(), State::Completed);
}

/// A deadline counts active time ("once it has run that long"), and a held
/// parent's active time stops with its work: its deadline, not yet passed
/// then, never fires while it waits for its sub-job (as no deadline of a
/// job whose work is done does). It held before this round too
/// (`deadline_due` acts only on a RUNNING job); the guard fails if that
/// check goes, when the cancel would flow down to the child the parent
/// only waits for.
#[test]
fn a_held_parents_deadline_does_not_fire_while_it_waits() {
    let deadline = Duration::from_millis(1000);
    for _round in 0..20 {
        let parent = Job::builder().deadline(deadline).create_external();
        parent.start().unwrap();
        let (child, tx) = held_child(&parent);
        parent.end(Ok(())).unwrap();
        assert_eq!(parent.state(), State::Waiting);
        let ran = Duration::from_millis(parent.info().elapsed_ms.unsigned_abs());
        if ran + Duration::from_millis(100) >= deadline {
            // This thread was kept off the CPU until the deadline (nearly)
            // passed before the end: the round tells nothing.
            tx.send(()).unwrap();
            child.wait(None).unwrap();
            parent.wait(None).unwrap();
            continue;
        }
        std::thread::sleep(deadline + Duration::from_millis(300));
        assert!(
            !child.info().cancel_requested,
            "the held parent's deadline cancelled its child"
        );
        assert!(!parent.info().cancel_requested);
        tx.send(()).unwrap();
        assert_eq!(child.wait(None).unwrap(), State::Completed);
        assert_eq!(parent.wait(None).unwrap(), State::Completed);
        return;
    }
    panic!("never ended the parent before its deadline in 20 rounds");
}

/// The held parent's two passes of its end show once each in its events:
/// one change into WAITING at its end of work (from PAUSED, its user pause
/// ending there), one out of it when its last sub-job ended, then END — no
/// change repeated by the second pass.
#[test]
fn a_held_parents_events_show_each_change_once() {
    let seen: Arc<Mutex<Vec<(EventKind, State, State)>>> = Arc::default();
    let s = seen.clone();
    let parent = Job::builder()
        .on_event(None, move |_, e| {
            s.lock().unwrap().push((e.kind, e.old_state, e.new_state))
        })
        .create_external();
    parent.start().unwrap();
    let (child, tx) = held_child(&parent);
    parent.pause().unwrap();
    parent.end(Ok(())).unwrap();
    tx.send(()).unwrap();
    assert_eq!(child.wait(None).unwrap(), State::Completed);
    assert_eq!(parent.wait(None).unwrap(), State::Completed);
    let end = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().last().map(|e| e.0) != Some(EventKind::End) {
        assert!(Instant::now() < end, "no END: {:?}", seen.lock().unwrap());
        std::thread::sleep(Duration::from_millis(1));
    }
    use EventKind::{End, StateChanged as Sc};
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (Sc, State::Created, State::Running),
            (Sc, State::Running, State::Paused),
            (Sc, State::Paused, State::Waiting),
            (Sc, State::Waiting, State::Completed),
            (End, State::Waiting, State::Completed),
        ]
    );
}

//! Tests of the pool's own rules (the job-level ones are in core/tests).
use super::*;
use std::sync::mpsc;

/// The spawn result without the (non-Debug) task, for unwrap.
fn started(r: Result<(), (io::Error, Task)>) -> io::Result<()> {
    r.map_err(|(e, _)| e)
}

fn pool(keep_alive_ms: u64) -> &'static Pool {
    Box::leak(Box::new(Pool::new(PoolConfig {
        keep_alive: Duration::from_millis(keep_alive_ms),
        max_idle: 4,
        linger: LINGER,
        max_running: 0,
    })))
}

fn capped_pool(max_running: usize) -> &'static Pool {
    Box::leak(Box::new(Pool::new(PoolConfig {
        keep_alive: Duration::from_millis(5_000),
        max_idle: 4,
        linger: LINGER,
        max_running,
    })))
}

/// Submits a task that blocks until the returned sender sends (or drops).
fn blocker(p: &'static Pool, stack_size: usize) -> (mpsc::Sender<()>, Submitted) {
    let (tx, rx) = mpsc::channel::<()>();
    let s = p
        .submit(
            "blocker",
            stack_size,
            Box::new(move || {
                let _ = rx.recv();
            }),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    (tx, s)
}

fn submit_ok(p: &'static Pool, task: Task) -> Submitted {
    p.submit("task", 0, task).map_err(|(e, _)| e).unwrap()
}

#[test]
fn a_cap_queues_tasks_and_runs_them_in_order() {
    let p = capped_pool(2);
    let (release1, s1) = blocker(p, 0);
    let (release2, s2) = blocker(p, 0);
    assert!(matches!(s1, Submitted::Running(_)));
    assert!(matches!(s2, Submitted::Running(_)));
    let order = Arc::new(Mutex::new(Vec::new()));
    let (done_tx, done_rx) = mpsc::channel();
    for i in 0..3 {
        let (order, done) = (order.clone(), done_tx.clone());
        let s = submit_ok(
            p,
            Box::new(move || {
                order.lock().unwrap().push(i);
                done.send(()).unwrap();
            }),
        );
        assert!(matches!(s, Submitted::Queued(_)), "task {i}: {s:?}");
    }
    assert_eq!((p.running(), p.queued()), (2, 3));
    assert!(order.lock().unwrap().is_empty(), "ran past the cap");
    // One slot frees: its thread runs the queue, oldest first, one at a time.
    release1.send(()).unwrap();
    for _ in 0..3 {
        done_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    release2.send(()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while p.running() != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!((p.running(), p.queued()), (0, 0));
}

#[test]
fn a_withdrawn_task_never_runs() {
    let p = capped_pool(1);
    let (release, _) = blocker(p, 0);
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = ran.clone();
    let Submitted::Queued(ticket) = submit_ok(
        p,
        Box::new(move || r.store(true, std::sync::atomic::Ordering::SeqCst)),
    ) else {
        panic!("not queued at the cap");
    };
    let task = p.withdraw(ticket).expect("still queued");
    assert!(p.withdraw(ticket).is_none(), "withdrawn twice");
    assert_eq!(p.queued(), 0);
    drop(task);
    release.send(()).unwrap();
    // The freed slot finds nothing queued; a later task still runs.
    let (tx, rx) = mpsc::channel();
    submit_ok(p, Box::new(move || tx.send(()).unwrap()));
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn raising_the_cap_starts_queued_tasks() {
    let p = capped_pool(1);
    let (release, _) = blocker(p, 0);
    let (tx, rx) = mpsc::channel();
    // A different stack size: it needs a thread of its own.
    let s = p
        .submit("queued", 256 * 1024, Box::new(move || tx.send(()).unwrap()))
        .map_err(|(e, _)| e)
        .unwrap();
    assert!(matches!(s, Submitted::Queued(_)));
    p.set_max_running(2);
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the queued task ran while the blocker still holds its slot");
    assert_eq!(p.max_running(), 2);
    release.send(()).unwrap();
}

#[test]
fn a_queued_task_with_another_stack_size_runs_when_a_slot_frees() {
    let p = capped_pool(1);
    let (release, _) = blocker(p, 0);
    let (tx, rx) = mpsc::channel();
    let s = p
        .submit("big", 512 * 1024, Box::new(move || tx.send(()).unwrap()))
        .map_err(|(e, _)| e)
        .unwrap();
    assert!(matches!(s, Submitted::Queued(_)));
    release.send(()).unwrap();
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
}

#[test]
fn threads_are_named_and_reused() {
    let p = pool(5_000);
    let (tx, rx) = mpsc::channel();
    let t = tx.clone();
    started(p.spawn(
        "first-job",
        0,
        Box::new(move || {
            let me = std::thread::current();
            t.send((me.id(), me.name().map(str::to_owned))).unwrap();
        }),
    ))
    .unwrap();
    let (first_id, first_name) = rx.recv().unwrap();
    assert_eq!(first_name.as_deref(), Some("first-job"));
    while p.idle_threads() == 0 {
        std::thread::yield_now();
    }
    started(p.spawn(
        "second",
        0,
        Box::new(move || {
            tx.send((std::thread::current().id(), None)).unwrap();
        }),
    ))
    .unwrap();
    let (second_id, _) = rx.recv().unwrap();
    assert_eq!(first_id, second_id, "the idle thread should be reused");
}

#[test]
fn no_job_waits_behind_another() {
    let p = pool(5_000);
    let (block_tx, block_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    started(p.spawn(
        "blocker",
        0,
        Box::new(move || {
            block_rx.recv().unwrap();
        }),
    ))
    .unwrap();
    started(p.spawn("free", 0, Box::new(move || done_tx.send(()).unwrap()))).unwrap();
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("second job ran while the first was blocked");
    block_tx.send(()).unwrap();
}

#[test]
fn idle_threads_expire() {
    let p = pool(20);
    let (tx, rx) = mpsc::channel();
    started(p.spawn("short", 0, Box::new(move || tx.send(()).unwrap()))).unwrap();
    rx.recv().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while p.idle_threads() != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        p.idle_threads(),
        0,
        "the idle thread outlived its keep-alive"
    );
}

#[test]
fn long_names_are_cut_on_a_char_boundary() {
    assert_eq!(thread_name("copy-disk-image-vda"), "copy-disk-image");
    assert_eq!(thread_name("ééééééééé"), "ééééééé");
    assert_eq!(thread_name("a\0b"), "ab");
}

/// The rename a thread does before each job: the cut name is what it keeps,
/// whether or not the compare could skip the allocation.
#[test]
fn rename_keeps_the_cut_name() {
    let mut current = String::from("bgjob-idle");
    rename(&mut current, "copy-disk-image-vda");
    assert_eq!(current, "copy-disk-image");
    rename(&mut current, "copy-disk-image-vdb");
    assert_eq!(current, "copy-disk-image", "same cut name: nothing to do");
    rename(&mut current, "copy-disk-imag\0e");
    assert_eq!(
        current, "copy-disk-imag",
        "cut at 15 bytes, then the NUL dropped"
    );
    rename(&mut current, "ééééééééé");
    assert_eq!(current, "ééééééé");
}

/// A lane with ready work for `ready` tasks and `searching` searchers woken
/// for it (no threads behind them: only the rule is under test).
fn lane(ready: usize, searching: usize) -> Lane {
    let mut lane = Lane {
        stack_size: 0,
        ready: VecDeque::new(),
        idle: Vec::new(),
        searching,
        reserved: 0,
    };
    for i in 0..ready {
        let work = Work {
            name: format!("t{i}"),
            stack_size: 0,
            task: Box::new(|| {}),
        };
        lane.ready.push_back((work, false));
    }
    lane
}

/// A thread whose job ended takes only ready work no searcher was woken for
/// (the oldest of it): what a searcher is on its way to stays the
/// searcher's, so two tasks handed out together never run one after the
/// other on one thread, and a thread never takes what its own task handed
/// out just before it ended (a searcher was woken for that).
#[test]
fn a_thread_whose_job_ended_leaves_the_searchers_work_to_them() {
    assert!(lane(1, 1).take_unclaimed().is_none());
    assert!(lane(2, 2).take_unclaimed().is_none());
    let mut l = lane(3, 1);
    let (work, _) = l.take_unclaimed().expect("t1 has no searcher");
    assert_eq!(work.name, "t1");
    assert_eq!(l.ready.front().map(|(w, _)| w.name.as_str()), Some("t0"));
    assert_eq!(
        l.take_unclaimed().map(|(w, _)| w.name),
        Some("t2".to_owned())
    );
    assert!(l.take_unclaimed().is_none());
    assert_eq!(
        lane(1, 0).take_unclaimed().map(|(w, _)| w.name),
        Some("t0".to_owned())
    );
}

/// Threads past `max_idle` stay idle for the linger (a burst right after
/// reuses them), then exit; the others stay for the keep-alive.
#[test]
fn threads_past_max_idle_linger_then_exit() {
    for (linger_ms, lingers) in [(60_000, true), (20, false)] {
        let p: &'static Pool = Box::leak(Box::new(Pool::new(PoolConfig {
            keep_alive: Duration::from_secs(60),
            max_idle: 1,
            linger: Duration::from_millis(linger_ms),
            max_running: 0,
        })));
        let (release1, _) = blocker(p, 0);
        let (release2, _) = blocker(p, 0);
        release1.send(()).unwrap();
        release2.send(()).unwrap();
        let want = if lingers { 2 } else { 1 };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while p.idle_threads() != want && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(p.idle_threads(), want, "linger {linger_ms} ms");
    }
}

#[test]
fn a_task_that_settles_itself_is_idle_before_it_returns_and_gets_work_after() {
    assert_eq!(settle_task_now(), None, "not on a pool thread");
    let p = pool(5_000);
    let first_returned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let (returned, tx1) = (first_returned.clone(), tx.clone());
    submit_ok(
        p,
        Box::new(move || {
            let settled = settle_task_now();
            let again = settle_task_now();
            let idle = p.idle_threads();
            // Listed idle while still inside this task: the next task is
            // handed to this thread, and runs once this one has returned.
            let (returned2, tx2) = (returned.clone(), tx1.clone());
            submit_ok(
                p,
                Box::new(move || {
                    let after = returned2.load(Ordering::SeqCst);
                    tx2.send((
                        "second",
                        std::thread::current().id(),
                        (Some(after), None),
                        0,
                    ))
                    .unwrap();
                }),
            );
            std::thread::sleep(Duration::from_millis(20));
            tx1.send(("first", std::thread::current().id(), (settled, again), idle))
                .unwrap();
            returned.store(true, Ordering::SeqCst);
        }),
    );
    let (what1, t1, ok1, idle1) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (what2, t2, after2, _) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((what1, what2), ("first", "second"));
    assert_eq!(
        ok1,
        (Some(true), None),
        "settled idle once; a second call does nothing"
    );
    assert_eq!(idle1, 1, "listed idle from inside the task");
    assert_eq!(t1, t2, "the work handed to it runs on it");
    assert_eq!(after2.0, Some(true), "only once the first task returned");
}

#[test]
fn a_capped_task_that_settles_itself_passes_its_slot_to_the_queued_one() {
    let p = capped_pool(1);
    let (go, wait) = mpsc::channel::<()>();
    let (tx, rx) = mpsc::channel();
    let tx1 = tx.clone();
    submit_ok(
        p,
        Box::new(move || {
            let _ = wait.recv();
            let settled = settle_task_now();
            let running = p.running();
            let queued = p.queued();
            tx1.send((
                "first",
                std::thread::current().id(),
                settled,
                running,
                queued,
            ))
            .unwrap();
        }),
    );
    let s = submit_ok(
        p,
        Box::new(move || {
            tx.send(("second", std::thread::current().id(), None, 0, 0))
                .unwrap();
        }),
    );
    assert!(matches!(s, Submitted::Queued(_)));
    go.send(()).unwrap();
    let (what1, t1, settled, running, queued) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (what2, t2, ..) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((what1, what2), ("first", "second"));
    assert_eq!(settled, Some(false), "not idle: it has its next work");
    assert_eq!(
        (running, queued),
        (1, 0),
        "the slot went to the queued task"
    );
    assert_eq!(t1, t2, "which runs on this thread, after it");
}

/// `task_settled_early` (what a job's last drop on its worker's thread
/// asks): false off a pool thread and before the task settles itself; true
/// once it did and the thread has its next work or is listed idle — work
/// may wait for it then; false when the thread is to end (nothing is handed
/// to it). Fails when the next-work or the ending case is answered wrong.
#[test]
fn task_settled_early_says_whether_work_may_wait_for_the_thread() {
    assert!(!task_settled_early(), "not on a pool thread");
    let p = capped_pool(1);
    let (go, wait) = mpsc::channel::<()>();
    let (tx, rx) = mpsc::channel();
    let tx1 = tx.clone();
    submit_ok(
        p,
        Box::new(move || {
            let _ = wait.recv();
            let before = task_settled_early();
            let settled = settle_task_now();
            tx1.send(("has next work", before, settled, task_settled_early()))
                .unwrap();
        }),
    );
    let s = submit_ok(
        p,
        Box::new(move || {
            let before = task_settled_early();
            let settled = settle_task_now();
            tx.send(("listed idle", before, settled, task_settled_early()))
                .unwrap();
        }),
    );
    assert!(matches!(s, Submitted::Queued(_)));
    go.send(()).unwrap();
    let got = |rx: &mpsc::Receiver<_>| rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(got(&rx), ("has next work", false, Some(false), true));
    assert_eq!(got(&rx), ("listed idle", false, Some(true), true));
    // No idle thread kept and no linger: a settled thread is to end.
    let ends = Box::leak(Box::new(Pool::new(PoolConfig {
        keep_alive: Duration::from_millis(5_000),
        max_idle: 0,
        linger: Duration::ZERO,
        max_running: 0,
    })));
    let (tx, rx) = mpsc::channel();
    submit_ok(
        ends,
        Box::new(move || {
            let settled = settle_task_now();
            tx.send(("ends", false, settled, task_settled_early()))
                .unwrap();
        }),
    );
    assert_eq!(got(&rx), ("ends", false, Some(false), false));
}

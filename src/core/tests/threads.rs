//! Jobs on the thread pool. Under a concurrency cap: queued jobs are RUNNING, start in FIFO order
//! when a slot frees, and a cancel ends a queued job CANCELLED without running
//! its worker.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

const LONG: Option<Duration> = Some(Duration::from_secs(30));

fn capped(max_running: usize) -> &'static Pool {
    Box::leak(Box::new(Pool::new(PoolConfig {
        max_running,
        ..PoolConfig::default()
    })))
}

/// A job whose worker blocks until the returned sender sends (or is dropped).
fn blocker(pool: &'static Pool) -> (Job, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let job = Job::builder()
        .pool(pool)
        .spawn(move |_| {
            let _ = rx.recv();
            Ok(())
        })
        .unwrap();
    (job, tx)
}

struct CountDrop(Arc<AtomicUsize>);

impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn queued_jobs_are_running_and_start_in_order() {
    let pool = capped(1);
    let (first, release) = blocker(pool);
    let order = Arc::new(Mutex::new(Vec::new()));
    let jobs: Vec<Job> = (0..3)
        .map(|i| {
            let order = order.clone();
            Job::builder()
                .pool(pool)
                .spawn(move |_| {
                    order.lock().unwrap().push(i);
                    Ok(())
                })
                .unwrap()
        })
        .collect();
    assert_eq!(pool.queued(), 3);
    for j in &jobs {
        assert_eq!(j.state(), State::Running, "a queued job is RUNNING");
    }
    assert!(
        order.lock().unwrap().is_empty(),
        "a worker ran past the cap"
    );
    release.send(()).unwrap();
    assert_eq!(first.wait(LONG), Ok(State::Completed));
    for j in &jobs {
        assert_eq!(j.wait(LONG), Ok(State::Completed));
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
}

#[test]
fn cancel_ends_a_queued_job_unrun_and_delivers_its_completion() {
    let pool = capped(1);
    let (first, release) = blocker(pool);
    let ctx = Context::new().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let drops = Arc::new(AtomicUsize::new(0));
    let completed = Arc::new(Mutex::new(None));
    let (r, d, c) = (ran.clone(), CountDrop(drops.clone()), completed.clone());
    let queued = Job::builder()
        .pool(pool)
        .on_complete(Some(ctx.clone()), move |j| {
            *c.lock().unwrap() = Some(j.state());
        })
        .spawn(move |_| {
            let _d = d;
            r.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
    assert_eq!(pool.queued(), 1);
    assert_eq!(queued.cancel(), CancelStatus::Requested);
    // Ended before cancel returned, while the first job still holds the slot.
    assert_eq!(queued.state(), State::Cancelled);
    assert_eq!(pool.queued(), 0);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the worker closure is dropped"
    );
    assert_eq!(queued.cancel(), CancelStatus::AlreadyFinished);
    assert_eq!(ctx.dispatch(0), Ok(1));
    assert_eq!(*completed.lock().unwrap(), Some(State::Cancelled));
    release.send(()).unwrap();
    assert_eq!(first.wait(LONG), Ok(State::Completed));
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the worker never ran");
    assert!(queued.release().is_ok());
}

#[test]
fn a_paused_queued_job_parks_when_it_gets_its_thread() {
    let pool = capped(1);
    let (first, release) = blocker(pool);
    let (entered_tx, entered_rx) = mpsc::channel();
    let queued = Job::builder()
        .pool(pool)
        .spawn(move |w| {
            entered_tx.send(()).unwrap();
            w.pause_point()?;
            Ok(())
        })
        .unwrap();
    assert_eq!(queued.pause(), Ok(()));
    assert_eq!(queued.state(), State::Paused);
    release.send(()).unwrap();
    assert_eq!(first.wait(LONG), Ok(State::Completed));
    entered_rx.recv_timeout(LONG.unwrap()).unwrap();
    assert_eq!(queued.state(), State::Paused);
    assert_eq!(queued.resume(), Ok(()));
    assert_eq!(queued.wait(LONG), Ok(State::Completed));
}

#[test]
fn removing_the_cap_starts_every_queued_job() {
    let pool = capped(1);
    let (first, release) = blocker(pool);
    let (second, release2) = blocker(pool);
    assert_eq!(pool.queued(), 1);
    pool.set_max_running(0);
    assert_eq!(pool.queued(), 0);
    release2.send(()).unwrap();
    assert_eq!(second.wait(LONG), Ok(State::Completed));
    assert_eq!(first.state(), State::Running, "still blocked");
    release.send(()).unwrap();
    assert_eq!(first.wait(LONG), Ok(State::Completed));
}

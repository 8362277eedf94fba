//! The pool's promises under its lane rule (a parked thread is woken only
//! when no thread is on its way to the work, and a thread whose job ended
//! takes work no searcher was woken for) and its futex hash sizing.

use super::*;
use crate::core::threads::{self, Pool, PoolConfig, Submitted};
use std::sync::Condvar;

fn uncapped_pool() -> &'static Pool {
    pool_keeping(64)
}

/// A pool whose threads past `max_idle` exit as soon as they find no work.
fn pool_keeping(max_idle: usize) -> &'static Pool {
    Box::leak(Box::new(Pool::new(PoolConfig {
        keep_alive: Duration::from_secs(5),
        max_idle,
        linger: Duration::ZERO,
        max_running: 0,
    })))
}

fn submit(p: &'static Pool, stack_size: usize, task: Box<dyn FnOnce() + Send>) {
    match p.submit("pool-test", stack_size, task) {
        Ok(Submitted::Running(launch)) => drop(launch),
        Ok(Submitted::Queued(_)) => panic!("queued without a cap"),
        Err((e, _)) => panic!("no thread: {e}"),
    }
}

/// Uncapped, every job gets a thread of its own at once, whether a thread is
/// looking for work, parked or new: N jobs that each wait until all N have
/// started (while another job blocks its thread) can only all finish if none
/// was put behind another's running thread. Stack sizes alternate, so a
/// looking thread of the wrong size must not take a job either. With
/// `max_idle` 1 most threads end as soon as their job does, so new threads
/// start mid-round too.
#[test]
fn uncapped_no_job_waits_behind_a_running_one_while_threads_look_for_work() {
    const N: usize = 8;
    for (round, p) in (0..40).map(|r| (r, pool_keeping(if r % 2 == 0 { 64 } else { 1 }))) {
        // Jobs that just ended leave threads looking for work.
        for i in 0..4 {
            let (tx, rx) = mpsc::channel();
            submit(
                p,
                if i % 2 == 0 { 0 } else { 256 * 1024 },
                Box::new(move || tx.send(()).unwrap()),
            );
            rx.recv_timeout(Duration::from_secs(30)).unwrap();
        }
        let (release, blocked) = mpsc::channel::<()>();
        submit(
            p,
            0,
            Box::new(move || {
                let _ = blocked.recv();
            }),
        );
        let started = Arc::new((Mutex::new(0usize), Condvar::new()));
        let (done_tx, done_rx) = mpsc::channel();
        for i in 0..N {
            let (started, done) = (started.clone(), done_tx.clone());
            let stack = if i % 2 == 0 { 0 } else { 256 * 1024 };
            submit(
                p,
                stack,
                Box::new(move || {
                    let (n, cv) = &*started;
                    let mut g = n.lock().unwrap();
                    *g += 1;
                    cv.notify_all();
                    let (_g, r) = cv
                        .wait_timeout_while(g, Duration::from_secs(20), |n| *n < N)
                        .unwrap();
                    done.send(!r.timed_out()).unwrap();
                }),
            );
        }
        for _ in 0..N {
            let all_started = done_rx.recv_timeout(Duration::from_secs(30)).unwrap();
            assert!(
                all_started,
                "round {round}: a job waited behind another's thread"
            );
        }
        release.send(()).unwrap();
    }
}

/// The futex hash is a hint: a size the kernel (or the wrapper) refuses is an
/// error of the wrapper only; the pool ignores it and keeps working, and the
/// sizing step asks for a larger hash where the kernel has a private one.
#[test]
fn a_refused_futex_hash_size_is_ignored_and_the_steps_grow_it() {
    // Not a power of two (EINVAL on 6.16+), or an unknown option before it.
    assert!(crate::sys::set_futex_hash_slots(3).is_err());
    // Beyond 32 bits: refused before the kernel could cut it to 0.
    assert!(crate::sys::set_futex_hash_slots(1 << 32).is_err());
    let before = crate::sys::futex_hash_slots().ok();
    threads::set_futex_hash(3);
    threads::set_futex_hash(u64::MAX);
    assert_eq!(
        crate::sys::futex_hash_slots().ok(),
        before,
        "a refused size changed the hash"
    );
    // The library still works: a job runs and wakes a condvar waiter.
    let p = uncapped_pool();
    let flag = Arc::new((Mutex::new(false), Condvar::new()));
    let f = flag.clone();
    submit(
        p,
        0,
        Box::new(move || {
            *f.0.lock().unwrap() = true;
            f.1.notify_all();
        }),
    );
    let (g, r) = flag
        .1
        .wait_timeout_while(flag.0.lock().unwrap(), Duration::from_secs(30), |d| !*d)
        .unwrap();
    assert!(*g && !r.timed_out());
    drop(g);
    // Past the first step the hash is enlarged, where the kernel has a
    // private one (GET_SLOTS answers nonzero).
    let (at, slots) = threads::FUTEX_HASH_STEPS[0];
    threads::grow_futex_hash(at);
    if let Some(b) = before
        && b != 0
    {
        let now = crate::sys::futex_hash_slots().unwrap();
        assert!(
            now >= slots,
            "hash of {now} buckets after the first step (was {b})"
        );
    }
}

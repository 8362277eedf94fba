use super::*;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

#[test]
fn failed_update_publishes_nothing() {
    let p = Progress::default();
    p.update::<()>(0, |f| {
        f.current = 5;
        Ok(())
    })
    .unwrap();
    let r: Result<(), &str> = p.update(0, |f| {
        f.current = 1;
        Err("backwards")
    });
    assert!(r.is_err());
    assert_eq!(p.snapshot().current, 5);
}

#[test]
fn percent_is_clamped_and_unknown_is_minus_one() {
    let mut f = Fields::default();
    assert_eq!(percent(&f), -1);
    f.total = 10;
    f.current = 25;
    assert_eq!(percent(&f), 100);
    f.current = 3;
    assert_eq!(percent(&f), 30);
    f.current = u64::MAX;
    f.total = u64::MAX;
    assert_eq!(percent(&f), 100);
    f.percent = 7;
    assert_eq!(percent(&f), 7);
}

#[test]
fn the_update_time_never_goes_back() {
    let p = Progress::default();
    let bump = |now| {
        p.update::<()>(now, |f| {
            f.current += 1;
            Ok(())
        })
        .unwrap()
    };
    bump(100);
    bump(50);
    assert_eq!(
        p.snapshot().last_ns,
        100,
        "a racing writer's older time won"
    );
    bump(150);
    assert_eq!(p.snapshot().last_ns, 150);
}

/// The recorded time of an update is never before the update (so the
/// time since progress is never more than the truth: a stall is never
/// reported early) whenever the coarse clock lags the precise one by less
/// than LATE_TICKS ticks (checked right before; samples where it lagged
/// more are counted, not checked), and at most a few ticks after it.
#[test]
fn the_stamp_is_never_early_and_a_few_ticks_late_at_most() {
    use crate::sys::clock::{coarse_ns, monotonic_ns};
    let epoch = Instant::now();
    let p = Progress::default();
    let tick = coarse_tick_ns();
    let mut checked = 0;
    for _ in 0..2000 {
        let lag = monotonic_ns() - coarse_ns();
        let before = duration_ns(epoch.elapsed());
        let stamp = p.stamp(&epoch);
        let after = duration_ns(epoch.elapsed());
        if lag < LATE_TICKS * tick {
            checked += 1;
            assert!(
                stamp >= before,
                "stamp {stamp} before the update at {before}"
            );
        }
        // Loose: the per-job base may be off by a preemption.
        assert!(
            stamp <= after + (LATE_TICKS + 1) * tick + 50_000_000,
            "stamp {stamp} far after {after}"
        );
    }
    assert!(
        checked > 0,
        "the coarse clock always lagged two ticks or more"
    );
}

/// The worker writes solo; another thread then updates (the switch to
/// shared) and keeps updating while the worker does and a reader polls:
/// no snapshot is torn, none goes backwards, and no update is lost.
#[test]
fn switching_from_solo_to_shared_loses_nothing_and_tears_nothing() {
    const EACH: u64 = 200_000;
    let p = Arc::new(Progress::default());
    let solo_at_start = !p.is_shared();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (p, stop) = (p.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut last, mut reads) = (0, 0u64);
            while !stop.load(Ordering::Relaxed) || reads < 1000 {
                let f = p.snapshot();
                assert_eq!(f.total, f.current * 2, "torn snapshot {f:?}");
                assert!(f.current >= last, "went backwards");
                last = f.current;
                reads += 1;
            }
        })
    };
    let bump = |f: &mut Fields| -> Result<(), ()> {
        f.current += 1;
        f.total = f.current * 2;
        Ok(())
    };
    let started = Arc::new(AtomicBool::new(false));
    let worker = {
        let (p, started) = (p.clone(), started.clone());
        std::thread::spawn(move || {
            p.worker_enter();
            for i in 0..EACH {
                p.update_own(0, bump).unwrap();
                if i == EACH / 10 {
                    started.store(true, Ordering::Release);
                }
            }
            p.worker_leave();
        })
    };
    while !started.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    for _ in 0..EACH {
        p.update(0, bump).unwrap();
    }
    worker.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert!(p.is_shared());
    assert_eq!(p.snapshot().current, 2 * EACH, "an update was lost");
    if solo_at_start {
        // This machine has membarrier: the solo path really ran.
        println!("solo path exercised");
    }
}

#[test]
fn add_own_adds_saturating_and_dates_the_update() {
    let p = Progress::default();
    p.worker_enter();
    p.add_own(10, 5);
    p.add_own(5, 2);
    let f = p.snapshot();
    assert_eq!(
        (f.current, f.last_ns),
        (7, 10),
        "time went back or units lost"
    );
    p.add_own(20, u64::MAX);
    assert_eq!(p.snapshot().current, u64::MAX);
    p.worker_leave();
    // After the run: the shared path (switching needs no barrier then).
    p.update::<()>(30, |f| {
        f.current = f.current.saturating_add(1);
        Ok(())
    })
    .unwrap();
    let f = p.snapshot();
    assert_eq!((f.current, f.last_ns), (u64::MAX, 30));
    assert!(p.is_shared());
}

/// Updates from another thread before the worker's run do not make the
/// record shared: the worker still writes solo, and sees them.
#[test]
fn updates_before_the_worker_starts_keep_it_solo() {
    let p = Progress::default();
    let solo = !p.is_shared();
    p.update::<()>(1, |f| {
        f.total = 100;
        Ok(())
    })
    .unwrap();
    assert_eq!(p.is_shared(), !solo, "an update before the start switched");
    p.worker_enter();
    p.add_own(2, 5);
    let f = p.snapshot();
    assert_eq!((f.current, f.total, f.last_ns), (5, 100, 2));
    assert_eq!(p.is_shared(), !solo);
    p.worker_leave();
}

/// A refused solo update publishes nothing and leaves the worker able
/// to write.
#[test]
fn a_refused_solo_update_publishes_nothing() {
    let p = Progress::default();
    p.worker_enter();
    p.update_own::<()>(7, |f| {
        f.current = 5;
        Ok(())
    })
    .unwrap();
    let r: Result<(), &str> = p.update_own(8, |f| {
        f.current = 1;
        Err("backwards")
    });
    assert!(r.is_err());
    let f = p.snapshot();
    assert_eq!((f.current, f.last_ns), (5, 7));
    p.update_own::<()>(9, |f| {
        f.current = 6;
        Ok(())
    })
    .unwrap();
    assert_eq!(p.snapshot().current, 6);
    p.worker_leave();
}

#[test]
fn snapshots_are_never_torn() {
    // The writer keeps total == 2 * current; a torn read would break that.
    // It keeps writing until the reader has checked many snapshots, so the
    // two really overlap however the threads are scheduled.
    let p = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (p, stop, reads) = (p.clone(), stop.clone(), reads.clone());
        std::thread::spawn(move || {
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                let f = p.snapshot();
                assert_eq!(f.total, f.current * 2, "torn snapshot {f:?}");
                assert!(f.current >= last, "went backwards");
                last = f.current;
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut i = 0u64;
    while i < 100_000 || reads.load(Ordering::Relaxed) < 20_000 {
        i += 1;
        p.update::<()>(0, |f| {
            f.current = i;
            f.total = i * 2;
            Ok(())
        })
        .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
}

use super::*;
use crate::core::testing::{Seen, explore};
use loom::sync::Arc;
use loom::thread;

fn set(p: &Progress, current: u64) {
    p.update::<()>(0, |f| {
        f.current = current;
        f.total = current * 2;
        Ok(())
    })
    .unwrap();
}

fn check(f: &Fields) {
    assert_eq!(f.total, f.current * 2, "torn snapshot {f:?}");
}

/// A reader never sees `current` from one update and `total` from another,
/// nor a value no writer published, nor progress going backwards.
#[test]
fn snapshot_is_never_torn() {
    explore("progress: writer vs reader", || {
        let p = Arc::new(Progress::default());
        set(&p, 1);
        let reader = {
            let p = p.clone();
            thread::spawn(move || {
                let a = p.snapshot();
                let b = p.snapshot();
                check(&a);
                check(&b);
                assert!(b.current >= a.current, "went backwards: {a:?} then {b:?}");
                assert!((1..=2).contains(&a.current), "never published: {a:?}");
            })
        };
        set(&p, 2);
        reader.join().unwrap();
        assert_eq!(p.snapshot().current, 2);
    });
}

/// Two writers exclude each other: each read-modify-write sees the other's
/// whole result, so no update is lost.
#[test]
fn writers_exclude_each_other() {
    explore("progress: two writers", || {
        let p = Arc::new(Progress::default());
        let bump = |p: &Progress| {
            p.update::<()>(0, |f| {
                f.current += 1;
                f.total = f.current * 2;
                Ok(())
            })
            .unwrap();
        };
        let other = {
            let p = p.clone();
            thread::spawn(move || bump(&p))
        };
        bump(&p);
        other.join().unwrap();
        let end = p.snapshot();
        assert_eq!((end.current, end.total), (2, 4), "an update was lost");
    });
}

/// A refused update publishes nothing, even to a reader racing it.
#[test]
fn refused_update_publishes_nothing() {
    explore("progress: refused update vs reader", || {
        let p = Arc::new(Progress::default());
        set(&p, 1);
        let reader = {
            let p = p.clone();
            thread::spawn(move || {
                let f = p.snapshot();
                assert_eq!((f.current, f.total), (1, 2), "saw a refused update {f:?}");
            })
        };
        let r: Result<(), ()> = p.update(0, |f| {
            f.current = 9;
            f.total = 0;
            Err(())
        });
        assert!(r.is_err());
        reader.join().unwrap();
    });
}

fn bump(p: &Progress, own: bool) {
    let f = |f: &mut Fields| -> Result<(), ()> {
        f.current += 1;
        f.total = f.current * 2;
        Ok(())
    };
    if own {
        p.update_own(0, f).unwrap();
    } else {
        p.update(0, f).unwrap();
    }
}

/// The solo/shared switch: the worker (inside its run) writes solo
/// while another thread's first update switches the record to shared.
/// No update is lost (each read-modify-write saw the other's whole
/// result), and the record ends shared. The membarrier is modelled as a
/// sequentially consistent fence on both sides (what it guarantees).
/// (With a polling reader as a third thread the model outgrows loom's
/// bounds; the reader against solo writes is the next model, and the
/// three together run for real in the unit test
/// `switching_from_solo_to_shared_loses_nothing_and_tears_nothing`.)
#[test]
fn solo_worker_vs_switching_writer() {
    explore("progress: solo worker vs switch", || {
        let p = Arc::new(Progress::default());
        p.worker_enter();
        let other = {
            let p = p.clone();
            thread::spawn(move || bump(&p, false))
        };
        bump(&p, true);
        bump(&p, true);
        other.join().unwrap();
        let end = p.snapshot();
        assert_eq!((end.current, end.total), (3, 6), "an update was lost");
        assert!(p.is_shared());
    });
}

/// A reader polling while the worker writes solo: never torn, never
/// backwards, never a value nobody published.
#[test]
fn solo_worker_vs_reader() {
    explore("progress: solo worker vs reader", || {
        let p = Arc::new(Progress::default());
        p.worker_enter();
        bump(&p, true);
        let reader = {
            let p = p.clone();
            thread::spawn(move || {
                let a = p.snapshot();
                let b = p.snapshot();
                check(&a);
                check(&b);
                assert!(b.current >= a.current, "went backwards: {a:?} then {b:?}");
                assert!((1..=2).contains(&a.current), "never published: {a:?}");
            })
        };
        bump(&p, true);
        reader.join().unwrap();
        assert_eq!(p.snapshot().current, 2);
        assert!(!p.is_shared(), "a reader made the record shared");
    });
}

/// Another thread's update racing the worker's arrival: either it sees
/// the worker outside (writes without switching; the arrival waits for
/// it) or inside (switches, with the barrier). Both happen, and no
/// update is lost either way.
#[test]
fn switch_racing_the_worker_entering() {
    static SEEN: Seen = Seen::new();
    SEEN.reset();
    explore("progress: switch vs worker entering", || {
        let p = Arc::new(Progress::default());
        let other = {
            let p = p.clone();
            thread::spawn(move || bump(&p, false))
        };
        p.worker_enter();
        bump(&p, true);
        other.join().unwrap();
        let end = p.snapshot();
        check(&end);
        assert_eq!(end.current, 2, "an update was lost");
        SEEN.note(if p.is_shared() {
            "switched"
        } else {
            "stayed solo"
        });
    });
    SEEN.require(
        "progress: switch vs worker entering",
        &["switched", "stayed solo"],
    );
}

/// Two other threads switch at once (the worker inside its run, not
/// writing): the second waits for the first's switch to finish before
/// it writes, and neither update is lost. (With the worker writing too
/// the model outgrows loom's path bound; the models above cover the
/// worker against one switcher.)
#[test]
fn two_switchers_at_once() {
    explore("progress: two switchers", || {
        let p = Arc::new(Progress::default());
        p.worker_enter();
        let other = {
            let p = p.clone();
            thread::spawn(move || bump(&p, false))
        };
        bump(&p, false);
        other.join().unwrap();
        let end = p.snapshot();
        check(&end);
        assert_eq!(end.current, 2, "an update was lost");
        assert!(p.is_shared());
    });
}

/// The switch protocol with the worker's light barrier left out (no
/// fence between its `busy` store and its `mode` load) and none on the
/// switcher's side: the worker may read the old mode while the switcher
/// reads `busy` as 0, and both write at once. Loom must find the lost
/// update, so the models above would show a protocol that lost its
/// barrier.
#[derive(Default)]
struct NoBarrier {
    seq: AtomicU64,
    current: AtomicU64,
    mode: AtomicU8,
    busy: AtomicU8,
}

impl NoBarrier {
    fn solo_bump(&self) {
        self.busy.store(1, Ordering::Relaxed);
        if self.mode.load(Ordering::Relaxed) != SOLO {
            self.busy.store(0, Ordering::Release);
            return self.shared_bump();
        }
        let c = self.current.load(Ordering::Relaxed);
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.current.store(c + 1, Ordering::Relaxed);
        self.seq.store(s + 2, Ordering::Release);
        self.busy.store(0, Ordering::Release);
    }

    fn shared_bump(&self) {
        if self.mode.swap(SHARED, Ordering::Relaxed) != SHARED {
            let mut spins = 0;
            while self.busy.load(Ordering::Acquire) != 0 {
                backoff(&mut spins);
            }
        }
        let mut spins = 0;
        let s = loop {
            let s = self.seq.load(Ordering::Relaxed);
            if s & 1 == 0
                && self
                    .seq
                    .compare_exchange(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                break s;
            }
            backoff(&mut spins);
        };
        let c = self.current.load(Ordering::Relaxed);
        self.current.store(c + 1, Ordering::Relaxed);
        self.seq.store(s + 2, Ordering::Release);
    }
}

#[test]
#[should_panic(expected = "lost")]
fn canary_catches_a_missing_barrier() {
    loom::model(|| {
        let p = Arc::new(NoBarrier::default());
        let other = {
            let p = p.clone();
            thread::spawn(move || p.shared_bump())
        };
        p.solo_bump();
        other.join().unwrap();
        assert_eq!(p.current.load(Ordering::Relaxed), 2, "lost an update");
    });
}

/// The same protocol as [`Progress`] for two fields, but the reader lacks
/// its acquire fence: a relaxed field load may then see the new value while
/// the second sequence load still sees the old one. Loom must find it.
#[derive(Default)]
struct NoFence {
    seq: AtomicU64,
    current: AtomicU64,
    total: AtomicU64,
}

impl NoFence {
    fn set(&self, current: u64) {
        let s = self.seq.load(Ordering::Relaxed);
        assert!(
            self.seq
                .compare_exchange(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        );
        fence(Ordering::Release);
        self.current.store(current, Ordering::Relaxed);
        self.total.store(current * 2, Ordering::Relaxed);
        self.seq.store(s + 2, Ordering::Release);
    }

    fn snapshot(&self) -> (u64, u64) {
        let mut spins = 0;
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                backoff(&mut spins);
                continue;
            }
            let v = (
                self.current.load(Ordering::Relaxed),
                self.total.load(Ordering::Relaxed),
            );
            if self.seq.load(Ordering::Relaxed) == s1 {
                return v;
            }
        }
    }
}

#[test]
#[should_panic(expected = "torn")]
fn canary_catches_a_missing_fence() {
    loom::model(|| {
        let p = Arc::new(NoFence::default());
        let reader = {
            let p = p.clone();
            thread::spawn(move || {
                let (current, total) = p.snapshot();
                assert_eq!(total, current * 2, "torn: {current} {total}");
            })
        };
        p.set(1);
        reader.join().unwrap();
    });
}

//! Progress counters that a worker updates per block and any thread reads.
//!
//! A sequence lock over atomics: the writer makes the sequence odd, stores the
//! fields, and makes it even again; a reader retries until it sees the same even
//! sequence before and after reading. Writers never wait for readers and readers
//! never take a lock, so a copy loop can update once per block (no syscall, no
//! contended lock) while a manager polls getinfo, and every snapshot is one the
//! writer actually published (never `current` from one update and `total` from
//! another). The fields share one cache line, and an update stores only the
//! fields it changed.
//!
//! Every update reads the clock, so the time since the last progress is exact.
//! That reading is the larger part of an update's cost (about 50 ns on a
//! virtual machine, where `clock_gettime` is slow); the compare-and-swap that
//! lets any thread update is most of the rest (see docs/performance.md, "Reading the
//! figures").

use super::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering, backoff, fence};

/// "Not set" for the optional fields.
pub(crate) const UNSET: i64 = -1;

/// The fields one snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fields {
    /// Units done; only grows.
    pub current: u64,
    /// Units in all; 0 = not known. May move either way.
    pub total: u64,
    /// A percentage the worker set directly, 0–100, or −1.
    pub percent: i32,
    /// Remaining time the worker set, in ms, or −1.
    pub eta_ms: i64,
    /// Active (unpaused) job time when `eta_ms` was set, in ns.
    pub eta_set_active_ns: i64,
    /// Job-clock time of the last update, in ns, or −1 if none yet.
    pub last_ns: i64,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            current: 0,
            total: 0,
            percent: UNSET as i32,
            eta_ms: UNSET,
            eta_set_active_ns: 0,
            last_ns: UNSET,
        }
    }
}

/// The shared record. See the module docs for the protocol.
#[repr(C, align(64))]
pub(crate) struct Progress {
    seq: AtomicU64,
    current: AtomicU64,
    total: AtomicU64,
    last_ns: AtomicI64,
    eta_ms: AtomicI64,
    eta_set_active_ns: AtomicI64,
    percent: AtomicI32,
}

impl Default for Progress {
    fn default() -> Self {
        let f = Fields::default();
        Progress {
            seq: AtomicU64::new(0),
            current: AtomicU64::new(f.current),
            total: AtomicU64::new(f.total),
            last_ns: AtomicI64::new(f.last_ns),
            eta_ms: AtomicI64::new(f.eta_ms),
            eta_set_active_ns: AtomicI64::new(f.eta_set_active_ns),
            percent: AtomicI32::new(f.percent),
        }
    }
}

impl Progress {
    /// Reads the current fields, lets `f` change them, and publishes the result
    /// atomically as a whole, with the time from `clock` as the time of the
    /// update. If `f` returns an error nothing is published (the sequence goes
    /// back to the value it had). Writers exclude each other with the sequence
    /// itself (odd = being written).
    pub fn update<E>(
        &self,
        clock: impl FnOnce() -> i64,
        f: impl FnOnce(&mut Fields) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut spins = 0u32;
        let seq = loop {
            let s = self.seq.load(Ordering::Relaxed);
            if s & 1 == 0
                && self
                    .seq
                    .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                break s;
            }
            backoff(&mut spins);
        };
        // Keeps the field stores below from becoming visible before the odd sequence.
        fence(Ordering::Release);
        let old = self.load_fields();
        let mut fields = old;
        let result = f(&mut fields);
        if result.is_err() {
            // Nothing was stored: a reader that saw `seq` before sees it again.
            self.seq.store(seq, Ordering::Release);
            return result;
        }
        fields.last_ns = clock();
        self.store_changed(&old, &fields);
        self.seq.store(seq + 2, Ordering::Release);
        result
    }

    /// One consistent snapshot. Spins only while a writer is mid-update (a handful
    /// of stores); never waits on a lock.
    pub fn snapshot(&self) -> Fields {
        let mut spins = 0u32;
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                backoff(&mut spins);
                continue;
            }
            let fields = self.load_fields();
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return fields;
            }
        }
    }

    /// Time from the last update in `f` (a snapshot) to `now`, in ns (never
    /// negative); `None` before the first update.
    pub fn since_last_ns(&self, f: &Fields, now: i64) -> Option<i64> {
        (f.last_ns >= 0).then(|| (now - f.last_ns).max(0))
    }

    fn load_fields(&self) -> Fields {
        Fields {
            current: self.current.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            percent: self.percent.load(Ordering::Relaxed),
            eta_ms: self.eta_ms.load(Ordering::Relaxed),
            eta_set_active_ns: self.eta_set_active_ns.load(Ordering::Relaxed),
            last_ns: self.last_ns.load(Ordering::Relaxed),
        }
    }

    /// Stores the fields that changed (an add_units stores two).
    fn store_changed(&self, old: &Fields, f: &Fields) {
        if f.current != old.current {
            self.current.store(f.current, Ordering::Relaxed);
        }
        if f.total != old.total {
            self.total.store(f.total, Ordering::Relaxed);
        }
        if f.percent != old.percent {
            self.percent.store(f.percent, Ordering::Relaxed);
        }
        if f.eta_ms != old.eta_ms {
            self.eta_ms.store(f.eta_ms, Ordering::Relaxed);
        }
        if f.eta_set_active_ns != old.eta_set_active_ns {
            self.eta_set_active_ns
                .store(f.eta_set_active_ns, Ordering::Relaxed);
        }
        if f.last_ns != old.last_ns {
            self.last_ns.store(f.last_ns, Ordering::Relaxed);
        }
    }
}

/// Percent done from a snapshot: the worker's own percentage if it set one, else
/// `current / total` clamped to 0–100, else −1 (unknown).
pub(crate) fn percent(f: &Fields) -> i32 {
    if f.percent >= 0 {
        f.percent
    } else if f.total > 0 {
        let p = (u128::from(f.current) * 100) / u128::from(f.total);
        p.min(100) as i32
    } else {
        -1
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn failed_update_publishes_nothing() {
        let p = Progress::default();
        p.update::<()>(
            || 0,
            |f| {
                f.current = 5;
                Ok(())
            },
        )
        .unwrap();
        let r: Result<(), &str> = p.update(
            || 0,
            |f| {
                f.current = 1;
                Err("backwards")
            },
        );
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
            p.update::<()>(
                || 0,
                |f| {
                    f.current = i;
                    f.total = i * 2;
                    Ok(())
                },
            )
            .unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
    }
}

/// `make loom`: the seqlock under loom, which runs each model under every
/// interleaving and every reordering the C11 memory model allows (within its
/// bounds). Each model reports how many executions loom explored and fails if
/// it explored only one.
///
/// The readers run on spawned threads and a writer on the model's main thread:
/// with the roles the other way round loom 0.7 explores a single execution
/// (tokio-rs/loom#392: a spawned thread whose first operation is an atomic load
/// is never scheduled early). `canary_catches_a_missing_fence` runs the same
/// shape over a copy of the protocol without the reader's acquire fence and
/// must fail, so a model that silently stopped exploring would show.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::core::testing::explore;
    use loom::sync::Arc;
    use loom::thread;

    fn set(p: &Progress, current: u64) {
        p.update::<()>(
            || 0,
            |f| {
                f.current = current;
                f.total = current * 2;
                Ok(())
            },
        )
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
                p.update::<()>(
                    || 0,
                    |f| {
                        f.current += 1;
                        f.total = f.current * 2;
                        Ok(())
                    },
                )
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
            let r: Result<(), ()> = p.update(
                || 0,
                |f| {
                    f.current = 9;
                    f.total = 0;
                    Err(())
                },
            );
            assert!(r.is_err());
            reader.join().unwrap();
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
}

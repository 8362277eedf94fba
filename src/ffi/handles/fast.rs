// Under `--cfg loom` the protocol's atomics and the value cells are
// loom's, so `make loom` checks this very code (`loom_tests` below).
#[cfg(loom)]
use loom::cell::UnsafeCell;
#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::atomic::AtomicPtr;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};

/// std's cell with loom's access API (loom's tracks every access and
/// fails a model on a read or write not ordered with a write).
#[cfg(not(loom))]
struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    fn new(v: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(v))
    }
    fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }
    fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Slots per chunk, and chunks: 4 Mi slots mirrored (a loom model
/// makes a chunk of its own: a small one).
const CHUNK: usize = if cfg!(loom) { 2 } else { 4096 };
const DIR: usize = 1024;

struct Slot<T> {
    /// `generation << 1 | 1` while live; 0 while dead.
    word: AtomicU64,
    /// Written only under the table's write lock, while the slot is dead
    /// and no hazard record names it; read only by a reader whose hazard
    /// record names it and who saw it live afterwards.
    value: UnsafeCell<Option<T>>,
}

pub(crate) struct Mirror<T> {
    dir: [AtomicPtr<Slot<T>>; DIR],
}

/// What a lock-free read did. The function is given back when it did not
/// run, so the caller can run it on the table's answer (no `Option`
/// juggling on the hot path).
pub(crate) enum Fast<R, F> {
    /// `f` ran on the live value and returned this.
    Read(R),
    /// The slot names nothing under this handle (destroyed, stale, made
    /// up, or never live).
    Dead(F),
    /// The mirror cannot answer (a slot beyond it, no hazard record for
    /// this thread, or a read already in progress on it): ask the table.
    Ask(F),
}

impl<R, F> Fast<R, F> {
    /// `Some(Some(r))` read, `Some(None)` dead, `None` ask the table.
    #[cfg(test)]
    pub(crate) fn outcome(self) -> Option<Option<R>> {
        match self {
            Fast::Read(r) => Some(Some(r)),
            Fast::Dead(_) => Some(None),
            Fast::Ask(_) => None,
        }
    }
}

// SAFETY: the values are shared between threads only as the protocol in
// the module docs says (written under the table's lock while no reader
// can see them, read as `&T` by readers): T must be Send + Sync.
unsafe impl<T: Send + Sync> Sync for Mirror<T> {}

fn live(generation: u32) -> u64 {
    u64::from(generation) << 1 | 1
}

/// Clears a hazard record when a read ends, also by a panic in `f`: a
/// record left naming a slot would make the slot's destroy wait forever
/// under the table's write lock.
struct Unpublish<'a>(&'a AtomicUsize);

impl Drop for Unpublish<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

impl<T> Mirror<T> {
    pub(crate) const fn new() -> Mirror<T> {
        Mirror {
            dir: [const { AtomicPtr::new(std::ptr::null_mut()) }; DIR],
        }
    }

    /// The slot `i`, if its chunk exists.
    fn slot(&self, i: usize) -> Option<&Slot<T>> {
        let chunk = self.dir.get(i / CHUNK)?.load(Ordering::Acquire);
        // SAFETY: a non-null chunk is a leaked array of CHUNK slots,
        // never freed.
        (!chunk.is_null()).then(|| unsafe { &*chunk.add(i % CHUNK) })
    }

    /// The slot `i`, its chunk made if needed. Under the table's write
    /// lock. `None` beyond the mirror.
    fn slot_or_make(&self, i: usize) -> Option<&Slot<T>> {
        let d = self.dir.get(i / CHUNK)?;
        if d.load(Ordering::Acquire).is_null() {
            let chunk: Box<[Slot<T>]> = (0..CHUNK)
                .map(|_| Slot {
                    word: AtomicU64::new(0),
                    value: UnsafeCell::new(None),
                })
                .collect();
            // Never freed: readers may touch any slot at any time.
            let p = Box::leak(chunk).as_mut_ptr();
            d.store(p, Ordering::Release);
        }
        self.slot(i)
    }

    /// Slot `i` now names `value` under `generation` (table write lock
    /// held; the slot is dead and unread, see [`Mirror::set_dead`]).
    pub(crate) fn set_live(&self, i: usize, generation: u32, value: T) {
        let Some(s) = self.slot_or_make(i) else {
            return;
        };
        // SAFETY: dead, and no reader reads a dead slot's value (module
        // docs); writers are serialised by the table's lock.
        s.value.with_mut(|v| unsafe { *v = Some(value) });
        s.word.store(live(generation), Ordering::Release);
    }

    /// Slot `i` names nothing any more: marked dead, and once no reader
    /// is inside it, its value is taken out (to be dropped by the caller
    /// with no lock held). Table write lock held. `own` is the calling
    /// thread's hazard record, if it has one.
    pub(crate) fn set_dead(
        &self,
        hazards: &Hazards,
        own: Option<&Hazard>,
        tag: u8,
        i: usize,
    ) -> Option<T> {
        let s = self.slot(i)?;
        s.word.store(0, Ordering::Relaxed);
        // Pairs with the reader's fence (store-load: the dead mark
        // before the scan, the reader's record before its re-check).
        fence(Ordering::SeqCst);
        hazards.wait_unnamed(hazard_key(tag, i), own);
        // SAFETY: dead, and no hazard record names it: no reader reads
        // the value now or will (a later one sees it dead).
        s.value.with_mut(|v| unsafe { (*v).take() })
    }

    /// Runs `f` on the value handle (`i`, `generation`) names; see
    /// [`super::Table::read_fast`]. `mine` gives this thread's hazard
    /// record (claiming it on first use), `None` if it has none.
    #[inline]
    pub(crate) fn read<'h, R, F: FnOnce(&T) -> R>(
        &self,
        mine: impl FnOnce() -> Option<&'h Hazard>,
        tag: u8,
        i: usize,
        generation: u32,
        f: F,
    ) -> Fast<R, F> {
        let Some(d) = self.dir.get(i / CHUNK) else {
            return Fast::Ask(f);
        };
        let chunk = d.load(Ordering::Acquire);
        if chunk.is_null() {
            // No chunk: no slot in it was ever live.
            return Fast::Dead(f);
        }
        // SAFETY: a non-null chunk is a leaked array of CHUNK slots, never
        // freed.
        let s = unsafe { &*chunk.add(i % CHUNK) };
        let want = live(generation);
        if s.word.load(Ordering::Relaxed) != want {
            return Fast::Dead(f);
        }
        let Some(hazard) = mine() else {
            return Fast::Ask(f);
        };
        // A read inside a read on this thread (from `f`): the one record
        // names the outer slot, and overwriting it (then clearing it)
        // would leave the outer read unprotected. Ask the table.
        if hazard.slot.load(Ordering::Relaxed) != 0 {
            return Fast::Ask(f);
        }
        hazard.slot.store(hazard_key(tag, i), Ordering::Relaxed);
        let _unpublish = Unpublish(&hazard.slot);
        // Pairs with the destroyer's fence: either it sees this record,
        // or the re-check below sees its dead mark.
        fence(Ordering::SeqCst);
        if s.word.load(Ordering::Acquire) != want {
            return Fast::Dead(f);
        }
        // SAFETY: our hazard record names the slot and the slot was live
        // with our generation after it was published: its value stays
        // until we clear the record (module docs).
        match s.value.with(|v| unsafe { &*v }.as_ref()) {
            Some(v) => Fast::Read(f(v)),
            None => Fast::Dead(f),
        }
    }

    /// In a forked child: every slot dead, its value forgotten (never
    /// dropped: it belongs to the parent's threads), every hazard record
    /// cleared (their threads do not exist here).
    pub(crate) fn forget_all_after_fork(&self) {
        for d in &self.dir {
            let chunk = d.load(Ordering::Acquire);
            if chunk.is_null() {
                continue;
            }
            for k in 0..CHUNK {
                // SAFETY: a leaked chunk of CHUNK slots; only this thread
                // runs in the child.
                let s = unsafe { &*chunk.add(k) };
                s.word.store(0, Ordering::Relaxed);
                // SAFETY: as above: no reader exists.
                std::mem::forget(s.value.with_mut(|v| unsafe { (*v).take() }));
            }
        }
        #[cfg(not(loom))]
        {
            HAZARDS.forget_all_after_fork();
            tls::this_thread().write(Word::Hazard, 0);
        }
    }
}

/// The process's table of mirrors' readers (not under loom: a model
/// makes its own [`Hazards`]).
#[cfg(not(loom))]
impl<T> Mirror<T> {
    /// [`Mirror::read`] with this thread's record.
    #[inline]
    pub(crate) fn read_here<R, F: FnOnce(&T) -> R>(
        &self,
        tag: u8,
        i: usize,
        generation: u32,
        f: F,
    ) -> Fast<R, F> {
        self.read(Hazard::mine, tag, i, generation, f)
    }

    /// [`Mirror::set_dead`] from this thread.
    pub(crate) fn set_dead_here(&self, tag: u8, i: usize) -> Option<T> {
        self.set_dead(&HAZARDS, Hazard::current(), tag, i)
    }

    /// [`Mirror::set_live`].
    pub(crate) fn set_live_here(&self, i: usize, generation: u32, value: T) {
        self.set_live(i, generation, value);
    }
}

/// A `--cfg loom` build: the process's tables keep no mirror (loom's
/// atomics exist only inside a model); getinfo asks the table.
#[cfg(loom)]
impl<T> Mirror<T> {
    pub(crate) fn read_here<R, F: FnOnce(&T) -> R>(
        &self,
        _tag: u8,
        _i: usize,
        _generation: u32,
        f: F,
    ) -> Fast<R, F> {
        Fast::Ask(f)
    }

    pub(crate) fn set_dead_here(&self, _tag: u8, _i: usize) -> Option<T> {
        None
    }

    pub(crate) fn set_live_here(&self, _i: usize, _generation: u32, value: T) {
        drop(value);
    }
}

fn hazard_key(tag: u8, i: usize) -> usize {
    (usize::from(tag) << 60) | (i + 1)
}

/// One reading thread's hazard record, on a cache line of its own.
#[repr(align(64))]
pub(crate) struct Hazard {
    /// The mirror slot this thread is reading (`hazard_key`), or 0.
    slot: AtomicUsize,
    owned: AtomicBool,
}

pub(crate) const HAZARD_RECORDS: usize = if cfg!(loom) { 2 } else { 256 };

/// The hazard records of every mirror's readers.
pub(crate) struct Hazards {
    records: [Hazard; HAZARD_RECORDS],
    /// Records ever claimed are below this: a removal scans only those.
    high: AtomicUsize,
}

impl Hazards {
    #[cfg(not(loom))]
    const fn new() -> Hazards {
        Hazards {
            records: [const {
                Hazard {
                    slot: AtomicUsize::new(0),
                    owned: AtomicBool::new(false),
                }
            }; HAZARD_RECORDS],
            high: AtomicUsize::new(0),
        }
    }

    #[cfg(loom)]
    fn new() -> Hazards {
        Hazards {
            records: std::array::from_fn(|_| Hazard {
                slot: AtomicUsize::new(0),
                owned: AtomicBool::new(false),
            }),
            high: AtomicUsize::new(0),
        }
    }

    /// A free record's index, now owned by the caller; `None` when
    /// every record is taken.
    fn claim(&self) -> Option<usize> {
        let k = self.records.iter().position(|h| {
            h.owned
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })?;
        // Before the record's first publish (and so before that
        // publish's fence): a removal that misses this misses the
        // publish too, and then the reader sees the dead mark.
        self.high.fetch_max(k + 1, Ordering::AcqRel);
        Some(k)
    }

    /// Gives record `k` back (its thread is ending, not inside a read).
    fn give_back(&self, k: usize) {
        self.records[k].slot.store(0, Ordering::Relaxed);
        self.records[k].owned.store(false, Ordering::Release);
    }

    /// Waits until no hazard record names `key` (after the caller's
    /// full fence). Readers hold a record for the length of one short
    /// read. `own` (the caller's record) naming it is a destroy from
    /// inside a read of the same slot on this thread: waiting would
    /// never end, and going on would free the value under that read.
    fn wait_unnamed(&self, key: usize, own: Option<&Hazard>) {
        if own.is_some_and(|o| o.slot.load(Ordering::Relaxed) == key) {
            panic!("a handle destroyed from inside a lock-free read of it");
        }
        let high = self.high.load(Ordering::Acquire);
        for h in &self.records[..high] {
            let mut spins = 0u32;
            while h.slot.load(Ordering::Acquire) == key {
                crate::core::atomic::backoff(&mut spins);
            }
        }
    }

    /// Whether a record names mirror slot `i` of table `tag`.
    #[cfg(test)]
    fn named(&self, tag: u8, i: usize) -> bool {
        let key = hazard_key(tag, i);
        self.records
            .iter()
            .any(|h| h.slot.load(Ordering::Relaxed) == key)
    }

    #[cfg(not(loom))]
    fn forget_all_after_fork(&self) {
        for h in &self.records {
            h.slot.store(0, Ordering::Relaxed);
            h.owned.store(false, Ordering::Relaxed);
        }
        self.high.store(0, Ordering::Relaxed);
    }
}

#[cfg(not(loom))]
static HAZARDS: Hazards = Hazards::new();

#[cfg(not(loom))]
use crate::sys::tls::{self, Word};

#[cfg(not(loom))]
thread_local! {
    /// Releases the record when the thread ends. (The record itself, index
    /// + 1 or 0 for none yet, is the `sys::tls` word `Hazard`: read on every
    /// lock-free read, so it is the cheap kind of thread-local.)
    static RELEASE: Release = const { Release };
}

#[cfg(not(loom))]
struct Release;

#[cfg(not(loom))]
impl Drop for Release {
    fn drop(&mut self) {
        let words = tls::this_thread();
        let k = words.read(Word::Hazard);
        words.write(Word::Hazard, 0);
        if k != 0 {
            HAZARDS.give_back(k - 1);
        }
    }
}

#[cfg(not(loom))]
impl Hazard {
    /// This thread's record, claimed on first use; `None` when every
    /// record is taken or the thread is ending.
    fn mine() -> Option<&'static Hazard> {
        if let Some(h) = Hazard::current() {
            return Some(h);
        }
        // Registers the destructor that gives the record back.
        RELEASE.try_with(|_| ()).ok()?;
        let k = HAZARDS.claim()?;
        tls::this_thread().write(Word::Hazard, k + 1);
        Some(&HAZARDS.records[k])
    }

    /// This thread's record if it has claimed one.
    fn current() -> Option<&'static Hazard> {
        let k = tls::this_thread().read(Word::Hazard);
        (k != 0).then(|| &HAZARDS.records[k - 1])
    }
}

/// Whether a hazard record names mirror slot `i` of table `tag`.
#[cfg(all(test, not(loom)))]
pub(crate) fn named(tag: u8, i: usize) -> bool {
    HAZARDS.named(tag, i)
}

#[cfg(loom)]
/// The protocol under loom: a reader of slot 0 (generation 1) against a
/// destroy (dead mark, wait, take out, drop) and a reuse of the slot
/// under generation 2. A value's drop sets its `freed` flag, which the
/// reader checks inside `f`; loom's cell also fails any read of the
/// value not ordered with the take-out. The reader must get the live
/// value or `None`, never a freed one or the next generation's.
/// Readers run on spawned threads and the destroyer on the model's main
/// thread (see core/progress.rs on tokio-rs/loom#392).
/// `canary_catches_a_missing_fence` runs a copy of the read without its
/// fence, and must fail.
#[cfg(test)]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::AtomicBool as StdBool;
    use std::sync::atomic::AtomicUsize as StdCount;
    use std::sync::atomic::Ordering::SeqCst;

    const TAG: u8 = 1;

    struct Val {
        id: u32,
        freed: std::sync::Arc<StdBool>,
    }

    impl Drop for Val {
        fn drop(&mut self) {
            self.freed.store(true, SeqCst);
        }
    }

    fn val(id: u32) -> Val {
        Val {
            id,
            freed: std::sync::Arc::new(StdBool::new(false)),
        }
    }

    fn use_val(v: &Val) -> u32 {
        assert!(!v.freed.load(SeqCst), "read a freed value");
        v.id
    }

    static RUNS: StdCount = StdCount::new(0);
    // (cfg(test) again for `ffi::fork`'s scan of process-wide locks.)
    #[cfg(test)]
    static SEEN: StdMutex<Vec<&'static str>> = StdMutex::new(Vec::new());

    fn note(o: &'static str) {
        let mut s = SEEN.lock().unwrap();
        if !s.contains(&o) {
            s.push(o);
        }
    }

    /// Every interleaving within the preemption bound (3 unless
    /// LOOM_MAX_PREEMPTIONS says); returns the outcomes reached.
    fn explore(name: &str, f: impl Fn() + Sync + Send + 'static) -> Vec<&'static str> {
        RUNS.store(0, SeqCst);
        SEEN.lock().unwrap().clear();
        let mut b = loom::model::Builder::new();
        if b.preemption_bound.is_none() {
            b.preemption_bound = Some(3);
        }
        b.check(move || {
            RUNS.fetch_add(1, SeqCst);
            f();
        });
        let n = RUNS.load(SeqCst);
        println!("loom: {name}: {n} executions explored");
        assert!(n > 1, "{name}: loom explored a single execution");
        SEEN.lock().unwrap().clone()
    }

    fn record(h: &Hazards) -> Option<&Hazard> {
        h.claim().map(|k| &h.records[k])
    }

    /// Destroy slot 0 and drop its value, then reuse it (generation 2).
    fn destroy_and_reuse(m: &Mirror<Val>, hz: &Hazards) {
        let old = m.set_dead(hz, None, TAG, 0);
        assert_eq!(old.as_ref().map(|v| v.id), Some(1));
        drop(old);
        m.set_live(0, 2, val(2));
    }

    #[test]
    fn a_reader_never_reads_a_freed_or_reused_value() {
        let seen = explore("mirror: read vs destroy and reuse", || {
            let m = Arc::new(Mirror::<Val>::new());
            let hz = Arc::new(Hazards::new());
            m.set_live(0, 1, val(1));
            let reader = {
                let (m, hz) = (m.clone(), hz.clone());
                thread::spawn(move || {
                    let r = m.read(|| record(&hz), TAG, 0, 1, use_val).outcome();
                    match r {
                        Some(Some(1)) => note("read"),
                        Some(None) => note("refused"),
                        other => panic!("reader got {other:?}"),
                    }
                })
            };
            destroy_and_reuse(&m, &hz);
            reader.join().unwrap();
            // The new generation reads; the old one never again.
            let rec = record(&hz);
            assert_eq!(m.read(|| rec, TAG, 0, 1, use_val).outcome(), Some(None));
            assert_eq!(m.read(|| rec, TAG, 0, 2, use_val).outcome(), Some(Some(2)));
        });
        for o in ["read", "refused"] {
            assert!(seen.contains(&o), "no execution reached {o}: {seen:?}");
        }
    }

    /// `f` reads another slot on the same thread (one hazard record):
    /// the outer read must stay protected after the inner one ends.
    #[test]
    fn a_read_inside_a_read_keeps_the_outer_one_protected() {
        let seen = explore("mirror: nested read vs destroy", || {
            let m = Arc::new(Mirror::<Val>::new());
            let hz = Arc::new(Hazards::new());
            m.set_live(0, 1, val(1));
            m.set_live(1, 1, val(7));
            let reader = {
                let (m, hz) = (m.clone(), hz.clone());
                thread::spawn(move || {
                    let rec = record(&hz);
                    let r = m
                        .read(
                            || rec,
                            TAG,
                            0,
                            1,
                            |v| {
                                // (With one record, the inner read is told
                                // to ask the table.)
                                let _ = m.read(|| rec, TAG, 1, 1, use_val);
                                use_val(v)
                            },
                        )
                        .outcome();
                    match r {
                        Some(Some(1)) => note("read"),
                        Some(None) => note("refused"),
                        other => panic!("reader got {other:?}"),
                    }
                })
            };
            destroy_and_reuse(&m, &hz);
            reader.join().unwrap();
        });
        assert!(seen.contains(&"read"), "{seen:?}");
    }

    /// More readers than records: a reader with none is told to ask
    /// the table (`None`), and reads nothing.
    #[test]
    fn a_reader_without_a_record_asks_the_table() {
        let seen = explore("mirror: records run out", || {
            let m = Arc::new(Mirror::<Val>::new());
            let hz = Arc::new(Hazards::new());
            m.set_live(0, 1, val(1));
            let taken: Vec<_> = (0..HAZARD_RECORDS).map(|_| hz.claim()).collect();
            assert!(taken.iter().all(Option::is_some));
            let reader = {
                let (m, hz) = (m.clone(), hz.clone());
                thread::spawn(
                    move || match m.read(|| record(&hz), TAG, 0, 1, use_val).outcome() {
                        None => note("asked the table"),
                        Some(None) => note("refused"),
                        Some(Some(1)) => note("read"),
                        other => panic!("reader got {other:?}"),
                    },
                )
            };
            // A record given back meanwhile may be claimed instead.
            hz.give_back(0);
            destroy_and_reuse(&m, &hz);
            reader.join().unwrap();
        });
        for o in ["asked the table", "refused", "read"] {
            assert!(seen.contains(&o), "no execution reached {o}: {seen:?}");
        }
    }

    /// The read without its fence: the destroyer's scan can miss the
    /// record while the reader's re-check misses the dead mark.
    fn read_no_fence<R>(
        m: &Mirror<Val>,
        hazard: &Hazard,
        i: usize,
        generation: u32,
        f: impl FnOnce(&Val) -> R,
    ) -> Option<R> {
        let s = m.slot(i)?;
        let want = live(generation);
        if s.word.load(Ordering::Relaxed) != want {
            return None;
        }
        hazard.slot.store(hazard_key(TAG, i), Ordering::Relaxed);
        let _unpublish = Unpublish(&hazard.slot);
        if s.word.load(Ordering::Acquire) != want {
            return None;
        }
        s.value.with(|v| unsafe { &*v }.as_ref().map(f))
    }

    #[test]
    #[should_panic(expected = "Causality violation")]
    fn canary_catches_a_missing_fence() {
        loom::model(|| {
            let m = Arc::new(Mirror::<Val>::new());
            let hz = Arc::new(Hazards::new());
            m.set_live(0, 1, val(1));
            let reader = {
                let (m, hz) = (m.clone(), hz.clone());
                thread::spawn(move || {
                    let rec = record(&hz).unwrap();
                    read_no_fence(&m, rec, 0, 1, use_val);
                })
            };
            destroy_and_reuse(&m, &hz);
            reader.join().unwrap();
        });
    }
}

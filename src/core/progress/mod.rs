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
//! Two ways to write (docs/performance.md, "Progress updates"):
//!
//! - **Solo**: the job's own worker thread, while no other thread has ever
//!   updated the job during its run, is the only writer: it makes the sequence
//!   odd and even with plain stores, no read-modify-write. Around that window it
//!   raises a `busy` flag and then checks `mode`, with only a compiler barrier
//!   between the two: the other side pays for the ordering (below).
//! - **Shared**: any thread, once the record is shared. Writers exclude each
//!   other with a compare-and-swap on the sequence (odd = being written).
//!
//! The switch, made once and for good by the first other thread that updates:
//! it moves `mode` from solo to switching, and, if the worker is inside its run
//! (`worker`), issues `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` — a full
//! memory barrier on every thread of the process that is running — and waits
//! for `busy` to drop. After the barrier the worker either had its `busy` flag
//! visible (the switcher waits for its window to close) or its next check of
//! `mode` sees the switch (it takes the shared path). Where membarrier is not
//! available (old kernels, seccomp) no record is ever solo. After the worker
//! left, a switch needs no barrier. Before the worker starts, another
//! thread's update does not switch at all: it counts itself in `outside`
//! and writes on the CAS path, and the worker's arrival waits for that count
//! to drop (the arrival and the count are ordered by sequentially
//! consistent operations), so a total set before the start costs nothing. The loom
//! models below run every interleaving of that protocol with the barrier
//! modelled as a pair of sequentially consistent fences.
//!
//! The time of an update is read before the window (so a reader never waits
//! on a clock read) from `CLOCK_MONOTONIC_COARSE` (a few ns, against about
//! 20 ns for the precise clock), plus two of its ticks ([`LATE_TICKS`]): the
//! coarse clock lags the precise one by up to about 1.7 ticks (measured on
//! a loaded virtual machine), so the recorded time is never before the
//! update and at most two ticks after it; the time since progress reads up
//! to two ticks (8 ms with a 250 Hz tick) short, never long. It is `max`-ed
//! with the time already recorded, so it never goes back when writers race.

use super::atomic::{
    AtomicI32, AtomicI64, AtomicU8, AtomicU64, Ordering, backoff, fence, seq_read, seq_write_begin,
};
use std::time::Instant;

/// How many coarse-clock ticks an update's recorded time is put ahead of the
/// coarse reading (see the module docs).
pub(crate) const LATE_TICKS: i64 = 2;

/// "Not set" for the optional fields.
pub(crate) const UNSET: i64 = -1;

/// `mode`: the worker may write alone.
const SOLO: u8 = 0;
/// `mode`: another thread is making the record shared.
const SWITCHING: u8 = 1;
/// `mode`: every writer takes the compare-and-swap path, for good.
const SHARED: u8 = 2;

/// `worker`: the job's worker has not entered its run yet.
const NOT_YET: u8 = 0;
/// `worker`: the worker runs (it may be in a solo window).
const INSIDE: u8 = 1;
/// `worker`: the worker's run is over; it never writes solo again.
const LEFT: u8 = 2;

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
    /// Job-clock time of the last update, in ns, or −1 if none yet. Never
    /// before the update, at most [`LATE_TICKS`] coarse-clock ticks after it.
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

/// The shared record, one cache line. See the module docs for the protocol.
#[repr(C, align(64))]
pub(crate) struct Progress {
    seq: AtomicU64,
    current: AtomicU64,
    total: AtomicU64,
    last_ns: AtomicI64,
    eta_ms: AtomicI64,
    eta_set_active_ns: AtomicI64,
    /// What [`Progress::stamp`] subtracts from the raw coarse clock (computed
    /// once per job; `i64::MIN` until then). Not part of the protocol.
    base: std::sync::atomic::AtomicI64,
    percent: AtomicI32,
    /// SOLO, SWITCHING or SHARED; written by the switching thread.
    mode: AtomicU8,
    /// 1 while the worker is in a solo window; written by the worker only.
    busy: AtomicU8,
    /// NOT_YET, INSIDE or LEFT; written by the worker only.
    worker: AtomicU8,
    /// Other threads writing (the CAS path) before the worker entered its
    /// run, without switching: the worker's arrival waits for them.
    outside: AtomicU8,
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
            mode: AtomicU8::new(if barrier::available() { SOLO } else { SHARED }),
            busy: AtomicU8::new(0),
            worker: AtomicU8::new(NOT_YET),
            outside: AtomicU8::new(0),
            base: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }
}

impl Progress {
    /// The time to record for an update made now, on the job clock whose
    /// zero is `epoch`: the coarse clock plus [`LATE_TICKS`] ticks, so never
    /// before now.
    #[inline]
    pub fn stamp(&self, epoch: &Instant) -> i64 {
        let mut base = self.base.load(std::sync::atomic::Ordering::Relaxed);
        if base == i64::MIN {
            base = self.init_base(epoch);
        }
        // Both are CLOCK_MONOTONIC-scale readings (ns since boot, far below
        // 2^62), so the difference cannot wrap; `wrapping_sub` only keeps an
        // overflow check (and a panic path) off the worker's fast path.
        clock::coarse_ns().wrapping_sub(base)
    }

    /// Any thread may compute it: each value is a valid one (see
    /// `clock::base`), and the recorded time is `max`-ed anyway.
    #[cold]
    #[inline(never)]
    fn init_base(&self, epoch: &Instant) -> i64 {
        let base = clock::base(*epoch);
        self.base.store(base, std::sync::atomic::Ordering::Relaxed);
        base
    }

    /// The job's worker starts its run on this thread: from now on it may
    /// call [`Progress::update_own`] until [`Progress::worker_leave`].
    pub fn worker_enter(&self) {
        self.worker.store(INSIDE, Ordering::SeqCst);
        // Pairs with the switcher's fence: either it sees INSIDE (and uses
        // the barrier), or this thread's later checks of `mode` see its switch.
        // Likewise with a writer from outside: either it sees INSIDE (and
        // switches), or this thread sees it counted and waits for it.
        fence(Ordering::SeqCst);
        let mut spins = 0u32;
        while self.outside.load(Ordering::Acquire) != 0 {
            backoff(&mut spins);
        }
    }

    /// The worker's run is over: it never writes solo again.
    pub fn worker_leave(&self) {
        self.worker.store(LEFT, Ordering::Release);
    }

    /// An update by the job's own worker thread, between
    /// [`Progress::worker_enter`] and [`Progress::worker_leave`]: solo while
    /// the record is, else as [`Progress::update`]. `now` is the update's time
    /// ([`Progress::stamp`]).
    #[inline]
    pub fn update_own<E>(
        &self,
        now: i64,
        f: impl FnOnce(&mut Fields) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.enter_solo() {
            return self.update(now, f);
        }
        // Solo: nobody else writes the fields, so they are read outside the
        // window, and a refused update touches nothing readers look at.
        let old = self.load_fields();
        let mut fields = old;
        let result = f(&mut fields);
        if result.is_ok() {
            fields.last_ns = fields.last_ns.max(now);
            let s = self.seq.load(Ordering::Relaxed);
            self.seq.store(s + 1, Ordering::Relaxed);
            // Keeps the field stores below from becoming visible before the odd sequence.
            fence(Ordering::Release);
            self.store_changed(&old, &fields);
            self.seq.store(s + 2, Ordering::Release);
        }
        self.leave_solo();
        result
    }

    /// [`Progress::update_own`] adding `n` units (saturating), the copy
    /// loop's call: touches only `current` and the time.
    #[inline]
    pub fn add_own(&self, now: i64, n: u64) {
        if !self.enter_solo() {
            let r: Result<(), ()> = self.update(now, |f| {
                f.current = f.current.saturating_add(n);
                Ok(())
            });
            return r.unwrap_or(());
        }
        let current = self.current.load(Ordering::Relaxed).saturating_add(n);
        let last = self.last_ns.load(Ordering::Relaxed);
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.current.store(current, Ordering::Relaxed);
        if now > last {
            self.last_ns.store(now, Ordering::Relaxed);
        }
        self.seq.store(s + 2, Ordering::Release);
        self.leave_solo();
    }

    /// Opens a solo window if the record is solo (`busy` raised, then the
    /// mode checked again behind the light barrier); `false`: take the
    /// shared path.
    #[inline(always)]
    fn enter_solo(&self) -> bool {
        if self.mode.load(Ordering::Relaxed) != SOLO {
            return false;
        }
        self.busy.store(1, Ordering::Relaxed);
        barrier::light();
        if self.mode.load(Ordering::Relaxed) != SOLO {
            // A switch began: it waits for this flag to drop.
            self.busy.store(0, Ordering::Release);
            return false;
        }
        true
    }

    #[inline(always)]
    fn leave_solo(&self) {
        self.busy.store(0, Ordering::Release);
    }

    /// Reads the current fields, lets `f` change them, and publishes the result
    /// atomically as a whole, with `now` as the time of the update (the later
    /// of it and the time already recorded). If `f` returns an error nothing is
    /// published (the sequence goes back to the value it had). Any thread; the
    /// first call makes the record shared for good (see the module docs).
    pub fn update<E>(
        &self,
        now: i64,
        f: impl FnOnce(&mut Fields) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.mode.load(Ordering::Acquire) != SHARED {
            if self.enter_outside() {
                // The worker has not entered its run: the record stays solo
                // for it (a total set before the job starts costs the worker
                // nothing later).
                let r = self.cas_write(now, f);
                self.outside.fetch_sub(1, Ordering::Release);
                return r;
            }
            self.make_shared();
        }
        self.cas_write(now, f)
    }

    /// Counts this thread in `outside` if the worker has not entered its
    /// run yet (then it cannot until this thread leaves); `false` otherwise.
    fn enter_outside(&self) -> bool {
        let mut v = self.outside.load(Ordering::Relaxed);
        loop {
            if v == u8::MAX {
                return false;
            }
            match self
                .outside
                .compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        // Pairs with the fence in `worker_enter` (a fence on both sides: what
        // loom models, and what C11 needs for a store-then-load race).
        fence(Ordering::SeqCst);
        if self.worker.load(Ordering::SeqCst) == NOT_YET {
            return true;
        }
        self.outside.fetch_sub(1, Ordering::Release);
        false
    }

    /// The CAS path's write (see [`Progress::update`]).
    fn cas_write<E>(
        &self,
        now: i64,
        f: impl FnOnce(&mut Fields) -> Result<(), E>,
    ) -> Result<(), E> {
        let seq = seq_write_begin(&self.seq);
        let old = self.load_fields();
        let mut fields = old;
        let result = f(&mut fields);
        if result.is_err() {
            // Nothing was stored: a reader that saw `seq` before sees it again.
            self.seq.store(seq, Ordering::Release);
            return result;
        }
        fields.last_ns = fields.last_ns.max(now);
        self.store_changed(&old, &fields);
        self.seq.store(seq + 2, Ordering::Release);
        result
    }

    /// Whether the record is shared (every writer takes the CAS path).
    #[cfg(test)]
    pub fn is_shared(&self) -> bool {
        self.mode.load(Ordering::Acquire) == SHARED
    }

    /// Makes the record shared: once the mode reads SHARED no solo window is
    /// open and none will open (see the module docs).
    #[cold]
    fn make_shared(&self) {
        let mut spins = 0u32;
        loop {
            match self
                .mode
                .compare_exchange(SOLO, SWITCHING, Ordering::SeqCst, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(SHARED) => return,
                // Another thread is switching: wait until it is done.
                Err(_) => backoff(&mut spins),
            }
        }
        fence(Ordering::SeqCst);
        if self.worker.load(Ordering::SeqCst) == INSIDE {
            barrier::heavy();
            let mut spins = 0u32;
            while self.busy.load(Ordering::Acquire) != 0 {
                backoff(&mut spins);
            }
        }
        self.mode.store(SHARED, Ordering::Release);
    }

    /// One consistent snapshot. Spins only while a writer is mid-update (a handful
    /// of stores); never waits on a lock.
    pub fn snapshot(&self) -> Fields {
        seq_read(&self.seq, || self.load_fields())
    }

    /// Time from the last update in `f` (a snapshot) to `now`, in ns (never
    /// negative); `None` before the first update. Never more than the true
    /// time since the update; up to [`LATE_TICKS`] coarse-clock ticks less.
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

/// The asymmetric barrier of the solo/shared switch.
mod barrier {
    /// Whether records may start solo: `membarrier` works here (registered
    /// once per process, on first use: a few µs in a process with one thread,
    /// an RCU grace period — about 10 ms — in one with more). No lock: racing
    /// first calls both register, which is harmless.
    #[cfg(not(loom))]
    pub(super) fn available() -> bool {
        use std::sync::atomic::{AtomicU8, Ordering};
        static READY: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 yes, 2 no
        match READY.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => {
                let ok = crate::sys::clock::membarrier_register();
                READY.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
                ok
            }
        }
    }

    #[cfg(loom)]
    pub(super) fn available() -> bool {
        true
    }

    /// The worker's side: orders its `busy` store before its `mode` load
    /// against [`heavy`] only (the compiler must keep the order; the CPU's
    /// is fixed by the other side's barrier).
    #[inline(always)]
    pub(super) fn light() {
        #[cfg(not(loom))]
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        #[cfg(loom)]
        super::fence(super::Ordering::SeqCst);
    }

    /// The switcher's side: a full barrier on every running thread of the
    /// process. Only called when [`available`] said yes, so the command is
    /// registered and cannot fail.
    #[cold]
    pub(super) fn heavy() {
        #[cfg(not(loom))]
        assert!(
            crate::sys::clock::membarrier(),
            "membarrier failed after a successful registration"
        );
        #[cfg(loom)]
        super::fence(super::Ordering::SeqCst);
    }
}

/// The job clock's coarse reading.
mod clock {
    use super::Instant;
    use crate::sys::clock::{coarse_resolution_ns, monotonic_ns};
    use std::sync::atomic::{AtomicI64, Ordering};

    pub(super) use crate::sys::clock::coarse_ns;

    /// The coarse clock's tick (`clock_getres`), in ns.
    pub(crate) fn coarse_tick_ns() -> i64 {
        static TICK: AtomicI64 = AtomicI64::new(0);
        let t = TICK.load(Ordering::Relaxed);
        if t > 0 {
            return t;
        }
        // Linux's slowest tick (HZ=100) if the kernel does not say.
        let t = coarse_resolution_ns().unwrap_or(10_000_000);
        TICK.store(t, Ordering::Relaxed);
        t
    }

    /// What to subtract from [`coarse_ns`] to get the time since `epoch`
    /// plus [`super::LATE_TICKS`] ticks: never less than the true time since
    /// `epoch` while the coarse clock lags by less than that.
    /// `Instant` is `CLOCK_MONOTONIC` but does not show its value: a reading
    /// taken before `epoch.elapsed()` minus that elapsed time is at most the
    /// clock's value at `epoch`; the best (largest) of a few tries is kept.
    pub(super) fn base(epoch: Instant) -> i64 {
        let mut epoch_raw = i64::MIN;
        for _ in 0..3 {
            let before = monotonic_ns();
            let since = super::duration_ns(epoch.elapsed());
            epoch_raw = epoch_raw.max(before.saturating_sub(since));
        }
        epoch_raw - super::LATE_TICKS * coarse_tick_ns()
    }
}

#[cfg(all(test, not(loom)))]
pub(crate) use clock::coarse_tick_ns;

fn duration_ns(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
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
mod tests;

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
mod loom_tests;

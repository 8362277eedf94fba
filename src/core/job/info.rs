//! The snapshot ([`Job::info`]) and the status line it reads with no lock.
//!
//! Everything a snapshot says besides progress — the state, the cancel,
//! pause and complete flags, the cancel cause, the error code, the I/O status,
//! the error policy, the internal pause count and the active-time clock — is
//! mirrored into one 64-byte sequence lock, the status line. It is written by
//! the holder of the job's lock as it lets go of it ([`StGuard`]'s drop, and
//! before a wait on the job's condition variable), so every change made under
//! the lock is published before the lock is free and before the verb that made
//! it returns. Its writers are thus serialised by the job's lock: a single
//! writer's seqlock (two plain stores around the fields, no read-modify-write).
//! A hold that changed nothing (one that only read) publishes nothing.
//!
//! A reader ([`Job::info`]) takes no lock: it asks for the status and
//! progress lines, reads the clock while they come (a manager polling many
//! jobs finds them cold), then reads the status line (retrying while a write
//! is in progress, a handful of stores) and then the progress seqlock. Times
//! are clamped so that a change published after the clock read counts from
//! that read, never from the future. All the status fields come from one
//! hold of the job's lock (state and flags from the same instant); progress
//! published before a terminal state is seen with it.
//!
//! The active time is kept as a base and a running-since time: while the job
//! runs, active time is `now - running_since`; while it is paused, not yet
//! started or ended, it is the base, frozen.

use super::super::atomic::{AtomicI64, AtomicU64, Ordering, fence, seq_read};
use super::*;

/// The status fields one snapshot holds (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Status {
    pub(super) state: State,
    pub(super) cancel_requested: bool,
    pub(super) pause_requested: bool,
    pub(super) complete_requested: bool,
    pub(super) cancel_soft: bool,
    pub(super) cancel_cause: CancelCause,
    pub(super) iostatus: IoStatus,
    pub(super) error_policy: ErrorPolicy,
    pub(super) pause_count: u32,
    pub(super) error_code: i32,
    /// Active time accumulated while not running (frozen), in ns.
    pub(super) active_base_ns: i64,
    /// Job-clock time from which the job counts as having run the whole time
    /// (start plus paused time), or −1 while it is not running.
    pub(super) running_since_ns: i64,
}

impl Status {
    /// The status of `st` (the job's state under its lock).
    pub(super) fn of(st: &St) -> Status {
        let c = &st.clock;
        let (active_base_ns, running_since_ns) = match c.started_ns {
            None => (0, -1),
            Some(started) => match (c.finished_ns, c.halted_since_ns) {
                (None, None) => (0, started + c.paused_ns),
                // Frozen: the active time is the same at any later time.
                (Some(end), _) => (st.active_ns(end), -1),
                (None, Some(since)) => (st.active_ns(since.max(started)), -1),
            },
        };
        Status {
            state: st.state(),
            cancel_requested: st.cancel.requested,
            pause_requested: st.pauses.user,
            complete_requested: st.ready.complete_requested,
            cancel_soft: st.cancel.soft,
            cancel_cause: st.cancel.cause,
            iostatus: st.pauses.iostatus,
            error_policy: st.pauses.error_policy,
            pause_count: st.pauses.internal,
            error_code: st.end.error.as_ref().map_or(0, |e| e.code),
            active_base_ns,
            running_since_ns,
        }
    }

    /// Active (unpaused) time at job-clock `now`, in ns.
    #[inline]
    pub(super) fn active_ns(&self, now: i64) -> i64 {
        if self.running_since_ns < 0 {
            self.active_base_ns
        } else {
            // A resume published after `now` was read counts from `now`.
            self.active_base_ns + (now - self.running_since_ns).max(0)
        }
    }

    /// The flags word: state, the four flags, cause, I/O status, policy.
    fn flags(&self) -> u64 {
        u64::from(state_code(self.state))
            | u64::from(self.cancel_requested) << 8
            | u64::from(self.pause_requested) << 9
            | u64::from(self.complete_requested) << 10
            | u64::from(self.cancel_soft) << 11
            | u64::from(cause_code(self.cancel_cause)) << 16
            | u64::from(iostatus_code(self.iostatus)) << 24
            | u64::from(policy_code(self.error_policy)) << 32
    }

    fn counts(&self) -> u64 {
        u64::from(self.pause_count) << 32 | u64::from(self.error_code as u32)
    }

    #[inline]
    fn from_words(flags: u64, counts: u64, base: i64, since: i64) -> Status {
        let byte = |shift: u32| (flags >> shift) as u8;
        let bit = |n: u32| flags >> n & 1 != 0;
        Status {
            state: state_of(byte(0)),
            cancel_requested: bit(8),
            pause_requested: bit(9),
            complete_requested: bit(10),
            cancel_soft: bit(11),
            cancel_cause: cause_of(byte(16)),
            iostatus: iostatus_of(byte(24)),
            error_policy: policy_of(byte(32)),
            pause_count: (counts >> 32) as u32,
            error_code: counts as u32 as i32,
            active_base_ns: base,
            running_since_ns: since,
        }
    }
}

fn state_code(s: State) -> u8 {
    State::ALL.iter().position(|&x| x == s).unwrap_or(0) as u8
}

#[inline]
fn state_of(c: u8) -> State {
    State::ALL
        .get(usize::from(c))
        .copied()
        .unwrap_or(State::Created)
}

fn cause_code(c: CancelCause) -> u8 {
    match c {
        CancelCause::None => 0,
        CancelCause::Caller => 1,
        CancelCause::Timeout => 2,
        CancelCause::Transaction => 3,
        CancelCause::Parent => 4,
    }
}

#[inline]
fn cause_of(c: u8) -> CancelCause {
    match c {
        1 => CancelCause::Caller,
        2 => CancelCause::Timeout,
        3 => CancelCause::Transaction,
        4 => CancelCause::Parent,
        _ => CancelCause::None,
    }
}

fn iostatus_code(s: IoStatus) -> u8 {
    match s {
        IoStatus::Ok => 0,
        IoStatus::Failed => 1,
        IoStatus::NoSpace => 2,
    }
}

#[inline]
fn iostatus_of(c: u8) -> IoStatus {
    match c {
        1 => IoStatus::Failed,
        2 => IoStatus::NoSpace,
        _ => IoStatus::Ok,
    }
}

fn policy_code(p: ErrorPolicy) -> u8 {
    match p {
        ErrorPolicy::Report => 0,
        ErrorPolicy::Ignore => 1,
        ErrorPolicy::Stop => 2,
        ErrorPolicy::Enospc => 3,
    }
}

#[inline]
fn policy_of(c: u8) -> ErrorPolicy {
    match c {
        1 => ErrorPolicy::Ignore,
        2 => ErrorPolicy::Stop,
        3 => ErrorPolicy::Enospc,
        _ => ErrorPolicy::Report,
    }
}

/// The status line: a single-writer sequence lock (the writer holds the
/// job's lock) over the [`Status`] words, on a cache line of its own, with
/// the job's constants a snapshot needs (id, type, clock origin), so a
/// snapshot reads this line and the progress line and nothing else of the
/// job.
#[repr(C, align(64))]
pub(super) struct StatusLine {
    seq: AtomicU64,
    flags: AtomicU64,
    counts: AtomicU64,
    base: AtomicI64,
    since: AtomicI64,
    id: u64,
    job_type: JobType,
    /// The job clock's origin on `CLOCK_MONOTONIC`, in ns (read just after
    /// the job's `Instant` epoch: at most a few ns later).
    epoch_ns: i64,
}

pub(super) use crate::sys::clock::monotonic_ns;
use crate::sys::prefetch;

impl StatusLine {
    pub(super) fn new(s: &Status, id: u64, job_type: JobType, epoch_ns: i64) -> StatusLine {
        StatusLine {
            seq: AtomicU64::new(0),
            flags: AtomicU64::new(s.flags()),
            counts: AtomicU64::new(s.counts()),
            base: AtomicI64::new(s.active_base_ns),
            since: AtomicI64::new(s.running_since_ns),
            id,
            job_type,
            epoch_ns,
        }
    }

    /// Job-clock time now (ns since the job was made), never negative.
    #[inline]
    fn now_ns(&self) -> i64 {
        (monotonic_ns() - self.epoch_ns).max(0)
    }

    /// Publishes `s` if it differs from what is published. Only with the
    /// job's lock held (the lock is what keeps writers apart).
    pub(super) fn publish(&self, s: &Status) {
        let (flags, counts) = (s.flags(), s.counts());
        // The writer's own last stores: no other thread writes them.
        if self.flags.load(Ordering::Relaxed) == flags
            && self.counts.load(Ordering::Relaxed) == counts
            && self.base.load(Ordering::Relaxed) == s.active_base_ns
            && self.since.load(Ordering::Relaxed) == s.running_since_ns
        {
            return;
        }
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq + 1, Ordering::Relaxed);
        // Keeps the field stores below from becoming visible before the odd
        // sequence.
        fence(Ordering::Release);
        self.flags.store(flags, Ordering::Relaxed);
        self.counts.store(counts, Ordering::Relaxed);
        self.base.store(s.active_base_ns, Ordering::Relaxed);
        self.since.store(s.running_since_ns, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }

    /// One consistent status: spins only while a write is in progress.
    #[inline]
    pub(super) fn snapshot(&self) -> Status {
        let (flags, counts, base, since) = seq_read(&self.seq, || {
            (
                self.flags.load(Ordering::Relaxed),
                self.counts.load(Ordering::Relaxed),
                self.base.load(Ordering::Relaxed),
                self.since.load(Ordering::Relaxed),
            )
        });
        Status::from_words(flags, counts, base, since)
    }
}

impl Job {
    /// One consistent snapshot; takes no lock and never waits on the worker
    /// (see the module docs).
    #[inline]
    pub fn info(&self) -> Info {
        let inner = &self.0;
        let line = &inner.status;
        // The two lines a snapshot reads, asked for before the clock so
        // their cache misses (a manager polling many jobs finds every line
        // cold) overlap the clock read instead of following it.
        prefetch(line);
        prefetch(&inner.progress);
        // Read before both: an update or resume published after it is
        // seen as happening now (the differences below are clamped at 0),
        // never as being in the future.
        let now = line.now_ns();
        let s = line.snapshot();
        let f = inner.progress.snapshot();
        let state = s.state;
        let active = s.active_ns(now);
        let bounded = line.job_type == JobType::Bounded;
        let percent = match (bounded, state) {
            (false, _) => -1,
            (true, State::Completed) => 100,
            (true, _) => percent(&f),
        };
        let rate = if active > 0 && f.current > 0 {
            f.current as f64 * 1e9 / active as f64
        } else {
            -1.0
        };
        let remaining_ms = if state.is_terminal() {
            0
        } else {
            remaining(&f, bounded, active, rate)
        };
        Info {
            id: line.id,
            job_type: line.job_type,
            state,
            cancel_requested: s.cancel_requested,
            pause_requested: s.pause_requested,
            elapsed_ms: ms(active),
            remaining_ms,
            percent,
            current: f.current,
            total: f.total,
            rate,
            since_progress_ms: inner.progress.since_last_ns(&f, now).map_or(-1, ms),
            error_code: s.error_code,
            cancel_cause: s.cancel_cause,
            pause_count: s.pause_count,
            iostatus: s.iostatus,
            error_policy: s.error_policy,
            complete_requested: s.complete_requested,
            cancel_soft: s.cancel_soft,
        }
    }
}

/// [`progress::percent`] without its 128-bit division where 64 bits hold
/// `current * 100` (every count below 2^57).
#[inline]
fn percent(f: &Fields) -> i32 {
    if f.percent < 0
        && f.total > 0
        && let Some(c) = f.current.checked_mul(100)
    {
        return (c / f.total).min(100) as i32;
    }
    progress::percent(f)
}

#[inline]
fn remaining(f: &Fields, bounded: bool, active_ns: i64, rate: f64) -> i64 {
    if f.eta_ms >= 0 {
        let spent = ms(active_ns - f.eta_set_active_ns).max(0);
        return (f.eta_ms - spent).max(0);
    }
    if !bounded {
        return -1;
    }
    if f.percent < 0 && f.total > 0 && rate > 0.0 {
        let left = f.total.saturating_sub(f.current) as f64;
        return (left / rate * 1000.0).min(i64::MAX as f64) as i64;
    }
    let p = percent(f);
    if (1..100).contains(&p) && f.percent >= 0 {
        return ms(active_ns) * i64::from(100 - p) / i64::from(p);
    }
    if p == 100 { 0 } else { -1 }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_narrow_percent_agrees_with_the_wide_one() {
        let vals = [
            0u64,
            1,
            3,
            99,
            100,
            101,
            1 << 20,
            1 << 56,
            (1 << 57) + 1,
            u64::MAX / 100,
            u64::MAX / 100 + 1,
            u64::MAX - 1,
            u64::MAX,
        ];
        for &current in &vals {
            for &total in &vals {
                let f = Fields {
                    current,
                    total,
                    ..Fields::default()
                };
                assert_eq!(percent(&f), progress::percent(&f), "{current}/{total}");
            }
        }
    }

    #[test]
    fn every_status_survives_the_words() {
        let causes = [
            CancelCause::None,
            CancelCause::Caller,
            CancelCause::Timeout,
            CancelCause::Transaction,
            CancelCause::Parent,
        ];
        let io = [IoStatus::Ok, IoStatus::Failed, IoStatus::NoSpace];
        let pol = [
            ErrorPolicy::Report,
            ErrorPolicy::Ignore,
            ErrorPolicy::Stop,
            ErrorPolicy::Enospc,
        ];
        for (i, &state) in State::ALL.iter().enumerate() {
            let s = Status {
                state,
                cancel_requested: i & 1 != 0,
                pause_requested: i & 2 != 0,
                complete_requested: i & 4 != 0,
                cancel_soft: i & 8 == 0,
                cancel_cause: causes[i % causes.len()],
                iostatus: io[i % io.len()],
                error_policy: pol[i % pol.len()],
                pause_count: u32::MAX - i as u32,
                error_code: -(i as i32) - 1,
                active_base_ns: i as i64 * 7,
                running_since_ns: -1 + i as i64,
            };
            let first = Status {
                state: State::Created,
                ..s
            };
            let line = StatusLine::new(&first, 1, JobType::Bounded, 0);
            line.publish(&s);
            assert_eq!(line.snapshot(), s);
        }
    }
}

/// `make loom`: the status line's protocol under every interleaving and
/// reordering loom explores. The writer publishes on the model's main
/// thread (the job's lock keeps writers apart, so one writer is the whole
/// protocol); the reader runs on a spawned thread (see `progress`'s models
/// for why that way round).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::core::testing::explore;
    use loom::sync::Arc;
    use loom::thread;

    /// Status `n`: every word says `n` its own way, so a snapshot mixing two
    /// versions shows.
    fn status(n: u32) -> Status {
        let paused = n % 2 == 1;
        Status {
            state: if paused {
                State::Paused
            } else {
                State::Running
            },
            cancel_requested: false,
            pause_requested: paused,
            complete_requested: false,
            cancel_soft: false,
            cancel_cause: CancelCause::None,
            iostatus: IoStatus::Ok,
            error_policy: ErrorPolicy::Report,
            pause_count: n,
            error_code: n as i32,
            active_base_ns: i64::from(n) * 10,
            running_since_ns: i64::from(n) * 100,
        }
    }

    fn version(s: &Status) -> u32 {
        assert_eq!(
            s.pause_requested,
            s.state == State::Paused,
            "state and flags from two versions: {s:?}"
        );
        let n = s.pause_count;
        assert_eq!(*s, status(n), "a torn status: {s:?}");
        n
    }

    /// A reader sees only whole published versions, in order.
    #[test]
    fn status_line_is_never_torn() {
        explore("status line: writer vs reader", || {
            let line = Arc::new(StatusLine::new(&status(0), 1, JobType::Bounded, 0));
            let reader = {
                let line = line.clone();
                thread::spawn(move || {
                    let a = version(&line.snapshot());
                    let b = version(&line.snapshot());
                    assert!(b >= a, "went back from {a} to {b}");
                })
            };
            line.publish(&status(1));
            reader.join().unwrap();
            assert_eq!(version(&line.snapshot()), 1);
        });
    }

    /// A publish of what is already published writes nothing: a reader
    /// racing it and a real change sees the old version or the new one.
    #[test]
    fn republishing_changes_nothing() {
        explore("status line: republish, then a change, vs reader", || {
            let line = Arc::new(StatusLine::new(&status(3), 1, JobType::Bounded, 0));
            let reader = {
                let line = line.clone();
                thread::spawn(move || {
                    let v = version(&line.snapshot());
                    assert!(v == 3 || v == 4, "never published: {v}");
                })
            };
            line.publish(&status(3));
            line.publish(&status(4));
            reader.join().unwrap();
        });
    }
}

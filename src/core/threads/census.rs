//! Counts every pool shares: the threads alive, the threads looking for work,
//! and the futex hash size asked for once many threads live.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Threads looking for work now (all pools): at most one per CPU the process
/// may run on but one, so looking never takes the CPU a submitter needs.
pub(super) static SPINNING: AtomicUsize = AtomicUsize::new(0);

/// Pool threads alive now (all pools).
pub(super) static LIVE_THREADS: AtomicUsize = AtomicUsize::new(0);

/// (live threads, futex hash slots): once that many pool threads live, the
/// process's private futex hash gets that many buckets (about four per
/// thread, as the kernel's own sizing, which stops at 4 per CPU).
pub(crate) const FUTEX_HASH_STEPS: [(usize, u64); 2] = [(256, 1024), (4096, 16384)];

/// The largest futex hash asked for so far.
pub(super) static FUTEX_HASH_ASKED: AtomicU64 = AtomicU64::new(0);

/// Counts a pool thread alive while it is held.
pub(super) struct LiveThread;

impl LiveThread {
    pub(super) fn enter() -> LiveThread {
        forget_parent_threads();
        let n = LIVE_THREADS.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= FUTEX_HASH_STEPS[0].0 {
            grow_futex_hash(n);
        }
        LiveThread
    }
}

impl Drop for LiveThread {
    fn drop(&mut self) {
        decrement(&LIVE_THREADS);
    }
}

/// Enlarges the futex hash for `threads` live threads, once per step. A
/// kernel without `PR_FUTEX_HASH` (before 6.16), or one that refuses the size,
/// keeps its hash: a slower wake, never an error.
pub(crate) fn grow_futex_hash(threads: usize) {
    let Some(&(_, slots)) = FUTEX_HASH_STEPS.iter().rev().find(|(at, _)| threads >= *at) else {
        return;
    };
    if FUTEX_HASH_ASKED.fetch_max(slots, Ordering::Relaxed) >= slots {
        return;
    }
    set_futex_hash(slots);
}

/// Asks for a futex hash of `slots` buckets; a refusal is logged and ignored.
pub(crate) fn set_futex_hash(slots: u64) {
    if let Err(e) = crate::sys::set_futex_hash_slots(slots) {
        crate::core::log::debug(format_args!(
            "futex hash of {slots} buckets not set (kept the kernel's): {e}"
        ));
    }
}

/// CPUs this process may run on (read once; an atomic, not a `OnceLock`, so
/// fork() never finds it half made).
pub(super) fn cpus() -> usize {
    static CPUS: AtomicUsize = AtomicUsize::new(0);
    let n = CPUS.load(Ordering::Relaxed);
    if n != 0 {
        return n;
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    CPUS.store(n, Ordering::Relaxed);
    n
}

/// Counts the calling thread among those looking for work if fewer than one
/// per CPU but one are (so looking never takes the last CPU, and a process
/// bound to one CPU never looks); then it must call [`stop_looking`]. A forked child starts
/// with none (the parent's lookers are not its threads).
pub(super) fn start_looking() -> bool {
    forget_parent_threads();
    if SPINNING.fetch_add(1, Ordering::Relaxed) < cpus() - 1 {
        return true;
    }
    stop_looking();
    false
}

/// Uncounts a thread [`start_looking`] counted.
pub(super) fn stop_looking() {
    decrement(&SPINNING);
}

/// Takes one off a count, never below zero (a thread counted before a
/// fork's reset may uncount itself after it).
pub(super) fn decrement(count: &AtomicUsize) {
    let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        Some(n.saturating_sub(1))
    });
}

/// In a forked child, the first call starts the counts of threads afresh:
/// the parent's threads are not the child's, and the child's futex hash is
/// the kernel's default again.
pub(super) fn forget_parent_threads() {
    static FORKS: AtomicU64 = AtomicU64::new(0);
    let forks = crate::sys::fork_generation();
    if FORKS.load(Ordering::Relaxed) != forks && FORKS.swap(forks, Ordering::Relaxed) != forks {
        SPINNING.store(0, Ordering::Relaxed);
        LIVE_THREADS.store(0, Ordering::Relaxed);
        FUTEX_HASH_ASKED.store(0, Ordering::Relaxed);
    }
}

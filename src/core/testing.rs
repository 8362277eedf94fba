//! Test helpers shared by core's test modules. Today: the loom driver
//! (`make loom`) that [`super::loom_tests`] and `progress`'s seqlock model
//! both use, kept here so no module depends on another's tests.

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering};

static RUNS: StdAtomicUsize = StdAtomicUsize::new(0);

/// Runs `f` under loom and returns how many executions were explored.
/// Preemptions are bounded (LOOM_MAX_PREEMPTIONS, default 3 here, as tokio
/// runs its models): most concurrency bugs need only two or three.
pub(crate) fn explore(name: &str, f: impl Fn() + Sync + Send + 'static) -> usize {
    RUNS.store(0, Ordering::SeqCst);
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(move || {
        RUNS.fetch_add(1, Ordering::SeqCst);
        f();
    });
    let n = RUNS.load(Ordering::SeqCst);
    println!("loom: {name}: {n} executions explored");
    assert!(n > 1, "{name}: loom explored a single execution");
    n
}

/// The outcomes a model's executions reached, by name.
pub(crate) struct Seen(StdMutex<Vec<&'static str>>);

impl Seen {
    pub(crate) const fn new() -> Seen {
        Seen(StdMutex::new(Vec::new()))
    }

    pub(crate) fn reset(&self) {
        self.0.lock().unwrap().clear();
    }

    pub(crate) fn note(&self, outcome: &'static str) {
        let mut seen = self.0.lock().unwrap();
        if !seen.contains(&outcome) {
            seen.push(outcome);
        }
    }

    pub(crate) fn require(&self, model: &str, all: &[&str]) {
        let seen = self.0.lock().unwrap();
        for outcome in all {
            assert!(
                seen.contains(outcome),
                "{model}: no execution reached '{outcome}' (reached: {seen:?})"
            );
        }
    }
}

/// Counts how often what a hook or completion captured is dropped.
pub(crate) struct Drops(pub(crate) Arc<AtomicUsize>);

impl Drop for Drops {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

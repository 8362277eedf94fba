//! `make loom`: models of the job protocols that rest on core's own
//! synchronisation — a job's lock and condition variable ([`super::sync`]'s
//! `Mutex` and `Signal`, whose skipped wake-ups must never lose one), its
//! attention bits (the worker's lock-free view of cancel and pause) and the
//! hook list that cancel hands over to the thread calling the hooks.
//!
//! Built with `--cfg loom`, those primitives are loom's, and each model runs
//! a real [`Job`] under every interleaving loom explores within its preemption
//! bound. The worker runs on a loom thread ([`Job::run_for_model`]) instead
//! of a pool thread. A lost wake-up shows as a deadlock, which loom reports.
//!
//! Each model also counts which outcomes its executions reached and requires
//! every one the protocol allows: a model that stopped exploring the races it
//! exists for fails instead of passing quietly.

use super::errno::ECANCELED;
use super::job::{
    Builder, CancelStatus, Error, HookAdded, HookRemoved, Job, JobError, Worker, WorkerFn,
};
use super::state::State;
use super::testing::{Drops, Seen, explore};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::thread;

/// A worker that checks for cancel once (the attention bit's lock-free load)
/// and reports what it saw in `saw`.
fn checking_worker(
    saw: &Arc<AtomicBool>,
) -> impl FnOnce(&Worker<'_>) -> Result<(), JobError> + Send + 'static {
    let saw = saw.clone();
    move |w| {
        if w.job().is_cancel_requested() {
            saw.store(true, SeqCst);
            Err(JobError::new(ECANCELED, "saw the cancel"))
        } else {
            Ok(())
        }
    }
}

fn run_on_thread(job: &Job, worker: WorkerFn) -> thread::JoinHandle<()> {
    let job = job.clone();
    thread::spawn(move || job.run_for_model(worker))
}

fn state_code(state: State) -> usize {
    state as i32 as usize
}

static CANCEL_VS_FINISH: Seen = Seen::new();

/// Cancel races the worker's end. Whatever the interleaving: the job ends
/// once, in the state the outcome rules give (the worker decides: one that saw
/// the cancel ends CANCELLED, one that did not ends COMPLETED); its completion
/// runs exactly once and sees that state; a registered hook is called by a
/// cancel that was REQUESTED and otherwise dropped unrun, and what it captured
/// is freed exactly once; `wait` returns (no lost wake-up).
#[test]
fn cancel_vs_finish() {
    CANCEL_VS_FINISH.reset();
    explore("job: cancel vs the worker's end", || {
        let completions = Arc::new(AtomicUsize::new(0));
        let told = Arc::new(AtomicUsize::new(usize::MAX));
        let saw = Arc::new(AtomicBool::new(false));
        let (hook_calls, hook_drops) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let job = {
            let (completions, told) = (completions.clone(), told.clone());
            Builder::new()
                .on_complete(None, move |j| {
                    completions.fetch_add(1, SeqCst);
                    told.store(state_code(j.state()), SeqCst);
                })
                .create(checking_worker(&saw))
        };
        let worker = job.start_for_model();
        let hook = {
            let (captured, calls) = (Drops(hook_drops.clone()), hook_calls.clone());
            move |_: &Job| {
                let _captured = captured;
                calls.fetch_add(1, SeqCst);
            }
        };
        assert!(matches!(
            job.add_cancel_hook(hook),
            Ok(HookAdded::Registered(_))
        ));

        let runner = run_on_thread(&job, worker);
        let status = job.cancel();
        let state = job.wait(None).expect("wait returns");
        // Seen terminal: no hook runs from now on.
        let hook_calls_at_end = hook_calls.load(SeqCst);
        runner.join().unwrap();
        assert_eq!(
            hook_calls.load(SeqCst),
            hook_calls_at_end,
            "a hook ran after the job was seen ended"
        );

        assert_eq!(job.state(), state, "the end changed after wait returned");
        assert_eq!(
            completions.load(SeqCst),
            1,
            "completion ran other than once"
        );
        assert_eq!(
            told.load(SeqCst),
            state_code(state),
            "completion saw another state"
        );
        assert_eq!(
            hook_drops.load(SeqCst),
            1,
            "the hook's captures were not freed once"
        );
        let saw = saw.load(SeqCst);
        match status {
            CancelStatus::Requested => {
                // Called once, or dropped uncalled when the worker returned
                // before the cancel got to it; never twice.
                assert!(hook_calls.load(SeqCst) <= 1, "a hook ran twice");
                let expected = if saw {
                    State::Cancelled
                } else {
                    State::Completed
                };
                assert_eq!(state, expected, "outcome rules (worker saw cancel: {saw})");
                CANCEL_VS_FINISH.note(if saw {
                    "cancelled"
                } else {
                    "requested, completed"
                });
            }
            CancelStatus::AlreadyFinished => {
                assert_eq!(hook_calls.load(SeqCst), 0, "a hook ran after the job's end");
                assert!(!saw, "the worker saw a cancel that came after its end");
                assert_eq!(state, State::Completed);
                CANCEL_VS_FINISH.note("already finished");
            }
            other => panic!("first cancel said {other:?}"),
        }
    });
    CANCEL_VS_FINISH.require(
        "cancel vs finish",
        &["cancelled", "requested, completed", "already finished"],
    );
}

static HOOK_REMOVE: Seen = Seen::new();

/// Removing a hook races the cancel that calls it. When remove returns, the
/// hook is not running and never will: REMOVED means it never ran and its
/// captures are already freed; NOT_FOUND means it ran once and has finished.
/// Never both, never twice; the captures are freed exactly once.
#[test]
fn hook_remove_vs_cancel() {
    HOOK_REMOVE.reset();
    explore("job: hook remove vs cancel", || {
        let saw = Arc::new(AtomicBool::new(false));
        let job = Builder::new().create(checking_worker(&saw));
        let worker = job.start_for_model();
        let (calls, inside, drops) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let hook = {
            let (captured, calls, inside) = (Drops(drops.clone()), calls.clone(), inside.clone());
            move |_: &Job| {
                let _captured = captured;
                inside.store(true, SeqCst);
                calls.fetch_add(1, SeqCst);
                inside.store(false, SeqCst);
            }
        };
        let Ok(HookAdded::Registered(id)) = job.add_cancel_hook(hook) else {
            panic!("hook not registered");
        };

        let remover = {
            let (job, calls, inside, drops) =
                (job.clone(), calls.clone(), inside.clone(), drops.clone());
            thread::spawn(move || {
                let removed = job.remove_cancel_hook(id);
                assert!(!inside.load(SeqCst), "remove returned while the hook ran");
                match removed {
                    HookRemoved::Removed => {
                        assert_eq!(calls.load(SeqCst), 0, "removed, yet it ran");
                        assert_eq!(drops.load(SeqCst), 1, "removed, captures not freed");
                    }
                    HookRemoved::NotFound => {
                        assert_eq!(calls.load(SeqCst), 1, "not found, yet it never ran")
                    }
                }
                removed
            })
        };
        assert_eq!(job.cancel(), CancelStatus::Requested);
        let removed = remover.join().unwrap();
        let expected_calls = usize::from(removed == HookRemoved::NotFound);
        assert_eq!(
            calls.load(SeqCst),
            expected_calls,
            "the hook ran a second time"
        );
        assert_eq!(drops.load(SeqCst), 1);

        job.run_for_model(worker);
        assert!(saw.load(SeqCst));
        assert_eq!(job.state(), State::Cancelled);
        HOOK_REMOVE.note(match removed {
            HookRemoved::Removed => "removed before it ran",
            HookRemoved::NotFound => "ran, then remove found nothing",
        });
    });
    HOOK_REMOVE.require(
        "hook remove vs cancel",
        &["removed before it ran", "ran, then remove found nothing"],
    );
}

static HOOK_ADD: Seen = Seen::new();

/// Registering a hook races the cancel: the hook runs exactly once either
/// way — called by the cancel (REGISTERED) or at once on the registering
/// thread (RAN_AT_ONCE) — and never is it left registered and uncalled.
#[test]
fn hook_add_vs_cancel() {
    HOOK_ADD.reset();
    explore("job: hook add vs cancel", || {
        let saw = Arc::new(AtomicBool::new(false));
        let job = Builder::new().create(checking_worker(&saw));
        let worker = job.start_for_model();
        let (calls, drops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let adder = {
            let (job, calls, drops) = (job.clone(), calls.clone(), drops.clone());
            thread::spawn(move || {
                let captured = Drops(drops);
                job.add_cancel_hook(move |_: &Job| {
                    let _captured = captured;
                    calls.fetch_add(1, SeqCst);
                })
                .expect("a running job takes hooks")
            })
        };
        assert_eq!(job.cancel(), CancelStatus::Requested);
        let added = adder.join().unwrap();
        assert_eq!(
            calls.load(SeqCst),
            1,
            "the hook ran other than once ({added:?})"
        );
        assert_eq!(drops.load(SeqCst), 1);
        job.run_for_model(worker);
        assert_eq!(job.state(), State::Cancelled);
        HOOK_ADD.note(match added {
            HookAdded::Registered(_) => "registered, then called by cancel",
            HookAdded::RanAtOnce => "ran at once after the cancel",
        });
    });
    HOOK_ADD.require(
        "hook add vs cancel",
        &[
            "registered, then called by cancel",
            "ran at once after the cancel",
        ],
    );
}

static PARKED: Seen = Seen::new();

/// A worker at a pause point while the caller resumes and then cancels: the
/// parked worker is always woken (the job's `Signal` skips the wake only when
/// nobody waits), sees either the resume or the cancel, and the job ends in
/// the state that matches; the caller's `wait` returns too.
#[test]
fn pause_point_wakes_for_resume_and_cancel() {
    PARKED.reset();
    explore("job: parked worker vs resume and cancel", || {
        let saw = Arc::new(AtomicBool::new(false));
        let job = {
            let saw = saw.clone();
            Builder::new().create(move |w| match w.job().pause_point() {
                Ok(()) => Ok(()),
                Err(Error::Cancelled) => {
                    saw.store(true, SeqCst);
                    Err(JobError::new(ECANCELED, "cancelled while parked"))
                }
                Err(e) => panic!("pause point: {e:?}"),
            })
        };
        let worker = job.start_for_model();
        job.pause().expect("pause a running job");
        let runner = run_on_thread(&job, worker);
        job.resume().expect("resume");
        let status = job.cancel();
        let state = job.wait(None).expect("wait returns");
        runner.join().unwrap();
        let saw = saw.load(SeqCst);
        assert_eq!(
            state,
            if saw {
                State::Cancelled
            } else {
                State::Completed
            }
        );
        if status == CancelStatus::AlreadyFinished {
            assert!(!saw);
        }
        PARKED.note(if saw {
            "saw the cancel"
        } else {
            "ran on after resume"
        });
    });
    PARKED.require("parked worker", &["saw the cancel", "ran on after resume"]);
}

/// The waiter-count protocol of [`super::sync::Signal`] done wrong: the
/// notifier looks at the count before it changes the state under the lock, so
/// a waiter can count itself and sleep after that look, and is never woken.
/// Loom must report the deadlock; if it stopped finding it, the job models
/// above could not be trusted to find a lost wake-up either.
#[test]
#[should_panic(expected = "deadlock")]
fn canary_catches_a_lost_wakeup() {
    use loom::sync::{Condvar, Mutex};
    loom::model(|| {
        // Leaked: nothing of loom's may be dropped while the deadlock unwinds
        // (a loom object's destructor panics then, which aborts the process).
        let shared: &'static _ = Box::leak(Box::new((
            Mutex::new(false),
            Condvar::new(),
            AtomicUsize::new(0),
        )));
        let waiter = {
            thread::spawn(move || {
                let (flag, cv, waiters) = shared;
                let mut ready = flag.lock().unwrap();
                while !*ready {
                    waiters.fetch_add(1, SeqCst);
                    ready = cv.wait(ready).unwrap();
                    waiters.fetch_sub(1, SeqCst);
                }
            })
        };
        let (flag, cv, waiters) = shared;
        let anyone = waiters.load(SeqCst) != 0;
        *flag.lock().unwrap() = true;
        if anyone {
            cv.notify_all();
        }
        waiter.join().unwrap();
    });
}

static HANDOFF: Seen = Seen::new();

/// A pool thread with no job looks for a wake a while, then parks; a
/// waker makes it its lane's searcher (under the pool's lock, not modelled
/// here: plain counts under a mutex) and wakes it at any point of that: while
/// it looks, as it gives up, as it parks, after it parked. The thread always
/// wakes, exactly once, and sees what the waker wrote before the wake (a
/// relaxed write: only the hand-off orders it). A lost wake is a deadlock,
/// which loom reports. The real `Handoff` of `threads/mod.rs` runs.
#[test]
fn pool_handoff_to_a_looking_or_parked_thread() {
    use super::threads::Handoff;
    use loom::sync::atomic::Ordering::Relaxed;
    HANDOFF.reset();
    explore("pool: wake of a thread looking for work or parked", || {
        let ready = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = loom::sync::mpsc::channel();
        let idle = {
            let ready = ready.clone();
            thread::spawn(move || {
                let handoff = Arc::new(Handoff::for_model());
                tx.send(handoff.clone()).unwrap();
                handoff.wait_for_model();
                assert_eq!(ready.load(Relaxed), 1, "woken before the work was there");
            })
        };
        let handoff = rx.recv().unwrap();
        let looked = handoff.is_looking_for_model();
        ready.store(1, Relaxed);
        handoff.wake_for_model();
        idle.join().unwrap();
        HANDOFF.note(if looked {
            "woken while looking"
        } else {
            "woken otherwise"
        });
    });
    HANDOFF.require("pool hand-off", &["woken while looking", "woken otherwise"]);
}

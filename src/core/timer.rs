//! One process-wide timer thread for the things that must happen later without
//! anyone waiting for them: a job's deadline, and the SIGKILL that follows a
//! child's SIGTERM when its grace period ends.
//!
//! Tasks run on the timer thread, one at a time, with no lock of the timer held.
//! The lock order is job → timer: code holding a job's lock may schedule and
//! cancel, and the timer thread never holds its own lock while running a task.
//!
//! A task must be short and must never run user code (a hook, a callback, a
//! free function, the log sink) nor take a job's lock for long: one slow task
//! delays every other job's deadline and every child's SIGKILL. So a task holds
//! only weak references to jobs and children (the timer thread never drops the
//! last reference to anything user-owned) and hands anything that may call
//! user code to another thread (a deadline's cancel runs on a pool thread: see
//! `Job::arm_deadline`).
//!
//! The thread is started by [`ensure_running`] when a deadline is set or a job
//! with one starts, so that call can fail (EAGAIN) instead of a deadline being
//! ignored later; once started it runs for the life of the process.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Names a scheduled task for [`cancel`].
pub(crate) type TimerId = u64;

type Task = Box<dyn FnOnce() + Send + 'static>;

struct State {
    /// Due times; an entry whose id is no longer in `tasks` was cancelled.
    heap: BinaryHeap<Reverse<(Instant, TimerId)>>,
    tasks: HashMap<TimerId, Task>,
    next: TimerId,
    /// The process the timer thread runs in: after `fork` the child has no timer
    /// thread, and starts its own (with an empty table) on first use.
    pid: u32,
    running: bool,
}

struct Timer {
    st: Mutex<State>,
    cv: Condvar,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<Timer> = OnceLock::new();
    TIMER.get_or_init(|| Timer {
        st: Mutex::new(State {
            heap: BinaryHeap::new(),
            tasks: HashMap::new(),
            next: 0,
            pid: 0,
            running: false,
        }),
        cv: Condvar::new(),
    })
}

fn lock() -> MutexGuard<'static, State> {
    timer().st.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the timer thread unless it runs in this process already. Fails only
/// if it could not be started (EAGAIN): nothing is logged here, so a caller
/// holding a job's lock can say why once it let go of it.
pub(crate) fn ensure_running() -> std::io::Result<()> {
    let mut st = lock();
    start_locked(&mut st)
}

fn start_locked(st: &mut State) -> std::io::Result<()> {
    let pid = std::process::id();
    if st.pid != pid {
        // A forked child without the fork handlers (a program that used only
        // the Rust API): the parent's timer thread does not exist here, and its
        // tasks belong to the parent's jobs.
        st.forget_parent(pid);
    }
    if !st.running {
        std::thread::Builder::new()
            .name("bgjob-timer".into())
            .stack_size(256 * 1024)
            .spawn(run)?;
        st.running = true;
    }
    Ok(())
}

impl State {
    fn forget_parent(&mut self, pid: u32) {
        self.heap.clear();
        std::mem::forget(std::mem::take(&mut self.tasks));
        self.running = false;
        self.pid = pid;
    }
}

/// Runs `task` on the timer thread at `at` (at once if it has passed), starting
/// the thread if needed. Fails only if it could not be started (EAGAIN); the
/// task is then dropped unrun. Nothing is logged.
pub(crate) fn schedule(
    at: Instant,
    task: impl FnOnce() + Send + 'static,
) -> std::io::Result<TimerId> {
    let mut st = lock();
    start_locked(&mut st)?;
    st.next += 1;
    let id = st.next;
    let earliest = st.heap.peek().map(|Reverse((t, _))| *t);
    st.heap.push(Reverse((at, id)));
    st.tasks.insert(id, Box::new(task));
    drop(st);
    if earliest.is_none_or(|e| at < e) {
        timer().cv.notify_one();
    }
    Ok(id)
}

/// The timer's lock, held across fork() (see `crate::ffi::fork`).
pub(crate) struct TimerHold(MutexGuard<'static, State>);

pub(crate) fn hold_for_fork() -> TimerHold {
    TimerHold(lock())
}

impl TimerHold {
    /// In the child: the timer thread does not exist there and the tasks are
    /// the parent's (never run, never dropped: their captures may be mid-use).
    /// The next [`ensure_running`] starts a thread of the child's own.
    pub(crate) fn forget_all(mut self) {
        self.0.forget_parent(std::process::id());
    }
}

/// Cancels a scheduled task. True if it had not started; its captures are
/// dropped (on this thread). False if it ran, is running, or is unknown.
pub(crate) fn cancel(id: TimerId) -> bool {
    let task = lock().tasks.remove(&id);
    let found = task.is_some();
    drop(task);
    found
}

fn run() {
    let t = timer();
    let mut st = lock();
    loop {
        let now = Instant::now();
        match st.heap.peek().copied() {
            Some(Reverse((at, id))) if at <= now => {
                st.heap.pop();
                if let Some(task) = st.tasks.remove(&id) {
                    drop(st);
                    task();
                    st = lock();
                }
            }
            Some(Reverse((at, _))) => {
                st =
                    t.cv.wait_timeout(st, at - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
            }
            None => {
                // Idle: wake now and then only to notice a fork'd-away parent
                // (cheap), otherwise sleep until something is scheduled.
                st =
                    t.cv.wait_timeout(st, Duration::from_secs(3600))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn tasks_run_in_due_order_and_cancelled_ones_never() {
        // A task due now holds the timer thread until every other task is
        // in place and one is cancelled: no stall of this thread can let
        // one run early (then all are overdue and run by due time).
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        let held = tx.clone();
        schedule(now, move || {
            gate_rx.recv().unwrap();
            held.send(0).unwrap()
        })
        .unwrap();
        for (ms, tag) in [(60u64, 3), (20, 1), (40, 2)] {
            let tx = tx.clone();
            schedule(now + Duration::from_millis(ms), move || {
                tx.send(tag).unwrap()
            })
            .unwrap();
        }
        let tx2 = tx.clone();
        let dropped = schedule(now + Duration::from_millis(30), move || {
            tx2.send(99).unwrap()
        })
        .unwrap();
        assert!(cancel(dropped));
        assert!(
            !cancel(dropped),
            "a cancelled task cannot be cancelled again"
        );
        drop(tx);
        gate_tx.send(()).unwrap();
        let got: Vec<i32> = rx.iter().collect();
        assert_eq!(got, vec![0, 1, 2, 3]);
    }
}

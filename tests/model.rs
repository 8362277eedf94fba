//! A model test of `bgjob::core`: proptest draws random sequences of verbs
//! (caller side and worker side), applies each to a real job and to a small
//! reference model of the state table and the outcome rules (docs/design.md), and
//! checks that every result and every snapshot agrees with the model. At the
//! end of each sequence the job is brought to its end and the exactly-once
//! rules are checked: one completion with the final state, the worker closure
//! dropped once, every hook called at most once and dropped once, results
//! dropped once unless taken.
//!
//! The worker is driven step by step over a channel, so every sequence is
//! deterministic: a step that parks the worker (a pause point while paused) is
//! answered only by the verb that releases it.

use bgjob::core::{
    CancelStatus, Context, Error, HookAdded, HookRemoved, Job, JobError, State, Verb, Worker,
    verb_allowed,
};
use proptest::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

/// How long an answer the model expects may take: only ever reached when the
/// library is broken (then shrinking meets it once per failing candidate, so
/// it is kept short enough for a failure to be reported in reasonable time).
const LONG: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug)]
enum Op {
    Start,
    Cancel,
    Pause,
    Resume,
    Release,
    Detach(bool),
    WaitZero,
    Info,
    SetTotal(u64),
    AddHook,
    RemoveHook(usize),
    TakeResult,
    // Worker side: only applied while the worker is running and not parked.
    PausePoint,
    Finish(i32),
    SetError(i32),
    SetResult,
    Return(i32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Start),
        2 => Just(Op::Cancel),
        2 => Just(Op::Pause),
        2 => Just(Op::Resume),
        1 => Just(Op::Release),
        1 => any::<bool>().prop_map(Op::Detach),
        1 => Just(Op::WaitZero),
        2 => Just(Op::Info),
        1 => (0u64..100).prop_map(Op::SetTotal),
        2 => Just(Op::AddHook),
        1 => (0usize..4).prop_map(Op::RemoveHook),
        1 => Just(Op::TakeResult),
        3 => Just(Op::PausePoint),
        1 => prop_oneof![Just(0), 1i32..5].prop_map(Op::Finish),
        1 => (-1i32..3).prop_map(Op::SetError),
        1 => Just(Op::SetResult),
        1 => prop_oneof![Just(0), 1i32..5, Just(125)].prop_map(Op::Return),
    ]
}

/// What the test asks the worker to do.
enum Cmd {
    PausePoint,
    Finish(i32),
    SetError(i32),
    SetResult(Counted),
    Return(i32),
}

/// Counts its drops (and, for hooks, its calls).
#[derive(Clone, Default)]
struct Counter(Arc<AtomicUsize>);

impl Counter {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
    fn bump(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

struct Counted(Counter);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.bump();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Created,
    Running,
    Done(State),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HookState {
    Registered,
    Ran,
    Removed,
    Dropped,
}

struct Hook {
    id: Option<u64>,
    state: HookState,
    calls: Counter,
    drops: Counter,
}

/// The reference model.
struct Model {
    life: Life,
    paused: bool,
    cancel: bool,
    /// Detached: a pause would never be undone, so it is refused.
    detached: bool,
    parked: bool,
    finish: Option<i32>,
    recorded_error: Option<i32>,
    error_code: i32,
    results_set: usize,
    result_present: bool,
    hooks: Vec<Hook>,
}

impl Model {
    fn state(&self) -> State {
        match self.life {
            Life::Created => State::Created,
            Life::Running if self.paused => State::Paused,
            Life::Running => State::Running,
            Life::Done(s) => s,
        }
    }

    fn terminal(&self) -> bool {
        matches!(self.life, Life::Done(_))
    }

    /// The end of a job: hooks nobody will call are dropped, a pause is undone.
    fn end(&mut self, state: State, error_code: i32) {
        self.life = Life::Done(state);
        self.paused = false;
        self.error_code = error_code;
        for h in &mut self.hooks {
            if h.state == HookState::Registered {
                h.state = HookState::Dropped;
            }
        }
    }

    /// Cancel's effect on every registered hook: each is called once.
    fn run_hooks(&mut self) {
        for h in &mut self.hooks {
            if h.state == HookState::Registered {
                h.state = HookState::Ran;
            }
        }
    }
}

/// The real job and what the test uses to drive and observe it.
struct Real {
    job: Job,
    ctx: Context,
    cmd: Sender<Cmd>,
    ack: Receiver<Result<(), Error>>,
    worker_drops: Counter,
    completions: Arc<std::sync::Mutex<Vec<State>>>,
    result_drops: Counter,
    results_taken: usize,
}

fn make() -> (Real, Model) {
    let (cmd_tx, cmd_rx) = channel::<Cmd>();
    let (ack_tx, ack_rx) = channel();
    let worker_drops = Counter::default();
    let guard = Counted(worker_drops.clone());
    let ctx = Context::new().expect("eventfd");
    let completions = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = completions.clone();
    let job = Job::builder()
        .name("model")
        .on_complete(Some(ctx.clone()), move |j| {
            seen.lock().unwrap().push(j.state());
        })
        .create(move |w: &Worker<'_>| {
            let _guard = &guard;
            loop {
                let reply = match cmd_rx.recv() {
                    Ok(Cmd::PausePoint) => w.pause_point(),
                    Ok(Cmd::Finish(s)) => w.job().finish(s),
                    Ok(Cmd::SetError(c)) => w.job().set_error(c, ""),
                    Ok(Cmd::SetResult(v)) => w.job().set_result(Box::new(v)),
                    Ok(Cmd::Return(0)) | Err(_) => return Ok(()),
                    Ok(Cmd::Return(rc)) => return Err(JobError::new(rc, "")),
                };
                if ack_tx.send(reply).is_err() {
                    return Ok(());
                }
            }
        });
    let real = Real {
        job,
        ctx,
        cmd: cmd_tx,
        ack: ack_rx,
        worker_drops,
        completions,
        result_drops: Counter::default(),
        results_taken: 0,
    };
    let model = Model {
        life: Life::Created,
        paused: false,
        cancel: false,
        detached: false,
        parked: false,
        finish: None,
        recorded_error: None,
        error_code: 0,
        results_set: 0,
        result_present: false,
        hooks: Vec::new(),
    };
    (real, model)
}

fn not_allowed(verb: Verb, m: &Model) -> Error {
    Error::NotAllowed {
        verb,
        state: m.state(),
    }
}

/// The worker's answer to a command it was given.
fn ack(r: &Real) -> Result<(), TestCaseError> {
    r.ack
        .recv_timeout(LONG)
        .map_err(|_| TestCaseError::fail("the worker did not answer"))?
        .map_err(|e| TestCaseError::fail(format!("worker step failed: {e}")))
}

/// A parked worker's pause point returns once it is resumed or cancelled.
fn unpark(r: &Real, m: &mut Model, want: Result<(), Error>) -> Result<(), TestCaseError> {
    if m.parked {
        m.parked = false;
        let got = r
            .ack
            .recv_timeout(LONG)
            .map_err(|_| TestCaseError::fail("a parked worker was not released"))?;
        prop_assert_eq!(got, want, "the parked pause point returned the wrong thing");
    }
    Ok(())
}

fn cancel(r: &Real, m: &mut Model) -> Result<(), TestCaseError> {
    let got = r.job.cancel();
    let want = match m.life {
        Life::Done(_) => CancelStatus::AlreadyFinished,
        _ if m.cancel => CancelStatus::AlreadyRequested,
        Life::Created => {
            m.cancel = true;
            m.run_hooks();
            let code = m.recorded_error.unwrap_or(0);
            m.end(State::Cancelled, code);
            CancelStatus::Requested
        }
        Life::Running => {
            m.cancel = true;
            m.paused = false;
            m.run_hooks();
            unpark(r, m, Err(Error::Cancelled))?;
            CancelStatus::Requested
        }
    };
    prop_assert_eq!(got, want);
    Ok(())
}

fn release(r: &Real, m: &mut Model) -> Result<(), TestCaseError> {
    let got = r.job.release();
    match m.life {
        Life::Created => {
            prop_assert_eq!(got, Ok(()));
            m.cancel = true;
            let code = m.recorded_error.unwrap_or(0);
            m.end(State::Cancelled, code);
        }
        Life::Done(_) => {
            prop_assert_eq!(got, Ok(()));
            m.result_present = false;
        }
        Life::Running => prop_assert_eq!(got, Err(not_allowed(Verb::Destroy, m))),
    }
    Ok(())
}

fn worker_return(r: &mut Real, m: &mut Model, rc: i32) -> Result<(), TestCaseError> {
    r.cmd.send(Cmd::Return(rc)).unwrap();
    let eff = m.finish.unwrap_or(rc);
    let (state, code) = if eff == 0 {
        (State::Completed, m.recorded_error.unwrap_or(0))
    } else if m.cancel {
        (State::Cancelled, m.recorded_error.unwrap_or(eff))
    } else {
        (State::Failed, m.recorded_error.unwrap_or(eff))
    };
    m.end(state, code);
    prop_assert_eq!(r.job.wait(Some(LONG)), Ok(state));
    prop_assert_eq!(
        r.worker_drops.get(),
        1,
        "closure not dropped before wait returned"
    );
    Ok(())
}

fn check_info(r: &Real, m: &Model) -> Result<(), TestCaseError> {
    let i = r.job.info();
    prop_assert_eq!(i.state, m.state());
    prop_assert_eq!(i.cancel_requested, m.cancel);
    prop_assert_eq!(i.pause_requested, m.paused);
    let code = if m.terminal() {
        m.error_code
    } else {
        m.recorded_error.unwrap_or(0)
    };
    prop_assert_eq!(i.error_code, code);
    prop_assert!((-1..=100).contains(&i.percent));
    if m.terminal() {
        prop_assert_eq!(i.remaining_ms, 0);
    }
    Ok(())
}

fn apply(r: &mut Real, m: &mut Model, op: Op) -> Result<(), TestCaseError> {
    let worker_ready = m.life == Life::Running && !m.parked;
    match op {
        Op::Start => {
            let got = r.job.start();
            if m.life == Life::Created {
                prop_assert_eq!(got, Ok(()));
                m.life = Life::Running;
            } else {
                prop_assert_eq!(got, Err(not_allowed(Verb::Start, m)));
            }
        }
        Op::Cancel => cancel(r, m)?,
        Op::Pause => {
            let got = r.job.pause();
            if m.life == Life::Running && !m.paused && !m.cancel && !m.detached {
                prop_assert_eq!(got, Ok(()));
                m.paused = true;
            } else {
                prop_assert_eq!(got, Err(not_allowed(Verb::Pause, m)));
            }
        }
        Op::Resume => {
            let got = r.job.resume();
            if m.life == Life::Running && m.paused {
                prop_assert_eq!(got, Ok(()));
                m.paused = false;
                unpark(r, m, Ok(()))?;
            } else {
                prop_assert_eq!(got, Err(not_allowed(Verb::Resume, m)));
            }
        }
        Op::Release => release(r, m)?,
        Op::Detach(with_cancel) => {
            if m.life == Life::Created {
                prop_assert_eq!(r.job.detach(with_cancel), Err(not_allowed(Verb::Detach, m)));
                return Ok(());
            }
            // Detach is a release (terminal), or a cancel, or an unpause.
            let terminal = m.terminal();
            m.detached = true;
            if !with_cancel && m.paused {
                m.paused = false;
            }
            prop_assert_eq!(r.job.detach(with_cancel), Ok(()));
            if terminal {
                m.result_present = false;
            } else if with_cancel {
                let want = if m.cancel {
                    CancelStatus::AlreadyRequested
                } else {
                    CancelStatus::Requested
                };
                m.cancel = true;
                m.paused = false;
                m.run_hooks();
                unpark(r, m, Err(Error::Cancelled))?;
                // A second cancel reports what the first did.
                let again = r.job.cancel();
                prop_assert_eq!(again, CancelStatus::AlreadyRequested, "first: {:?}", want);
            } else {
                unpark(r, m, Ok(()))?;
            }
        }
        Op::WaitZero => {
            let got = r.job.wait(Some(Duration::ZERO));
            match m.life {
                Life::Done(s) => prop_assert_eq!(got, Ok(s)),
                _ => prop_assert_eq!(got, Err(Error::TimedOut)),
            }
        }
        Op::Info => check_info(r, m)?,
        Op::SetTotal(n) => {
            let got = r.job.set_total(n);
            if verb_allowed(Verb::Update, m.state()) {
                prop_assert_eq!(got, Ok(()));
                prop_assert_eq!(r.job.info().total, n);
            } else {
                prop_assert_eq!(got, Err(not_allowed(Verb::Update, m)));
            }
        }
        Op::AddHook => {
            let calls = Counter::default();
            let drops = Counter::default();
            let (c, d) = (calls.clone(), Counted(drops.clone()));
            let got = r.job.add_cancel_hook(move |_| {
                let _d = &d;
                c.bump();
            });
            let (id, state) = match got {
                Ok(HookAdded::Registered(id)) => {
                    prop_assert!(!m.terminal() && !m.cancel, "registered on {:?}", m.life);
                    (Some(id), HookState::Registered)
                }
                Ok(HookAdded::RanAtOnce) => {
                    prop_assert!(!m.terminal() && m.cancel, "ran at once on {:?}", m.life);
                    (None, HookState::Ran)
                }
                Err(e) => {
                    prop_assert!(m.terminal(), "refused: {}", e);
                    prop_assert_eq!(e, not_allowed(Verb::Update, m));
                    (None, HookState::Dropped)
                }
            };
            m.hooks.push(Hook {
                id,
                state,
                calls,
                drops,
            });
        }
        Op::RemoveHook(i) => {
            let Some(h) = m.hooks.get_mut(i) else {
                return Ok(());
            };
            let Some(id) = h.id else { return Ok(()) };
            let got = r.job.remove_cancel_hook(id);
            if h.state == HookState::Registered {
                prop_assert_eq!(got, HookRemoved::Removed);
                h.state = HookState::Removed;
            } else {
                prop_assert_eq!(got, HookRemoved::NotFound);
            }
        }
        Op::TakeResult => {
            let got = r.job.take_result();
            if m.terminal() {
                let v = got.map_err(|e| TestCaseError::fail(format!("take_result: {e}")))?;
                prop_assert_eq!(v.is_some(), m.result_present);
                if let Some(v) = v {
                    let Ok(mut counted) = v.downcast::<Counted>() else {
                        return Err(TestCaseError::fail("someone else's result"));
                    };
                    r.results_taken += 1;
                    // Ours now: its drop is not bgjob freeing it.
                    counted.0 = Counter::default();
                }
                m.result_present = false;
            } else {
                prop_assert!(got.is_err());
                prop_assert_eq!(got.err(), Some(not_allowed(Verb::Result, m)));
            }
        }
        Op::PausePoint if worker_ready => {
            r.cmd.send(Cmd::PausePoint).unwrap();
            if m.paused && !m.cancel {
                // Parked: no answer until a resume or cancel. A worker that did
                // not park would answer at once; a parked one never does here.
                m.parked = true;
                match r.ack.recv_timeout(Duration::from_millis(2)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    other => prop_assert!(false, "a paused worker did not park: {:?}", other),
                }
            } else {
                let want = if m.cancel {
                    Err(Error::Cancelled)
                } else {
                    Ok(())
                };
                let got = r
                    .ack
                    .recv_timeout(LONG)
                    .map_err(|_| TestCaseError::fail("no answer"))?;
                prop_assert_eq!(got, want);
            }
        }
        Op::Finish(s) if worker_ready => {
            r.cmd.send(Cmd::Finish(s)).unwrap();
            ack(r)?;
            m.finish = Some(s);
        }
        Op::SetError(c) if worker_ready => {
            r.cmd.send(Cmd::SetError(c)).unwrap();
            let got = r
                .ack
                .recv_timeout(LONG)
                .map_err(|_| TestCaseError::fail("no answer"))?;
            if c == 0 {
                prop_assert!(matches!(got, Err(Error::InvalidArgument(_))));
            } else {
                prop_assert_eq!(got, Ok(()));
                m.recorded_error = Some(c);
            }
        }
        Op::SetResult if worker_ready => {
            r.cmd
                .send(Cmd::SetResult(Counted(r.result_drops.clone())))
                .unwrap();
            ack(r)?;
            m.results_set += 1;
            m.result_present = true;
        }
        Op::Return(rc) if worker_ready => worker_return(r, m, rc)?,
        // A worker step while the worker is not there to take it.
        Op::PausePoint | Op::Finish(_) | Op::SetError(_) | Op::SetResult | Op::Return(_) => {}
    }
    Ok(())
}

/// Ends the job whatever state the sequence left it in, then checks the
/// exactly-once rules.
fn finish_and_check(mut r: Real, mut m: Model) -> Result<(), TestCaseError> {
    match m.life {
        Life::Created => release(&r, &mut m)?,
        Life::Running => {
            if m.paused {
                prop_assert_eq!(r.job.resume(), Ok(()));
                m.paused = false;
                unpark(&r, &mut m, Ok(()))?;
            }
            worker_return(&mut r, &mut m, 125)?;
        }
        Life::Done(_) => {}
    }
    check_info(&r, &m)?;
    let Life::Done(end) = m.life else {
        unreachable!("ended above")
    };
    prop_assert_eq!(r.job.wait(Some(LONG)), Ok(end));
    // The completion was queued when the job ended; it runs here, once.
    prop_assert_eq!(r.ctx.dispatch(0), Ok(1));
    prop_assert_eq!(r.ctx.dispatch(0), Ok(0));
    prop_assert_eq!(r.completions.lock().unwrap().clone(), vec![end]);
    prop_assert_eq!(r.worker_drops.get(), 1);
    prop_assert_eq!(r.job.release(), Ok(()));
    prop_assert_eq!(
        r.result_drops.get() + r.results_taken,
        m.results_set,
        "every result dropped once or taken"
    );
    for (i, h) in m.hooks.iter().enumerate() {
        let want_calls = usize::from(h.state == HookState::Ran);
        prop_assert_eq!(
            h.calls.get(),
            want_calls,
            "hook {} ({:?}) calls",
            i,
            h.state
        );
        prop_assert_eq!(h.drops.get(), 1, "hook {} ({:?}) drops", i, h.state);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    })]

    #[test]
    fn verbs_follow_the_model(ops in proptest::collection::vec(op(), 0..40)) {
        let (mut r, mut m) = make();
        for op in ops {
            apply(&mut r, &mut m, op)?;
            check_info(&r, &m)?;
        }
        finish_and_check(r, m)?;
    }
}

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
//!
//! Besides the plain verbs it covers the intricate rules: internal pauses
//! (counted, balanced, invisible in the state), I/O error reports under each
//! error policy (a STOP is a user pause with an error status that resume
//! resets), manual finalize (a successful job waits in PENDING for finalize,
//! cancel or detach), transactions (a member whose work is done waits in
//! WAITING for its sibling, then both in PENDING under manual finalize; a
//! sibling's failure cancels it), and QEMU's ready model: set_ready (RUNNING
//! → READY, PAUSED → STANDBY), complete (READY only), soft cancel (READY and
//! STANDBY: no hooks; a later force cancel calls them).

use bgjob::core::{
    CancelCause, CancelStatus, Context, Error, ErrorAction, ErrorPolicy, HookAdded, HookRemoved,
    IoStatus, Job, JobError, State, Txn, Verb, Worker, verb_allowed,
};
use proptest::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

/// How long an answer the model expects may take: only ever reached when the
/// library is broken (then shrinking meets it once per failing candidate, so
/// it is kept short enough for a failure to be reported in reasonable time,
/// and long enough for a loaded 2-core machine running tests in parallel).
const LONG: Duration = Duration::from_secs(15);

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
    PauseInternal,
    ResumeInternal,
    SetPolicy(ErrorPolicy),
    Finalize,
    SetReady,
    Complete,
    CancelSoft,
    /// The transaction sibling's worker returns (0: success).
    SiblingReturn(i32),
    // Worker side: only applied while the worker is running and not parked.
    PausePoint,
    Finish(i32),
    SetError(i32),
    SetResult,
    Return(i32),
    IoError(i32),
}

fn policy() -> impl Strategy<Value = ErrorPolicy> {
    prop_oneof![
        Just(ErrorPolicy::Report),
        Just(ErrorPolicy::Ignore),
        Just(ErrorPolicy::Stop),
        Just(ErrorPolicy::Enospc),
    ]
}

/// How a sequence's job is made.
#[derive(Clone, Copy, Debug)]
struct Setup {
    manual_finalize: bool,
    policy: ErrorPolicy,
    /// A member of a transaction with one sibling (started with it).
    in_txn: bool,
}

fn setup() -> impl Strategy<Value = Setup> {
    (any::<bool>(), policy(), any::<bool>()).prop_map(|(manual_finalize, policy, in_txn)| Setup {
        manual_finalize,
        policy,
        in_txn,
    })
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
        2 => Just(Op::PauseInternal),
        2 => Just(Op::ResumeInternal),
        1 => policy().prop_map(Op::SetPolicy),
        2 => Just(Op::Finalize),
        2 => Just(Op::SetReady),
        2 => Just(Op::Complete),
        2 => Just(Op::CancelSoft),
        1 => prop_oneof![Just(0), Just(7)].prop_map(Op::SiblingReturn),
        3 => Just(Op::PausePoint),
        1 => prop_oneof![Just(0), 1i32..5].prop_map(Op::Finish),
        1 => (-1i32..3).prop_map(Op::SetError),
        1 => Just(Op::SetResult),
        1 => prop_oneof![Just(0), 1i32..5, Just(125)].prop_map(Op::Return),
        2 => prop_oneof![Just(5), Just(28)].prop_map(Op::IoError),
    ]
}

/// What the test asks the worker to do.
enum Cmd {
    PausePoint,
    Finish(i32),
    SetError(i32),
    SetResult(Counted),
    Return(i32),
    IoError(i32),
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
    /// The worker has returned; a manual finalize or the sibling is awaited.
    Waiting,
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
    /// Internal pauses in force.
    internal: u32,
    policy: ErrorPolicy,
    iostatus: IoStatus,
    manual_finalize: bool,
    cause: CancelCause,
    /// The transaction sibling: `None` without a transaction; its life else.
    sibling: Option<Life>,
    /// The group has aborted (a member failed or was cancelled): its
    /// members that had succeeded end CANCELLED.
    group_aborted: bool,
    /// The sibling has been asked to cancel (the group aborted).
    sibling_cancel: bool,
    /// The sibling's own outcome once its worker returned.
    sibling_outcome: Option<State>,
    /// A finalize was asked of the transaction (or a member was detached).
    finalize_requested: bool,
    /// The outcome the worker returned with, while WAITING.
    pending: Option<(State, i32)>,
    finish: Option<i32>,
    recorded_error: Option<i32>,
    error_code: i32,
    results_set: usize,
    result_present: bool,
    hooks: Vec<Hook>,
    /// set_ready was called while the worker ran.
    ready: bool,
    complete_requested: bool,
    /// The cancel request is a soft one.
    soft: bool,
}

impl Model {
    fn state(&self) -> State {
        match self.life {
            Life::Created => State::Created,
            Life::Running => match (self.ready, self.paused) {
                (false, false) => State::Running,
                (false, true) => State::Paused,
                (true, false) => State::Ready,
                (true, true) => State::Standby,
            },
            Life::Waiting if self.group_done() => State::Pending,
            Life::Waiting => State::Waiting,
            Life::Done(s) => s,
        }
    }

    /// Every member's work is done and succeeded, and a manual finalize is
    /// awaited (a job on its own waits only for that).
    fn group_done(&self) -> bool {
        match self.sibling {
            None => true,
            Some(Life::Waiting) => !self.group_aborted,
            Some(_) => false,
        }
    }

    /// The sibling's state as the model sees it.
    fn sibling_state(&self) -> Option<State> {
        self.sibling.map(|l| match l {
            Life::Running => State::Running,
            Life::Waiting if self.life == Life::Waiting && self.group_done() => State::Pending,
            Life::Waiting => State::Waiting,
            Life::Created => State::Created,
            Life::Done(s) => s,
        })
    }

    /// A pause point parks: a user or an internal pause, and no cancel.
    fn parks(&self) -> bool {
        (self.paused || self.internal > 0) && !self.cancel
    }

    /// The user pause ends; the error status goes with it.
    fn unpause(&mut self) {
        self.paused = false;
        self.iostatus = IoStatus::Ok;
    }

    /// The worker's work is over (returned, or never will run): hooks nobody
    /// will call are dropped, a user pause is undone.
    fn work_over(&mut self) {
        self.unpause();
        for h in &mut self.hooks {
            if h.state == HookState::Registered {
                h.state = HookState::Dropped;
            }
        }
    }

    fn terminal(&self) -> bool {
        matches!(self.life, Life::Done(_))
    }

    /// The end of a job: hooks nobody will call are dropped, a pause is undone.
    fn end(&mut self, state: State, error_code: i32) {
        self.work_over();
        self.life = Life::Done(state);
        self.internal = 0;
        self.pending = None;
        self.error_code = error_code;
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

/// A worker step's answer: an error action for an I/O error report.
type Reply = Result<Option<ErrorAction>, Error>;

/// The real job and what the test uses to drive and observe it.
struct Real {
    job: Job,
    ctx: Context,
    cmd: Sender<Cmd>,
    ack: Receiver<Reply>,
    worker_drops: Counter,
    completions: Arc<std::sync::Mutex<Vec<State>>>,
    result_drops: Counter,
    results_taken: usize,
    commits: Counter,
    aborts: Counter,
    cleans: Counter,
    /// The transaction's other member and what makes its worker return.
    sibling: Option<(Job, Sender<i32>)>,
    _txn: Option<Txn>,
}

fn make(setup: Setup) -> (Real, Model) {
    let (cmd_tx, cmd_rx) = channel::<Cmd>();
    let (ack_tx, ack_rx) = channel();
    let worker_drops = Counter::default();
    let guard = Counted(worker_drops.clone());
    let ctx = Context::new().expect("eventfd");
    let completions = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = completions.clone();
    let (commits, aborts, cleans) = (Counter::default(), Counter::default(), Counter::default());
    let (c1, c2, c3) = (commits.clone(), aborts.clone(), cleans.clone());
    let job = Job::builder()
        .name("model")
        .manual_finalize(setup.manual_finalize)
        .error_policy(setup.policy)
        .on_commit(move |_| c1.bump())
        .on_abort(move |_| c2.bump())
        .on_clean(move |_| c3.bump())
        .on_complete(Some(ctx.clone()), move |j| {
            seen.lock().unwrap().push(j.state());
        })
        .create(move |w: &Worker<'_>| {
            let _guard = &guard;
            loop {
                let reply = match cmd_rx.recv() {
                    Ok(Cmd::PausePoint) => w.pause_point().map(|()| None),
                    Ok(Cmd::Finish(s)) => w.job().finish(s).map(|()| None),
                    Ok(Cmd::SetError(c)) => w.job().set_error(c, "").map(|()| None),
                    Ok(Cmd::SetResult(v)) => w.job().set_result(Box::new(v)).map(|()| None),
                    Ok(Cmd::IoError(c)) => w.job().report_io_error(c, "io").map(Some),
                    Ok(Cmd::Return(0)) | Err(_) => return Ok(()),
                    Ok(Cmd::Return(rc)) => return Err(JobError::new(rc, "")),
                };
                if ack_tx.send(reply).is_err() {
                    return Ok(());
                }
            }
        });
    let (sibling, txn) = if setup.in_txn {
        let txn = Txn::new(setup.manual_finalize);
        let (tx, rx) = channel::<i32>();
        let sib = Job::builder()
            .name("sibling")
            .create(move |_| match rx.recv() {
                Ok(0) | Err(_) => Ok(()),
                Ok(rc) => Err(JobError::new(rc, "")),
            });
        txn.add(&job).expect("add the job");
        txn.add(&sib).expect("add the sibling");
        sib.start().expect("start the sibling");
        (Some((sib, tx)), Some(txn))
    } else {
        (None, None)
    };
    let real = Real {
        job,
        ctx,
        cmd: cmd_tx,
        ack: ack_rx,
        worker_drops,
        completions,
        result_drops: Counter::default(),
        results_taken: 0,
        commits,
        aborts,
        cleans,
        sibling,
        _txn: txn,
    };
    let model = Model {
        life: Life::Created,
        paused: false,
        cancel: false,
        detached: false,
        parked: false,
        internal: 0,
        policy: setup.policy,
        iostatus: IoStatus::Ok,
        manual_finalize: setup.manual_finalize,
        cause: CancelCause::None,
        sibling: setup.in_txn.then_some(Life::Running),
        sibling_cancel: false,
        sibling_outcome: None,
        group_aborted: false,
        finalize_requested: false,
        pending: None,
        finish: None,
        recorded_error: None,
        error_code: 0,
        results_set: 0,
        result_present: false,
        hooks: Vec::new(),
        ready: false,
        complete_requested: false,
        soft: false,
    };
    (real, model)
}

fn not_allowed(verb: Verb, m: &Model) -> Error {
    Error::NotAllowed {
        verb,
        state: m.state(),
    }
}

fn recv(r: &Real, what: &str) -> Result<Reply, TestCaseError> {
    r.ack
        .recv_timeout(LONG)
        .map_err(|_| TestCaseError::fail(format!("the worker did not answer ({what})")))
}

/// The worker's answer to a command it was given.
fn ack(r: &Real) -> Result<(), TestCaseError> {
    recv(r, "step")?
        .map(drop)
        .map_err(|e| TestCaseError::fail(format!("worker step failed: {e}")))
}

/// A parked worker's pause point returns once it is resumed or cancelled.
fn unpark(r: &Real, m: &mut Model, want: Result<(), Error>) -> Result<(), TestCaseError> {
    if m.parked {
        m.parked = false;
        let got = recv(r, "a parked worker was not released")?.map(drop);
        prop_assert_eq!(got, want, "the parked pause point returned the wrong thing");
    }
    Ok(())
}

/// Unparks the worker if nothing holds it any more.
fn unpark_if_free(r: &Real, m: &mut Model) -> Result<(), TestCaseError> {
    if !m.parks() {
        unpark(r, m, Ok(()))?;
    }
    Ok(())
}

/// The main job's worker is over with `outcome` (returned, or cancelled
/// before it ran): alone it ends, unless a success waits for a manual
/// finalize; in the transaction it waits for its sibling, and any end but
/// success aborts the group.
fn main_done(r: &Real, m: &mut Model, outcome: State, code: i32) -> Result<(), TestCaseError> {
    m.work_over();
    if m.sibling.is_none() {
        if outcome == State::Completed && m.manual_finalize {
            m.life = Life::Waiting;
            m.pending = Some((outcome, code));
        } else {
            m.end(outcome, code);
        }
        return Ok(());
    }
    m.life = Life::Waiting;
    m.pending = Some((outcome, code));
    if outcome != State::Completed {
        abort_group(r, m, true)?;
    }
    try_settle(m);
    Ok(())
}

/// The group aborts (once): the other member is cancelled with cause
/// TRANSACTION.
fn abort_group(r: &Real, m: &mut Model, by_main: bool) -> Result<(), TestCaseError> {
    if m.group_aborted {
        return Ok(());
    }
    m.group_aborted = true;
    if by_main {
        if m.sibling == Some(Life::Running) {
            m.sibling_cancel = true;
        }
        return Ok(());
    }
    // The sibling's end cancels the main job (a soft cancel becomes force).
    if !m.terminal() && m.cancel && m.soft && m.life == Life::Running {
        m.soft = false;
        m.run_hooks();
    }
    if m.terminal() || m.cancel {
        return Ok(());
    }
    match m.life {
        Life::Created => {
            m.cancel = true;
            m.cause = CancelCause::Transaction;
            m.run_hooks();
            let code = m.recorded_error.unwrap_or(0);
            main_done(r, m, State::Cancelled, code)?;
        }
        Life::Running => {
            m.cancel = true;
            m.cause = CancelCause::Transaction;
            m.unpause();
            m.run_hooks();
            unpark(r, m, Err(Error::Cancelled))?;
        }
        // Its work is done: the settle below cancels it.
        Life::Waiting | Life::Done(_) => {}
    }
    Ok(())
}

/// Settles the transaction once both members' work is done and nothing holds
/// it back (an abort never waits; a success waits for a manual finalize).
fn try_settle(m: &mut Model) {
    let (Some((outcome, code)), Some(Life::Waiting)) = (m.pending, m.sibling) else {
        return;
    };
    if !(m.group_aborted || !m.manual_finalize || m.finalize_requested) {
        return;
    }
    let sib = m.sibling_outcome.unwrap_or(State::Cancelled);
    m.sibling = Some(Life::Done(if !m.group_aborted {
        State::Completed
    } else if sib == State::Failed {
        State::Failed
    } else {
        State::Cancelled
    }));
    if !m.group_aborted {
        let code = m.recorded_error.unwrap_or(0);
        m.end(State::Completed, code);
    } else if outcome == State::Completed {
        m.cancel = true;
        if m.cause == CancelCause::None {
            m.cause = CancelCause::Transaction;
        }
        m.end(State::Cancelled, 125);
    } else {
        m.end(outcome, code);
    }
}

/// Cancel's effect on the model (`cause` if it is the first request).
fn cancel_model(
    r: &Real,
    m: &mut Model,
    cause: CancelCause,
) -> Result<CancelStatus, TestCaseError> {
    Ok(match m.life {
        Life::Done(_) => CancelStatus::AlreadyFinished,
        // A force cancel after a soft one: soft cleared, the hooks called.
        Life::Running if m.cancel && m.soft => {
            m.soft = false;
            m.run_hooks();
            CancelStatus::Requested
        }
        _ if m.cancel => CancelStatus::AlreadyRequested,
        Life::Created => {
            m.cancel = true;
            m.cause = cause;
            m.run_hooks();
            let code = m.recorded_error.unwrap_or(0);
            main_done(r, m, State::Cancelled, code)?;
            CancelStatus::Requested
        }
        Life::Running => {
            m.cancel = true;
            m.cause = cause;
            m.unpause();
            m.run_hooks();
            unpark(r, m, Err(Error::Cancelled))?;
            CancelStatus::Requested
        }
        Life::Waiting => {
            m.cancel = true;
            m.cause = cause;
            if m.sibling.is_none() {
                m.end(State::Cancelled, 125);
            } else {
                abort_group(r, m, true)?;
                try_settle(m);
            }
            CancelStatus::Requested
        }
    })
}

fn cancel(r: &Real, m: &mut Model) -> Result<(), TestCaseError> {
    let got = r.job.cancel();
    let want = cancel_model(r, m, CancelCause::Caller)?;
    prop_assert_eq!(got, want);
    Ok(())
}

fn release(r: &Real, m: &mut Model) -> Result<(), TestCaseError> {
    let got = r.job.release();
    match m.life {
        Life::Created => {
            prop_assert_eq!(got, Ok(()));
            m.cancel = true;
            m.cause = CancelCause::Caller;
            let code = m.recorded_error.unwrap_or(0);
            main_done(r, m, State::Cancelled, code)?;
        }
        Life::Done(_) => {
            prop_assert_eq!(got, Ok(()));
            m.result_present = false;
        }
        Life::Running | Life::Waiting => {
            prop_assert_eq!(got, Err(not_allowed(Verb::Destroy, m)))
        }
    }
    Ok(())
}

/// Waits until what another thread (the sibling's worker, ending the group
/// or cancelling this job) does is visible as the model says: the state, the
/// cancel request, the hooks the cancel called.
fn settled(r: &Real, m: &Model) -> Result<(), TestCaseError> {
    let until = std::time::Instant::now() + LONG;
    loop {
        let i = r.job.info();
        let sib = r.sibling.as_ref().map(|(s, _)| s.state());
        let sib_want = m.sibling_state();
        let hooks = m
            .hooks
            .iter()
            .all(|h| h.state != HookState::Ran || h.calls.get() == 1);
        if i.state == m.state() && i.cancel_requested == m.cancel && sib == sib_want && hooks {
            return Ok(());
        }
        if std::time::Instant::now() > until {
            return Err(TestCaseError::fail(format!(
                "never settled: job {:?} (model {:?}), sibling {:?} (model {:?})",
                i.state,
                m.state(),
                sib,
                sib_want
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
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
    main_done(r, m, state, code)?;
    settled(r, m)?;
    prop_assert_eq!(
        r.worker_drops.get(),
        1,
        "closure not dropped before the worker's end was seen"
    );
    Ok(())
}

fn sibling_return(r: &Real, m: &mut Model, rc: i32) -> Result<(), TestCaseError> {
    let Some((_, tx)) = &r.sibling else {
        return Ok(());
    };
    if m.sibling != Some(Life::Running) {
        return Ok(());
    }
    tx.send(rc).unwrap();
    let outcome = match (rc, m.sibling_cancel) {
        (0, _) => State::Completed,
        (_, true) => State::Cancelled,
        (_, false) => State::Failed,
    };
    m.sibling = Some(Life::Waiting);
    m.sibling_outcome = Some(outcome);
    if outcome != State::Completed {
        abort_group(r, m, false)?;
    }
    try_settle(m);
    settled(r, m)
}

fn check_info(r: &Real, m: &Model) -> Result<(), TestCaseError> {
    let i = r.job.info();
    prop_assert_eq!(i.state, m.state());
    prop_assert_eq!(i.cancel_requested, m.cancel);
    prop_assert_eq!(i.cancel_cause, m.cause);
    prop_assert_eq!(i.pause_requested, m.paused);
    prop_assert_eq!(i.pause_count, m.internal);
    prop_assert_eq!(i.iostatus, m.iostatus);
    prop_assert_eq!(i.error_policy, m.policy);
    prop_assert_eq!(i.complete_requested, m.complete_requested);
    prop_assert_eq!(i.cancel_soft, m.soft);
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

fn detach(r: &Real, m: &mut Model, with_cancel: bool) -> Result<(), TestCaseError> {
    if m.life == Life::Created {
        prop_assert_eq!(r.job.detach(with_cancel), Err(not_allowed(Verb::Detach, m)));
        return Ok(());
    }
    let got = r.job.detach(with_cancel);
    prop_assert_eq!(got, Ok(()));
    if m.terminal() {
        // Detaching an ended job releases it.
        m.result_present = false;
        return Ok(());
    }
    // Nobody could resume, balance or finalize it any more.
    m.detached = true;
    m.manual_finalize = false;
    if !with_cancel {
        m.unpause();
        m.internal = 0;
        unpark(r, m, Ok(()))?;
    }
    if m.sibling.is_some() {
        m.finalize_requested = true;
        try_settle(m);
    }
    if with_cancel {
        cancel_model(r, m, CancelCause::Caller)?;
    }
    if m.life == Life::Waiting {
        finalize_model(m);
    }
    settled(r, m)?;
    // A second cancel reports what the first did (or the end).
    cancel(r, m)
}

/// A finalize of a WAITING job: alone it ends as its work did (commit on
/// success); in the transaction it asks for the group to be finalized.
fn finalize_model(m: &mut Model) {
    if m.sibling.is_some() {
        m.finalize_requested = true;
        try_settle(m);
        return;
    }
    match m.pending {
        Some((State::Completed, _)) => {
            let code = m.recorded_error.unwrap_or(0);
            m.end(State::Completed, code);
        }
        Some((s, code)) => m.end(s, code),
        None => m.end(State::Cancelled, m.recorded_error.unwrap_or(0)),
    }
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
        Op::Cancel => {
            cancel(r, m)?;
            settled(r, m)?;
        }
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
                m.unpause();
                unpark_if_free(r, m)?;
            } else {
                prop_assert_eq!(got, Err(not_allowed(Verb::Resume, m)));
            }
        }
        Op::PauseInternal => {
            let got = r.job.pause_internal();
            if verb_allowed(Verb::Drain, m.state()) {
                prop_assert_eq!(got, Ok(()));
                m.internal += 1;
            } else {
                prop_assert_eq!(got, Err(not_allowed(Verb::Drain, m)));
            }
        }
        Op::ResumeInternal => {
            let got = r.job.resume_internal();
            if verb_allowed(Verb::Drain, m.state()) && m.internal > 0 {
                prop_assert_eq!(got, Ok(()));
                m.internal -= 1;
                unpark_if_free(r, m)?;
            } else {
                prop_assert_eq!(got, Err(not_allowed(Verb::Drain, m)));
            }
        }
        Op::SetPolicy(p) => {
            let got = r.job.set_error_policy(p);
            if verb_allowed(Verb::Update, m.state()) {
                prop_assert_eq!(got, Ok(()));
                m.policy = p;
            } else {
                prop_assert_eq!(got, Err(not_allowed(Verb::Update, m)));
            }
        }
        Op::Finalize => {
            let got = r.job.finalize();
            if m.life == Life::Waiting {
                prop_assert_eq!(got, Ok(()));
                finalize_model(m);
                settled(r, m)?;
            } else {
                prop_assert_eq!(got, Err(not_allowed(Verb::Finalize, m)));
            }
        }
        Op::SetReady => {
            let got = r.job.set_ready();
            if m.life == Life::Running {
                prop_assert_eq!(got, Ok(()));
                m.ready = true;
            } else {
                prop_assert_eq!(got, Err(not_allowed(Verb::Update, m)));
            }
        }
        Op::Complete => {
            let got = r.job.complete();
            if m.state() == State::Ready && !m.cancel && m.internal == 0 {
                prop_assert_eq!(got, Ok(()));
                m.complete_requested = true;
            } else {
                prop_assert_eq!(got, Err(not_allowed(Verb::Complete, m)));
            }
        }
        Op::CancelSoft => {
            let got = r.job.cancel_soft();
            let want = match m.state() {
                State::Ready | State::Standby if m.cancel => CancelStatus::AlreadyRequested,
                State::Ready | State::Standby => {
                    // No hooks: they abort what the worker waits on.
                    m.cancel = true;
                    m.soft = true;
                    m.cause = CancelCause::Caller;
                    m.unpause();
                    unpark(r, m, Err(Error::Cancelled))?;
                    CancelStatus::Requested
                }
                _ => cancel_model(r, m, CancelCause::Caller)?,
            };
            prop_assert_eq!(got, want);
            settled(r, m)?;
        }
        Op::SiblingReturn(rc) => sibling_return(r, m, rc)?,
        Op::Release => release(r, m)?,
        Op::Detach(with_cancel) => detach(r, m, with_cancel)?,
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
            let working = matches!(m.life, Life::Created | Life::Running);
            let (id, state) = match got {
                // A soft cancel keeps hooks for a later force cancel.
                Ok(HookAdded::Registered(id)) => {
                    prop_assert!(
                        working && (!m.cancel || m.soft),
                        "registered on {:?}",
                        m.life
                    );
                    (Some(id), HookState::Registered)
                }
                Ok(HookAdded::RanAtOnce) => {
                    prop_assert!(
                        working && m.cancel && !m.soft,
                        "ran at once on {:?}",
                        m.life
                    );
                    (None, HookState::Ran)
                }
                Err(e) => {
                    prop_assert!(!working, "refused: {}", e);
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
            if m.parks() {
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
                let got = recv(r, "pause point")?.map(drop);
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
            let got = recv(r, "set_error")?;
            if c == 0 {
                prop_assert!(matches!(got, Err(Error::InvalidArgument(_))));
            } else {
                prop_assert_eq!(got, Ok(None));
                m.recorded_error = Some(c);
            }
        }
        Op::IoError(c) if worker_ready => {
            r.cmd.send(Cmd::IoError(c)).unwrap();
            let got = recv(r, "report_io_error")?;
            let stop = match m.policy {
                ErrorPolicy::Report => Some(false),
                ErrorPolicy::Ignore => None,
                ErrorPolicy::Stop => Some(true),
                ErrorPolicy::Enospc => Some(c == 28),
            };
            let want = match stop {
                None => ErrorAction::Ignore,
                // A stop is a user pause with an error status, unless the job
                // is being cancelled or is detached (nobody could resume it).
                Some(true) if !m.cancel && !m.detached => {
                    m.paused = true;
                    m.iostatus = if c == 28 {
                        IoStatus::NoSpace
                    } else {
                        IoStatus::Failed
                    };
                    ErrorAction::Stop
                }
                Some(_) => {
                    m.recorded_error = Some(c);
                    ErrorAction::Report
                }
            };
            prop_assert_eq!(got, Ok(Some(want)));
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
        Op::PausePoint
        | Op::Finish(_)
        | Op::SetError(_)
        | Op::SetResult
        | Op::Return(_)
        | Op::IoError(_) => {}
    }
    Ok(())
}

/// Ends the job whatever state the sequence left it in, then checks the
/// exactly-once rules.
fn finish_and_check(mut r: Real, mut m: Model) -> Result<(), TestCaseError> {
    for _ in 0..8 {
        match m.life {
            Life::Created => release(&r, &mut m)?,
            Life::Running => {
                if m.paused {
                    prop_assert_eq!(r.job.resume(), Ok(()));
                    m.unpause();
                }
                while m.internal > 0 {
                    prop_assert_eq!(r.job.resume_internal(), Ok(()));
                    m.internal -= 1;
                }
                unpark(&r, &mut m, Ok(()))?;
                worker_return(&mut r, &mut m, 125)?;
            }
            Life::Waiting if m.sibling == Some(Life::Running) => sibling_return(&r, &mut m, 0)?,
            Life::Waiting => {
                prop_assert_eq!(r.job.finalize(), Ok(()));
                finalize_model(&mut m);
                settled(&r, &m)?;
            }
            Life::Done(_) => break,
        }
    }
    check_info(&r, &m)?;
    let Life::Done(end) = m.life else {
        return Err(TestCaseError::fail(format!("never ended: {:?}", m.life)));
    };
    prop_assert_eq!(r.job.wait(Some(LONG)), Ok(end));
    // The completion was queued when the job ended; it runs here, once.
    prop_assert_eq!(r.ctx.dispatch(0), Ok(1));
    prop_assert_eq!(r.ctx.dispatch(0), Ok(0));
    prop_assert_eq!(r.completions.lock().unwrap().clone(), vec![end]);
    prop_assert_eq!(r.worker_drops.get(), 1);
    // Commit exactly when it completed, abort otherwise; clean once.
    let completed = usize::from(end == State::Completed);
    prop_assert_eq!(r.commits.get(), completed, "commit calls");
    prop_assert_eq!(r.aborts.get(), 1 - completed, "abort calls");
    prop_assert_eq!(r.cleans.get(), 1, "clean calls");
    if let (Some((sib, _)), Some(Life::Done(want))) = (&r.sibling, m.sibling) {
        prop_assert_eq!(sib.wait(Some(LONG)), Ok(want), "the sibling's end");
    }
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
    fn verbs_follow_the_model(
        setup in setup(),
        ops in proptest::collection::vec(op(), 0..40),
    ) {
        let (mut r, mut m) = make(setup);
        for op in ops {
            apply(&mut r, &mut m, op)?;
            check_info(&r, &m)?;
        }
        finish_and_check(r, m)?;
    }
}

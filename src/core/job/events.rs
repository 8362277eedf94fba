//! Events: every change of a job's state, the I/O errors its worker reports,
//! READY and the end, delivered in order to the job's event callback
//! ([`Builder::on_event`]).
//!
//! Detection is in one place: the guard of the job's lock ([`StGuard`]) reads
//! the state when the lock is taken and again when it is let go, and on a
//! change queues an event in the job's own queue while still holding the lock,
//! so the queue's order (and its `seq` numbers) is the order of the changes.
//! Delivery happens with no lock held: through the job's context (one drain
//! posted like a completion), or, without one, on the thread that let go of
//! the lock — unless another thread is delivering the job's events right now,
//! which then delivers these too (one deliverer at a time per job, so events
//! are never reordered). A completion first delivers whatever events are
//! still queued (waiting for a deliverer busy on another thread), so the END
//! event always comes before it.
//!
//! The queue is bounded: past [`QUEUE_BOUND`] queued events a state change
//! merges into the state change queued last (old state of the first, new
//! state of the last, `coalesced` counting the merges). I/O-error, READY and
//! END events are never merged or dropped.

use super::*;
use crate::sys::tls::{self, Word};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};

/// Queued events per job past which consecutive state changes merge.
pub const QUEUE_BOUND: usize = 64;

/// What an [`Event`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The state changed from `old_state` to `new_state`.
    StateChanged,
    /// The worker reported an I/O error ([`Job::report_io_error`]); `action`
    /// and `error_code` say which and what the error policy made of it.
    IoError,
    /// The job became ready (right after the state change into the ready
    /// state).
    Ready,
    /// The job ended in `new_state`; the last event, before the completion.
    End,
    /// The owner said a forwarded verb failed ([`Job::control_failed`]);
    /// `error_code` is its code.
    ControlFailed,
}

/// One event, as the callback gets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The state before (for an I/O error or READY: the state it happened in).
    pub old_state: State,
    /// The state after (for END: the terminal state).
    pub new_state: State,
    /// For an I/O error: what the worker was told to do.
    pub action: Option<ErrorAction>,
    /// For an I/O error: its code; 0 otherwise.
    pub error_code: i32,
    /// Per job, from 1, one per change; a merged event carries the number of
    /// the last change it holds, so `seq` grows by `coalesced + 1`.
    pub seq: u64,
    /// How many further state changes were merged into this one.
    pub coalesced: u32,
}

/// The event callback: called with the job and each event, in order.
pub type EventFn = Box<dyn Fn(&Job, &Event) + Send + Sync + 'static>;

/// Whether `s` is the ready state (added by another part of the state
/// machine; named, not matched, so this compiles with or without it).
fn is_ready(s: State) -> bool {
    s.name() == "ready"
}

/// A job's event queue and callback, in its [`St`].
pub(super) struct Events {
    job: Weak<Inner>,
    /// Until the END event was taken for delivery (or the events were
    /// dropped): the last clone dropped frees the callback's captures.
    sink: Option<Arc<EventFn>>,
    context: Option<Context>,
    queue: VecDeque<Event>,
    seq: u64,
    /// A thread is delivering this job's events now.
    delivering: bool,
    /// A drain is queued on the context.
    posted: bool,
    /// END was queued (or the events were dropped): nothing more is queued.
    ended: bool,
}

impl Events {
    pub(super) fn new(job: Weak<Inner>, context: Option<Context>, f: EventFn) -> Events {
        Events {
            job,
            sink: Some(Arc::new(f)),
            context,
            queue: VecDeque::new(),
            seq: 0,
            delivering: false,
            posted: false,
            ended: false,
        }
    }

    fn push(
        &mut self,
        kind: EventKind,
        old: State,
        new: State,
        action: Option<ErrorAction>,
        code: i32,
    ) {
        if self.ended {
            return;
        }
        self.seq += 1;
        if kind == EventKind::StateChanged
            && self.queue.len() >= QUEUE_BOUND
            && let Some(last) = self.queue.back_mut()
            && last.kind == EventKind::StateChanged
        {
            last.new_state = new;
            last.seq = self.seq;
            last.coalesced = last.coalesced.saturating_add(1);
            return;
        }
        self.queue.push_back(Event {
            kind,
            old_state: old,
            new_state: new,
            action,
            error_code: code,
            seq: self.seq,
            coalesced: 0,
        });
    }

    /// Queues what a change from `old` to `new` means.
    pub(super) fn changed(&mut self, old: State, new: State) {
        if old == new {
            return;
        }
        self.push(EventKind::StateChanged, old, new, None, 0);
        if is_ready(new) {
            self.push(EventKind::Ready, old, new, None, 0);
        }
        if new.is_terminal() {
            self.push(EventKind::End, old, new, None, 0);
            self.ended = true;
        }
    }

    /// Queues an I/O-error report made in state `state`.
    pub(super) fn io_error(&mut self, state: State, action: ErrorAction, code: i32) {
        self.push(EventKind::IoError, state, state, Some(action), code);
    }

    /// Queues a control failure reported in state `state`.
    pub(super) fn control_failed(&mut self, state: State, code: i32) {
        self.push(EventKind::ControlFailed, state, state, None, code);
    }

    /// Drops the queue and the callback (taken out, to be dropped by the
    /// caller with no lock held): nothing will be delivered any more.
    pub(super) fn close(&mut self) -> Option<Arc<EventFn>> {
        self.ended = true;
        self.queue.clear();
        self.sink.take()
    }
}

/// What to do once the job's lock is let go.
enum Deliver {
    Nothing,
    /// This thread delivers the job's events.
    Here(Job),
    /// A drain was posted: signal the context.
    Wake(super::super::context::Wake),
    /// The context was closed: drop the drain and the callback.
    Drop(Box<dyn FnOnce() + Send>, Option<Arc<EventFn>>),
}

/// After a hold of the lock: queue the change seen (`before` is the state
/// at the start of the hold, if the job had events then) and decide who
/// delivers.
fn after_hold(st: &mut St, before: Option<State>) -> Deliver {
    // A job without an event callback (most jobs; every getinfo takes this
    // lock) pays no state computation here.
    if st.events.is_none() {
        return Deliver::Nothing;
    }
    let now = st.state();
    let Some(ev) = st.events.as_mut() else {
        return Deliver::Nothing;
    };
    if let Some(b) = before {
        ev.changed(b, now);
    }
    if ev.queue.is_empty() || ev.delivering {
        return Deliver::Nothing;
    }
    let Some(inner) = ev.job.upgrade() else {
        return Deliver::Nothing;
    };
    let job = Job(inner);
    match ev.context.clone() {
        None => {
            ev.delivering = true;
            Deliver::Here(job)
        }
        Some(_) if ev.posted => Deliver::Nothing,
        Some(ctx) => {
            let unrun = Unrun(Some(job.clone()));
            let drain: Box<dyn FnOnce() + Send> = Box::new(move || {
                let mut unrun = unrun;
                if let Some(job) = unrun.0.take() {
                    if let Some(e) = job.0.raw_lock().events.as_mut() {
                        e.posted = false;
                    }
                    job.deliver_pending_events();
                }
            });
            match ctx.post(drain) {
                Ok(w) => {
                    ev.posted = true;
                    Deliver::Wake(w)
                }
                Err(drain) => Deliver::Drop(drain, ev.close()),
            }
        }
    }
}

/// A drain dropped unrun (its context was closed): the job's events will
/// never be delivered, so the queue and the callback go now.
struct Unrun(Option<Job>);

impl Drop for Unrun {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            let sink = job.0.raw_lock().events.as_mut().and_then(Events::close);
            drop(sink);
        }
    }
}

// How many job locks (and [`DeferScope`]s) this thread holds, and whether
// DEFERRED has anything, are words of `sys::tls` (`Word::LocksHeld`,
// `Word::EventsDeferred`): every hold of a job's lock counts itself, and a
// `thread_local!` in a shared library costs a `__tls_get_addr` call per
// access (on a worker's cold end path, several of them).
thread_local! {
    /// Jobs whose events this thread must deliver once it holds no lock.
    static DEFERRED: RefCell<Vec<Job>> = const { RefCell::new(Vec::new()) };
    /// Jobs whose events this thread is delivering now (innermost last), each
    /// with what must run once its queue is empty: a completion that came due
    /// inside one of its event callbacks (an external job ended from it).
    static DRAINING: RefCell<Vec<(usize, Vec<AfterEvents>)>> = const { RefCell::new(Vec::new()) };
}

/// Work that must follow a job's events (its completion).
pub(super) type AfterEvents = Box<dyn FnOnce() + Send>;

fn job_key(job: &Job) -> usize {
    Arc::as_ptr(&job.0) as usize
}

/// Leaves the deliverer's role of `job` on this thread and runs what waited
/// for its events, with no lock held.
fn end_drain(job: &Job) {
    let key = job_key(job);
    let after = DRAINING.with(|d| {
        let mut d = d.borrow_mut();
        match d.iter().rposition(|e| e.0 == key) {
            Some(i) => d.remove(i).1,
            None => Vec::new(),
        }
    });
    for f in after {
        f();
    }
}

fn enter() {
    let words = tls::this_thread();
    words.write(Word::LocksHeld, words.read(Word::LocksHeld) + 1);
}

/// Leaves one hold; at the outermost, delivers what was deferred.
fn leave() {
    let words = tls::this_thread();
    let n = words.read(Word::LocksHeld).saturating_sub(1);
    words.write(Word::LocksHeld, n);
    if n == 0 && words.read(Word::EventsDeferred) != 0 {
        loop {
            let next = DEFERRED.with(|d| {
                let mut d = d.borrow_mut();
                let next = d.pop();
                if d.is_empty() {
                    // Delivering `next` may defer more: set again then.
                    tls::this_thread().write(Word::EventsDeferred, 0);
                }
                next
            });
            match next {
                Some(job) => drain(&job),
                None => break,
            }
        }
    }
}

/// Keeps `job`'s events for this thread to deliver once it holds no lock.
fn defer(job: Job) {
    DEFERRED.with(|d| d.borrow_mut().push(job));
    tls::this_thread().write(Word::EventsDeferred, 1);
}

/// Holds back the delivery of events on this thread until dropped (for a
/// step that must finish before user code runs, e.g. waking a new worker).
pub(super) struct DeferScope(());

impl DeferScope {
    pub(super) fn enter() -> DeferScope {
        enter();
        DeferScope(())
    }
}

impl Drop for DeferScope {
    fn drop(&mut self) {
        leave();
    }
}

/// The guard of a job's lock: derefs to [`St`]; on release queues the state
/// change the hold made and delivers (see the module docs).
///
/// It also publishes the job's status line ([`super::info`]) as the lock is
/// let go (and before a wait lets go of it), if the hold asked for the state
/// mutably: every change made under the lock is visible to a lock-free
/// getinfo before anyone else can take the lock.
pub(super) struct StGuard<'a> {
    g: Option<MutexGuard<'a, St>>,
    before: Option<State>,
    status: &'a super::info::StatusLine,
    /// The hold took `&mut St`: the status line may need a new version.
    dirty: bool,
}

impl<'a> StGuard<'a> {
    pub(super) fn new(g: MutexGuard<'a, St>, status: &'a super::info::StatusLine) -> StGuard<'a> {
        enter();
        let before = g.events.as_ref().map(|_| g.state());
        StGuard {
            g: Some(g),
            before,
            status,
            dirty: false,
        }
    }

    /// Takes the guard out, publishing the status line first if the hold
    /// may have changed it (the lock is still held).
    fn finish(&mut self) -> Option<MutexGuard<'a, St>> {
        let g = self.g.take()?;
        if self.dirty {
            self.status.publish(&super::info::Status::of(&g));
        }
        Some(g)
    }
}

impl Deref for StGuard<'_> {
    type Target = St;
    fn deref(&self) -> &St {
        self.g.as_ref().expect("a live guard")
    }
}

impl DerefMut for StGuard<'_> {
    fn deref_mut(&mut self) -> &mut St {
        self.dirty = true;
        self.g.as_mut().expect("a live guard")
    }
}

impl Drop for StGuard<'_> {
    fn drop(&mut self) {
        let Some(mut g) = self.finish() else {
            return;
        };
        let deliver = after_hold(&mut g, self.before);
        drop(g);
        match deliver {
            Deliver::Nothing => {}
            Deliver::Here(job) => defer(job),
            Deliver::Wake(w) => drop(w),
            Deliver::Drop(drain, sink) => {
                drop(drain);
                drop(sink);
            }
        }
        leave();
    }
}

/// The job's condition variable, waited on with an [`StGuard`]: the change
/// made before the wait is queued first, and the hold after the wait starts
/// from the state found then.
pub(super) struct JobSignal(pub(super) Signal);

impl JobSignal {
    pub(super) fn new() -> JobSignal {
        JobSignal(Signal::new())
    }

    pub(super) fn notify_all(&self) {
        self.0.notify_all();
    }

    fn pre_wait<'a>(guard: StGuard<'a>) -> (MutexGuard<'a, St>, &'a super::info::StatusLine) {
        let mut guard = guard;
        let status = guard.status;
        let before = guard.before;
        let mut g = guard.finish().expect("a live guard");
        if let Some(b) = before {
            let now = g.state();
            if let Some(ev) = g.events.as_mut() {
                ev.changed(b, now);
            }
        }
        // The hold continues after the wait: no leave() here, the guard
        // rebuilt afterwards takes over the count.
        std::mem::forget(guard);
        (g, status)
    }

    fn post_wait<'a>(g: MutexGuard<'a, St>, status: &'a super::info::StatusLine) -> StGuard<'a> {
        let before = g.events.as_ref().map(|_| g.state());
        StGuard {
            g: Some(g),
            before,
            status,
            dirty: false,
        }
    }

    pub(super) fn wait<'a>(&self, guard: StGuard<'a>) -> std::sync::LockResult<StGuard<'a>> {
        let (g, status) = JobSignal::pre_wait(guard);
        let g = self.0.wait(g).unwrap_or_else(|e| e.into_inner());
        Ok(JobSignal::post_wait(g, status))
    }

    pub(super) fn wait_timeout<'a>(
        &self,
        guard: StGuard<'a>,
        timeout: Duration,
    ) -> std::sync::LockResult<(StGuard<'a>, super::super::sync::WaitTimeoutResult)> {
        let (g, status) = JobSignal::pre_wait(guard);
        let (g, r) = self
            .0
            .wait_timeout(g, timeout)
            .unwrap_or_else(|e| e.into_inner());
        Ok((JobSignal::post_wait(g, status), r))
    }
}

/// Delivers `job`'s queued events on this thread, the caller having made
/// itself the deliverer; then lets go of that role.
fn drain(job: &Job) {
    DRAINING.with(|d| d.borrow_mut().push((job_key(job), Vec::new())));
    loop {
        let (ev, sink, last) = {
            let mut st = job.0.raw_lock();
            let Some(events) = st.events.as_mut() else {
                drop(st);
                end_drain(job);
                return;
            };
            match events.queue.pop_front() {
                None => {
                    events.delivering = false;
                    drop(st);
                    job.0.cv.notify_all();
                    end_drain(job);
                    return;
                }
                Some(ev) => {
                    let sink = events.sink.clone();
                    let last = if ev.kind == EventKind::End {
                        events.sink.take()
                    } else {
                        None
                    };
                    (ev, sink, last)
                }
            }
        };
        if let Some(sink) = &sink {
            // A panicking Rust callback must not stop the events after it.
            let _ = catch_unwind(AssertUnwindSafe(|| sink(job, &ev)));
        }
        // After the last call: the callback's captures (C: its userdata's
        // free function) go with the last clone.
        drop(sink);
        drop(last);
    }
}

impl Inner {
    /// The job's lock without event detection (for the event machinery
    /// itself, which changes no state).
    pub(super) fn raw_lock(&self) -> MutexGuard<'_, St> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Job {
    /// Runs `f` once this job's queued events (END included) have been
    /// delivered: at once after delivering them here, or — when this thread
    /// is delivering them right now, `f` being due inside one of the job's
    /// event callbacks — right after that delivery ends, on this thread
    /// (waiting for itself would hang).
    pub(super) fn after_events(&self, f: AfterEvents) {
        let key = job_key(self);
        let f = DRAINING.with(|d| {
            let mut d = d.borrow_mut();
            match d.iter_mut().rev().find(|e| e.0 == key) {
                Some(e) => {
                    e.1.push(f);
                    None
                }
                None => Some(f),
            }
        });
        if let Some(f) = f {
            self.deliver_pending_events();
            f();
        }
    }

    /// Delivers every event still queued for this job on this thread (or
    /// waits while another thread delivers them). A completion calls it
    /// first, so END comes before it.
    pub(super) fn deliver_pending_events(&self) {
        let mut st = self.0.raw_lock();
        loop {
            let Some(events) = st.events.as_mut() else {
                return;
            };
            if events.delivering {
                st = self.0.cv.0.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            if events.queue.is_empty() {
                return;
            }
            events.delivering = true;
            drop(st);
            drain(self);
            st = self.0.raw_lock();
        }
    }

    /// Events queued for this job and not yet delivered.
    pub fn queued_events(&self) -> usize {
        self.0
            .raw_lock()
            .events
            .as_ref()
            .map_or(0, |e| e.queue.len())
    }
}

impl St {
    /// Queues an I/O-error event (if the job has an event callback).
    pub(super) fn io_error_event(&mut self, action: ErrorAction, code: i32) {
        let state = self.state();
        if let Some(ev) = self.events.as_mut() {
            ev.io_error(state, action, code);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;

    type Seen = Arc<std::sync::Mutex<Vec<Event>>>;

    fn recorder(seen: &Seen) -> impl Fn(&Job, &Event) + Send + Sync + 'static {
        let seen = seen.clone();
        move |_, ev| seen.lock().unwrap().push(*ev)
    }

    fn kinds(seen: &Seen) -> Vec<(EventKind, State, State)> {
        seen.lock()
            .unwrap()
            .iter()
            .map(|e| (e.kind, e.old_state, e.new_state))
            .collect()
    }

    #[test]
    fn run_pause_resume_end_in_order_before_the_completion() {
        use EventKind::*;
        use State::*;
        let seen: Seen = Arc::default();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let done = Arc::new(AtomicBool::new(false));
        let (s2, d2) = (seen.clone(), done.clone());
        let job = Job::builder()
            .on_event(None, recorder(&seen))
            .on_complete(None, move |_| {
                // END was delivered before this.
                assert_eq!(s2.lock().unwrap().last().map(|e| e.kind), Some(End));
                d2.store(true, Ordering::SeqCst);
            })
            .create(move |w| {
                go_rx.recv().unwrap();
                w.pause_point()?;
                Ok(())
            });
        job.start().unwrap();
        job.pause().unwrap();
        job.resume().unwrap();
        go_tx.send(()).unwrap();
        assert_eq!(job.wait(None), Ok(Completed));
        while !done.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        assert_eq!(
            kinds(&seen),
            vec![
                (StateChanged, Created, Running),
                (StateChanged, Running, Paused),
                (StateChanged, Paused, Running),
                (StateChanged, Running, Waiting),
                (StateChanged, Waiting, Completed),
                (End, Waiting, Completed),
            ]
        );
        let seqs: Vec<u64> = seen.lock().unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn undispatched_context_coalesces_state_changes_and_keeps_the_end() {
        let ctx = Context::new().unwrap();
        let seen: Seen = Arc::default();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let job = Job::builder()
            .on_event(Some(ctx.clone()), recorder(&seen))
            .create(move |_| {
                go_rx.recv().unwrap();
                Ok(())
            });
        job.start().unwrap();
        for _ in 0..1000 {
            job.pause().unwrap();
            job.resume().unwrap();
        }
        assert!(job.queued_events() <= QUEUE_BOUND);
        go_tx.send(()).unwrap();
        job.wait(None).unwrap();
        assert!(
            job.queued_events() <= QUEUE_BOUND + 1,
            "END is never merged"
        );
        ctx.dispatch(0).unwrap();
        let evs = seen.lock().unwrap().clone();
        assert_eq!(evs.last().unwrap().kind, EventKind::End);
        let merged: u32 = evs.iter().map(|e| e.coalesced).sum();
        // 2000 pause/resume + start + waiting + completed + END.
        assert_eq!(evs.len() as u64 + u64::from(merged), 2004);
        let mut prev: Option<&Event> = None;
        for e in &evs {
            if let Some(p) = prev {
                assert_eq!(e.seq, p.seq + 1 + u64::from(e.coalesced));
                if e.kind == EventKind::StateChanged {
                    assert_eq!(e.old_state, p.new_state);
                }
            }
            prev = Some(e);
        }
    }

    /// Events deferred under nested holds (two jobs' changes, one job
    /// changed twice) come once each, in each job's order, only once the
    /// outermost hold is let go, with no hold counted while they run; one
    /// job's event callback that changes the other job delivers that change
    /// too; two jobs deferred together are both delivered. Fails when
    /// `defer` does not set `Word::EventsDeferred`, when `leave` delivers at
    /// an inner hold's end, or when it stops after one job.
    #[test]
    fn deferred_events_come_once_in_order_after_the_outermost_hold() {
        use State::*;
        type Seen = Arc<std::sync::Mutex<Vec<(char, State, State, usize)>>>;
        let seen: Seen = Arc::default();
        let record = |tag: char, seen: &Seen| {
            let seen = seen.clone();
            move |_: &Job, ev: &Event| {
                let held = tls::this_thread().read(Word::LocksHeld);
                let mut s = seen.lock().unwrap();
                s.push((tag, ev.old_state, ev.new_state, held));
            }
        };
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (go_b_tx, go_b_rx) = mpsc::channel::<()>();
        let b = Job::builder()
            .on_event(None, record('b', &seen))
            .create(move |_| {
                go_b_rx.recv().unwrap();
                Ok(())
            });
        // A's callback resumes B when A pauses: B's change is delivered
        // by the same outermost release.
        let (b2, rec_a) = (b.clone(), record('a', &seen));
        let a = Job::builder()
            .on_event(None, move |j, ev| {
                rec_a(j, ev);
                if ev.new_state == Paused {
                    b2.resume().unwrap();
                }
            })
            .create(move |_| {
                go_rx.recv().unwrap();
                Ok(())
            });
        a.start().unwrap();
        b.start().unwrap();
        seen.lock().unwrap().clear();
        let outer = DeferScope::enter();
        {
            let _inner = DeferScope::enter();
            b.pause().unwrap();
            a.pause().unwrap();
        }
        assert!(
            seen.lock().unwrap().is_empty(),
            "nothing delivered while a hold is left"
        );
        a.resume().unwrap();
        assert!(seen.lock().unwrap().is_empty());
        drop(outer);
        let got = seen.lock().unwrap().clone();
        let of = |tag| {
            got.iter()
                .filter(|e| e.0 == tag)
                .map(|e| (e.1, e.2))
                .collect::<Vec<_>>()
        };
        assert_eq!(of('a'), vec![(Running, Paused), (Paused, Running)]);
        assert_eq!(of('b'), vec![(Running, Paused), (Paused, Running)]);
        assert!(
            got.iter().all(|e| e.3 == 0),
            "no hold while they ran: {got:?}"
        );
        assert_eq!(tls::this_thread().read(Word::EventsDeferred), 0);
        // Two jobs deferred at once whose callbacks call nothing: the
        // outermost release delivers both (none waits for a later hold).
        let (go_c_tx, go_c_rx) = mpsc::channel::<()>();
        let c = Job::builder()
            .on_event(None, record('c', &seen))
            .create(move |_| {
                go_c_rx.recv().unwrap();
                Ok(())
            });
        c.start().unwrap();
        seen.lock().unwrap().clear();
        let outer = DeferScope::enter();
        b.pause().unwrap();
        c.pause().unwrap();
        drop(outer);
        let got: Vec<_> = seen.lock().unwrap().drain(..).collect();
        let mut tags: Vec<char> = got.iter().map(|e| e.0).collect();
        tags.sort_unstable();
        assert_eq!(tags, vec!['b', 'c'], "each once: {got:?}");
        b.resume().unwrap();
        c.resume().unwrap();
        go_tx.send(()).unwrap();
        go_b_tx.send(()).unwrap();
        go_c_tx.send(()).unwrap();
        assert_eq!(a.wait(None), Ok(Completed));
        assert_eq!(b.wait(None), Ok(Completed));
        assert_eq!(c.wait(None), Ok(Completed));
    }

    #[test]
    fn the_callback_is_dropped_once_after_the_end_or_on_discard() {
        struct D(Arc<std::sync::atomic::AtomicUsize>);
        impl Drop for D {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let drops = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let d = D(drops.clone());
        let job = Job::builder()
            .on_event(None, move |_, _| {
                let _ = &d;
            })
            .create(|_| Ok(()));
        job.discard();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        drop(job);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
}

//! Worker threads.
//!
//! Every running job has its own OS thread, named after the job. A thread whose job
//! ended waits a short while for the next one, so a burst of short jobs does not pay
//! a thread start each. Without a cap a job is never queued behind another: when no
//! idle thread with the right stack size is free, a new thread is started at once.
//! With a cap ([`Pool::set_max_running`]) at most that many jobs run their workers
//! at once; later ones wait in a FIFO queue and a thread whose job ended takes the
//! next one straight from it (GLib's GThreadPool and QEMU's thread pool work the
//! same way). A failed thread start (EAGAIN) is returned to the caller, who leaves
//! nothing behind.
//!
//! A burst of short jobs must not pay a futex wake and a context switch per
//! job. Work handed to threads goes through a ready queue per stack size (a
//! "lane"), and a parked thread is woken only if no thread is already awake
//! to take it (Go's and Tokio's rule): the woken thread is the lane's
//! searcher; a searcher that takes a task wakes the next idle thread only if
//! more is ready. A thread whose job just ended takes ready work too, but
//! only work no searcher is on its way to: a task a searcher was woken for is
//! that searcher's, so two jobs started together never end up one after the
//! other on one thread. The promise above still holds: a task enters a lane
//! only if the lane has a thread running no job for it ([`Lane::free`]),
//! else a new thread is started for it at submit time, so every ready task is
//! backed by a thread of its own and never waits for a job to end. An idle
//! thread also looks for a wake a short while ([`SPIN_FOR`], at most one such
//! thread per CPU but one) before it parks, and a waker prefers it: waking it
//! is a store, no system call.
//!
//! A job whose worker ended on a pool thread settles the thread's task from
//! inside it ([`settle_task_now`]): the thread lists itself idle or takes its
//! next work, then the job signals its context (and wakes its waiters) and,
//! listed idle, yields the CPU: the dispatcher that signal wakes most often
//! shares the thread's CPU, so it runs at once and finds the thread idle for
//! the job it starts next. What is left of the task (its return, the drops
//! of what it captured) runs after that, off the dispatcher's path.
//!
//! Once many threads live, the futex hash is enlarged ([`FUTEX_HASH_STEPS`]):
//! since Linux 6.16 a process has a private hash sized by its CPUs, and ten
//! thousand jobs blocked in their own waits would share its few chains.

use crate::core::atomic::AtomicBool;
use std::collections::VecDeque;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
// The hand-off is loom's under --cfg loom (`make loom` models it).
#[cfg(loom)]
use loom::thread::{Thread, current as current_thread, park, yield_now};
#[cfg(not(loom))]
use std::thread::{Thread, current as current_thread, park, yield_now};
use std::time::{Duration, Instant};

mod census;
mod settle;
#[cfg(test)]
pub(crate) use census::{FUTEX_HASH_STEPS, grow_futex_hash, set_futex_hash};
use census::{LiveThread, start_looking, stop_looking};
pub(crate) use settle::{release_cap_slot_now, settle_task_now, task_settled_early};

/// An idle thread keeps the last job's name this long before it renames itself
/// "bgjob-idle": a burst of jobs with one name renames nothing.
const IDLE_NAME_AFTER: Duration = Duration::from_millis(50);

/// How long a thread whose job ended looks for its next one before it parks.
/// A burst hands jobs out faster than this; an idle thread costs this much CPU
/// (mostly in sched_yield, which gives way to any thread that wants the CPU)
/// once per job, then nothing.
pub(crate) const SPIN_FOR: Duration = Duration::from_micros(50);

/// How often an idle thread tries again to start a queued task no thread
/// could be started for (`Pool::requeue`).
const STRANDED_RETRY: Duration = Duration::from_millis(20);

/// How long a thread past `max_idle` stays idle by default
/// ([`PoolConfig::linger`]).
pub const LINGER: Duration = Duration::from_millis(50);

/// How many of the last listed idle threads a waker checks for one still
/// looking for work.
const LOOKING_SCAN: usize = 8;

/// The largest worker stack a job may ask for (1 GiB); std cannot start a
/// thread with an unrepresentable stack size and panics instead of failing.
pub const MAX_STACK_SIZE: usize = 1 << 30;

/// A unit of work for one thread.
pub(crate) type Task = Box<dyn FnOnce() + Send + 'static>;

/// Names a task waiting in a capped pool's queue (see [`Pool::withdraw`]).
pub(crate) type Ticket = u64;

/// How the pool keeps idle threads, and how many tasks it runs at once.
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    /// How long a thread whose job ended waits for another before it exits.
    pub keep_alive: Duration,
    /// At most this many idle threads are kept; the others exit once they
    /// found no work for `linger` (at once when it is zero).
    pub max_idle: usize,
    /// How long a thread past `max_idle` waits for work before it exits:
    /// back-to-back bursts larger than `max_idle` then reuse their threads
    /// instead of starting new ones on the submitter's time.
    pub linger: Duration,
    /// At most this many capped tasks (job workers) run at once; 0 = no cap.
    pub max_running: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            keep_alive: Duration::from_secs(5),
            max_idle: 256,
            linger: LINGER,
            max_running: 0,
        }
    }
}

/// A task with the thread name and stack size it wants.
struct Work {
    name: String,
    stack_size: usize,
    task: Task,
}

/// Ready work: the work, and whether it holds a cap slot.
type Message = (Work, bool);

/// Why an idle thread is woken: to take the oldest ready work of its lane
/// (the thread was made the lane's searcher).
pub(crate) struct Wake;

/// Where an idle thread waits to be woken: a one-message slot and the thread
/// to unpark (no allocation per wake; one futex wake if the thread is
/// parked, none while it still looks for work).
///
/// Why no wake is lost: the message is stored and `full` set under the
/// slot's lock, then the thread is unparked. A looking thread that sees `full`
/// takes the message under the lock; one that stops looking takes under the
/// lock too before it parks, and an unpark that comes after that take leaves
/// the park token set, so the park returns at once. `make loom` checks it
/// (`pool_handoff_*` in loom_tests.rs).
pub(crate) struct Handoff {
    slot: crate::core::sync::Mutex<Option<Wake>>,
    /// Whether `slot` holds a message; changed under its lock, read without
    /// it by a thread looking for work (a hint: the slot decides).
    full: AtomicBool,
    /// Whether the thread is looking for work now (in `spin`): a waker
    /// prefers it, as waking it is a store.
    looking: AtomicBool,
    thread: Thread,
}

impl Handoff {
    fn new() -> Handoff {
        Handoff {
            slot: crate::core::sync::Mutex::new(None),
            full: AtomicBool::new(false),
            looking: AtomicBool::new(false),
            thread: current_thread(),
        }
    }

    /// Stores the message and unparks the thread: a system call only if it
    /// is parked, none while it looks for work (`spin`).
    fn send(&self, message: Wake) {
        {
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            *slot = Some(message);
            self.full.store(true, Ordering::Release);
        }
        self.thread.unpark();
    }

    fn take(&self) -> Option<Wake> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        self.full.store(false, Ordering::Relaxed);
        slot.take()
    }

    /// Looks for a message for up to `budget`, without parking: true once one
    /// is there. Spins briefly, then yields the CPU between looks, so on a
    /// busy (or single) CPU the thread that will send gets to run.
    fn spin(&self, budget: Duration) -> bool {
        let start = Instant::now();
        let mut looks = 0u32;
        self.looking.store(true, Ordering::Relaxed);
        loop {
            if self.full.load(Ordering::Acquire) {
                self.looking.store(false, Ordering::Relaxed);
                return true;
            }
            looks += 1;
            // Under loom a look is a yield and the budget two looks: a model
            // must end, and time does not pass there.
            if cfg!(loom) {
                yield_now();
                if looks >= 2 {
                    self.looking.store(false, Ordering::Relaxed);
                    return false;
                }
            } else if looks == 1 {
                // The CPU first goes to whoever the job's end woke here (its
                // context's dispatcher, most often: a wake-up lands on the
                // waker's CPU), then the look goes on.
                yield_now();
            } else if looks < 64 {
                std::hint::spin_loop();
            } else {
                yield_now();
                if looks.is_multiple_of(8) && start.elapsed() >= budget {
                    self.looking.store(false, Ordering::Relaxed);
                    return false;
                }
            }
        }
    }

    /// Waits for a message until `deadline` (`None`: forever).
    fn recv(&self, deadline: Option<Instant>) -> Option<Wake> {
        loop {
            if let Some(message) = self.take() {
                return Some(message);
            }
            match deadline {
                None => park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    #[cfg(loom)]
                    park();
                    #[cfg(not(loom))]
                    std::thread::park_timeout(d - now);
                }
            }
        }
    }
}

/// For `make loom`: a hand-off as a pool thread uses it.
#[cfg(all(loom, test))]
impl Handoff {
    /// The calling thread's hand-off.
    pub(crate) fn for_model() -> Handoff {
        Handoff::new()
    }

    /// Whether the thread says it looks for work now.
    pub(crate) fn is_looking_for_model(&self) -> bool {
        self.looking.load(Ordering::Relaxed)
    }

    /// A waker making the thread its lane's searcher (as `deliver` does).
    pub(crate) fn wake_for_model(&self) {
        self.send(Wake);
    }

    /// The idle thread: looks for a wake, then parks until it comes (as
    /// `thread_main` does, without the keep-alive).
    pub(crate) fn wait_for_model(&self) {
        self.spin(SPIN_FOR);
        let Wake = self.recv(None).expect("woken without a wake");
    }
}

struct Idle {
    id: u64,
    handoff: Arc<Handoff>,
}

/// The threads of one stack size that run no job, and the work handed to
/// them. Each ready task is backed by one of them:
/// `idle.len() + searching >= ready.len() + reserved` always holds, and while work is ready a
/// searcher is awake (or being woken) to take it, so no task waits for a job
/// to end. The first `searching` ready tasks are the searchers': a thread
/// whose job ended takes only those after them.
struct Lane {
    stack_size: usize,
    /// Handed-over tasks, oldest first.
    ready: VecDeque<Message>,
    /// Parked (or still looking) threads, last listed last.
    idle: Vec<Idle>,
    /// Threads woken to take ready work, not yet back in the lock.
    searching: usize,
    /// Tasks promised a thread of this lane whose `Launch` is not dropped yet.
    reserved: usize,
}

impl Lane {
    /// Threads of the lane not yet promised to a task.
    fn free(&self) -> usize {
        (self.idle.len() + self.searching).saturating_sub(self.ready.len() + self.reserved)
    }

    /// The idle thread to wake for ready work no searcher is on its way to,
    /// if any: the caller wakes it after letting go of the lock. A parked
    /// thread only when no searcher is awake at all (one at a time drains
    /// the lane, each waking the next); a thread still looking for work
    /// whenever work is left over, as waking it costs no system call.
    fn searcher_to_wake(&mut self) -> Option<Arc<Handoff>> {
        if self.ready.len() <= self.searching {
            return None;
        }
        let looking = self
            .idle
            .iter()
            .rev()
            .take(LOOKING_SCAN)
            .position(|i| i.handoff.looking.load(Ordering::Relaxed))
            .map(|back| self.idle.len() - 1 - back);
        let pos = match looking {
            Some(pos) => pos,
            None if self.searching == 0 => self.idle.len().checked_sub(1)?,
            None => return None,
        };
        let idle = self.idle.swap_remove(pos);
        self.searching += 1;
        Some(idle.handoff)
    }

    /// The ready task a thread whose job ended may take: the oldest no
    /// searcher is on its way to.
    fn take_unclaimed(&mut self) -> Option<Message> {
        if self.ready.len() > self.searching {
            self.ready.remove(self.searching)
        } else {
            None
        }
    }
}

struct Shared {
    lanes: Vec<Lane>,
    next_id: u64,
    /// The fork generation the threads belong to; after fork() the child has
    /// none of them.
    forks: u64,
    /// Threads running a capped task now (each holds one slot).
    running: usize,
    /// 0 = no cap.
    max_running: usize,
    /// Capped tasks waiting for a slot, oldest first.
    queue: VecDeque<(Ticket, Work)>,
    next_ticket: Ticket,
}

impl Shared {
    fn lane(&mut self, stack_size: usize) -> &mut Lane {
        let pos = match self.lanes.iter().position(|l| l.stack_size == stack_size) {
            Some(pos) => pos,
            None => {
                self.lanes.push(Lane {
                    stack_size,
                    ready: VecDeque::new(),
                    idle: Vec::new(),
                    searching: 0,
                    reserved: 0,
                });
                self.lanes.len() - 1
            }
        };
        &mut self.lanes[pos]
    }

    fn idle_count(&self) -> usize {
        self.lanes.iter().map(|l| l.idle.len()).sum()
    }

    /// Whether one more capped task may run now.
    fn has_room(&self) -> bool {
        self.max_running == 0 || self.running < self.max_running
    }

    /// The oldest queued task, for a slot a task is letting go: the slot
    /// (still counted in `running`) passes to it. None when nothing is
    /// queued, or when the cap was lowered under the running count (the
    /// slot must be freed then, not passed on).
    fn take_queued_for_slot(&mut self) -> Option<(Ticket, Work)> {
        if self.max_running == 0 || self.running <= self.max_running {
            self.queue.pop_front()
        } else {
            None
        }
    }
}

/// A set of worker threads. Most programs use [`Pool::global`].
pub struct Pool {
    config: PoolConfig,
    shared: Mutex<Shared>,
    /// A queued task was put back because no thread could be started for
    /// it: idle threads retry (`STRANDED_RETRY`) until one can.
    stranded: std::sync::atomic::AtomicBool,
}

/// What [`Pool::submit`] did with a task.
#[derive(Debug)]
pub(crate) enum Submitted {
    /// A thread runs it once the [`Launch`] is dropped.
    Running(Launch),
    /// The cap is reached: it waits in the queue under this ticket.
    Queued(Ticket),
}

/// A task promised a thread that has not been handed it yet: dropping this
/// hands it over. It cannot fail, so a caller may decide under its own lock
/// (a thread is promised, or was started) and hand it over after letting go
/// of that lock, so the thread does not run into it.
#[must_use = "dropping the Launch is what hands the task to its thread"]
pub(crate) struct Launch(Option<(&'static Pool, Message)>);

impl Drop for Launch {
    fn drop(&mut self) {
        if let Some((pool, message)) = self.0.take() {
            pool.deliver(message);
        }
    }
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Launch")
    }
}

impl Pool {
    /// A pool with its own idle threads.
    pub fn new(config: PoolConfig) -> Pool {
        Pool {
            config,
            shared: Mutex::new(Shared {
                lanes: Vec::new(),
                next_id: 0,
                forks: crate::sys::fork_generation(),
                running: 0,
                max_running: config.max_running,
                queue: VecDeque::new(),
                next_ticket: 0,
            }),
            stranded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The process-wide pool used by jobs that name none.
    pub fn global() -> &'static Pool {
        static GLOBAL: OnceLock<Pool> = OnceLock::new();
        GLOBAL.get_or_init(|| Pool::new(PoolConfig::default()))
    }

    /// Idle threads waiting for work now.
    pub fn idle_threads(&self) -> usize {
        self.lock().idle_count()
    }

    /// Held across fork() (see `crate::ffi::fork`), so no parent thread is
    /// inside the pool's lock when the child is made.
    pub(crate) fn hold_for_fork(&'static self) -> PoolHold {
        PoolHold {
            _guard: self.shared.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// The cap on job workers running at once (0 = none).
    pub fn max_running(&self) -> usize {
        self.lock().max_running
    }

    /// Job workers running now (those of jobs whose completion runs on the
    /// worker thread count until it returned).
    pub fn running(&self) -> usize {
        self.lock().running
    }

    /// Jobs started but waiting for a slot under the cap.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// The cap, the running job workers and the queued jobs, read at once.
    pub fn status(&self) -> (usize, usize, usize) {
        let g = self.lock();
        (g.max_running, g.running, g.queue.len())
    }

    /// Sets the cap on job workers running at once; 0 removes it. Raising it
    /// (or removing it) starts queued jobs at once, oldest first; lowering it
    /// stops nothing: running workers finish, and queued jobs start only once
    /// fewer than the new cap run. Jobs started while no cap is in force are
    /// counted too, so a cap set later sees them.
    pub fn set_max_running(&'static self, max: usize) {
        self.lock().max_running = max;
        self.pump();
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        let mut g = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let forks = crate::sys::fork_generation();
        if g.forks != forks {
            // A forked child inherits the lists but not the threads behind them.
            // The queued and ready tasks belong to the parent's jobs: they must
            // never run here, and dropping them would call the parent's free
            // functions.
            for lane in std::mem::take(&mut g.lanes) {
                std::mem::forget(lane.ready);
            }
            g.running = 0;
            std::mem::forget(std::mem::take(&mut g.queue));
            g.forks = forks;
        }
        g
    }

    /// Runs `task` on a thread named `name` with `stack_size` bytes of stack
    /// (0 = the platform default): an idle one if there is one, else a new one.
    /// Never queued and not counted against the cap (for completions of jobs
    /// that never ran). If no thread can be started, the task comes back unrun.
    pub(crate) fn spawn(
        &'static self,
        name: &str,
        stack_size: usize,
        task: Task,
    ) -> Result<(), (io::Error, Task)> {
        let work = Work {
            name: name.to_owned(),
            stack_size,
            task,
        };
        self.launch(work, false)
            .map(drop)
            .map_err(|(e, w)| (e, w.task))
    }

    /// Runs a job's worker task as [`Pool::spawn`] does, unless the cap is
    /// reached: then it waits in the queue, and a thread whose task ended runs
    /// it later. If no thread can be started, the task comes back unrun.
    pub(crate) fn submit(
        &'static self,
        name: &str,
        stack_size: usize,
        task: Task,
    ) -> Result<Submitted, (io::Error, Task)> {
        let work = Work {
            name: name.to_owned(),
            stack_size,
            task,
        };
        {
            let mut g = self.lock();
            if !g.has_room() || !g.queue.is_empty() {
                g.next_ticket += 1;
                let ticket = g.next_ticket;
                g.queue.push_back((ticket, work));
                drop(g);
                // Normally a no-op (the queue is only non-empty at the cap); it
                // restarts a queue a failed thread start left behind.
                self.pump();
                return Ok(Submitted::Queued(ticket));
            }
            g.running += 1;
        }
        match self.launch(work, true) {
            Ok(launch) => Ok(Submitted::Running(launch)),
            Err((e, work)) => {
                self.lock().running -= 1;
                Err((e, work.task))
            }
        }
    }

    /// Takes a task out of the queue before it started (a cancelled job), or
    /// `None` if a thread has taken it already.
    pub(crate) fn withdraw(&self, ticket: Ticket) -> Option<Task> {
        let mut g = self.lock();
        let pos = g.queue.iter().position(|(t, _)| *t == ticket)?;
        g.queue.remove(pos).map(|(_, w)| w.task)
    }

    /// Starts queued tasks while there is room.
    fn pump(&'static self) {
        loop {
            let work = {
                let mut g = self.lock();
                if !g.has_room() {
                    return;
                }
                let Some((ticket, work)) = g.queue.pop_front() else {
                    return;
                };
                g.running += 1;
                (ticket, work)
            };
            match self.launch(work.1, true) {
                Ok(launch) => drop(launch),
                Err((_, w)) => {
                    self.requeue(work.0, w);
                    return;
                }
            }
        }
    }

    /// Puts back a queued task no thread could be started for, first and
    /// under its own ticket (a cancel still withdraws it and ends it unrun);
    /// it runs when a slot next frees or a job is next submitted.
    fn requeue(&self, ticket: Ticket, work: Work) {
        let mut g = self.lock();
        g.running -= 1;
        g.queue.push_front((ticket, work));
        self.stranded.store(true, Ordering::Release);
    }

    /// Promises `work` a thread of its stack size that runs no job (it gets
    /// it when the returned [`Launch`] is dropped), or starts one with it.
    fn launch(&'static self, work: Work, capped: bool) -> Result<Launch, (io::Error, Work)> {
        let id = {
            let mut g = self.lock();
            g.next_id += 1;
            let id = g.next_id;
            let lane = g.lane(work.stack_size);
            if lane.free() > 0 {
                lane.reserved += 1;
                return Ok(Launch(Some((self, (work, capped)))));
            }
            id
        };
        let message = (work, capped);
        let stack_size = message.0.stack_size;
        let mut builder = std::thread::Builder::new().name(thread_name(&message.0.name));
        if stack_size > 0 {
            builder = builder.stack_size(stack_size);
        }
        // std drops the closure when the thread cannot start; the slot keeps the
        // work so it can be handed back.
        let slot = Arc::new(Mutex::new(Some(message)));
        let thread_slot = slot.clone();
        let spawned = builder.spawn(move || {
            let _live = LiveThread::enter();
            let first = thread_slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some((work, capped)) = first {
                self.thread_main(id, stack_size, work, capped);
            }
        });
        match spawned {
            Ok(_) => Ok(Launch(None)),
            Err(e) => {
                let message = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                let (work, _) = message.expect("the thread never started, so never took it");
                Err((e, work))
            }
        }
    }

    /// Hands promised work to its lane (a `Launch` dropped): wakes a thread
    /// only if no searcher is on its way to it.
    fn deliver(&self, message: Message) {
        let wake = {
            let mut g = self.lock();
            let lane = g.lane(message.0.stack_size);
            lane.reserved = lane.reserved.saturating_sub(1);
            lane.ready.push_back(message);
            lane.searcher_to_wake()
        };
        if let Some(handoff) = wake {
            handoff.send(Wake);
        }
    }

    /// Takes ready work of the lane — a searcher the oldest, a thread whose
    /// job ended the oldest no searcher is on its way to — waking the next
    /// searcher if more is ready; or lists this thread idle in the lane:
    /// `Ok(None)` to wait the keep-alive, `Err(true)` to wait only the
    /// linger (`max_idle` threads are idle and the lane does not need it),
    /// or `Err(false)`, and the thread ends (the same with no linger).
    fn next_or_idle(
        &self,
        mut g: MutexGuard<'_, Shared>,
        id: u64,
        stack_size: usize,
        handoff: &Arc<Handoff>,
        searcher: bool,
    ) -> Result<Option<Message>, bool> {
        let idle_count = g.idle_count();
        let lane = g.lane(stack_size);
        let taken = if searcher {
            lane.ready.pop_front()
        } else {
            lane.take_unclaimed()
        };
        if let Some(message) = taken {
            let wake = lane.searcher_to_wake();
            drop(g);
            if let Some(next) = wake {
                next.send(Wake);
            }
            return Ok(Some(message));
        }
        // Past `max_idle` the thread ends (after the linger), unless the
        // lane needs it to back work promised to it.
        let surplus = idle_count >= self.config.max_idle
            && lane.idle.len() + lane.searching >= lane.ready.len() + lane.reserved;
        if surplus && self.config.linger.is_zero() {
            return Err(false);
        }
        lane.idle.push(Idle {
            id,
            handoff: handoff.clone(),
        });
        // Work no searcher is on its way to (and no thread awake to take):
        // this thread is it.
        let wake = lane.searcher_to_wake();
        drop(g);
        if let Some(next) = wake {
            next.send(Wake);
        }
        if surplus { Err(true) } else { Ok(None) }
    }

    /// An idle thread whose keep-alive passed leaves its lane, unless a
    /// waker took it off the list (it waits for that wake then), or the lane
    /// needs it to back its ready work. True: the thread ends.
    fn expire(&self, id: u64, stack_size: usize) -> bool {
        let mut g = self.lock();
        let lane = g.lane(stack_size);
        let Some(pos) = lane.idle.iter().position(|i| i.id == id) else {
            return false;
        };
        if lane.idle.len() - 1 + lane.searching < lane.ready.len() + lane.reserved {
            return false;
        }
        lane.idle.swap_remove(pos);
        true
    }

    fn thread_main(&'static self, id: u64, stack_size: usize, first: Work, capped: bool) {
        // One hand-off slot for the thread's whole life.
        let handoff = Arc::new(Handoff::new());
        settle::enter_pool_thread(self, id, stack_size, &handoff);
        let mut named = thread_name(&first.name);
        let mut next = Some((first, capped));
        // Listed idle past `max_idle`: it waits only the linger.
        let mut lingering = false;
        loop {
            while let Some((work, capped)) = next.take() {
                rename(&mut named, &work.name);
                settle::task_started(capped);
                // A panicking Rust completion must not kill the thread with its
                // slot counted; C callbacks cannot unwind.
                let _ = catch_unwind(AssertUnwindSafe(work.task));
                // Settled here unless the task did it itself (a job's end
                // does, right before it signals its context).
                let settled = match settle::task_ended(capped) {
                    Ok(settled) => settled,
                    Err(capped) => self.settle(id, stack_size, &handoff, capped),
                };
                match settled {
                    Ok(Some(message)) => next = Some(message),
                    Ok(None) => lingering = false,
                    Err(true) => lingering = true,
                    Err(false) => return,
                }
            }
            // Listed idle: look for a wake a short while before parking, so a
            // burst's next wake costs no system call.
            if start_looking() {
                handoff.spin(SPIN_FOR);
                stop_looking();
            }
            // A queued task no thread could be started for (a thread limit
            // reached): tried again while this thread waits, which stays
            // alive for it, so it does not wait for the pool's next event.
            let mut early = None;
            while early.is_none() && self.stranded.load(Ordering::Acquire) {
                early = handoff.recv(Some(Instant::now() + STRANDED_RETRY));
                if early.is_none() {
                    self.stranded.store(false, Ordering::Release);
                    self.pump();
                }
            }
            let start = Instant::now();
            let keep_alive = start
                + if lingering {
                    self.config.linger.min(self.config.keep_alive)
                } else {
                    self.config.keep_alive
                };
            let mut wake = match early {
                Some(wake) => Some(wake),
                None => handoff.recv(Some(keep_alive.min(start + IDLE_NAME_AFTER))),
            };
            if wake.is_none() && keep_alive > start + IDLE_NAME_AFTER {
                rename(&mut named, "bgjob-idle");
                wake = handoff.recv(Some(keep_alive));
            }
            let wake = match wake {
                Some(wake) => wake,
                None => loop {
                    if self.expire(id, stack_size) {
                        return;
                    }
                    // Taken off the list by a waker (who is about to send), or
                    // needed by the lane: wait on.
                    if let Some(wake) = handoff.recv(Some(Instant::now() + self.config.keep_alive))
                    {
                        break wake;
                    }
                },
            };
            let Wake = wake;
            let mut g = self.lock();
            let lane = g.lane(stack_size);
            lane.searching = lane.searching.saturating_sub(1);
            match self.next_or_idle(g, id, stack_size, &handoff, true) {
                Ok(Some(message)) => next = Some(message),
                Ok(None) => lingering = false,
                Err(true) => lingering = true,
                Err(false) => return,
            }
        }
    }
}

/// The pool's lock, held across fork(). In the child it is simply released:
/// the next use of the pool sees the new fork generation and forgets the
/// parent's threads and queue (see `lock`).
pub(crate) struct PoolHold {
    _guard: MutexGuard<'static, Shared>,
}

/// Renames the calling thread unless it already has that (cut) name. The
/// usual case, a burst of jobs of one name, compares without allocating.
fn rename(current: &mut String, name: &str) {
    if !name.contains('\0') && current.as_str() == &name[..cut_at(name)] {
        return;
    }
    let wanted = thread_name(name);
    if *current != wanted {
        crate::sys::set_current_thread_name(&wanted);
        *current = wanted;
    }
}

/// Linux keeps 15 bytes of a thread name; cut on a character boundary.
fn thread_name(name: &str) -> String {
    name[..cut_at(name)].replace('\0', "")
}

/// Where [`thread_name`] cuts `name`.
fn cut_at(name: &str) -> usize {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests;

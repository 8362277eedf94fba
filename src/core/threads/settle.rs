//! Settling a pool thread's task: the pool's bookkeeping after a task (its
//! cap slot freed or passed on, the thread's next work taken or the thread
//! listed idle), done either once the task returns or, for a job's end, from
//! inside the task ([`settle_task_now`]) so the job can signal its context
//! with the thread already idle.

use super::{Handoff, Message, Pool};
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    /// Set on a pool thread ([`Pool::thread_main`]): what settling its task
    /// needs, and where that task stands.
    static POOL_THREAD: RefCell<Option<PoolThread>> = const { RefCell::new(None) };
}

/// A pool thread's own record (see [`settle_task_now`]).
struct PoolThread {
    pool: &'static Pool,
    id: u64,
    stack_size: usize,
    handoff: Arc<Handoff>,
    task: TaskState,
}

enum TaskState {
    /// Between tasks.
    None,
    /// A task runs; `capped`: it holds a cap slot.
    Running { capped: bool },
    /// The running task settled itself: what the thread does next.
    Settled(Next),
}

/// What a thread does once its task is settled: run this work next
/// (`Ok(Some)`), wait idle the keep-alive (`Ok(None)`) or only the linger
/// (`Err(true)`), or end (`Err(false)`).
pub(super) type Next = Result<Option<Message>, bool>;

/// Whether a thread whose task settled to `next` is listed idle.
fn listed_idle(next: &Next) -> bool {
    matches!(next, Ok(None) | Err(true))
}

/// Settles the task running on this pool thread now, from inside it, as the
/// thread would once the task returns: its cap slot is freed (or passed to
/// the oldest queued task, which this thread then runs next), and the thread
/// takes ready work or lists itself idle. Returns whether it is listed idle;
/// `None` (and does nothing) off a pool thread, outside a task, or if the
/// task settled already. A job's end calls it right before it signals its
/// context (see `job::Job::publish_end`): whatever the task still does after
/// this must not block (no user code), as work may be handed to the thread
/// meanwhile; it runs once the task returns.
pub(crate) fn settle_task_now() -> Option<bool> {
    POOL_THREAD.with(|t| {
        let mut t = t.borrow_mut();
        let t = t.as_mut()?;
        let TaskState::Running { capped } = t.task else {
            return None;
        };
        let next = t.pool.settle(t.id, t.stack_size, &t.handoff, capped);
        let idle = listed_idle(&next);
        t.task = TaskState::Settled(next);
        Some(idle)
    })
}

/// Whether the task running on this pool thread settled itself
/// ([`settle_task_now`]) and the thread either is listed idle or has its next
/// work: user code the task still runs would hold up work handed to it.
pub(crate) fn task_settled_early() -> bool {
    POOL_THREAD.with(|t| {
        matches!(
            t.borrow().as_ref().map(|t| &t.task),
            Some(TaskState::Settled(Ok(_) | Err(true)))
        )
    })
}

/// Marks the start of a task on this pool thread ([`settle_task_now`]).
pub(super) fn task_started(capped: bool) {
    POOL_THREAD.with(|t| {
        if let Some(t) = t.borrow_mut().as_mut() {
            t.task = TaskState::Running { capped };
        }
    });
}

/// The settlement the task that just returned made itself (`Ok`), or what
/// is left to settle: whether it still holds a cap slot (`Err`; `capped`,
/// what it started with, off a pool thread's record).
pub(super) fn task_ended(capped: bool) -> Result<Next, bool> {
    POOL_THREAD.with(|t| {
        let mut t = t.borrow_mut();
        let Some(t) = t.as_mut() else {
            return Err(capped);
        };
        match std::mem::replace(&mut t.task, TaskState::None) {
            TaskState::Settled(next) => Ok(next),
            TaskState::Running { capped } => Err(capped),
            TaskState::None => Err(capped),
        }
    })
}

/// Frees the cap slot of the task running on this pool thread now, or
/// passes it to the oldest queued task, started on another thread; the rest
/// of the settling is left for the task's return. For a job whose worker has
/// returned but whose task still runs user code on this thread (its
/// completion, run here without a context; commit, abort, clean; the last
/// free functions): the cap counts running workers, and a queued job must
/// not wait behind that code for its slot (a completion that waits for it
/// would wait for ever). Does nothing off a pool thread, for a task without
/// a slot, or once settled.
pub(crate) fn release_cap_slot_now() {
    let pool = POOL_THREAD.with(|t| {
        let mut t = t.borrow_mut();
        let t = t.as_mut()?;
        let TaskState::Running { capped: true } = t.task else {
            return None;
        };
        t.task = TaskState::Running { capped: false };
        Some(t.pool)
    });
    if let Some(pool) = pool
        && !pool.release_slot()
    {
        // No thread could take the queued task: the slot stays this task's,
        // and its settling passes it on (the task then runs here).
        POOL_THREAD.with(|t| {
            if let Some(t) = t.borrow_mut().as_mut() {
                t.task = TaskState::Running { capped: true };
            }
        });
    }
}

/// Records this thread as a pool thread of `pool` ([`Pool::thread_main`]),
/// for [`settle_task_now`].
pub(super) fn enter_pool_thread(
    pool: &'static Pool,
    id: u64,
    stack_size: usize,
    handoff: &Arc<Handoff>,
) {
    POOL_THREAD.with(|t| {
        *t.borrow_mut() = Some(PoolThread {
            pool,
            id,
            stack_size,
            handoff: handoff.clone(),
            task: TaskState::None,
        });
    });
}

impl Pool {
    /// [`release_cap_slot_now`]'s bookkeeping: the slot is freed, or passed
    /// to the oldest queued task on a thread other than this one. False when
    /// no thread could be had for it: the task is queued again, first, and
    /// the slot is still the caller's.
    fn release_slot(&'static self) -> bool {
        let mut g = self.lock();
        let Some((ticket, work)) = g.take_queued_for_slot() else {
            g.running -= 1;
            return true;
        };
        drop(g);
        match self.launch(work, true) {
            Ok(launch) => {
                drop(launch);
                true
            }
            Err((_, work)) => {
                self.lock().queue.push_front((ticket, work));
                false
            }
        }
    }

    /// The bookkeeping after a task (see [`settle_task_now`]): one hold of
    /// the pool's lock frees the task's cap slot (or passes it straight to
    /// the oldest queued task: run next here when the stack fits, else on a
    /// thread that has it), then takes ready work or lists the thread idle
    /// (or ends it): thousands of threads ending at once contend for it.
    pub(super) fn settle(
        &'static self,
        id: u64,
        stack_size: usize,
        handoff: &Arc<Handoff>,
        capped: bool,
    ) -> Next {
        let mut g = self.lock();
        if capped {
            match g.take_queued_for_slot() {
                // A stack at least as large as it asked for will do.
                Some((_, work)) if work.stack_size <= stack_size => {
                    return Ok(Some((work, true)));
                }
                Some((ticket, work)) => {
                    drop(g);
                    match self.launch(work, true) {
                        Ok(launch) => drop(launch),
                        Err((_, work)) => self.requeue(ticket, work),
                    }
                    g = self.lock();
                }
                None => g.running -= 1,
            }
        }
        self.next_or_idle(g, id, stack_size, handoff, false)
    }
}

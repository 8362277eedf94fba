//! Completion contexts: QIOTask's "callback in the caller's event-loop thread"
//! without owning a main loop.
//!
//! A context is a queue of completions plus one pollable fd (an eventfd,
//! close-on-exec, non-blocking) that is readable while the queue is not empty
//! (and, rarely, once more after a dispatch that raced a post: see
//! [`Context::post`]). The caller adds the fd to its own loop (poll, GLib's `g_unix_fd_add`,
//! libvirt's `virEventAddHandle`, libuv, asyncio's `add_reader`) and calls
//! [`Context::dispatch`] when it is readable; the completions then run on that
//! thread. Any number of completions between two dispatches make one readiness.

use crate::sys::{EventFd, thread_token};
use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard};

/// One queued completion. Dropping it without running it must release whatever
/// it owns (the C layer's userdata free functions run from its captures' Drop).
pub type Completion = Box<dyn FnOnce() + Send + 'static>;

struct Queue {
    items: VecDeque<Completion>,
    closed: bool,
    /// A post made the queue non-empty and signalled the fd (or is about to).
    armed: bool,
    /// The threads dispatching this context now ([`thread_token`]s), to
    /// refuse a nested dispatch from inside one of its callbacks (bounded
    /// recursion). Kept here, under the lock the dispatch takes anyway,
    /// rather than in a thread-local, which a shared library reaches through
    /// a `__tls_get_addr` call: cold after the dispatcher's wait, it cost a
    /// dispatch more than the rest of its way to the callback. (Its capacity
    /// stays: only a context's first dispatch allocates.)
    dispatching: Vec<usize>,
}

/// Signals a context's fd when dropped: [`Context::post`] hands it back so the
/// caller can make the fd readable after letting go of every lock (a
/// dispatcher woken at once must not find them held).
#[must_use = "dropping the Wake is what makes the context's fd readable"]
pub(crate) struct Wake(Option<Context>);

impl Wake {
    /// Makes the fd readable now, if this post is the one that has to (the
    /// queue was not armed): true then.
    pub(crate) fn signal(mut self) -> bool {
        match self.0.take() {
            Some(ctx) => {
                ctx.0.fd.signal();
                true
            }
            None => false,
        }
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        if let Some(ctx) = self.0.take() {
            ctx.0.fd.signal();
        }
    }
}

struct Inner {
    id: u64,
    queue: Mutex<Queue>,
    fd: EventFd,
}

/// A completion context; clones refer to the same one.
#[derive(Clone)]
pub struct Context(Arc<Inner>);

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.0.id)
            .field("fd", &self.0.fd.raw())
            .finish()
    }
}

impl PartialEq for Context {
    fn eq(&self, other: &Context) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Context {}

/// Why a dispatch was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DispatchError {
    /// Called from inside a callback that this context is dispatching.
    Nested,
}

impl Context {
    /// A new context with its own eventfd.
    pub fn new() -> std::io::Result<Context> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Ok(Context(Arc::new(Inner {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                closed: false,
                armed: false,
                dispatching: Vec::new(),
            }),
            fd: EventFd::new()?,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.0.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fd to poll for readability. Valid until the last clone is dropped.
    pub fn fd(&self) -> i32 {
        self.0.fd.raw()
    }

    /// Completions queued now.
    pub fn pending(&self) -> usize {
        self.lock().items.len()
    }

    /// Queues a completion; dropping the returned [`Wake`] makes the fd
    /// readable. A closed context hands the completion back, so the caller can
    /// drop it (running its captures' free functions) with no lock held. Takes
    /// only the queue's lock, so a job may post while holding its own lock.
    pub(crate) fn post(&self, c: Completion) -> Result<Wake, Completion> {
        let mut q = self.lock();
        if q.closed {
            return Err(c);
        }
        // The fd is signalled on the empty → non-empty edge only, and cleared
        // when a dispatch empties the queue. The signal comes after the lock is
        // released, so a dispatch may empty the queue first and leave the fd
        // readable with nothing queued: the next dispatch runs nothing and
        // clears it.
        q.items.push_back(c);
        let first = !q.armed;
        q.armed = true;
        Ok(Wake(first.then(|| self.clone())))
    }

    /// Runs up to `max` queued completions (0 = all queued when the call began)
    /// on the calling thread, with no lock held, and returns how many ran.
    /// Completions queued by those callbacks wait for the next dispatch; if one
    /// of them closes the context, the rest are not run (close drops them).
    pub fn dispatch(&self, max: usize) -> Result<usize, DispatchError> {
        let token = thread_token();
        /// Leaves the list of this context's dispatchers (also if a
        /// callback unwinds through), and clears the fd if this dispatch
        /// emptied the queue and nothing was posted since.
        struct Leave<'a> {
            ctx: &'a Context,
            token: usize,
            emptied: bool,
        }
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                let mut q = self.ctx.lock();
                if let Some(i) = q.dispatching.iter().position(|t| *t == self.token) {
                    q.dispatching.swap_remove(i);
                }
                // Cleared after the callbacks ran (the first runs one read()
                // sooner), and only if nothing was posted meanwhile: a new
                // post armed the queue again, and its signal must stay.
                if self.emptied && !q.armed && q.items.is_empty() {
                    self.ctx.0.fd.clear();
                }
            }
        }
        // Only what was queued when the call began (or `max` of it) runs; one
        // at a time, so a callback that closes the context stops the rest.
        let mut ran = 0;
        let mut leave: Option<Leave<'_>> = None;
        let mut budget = usize::MAX;
        loop {
            if ran >= budget {
                break;
            }
            let next = {
                let mut q = self.lock();
                if leave.is_none() {
                    // The first hold refuses a nested dispatch, lists this
                    // thread as a dispatcher and takes the budget.
                    if q.dispatching.contains(&token) {
                        return Err(DispatchError::Nested);
                    }
                    q.dispatching.push(token);
                    leave = Some(Leave {
                        ctx: self,
                        token,
                        emptied: false,
                    });
                    if q.items.is_empty() && !q.closed {
                        // Readable with nothing queued: a signal that came
                        // after the dispatch that emptied the queue.
                        q.armed = false;
                        self.0.fd.clear();
                    }
                    budget = if max == 0 {
                        q.items.len()
                    } else {
                        max.min(q.items.len())
                    };
                }
                if ran >= budget || q.closed {
                    break;
                }
                let next = q.items.pop_front();
                if q.items.is_empty() {
                    q.armed = false;
                    if let Some(l) = leave.as_mut() {
                        l.emptied = true;
                    }
                }
                next
            };
            let Some(c) = next else { break };
            ran += 1;
            // A panicking Rust callback must not stop the ones after it; C
            // callbacks cannot unwind.
            let _ = catch_unwind(AssertUnwindSafe(c));
        }
        drop(leave);
        Ok(ran)
    }

    /// Closes the context: queued completions are dropped without running (what
    /// they own is freed now), and completions posted later are dropped as they
    /// arrive. The fd stays open until the last clone is gone.
    pub fn close(&self) {
        let dropped: Vec<Completion> = {
            let mut q = self.lock();
            q.closed = true;
            q.armed = false;
            self.0.fd.clear();
            q.items.drain(..).collect()
        };
        drop(dropped);
    }

    /// Whether [`Context::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn readable(fd: i32) -> bool {
        crate::sys::poll_readable(fd, 0)
    }

    #[test]
    fn fd_is_readable_exactly_while_something_is_queued() {
        let ctx = Context::new().unwrap();
        assert!(!readable(ctx.fd()));
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..5 {
            let r = ran.clone();
            assert!(
                ctx.post(Box::new(move || {
                    r.fetch_add(1, Ordering::SeqCst);
                }))
                .is_ok()
            );
        }
        assert!(readable(ctx.fd()));
        assert_eq!(ctx.dispatch(2), Ok(2));
        assert!(readable(ctx.fd()), "three still queued");
        assert_eq!(ctx.dispatch(0), Ok(3));
        assert!(!readable(ctx.fd()));
        assert_eq!(ctx.dispatch(0), Ok(0), "empty dispatch is harmless");
        assert_eq!(ran.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn nested_dispatch_is_refused_and_late_posts_wait() {
        let ctx = Context::new().unwrap();
        let inner = ctx.clone();
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        let posted = ctx.post(Box::new(move || {
            *s.lock().unwrap() = Some(inner.dispatch(0));
            assert!(inner.post(Box::new(|| {})).is_ok());
        }));
        assert!(posted.is_ok());
        assert_eq!(ctx.dispatch(0), Ok(1));
        assert_eq!(*seen.lock().unwrap(), Some(Err(DispatchError::Nested)));
        assert_eq!(ctx.pending(), 1);
        assert!(readable(ctx.fd()));
    }

    #[test]
    fn only_a_dispatch_of_the_same_context_on_the_same_thread_is_nested() {
        let ctx = Context::new().unwrap();
        let other = Context::new().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (inner, o, s) = (ctx.clone(), other.clone(), seen.clone());
        let posted = ctx.post(Box::new(move || {
            // Another thread dispatching it meanwhile is not nested, and is
            // refused when it nests itself.
            let c = inner.clone();
            let on_other_thread = std::thread::spawn(move || {
                let d = c.clone();
                let nested = Arc::new(Mutex::new(None));
                let n = nested.clone();
                assert!(
                    c.post(Box::new(move || *n.lock().unwrap() = Some(d.dispatch(0))))
                        .is_ok()
                );
                let ran = c.dispatch(0);
                (ran, nested.lock().unwrap().take())
            })
            .join()
            .unwrap();
            let mut s = s.lock().unwrap();
            s.push(on_other_thread.0);
            s.push(on_other_thread.1.unwrap());
            // Another context on this thread is not nested; this one is.
            s.push(o.dispatch(0));
            s.push(inner.dispatch(0));
        }));
        assert!(posted.is_ok());
        assert_eq!(ctx.dispatch(0), Ok(1));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                Ok(1),
                Err(DispatchError::Nested),
                Ok(0),
                Err(DispatchError::Nested)
            ]
        );
        assert_eq!(ctx.dispatch(0), Ok(0), "left: not nested any more");
        assert_eq!(ctx.pending(), 0);
    }

    #[test]
    fn a_callback_that_closes_the_context_stops_the_batch() {
        let ctx = Context::new().unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let (r, c) = (ran.clone(), ctx.clone());
            let posted = ctx.post(Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
                c.close();
            }));
            assert!(posted.is_ok());
        }
        assert_eq!(ctx.dispatch(0), Ok(1));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert_eq!(ctx.pending(), 0, "close dropped the other two");
    }

    #[test]
    fn close_drops_queued_and_later_completions_unrun() {
        struct D(Arc<AtomicUsize>);
        impl Drop for D {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let ctx = Context::new().unwrap();
        let drops = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let (d, r) = (D(drops.clone()), ran.clone());
            assert!(
                ctx.post(Box::new(move || {
                    let _d = d;
                    r.fetch_add(1, Ordering::SeqCst);
                }))
                .is_ok()
            );
        }
        ctx.close();
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        let d = D(drops.clone());
        let refused = ctx.post(Box::new(move || drop(d)));
        assert_eq!(
            drops.load(Ordering::SeqCst),
            2,
            "handed back, not dropped inside"
        );
        drop(refused);
        assert_eq!(drops.load(Ordering::SeqCst), 3);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert!(!readable(ctx.fd()));
    }
}

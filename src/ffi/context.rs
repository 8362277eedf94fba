//! Completion contexts: a queue of completions with one pollable fd, and the
//! completion as the C caller gives it.

use super::handles::{CONTEXTS, JOBS, to_ptr};
use super::{
    UserData, bgjob_context, bgjob_job, bgjob_job_options, bgjob_result, bgjob_state, boundary,
    need,
};
use crate::core::{self, Context};
use std::ffi::c_void;

/// The context behind a handle, or `InvalidHandle`.
pub(crate) fn context_of(context: *mut bgjob_context) -> Result<Context, bgjob_result> {
    CONTEXTS
        .get(context.addr())
        .ok_or(bgjob_result::InvalidHandle)
}

/// Creates a completion context: a queue of completions and one pollable fd.
///
/// The fd (`bgjob_context_get_fd`) is an eventfd, close-on-exec and
/// non-blocking, readable while completions are queued; any number of
/// completions between two dispatches make one readiness. (Rarely, a dispatch
/// that raced a finishing job leaves it readable with nothing queued: the next
/// dispatch runs nothing and clears it, like any spurious wake-up.) Add it to
/// your event loop for reading (poll, GLib's `g_unix_fd_add`, libvirt's
/// `virEventAddHandle`, libuv, asyncio's `add_reader`) and call
/// `bgjob_context_dispatch` when it is readable: the callbacks then run on that
/// thread, so the caller needs no locking of its own (QIOTask's "callback in
/// the main event thread").
///
/// Ownership: release it with `bgjob_context_destroy`.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` if `context_out` is
/// NULL; `BGJOB_RESULT_TRY_AGAIN` if no eventfd could be made (EMFILE and the
/// like).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_context_create(
    context_out: *mut *mut bgjob_context,
) -> bgjob_result {
    boundary(|| {
        need(context_out)?;
        let ctx = Context::new().map_err(|_| bgjob_result::TryAgain)?;
        let h = CONTEXTS.insert(ctx);
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { context_out.write(to_ptr(h)) };
        Ok(())
    })
}

/// Destroys a context. Completions still queued are dropped without running
/// (their userdata free functions run now, on this thread); jobs still bound to
/// it run on, and their completions are dropped the same way when they end
/// (their free functions run then, on the worker thread). Nothing is leaked and
/// no free function is skipped. Remove the fd from your event loop first: it is
/// closed once no bound job refers to it any more.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE` (also for a double
/// destroy).
///
/// Threads: may also be called from a completion callback of this context (the
/// remaining queued callbacks then do not run).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_context_destroy(context: *mut bgjob_context) -> bgjob_result {
    boundary(|| {
        let ctx = CONTEXTS
            .remove(context.addr())
            .ok_or(bgjob_result::InvalidHandle)?;
        ctx.close();
        Ok(())
    })
}

/// Writes the context's fd to `*fd_out`. Poll it for reading; do not read,
/// write or close it. It is level-triggered: readable for as long as
/// completions are queued, so a poll loop, `g_unix_fd_add` or
/// `virEventAddHandle` may dispatch a few at a time; an edge-triggered
/// watcher (`EPOLLET`) must dispatch until the queue is empty.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` if `fd_out` is NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_context_get_fd(
    context: *mut bgjob_context,
    fd_out: *mut i32,
) -> bgjob_result {
    boundary(|| {
        need(fd_out)?;
        let ctx = context_of(context)?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { fd_out.write(ctx.fd()) };
        Ok(())
    })
}

/// Runs queued completion callbacks on the calling thread: at most `max` of
/// them, or (with `max` 0) all that were queued when the call began. Callbacks
/// queued meanwhile wait for the next dispatch, so a callback that starts a job
/// cannot make one dispatch run forever. An empty dispatch is harmless.
/// `ran_out` (may be NULL) gets how many ran.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_NOT_ALLOWED` when called from inside a callback this context is
/// dispatching (no recursion).
///
/// Threads: several threads may dispatch one context; each callback runs once, on
/// one of them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_context_dispatch(
    context: *mut bgjob_context,
    max: usize,
    ran_out: *mut usize,
) -> bgjob_result {
    boundary(|| {
        let ctx = context_of(context)?;
        let ran = ctx.dispatch(max).map_err(|_| bgjob_result::NotAllowed)?;
        // SAFETY: NULL or writable by contract.
        unsafe { super::put(ran_out, ran) };
        Ok(())
    })
}

/// Writes the number of completions queued now to `*count_out`.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` if `count_out` is NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_context_pending(
    context: *mut bgjob_context,
    count_out: *mut usize,
) -> bgjob_result {
    boundary(|| {
        need(count_out)?;
        let ctx = context_of(context)?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { count_out.write(ctx.pending()) };
        Ok(())
    })
}

/// A completion as the C caller gave it, ready to hand to core.
pub(crate) struct Completion {
    callback: unsafe extern "C" fn(*mut c_void, *mut bgjob_job, bgjob_state),
    userdata: UserData,
    context: Option<Context>,
}

impl Completion {
    /// Reads the completion fields of `options`, taking ownership of the userdata
    /// at once so every later failure frees it.
    pub(crate) fn from_options(o: &bgjob_job_options) -> Result<Option<Completion>, bgjob_result> {
        let userdata = UserData::new(o.completion_userdata, o.completion_free);
        let context = if o.context.is_null() {
            None
        } else {
            Some(context_of(o.context)?)
        };
        match (o.completion, context) {
            (Some(callback), context) => Ok(Some(Completion {
                callback,
                userdata,
                context,
            })),
            // A context without a callback would deliver nothing.
            // (An event callback alone may use the context.)
            (None, Some(_)) if o.event.is_none() => Err(bgjob_result::InvalidArgument),
            (None, Some(_)) => Ok(None),
            (None, None) => Ok(None),
        }
    }

    /// Adds it to a job under construction; `auto_release` makes the job's handle
    /// go away after the callback (or when it will never run).
    pub(crate) fn attach(self, b: core::Builder, h: usize, auto_release: bool) -> core::Builder {
        let Completion {
            callback,
            userdata,
            context,
        } = self;
        // Built lazily: a guard made and dropped here would remove the handle now.
        let release = auto_release.then(|| ReleaseHandle(h));
        b.on_complete(context, move |job| {
            let (userdata, release) = (userdata, release);
            let state = bgjob_state::from(job.state());
            super::handles::with_call_handle(job, h, |h| {
                // SAFETY: the caller's callback with its own userdata and a
                // handle of the job valid for the call.
                unsafe { callback(userdata.ptr, to_ptr(h), state) };
            });
            drop(userdata);
            drop(release);
        })
    }
}

/// Removes a job handle when dropped: run-in-thread jobs nobody kept are
/// released after their completion, whether it ran or was dropped unrun.
struct ReleaseHandle(usize);

impl Drop for ReleaseHandle {
    fn drop(&mut self) {
        JOBS.remove(self.0);
    }
}

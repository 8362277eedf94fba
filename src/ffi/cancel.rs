//! Cancellation and cancellable waits (libxl's cancellation design): hooks,
//! sleep, the wake fd, fd waits, deadlines.

use super::handles::{to_ptr, with_job};
use super::{BGJOB_FD_ERROR, BGJOB_FD_HANGUP, BGJOB_FD_READABLE, BGJOB_FD_WRITABLE, need, put};
use super::{
    UserData, bgjob_cancel_hook_callback, bgjob_free_callback, bgjob_job, bgjob_result, boundary,
    timeout_arg,
};
use crate::core::{FdEvents, HookAdded, HookRemoved};
use std::time::Duration;

/// Registers a cancellation hook on a job: `bgjob_job_cancel` will call
/// `hook(userdata, job)` once, on the cancelling thread, with no lock held;
/// hooks run one at a time in registration order. (A deadline's cancel calls
/// them on a bgjob thread named after the job, never on the timer thread.) If
/// cancel was already requested, the hook runs at once on this thread before
/// this returns, and the call returns `BGJOB_RESULT_CANCELLED` to say so —
/// unless it was a soft cancel (`bgjob_job_cancel_soft`): then the hook is
/// registered for a later force cancel. Hooks
/// still registered when the job's worker returns are removed without being
/// called, and the job does not end while one of its hooks runs (see
/// `bgjob_cancel_hook_callback`): once any call has seen the job end, none of its
/// hooks runs or is still running.
///
/// Ownership: `userdata` passes to bgjob on every path; `userdata_free` (may be
/// NULL) runs exactly once: after the hook ran, when it is removed, when the job
/// ends, or at once if this call fails.
///
/// Returns: `BGJOB_RESULT_OK` with `*hook_id_out` set to the hook's id, never 0
/// (`hook_id_out` may be NULL); `BGJOB_RESULT_CANCELLED` when the hook already
/// ran (`*hook_id_out` is not written: a hook run at once has no id, and one
/// that removes "itself" by a 0 it was given gets `BGJOB_RESULT_NOT_FOUND` at
/// once);
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL hook; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_NOT_ALLOWED` once the job has ended.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_add_cancel_hook(
    job: *mut bgjob_job,
    hook: bgjob_cancel_hook_callback,
    userdata: *mut std::ffi::c_void,
    userdata_free: bgjob_free_callback,
    hook_id_out: *mut u64,
) -> bgjob_result {
    let userdata = UserData::new(userdata, userdata_free);
    boundary(move || {
        let hook = hook.ok_or(bgjob_result::InvalidArgument)?;
        // The hook is called with the handle the caller registered it through.
        let h = job.addr();
        let added = with_job(job, move |j, _| {
            j.add_cancel_hook(move |_| {
                let userdata = userdata;
                // SAFETY: the caller's hook with its own userdata and handle.
                unsafe { hook(userdata.ptr, to_ptr(h)) };
            })
        })??;
        match added {
            HookAdded::Registered(id) => {
                // SAFETY: NULL or writable by contract.
                unsafe { super::put(hook_id_out, id) };
                Ok(())
            }
            HookAdded::RanAtOnce => Err(bgjob_result::Cancelled),
        }
    })
}

/// Removes a cancellation hook. When this returns, the hook is not running and
/// will not run: one being called on another thread is waited for. Called from
/// inside the hook itself it returns at once (`BGJOB_RESULT_NOT_FOUND`).
///
/// Returns: `BGJOB_RESULT_OK` if the hook had not run (its userdata is freed now);
/// `BGJOB_RESULT_NOT_FOUND` if it already ran (or is this very call's caller), or
/// the id is unknown, or 0 (never a hook's id: at once, waiting for no hook);
/// `BGJOB_RESULT_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_remove_cancel_hook(
    job: *mut bgjob_job,
    hook_id: u64,
) -> bgjob_result {
    boundary(
        || match with_job(job, |j, _| j.remove_cancel_hook(hook_id))? {
            HookRemoved::Removed => Ok(()),
            HookRemoved::NotFound => Err(bgjob_result::NotFound),
        },
    )
}

/// A cancellable sleep for the worker: returns after `ms` milliseconds of active
/// time, or at once when cancel is requested. While the job is paused the worker
/// parks here and the paused time does not count; spurious wake-ups never
/// shorten it. −1 sleeps until cancel is requested; 0 only checks for it.
/// A complete request (`bgjob_job_complete`) ends it early with
/// `BGJOB_RESULT_OK` (at once while the worker has not acknowledged it with
/// `bgjob_job_complete_requested`): after an OK, a worker of a READY job
/// asks `bgjob_job_complete_requested` whether the time passed or it was told
/// to finish.
///
/// Returns: `BGJOB_RESULT_OK` when the time has passed (or complete was
/// requested); `BGJOB_RESULT_CANCELLED`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for an `ms` below −1;
/// `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED` unless the job is
/// running.
///
/// Threads: meant for the job's worker thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_sleep(job: *mut bgjob_job, ms: i64) -> bgjob_result {
    boundary(|| {
        // −1 sleeps until cancelled (core saturates a huge duration).
        let d = timeout_arg(ms)?.unwrap_or(Duration::MAX);
        with_job(job, |j, _| j.sleep(d))?.map_err(bgjob_result::from)
    })
}

/// Gives the job's wake fd, for a worker with its own `poll` loop: readable
/// once cancel was requested (it stays so), while a user pause is pending
/// (until resume), and while a complete request's wake is pending (until the
/// worker calls `bgjob_job_complete_requested`). When it turns readable, call
/// `bgjob_job_pause_point`: it parks while the job is paused and returns
/// `BGJOB_RESULT_CANCELLED` once cancel was requested; on OK, a READY job's
/// worker asks `bgjob_job_complete_requested`. bgjob owns the fd (close-on-exec, non-blocking; do
/// not read, write or close it); it lives until the job is destroyed.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `fd_out`;
/// `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_SYSTEM` if no fd could be made.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_get_wake_fd(
    job: *mut bgjob_job,
    fd_out: *mut i32,
) -> bgjob_result {
    boundary(|| {
        need(fd_out)?;
        let fd = with_job(job, |j, _| j.wake_fd())??;
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(fd_out, fd) };
        Ok(())
    })
}

/// A cancellable wait for an fd, for the worker: waits until `fd` is ready for
/// `events` (`BGJOB_FD_READABLE`, `BGJOB_FD_WRITABLE` or both), for at most
/// `timeout_ms` of active time (−1: no limit; 0: just look), and returns at
/// once when cancel is requested. While the job is paused the worker parks
/// here and the paused time does not count. A complete request
/// (`bgjob_job_complete`) ends it early with `BGJOB_RESULT_OK` and
/// `*revents_out` 0 (at once while the worker has not acknowledged it with
/// `bgjob_job_complete_requested`).
///
/// Returns: `BGJOB_RESULT_OK` with `*revents_out` (may be NULL) set to what
/// happened: `BGJOB_FD_*` bits, possibly `BGJOB_FD_ERROR` or `BGJOB_FD_HANGUP`
/// alone, or 0 for a complete request's wake; `BGJOB_RESULT_TIMED_OUT`; `BGJOB_RESULT_CANCELLED`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a negative or closed fd, no or unknown
/// `events` bits, or a timeout below −1; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_NOT_ALLOWED` unless the job is running; `BGJOB_RESULT_SYSTEM` if
/// poll itself failed (errno says why).
///
/// Threads: meant for the job's worker thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_wait_fd(
    job: *mut bgjob_job,
    fd: i32,
    events: u32,
    timeout_ms: i64,
    revents_out: *mut u32,
) -> bgjob_result {
    boundary(|| {
        if events == 0 || events & !(BGJOB_FD_READABLE | BGJOB_FD_WRITABLE) != 0 {
            return Err(bgjob_result::InvalidArgument);
        }
        let timeout = timeout_arg(timeout_ms)?;
        let want = FdEvents {
            readable: events & BGJOB_FD_READABLE != 0,
            writable: events & BGJOB_FD_WRITABLE != 0,
            ..FdEvents::default()
        };
        let got = with_job(job, |j, _| j.wait_fd(fd, want, timeout))??;
        let bits = [
            (got.readable, BGJOB_FD_READABLE),
            (got.writable, BGJOB_FD_WRITABLE),
            (got.error, BGJOB_FD_ERROR),
            (got.hangup, BGJOB_FD_HANGUP),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |acc, (_, bit)| acc | bit);
        // SAFETY: NULL or writable by contract.
        unsafe { put(revents_out, bits) };
        Ok(())
    })
}

/// Gives the job a deadline: once it has run `ms` milliseconds of active time
/// (counted from its start, paused time excluded) it is cancelled, and
/// `bgjob_info.cancel_cause` says `BGJOB_CANCEL_CAUSE_TIMEOUT`. −1 removes the
/// deadline. One that has already passed (0 always has) cancels a running or
/// PAUSED job at once (on another thread, shortly after this returns; the
/// paused one is resumed to see it, as by `bgjob_job_cancel`), a CREATED one
/// as it starts. A later one set on a PAUSED job waits for the resume: paused
/// time is not active time. Allowed in CREATED, RUNNING and PAUSED (it
/// replaces the one from `bgjob_job_options.deadline_ms`).
///
/// bgjob's one timer thread (started by the first deadline) only notices the
/// time; the cancel, with the job's cancellation hooks, runs on a bgjob thread
/// named after the job, so a hook that blocks delays no other job's deadline.
/// If that thread cannot be started when the deadline passes (EAGAIN), the
/// cancel is tried again every 20 ms until it can be: the deadline is late,
/// never lost.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for an `ms` below
/// −1; `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED` once the job has
/// ended; `BGJOB_RESULT_TRY_AGAIN` if the timer thread could not be started (the
/// job's deadline is then unchanged).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_deadline(job: *mut bgjob_job, ms: i64) -> bgjob_result {
    boundary(|| {
        let after = timeout_arg(ms)?;
        with_job(job, |j, _| j.set_deadline(after))?.map_err(bgjob_result::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_hook_frees_its_userdata() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static FREES: AtomicUsize = AtomicUsize::new(0);
        unsafe extern "C" fn count(_: *mut std::ffi::c_void) {
            FREES.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: NULL handle and hook are allowed inputs; `count` is valid.
        let r = unsafe {
            bgjob_job_add_cancel_hook(
                std::ptr::null_mut(),
                None,
                std::ptr::null_mut(),
                Some(count),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(r, bgjob_result::InvalidArgument);
        assert_eq!(FREES.load(Ordering::SeqCst), 1);
    }
}

//! Worker-side calls: cancellation checks, pause points, progress, phase, ETA,
//! error and finish. Usually called by the job's own worker, once per block; any
//! thread may call them. On the worker's own thread a handle lookup touches no
//! shared lock (see `handles`), and the progress calls park while the job is
//! paused — unless the job was created with `BGJOB_CREATE_UPDATES_NEVER_PARK`
//! (then only pause points and cancellable waits park). Progress calls do not report a cancel (an update is not a failure);
//! `bgjob_job_check_cancel` and `bgjob_job_pause_point` do.

use super::handles::{job_handle_count, with_job, worker_hot};
use super::{Res, bgjob_job, bgjob_result, boundary, c_str};
use crate::core::{self, Job};
use std::ffi::c_char;

/// Applies an update, then core's after-update rule (a pause point on the
/// job's own worker thread). The result is made a `bgjob_result` inside the
/// lookup, so what travels back through the layers is 4 bytes, not a core
/// error (copying that through each layer was a measurable part of an
/// update: docs/performance.md, "Progress updates").
#[inline(always)]
fn update(job: *mut bgjob_job, f: impl FnOnce(&Job, bool) -> Result<(), core::Error>) -> Res {
    match with_job(job, |j, on_worker| match f(j, on_worker) {
        Ok(()) => {
            j.after_update();
            bgjob_result::Ok
        }
        Err(e) => e.into(),
    })? {
        bgjob_result::Ok => Ok(()),
        e => Err(e),
    }
}

/// Tells a worker whether cancel was requested. Never blocks.
///
/// Returns: `BGJOB_RESULT_OK` if not; `BGJOB_RESULT_CANCELLED` if it was;
/// `BGJOB_RESULT_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_check_cancel(job: *mut bgjob_job) -> bgjob_result {
    if on_worker_nothing_pending(job) {
        return bgjob_result::Ok;
    }
    check_cancel(job)
}

/// The caller is the worker of the job `job` names, and no cancel, pause or
/// end is pending on it: a cancel check or pause point answers OK at once.
/// The worker's per-block call: one thread-local read and one load, outside
/// the panic catcher (nothing here panics).
#[inline(always)]
fn on_worker_nothing_pending(job: *mut bgjob_job) -> bool {
    worker_hot(job).is_some_and(|j| j.nothing_pending())
}

/// `bgjob_job_check_cancel`'s general path.
#[cold]
#[inline(never)]
fn check_cancel(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| {
        if with_job(job, |j, _| j.is_cancel_requested())? {
            Err(bgjob_result::Cancelled)
        } else {
            Ok(())
        }
    })
}

/// A pause point: while the job is paused, the calling worker parks here until
/// it is resumed or cancelled.
///
/// Returns: `BGJOB_RESULT_OK` to carry on (for a READY job's worker woken by
/// the wake fd, `bgjob_job_complete_requested` tells whether complete was
/// requested); `BGJOB_RESULT_CANCELLED` once cancel was requested (the worker
/// should stop and return; `bgjob_job_cancel_is_soft` tells a soft cancel);
/// `BGJOB_RESULT_INVALID_HANDLE`.
///
/// Threads: meant for the job's worker thread; another thread calling it would park
/// there instead.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_pause_point(job: *mut bgjob_job) -> bgjob_result {
    if on_worker_nothing_pending(job) {
        return bgjob_result::Ok;
    }
    pause_point(job)
}

/// `bgjob_job_pause_point`'s general path.
#[cold]
#[inline(never)]
fn pause_point(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| with_job(job, |j, _| j.pause_point())?.map_err(Into::into))
}

/// Sets the total number of units (bytes, blocks…). It may move either way; 0
/// means unknown.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_NOT_ALLOWED` once the job has ended.
///
/// Threads: any thread; on the job's worker thread it is a pause point (it
/// parks while the job is paused), unless the job was created with
/// `BGJOB_CREATE_UPDATES_NEVER_PARK`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_total(job: *mut bgjob_job, total: u64) -> bgjob_result {
    boundary(|| update(job, |j, on_worker| j.set_total_from(on_worker, total)))
}

/// Sets the units done. Progress only grows: a smaller value than the current one
/// is refused and changes nothing. A value above the total is kept (the percent
/// is clamped to 100).
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` if it would go
/// backwards; `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED` once ended.
///
/// Threads: any thread; on the job's worker thread it is a pause point (it
/// parks while the job is paused), unless the job was created with
/// `BGJOB_CREATE_UPDATES_NEVER_PARK`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_current(job: *mut bgjob_job, current: u64) -> bgjob_result {
    boundary(|| update(job, |j, on_worker| j.set_current_from(on_worker, current)))
}

/// Adds `units` to the units done (saturating). The cheapest progress call:
/// meant to be called once per block in a copy loop.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_NOT_ALLOWED` once ended.
///
/// Threads: any thread; on the job's worker thread it is a pause point (it
/// parks while the job is paused), unless the job was created with
/// `BGJOB_CREATE_UPDATES_NEVER_PARK`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_add_units(job: *mut bgjob_job, units: u64) -> bgjob_result {
    // The copy loop's call, from the job's worker with nothing pending: one
    // thread-local read, no lookup, no result travelling back through the
    // layers, and (as nothing on it can panic) outside the panic catcher
    // (docs/performance.md, "Progress updates"). Everything else is out of
    // line, so this path saves no more registers than it uses.
    if worker_hot(job).is_some_and(|j| j.add_units_as_worker(units)) {
        return bgjob_result::Ok;
    }
    add_units(job, units)
}

/// `bgjob_job_add_units`' general path.
#[cold]
#[inline(never)]
fn add_units(job: *mut bgjob_job, units: u64) -> bgjob_result {
    boundary(|| update(job, |j, on_worker| j.add_units_from(on_worker, units)))
}

/// Sets the percent done directly, for workers that count in percent rather
/// than units; −1 goes back to the percent computed from units. Unlike
/// `bgjob_job_set_current`, the percent may go down: it is the worker's
/// estimate, and an estimate may be revised.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` outside −1..100
/// (nothing changed); `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED`
/// once ended.
///
/// Threads: any thread; on the job's worker thread it is a pause point (it
/// parks while the job is paused), unless the job was created with
/// `BGJOB_CREATE_UPDATES_NEVER_PARK`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_percent(job: *mut bgjob_job, percent: i32) -> bgjob_result {
    boundary(|| update(job, |j, _| j.set_percent(percent)))
}

/// Sets the remaining time as the worker estimates it, in ms. It counts down
/// with active (unpaused) time until set again; −1 goes back to bgjob's own
/// estimate from the rate.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` below −1;
/// `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED` once ended.
///
/// Threads: any thread; on the job's worker thread it is a pause point (it
/// parks while the job is paused), unless the job was created with
/// `BGJOB_CREATE_UPDATES_NEVER_PARK`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_eta(job: *mut bgjob_job, remaining_ms: i64) -> bgjob_result {
    boundary(|| update(job, |j, _| j.set_eta(remaining_ms)))
}

/// Sets the phase name ("copying", "cleaning up"), copied; readable with
/// `bgjob_job_get_phase` and listed by `bgjob_list_jobs`.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for NULL or
/// non-UTF-8; `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED` once ended.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_phase(
    job: *mut bgjob_job,
    phase: *const c_char,
) -> bgjob_result {
    boundary(|| {
        // SAFETY: NULL or NUL-terminated by contract.
        let phase = unsafe { c_str(phase) }?;
        with_job(job, |j, _| j.set_phase(phase))?.map_err(Into::into)
    })
}

/// Records the job's error: a non-zero code (an errno value is usual) and a
/// message (copied; NULL means none). The job fails only when the worker returns
/// non-zero (or finishes with a non-zero status); this only says why.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for code 0 or a
/// message that is not UTF-8; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_NOT_ALLOWED` once ended.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_error(
    job: *mut bgjob_job,
    code: i32,
    message: *const c_char,
) -> bgjob_result {
    boundary(|| {
        let message = if message.is_null() {
            ""
        } else {
            // SAFETY: NUL-terminated by contract.
            unsafe { c_str(message) }?
        };
        with_job(job, |j, _| j.set_error(code, message))?.map_err(Into::into)
    })
}

/// Records the status the worker reports when it returns (the virJob
/// "finish" style): 0 for success, any other value for failure with that code.
/// The last call wins and it overrides the worker's return value. The job ends
/// when the worker returns, not here.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_NOT_ALLOWED` unless the worker is running.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_finish(job: *mut bgjob_job, status: i32) -> bgjob_result {
    boundary(|| with_job(job, |j, _| j.finish(status))?.map_err(Into::into))
}

/// Ends an external job (`BGJOB_CREATE_EXTERNAL`) as a worker's return ends a
/// threaded one: `code` 0 is success (COMPLETED); any other is failure with
/// that code and `message` (copied; NULL means none) — FAILED, or CANCELLED
/// after a cancel request. A status recorded with `bgjob_job_finish` wins, as
/// for a worker. Transactions (the job waits in WAITING for its siblings),
/// manual finalize, commit/abort/clean and the completion follow as for a
/// threaded job. The job's `userdata` and its control callback's are freed
/// during this call, before the end is published; a control callback running
/// on another thread is waited for first (see `bgjob_control_callback`).
/// Called from inside one of the job's own control calls, the control
/// callback's userdata is in use: it is freed when that call returns, which
/// may be after a waiter has seen the end.
///
/// This call is the job's worker's return: a completion without a context
/// runs on this thread, before it returns (after the commit or abort and
/// clean; in a transaction, only once every member has ended — the member
/// whose end settled the group gets its completion here, the others on
/// bgjob threads of their own). Called from inside one of the job's own
/// event callbacks (directly, or from its control callback's CANCEL), the
/// completion must follow the END event that this end queues: it then runs
/// on this thread right after that event callback returns and END was
/// delivered, not before this call returns. With a context it is queued
/// there. A detached external job's handle stays valid for its owner until this call
/// returns, and is released by it (see `bgjob_job_detach`).
///
/// Calls that need a worker thread — `bgjob_job_pause_point`,
/// `bgjob_job_sleep`, `bgjob_job_wait_fd`, `bgjob_job_spawn_child`,
/// `bgjob_job_watch_child`, `bgjob_job_wait_child` — are refused with
/// `BGJOB_RESULT_NOT_ALLOWED` on an external job: nothing of bgjob ever parks
/// its owner. Progress, phase, ETA, errors (`bgjob_job_report_io_error`:
/// policy STOP pauses the job; the owner learns of the resume through
/// `BGJOB_CONTROL_RESUME`), results and cancel hooks work from any thread.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a message that is not UTF-8;
/// `BGJOB_RESULT_NOT_ALLOWED` for a threaded job, one not started (CREATED),
/// and once ended (a second `bgjob_job_end`: exactly one of two racing calls
/// succeeds).
///
/// Threads: any thread, the control callback included (to end the job from
/// inside its `BGJOB_CONTROL_CANCEL`). A failure ended here aborts the job's
/// transaction inside this call: the siblings' control callbacks hear
/// `BGJOB_CONTROL_CANCEL` on this thread before it returns, so a driver whose
/// callback talks to the hypervisor should queue the verb for its loop rather
/// than send it from the callback (it would re-enter the loop that called
/// `bgjob_job_end`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_end(
    job: *mut bgjob_job,
    code: i32,
    message: *const c_char,
) -> bgjob_result {
    boundary(|| {
        let message = if message.is_null() {
            ""
        } else {
            // SAFETY: NUL-terminated by contract.
            unsafe { c_str(message) }?
        };
        let result = if code == 0 {
            Ok(())
        } else {
            Err(core::JobError::new(code, message))
        };
        let (j, detached) = with_job(job, |j, _| {
            j.end(result).map(|()| (j.clone(), j.is_detached()))
        })??;
        let jobs = &super::handles::JOBS;
        if detached {
            // A detached external job's handle lived for its owner until now.
            jobs.remove(job.addr());
        }
        // Handles its owner detached while other references lived, kept
        // until now (bgjob_job_detach); once none is left, the job is
        // detached, as a detach of its last handle would have made it.
        let kept = j.take_release_at_end();
        if !kept.is_empty() {
            for h in kept {
                jobs.remove(h);
            }
            if job_handle_count(&j) == 0 && !j.is_detached() {
                let _ = j.detach(false);
            }
        }
        Ok(())
    })
}

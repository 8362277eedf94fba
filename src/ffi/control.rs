//! Control of a job from outside: cancel, pause, resume, wait, destroy, detach.

use super::handles::{JOBS, job_handle_count, to_ptr, with_job};
use super::{
    BGJOB_DETACH_CANCEL, bgjob_cancel_status, bgjob_job, bgjob_result, bgjob_state, bgjob_state_in,
    boundary, need, put, timeout_arg,
};
use crate::core;

/// Requests cancellation and returns at once (it never waits for the worker).
///
/// Cancel is cooperative: the worker learns of it from `bgjob_job_check_cancel`
/// and `bgjob_job_pause_point` (both return `BGJOB_RESULT_CANCELLED`), and a
/// worker parked at a pause point or progress call wakes up. Progress calls
/// themselves still succeed after a cancel (an update is not a failure), so a
/// worker must check. The worker decides the outcome (a job may still complete). A
/// CREATED job ends CANCELLED without its worker running (its userdata is freed
/// before this returns). A paused job is resumed so its worker can see the cancel.
///
/// `status_out` (may be NULL) gets which race this call met: REQUESTED,
/// ALREADY_REQUESTED or ALREADY_FINISHED.
///
/// Returns: `BGJOB_RESULT_OK` (in every state); `BGJOB_RESULT_INVALID_HANDLE`.
///
/// Threads: any number of threads may cancel the same job at once: exactly one gets
/// REQUESTED.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_cancel(
    job: *mut bgjob_job,
    status_out: *mut bgjob_cancel_status,
) -> bgjob_result {
    boundary(|| {
        let status = with_job(job, |j, _| j.cancel())?;
        // SAFETY: NULL or writable by contract.
        unsafe { put(status_out, bgjob_cancel_status::from(status)) };
        Ok(())
    })
}

/// Pauses a running job: its worker parks at its next pause point, and elapsed
/// time stops counting.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_NOT_ALLOWED` unless the job is RUNNING (it becomes PAUSED) or
/// READY (it becomes STANDBY), so pausing twice is refused.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_pause(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| with_job(job, |j, _| j.pause())?.map_err(Into::into))
}

/// Resumes a paused job: PAUSED becomes RUNNING, STANDBY becomes READY.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_NOT_ALLOWED` unless the job is PAUSED or STANDBY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_resume(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| with_job(job, |j, _| j.resume())?.map_err(Into::into))
}

/// Waits until the job has ended, for at most `timeout_ms` milliseconds (−1:
/// forever; 0: just look). WAITING and PENDING are not an end: a job waiting
/// for its transaction or for a manual finalize keeps this waiting (and a finite
/// wait times out) until it is finalized. When it returns OK the job is terminal, its
/// userdata has been freed, and a completion bound to a context is already
/// queued there (one delivered on the worker thread may still be running). The
/// handle stays valid: destroy it afterwards.
///
/// `state_out` (may be NULL) gets the final `bgjob_state` on success.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_TIMED_OUT`;
/// `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_INVALID_ARGUMENT` for a
/// `timeout_ms` below −1; `BGJOB_RESULT_NOT_ALLOWED` when called from the job's own
/// worker (it would wait for itself).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_wait(
    job: *mut bgjob_job,
    timeout_ms: i64,
    state_out: *mut bgjob_state,
) -> bgjob_result {
    boundary(|| {
        let timeout = timeout_arg(timeout_ms)?;
        let state = with_job(job, |j, _| j.wait(timeout))??;
        // SAFETY: NULL or writable by contract.
        unsafe { put(state_out, bgjob_state::from(state)) };
        Ok(())
    })
}

/// Waits until the job is in `state` (any `bgjob_state`, e.g.
/// `BGJOB_STATE_READY` or `BGJOB_STATE_PENDING`) or has ended, for at most
/// `timeout_ms` milliseconds (−1: forever; 0: just look). `*state_out` (may be
/// NULL) gets the state found: `state`, or the terminal state the job ended
/// in instead. A state the job passed through between two looks may be
/// missed (READY then COMPLETED at once gives COMPLETED); the event callback
/// sees every change. The job's state changes wake it; a change that does
/// not is seen within 20 ms.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_TIMED_OUT`;
/// `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_INVALID_ARGUMENT` for an
/// unknown state or a `timeout_ms` below −1; `BGJOB_RESULT_NOT_ALLOWED` when
/// called from the job's own worker.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_wait_state(
    job: *mut bgjob_job,
    state: bgjob_state_in,
    timeout_ms: i64,
    state_out: *mut bgjob_state,
) -> bgjob_result {
    boundary(|| {
        let want = bgjob_state::try_from(state)?.into();
        let timeout = timeout_arg(timeout_ms)?;
        let found = with_job(job, |j, _| j.wait_state(want, timeout))??;
        // SAFETY: NULL or writable by contract.
        unsafe { put(state_out, bgjob_state::from(found)) };
        Ok(())
    })
}

/// Releases a job that has ended, or one that never started (which is cancelled
/// first: its worker never runs and its userdata is freed now). Its result, if
/// it has one and nobody took it, is freed now too. The handle and every copy
/// of it are invalid afterwards.
///
/// Shared references (`bgjob_job_ref`, `bgjob_job_lookup`): on a handle that is
/// not the job's last one, destroy releases that reference only, in any state
/// (always OK; the job runs on, the other handles stay valid). Only the last
/// handle's destroy has the meaning above. On a detached job (a handle from
/// `bgjob_job_lookup`), even the last handle's destroy only releases it.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE` (also for a double
/// destroy); `BGJOB_RESULT_NOT_ALLOWED` on the last handle while the worker may
/// still run (RUNNING, PAUSED, READY, STANDBY) or the job waits for its end
/// (WAITING, PENDING): wait for it, or use `bgjob_job_detach`.
///
/// Threads: of two threads destroying the same handle, one succeeds and the other
/// gets INVALID_HANDLE.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_destroy(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| {
        // Decided under the table lock, so the check, the cancel of a created job
        // and the removal of the handle are one step; what it frees is dropped
        // only after the table lock is gone.
        let mut release = None;
        JOBS.remove_if(job.addr(), |j| {
            // The count only changes under the table's lock, held here.
            if job_handle_count(j) > 1 || j.is_detached() {
                return Ok(());
            }
            release = Some(j.begin_release()?);
            Ok(())
        })?;
        drop(release);
        Ok(())
    })
}

/// Gives up the handle; the job frees itself when it ends. With
/// `BGJOB_DETACH_CANCEL` in `flags` it is cancelled first, else it runs on (a
/// paused job is resumed and its internal pauses are dropped: nobody could
/// resume them later, and from then on its STOP error policy reports instead
/// of stopping).
///
/// A detached job always reaches a terminal state by itself and runs its
/// completion, commit/abort and clean exactly once: nobody can finalize it
/// now, so a manual-finalize job (one PENDING already included) finalizes as
/// soon as its work is done — committing if its worker succeeded, even after
/// the cancel — and a manual-finalize transaction with a detached member
/// finalizes by itself once every member is done.
/// Detaching an ended job is the same as destroying it. The handle is invalid
/// afterwards for the caller (the job's own worker may keep using it until it
/// returns).
///
/// Shared references: detaching a handle that is not the job's last one (or a
/// handle of a job already detached) releases that reference only (a handle
/// of an external job not ended yet: once its end returns, see below); with
/// `BGJOB_DETACH_CANCEL` the job is cancelled too. The job is detached when
/// its last handle is.
///
/// An external job (`BGJOB_CREATE_EXTERNAL`) whose owner has not ended it
/// yet is the exception: its owner still drives it by this handle, so the
/// handle stays valid until `bgjob_job_end` returns, which releases it (with
/// `BGJOB_DETACH_CANCEL` the owner hears `BGJOB_CONTROL_CANCEL` and ends it as
/// usual). That holds while other references live too: they are untouched
/// (and may be released while the job runs), the end releases the detached
/// handle whichever handle makes it, and the job counts as detached once no
/// handle is left then. Pause is refused from then on, as for any detached job. Its manual
/// finalize, which nobody can ask any more, is told to the owner as
/// `BGJOB_CONTROL_FINALIZE`: at once if the owner reported it PENDING
/// (`bgjob_job_report_state`), else when it does.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for an unknown flag; `BGJOB_RESULT_NOT_ALLOWED`
/// for a CREATED job (it would never run: start or destroy it instead).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_detach(job: *mut bgjob_job, flags: u32) -> bgjob_result {
    boundary(|| {
        if flags & !BGJOB_DETACH_CANCEL != 0 {
            return Err(bgjob_result::InvalidArgument);
        }
        let j = with_job(job, |j, _| j.clone())?;
        if j.is_external()
            && !j.work_done()
            && job_handle_count(&j) > 1
            && !j.is_detached()
            && j.release_at_end(job.addr())
        {
            // Not its last handle, but its owner's all the same: the owner
            // still ends it by this handle, which that end releases (the
            // other references are untouched, and the job is detached only
            // if none is left by then).
            if flags & BGJOB_DETACH_CANCEL != 0 {
                j.cancel();
            }
            return Ok(());
        }
        if j.is_external() && !j.work_done() && job_handle_count(&j) <= 1 && !j.is_detached() {
            // Its last handle: its owner still drives it by this handle and ends it: the
            // handle is released by `bgjob_job_end` (or here, if the end came
            // first).
            j.detach(flags & BGJOB_DETACH_CANCEL != 0)?;
            if j.work_done() {
                JOBS.remove(job.addr());
            }
            return Ok(());
        }
        let mut last = false;
        let j = JOBS.remove_if(job.addr(), |j| {
            if job_handle_count(j) > 1 || j.is_detached() {
                return Ok(());
            }
            last = true;
            j.check(core::Verb::Detach).map_err(bgjob_result::from)
        })?;
        if !last {
            if flags & BGJOB_DETACH_CANCEL != 0 {
                j.cancel();
            }
            return Ok(());
        }
        j.detach(flags & BGJOB_DETACH_CANCEL != 0)
            .map_err(Into::into)
    })
}

/// Takes a new reference to a job: `*job_out` is a new handle value naming the
/// same job (GTask's `g_object_ref`, QIOTask holding its source). Each handle
/// is its own reference: releasing one (`bgjob_job_destroy`,
/// `bgjob_job_detach`) never invalidates another, and a released handle's
/// value stays invalid for ever, so one owner's stale handle can never release
/// another owner's reference. The job's last handle keeps the usual meaning of
/// destroy and detach; the others only release themselves. Every handle works
/// for every call (verbs, info, waits) in every state.
///
/// Completion and commit/abort/clean callbacks get the creator's handle while
/// the creator holds it; once the creator has released theirs while another
/// reference lives, a handle valid for the duration of the callback (take a
/// reference inside it to keep the job longer). A lent creator's handle
/// stays the creator's: released during the callback, it is invalid for the
/// rest of the call too (calls through it return `BGJOB_RESULT_INVALID_HANDLE`).
/// The worker always gets the creator's handle, valid on its own
/// thread until it returns. After fork() every reference is invalid in the
/// child, like any handle.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` if `job_out` is NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_ref(
    job: *mut bgjob_job,
    job_out: *mut *mut bgjob_job,
) -> bgjob_result {
    boundary(|| {
        super::need(job_out)?;
        let h = JOBS.share(job.addr()).ok_or(bgjob_result::InvalidHandle)?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { job_out.write(to_ptr(h)) };
        Ok(())
    })
}

/// Finds a job by id (`bgjob_info.id`, `bgjob_job_entry.id`) and gives a new
/// handle for it, a reference as `bgjob_job_ref` makes: release it with
/// `bgjob_job_destroy` or `bgjob_job_detach`.
///
/// Found: any job some handle still names, in any state, and a detached job
/// that has not ended (QIOTask/GTask let a listing reach a task nobody else
/// holds). A detached job stays detached: destroy or detach of a looked-up
/// handle only releases that handle, and the job still frees itself when it
/// ends. Not found: ids never given, jobs whose last handle was released, and
/// detached jobs that have ended.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` if `job_out` is
/// NULL or no such job is found.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_lookup(id: u64, job_out: *mut *mut bgjob_job) -> bgjob_result {
    boundary(|| {
        super::need(job_out)?;
        let job = core::job::lookup(id).ok_or(bgjob_result::InvalidArgument)?;
        let h = JOBS
            .insert_checked(job, |j| {
                job_handle_count(j) > 0 || (j.is_detached() && !j.state().is_terminal())
            })
            .ok_or(bgjob_result::InvalidArgument)?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { job_out.write(to_ptr(h)) };
        Ok(())
    })
}

/// Sets the job's speed limit in bytes per second (0 = unlimited; QEMU's
/// `job-set-speed`). bgjob only stores it (`bgjob_job_get_speed`) and, when
/// it changed, tells the job's control callback (`BGJOB_CONTROL_SET_SPEED`
/// with the new value), on this thread, before this returns; the worker or
/// owner applies it.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a speed over `INT64_MAX`;
/// `BGJOB_RESULT_NOT_ALLOWED` once the job's work is done (WAITING or ended).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_speed(
    job: *mut bgjob_job,
    bytes_per_second: u64,
) -> bgjob_result {
    boundary(|| {
        if i64::try_from(bytes_per_second).is_err() {
            return Err(bgjob_result::InvalidArgument);
        }
        with_job(job, |j, _| j.set_speed(bytes_per_second))?.map_err(Into::into)
    })
}

/// Reads the speed limit last set with `bgjob_job_set_speed` (0 = unlimited,
/// the default) into `*bytes_per_second_out`. Readable until destroy.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `bytes_per_second_out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_get_speed(
    job: *mut bgjob_job,
    bytes_per_second_out: *mut u64,
) -> bgjob_result {
    boundary(|| {
        need(bytes_per_second_out)?;
        let speed = with_job(job, |j, _| j.speed())?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { bytes_per_second_out.write(speed) };
        Ok(())
    })
}

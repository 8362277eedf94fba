//! QEMU job semantics: manual finalize, internal pauses, error policies and I/O
//! error reports.

use super::handles::with_job;
use super::{
    bgjob_error_action, bgjob_error_policy_in, bgjob_job, bgjob_result, boundary, c_str, need, put,
};

/// Finalizes a job created with `BGJOB_CREATE_MANUAL_FINALIZE` (QEMU's
/// `job_finalize`) once its work is done: its commit (or abort) and clean
/// callbacks run on this thread, then it ends. For a member of a transaction
/// it finalizes the transaction (as soon as every member is done).
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` unless the job is
/// `BGJOB_STATE_WAITING` (and not already being finalized);
/// `BGJOB_RESULT_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_finalize(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| with_job(job, |j, _| j.finalize())?.map_err(bgjob_result::from))
}

/// An internal pause (QEMU's drain): a counter beside the user pause. The
/// worker runs only while both are clear; it parks at its next pause point,
/// cancellable wait or progress update, and paused time does not count. The
/// state stays RUNNING (`bgjob_info.pause_count` shows it). Balance each with
/// `bgjob_job_resume_internal`.
///
/// A cancel overrides internal pauses, as QEMU's force-cancel does: the
/// worker's pause points stop parking and report the cancel, so a cancelled
/// job may run to its end with the count above 0. Once the job has ended the
/// count reads 0 and a balancing `bgjob_job_resume_internal` returns
/// `BGJOB_RESULT_NOT_ALLOWED`, which the caller may ignore. A detach drops
/// every internal pause (nobody could balance them later).
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` once the job has ended;
/// `BGJOB_RESULT_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_pause_internal(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| with_job(job, |j, _| j.pause_internal())?.map_err(bgjob_result::from))
}

/// Undoes one `bgjob_job_pause_internal`.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` for an unbalanced resume
/// (no internal pause in force) or a job that has ended;
/// `BGJOB_RESULT_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_resume_internal(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| with_job(job, |j, _| j.resume_internal())?.map_err(bgjob_result::from))
}

/// Changes the job's `bgjob_error_policy` (set at create with
/// `bgjob_job_options.error_policy`).
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for an unknown
/// policy; `BGJOB_RESULT_NOT_ALLOWED` once the work is done;
/// `BGJOB_RESULT_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_error_policy(
    job: *mut bgjob_job,
    policy: bgjob_error_policy_in,
) -> bgjob_result {
    boundary(|| {
        let policy = super::bgjob_error_policy::try_from(policy)?.into();
        with_job(job, |j, _| j.set_error_policy(policy))?.map_err(bgjob_result::from)
    })
}

/// For the worker: an I/O error happened (`code` errno-style, non-zero;
/// `message` may be NULL). The job's error policy decides, and
/// `*action_out` says what to do:
/// - `BGJOB_ERROR_ACTION_REPORT`: give up; `code` and `message` are now the
///   job's error — return non-zero.
/// - `BGJOB_ERROR_ACTION_IGNORE`: carry on.
/// - `BGJOB_ERROR_ACTION_STOP`: the job is now user-paused (PAUSED) with
///   `iostatus` FAILED (NOSPACE for ENOSPC); call `bgjob_job_pause_point`,
///   which parks until a resume (resetting `iostatus` to OK) or returns
///   CANCELLED (a cancel resets it too), then retry.
///
/// Which answer each policy gives (`code` 28 is ENOSPC):
///
/// | policy | `code` == ENOSPC       | any other `code`      |
/// |--------|------------------------|-----------------------|
/// | REPORT | REPORT                 | REPORT                |
/// | IGNORE | IGNORE                 | IGNORE                |
/// | STOP   | STOP, iostatus NOSPACE | STOP, iostatus FAILED |
/// | ENOSPC | STOP, iostatus NOSPACE | REPORT                |
///
/// A job whose cancel was requested is never stopped, nor is a detached one
/// (nobody could resume it): either is told to report.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL
/// `action_out`, a zero code or a message that is not UTF-8;
/// `BGJOB_RESULT_NOT_ALLOWED` unless the job is running;
/// `BGJOB_RESULT_INVALID_HANDLE`.
///
/// Threads: meant for the job's worker thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_report_io_error(
    job: *mut bgjob_job,
    code: i32,
    message: *const std::ffi::c_char,
    action_out: *mut bgjob_error_action,
) -> bgjob_result {
    boundary(|| {
        need(action_out)?;
        let message = if message.is_null() {
            ""
        } else {
            // SAFETY: NUL-terminated by contract.
            unsafe { c_str(message) }?
        };
        let action = with_job(job, |j, _| j.report_io_error(code, message))??;
        let action = bgjob_error_action::from(action);
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(action_out, action) };
        Ok(())
    })
}

//! QEMU's job semantics beyond the basics: transactions, manual finalize,
//! internal pauses (drain) and the I/O error policy.

use super::handles::{TXNS, with_job};
use super::{
    BGJOB_TXN_MANUAL_FINALIZE, bgjob_job, bgjob_result, bgjob_txn, boundary, c_str, need, put,
};
use crate::core::Txn;

fn txn_of(p: *mut bgjob_txn) -> Result<Txn, bgjob_result> {
    TXNS.get(p.addr()).ok_or(bgjob_result::InvalidHandle)
}

/// Creates an empty transaction (QEMU's `JobTxn`). Add jobs that have not
/// started with `bgjob_txn_add`, then start them with `bgjob_txn_start` (or
/// each with `bgjob_job_start`). When any member fails or is cancelled, every
/// other member is cancelled (`cancel_cause` TRANSACTION). Members whose work
/// is done wait in `BGJOB_STATE_WAITING` until all are done; then each
/// member's commit callback runs if all succeeded, else its abort callback;
/// then each one's clean callback; then the members end (a member that failed
/// ends FAILED, every other one of an aborted transaction CANCELLED) and their
/// completions run. `flags`: 0 or `BGJOB_TXN_MANUAL_FINALIZE`.
///
/// # Returns
/// `BGJOB_RESULT_OK` with `*txn_out` set; `BGJOB_RESULT_INVALID_ARGUMENT` for
/// a NULL `txn_out` or unknown flags.
///
/// # Safety
/// `txn_out` is NULL or writable. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_txn_create(
    flags: u32,
    txn_out: *mut *mut bgjob_txn,
) -> bgjob_result {
    boundary(|| {
        need(txn_out)?;
        if flags & !BGJOB_TXN_MANUAL_FINALIZE != 0 {
            return Err(bgjob_result::InvalidArgument);
        }
        let h = TXNS.insert(Txn::new(flags & BGJOB_TXN_MANUAL_FINALIZE != 0));
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(txn_out, super::handles::to_ptr(h)) };
        Ok(())
    })
}

/// Releases the caller's reference to the transaction; the handle is invalid
/// afterwards. Safe at any time: the members keep the transaction going and
/// it settles as it would have.
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`.
///
/// # Safety
/// Any handle value is safe. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_txn_destroy(txn: *mut bgjob_txn) -> bgjob_result {
    boundary(|| {
        TXNS.remove(txn.addr()).ok_or(bgjob_result::InvalidHandle)?;
        Ok(())
    })
}

/// Adds a job that has not started (created with `BGJOB_CREATE_DEFER_START`).
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` for a job that started,
/// ended or is being cancelled, or a transaction that already started or
/// settled; `BGJOB_RESULT_INVALID_ARGUMENT` for a job already in a
/// transaction; `BGJOB_RESULT_INVALID_HANDLE` for either handle.
///
/// # Safety
/// Any handle values are safe. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_txn_add(txn: *mut bgjob_txn, job: *mut bgjob_job) -> bgjob_result {
    boundary(|| {
        let t = txn_of(txn)?;
        with_job(job, |j, _| t.add(j))?.map_err(bgjob_result::from)
    })
}

/// Starts every member that has not started. If a thread cannot be had for
/// one, the whole transaction is cancelled and `BGJOB_RESULT_TRY_AGAIN`
/// returned.
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` if it was started before;
/// `BGJOB_RESULT_TRY_AGAIN`; `BGJOB_RESULT_INVALID_HANDLE`.
///
/// # Safety
/// Any handle value is safe. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_txn_start(txn: *mut bgjob_txn) -> bgjob_result {
    boundary(|| txn_of(txn)?.start().map_err(bgjob_result::from))
}

/// Cancels every member, each with `cancel_cause` CALLER; returns at once.
/// The cause is fixed before any member is cancelled, so a member's worker
/// returning meanwhile cannot turn another's into TRANSACTION. The one
/// exception: a transaction already aborting (a member failed or was
/// cancelled on its own before this call) keeps its members' cause
/// TRANSACTION, and this call changes nothing.
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`.
///
/// # Safety
/// Any handle value is safe. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_txn_cancel(txn: *mut bgjob_txn) -> bgjob_result {
    boundary(|| {
        txn_of(txn)?.cancel();
        Ok(())
    })
}

/// Finalizes a `BGJOB_TXN_MANUAL_FINALIZE` transaction: at once (on this
/// thread) if every member is done, else as soon as the last one is.
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` once it has settled;
/// `BGJOB_RESULT_INVALID_HANDLE`.
///
/// # Safety
/// Any handle value is safe. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_txn_finalize(txn: *mut bgjob_txn) -> bgjob_result {
    boundary(|| txn_of(txn)?.finalize().map_err(bgjob_result::from))
}

/// Finalizes a job created with `BGJOB_CREATE_MANUAL_FINALIZE` (QEMU's
/// `job_finalize`) once its work is done: its commit (or abort) and clean
/// callbacks run on this thread, then it ends. For a member of a transaction
/// it finalizes the transaction (as soon as every member is done).
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` unless the job is
/// `BGJOB_STATE_WAITING` (and not already being finalized);
/// `BGJOB_RESULT_INVALID_HANDLE`.
///
/// # Safety
/// Any handle value is safe. Thread-safe.
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
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` once the job has ended;
/// `BGJOB_RESULT_INVALID_HANDLE`.
///
/// # Safety
/// Any handle value is safe. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_pause_internal(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| with_job(job, |j, _| j.pause_internal())?.map_err(bgjob_result::from))
}

/// Undoes one `bgjob_job_pause_internal`.
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` for an unbalanced resume (no
/// internal pause in force) or a job that has ended;
/// `BGJOB_RESULT_INVALID_HANDLE`.
///
/// # Safety
/// Any handle value is safe. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_resume_internal(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| with_job(job, |j, _| j.resume_internal())?.map_err(bgjob_result::from))
}

/// Changes the job's `bgjob_error_policy` (set at create with
/// `bgjob_job_options.error_policy`).
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for an unknown policy;
/// `BGJOB_RESULT_NOT_ALLOWED` once the work is done;
/// `BGJOB_RESULT_INVALID_HANDLE`.
///
/// # Safety
/// Any handle value is safe. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_error_policy(
    job: *mut bgjob_job,
    policy: i32,
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
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL
/// `action_out`, a zero code or a message that is not UTF-8;
/// `BGJOB_RESULT_NOT_ALLOWED` unless the job is running;
/// `BGJOB_RESULT_INVALID_HANDLE`.
///
/// # Safety
/// `message` is NULL or a NUL-terminated string; `action_out` is NULL or
/// writable. Meant for the job's worker thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_report_io_error(
    job: *mut bgjob_job,
    code: i32,
    message: *const std::ffi::c_char,
    action_out: *mut i32,
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
        let action = super::bgjob_error_action::from(action);
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(action_out, action as i32) };
        Ok(())
    })
}

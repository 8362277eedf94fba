//! Transactions: jobs that finalize together (QEMU's JobTxn).

use super::handles::{TXNS, with_job};
use super::{BGJOB_TXN_MANUAL_FINALIZE, bgjob_job, bgjob_result, bgjob_txn, boundary, need, put};
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
/// completions run. `flags`: 0 or `BGJOB_TXN_MANUAL_FINALIZE` (then, once
/// every member's work is done and succeeded, every member turns
/// `BGJOB_STATE_PENDING` and the group waits for `bgjob_txn_finalize`).
///
/// Returns: `BGJOB_RESULT_OK` with `*txn_out` set; `BGJOB_RESULT_INVALID_ARGUMENT`
/// for a NULL `txn_out` or unknown flags.
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
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_txn_destroy(txn: *mut bgjob_txn) -> bgjob_result {
    boundary(|| {
        TXNS.remove(txn.addr()).ok_or(bgjob_result::InvalidHandle)?;
        Ok(())
    })
}

/// Adds a job that has not started (created with `BGJOB_CREATE_DEFER_START`).
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` for a job that started,
/// ended or is being cancelled, or a transaction that already started, is aborting
/// (one of its members was cancelled or failed) or settled;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a job already in a transaction;
/// `BGJOB_RESULT_INVALID_HANDLE` for either handle.
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
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` if it was started before;
/// `BGJOB_RESULT_TRY_AGAIN`; `BGJOB_RESULT_INVALID_HANDLE`.
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
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`.
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
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` once it has settled;
/// `BGJOB_RESULT_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_txn_finalize(txn: *mut bgjob_txn) -> bgjob_result {
    boundary(|| txn_of(txn)?.finalize().map_err(bgjob_result::from))
}

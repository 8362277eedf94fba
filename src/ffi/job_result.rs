//! A job's result: set by its worker, read or taken by the caller once it ended.

use super::handles::with_job;
use super::{UserData, bgjob_free_callback, bgjob_job, bgjob_result, boundary, need};
use std::ffi::c_void;

/// Worker side: leaves a result for the caller, replacing an earlier one (which
/// is freed now). Ownership of `result` passes to bgjob on every path:
/// `result_free` (may be NULL) runs exactly once — when replaced, when the job
/// is destroyed, or at once if this call fails — unless the caller takes it
/// with `bgjob_job_take_result`.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_NOT_ALLOWED` once the job has ended.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_result(
    job: *mut bgjob_job,
    result: *mut c_void,
    result_free: bgjob_free_callback,
) -> bgjob_result {
    let value = UserData::new(result, result_free);
    boundary(move || with_job(job, |j, _| j.set_result(Box::new(value)))?.map_err(Into::into))
}

/// Writes the job's result pointer to `*result_out` (NULL if the worker left
/// none). The job still owns it: it stays valid until the job is destroyed.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` if `result_out` is NULL;
/// `BGJOB_RESULT_NOT_ALLOWED` before the job has ended.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_get_result(
    job: *mut bgjob_job,
    result_out: *mut *mut c_void,
) -> bgjob_result {
    boundary(|| {
        need(result_out)?;
        let ptr = with_job(job, |j, _| {
            j.with_result(|r| {
                r.and_then(|v| v.downcast_ref::<UserData>())
                    .map_or(std::ptr::null_mut(), |u| u.ptr)
            })
        })??;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { result_out.write(ptr) };
        Ok(())
    })
}

/// Takes the job's result: `*result_out` gets the pointer (NULL if none) and
/// the caller now owns it; bgjob will not call its free function.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` if `result_out` is NULL;
/// `BGJOB_RESULT_NOT_ALLOWED` before the job has ended.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_take_result(
    job: *mut bgjob_job,
    result_out: *mut *mut c_void,
) -> bgjob_result {
    boundary(|| {
        need(result_out)?;
        let taken = with_job(job, |j, _| j.take_result())??;
        let ptr = match taken.map(|v| v.downcast::<UserData>()) {
            Some(Ok(u)) => u.into_raw(),
            _ => std::ptr::null_mut(),
        };
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { result_out.write(ptr) };
        Ok(())
    })
}

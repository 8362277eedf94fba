//! The process-wide thread pool: a cap on job workers running at once.

use super::{bgjob_result, boundary, put};
use crate::core::Pool;

/// Caps the number of job workers that run at once, process-wide; 0 (the
/// default) removes the cap.
///
/// Without a cap every started job gets a thread at once (an idle one, else a
/// new one), so no job ever waits behind another. With a cap of `n`, at most
/// `n` workers run; a job started beyond it is queued (first in, first out)
/// and shows as `BGJOB_STATE_RUNNING` — it may be paused, cancelled, waited
/// for and detached like any running job — and a thread whose job ended takes
/// the oldest queued one straight away, as GLib's thread pool (GTask's pool
/// has 10 threads) and QEMU's thread pool do. The cap counts workers: a slot
/// is free once its worker has returned and its userdata was freed, so when
/// that thread still runs the job's end (a completion without a context, an
/// event callback, commit, abort or clean, the log callback's line) the
/// queued job starts at once on another thread, and those may wait for it.
/// A queued job no thread can be started for (`pthread_create` failing: a
/// thread limit reached) is tried again every 20 ms by an idle pool thread,
/// which stays alive for it, and at the next job's end or start; a cancel
/// still ends it unrun meanwhile. A queued job that is cancelled
/// ends `BGJOB_STATE_CANCELLED` before `bgjob_job_cancel` returns, without
/// its worker running (its userdata is freed, its completion is delivered as
/// usual); once a thread has taken it, its worker decides as for any job. A
/// queued job that was paused starts when its turn comes and parks at its
/// first pause point, holding its slot.
///
/// Raising or removing the cap starts queued jobs at once; lowering it stops
/// nothing: running workers finish and queued jobs start only while fewer
/// than the new cap run. Jobs of the process all share this one cap, so
/// workers that wait for other jobs can deadlock under a cap no larger than
/// the chain of waits (GTask's livelock): leave the cap off for such jobs.
///
/// Returns: `BGJOB_RESULT_OK`.
#[unsafe(no_mangle)]
pub extern "C" fn bgjob_pool_set_max_running(max_running: u32) -> bgjob_result {
    boundary(|| {
        Pool::global().set_max_running(max_running as usize);
        Ok(())
    })
}

/// Reads the process-wide pool's state: `*max_running_out` gets the cap (0 =
/// none), `*running_out` the job workers running now, `*queued_out` the
/// started jobs waiting for a slot. Each output may be NULL. The figures are a
/// snapshot: other threads may change them right after.
///
/// Returns: `BGJOB_RESULT_OK`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_pool_get_status(
    max_running_out: *mut u32,
    running_out: *mut usize,
    queued_out: *mut usize,
) -> bgjob_result {
    boundary(|| {
        let pool = Pool::global();
        let (max, running, queued) = pool.status();
        // SAFETY: each is NULL or writable by contract.
        unsafe {
            put(max_running_out, u32::try_from(max).unwrap_or(u32::MAX));
            put(running_out, running);
            put(queued_out, queued);
        }
        Ok(())
    })
}

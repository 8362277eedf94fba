//! The libvirt virJob proposal as a drop-in layer over bgjob.
//!
//! A `virJobPtr` is a handle in its own table (tag 3), naming a [`VirJob`]: a
//! bgjob job (with its own `bgjob_job *` handle, so every `bgjob_*` call works
//! on it too) plus what the proposal adds: the connection, the driver table,
//! the worker's own ETA and percentage, the declared outcome
//! (`virJobFinish*`), the domain or network a job made, and the libvirt-shaped
//! error. No job rule is decided here: outcome, cancel, pause and progress are
//! bgjob core's; this file maps the proposal's calls and numbers onto them.
//!
//! The header `include/virjob.h` is generated from this file alone by
//! `build.rs` (with the libvirt type block from `cbindgen-virjob.toml`).

#![allow(non_snake_case, non_camel_case_types)]

use super::control::bgjob_job_detach;
use super::handles::{JOBS, Table, VIRJOB_TAG, run_as_worker, to_ptr};
use super::{UserData, bgjob_job, boundary_or, c_str};
use crate::core::{self, JobError, JobType, State};
use std::cell::RefCell;
use std::ffi::{CString, c_char, c_int, c_uint, c_void};
use std::sync::{Arc, Mutex, MutexGuard};

mod types;

pub use types::*;

/// The error a `virJobGetError` pointer points into; boxed, so it stays put
/// until the job is freed.
struct ErrorBox {
    error: _virError,
    _message: CString,
}

/// The proposal's state a bgjob job does not keep. Guarded by one mutex that
/// is never held while user code runs.
struct Extra {
    /// The worker's ETA in seconds, once it set one.
    eta_s: Option<i64>,
    /// The worker's percentage, once it set one.
    percent: Option<i64>,
    domain: virDomainPtr,
    network: virNetworkPtr,
    error: Option<Box<ErrorBox>>,
}

/// Shared between the handle and the worker closure.
struct Shared(Mutex<Extra>);

// SAFETY: the raw pointers in `Extra` are the caller's libvirt objects and a
// boxed error that bgjob owns; bgjob only stores and returns them, always under
// the mutex.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Extra> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a `virJobPtr` names.
pub(crate) struct VirJob {
    /// The bgjob handle of the same job (`virJobGetBgjob`).
    bg: usize,
    job: core::Job,
    conn: virConnectPtr,
    driver: *const virJobDriver,
    shared: Arc<Shared>,
}

// SAFETY: `conn` and `driver` are the caller's pointers, only stored, returned
// and (for the driver table, which the caller keeps valid) read.
unsafe impl Send for VirJob {}
// SAFETY: as above.
unsafe impl Sync for VirJob {}

pub(crate) static VIRJOBS: Table<Arc<VirJob>> = Table::new(VIRJOB_TAG);

thread_local! {
    /// Driver overrides running on this thread: (job, call).
    static IN_OVERRIDE: RefCell<Vec<(usize, Call)>> = const { RefCell::new(Vec::new()) };
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    GetInfo,
    Cancel,
    Destroy,
}

/// The outcome as `virJobInfo.state` reports it: core's final state once the
/// job has ended, the outcome the worker declared (core decided it) before.
fn view_state(job: &core::Job) -> _virJobState {
    match job.decided_outcome() {
        Some(State::Completed) => _virJobState::VIR_JOB_COMPLETE,
        Some(State::Failed) => _virJobState::VIR_JOB_FAILED,
        Some(State::Cancelled) => _virJobState::VIR_JOB_CANCELLED,
        _ => _virJobState::VIR_JOB_RUNNING,
    }
}

fn lookup(job: virJobPtr) -> Option<Arc<VirJob>> {
    VIRJOBS.get(job.addr())
}

/// libvirt's convention: 0 on success, -1 on any error.
fn rc(r: Result<(), ()>) -> c_int {
    if r.is_ok() { 0 } else { -1 }
}

/// Calls the driver's override for `call`, unless this thread is already
/// inside that override for this job (then the caller runs bgjob's own).
fn with_override<F: Copy>(
    vj: &VirJob,
    h: usize,
    call: Call,
    pick: impl FnOnce(&virJobDriver) -> Option<F>,
    run: impl FnOnce(F) -> c_int,
) -> Option<c_int> {
    if vj.driver.is_null() {
        return None;
    }
    // SAFETY: non-NULL, and valid for the job's life by virJobCreate's contract.
    let f = pick(unsafe { &*vj.driver })?;
    if IN_OVERRIDE.with(|s| s.borrow().contains(&(h, call))) {
        return None;
    }
    struct Leave(usize, Call);
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_OVERRIDE.with(|s| {
                let mut s = s.borrow_mut();
                if let Some(i) = s.iter().rposition(|e| *e == (self.0, self.1)) {
                    s.remove(i);
                }
            });
        }
    }
    IN_OVERRIDE.with(|s| s.borrow_mut().push((h, call)));
    let _leave = Leave(h, call);
    Some(run(f))
}

/// Creates a job and starts `worker(job, data)` on its own thread at once.
///
/// `conn` is stored and returned by `virJobGetConnect` (it may be NULL; bgjob
/// never dereferences, references or frees it). `driver` (may be NULL) is the
/// table of overrides for the public calls; it must stay valid for the job's
/// life. `type` is `VIR_JOB_BOUNDED` or `VIR_JOB_UNBOUNDED`.
///
/// Outcome: the worker declares it with one `virJobFinish*` call. A worker that
/// returns without one ends CANCELLED if cancel was requested, else COMPLETE.
///
/// Ownership: `data` passes to bgjob on every path. `freeData` (may be NULL)
/// is called exactly once on it: after the worker has returned, or, when this
/// call fails, before it returns NULL. The job's handle is released with
/// `virJobDestroy` once the job has finished.
///
/// Returns: the new job, or NULL when `worker` is NULL, `type` is not a
/// `virJobType`, or no thread could be started.
///
/// `driver` is NULL or valid for the job's life; `worker`, `freeData` and the
/// members of `*driver` are NULL or valid functions.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobCreate(
    conn: virConnectPtr,
    driver: virJobDriverPtr,
    worker: virJobWorkerFunc,
    freeData: virFreeCallback,
    data: *mut c_void,
    r#type: c_int,
) -> virJobPtr {
    // Built first so every early return frees `data`.
    let data = UserData::new(data, freeData);
    boundary_or(std::ptr::null_mut(), move || {
        create(conn, driver, worker, data, r#type).map_or(std::ptr::null_mut(), to_ptr)
    })
}

fn create(
    conn: virConnectPtr,
    driver: virJobDriverPtr,
    worker: virJobWorkerFunc,
    data: UserData,
    job_type: c_int,
) -> Result<usize, ()> {
    let worker = worker.ok_or(())?;
    let job_type = match job_type {
        0 => JobType::Bounded,
        1 => JobType::Unbounded,
        _ => return Err(()),
    };
    let vh = VIRJOBS.reserve();
    let bh = JOBS.reserve();
    let shared = Arc::new(Shared(Mutex::new(Extra {
        eta_s: None,
        percent: None,
        domain: std::ptr::null_mut(),
        network: std::ptr::null_mut(),
        error: None,
    })));
    let job = core::Builder::new()
        .name("virjob")
        .job_type(job_type)
        // Its create starts it: a cancel by a lookup meanwhile is seen by the
        // worker, not a failed create (as bgjob_job_create's).
        .start_at_once()
        .create(move |w| {
            // Moved in so it drops (and `freeData` runs) at the end of this
            // call, after the worker returned.
            let data = data;
            let job = w.job();
            // bgjob_* calls through virJobGetBgjob's handle take the fast path.
            // SAFETY: the caller's worker with its own data and this job's handle.
            run_as_worker(bh, job, || unsafe { worker(to_ptr(vh), data.ptr) });
            worker_returned(job)
        });
    JOBS.fill(bh, job.clone());
    VIRJOBS.fill(
        vh,
        Arc::new(VirJob {
            bg: bh,
            job: job.clone(),
            conn,
            driver,
            shared,
        }),
    );
    // Started only once both handles are filled: the worker may use them at once.
    if job.start().is_err() {
        VIRJOBS.remove(vh);
        JOBS.remove(bh);
        // Drops the worker closure, so `freeData` runs before create returns.
        job.discard();
        return Err(());
    }
    Ok(vh)
}

/// The proposal's worker returns nothing: returning is `virJobFinishCancel`
/// if nothing was declared (core declares CANCELLED when cancel was
/// requested), else success. A declared outcome wins in core either way.
fn worker_returned(job: &core::Job) -> Result<(), JobError> {
    let _ = job.declare(core::Declare::IfCancelled);
    Ok(())
}

/// Runs a worker-side update: refused (-1) for a bad handle, and whenever
/// core refuses a worker update (the job has ended, or its worker declared
/// its outcome: core's rule, not decided here); on the job's own worker
/// thread it is a pause point.
fn update(job: virJobPtr, f: impl FnOnce(&VirJob, &mut Extra) -> Result<(), ()>) -> c_int {
    boundary_or(-1, || {
        let Some(vj) = lookup(job) else {
            return -1;
        };
        let r = {
            let mut x = vj.shared.lock();
            match vj.job.check_update() {
                Err(_) => Err(()),
                Ok(()) => f(&vj, &mut x),
            }
        };
        if r.is_ok() {
            vj.job.after_update();
        }
        rc(r)
    })
}

fn clamp_percent(p: i64) -> i64 {
    p.clamp(0, 100)
}

/// Tells core the worker's ETA and percentage, then keeps them: nothing is
/// kept when core refuses (the job ended meanwhile).
fn set_progress(
    vj: &VirJob,
    x: &mut Extra,
    eta_s: Option<i64>,
    percent: Option<i64>,
) -> Result<(), ()> {
    if let Some(e) = eta_s {
        vj.job.set_eta(e.saturating_mul(1000)).map_err(|_| ())?;
    }
    if let Some(p) = percent {
        vj.job.set_percent(p as i32).map_err(|_| ())?;
    }
    x.eta_s = eta_s.or(x.eta_s);
    x.percent = percent.or(x.percent);
    Ok(())
}

/// Sets the worker's estimate of the time left, in seconds (clamped to ≥ 0);
/// `virJobInfo.remainingTime` reports it as given until the next update.
///
/// Returns: 0; -1 for a bad handle or a job that has finished.
///
/// Threads: any thread; on the job's worker thread it is a pause point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobInitialize(job: virJobPtr, remainingTime: c_int) -> c_int {
    update(job, |vj, x| {
        set_progress(vj, x, Some(i64::from(remainingTime).max(0)), None)
    })
}

/// Moves progress by deltas: the remaining time by `remainingDelta` seconds
/// (the result clamped to ≥ 0) and the percentage by `percentDelta` (clamped to
/// 0..100). `elapsedDelta` is accepted for compatibility; running time is
/// measured. So after `virJobInitialize(job, 50)`, fifty calls of
/// `virJobUpdateRel(job, 1, -1, 2)` leave remainingTime 0 and
/// percentComplete 100.
///
/// Returns: 0; -1 for a bad handle or a job that has finished.
///
/// Threads: any thread; on the job's worker thread it is a pause point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobUpdateRel(
    job: virJobPtr,
    elapsedDelta: c_int,
    remainingDelta: c_int,
    percentDelta: c_int,
) -> c_int {
    let _ = elapsedDelta;
    update(job, |vj, x| {
        let eta = match (x.eta_s, remainingDelta) {
            (None, 0) => None,
            (e, d) => Some(e.unwrap_or(0).saturating_add(i64::from(d)).max(0)),
        };
        let percent = match (x.percent, percentDelta) {
            (None, 0) => None,
            (p, d) => Some(clamp_percent(p.unwrap_or(0) + i64::from(d))),
        };
        set_progress(vj, x, eta, percent)
    })
}

/// Sets progress outright: the remaining time in seconds (clamped to ≥ 0) and
/// the percentage (clamped to 0..100). `elapsed` is accepted for
/// compatibility; running time is measured.
///
/// Returns: 0; -1 for a bad handle or a job that has finished.
///
/// Threads: any thread; on the job's worker thread it is a pause point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobUpdateAbs(
    job: virJobPtr,
    elapsed: c_int,
    remaining: c_int,
    percent: c_int,
) -> c_int {
    let _ = elapsed;
    update(job, |vj, x| {
        set_progress(
            vj,
            x,
            Some(i64::from(remaining).max(0)),
            Some(clamp_percent(i64::from(percent))),
        )
    })
}

/// Declares the worker's outcome with core, which applies the outcome rules
/// (and refuses a second declaration, or one after the end).
fn declare(job: virJobPtr, declare: core::Declare) -> Result<Option<State>, ()> {
    lookup(job).ok_or(())?.job.declare(declare).map_err(|_| ())
}

/// The worker's cancellation check. If cancel was requested, the job's outcome
/// is now CANCELLED (`virJobInfo.state` says so at once) and the worker should
/// return; otherwise nothing changes.
///
/// Returns: 1 if cancel was requested (the job is now CANCELLED); 0 if not; -1 for
/// a bad handle or when an outcome was already declared.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobFinishCancel(job: virJobPtr) -> c_int {
    boundary_or(-1, || match declare(job, core::Declare::IfCancelled) {
        Ok(Some(_)) => 1,
        Ok(None) => 0,
        Err(()) => -1,
    })
}

/// Declares success: the job is now COMPLETE, even if cancel was requested
/// (the proposal: a job may still complete after a cancel request).
///
/// Returns: 0; -1 for a bad handle or when an outcome was already declared.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobFinishSuccess(job: virJobPtr) -> c_int {
    boundary_or(-1, || rc(declare(job, core::Declare::Success).map(drop)))
}

/// Declares failure with a libvirt error `code` (a `virErrorNumber`, non-zero)
/// and a `message` (copied; NULL gives a generic one): the job is now FAILED,
/// and `virJobGetError` returns them. If cancel was requested first, the job
/// is CANCELLED instead (a cancelled job that did not succeed), with no error.
///
/// Returns: 0; -1 for a bad handle, code 0, a message that is not UTF-8 (nothing is
/// recorded), or when an outcome was already declared.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobFinishFailure(
    job: virJobPtr,
    code: c_int,
    message: *const c_char,
) -> c_int {
    let message = if message.is_null() {
        Ok("")
    } else {
        // SAFETY: NUL-terminated by contract.
        unsafe { c_str(message) }
    };
    boundary_or(-1, || {
        let Ok(message) = message else {
            return -1;
        };
        if code == 0 {
            return -1;
        }
        rc(declare(job, core::Declare::Failure(JobError::new(code, message))).map(drop))
    })
}

/// Records the domain a domain-creating job made; `virJobGetDomain` returns it
/// once the job is COMPLETE. bgjob stores the pointer only: it never
/// references or frees it. NULL clears it.
///
/// Returns: 0; -1 for a bad handle or a job that has finished.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobSetDomain(job: virJobPtr, dom: virDomainPtr) -> c_int {
    update(job, |_, x| {
        x.domain = dom;
        Ok(())
    })
}

/// Records the network a network-creating job made; `virJobGetNetwork`
/// returns it once the job is COMPLETE. Stored only, as `virJobSetDomain`.
///
/// Returns: 0; -1 for a bad handle or a job that has finished.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobSetNetwork(job: virJobPtr, net: virNetworkPtr) -> c_int {
    update(job, |_, x| {
        x.network = net;
        Ok(())
    })
}

/// bgjob's own `virJobGetInfo`.
fn get_info(vj: &VirJob) -> _virJobInfo {
    let i = vj.job.info();
    let x = vj.shared.lock();
    let state = view_state(&vj.job);
    let bounded = i.job_type == JobType::Bounded;
    let running = matches!(state, _virJobState::VIR_JOB_RUNNING);
    let percent = match state {
        _ if !bounded => 0,
        _virJobState::VIR_JOB_COMPLETE => 100,
        _ => i.percent.clamp(0, 100),
    };
    let remaining_s = if !bounded || !running {
        0
    } else if let Some(e) = x.eta_s {
        e
    } else if i.remaining_ms < 0 {
        0
    } else {
        (i.remaining_ms + 999) / 1000
    };
    _virJobInfo {
        r#type: if bounded {
            _virJobType::VIR_JOB_BOUNDED
        } else {
            _virJobType::VIR_JOB_UNBOUNDED
        } as c_int,
        state: state as c_int,
        runningTime: u32::try_from(i.elapsed_ms / 1000).unwrap_or(u32::MAX),
        remainingTime: u32::try_from(remaining_s).unwrap_or(u32::MAX),
        percentComplete: percent as c_uint,
    }
}

/// Fills `*info` with one consistent snapshot of the job (see `virJobInfo`).
/// Never waits on the worker. With a driver `getInfo` override, that runs
/// instead.
///
/// Returns: 0; -1 for a bad handle or a NULL `info` (nothing written).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobGetInfo(job: virJobPtr, info: virJobInfoPtr) -> c_int {
    boundary_or(-1, || {
        let Some(vj) = lookup(job) else {
            return -1;
        };
        if info.is_null() {
            return -1;
        }
        if let Some(r) = with_override(
            &vj,
            job.addr(),
            Call::GetInfo,
            |d| d.getInfo,
            // SAFETY: the driver's function with the caller's arguments.
            |f| unsafe { f(job, info) },
        ) {
            return r;
        }
        let out = get_info(&vj);
        // SAFETY: non-NULL and writable by contract.
        unsafe { info.write(out) };
        0
    })
}

/// The domain the job made (`virJobSetDomain`), once the job is COMPLETE.
///
/// Returns: the domain; NULL for a bad handle, a job that is not COMPLETE, or one
/// that set none. Not referenced for the caller.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobGetDomain(job: virJobPtr) -> virDomainPtr {
    boundary_or(std::ptr::null_mut(), || made_by(job, |x| x.domain))
}

/// What a COMPLETE job made (picked from its shared state), else NULL.
fn made_by<T, F: FnOnce(&Extra) -> *mut T>(job: virJobPtr, pick: F) -> *mut T {
    lookup(job).map_or(std::ptr::null_mut(), |vj| {
        let x = vj.shared.lock();
        match view_state(&vj.job) {
            _virJobState::VIR_JOB_COMPLETE => pick(&x),
            _ => std::ptr::null_mut(),
        }
    })
}

/// The network the job made (`virJobSetNetwork`), once the job is COMPLETE.
///
/// Returns: the network; NULL for a bad handle, a job that is not COMPLETE, or one
/// that set none. Not referenced for the caller.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobGetNetwork(job: virJobPtr) -> virNetworkPtr {
    boundary_or(std::ptr::null_mut(), || made_by(job, |x| x.network))
}

/// Why a FAILED job failed, as a libvirt `virError`: `code` and `message` from
/// `virJobFinishFailure`, `domain` `VIR_FROM_NONE`, `level` `VIR_ERR_ERROR`,
/// `conn` the job's connection, the other fields NULL or 0.
///
/// Ownership: the error belongs to the job; it is valid, and the same pointer
/// is returned, until `virJobDestroy`. Do not free or reset it.
///
/// Returns: the error; NULL for a bad handle or a job that is not FAILED.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobGetError(job: virJobPtr) -> virErrorPtr {
    boundary_or(std::ptr::null_mut(), || {
        let Some(vj) = lookup(job) else {
            return std::ptr::null_mut();
        };
        let mut x = vj.shared.lock();
        if !matches!(view_state(&vj.job), _virJobState::VIR_JOB_FAILED) {
            return std::ptr::null_mut();
        }
        if x.error.is_none() {
            let Some(e) = vj.job.error() else {
                return std::ptr::null_mut();
            };
            let message = CString::new(e.message.replace('\0', " ")).unwrap_or_default();
            let mut b = Box::new(ErrorBox {
                error: _virError {
                    code: e.code,
                    domain: VIR_FROM_NONE,
                    message: std::ptr::null_mut(),
                    level: VIR_ERR_ERROR,
                    conn: vj.conn,
                    dom: std::ptr::null_mut(),
                    str1: std::ptr::null_mut(),
                    str2: std::ptr::null_mut(),
                    str3: std::ptr::null_mut(),
                    int1: 0,
                    int2: 0,
                    net: std::ptr::null_mut(),
                },
                _message: message,
            });
            // Points into the CString's heap buffer, which moves with the box.
            b.error.message = b._message.as_ptr().cast_mut();
            x.error = Some(b);
        }
        x.error
            .as_mut()
            .map_or(std::ptr::null_mut(), |b| &raw mut b.error)
    })
}

/// Requests cancellation and returns at once: sets the job's cancel flag
/// (`virJobFinishCancel` then returns 1), wakes a paused or sleeping worker and
/// runs the job's bgjob cancel hooks. The worker decides: a job may still
/// complete. Nothing happens to a job that has finished or declared its
/// outcome. With a driver `cancel` override, that runs instead.
///
/// Returns: 0 (also when there was nothing left to cancel); -1 for a bad handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobCancel(job: virJobPtr) -> c_int {
    boundary_or(-1, || {
        let Some(vj) = lookup(job) else {
            return -1;
        };
        if let Some(r) = with_override(
            &vj,
            job.addr(),
            Call::Cancel,
            |d| d.cancel,
            // SAFETY: the driver's function with the caller's handle.
            |f| unsafe { f(job) },
        ) {
            return r;
        }
        // Core refuses it once the job has ended or declared its outcome;
        // hooks run here, with no lock held.
        vj.job.cancel();
        0
    })
}

/// Releases a finished job: its handle (and its bgjob handle) become invalid,
/// and its error string goes. A job that declared its outcome but whose worker
/// has not returned yet is released the same way; bgjob frees the rest (and
/// calls `freeData`) when the worker returns. With a driver `destroy` override,
/// that runs instead.
///
/// Returns: 0; -1 for a bad handle (also a second destroy) or a job still RUNNING.
///
/// Threads: of two threads destroying the same job, one succeeds.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobDestroy(job: virJobPtr) -> c_int {
    boundary_or(-1, || {
        let Some(vj) = lookup(job) else {
            return -1;
        };
        if let Some(r) = with_override(
            &vj,
            job.addr(),
            Call::Destroy,
            |d| d.destroy,
            // SAFETY: the driver's function with the caller's handle.
            |f| unsafe { f(job) },
        ) {
            return r;
        }
        drop(vj);
        let removed = VIRJOBS.remove_if(job.addr(), |vj| match view_state(&vj.job) {
            _virJobState::VIR_JOB_RUNNING => Err(super::bgjob_result::NotAllowed),
            _ => Ok(()),
        });
        let Ok(vj) = removed else {
            return -1;
        };
        // Detaching an ended job destroys it; one whose worker is still
        // returning frees itself when it does. The caller may already have
        // released the bgjob handle itself: then there is nothing to do.
        // SAFETY: any handle value is safe.
        let _ = unsafe { bgjob_job_detach(to_ptr(vj.bg), 0) };
        0
    })
}

/// The connection given to `virJobCreate`.
///
/// Returns: the connection (not referenced for the caller); NULL for a bad handle
/// or a job created with a NULL connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobGetConnect(job: virJobPtr) -> virConnectPtr {
    boundary_or(std::ptr::null_mut(), || {
        lookup(job).map_or(std::ptr::null_mut(), |vj| vj.conn)
    })
}

/// The bgjob handle of the same job, so a driver can mix in bgjob calls:
/// cancel hooks (`virJobCancel` runs them), `bgjob_job_sleep`, phases, units,
/// pause and resume, `bgjob_job_wait`, `bgjob_job_get_info`.
///
/// Ownership: the handle belongs to the virJob; `virJobDestroy` releases it.
/// Releasing it yourself (`bgjob_job_destroy` once the job has ended) only
/// invalidates this bgjob handle; the virJob stays usable.
///
/// Returns: the handle; NULL for a bad virJob handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn virJobGetBgjob(job: virJobPtr) -> *mut bgjob_job {
    boundary_or(std::ptr::null_mut(), || {
        lookup(job).map_or(std::ptr::null_mut(), |vj| to_ptr(vj.bg))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// libvirt's `virError` on LP64 (the only layout bgjob builds for): the C
    /// harness checks libvirt's real struct against the same numbers.
    #[test]
    fn error_layout_is_libvirts() {
        assert_eq!(offset_of!(_virError, code), 0);
        assert_eq!(offset_of!(_virError, domain), 4);
        assert_eq!(offset_of!(_virError, message), 8);
        assert_eq!(offset_of!(_virError, level), 16);
        assert_eq!(offset_of!(_virError, conn), 24);
        assert_eq!(offset_of!(_virError, dom), 32);
        assert_eq!(offset_of!(_virError, str1), 40);
        assert_eq!(offset_of!(_virError, str2), 48);
        assert_eq!(offset_of!(_virError, str3), 56);
        assert_eq!(offset_of!(_virError, int1), 64);
        assert_eq!(offset_of!(_virError, int2), 68);
        assert_eq!(offset_of!(_virError, net), 72);
        assert_eq!(size_of::<_virError>(), 80);
        assert_eq!(size_of::<_virJobInfo>(), 20);
    }
}

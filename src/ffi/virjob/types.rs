//! The libvirt types of the virJob proposal: the opaque libvirt objects and
//! `virError` (libvirt's own when its headers are used), and the proposal's
//! job, type, state, info, worker and driver types, laid out as C sees them.

use std::ffi::{c_char, c_int, c_uint, c_void};

/// A libvirt connection. Opaque here; declared by `<libvirt/libvirt.h>`, or by
/// virjob.h's compatible declaration when libvirt's headers are not used.
pub struct _virConnect {
    _private: [u8; 0],
}
/// libvirt's `virConnectPtr`.
pub type virConnectPtr = *mut _virConnect;

/// A libvirt domain (opaque).
pub struct _virDomain {
    _private: [u8; 0],
}
/// libvirt's `virDomainPtr`.
pub type virDomainPtr = *mut _virDomain;

/// A libvirt network (opaque).
pub struct _virNetwork {
    _private: [u8; 0],
}
/// libvirt's `virNetworkPtr`.
pub type virNetworkPtr = *mut _virNetwork;

/// libvirt's `virFreeCallback`.
pub type virFreeCallback = Option<unsafe extern "C" fn(opaque: *mut c_void)>;

/// libvirt's public `virError`, field for field (`virterror.h`).
#[repr(C)]
pub struct _virError {
    /// A `virErrorNumber`.
    pub code: c_int,
    /// A `virErrorDomain`: what part raised it.
    pub domain: c_int,
    /// Human-readable message.
    pub message: *mut c_char,
    /// A `virErrorLevel`.
    pub level: c_int,
    /// The connection, if any (deprecated in libvirt).
    pub conn: virConnectPtr,
    /// The domain, if any (deprecated in libvirt).
    pub dom: virDomainPtr,
    /// Extra strings.
    pub str1: *mut c_char,
    /// Extra strings.
    pub str2: *mut c_char,
    /// Extra strings.
    pub str3: *mut c_char,
    /// Extra numbers.
    pub int1: c_int,
    /// Extra numbers.
    pub int2: c_int,
    /// The network, if any (deprecated in libvirt).
    pub net: virNetworkPtr,
}
/// libvirt's `virErrorPtr`.
pub type virErrorPtr = *mut _virError;

/// libvirt's `VIR_FROM_NONE`: the error domain bgjob reports.
pub(super) const VIR_FROM_NONE: c_int = 0;
/// libvirt's `VIR_ERR_ERROR` level.
pub(super) const VIR_ERR_ERROR: c_int = 2;

/// A job (opaque). A `virJobPtr` is a handle, never a pointer to memory: NULL,
/// destroyed and made-up values are refused with -1 / NULL by every call; a
/// destroyed one never comes to name a later job, and in a fork() child every
/// handle of the parent is refused so.
pub struct _virJob {
    _private: [u8; 0],
}
/// A job.
pub type virJob = _virJob;
/// A job handle.
pub type virJobPtr = *mut virJob;

/// Whether a job has a known end (`virJobInfo.type`, `virJobCreate`'s `type`).
#[repr(C)]
pub enum _virJobType {
    /// Reports a percentage and a remaining time.
    VIR_JOB_BOUNDED = 0,
    /// Reports running time only.
    VIR_JOB_UNBOUNDED = 1,
}
/// See `enum _virJobType`.
pub type virJobType = _virJobType;

/// A job's state as `virJobInfo.state` reports it.
#[repr(C)]
pub enum _virJobState {
    /// Running (also while paused through its bgjob handle).
    VIR_JOB_RUNNING = 0,
    /// Finished with `virJobFinishSuccess`, or returned without a finish call
    /// and without a cancel request.
    VIR_JOB_COMPLETE = 1,
    /// Finished with `virJobFinishFailure`; `virJobGetError` says why.
    VIR_JOB_FAILED = 2,
    /// Cancelled: `virJobFinishCancel` returned 1, or the worker returned
    /// without a finish call after a cancel request.
    VIR_JOB_CANCELLED = 3,
}
/// See `enum _virJobState`.
pub type virJobState = _virJobState;

/// A job's progress, as `virJobGetInfo` reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct _virJobInfo {
    /// A `virJobType` value.
    pub r#type: c_int,
    /// A `virJobState` value; a paused job reports `VIR_JOB_RUNNING`.
    pub state: c_int,
    /// Seconds of running time, measured by bgjob (monotonic clock, paused
    /// time excluded); the worker's `elapsed` arguments are not used for it.
    pub runningTime: c_uint,
    /// Seconds to completion: the worker's ETA exactly as it last set it with
    /// `virJobInitialize` / `virJobUpdateRel` / `virJobUpdateAbs`, else bgjob's
    /// estimate from the progress rate, rounded up; 0 when unknown, for
    /// unbounded jobs, and once the job has finished.
    pub remainingTime: c_uint,
    /// 0..100; the worker's percentage (or bgjob's, from units given through
    /// the bgjob handle); 100 once COMPLETE; always 0 for unbounded jobs.
    pub percentComplete: c_uint,
}
/// See `struct _virJobInfo`.
pub type virJobInfo = _virJobInfo;
/// See `struct _virJobInfo`.
pub type virJobInfoPtr = *mut virJobInfo;

/// The function a job runs, once, on the job's own thread, with the `data`
/// given to `virJobCreate`.
///
/// It reports progress with `virJobInitialize` and `virJobUpdate*`, checks for
/// cancellation with `virJobFinishCancel`, and ends with one `virJobFinish*`
/// call (or none: see `virJobCreate`). It may call any virJob or bgjob
/// function on its own job except `virJobDestroy` (refused while it runs) and
/// `bgjob_job_wait`. Its progress calls park it while the job is paused
/// through the bgjob handle. It must not `longjmp` out or throw through bgjob.
pub type virJobWorkerFunc = Option<unsafe extern "C" fn(job: virJobPtr, data: *mut c_void)>;

/// A driver's table of overrides for the public calls (for example a remote
/// driver that asks its server). A NULL table, or a NULL member, means bgjob's
/// own implementation.
///
/// An override is called instead of bgjob's, on the caller's thread, with no
/// bgjob lock held, and its return value is returned. Inside it, calling the
/// same public function on the same job runs bgjob's own implementation, so an
/// override can extend rather than replace: a `destroy` override that does its
/// own cleanup and then calls `virJobDestroy(job)` frees the job; one that does
/// not call it leaves the job alive. Invalid handles and NULL `info` pointers
/// are refused before any override is called. The table must stay valid for
/// the job's life.
#[repr(C)]
pub struct _virJobDriver {
    /// Replaces `virJobGetInfo`.
    pub getInfo: Option<unsafe extern "C" fn(job: virJobPtr, info: virJobInfoPtr) -> c_int>,
    /// Replaces `virJobCancel`.
    pub cancel: Option<unsafe extern "C" fn(job: virJobPtr) -> c_int>,
    /// Replaces `virJobDestroy`.
    pub destroy: Option<unsafe extern "C" fn(job: virJobPtr) -> c_int>,
}
/// See `struct _virJobDriver`.
pub type virJobDriver = _virJobDriver;
/// See `struct _virJobDriver`.
pub type virJobDriverPtr = *mut virJobDriver;

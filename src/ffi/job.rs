//! Caller-side job calls: create, start, cancel, pause, resume, wait, destroy,
//! detach.

use super::context::Completion;
use super::handles::{JOBS, to_ptr, with_job};
use super::versioned::{self, Versioned, size_ending_at};
use super::{
    BGJOB_CREATE_DEFER_START, BGJOB_CREATE_MANUAL_FINALIZE, BGJOB_DETACH_CANCEL,
    BGJOB_MAX_STACK_SIZE, UserData, bgjob_cancel_status, bgjob_error_policy, bgjob_free_callback,
    bgjob_hook_callback, bgjob_job, bgjob_job_options, bgjob_job_type, bgjob_result, bgjob_state,
    bgjob_worker_callback, boundary, c_str, need, put,
};
use crate::core::{self, JobError, JobType};
use std::ffi::c_void;
use std::mem::{offset_of, size_of};
use std::time::Duration;

/// The defaults `bgjob_job_options_init` writes.
pub(crate) fn default_options() -> bgjob_job_options {
    bgjob_job_options {
        struct_size: size_of::<bgjob_job_options>() as u32,
        job_type: bgjob_job_type::Bounded as i32,
        flags: 0,
        name: std::ptr::null(),
        stack_size: 0,
        completion: None,
        completion_userdata: std::ptr::null_mut(),
        completion_free: None,
        context: std::ptr::null_mut(),
        deadline_ms: 0,
        error_policy: bgjob_error_policy::Report as i32,
        commit: None,
        abort: None,
        clean: None,
        finalize_userdata: std::ptr::null_mut(),
        finalize_free: None,
    }
}

// SAFETY: repr(C), `struct_size` first; every field is an integer, a bool, a
// nullable pointer or an optional function pointer. The first version ended
// with `finalize_free`.
unsafe impl Versioned for bgjob_job_options {
    const V1_SIZE: usize = size_ending_at::<bgjob_job_options>(
        offset_of!(bgjob_job_options, finalize_free) + size_of::<bgjob_free_callback>(),
    );
    fn set_struct_size(&mut self, n: u32) {
        self.struct_size = n;
    }
}

/// Fills `options` with the defaults: bounded, started at once, named
/// `job-<id>`, default stack, no completion callback. Pass `sizeof *options`
/// as `size`: bgjob writes no more than that, and sets `struct_size` to it, so
/// a program built against an older, shorter struct keeps working.
///
/// # Returns
/// `BGJOB_RESULT_OK`, or `BGJOB_RESULT_INVALID_ARGUMENT` if `options` is NULL
/// or `size` is smaller than the first version of the struct.
///
/// # Safety
/// `options` is NULL or points to `size` writable bytes. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_options_init(
    options: *mut bgjob_job_options,
    size: usize,
) -> bgjob_result {
    boundary(|| {
        need(options)?;
        // SAFETY: non-NULL, `size` writable bytes by contract.
        unsafe { versioned::write(options, size, default_options()) }
    })
}

struct Options {
    name: Option<String>,
    job_type: JobType,
    defer_start: bool,
    stack_size: usize,
    completion: Option<Completion>,
    deadline: Option<std::time::Duration>,
    manual_finalize: bool,
    error_policy: core::ErrorPolicy,
    finalizers: Finalizers,
}

/// The commit, abort and clean callbacks with their shared userdata, freed
/// after the last of them (or when none will run).
struct Finalizers {
    commit: bgjob_hook_callback,
    abort: bgjob_hook_callback,
    clean: bgjob_hook_callback,
    userdata: std::sync::Arc<UserData>,
}

impl Finalizers {
    fn attach(self, mut b: core::Builder, h: usize) -> core::Builder {
        let make = |cb: bgjob_hook_callback| {
            cb.map(|cb| {
                let data = self.userdata.clone();
                move |_: &core::Job| {
                    // SAFETY: the caller's callback with its own userdata and
                    // the job's handle.
                    unsafe { cb(data.ptr, to_ptr(h)) };
                }
            })
        };
        if let Some(f) = make(self.commit) {
            b = b.on_commit(f);
        }
        if let Some(f) = make(self.abort) {
            b = b.on_abort(f);
        }
        if let Some(f) = make(self.clean) {
            b = b.on_clean(f);
        }
        b
    }
}

/// Reads and checks options; NULL means the defaults. The completion userdata
/// is owned (and so freed on any later failure) as soon as the struct's size
/// has been checked.
///
/// # Safety
/// `options` is NULL or points to a `bgjob_job_options` of at least
/// `options->struct_size` bytes.
unsafe fn read_options(options: *const bgjob_job_options) -> Result<Options, bgjob_result> {
    let opts = if options.is_null() {
        default_options()
    } else {
        // SAFETY: non-NULL, `struct_size` readable bytes by contract.
        unsafe { versioned::read(options, default_options())? }
    };
    // Owned before any check can fail, like the completion's.
    let finalizers = Finalizers {
        commit: opts.commit,
        abort: opts.abort,
        clean: opts.clean,
        userdata: std::sync::Arc::new(UserData::new(opts.finalize_userdata, opts.finalize_free)),
    };
    let completion = Completion::from_options(&opts)?;
    let error_policy = bgjob_error_policy::try_from(opts.error_policy)?.into();
    let job_type = bgjob_job_type::try_from(opts.job_type)?.into();
    if opts.flags & !(BGJOB_CREATE_DEFER_START | BGJOB_CREATE_MANUAL_FINALIZE) != 0
        || opts.stack_size > BGJOB_MAX_STACK_SIZE
        || opts.deadline_ms < 0
    {
        return Err(bgjob_result::InvalidArgument);
    }
    let name = if opts.name.is_null() {
        None
    } else {
        // SAFETY: a NUL-terminated string by contract.
        Some(unsafe { c_str(opts.name) }?.to_owned())
    };
    Ok(Options {
        name,
        job_type,
        defer_start: opts.flags & BGJOB_CREATE_DEFER_START != 0,
        stack_size: opts.stack_size,
        completion,
        deadline: (opts.deadline_ms > 0)
            .then(|| std::time::Duration::from_millis(opts.deadline_ms as u64)),
        manual_finalize: opts.flags & BGJOB_CREATE_MANUAL_FINALIZE != 0,
        error_policy,
        finalizers,
    })
}

/// Makes (and unless deferred, starts) a job; returns its handle. `userdata` is
/// freed on every failure, by being dropped.
///
/// # Safety
/// As `bgjob_job_create` for `options`.
pub(crate) unsafe fn create(
    options: *const bgjob_job_options,
    worker: bgjob_worker_callback,
    userdata: UserData,
    auto_release: bool,
) -> Result<usize, bgjob_result> {
    // SAFETY: by this function's contract.
    let opts = unsafe { read_options(options) }?;
    let worker = worker.ok_or(bgjob_result::InvalidArgument)?;
    let h = JOBS.reserve();
    let mut b = core::Builder::new()
        .job_type(opts.job_type)
        .stack_size(opts.stack_size);
    if let Some(name) = opts.name {
        b = b.name(name);
    }
    if let Some(d) = opts.deadline {
        b = b.deadline(d);
    }
    b = b
        .manual_finalize(opts.manual_finalize)
        .error_policy(opts.error_policy);
    b = opts.finalizers.attach(b, h);
    if let Some(c) = opts.completion {
        b = c.attach(b, h, auto_release);
    }
    let job = b.create(move |_| {
        // Moved in so it drops (and frees) at the end of this call.
        let userdata = userdata;
        core::job::tag_worker_thread(h);
        // SAFETY: the caller's worker with its own userdata and handle.
        let rc = unsafe { worker(userdata.ptr, to_ptr(h)) };
        if rc == 0 {
            Ok(())
        } else {
            Err(JobError::new(rc, ""))
        }
    });
    JOBS.fill(h, job.clone());
    if !opts.defer_start
        && let Err(e) = job.start()
    {
        JOBS.remove(h);
        // Freed here, before create returns, even if a lister holds a reference.
        job.discard();
        return Err(e.into());
    }
    Ok(h)
}

/// Creates a job that runs `worker(userdata, job)` on its own thread.
///
/// Unless `options->flags` has `BGJOB_CREATE_DEFER_START`, the job starts at once;
/// otherwise it stays `BGJOB_STATE_CREATED` until `bgjob_job_start`. The worker
/// thread is named after the job; an idle thread is reused when one is free, else
/// a new one is started, so a job never waits behind another unless the caller
/// set a cap (`bgjob_pool_set_max_running`: the job then queues, RUNNING). With
/// `options->completion` set, that callback runs once when the job has ended,
/// on the worker thread or through `options->context`.
///
/// Ownership: `userdata` passes to bgjob on every path. `userdata_free` (may be
/// NULL) is called exactly once: after the worker has returned, or when a job that
/// never ran is cancelled or destroyed, or before this function returns if it
/// fails. The same holds for `options->completion_userdata` and
/// `options->completion_free` (after the completion callback), except when
/// `options->struct_size` is too small for bgjob to read them. On success
/// `*job_out` is a new handle; release it with `bgjob_job_destroy` (once the job
/// has ended) or `bgjob_job_detach`.
///
/// `options` may be NULL (all defaults); `worker` and `job_out` may not.
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL worker or
/// `job_out`, an unknown type or flag, a name that is not UTF-8, a stack size over
/// `BGJOB_MAX_STACK_SIZE`, a `struct_size` smaller than this version's, or a
/// context without a completion callback; `BGJOB_RESULT_INVALID_HANDLE` for a
/// bad `options->context`; `BGJOB_RESULT_TRY_AGAIN` when no thread could be
/// started — the worker's, or for a job with a deadline bgjob's timer thread
/// (nothing is left behind).
///
/// # Safety
/// `options` is NULL or a valid `bgjob_job_options`; `job_out` is NULL or
/// writable; `worker` and `userdata_free` are NULL or valid functions. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_create(
    options: *const bgjob_job_options,
    worker: bgjob_worker_callback,
    userdata: *mut c_void,
    userdata_free: bgjob_free_callback,
    job_out: *mut *mut bgjob_job,
) -> bgjob_result {
    // Built first so every early return below frees the userdata.
    let userdata = UserData::new(userdata, userdata_free);
    boundary(move || {
        if job_out.is_null() {
            // Read the options anyway, so their completion userdata is freed too.
            // SAFETY: by this function's contract.
            drop(unsafe { read_options(options) });
            return Err(bgjob_result::InvalidArgument);
        }
        // SAFETY: by this function's contract.
        let h = unsafe { create(options, worker, userdata, false) }?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { job_out.write(to_ptr(h)) };
        Ok(())
    })
}

/// Starts a job created with `BGJOB_CREATE_DEFER_START`.
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED`
/// unless the job is CREATED; `BGJOB_RESULT_TRY_AGAIN` when no thread could be
/// started — the worker's, or for a job with a deadline bgjob's timer thread
/// (the job stays CREATED and may be started again or destroyed).
///
/// # Safety
/// Any handle value is safe. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_start(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| with_job(job, |j, _| j.start())?.map_err(Into::into))
}

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
/// # Returns
/// `BGJOB_RESULT_OK` (in every state); `BGJOB_RESULT_INVALID_HANDLE`.
///
/// # Safety
/// `status_out` is NULL or writable. Thread-safe; any number of threads may
/// cancel the same job at once: exactly one gets REQUESTED.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_cancel(
    job: *mut bgjob_job,
    status_out: *mut i32,
) -> bgjob_result {
    boundary(|| {
        let status = with_job(job, |j, _| j.cancel())?;
        // SAFETY: NULL or writable by contract.
        unsafe { put(status_out, bgjob_cancel_status::from(status) as i32) };
        Ok(())
    })
}

/// Pauses a running job: its worker parks at its next pause point, and elapsed
/// time stops counting.
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED`
/// unless the job is RUNNING (so pausing twice is refused).
///
/// # Safety
/// Any handle value is safe. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_pause(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| with_job(job, |j, _| j.pause())?.map_err(Into::into))
}

/// Resumes a paused job.
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED`
/// unless the job is PAUSED.
///
/// # Safety
/// Any handle value is safe. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_resume(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| with_job(job, |j, _| j.resume())?.map_err(Into::into))
}

/// Waits until the job has ended, for at most `timeout_ms` milliseconds (a
/// negative value waits forever). WAITING is not an end: a job waiting for
/// its transaction or for a manual finalize keeps this waiting (and a finite
/// wait times out) until it is finalized. When it returns OK the job is terminal, its
/// userdata has been freed, and a completion bound to a context is already
/// queued there (one delivered on the worker thread may still be running). The
/// handle stays valid: destroy it afterwards.
///
/// `state_out` (may be NULL) gets the final `bgjob_state` on success.
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_TIMED_OUT`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_NOT_ALLOWED` when called from the job's own worker (it would
/// wait for itself).
///
/// # Safety
/// `state_out` is NULL or writable. Thread-safe; many threads may wait at once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_wait(
    job: *mut bgjob_job,
    timeout_ms: i64,
    state_out: *mut i32,
) -> bgjob_result {
    boundary(|| {
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        let state = with_job(job, |j, _| j.wait(timeout))??;
        // SAFETY: NULL or writable by contract.
        unsafe { put(state_out, bgjob_state::from(state) as i32) };
        Ok(())
    })
}

/// Releases a job that has ended, or one that never started (which is cancelled
/// first: its worker never runs and its userdata is freed now). Its result, if
/// it has one and nobody took it, is freed now too. The handle and every copy
/// of it are invalid afterwards.
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE` (also for a double destroy);
/// `BGJOB_RESULT_NOT_ALLOWED` while the worker may still run (RUNNING, PAUSED,
/// WAITING): wait for it, or use `bgjob_job_detach`.
///
/// # Safety
/// Any handle value is safe. Thread-safe: of two threads destroying the same
/// handle, one succeeds and the other gets INVALID_HANDLE.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_destroy(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| {
        // Decided under the table lock, so the check, the cancel of a created job
        // and the removal of the handle are one step; what it frees is dropped
        // only after the table lock is gone.
        let mut release = None;
        JOBS.remove_if(job.addr(), |j| {
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
/// now, so a manual-finalize job (one WAITING already included) finalizes as
/// soon as its work is done — committing if its worker succeeded, even after
/// the cancel — and a manual-finalize transaction with a detached member
/// finalizes by itself once every member is done.
/// Detaching an ended job is the same as destroying it. The handle is invalid
/// afterwards for the caller (the job's own worker may keep using it until it
/// returns).
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_INVALID_ARGUMENT`
/// for an unknown flag; `BGJOB_RESULT_NOT_ALLOWED` for a CREATED job (it would
/// never run: start or destroy it instead).
///
/// # Safety
/// Any handle value is safe. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_detach(job: *mut bgjob_job, flags: u32) -> bgjob_result {
    boundary(|| {
        if flags & !BGJOB_DETACH_CANCEL != 0 {
            return Err(bgjob_result::InvalidArgument);
        }
        let j = JOBS.remove_if(job.addr(), |j| {
            j.check(core::Verb::Detach).map_err(bgjob_result::from)
        })?;
        j.detach(flags & BGJOB_DETACH_CANCEL != 0)
            .map_err(Into::into)
    })
}

//! Creating and starting jobs: `bgjob_job_create`, `bgjob_job_start`, and
//! QIOTask-style `bgjob_run_in_thread` (create, start and deliver in one call).

use super::handles::{JOBS, run_as_worker, to_ptr, with_job};
use super::options::{default_options, read_options};
use super::{
    UserData, bgjob_completion_callback, bgjob_context, bgjob_free_callback, bgjob_job,
    bgjob_job_options, bgjob_result, bgjob_worker_callback, boundary, put,
};
use crate::core::{self, JobError};
use std::ffi::{c_char, c_void};

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
    if opts.external && worker.is_some() {
        return Err(bgjob_result::InvalidArgument);
    }
    let external = opts.external;
    let worker = if external {
        None
    } else {
        Some(worker.ok_or(bgjob_result::InvalidArgument)?)
    };
    let h = JOBS.reserve();
    let mut b = core::Builder::new()
        .job_type(opts.job_type)
        .stack_size(opts.stack_size)
        .operation(opts.operation)
        .owner(opts.owner);
    if let Some(name) = opts.name {
        b = b.name(name);
    }
    if let Some(d) = opts.deadline {
        b = b.deadline(d);
    }
    b = b
        .manual_finalize(opts.manual_finalize)
        .updates_never_park(opts.updates_never_park)
        .error_policy(opts.error_policy);
    b = opts.finalizers.attach(b, h);
    b = opts.control.attach(b, h);
    if external {
        b = b.external();
    }
    if !opts.defer_start {
        b = b.start_at_once();
    }
    if let Some(e) = opts.events {
        b = e.attach(b, h);
    }
    if let Some(c) = opts.completion {
        b = c.attach(b, h, auto_release);
    }
    let job = b.create(move |w| {
        // Moved in so it drops (and frees) at the end of this call.
        let userdata = userdata;
        // An external job's closure is never called: dropped (freeing the
        // userdata) when its owner ends it, or when it is released unrun.
        let Some(worker) = worker else {
            return Ok(());
        };
        // SAFETY: the caller's worker with its own userdata and handle.
        let rc = run_as_worker(h, w.job(), || unsafe { worker(userdata.ptr, to_ptr(h)) });
        if rc == 0 {
            Ok(())
        } else {
            Err(JobError::new(rc, ""))
        }
    });
    JOBS.fill(h, job.clone());
    if !opts.parent.is_null() {
        let linked = with_job(opts.parent, |p, _| {
            job.set_parent(p).map_err(bgjob_result::from)
        })
        .and_then(|r| r);
        if let Err(e) = linked {
            JOBS.remove(h);
            job.discard();
            return Err(e);
        }
    }
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
/// on the worker thread or through `options->context`. With `options->event`
/// set, that callback gets every event of the job, in order, END before the
/// completion (see `bgjob_event_callback`); the RUNNING event of a job started
/// here is delivered before this function returns when there is no context.
///
/// Ownership: `userdata` passes to bgjob on every path. `userdata_free` (may be
/// NULL) is called exactly once: after the worker has returned, or when a job that
/// never ran is cancelled or destroyed, or before this function returns if it
/// fails. The same holds for `options->completion_userdata` and
/// `options->completion_free` (after the completion callback), and for
/// `options->event_userdata` and `options->event_free` (after the last event
/// call: see `bgjob_job_options.event_free`), except when
/// `options->struct_size` is too small for bgjob to read them. On success
/// `*job_out` is a new handle; release it with `bgjob_job_destroy` (once the job
/// has ended) or `bgjob_job_detach`. The job can be reached before this
/// call returns (`bgjob_job_lookup` of its id, its parent's cancel flowing
/// down): a cancel that comes then does not make the create fail or end the
/// job unrun; the job starts with its cancel requested, as a sub-job of a
/// cancelled parent does (`bgjob_job_options.parent`). A start through such
/// a handle then is refused (`BGJOB_RESULT_NOT_ALLOWED`: this create starts
/// it); if this create fails, such a handle finds the job CANCELLED, never
/// run, and its destroy releases it.
///
/// `options` may be NULL (all defaults); `job_out` may not; `worker` must be
/// NULL exactly when `options->flags` has `BGJOB_CREATE_EXTERNAL` (an external
/// job has no worker and no thread: see `bgjob_job_end`; its `userdata` is
/// freed when its owner ends it, or when it is cancelled or destroyed
/// unstarted).
///
/// The control callback's userdata (`options->control_userdata`) is freed
/// exactly once as well: after its last call, when the job's work is done,
/// or before this function returns if it fails.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL worker
/// without `BGJOB_CREATE_EXTERNAL` (or a worker with it), a NULL `job_out`, an unknown type or flag, a name that is not UTF-8, a stack size over
/// `BGJOB_MAX_STACK_SIZE`, a `struct_size` smaller than this version's, or a
/// context without a completion or event callback; `BGJOB_RESULT_INVALID_HANDLE` for a bad
/// `options->context`; `BGJOB_RESULT_TRY_AGAIN` when no thread could be started —
/// the worker's, or for a job with a deadline bgjob's timer thread (nothing is left
/// behind).
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
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_NOT_ALLOWED` unless the job is CREATED; `BGJOB_RESULT_TRY_AGAIN`
/// when no thread could be started — the worker's, or for a job with a deadline
/// bgjob's timer thread (the job stays CREATED and may be started again or
/// destroyed).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_start(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| with_job(job, |j, _| j.start())?.map_err(Into::into))
}

/// Runs `worker` on a new job's thread and delivers `completion` through
/// `context` (QIOTask's `qio_task_run_in_thread`): one call makes the job,
/// starts it, and calls `completion(completion_userdata, job, state)` on the
/// thread that dispatches `context` once it has ended.
///
/// With `job_out` NULL nobody keeps the job: its handle is valid inside the
/// completion callback (read its error and result there) and released right
/// after it, or when the callback will never run (the context was destroyed
/// first); with no completion either, the job runs detached and frees itself.
/// With `job_out` non-NULL the caller keeps the handle and destroys it.
///
/// A QIOTask-style "source object" is kept alive by taking a reference before
/// the call and passing its unref as `completion_free` (see
/// `examples/poll_loop.c`).
///
/// Ownership: both userdata pointers pass to bgjob on every path; each free
/// function (may be NULL) runs exactly once, as for `bgjob_job_create`.
/// `name` may be NULL; `context` may be NULL (the completion then runs on the
/// worker thread); `completion` may be NULL only when `context` is.
///
/// Returns: as `bgjob_job_create`, plus `BGJOB_RESULT_INVALID_HANDLE` for a bad
/// `context`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn bgjob_run_in_thread(
    context: *mut bgjob_context,
    name: *const c_char,
    worker: bgjob_worker_callback,
    worker_userdata: *mut c_void,
    worker_free: bgjob_free_callback,
    completion: bgjob_completion_callback,
    completion_userdata: *mut c_void,
    completion_free: bgjob_free_callback,
    job_out: *mut *mut bgjob_job,
) -> bgjob_result {
    let worker_ud = UserData::new(worker_userdata, worker_free);
    let mut options = default_options();
    options.name = name;
    options.completion = completion;
    options.completion_userdata = completion_userdata;
    options.completion_free = completion_free;
    options.context = context;
    boundary(move || {
        // SAFETY: `options` is a complete struct of this version; `create` checks
        // the name after it owns both userdata, so a bad name frees them too.
        let h = unsafe { create(&options, worker, worker_ud, job_out.is_null()) }?;
        if job_out.is_null() && completion.is_none() {
            // Fire and forget: nobody will ever use the handle, so the job runs
            // detached and frees itself when it ends.
            if let Some(job) = JOBS.remove(h) {
                job.detach(false).map_err(bgjob_result::from)?;
            }
        }
        // SAFETY: NULL or writable by contract.
        unsafe { put(job_out, to_ptr(h)) };
        Ok(())
    })
}

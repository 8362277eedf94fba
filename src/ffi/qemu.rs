//! QEMU job semantics: manual finalize, internal pauses, error policies and I/O
//! error reports.

use super::handles::with_job;
use super::{
    bgjob_cancel_status, bgjob_error_action, bgjob_error_policy_in, bgjob_job, bgjob_result,
    boundary, c_str, need, put,
};

/// Finalizes a job created with `BGJOB_CREATE_MANUAL_FINALIZE` (QEMU's
/// `job_finalize`) once its work is done: its commit (or abort) and clean
/// callbacks run on this thread, the job WAITING while they do (PENDING →
/// WAITING → its terminal state, as every job's end), then it ends. For a member of a transaction
/// it finalizes the transaction (as soon as every member is done).
///
/// An external job whose owner reported it WAITING or PENDING
/// (`bgjob_job_report_state`: QEMU runs the job) is not finalized here: the
/// request is forwarded to its owner as `BGJOB_CONTROL_FINALIZE` (at once in
/// PENDING, when the owner reports PENDING if asked in WAITING), which sends
/// QEMU's `job-finalize` and ends the job with `bgjob_job_end` when it
/// concludes; that end then finalizes at once (no second call). Refused for
/// such a job without `BGJOB_CREATE_MANUAL_FINALIZE` (QEMU finalizes it by
/// itself) and in ABORTING. A failed forward (`bgjob_job_control_failed`)
/// drops the request: finalize may be called again.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` unless the job is
/// `BGJOB_STATE_PENDING` or `BGJOB_STATE_WAITING` (and not already being
/// finalized, nor its finalize already forwarded);
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
/// `BGJOB_RESULT_NOT_ALLOWED` unless the job is running (an external job:
/// also once its owner reported WAITING, PENDING or ABORTING);
/// `BGJOB_RESULT_INVALID_HANDLE`.
///
/// Threads: the job's worker thread; for an external job (no worker), its
/// owner on any thread — a STOP then pauses the job without calling its
/// control callback, and the resume that follows is one
/// `BGJOB_CONTROL_RESUME`.
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

/// Says the job is ready (QEMU's `job_transition_to_ready`: a mirror has
/// converged and keeps mirroring): RUNNING becomes `BGJOB_STATE_READY`,
/// PAUSED becomes `BGJOB_STATE_STANDBY`. The worker keeps running until
/// `bgjob_job_complete` (or a cancel) asks it to finish. A READY job accepts
/// every verb a RUNNING one does (STANDBY: a PAUSED one), plus complete.
///
/// Returns: `BGJOB_RESULT_OK`, also when the job is READY or STANDBY already;
/// `BGJOB_RESULT_NOT_ALLOWED` unless its worker is running (RUNNING, PAUSED),
/// once its worker declared its outcome, and once an external job's owner
/// reported WAITING, PENDING or ABORTING; `BGJOB_RESULT_INVALID_HANDLE`.
///
/// Threads: any thread (usually the worker); it never parks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_ready(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| with_job(job, |j, _| j.set_ready())?.map_err(bgjob_result::from))
}

/// Asks a READY job to finish (QEMU's `job_complete`; a mirror pivots). It
/// sets "complete requested" (`bgjob_job_complete_requested`,
/// `bgjob_info.complete_requested`; it stays set) and wakes the worker as a
/// cancel does:
/// - the wake fd (`bgjob_job_get_wake_fd`) becomes readable;
/// - `bgjob_job_sleep` returns `BGJOB_RESULT_OK` early (before its time);
/// - `bgjob_job_wait_fd` returns `BGJOB_RESULT_OK` with `*events_out` 0 (no
///   event: the wake was the complete request);
/// - `bgjob_job_pause_point` returns `BGJOB_RESULT_OK` (it never parks for
///   it).
///
/// The wake lasts until the worker calls `bgjob_job_complete_requested` on
/// its own thread: until then the wake fd stays readable and every sleep and
/// fd wait returns at once, so a worker that wakes early should ask. The
/// worker then finishes and returns 0 (the job ends COMPLETED, through
/// PENDING with manual finalize). `bgjob_job_wait_child` does not end early
/// for it. Asking again wakes again.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_ALLOWED` unless the job is
/// READY (so also in STANDBY: resume first), and while cancel is requested,
/// an internal pause (`bgjob_job_pause_internal`) is in force or the worker
/// declared its outcome; `BGJOB_RESULT_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_complete(job: *mut bgjob_job) -> bgjob_result {
    boundary(|| with_job(job, |j, _| j.complete())?.map_err(bgjob_result::from))
}

/// Tells whether complete was requested (`bgjob_job_complete`); once true it
/// stays true. Called on the job's worker thread it also acknowledges the
/// wake the request gave (see `bgjob_job_complete`): the wake fd is no longer
/// readable for it, and sleeps and fd waits no longer return early for it.
/// On any other thread it only reads.
///
/// Returns: `BGJOB_RESULT_OK` with `*requested_out` set;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `requested_out`;
/// `BGJOB_RESULT_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_complete_requested(
    job: *mut bgjob_job,
    requested_out: *mut bool,
) -> bgjob_result {
    boundary(|| {
        need(requested_out)?;
        let requested = with_job(job, |j, _| j.complete_requested())?;
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(requested_out, requested) };
        Ok(())
    })
}

/// Soft cancel (QEMU's `block-job-cancel` without force on a ready job): on a
/// READY or STANDBY job, cancel is requested with "soft" set. The worker sees
/// the cancel as usual (`bgjob_job_check_cancel`, pause points and waits
/// return `BGJOB_RESULT_CANCELLED`; a STANDBY job is resumed), reads
/// `bgjob_job_cancel_is_soft`, and is meant to finish without pivoting and
/// return 0: the job then ends COMPLETED (with `cancel_requested` true).
/// A soft cancel calls no cancellation hooks and signals no child process
/// (they abort what the worker waits on); a later `bgjob_job_cancel` makes it
/// a force cancel: soft is cleared, the hooks are called, and that call gets
/// `BGJOB_CANCEL_STATUS_REQUESTED`. In every other state this is
/// `bgjob_job_cancel`.
///
/// `status_out` (may be NULL) gets which race this call met, as for
/// `bgjob_job_cancel`.
///
/// Returns: `BGJOB_RESULT_OK` (in every state); `BGJOB_RESULT_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_cancel_soft(
    job: *mut bgjob_job,
    status_out: *mut bgjob_cancel_status,
) -> bgjob_result {
    boundary(|| {
        let status = with_job(job, |j, _| j.cancel_soft())?;
        // SAFETY: NULL or writable by contract.
        unsafe { put(status_out, bgjob_cancel_status::from(status)) };
        Ok(())
    })
}

/// Tells the worker whether the cancel request is a soft one
/// (`bgjob_job_cancel_soft`; false when cancel was not requested, and after a
/// force cancel).
///
/// Returns: `BGJOB_RESULT_OK` with `*soft_out` set;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `soft_out`;
/// `BGJOB_RESULT_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_cancel_is_soft(
    job: *mut bgjob_job,
    soft_out: *mut bool,
) -> bgjob_result {
    boundary(|| {
        need(soft_out)?;
        let soft = with_job(job, |j, _| j.cancel_is_soft())?;
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(soft_out, soft) };
        Ok(())
    })
}

/// For an external job's owner: reports a state of the work that bgjob
/// cannot infer (the QEMU job's `JOB_STATUS_CHANGE`): `BGJOB_STATE_WAITING`
/// (the work is done, the job waits for the other members of its
/// transaction), `BGJOB_STATE_PENDING` (done and succeeded, a finalize is
/// awaited) or `BGJOB_STATE_ABORTING` (failed or cancelled, the abort under
/// way). The job shows that state until the owner ends it with
/// `bgjob_job_end` (the end is still the owner's: it passes the outcome QEMU
/// concluded with). Each change fires a STATE_CHANGED event as any other.
///
/// Allowed transitions (from the job's current state; reporting the state the
/// job is in is OK and changes nothing; every other pair is refused with
/// `BGJOB_RESULT_NOT_ALLOWED` and changes nothing):
///
/// | from \ to                          | WAITING | PENDING | ABORTING |
/// |------------------------------------|---------|---------|----------|
/// | RUNNING, PAUSED, READY, STANDBY    | yes     | yes     | yes      |
/// | WAITING                            | (same)  | yes     | yes      |
/// | PENDING                            | no      | (same)  | yes      |
/// | ABORTING                           | no      | no      | (same)   |
/// | CREATED, ended (`bgjob_job_end` called), terminal | no | no | no |
///
/// In a reported state: a user pause has ended (the work no longer runs; the
/// owner is not told RESUME), the deadline no longer fires, progress and
/// other updates are refused (the verb table's WAITING/PENDING/ABORTING
/// columns), cancel is forwarded as `BGJOB_CONTROL_CANCEL` (QEMU cancels a
/// WAITING or PENDING job) — in ABORTING it is recorded (the owner's failing
/// end then ends the job CANCELLED, with the cancel's cause: a transaction
/// QEMU aborts as a group keeps its causes) but not forwarded — and in
/// PENDING a finalize of a manual-finalize job (or transaction) is forwarded
/// as `BGJOB_CONTROL_FINALIZE`, also when it was asked earlier, in WAITING.
/// Ending the job then passes through WAITING while its commit/abort and clean
/// callbacks run, as every job does.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for any other
/// state (the others have calls of their own: `bgjob_job_set_ready`,
/// `bgjob_job_end`, the verbs); `BGJOB_RESULT_NOT_ALLOWED` for a threaded job
/// and for a refused transition (above); `BGJOB_RESULT_INVALID_HANDLE`.
///
/// Threads: any thread, the control callback included (it never waits).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_report_state(
    job: *mut bgjob_job,
    state: super::bgjob_state_in,
) -> bgjob_result {
    boundary(|| {
        let state = super::bgjob_state::try_from(state)?.into();
        with_job(job, |j, _| j.report_state(state))?.map_err(bgjob_result::from)
    })
}

/// For a job's owner: a verb its control callback was told failed (QEMU
/// answered the `job-pause`, `job-complete`… with an error). `what` is the
/// `bgjob_control` it was told, `code` a non-zero errno-style code, `message`
/// (may be NULL) QEMU's text. The failure becomes visible to the user: a
/// `BGJOB_EVENT_CONTROL_FAILED` event (`error_code` = `code`) and
/// `bgjob_job_get_control_error` (the last one, readable until destroy). What
/// the verb set is undone where bgjob can undo it:
///
/// | `what`     | undone                                                        |
/// |------------|---------------------------------------------------------------|
/// | PAUSE      | the user pause, if in force and not an I/O-error stop: PAUSED → RUNNING, STANDBY → READY (a STATE_CHANGED event follows) |
/// | COMPLETE   | "complete requested" is cleared: complete may be asked again |
/// | SET_SPEED  | the speed goes back to its value before the last change      |
/// | FINALIZE   | the finalize request is dropped: the job (its transaction) stays PENDING and may be finalized again |
/// | CANCEL     | nothing: the cancel stays requested (its hooks and sub-jobs were told) |
/// | RESUME     | nothing: a refused resume means the work was not paused       |
///
/// No control call is made for the undo (the owner knows).
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for an unknown
/// `what`, a zero `code` or a `message` that is not UTF-8;
/// `BGJOB_RESULT_NOT_ALLOWED` (nothing recorded) for a job with no control
/// callback, and once its work is done — `bgjob_job_end` was called, a
/// threaded job's worker returned — or it never started;
/// `BGJOB_RESULT_INVALID_HANDLE`.
///
/// Threads: any thread, the control callback included.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_control_failed(
    job: *mut bgjob_job,
    what: super::bgjob_control_in,
    code: i32,
    message: *const std::ffi::c_char,
) -> bgjob_result {
    boundary(|| {
        let what = super::bgjob_control::try_from(what)?.into();
        let message = if message.is_null() {
            ""
        } else {
            // SAFETY: NUL-terminated by contract.
            unsafe { c_str(message) }?
        };
        with_job(job, |j, _| j.control_failed(what, code, message))?.map_err(bgjob_result::from)
    })
}

/// Reads the last failure the owner reported with `bgjob_job_control_failed`:
/// `*found_out` true and `*what_out`, `*code_out`, `buf` (snprintf-style, like
/// `bgjob_job_get_error`; `*len_out` the full length) set, or `*found_out`
/// false (the others untouched) when none was reported. Readable until
/// destroy. `what_out`, `code_out` and `len_out` may be NULL; `buf` may be
/// NULL when `len` is 0.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL
/// `found_out` or a NULL `buf` with non-zero `len`;
/// `BGJOB_RESULT_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_get_control_error(
    job: *mut bgjob_job,
    found_out: *mut bool,
    what_out: *mut super::bgjob_control,
    code_out: *mut i32,
    buf: *mut std::ffi::c_char,
    len: usize,
    len_out: *mut usize,
) -> bgjob_result {
    boundary(|| {
        need(found_out)?;
        super::check_buf(buf, len)?;
        let e = with_job(job, |j, _| j.control_error())?;
        // SAFETY: checked above; outputs NULL or writable by contract.
        unsafe {
            put(found_out, e.is_some());
            if let Some((what, e)) = e {
                put(what_out, super::bgjob_control::from(what));
                put(code_out, e.code);
                super::copy_out(&e.message, buf, len, len_out);
            }
        }
        Ok(())
    })
}

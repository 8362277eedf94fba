//! Child processes bound to a job: spawn or watch, cancellable wait, kill on
//! cancel, no zombies (libxl's child-process watch, with pidfds).

use super::handles::{to_ptr, with_job};
use super::hooks::timeout_arg;
use super::{
    BGJOB_CHILD_CAPTURE_STDERR, BGJOB_CHILD_CAPTURE_STDOUT, BGJOB_CHILD_DEFAULT_GRACE_MS,
    BGJOB_CHILD_INHERIT_STDIN, BGJOB_CHILD_NULL_STDERR, BGJOB_CHILD_NULL_STDOUT, UserData,
    bgjob_child_options, bgjob_job, bgjob_result, boundary, need, put,
};
use crate::core::{Error, Output, Spawn};
use std::ffi::{CStr, OsString, c_char};
use std::mem::size_of;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

const CHILD_FLAGS: u32 = BGJOB_CHILD_CAPTURE_STDOUT
    | BGJOB_CHILD_CAPTURE_STDERR
    | BGJOB_CHILD_INHERIT_STDIN
    | BGJOB_CHILD_NULL_STDOUT
    | BGJOB_CHILD_NULL_STDERR;

fn default_child_options() -> bgjob_child_options {
    bgjob_child_options {
        struct_size: size_of::<bgjob_child_options>() as u32,
        flags: 0,
        argv: std::ptr::null(),
        envp: std::ptr::null(),
        cwd: std::ptr::null(),
        grace_ms: BGJOB_CHILD_DEFAULT_GRACE_MS,
        on_line: None,
        line_userdata: std::ptr::null_mut(),
        line_free: None,
    }
}

/// Smallest `struct_size` accepted: the first released layout.
const CHILD_OPTIONS_V1_SIZE: usize = size_of::<bgjob_child_options>();

/// Fills `options` with the defaults (no argv; stdout and stderr inherited;
/// stdin `/dev/null`; grace `BGJOB_CHILD_DEFAULT_GRACE_MS`). Pass
/// `sizeof *options` as `size`.
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for NULL or a `size`
/// smaller than the first version of the struct.
///
/// # Safety
/// `options` is NULL or points to `size` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_child_options_init(
    options: *mut bgjob_child_options,
    size: usize,
) -> bgjob_result {
    boundary(|| {
        need(options)?;
        if size < CHILD_OPTIONS_V1_SIZE {
            return Err(bgjob_result::InvalidArgument);
        }
        let n = size.min(size_of::<bgjob_child_options>());
        let defaults = bgjob_child_options {
            struct_size: n as u32,
            ..default_child_options()
        };
        // SAFETY: the caller's buffer holds `size` >= n bytes; the source is a
        // whole struct of at least n bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&raw const defaults).cast::<u8>(),
                options.cast::<u8>(),
                n,
            )
        };
        Ok(())
    })
}

/// Collects a NULL-terminated vector of C strings.
///
/// # Safety
/// `v` is NULL-terminated and each entry a NUL-terminated string.
unsafe fn strings(v: *const *const c_char) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        // SAFETY: within the vector up to and including its NULL, by contract.
        let p = unsafe { *v.add(i) };
        if p.is_null() {
            return out;
        }
        // SAFETY: NUL-terminated by contract.
        out.push(OsString::from_vec(
            unsafe { CStr::from_ptr(p) }.to_bytes().to_vec(),
        ));
        i += 1;
    }
}

/// Reads and checks child options into a [`Spawn`]; the line userdata is
/// owned by `line_data` from the start, so every failure frees it.
///
/// # Safety
/// As `bgjob_job_spawn_child`.
unsafe fn read_child_options(
    options: *const bgjob_child_options,
    job: usize,
) -> Result<Spawn, bgjob_result> {
    if options.is_null() {
        return Err(bgjob_result::InvalidArgument);
    }
    // SAFETY: non-NULL; the first field is always present.
    let size = unsafe { (*options).struct_size } as usize;
    if size < CHILD_OPTIONS_V1_SIZE {
        return Err(bgjob_result::InvalidArgument);
    }
    let mut o = default_child_options();
    // SAFETY: the caller's struct holds `size` bytes; at most ours is copied.
    unsafe {
        std::ptr::copy_nonoverlapping(
            options.cast::<u8>(),
            (&raw mut o).cast::<u8>(),
            size.min(size_of::<bgjob_child_options>()),
        )
    };
    let line_data = UserData::new(o.line_userdata, o.line_free);
    if o.flags & !CHILD_FLAGS != 0
        || o.flags & BGJOB_CHILD_CAPTURE_STDOUT != 0 && o.flags & BGJOB_CHILD_NULL_STDOUT != 0
        || o.flags & BGJOB_CHILD_CAPTURE_STDERR != 0 && o.flags & BGJOB_CHILD_NULL_STDERR != 0
        || o.grace_ms < 0
        || o.argv.is_null()
    {
        return Err(bgjob_result::InvalidArgument);
    }
    // SAFETY: NULL-terminated vectors of strings by contract.
    let argv = unsafe { strings(o.argv) };
    if argv.is_empty() {
        return Err(bgjob_result::InvalidArgument);
    }
    let mut spec = Spawn::new(argv)
        .inherit_stdin(o.flags & BGJOB_CHILD_INHERIT_STDIN != 0)
        .grace(Duration::from_millis(o.grace_ms as u64));
    if !o.envp.is_null() {
        // SAFETY: as above.
        let vars = unsafe { strings(o.envp) }
            .into_iter()
            .map(|kv| {
                let kv = kv.into_vec();
                let eq = kv.iter().position(|&b| b == b'=').filter(|&i| i > 0)?;
                Some((
                    OsString::from_vec(kv[..eq].to_vec()),
                    OsString::from_vec(kv[eq + 1..].to_vec()),
                ))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or(bgjob_result::InvalidArgument)?;
        spec = spec.env(vars);
    }
    if !o.cwd.is_null() {
        // SAFETY: NUL-terminated by contract.
        let dir = unsafe { CStr::from_ptr(o.cwd) }.to_bytes().to_vec();
        spec = spec.cwd(OsString::from_vec(dir));
    }
    let output = |capture, null| match (o.flags & capture != 0, o.flags & null != 0) {
        (true, _) => Output::Capture,
        (false, true) => Output::Null,
        (false, false) => Output::Inherit,
    };
    spec = spec
        .stdout(output(BGJOB_CHILD_CAPTURE_STDOUT, BGJOB_CHILD_NULL_STDOUT))
        .stderr(output(BGJOB_CHILD_CAPTURE_STDERR, BGJOB_CHILD_NULL_STDERR));
    if let Some(on_line) = o.on_line {
        let mut line = Vec::new();
        spec = spec.on_line(Box::new(move |_, stream, bytes| {
            let data = &line_data;
            line.clear();
            line.extend_from_slice(bytes);
            line.push(0);
            // SAFETY: the caller's callback with its own userdata and handle;
            // `line` holds `bytes.len()` bytes plus a NUL for the call.
            unsafe {
                on_line(
                    data.ptr,
                    to_ptr(job),
                    stream as i32,
                    line.as_ptr().cast(),
                    bytes.len(),
                )
            };
        }));
    }
    // Without a callback `line_data` is dropped (freed) here.
    Ok(spec)
}

/// Starts a child process bound to a running job. On cancel bgjob sends it
/// SIGTERM, then SIGKILL when `grace_ms` has passed; the worker waits for it
/// with `bgjob_job_wait_child`, which also delivers captured output. A child
/// still running when the worker returns is killed and reaped before the job
/// ends, so none outlives its job and none is left a zombie. bgjob reaps it
/// through a pidfd (or, where the kernel has none, by its pid, which nothing
/// else reaps): it installs no SIGCHLD handler and never calls
/// `waitpid(-1)` (a host that does may take the child's status first; the
/// wait then fails with `BGJOB_RESULT_SYSTEM`, errno ECHILD).
///
/// # Returns
/// `BGJOB_RESULT_OK` with `*pid_out` (may be NULL) set;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for NULL options, a NULL or empty `argv`,
/// an environment entry without `=`, unknown or conflicting flags, or a
/// negative grace; `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED`
/// unless the job is running; `BGJOB_RESULT_SYSTEM` if the program could not be
/// started (errno: ENOENT, EACCES, ...).
///
/// # Safety
/// `options` is NULL or a `bgjob_child_options` of `struct_size` bytes whose
/// vectors are NULL-terminated and whose strings are NUL-terminated;
/// `pid_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_spawn_child(
    job: *mut bgjob_job,
    options: *const bgjob_child_options,
    pid_out: *mut i32,
) -> bgjob_result {
    boundary(|| {
        // SAFETY: by this function's contract.
        let spec = unsafe { read_child_options(options, job.addr()) }?;
        let pid = with_job(job, |j, _| j.spawn_child(spec))??;
        // SAFETY: NULL or writable by contract.
        unsafe { put(pid_out, pid) };
        Ok(())
    })
}

/// Binds a child the worker started itself (with `fork`/`posix_spawn`) to the
/// job, as `bgjob_job_spawn_child` does: cancel signals it (SIGTERM, then
/// SIGKILL after `grace_ms`), `bgjob_job_wait_child` reaps it, and it is killed
/// and reaped if still running when the worker returns. It must be a child of
/// this process that nobody has waited for; from now on only bgjob waits for
/// it.
///
/// # Returns
/// `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_FOUND` if no such process exists;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a pid ≤ 0, a process that is not this
/// process's child, a pid already watched, or a negative grace;
/// `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED` unless the job is
/// running; `BGJOB_RESULT_SYSTEM` (errno set) otherwise.
///
/// # Safety
/// Any handle value is safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_watch_child(
    job: *mut bgjob_job,
    pid: i32,
    grace_ms: i64,
) -> bgjob_result {
    boundary(|| {
        let grace = u64::try_from(grace_ms).map_err(|_| bgjob_result::InvalidArgument)?;
        with_job(job, |j, _| j.watch_child(pid, Duration::from_millis(grace)))?
            .map_err(bgjob_result::from)
    })
}

/// Waits for a child bound to the job, delivering its captured output to its
/// line callback on this thread. Returns when the child has ended and been
/// reaped, with `*wstatus_out` (may be NULL) in `waitpid` form (`WIFEXITED`,
/// `WEXITSTATUS`, `WIFSIGNALED`, `WTERMSIG` apply). A cancel does not cut the
/// wait short: bgjob has signalled the child, which ends within its grace
/// period, and the call then returns `BGJOB_RESULT_CANCELLED` with the status
/// set — so a worker that gets CANCELLED knows the child is gone. While the job
/// is paused the worker parks here (the child keeps running) and the paused
/// time does not count toward `timeout_ms` (−1: no limit; 0: just look).
///
/// # Returns
/// `BGJOB_RESULT_OK` (status set); `BGJOB_RESULT_CANCELLED` (status set);
/// `BGJOB_RESULT_TIMED_OUT` (the child still runs and stays bound);
/// `BGJOB_RESULT_NOT_FOUND` for a pid the job does not hold (never bound, or
/// already waited for); `BGJOB_RESULT_INVALID_ARGUMENT` for a timeout below −1
/// or when another thread is waiting for the same child;
/// `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED` unless the job is
/// running; `BGJOB_RESULT_SYSTEM` (errno set) if waiting failed.
///
/// # Safety
/// `wstatus_out` is NULL or writable. Meant for the job's worker thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_wait_child(
    job: *mut bgjob_job,
    pid: i32,
    timeout_ms: i64,
    wstatus_out: *mut i32,
) -> bgjob_result {
    boundary(|| {
        let timeout = timeout_arg(timeout_ms)?;
        let exit = with_job(job, |j, _| j.wait_child(pid, timeout))?;
        match exit {
            Ok(exit) => {
                // SAFETY: NULL or writable by contract.
                unsafe { put(wstatus_out, exit.status) };
                if exit.cancelled {
                    Err(bgjob_result::Cancelled)
                } else {
                    Ok(())
                }
            }
            Err(Error::Cancelled) => Err(bgjob_result::Cancelled),
            Err(e) => Err(e.into()),
        }
    })
}

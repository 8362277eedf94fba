//! Child processes bound to a job: spawn or watch, cancellable wait, kill on
//! cancel, no zombies (libxl's child-process watch, with pidfds).

use super::handles::{to_ptr, with_job};
use super::timeout_arg;
use super::versioned::{self, Versioned};
use super::{
    BGJOB_CHILD_CAPTURE_STDERR, BGJOB_CHILD_CAPTURE_STDOUT, BGJOB_CHILD_DEFAULT_GRACE_MS,
    BGJOB_CHILD_FD_SAME, BGJOB_CHILD_INHERIT_STDIN, BGJOB_CHILD_NEW_SESSION,
    BGJOB_CHILD_NULL_STDERR, BGJOB_CHILD_NULL_STDOUT, BGJOB_CHILD_SURVIVES_CANCEL, UserData,
    bgjob_child_options, bgjob_job, bgjob_result, boundary, need, put,
};
use crate::core::{Error, Output, Spawn};
use std::ffi::{CStr, OsString, c_char};
use std::mem::{offset_of, size_of};
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

const CHILD_FLAGS: u32 = BGJOB_CHILD_CAPTURE_STDOUT
    | BGJOB_CHILD_CAPTURE_STDERR
    | BGJOB_CHILD_INHERIT_STDIN
    | BGJOB_CHILD_NULL_STDOUT
    | BGJOB_CHILD_NULL_STDERR
    | BGJOB_CHILD_SURVIVES_CANCEL
    | BGJOB_CHILD_NEW_SESSION;

pub(super) fn default_child_options() -> bgjob_child_options {
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
        fds: std::ptr::null(),
        fd_count: 0,
    }
}

// SAFETY: repr(C), `struct_size` first; every field is an integer, a nullable
// pointer or an optional function pointer. The first version ended with the
// field before `fds` (the Python binding still passes that size).
unsafe impl Versioned for bgjob_child_options {
    const V1_SIZE: usize = offset_of!(bgjob_child_options, fds);
    fn set_struct_size(&mut self, n: u32) {
        self.struct_size = n;
    }
}

/// Fills `options` with the defaults (no argv; stdout and stderr inherited;
/// stdin `/dev/null`; grace `BGJOB_CHILD_DEFAULT_GRACE_MS`; no flags; no fds
/// passed). Pass `sizeof *options` as `size`; a `size` from an older header
/// (down to the first layout) gets that many bytes written.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` for NULL or a `size`
/// smaller than the first version of the struct.
///
/// `options` points to `size` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_child_options_init(
    options: *mut bgjob_child_options,
    size: usize,
) -> bgjob_result {
    boundary(|| {
        need(options)?;
        let defaults = default_child_options();
        // SAFETY: non-NULL, `size` writable bytes by contract.
        unsafe { versioned::write(options, size, defaults) }
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
    // SAFETY: non-NULL, `struct_size` readable bytes by contract.
    let o = unsafe { versioned::read(options, default_child_options())? };
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
        .survives_cancel(o.flags & BGJOB_CHILD_SURVIVES_CANCEL != 0)
        .new_session(o.flags & BGJOB_CHILD_NEW_SESSION != 0)
        .grace(Duration::from_millis(o.grace_ms as u64));
    if o.fd_count > 0 {
        if o.fds.is_null() {
            return Err(bgjob_result::InvalidArgument);
        }
        // SAFETY: `fd_count` entries by contract.
        let fds = unsafe { std::slice::from_raw_parts(o.fds, o.fd_count) };
        for f in fds {
            let child_fd = match f.child_fd {
                BGJOB_CHILD_FD_SAME => f.fd,
                n => n,
            };
            spec = spec.pass_fd(f.fd, child_fd);
        }
    }
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
        spec = spec.on_line(Box::new(move |stream, bytes| {
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

/// Starts a child process bound to a running job, as libvirt's virCommand
/// does: the child gets stdin (`/dev/null` unless asked), stdout, stderr and
/// the descriptors in `options->fds`, and no other descriptor of this process,
/// close-on-exec or not; every signal disposition is reset to the default
/// (one the host ignores, such as SIGTERM or SIGPIPE, is not ignored in the
/// child) and its signal mask is empty; it leads a new process group (a new
/// session with `BGJOB_CHILD_NEW_SESSION`), and every signal bgjob sends it
/// goes to that whole group, so the programs it starts (a shell's commands)
/// get them too. The program is found in `PATH` when `argv[0]` has no `/`:
/// the `PATH` of `envp` if it sets one, else this process's.
///
/// On cancel bgjob sends the group SIGTERM, then SIGKILL when `grace_ms` has
/// passed; once the child itself has exited after a cancel, whatever is left
/// of its group gets SIGKILL at once. The worker waits for it with
/// `bgjob_job_wait_child`, which also delivers captured output. A child still
/// bound when the worker returns is killed with its group and reaped before
/// the job ends, so none outlives its job and none is left a zombie. Once
/// cancel has been requested (not counting a soft cancel,
/// `bgjob_job_cancel_soft`, which lets the worker finish its work, children
/// included), only a child with `BGJOB_CHILD_SURVIVES_CANCEL`
/// is started (a cleanup step); any other is refused with
/// `BGJOB_RESULT_CANCELLED` and nothing runs, as a program started only to be
/// killed at once may leave half its work done.
///
/// The child and a process descriptor (pidfd) for it are made in one system
/// call (`clone3` with `CLONE_PIDFD`; `clone` where clone3 is refused), so
/// `BGJOB_RESULT_OK` means the program was started, and `BGJOB_RESULT_SYSTEM`
/// that it did not run: bgjob has the child before anyone can reap it. bgjob
/// reaps it through the pidfd (without one — kernels before 5.2 — by its pid,
/// which nothing else reaps): it installs no SIGCHLD handler and never calls
/// `waitpid(-1)`. A host that does may still take the child's exit status
/// first; the child did run, and `bgjob_job_wait_child` then fails with
/// `BGJOB_RESULT_SYSTEM`, errno ECHILD.
///
/// Returns: `BGJOB_RESULT_OK` with `*pid_out` (may be NULL) set: the program runs;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for NULL options, a NULL or empty `argv`, an
/// environment entry without `=`, unknown or conflicting flags, a negative grace,
/// `fd_count` > 0 with NULL `fds`, a negative `fd`, a `child_fd` below −1 or given
/// twice, or one that replaces a stream a flag sets; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_NOT_ALLOWED` unless the job is running; `BGJOB_RESULT_CANCELLED`
/// once cancel was requested, without `BGJOB_CHILD_SURVIVES_CANCEL` (nothing was
/// started); `BGJOB_RESULT_SYSTEM` if the program could not be started, and did not
/// run (errno: ENOENT, EACCES, ...; EBADF for a passed `fd` that is not open;
/// EINVAL or EMFILE when the highest `child_fd` leaves no room below the fd limit,
/// `RLIMIT_NOFILE`: bgjob first copies every fd the child gets above it).
///
/// `options` points to a `bgjob_child_options` of `struct_size` bytes whose vectors
/// are NULL-terminated, whose strings are NUL-terminated and whose `fds` points to
/// `fd_count` entries.
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
/// it. Signals go to its process group as well if it leads one when bound
/// (the worker made it with `setpgid(0, 0)` or `setsid`), else to it alone. A
/// child bound after a (force) cancel was requested is signalled at once; one
/// bound after a soft cancel is signalled by a later force cancel: cancel cannot
/// spare a watched child (spawn one with `BGJOB_CHILD_SURVIVES_CANCEL` for
/// that).
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_NOT_FOUND` if no such process exists;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a pid ≤ 0, a process that is not this
/// process's child, a pid already watched, or a negative grace;
/// `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED` unless the job is
/// running; `BGJOB_RESULT_SYSTEM` (errno set) otherwise.
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
/// set — so a worker that gets CANCELLED knows the child is gone. A child
/// spawned with `BGJOB_CHILD_SURVIVES_CANCEL` is not signalled: the wait lasts
/// until it ends (or `timeout_ms`) and returns `BGJOB_RESULT_OK` with its
/// status, cancel or not. While the job
/// is paused the worker parks here (the child keeps running) and the paused
/// time does not count toward `timeout_ms` (−1: no limit; 0: just look).
///
/// Returns: `BGJOB_RESULT_OK` (status set); `BGJOB_RESULT_CANCELLED` (status set);
/// `BGJOB_RESULT_TIMED_OUT` (the child still runs and stays bound);
/// `BGJOB_RESULT_NOT_FOUND` for a pid the job does not hold (never bound, or
/// already waited for); `BGJOB_RESULT_INVALID_ARGUMENT` for a timeout below −1 or
/// when another thread is waiting for the same child;
/// `BGJOB_RESULT_INVALID_HANDLE`; `BGJOB_RESULT_NOT_ALLOWED` unless the job is
/// running; `BGJOB_RESULT_SYSTEM` (errno set) if waiting failed.
///
/// Threads: meant for the job's worker thread.
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

//! Starting a child process the way bgjob promises (libvirt's virCommand is
//! the model): only the descriptors it is given, its own process group, the
//! default signal dispositions, and a process descriptor that exists from the
//! instant the process does.
//!
//! `clone3(CLONE_PIDFD | CLONE_VFORK)` creates the child and its pidfd in one
//! system call, so there is no moment in which a host's `waitpid(-1)` could
//! reap the child before bgjob holds it: a fast program that has already run
//! is never reported as "could not be started". Where clone3 is refused
//! (ENOSYS: kernels before 5.3, valgrind; EPERM: seccomp profiles) `clone`
//! with `CLONE_PIDFD` gives the same pidfd (kernels 5.2+); without either the
//! child is held by its pid ([`Process`]'s fallback).
//!
//! Between clone and exec the child runs only async-signal-safe system calls
//! on memory prepared by the parent: no allocation, no lock, no panic.

use super::Process;
use std::ffi::{CString, OsStr, OsString, c_char};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// Where one of the child's standard streams (0, 1, 2) comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stdio {
    /// The parent's own descriptor of that number, as it is.
    Inherit,
    /// `/dev/null`.
    Null,
    /// A pipe whose read end [`spawn`] returns.
    Pipe,
    /// This descriptor of the parent's (duplicated; the caller keeps it).
    Fd(i32),
}

/// What to start.
pub(crate) struct SpawnArgs<'a> {
    /// `argv[0]` is the program, looked up in `PATH` when it has no `/`.
    pub(crate) argv: &'a [OsString],
    /// The whole environment; `None`: the parent's.
    pub(crate) env: Option<&'a [(OsString, OsString)]>,
    pub(crate) cwd: Option<&'a Path>,
    /// stdin, stdout, stderr.
    pub(crate) stdio: [Stdio; 3],
    /// More descriptors: (the parent's number, the child's number, ≥ 3, each
    /// once). Every other descriptor above 2 is closed in the child.
    pub(crate) fds: &'a [(i32, i32)],
    /// `setsid()` (a new session and process group) instead of `setpgid(0, 0)`.
    pub(crate) new_session: bool,
}

/// A started child.
pub(crate) struct Spawned {
    pub(crate) pid: i32,
    /// Held as the leader of its own process group.
    pub(crate) process: Process,
    /// Read ends of the stdout and stderr pipes ([`Stdio::Pipe`]).
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: Option<OwnedFd>,
}

/// Tests take the `clone` path (no clone3, as under valgrind) or the path
/// without any pidfd (kernels before 5.2).
#[cfg(test)]
pub(crate) static FORCE_CLONE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
#[cfg(test)]
pub(crate) const FORCE_CLONE_PIDFD: u8 = 1;
/// Held by tests that set [`FORCE_CLONE`], so one does not reset it under
/// another.
#[cfg(test)]
pub(crate) static FORCE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
pub(crate) const FORCE_NO_PIDFD: u8 = 2;

/// Everything the child reads between clone and exec, prepared by the parent.
struct Plan<'a> {
    /// Paths to try, in order (the `PATH` search, done ahead).
    candidates: &'a [*const c_char],
    argv: *const *const c_char,
    envp: *const *const c_char,
    cwd: *const c_char,
    /// (source, target): every source is above every target, close-on-exec.
    maps: &'a [(i32, i32)],
    /// Ranges of descriptors to mark close-on-exec: all above 2 but targets.
    close: &'a [(u32, u32)],
    /// Where `close_range` is missing: the highest descriptor number to mark.
    fd_limit: u32,
    new_session: bool,
    /// The write end of the error pipe (close-on-exec, above every target).
    err_fd: i32,
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

/// Reports `err` to the parent and exits. Async-signal-safe.
fn child_fail(err_fd: i32, err: i32) -> ! {
    let bytes = err.to_ne_bytes();
    // SAFETY: writes 4 bytes from a live array to the error pipe, then ends
    // the process without running any of the parent's exit handlers.
    unsafe {
        libc::write(err_fd, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

/// The child's side, from clone to exec: only system calls, no allocation.
fn child_exec(p: &Plan<'_>) -> ! {
    // SAFETY (whole function): every pointer in the plan points into memory
    // the parent prepared and keeps alive across the clone (the child has its
    // own copy of it); the calls are async-signal-safe system calls.
    unsafe {
        // Default dispositions before anything is unblocked (every signal is
        // blocked since before the clone): a handler of the parent's must
        // never run in the child, and a signal the host ignores (SIGTERM,
        // SIGPIPE) must not stay ignored in it, or cancel could not stop it.
        // The raw system call, not sigaction(3), which a sanitizer may
        // intercept. An all-zero kernel sigaction is SIG_DFL with no flags,
        // no restorer and an empty mask on every architecture.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    KERNEL_SIGSET_SIZE,
                );
            }
        }
        let r = if p.new_session {
            libc::setsid()
        } else {
            libc::setpgid(0, 0)
        };
        if r < 0 {
            child_fail(p.err_fd, errno());
        }
        if !p.cwd.is_null() && libc::chdir(p.cwd) < 0 {
            child_fail(p.err_fd, errno());
        }
        for &(src, dst) in p.maps {
            // dup2 leaves the new descriptor without close-on-exec.
            if libc::dup2(src, dst) < 0 {
                child_fail(p.err_fd, errno());
            }
        }
        for &(lo, hi) in p.close {
            let r = libc::syscall(libc::SYS_close_range, lo, hi, libc::CLOSE_RANGE_CLOEXEC);
            if r < 0 {
                // Before Linux 5.11 (no CLOSE_RANGE_CLOEXEC) or 5.9 (no
                // close_range): one fcntl per number up to the fd limit.
                let mut fd = lo;
                while fd <= hi && fd <= p.fd_limit {
                    libc::fcntl(fd as i32, libc::F_SETFD, libc::FD_CLOEXEC);
                    fd += 1;
                }
            }
        }
        let empty: u64 = 0;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const empty,
            std::ptr::null_mut::<u64>(),
            KERNEL_SIGSET_SIZE,
        );
        // As execvp: a candidate that is missing or not a directory is
        // skipped; EACCES is remembered and reported if nothing else ran;
        // any other error ends the search.
        let mut err = libc::ENOENT;
        let mut denied = false;
        for &path in p.candidates {
            libc::execve(path, p.argv, p.envp);
            err = errno();
            match err {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG => {}
                _ => child_fail(p.err_fd, err),
            }
        }
        child_fail(p.err_fd, if denied { libc::EACCES } else { err })
    }
}

/// The kernel's sigset size (64 signals), as rt_sigprocmask wants it.
const KERNEL_SIGSET_SIZE: usize = 8;

/// `struct clone_args`, version 0 (Linux 5.3).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// The child just created.
struct Cloned {
    pid: i32,
    /// None: a kernel before 5.2, or the tests' forced fallback.
    pidfd: Option<OwnedFd>,
    /// `CLONE_VFORK`: it had exec'd or exited by the time clone returned.
    vfork: bool,
}

fn owned(fd: i32) -> Option<OwnedFd> {
    // SAFETY: the kernel just made `fd` for us alone.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates the child, which runs `child_exec(plan)`. Every signal is blocked
/// in this thread around the call (and so in the child until it has reset
/// its dispositions).
fn clone_child(plan: &Plan<'_>) -> std::io::Result<Cloned> {
    // The kernel's own sigset (64 bits): every signal, the two glibc keeps
    // for itself included, as posix_spawn blocks them around its clone.
    let all: u64 = !0;
    let mut old: u64 = 0;
    // SAFETY: rt_sigprocmask reads 8 bytes from a live u64 and writes the
    // old mask into another.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const all,
            &raw mut old,
            KERNEL_SIGSET_SIZE,
        );
    }
    let cloned = clone_blocked(plan);
    // SAFETY: restores the mask saved above, from a live u64.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const old,
            std::ptr::null_mut::<u64>(),
            KERNEL_SIGSET_SIZE,
        );
    }
    cloned
}

fn clone_blocked(plan: &Plan<'_>) -> std::io::Result<Cloned> {
    // Tests that force the pid fallback get it for spawned children too.
    #[cfg(test)]
    let force = if super::FORCE_PID_FALLBACK.load(std::sync::atomic::Ordering::Relaxed) {
        FORCE_NO_PIDFD
    } else {
        FORCE_CLONE.load(std::sync::atomic::Ordering::Relaxed)
    };
    #[cfg(not(test))]
    let force = 0u8;
    let mut pidfd: i32 = -1;
    if force == 0 {
        let mut args = CloneArgs {
            flags: (libc::CLONE_PIDFD | libc::CLONE_VFORK) as u64,
            pidfd: (&raw mut pidfd) as u64,
            child_tid: 0,
            parent_tid: 0,
            exit_signal: libc::SIGCHLD as u64,
            stack: 0,
            stack_size: 0,
            tls: 0,
        };
        // SAFETY: clone3 with a live clone_args of its version-0 size and no
        // stack: the child gets a copy of this address space (no CLONE_VM),
        // as with fork, and runs only `child_exec`, which never returns. The
        // parent sleeps until the child has exec'd or exited (CLONE_VFORK).
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &raw mut args,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if r == 0 {
            child_exec(plan);
        }
        if r > 0 {
            return Ok(Cloned {
                pid: r as i32,
                pidfd: owned(pidfd),
                vfork: true,
            });
        }
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) {
            return Err(e);
        }
    }
    // No clone3. Without CLONE_VFORK, which valgrind cannot run.
    let mut flags = libc::SIGCHLD as libc::c_ulong;
    if force != FORCE_NO_PIDFD {
        flags |= libc::CLONE_PIDFD as libc::c_ulong;
    }
    loop {
        pidfd = -1;
        // SAFETY: clone with fork semantics (no CLONE_VM, no new stack); with
        // CLONE_PIDFD the kernel writes the pidfd into the live int passed as
        // the parent-tid pointer, the third argument on every architecture but
        // s390, where the stack comes first.
        #[cfg(not(target_arch = "s390x"))]
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone,
                flags,
                0usize,
                &raw mut pidfd,
                0usize,
                0usize,
            )
        };
        #[cfg(target_arch = "s390x")]
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone,
                0usize,
                flags,
                &raw mut pidfd,
                0usize,
                0usize,
            )
        };
        if r == 0 {
            child_exec(plan);
        }
        if r > 0 {
            // A kernel before 5.2 ignores CLONE_PIDFD and leaves -1.
            return Ok(Cloned {
                pid: r as i32,
                pidfd: owned(pidfd),
                vfork: false,
            });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINVAL) && flags & libc::CLONE_PIDFD as libc::c_ulong != 0
        {
            flags &= !(libc::CLONE_PIDFD as libc::c_ulong);
            continue;
        }
        return Err(e);
    }
}

/// `fcntl(F_DUPFD_CLOEXEC)`: a close-on-exec copy of `fd` at `floor` or above.
fn dup_above(fd: i32, floor: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl takes ints; a non-negative return is a new descriptor.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(owned(r).expect("non-negative"))
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1i32; 2];
    // SAFETY: pipe2 writes two descriptors into a live array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((owned(fds[0]).expect("pipe"), owned(fds[1]).expect("pipe")))
}

fn cstring(s: &OsStr) -> std::io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// The paths execvp would try for `program`, `PATH` being the child's own
/// when its environment sets one, else the parent's, else `/bin:/usr/bin`.
fn candidates(
    program: &OsStr,
    env: Option<&[(OsString, OsString)]>,
) -> std::io::Result<Vec<CString>> {
    if program.is_empty() {
        return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
    }
    if program.as_bytes().contains(&b'/') {
        return Ok(vec![cstring(program)?]);
    }
    let path = env
        .and_then(|vars| {
            vars.iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.clone())
        })
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| OsString::from("/bin:/usr/bin"));
    path.as_bytes()
        .split(|&b| b == b':')
        .map(|dir| {
            let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
            let mut full = dir.to_vec();
            full.push(b'/');
            full.extend_from_slice(program.as_bytes());
            cstring(OsStr::from_bytes(&full))
        })
        .collect()
}

/// Reads the child's exec error, if it sent one: `Ok(None)` once it has
/// exec'd. `wait_eof`: the child may still be before its exec (no vfork), so
/// wait for the pipe's end (its copy closes at exec); otherwise the child is
/// past it and anything it wrote is there now (other processes forked
/// meanwhile may hold the write end open, so an end of file may never come).
fn read_exec_error(read: &OwnedFd, wait_eof: bool) -> std::io::Result<Option<i32>> {
    if !wait_eof {
        super::set_nonblocking(read.as_raw_fd())?;
    }
    let mut buf = [0u8; 4];
    loop {
        // SAFETY: reads at most 4 bytes into a live array.
        let n = unsafe { libc::read(read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n == 4 {
            return Ok(Some(i32::from_ne_bytes(buf)));
        }
        if n >= 0 {
            // End of file (exec'd) or a torn write, which a 4-byte write to a
            // pipe never is.
            return Ok(None);
        }
        match errno() {
            libc::EINTR => continue,
            libc::EAGAIN => return Ok(None),
            e => return Err(std::io::Error::from_raw_os_error(e)),
        }
    }
}

/// Starts a child as `args` says (see the module documentation).
pub(crate) fn spawn(args: &SpawnArgs<'_>) -> std::io::Result<Spawned> {
    let Some(program) = args.argv.first() else {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    };
    let argv: Vec<CString> = args
        .argv
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = match args.env {
        Some(vars) => vars
            .iter()
            .map(|(k, v)| {
                let mut kv = k.clone().into_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstring(OsStr::from_bytes(&kv))
            })
            .collect::<Result<_, _>>()?,
        // A copy taken under std's environment lock, not `environ` itself,
        // which another thread's setenv may be changing.
        None => std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstring(OsStr::from_bytes(&kv))
            })
            .collect::<Result<_, _>>()?,
    };
    let paths = candidates(program, args.env)?;
    let cwd = args.cwd.map(|d| cstring(d.as_os_str())).transpose()?;
    let ptrs = |v: &[CString]| -> Vec<*const c_char> {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let argv_p = ptrs(&argv);
    let env_p = ptrs(&env);
    let path_p: Vec<*const c_char> = paths.iter().map(|s| s.as_ptr()).collect();

    // Every descriptor the child is to get is copied above the highest target
    // number first, so no dup2 in the child overwrites one still to be copied.
    let top = args.fds.iter().map(|&(_, t)| t).max().unwrap_or(2).max(2);
    let floor = top
        .checked_add(1)
        .ok_or(std::io::Error::from_raw_os_error(libc::EBADF))?;
    let mut held: Vec<OwnedFd> = Vec::new();
    let mut maps: Vec<(i32, i32)> = Vec::new();
    let mut readers: [Option<OwnedFd>; 3] = [None, None, None];
    for (target, how) in args.stdio.iter().enumerate() {
        let src = match *how {
            Stdio::Inherit => continue,
            Stdio::Null => {
                // SAFETY: open with a NUL-terminated literal path.
                let fd =
                    unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
                let null = owned(fd).ok_or_else(std::io::Error::last_os_error)?;
                dup_above(null.as_raw_fd(), floor)?
            }
            Stdio::Pipe => {
                let (r, w) = pipe()?;
                readers[target] = Some(r);
                dup_above(w.as_raw_fd(), floor)?
            }
            Stdio::Fd(fd) => dup_above(fd, floor)?,
        };
        maps.push((src.as_raw_fd(), target as i32));
        held.push(src);
    }
    for &(fd, target) in args.fds {
        let src = dup_above(fd, floor)?;
        maps.push((src.as_raw_fd(), target));
        held.push(src);
    }
    let mut keep: Vec<i32> = args.fds.iter().map(|&(_, t)| t).collect();
    keep.sort_unstable();
    let mut close = Vec::new();
    let mut lo: u32 = 3;
    for &t in &keep {
        let t = t as u32;
        if t > lo {
            close.push((lo, t - 1));
        }
        lo = t + 1;
    }
    close.push((lo, u32::MAX));
    let (err_read, err_write) = {
        let (r, w) = pipe()?;
        // `w` closes at the end of this block: only the child's copy of the
        // write end may keep the pipe open.
        (r, dup_above(w.as_raw_fd(), floor)?)
    };
    // SAFETY: getrlimit writes one live struct.
    let fd_limit = unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 {
            rl.rlim_cur.min(1 << 20) as u32
        } else {
            1 << 20
        }
    };
    let plan = Plan {
        candidates: &path_p,
        argv: argv_p.as_ptr(),
        envp: env_p.as_ptr(),
        cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        maps: &maps,
        close: &close,
        fd_limit,
        new_session: args.new_session,
        err_fd: err_write.as_raw_fd(),
    };
    let Cloned { pid, pidfd, vfork } = clone_child(&plan)?;
    // The child has its own copies; ours go now (the error pipe's write end
    // first, so its end of file can come).
    drop(err_write);
    drop(held);
    let exec_error = read_exec_error(&err_read, !vfork);
    let process = match pidfd {
        Some(fd) => Process::from_pidfd(pid, fd, true),
        None => match Process::spawned_by_pid(pid, true) {
            Ok(p) => p,
            Err(e) => {
                // No watcher (EMFILE, EAGAIN): the child must not run on
                // unwatched. It is ours and unreaped unless a host's
                // waitpid(-1) took it (ECHILD then).
                // SAFETY: kill and waitpid on our own child, no pointers kept.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(e);
            }
        },
    };
    match exec_error {
        Ok(None) => {}
        Ok(Some(errno)) => {
            // It exited (127) without running anything: reap it here. ECHILD:
            // a host's waitpid(-1) reaped it first, which changes nothing.
            process.reap_blocking();
            return Err(std::io::Error::from_raw_os_error(errno));
        }
        Err(e) => {
            let _ = process.signal(libc::SIGKILL);
            process.reap_blocking();
            return Err(e);
        }
    }
    let [_, stdout, stderr] = readers;
    Ok(Spawned {
        pid,
        process,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn run(script: &str, stdio: [Stdio; 3], fds: &[(i32, i32)]) -> std::io::Result<i32> {
        let argv = ["sh", "-c", script].map(OsString::from);
        let s = spawn(&SpawnArgs {
            argv: &argv,
            env: None,
            cwd: None,
            stdio,
            fds,
            new_session: false,
        })?;
        loop {
            if let Some(status) = s.process.reap()? {
                return Ok(status);
            }
            super::super::poll_readable(s.process.raw(), 100);
        }
    }

    const NULLS: [Stdio; 3] = [Stdio::Null, Stdio::Null, Stdio::Null];

    /// Every way of creating the child (clone3, clone with a pidfd, clone
    /// without) gives the same result: the status, exec errors, passed fds
    /// at their numbers and no other fd, its own process group.
    #[test]
    fn every_clone_path_keeps_the_same_promises() {
        // An fd without close-on-exec, as a host's socket may be.
        let (r, w) = std::io::pipe().unwrap();
        // SAFETY: fcntl takes ints. Above the numbers other tests running
        // meanwhile use, so no target below can be it.
        let leaky = unsafe { libc::fcntl(r.as_raw_fd(), libc::F_DUPFD, 300) };
        assert!(leaky >= 300);
        let pass = w.as_raw_fd();
        let _forcing = FORCE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        for force in [0, FORCE_CLONE_PIDFD, FORCE_NO_PIDFD] {
            FORCE_CLONE.store(force, Ordering::Relaxed);
            let status = run("exit 3", NULLS, &[]).unwrap();
            assert_eq!(status, 3 << 8, "mode {force}");
            let argv = [OsString::from("bgjob-no-such-program")];
            let e = spawn(&SpawnArgs {
                argv: &argv,
                env: None,
                cwd: None,
                stdio: NULLS,
                fds: &[],
                new_session: false,
            })
            .err()
            .and_then(|e| e.raw_os_error());
            assert_eq!(e, Some(libc::ENOENT), "mode {force}");
            let script = format!(
                "test -e /proc/self/fd/{leaky} && exit 1; \
                 test -e /proc/self/fd/250 || exit 2; \
                 test -e /proc/self/fd/{pass} || exit 3; \
                 [ \"$(ps -o pgid= -p $$)\" -eq $$ ] || exit 4; exit 0"
            );
            let status = run(&script, NULLS, &[(pass, 250), (pass, pass)]).unwrap();
            assert_eq!(status, 0, "mode {force}: exit {}", status >> 8);
        }
        FORCE_CLONE.store(0, Ordering::Relaxed);
        unsafe { libc::close(leaky) };
    }

    /// Passed fds whose numbers collide with each other's sources are still
    /// each given as asked (the swap 3 <-> 4 a naive dup2 order gets wrong).
    #[test]
    fn crossed_fds_arrive_at_their_numbers() {
        let (r, w) = std::io::pipe().unwrap();
        let (a, b) = (r.as_raw_fd(), w.as_raw_fd());
        // The child writes "x" into what it got as fd `a` (the write end)...
        let status = run(&format!("printf x >&{a}"), NULLS, &[(b, a), (a, b)]).unwrap();
        assert_eq!(status, 0);
        let mut got = [0u8; 1];
        let n = unsafe { libc::read(a, got.as_mut_ptr().cast(), 1) };
        assert_eq!((n, got[0]), (1, b'x'));
    }
}

//! Child processes bound to a job (libxl's "child-process watch").
//!
//! A child is spawned for a job ([`super::Job::spawn_child`]) or an existing one
//! is watched ([`super::Job::watch_child`]). Either way bgjob holds a pidfd for
//! it (or, without pidfds, its pid and a watcher thread: [`Process`]),
//! registers a cancel hook that sends SIGTERM and arms a SIGKILL for when the
//! grace period ends, and reaps it — only that child, with no SIGCHLD handler
//! of bgjob's and no `waitpid(-1)` that could take the host's children. A
//! child still running when its job's worker returns is killed and reaped
//! before the job ends: no zombie outlives a job.
//!
//! A spawned child (libvirt's virCommand is the model) gets stdin, stdout,
//! stderr and the descriptors passed to it, nothing else of the parent's; it
//! leads its own process group, and every signal bgjob sends it goes to the
//! whole group, so `sh -c 'sleep 30; …'` does not leave the `sleep` behind.
//! After a cancel, once the child itself has exited, whatever is left of its
//! group gets SIGKILL at once. A child spawned to survive cancel (a cleanup
//! step: `lvremove`, a hook script) is not signalled by cancel at all.

use super::errno::ECHILD;
use super::error::Error;
use super::timer::{self, TimerId};
use crate::sys::{self, PollFd, Process};
use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The id of the cancellation hook the job registered for the child (the
/// job's `HookId`; a plain number here, so children need nothing of jobs).
type HookId = u64;

/// Which of a child's output streams a captured line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Stream {
    /// Standard output.
    Stdout = 1,
    /// Standard error.
    Stderr = 2,
}

/// Where a child's stdout or stderr goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Output {
    /// The parent's own stream (the default).
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// A pipe, read while the worker waits for the child and handed over line
    /// by line.
    Capture,
}

/// Receives captured output, one line at a time, without its terminator. A
/// line ends at `\n`, `\r` (progress meters such as `qemu-img -p` redraw with
/// it) or `\r\n`; empty lines are skipped, and a line longer than
/// [`MAX_LINE`] comes in pieces. Called on the thread waiting for the child.
pub type LineFn = Box<dyn FnMut(Stream, &[u8]) + Send + 'static>;

/// Longest piece of a line delivered at once.
pub const MAX_LINE: usize = 64 * 1024;

/// Default time between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// How to start a child ([`Job::spawn_child`]).
pub struct Spawn {
    argv: Vec<OsString>,
    env: Option<Vec<(OsString, OsString)>>,
    cwd: Option<PathBuf>,
    inherit_stdin: bool,
    stdout: Output,
    stderr: Output,
    grace: Duration,
    on_line: Option<LineFn>,
    /// (the parent's fd, the child's fd).
    fds: Vec<(i32, i32)>,
    pub(super) survives_cancel: bool,
    new_session: bool,
}

impl Spawn {
    /// `argv[0]` is the program (looked up in `PATH` when it has no `/`).
    pub fn new<I, S>(argv: I) -> Spawn
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Spawn {
            argv: argv.into_iter().map(Into::into).collect(),
            env: None,
            cwd: None,
            inherit_stdin: false,
            stdout: Output::Inherit,
            stderr: Output::Inherit,
            grace: DEFAULT_GRACE,
            on_line: None,
            fds: Vec::new(),
            survives_cancel: false,
            new_session: false,
        }
    }

    /// The child's whole environment (default: the parent's).
    pub fn env(mut self, vars: Vec<(OsString, OsString)>) -> Spawn {
        self.env = Some(vars);
        self
    }

    /// The child's working directory (default: the parent's).
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Spawn {
        self.cwd = Some(dir.into());
        self
    }

    /// Give the child the parent's stdin (default: `/dev/null`; a background
    /// job should not read the terminal).
    pub fn inherit_stdin(mut self, yes: bool) -> Spawn {
        self.inherit_stdin = yes;
        self
    }

    /// Where stdout goes.
    pub fn stdout(mut self, o: Output) -> Spawn {
        self.stdout = o;
        self
    }

    /// Where stderr goes.
    pub fn stderr(mut self, o: Output) -> Spawn {
        self.stderr = o;
        self
    }

    /// Time from SIGTERM to SIGKILL after a cancel (zero: SIGKILL at once).
    pub fn grace(mut self, grace: Duration) -> Spawn {
        self.grace = grace;
        self
    }

    /// Receives captured lines (see [`LineFn`]). Without one, captured output
    /// is read and dropped.
    pub fn on_line(mut self, f: LineFn) -> Spawn {
        self.on_line = Some(f);
        self
    }

    /// Passes the parent's descriptor `fd` to the child as `child_fd` (QEMU
    /// and libvirt hand helpers sockets and files this way). The child gets
    /// its own copy, without close-on-exec; `fd` stays the caller's, open and
    /// unchanged. A `child_fd` of 0, 1 or 2 replaces that stream (not with
    /// [`Spawn::inherit_stdin`], or a captured or discarded stdout/stderr).
    /// Every descriptor above 2 that is not passed is closed in the child.
    pub fn pass_fd(mut self, fd: i32, child_fd: i32) -> Spawn {
        self.fds.push((fd, child_fd));
        self
    }

    /// A child that cancel does not signal: a cleanup step run after (or
    /// during) a cancel, such as `lvremove` or a hook script. Its wait is not
    /// cut short and reports its own status; it is still killed and reaped if
    /// it runs when the worker returns. Without this, spawning after cancel is
    /// refused ([`Error::Cancelled`]).
    pub fn survives_cancel(mut self, yes: bool) -> Spawn {
        self.survives_cancel = yes;
        self
    }

    /// Start the child in a session of its own (`setsid`) rather than only a
    /// process group of its own: no controlling terminal, no terminal signals.
    pub fn new_session(mut self, yes: bool) -> Spawn {
        self.new_session = yes;
        self
    }
}

/// How a waited-for child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildExit {
    /// The status in `waitpid(2)` form: `WIFEXITED`/`WEXITSTATUS`,
    /// `WIFSIGNALED`/`WTERMSIG` apply.
    pub status: i32,
    /// Cancel was requested before the child ended (bgjob signalled it).
    pub cancelled: bool,
}

impl ChildExit {
    /// The exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        (self.status & 0x7f == 0).then_some((self.status >> 8) & 0xff)
    }

    /// The signal that ended it, if one did.
    pub fn signal(&self) -> Option<i32> {
        let sig = self.status & 0x7f;
        (sig != 0 && sig != 0x7f).then_some(sig)
    }
}

struct Pipe {
    stream: Stream,
    file: std::fs::File,
    buf: Vec<u8>,
    /// The last byte seen was `\r`: a `\n` right after it ends nothing new.
    after_cr: bool,
    open: bool,
}

impl Pipe {
    fn new(stream: Stream, fd: std::os::fd::OwnedFd) -> std::io::Result<Pipe> {
        sys::set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&fd))?;
        Ok(Pipe {
            stream,
            file: std::fs::File::from(fd),
            buf: Vec::new(),
            after_cr: false,
            open: true,
        })
    }

    fn raw(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(&self.file)
    }

    /// Reads what is there now, handing over complete lines.
    fn pump(&mut self, emit: &mut dyn FnMut(Stream, &[u8])) {
        let mut chunk = [0u8; 8192];
        while self.open {
            match self.file.read(&mut chunk) {
                Ok(0) => self.open = false,
                Ok(n) => self.feed(&chunk[..n], emit),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => self.open = false,
            }
        }
        self.flush(emit);
    }

    fn feed(&mut self, data: &[u8], emit: &mut dyn FnMut(Stream, &[u8])) {
        for &b in data {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => self.flush(emit),
                _ => {
                    self.buf.push(b);
                    if self.buf.len() >= MAX_LINE {
                        self.flush(emit);
                    }
                }
            }
        }
    }

    fn flush(&mut self, emit: &mut dyn FnMut(Stream, &[u8])) {
        if !self.buf.is_empty() {
            emit(self.stream, &self.buf);
            self.buf.clear();
        }
    }
}

/// What the thread waiting for a child owns while it waits.
pub(crate) struct Io {
    pipes: Vec<Pipe>,
    on_line: Option<LineFn>,
}

struct ChildSt {
    /// Set once reaped.
    status: Option<i32>,
    kill_timer: Option<TimerId>,
    hook: Option<HookId>,
    /// Taken by the thread that waits; `None` while it does.
    io: Option<Io>,
    /// The child was signalled because of a cancel.
    terminated: bool,
}

/// One child bound to a job.
pub(crate) struct Child {
    pub(crate) pid: i32,
    process: Process,
    grace: Duration,
    /// Cancel does not signal it ([`Spawn::survives_cancel`]).
    pub(crate) survives_cancel: bool,
    st: Mutex<ChildSt>,
}

impl Child {
    fn new(
        pid: i32,
        process: Process,
        grace: Duration,
        survives_cancel: bool,
        io: Io,
    ) -> Arc<Child> {
        Arc::new(Child {
            pid,
            process,
            grace,
            survives_cancel,
            st: Mutex::new(ChildSt {
                status: None,
                kill_timer: None,
                hook: None,
                io: Some(io),
                terminated: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ChildSt> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a child as `spec` says.
    pub(crate) fn spawn(spec: Spawn) -> Result<Arc<Child>, Error> {
        if spec.argv.is_empty() {
            return Err(Error::InvalidArgument("argv is empty"));
        }
        let stdio = |o: Output| match o {
            Output::Inherit => sys::Stdio::Inherit,
            Output::Null => sys::Stdio::Null,
            Output::Capture => sys::Stdio::Pipe,
        };
        let mut streams = [
            if spec.inherit_stdin {
                sys::Stdio::Inherit
            } else {
                sys::Stdio::Null
            },
            stdio(spec.stdout),
            stdio(spec.stderr),
        ];
        // A passed fd may replace a stream that was left at its default.
        let mut replaceable = [
            !spec.inherit_stdin,
            spec.stdout == Output::Inherit,
            spec.stderr == Output::Inherit,
        ];
        let mut fds = Vec::new();
        for &(fd, target) in &spec.fds {
            if fd < 0 || target < 0 {
                return Err(Error::InvalidArgument("a passed fd is negative"));
            }
            if spec.fds.iter().filter(|&&(_, t)| t == target).count() > 1 {
                return Err(Error::InvalidArgument(
                    "two fds passed as the same child fd",
                ));
            }
            match usize::try_from(target) {
                Ok(std @ 0..=2) => {
                    if !replaceable[std] {
                        return Err(Error::InvalidArgument(
                            "an fd passed as a stream the flags already set",
                        ));
                    }
                    replaceable[std] = false;
                    streams[std] = sys::Stdio::Fd(fd);
                }
                _ => fds.push((fd, target)),
            }
        }
        let spawned = sys::spawn(&sys::SpawnArgs {
            argv: &spec.argv,
            env: spec.env.as_deref(),
            cwd: spec.cwd.as_deref(),
            stdio: streams,
            fds: &fds,
            new_session: spec.new_session,
        })?;
        let mut pipes = Vec::new();
        let mut failed = None;
        for (stream, fd) in [
            (Stream::Stdout, spawned.stdout),
            (Stream::Stderr, spawned.stderr),
        ] {
            match fd.map(|fd| Pipe::new(stream, fd)) {
                Some(Ok(p)) => pipes.push(p),
                Some(Err(e)) => failed = failed.or(Some(e)),
                None => {}
            }
        }
        let c = Child::new(
            spawned.pid,
            spawned.process,
            spec.grace,
            spec.survives_cancel,
            Io {
                pipes,
                on_line: spec.on_line,
            },
        );
        if let Some(e) = failed {
            c.reap_now();
            return Err(e.into());
        }
        Ok(c)
    }

    /// Watches a child the caller already started (it must be this process's
    /// child, not yet reaped).
    pub(crate) fn watch(pid: i32, grace: Duration) -> Result<Arc<Child>, Error> {
        if pid <= 0 {
            return Err(Error::InvalidArgument("pid must be positive"));
        }
        let process = Process::open(pid).map_err(|e| match e.raw_os_error() {
            Some(super::errno::ESRCH) => Error::NotFound,
            _ => e.into(),
        })?;
        let child = Child::new(
            pid,
            process,
            grace,
            false,
            Io {
                pipes: Vec::new(),
                on_line: None,
            },
        );
        // Only our own children can be reaped: find out now rather than at the
        // first wait. One that has already exited is reaped here and its status
        // kept for the wait.
        match child.try_reap() {
            Err(Error::System(ECHILD)) => {
                Err(Error::InvalidArgument("pid is not a child of this process"))
            }
            Err(e) => Err(e),
            Ok(_) => Ok(child),
        }
    }

    pub(crate) fn set_hook(&self, id: HookId) {
        self.lock().hook = Some(id);
    }

    /// The cancel hook: SIGTERM now (SIGKILL with no grace), SIGKILL when the
    /// grace period ends, to the child and its process group. Returns at once.
    pub(crate) fn terminate(self: &Arc<Child>) {
        let mut st = self.lock();
        st.hook = None;
        if st.status.is_some() {
            return;
        }
        st.terminated = true;
        if self.grace.is_zero() {
            let _ = self.process.signal(sys::SIGKILL);
            return;
        }
        let _ = self.process.signal(sys::SIGTERM);
        // Weak: a pending SIGKILL does not keep a reaped child alive. (If the
        // task holds the last reference, dropping it runs no user code: see
        // `done`.)
        let me = Arc::downgrade(self);
        st.kill_timer = timer::schedule(Instant::now() + self.grace, move || {
            if let Some(me) = me.upgrade() {
                me.kill();
            }
        })
        .ok();
        if st.kill_timer.is_none() {
            // No timer thread: no grace either.
            let _ = self.process.signal(sys::SIGKILL);
        }
    }

    fn kill(&self) {
        let st = self.lock();
        if st.status.is_none() {
            let _ = self.process.signal(sys::SIGKILL);
        }
    }

    /// Reaps it if it has exited. Under the child's lock, so two threads never
    /// both reap; the handle keeps a signal from reaching a reused pid.
    fn try_reap(&self) -> Result<Option<i32>, Error> {
        let mut st = self.lock();
        if let Some(s) = st.status {
            return Ok(Some(s));
        }
        // Cancelled, and the child itself has ended: what is left of its
        // group (a grandchild that ignores SIGTERM) is killed now, while the
        // unreaped child still pins the group's id, not left running after
        // its job.
        if st.terminated && self.process.has_exited() {
            let _ = self.process.signal(sys::SIGKILL);
        }
        let status = self.process.reap()?;
        st.status = status;
        Ok(status)
    }

    /// Kills it (with its group) and reaps it now (the job is ending, or
    /// binding it failed).
    pub(crate) fn reap_now(&self) {
        {
            // Under the lock: no signal after a reap on another thread.
            let st = self.lock();
            if st.status.is_none() {
                let _ = self.process.signal(sys::SIGKILL);
            }
        }
        loop {
            match self.try_reap() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => {
                    let mut p = [PollFd::new(self.process.raw(), sys::POLLIN)];
                    let _ = sys::poll(&mut p, 100);
                }
            }
        }
        self.done();
    }

    /// After the child was reaped: no SIGKILL is pending, and its I/O (the
    /// caller's line callback and userdata) is dropped now, on this thread with
    /// no lock held. Afterwards the child holds no user data, so whichever
    /// thread drops the last reference — the timer thread's SIGKILL task may —
    /// runs no user code.
    pub(crate) fn done(&self) -> Option<HookId> {
        let (hook, io) = {
            let mut st = self.lock();
            if let Some(id) = st.kill_timer.take() {
                timer::cancel(id);
            }
            (st.hook.take(), st.io.take())
        };
        drop(io);
        hook
    }

    /// Takes the I/O for one waiting thread; a second concurrent waiter is
    /// refused.
    pub(crate) fn begin_wait(&self) -> Result<Io, Error> {
        self.lock().io.take().ok_or(Error::InvalidArgument(
            "another thread is waiting for this child",
        ))
    }

    pub(crate) fn end_wait(&self, io: Io) {
        self.lock().io = Some(io);
    }

    /// One round of a wait: reads output that is there, then reports the
    /// status if the child has ended (after reading the rest of its output).
    pub(crate) fn step(&self, io: &mut Io) -> Result<Option<i32>, Error> {
        let status = self.try_reap()?;
        let Io { pipes, on_line } = io;
        let mut emit = |stream: Stream, line: &[u8]| {
            if let Some(f) = on_line.as_mut() {
                f(stream, line);
            }
        };
        for p in pipes.iter_mut() {
            p.pump(&mut emit);
        }
        if status.is_some() {
            // Output a grandchild still writes is not waited for.
            pipes.clear();
        }
        Ok(status)
    }

    /// The fds to poll while waiting: the exit fd, then open pipes.
    pub(crate) fn poll_set(&self, io: &Io) -> Vec<PollFd> {
        std::iter::once(PollFd::new(self.process.raw(), sys::POLLIN))
            .chain(
                io.pipes
                    .iter()
                    .filter(|p| p.open)
                    .map(|p| PollFd::new(p.raw(), sys::POLLIN)),
            )
            .collect()
    }

    pub(crate) fn was_terminated(&self) -> bool {
        self.lock().terminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &[&[u8]]) -> Vec<String> {
        let (r, w) = std::io::pipe().unwrap();
        let mut p = Pipe::new(Stream::Stdout, r.into()).unwrap();
        drop(w);
        let mut out = Vec::new();
        let mut emit = |_: Stream, l: &[u8]| out.push(String::from_utf8_lossy(l).into_owned());
        for d in data {
            p.feed(d, &mut emit);
        }
        p.flush(&mut emit);
        out
    }

    #[test]
    fn lines_end_at_newline_return_or_both() {
        assert_eq!(
            lines(&[b"a\nb\r\nc\r", b"    (1.00/100%)\r", b"\ntail"]),
            vec!["a", "b", "c", "    (1.00/100%)", "tail"]
        );
        assert_eq!(lines(&[b"split ", b"across\n"]), vec!["split across"]);
        assert!(lines(&[b"\n\n\r\n"]).is_empty());
    }

    #[test]
    fn exit_status_decodes_like_the_c_macros() {
        let exited = ChildExit {
            status: 3 << 8,
            cancelled: false,
        };
        assert_eq!((exited.code(), exited.signal()), (Some(3), None));
        let killed = ChildExit {
            status: 9,
            cancelled: true,
        };
        assert_eq!((killed.code(), killed.signal()), (None, Some(9)));
    }
}

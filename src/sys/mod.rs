//! Safe wrappers for the few OS calls std does not offer. Besides `ffi`, this is
//! the only module with `unsafe`; each call's safety argument is next to it.

pub(crate) mod clock;
pub(crate) mod spawn;
pub(crate) mod tls;
pub(crate) use spawn::{SpawnArgs, Stdio, spawn};

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    // Async-signal-safe: one atomic add.
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// How many times this process is a fork() child of a bgjob process: changes in
/// the child of every fork() after the first call. Threads are not inherited,
/// so state that names threads must be reset when it changes. One atomic load
/// (std::process::id() would be a getpid system call).
pub(crate) fn fork_generation() -> u64 {
    // Not a `Once`: a fork while another thread is inside it would leave it
    // running for ever in the child. A thread that loses the race goes on at
    // once, before the winner has registered: a fork in that window is not
    // counted, as one before the first call is not.
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if !REGISTERED.load(Ordering::Relaxed) && !REGISTERED.swap(true, Ordering::Relaxed) {
        // SAFETY: registers a plain function that only touches an atomic; no
        // pointers are passed. A failure (ENOMEM) leaves fork detection off,
        // which only matters to a program that forks and keeps using bgjob.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    }
    FORKS.load(Ordering::Relaxed)
}

/// Renames the calling thread (Linux keeps 15 bytes; longer names are cut by the
/// caller). A name with an interior NUL is ignored: naming is best-effort.
pub(crate) fn set_current_thread_name(name: &str) {
    let Ok(c) = CString::new(name) else { return };
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from
    // the pointer, which `c` keeps alive for the call; it changes only the
    // calling thread's name.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c.as_ptr(), 0, 0, 0);
    }
}

/// `prctl(PR_FUTEX_HASH, …)` (Linux 6.16, include/uapi/linux/prctl.h): the
/// process's private futex hash. libc does not name these yet.
const PR_FUTEX_HASH: i32 = 78;
const PR_FUTEX_HASH_SET_SLOTS: libc::c_ulong = 1;
#[cfg(test)]
const PR_FUTEX_HASH_GET_SLOTS: libc::c_ulong = 2;

/// Gives this process a private futex hash of `slots` buckets (a power of
/// two; 0 = the kernel's global hash). Since Linux 6.16 a process gets a
/// private hash sized by its CPUs (16 buckets on 2 vCPUs), so thousands of
/// threads blocked on their own futexes share a few chains, and every wake
/// walks one. Fails with EINVAL on older kernels (the option is unknown) and
/// for a size the kernel refuses; callers treat it as a hint and ignore that.
pub(crate) fn set_futex_hash_slots(slots: u64) -> std::io::Result<()> {
    // The kernel reads the size as 32 bits: a larger one would be cut (1 << 32
    // to 0, which means "the global hash"), so it is refused here.
    let slots = u32::try_from(slots).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?
        as libc::c_ulong;
    // SAFETY: PR_FUTEX_HASH takes integers only (no pointers); an unknown
    // option or a refused size returns -1 with errno and changes nothing.
    let r = unsafe {
        libc::prctl(
            PR_FUTEX_HASH,
            PR_FUTEX_HASH_SET_SLOTS,
            slots,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The private futex hash's size (0: the global hash), or the error of a
/// kernel without `PR_FUTEX_HASH`.
#[cfg(test)]
pub(crate) fn futex_hash_slots() -> std::io::Result<u64> {
    // SAFETY: integers only, as above; GET_SLOTS only reads.
    let r = unsafe {
        libc::prctl(
            PR_FUTEX_HASH,
            PR_FUTEX_HASH_GET_SLOTS,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// Registers fork handlers (pthread_atfork): `prepare` runs in the forking
/// thread just before fork(), `parent` after it in the parent, `child` in the
/// child. Returns false if they could not be registered (ENOMEM).
pub(crate) fn at_fork(
    prepare: unsafe extern "C" fn(),
    parent: unsafe extern "C" fn(),
    child: unsafe extern "C" fn(),
) -> bool {
    // SAFETY: three valid function pointers that stay valid for the life of
    // the library (glibc unregisters them if the library is unloaded).
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) == 0 }
}

/// A non-blocking, close-on-exec eventfd used as a level-triggered "something is
/// queued" flag: readable from the first [`EventFd::signal`] until
/// [`EventFd::clear`].
///
/// The caller is shown one descriptor to poll ([`EventFd::raw`]); bgjob reads
/// and writes only its own duplicate of it. A caller who closes the shown
/// number behind bgjob's back (and reuses it for a file or pipe) therefore never
/// gets bgjob's counter written into, or read out of, what the number names
/// now; and when the context goes, the shown number is closed only if it still
/// names an eventfd (another eventfd on a reused number cannot be told apart).
pub(crate) struct EventFd {
    shown: i32,
    own: std::os::fd::OwnedFd,
}

/// Device and inode of what `fd` names now, if it is open.
fn file_id(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `stat` into a live, writable struct; any fd
    // number is a valid argument (a closed one fails with EBADF).
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

impl EventFd {
    pub(crate) fn new() -> std::io::Result<EventFd> {
        use std::os::fd::{FromRawFd, OwnedFd};
        // SAFETY: eventfd takes no pointers; a non-negative return is a new fd
        // that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by no one else.
        let shown = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: F_DUPFD_CLOEXEC on our own open fd; a non-negative return is
        // a new descriptor nothing else owns.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `dup` is a fresh descriptor owned by no one else.
        let own = unsafe { OwnedFd::from_raw_fd(dup) };
        Ok(EventFd {
            shown: std::os::fd::IntoRawFd::into_raw_fd(shown),
            own,
        })
    }

    /// The descriptor the caller polls.
    pub(crate) fn raw(&self) -> i32 {
        self.shown
    }

    fn own(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(&self.own)
    }

    /// Makes the fd readable. Cannot fail in practice: the counter would have to
    /// reach 2^64-2 without a `clear`, and `signal` is only called on an
    /// empty-to-non-empty transition.
    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own fd.
        unsafe {
            libc::write(self.own(), (&raw const one).cast(), 8);
        }
    }

    /// Makes the fd unreadable again (EAGAIN when already clear is fine).
    pub(crate) fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our own fd.
        unsafe {
            libc::read(self.own(), (&raw mut v).cast(), 8);
        }
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // The shown number is closed only while it still names what our own
        // duplicate names; a caller may have closed it and reused the number.
        if file_id(self.shown).is_some() && file_id(self.shown) == file_id(self.own()) {
            // SAFETY: `shown` is our eventfd (checked just above), closed once.
            unsafe {
                libc::close(self.shown);
            }
        }
    }
}

/// `poll(2)` event bits, as `core` may name them without libc.
pub(crate) const POLLIN: i16 = libc::POLLIN;
pub(crate) const POLLOUT: i16 = libc::POLLOUT;
pub(crate) const POLLERR: i16 = libc::POLLERR;
pub(crate) const POLLHUP: i16 = libc::POLLHUP;
pub(crate) const POLLNVAL: i16 = libc::POLLNVAL;

/// One entry of a [`poll`] set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PollFd {
    pub(crate) fd: i32,
    pub(crate) events: i16,
    pub(crate) revents: i16,
}

impl PollFd {
    pub(crate) fn new(fd: i32, events: i16) -> PollFd {
        PollFd {
            fd,
            events,
            revents: 0,
        }
    }
}

/// `poll(2)` over `fds` for up to `timeout_ms` (−1 = no limit). Returns how many
/// entries have events; EINTR counts as "none yet" (the caller loops anyway).
pub(crate) fn poll(fds: &mut [PollFd], timeout_ms: i32) -> std::io::Result<usize> {
    let mut raw: Vec<libc::pollfd> = fds
        .iter()
        .map(|p| libc::pollfd {
            fd: p.fd,
            events: p.events,
            revents: 0,
        })
        .collect();
    // SAFETY: `raw` is a live array of exactly `raw.len()` pollfds for the call.
    let n = unsafe { libc::poll(raw.as_mut_ptr(), raw.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    for (p, r) in fds.iter_mut().zip(&raw) {
        p.revents = r.revents;
    }
    Ok(n as usize)
}

/// Makes `fd` non-blocking (a pipe from a child, read as data comes).
pub(crate) fn set_nonblocking(fd: i32) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns; F_GETFL/F_SETFL take ints.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The signals bgjob sends to a job's children.
pub(crate) const SIGTERM: i32 = libc::SIGTERM;
pub(crate) const SIGKILL: i32 = libc::SIGKILL;

/// One child process of ours, for signalling, polling and reaping exactly it.
///
/// Normally a process descriptor (a pidfd: from `clone3`/`clone` for a child
/// bgjob spawns, from `pidfd_open(2)` for one it is given): signals and waits
/// go to exactly the process it was opened for, even after its pid is reused,
/// and it becomes readable when the process exits. Waiting through it
/// (`waitid(P_PIDFD)`) reaps only that child and installs no SIGCHLD handler,
/// so the host's own child handling is left alone.
///
/// A child that leads its own process group (every child bgjob spawns) is
/// signalled with its whole group: `pidfd_send_signal` with
/// `PIDFD_SIGNAL_PROCESS_GROUP` (Linux 6.9) names the group by the pidfd's
/// process, so it reaches that group even after the leader was reaped and its
/// number reused. Where the flag or the call is missing (older kernels;
/// valgrind 3.19 knows neither `pidfd_open` nor `pidfd_send_signal`) `kill(2)`
/// is used, and only while the leader is not reaped — then neither its pid nor
/// its group's id can name anything else.
///
/// Where there is no pidfd at all (ENOSYS: kernels before 5.3; EPERM: a
/// seccomp filter refuses `pidfd_open`, which itself never does) the pid itself
/// is used. It cannot be reused while the child is unreaped, and only this
/// handle reaps it; signal and reap hold one lock, so no signal is sent after
/// the reap. A watcher thread waits for the exit without reaping (`waitid`
/// with `WNOWAIT`) and then makes an eventfd readable, which stands in for the
/// pidfd in polls. The reap waits for that (so the watcher never waits on a
/// reused pid), and no signal is sent after it unless a `waitid(WNOWAIT)` shows
/// the leader still unreaped (the child has exited, maybe been reaped by
/// someone else).
pub(crate) struct Process {
    pid: i32,
    /// It leads its own process group, which signals reach as a whole.
    group: bool,
    how: How,
}

enum How {
    Pidfd(std::os::fd::OwnedFd),
    Pid {
        /// Readable once the child has exited (or was reaped by someone else).
        exited: std::sync::Arc<EventFd>,
        /// Set by the reap, under this lock, which signals also hold.
        reaped: std::sync::Mutex<bool>,
    },
}

/// Tests force the pid fallback on a kernel that has pidfds, and count its uses.
#[cfg(test)]
pub(crate) static FORCE_PID_FALLBACK: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);
#[cfg(test)]
pub(crate) static PID_FALLBACK_OPENS: AtomicU64 = AtomicU64::new(0);
/// Held by every test that forces the fallback, for as long as it does: one
/// such test clearing the switch must not pull it from under another.
#[cfg(test)]
pub(crate) static FORCE_PID_FALLBACK_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn open_pidfd(pid: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    #[cfg(test)]
    if FORCE_PID_FALLBACK.load(Ordering::Relaxed) {
        return Err(std::io::Error::from_raw_os_error(libc::ENOSYS));
    }
    // SAFETY: pidfd_open takes a pid and flags, no pointers; a non-negative
    // return is a new descriptor that nothing else owns (it is close-on-exec
    // by definition).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is fresh and ours alone.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal` flag: signal the process group the pidfd's process
/// leads (Linux 6.9).
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

/// Set once `pidfd_send_signal` turned out to be missing (ENOSYS), or its
/// group flag unknown (EINVAL): `kill(2)` is used from then on.
static NO_PIDFD_SIGNAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
pub(crate) static NO_PIDFD_GROUP_SIGNAL: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// `waitid` for one child, retried on EINTR; `Ok(None)`: nothing to report
/// (WNOHANG and still running).
fn wait_child(idtype: libc::idtype_t, id: libc::id_t, flags: i32) -> std::io::Result<Option<i32>> {
    loop {
        // SAFETY: siginfo_t is plain data; zeroed is a valid value, and
        // waitid writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid for one child (by pidfd or pid), writing one live
        // siginfo_t.
        let r = unsafe { libc::waitid(idtype, id, &mut info, flags) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: after a successful waitid, si_pid and si_status are the
        // fields the kernel filled in for a child event.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        let wstatus = match info.si_code {
            libc::CLD_EXITED => (status & 0xff) << 8,
            libc::CLD_KILLED => status & 0x7f,
            libc::CLD_DUMPED => (status & 0x7f) | 0x80,
            _ => status,
        };
        return Ok(Some(wstatus));
    }
}

impl Process {
    /// Takes hold of child `pid` (close-on-exec descriptors only).
    pub(crate) fn open(pid: i32) -> std::io::Result<Process> {
        if pid <= 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        // A child that leads its own process group is signalled with it.
        // SAFETY: getpgid takes a pid, no pointers.
        let group = unsafe { libc::getpgid(pid) } == pid;
        match open_pidfd(pid) {
            Ok(fd) => Ok(Process::from_pidfd(pid, fd, group)),
            // ENOSYS: no pidfds; EPERM: a seccomp filter (older container
            // profiles) refuses the call, which pidfd_open itself never does.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                Process::open_by_pid(pid, group)
            }
            Err(e) => Err(e),
        }
    }

    /// Holds a child by the pidfd made with it.
    pub(crate) fn from_pidfd(pid: i32, fd: std::os::fd::OwnedFd, group: bool) -> Process {
        Process {
            pid,
            group,
            how: How::Pidfd(fd),
        }
    }

    fn open_by_pid(pid: i32, group: bool) -> std::io::Result<Process> {
        if pid <= 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        // What pidfd_open says of a pid that is not running: ESRCH. (A process
        // that is not our child is found out at the first reap, as with pidfds.)
        // SAFETY: kill with signal 0 sends nothing; it only checks the pid.
        if unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        Process::spawned_by_pid(pid, group)
    }

    /// Holds a child just created without a pidfd, by its pid. It is not
    /// checked for: it was ours an instant ago, and if a host's `waitpid(-1)`
    /// has reaped it since, its reap reports ECHILD — it did run.
    pub(crate) fn spawned_by_pid(pid: i32, group: bool) -> std::io::Result<Process> {
        #[cfg(test)]
        PID_FALLBACK_OPENS.fetch_add(1, Ordering::SeqCst);
        let exited = std::sync::Arc::new(EventFd::new()?);
        let signal = exited.clone();
        std::thread::Builder::new()
            .name(format!("bgjob-wait-{pid}"))
            .stack_size(64 * 1024)
            .spawn(move || {
                // Returns once the child is a zombie (left for our reap), or
                // with ECHILD once it is gone or was never ours: either way
                // there is no more to wait for.
                let _ = wait_child(
                    libc::P_PID,
                    pid as libc::id_t,
                    libc::WEXITED | libc::WNOWAIT,
                );
                signal.signal();
            })?;
        Ok(Process {
            pid,
            group,
            how: How::Pid {
                exited,
                reaped: std::sync::Mutex::new(false),
            },
        })
    }

    /// The descriptor that becomes readable when the child exits.
    pub(crate) fn raw(&self) -> i32 {
        match &self.how {
            How::Pidfd(fd) => std::os::fd::AsRawFd::as_raw_fd(fd),
            How::Pid { exited, .. } => exited.raw(),
        }
    }

    /// Whether it is held by pid rather than by a pidfd.
    #[cfg(test)]
    pub(crate) fn by_pid(&self) -> bool {
        matches!(self.how, How::Pid { .. })
    }

    /// Whether it has exited (its exit fd is readable).
    pub(crate) fn has_exited(&self) -> bool {
        poll_readable(self.raw(), 0)
    }

    /// Sends `signal` to it, and to its process group when it leads one.
    /// ESRCH (it has exited; the group is empty) is not an error worth
    /// reporting: the caller only wants it gone.
    pub(crate) fn signal(&self, signal: i32) -> std::io::Result<()> {
        let target = if self.group { -self.pid } else { self.pid };
        let r = match &self.how {
            How::Pidfd(fd) => {
                let fd = std::os::fd::AsRawFd::as_raw_fd(fd);
                match pidfd_signal(fd, signal, self.group) {
                    Some(r) => r,
                    // kill(2) only while it is unreaped (running or a
                    // zombie): then neither its pid nor its group's id names
                    // anything else. Left open: a reap by someone else (a
                    // host's waitpid(-1)) between this look and the kill.
                    None if wait_child(
                        libc::P_PIDFD,
                        fd as libc::id_t,
                        libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                    )
                    .is_ok() =>
                    {
                        // SAFETY: kill takes no pointers.
                        i64::from(unsafe { libc::kill(target, signal) })
                    }
                    None => return Ok(()),
                }
            }
            How::Pid { exited, reaped } => {
                let reaped = reaped.lock().unwrap_or_else(|e| e.into_inner());
                // Reaped (by us, or found gone): nothing to signal, and its
                // pid may name another process by now. Exited: the process
                // itself needs no signal, and its pid may have been reaped by
                // someone else; its group still may, while a look shows the
                // leader unreaped. Left open: the moment between its exit, a
                // reap by someone else (a host's waitpid(-1), SIGCHLD set to
                // SIG_IGN) and that look; pidfds close that gap.
                if *reaped {
                    return Ok(());
                }
                if poll_readable(exited.raw(), 0)
                    && !(self.group
                        && matches!(
                            wait_child(
                                libc::P_PID,
                                self.pid as libc::id_t,
                                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                            ),
                            Ok(Some(_))
                        ))
                {
                    return Ok(());
                }
                // SAFETY: kill takes no pointers; the pid is our child, not
                // reaped (by us: the lock; by anyone: the watcher or the look
                // above), so it and its group's id name no other process.
                i64::from(unsafe { libc::kill(target, signal) })
            }
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }

    /// Reaps it, waiting for its exit (ECHILD ends the wait too).
    pub(crate) fn reap_blocking(&self) {
        loop {
            match self.reap() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => {
                    poll_readable(self.raw(), 100);
                }
            }
        }
    }

    /// Reaps the process if it has exited, returning its status in
    /// `waitpid(2)` form (`WIFEXITED` and friends work on it). `Ok(None)`:
    /// still running. ECHILD: not our child, or someone else (a host calling
    /// `waitpid(-1)`) reaped it first.
    pub(crate) fn reap(&self) -> std::io::Result<Option<i32>> {
        let flags = libc::WEXITED | libc::WNOHANG;
        match &self.how {
            How::Pidfd(fd) => wait_child(
                libc::P_PIDFD,
                std::os::fd::AsRawFd::as_raw_fd(fd) as libc::id_t,
                flags,
            ),
            How::Pid { exited, reaped } => {
                let mut reaped = reaped.lock().unwrap_or_else(|e| e.into_inner());
                if *reaped {
                    return Err(std::io::Error::from_raw_os_error(libc::ECHILD));
                }
                if !poll_readable(exited.raw(), 0) {
                    // Not reaped before the watcher has seen the exit: reaped
                    // earlier, its pid could be reused by another child of
                    // ours, which the watcher would then wait for instead.
                    // Still, a pid that is not our child is reported now.
                    return match wait_child(
                        libc::P_PID,
                        self.pid as libc::id_t,
                        flags | libc::WNOWAIT,
                    ) {
                        Ok(_) => Ok(None),
                        Err(e) => {
                            *reaped = true;
                            Err(e)
                        }
                    };
                }
                let status = wait_child(libc::P_PID, self.pid as libc::id_t, flags);
                // Reaped, or gone (ECHILD: someone else reaped it): either way
                // its pid is no longer ours to signal.
                *reaped = !matches!(status, Ok(None));
                status
            }
        }
    }
}

/// `pidfd_send_signal` to the process, or to its group; `None` where the
/// call (or its group flag) is missing, and `kill(2)` must do instead.
fn pidfd_signal(fd: i32, signal: i32, group: bool) -> Option<i64> {
    use std::sync::atomic::Ordering::Relaxed;
    if NO_PIDFD_SIGNAL.load(Relaxed) || group && NO_PIDFD_GROUP_SIGNAL.load(Relaxed) {
        return None;
    }
    let flags = if group { PIDFD_SIGNAL_PROCESS_GROUP } else { 0 };
    // SAFETY: pidfd_send_signal with our own pidfd, a signal number, a NULL
    // siginfo (the kernel fills in a kill()-style one) and a flag.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            flags,
        )
    };
    if r < 0 {
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOSYS) => {
                NO_PIDFD_SIGNAL.store(true, Relaxed);
                return None;
            }
            Some(libc::EINVAL) if group => {
                NO_PIDFD_GROUP_SIGNAL.store(true, Relaxed);
                return None;
            }
            _ => {}
        }
    }
    Some(r)
}

/// Whether `fd` becomes readable within `timeout_ms` (0 = just look).
pub(crate) fn poll_readable(fd: i32, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    n == 1 && p.revents & libc::POLLIN != 0
}

/// A value naming the calling thread among the live threads of this
/// process (its `pthread_self`): a load relative to the thread pointer, no
/// thread-local lookup (`__tls_get_addr`) and no reference count, unlike
/// `std::thread::current`. A value may name another thread once this one
/// has exited.
#[inline]
pub(crate) fn thread_token() -> usize {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    unsafe { libc::pthread_self() as usize }
}

/// Asks for the cache line holding `p` without waiting for it (getinfo asks
/// for its two lines before its clock read, `core::job::info`).
#[inline(always)]
pub(crate) fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults and changes no state
    // a program can see; SSE is part of every x86-64 CPU.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>((p as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    /// Core names the errno values it uses without libc: each is libc's.
    #[test]
    fn core_errno_values_are_libc_s() {
        use crate::core::errno;
        assert_eq!(errno::ESRCH, libc::ESRCH);
        assert_eq!(errno::EIO, libc::EIO);
        assert_eq!(errno::EINVAL, libc::EINVAL);
        assert_eq!(errno::ECHILD, libc::ECHILD);
        assert_eq!(errno::ENOSPC, libc::ENOSPC);
        assert_eq!(errno::ECANCELED, libc::ECANCELED);
    }

    use super::*;
    use std::process::Command;

    // Dropped without a wait on purpose: the Process under test reaps it.
    #[allow(clippy::zombie_processes)]
    fn spawn(script: &str) -> i32 {
        let child = Command::new("/bin/sh")
            .args(["-c", script])
            .spawn()
            .unwrap();
        child.id() as i32
    }

    fn reap_blocking(p: &Process) -> i32 {
        for _ in 0..600 {
            assert!(poll_readable(p.raw(), 100) || p.reap().unwrap().is_none());
            if let Some(status) = p.reap().unwrap() {
                return status;
            }
        }
        panic!("child never exited");
    }

    /// Without pidfds: the exit fd turns readable only once the child has
    /// exited, the reap gives its status once (then ECHILD), and a signal
    /// after the reap is not sent (its pid may be another process's by now).
    #[test]
    fn by_pid_polls_reaps_and_signals_only_its_child() {
        let pid = spawn("exec sleep 60");
        let p = Process::open_by_pid(pid, false).unwrap();
        assert!(p.by_pid());
        assert!(!poll_readable(p.raw(), 50), "readable before the exit");
        assert_eq!(p.reap().unwrap(), None);
        p.signal(libc::SIGTERM).unwrap();
        let status = reap_blocking(&p);
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGTERM);
        assert!(poll_readable(p.raw(), 0), "readable after the exit");
        assert_eq!(p.reap().unwrap_err().raw_os_error(), Some(libc::ECHILD));
        p.signal(libc::SIGKILL).unwrap();

        let q = Process::open_by_pid(spawn("exit 3"), false).unwrap();
        let status = reap_blocking(&q);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3);
    }

    /// The errors match what pidfds give: ESRCH for no such process, ECHILD
    /// at the reap for a process that is not our child.
    #[test]
    fn by_pid_errors_match_pidfd() {
        // Above the largest pid_max Linux allows (2^22).
        let no_such = 0x3fff_fff0;
        let by_pid = |pid| Process::open_by_pid(pid, false);
        for open in [Process::open as fn(i32) -> _, by_pid] {
            assert_eq!(
                open(no_such).err().and_then(|e| e.raw_os_error()),
                Some(libc::ESRCH)
            );
            assert_eq!(
                open(0).err().and_then(|e| e.raw_os_error()),
                Some(libc::EINVAL)
            );
            let init = open(1).unwrap();
            assert_eq!(init.reap().unwrap_err().raw_os_error(), Some(libc::ECHILD));
        }
    }

    fn kill_and_reap(pid: i32) {
        // SAFETY: kill and waitpid on our own child, with a NULL status pointer.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }

    /// Makes the next `sh -c script` child get `pid` (root only: it writes
    /// ns_last_pid). `None` where that is not allowed.
    fn spawn_at(pid: i32, script: &str) -> Option<i32> {
        for _ in 0..50 {
            std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)).ok()?;
            let got = spawn(script);
            if got == pid {
                return Some(got);
            }
            // Another test's child took it first: retry.
            kill_and_reap(got);
        }
        None
    }

    /// Whether a watcher thread for `pid` is alive in this process.
    fn watching(pid: i32) -> bool {
        let name = format!("bgjob-wait-{pid}");
        std::fs::read_dir("/proc/self/task").unwrap().any(|t| {
            let comm = t.unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| c.trim_end() == name)
        })
    }

    /// Someone else reaps the child (a host's waitpid(-1), SIGCHLD ignored):
    /// the reap says ECHILD, and a later signal (cancel's SIGTERM, the job
    /// end's SIGKILL) must not reach the process that now has its pid.
    #[test]
    fn by_pid_never_signals_a_pid_reaped_by_someone_else() {
        let pid = spawn("exit 0");
        let p = Process::open_by_pid(pid, false).unwrap();
        // SAFETY: waitpid on our own child with a NULL status pointer.
        assert_eq!(unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) }, pid);
        while p.reap().is_ok_and(|s| s.is_none()) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(p.reap().unwrap_err().raw_os_error(), Some(libc::ECHILD));
        let Some(other) = spawn_at(pid, "exec sleep 60") else {
            eprintln!("skipped the pid-reuse half: ns_last_pid is not writable");
            return;
        };
        p.signal(libc::SIGKILL).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG on our own child, one live int.
        let r = unsafe { libc::waitpid(other, &mut status, libc::WNOHANG) };
        kill_and_reap(other);
        assert_eq!(r, 0, "the process that reused the pid was signalled");
    }

    /// A child that had exited before it was opened: the reap waits for the
    /// watcher to have seen the exit, so the watcher never waits on another
    /// process that reused the pid, and ends with the child.
    #[test]
    fn by_pid_watcher_ends_before_the_pid_can_be_reused() {
        let pid = spawn("exit 5");
        while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap()
            .contains(") Z")
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let p = Process::open_by_pid(pid, false).unwrap();
        // Reaped at the first chance, as Child::watch does: no poll first.
        let status = loop {
            let seen = poll_readable(p.raw(), 0);
            if let Some(status) = p.reap().unwrap() {
                assert!(seen, "reaped before the watcher had seen the exit");
                break status;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 5);
        let other = spawn_at(pid, "exec sleep 60");
        drop(p);
        let mut left = 500;
        while watching(pid) && left > 0 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            left -= 1;
        }
        let leaked = watching(pid);
        if let Some(other) = other {
            kill_and_reap(other);
        }
        assert!(
            !leaked,
            "the watcher waits on the process that reused the pid"
        );
    }

    #[test]
    fn forced_fallback_is_used() {
        let _one_at_a_time = FORCE_PID_FALLBACK_TESTS
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        FORCE_PID_FALLBACK.store(true, Ordering::Relaxed);
        let p = Process::open(spawn("exit 0"));
        FORCE_PID_FALLBACK.store(false, Ordering::Relaxed);
        let p = p.unwrap();
        assert!(p.by_pid());
        assert_eq!(reap_blocking(&p), 0);
    }
}

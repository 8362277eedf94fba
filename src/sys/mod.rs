//! Safe wrappers for the few OS calls std does not offer. Besides `ffi`, this is
//! the only module with `unsafe`; each call's safety argument is next to it.

use std::ffi::CString;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

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
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a plain function that only touches an atomic; no
        // pointers are passed. A failure (ENOMEM) leaves fork detection off,
        // which only matters to a program that forks and keeps using bgjob.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
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

/// A non-blocking, close-on-exec eventfd used as a level-triggered "something is
/// queued" flag: readable from the first [`EventFd::signal`] until
/// [`EventFd::clear`].
pub(crate) struct EventFd(std::os::fd::OwnedFd);

impl EventFd {
    pub(crate) fn new() -> std::io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; a non-negative return is a new fd
        // that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by no one else.
        Ok(EventFd(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        }))
    }

    pub(crate) fn raw(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }

    /// Makes the fd readable. Cannot fail in practice: the counter would have to
    /// reach 2^64-2 without a `clear`, and `signal` is only called on an
    /// empty-to-non-empty transition.
    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own fd.
        unsafe {
            libc::write(self.raw(), (&raw const one).cast(), 8);
        }
    }

    /// Makes the fd unreadable again (EAGAIN when already clear is fine).
    pub(crate) fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our own fd.
        unsafe {
            libc::read(self.raw(), (&raw mut v).cast(), 8);
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

/// A process descriptor (`pidfd_open(2)`): signals and waits go to exactly the
/// process it was opened for, even after its pid is reused, and it becomes
/// readable when the process exits. Waiting through it (`waitid(P_PIDFD)`)
/// reaps only that child and installs no SIGCHLD handler, so the host's own
/// child handling is left alone.
pub(crate) struct Pidfd(std::os::fd::OwnedFd);

impl Pidfd {
    /// Opens a descriptor for `pid` (close-on-exec).
    pub(crate) fn open(pid: i32) -> std::io::Result<Pidfd> {
        if pid <= 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: pidfd_open takes a pid and flags, no pointers; a non-negative
        // return is a new descriptor that nothing else owns (it is close-on-exec
        // by definition).
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is fresh and ours alone.
        Ok(Pidfd(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32)
        }))
    }

    pub(crate) fn raw(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }

    /// Sends `signal`. ESRCH (it has exited) is not an error worth reporting:
    /// the caller only wants it gone.
    pub(crate) fn signal(&self, signal: i32) -> std::io::Result<()> {
        // SAFETY: pidfd_send_signal with our own pidfd, a signal number, a NULL
        // siginfo (the kernel fills in a kill()-style one) and no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.raw(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
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

    /// Reaps the process if it has exited (`block` = wait until it has),
    /// returning its status in `waitpid(2)` form (`WIFEXITED` and friends work on
    /// it). `Ok(None)`: still running. ECHILD: not our child, or someone else
    /// (a host calling `waitpid(-1)`) reaped it first.
    pub(crate) fn reap(&self, block: bool) -> std::io::Result<Option<i32>> {
        loop {
            // SAFETY: siginfo_t is plain data; zeroed is a valid value, and
            // waitid writes into it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let flags = libc::WEXITED | if block { 0 } else { libc::WNOHANG };
            // SAFETY: waitid with P_PIDFD on our own descriptor, writing one
            // live siginfo_t.
            let r =
                unsafe { libc::waitid(libc::P_PIDFD, self.raw() as libc::id_t, &mut info, flags) };
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
}

/// Whether `fd` becomes readable within `timeout_ms` (0 = just look).
#[cfg(test)]
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

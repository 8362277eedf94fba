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

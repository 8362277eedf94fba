//! Safe wrappers for the few OS calls std does not offer. Besides `ffi`, this is
//! the only module with `unsafe`; each call's safety argument is next to it.

use std::ffi::CString;

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

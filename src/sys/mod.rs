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

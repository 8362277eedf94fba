//! The boundary every export goes through: the panic catcher, pointer and
//! string checks, output writers, the userdata owner and the one timeout converter.

use super::{bgjob_free_callback, bgjob_result};
use std::ffi::{CStr, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

pub(crate) type Res = Result<(), bgjob_result>;

/// Runs an export's body: a panic becomes `BGJOB_RESULT_PANIC`.
pub(crate) fn boundary(f: impl FnOnce() -> Res) -> bgjob_result {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => bgjob_result::Ok,
        Ok(Err(e)) => e,
        Err(_) => bgjob_result::Panic,
    }
}

/// Runs an export's body that returns a value: a panic becomes `on_panic`.
pub(crate) fn boundary_or<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

/// Fails with `InvalidArgument` when a required output pointer is NULL.
pub(crate) fn need<T>(p: *mut T) -> Res {
    if p.is_null() {
        Err(bgjob_result::InvalidArgument)
    } else {
        Ok(())
    }
}

/// Writes an output the caller may have left NULL.
///
/// # Safety
/// `p` is NULL or valid for a write of `T`.
pub(crate) unsafe fn put<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: non-NULL and, by the caller's contract, writable.
        unsafe { p.write(v) };
    }
}

/// Borrows a C string as UTF-8; NULL or invalid UTF-8 is `InvalidArgument`.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn c_str<'a>(p: *const c_char) -> Result<&'a str, bgjob_result> {
    if p.is_null() {
        return Err(bgjob_result::InvalidArgument);
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| bgjob_result::InvalidArgument)
}

/// Checks a (buffer, length) pair: a NULL buffer is allowed only with length 0.
pub(crate) fn check_buf(buf: *mut c_char, len: usize) -> Res {
    if buf.is_null() && len > 0 {
        Err(bgjob_result::InvalidArgument)
    } else {
        Ok(())
    }
}

/// Copies `s` into `buf` snprintf-style: as much as fits (cut on a character
/// boundary) plus a NUL when `len > 0`; `len_out` gets the full length.
///
/// # Safety
/// `buf` is valid for `len` bytes (checked with [`check_buf`] first); `len_out` is
/// NULL or writable.
pub(crate) unsafe fn copy_out(s: &str, buf: *mut c_char, len: usize, len_out: *mut usize) {
    if len > 0 {
        let mut n = s.len().min(len - 1);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        // SAFETY: `buf` holds `len` > n bytes; the source is `n` bytes of `s`.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr().cast::<c_char>(), buf, n);
            buf.add(n).write(0);
        }
    }
    // SAFETY: by the caller's contract.
    unsafe { put(len_out, s.len()) };
}

/// Frees C userdata exactly once, when dropped: after the last use, on every path
/// (success, failure, never started), on whichever thread drops it.
pub(crate) struct UserData {
    pub ptr: *mut c_void,
    free: bgjob_free_callback,
}

// SAFETY: the C caller hands the pointer over to bgjob for use on the worker thread
// (documented at every call that takes userdata); bgjob only passes it back to the
// caller's own callbacks.
unsafe impl Send for UserData {}

// SAFETY: bgjob never reads or writes through the pointer; sharing a
// `&UserData` only lets threads pass the same pointer back to the caller's
// callbacks (the finalize callbacks share one userdata and never run at once).
unsafe impl Sync for UserData {}

impl UserData {
    pub(crate) fn new(ptr: *mut c_void, free: bgjob_free_callback) -> UserData {
        UserData { ptr, free }
    }

    /// Gives the pointer back without calling the free function: the caller
    /// owns it now.
    pub(crate) fn into_raw(self) -> *mut c_void {
        let ptr = self.ptr;
        std::mem::forget(self);
        ptr
    }
}

impl Drop for UserData {
    fn drop(&mut self) {
        if let Some(free) = self.free {
            // SAFETY: the caller's free function, given the caller's own pointer,
            // once (this value is never cloned).
            unsafe { free(self.ptr) };
        }
    }
}

/// The header's one time convention, for every timeout and duration argument:
/// −1 is no limit (wait forever, no deadline), 0 is now (poll, due at once),
/// a positive value is that many milliseconds; any other negative is refused.
pub(crate) fn timeout_arg(ms: i64) -> Result<Option<Duration>, bgjob_result> {
    match ms {
        -1 => Ok(None),
        ms if ms < 0 => Err(bgjob_result::InvalidArgument),
        ms => Ok(Some(Duration::from_millis(ms as u64))),
    }
}

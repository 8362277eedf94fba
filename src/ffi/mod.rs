//! The C ABI. The only place with `extern "C"`; it checks arguments, looks up
//! handles, converts, and forwards to [`crate::core`]. No job logic lives here.
//!
//! Conventions, applied to every export:
//! - the body runs inside [`boundary`], which turns a Rust panic into
//!   `BGJOB_RESULT_PANIC` (or the function's documented failure value);
//! - every pointer is checked before use, every C string is checked for UTF-8, and
//!   no integer from C is transmuted into an enum;
//! - outputs (`*_out`) are written only when the call succeeds.

#![allow(non_camel_case_types)]

pub mod child;
pub mod context;
pub(crate) mod fork;
pub mod handles;
pub mod hooks;
pub mod info;
pub mod job;
pub mod pool;
pub mod txn;
pub mod types;
mod versioned;
/// Generates its own header (include/virjob.h); kept out of bgjob.h.
/// cbindgen:ignore
pub mod virjob;
pub mod worker;

use crate::core;
use std::ffi::{CStr, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use types::*;

/// The result of every call that can fail. 0 is success; the numbers are stable
/// and a retired number is never reused.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum bgjob_result {
    /// Success.
    Ok = 0,
    /// NULL, destroyed, detached or never-valid handle.
    InvalidHandle = 1,
    /// A NULL pointer where one is required, a string that is not UTF-8, a number
    /// out of range, or an unknown flag. Nothing was changed.
    InvalidArgument = 2,
    /// The verb is not allowed in the job's current state (see
    /// `bgjob_verb_allowed`). Nothing was changed.
    NotAllowed = 3,
    /// No thread could be started (EAGAIN); nothing was left behind.
    TryAgain = 4,
    /// A wait ran out of time.
    TimedOut = 5,
    /// The job was cancelled (returned to workers by pause points and checks).
    Cancelled = 6,
    /// bgjob hit an internal error (a Rust panic, caught at the boundary).
    Panic = 7,
    /// No such item (a cancel hook that already ran, an unknown id, a child
    /// the job does not hold).
    NotFound = 8,
    /// An operating-system call failed (starting a child, making an fd,
    /// polling); `errno` holds its error when the call returns.
    System = 9,
}

impl bgjob_result {
    const ALL: [bgjob_result; 10] = [
        bgjob_result::Ok,
        bgjob_result::InvalidHandle,
        bgjob_result::InvalidArgument,
        bgjob_result::NotAllowed,
        bgjob_result::TryAgain,
        bgjob_result::TimedOut,
        bgjob_result::Cancelled,
        bgjob_result::Panic,
        bgjob_result::NotFound,
        bgjob_result::System,
    ];

    fn text(self) -> &'static CStr {
        match self {
            bgjob_result::Ok => c"success",
            bgjob_result::InvalidHandle => c"invalid handle",
            bgjob_result::InvalidArgument => c"invalid argument",
            bgjob_result::NotAllowed => c"not allowed in the job's current state",
            bgjob_result::TryAgain => c"no thread could be started; try again",
            bgjob_result::TimedOut => c"timed out",
            bgjob_result::Cancelled => c"cancelled",
            bgjob_result::Panic => c"internal error (panic) in bgjob",
            bgjob_result::NotFound => c"not found",
            bgjob_result::System => c"operating-system error (see errno)",
        }
    }
}

impl From<core::Error> for bgjob_result {
    fn from(e: core::Error) -> bgjob_result {
        match e {
            core::Error::NotAllowed { .. } | core::Error::OwnWorker => bgjob_result::NotAllowed,
            core::Error::TryAgain => bgjob_result::TryAgain,
            core::Error::TimedOut => bgjob_result::TimedOut,
            core::Error::Cancelled => bgjob_result::Cancelled,
            core::Error::InvalidArgument(_) => bgjob_result::InvalidArgument,
            core::Error::NotFound => bgjob_result::NotFound,
            core::Error::System(errno) => {
                // SAFETY: __errno_location gives this thread's errno slot.
                unsafe { *libc::__errno_location() = errno };
                bgjob_result::System
            }
        }
    }
}

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

/// The version of this library, e.g. `"0.1.0"`. Static; never free it.
///
/// # Safety
/// Always safe to call, from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn bgjob_version() -> *const c_char {
    // Checked at compile time: the version string has exactly one NUL, at the end.
    const V: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("version has a NUL"),
        };
    boundary_or(V.as_ptr(), || V.as_ptr())
}

/// The ABI version of the loaded library: the number in its SONAME
/// (`libbgjob.so.<n>`). Compare with `BGJOB_ABI_VERSION` from the header you
/// compiled against; they differ only when the library is incompatible.
///
/// # Safety
/// Always safe to call, from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn bgjob_abi_version() -> u32 {
    boundary_or(BGJOB_ABI_VERSION, || BGJOB_ABI_VERSION)
}

/// A static, human-readable string for a result code; `"unknown result"` for a
/// number that is not one. Never NULL; never free it.
///
/// # Safety
/// Always safe to call, from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn bgjob_result_str(result: i32) -> *const c_char {
    boundary_or(c"unknown result".as_ptr(), || {
        bgjob_result::ALL
            .iter()
            .find(|r| **r as i32 == result)
            .map_or(c"unknown result", |r| r.text())
            .as_ptr()
    })
}

/// Called with each lifecycle log line (no trailing newline).
///
/// Runs on whichever thread the event happened on (never bgjob's timer thread),
/// with no bgjob lock held, on every path (a failed thread start included). It
/// may call any bgjob function, `bgjob_set_log_callback` included: a
/// replacement takes effect from the next line, and the replaced callback's
/// free function runs once the line being delivered to it is done. `line` is
/// valid only during the call.
pub type bgjob_log_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, line: *const c_char)>;

/// Installs a log callback, replacing any earlier one (whose free function then
/// runs once the last line being delivered to it is done), or removes it when
/// `callback` is NULL. With a callback installed, lines go to it whatever
/// `BGJOB_DEBUG` says; without, they go to stderr only when `BGJOB_DEBUG=1`.
///
/// Ownership: `userdata` passes to bgjob; `userdata_free` (may be NULL) is called
/// exactly once when the callback is replaced or removed — or at once, if this
/// call fails or `callback` is NULL.
///
/// # Returns
/// `BGJOB_RESULT_OK`.
///
/// # Safety
/// `callback` and `userdata_free` are NULL or valid functions. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_set_log_callback(
    callback: bgjob_log_callback,
    userdata: *mut c_void,
    userdata_free: bgjob_free_callback,
) -> bgjob_result {
    let ud = UserData::new(userdata, userdata_free);
    boundary(move || {
        let Some(cb) = callback else {
            core::log::set_sink(None);
            return Ok(());
        };
        let ud = std::sync::Mutex::new(ud);
        core::log::set_sink(Some(std::sync::Arc::new(move |line: &str| {
            let Ok(c) = std::ffi::CString::new(line.replace('\0', " ")) else {
                return;
            };
            let ptr = ud.lock().unwrap_or_else(|e| e.into_inner()).ptr;
            // SAFETY: the caller's callback with its own userdata and a string
            // valid for the call.
            unsafe { cb(ptr, c.as_ptr()) };
        })));
        Ok(())
    })
}

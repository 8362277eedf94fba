//! The library as a whole: its version, ABI version, result texts and log callback.

use super::{
    BGJOB_ABI_VERSION, UserData, bgjob_free_callback, bgjob_result, bgjob_result_in, boundary,
    boundary_or,
};
use crate::core;
use std::ffi::{CStr, c_char, c_void};

/// The version of this library, e.g. `"0.1.0"`. Static; never free it.
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
#[unsafe(no_mangle)]
pub extern "C" fn bgjob_abi_version() -> u32 {
    boundary_or(BGJOB_ABI_VERSION, || BGJOB_ABI_VERSION)
}

/// A static, human-readable string for a result code; `"unknown result"` for a
/// number that is not one. Never NULL; never free it.
#[unsafe(no_mangle)]
pub extern "C" fn bgjob_result_str(result: bgjob_result_in) -> *const c_char {
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
/// Returns: `BGJOB_RESULT_OK`.
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

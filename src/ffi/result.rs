//! The result code every call returns, its text, and the mapping from core errors.

use crate::core;
use std::ffi::CStr;

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
    pub(crate) const ALL: [bgjob_result; 10] = [
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

    pub(crate) fn text(self) -> &'static CStr {
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

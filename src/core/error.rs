//! Why a core call was refused: [`Error`], shared by jobs, children and
//! transactions (a job's own failure is [`super::JobError`]).

use super::errno::EINVAL;
use super::state::{State, Verb};
use std::fmt;

/// Why a verb was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The verb is not allowed in the job's current state (see the verb table).
    NotAllowed {
        /// What was asked.
        verb: Verb,
        /// The state the job was in.
        state: State,
    },
    /// No thread could be started (EAGAIN); nothing was left behind.
    TryAgain,
    /// A wait ran out of time.
    TimedOut,
    /// The job was cancelled (returned by pause points and waits).
    Cancelled,
    /// An argument was out of range; nothing was changed.
    InvalidArgument(&'static str),
    /// The job's own worker asked to wait for the job: it would wait forever.
    OwnWorker,
    /// An operating-system call failed with this errno (spawning a child,
    /// making an fd, polling).
    System(i32),
    /// No such item (a child pid the job does not watch).
    NotFound,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotAllowed { verb, state } => {
                write!(f, "{verb} is not allowed in state {state}")
            }
            Error::TryAgain => f.write_str("no thread could be started; try again"),
            Error::TimedOut => f.write_str("timed out"),
            Error::Cancelled => f.write_str("cancelled"),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::OwnWorker => f.write_str("a job's worker cannot wait for its own job"),
            Error::System(errno) => {
                write!(f, "{}", std::io::Error::from_raw_os_error(*errno))
            }
            Error::NotFound => f.write_str("not found"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        // Errors without an errno (std's own, e.g. an argument with a NUL) are
        // argument errors in practice; EINVAL says so.
        Error::System(e.raw_os_error().unwrap_or(EINVAL))
    }
}

//! The errno values core itself reports or recognises, named once. Core holds
//! no libc (see the module docs); the values are Linux's, the same on every
//! architecture it runs on, and `crate::sys`'s tests check each against libc.
//! cbindgen.toml keeps them out of the C header (errno.h has them).

/// No such process.
pub(crate) const ESRCH: i32 = 3;
/// An I/O error: the code of a worker that panicked.
pub(crate) const EIO: i32 = 5;
/// No child processes: waitid on a pid that is not our child.
pub(crate) const ECHILD: i32 = 10;
/// Invalid argument: an OS error std reports without an errno.
pub(crate) const EINVAL: i32 = 22;
/// No space left on device: what the ENOSPC error policy stops on.
pub(crate) const ENOSPC: i32 = 28;
/// Operation cancelled: the code of a member cancelled by its transaction.
pub(crate) const ECANCELED: i32 = 125;

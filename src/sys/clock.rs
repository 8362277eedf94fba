//! The clocks and the process-wide memory barrier behind progress updates
//! (`core::progress`): safe wrappers over `clock_gettime`, `clock_getres` and
//! `membarrier`.
// Under `--cfg loom` the progress protocol models its barrier with fences.
#![cfg_attr(loom, allow(dead_code))]

fn ns(ts: &libc::timespec) -> i64 {
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn read(id: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to fill; it cannot fail.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ns(&ts)
}

/// `CLOCK_MONOTONIC` in ns: the clock `std::time::Instant` reads.
pub(crate) fn monotonic_ns() -> i64 {
    read(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_MONOTONIC_COARSE` in ns: the same clock as of its last tick.
#[inline]
pub(crate) fn coarse_ns() -> i64 {
    read(libc::CLOCK_MONOTONIC_COARSE)
}

/// The tick of `CLOCK_MONOTONIC_COARSE` (`clock_getres`) in ns; `None` if
/// the kernel does not say.
pub(crate) fn coarse_resolution_ns() -> Option<i64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to fill.
    let r = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (r == 0 && ns(&ts) > 0).then(|| ns(&ts))
}

const MEMBARRIER_CMD_QUERY: libc::c_long = 0;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// Registers the process for [`membarrier`]: `true` if it can be used from
/// now on (Linux 4.14 and later, unless a seccomp filter forbids it).
pub(crate) fn membarrier_register() -> bool {
    // SAFETY: membarrier takes no pointers.
    let cmds = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0) };
    cmds >= 0
        && cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED != 0
        // SAFETY: as above.
        && unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0,
                0,
            )
        } == 0
}

/// A full memory barrier on every running thread of the process
/// (`MEMBARRIER_CMD_PRIVATE_EXPEDITED`); `false` if it failed (never after
/// [`membarrier_register`] said yes: registration is kept across fork).
pub(crate) fn membarrier() -> bool {
    // SAFETY: membarrier takes no pointers.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0 }
}

//! The clocks and the process-wide memory barrier behind progress updates
//! (`core::progress`): safe wrappers over `clock_gettime`, `clock_getres` and
//! `membarrier`.
// Under `--cfg loom` the progress protocol models its barrier with fences.
#![cfg_attr(loom, allow(dead_code))]

fn ns(ts: &libc::timespec) -> i64 {
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Reads clock `id`: through the vDSO's own `clock_gettime` once
/// [`resolve_vdso`] found it (glibc's wrapper around the same call costs
/// about 3 ns a read on the machine of docs/performance.md), else through
/// libc. `CHECKED`: a failed call reads 0; unchecked is only for a call that
/// always fills the timespec (see [`coarse_ns`]).
#[inline(always)]
fn read<const CHECKED: bool>(id: libc::clockid_t) -> i64 {
    let f = CLOCK_GETTIME.load(Ordering::Relaxed);
    let mut ts = std::mem::MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: `f` is either [`libc_clock_gettime`] or the vDSO's
    // `clock_gettime` (resolved once by `resolve_vdso`; the vDSO stays mapped
    // at that address for the life of the process and of its forked
    // children), both called as glibc calls the vDSO's: a valid clock id and
    // a timespec to fill. The timespec is read when the call filled it:
    // checked, or (unchecked) by a call that always fills it.
    unsafe {
        let f: ClockGettime = std::mem::transmute::<*mut (), ClockGettime>(f);
        let r = f(id, ts.as_mut_ptr());
        if CHECKED && r != 0 {
            return 0;
        }
        ns(&ts.assume_init())
    }
}

/// libc's `clock_gettime` with the vDSO function's signature: what
/// [`CLOCK_GETTIME`] calls until (or unless) the vDSO's is found, so a read
/// never checks which one it has. Like the vDSO's coarse read, it always
/// fills the timespec: with zeros if the call failed.
extern "C" fn libc_clock_gettime(id: libc::clockid_t, ts: *mut libc::timespec) -> libc::c_int {
    // SAFETY: `read`'s valid clock id and timespec, passed through; on
    // failure it is filled here.
    unsafe {
        let r = libc::clock_gettime(id, ts);
        if r != 0 {
            ts.write(libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            });
        }
        r
    }
}

/// Reads clock `id` through libc: the tests' reference.
#[cfg(test)]
fn read_libc(id: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to fill; it cannot fail.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ns(&ts)
}

/// `CLOCK_MONOTONIC` in ns: the clock `std::time::Instant` reads. Checked:
/// where the vDSO cannot read the clock source it makes the system call,
/// which a seccomp filter could refuse (then 0).
#[inline]
pub(crate) fn monotonic_ns() -> i64 {
    read::<true>(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_MONOTONIC_COARSE` in ns: the same clock as of its last tick.
/// Unchecked (the progress update's read, where a check of the call's
/// result measured ~2.5 ns): the vDSO serves the coarse clocks from its data
/// page whatever the clock source, never through the system call, so it
/// always fills the timespec, and [`libc_clock_gettime`] does too.
#[inline]
pub(crate) fn coarse_ns() -> i64 {
    read::<false>(libc::CLOCK_MONOTONIC_COARSE)
}

type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;

use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

/// The `clock_gettime` [`read`] calls: the vDSO's once [`resolve_vdso`]
/// found it, else [`libc_clock_gettime`].
static CLOCK_GETTIME: AtomicPtr<()> = AtomicPtr::new(libc_clock_gettime as *mut ());
/// Whether [`resolve_vdso`] looked: [`VDSO_UNKNOWN`], [`VDSO_NONE`] or
/// [`VDSO_FOUND`].
static VDSO: AtomicU8 = AtomicU8::new(VDSO_UNKNOWN);
const VDSO_UNKNOWN: u8 = 0;
const VDSO_NONE: u8 = 1;
#[cfg_attr(not(test), allow(dead_code))]
const VDSO_FOUND: u8 = 2;

/// Looks up the vDSO's `clock_gettime` once per process, so that
/// [`coarse_ns`] can call it directly; until then, and where there is none
/// (another architecture, or valgrind, which hides the vDSO), it goes
/// through libc. The lookup (`dlopen` of the already-mapped vDSO with
/// `RTLD_NOLOAD`, then `dlsym`) loads nothing, but it takes the dynamic
/// loader's lock, so it runs only as the library is loaded
/// ([`RESOLVE_VDSO_AT_LOAD`]): never from a bgjob call, which may come from a
/// thread a library constructor waits for (that constructor's `dlopen` holds
/// the lock: a deadlock), or from a child forked while another thread was
/// inside `dlopen` (the loader's state is half-changed there: glibc aborts).
/// A copy of bgjob whose constructor did not run keeps the libc read.
pub(crate) fn resolve_vdso() {
    if VDSO.load(Ordering::Relaxed) != VDSO_UNKNOWN {
        return;
    }
    match lookup_vdso() {
        Some(f) => {
            CLOCK_GETTIME.store(f, Ordering::Relaxed);
            VDSO.store(VDSO_FOUND, Ordering::Relaxed);
        }
        None => VDSO.store(VDSO_NONE, Ordering::Relaxed),
    }
}

/// [`resolve_vdso`] as the library is loaded: for a program linked with
/// it, before `main` (one thread, nobody else in the loader); for a `dlopen`
/// (Python's ctypes), inside that `dlopen`, on the thread that already holds
/// the loader's lock (which is recursive).
#[cfg(all(target_os = "linux", not(loom)))]
#[used]
#[unsafe(link_section = ".init_array")]
static RESOLVE_VDSO_AT_LOAD: extern "C" fn() = {
    extern "C" fn at_load() {
        resolve_vdso();
    }
    at_load
};

fn lookup_vdso() -> Option<*mut ()> {
    let (lib, sym): (&[u8], &[u8]) = if cfg!(target_arch = "x86_64") {
        (b"linux-vdso.so.1\0", b"__vdso_clock_gettime\0")
    } else if cfg!(target_arch = "aarch64") {
        (b"linux-vdso.so.1\0", b"__kernel_clock_gettime\0")
    } else {
        return None;
    };
    // SAFETY: NUL-terminated names; RTLD_NOLOAD only finds an object that is
    // already mapped (the vDSO is, by the kernel), and the handle is never
    // closed (the vDSO is never unmapped).
    let f = unsafe {
        let h = libc::dlopen(lib.as_ptr().cast(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if h.is_null() {
            return None;
        }
        libc::dlsym(h, sym.as_ptr().cast())
    };
    (!f.is_null()).then_some(f.cast())
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The direct vDSO read is the same clock as libc's: a reading through it
    /// falls between two readings through libc. Run many times, so a wrong
    /// symbol (another clock, or garbage) cannot pass by chance.
    #[test]
    fn the_vdso_reads_are_libc_s_clocks() {
        // Resolved as the library was loaded, not by a call.
        let resolved = VDSO.load(Ordering::Relaxed);
        assert_ne!(resolved, VDSO_UNKNOWN);
        // SAFETY: getauxval reads the process's auxiliary vector.
        let mapped = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } != 0;
        if cfg!(target_arch = "x86_64") && mapped {
            assert_eq!(resolved, VDSO_FOUND, "the vDSO is mapped but not found");
            assert_ne!(
                CLOCK_GETTIME.load(Ordering::Relaxed),
                libc_clock_gettime as *mut ()
            );
        }
        for id in [libc::CLOCK_MONOTONIC_COARSE, libc::CLOCK_MONOTONIC] {
            for _ in 0..10_000 {
                let before = read_libc(id);
                let direct = read::<true>(id);
                let unchecked = read::<false>(id);
                let after = read_libc(id);
                assert!(
                    before <= direct && direct <= unchecked && unchecked <= after,
                    "{before} {direct} {unchecked} {after}"
                );
            }
        }
    }

    /// What [`read`] calls before the constructor found the vDSO (a copy
    /// whose constructor never ran, valgrind, another architecture) is libc's
    /// `clock_gettime` through the vDSO's signature: called as `read` calls
    /// the pointer, it fills the timespec with the same clock. (In this test
    /// process the constructor has run, so `read` itself never takes it.)
    #[test]
    fn the_fallback_before_the_vdso_is_found_reads_libc_s_clocks() {
        // SAFETY: the cast `CLOCK_GETTIME` is initialised with, undone as
        // `read` undoes it.
        let f =
            unsafe { std::mem::transmute::<*mut (), ClockGettime>(libc_clock_gettime as *mut ()) };
        for id in [libc::CLOCK_MONOTONIC_COARSE, libc::CLOCK_MONOTONIC] {
            for _ in 0..1_000 {
                let before = read_libc(id);
                let mut ts = std::mem::MaybeUninit::<libc::timespec>::uninit();
                // SAFETY: a valid clock id and a timespec to fill.
                let r = unsafe { f(id, ts.as_mut_ptr()) };
                assert_eq!(r, 0);
                // SAFETY: filled by the successful call.
                let fallback = ns(&unsafe { ts.assume_init() });
                let after = read_libc(id);
                assert!(
                    before <= fallback && fallback <= after,
                    "{before} {fallback} {after}"
                );
            }
        }
    }

    /// The fallback fills the timespec even when the call fails (an unknown
    /// clock id here; a refused system call in the field), so an unchecked
    /// read never reads it unfilled.
    #[test]
    fn the_fallback_fills_the_timespec_when_the_call_fails() {
        let mut ts = std::mem::MaybeUninit::<libc::timespec>::new(libc::timespec {
            tv_sec: 7,
            tv_nsec: 7,
        });
        let r = libc_clock_gettime(-1000, ts.as_mut_ptr());
        assert_ne!(r, 0, "clock id -1000 was accepted");
        // SAFETY: initialised above, and written by the call if at all.
        let ts = unsafe { ts.assume_init() };
        assert_eq!((ts.tv_sec, ts.tv_nsec), (0, 0));
    }
}

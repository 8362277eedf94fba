//! fork() while jobs run.
//!
//! A forked child has only the thread that called fork(). Whatever lock another
//! thread held at that moment stays held in the child forever, and the
//! parent's jobs never run there. So that a child can always exec, or call
//! bgjob and get a clean answer, never a hang:
//!
//! - before the fork, the forking thread takes every process-wide lock bgjob
//!   has, in the documented lock order, so none is mid-use by another thread
//!   (glibc's malloc does the same for its arenas): every handle table (in tag
//!   order), then (never nested with these elsewhere) the job registry, the
//!   thread pool, the log sink and the timer;
//! - in the parent they are simply released;
//! - in the child the parent's handles of every type are invalidated and their
//!   objects forgotten (never touched: their own locks may be held), the timer
//!   forgets the parent's tasks (its thread does not exist there), and the locks
//!   are released (the pool forgets the parent's idle threads by itself,
//!   through `sys::fork_generation`). Parent handles then get
//!   `BGJOB_RESULT_INVALID_HANDLE`; new objects of every type work as usual.
//!
//! Nothing here lists the handle tables by hand: a table adds itself to the one
//! list in `super::handles` the first time it makes a handle, so a new table
//! cannot be forgotten. The process-wide locks outside the tables are the ones in
//! [`Held`]; the test `every_process_wide_lock_is_held_across_fork` fails when a
//! `static` lock appears in the sources without being named in
//! [`PROCESS_LOCKS`] (and so, by review, here).
//!
//! The handlers are registered when the library is loaded (an ELF constructor)
//! and do nothing but take and release the table list while that list is
//! empty, so a program that never makes a handle pays one uncontended lock per
//! fork.

use super::handles::{ForkTable, HeldTable, forget_current_after_fork, tables};
use crate::core::threads::{Pool, PoolHold};
use crate::core::timer::{self, TimerHold};
use crate::core::{job::RegistryHold, log};
use std::cell::RefCell;
use std::sync::MutexGuard;

/// The `static` items outside the handle tables that hold a process-wide lock
/// (a mutex, or a `OnceLock`'s one-time initialisation), each held across fork
/// by [`prepare`]: the job registry (`REGISTRY`), the global pool (`GLOBAL`),
/// the log sink (`SINK`) and its environment switch (`ENV`), the timer
/// (`TIMER`), the state and verb names (`NAMES`), and the table list itself
/// (`TABLES`). A `OnceLock` is held by initialising it before the fork.
#[cfg(test)]
const PROCESS_LOCKS: &[&str] = &[
    "REGISTRY", "GLOBAL", "SINK", "ENV", "TIMER", "NAMES", "TABLES",
];

struct Held {
    /// Kept locked so no table registers itself mid-fork.
    list: MutexGuard<'static, Vec<&'static dyn ForkTable>>,
    /// `None` while no table has made a handle: nothing of bgjob's C API
    /// exists to protect yet.
    rest: Option<Rest>,
}

struct Rest {
    tables: Vec<Box<dyn HeldTable>>,
    registry: RegistryHold,
    pool: PoolHold,
    sink: MutexGuard<'static, Option<log::Sink>>,
    timer: TimerHold,
}

thread_local! {
    /// Set by `prepare` and taken by `parent` or `child`, which run on the same
    /// thread (the one calling fork()).
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Registers the fork handlers when the library is loaded: before any thread of
/// the library exists, so no fork can race the registration.
extern "C" fn register_at_load() {
    // Without handlers (ENOMEM at startup) the child is as safe as before:
    // fine for fork-then-exec.
    let _ = crate::sys::at_fork(prepare, parent, child);
}

#[used]
#[unsafe(link_section = ".init_array")]
static REGISTER_AT_LOAD: extern "C" fn() = register_at_load;

/// A panic must not unwind into libc's fork(); it cannot happen here (only lock
/// calls, which recover from poisoning), but if it did, aborting is the only
/// safe answer.
fn no_unwind(f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        std::process::abort();
    }
}

unsafe extern "C" fn prepare() {
    no_unwind(|| {
        // The documented lock order: the table list, the handle tables in tag
        // order, then (never nested with these elsewhere) the registry, the
        // pool, the log sink and the timer (a job's lock is taken before the
        // timer's, never after, and the timer thread holds no other lock).
        // One-time initialisations first: one under way on another thread at
        // the fork would never finish in the child.
        super::info::static_name(None);
        let list = tables();
        if list.is_empty() {
            HELD.with(|h| *h.borrow_mut() = Some(Held { list, rest: None }));
            return;
        }
        let tables = list.iter().map(|t| t.hold_for_fork()).collect();
        let held = Held {
            list,
            rest: Some(Rest {
                tables,
                registry: RegistryHold::take(),
                pool: Pool::global().hold_for_fork(),
                sink: log::hold_for_fork(),
                timer: timer::hold_for_fork(),
            }),
        };
        HELD.with(|h| *h.borrow_mut() = Some(held));
    });
}

unsafe extern "C" fn parent() {
    no_unwind(|| drop(HELD.with(|h| h.borrow_mut().take())));
}

unsafe extern "C" fn child() {
    no_unwind(|| {
        let Some(held) = HELD.with(|h| h.borrow_mut().take()) else {
            return;
        };
        let Held { list, rest } = held;
        let Some(Rest {
            tables,
            registry,
            pool,
            sink,
            timer,
        }) = rest
        else {
            return;
        };
        for t in tables {
            t.forget_all();
        }
        drop(list);
        registry.forget_all();
        drop(pool);
        drop(sink);
        timer.forget_all();
        forget_current_after_fork();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names of the `static` items in `src` whose type holds a lock (a `Mutex`,
    /// `RwLock`, `Condvar`, handle `Table`, `Once` or `OnceLock`, whose first
    /// use is a lock too), outside test code (test modules and files, and
    /// statics marked `#[cfg(test)]`).
    fn static_locks() -> Vec<(String, String)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).expect("src is readable") {
                let p = e.expect("a directory entry").path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs")
                    && !p.to_string_lossy().ends_with("tests.rs")
                {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut found = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("a source file");
            // Inline test modules come last in every file; their statics are
            // not process-wide state of the library.
            let text = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or("");
            let mut test_only = false;
            for line in text.lines() {
                let l = line.trim_start();
                // A `#[cfg(test)]` static exists only in test builds.
                let after_cfg_test = std::mem::replace(&mut test_only, l == "#[cfg(test)]");
                if after_cfg_test {
                    continue;
                }
                let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
                let l = l.strip_prefix("pub ").unwrap_or(l);
                let Some(rest) = l.strip_prefix("static ") else {
                    continue;
                };
                let Some((name, ty)) = rest.split_once(':') else {
                    continue;
                };
                if ["Mutex", "RwLock", "Table<", "Condvar", "Once"]
                    .iter()
                    .any(|k| ty.contains(k))
                {
                    found.push((name.trim().to_owned(), f.display().to_string()));
                }
            }
        }
        found
    }

    #[test]
    fn every_process_wide_lock_is_held_across_fork() {
        let found = static_locks();
        for name in [
            "REGISTRY", "GLOBAL", "SINK", "TIMER", "JOBS", "TXNS", "VIRJOBS",
        ] {
            assert!(
                found.iter().any(|(n, _)| n == name),
                "the scan misses {name}: {found:?}"
            );
        }
        for (name, file) in &found {
            // Handle tables register themselves (see `register_table`).
            let is_table = std::fs::read_to_string(file)
                .unwrap()
                .lines()
                .any(|l| l.contains(&format!("static {name}: Table<")));
            assert!(
                is_table || PROCESS_LOCKS.contains(&name.as_str()),
                "{file}: static {name} holds a lock that fork() does not take: \
                 hold it in ffi::fork::prepare and name it in PROCESS_LOCKS"
            );
        }
    }

    #[test]
    fn a_table_lists_itself_when_it_makes_a_handle() {
        let table: &'static super::super::handles::Table<u32> =
            Box::leak(Box::new(super::super::handles::Table::new(14)));
        let registered = || {
            tables().iter().any(|&x| {
                std::ptr::addr_eq(x as *const dyn ForkTable, table as *const dyn ForkTable)
            })
        };
        assert!(!registered());
        let h = table.insert(7);
        assert!(registered());
        table.insert(8);
        assert_eq!(
            tables().iter().filter(|x| x.tag() == 14).count(),
            1,
            "registered once"
        );
        assert_eq!(table.remove(h), Some(7));
    }
}

//! Lifecycle logging: silent unless `BGJOB_DEBUG` is set (to anything but `0` or
//! empty), or a sink is installed. Never called with a job's lock held.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Where log lines go when a sink is installed.
pub type Sink = Arc<dyn Fn(&str) + Send + Sync>;

static SINK: Mutex<Option<Sink>> = Mutex::new(None);
static HAS_SINK: AtomicBool = AtomicBool::new(false);

fn env_enabled() -> bool {
    static ENV: OnceLock<bool> = OnceLock::new();
    *ENV.get_or_init(|| std::env::var_os("BGJOB_DEBUG").is_some_and(|v| !v.is_empty() && v != "0"))
}

/// The sink's lock, held across fork() (see `crate::ffi::fork`).
pub(crate) fn hold_for_fork() -> std::sync::MutexGuard<'static, Option<Sink>> {
    env_enabled();
    SINK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs (or, with `None`, removes) the sink. Lines then go to it instead of
/// stderr, whatever `BGJOB_DEBUG` says.
pub fn set_sink(sink: Option<Sink>) {
    let old = {
        let mut g = SINK.lock().unwrap_or_else(|e| e.into_inner());
        HAS_SINK.store(sink.is_some(), Ordering::Release);
        std::mem::replace(&mut *g, sink)
    };
    // Dropped with the lock released: it may run the old callback's free
    // function, which may log or install another sink.
    drop(old);
}

/// Whether a sink is installed: a line logged now may run user code.
pub(crate) fn has_sink() -> bool {
    HAS_SINK.load(Ordering::Acquire)
}

/// Logs one lifecycle line.
pub(crate) fn debug(args: fmt::Arguments<'_>) {
    if HAS_SINK.load(Ordering::Acquire) {
        // Cloned out so the sink runs with no lock held (it may log or reinstall).
        let sink = SINK.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(sink) = sink {
            sink(&args.to_string());
            return;
        }
    }
    if env_enabled() {
        eprintln!("bgjob: {args}");
    }
}

//! Worker threads.
//!
//! Every running job has its own OS thread, named after the job. A thread whose job
//! ended waits a short while for the next one, so a burst of short jobs does not pay
//! a thread start each; but a job is never queued behind another: when no idle
//! thread with the right stack size is free, a new thread is started at once.
//! A failed thread start (EAGAIN) is returned to the caller, who leaves nothing
//! behind.

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// The largest worker stack a job may ask for (1 GiB); std cannot start a
/// thread with an unrepresentable stack size and panics instead of failing.
pub const MAX_STACK_SIZE: usize = 1 << 30;

/// A unit of work for one thread.
pub(crate) type Task = Box<dyn FnOnce() + Send + 'static>;

/// How the pool keeps idle threads.
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    /// How long a thread whose job ended waits for another before it exits.
    pub keep_alive: Duration,
    /// At most this many idle threads are kept; the others exit at once.
    pub max_idle: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            keep_alive: Duration::from_secs(5),
            max_idle: 256,
        }
    }
}

struct Idle {
    id: u64,
    stack_size: usize,
    tx: Sender<(String, Task)>,
}

struct Shared {
    idle: Vec<Idle>,
    next_id: u64,
    /// The process the idle threads belong to; after fork() they do not exist.
    pid: u32,
}

/// A set of worker threads. Most programs use [`Pool::global`].
pub struct Pool {
    config: PoolConfig,
    shared: Mutex<Shared>,
}

impl Pool {
    /// A pool with its own idle threads.
    pub fn new(config: PoolConfig) -> Pool {
        Pool {
            config,
            shared: Mutex::new(Shared {
                idle: Vec::new(),
                next_id: 0,
                pid: std::process::id(),
            }),
        }
    }

    /// The process-wide pool used by jobs that name none.
    pub fn global() -> &'static Pool {
        static GLOBAL: OnceLock<Pool> = OnceLock::new();
        GLOBAL.get_or_init(|| Pool::new(PoolConfig::default()))
    }

    /// Idle threads waiting for work now.
    pub fn idle_threads(&self) -> usize {
        self.lock().idle.len()
    }

    /// Held across fork() (see `crate::ffi::fork`), so no parent thread is
    /// inside the pool's lock when the child is made.
    pub(crate) fn hold_for_fork(&'static self) -> PoolHold {
        PoolHold(self.shared.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        let mut g = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        if g.pid != pid {
            // A forked child inherits the list but not the threads behind it.
            g.idle.clear();
            g.pid = pid;
        }
        g
    }

    /// Runs `task` on a thread named `name` with `stack_size` bytes of stack
    /// (0 = the platform default): an idle one if there is one, else a new one.
    /// If no thread can be started, the task comes back unrun with the error.
    pub(crate) fn spawn(
        &'static self,
        name: &str,
        stack_size: usize,
        task: Task,
    ) -> Result<(), (io::Error, Task)> {
        let (idle, id) = {
            let mut g = self.lock();
            g.next_id += 1;
            let idle = g
                .idle
                .iter()
                .rposition(|i| i.stack_size == stack_size)
                .map(|pos| g.idle.swap_remove(pos));
            (idle, g.next_id)
        };
        let mut work = (name.to_owned(), task);
        if let Some(idle) = idle {
            // Taken off the list, the thread is either blocked in its timed
            // receive, or timed out, found itself gone from the list, and waits
            // for exactly this message; either way it gets it.
            match idle.tx.send(work) {
                Ok(()) => return Ok(()),
                Err(e) => work = e.into_inner(),
            }
        }
        let mut builder = std::thread::Builder::new().name(thread_name(&work.0));
        if stack_size > 0 {
            builder = builder.stack_size(stack_size);
        }
        // std drops the closure when the thread cannot start; the slot keeps the
        // task so it can be handed back.
        let slot = Arc::new(Mutex::new(Some(work.1)));
        let thread_slot = slot.clone();
        let spawned = builder.spawn(move || {
            let task = thread_slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(task) = task {
                self.thread_main(id, stack_size, task);
            }
        });
        match spawned {
            Ok(_) => Ok(()),
            Err(e) => {
                let task = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                Err((e, task.expect("the thread never started, so never took it")))
            }
        }
    }

    fn thread_main(&'static self, id: u64, stack_size: usize, first: Task) {
        first();
        loop {
            let (tx, rx): (_, Receiver<(String, Task)>) = bounded(1);
            {
                let mut g = self.lock();
                if g.idle.len() >= self.config.max_idle {
                    return;
                }
                g.idle.push(Idle { id, stack_size, tx });
            }
            crate::sys::set_current_thread_name("bgjob-idle");
            let (name, task) = match rx.recv_timeout(self.config.keep_alive) {
                Ok(work) => work,
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    let mut g = self.lock();
                    if let Some(pos) = g.idle.iter().position(|i| i.id == id) {
                        g.idle.swap_remove(pos);
                        return;
                    }
                    drop(g);
                    // A spawner took this thread off the list just now and is
                    // about to send; wait for its work.
                    match rx.recv() {
                        Ok(work) => work,
                        Err(_) => return,
                    }
                }
            };
            crate::sys::set_current_thread_name(&thread_name(&name));
            task();
        }
    }
}

/// The pool's lock, held across fork().
pub(crate) struct PoolHold(MutexGuard<'static, Shared>);

impl PoolHold {
    /// In the child: the idle threads do not exist there. Their channels are
    /// forgotten, not dropped (a drop would wake threads that are gone).
    pub(crate) fn forget_idle(mut self) {
        std::mem::forget(std::mem::take(&mut self.0.idle));
        self.0.pid = std::process::id();
    }
}

/// Linux keeps 15 bytes of a thread name; cut on a character boundary.
fn thread_name(name: &str) -> String {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].replace('\0', "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// The spawn result without the (non-Debug) task, for unwrap.
    fn started(r: Result<(), (io::Error, Task)>) -> io::Result<()> {
        r.map_err(|(e, _)| e)
    }

    fn pool(keep_alive_ms: u64) -> &'static Pool {
        Box::leak(Box::new(Pool::new(PoolConfig {
            keep_alive: Duration::from_millis(keep_alive_ms),
            max_idle: 4,
        })))
    }

    #[test]
    fn threads_are_named_and_reused() {
        let p = pool(5_000);
        let (tx, rx) = mpsc::channel();
        let t = tx.clone();
        started(p.spawn(
            "first-job",
            0,
            Box::new(move || {
                let me = std::thread::current();
                t.send((me.id(), me.name().map(str::to_owned))).unwrap();
            }),
        ))
        .unwrap();
        let (first_id, first_name) = rx.recv().unwrap();
        assert_eq!(first_name.as_deref(), Some("first-job"));
        while p.idle_threads() == 0 {
            std::thread::yield_now();
        }
        started(p.spawn(
            "second",
            0,
            Box::new(move || {
                tx.send((std::thread::current().id(), None)).unwrap();
            }),
        ))
        .unwrap();
        let (second_id, _) = rx.recv().unwrap();
        assert_eq!(first_id, second_id, "the idle thread should be reused");
    }

    #[test]
    fn no_job_waits_behind_another() {
        let p = pool(5_000);
        let (block_tx, block_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        started(p.spawn(
            "blocker",
            0,
            Box::new(move || {
                block_rx.recv().unwrap();
            }),
        ))
        .unwrap();
        started(p.spawn("free", 0, Box::new(move || done_tx.send(()).unwrap()))).unwrap();
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("second job ran while the first was blocked");
        block_tx.send(()).unwrap();
    }

    #[test]
    fn idle_threads_expire() {
        let p = pool(20);
        let (tx, rx) = mpsc::channel();
        started(p.spawn("short", 0, Box::new(move || tx.send(()).unwrap()))).unwrap();
        rx.recv().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while p.idle_threads() != 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            p.idle_threads(),
            0,
            "the idle thread outlived its keep-alive"
        );
    }

    #[test]
    fn long_names_are_cut_on_a_char_boundary() {
        assert_eq!(thread_name("copy-disk-image-vda"), "copy-disk-image");
        assert_eq!(thread_name("ééééééééé"), "ééééééé");
        assert_eq!(thread_name("a\0b"), "ab");
    }
}

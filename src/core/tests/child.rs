//! Child processes end with their job: cancel reaches the child's whole
//! process group, whichever way the kernel lets bgjob signal it.

use super::*;
use crate::core::child::Spawn;
use crate::sys;
use std::time::Duration;

/// The pids whose parent is `parent` and that are not zombies.
fn children_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.to_owned()) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (state, ppid) = (f.next(), f.next().and_then(|p| p.parse::<i32>().ok()));
        if ppid == Some(parent) && state != Some("Z") {
            out.push(pid);
        }
    }
    out
}

fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

fn grandchildren_end_with_the_job() {
    let (tx, rx) = std::sync::mpsc::channel();
    let job = Builder::new()
        .spawn(move |w| {
            let script = "sleep 30 & (trap '' TERM; exec sleep 31) & wait";
            let spec = Spawn::new(["sh", "-c", script]).grace(Duration::from_secs(20));
            let pid = w.job().spawn_child(spec).unwrap();
            tx.send(pid).unwrap();
            let _ = w.job().wait_child(pid, None);
            Err(JobError::new(125, ""))
        })
        .unwrap();
    let sh = rx.recv().unwrap();
    let mut kids = Vec::new();
    for _ in 0..3000 {
        kids = children_of(sh);
        let sleeping = |p: &i32| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c == "sleep\n")
        };
        if kids.len() == 2 && kids.iter().all(sleeping) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(kids.len(), 2, "the shell's two sleeps");
    job.cancel();
    assert_eq!(
        job.wait(Some(Duration::from_secs(10))),
        Ok(State::Cancelled)
    );
    for pid in kids {
        let mut left = 500;
        while running(pid) && left > 0 {
            std::thread::sleep(Duration::from_millis(10));
            left -= 1;
        }
        assert!(!running(pid), "grandchild {pid} outlived its job");
    }
}

/// Cancel reaches the child's whole process group: a shell's `sleep`, and
/// one that ignores SIGTERM once the shell is gone (not 20 s later).
#[test]
fn cancel_ends_the_whole_group() {
    grandchildren_end_with_the_job();
}

/// The same where the child is held by its pid (no pidfd: kernels before
/// 5.2), signalling with kill(-pgid) while the leader is unreaped.
#[test]
fn cancel_ends_the_whole_group_without_pidfds() {
    use crate::sys::spawn::{FORCE_CLONE, FORCE_LOCK, FORCE_NO_PIDFD};
    use std::sync::atomic::Ordering;
    let _forcing = FORCE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    FORCE_CLONE.store(FORCE_NO_PIDFD, Ordering::SeqCst);
    let ran = std::panic::catch_unwind(grandchildren_end_with_the_job);
    FORCE_CLONE.store(0, Ordering::SeqCst);
    if let Err(panic) = ran {
        std::panic::resume_unwind(panic);
    }
}

/// The same with a pidfd but without `PIDFD_SIGNAL_PROCESS_GROUP`
/// (kernels before 6.9; valgrind): kill(-pgid) while the leader is
/// unreaped, checked through the pidfd.
#[test]
fn cancel_ends_the_whole_group_without_the_group_flag() {
    use std::sync::atomic::Ordering;
    let _forcing = crate::sys::spawn::FORCE_LOCK
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    sys::NO_PIDFD_GROUP_SIGNAL.store(true, Ordering::SeqCst);
    let ran = std::panic::catch_unwind(grandchildren_end_with_the_job);
    sys::NO_PIDFD_GROUP_SIGNAL.store(false, Ordering::SeqCst);
    if let Err(panic) = ran {
        std::panic::resume_unwind(panic);
    }
}

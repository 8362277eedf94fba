//! Sub-jobs through the Rust API: cancel flows down, the parent is held for
//! its children, links never keep a job alive for ever.

use super::*;
use crate::core::job::CancelCause;
use std::sync::mpsc;

fn until_cancel() -> Job {
    Job::builder().create(|w| {
        while !w.is_cancelled() {
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(JobError::new(125, "cancelled"))
    })
}

#[test]
fn cancel_reaches_children_and_grandchildren_with_cause_parent() {
    let a = until_cancel();
    let b = until_cancel();
    let c = until_cancel();
    b.set_parent(&a).unwrap();
    c.set_parent(&b).unwrap();
    assert_eq!(b.parent_id(), a.id());
    for j in [&a, &b, &c] {
        j.start().unwrap();
    }
    a.cancel();
    assert_eq!(a.wait(None).unwrap(), State::Cancelled);
    // The top ended, so both below had ended first.
    assert_eq!(b.state(), State::Cancelled);
    assert_eq!(c.state(), State::Cancelled);
    assert_eq!(b.info().cancel_cause, CancelCause::Parent);
    assert_eq!(c.info().cancel_cause, CancelCause::Parent);
    assert_eq!(a.info().cancel_cause, CancelCause::Caller);
}

#[test]
fn a_parent_is_waiting_until_its_child_ends_and_keeps_its_outcome() {
    let (tx, rx) = mpsc::channel::<()>();
    let parent = Job::builder().create(|_| Ok(()));
    let child = Job::builder().create(move |_| {
        rx.recv().ok();
        Err(JobError::new(5, "child failed"))
    });
    child.set_parent(&parent).unwrap();
    child.start().unwrap();
    parent.start().unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while parent.state() != State::Waiting {
        assert!(Instant::now() < end, "the parent never waited");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        parent.wait(Some(Duration::ZERO)),
        Err(Error::TimedOut),
        "ended while its child runs"
    );
    tx.send(()).unwrap();
    assert_eq!(parent.wait(None).unwrap(), State::Completed);
    assert_eq!(child.state(), State::Failed);
}

#[test]
fn bad_links_are_refused() {
    let a = Job::builder().create(|_| Ok(()));
    let b = Job::builder().create(|_| Ok(()));
    assert!(matches!(a.set_parent(&a), Err(Error::InvalidArgument(_))));
    b.set_parent(&a).unwrap();
    assert!(matches!(b.set_parent(&a), Err(Error::InvalidArgument(_))));
    a.start().unwrap();
    // b, still created, holds a: a is waiting for it.
    let done = Job::builder().create(|_| Ok(()));
    done.start().unwrap();
    assert_eq!(done.wait(None).unwrap(), State::Completed);
    let c = Job::builder().create(|_| Ok(()));
    assert!(matches!(c.set_parent(&done), Err(Error::NotAllowed { .. })));
    // Dropping the never-started child frees its parent to end.
    drop(b);
    assert_eq!(a.wait(None).unwrap(), State::Completed);
}

#[test]
fn a_child_names_its_parent_after_the_parent_was_freed() {
    let a = until_cancel();
    let b = until_cancel();
    b.set_parent(&a).unwrap();
    a.start().unwrap();
    b.start().unwrap();
    a.cancel();
    assert_eq!(a.wait(None).unwrap(), State::Cancelled);
    let pid = a.id();
    drop(a);
    // Freed once its worker thread lets go of it too (no handle, and the
    // child, terminal, no longer holds it).
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while crate::core::job::lookup(pid).is_some() {
        assert!(
            std::time::Instant::now() < until,
            "the parent was never freed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(b.parent_id(), pid);
}

/// A job its create starts at once (the C layer's create: link it to its
/// parent, then start it) may be reached by its parent's cancel, or by a
/// lookup's, in between: the cancel is recorded, the start succeeds and the
/// worker runs with the cancel requested (cause `Parent`), as a child born
/// under a cancelled parent does. Before, that cancel ended the job unrun:
/// the start failed, so the create failed, with the job's completion
/// already run.
#[test]
fn a_cancel_between_a_creates_link_and_its_start_is_seen_by_the_worker() {
    let parent = until_cancel();
    parent.start().unwrap();
    let completions = Arc::new(AtomicUsize::new(0));
    let c = completions.clone();
    let child = Job::builder()
        .start_at_once()
        .on_complete(None, move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .create(|w| {
            if w.is_cancelled() {
                Err(JobError::new(125, "cancelled"))
            } else {
                Ok(())
            }
        });
    child.set_parent(&parent).unwrap();
    parent.cancel();
    assert_eq!(child.state(), State::Created, "ended inside its create");
    assert!(child.info().cancel_requested);
    child.start().expect("its create's start");
    assert_eq!(child.wait(None).unwrap(), State::Cancelled);
    assert_eq!(child.info().cancel_cause, CancelCause::Parent);
    assert_eq!(parent.wait(None).unwrap(), State::Cancelled);
    let end = Instant::now() + Duration::from_secs(30);
    while completions.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < end, "no completion");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(completions.load(Ordering::SeqCst), 1);

    // Without the mark (a deferred start), the same cancel ends it unrun.
    let parent = until_cancel();
    parent.start().unwrap();
    let deferred = Job::builder().create(|_| Ok(()));
    deferred.set_parent(&parent).unwrap();
    parent.cancel();
    assert_eq!(deferred.state(), State::Cancelled);
    assert!(matches!(deferred.start(), Err(Error::NotAllowed { .. })));
}

use super::*;

fn job() -> Job {
    Job::builder().create(|_| Ok(()))
}

/// Held by the tests that need a hazard record (they check the mirror
/// answers) and by the one that takes every record. (Test-only, so
/// not a lock fork must hold: `ffi::fork`'s scan skips it by the cfg.)
#[cfg(test)]
static RECORDS: Mutex<()> = Mutex::new(());

fn records() -> MutexGuard<'static, ()> {
    RECORDS.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn stale_and_made_up_handles_are_refused() {
    let h = JOBS.insert(job());
    let p = to_ptr(h);
    assert!(with_job(p, |_, _| ()).is_ok());
    assert!(JOBS.remove(h).is_some());
    assert_eq!(with_job(p, |_, _| ()), Err(bgjob_result::InvalidHandle));
    assert!(JOBS.remove(h).is_none(), "double remove");
    // The slot is reused with a new generation; the old handle stays dead.
    let h2 = JOBS.insert(job());
    assert_ne!(h, h2);
    assert_eq!(with_job(p, |_, _| ()), Err(bgjob_result::InvalidHandle));
    assert!(with_job(to_ptr(h2), |_, _| ()).is_ok());
    JOBS.remove(h2);
    for bogus in [0usize, 1, usize::MAX, 0xdead_beef_0000_0000] {
        assert_eq!(
            with_job(to_ptr(bogus), |_, _| ()),
            Err(bgjob_result::InvalidHandle)
        );
    }
}

/// Issue 13 item 10: after 2^28 − 1 create/destroy cycles of one slot its
/// generation used to wrap, and a handle from the first cycle named the
/// object of a later one. The slot starts near the limit here, as that
/// many cycles would have left it.
#[test]
fn a_stale_handle_never_reaches_another_object_after_its_slot_wraps() {
    let table: &'static Table<u32> = Box::leak(Box::new(Table::new(13)));
    let first = table.insert(0);
    assert_eq!(table.remove(first), Some(0));
    let (i, _) = decode(13, first).unwrap();
    table.inner.write().unwrap().entries[i].generation = GENERATION_MASK - 2;
    let mut stale = vec![first];
    for n in 1..=8u32 {
        let h = table.insert(n);
        for &s in &stale {
            assert_ne!(s, h, "cycle {n}: a new object got a stale handle's value");
            assert_eq!(
                table.get(s),
                None,
                "cycle {n}: stale {s:#x} reaches object {n}"
            );
            assert_eq!(
                table.remove(s),
                None,
                "cycle {n}: stale {s:#x} destroys object {n}"
            );
        }
        assert_eq!(table.remove(h), Some(n));
        stale.push(h);
    }
}

/// A shared reference is a slot of its own: the count follows the slots,
/// and a released reference's value never reaches the job again, even
/// once its slot is reused for another reference.
#[test]
fn shared_references_are_slots_of_their_own() {
    let j = job();
    let a = JOBS.insert(j.clone());
    let b = JOBS.share(a).expect("a is live");
    assert_ne!(a, b);
    assert_eq!(job_handle_count(&j), 2);
    assert!(JOBS.remove(b).is_some());
    assert_eq!(job_handle_count(&j), 1);
    let mut stale = vec![b];
    for _ in 0..4 {
        let c = JOBS.share(a).expect("a is live");
        for &s in &stale {
            assert_ne!(s, c);
            assert!(JOBS.get(s).is_none());
        }
        assert!(JOBS.remove(c).is_some());
        stale.push(c);
    }
    assert!(JOBS.share(b).is_none(), "a stale handle shares nothing");
    assert!(JOBS.remove(a).is_some());
    assert_eq!(job_handle_count(&j), 0);
    assert!(JOBS.share(a).is_none());
}

#[test]
fn freed_slots_are_reused_oldest_first() {
    let table: &'static Table<u32> = Box::leak(Box::new(Table::new(12)));
    let a = table.insert(1);
    let b = table.insert(2);
    table.remove(a);
    table.remove(b);
    let c = table.insert(3);
    assert_eq!(
        decode(12, c).unwrap().0,
        decode(12, a).unwrap().0,
        "the slot freed first is reused first"
    );
}

/// getinfo's lock-free lookup agrees with the table: live handles
/// read, removed, stale and made-up ones are refused, a reused slot's
/// old handle never reaches the new job, and a worker's own handle stays
/// readable on its thread after removal.
#[test]
fn the_mirror_agrees_with_the_table() {
    let _records = records();
    let j = job();
    let h = JOBS.insert(j.clone());
    let r = JOBS.share(h).expect("live");
    assert_eq!(JOBS.read_fast(h, Job::id).outcome(), Some(Some(j.id())));
    assert_eq!(JOBS.read_fast(r, Job::id).outcome(), Some(Some(j.id())));
    assert!(JOBS.remove(r).is_some());
    assert_eq!(JOBS.read_fast(r, Job::id).outcome(), Some(None));
    assert_eq!(
        with_job_read(to_ptr(r), Job::id),
        Err(bgjob_result::InvalidHandle)
    );
    assert_eq!(JOBS.read_fast(h, Job::id).outcome(), Some(Some(j.id())));
    let other = job();
    let mut stale = vec![r];
    for _ in 0..8 {
        let n = JOBS.insert(other.clone());
        for &s in &stale {
            assert_eq!(JOBS.read_fast(s, Job::id).outcome(), Some(None));
        }
        JOBS.remove(n);
        stale.push(n);
    }
    for bogus in [0usize, 1, usize::MAX, 0xdead_beef_0000_0000, h + (1 << 32)] {
        assert_eq!(
            with_job_read(to_ptr(bogus), Job::id),
            Err(bgjob_result::InvalidHandle)
        );
    }
    let scope = crate::core::job::WorkerScope::enter(&j);
    JOBS.remove(h);
    run_as_worker(h, &j, || {
        assert_eq!(with_job_read(to_ptr(h), Job::id), Ok(j.id()));
    });
    drop(scope);
    assert_eq!(
        with_job_read(to_ptr(h), Job::id),
        Err(bgjob_result::InvalidHandle)
    );
}

/// A panic inside a lock-free read used to leave the thread's hazard
/// record naming the slot: the handle's destroy then waited forever,
/// under the table's write lock.
// (A --cfg loom build's tables keep no mirror: `make loom` models it.)
#[cfg(not(loom))]
#[test]
fn a_panic_inside_a_lock_free_read_unpublishes_its_record() {
    let _records = records();
    let h = JOBS.insert(job());
    let (i, _) = decode(1, h).unwrap();
    let r = std::panic::catch_unwind(|| JOBS.read_fast(h, |_| panic!("in f")));
    assert!(r.is_err());
    assert!(!fast::named(1, i), "the record still names the slot");
    assert!(JOBS.remove(h).is_some());
}

/// A read inside a read on one thread (one hazard record) used to
/// overwrite the outer read's record and clear it: the outer read went
/// on unprotected. The inner one asks the table now.
// (A --cfg loom build's tables keep no mirror: `make loom` models it.)
#[cfg(not(loom))]
#[test]
fn a_read_inside_a_read_leaves_the_outer_one_protected() {
    let _records = records();
    let a = JOBS.insert(job());
    let b = JOBS.insert(job());
    let (i, _) = decode(1, a).unwrap();
    let inner = JOBS
        .read_fast(a, |_| {
            let inner = JOBS.read_fast(b, Job::id).outcome();
            assert!(fast::named(1, i), "the outer read lost its record");
            inner
        })
        .outcome();
    assert_eq!(inner, Some(Some(None)), "the inner read asks the table");
    assert_eq!(
        with_job_read(to_ptr(a), |_| with_job_read(to_ptr(b), Job::id)),
        Ok(JOBS
            .get(b)
            .map(|j| j.id())
            .ok_or(bgjob_result::InvalidHandle))
    );
    JOBS.remove(a);
    JOBS.remove(b);
}

/// A destroy of a handle from inside a lock-free read of it would wait
/// for its own thread's record for ever (holding the table's lock): it
/// fails loudly instead.
#[test]
fn a_destroy_inside_a_lock_free_read_of_it_panics_instead_of_hanging() {
    let _records = records();
    // A table of its own: the panic poisons its lock.
    let table: &'static Table<Job> =
        Box::leak(Box::new(Table::counted_mirrored(14, count_job_handle)));
    let h = table.insert(job());
    let r = std::panic::catch_unwind(|| table.read_fast(h, |_| table.remove(h)));
    assert!(r.is_err());
    let other = table.insert(job());
    assert!(
        table
            .read_fast(other, Job::id)
            .outcome()
            .is_some_and(|r| r.is_some())
    );
    table.remove(other);
}

/// A thread gives its hazard record back when it ends: more threads
/// than records, one after another, all read through the mirror.
#[test]
fn hazard_records_are_given_back_when_their_threads_end() {
    let _records = records();
    let j = job();
    let h = JOBS.insert(j.clone());
    for n in 0..fast::HAZARD_RECORDS + 44 {
        let r = std::thread::spawn(move || JOBS.read_fast(h, Job::id).outcome())
            .join()
            .unwrap();
        assert_eq!(r, Some(Some(j.id())), "thread {n} found no record");
    }
    JOBS.remove(h);
}

/// More threads reading at once than there are records: those with
/// none are told to ask the table, and getinfo's lookup still answers
/// (and refuses the handle once it is destroyed).
#[test]
fn readers_beyond_the_records_fall_back_to_the_table() {
    let _records = records();
    use std::sync::{Arc, Barrier};
    let j = job();
    let h = JOBS.insert(j.clone());
    let n = fast::HAZARD_RECORDS + 44;
    let all = Arc::new(Barrier::new(n + 1));
    let read = Arc::new(Barrier::new(n + 1));
    let destroyed = Arc::new(Barrier::new(n + 1));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (all, read, destroyed) = (all.clone(), read.clone(), destroyed.clone());
            std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    // Claims a record (while there are any) and keeps it.
                    let fast = JOBS.read_fast(h, Job::id).outcome();
                    all.wait();
                    let live = with_job_read(to_ptr(h), Job::id);
                    read.wait();
                    destroyed.wait();
                    let dead = with_job_read(to_ptr(h), Job::id);
                    (fast.is_none(), live, dead)
                })
                .unwrap()
        })
        .collect();
    all.wait();
    read.wait();
    JOBS.remove(h);
    destroyed.wait();
    let mut without = 0;
    for t in threads {
        let (none, live, dead) = t.join().unwrap();
        without += usize::from(none);
        assert_eq!(live, Ok(j.id()));
        assert_eq!(dead, Err(bgjob_result::InvalidHandle));
    }
    // All n threads were alive at once: at least 44 found no record.
    assert!(without >= 44, "{without} threads without a record");
}

/// The worker record names one job at a time, is put back as it was when the
/// worker returns — nested, or unwinding from a panic — and never answers
/// for another handle. Both of its answers (the `Job` for the general calls,
/// its shared state for the fast paths) name the same job: a fast path that
/// answered from another job's state would take that job's pause and cancel
/// for its own.
#[test]
fn the_worker_record_is_restored_nested_and_after_a_panic() {
    let (a, b) = (job(), job());
    let (ha, hb) = (JOBS.insert(a.clone()), JOBS.insert(b.clone()));
    let id = |h: usize| {
        let by_job = worker_job(to_ptr(h)).map(Job::id);
        let by_hot = worker_hot(to_ptr(h)).map(|i| i as *const JobHot);
        let same = match (by_job, by_hot) {
            (Some(x), Some(p)) => [&a, &b]
                .iter()
                .any(|j| j.id() == x && std::ptr::eq(j.hot(), p)),
            (None, None) => true,
            _ => false,
        };
        assert!(
            same,
            "handle {h:#x}: record's job {by_job:?}, its state {by_hot:?}"
        );
        by_job
    };
    assert_eq!((id(ha), id(hb)), (None, None));
    run_as_worker(ha, &a, || {
        assert_eq!((id(ha), id(hb)), (Some(a.id()), None));
        run_as_worker(hb, &b, || {
            assert_eq!((id(ha), id(hb)), (None, Some(b.id())));
        });
        assert_eq!((id(ha), id(hb)), (Some(a.id()), None));
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_as_worker(hb, &b, || panic!("worker panicked"));
        }));
        assert!(unwound.is_err());
        assert_eq!((id(ha), id(hb)), (Some(a.id()), None));
    });
    assert_eq!((id(ha), id(hb)), (None, None));
    // Another thread never sees this thread's record.
    run_as_worker(ha, &a, || {
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(worker_job(to_ptr(ha)).map(Job::id), None));
        });
    });
    JOBS.remove(ha);
    JOBS.remove(hb);
}

#[test]
fn worker_scope_is_the_fast_path_and_survives_removal() {
    let j = job();
    let h = JOBS.insert(j.clone());
    let scope = crate::core::job::WorkerScope::enter(&j);
    JOBS.remove(h);
    run_as_worker(h, &j, || {
        assert_eq!(with_job(to_ptr(h), |_, w| w), Ok(true));
    });
    assert_eq!(
        with_job(to_ptr(h), |_, w| w),
        Err(bgjob_result::InvalidHandle)
    );
    drop(scope);
    assert_eq!(
        with_job(to_ptr(h), |_, w| w),
        Err(bgjob_result::InvalidHandle)
    );
}

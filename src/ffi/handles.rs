//! The handle tables: C handles are `tag << 60 | generation << 32 | index + 1`,
//! never pointers. Looking up a NULL, destroyed, detached or made-up handle
//! fails cleanly instead of touching freed memory (mozilla ffi-support's
//! scheme), and the tag keeps a job handle from passing for a context handle or
//! the other way round.
//!
//! A stale handle never names another object, however long the process lives:
//! a slot whose generation has reached the 28-bit limit is retired (never
//! reused) instead of wrapping to a generation an old handle may still carry.
//! Freed slots are reused oldest first, so a slot's generation moves on only
//! once per pass over every free slot, and retirement is rare: it costs one
//! entry of a few bytes per 2^28 − 1 reuses of one slot.
//!
//! Every table adds itself to [`TABLES`], the one list of tables, the first time
//! it makes a handle: a table cannot be added and forgotten by the fork handling
//! (`super::fork`), which reaches the tables only through that list (this module
//! never calls the fork handling).
//!
//! A worker calls progress functions once per block, so the worker thread keeps
//! its own job in a thread-local while its callback runs: a lookup of that handle
//! from that thread touches no shared lock or counter. The thread-local holds a
//! reference, so the job stays alive for the whole callback even if the caller
//! detaches it meanwhile.

use super::{bgjob_job, bgjob_result};
use crate::core::{Context, Job};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[cfg(not(target_pointer_width = "64"))]
compile_error!("bgjob's handle encoding assumes 64-bit pointers");

enum Slot<T> {
    Free,
    Reserved,
    Live(T),
}

struct Entry<T> {
    generation: u32,
    slot: Slot<T>,
}

/// One table per handle type: `JOBS` for `bgjob_job *`, `CONTEXTS` for
/// `bgjob_context *`, `TXNS` for `bgjob_txn *`.
pub(crate) struct Table<T> {
    tag: u8,
    /// Told (under the table's write lock) when a slot starts (+1) or stops
    /// (−1) naming an object: the job table counts each job's handles.
    on_count: Option<fn(&T, isize)>,
    inner: RwLock<Inner<T>>,
    /// Set once the table is in the fork handling's list.
    registered: AtomicBool,
}

struct Inner<T> {
    entries: Vec<Entry<T>>,
    /// Free slots, reused oldest first (FIFO).
    free: VecDeque<u32>,
}

/// Each job counts the handles (slots) naming it: a job may have several
/// (`bgjob_job_ref`, `bgjob_job_lookup`), and only the last one's destroy or
/// detach acts on the job.
pub(crate) static JOBS: Table<Job> = Table::counted(1, count_job_handle);

fn count_job_handle(job: &Job, delta: isize) {
    let n = job.c_handles();
    if delta > 0 {
        n.fetch_add(1, Ordering::Relaxed);
    } else {
        n.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many handles name `job` (read under the table's lock to be exact).
pub(crate) fn job_handle_count(job: &Job) -> usize {
    job.c_handles().load(Ordering::Relaxed)
}
pub(crate) static CONTEXTS: Table<Context> = Table::new(2);
/// Tag 3 is `virJobPtr` (`super::virjob::VIRJOBS`): every table needs its own tag.
pub(crate) const VIRJOB_TAG: u8 = 3;
/// Tag 4: `bgjob_txn *`.
pub(crate) static TXNS: Table<crate::core::Txn> = Table::new(4);

/// Every handle table that has made a handle, in tag order (the order fork
/// takes their locks in).
static TABLES: Mutex<Vec<&'static dyn ForkTable>> = Mutex::new(Vec::new());

/// The list of tables, locked (for the fork handling, which holds it across
/// fork() so no table adds itself mid-fork).
pub(crate) fn tables() -> MutexGuard<'static, Vec<&'static dyn ForkTable>> {
    TABLES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds a handle table to [`TABLES`]. Called by the table itself before it
/// makes its first handle; a second call for the same table changes nothing.
fn register_table(table: &'static dyn ForkTable) {
    let mut t = tables();
    let known = t
        .iter()
        .any(|&x| std::ptr::addr_eq(x as *const dyn ForkTable, table as *const dyn ForkTable));
    if !known {
        t.push(table);
        t.sort_by_key(|x| x.tag());
    }
}

/// Generations use 28 bits; the 4 above them hold the table's tag.
const GENERATION_MASK: u32 = 0x0fff_ffff;

/// A freed slot gets its next generation, or is retired (`None`) when that
/// would wrap: handles of every earlier generation of it may still be held.
fn next_generation(generation: u32) -> Option<u32> {
    (generation < GENERATION_MASK).then_some(generation + 1)
}

impl<T> Inner<T> {
    /// The slot `i` no longer holds an object: its generation moves on so every
    /// handle made for it is dead, and it is queued for reuse unless retired.
    fn release(&mut self, i: u32) {
        let e = &mut self.entries[i as usize];
        e.slot = Slot::Free;
        match next_generation(e.generation) {
            Some(g) => {
                e.generation = g;
                self.free.push_back(i);
            }
            // Retired: a generation no handle can carry (decode masks to 28
            // bits, and 0 is never given out), so lookups of it always fail.
            None => e.generation = 0,
        }
    }
}

fn encode(tag: u8, index: u32, generation: u32) -> usize {
    ((tag as usize) << 60) | ((generation as usize) << 32) | (index as usize + 1)
}

fn decode(tag: u8, h: usize) -> Option<(usize, u32)> {
    let low = h & 0xffff_ffff;
    let generation = ((h >> 32) as u32) & GENERATION_MASK;
    (low != 0 && h >> 60 == tag as usize).then(|| (low - 1, generation))
}

/// The value C sees.
pub(crate) fn to_ptr<P>(h: usize) -> *mut P {
    std::ptr::without_provenance_mut(h)
}

impl<T: Clone> Table<T> {
    pub(crate) const fn new(tag: u8) -> Table<T> {
        Self::make(tag, None)
    }

    /// A table that tells `on_count` when a slot starts or stops naming an
    /// object.
    pub(crate) const fn counted(tag: u8, on_count: fn(&T, isize)) -> Table<T> {
        Self::make(tag, Some(on_count))
    }

    const fn make(tag: u8, on_count: Option<fn(&T, isize)>) -> Table<T> {
        Table {
            tag,
            on_count,
            inner: RwLock::new(Inner {
                entries: Vec::new(),
                free: VecDeque::new(),
            }),
            registered: AtomicBool::new(false),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner<T>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner<T>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves a handle for an object about to be made (a job's worker needs its
    /// handle before the job exists).
    pub(crate) fn reserve(&'static self) -> usize
    where
        T: Send + Sync + 'static,
    {
        self.ensure_listed();
        let mut t = self.write();
        let index = Self::take_slot(&mut t);
        let e = &mut t.entries[index as usize];
        e.slot = Slot::Reserved;
        encode(self.tag, index, e.generation)
    }

    fn ensure_listed(&'static self)
    where
        T: Send + Sync + 'static,
    {
        if !self.registered.load(Ordering::Acquire) {
            // Before this table's lock is taken: the fork handling takes the
            // list's lock and then the tables'.
            register_table(self);
            self.registered.store(true, Ordering::Release);
        }
    }

    /// A free slot's index (a new one if none is free).
    fn take_slot(t: &mut Inner<T>) -> u32 {
        match t.free.pop_front() {
            Some(i) => i,
            None => {
                // Below u32::MAX, so `index + 1` fits the handle's low 32 bits.
                let i = u32::try_from(t.entries.len())
                    .ok()
                    .filter(|&i| i < u32::MAX)
                    .expect("handle table full");
                t.entries.push(Entry {
                    generation: 1,
                    slot: Slot::Free,
                });
                i
            }
        }
    }

    /// Puts the object behind a reserved handle.
    pub(crate) fn fill(&self, h: usize, value: T) {
        let mut t = self.write();
        if let Some((i, g)) = decode(self.tag, h)
            && let Some(e) = t.entries.get_mut(i)
            && e.generation == g
            && matches!(e.slot, Slot::Reserved)
        {
            if let Some(f) = self.on_count {
                f(&value, 1);
            }
            e.slot = Slot::Live(value);
        }
    }

    /// A new handle for `value`.
    pub(crate) fn insert(&'static self, value: T) -> usize
    where
        T: Send + Sync + 'static,
    {
        let h = self.reserve();
        self.fill(h, value);
        h
    }

    /// Removes a live handle and returns its object; the handle and every copy
    /// of it are invalid from now on.
    pub(crate) fn remove(&self, h: usize) -> Option<T> {
        self.remove_if(h, |_| Ok(())).ok()
    }

    /// Removes the handle only if `check` agrees, under the table lock, so a check
    /// and the removal cannot be separated by another thread's destroy.
    pub(crate) fn remove_if(
        &self,
        h: usize,
        check: impl FnOnce(&T) -> Result<(), bgjob_result>,
    ) -> Result<T, bgjob_result> {
        let (i, g) = decode(self.tag, h).ok_or(bgjob_result::InvalidHandle)?;
        let mut t = self.write();
        let e = t
            .entries
            .get_mut(i)
            .filter(|e| e.generation == g)
            .ok_or(bgjob_result::InvalidHandle)?;
        match &e.slot {
            Slot::Live(v) => check(v)?,
            // A create in flight owns a reserved slot; a made-up handle that
            // happens to name it must not take it away.
            Slot::Reserved | Slot::Free => return Err(bgjob_result::InvalidHandle),
        }
        let Slot::Live(v) = std::mem::replace(&mut e.slot, Slot::Free) else {
            unreachable!("only live slots get here");
        };
        t.release(i as u32);
        if let Some(f) = self.on_count {
            f(&v, -1);
        }
        Ok(v)
    }

    /// A new handle (its own slot) for the object behind `h`, made under one
    /// hold of the write lock, so `h` cannot be removed in between.
    pub(crate) fn share(&'static self, h: usize) -> Option<usize>
    where
        T: Send + Sync + 'static,
    {
        let (i, g) = decode(self.tag, h)?;
        let value = {
            let t = self.read();
            match t.entries.get(i) {
                Some(Entry {
                    generation,
                    slot: Slot::Live(v),
                }) if *generation == g => v.clone(),
                _ => return None,
            }
        };
        self.insert_if(value, |_, t| {
            matches!(
                t.entries.get(i),
                Some(Entry { generation, slot: Slot::Live(_) }) if *generation == g
            )
        })
    }

    /// A new handle for `value` if `check` (run under the write lock, with the
    /// table as it is) agrees.
    fn insert_if(
        &'static self,
        value: T,
        check: impl FnOnce(&T, &Inner<T>) -> bool,
    ) -> Option<usize>
    where
        T: Send + Sync + 'static,
    {
        self.ensure_listed();
        let mut t = self.write();
        if !check(&value, &t) {
            return None;
        }
        let index = Self::take_slot(&mut t);
        let e = &mut t.entries[index as usize];
        if let Some(f) = self.on_count {
            f(&value, 1);
        }
        e.slot = Slot::Live(value);
        Some(encode(self.tag, index, e.generation))
    }

    /// A new handle for `value` if `check` (run under the write lock) agrees.
    pub(crate) fn insert_checked(
        &'static self,
        value: T,
        check: impl FnOnce(&T) -> bool,
    ) -> Option<usize>
    where
        T: Send + Sync + 'static,
    {
        self.insert_if(value, |v, _| check(v))
    }

    /// A clone of the object behind `h`.
    pub(crate) fn get(&self, h: usize) -> Option<T> {
        let (i, g) = decode(self.tag, h)?;
        let t = self.read();
        match t.entries.get(i) {
            Some(Entry {
                generation,
                slot: Slot::Live(v),
            }) if *generation == g => Some(v.clone()),
            _ => None,
        }
    }
}

/// What the fork handling needs of a table, whatever its object type.
pub(crate) trait ForkTable: Sync {
    /// The table's tag: the fork handling takes table locks in tag order.
    fn tag(&self) -> u8;
    /// Takes the table's write lock, to hold across fork().
    fn hold_for_fork(&'static self) -> Box<dyn HeldTable>;
}

/// A table's write lock, held across fork(); dropping it releases the lock.
pub(crate) trait HeldTable {
    /// In the child: every handle of the parent becomes invalid (its slot's
    /// generation moves on) and its object is forgotten, never dropped or
    /// touched: a parent thread may have held its lock at the fork. The lock
    /// is released.
    fn forget_all(self: Box<Self>);
}

impl<T: Clone + Send + Sync + 'static> ForkTable for Table<T> {
    fn tag(&self) -> u8 {
        self.tag
    }

    fn hold_for_fork(&'static self) -> Box<dyn HeldTable> {
        Box::new(TableHold(self.write()))
    }
}

struct TableHold<T: 'static>(RwLockWriteGuard<'static, Inner<T>>);

impl<T> HeldTable for TableHold<T> {
    fn forget_all(mut self: Box<Self>) {
        let t = &mut *self.0;
        for i in 0..t.entries.len() {
            // A free slot (queued or retired) names no live object: its
            // generation moved on when it was freed.
            match std::mem::replace(&mut t.entries[i].slot, Slot::Free) {
                Slot::Free => continue,
                Slot::Reserved => {}
                Slot::Live(v) => std::mem::forget(v),
            }
            t.release(i as u32);
        }
    }
}

/// In a forked child: if fork() was called from a worker, this thread's job is
/// the parent's, which does not run here; core forgets it so the fast path
/// cannot reach it.
pub(crate) fn forget_current_after_fork() {
    crate::core::job::forget_worker_thread_after_fork();
}

/// Runs `f` with the handle a callback bgjob makes (completion,
/// commit/abort/clean) gets: the creator's handle `h` while it still names
/// the job, or while no other reference does (as before references existed:
/// the creator destroyed or detached it, and the callback gets that value);
/// else — the creator released theirs while another owner holds one — a
/// handle made for the call and released after it (another owner's handle is
/// never lent: its owner may release it meanwhile).
pub(crate) fn with_call_handle(job: &Job, h: usize, f: impl FnOnce(usize)) {
    if JOBS.get(h).is_some_and(|j| j == *job) || job_handle_count(job) == 0 {
        return f(h);
    }
    match JOBS.insert_checked(job.clone(), |_| true) {
        Some(temp) => {
            f(temp);
            // The callback may have destroyed it itself.
            JOBS.remove(temp);
        }
        None => f(h),
    }
}

/// Runs `f` with the job behind `p`. `on_worker` tells `f` whether the caller is
/// that job's own worker thread (whose progress calls park while paused).
pub(crate) fn with_job<R>(
    p: *mut bgjob_job,
    f: impl FnOnce(&Job, bool) -> R,
) -> Result<R, bgjob_result> {
    let h = p.addr();
    // On the job's own worker thread (tagged with its handle) no table lookup.
    let mut f = Some(f);
    if let Some(Some(r)) =
        crate::core::job::with_tagged_worker(h, |job| f.take().map(|f| f(job, true)))
    {
        return Ok(r);
    }
    let job = JOBS.get(h).ok_or(bgjob_result::InvalidHandle)?;
    let f = f.ok_or(bgjob_result::Panic)?;
    Ok(f(&job, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job::builder().create(|_| Ok(()))
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

    #[test]
    fn worker_scope_is_the_fast_path_and_survives_removal() {
        let j = job();
        let h = JOBS.insert(j.clone());
        let scope = crate::core::job::WorkerScope::enter(&j);
        crate::core::job::tag_worker_thread(h);
        JOBS.remove(h);
        assert_eq!(with_job(to_ptr(h), |_, w| w), Ok(true));
        drop(scope);
        assert_eq!(
            with_job(to_ptr(h), |_, w| w),
            Err(bgjob_result::InvalidHandle)
        );
    }
}

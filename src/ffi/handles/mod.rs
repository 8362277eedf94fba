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
//! its own job in a thread-local while its callback runs ([`run_as_worker`]): a
//! lookup of that handle from that thread touches no shared lock or counter.
//! The thread-local points at the reference the worker's own frame holds, so
//! the job stays alive for the whole callback even if the caller detaches it
//! meanwhile.

use super::{bgjob_job, bgjob_result};
use crate::core::{Context, Job, JobHot};
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
    /// The lock-free copy of the live slots ([`fast`]), if the table keeps
    /// one (the job table: getinfo reads through it).
    mirror: Option<fast::Mirror<T>>,
}

struct Inner<T> {
    entries: Vec<Entry<T>>,
    /// Free slots, reused oldest first (FIFO).
    free: VecDeque<u32>,
}

/// Each job counts the handles (slots) naming it: a job may have several
/// (`bgjob_job_ref`, `bgjob_job_lookup`), and only the last one's destroy or
/// detach acts on the job.
pub(crate) static JOBS: Table<Job> = Table::counted_mirrored(1, count_job_handle);

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
        Self::make(tag, None, None)
    }

    /// A table that tells `on_count` when a slot starts or stops naming an
    /// object, and keeps a lock-free mirror for [`Table::read_fast`].
    const fn counted_mirrored(tag: u8, on_count: fn(&T, isize)) -> Table<T> {
        Self::make(tag, Some(on_count), Some(fast::Mirror::new()))
    }

    const fn make(
        tag: u8,
        on_count: Option<fn(&T, isize)>,
        mirror: Option<fast::Mirror<T>>,
    ) -> Table<T> {
        Table {
            tag,
            on_count,
            inner: RwLock::new(Inner {
                entries: Vec::new(),
                free: VecDeque::new(),
            }),
            registered: AtomicBool::new(false),
            mirror,
        }
    }

    /// Tells the mirror slot `i` now names `value` under `generation`.
    fn mirror_live(&self, i: u32, generation: u32, value: &T) {
        if let Some(m) = &self.mirror {
            m.set_live_here(i as usize, generation, value.clone());
        }
    }

    /// Tells the mirror slot `i` names nothing any more; returns the
    /// mirror's copy, to be dropped with no table lock held.
    fn mirror_dead(&self, i: u32) -> Option<T> {
        self.mirror
            .as_ref()
            .and_then(|m| m.set_dead_here(self.tag, i as usize))
    }

    /// Runs `f` on the object behind `h` with no lock and no reference
    /// count, through the mirror: [`fast::Fast::Read`] with its result;
    /// [`fast::Fast::Dead`] for a handle that names nothing there;
    /// [`fast::Fast::Ask`] when the mirror cannot answer (no mirror, a slot
    /// beyond it, no hazard record for this thread, or a read already in
    /// progress on this thread — `f` reading again): ask the table. Both
    /// give `f` back unrun.
    /// `f` must be short (it runs while this thread's hazard record names
    /// the slot, and a destroy of it waits, under the table's lock) and must
    /// not destroy the handle it reads (that panics: it could never end).
    /// A panic in `f` clears the record.
    #[inline]
    pub(crate) fn read_fast<R, F: FnOnce(&T) -> R>(&self, h: usize, f: F) -> fast::Fast<R, F> {
        let Some(m) = &self.mirror else {
            return fast::Fast::Ask(f);
        };
        let Some((i, g)) = decode(self.tag, h) else {
            return fast::Fast::Dead(f);
        };
        m.read_here(self.tag, i, g, f)
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
            self.mirror_live(i as u32, g, &value);
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
        // Before the generation moves on: the mirror's slot is dead (and no
        // reader is inside it) before the table's can be reused.
        let copy = self.mirror_dead(i as u32);
        t.release(i as u32);
        if let Some(f) = self.on_count {
            f(&v, -1);
        }
        drop(t);
        drop(copy);
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
        self.mirror_live(index, e.generation, &value);
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
        Box::new(TableHold(self.write(), self))
    }
}

struct TableHold<T: 'static>(RwLockWriteGuard<'static, Inner<T>>, &'static Table<T>);

impl<T> HeldTable for TableHold<T> {
    fn forget_all(mut self: Box<Self>) {
        if let Some(m) = &self.1.mirror {
            // No reader runs in the child (only the forking thread does,
            // and it is not inside a read): the parent's readers' hazard
            // records and the mirror's copies are forgotten.
            m.forget_all_after_fork();
        }
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
    record::set(NO_WORKER);
    crate::core::job::forget_worker_thread_after_fork();
}

/// The handle of the job whose C worker runs on this thread, that job
/// (borrowed from the worker's frame, see [`run_as_worker`]) and its shared
/// state ([`Job::hot`], for the fast paths: one load fewer); `NO_WORKER`
/// elsewhere. Plain words with no destructor, so a read is the thread-local's
/// address, a load and a compare: the one read a progress call makes.
type WorkerRecord = (usize, *const Job, *const JobHot);
const NO_WORKER: WorkerRecord = (0, std::ptr::null(), std::ptr::null());

/// Where the record lives: three words of `sys::tls`, as cheap a
/// thread-local as there is (no `__tls_get_addr` call on x86-64 Linux).
mod record {
    use super::{Job, JobHot, WorkerRecord};
    use crate::sys::tls::{self, Word};

    #[inline(always)]
    pub(super) fn get() -> WorkerRecord {
        let words = tls::this_thread();
        (
            words.read(Word::WorkerHandle),
            words.read(Word::WorkerJob) as *const Job,
            words.read(Word::WorkerHot) as *const JobHot,
        )
    }

    /// The handle and the shared state only (what the fast paths read).
    #[inline(always)]
    pub(super) fn get_hot() -> (usize, *const JobHot) {
        let words = tls::this_thread();
        (
            words.read(Word::WorkerHandle),
            words.read(Word::WorkerHot) as *const JobHot,
        )
    }

    pub(super) fn set(r: WorkerRecord) {
        let words = tls::this_thread();
        words.write(Word::WorkerHandle, r.0);
        words.write(Word::WorkerJob, r.1 as usize);
        words.write(Word::WorkerHot, r.2 as usize);
    }
}

/// Puts the record back as it was, also when the worker unwinds.
struct WorkerRecordGuard(WorkerRecord);

impl Drop for WorkerRecordGuard {
    fn drop(&mut self) {
        record::set(self.0);
    }
}

/// Runs `f` (a job's C worker) with this thread recorded as the worker of
/// `job`, whose handle is `h`: until `f` returns, [`with_job`],
/// [`worker_job`] and [`worker_hot`] on `h` from this thread take the fast
/// path. The record points at `job`, which outlives the call; it is restored
/// afterwards.
pub(crate) fn run_as_worker<R>(h: usize, job: &Job, f: impl FnOnce() -> R) -> R {
    let _restore = WorkerRecordGuard(record::get());
    record::set((h, job as *const Job, job.hot() as *const JobHot));
    f()
}

/// The job handle `p` names when the caller is that job's C worker (inside
/// [`run_as_worker`]); `None` otherwise. No lock, no reference count.
#[inline(always)]
pub(crate) fn worker_job<'a>(p: *mut bgjob_job) -> Option<&'a Job> {
    let (h, job, _) = record::get();
    if h == p.addr() && h != 0 {
        // SAFETY: set by `run_as_worker` on this thread to a job its caller
        // holds for the whole call, and cleared (restored) before that call
        // returns; this read is inside it, on this thread. The reference is
        // used only within the export that asked (never kept).
        Some(unsafe { &*job })
    } else {
        None
    }
}

/// [`worker_job`]'s shared state, for the worker's fast paths.
#[inline(always)]
pub(crate) fn worker_hot<'a>(p: *mut bgjob_job) -> Option<&'a JobHot> {
    let (h, hot) = record::get_hot();
    if h == p.addr() && h != 0 {
        // SAFETY: as in `worker_job`: the job it belongs to is held by the
        // frame of the `run_as_worker` call this thread is inside.
        Some(unsafe { &*hot })
    } else {
        None
    }
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

/// Runs `f` on the job behind `p` with no lock and no reference count (the
/// job table's lock-free mirror, [`fast`]), else as [`with_job`] does. For
/// short reads that look no handle up (getinfo).
#[inline]
pub(crate) fn with_job_read<R>(
    p: *mut bgjob_job,
    f: impl FnOnce(&Job) -> R,
) -> Result<R, bgjob_result> {
    match JOBS.read_fast(p.addr(), f) {
        fast::Fast::Read(r) => Ok(r),
        // Not live in the mirror, or the mirror cannot answer: the table
        // decides (and a worker's own handle stays readable on its thread
        // after a detach).
        fast::Fast::Dead(f) | fast::Fast::Ask(f) => with_job_slow(p, f),
    }
}

/// [`with_job_read`]'s way when the mirror did not answer: out of line, so
/// the hot path stays small.
#[cold]
#[inline(never)]
fn with_job_slow<R>(p: *mut bgjob_job, f: impl FnOnce(&Job) -> R) -> Result<R, bgjob_result> {
    with_job(p, |j, _| f(j))
}

/// Runs `f` with the job behind `p`. `on_worker` tells `f` whether the caller is
/// that job's own worker thread (whose progress calls park while paused).
pub(crate) fn with_job<R>(
    p: *mut bgjob_job,
    f: impl FnOnce(&Job, bool) -> R,
) -> Result<R, bgjob_result> {
    // On the job's own worker thread no table lookup.
    if let Some(job) = worker_job(p) {
        return Ok(f(job, true));
    }
    let job = JOBS.get(p.addr()).ok_or(bgjob_result::InvalidHandle)?;
    Ok(f(&job, false))
}

/// The lock-free mirror of a handle table, for getinfo: a handle lookup that
/// takes no lock and no reference count.
///
/// The mirror's slots live in chunks that are never freed, so a reader can
/// always touch the slot a handle names, whatever became of the object. A
/// slot holds a word (`generation << 1 | live`) and, while live, a copy of
/// the table's value (a clone of the job: the mirror's own reference). Every
/// change is made under the table's write lock, in the same hold as the
/// table's own change.
///
/// A reader announces the slot it is about to read in its thread's hazard
/// record, then (after a full fence) checks that the slot is live with the
/// handle's generation, and only then reads the copy. A removal marks the
/// slot dead, and (after a full fence) waits until no hazard record names
/// the slot before it takes the copy out. By the two fences, either the
/// reader sees the slot dead (and touches nothing) or the removal sees the
/// reader's record (and waits for it): a destroyed handle is refused, and a
/// job is never freed under a reader. Readers never wait; a removal waits at
/// most for the reads in flight on that slot.
///
/// Hazard records are a fixed array of cache lines, one claimed per reading
/// thread for its life (released by a thread-local destructor). A thread
/// that finds none free, or a handle beyond the mirror, is told to ask the
/// table (the locked path), and so is a read nested in a read on one thread
/// (its one record already names the outer slot). The record is cleared when
/// the read ends, also by a panic. `make loom` checks this protocol's code
/// (`loom_tests` below: read vs destroy and reuse, a nested read, records
/// running out, and a canary without the reader's fence that must fail).
#[cfg_attr(loom, allow(dead_code))]
pub(crate) mod fast;

#[cfg(test)]
mod tests;

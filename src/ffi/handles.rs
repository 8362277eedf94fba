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
    /// count, through the mirror: `Some(Some(r))`; `Some(None)` for a handle
    /// that names nothing; `None` when the mirror cannot answer (no mirror,
    /// a slot beyond it, no hazard record for this thread, or a read already
    /// in progress on this thread — `f` reading again): ask the table.
    /// `f` must be short (it runs while this thread's hazard record names
    /// the slot, and a destroy of it waits, under the table's lock) and must
    /// not destroy the handle it reads (that panics: it could never end).
    /// A panic in `f` clears the record.
    pub(crate) fn read_fast<R>(&self, h: usize, f: impl FnOnce(&T) -> R) -> Option<Option<R>> {
        let m = self.mirror.as_ref()?;
        let Some((i, g)) = decode(self.tag, h) else {
            return Some(None);
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

/// Runs `f` on the job behind `p` with no lock and no reference count (the
/// job table's lock-free mirror, [`fast`]), else as [`with_job`] does. For
/// short reads that look no handle up (getinfo).
pub(crate) fn with_job_read<R>(
    p: *mut bgjob_job,
    f: impl FnOnce(&Job) -> R,
) -> Result<R, bgjob_result> {
    let mut f = Some(f);
    if let Some(Some(Some(r))) = JOBS.read_fast(p.addr(), |j| f.take().map(|f| f(j))) {
        return Ok(r);
    }
    // Not live in the mirror, or the mirror cannot answer: the table decides
    // (and a worker's own handle stays readable on its thread after a detach).
    let f = f.ok_or(bgjob_result::Panic)?;
    with_job(p, |j, _| f(j))
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
pub(crate) mod fast {
    // Under `--cfg loom` the protocol's atomics and the value cells are
    // loom's, so `make loom` checks this very code (`loom_tests` below).
    #[cfg(loom)]
    use loom::cell::UnsafeCell;
    #[cfg(loom)]
    use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
    use std::sync::atomic::AtomicPtr;
    #[cfg(not(loom))]
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};

    /// std's cell with loom's access API (loom's tracks every access and
    /// fails a model on a read or write not ordered with a write).
    #[cfg(not(loom))]
    struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> UnsafeCell<T> {
        fn new(v: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(v))
        }
        fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
        fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// Slots per chunk, and chunks: 4 Mi slots mirrored (a loom model
    /// makes a chunk of its own: a small one).
    const CHUNK: usize = if cfg!(loom) { 2 } else { 4096 };
    const DIR: usize = 1024;

    struct Slot<T> {
        /// `generation << 1 | 1` while live; 0 while dead.
        word: AtomicU64,
        /// Written only under the table's write lock, while the slot is dead
        /// and no hazard record names it; read only by a reader whose hazard
        /// record names it and who saw it live afterwards.
        value: UnsafeCell<Option<T>>,
    }

    pub(crate) struct Mirror<T> {
        dir: [AtomicPtr<Slot<T>>; DIR],
    }

    // SAFETY: the values are shared between threads only as the protocol in
    // the module docs says (written under the table's lock while no reader
    // can see them, read as `&T` by readers): T must be Send + Sync.
    unsafe impl<T: Send + Sync> Sync for Mirror<T> {}

    fn live(generation: u32) -> u64 {
        u64::from(generation) << 1 | 1
    }

    /// Clears a hazard record when a read ends, also by a panic in `f`: a
    /// record left naming a slot would make the slot's destroy wait forever
    /// under the table's write lock.
    struct Unpublish<'a>(&'a AtomicUsize);

    impl Drop for Unpublish<'_> {
        fn drop(&mut self) {
            self.0.store(0, Ordering::Release);
        }
    }

    impl<T> Mirror<T> {
        pub(crate) const fn new() -> Mirror<T> {
            Mirror {
                dir: [const { AtomicPtr::new(std::ptr::null_mut()) }; DIR],
            }
        }

        /// The slot `i`, if its chunk exists.
        fn slot(&self, i: usize) -> Option<&Slot<T>> {
            let chunk = self.dir.get(i / CHUNK)?.load(Ordering::Acquire);
            // SAFETY: a non-null chunk is a leaked array of CHUNK slots,
            // never freed.
            (!chunk.is_null()).then(|| unsafe { &*chunk.add(i % CHUNK) })
        }

        /// The slot `i`, its chunk made if needed. Under the table's write
        /// lock. `None` beyond the mirror.
        fn slot_or_make(&self, i: usize) -> Option<&Slot<T>> {
            let d = self.dir.get(i / CHUNK)?;
            if d.load(Ordering::Acquire).is_null() {
                let chunk: Box<[Slot<T>]> = (0..CHUNK)
                    .map(|_| Slot {
                        word: AtomicU64::new(0),
                        value: UnsafeCell::new(None),
                    })
                    .collect();
                // Never freed: readers may touch any slot at any time.
                let p = Box::leak(chunk).as_mut_ptr();
                d.store(p, Ordering::Release);
            }
            self.slot(i)
        }

        /// Slot `i` now names `value` under `generation` (table write lock
        /// held; the slot is dead and unread, see [`Mirror::set_dead`]).
        pub(crate) fn set_live(&self, i: usize, generation: u32, value: T) {
            let Some(s) = self.slot_or_make(i) else {
                return;
            };
            // SAFETY: dead, and no reader reads a dead slot's value (module
            // docs); writers are serialised by the table's lock.
            s.value.with_mut(|v| unsafe { *v = Some(value) });
            s.word.store(live(generation), Ordering::Release);
        }

        /// Slot `i` names nothing any more: marked dead, and once no reader
        /// is inside it, its value is taken out (to be dropped by the caller
        /// with no lock held). Table write lock held. `own` is the calling
        /// thread's hazard record, if it has one.
        pub(crate) fn set_dead(
            &self,
            hazards: &Hazards,
            own: Option<&Hazard>,
            tag: u8,
            i: usize,
        ) -> Option<T> {
            let s = self.slot(i)?;
            s.word.store(0, Ordering::Relaxed);
            // Pairs with the reader's fence (store-load: the dead mark
            // before the scan, the reader's record before its re-check).
            fence(Ordering::SeqCst);
            hazards.wait_unnamed(hazard_key(tag, i), own);
            // SAFETY: dead, and no hazard record names it: no reader reads
            // the value now or will (a later one sees it dead).
            s.value.with_mut(|v| unsafe { (*v).take() })
        }

        /// Runs `f` on the value handle (`i`, `generation`) names; see
        /// [`super::Table::read_fast`]. `mine` gives this thread's hazard
        /// record (claiming it on first use), `None` if it has none.
        pub(crate) fn read<'h, R>(
            &self,
            mine: impl FnOnce() -> Option<&'h Hazard>,
            tag: u8,
            i: usize,
            generation: u32,
            f: impl FnOnce(&T) -> R,
        ) -> Option<Option<R>> {
            if i / CHUNK >= DIR {
                return None;
            }
            let Some(s) = self.slot(i) else {
                // No chunk: no slot in it was ever live.
                return Some(None);
            };
            let want = live(generation);
            if s.word.load(Ordering::Relaxed) != want {
                return Some(None);
            }
            let hazard = mine()?;
            // A read inside a read on this thread (from `f`): the one record
            // names the outer slot, and overwriting it (then clearing it)
            // would leave the outer read unprotected. Ask the table.
            if hazard.slot.load(Ordering::Relaxed) != 0 {
                return None;
            }
            hazard.slot.store(hazard_key(tag, i), Ordering::Relaxed);
            let _unpublish = Unpublish(&hazard.slot);
            // Pairs with the destroyer's fence: either it sees this record,
            // or the re-check below sees its dead mark.
            fence(Ordering::SeqCst);
            if s.word.load(Ordering::Acquire) != want {
                return Some(None);
            }
            // SAFETY: our hazard record names the slot and the slot was live
            // with our generation after it was published: its value stays
            // until we clear the record (module docs).
            Some(s.value.with(|v| unsafe { &*v }.as_ref().map(f)))
        }

        /// In a forked child: every slot dead, its value forgotten (never
        /// dropped: it belongs to the parent's threads), every hazard record
        /// cleared (their threads do not exist here).
        pub(crate) fn forget_all_after_fork(&self) {
            for d in &self.dir {
                let chunk = d.load(Ordering::Acquire);
                if chunk.is_null() {
                    continue;
                }
                for k in 0..CHUNK {
                    // SAFETY: a leaked chunk of CHUNK slots; only this thread
                    // runs in the child.
                    let s = unsafe { &*chunk.add(k) };
                    s.word.store(0, Ordering::Relaxed);
                    // SAFETY: as above: no reader exists.
                    std::mem::forget(s.value.with_mut(|v| unsafe { (*v).take() }));
                }
            }
            #[cfg(not(loom))]
            {
                HAZARDS.forget_all_after_fork();
                MINE.set(0);
            }
        }
    }

    /// The process's table of mirrors' readers (not under loom: a model
    /// makes its own [`Hazards`]).
    #[cfg(not(loom))]
    impl<T> Mirror<T> {
        /// [`Mirror::read`] with this thread's record.
        pub(crate) fn read_here<R>(
            &self,
            tag: u8,
            i: usize,
            generation: u32,
            f: impl FnOnce(&T) -> R,
        ) -> Option<Option<R>> {
            self.read(Hazard::mine, tag, i, generation, f)
        }

        /// [`Mirror::set_dead`] from this thread.
        pub(crate) fn set_dead_here(&self, tag: u8, i: usize) -> Option<T> {
            self.set_dead(&HAZARDS, Hazard::current(), tag, i)
        }

        /// [`Mirror::set_live`].
        pub(crate) fn set_live_here(&self, i: usize, generation: u32, value: T) {
            self.set_live(i, generation, value);
        }
    }

    /// A `--cfg loom` build: the process's tables keep no mirror (loom's
    /// atomics exist only inside a model); getinfo asks the table.
    #[cfg(loom)]
    impl<T> Mirror<T> {
        pub(crate) fn read_here<R>(
            &self,
            _tag: u8,
            _i: usize,
            _generation: u32,
            _f: impl FnOnce(&T) -> R,
        ) -> Option<Option<R>> {
            None
        }

        pub(crate) fn set_dead_here(&self, _tag: u8, _i: usize) -> Option<T> {
            None
        }

        pub(crate) fn set_live_here(&self, _i: usize, _generation: u32, value: T) {
            drop(value);
        }
    }

    fn hazard_key(tag: u8, i: usize) -> usize {
        (usize::from(tag) << 60) | (i + 1)
    }

    /// One reading thread's hazard record, on a cache line of its own.
    #[repr(align(64))]
    pub(crate) struct Hazard {
        /// The mirror slot this thread is reading (`hazard_key`), or 0.
        slot: AtomicUsize,
        owned: AtomicBool,
    }

    pub(crate) const HAZARD_RECORDS: usize = if cfg!(loom) { 2 } else { 256 };

    /// The hazard records of every mirror's readers.
    pub(crate) struct Hazards {
        records: [Hazard; HAZARD_RECORDS],
        /// Records ever claimed are below this: a removal scans only those.
        high: AtomicUsize,
    }

    impl Hazards {
        #[cfg(not(loom))]
        const fn new() -> Hazards {
            Hazards {
                records: [const {
                    Hazard {
                        slot: AtomicUsize::new(0),
                        owned: AtomicBool::new(false),
                    }
                }; HAZARD_RECORDS],
                high: AtomicUsize::new(0),
            }
        }

        #[cfg(loom)]
        fn new() -> Hazards {
            Hazards {
                records: std::array::from_fn(|_| Hazard {
                    slot: AtomicUsize::new(0),
                    owned: AtomicBool::new(false),
                }),
                high: AtomicUsize::new(0),
            }
        }

        /// A free record's index, now owned by the caller; `None` when
        /// every record is taken.
        fn claim(&self) -> Option<usize> {
            let k = self.records.iter().position(|h| {
                h.owned
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            })?;
            // Before the record's first publish (and so before that
            // publish's fence): a removal that misses this misses the
            // publish too, and then the reader sees the dead mark.
            self.high.fetch_max(k + 1, Ordering::AcqRel);
            Some(k)
        }

        /// Gives record `k` back (its thread is ending, not inside a read).
        fn give_back(&self, k: usize) {
            self.records[k].slot.store(0, Ordering::Relaxed);
            self.records[k].owned.store(false, Ordering::Release);
        }

        /// Waits until no hazard record names `key` (after the caller's
        /// full fence). Readers hold a record for the length of one short
        /// read. `own` (the caller's record) naming it is a destroy from
        /// inside a read of the same slot on this thread: waiting would
        /// never end, and going on would free the value under that read.
        fn wait_unnamed(&self, key: usize, own: Option<&Hazard>) {
            if own.is_some_and(|o| o.slot.load(Ordering::Relaxed) == key) {
                panic!("a handle destroyed from inside a lock-free read of it");
            }
            let high = self.high.load(Ordering::Acquire);
            for h in &self.records[..high] {
                let mut spins = 0u32;
                while h.slot.load(Ordering::Acquire) == key {
                    crate::core::atomic::backoff(&mut spins);
                }
            }
        }

        /// Whether a record names mirror slot `i` of table `tag`.
        #[cfg(test)]
        fn named(&self, tag: u8, i: usize) -> bool {
            let key = hazard_key(tag, i);
            self.records
                .iter()
                .any(|h| h.slot.load(Ordering::Relaxed) == key)
        }

        #[cfg(not(loom))]
        fn forget_all_after_fork(&self) {
            for h in &self.records {
                h.slot.store(0, Ordering::Relaxed);
                h.owned.store(false, Ordering::Relaxed);
            }
            self.high.store(0, Ordering::Relaxed);
        }
    }

    #[cfg(not(loom))]
    static HAZARDS: Hazards = Hazards::new();

    #[cfg(not(loom))]
    thread_local! {
        /// This thread's record, index + 1 (0: none yet).
        static MINE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// Releases the record when the thread ends.
        static RELEASE: Release = const { Release };
    }

    #[cfg(not(loom))]
    struct Release;

    #[cfg(not(loom))]
    impl Drop for Release {
        fn drop(&mut self) {
            let k = MINE.try_with(|m| m.replace(0)).unwrap_or(0);
            if k != 0 {
                HAZARDS.give_back(k - 1);
            }
        }
    }

    #[cfg(not(loom))]
    impl Hazard {
        /// This thread's record, claimed on first use; `None` when every
        /// record is taken or the thread is ending.
        fn mine() -> Option<&'static Hazard> {
            if let Some(h) = Hazard::current() {
                return Some(h);
            }
            // Registers the destructor that gives the record back.
            RELEASE.try_with(|_| ()).ok()?;
            let k = HAZARDS.claim()?;
            MINE.set(k + 1);
            Some(&HAZARDS.records[k])
        }

        /// This thread's record if it has claimed one.
        fn current() -> Option<&'static Hazard> {
            let k = MINE.try_with(std::cell::Cell::get).ok()?;
            (k != 0).then(|| &HAZARDS.records[k - 1])
        }
    }

    /// Whether a hazard record names mirror slot `i` of table `tag`.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn named(tag: u8, i: usize) -> bool {
        HAZARDS.named(tag, i)
    }

    #[cfg(loom)]
    /// The protocol under loom: a reader of slot 0 (generation 1) against a
    /// destroy (dead mark, wait, take out, drop) and a reuse of the slot
    /// under generation 2. A value's drop sets its `freed` flag, which the
    /// reader checks inside `f`; loom's cell also fails any read of the
    /// value not ordered with the take-out. The reader must get the live
    /// value or `None`, never a freed one or the next generation's.
    /// Readers run on spawned threads and the destroyer on the model's main
    /// thread (see core/progress.rs on tokio-rs/loom#392).
    /// `canary_catches_a_missing_fence` runs a copy of the read without its
    /// fence, and must fail.
    #[cfg(test)]
    mod loom_tests {
        use super::*;
        use loom::sync::Arc;
        use loom::thread;
        use std::sync::Mutex as StdMutex;
        use std::sync::atomic::AtomicBool as StdBool;
        use std::sync::atomic::AtomicUsize as StdCount;
        use std::sync::atomic::Ordering::SeqCst;

        const TAG: u8 = 1;

        struct Val {
            id: u32,
            freed: std::sync::Arc<StdBool>,
        }

        impl Drop for Val {
            fn drop(&mut self) {
                self.freed.store(true, SeqCst);
            }
        }

        fn val(id: u32) -> Val {
            Val {
                id,
                freed: std::sync::Arc::new(StdBool::new(false)),
            }
        }

        fn use_val(v: &Val) -> u32 {
            assert!(!v.freed.load(SeqCst), "read a freed value");
            v.id
        }

        static RUNS: StdCount = StdCount::new(0);
        // (cfg(test) again for `ffi::fork`'s scan of process-wide locks.)
        #[cfg(test)]
        static SEEN: StdMutex<Vec<&'static str>> = StdMutex::new(Vec::new());

        fn note(o: &'static str) {
            let mut s = SEEN.lock().unwrap();
            if !s.contains(&o) {
                s.push(o);
            }
        }

        /// Every interleaving within the preemption bound (3 unless
        /// LOOM_MAX_PREEMPTIONS says); returns the outcomes reached.
        fn explore(name: &str, f: impl Fn() + Sync + Send + 'static) -> Vec<&'static str> {
            RUNS.store(0, SeqCst);
            SEEN.lock().unwrap().clear();
            let mut b = loom::model::Builder::new();
            if b.preemption_bound.is_none() {
                b.preemption_bound = Some(3);
            }
            b.check(move || {
                RUNS.fetch_add(1, SeqCst);
                f();
            });
            let n = RUNS.load(SeqCst);
            println!("loom: {name}: {n} executions explored");
            assert!(n > 1, "{name}: loom explored a single execution");
            SEEN.lock().unwrap().clone()
        }

        fn record(h: &Hazards) -> Option<&Hazard> {
            h.claim().map(|k| &h.records[k])
        }

        /// Destroy slot 0 and drop its value, then reuse it (generation 2).
        fn destroy_and_reuse(m: &Mirror<Val>, hz: &Hazards) {
            let old = m.set_dead(hz, None, TAG, 0);
            assert_eq!(old.as_ref().map(|v| v.id), Some(1));
            drop(old);
            m.set_live(0, 2, val(2));
        }

        #[test]
        fn a_reader_never_reads_a_freed_or_reused_value() {
            let seen = explore("mirror: read vs destroy and reuse", || {
                let m = Arc::new(Mirror::<Val>::new());
                let hz = Arc::new(Hazards::new());
                m.set_live(0, 1, val(1));
                let reader = {
                    let (m, hz) = (m.clone(), hz.clone());
                    thread::spawn(move || {
                        let r = m.read(|| record(&hz), TAG, 0, 1, use_val);
                        match r {
                            Some(Some(1)) => note("read"),
                            Some(None) => note("refused"),
                            other => panic!("reader got {other:?}"),
                        }
                    })
                };
                destroy_and_reuse(&m, &hz);
                reader.join().unwrap();
                // The new generation reads; the old one never again.
                let rec = record(&hz);
                assert_eq!(m.read(|| rec, TAG, 0, 1, use_val), Some(None));
                assert_eq!(m.read(|| rec, TAG, 0, 2, use_val), Some(Some(2)));
            });
            for o in ["read", "refused"] {
                assert!(seen.contains(&o), "no execution reached {o}: {seen:?}");
            }
        }

        /// `f` reads another slot on the same thread (one hazard record):
        /// the outer read must stay protected after the inner one ends.
        #[test]
        fn a_read_inside_a_read_keeps_the_outer_one_protected() {
            let seen = explore("mirror: nested read vs destroy", || {
                let m = Arc::new(Mirror::<Val>::new());
                let hz = Arc::new(Hazards::new());
                m.set_live(0, 1, val(1));
                m.set_live(1, 1, val(7));
                let reader = {
                    let (m, hz) = (m.clone(), hz.clone());
                    thread::spawn(move || {
                        let rec = record(&hz);
                        let r = m.read(
                            || rec,
                            TAG,
                            0,
                            1,
                            |v| {
                                // (With one record, the inner read is told
                                // to ask the table.)
                                let _ = m.read(|| rec, TAG, 1, 1, use_val);
                                use_val(v)
                            },
                        );
                        match r {
                            Some(Some(1)) => note("read"),
                            Some(None) => note("refused"),
                            other => panic!("reader got {other:?}"),
                        }
                    })
                };
                destroy_and_reuse(&m, &hz);
                reader.join().unwrap();
            });
            assert!(seen.contains(&"read"), "{seen:?}");
        }

        /// More readers than records: a reader with none is told to ask
        /// the table (`None`), and reads nothing.
        #[test]
        fn a_reader_without_a_record_asks_the_table() {
            let seen = explore("mirror: records run out", || {
                let m = Arc::new(Mirror::<Val>::new());
                let hz = Arc::new(Hazards::new());
                m.set_live(0, 1, val(1));
                let taken: Vec<_> = (0..HAZARD_RECORDS).map(|_| hz.claim()).collect();
                assert!(taken.iter().all(Option::is_some));
                let reader = {
                    let (m, hz) = (m.clone(), hz.clone());
                    thread::spawn(move || match m.read(|| record(&hz), TAG, 0, 1, use_val) {
                        None => note("asked the table"),
                        Some(None) => note("refused"),
                        Some(Some(1)) => note("read"),
                        other => panic!("reader got {other:?}"),
                    })
                };
                // A record given back meanwhile may be claimed instead.
                hz.give_back(0);
                destroy_and_reuse(&m, &hz);
                reader.join().unwrap();
            });
            for o in ["asked the table", "refused", "read"] {
                assert!(seen.contains(&o), "no execution reached {o}: {seen:?}");
            }
        }

        /// The read without its fence: the destroyer's scan can miss the
        /// record while the reader's re-check misses the dead mark.
        fn read_no_fence<R>(
            m: &Mirror<Val>,
            hazard: &Hazard,
            i: usize,
            generation: u32,
            f: impl FnOnce(&Val) -> R,
        ) -> Option<R> {
            let s = m.slot(i)?;
            let want = live(generation);
            if s.word.load(Ordering::Relaxed) != want {
                return None;
            }
            hazard.slot.store(hazard_key(TAG, i), Ordering::Relaxed);
            let _unpublish = Unpublish(&hazard.slot);
            if s.word.load(Ordering::Acquire) != want {
                return None;
            }
            s.value.with(|v| unsafe { &*v }.as_ref().map(f))
        }

        #[test]
        #[should_panic(expected = "Causality violation")]
        fn canary_catches_a_missing_fence() {
            loom::model(|| {
                let m = Arc::new(Mirror::<Val>::new());
                let hz = Arc::new(Hazards::new());
                m.set_live(0, 1, val(1));
                let reader = {
                    let (m, hz) = (m.clone(), hz.clone());
                    thread::spawn(move || {
                        let rec = record(&hz).unwrap();
                        read_no_fence(&m, rec, 0, 1, use_val);
                    })
                };
                destroy_and_reuse(&m, &hz);
                reader.join().unwrap();
            });
        }
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(JOBS.read_fast(h, Job::id), Some(Some(j.id())));
        assert_eq!(JOBS.read_fast(r, Job::id), Some(Some(j.id())));
        assert!(JOBS.remove(r).is_some());
        assert_eq!(JOBS.read_fast(r, Job::id), Some(None));
        assert_eq!(
            with_job_read(to_ptr(r), Job::id),
            Err(bgjob_result::InvalidHandle)
        );
        assert_eq!(JOBS.read_fast(h, Job::id), Some(Some(j.id())));
        let other = job();
        let mut stale = vec![r];
        for _ in 0..8 {
            let n = JOBS.insert(other.clone());
            for &s in &stale {
                assert_eq!(JOBS.read_fast(s, Job::id), Some(None));
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
        crate::core::job::tag_worker_thread(h);
        JOBS.remove(h);
        assert_eq!(with_job_read(to_ptr(h), Job::id), Ok(j.id()));
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
        let inner = JOBS.read_fast(a, |_| {
            let inner = JOBS.read_fast(b, Job::id);
            assert!(fast::named(1, i), "the outer read lost its record");
            inner
        });
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
        assert!(table.read_fast(other, Job::id).is_some_and(|r| r.is_some()));
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
            let r = std::thread::spawn(move || JOBS.read_fast(h, Job::id))
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
                        let fast = JOBS.read_fast(h, Job::id);
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

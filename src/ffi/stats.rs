//! Typed job statistics (libvirt's job stats): declared while the job is
//! CREATED, set by the worker or the owner as cheaply as progress, read all at
//! once together with the snapshot, and readable after the job ended until
//! it is destroyed.

use super::handles::with_job;
use super::info::{fill_text, info_size, write_info};
use super::{
    BGJOB_ENTRY_TEXT_SIZE, Res, bgjob_info, bgjob_job, bgjob_result, bgjob_stat_type,
    bgjob_stat_type_in, boundary, c_str, need,
};
use crate::core::{self, Job, StatType, StatValue};
use std::ffi::c_char;
use std::sync::Arc;

/// Most statistics one job may declare.
pub const BGJOB_MAX_STATS: u32 = 64;
const _: () = assert!(BGJOB_MAX_STATS as usize == core::stats::MAX_STATS);

/// Capacity of `bgjob_stat.unit`, NUL included: a unit is at most 15 bytes.
pub const BGJOB_STAT_UNIT_SIZE: usize = 16;
const _: () = assert!(BGJOB_STAT_UNIT_SIZE == core::stats::MAX_UNIT_LEN + 1);
const _: () = assert!(BGJOB_ENTRY_TEXT_SIZE == core::stats::MAX_NAME_LEN + 1);

/// A number-typed statistic's value: the member its `bgjob_stat_type` names
/// (`u64`, `i64` or `f64`; unused for a string).
#[repr(C)]
#[derive(Clone, Copy)]
pub union bgjob_stat_value {
    /// For `BGJOB_STAT_TYPE_U64`.
    pub u64: u64,
    /// For `BGJOB_STAT_TYPE_I64`.
    pub i64: i64,
    /// For `BGJOB_STAT_TYPE_DOUBLE`.
    pub f64: f64,
}

/// One statistic as read by `bgjob_job_get_stats`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct bgjob_stat {
    /// Its name, NUL-terminated (never cut: names are at most 63 bytes).
    pub name: [c_char; BGJOB_ENTRY_TEXT_SIZE],
    /// Its unit ("" for none), NUL-terminated.
    pub unit: [c_char; BGJOB_STAT_UNIT_SIZE],
    /// Its type: which of `value` and `text` holds it.
    pub r#type: bgjob_stat_type,
    /// A number's value (0 until set).
    pub value: bgjob_stat_value,
    /// A string's value ("" until set), NUL-terminated, cut to 63 bytes on a
    /// UTF-8 character boundary; "" for a number.
    pub text: [c_char; BGJOB_ENTRY_TEXT_SIZE],
}

/// One value of a batch (`bgjob_job_set_stats`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct bgjob_stat_update {
    /// The statistic's index (from `bgjob_job_add_stat`).
    pub index: u32,
    /// The value for a number: the member of the statistic's declared type.
    pub value: bgjob_stat_value,
    /// The value for a string, UTF-8, copied; ignored for a number.
    pub text: *const c_char,
}

/// Applies an update, then core's after-update rule: the same as a progress
/// call (a pause point on the job's own worker thread, unless the job's
/// updates never park).
fn update(job: *mut bgjob_job, f: impl FnOnce(&Job) -> Result<(), core::Error>) -> Res {
    with_job(job, |j, _| {
        f(j)?;
        j.after_update();
        Ok::<(), core::Error>(())
    })?
    .map_err(Into::into)
}

/// Declares a statistic of the job: a name (UTF-8, 1 to 63 bytes, unique in
/// the job), a type and an optional unit (UTF-8, at most 15 bytes; NULL or ""
/// for none). `*index_out` gets its index, 0, 1, 2… in declaration order,
/// which the setters take. At most `BGJOB_MAX_STATS` per job. Until set, a
/// number reads 0 and a string "".
///
/// Only while the job is CREATED (create it with `BGJOB_CREATE_DEFER_START`,
/// declare, then start): the set of statistics is fixed while it runs.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_NOT_ALLOWED` once the job has started;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL, empty, too long or non-UTF-8
/// name, a name the job already has, an unknown type, a too long or non-UTF-8
/// unit, a NULL `index_out`, or a job that already has `BGJOB_MAX_STATS`
/// (nothing is declared).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_add_stat(
    job: *mut bgjob_job,
    name: *const c_char,
    r#type: bgjob_stat_type_in,
    unit: *const c_char,
    index_out: *mut u32,
) -> bgjob_result {
    boundary(|| {
        need(index_out)?;
        // SAFETY: NULL or NUL-terminated by contract.
        let name = unsafe { c_str(name) }?;
        let unit = if unit.is_null() {
            ""
        } else {
            // SAFETY: NUL-terminated by contract.
            unsafe { c_str(unit) }?
        };
        let t: StatType = bgjob_stat_type::try_from(r#type)?.into();
        let i = with_job(job, |j, _| j.add_stat(name, t, unit))??;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { index_out.write(i) };
        Ok(())
    })
}

/// Sets a `BGJOB_STAT_TYPE_U64` statistic. As cheap as `bgjob_job_add_units`:
/// an atomic compare-and-swap and two stores, no lock, no system call — meant
/// for once per block.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for an index the job did not declare or a
/// statistic of another type; `BGJOB_RESULT_NOT_ALLOWED` once the job has
/// ended (its statistics are final).
///
/// Threads: any thread; on the job's worker thread it follows the rule of the
/// progress calls (a pause point there).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_stat_u64(
    job: *mut bgjob_job,
    index: u32,
    value: u64,
) -> bgjob_result {
    boundary(|| update(job, |j| j.set_stat(index, &StatValue::U64(value))))
}

/// Sets a `BGJOB_STAT_TYPE_I64` statistic; as `bgjob_job_set_stat_u64`.
///
/// Returns: as `bgjob_job_set_stat_u64`.
///
/// Threads: as `bgjob_job_set_stat_u64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_stat_i64(
    job: *mut bgjob_job,
    index: u32,
    value: i64,
) -> bgjob_result {
    boundary(|| update(job, |j| j.set_stat(index, &StatValue::I64(value))))
}

/// Sets a `BGJOB_STAT_TYPE_DOUBLE` statistic; as `bgjob_job_set_stat_u64`.
///
/// Returns: as `bgjob_job_set_stat_u64`.
///
/// Threads: as `bgjob_job_set_stat_u64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_stat_double(
    job: *mut bgjob_job,
    index: u32,
    value: f64,
) -> bgjob_result {
    boundary(|| update(job, |j| j.set_stat(index, &StatValue::Double(value))))
}

/// Sets a `BGJOB_STAT_TYPE_STRING` statistic to a copy of `value` (UTF-8; a
/// reader gets at most its first 63 bytes). Unlike the number setters it
/// allocates and takes a short per-job lock.
///
/// Returns: as `bgjob_job_set_stat_u64`; also `BGJOB_RESULT_INVALID_ARGUMENT`
/// for a NULL or non-UTF-8 `value`.
///
/// Threads: as `bgjob_job_set_stat_u64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_stat_string(
    job: *mut bgjob_job,
    index: u32,
    value: *const c_char,
) -> bgjob_result {
    boundary(|| {
        // SAFETY: NULL or NUL-terminated by contract.
        let value = unsafe { c_str(value) }?;
        update(job, |j| {
            j.set_stat(index, &StatValue::String(Arc::from(value)))
        })
    })
}

/// Sets `count` statistics as one update: a reader (`bgjob_job_get_stats`)
/// sees all of them or none, never some old and some new. Each entry names a
/// statistic and gives a value of its declared type (`value` for a number,
/// `text` for a string). Every entry is checked first: on an error nothing is
/// set. Without a string it takes no lock, like the single setters.
///
/// Returns: `BGJOB_RESULT_OK` (also for `count` 0); `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `updates` with non-zero `count`,
/// an undeclared index, or a NULL or non-UTF-8 `text` for a string;
/// `BGJOB_RESULT_NOT_ALLOWED` once the job has ended.
///
/// Threads: as `bgjob_job_set_stat_u64` (one pause point for the batch).
///
/// `updates` is valid for `count` elements.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_set_stats(
    job: *mut bgjob_job,
    updates: *const bgjob_stat_update,
    count: usize,
) -> bgjob_result {
    boundary(|| {
        if count == 0 {
            return with_job(job, |_, _| ()).map(|_| ());
        }
        need(updates.cast_mut())?;
        // SAFETY: non-NULL, `count` elements by contract.
        let updates = unsafe { std::slice::from_raw_parts(updates, count) };
        update(job, |j| {
            let mut values = Vec::with_capacity(updates.len());
            for u in updates {
                let t = j
                    .stat_type(u.index)
                    .ok_or(core::Error::InvalidArgument("no such stat"))?;
                // SAFETY: reading the member of the statistic's declared type.
                let v = unsafe {
                    match t {
                        StatType::U64 => StatValue::U64(u.value.u64),
                        StatType::I64 => StatValue::I64(u.value.i64),
                        StatType::Double => StatValue::Double(u.value.f64),
                        StatType::String => {
                            // SAFETY: NULL or NUL-terminated by contract.
                            let s = c_str(u.text)
                                .map_err(|_| core::Error::InvalidArgument("bad stat text"))?;
                            StatValue::String(Arc::from(s))
                        }
                    }
                };
                values.push((u.index, v));
            }
            j.set_stats(&values)
        })
    })
}

/// Reads every statistic of the job, in declaration order, together with its
/// snapshot: fills at most `capacity` entries of `stats_out`, writes the
/// number the job has to `*count_out` (which may exceed `capacity`: the
/// entries written are the first ones; call again with a larger array, as
/// with `bgjob_list_jobs`), and, when `info_out` is not NULL, fills it as
/// `bgjob_job_get_info` does.
///
/// Consistent: the statistics read are one set the setters published — a
/// batch (`bgjob_job_set_stats`) is seen whole or not at all — and no
/// statistic was set between the start of the snapshot and the statistics'
/// read, so `*info_out` and the statistics describe the same moment as far as
/// statistics go. (Should statistics be set so often that 16 attempts in a row
/// each overlap a set, the statistics are read right after the snapshot: still
/// one published set.) Progress and statistics are separate: a worker that
/// wants a reader to see them in step sets progress first.
///
/// Readable in every state, also after the job ended (the values it ended
/// with: setters are refused then) until it is destroyed. Never waits on the
/// worker.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `count_out`, a NULL `stats_out`
/// with non-zero `capacity`, or an `info_out` whose `struct_size` is smaller
/// than the first version's.
///
/// `stats_out` is valid for `capacity` elements; `info_out`, when not NULL,
/// for its `struct_size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_get_stats(
    job: *mut bgjob_job,
    info_out: *mut bgjob_info,
    stats_out: *mut bgjob_stat,
    capacity: usize,
    count_out: *mut usize,
) -> bgjob_result {
    boundary(|| {
        need(count_out)?;
        if stats_out.is_null() && capacity > 0 {
            return Err(bgjob_result::InvalidArgument);
        }
        let info_size = if info_out.is_null() {
            None
        } else {
            // SAFETY: by this function's contract.
            Some(unsafe { info_size(info_out) }?)
        };
        let (info, stats) = with_job(job, |j, _| {
            if info_size.is_some() {
                let (i, s) = j.info_and_stats();
                (Some(i), s)
            } else {
                (None, j.stats())
            }
        })?;
        if let (Some(size), Some(info)) = (info_size, info) {
            // SAFETY: checked above; `size` writable bytes by contract.
            unsafe { write_info(info_out, size, info) }?;
        }
        for (i, s) in stats.iter().take(capacity).enumerate() {
            let mut out = bgjob_stat {
                name: [0; BGJOB_ENTRY_TEXT_SIZE],
                unit: [0; BGJOB_STAT_UNIT_SIZE],
                r#type: bgjob_stat_type::from(s.value.stat_type()),
                value: bgjob_stat_value { u64: 0 },
                text: [0; BGJOB_ENTRY_TEXT_SIZE],
            };
            fill_text(&mut out.name, &s.name);
            fill_text(&mut out.unit, &s.unit);
            match &s.value {
                StatValue::U64(v) => out.value.u64 = *v,
                StatValue::I64(v) => out.value.i64 = *v,
                StatValue::Double(v) => out.value.f64 = *v,
                StatValue::String(v) => fill_text(&mut out.text, v),
            }
            // SAFETY: i < capacity, and `stats_out` holds `capacity` elements.
            unsafe { stats_out.add(i).write(out) };
        }
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { count_out.write(stats.len()) };
        Ok(())
    })
}

//! Reading jobs: snapshots, error, phase, name, the live-job list, and the verb
//! × state table.

use super::handles::{with_job, with_job_read};
use super::versioned::{self, Versioned, size_ending_at};
use super::{
    BGJOB_ENTRY_TEXT_SIZE, bgjob_info, bgjob_job, bgjob_job_entry, bgjob_job_type, bgjob_result,
    bgjob_state, bgjob_state_in, bgjob_verb_in, boundary, boundary_or, check_buf, copy_out, need,
    put,
};
use crate::core::{self, State, Verb};
use std::ffi::c_char;
use std::mem::size_of;

/// Size of the first released `bgjob_info`: the smallest `struct_size`
/// accepted.
// SAFETY: repr(C), `struct_size` first; every field is an integer, a float or
// a bool bgjob writes. The first version ended with `error_policy`.
unsafe impl Versioned for bgjob_info {
    const V1_SIZE: usize = size_ending_at::<bgjob_info>(
        std::mem::offset_of!(bgjob_info, error_policy) + size_of::<i32>(),
    );
    fn set_struct_size(&mut self, n: u32) {
        self.struct_size = n;
    }
}

/// Fills `*info_out` with one consistent snapshot of the job. Never waits on the
/// worker (or on a cancel in progress).
///
/// The caller sets `info_out->struct_size` to `sizeof(bgjob_info)` first; bgjob
/// writes at most that many bytes, so a program built against an older, shorter
/// `bgjob_info` keeps working.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` if `info_out` is NULL or its `struct_size` is
/// smaller than the first version of the struct.
///
/// `info_out` points to at least `info_out->struct_size` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_get_info(
    job: *mut bgjob_job,
    info_out: *mut bgjob_info,
) -> bgjob_result {
    boundary(|| {
        // SAFETY: by this function's contract.
        let size = unsafe { info_size(info_out) }?;
        // Written out where it is made: no copy of the snapshot travels
        // back through the lookup (a third of the call's time).
        // SAFETY: checked; `size` writable bytes by contract.
        with_job_read(job, |j| unsafe { write_info(info_out, size, j.info()) })?
    })
}

/// The `struct_size` of a caller's `bgjob_info`, checked: non-NULL and at
/// least the first version's.
///
/// # Safety
/// `info_out` is NULL or points to a `bgjob_info` of at least its
/// `struct_size` bytes.
pub(super) unsafe fn info_size(info_out: *mut bgjob_info) -> Result<usize, bgjob_result> {
    need(info_out)?;
    // SAFETY: non-NULL; the first field is always present.
    let size = unsafe { (*info_out).struct_size } as usize;
    if size < bgjob_info::V1_SIZE {
        return Err(bgjob_result::InvalidArgument);
    }
    Ok(size)
}

/// Writes snapshot `i` into a caller's `bgjob_info` of `size` bytes
/// (checked by [`info_size`]).
///
/// # Safety
/// `info_out` points to at least `size` writable bytes.
#[inline]
pub(super) unsafe fn write_info(
    info_out: *mut bgjob_info,
    size: usize,
    i: core::Info,
) -> Result<(), bgjob_result> {
    {
        let out = bgjob_info {
            struct_size: size_of::<bgjob_info>() as u32,
            job_type: bgjob_job_type::from(i.job_type),
            state: bgjob_state::from(i.state),
            cancel_requested: i.cancel_requested,
            pause_requested: i.pause_requested,
            elapsed_ms: i.elapsed_ms,
            remaining_ms: i.remaining_ms,
            percent: i.percent,
            error_code: i.error_code,
            current: i.current,
            total: i.total,
            rate: i.rate,
            since_progress_ms: i.since_progress_ms,
            id: i.id,
            cancel_cause: super::bgjob_cancel_cause::from(i.cancel_cause),
            pause_count: i.pause_count,
            iostatus: super::bgjob_iostatus::from(i.iostatus),
            error_policy: super::bgjob_error_policy::from(i.error_policy),
            complete_requested: i.complete_requested,
            cancel_soft: i.cancel_soft,
        };
        if size >= size_of::<bgjob_info>() {
            // A caller built against this header (the common case): each
            // field stored straight into the caller's struct. (A whole
            // struct built on the stack and copied out read its two
            // trailing bools back as one word: a store-forwarding stall
            // that cost a fifth of the call.)
            // Every field by name, once, and no `..`: a field added to
            // `bgjob_info` fails to build here until it is stored too.
            macro_rules! store_all {
                ($($f:ident),*) => {
                    let bgjob_info { $($f),* } = out;
                    $(
                        // SAFETY: the caller's struct holds `size` bytes,
                        // at least this field's end, by contract.
                        unsafe { (&raw mut (*info_out).$f).write_unaligned($f) };
                    )*
                };
            }
            store_all!(
                struct_size,
                job_type,
                state,
                cancel_requested,
                pause_requested,
                elapsed_ms,
                remaining_ms,
                percent,
                error_code,
                current,
                total,
                rate,
                since_progress_ms,
                id,
                cancel_cause,
                pause_count,
                iostatus,
                error_policy,
                complete_requested,
                cancel_soft
            );
            return Ok(());
        }
        // SAFETY: the caller's struct holds `size` bytes by contract.
        unsafe { versioned::write(info_out, size, out) }
    }
}

/// Writes the job's current `bgjob_state` to `*state_out`.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` if `state_out` is NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_get_state(
    job: *mut bgjob_job,
    state_out: *mut bgjob_state,
) -> bgjob_result {
    boundary(|| {
        need(state_out)?;
        let s = with_job(job, |j, _| j.state())?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { state_out.write(bgjob_state::from(s)) };
        Ok(())
    })
}

/// Writes the job's process-unique id to `*id_out`.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` if `id_out` is NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_get_id(job: *mut bgjob_job, id_out: *mut u64) -> bgjob_result {
    boundary(|| {
        need(id_out)?;
        let id = with_job(job, |j, _| j.id())?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { id_out.write(id) };
        Ok(())
    })
}

/// Reads the job's error: `*code_out` gets its code (0 if it has none) and
/// `buf` its message, snprintf-style: at most `len - 1` bytes plus a NUL, cut on
/// a UTF-8 character boundary; `*len_out` gets the message's full length in bytes
/// (without the NUL), so a caller can size a buffer and call again.
///
/// A FAILED job has the code and message its worker set, else the value it
/// returned and "worker failed with code N". A CANCELLED job has the same code
/// rules (the worker's, else its return value) with the message "cancelled" by
/// default; one cancelled before it ran has code 0 and "cancelled before
/// start". Readable until destroy.
///
/// `code_out` and `len_out` may be NULL; `buf` may be NULL when `len` is 0.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `buf` with non-zero `len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_get_error(
    job: *mut bgjob_job,
    code_out: *mut i32,
    buf: *mut c_char,
    len: usize,
    len_out: *mut usize,
) -> bgjob_result {
    boundary(|| {
        check_buf(buf, len)?;
        let e = with_job(job, |j, _| j.error())?;
        let (code, msg) = e.map_or((0, String::new()), |e| (e.code, e.message));
        // SAFETY: buffer checked above; outputs NULL or writable by contract.
        unsafe {
            put(code_out, code);
            copy_out(&msg, buf, len, len_out);
        }
        Ok(())
    })
}

/// Reads the job's phase name (empty before the worker sets one) into `buf`,
/// snprintf-style like `bgjob_job_get_error`.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `buf` with non-zero `len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_get_phase(
    job: *mut bgjob_job,
    buf: *mut c_char,
    len: usize,
    len_out: *mut usize,
) -> bgjob_result {
    // SAFETY: `buf`/`len` and `len_out` as the caller passed them (checked there).
    unsafe { text_out(job, buf, len, len_out, |j| j.phase().to_string()) }
}

/// Reads the job's name into `buf`, snprintf-style like `bgjob_job_get_error`.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `buf` with non-zero `len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_get_name(
    job: *mut bgjob_job,
    buf: *mut c_char,
    len: usize,
    len_out: *mut usize,
) -> bgjob_result {
    // SAFETY: `buf`/`len` and `len_out` as the caller passed them (checked there).
    unsafe { text_out(job, buf, len, len_out, |j| j.name().to_string()) }
}

/// Reads the job's operation name (`bgjob_job_options.operation`; empty for
/// none) into `buf`, snprintf-style like `bgjob_job_get_error`.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `buf` with non-zero `len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_get_operation(
    job: *mut bgjob_job,
    buf: *mut c_char,
    len: usize,
    len_out: *mut usize,
) -> bgjob_result {
    // SAFETY: `buf`/`len` and `len_out` as the caller passed them (checked there).
    unsafe { text_out(job, buf, len, len_out, |j| j.operation().to_string()) }
}

/// Reads the job's owner tag (`bgjob_job_options.owner`; empty for none) into
/// `buf`, snprintf-style like `bgjob_job_get_error`.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_HANDLE`;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for a NULL `buf` with non-zero `len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_get_owner(
    job: *mut bgjob_job,
    buf: *mut c_char,
    len: usize,
    len_out: *mut usize,
) -> bgjob_result {
    // SAFETY: `buf`/`len` and `len_out` as the caller passed them (checked there).
    unsafe { text_out(job, buf, len, len_out, |j| j.owner().to_string()) }
}

/// Copies `s` into a fixed array, cut on a UTF-8 boundary, NUL-terminated.
pub(super) fn fill_text<const N: usize>(dst: &mut [c_char; N], s: &str) {
    let mut n = s.len().min(N - 1);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    for (d, b) in dst.iter_mut().zip(s.as_bytes()[..n].iter()) {
        *d = *b as c_char;
    }
    dst[n] = 0;
}

/// Lists the jobs that exist now (with a handle, a running worker, or both —
/// detached jobs included), in id order, so a stuck job can be found: its state,
/// phase, age, time since its last progress, operation, owner, pauses and
/// cancel state.
///
/// Fills at most `capacity` entries of `entries` and writes the number of live
/// jobs to `*count_out` (which may exceed `capacity`: call again with a larger
/// array). `entries` may be NULL when `capacity` is 0, to count only.
///
/// `bgjob_job_entry` grows at the end in later versions; this call writes
/// entries of the size this header declares. A program that must keep
/// working with a later library without being rebuilt calls
/// `bgjob_list_jobs_sized` with `sizeof(bgjob_job_entry)` instead.
///
/// Returns: `BGJOB_RESULT_OK`; `BGJOB_RESULT_INVALID_ARGUMENT` if `count_out` is
/// NULL, or `entries` is NULL with a non-zero `capacity`.
///
/// `entries` is valid for `capacity` elements.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_list_jobs(
    entries: *mut bgjob_job_entry,
    capacity: usize,
    count_out: *mut usize,
) -> bgjob_result {
    // SAFETY: by this function's contract.
    unsafe { bgjob_list_jobs_sized(entries, size_of::<bgjob_job_entry>(), capacity, count_out) }
}

/// Size of the first released `bgjob_job_entry` (ending with `phase`): the
/// smallest `entry_size` accepted.
pub(crate) const ENTRY_V1_SIZE: usize = super::versioned::size_ending_at::<bgjob_job_entry>(
    std::mem::offset_of!(bgjob_job_entry, phase) + BGJOB_ENTRY_TEXT_SIZE,
);

/// `bgjob_list_jobs` for entries of `entry_size` bytes each: pass
/// `sizeof(bgjob_job_entry)` as compiled. bgjob writes the first
/// `entry_size` bytes of each entry (at most its own entry's size) at a stride
/// of `entry_size`, so a program built against an older, shorter entry keeps
/// working with a later library.
///
/// Returns: as `bgjob_list_jobs`; also `BGJOB_RESULT_INVALID_ARGUMENT` if
/// `entry_size` is smaller than the first version of the entry or not a
/// multiple of its alignment (8).
///
/// `entries` is valid for `capacity * entry_size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_list_jobs_sized(
    entries: *mut bgjob_job_entry,
    entry_size: usize,
    capacity: usize,
    count_out: *mut usize,
) -> bgjob_result {
    boundary(|| {
        need(count_out)?;
        if (entries.is_null() && capacity > 0)
            || entry_size < ENTRY_V1_SIZE
            || !entry_size.is_multiple_of(std::mem::align_of::<bgjob_job_entry>())
            || capacity.checked_mul(entry_size).is_none()
        {
            return Err(bgjob_result::InvalidArgument);
        }
        let jobs = core::list();
        let n = entry_size.min(size_of::<bgjob_job_entry>());
        for (i, l) in jobs.iter().take(capacity).enumerate() {
            let mut e = bgjob_job_entry {
                id: l.id,
                state: bgjob_state::from(l.state),
                age_ms: l.age_ms,
                since_progress_ms: l.since_progress_ms,
                name: [0; BGJOB_ENTRY_TEXT_SIZE],
                phase: [0; BGJOB_ENTRY_TEXT_SIZE],
                operation: [0; BGJOB_ENTRY_TEXT_SIZE],
                owner: [0; BGJOB_ENTRY_TEXT_SIZE],
                pause_count: l.pause_count,
                cancel_requested: l.cancel_requested,
                cancel_cause: super::bgjob_cancel_cause::from(l.cancel_cause),
                parent_id: l.parent_id,
            };
            fill_text(&mut e.name, &l.name);
            fill_text(&mut e.phase, &l.phase);
            fill_text(&mut e.operation, &l.operation);
            fill_text(&mut e.owner, &l.owner);
            // SAFETY: i < capacity, and `entries` holds `capacity * entry_size`
            // bytes; at most `entry_size` bytes of a whole entry are copied.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (&raw const e).cast::<u8>(),
                    entries.cast::<u8>().add(i * entry_size),
                    n,
                )
            };
        }
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { count_out.write(jobs.len()) };
        Ok(())
    })
}

/// Answers whether `verb` (a `bgjob_verb`) may be applied to a job in `state`
/// (a `bgjob_state`): the same table every verb consults. A refused verb returns
/// `BGJOB_RESULT_NOT_ALLOWED`.
///
/// Returns: `BGJOB_RESULT_OK` with `*allowed_out` set;
/// `BGJOB_RESULT_INVALID_ARGUMENT` for an unknown verb or state or a NULL
/// `allowed_out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_verb_allowed(
    verb: bgjob_verb_in,
    state: bgjob_state_in,
    allowed_out: *mut bool,
) -> bgjob_result {
    boundary(|| {
        need(allowed_out)?;
        let v = super::bgjob_verb::try_from(verb)?.into();
        let s = bgjob_state::try_from(state)?.into();
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { allowed_out.write(core::verb_allowed(v, s)) };
        Ok(())
    })
}

pub(super) fn static_name(name: Option<&'static str>) -> *const c_char {
    // The names are static ASCII without NULs; leak-free because each is built once.
    static NAMES: std::sync::OnceLock<Vec<(&'static str, std::ffi::CString)>> =
        std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        State::ALL
            .iter()
            .map(|s| s.name())
            .chain(Verb::ALL.iter().map(|v| v.name()))
            .map(|n| (n, std::ffi::CString::new(n).unwrap_or_default()))
            .collect()
    });
    name.and_then(|n| names.iter().find(|(k, _)| *k == n))
        .map_or(c"unknown".as_ptr(), |(_, c)| c.as_ptr())
}

/// A static lower-case name for a `bgjob_state` ("running"), or "unknown".
/// Never NULL; never free it.
#[unsafe(no_mangle)]
pub extern "C" fn bgjob_state_str(state: bgjob_state_in) -> *const c_char {
    boundary_or(c"unknown".as_ptr(), || {
        static_name(
            bgjob_state::try_from(state)
                .ok()
                .map(|s| State::from(s).name()),
        )
    })
}

/// A static lower-case name for a `bgjob_verb` ("pause"), or "unknown".
/// Never NULL; never free it.
#[unsafe(no_mangle)]
pub extern "C" fn bgjob_verb_str(verb: bgjob_verb_in) -> *const c_char {
    boundary_or(c"unknown".as_ptr(), || {
        static_name(
            super::bgjob_verb::try_from(verb)
                .ok()
                .map(|v| Verb::from(v).name()),
        )
    })
}

/// The shape every text reader shares: check the buffer, read the text from
/// the job, copy it out snprintf-style.
///
/// # Safety
/// `buf` is NULL or writable for `len` bytes; `len_out` NULL or writable.
unsafe fn text_out(
    job: *mut bgjob_job,
    buf: *mut c_char,
    len: usize,
    len_out: *mut usize,
    read: impl FnOnce(&core::Job) -> String,
) -> bgjob_result {
    boundary(|| {
        check_buf(buf, len)?;
        let text = with_job(job, |j, _| read(j))?;
        // SAFETY: buffer checked above; `len_out` NULL or writable by contract.
        unsafe { copy_out(&text, buf, len, len_out) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    /// The first released entry, as a 64-bit C compiler laid it out: fields
    /// added to `bgjob_job_entry` must not change it.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn first_entry_size_is_pinned() {
        assert_eq!(ENTRY_V1_SIZE, 160);
    }

    /// The full-size fast path (each field stored) writes what the
    /// versioned copy writes: no field forgotten or swapped.
    #[test]
    fn a_full_size_write_stores_every_field() {
        let i = core::Info {
            id: 7,
            job_type: core::JobType::Unbounded,
            state: State::Paused,
            cancel_requested: true,
            pause_requested: true,
            pause_count: 3,
            iostatus: core::IoStatus::NoSpace,
            error_policy: core::ErrorPolicy::Enospc,
            elapsed_ms: 11,
            remaining_ms: 13,
            percent: 17,
            current: 19,
            total: 23,
            rate: 29.5,
            since_progress_ms: 31,
            error_code: -37,
            cancel_cause: core::CancelCause::Timeout,
            complete_requested: true,
            cancel_soft: true,
        };
        let n = size_of::<bgjob_info>();
        // The last field ends before the struct's last byte (padding), so
        // `n - 1` bytes take the versioned copy and still hold every field.
        assert!(std::mem::offset_of!(bgjob_info, cancel_soft) < n - 1);
        let write = |size: usize| {
            let mut buf = [0u8; size_of::<bgjob_info>()];
            let p = buf.as_mut_ptr().cast::<bgjob_info>();
            // SAFETY: `buf` holds a whole `bgjob_info`; every field is
            // written, and zero bytes are a valid value of every field.
            unsafe {
                (*p).struct_size = size as u32;
                write_info(p, size, i.clone()).unwrap();
                (*p).struct_size = 0;
                format!("{:?}", p.read_unaligned())
            }
        };
        assert_eq!(write(n), write(n - 1));
    }

    #[test]
    fn names_are_static_and_unknown_is_handled() {
        // SAFETY: the functions return static NUL-terminated strings.
        let s = |p| unsafe { CStr::from_ptr(p) }.to_str().unwrap();
        assert_eq!(s(bgjob_state_str(1)), "running");
        assert_eq!(s(bgjob_state_str(99)), "unknown");
        assert_eq!(s(bgjob_verb_str(2)), "pause");
        assert_eq!(s(bgjob_verb_str(-1)), "unknown");
    }
}

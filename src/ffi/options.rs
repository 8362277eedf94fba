//! `bgjob_job_options`: its defaults, its versioning, and reading and checking it.

use super::context::Completion;
use super::handles::to_ptr;
use super::versioned::{self, Versioned, size_ending_at};
use super::{
    BGJOB_CREATE_DEFER_START, BGJOB_CREATE_EXTERNAL, BGJOB_CREATE_MANUAL_FINALIZE,
    BGJOB_CREATE_UPDATES_NEVER_PARK, BGJOB_MAX_STACK_SIZE, UserData, bgjob_control,
    bgjob_control_callback, bgjob_error_policy, bgjob_finalize_callback, bgjob_free_callback,
    bgjob_job_options, bgjob_job_type, bgjob_result, boundary, c_str, need,
};
use crate::core::{self, JobType};
use std::mem::{offset_of, size_of};

/// The defaults `bgjob_job_options_init` writes.
pub(crate) fn default_options() -> bgjob_job_options {
    bgjob_job_options {
        struct_size: size_of::<bgjob_job_options>() as u32,
        job_type: bgjob_job_type::Bounded as i32,
        flags: 0,
        name: std::ptr::null(),
        stack_size: 0,
        completion: None,
        completion_userdata: std::ptr::null_mut(),
        completion_free: None,
        context: std::ptr::null_mut(),
        deadline_ms: -1,
        error_policy: bgjob_error_policy::Report as i32,
        commit: None,
        abort: None,
        clean: None,
        finalize_userdata: std::ptr::null_mut(),
        finalize_free: None,
        operation: std::ptr::null(),
        owner: std::ptr::null(),
        control: None,
        control_userdata: std::ptr::null_mut(),
        control_free: None,
        event: None,
        event_userdata: std::ptr::null_mut(),
        event_free: None,
        parent: std::ptr::null_mut(),
    }
}

// SAFETY: repr(C), `struct_size` first; every field is an integer, a bool, a
// nullable pointer or an optional function pointer. The first version ended
// with `finalize_free`.
unsafe impl Versioned for bgjob_job_options {
    const V1_SIZE: usize = size_ending_at::<bgjob_job_options>(
        offset_of!(bgjob_job_options, finalize_free) + size_of::<bgjob_free_callback>(),
    );
    fn set_struct_size(&mut self, n: u32) {
        self.struct_size = n;
    }
}

/// Fills `options` with the defaults: bounded, started at once, named
/// `job-<id>`, default stack, no completion callback. Pass `sizeof *options`
/// as `size`: bgjob writes no more than that, and sets `struct_size` to the
/// bytes it wrote — `size`, so a program built against an older, shorter
/// struct keeps working; or, for one built against a later header whose
/// struct is longer than this library's, this library's own size: the later
/// fields are left as they were, a create reads none of them, and the program
/// can tell from `struct_size` which fields this library has.
///
/// Returns: `BGJOB_RESULT_OK`, or `BGJOB_RESULT_INVALID_ARGUMENT` if `options` is
/// NULL or `size` is smaller than the first version of the struct.
///
/// `options` points to `size` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bgjob_job_options_init(
    options: *mut bgjob_job_options,
    size: usize,
) -> bgjob_result {
    boundary(|| {
        need(options)?;
        // SAFETY: non-NULL, `size` writable bytes by contract.
        unsafe { versioned::write(options, size, default_options()) }
    })
}

pub(crate) struct Options {
    pub(crate) name: Option<String>,
    pub(crate) job_type: JobType,
    pub(crate) defer_start: bool,
    pub(crate) stack_size: usize,
    pub(crate) completion: Option<Completion>,
    pub(crate) deadline: Option<std::time::Duration>,
    pub(crate) manual_finalize: bool,
    pub(crate) updates_never_park: bool,
    pub(crate) error_policy: core::ErrorPolicy,
    pub(crate) finalizers: Finalizers,
    pub(crate) operation: String,
    pub(crate) owner: String,
    pub(crate) events: Option<super::events::Events>,
    /// `bgjob_job_options.parent`, resolved by create.
    pub(crate) parent: *mut super::bgjob_job,
    pub(crate) external: bool,
    pub(crate) control: Control,
}

/// The control callback with its userdata, freed after its last call (or
/// when none will come).
pub(crate) struct Control {
    callback: bgjob_control_callback,
    userdata: UserData,
}

impl Control {
    pub(crate) fn attach(self, b: core::Builder, h: usize) -> core::Builder {
        let Some(cb) = self.callback else {
            return b;
        };
        let userdata = self.userdata;
        b.on_control(move |job, what, arg| {
            let userdata = &userdata;
            // The completion's handle rule: the creator's handle, or one made
            // for the call when only other references remain.
            super::handles::with_call_handle(job, h, |h| {
                // SAFETY: the caller's callback with its own userdata and a
                // handle of the job valid for the call.
                unsafe { cb(userdata.ptr, to_ptr(h), bgjob_control::from(what), arg) };
            });
        })
    }
}

/// The commit, abort and clean callbacks with their shared userdata, freed
/// after the last of them (or when none will run).
pub(crate) struct Finalizers {
    commit: bgjob_finalize_callback,
    abort: bgjob_finalize_callback,
    clean: bgjob_finalize_callback,
    /// `None` when there is neither a userdata nor a free function (most
    /// jobs): nothing to share, so nothing is allocated.
    userdata: Option<std::sync::Arc<UserData>>,
}

impl Finalizers {
    pub(crate) fn attach(self, mut b: core::Builder, h: usize) -> core::Builder {
        let make = |cb: bgjob_finalize_callback| {
            cb.map(|cb| {
                let data = self.userdata.clone();
                move |job: &core::Job| {
                    let ptr = data.as_ref().map_or(std::ptr::null_mut(), |d| d.ptr);
                    super::handles::with_call_handle(job, h, |h| {
                        // SAFETY: the caller's callback with its own userdata
                        // and a handle of the job valid for the call.
                        unsafe { cb(ptr, to_ptr(h)) };
                    });
                }
            })
        };
        if let Some(f) = make(self.commit) {
            b = b.on_commit(f);
        }
        if let Some(f) = make(self.abort) {
            b = b.on_abort(f);
        }
        if let Some(f) = make(self.clean) {
            b = b.on_clean(f);
        }
        b
    }
}

/// Reads and checks options; NULL means the defaults. The completion userdata
/// is owned (and so freed on any later failure) as soon as the struct's size
/// has been checked.
///
/// # Safety
/// `options` is NULL or points to a `bgjob_job_options` of at least
/// `options->struct_size` bytes.
pub(crate) unsafe fn read_options(
    options: *const bgjob_job_options,
) -> Result<Options, bgjob_result> {
    let opts = if options.is_null() {
        default_options()
    } else {
        // SAFETY: non-NULL, `struct_size` readable bytes by contract.
        unsafe { versioned::read(options, default_options())? }
    };
    // Owned before any check can fail, like the completion's.
    let finalizers = Finalizers {
        commit: opts.commit,
        abort: opts.abort,
        clean: opts.clean,
        userdata: (!opts.finalize_userdata.is_null() || opts.finalize_free.is_some()).then(|| {
            std::sync::Arc::new(UserData::new(opts.finalize_userdata, opts.finalize_free))
        }),
    };
    // Owned before any check can fail, like the completion's.
    let events = super::events::Events::take(&opts);
    let control = Control {
        callback: opts.control,
        userdata: UserData::new(opts.control_userdata, opts.control_free),
    };
    let completion = Completion::from_options(&opts)?;
    let events = events.with_context(&opts)?;
    let error_policy = bgjob_error_policy::try_from(opts.error_policy)?.into();
    let job_type = bgjob_job_type::try_from(opts.job_type)?.into();
    let known_flags = BGJOB_CREATE_DEFER_START
        | BGJOB_CREATE_MANUAL_FINALIZE
        | BGJOB_CREATE_UPDATES_NEVER_PARK
        | BGJOB_CREATE_EXTERNAL;
    if opts.flags & !known_flags != 0
        || opts.stack_size > BGJOB_MAX_STACK_SIZE
        || opts.deadline_ms < -1
    {
        return Err(bgjob_result::InvalidArgument);
    }
    let name = if opts.name.is_null() {
        None
    } else {
        // SAFETY: a NUL-terminated string by contract.
        Some(unsafe { c_str(opts.name) }?.to_owned())
    };
    // SAFETY: NULL or NUL-terminated strings by contract.
    let (operation, owner) = unsafe { (opt_str(opts.operation)?, opt_str(opts.owner)?) };
    Ok(Options {
        operation,
        owner,
        name,
        job_type,
        defer_start: opts.flags & BGJOB_CREATE_DEFER_START != 0,
        stack_size: opts.stack_size,
        completion,
        deadline: (opts.deadline_ms > 0)
            .then(|| std::time::Duration::from_millis(opts.deadline_ms as u64)),
        manual_finalize: opts.flags & BGJOB_CREATE_MANUAL_FINALIZE != 0,
        updates_never_park: opts.flags & BGJOB_CREATE_UPDATES_NEVER_PARK != 0,
        error_policy,
        finalizers,
        events,
        parent: opts.parent,
        external: opts.flags & BGJOB_CREATE_EXTERNAL != 0,
        control,
    })
}

/// A C string option: NULL is "".
///
/// # Safety
/// `p` is NULL or NUL-terminated.
unsafe fn opt_str(p: *const std::ffi::c_char) -> Result<String, bgjob_result> {
    if p.is_null() {
        Ok(String::new())
    } else {
        // SAFETY: NUL-terminated by contract.
        Ok(unsafe { c_str(p) }?.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A size that ends inside a later field (here the first pointer after
    /// the first version) leaves that field at its default, not half read.
    #[test]
    fn a_size_that_cuts_a_field_leaves_it_default() {
        unsafe extern "C" fn cb(_: *mut std::ffi::c_void) {}
        unsafe extern "C" fn ev(
            _: *mut std::ffi::c_void,
            _: *mut crate::ffi::bgjob_job,
            _: *const crate::ffi::bgjob_event,
        ) {
        }
        let mut opts = default_options();
        opts.event = Some(ev);
        opts.event_userdata = std::ptr::dangling_mut();
        opts.completion_free = Some(cb);
        opts.struct_size =
            (<bgjob_job_options as crate::ffi::versioned::Versioned>::V1_SIZE + 4) as u32;
        let defaults = default_options();
        // SAFETY: `opts` is a whole struct.
        let got =
            unsafe { crate::ffi::versioned::read(&raw const opts, defaults) }.expect("accepted");
        assert!(got.event.is_none());
        assert!(got.event_userdata.is_null());
        assert!(
            got.completion_free.is_some(),
            "first-version fields are read"
        );
    }

    /// A caller built before `operation` and `owner` existed passes the first
    /// version's size: whatever lies past it is not read, and both are "".
    #[test]
    fn an_old_size_struct_has_no_operation_or_owner() {
        let mut o = default_options();
        o.struct_size = bgjob_job_options::V1_SIZE as u32;
        o.operation = c"mirror".as_ptr();
        o.owner = c"domain vm1".as_ptr();
        // SAFETY: a whole struct, larger than its struct_size.
        let got = unsafe { read_options(&raw const o) }.unwrap_or_else(|_| panic!("refused"));
        assert_eq!((got.operation.as_str(), got.owner.as_str()), ("", ""));
        o.struct_size = size_of::<bgjob_job_options>() as u32;
        // SAFETY: as above.
        let got = unsafe { read_options(&raw const o) }.unwrap_or_else(|_| panic!("refused"));
        assert_eq!(
            (got.operation.as_str(), got.owner.as_str()),
            ("mirror", "domain vm1")
        );
    }
}

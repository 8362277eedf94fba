//! The event callback as the C caller gives it (`bgjob_job_options.event`),
//! ready to hand to core.

use super::context::context_of;
use super::handles::to_ptr;
use super::{UserData, bgjob_event, bgjob_event_kind, bgjob_job, bgjob_job_options, bgjob_result};
use crate::core::{self, Context, ErrorAction};
use std::ffi::c_void;

type Callback = unsafe extern "C" fn(*mut c_void, *mut bgjob_job, *const bgjob_event);

/// An event callback with its userdata (freed exactly once, by being dropped
/// after the last call) and its context.
pub(crate) struct Events {
    callback: Option<Callback>,
    userdata: UserData,
    context: Option<Context>,
}

impl Events {
    /// Takes ownership of the event userdata at once (so every later failure
    /// frees it); the context is read by [`Events::with_context`].
    pub(crate) fn take(o: &bgjob_job_options) -> Events {
        Events {
            callback: o.event,
            userdata: UserData::new(o.event_userdata, o.event_free),
            context: None,
        }
    }

    /// With the options' context (its handle already checked by the
    /// completion's reading); `None` when there is no callback (the userdata,
    /// if any, is freed now).
    pub(crate) fn with_context(
        mut self,
        o: &bgjob_job_options,
    ) -> Result<Option<Events>, bgjob_result> {
        if self.callback.is_none() {
            return Ok(None);
        }
        if !o.context.is_null() {
            self.context = Some(context_of(o.context)?);
        }
        Ok(Some(self))
    }

    /// Adds it to a job under construction whose handle is `h`.
    pub(crate) fn attach(self, b: core::Builder, h: usize) -> core::Builder {
        let Events {
            callback,
            userdata,
            context,
        } = self;
        let Some(callback) = callback else {
            return b;
        };
        b.on_event(context, move |job, ev| {
            // The whole UserData is captured (not only its pointer), so its
            // free runs when the callback is dropped.
            let userdata = &userdata;
            let c = to_c(ev);
            // The same handle rule as the completion's: the creator's handle,
            // or one made for the call when only other references remain.
            super::handles::with_call_handle(job, h, |h| {
                // SAFETY: the caller's callback with its own userdata, a
                // handle of the job and an event, all valid during the call.
                unsafe { callback(userdata.ptr, to_ptr(h), &c) };
            });
        })
    }
}

fn to_c(ev: &core::Event) -> bgjob_event {
    bgjob_event {
        struct_size: size_of::<bgjob_event>() as u32,
        kind: bgjob_event_kind::from(ev.kind),
        old_state: ev.old_state.into(),
        new_state: ev.new_state.into(),
        action: ev.action.unwrap_or(ErrorAction::Report).into(),
        error_code: ev.error_code,
        seq: ev.seq,
        coalesced: ev.coalesced,
    }
}

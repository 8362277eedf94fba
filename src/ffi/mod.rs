//! The C ABI. The only place with `extern "C"`; it checks arguments, looks up
//! handles, converts, and forwards to [`crate::core`]. No job logic lives here.
//!
//! Conventions, applied to every export:
//! - the body runs inside [`boundary`], which turns a Rust panic into
//!   `BGJOB_RESULT_PANIC` (or the function's documented failure value);
//! - every pointer is checked before use, every C string is checked for UTF-8, and
//!   no integer from C is transmuted into an enum;
//! - outputs (`*_out`) are written only when the call succeeds.

#![allow(non_camel_case_types)]

// The modules are declared in the order the header reads (cbindgen follows it,
// with `sort_by = "None"`): the shared machinery first, then the exports, grouped
// by object, in the order a driver uses them.
mod boundary;
pub mod cancel;
pub mod child;
pub mod context;
pub mod control;
pub(crate) mod fork;
pub mod handles;
pub mod info;
pub mod job;
pub mod job_result;
pub mod library;
pub mod options;
pub mod pool;
pub mod qemu;
pub mod result;
pub mod txn;
pub mod types;
mod versioned;
/// Generates its own header (include/virjob.h); kept out of bgjob.h.
/// cbindgen:ignore
pub mod virjob;
pub mod worker;

pub(crate) use boundary::*;
pub use library::bgjob_log_callback;
pub use result::bgjob_result;
pub use types::*;

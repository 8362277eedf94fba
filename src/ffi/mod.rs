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
// The exports' pointer rules are written for C programmers, once, in the
// header's file comment (cbindgen.toml) and per function where one differs,
// not under Rust `# Safety` headings that would fill the header.
#![allow(clippy::missing_safety_doc)]

// The modules are declared in the order the header reads (cbindgen follows it,
// with `sort_by = "None"`; build.rs puts a section title above each group). The
// comment between each pair keeps rustfmt from sorting them by name.

// Shared machinery: no exports.
mod boundary;
mod events;
mod versioned;
// Handle tables, and the fork handling that walks them.
pub(crate) mod fork;
pub mod handles;
// Constants and types.
pub mod result;
// (enums, handles, callbacks)
pub mod types;
// (options, info, child options, listing entry)
pub mod structs;
// Create and run.
pub mod options;
// (create, start, run_in_thread)
pub mod job;
// Read: info, state, lists.
pub mod info;
// Control: cancel, pause, resume, wait, destroy, detach.
pub mod control;
// Completion contexts.
pub mod context;
// Worker side: checks, progress, error, outcome.
pub mod worker;
// Statistics.
pub mod stats;
// Results.
pub mod job_result;
// Cancellation and waits.
pub mod cancel;
// Child processes.
pub mod child;
// QEMU semantics.
pub mod qemu;
// Transactions.
pub mod txn;
// Worker pool.
pub mod pool;
// Library.
pub mod library;
/// Generates its own header (include/virjob.h); kept out of bgjob.h.
/// cbindgen:ignore
pub mod virjob;

pub(crate) use boundary::*;
pub use library::bgjob_log_callback;
pub use result::bgjob_result;
pub use stats::{bgjob_stat, bgjob_stat_update, bgjob_stat_value};
pub use structs::*;
pub use types::*;

//! bgjob: background jobs for C programs, with a C ABI.
//!
//! A *job* is one long operation (save a domain, copy a disk image, migrate) run
//! by a worker on its own OS thread, while the caller keeps control through an
//! opaque handle: it reads a consistent snapshot of progress, pauses, resumes,
//! cancels, waits for and destroys the job.
//!
//! # Layers
//!
//! - [`core`]: the job model in safe Rust (`#![forbid(unsafe_code)]`), usable
//!   directly from Rust: [`core::Job`], [`core::Builder`], [`core::Worker`].
//! - [`ffi`]: the C ABI (`include/bgjob.h`), which checks arguments, looks up
//!   handles and forwards to `core`.
//!
//! # API conventions (C)
//!
//! - Every function returns a `bgjob_result` (0 = success) unless it only reads a
//!   static string or number. Outputs are `*_out` parameters written only on
//!   success. Result codes have stable numbers and a static string each
//!   (`bgjob_result_str`).
//! - Handles are opaque, generation-tagged table entries: NULL, destroyed,
//!   detached or made-up handles get `BGJOB_RESULT_INVALID_HANDLE` from every
//!   function, never a crash.
//! - Userdata is always paired with a free function that bgjob calls exactly
//!   once, after the last callback that uses it, on every path.
//! - No bgjob lock is held while user code (workers, free functions, log
//!   callbacks) runs. No Rust panic crosses into C; a panic in bgjob becomes
//!   `BGJOB_RESULT_PANIC`, a panicking Rust worker ends its job FAILED.
//! - All functions are thread-safe. Each callback type documents the thread it
//!   runs on and which calls it may make.

pub mod core;
pub mod ffi;
mod sys;

pub use core::{Builder, CancelStatus, Error, Info, Job, JobError, JobType, State, Verb, Worker};

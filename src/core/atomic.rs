//! The atomics core's own lock-free protocols are built from: std's, or loom's
//! when built with `--cfg loom`, so `make loom` can model-check those protocols
//! (the progress and statistics seqlocks, a job's attention bits, a pool thread's hand-off) under every interleaving and
//! every reordering the C11 memory model allows. Only code whose correctness rests on its own use of
//! atomics imports from here; everything else uses std.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicI32, AtomicI64, AtomicU8, AtomicU64, Ordering, fence,
};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicI64, AtomicU8, AtomicU64, Ordering, fence,
};

/// One step of a spin-wait: spins briefly, then yields, so a waiter whose
/// writer was preempted mid-update does not burn its whole time slice. Under
/// loom every step yields, so the checker schedules the thread being waited for
/// (a spin loop that never yields is a model that never ends).
pub(crate) fn backoff(spins: &mut u32) {
    *spins += 1;
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

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

/// A sequence lock's writer side, for writers that may race: waits until
/// `seq` is even, makes it odd with a compare-and-swap (excluding other
/// writers) and returns the even value it had. The caller then stores its
/// fields and publishes them with `seq.store(s + 2, Ordering::Release)` (or
/// gives up with `seq.store(s, Ordering::Release)`). The fence keeps the
/// field stores from becoming visible before the odd sequence.
pub(crate) fn seq_write_begin(seq: &AtomicU64) -> u64 {
    let mut spins = 0u32;
    let s = loop {
        let s = seq.load(Ordering::Relaxed);
        if s & 1 == 0
            && seq
                .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            break s;
        }
        backoff(&mut spins);
    };
    fence(Ordering::Release);
    s
}

/// A sequence lock's reader side: runs `read` (relaxed loads of the fields)
/// until it ran between two loads of `seq` that saw the same even value, and
/// returns that result: a snapshot one writer published whole. Spins only
/// while a writer is mid-update; never waits on a lock.
#[inline(always)]
pub(crate) fn seq_read<T>(seq: &AtomicU64, mut read: impl FnMut() -> T) -> T {
    let mut spins = 0u32;
    loop {
        let s1 = seq.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            backoff(&mut spins);
            continue;
        }
        let v = read();
        fence(Ordering::Acquire);
        if seq.load(Ordering::Relaxed) == s1 {
            return v;
        }
    }
}

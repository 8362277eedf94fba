//! A few words of per-thread storage for the hot paths, as cheap to read as a
//! thread-local can be.
//!
//! A `thread_local!` in a shared library uses the general-dynamic model: every
//! access calls `__tls_get_addr` (~4 ns on the machine of docs/performance.md,
//! as much as an exported call itself), and a per-block progress update or a
//! getinfo pays it. On x86-64 Linux these words are instead one
//! initial-exec thread-local, declared in assembly (stable Rust has no
//! `#[thread_local]`): a read is a load of its offset from the GOT and a load
//! relative to `%fs`, with no call. Its 32 bytes come from the static TLS
//! block; a library loaded later by `dlopen` (Python's ctypes) gets them from
//! the surplus glibc keeps for that purpose. Elsewhere the words are a plain
//! `thread_local!` with no destructor.
//!
//! Each word starts at 0 on every thread. The words are assigned in one
//! place, [`Word`], so no two users share one.

/// The words, one per user.
#[derive(Clone, Copy)]
#[repr(usize)]
pub(crate) enum Word {
    /// The handle of the job whose C worker runs on this thread (`ffi::handles`).
    WorkerHandle = 0,
    /// That job (`ffi::handles`).
    WorkerJob = 1,
    /// This thread's hazard record for lock-free handle reads, index + 1
    /// (`ffi::handles::fast`).
    Hazard = 2,
}

const WORDS: usize = 4;

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom)))]
mod imp {
    std::arch::global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".p2align 5",
        ".globl bgjob_hot_tls",
        ".hidden bgjob_hot_tls",
        ".type bgjob_hot_tls, @object",
        ".size bgjob_hot_tls, 32",
        "bgjob_hot_tls:",
        ".zero 32",
        ".popsection",
    );

    /// Reads word `i` (< `WORDS`) of this thread's block.
    #[inline(always)]
    pub(super) fn get(i: usize) -> usize {
        let v: usize;
        // SAFETY: reads this thread's own 32-byte block, whose offset from
        // the thread pointer the dynamic linker put in the GOT; `i` is a
        // `Word`, below `WORDS`.
        unsafe {
            std::arch::asm!(
                "mov {off}, qword ptr [rip + bgjob_hot_tls@GOTTPOFF]",
                "mov {v}, qword ptr fs:[{off} + {i} * 8]",
                off = out(reg) _,
                i = in(reg) i,
                v = out(reg) v,
                options(nostack, readonly, preserves_flags),
            );
        }
        v
    }

    /// Writes word `i` (< `WORDS`) of this thread's block.
    #[inline(always)]
    pub(super) fn set(i: usize, v: usize) {
        // SAFETY: as in `get`, a write to this thread's own block.
        unsafe {
            std::arch::asm!(
                "mov {off}, qword ptr [rip + bgjob_hot_tls@GOTTPOFF]",
                "mov qword ptr fs:[{off} + {i} * 8], {v}",
                off = out(reg) _,
                i = in(reg) i,
                v = in(reg) v,
                options(nostack, preserves_flags),
            );
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(loom))))]
mod imp {
    use std::cell::Cell;

    thread_local! {
        static WORDS: [Cell<usize>; super::WORDS] = const { [const { Cell::new(0) }; super::WORDS] };
    }

    #[inline(always)]
    pub(super) fn get(i: usize) -> usize {
        WORDS.with(|w| w[i].get())
    }

    #[inline(always)]
    pub(super) fn set(i: usize, v: usize) {
        WORDS.with(|w| w[i].set(v));
    }
}

const _: () = assert!((Word::Hazard as usize) < WORDS);

/// This thread's value of `w` (0 until set).
#[inline(always)]
pub(crate) fn get(w: Word) -> usize {
    imp::get(w as usize)
}

/// Sets this thread's value of `w`.
#[inline(always)]
pub(crate) fn set(w: Word, v: usize) {
    imp::set(w as usize, v);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Each thread has its own words, starting at 0, and the words do not
    /// overlap.
    #[test]
    fn words_are_per_thread_and_distinct() {
        let words = [Word::WorkerHandle, Word::WorkerJob, Word::Hazard];
        std::thread::scope(|s| {
            for t in 1..=4usize {
                s.spawn(move || {
                    for w in words {
                        assert_eq!(get(w), 0);
                    }
                    for (k, w) in words.iter().enumerate() {
                        set(*w, t * 100 + k);
                    }
                    for _ in 0..1000 {
                        for (k, w) in words.iter().enumerate() {
                            assert_eq!(get(*w), t * 100 + k);
                        }
                        std::thread::yield_now();
                    }
                    for w in words {
                        set(w, 0);
                    }
                });
            }
        });
    }
}

//! A few words of per-thread storage for the hot paths, as cheap to read as a
//! thread-local can be.
//!
//! A `thread_local!` in a shared library uses the general-dynamic model: every
//! access calls `__tls_get_addr` (~4 ns on the machine of docs/performance.md,
//! as much as an exported call itself), and a per-block progress update or a
//! getinfo pays it. On x86-64 Linux these words are instead one
//! thread-local declared in assembly (stable Rust has no
//! `#[thread_local]`) and reached by a TLS descriptor: a call to a resolver
//! that, for a block in static TLS, is a load and a return, then a load
//! relative to `%fs`. (The initial-exec model would save that call, but it
//! marks the library `STATIC_TLS`: all of its TLS, ~450 bytes with std's,
//! must then come from glibc's small static surplus when the library is
//! `dlopen`ed, and such a `dlopen` — Python's ctypes — fails once other
//! libraries used that surplus up.) Elsewhere the words are a plain
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
    /// The shared state of the job whose C worker runs on this thread
    /// (`ffi::handles`: its fast paths skip the load through the `Job`).
    WorkerHot = 3,
    /// How many job locks (and deferring scopes) this thread holds
    /// (`core::job::events`: counted on every hold of a job's lock).
    LocksHeld = 4,
    /// Non-zero while this thread has jobs whose events it must deliver
    /// once it holds no lock (`core::job::events`).
    EventsDeferred = 5,
}

const WORDS: usize = 8;

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom)))]
mod imp {
    std::arch::global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".p2align 6",
        ".globl bgjob_hot_tls",
        ".hidden bgjob_hot_tls",
        ".type bgjob_hot_tls, @object",
        ".size bgjob_hot_tls, 64",
        "bgjob_hot_tls:",
        ".zero 64",
        ".popsection",
    );

    /// The block's offset from this thread's thread pointer, by the TLS
    /// descriptor sequence: the dynamic linker fills the descriptor, and
    /// its resolver returns the offset in `rax`, preserving every other
    /// register. For a block in static TLS (the library linked in, or
    /// loaded while static TLS had room) the resolver is a load and a
    /// return; otherwise glibc's dynamic resolver allocates the block for
    /// the thread on first use. Unlike the initial-exec model it does not
    /// mark the library `STATIC_TLS`, so a `dlopen` of it (Python's ctypes)
    /// never fails for want of static TLS.
    #[inline(always)]
    fn offset() -> usize {
        let off: usize;
        // SAFETY: the standard x86-64 TLS descriptor call (GNU2 dialect):
        // the resolver clobbers only `rax` and the flags; the asm may use
        // the stack (no `nostack`), so the compiler keeps the red zone free
        // and the stack aligned for the call.
        unsafe {
            std::arch::asm!(
                "lea rax, [rip + bgjob_hot_tls@TLSDESC]",
                "call qword ptr [rax + bgjob_hot_tls@TLSCALL]",
                out("rax") off,
                options(readonly),
            );
        }
        off
    }

    /// This thread's block: found once, then read and written word by word.
    #[derive(Clone, Copy)]
    pub(crate) struct Block(usize);

    impl Block {
        #[inline(always)]
        pub(super) fn this_thread() -> Block {
            Block(offset())
        }

        /// Reads word `i` (< `WORDS`).
        #[inline(always)]
        pub(super) fn get(self, i: usize) -> usize {
            let off = self.0 + i * 8;
            let v: usize;
            // SAFETY: reads this thread's own 64-byte block at `off` from the
            // thread pointer (`offset`); `i` is a `Word`, below `WORDS`.
            unsafe {
                std::arch::asm!(
                    "mov {v}, qword ptr fs:[{off}]",
                    off = in(reg) off,
                    v = out(reg) v,
                    options(nostack, readonly, preserves_flags),
                );
            }
            v
        }

        /// Writes word `i` (< `WORDS`).
        #[inline(always)]
        pub(super) fn set(self, i: usize, v: usize) {
            let off = self.0 + i * 8;
            // SAFETY: as in `get`, a write to this thread's own block.
            unsafe {
                std::arch::asm!(
                    "mov qword ptr fs:[{off}], {v}",
                    off = in(reg) off,
                    v = in(reg) v,
                    options(nostack, preserves_flags),
                );
            }
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(loom))))]
mod imp {
    use std::cell::Cell;

    thread_local! {
        static WORDS: [Cell<usize>; super::WORDS] = const { [const { Cell::new(0) }; super::WORDS] };
    }

    /// This thread's block (a `thread_local!` here: each access finds it).
    #[derive(Clone, Copy)]
    pub(crate) struct Block;

    impl Block {
        #[inline(always)]
        pub(super) fn this_thread() -> Block {
            Block
        }

        #[inline(always)]
        pub(super) fn get(self, i: usize) -> usize {
            WORDS.with(|w| w[i].get())
        }

        #[inline(always)]
        pub(super) fn set(self, i: usize, v: usize) {
            WORDS.with(|w| w[i].set(v));
        }
    }
}

const _: () = assert!(
    (Word::Hazard as usize) < WORDS
        && (Word::WorkerHot as usize) < WORDS
        && (Word::EventsDeferred as usize) < WORDS
);

pub(crate) use imp::Block;

/// This thread's words: found once (on x86-64 Linux, the descriptor call),
/// then each read or write is one access. Valid on this thread only.
#[inline(always)]
pub(crate) fn this_thread() -> Block {
    Block::this_thread()
}

impl Block {
    /// This thread's value of `w` (0 until set).
    #[inline(always)]
    pub(crate) fn read(self, w: Word) -> usize {
        self.get(w as usize)
    }

    /// Sets this thread's value of `w`.
    #[inline(always)]
    pub(crate) fn write(self, w: Word, v: usize) {
        self.set(w as usize, v);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Each thread has its own words, starting at 0, and the words do not
    /// overlap.
    #[test]
    fn words_are_per_thread_and_distinct() {
        let words = [
            Word::WorkerHandle,
            Word::WorkerJob,
            Word::Hazard,
            Word::WorkerHot,
            Word::LocksHeld,
            Word::EventsDeferred,
        ];
        std::thread::scope(|s| {
            for t in 1..=4usize {
                s.spawn(move || {
                    for w in words {
                        assert_eq!(this_thread().read(w), 0);
                    }
                    for (k, w) in words.iter().enumerate() {
                        this_thread().write(*w, t * 100 + k);
                    }
                    for _ in 0..1000 {
                        for (k, w) in words.iter().enumerate() {
                            assert_eq!(this_thread().read(*w), t * 100 + k);
                        }
                        std::thread::yield_now();
                    }
                    for w in words {
                        this_thread().write(w, 0);
                    }
                });
            }
        });
    }
}

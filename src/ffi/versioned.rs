//! Versioned structs: C structs that begin with `uint32_t struct_size` (the
//! size the caller compiled against) and only ever grow at the end. One reader
//! and one writer serve every such struct, and each struct's first released
//! size is pinned to the field that ended it, so adding a field can never
//! raise the smallest size accepted (an old caller's struct would then be
//! refused or misread).

use super::bgjob_result;
use std::mem::{align_of, size_of};

/// A struct of the C API that starts with its `struct_size`.
///
/// # Safety
/// `Self` is `#[repr(C)]`, its first field is the `u32` size, every bit
/// pattern a caller can give for its fields is valid, and `V1_SIZE` is at
/// most `size_of::<Self>()`.
pub(crate) unsafe trait Versioned: Sized {
    /// The size of the first released layout: the smallest `struct_size`
    /// accepted.
    const V1_SIZE: usize;
    fn set_struct_size(&mut self, n: u32);
}

/// The size a C compiler gives a struct whose last field ends at `end`
/// (tail padding to the struct's alignment): a first version's size, pinned
/// to the field that ended it.
pub(crate) const fn size_ending_at<T>(end: usize) -> usize {
    end.div_ceil(align_of::<T>()) * align_of::<T>()
}

/// Reads a caller's struct of `struct_size` bytes over `defaults`: fields an
/// older, shorter struct lacks keep their defaults, bytes past ours are
/// ignored. `InvalidArgument` below the first version's size.
///
/// # Safety
/// `p` is non-NULL and points to at least `(*p).struct_size` readable bytes.
pub(crate) unsafe fn read<T: Versioned>(p: *const T, mut defaults: T) -> Result<T, bgjob_result> {
    // SAFETY: non-NULL by contract; the size field is always present.
    let size = unsafe { p.cast::<u32>().read_unaligned() } as usize;
    if size < T::V1_SIZE {
        return Err(bgjob_result::InvalidArgument);
    }
    // Whole alignment units only: a size that cuts a later field (a pointer,
    // a callback) in two leaves it at its default instead of half-copied. A
    // real layout's size is always a multiple of the alignment.
    let n = size.min(size_of::<T>()) / align_of::<T>() * align_of::<T>();
    // SAFETY: the caller's struct holds `size` >= n bytes by contract; at
    // most ours is copied over our defaults.
    unsafe { std::ptr::copy_nonoverlapping(p.cast::<u8>(), (&raw mut defaults).cast::<u8>(), n) };
    Ok(defaults)
}

/// Writes `value` into a caller's buffer of `size` bytes: no more than that
/// (nor than our struct), with `struct_size` set to what was written.
/// `InvalidArgument` below the first version's size.
///
/// # Safety
/// `p` is non-NULL and points to at least `size` writable bytes.
pub(crate) unsafe fn write<T: Versioned>(
    p: *mut T,
    size: usize,
    mut value: T,
) -> Result<(), bgjob_result> {
    if size < T::V1_SIZE {
        return Err(bgjob_result::InvalidArgument);
    }
    let n = size.min(size_of::<T>());
    value.set_struct_size(n as u32);
    // SAFETY: the buffer holds `size` >= n bytes by contract; the source is a
    // whole struct of at least n bytes.
    unsafe { std::ptr::copy_nonoverlapping((&raw const value).cast::<u8>(), p.cast::<u8>(), n) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::{bgjob_child_options, bgjob_info, bgjob_job_options};

    /// The first released sizes, as a 64-bit C compiler laid them out. A field
    /// added to any of these structs must not change them.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn first_version_sizes_are_pinned() {
        assert_eq!(bgjob_job_options::V1_SIZE, 120);
        assert_eq!(bgjob_info::V1_SIZE, 96);
        assert_eq!(bgjob_child_options::V1_SIZE, 64);
    }

    /// A versioned struct of this test only (the module's tests must not name
    /// the modules that use it): `a` ends the first version, `b` came later.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Demo {
        struct_size: u32,
        a: u32,
        b: u64,
    }

    // SAFETY: repr(C), the size first, plain integers, V1_SIZE below the size.
    unsafe impl Versioned for Demo {
        const V1_SIZE: usize = size_ending_at::<Demo>(std::mem::offset_of!(Demo, b));
        fn set_struct_size(&mut self, n: u32) {
            self.struct_size = n;
        }
    }

    fn demo() -> Demo {
        Demo {
            struct_size: size_of::<Demo>() as u32,
            a: 0,
            b: 0,
        }
    }

    /// A caller compiled against the first version: its struct is read with
    /// the later fields at their defaults, and a write stops at its size.
    #[test]
    fn an_old_size_struct_is_read_and_written_within_its_size() {
        let mut defaults = demo();
        defaults.b = 7; // a later field: an old caller cannot set it
        let mut old = demo();
        old.struct_size = Demo::V1_SIZE as u32;
        old.a = 1234;
        old.b = 99; // past the old size: must not be read
        // SAFETY: `old` is a whole struct.
        let got = unsafe { read(&raw const old, defaults) }.expect("old size accepted");
        assert_eq!(got.a, 1234);
        assert_eq!(got.b, 7);

        let mut buf = [0xA5u8; 64];
        let size = Demo::V1_SIZE;
        // SAFETY: `buf` has 64 writable bytes, more than `size`.
        unsafe { write(buf.as_mut_ptr().cast::<Demo>(), size, demo()) }.expect("old size accepted");
        assert_eq!(
            u32::from_ne_bytes(buf[..4].try_into().unwrap()),
            size as u32
        );
        assert!(
            buf[size..].iter().all(|&b| b == 0xA5),
            "wrote past the caller's size"
        );
        // SAFETY: as above.
        let too_small = unsafe { write(buf.as_mut_ptr().cast::<Demo>(), size - 1, demo()) };
        assert_eq!(too_small, Err(bgjob_result::InvalidArgument));
    }
}

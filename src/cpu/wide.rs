//! Loops compiled twice: for 8-lane vectors (AVX2), taken where the CPU has
//! them, and for the baseline x86-64 (4 lanes) or any other target. The
//! arithmetic is the same (Rust never fuses a multiply and an add by
//! itself), so the results are too.

/// Defines `fn $name` from a body that is compiled for the baseline and,
/// on x86-64, again for AVX2, the latter picked at run time. (Wrapping a
/// caller's closure in one AVX2 function instead left the loops 4 lanes
/// wide: the closures were not inlined into it.)
macro_rules! wide_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has just been found to have AVX2.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

pub(crate) use wide_fn;

//! The plain streaming loops (apply, rewind, torch.prune's state) compiled for the scanner's
//! instruction set.

#[cfg(target_arch = "x86_64")]
use super::{level, Level};

/// Run `f` compiled for the widest vector instructions the CPU has (capped by [`super::SIMD_ENV`]).
///
/// For the plain streaming loops (apply, rewind): the crate is built for baseline x86-64, where
/// LLVM widens each mask byte with SSE2 shuffles; inlined here, the same loop vectorises with
/// AVX-512 or AVX2 instead. At LeNet size the data sits in cache, so that loop is the cost.
#[inline(always)]
pub(crate) fn widest<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match level() {
            // SAFETY: `level` reports only what the CPU has.
            Some(Level::Avx512) => unsafe { run_avx512(f) },
            Some(Level::Avx2) => unsafe { run_avx2(f) },
            None => f(),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,popcnt")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

//! The selection engine as the streaming threshold ([`crate::threshold`]) drives it, without a
//! mask. Everything else in `select` (the fused pass that writes masks, the fix-up, the fallback
//! rewrite) stays private to it.
//!
//! One ranking, in the order the selection itself runs it:
//! 1. check the arguments: [`validate_amount`], [`check_alive`];
//! 2. bracket the k-th smallest key: [`estimate_bracket`] from a strided sample, or a caller's
//!    own sample (of [`sample_size`] probes, read by a [`Walk`]) turned into a bracket of
//!    [`BRACKET_SIGMAS`] by [`bracket_around`];
//! 3. [`scan_keys`] every run of weights: alive and below-bracket counts, and the in-bracket
//!    candidates pushed into a [`Sink`] (at most [`CANDIDATE_BYTES`] of them before the caller
//!    gives up on the bracket);
//! 4. [`resolve`] the amount into k, and take the k-th key among the candidates with
//!    [`kth_candidate`] (any [`CandidateKeys`] store).

use super::{scan, simd, Bracket};
use crate::magnitude::{Key, Weights};

pub(crate) use super::kth::{kth_candidate, CandidateKeys};
pub(crate) use super::ranks::bracket_around;
pub(crate) use super::sample::{
    clustered_standard_error, estimate_bracket, sample_size, BRACKET_SIGMAS,
};
pub(crate) use super::scan::{Counts, Sink};
pub(crate) use super::walk::Walk;
pub(crate) use super::{check_alive, resolve, validate_amount, CANDIDATE_BYTES};

/// Counts and in-bracket candidates of one run of weights, writing no mask: the selection's
/// own scan loop (the AVX2 block scanner for f32 and bf16 keys when the CPU has it).
pub(crate) fn scan_keys<K: Key, S: Sink<K>>(
    weights: Weights<'_>,
    alive: Option<&[u8]>,
    bracket: Bracket<K>,
    sink: Option<&mut S>,
) -> Counts {
    let fast = K::BITS == 31 && simd::available();
    scan::scan_weights(weights, alive, None, bracket, sink, fast)
}

"""TEMPORARY pure-NumPy stand-in for the streaming threshold kernel (issue #11, rust8's work).

Same contract as the Rust kernel: `select_threshold` finds the exact global threshold without
allocating masks; `write_pruned` writes one slice's pruned copy and mask. It concatenates the
magnitudes, so it only suits the small test checkpoints. Deleted when the kernel lands on main.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_FLOATS = {"float16": np.float16, "float32": np.float32, "float64": np.float64}


@dataclass(frozen=True)
class Threshold:
    """Prune every ``|w| < magnitude`` and the first ``ties`` weights with ``|w| == magnitude``."""

    magnitude: float
    ties: int
    pruned: int


def _magnitudes(bits: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        values = (bits.astype(np.uint32) << 16).view(np.float32)
    else:
        values = bits.view(_FLOATS[dtype])
    return np.abs(values.astype(np.float64)).ravel()


def select_threshold(
    weights: Sequence[np.ndarray], dtypes: Sequence[str], amount: int | float, names: Sequence[str]
) -> Threshold:
    mags = [_magnitudes(w, d) for w, d in zip(weights, dtypes)]
    for m, name in zip(mags, names):
        if np.isnan(m).any():
            raise ValueError(f"weights[{name}]: contains NaN among alive weights; NaN magnitudes cannot be ranked")
    total = sum(m.size for m in mags)
    k = amount if isinstance(amount, int) else round(amount * total)
    if not 0 <= k <= total:
        raise ValueError(f"amount: a count must lie in [0, {total}], got {k}")
    if k == 0:
        return Threshold(0.0, 0, 0)
    flat = np.concatenate(mags)
    kth = float(np.partition(flat, k - 1)[k - 1])
    return Threshold(kth, k - int(np.count_nonzero(flat < kth)), k)


def write_pruned(
    weights: np.ndarray,
    dtype: str,
    out: np.ndarray | None,
    threshold: Threshold,
    ties_left: int,
    mask: np.ndarray | None,
) -> tuple[int, int]:
    """Returns ``(ties still to prune after this slice, weights pruned in this slice)``."""
    mag = _magnitudes(weights, dtype)
    keep = mag > threshold.magnitude
    tied = np.flatnonzero(mag == threshold.magnitude)
    keep[tied[ties_left:]] = True
    taken = min(ties_left, tied.size)
    if out is not None:
        out[...] = np.where(keep.reshape(weights.shape), weights, 0)
    if mask is not None:
        mask[...] = keep.reshape(mask.shape)
    return ties_left - taken, int(keep.size - np.count_nonzero(keep))

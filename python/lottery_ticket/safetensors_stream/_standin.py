"""TEMPORARY pure-NumPy stand-in for the streaming threshold kernel (issue #11, rust8's work).

Same contract as the Rust kernel: `select_threshold` finds the exact global threshold as a
magnitude key (|w|'s bits with the sign cleared, in a 32-bit key space, 64-bit when an f64
tensor takes part) without allocating masks; `write_pruned` writes one slice's pruned copy
(+0.0 where pruned) and returns the ties it used. It concatenates the keys, so it only suits
small test checkpoints. Deleted when the kernel lands on main.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_FLOATS = {"float16": np.float16, "float32": np.float32, "float64": np.float64}


@dataclass(frozen=True)
class Threshold:
    """Prune every key below ``key`` and the first ``ties`` keys equal to it."""

    key: int
    key_bits: int
    ties: int
    pruned: int


def _keys(bits: np.ndarray, dtype: str, key_bits: int) -> np.ndarray:
    if dtype == "bfloat16":
        values = (bits.astype(np.uint32) << 16).view(np.float32)
    else:
        values = bits.view(_FLOATS[dtype])
    if key_bits == 64:
        return values.astype(np.float64).view(np.uint64).ravel() & np.uint64(2**63 - 1)
    return values.astype(np.float32).view(np.uint32).ravel() & np.uint32(2**31 - 1)


def select_threshold(
    weights: Sequence[np.ndarray], dtypes: Sequence[str], amount: int | float, names: Sequence[str]
) -> Threshold:
    key_bits = 64 if "float64" in dtypes else 32
    nan_key = 0x7FF0000000000000 if key_bits == 64 else 0x7F800000
    keys = [_keys(w, d, key_bits) for w, d in zip(weights, dtypes)]
    for k, name in zip(keys, names):
        if (k > nan_key).any():
            raise ValueError(f"weights[{name}]: contains NaN among alive weights; NaN magnitudes cannot be ranked")
    total = sum(k.size for k in keys)
    count = amount if isinstance(amount, int) else round(amount * total)
    if count == 0:
        return Threshold(0, key_bits, 0, 0)
    flat = np.concatenate(keys)
    kth = int(np.partition(flat, count - 1)[count - 1])
    return Threshold(kth, key_bits, count - int(np.count_nonzero(flat < kth)), count)


def write_pruned(weights: np.ndarray, dtype: str, out: np.ndarray, threshold: Threshold, ties: int) -> int:
    """Write the pruned copy of ``weights`` to ``out``; returns how many of ``ties`` it used."""
    keys = _keys(weights, dtype, threshold.key_bits)
    prune = keys < threshold.key
    tied = np.flatnonzero(keys == threshold.key)[:ties]
    prune[tied] = True
    out[...] = np.where(prune.reshape(weights.shape), 0, weights)
    return int(tied.size)

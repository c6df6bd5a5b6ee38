"""TEMPORARY pure-NumPy stand-in for `lottery_ticket._threshold` (rust8's streaming kernel).

Same API as the facade on its branch: `select_threshold` finds the exact global threshold as a
magnitude key (|w|'s bits with the sign cleared, in a 32-bit key space, 64-bit when an f64
tensor takes part); `write_pruned` writes one tensor's pruned copy (+0.0 where pruned) and
returns the ties it used. It concatenates the keys, so it only suits small test checkpoints.
Deleted when the kernel lands on main.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

_FLOATS = {"float16": np.float16, "float32": np.float32, "float64": np.float64}


class RawTensor(NamedTuple):
    bits: np.ndarray
    dtype: str


@dataclass(frozen=True)
class Threshold:
    key: int
    key_width_bits: int
    ties_pruned: int
    pruned: int
    alive: int


def _keys(t: RawTensor, width: int) -> np.ndarray:
    if t.dtype == "bfloat16":
        values = (t.bits.astype(np.uint32) << 16).view(np.float32)
    else:
        values = t.bits.view(_FLOATS[t.dtype])
    if width == 64:
        return values.astype(np.float64).view(np.uint64).ravel() & np.uint64(2**63 - 1)
    return values.astype(np.float32).view(np.uint32).ravel() & np.uint32(2**31 - 1)


def select_threshold(weights: Sequence[RawTensor], amount: int | float) -> Threshold:
    width = 64 if any(w.dtype == "float64" for w in weights) else 32
    nan_key = 0x7FF0000000000000 if width == 64 else 0x7F800000
    keys = [_keys(w, width) for w in weights]
    for i, k in enumerate(keys):
        if (k > nan_key).any():
            raise ValueError(f"weights[{i}]: contains NaN among alive weights; NaN magnitudes cannot be ranked")
    total = sum(k.size for k in keys)
    count = amount if isinstance(amount, int) else round(amount * total)
    if count == 0:
        return Threshold(0, width, 0, 0, total)
    flat = np.concatenate(keys)
    kth = int(np.partition(flat, count - 1)[count - 1])
    return Threshold(kth, width, count - int(np.count_nonzero(flat < kth)), count, total)


def write_pruned(src: RawTensor, dst: RawTensor, threshold: Threshold, ties_remaining: int) -> int:
    keys = _keys(src, threshold.key_width_bits)
    prune = keys < threshold.key
    tied = np.flatnonzero(keys == threshold.key)[:ties_remaining]
    prune[tied] = True
    dst.bits[...] = np.where(prune.reshape(src.bits.shape), 0, src.bits)
    return int(tied.size)

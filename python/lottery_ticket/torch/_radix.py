"""Magnitude keys and the exact radix select of the torch-op backend (`_select`).

Keys are integers whose order is magnitude order (``rust/magnitude.rs``): the sign bit of each
float's bit pattern is cleared, so ``+0 == -0``, subnormals are ordered, inf is largest and NaN
lies above inf. f16/bf16 widen exactly to f32 keys, and everything to f64 keys when an f64
tensor is present, so mixed dtypes compare exactly. A negative key marks a dead weight.

`kth_key` finds the k-th smallest key of any stream of key tensors (a sample, the in-bracket
candidates, or every weight when the bracket misses) by 16-bit digit histograms, most
significant digit first, all-reduced over ranks, so every rank gets the same exact key.
`kth_in` selects within one tensor: in one process on a GPU by a sort instead, the same key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import torch

from . import _device

DIGIT_BITS = 16
BINS = 1 << DIGIT_BITS
DIGIT_MASK = BINS - 1
F32_ABS = 0x7FFF_FFFF
F64_ABS = 0x7FFF_FFFF_FFFF_FFFF
INF32 = 0x7F80_0000
INF64 = 0x7FF0_0000_0000_0000


class Reduce(Protocol):
    distributed: bool

    def all_reduce(self, t: torch.Tensor, *, op: str = "sum") -> None: ...


def keys(w: torch.Tensor, wide: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """Magnitude keys of ``w``: int32 (sign clear) in the f32 key space, int64 in the f64 one.
    ``out``: a key buffer of ``w``'s length to write (and return) instead of a new tensor."""
    key_dtype, float_dtype, sign_clear = (
        (torch.int64, torch.float64, F64_ABS) if wide else (torch.int32, torch.float32, F32_ABS)
    )
    if out is None:
        if w.dtype != float_dtype:
            w = w.to(float_dtype)  # exact widening (f16 and bf16 subnormals included); NaN stays NaN
        return w.view(key_dtype) & sign_clear
    if w.dtype != float_dtype:
        out.view(float_dtype).copy_(w)
        w = out.view(float_dtype)
    return torch.bitwise_and(w.view(key_dtype), sign_clear, out=out)


def histogram(digits: torch.Tensor, out: torch.Tensor) -> None:
    """``out[d] += count of d in digits``, into the running histogram. Not ``bincount``: it
    reads the input twice more for its minimum and maximum, allocates and clears all bins per
    call, and on CUDA reads the maximum back to the host to size its output."""
    out.index_add_(0, digits, torch.ones((), dtype=out.dtype, device=out.device).expand(digits.numel()))


def shifts(wide: bool) -> list[int]:
    significant = 63 if wide else 31
    digits = -(-significant // DIGIT_BITS)
    return [DIGIT_BITS * d for d in reversed(range(digits))]


def kth_key(
    source: Callable[[], Iterable[torch.Tensor]],
    rank: int,
    wide: bool,
    ranks: Reduce,
    device: torch.device,
    *,
    keep_local: bool = False,
) -> tuple[int, int, int | None]:
    """The ``rank``-th smallest (1-based) non-negative key that ``source()`` yields, over all
    ranks; how many keys equal to it fall within the first ``rank`` (the ties to prune); and,
    with ``keep_local``, how many of those equal keys this rank holds. ``source`` is called
    once per digit level; ``rank`` must not exceed the number of keys."""
    prefix, local = 0, None
    levels = shifts(wide)
    for level, shift in enumerate(levels):
        hist = torch.zeros(BINS + 1, dtype=torch.int64, device=device)
        high = prefix >> (shift + DIGIT_BITS)
        for k in source():
            if level == 0:  # the top digit of a non-negative key fits in one digit
                digit = torch.where(k >= 0, k >> shift, BINS)
            else:  # dead keys (negative) never equal the non-negative prefix
                same = (k >> (shift + DIGIT_BITS)) == high
                digit = torch.where(same, (k >> shift if shift else k) & DIGIT_MASK, BINS)
            histogram(digit, hist)
        if keep_local and level == len(levels) - 1:
            local = hist.clone()
        ranks.all_reduce(hist)
        counts = hist[:BINS].cumsum(0)
        digit_at = int(torch.searchsorted(counts, torch.tensor([rank], device=device))[0])
        rank -= int(counts[digit_at - 1]) if digit_at > 0 else 0
        prefix |= digit_at << shift
    local_ties = int(local[prefix & DIGIT_MASK]) if local is not None else None
    return prefix, rank, local_ties


def kth_in(t: torch.Tensor, wide: bool, ranks: Reduce, device: torch.device) -> Callable[[int], tuple[int, int]]:
    """``rank -> (key, ties)`` of `kth_key` over the one tensor ``t`` (the sample, the candidates),
    for as many ranks as needed. In one process on a GPU, ``t`` is sorted once instead: keys of a
    narrow bracket share their top digits, and the histogram's atomic adds pile onto a few bins."""
    if _device.is_host(device) or ranks.distributed:
        return lambda rank: kth_key(lambda: [t], rank, wide, ranks, device)[:2]
    ordered = torch.sort(t).values
    return lambda rank: kth_sorted(ordered, rank)


def kth_sorted(ordered: torch.Tensor, rank: int) -> tuple[int, int]:
    """`kth_key`'s (key, ties) from keys sorted ascending, dead (negative) keys first."""
    zero = torch.zeros(1, dtype=ordered.dtype, device=ordered.device)
    dead = torch.searchsorted(ordered, zero)  # the dead keys, all below zero
    key = ordered[dead + (rank - 1)]
    first = torch.searchsorted(ordered, key)
    dead_n, key_v, first_n = torch.cat([dead, key.to(torch.int64), first]).tolist()
    return key_v, dead_n + rank - first_n

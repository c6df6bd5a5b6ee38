"""Exact magnitude selection with torch ops, on the tensors' own device: the torch-op backend.

It computes the same masks as the Rust kernels (``rust/select/``), bit for bit, with a radix
select over integer magnitude keys (``rust/magnitude.rs``): the sign bit of each float's bit
pattern is cleared, so integer order is magnitude order (``+0 == -0``, subnormals ordered, inf
largest, NaN above inf). f16/bf16 widen exactly to f32 keys, and everything to f64 keys when an
f64 tensor is present, so mixed dtypes compare exactly.

Passes, each one read of the weights in chunks of at most `CHUNK` elements (the only
tensor-sized temporaries are one chunk's keys and flags): a 16-bit digit histogram per level,
most significant digit first, summed over all tensors (and all-reduced over ranks by `ranks`),
walked to the digit holding rank k; then one pass writing the masks, where weights whose key
equals the threshold are pruned in (tensor, flat index) order up to the tie count. Counts are
int64 throughout, so selections above 2^31 elements are exact. No concatenated copy, no sort.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from .._validation import AmountError

DIGIT_BITS = 16
BINS = 1 << DIGIT_BITS
DIGIT_MASK = BINS - 1
# Elements per chunk: bounds the per-pass temporaries (keys, flags, digits) at a few hundred MiB.
CHUNK = 1 << 24
_F32_ABS = 0x7FFF_FFFF
_F64_ABS = 0x7FFF_FFFF_FFFF_FFFF
_INF32 = 0x7F80_0000
_INF64 = 0x7FF0_0000_0000_0000


@dataclass
class Piece:
    """One local tensor as the selection sees it (a whole tensor, or this rank's shard of one)."""

    weight: torch.Tensor  # flat, any supported float dtype
    alive: torch.Tensor | None  # flat bool (None: all alive)
    label: str  # how errors name it, e.g. "weights['fc.weight']"
    counted: bool = True  # False: a replica whose twin on another rank is counted instead
    offset: int = 0  # flat offset of a shard in its whole tensor (orders ties across shards)
    # A shard that is not one contiguous run of its whole tensor's flat order (Shard(d), d > 0):
    # (local shape, global offset, global shape), to place its ties in whole-tensor order.
    block: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None


class Ranks(Protocol):
    """How the selection agrees across processes (one process: every call is trivial)."""

    distributed: bool

    def all_reduce(self, t: torch.Tensor, *, op: str = "sum") -> None: ...

    def tie_budgets(
        self,
        ties: torch.Tensor,
        local_ties: torch.Tensor | None,
        count_ties: Callable[[], torch.Tensor],
        tied_at: Callable[[int], torch.Tensor],
    ) -> list[torch.Tensor] | torch.Tensor:
        """Ties each piece prunes: a list (one start budget per piece) or one running budget.
        ``tied_at(i)``: local flat positions of piece i's alive keys at the threshold, ascending."""
        ...

    def foreign_nan(self) -> str: ...


class OneProcess:
    distributed = False

    def all_reduce(self, t: torch.Tensor, *, op: str = "sum") -> None:
        pass

    def tie_budgets(
        self,
        ties: torch.Tensor,
        local_ties: torch.Tensor | None,
        count_ties: Callable[[], torch.Tensor],
        tied_at: Callable[[int], torch.Tensor],
    ) -> torch.Tensor:
        return ties

    def foreign_nan(self) -> str:  # pragma: no cover - one process always finds its own NaN
        return "weights: contain NaN among alive weights"


def keys(w: torch.Tensor, wide: bool) -> torch.Tensor:
    """Magnitude keys of ``w``: int32 (sign clear) in the f32 key space, int64 in the f64 one."""
    if wide:
        if w.dtype != torch.float64:
            w = w.to(torch.float64)  # exact widening; NaN stays NaN
        return w.view(torch.int64) & _F64_ABS
    if w.dtype == torch.float32:
        return w.view(torch.int32) & _F32_ABS
    if w.dtype == torch.bfloat16:  # bf16 is the top half of an f32
        return (w.view(torch.int16).to(torch.int32) & 0x7FFF) << 16
    return w.to(torch.float32).view(torch.int32) & _F32_ABS  # f16: exact, subnormals included


def histogram(digits: torch.Tensor, out: torch.Tensor) -> None:
    """``out[d] += count of d in digits``, into the running histogram. Not ``bincount``: it
    allocates and clears all bins per call (costly for small tensors on the host) and on CUDA
    reads the maximum digit back to the host to size its output."""
    out.index_add_(0, digits, torch.ones((), dtype=out.dtype, device=out.device).expand(digits.numel()))


def _chunks(piece: Piece) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    n = piece.weight.numel()
    for start in range(0, n, CHUNK):
        alive = piece.alive[start : start + CHUNK] if piece.alive is not None else None
        yield piece.weight[start : start + CHUNK], alive


def _shifts(wide: bool) -> list[int]:
    significant = 63 if wide else 31
    digits = -(-significant // DIGIT_BITS)
    return [DIGIT_BITS * d for d in reversed(range(digits))]


def resolve(amount: int | float, alive: int) -> int | None:
    """Weights to prune (None: an int count above the alive count). Mirrors `select::resolve`."""
    if isinstance(amount, float):
        return round(amount * float(alive))  # round half to even, as the Rust kernels
    return amount if amount <= alive else None


class _Selection:
    def __init__(self, pieces: Sequence[Piece], wide: bool, device: torch.device, ranks: Ranks) -> None:
        self.pieces, self.wide, self.device, self.ranks = pieces, wide, device, ranks
        self.key_dtype = torch.int64 if wide else torch.int32

    @property
    def inf(self) -> int:
        return _INF64 if self.wide else _INF32

    def digit_histogram(self, shift: int, prefix: torch.Tensor | None) -> torch.Tensor:
        """Alive keys per digit at ``shift`` among keys whose higher digits equal ``prefix``'s
        (all keys at the top level, ``prefix`` None); the last bin collects everything else."""
        hist = torch.zeros(BINS + 1, dtype=torch.int64, device=self.device)
        high = prefix >> (shift + DIGIT_BITS) if prefix is not None else None
        for piece in self.pieces:
            if piece.counted:
                for w, alive in _chunks(piece):
                    k = keys(w, self.wide)
                    digit = k >> shift if shift else k
                    if high is not None:  # below the top level (whose digit fits), keep one digit
                        digit = digit & DIGIT_MASK
                    select = alive
                    if high is not None:
                        same = (k >> (shift + DIGIT_BITS)) == high
                        select = same if select is None else select & same
                    if select is not None:
                        digit = torch.where(select, digit, BINS)
                    histogram(digit, hist)
        return hist

    def nan_flags(self) -> torch.Tensor:
        """Per piece: NaN among its alive weights. Run only when the top-level histogram shows
        keys at or above inf's top digit, which is rare, so the common pass stays lean."""
        flags = []
        for piece in self.pieces:
            found = torch.zeros((), dtype=torch.bool, device=self.device)
            if piece.counted:
                for w, alive in _chunks(piece):
                    bad = keys(w, self.wide) > self.inf
                    found |= (bad if alive is None else bad & alive).any()
            flags.append(found)
        return torch.stack(flags)

    def count_equal(self, threshold: torch.Tensor) -> torch.Tensor:
        """Alive keys equal to ``threshold`` per piece (0 for uncounted replicas)."""
        counts = torch.zeros(len(self.pieces), dtype=torch.int64, device=self.device)
        for i, piece in enumerate(self.pieces):
            if piece.counted:
                for w, alive in _chunks(piece):
                    eq = keys(w, self.wide) == threshold
                    counts[i] += (eq if alive is None else eq & alive).sum()
        return counts

    def tied_at(self, i: int, threshold: torch.Tensor) -> torch.Tensor:
        """Local flat positions of piece i's alive keys equal to ``threshold`` (replicas too:
        each writes its own mask), ascending; as large as the tie count only."""
        piece, found, start = self.pieces[i], [], 0
        for w, alive in _chunks(piece):
            eq = keys(w, self.wide) == threshold
            found.append(torch.nonzero(eq if alive is None else eq & alive).reshape(-1) + start)
            start += w.numel()
        return torch.cat(found) if found else torch.zeros(0, dtype=torch.int64, device=self.device)

    def write(
        self, out: list[torch.Tensor], threshold: torch.Tensor, budgets: list[torch.Tensor] | torch.Tensor
    ) -> None:
        running = budgets if isinstance(budgets, torch.Tensor) else None
        for i, (piece, mask) in enumerate(zip(self.pieces, out)):
            budget = running if running is not None else budgets[i]
            start = 0
            for w, alive in _chunks(piece):
                k = keys(w, self.wide)
                keep = torch.gt(k, threshold, out=mask[start : start + w.numel()])
                eq = k == threshold
                if alive is not None:
                    keep &= alive
                    eq &= alive
                budget = _keep_late_ties(keep, eq, budget)
                start += w.numel()
            if running is not None:
                running = budget


def _keep_late_ties(keep: torch.Tensor, eq: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """Prune the first ``budget`` ties of this chunk (keep the rest); returns what is left."""
    count = eq.sum()
    take = torch.minimum(budget, count)
    if keep.device.type == "cpu":
        # Host values are free here: skip the running count except at the one boundary chunk.
        t, c = int(take), int(count)
        if t == 0:
            keep |= eq
        elif t < c:
            keep |= eq & (eq.cumsum(0, dtype=torch.int32) > t)
    else:
        keep |= eq & (eq.cumsum(0, dtype=torch.int32) > take)
    return budget - take


def select(pieces: Sequence[Piece], amount: int | float, ranks: Ranks, wide: bool) -> list[torch.Tensor]:
    """Flat bool masks (True = kept) pruning ``amount`` of the alive weights of ``pieces``.

    ``wide``: rank in the f64 key space (an f64 tensor is involved on some rank). Raises
    ValueError for NaN among alive weights or a count above the alive count, before writing.
    """
    device = pieces[0].weight.device
    run = _Selection(pieces, wide, device, ranks)
    shifts = _shifts(wide)
    hist = run.digit_histogram(shifts[0], None)
    ranks.all_reduce(hist)
    alive, special = (
        int(v) for v in torch.stack([hist[:BINS].sum(), hist[run.inf >> shifts[0] : BINS].sum()]).tolist()
    )
    if special:  # inf or NaN somewhere (every rank sees the same reduced histogram)
        local_nan = run.nan_flags()
        found = local_nan.sum()
        ranks.all_reduce(found)
        if int(found):
            bad = [p.label for p, flag in zip(pieces, local_nan.tolist()) if flag]
            if bad:
                raise ValueError(f"{bad[0]}: contains NaN among alive weights; NaN magnitudes cannot be ranked")
            raise ValueError(ranks.foreign_nan())
    k = resolve(amount, alive)
    if k is None:
        raise AmountError(amount, alive)
    sizes = [p.weight.numel() for p in pieces]
    buffer = torch.empty(sum(sizes), dtype=torch.bool, device=device)
    out = list(torch.split(buffer, sizes))
    if k == 0 or k == alive:
        for piece, mask in zip(pieces, out):
            if k == alive:
                mask.fill_(False)
            elif piece.alive is None:
                mask.fill_(True)
            else:
                mask.copy_(piece.alive)
        return out
    rank = torch.tensor([k], dtype=torch.int64, device=device)
    prefix = torch.zeros((), dtype=run.key_dtype, device=device)
    local_ties = local = None
    for level, shift in enumerate(shifts):
        if level > 0:
            hist = run.digit_histogram(shift, prefix)
            local = hist.clone() if ranks.distributed and level == len(shifts) - 1 else None
            ranks.all_reduce(hist)
        counts = hist[:BINS].cumsum(0)
        digit = torch.searchsorted(counts, rank)  # first bin whose running count reaches rank
        before = torch.where(digit > 0, counts[(digit - 1).clamp(min=0)], 0)
        rank = rank - before
        prefix = prefix | (digit[0].to(run.key_dtype) << shift)
        if local is not None:
            local_ties = local[digit[0]]
    ties = rank[0]
    budgets = ranks.tie_budgets(ties, local_ties, lambda: run.count_equal(prefix), lambda i: run.tied_at(i, prefix))
    run.write(out, prefix, budgets)
    return out

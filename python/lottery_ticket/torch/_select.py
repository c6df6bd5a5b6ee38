"""Exact magnitude selection with torch ops, on the tensors' own device: the torch-op backend.

The same design, and bit for bit the same masks, as the Rust kernels (``rust/select/mod.rs``):

1. A strided sample of the alive keys (`_radix.keys`) brackets the k-th smallest key.
2. One counting pass compares every key with the bracket's two ends, counts the alive and the
   kept-at-or-above-the-bracket weights and compacts the in-bracket candidates (keys and
   positions). Into a mask buffer of its own it writes the provisional mask (kept at or above
   the bracket), so a fresh selection needs no second pass over the weights.
3. The exact k-th key among the candidates (`_radix.kth_key`) and its ties fix up only the
   candidates; masks the caller passed (``out=``, possibly the survivor masks themselves) are
   written by one pass after the counts are known, so bad input leaves them untouched.
4. Only when the bracket misses or the candidates overflow their budget does the radix select
   run over every weight, followed by one writing pass.

A GPU with ``LOTTERY_TICKET_FUSED=1`` runs passes 2 and 3 as Triton kernels (`_fused`).

Each pass runs its ops per unit (`_units`): a chunk of a large tensor, or small tensors packed
side by side, so a model of many small tensors costs few ops (on a GPU, few launches). Counts
are int64 (selections above 2^31 elements are exact), every tensor-sized temporary is one
chunk of at most `CHUNK` elements (cache-sized; up to `DEVICE_CHUNK` on a GPU), and the counts,
the sample and the candidates' histograms are all-reduced over ranks (`Ranks`), so every rank
takes the same path. In one process on a GPU, the sample and the candidates are sorted instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from itertools import accumulate
from math import ceil, floor, sqrt

import torch

from .._validation import AmountError
from . import _device, _fused
from ._buffers import Buffers, Candidates, compare, count_true, prefaulted
from ._radix import INF32, INF64, keys, kth_in, kth_key
from ._ranks import Piece, Ranks, budget_list
from ._units import Packer, Unit, packed_size, plan

# Host chunks keep a pass's temporaries (keys, flags, a comparison's int32 result) in cache, so
# only the first op of a chunk reads memory. A GPU's are 16x larger, up to DEVICE_CHUNK: each
# costs launches and host syncs, and device memory is fast.
CHUNK = 1 << 20
DEVICE_CHUNK = 1 << 26
# Up to this many weights are not sampled: every alive weight is a candidate.
SAMPLE_ALL = 1 << 16
# Sample size at 100 M weights, and its bounds (the Rust kernels' `select::sample` figures).
SAMPLES, MIN_SAMPLES, MAX_SAMPLES = 1 << 18, 1 << 14, 1 << 20
# Half-width of the bracket in standard deviations of the sampled quantile.
BRACKET_SIGMAS = 5.0
# Candidates kept before falling back to the radix select over every weight: this many, or one
# in CANDIDATE_SHARE of the weights if more.
MIN_CANDIDATES, CANDIDATE_SHARE = 1 << 22, 16


def resolve(amount: int | float, alive: int) -> int | None:
    """Weights to prune (None: an int count above the alive count). Mirrors `select::resolve`."""
    if isinstance(amount, float):
        return round(amount * float(alive))  # round half to even, as the Rust kernels
    return amount if amount <= alive else None


def _chunks(piece: Piece, chunk: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    for start in range(0, piece.weight.numel(), chunk):
        alive = piece.alive[start : start + chunk] if piece.alive is not None else None
        yield start, piece.weight[start : start + chunk], alive


class Selection:
    """One selection over its pieces: the units of its passes, their buffers and the passes."""

    def __init__(self, pieces: Sequence[Piece], wide: bool, ranks: Ranks) -> None:
        self.pieces, self.wide, self.ranks = pieces, wide, ranks
        self.device = pieces[0].weight.device
        self.key_dtype = torch.int64 if wide else torch.int32
        self.float_dtype = torch.float64 if wide else torch.float32
        self.nan_from = (INF64 if wide else INF32) + 1
        total = sum(p.weight.numel() for p in pieces)
        self.chunk = CHUNK if _device.is_host(self.device) else max(CHUNK << 4, min(DEVICE_CHUNK, total // 16))
        self.units = plan(pieces, self.chunk, pack=True)
        self.packer = Packer(pieces, packed_size(self.units), self.device)
        self._buffers: Buffers | None = None
        self.fused = _fused.kernels_for(self.device, [t for p in pieces for t in (p.weight, p.alive)])

    def buffers(self) -> Buffers:
        """Temporaries for the largest unit, shared by every pass of the selection."""
        if self._buffers is None:
            self._buffers = Buffers(max((u.n for u in self.units), default=0), self.key_dtype, self.device)
        return self._buffers

    def alive_keys(self, w: torch.Tensor, alive: torch.Tensor | None) -> torch.Tensor:
        k = keys(w, self.wide)
        return k if alive is None else torch.where(alive, k, -1)

    def unit_keys(self, unit: Unit, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The unit's keys (into ``out`` if given) and survivor flags."""
        scratch = out if out is not None else self.buffers().keys
        w = self.packer.weights(unit, scratch.view(self.float_dtype))
        return keys(w, self.wide, out=None if out is None else out[: unit.n]), self.packer.alive(unit)

    def every_key(self) -> Iterator[torch.Tensor]:
        for unit in self.units:
            if unit.counted:
                k, alive = self.unit_keys(unit)
                yield k if alive is None else torch.where(alive, k, -1)

    def reduced(self, values: list[int]) -> list[int]:
        if not self.ranks.distributed:  # no round trip through the device
            return values
        t = torch.tensor(values, dtype=torch.int64, device=self.device)
        self.ranks.all_reduce(t)
        return [int(v) for v in t.tolist()]

    def bracket(self, amount: int | float) -> tuple[int, int]:
        """[lo, hi): keys below lo are pruned, at or above hi kept, the rest are candidates."""
        local_n = sum(p.weight.numel() for p in self.pieces if p.counted)
        (total,) = self.reduced([local_n])
        if total <= SAMPLE_ALL or amount == 0:
            return 0, self.nan_from
        ratio = total / 1e8
        probes = int(min(max(SAMPLES * (ratio ** (2 / 3) if ratio < 1 else ratio), MIN_SAMPLES), MAX_SAMPLES))
        mine = max(1, round(probes * local_n / total)) if local_n else 0
        sample = self._sample(mine, local_n)
        m, probed = self.reduced([int((sample >= 0).sum()), mine])
        if m == 0:
            return 0, self.nan_from
        q = amount if isinstance(amount, float) else min(1.0, amount / (total * m / probed))
        spread = BRACKET_SIGMAS * sqrt(m * q * (1 - q)) + 2.0
        lo_rank, hi_rank = floor(q * m - spread), ceil(q * m + spread)
        # 1-based rank r of the sample is the Rust kernels' 0-based index r - 1.
        kth = kth_in(sample, self.wide, self.ranks, self.device)
        lo = kth(lo_rank + 1)[0] if lo_rank > 0 else 0
        hi = self.nan_from
        if hi_rank < m:
            hi = kth(hi_rank + 1)[0] + 1
        lo = min(lo, self.nan_from)  # a sampled NaN: the bounds stay sorted
        return lo, min(max(lo, hi), self.nan_from)

    def _sample(self, probes: int, local_n: int) -> torch.Tensor:
        """Alive keys at ``probes`` evenly spaced positions of the concatenated counted pieces
        (a fractional stride, so a periodic layout cannot pin every probe to one column)."""
        if probes == 0:
            return torch.zeros(0, dtype=self.key_dtype, device=self.device)
        at = (torch.arange(probes, dtype=torch.int64, device=self.device) * local_n + local_n // 2) // probes
        found, start = [], 0
        for unit in self.units:
            if unit.counted:
                # Probe j sits at (j * local_n + local_n // 2) // probes: the first at or after a position, on the host.
                lo, hi = (max(0, -((local_n // 2 - p * probes) // local_n)) for p in (start, start + unit.n))
                hi = min(hi, probes)
                if hi > lo:
                    idx = at[lo:hi] - start
                    w = self.packer.weights(unit, self.buffers().keys.view(self.float_dtype))
                    alive = self.packer.alive(unit)
                    # index_select: advanced indexing's general gather took twice as long on the host.
                    picked = torch.index_select(w, 0, idx)
                    found.append(self.alive_keys(picked, None if alive is None else torch.index_select(alive, 0, idx)))
                start += unit.n
        return torch.cat(found)

    def count(self, lo: int, hi: int, flat: torch.Tensor | None, cap: int) -> tuple[list[int], list[bool], Candidates]:
        """The counting pass over the bracket [lo, hi): [alive, kept at or above lo, in the
        bracket] counts of the counted pieces, whether each piece holds NaN among its alive
        weights, and the candidates (up to ``cap``). ``flat``: every piece's mask, concatenated,
        to write provisionally (kept at or above the bracket)."""
        found = Candidates(cap)
        if self.fused is not None:
            return *_fused.count(self, self.fused, lo, hi, flat, found), found
        buffers = self.buffers()
        # Per-unit device values, read back once at the end (a read per unit would sync a GPU).
        alive_n, kept_n, max_keys, owners = [], [], [], []
        unmasked = 0
        for unit in self.units:
            n = unit.n
            k, alive = self.unit_keys(unit, buffers.keys)
            keep = flat[unit.base : unit.base + n] if flat is not None else buffers.spare(n)
            compare(torch.ge, k, lo, keep, buffers.compared)
            if alive is not None:
                keep &= alive
            inside = buffers.flags[:n]
            compare(torch.ge, k, hi, inside, buffers.compared)
            torch.gt(keep, inside, out=inside)  # kept and below hi
            if unit.counted:
                if alive is None:
                    unmasked += n
                else:
                    alive_n.append(count_true(alive))
                kept_n.append(count_true(keep, written=True))
                max_keys.append(k.max())
                owners.append(unit)
            found.add(unit, buffers.flags, partial(torch.index_select, k, 0))
        zero = torch.zeros(1, dtype=torch.int64, device=self.device)
        totals = [torch.stack(t).sum().view(1) if t else zero for t in (alive_n, kept_n)]
        read = torch.cat([*totals, torch.stack(max_keys).to(torch.int64) if max_keys else zero[:0]]).tolist()
        suspects = {s.piece for unit, top in zip(owners, read[2:]) if top >= self.nan_from for s in unit.spans}
        nan = [i in suspects and self.alive_nan(p) for i, p in enumerate(self.pieces)]
        return [unmasked + read[0], read[1], found.counted], nan, found

    def alive_nan(self, piece: Piece) -> bool:
        """Whether the piece holds NaN among its alive weights (a unit's largest key says only
        that one of its pieces may: a packed unit holds several)."""
        return any(
            bool((self.alive_keys(w, alive) >= self.nan_from).any()) for _, w, alive in _chunks(piece, self.chunk)
        )

    def count_equal(self, threshold: int) -> torch.Tensor:
        """Alive keys equal to ``threshold`` per piece (0 for uncounted replicas)."""
        counts = torch.zeros(len(self.pieces), dtype=torch.int64, device=self.device)
        for i, piece in enumerate(self.pieces):
            if piece.counted:
                for _, w, alive in _chunks(piece, self.chunk):
                    counts[i] += count_true(self.alive_keys(w, alive) == threshold, written=True)
        return counts

    def tied_at(self, i: int, threshold: int) -> torch.Tensor:
        """Local flat positions of piece i's alive keys equal to ``threshold`` (replicas too:
        each writes its own mask), ascending; as large as the tie count only."""
        piece = self.pieces[i]
        found = [
            torch.nonzero(self.alive_keys(w, alive) == threshold).reshape(-1) + start
            for start, w, alive in _chunks(piece, self.chunk)
        ]
        return torch.cat(found) if found else torch.zeros(0, dtype=torch.int64, device=self.device)

    def write(self, out: list[torch.Tensor], threshold: int, budgets: list[torch.Tensor] | torch.Tensor | None) -> None:
        """Masks kept above ``threshold``; ties at it are kept after the first ``budgets`` of
        them (None: every tie is kept; the caller places them). ``out`` may be the survivor
        masks themselves: each chunk reads its survivors before writing them."""
        # Tie budgets are spent in each piece's own order: then every unit is one piece's.
        units = self.units if budgets is None else plan(self.pieces, self.chunk, pack=False)
        buffers = self.buffers()
        budget = budgets if isinstance(budgets, torch.Tensor) else None  # one running budget
        for unit, previous in zip(units, [None, *units]):
            first = unit.spans[0]
            if isinstance(budgets, list) and (previous is None or previous.spans[0].piece != first.piece):
                budget = budgets[first.piece]
            n = unit.n
            # A packed unit's masks are scattered from a buffer; alive is a copy already.
            dst = self.packer.bools(1)[:n] if unit.packed else out[first.piece][first.start : first.stop]
            if self.fused is not None and budget is None:
                _fused.write(self, self.fused, unit, dst, threshold)
                if unit.packed:
                    self.packer.scatter(unit, dst, out)
                continue
            k, alive = self.unit_keys(unit, buffers.keys)
            eq = None
            if budget is not None:
                eq = buffers.flags[:n]
                compare(torch.eq, k, threshold, eq, buffers.compared)
                if alive is not None:
                    eq &= alive
            if alive is None:
                compare(torch.gt, k, threshold, dst, buffers.compared)
            else:  # dst may be alive itself: read it before writing
                above = buffers.spare(n)
                compare(torch.gt, k, threshold, above, buffers.compared)
                torch.logical_and(above, alive, out=dst)
            if eq is not None and budget is not None:
                budget = _keep_late_ties(dst, eq, budget)
            if unit.packed:
                self.packer.scatter(unit, dst, out)


def _keep_late_ties(keep: torch.Tensor, eq: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """Prune the first ``budget`` ties of this chunk (keep the rest); returns what is left."""
    count = count_true(eq, written=True)
    take = torch.minimum(budget, count)
    if _device.is_host(keep.device):
        # Host values are free here: skip the running count except at the one boundary chunk.
        t, c = int(take), int(count)
        if t == 0:
            keep |= eq
        elif t < c:
            keep |= eq & (eq.cumsum(0, dtype=torch.int32) > t)
    else:
        keep |= eq & (eq.cumsum(0, dtype=torch.int32) > take)
    return budget - take


def select(
    pieces: Sequence[Piece], amount: int | float, ranks: Ranks, wide: bool, out: list[torch.Tensor] | None = None
) -> list[torch.Tensor]:
    """Flat bool masks (True = kept) pruning ``amount`` of the alive weights of ``pieces``.

    ``wide``: rank in the f64 key space (an f64 tensor is involved on some rank). ``out``: flat
    bool tensors to write (they may be the pieces' survivor masks); default: a fresh buffer.
    Raises ValueError for NaN among alive weights or a count above the alive count, before
    writing anything the caller can see.
    """
    # A later round writes the caller's masks by a second pass over the weights, not from a
    # fresh buffer copied over them: on a GPU the copy saves a little time for a byte per weight
    # more memory, and on the host it faults in the pages an in-place round exists to avoid.
    run = Selection(pieces, wide, ranks)
    device = run.device
    sizes = [p.weight.numel() for p in pieces]
    flat = None
    if out is None:
        flat = prefaulted(sum(sizes), torch.bool, device)
        out = list(torch.split(flat, sizes))
    lo, hi = run.bracket(amount)
    cap = max(MIN_CANDIDATES, sum(sizes) // CANDIDATE_SHARE)
    counts, local_nan, found = run.count(lo, hi, flat, cap)
    alive, kept, inside, nan, overflowed = run.reduced([*counts, int(any(local_nan)), int(found.overflow)])
    if nan:
        bad = [p.label for p, flag in zip(pieces, local_nan) if flag]
        if bad:
            raise ValueError(f"{bad[0]}: contains NaN among alive weights; NaN magnitudes cannot be ranked")
        raise ValueError(ranks.foreign_nan())
    below = alive - kept
    k = resolve(amount, alive)
    if k is None:
        raise AmountError(amount, alive)
    if k == 0 or k == alive:
        for piece, mask in zip(pieces, out):
            if k == alive:
                mask.fill_(False)
            elif piece.alive is None:
                mask.fill_(True)
            elif mask.data_ptr() != piece.alive.data_ptr():
                mask.copy_(piece.alive)
        return out
    if overflowed or not below <= k <= below + inside:
        threshold, ties, local_ties = kth_key(run.every_key, k, wide, ranks, device, keep_local=ranks.distributed)
        budgets = ranks.tie_budgets(
            torch.tensor(ties, device=device),
            None if local_ties is None else torch.tensor(local_ties, device=device),
            lambda: run.count_equal(threshold),
            lambda i: run.tied_at(i, threshold),
        )
        run.write(out, threshold, budgets)
        return out
    positions = torch.cat(found.positions or [torch.zeros(0, dtype=torch.int64, device=device)])
    candidates = torch.cat(found.keys or [torch.zeros(0, dtype=run.key_dtype, device=device)])
    bases = torch.tensor([0, *accumulate(sizes)][:-1], device=device)

    def owners(at: torch.Tensor) -> torch.Tensor:
        """The piece of each flat position (an empty piece shares its base with the next)."""
        return torch.searchsorted(bases, at, right=True) - 1

    if k == below:  # the provisional mask is exact: keep every candidate
        threshold, ties = lo, 0
    else:
        counted = torch.tensor([p.counted for p in pieces], device=device)
        ranked = candidates if all(p.counted for p in pieces) else candidates[counted[owners(positions)]]
        threshold, ties = kth_in(ranked, wide, ranks, device)(k - below)
    tie_at = positions[candidates == threshold]
    if not ranks.distributed:  # one running budget over the pieces in order: the first ``ties`` go
        if flat is not None:
            flat[positions[candidates < threshold]] = False
            if ties:
                flat[tie_at[:ties]] = False
        else:
            run.write(out, threshold, None)
            again = tie_at[ties:]
            if again.numel():  # the ties kept again, piece by piece (few pieces hold any)
                owner = owners(again)
                for i in torch.unique(owner).tolist():
                    out[i][again[owner == i] - bases[i]] = True
        return out
    tie_owner = owners(tie_at)
    tie_counts = torch.bincount(tie_owner, minlength=len(pieces)).tolist()
    tied = list(torch.split(tie_at - bases[tie_owner], tie_counts))
    mine = torch.tensor([c if p.counted else 0 for c, p in zip(tie_counts, pieces)], device=device)
    shares = budget_list(
        ranks.tie_budgets(torch.tensor(ties, device=device), mine.sum(), lambda: mine, lambda i: tied[i]), tied
    )
    if flat is not None:
        flat[positions[candidates < threshold]] = False
        for mask, t, budget in zip(out, tied, shares):
            if budget:
                mask[t[:budget]] = False
    else:
        run.write(out, threshold, None)
        for mask, t, budget in zip(out, tied, shares):
            if budget < len(t):
                mask[t[budget:]] = True
    return out

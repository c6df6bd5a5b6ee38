"""Units of work of the torch-op selection's passes (`_select`): a chunk of one large tensor, or
a run of small consecutive tensors packed side by side into one buffer.

Every pass runs a fixed number of torch ops per unit. Per tensor, a BERT-size model (~200
tensors, most of them small) would cost thousands of ops per selection: on a GPU each is a
kernel launch and host work that dwarfs the pass over the weights itself. Packing copies the
small tensors once per pass, cheap on a GPU's bandwidth (`HOST_PACK_BELOW` on the host).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import torch

from . import _device
from ._buffers import empty

if TYPE_CHECKING:
    from ._ranks import Piece

# On the host, tensors below this many elements are packed: there an op costs little and the
# copy is real traffic. On a device, every tensor that fits a chunk is: there a unit's ops and
# host syncs cost more than copying even a chunk's worth of weights.
HOST_PACK_BELOW = 1 << 16


class Span(NamedTuple):  # a tuple: a unit per few tensors, made on every call
    """Elements [start, stop) of piece ``piece`` (a unit's spans lie side by side in order)."""

    piece: int
    start: int
    stop: int


@dataclass
class Unit:
    spans: list[Span]
    base: int  # flat offset of the unit in the concatenation of every piece (candidates' positions)
    counted: bool  # every span's piece is counted (a unit never mixes counted pieces and replicas)
    n: int = 0

    @property
    def packed(self) -> bool:
        return len(self.spans) > 1


def plan(pieces: Sequence[Piece], chunk: int, pack: bool) -> list[Unit]:
    """The units covering ``pieces`` in order (empty pieces have none). ``pack``: run small
    tensors together (False: one piece per unit, e.g. to spend tie budgets piece by piece)."""
    device = pieces[0].weight.device if pieces else torch.device("cpu")
    pack_below = (HOST_PACK_BELOW if _device.is_host(device) else chunk + 1) if pack else 0
    units: list[Unit] = []
    open_unit: Unit | None = None
    base = 0
    for i, piece in enumerate(pieces):
        n = piece.weight.numel()
        if 0 < n < pack_below and n <= chunk:
            if open_unit is None or open_unit.counted != piece.counted or open_unit.n + n > chunk:
                open_unit = Unit([], base, piece.counted)
                units.append(open_unit)
            open_unit.spans.append(Span(i, 0, n))
            open_unit.n += n
        elif n:
            open_unit = None
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                units.append(Unit([Span(i, start, stop)], base + start, piece.counted, stop - start))
        base += n
    return units


@dataclass
class Packer:
    """Views of a unit's weights and survivor masks: slices for a one-span unit, else the spans
    copied side by side into buffers sized for the largest packed unit (made on first use)."""

    pieces: Sequence[Piece]
    size: int
    device: torch.device
    _weights: dict[torch.dtype, torch.Tensor] = field(default_factory=dict)
    _bools: list[torch.Tensor] = field(default_factory=list)

    def weights(self, unit: Unit, into: torch.Tensor) -> torch.Tensor:
        """The unit's weights: packed into ``into`` (a buffer of the widest dtype, e.g. the key
        buffer's float view) unless they share a narrower dtype, kept in a buffer of its own."""
        if not unit.packed:
            s = unit.spans[0]
            return self.pieces[s.piece].weight[s.start : s.stop]
        parts = [self.pieces[s.piece].weight for s in unit.spans]  # packed spans are whole pieces
        dtypes = {p.dtype for p in parts}
        dtype = dtypes.pop() if len(dtypes) == 1 else into.dtype
        if dtype == into.dtype:
            return torch.cat(parts, out=into[: unit.n])
        if dtype not in self._weights:
            self._weights[dtype] = empty(self.size, dtype, self.device)
        return torch.cat(parts, out=self._weights[dtype][: unit.n])

    def alive(self, unit: Unit) -> torch.Tensor | None:
        """The unit's survivor flags (None: every weight of the unit is alive)."""
        spans = [(s, self.pieces[s.piece].alive) for s in unit.spans]
        if all(a is None for _, a in spans):
            return None
        if not unit.packed:
            s, a = spans[0]
            return a[s.start : s.stop] if a is not None else None
        every = torch.ones((), dtype=torch.bool, device=self.device)
        parts = [a if a is not None else every.expand(s.stop) for s, a in spans]  # whole pieces
        return torch.cat(parts, out=self.bools(0)[: unit.n])

    def bools(self, index: int) -> torch.Tensor:
        """Packed bool buffer ``index`` (0: the survivor flags; 1: a mask to scatter)."""
        while len(self._bools) <= index:
            self._bools.append(empty(self.size, torch.bool, self.device))
        return self._bools[index]

    def scatter(self, unit: Unit, packed: torch.Tensor, out: Sequence[torch.Tensor]) -> None:
        """Copy a packed unit's mask back to each span's own mask."""
        dst = [out[s.piece] for s in unit.spans]  # whole pieces
        src = torch.split(packed, [s.stop for s in unit.spans])
        if hasattr(torch, "_foreach_copy_"):  # one launch for the whole list on a GPU
            torch._foreach_copy_(dst, src)
        else:  # pragma: no cover - torch before 2.2
            for d, s in zip(dst, src):
                d.copy_(s)


def packed_size(units: Sequence[Unit]) -> int:
    return max((u.n for u in units if u.packed), default=0)

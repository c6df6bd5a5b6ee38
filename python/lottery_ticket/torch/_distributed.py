"""One exact selection across torch.distributed ranks, and DTensor parameters as local shards.

Digit histograms of disjoint weight sets add up, so all-reducing each level's histogram gives
every rank the same exact threshold; ties at the threshold are shared out by an exclusive prefix
sum of the ranks' tie counts, or, for DTensor shards that interleave in flat order (Shard(d),
d > 0), by the gathered whole-tensor positions of the tied elements only. Order across ranks: plain tensors with ``process_group`` rank by
(rank, local tensor, flat index); DTensors by (tensor, flat index of the whole tensor), which is
what one process computes on the unsharded tensors. gloo serves CPU tensors, NCCL CUDA ones.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import torch.distributed as dist

import torch

from ._ranks import Piece

_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}


def resolve_group(process_group: object) -> Any:
    """The group meant by ``process_group=`` (None: one process)."""
    if process_group is None or process_group is False:
        return None
    if process_group is not True and not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(
            f"process_group: expected a torch.distributed ProcessGroup or True, got {type(process_group).__name__}"
        )
    if not dist.is_initialized():
        raise ValueError("process_group: torch.distributed is not initialized (call init_process_group first)")
    return dist.group.WORLD if process_group is True else process_group


# -- agreeing on a call before its first collective ---------------------------------------------
#
# Each rank validates its own arguments, but a rank that raised would leave the others waiting
# in the next collective until the group's timeout, and ranks that pass different amounts or
# scopes would each compute a selection nobody asked for. So every call over a group starts with
# one small all-gather of what each rank asked for and whether its arguments were valid; then
# every rank raises the same error, or none does.

_HEADER = struct.Struct("<BBBBB8sQ")  # error kind, op, amount kind, scope, flags, amount, count
_RECORD = 256  # bytes per rank: the header, then the start of the error message (UTF-8)
_ERRORS: list[type[Exception]] = [TypeError, ValueError, RuntimeError]
_OPS_CODES = ("select", "count")
_SCOPES = (None, "global", "layer")


@dataclass(frozen=True)
class Call:
    """What one rank asks of the group: every rank must ask alike."""

    op: str  # "select" or "count"
    amount: int | float | None  # select: the validated amount
    scope: str | None  # select: "global" or "layer"
    count: int  # tensors this rank passes
    same_count: bool  # the i-th tensors of all ranks are shards of one tensor
    wide: bool = False  # an f64 tensor among this rank's


def _encode(call: Call | None, error: BaseException | None) -> bytes:
    kind = 0 if error is None else 1 + next((i for i, c in enumerate(_ERRORS) if isinstance(error, c)), 2)
    if call is None:
        header = _HEADER.pack(kind, 0, 0, 0, 0, bytes(8), 0)
    else:
        amount_kind, amount = (
            (0, bytes(8))
            if call.amount is None
            else (
                (1, struct.pack("<Q", call.amount))
                if isinstance(call.amount, int)
                else (2, struct.pack("<d", call.amount))
            )
        )
        flags = int(call.same_count) | int(call.wide) << 1
        op = 1 + _OPS_CODES.index(call.op)
        header = _HEADER.pack(kind, op, amount_kind, _SCOPES.index(call.scope), flags, amount, call.count)
    message = str(error).encode()[: _RECORD - _HEADER.size] if error is not None else b""
    return (header + message).ljust(_RECORD, b"\0")


@dataclass(frozen=True)
class _Asked:
    kind: int
    op: int
    amount: int | float | None
    scope: str | None
    same_count: bool
    wide: bool
    count: int
    message: str


def _decode(record: bytes) -> _Asked:
    kind, op, amount_kind, scope, flags, raw, count = _HEADER.unpack_from(record)
    amount = None if amount_kind == 0 else struct.unpack("<Q" if amount_kind == 1 else "<d", raw)[0]
    message = record[_HEADER.size :].rstrip(b"\0").decode(errors="replace")
    return _Asked(kind, op, amount, _SCOPES[scope], bool(flags & 1), bool(flags & 2), count, message)


def _by_rank(values: Sequence[object]) -> str:
    """``0.7 on rank 0, 0.3 on ranks 1, 2``: each distinct value with the ranks passing it."""
    ranks: dict[str, list[int]] = {}
    for rank, value in enumerate(values):
        ranks.setdefault(repr(value), []).append(rank)
    parts = []
    for value, where in ranks.items():
        shown = ", ".join(map(str, where[:4])) + (", ..." if len(where) > 4 else "")
        parts.append(f"{value} on rank{'s' if len(where) > 1 else ''} {shown}")
    return ", ".join(parts)


def group_device(group: Any) -> torch.device:
    """Where the group's collectives take their tensors: the GPU for NCCL alone, else the host."""
    backend = str(dist.get_backend(group))
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def agree(group: Any, call: Call | None, error: BaseException | None) -> bool:
    """Check that every rank of ``group`` makes the same ``call`` (None: this rank failed with
    ``error`` before it could say what it asked); raise the same error on every rank otherwise.
    Returns whether any rank has an f64 tensor (a selection then ranks in the f64 key space)."""
    if dist.get_world_size(group) == 1:
        if error is not None:
            raise error
        return call is not None and call.wide
    mine = torch.frombuffer(bytearray(_encode(call, error)), dtype=torch.uint8).to(group_device(group))
    out = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, mine, group=group)
    asked = [_decode(bytes(t.cpu().numpy().tobytes())) for t in out]
    failed = next((rank for rank, a in enumerate(asked) if a.kind), None)
    if failed is not None:
        agreed = _ERRORS[asked[failed].kind - 1](f"{asked[failed].message} (raised on rank {failed})")
        if error is not None:
            raise agreed from error
        raise agreed
    if len({a.op for a in asked}) > 1:
        ops = [_OPS_CODES[a.op - 1] for a in asked]
        raise ValueError(f"process_group: ranks make different calls ({_by_rank(ops)}); every rank makes each call")
    if len({(type(a.amount), a.amount) for a in asked}) > 1:
        amounts = _by_rank([a.amount for a in asked])
        raise ValueError(f"amount: ranks pass different amounts ({amounts}); every rank passes the same global amount")
    if len({a.scope for a in asked}) > 1:
        raise ValueError(f"scope: ranks pass different scopes ({_by_rank([a.scope for a in asked])})")
    counts = [a.count for a in asked]
    if any(a.same_count for a in asked) and len(set(counts)) > 1:
        arg = "masks" if call is not None and call.op == "count" else "weights"
        raise ValueError(
            f"{arg}: ranks pass different numbers of tensors ({_by_rank(counts)}); "
            "each rank passes its shard of every tensor"
        )
    return any(a.wide for a in asked)


class Group:
    """`_ranks.Ranks` over a process group."""

    distributed = True

    def __init__(self, group: Any, shard_order: bool) -> None:
        self.group = group
        self.shard_order = shard_order  # DTensors: (tensor, whole-tensor flat index) order
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        self.pieces: Sequence[Piece] = []  # set by the caller per selection, in shard order

    def all_reduce(self, t: torch.Tensor, *, op: str = "sum") -> None:
        dist.all_reduce(t, op=_OPS[op], group=self.group)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        out = [torch.empty_like(t) for _ in range(self.size)]
        dist.all_gather(out, t, group=self.group)
        return torch.stack(out)

    def tie_budgets(
        self,
        ties: torch.Tensor,
        local_ties: torch.Tensor | None,
        count_ties: Callable[[], torch.Tensor],
        tied_at: Callable[[int], torch.Tensor],
    ) -> list[torch.Tensor] | torch.Tensor:
        if not self.shard_order:
            assert local_ties is not None
            counts = self.gather(local_ties.reshape(1))[:, 0]
            return (ties - counts[: self.rank].sum()).clamp(min=0)
        mine = count_ties()
        offsets = torch.tensor([p.offset for p in self.pieces], dtype=torch.int64, device=mine.device)
        counts, where = self.gather(mine), self.gather(offsets)
        earlier_tensors = counts.sum(0).cumsum(0) - counts.sum(0)
        budgets = []
        for i, piece in enumerate(self.pieces):
            if piece.block is None:  # contiguous shards: ties of lower-offset shards come first
                earlier_shards = counts[:, i][where[:, i] < offsets[i]].sum()
                budgets.append((ties - earlier_tensors[i] - earlier_shards).clamp(min=0))
            else:
                budgets.append(self._interleaved_budget(piece, ties - earlier_tensors[i], counts[:, i], tied_at(i)))
        return budgets

    def _interleaved_budget(
        self, piece: Piece, wanted: torch.Tensor, counts: torch.Tensor, tied: torch.Tensor
    ) -> torch.Tensor:
        """Ties this shard prunes when the tensor's first ``wanted`` ties (whole-tensor flat
        order) are pruned and its shards interleave in that order. A shard's local row-major
        order is already whole-tensor order, so only the cut between shards needs the others'
        positions: each counted shard's tied positions are gathered (padded to the largest
        shard's tie count, so memory is ranks x tied elements, never the tensor) and this shard
        prunes its ties at or before the ``wanted``-th smallest position. Replicas pass no
        positions but cut their own ties alike, so they write their twin's mask."""
        total, want = int(counts.sum()), int(wanted.clamp(min=0))
        if want == 0:
            return torch.zeros((), dtype=torch.int64, device=tied.device)
        if want >= total:
            return torch.tensor(tied.numel(), dtype=torch.int64, device=tied.device)
        assert piece.block is not None
        positions = _whole_positions(tied, *piece.block)
        padded = torch.full((int(counts.max()),), torch.iinfo(torch.int64).max, dtype=torch.int64, device=tied.device)
        if piece.counted:
            padded[: positions.numel()] = positions
        every = self.gather(padded).reshape(-1)
        cut = torch.sort(every).values[want - 1]  # padding sorts last and want < total: a real position
        return (positions <= cut).sum()

    def foreign_nan(self) -> str:
        return "weights: another rank's weights contain NaN among alive weights; NaN magnitudes cannot be ranked"


def is_dtensor(x: object) -> bool:
    cls = dtensor_type()
    return cls is not None and isinstance(x, cls)


def dtensor_type() -> type | None:
    """The DTensor class, or None before its module is imported (then no argument is one): a
    loop over many tensors looks it up once."""
    # Looked up, never imported: importing it (sympy and the symbolic-shape machinery) made the
    # first call of every process take seconds.
    return getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)


def mesh_group(mesh: Any) -> Any:
    """One group spanning every rank of ``mesh``."""
    if mesh.ndim == 1:
        return mesh.get_group()
    if mesh.size() == dist.get_world_size():
        return dist.group.WORLD
    raise ValueError("weights: a multi-dimensional DTensor mesh must span all ranks")


Block = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def shard_of(x: Any, label: str) -> tuple[torch.Tensor, bool, int, Block | None]:
    """A DTensor's local shard, whether this rank counts it (first replica), its flat offset,
    and its block (local shape, global offset, global shape) if it is sharded along a dim > 0.

    Shards along dim 0 only (FSDP2's ``fully_shard``, row-wise tensor parallel) are contiguous
    runs of the whole tensor's flat order, which keeps ties in one-process order by offset
    alone; shards along other dims (column-wise tensor parallel, 2-D meshes) interleave, and
    their ties are ordered by whole-tensor flat position (`Group._interleaved_budget`).
    Replicated mesh dimensions are counted by their first replica only.
    """
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    mesh, placements = x.device_mesh, x.placements
    counted, interleaved = True, False
    for dim, placement in enumerate(placements):
        if type(placement) is Replicate:
            counted = counted and mesh.get_local_rank(dim) == 0
        elif type(placement) is Shard:  # exactly Shard: _StridedShard's blocks are not contiguous
            interleaved = interleaved or placement.dim != 0
        else:
            raise ValueError(
                f"{label}: DTensor placement {placement!r} is not supported; weights must be sharded "
                "(Shard(d), as fully_shard and tensor parallel do) or replicated (redistribute Partial values first)"
            )
    local_shape, offset = compute_local_shape_and_global_offset(x.shape, mesh, placements)
    shape = tuple(int(n) for n in x.shape)
    row = prod(shape[1:]) if len(shape) > 1 else 1
    flat_offset = int(offset[0]) * row if len(offset) else 0
    block = (tuple(int(n) for n in local_shape), tuple(int(o) for o in offset), shape) if interleaved else None
    return x.to_local(), counted, flat_offset, block


def _whole_positions(
    local: torch.Tensor, local_shape: tuple[int, ...], offset: tuple[int, ...], shape: tuple[int, ...]
) -> torch.Tensor:
    """Whole-tensor row-major flat positions of a block's local row-major flat positions."""
    out = torch.zeros_like(local)
    local_stride = whole_stride = 1
    for n, o, whole in reversed(list(zip(local_shape, offset, shape))):
        out += ((local // local_stride) % max(n, 1) + o) * whole_stride
        local_stride *= n
        whole_stride *= whole
    return out


def like_dtensor(local: torch.Tensor, template: Any) -> Any:
    """``local`` as a DTensor placed like ``template`` (same mesh, placements, global shape)."""
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        local,
        template.device_mesh,
        template.placements,
        run_check=False,
        shape=template.shape,
        stride=template.stride(),
    )


def same_mesh(values: Sequence[Any], arg: str) -> Any:
    mesh = values[0].device_mesh
    for i, v in enumerate(values):
        if v.device_mesh != mesh:
            raise ValueError(f"{arg}[{i}]: DTensors on different device meshes in one call")
    return mesh

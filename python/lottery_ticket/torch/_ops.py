"""The torch-op kernels (`backends.DeviceKernels`): CUDA and other device tensors, DTensors,
selection across ranks, and CPU tensors when ``backend="torch"`` is asked for.

Everything runs on the tensors' own device with torch ops; nothing is copied to the host. In-place
operations work on integer views of the float bits, so a pruned weight becomes +0.0 bits exactly
(as the Rust kernels write) whatever it held, NaN included, and survivors are not touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .. import _validation
from .._validation import AmountError, relabel
from . import _distributed as _dist
from ._ranks import OneProcess, Piece, Ranks
from ._select import select

_INT_VIEW = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


def _local(x: Any) -> Any:
    return x.to_local() if _dist.is_dtensor(x) else x


def _check_float(x: object, label: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{label}: expected a torch tensor, got {type(x).__name__}")
    if x.dtype not in _INT_VIEW:
        raise _validation.unsupported_dtype(label, x.dtype)
    return x


def _check_mask(m: object, label: str, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(m, torch.Tensor):
        raise TypeError(f"{label}: expected a bool torch tensor, got {type(m).__name__}")
    _validation.mask_dtype(label, m.dtype, is_bool=m.dtype == torch.bool)
    local = _local(m)
    _validation.same_shape(label, local.shape, like.shape)
    return local  # type: ignore[no-any-return]


def _in_place(x: torch.Tensor, label: str) -> torch.Tensor:
    if not x.is_contiguous():
        raise ValueError(f"{label}: tensor must be contiguous for in-place operations")
    return x.detach().view(_INT_VIEW[x.dtype])


def _group_of(process_group: object, arrays: Sequence[object]) -> Any:
    """The group a call spans (None: this process alone): the device mesh of DTensor arrays,
    else ``process_group``."""
    group = _dist.resolve_group(process_group)
    dtensor = _dist.dtensor_type()
    dtensors = [a for a in arrays if isinstance(a, dtensor)] if dtensor is not None else []
    if dtensors and (process_group is None or process_group is True):
        group = _dist.mesh_group(_dist.same_mesh(dtensors, "weights"))
    return group


class _Applier:
    """Masks re-applied by one ``torch._foreach_mul_`` per dtype on integer views of the weights."""

    def __init__(
        self,
        weights: list[Any],
        labels: Sequence[str],
        addresses: list[int],
        groups: list[tuple[list[torch.Tensor], list[torch.Tensor]]],
    ) -> None:
        self.weights, self.labels, self.addresses, self.groups = weights, labels, addresses, groups

    def is_current(self) -> bool:
        return all(_local(w).data_ptr() == a for w, a in zip(self.weights, self.addresses))

    def __call__(self) -> None:
        # A swapped storage (`p.data = ...`) would leave the views on the old memory: refuse.
        for w, address, label in zip(self.weights, self.addresses, self.labels):
            if _local(w).data_ptr() != address:
                raise _validation.storage_replaced(label)
        for tensors, bools in self.groups:
            torch._foreach_mul_(tensors, bools)  # integer bits x {0, 1}: exact zeros, survivors untouched


class TorchKernels:
    """Registered by ``lottery_ticket.torch`` as ``backend="torch"``."""

    name = "torch"

    def claims(self, arrays: Sequence[tuple[Sequence[str], Sequence[object]]], process_group: object) -> bool:
        grouped = process_group is not None and process_group is not False
        claimed = False  # any torch tensor with a group, a device tensor or a DTensor claims the call
        first: tuple[object, str] | None = None  # the first array's device, and its label
        dtensor = _dist.dtensor_type()
        for labels, values in arrays:
            for i, v in enumerate(values):  # labels are made only for a message: a call may hold thousands
                if isinstance(v, torch.Tensor):
                    if v.is_cpu:  # the common case, without building a torch.device
                        device: object = "cpu"
                        claimed = claimed or grouped or (dtensor is not None and isinstance(v, dtensor))
                    else:
                        device = v.device  # compared as is; named (str) only in a message
                        if device.type == "meta":
                            raise ValueError(f"{labels[i]}: tensor is on the meta device and holds no values")
                        claimed = True
                else:
                    device = "cpu"  # NumPy and other host arrays
                if first is None:
                    first = (device, labels[i])
                elif device != first[0]:
                    raise ValueError(
                        f"{labels[i]}: on {device}, but {first[1]} is on {first[0]}; pass the arrays of one call on one device"
                    )
        return claimed

    def _pieces(
        self, weights: list[Any], labels: Sequence[str], masks: list[Any] | None, process_group: object, scope: str
    ) -> list[Piece]:
        dtensor = _dist.dtensor_type()
        sharded = [dtensor is not None and isinstance(w, dtensor) for w in weights]
        if any(sharded) and not all(sharded):
            raise ValueError(
                f"weights[{sharded.index(False)}]: a plain tensor among DTensors; pass all weights as DTensors or none"
            )
        if all(sharded) and process_group is not None and process_group is not True:
            raise ValueError(
                "process_group: DTensor weights are reduced over their device mesh; leave process_group unset"
            )
        pieces = []
        for i, (w, label) in enumerate(zip(weights, labels)):
            _check_float(w, label)
            local, counted, offset, block = _dist.shard_of(w, label) if sharded[i] else (w, True, 0, None)
            alive = None
            if masks is not None:
                m = masks[i]
                # The common case without building the label: a plain bool tensor beside its weight.
                if not (type(m) is torch.Tensor and m.dtype == torch.bool and m.shape == local.shape):
                    m = _check_mask(m, relabel(label, "masks"), local)
                alive = m.reshape(-1)
                if alive.device != local.device:
                    raise ValueError(f"{relabel(label, 'masks')}: on {alive.device}, but {label} is on {local.device}")
            # Detached once for the whole call by the caller's no_grad (see `select_masks`).
            pieces.append(Piece(local.reshape(-1), alive, label, counted, offset, block))
        return pieces

    def _agreed_pieces(
        self,
        weights: list[Any],
        labels: Sequence[str],
        amount: int | float,
        masks: list[Any] | None,
        scope: str,
        process_group: object,
    ) -> tuple[list[Piece], Ranks, bool]:
        """The pieces to select from, checked on every rank of the group before any collective."""
        group = _group_of(process_group, weights)
        dtensor = _dist.dtensor_type()
        dtensors = [w for w in weights if isinstance(w, dtensor)] if dtensor is not None else []
        try:
            pieces, error = self._pieces(weights, labels, masks, process_group, scope), None
        except (TypeError, ValueError) as err:
            if group is None:
                raise
            pieces, error = [], err
        wide = any(p.weight.dtype == torch.float64 for p in pieces)
        if group is None:
            return pieces, OneProcess(), wide
        whole = bool(dtensors) and len(dtensors) == len(weights)
        call = _dist.Call("select", amount, scope, len(weights), same_count=scope == "layer" or whole, wide=wide)
        wide = _dist.agree(group, call if error is None else None, error)
        return pieces, _dist.Group(group, shard_order=whole), wide

    def share_failure(self, error: BaseException, process_group: object, arrays: Sequence[object]) -> None:
        """This rank's call failed before its first collective: if the call spans ranks, make
        every rank raise the error (the others wait in that collective, `_dist.agree`)."""
        try:
            group = _group_of(process_group, arrays)
        except (TypeError, ValueError):
            return  # no group to tell: each rank finds this fault alone
        if group is not None:
            _dist.agree(group, None, error)

    @torch.no_grad()  # the selection only reads the weights: no graph, no detach per tensor
    def select_masks(
        self,
        weights: list[Any],
        labels: Sequence[str],
        amount: int | float,
        masks: list[Any] | None,
        scope: str,
        process_group: object,
        out: list[Any] | None = None,
    ) -> list[Any]:
        pieces, ranks, wide = self._agreed_pieces(weights, labels, amount, masks, scope, process_group)
        dst = self._out(out, pieces, labels) if out is not None else None
        if scope == "global":
            if isinstance(ranks, _dist.Group):
                ranks.pieces = pieces
            flat = select(pieces, amount, ranks, wide, dst)
        else:
            flat = []
            for i, piece in enumerate(pieces):
                if isinstance(ranks, _dist.Group):
                    ranks.pieces = [piece]
                try:
                    flat += select([piece], amount, ranks, wide, dst[i : i + 1] if dst is not None else None)
                except AmountError as err:
                    raise err.located(piece.label) from None
        if out is not None:
            return out
        dtensor = _dist.dtensor_type()
        if dtensor is None or not any(isinstance(w, dtensor) for w in weights):
            return [m.view(w.shape) for w, m in zip(weights, flat)]
        result = []
        for w, m in zip(weights, flat):
            local = m.reshape(_local(w).shape)
            result.append(_dist.like_dtensor(local, w) if isinstance(w, dtensor) else local)
        return result

    @staticmethod
    def _out(out: list[Any], pieces: list[Piece], labels: Sequence[str]) -> list[torch.Tensor]:
        """Flat views of the ``out=`` masks: bool, contiguous, on the weights' device; each is its
        weight's survivor mask itself (written in place) or shares memory with no argument."""
        flat, spans = [], []
        for m, label, piece in zip(out, [relabel(label, "out") for label in labels], pieces):
            local = _local(m)
            if not isinstance(local, torch.Tensor) or local.dtype != torch.bool:
                raise TypeError(
                    f"{label}: expected a bool torch tensor, got {getattr(local, 'dtype', type(local).__name__)}"
                )
            if local.numel() != piece.weight.numel():
                raise ValueError(f"{label}: {local.numel()} elements, but the weight has {piece.weight.numel()}")
            if local.device != piece.weight.device:
                raise ValueError(f"{label}: on {local.device}, but the weight is on {piece.weight.device}")
            if not local.is_contiguous():
                raise ValueError(f"{label}: tensor must be contiguous to be written in place")
            flat.append(local.reshape(-1))
            spans.append((piece.weight.data_ptr(), piece.weight.numel() * piece.weight.element_size()))
            if piece.alive is not None:
                spans.append((piece.alive.data_ptr(), piece.alive.numel()))
        for i, (t, label, piece) in enumerate(zip(flat, [relabel(label, "out") for label in labels], pieces)):
            if piece.alive is not None and t.data_ptr() == piece.alive.data_ptr():
                continue  # in place: each chunk reads its survivors before writing them
            others = spans + [(u.data_ptr(), u.numel()) for j, u in enumerate(flat) if j != i]
            start, end = t.data_ptr(), t.data_ptr() + t.numel()
            if end > start and any(s < end and start < s + n for s, n in others if n):
                raise ValueError(
                    f"{label}: shares memory with another argument; pass the survivor masks themselves or separate memory"
                )
        return flat

    def mask_applier(self, weights: list[Any], masks: list[Any], labels: Sequence[str]) -> _Applier:
        mask_labels = [relabel(label, "masks") for label in labels]
        locals_ = [_local(_check_float(w, label)) for w, label in zip(weights, labels)]
        views = [_in_place(w, label) for w, label in zip(locals_, labels)]
        alive = [_check_mask(m, ml, w) for m, ml, w in zip(masks, mask_labels, locals_)]
        addresses = [w.data_ptr() for w in locals_]
        groups: dict[torch.dtype, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for v, m in zip(views, alive):
            group = groups.setdefault(v.dtype, ([], []))
            group[0].append(v)
            group[1].append(m)

        return _Applier(weights, labels, addresses, list(groups.values()))

    def rewind(self, weights: list[Any], snapshots: list[Any], masks: list[Any], labels: Sequence[str]) -> None:
        snap_labels = [relabel(label, "snapshots") for label in labels]
        locals_ = [_local(_check_float(w, label)) for w, label in zip(weights, labels)]
        snaps = []
        for s, label, w in zip(snapshots, snap_labels, locals_):
            local = _local(_check_float(s, label))
            _validation.same_dtype(label, local.dtype, w.dtype)
            _validation.same_shape(label, local.shape, w.shape)
            snaps.append(local.detach().view(_INT_VIEW[w.dtype]))
        apply = self.mask_applier(weights, masks, labels)
        views = [_in_place(w, label) for w, label in zip(locals_, labels)]
        if all(s.device == v.device for s, v in zip(snaps, views)):
            torch._foreach_copy_(views, snaps)
        else:
            for view, snap in zip(views, snaps):
                view.copy_(snap, non_blocking=snap.is_pinned())
        apply()

    def alive_counts(self, masks: list[Any], labels: Sequence[str], process_group: object) -> list[int]:
        group = _group_of(process_group, masks)
        try:
            total, error = self._local_counts(masks, labels), None
        except (TypeError, ValueError) as err:
            if group is None:
                raise
            total, error = torch.zeros(0, dtype=torch.int64), err
        if group is not None:
            _dist.agree(group, None if error else _dist.Call("count", None, None, len(masks), same_count=True), error)
            torch.distributed.all_reduce(total, group=group)
        return [int(c) for c in total.tolist()]

    def _local_counts(self, masks: list[Any], labels: Sequence[str]) -> torch.Tensor:
        counts = []
        for m, label in zip(masks, labels):
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
                raise TypeError(f"{label}: expected a bool torch tensor")
            if _dist.is_dtensor(m):
                local, counted, _, _ = _dist.shard_of(m, label)
                counts.append(local.sum() if counted else torch.zeros((), dtype=torch.int64, device=local.device))
            else:
                counts.append(m.sum())
        return torch.stack(counts) if counts else torch.zeros(0, dtype=torch.int64)

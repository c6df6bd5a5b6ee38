"""The torch-op kernels (`backends.DeviceKernels`): CUDA and other device tensors, DTensors,
selection across ranks, and CPU tensors when ``backend="torch"`` is asked for.

Everything runs on the tensors' own device with torch ops; nothing is copied to the host. In-place
operations work on integer views of the float bits, so a pruned weight becomes +0.0 bits exactly
(as the Rust kernels write) whatever it held, NaN included, and survivors are not touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch

from ..backends import SUPPORTED
from . import _distributed as _dist
from ._select import OneProcess, Piece, Ranks, select

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
        raise TypeError(f"{label}: dtype {x.dtype} is not supported; expected {SUPPORTED}")
    return x


def _check_mask(m: object, label: str, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(m, torch.Tensor):
        raise TypeError(f"{label}: expected a bool torch tensor, got {type(m).__name__}")
    if m.dtype != torch.bool:
        raise TypeError(f"{label}: masks must have dtype bool, got {m.dtype}")
    local = _local(m)
    if tuple(local.shape) != tuple(like.shape):
        raise ValueError(f"{label}: shape {tuple(local.shape)} differs from the weight's shape {tuple(like.shape)}")
    return local  # type: ignore[no-any-return]


def _in_place(x: torch.Tensor, label: str) -> torch.Tensor:
    if not x.is_contiguous():
        raise ValueError(f"{label}: tensor must be contiguous for in-place operations")
    return x.detach().view(_INT_VIEW[x.dtype])


def _mask_labels(labels: list[str], arg: str) -> list[str]:
    return [arg + label[label.index("[") :] for label in labels]


class _Applier:
    """Masks re-applied by one ``torch._foreach_mul_`` per dtype on integer views of the weights."""

    def __init__(
        self,
        weights: list[Any],
        labels: list[str],
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
                raise RuntimeError(f"{label}: storage was replaced since the MaskApplier was built; build a new one")
        for tensors, bools in self.groups:
            torch._foreach_mul_(tensors, bools)  # integer bits x {0, 1}: exact zeros, survivors untouched


class TorchKernels:
    """Registered by ``lottery_ticket.torch`` as ``backend="torch"``."""

    name = "torch"

    def claims(self, arrays: Sequence[tuple[Sequence[str], Sequence[object]]], process_group: object) -> bool:
        devices: dict[str, str] = {}
        grouped = process_group is not None and process_group is not False
        claimed = False
        for labels, values in arrays:
            for label, v in zip(labels, values):
                if isinstance(v, torch.Tensor):
                    if v.device.type == "meta":
                        raise ValueError(f"{label}: tensor is on the meta device and holds no values")
                    device = str(v.device)
                    claimed = claimed or grouped or v.device.type != "cpu" or _dist.is_dtensor(v)
                else:
                    device = "cpu"  # NumPy and other host arrays
                devices.setdefault(device, label)
                if len(devices) > 1:
                    (device0, label0), _ = list(devices.items())[:2]
                    raise ValueError(
                        f"{label}: on {device}, but {label0} is on {device0}; pass the arrays of one call on one device"
                    )
        return claimed

    def _pieces(
        self, weights: list[Any], labels: list[str], masks: list[Any] | None, process_group: object, scope: str
    ) -> tuple[list[Piece], Ranks, bool]:
        group = _dist.resolve_group(process_group)
        sharded = [_dist.is_dtensor(w) for w in weights]
        if any(sharded) and not all(sharded):
            raise ValueError(
                f"weights[{sharded.index(False)}]: a plain tensor among DTensors; pass all weights as DTensors or none"
            )
        if all(sharded) and group is not None and process_group is not True:
            raise ValueError(
                "process_group: DTensor weights are reduced over their device mesh; leave process_group unset"
            )
        mask_labels = _mask_labels(labels, "masks")
        pieces = []
        for i, (w, label) in enumerate(zip(weights, labels)):
            _check_float(w, label)
            local, counted, offset, block = _dist.shard_of(w, label) if sharded[i] else (w, True, 0, None)
            alive = _check_mask(masks[i], mask_labels[i], local).reshape(-1) if masks is not None else None
            if alive is not None and alive.device != local.device:
                raise ValueError(f"{mask_labels[i]}: on {alive.device}, but {label} is on {local.device}")
            pieces.append(Piece(local.detach().reshape(-1), alive, label, counted, offset, block))
        wide = any(p.weight.dtype == torch.float64 for p in pieces)
        ranks: Ranks = OneProcess()
        if all(sharded):
            group = _dist.mesh_group(_dist.same_mesh(weights, "weights"))
        if group is not None:
            ranks = _dist.Group(group, shard_order=all(sharded))
            wide = ranks.agree(wide, len(pieces), pieces[0].weight.device, same_count=scope == "layer" or all(sharded))
        return pieces, ranks, wide

    def select_masks(
        self,
        weights: list[Any],
        labels: list[str],
        amount: int | float,
        masks: list[Any] | None,
        scope: str,
        process_group: object,
        out: list[Any] | None = None,
    ) -> list[Any]:
        pieces, ranks, wide = self._pieces(weights, labels, masks, process_group, scope)
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
                except ValueError as err:
                    if str(err).startswith("amount:"):
                        raise ValueError(f"{err} in {piece.label}") from None
                    raise
        if out is not None:
            return out
        result = []
        for w, m in zip(weights, flat):
            local = m.reshape(_local(w).shape)
            result.append(_dist.like_dtensor(local, w) if _dist.is_dtensor(w) else local)
        return result

    @staticmethod
    def _out(out: list[Any], pieces: list[Piece], labels: list[str]) -> list[torch.Tensor]:
        """Flat views of the ``out=`` masks: bool, contiguous, on the weights' device; each is its
        weight's survivor mask itself (written in place) or shares memory with no argument."""
        flat, spans = [], []
        for m, label, piece in zip(out, _mask_labels(labels, "out"), pieces):
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
        for i, (t, label, piece) in enumerate(zip(flat, _mask_labels(labels, "out"), pieces)):
            if piece.alive is not None and t.data_ptr() == piece.alive.data_ptr():
                continue  # in place: each chunk reads its survivors before writing them
            others = spans + [(u.data_ptr(), u.numel()) for j, u in enumerate(flat) if j != i]
            start, end = t.data_ptr(), t.data_ptr() + t.numel()
            if end > start and any(s < end and start < s + n for s, n in others if n):
                raise ValueError(
                    f"{label}: shares memory with another argument; pass the survivor masks themselves or separate memory"
                )
        return flat

    def mask_applier(self, weights: list[Any], masks: list[Any], labels: list[str]) -> _Applier:
        mask_labels = _mask_labels(labels, "masks")
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

    def rewind(self, weights: list[Any], snapshots: list[Any], masks: list[Any], labels: list[str]) -> None:
        snap_labels = _mask_labels(labels, "snapshots")
        locals_ = [_local(_check_float(w, label)) for w, label in zip(weights, labels)]
        snaps = []
        for s, label, w in zip(snapshots, snap_labels, locals_):
            local = _local(_check_float(s, label))
            if local.dtype != w.dtype:
                raise TypeError(f"{label}: dtype {local.dtype} differs from the weight's dtype {w.dtype}")
            if local.shape != w.shape:
                raise ValueError(
                    f"{label}: shape {tuple(local.shape)} differs from the weight's shape {tuple(w.shape)}"
                )
            snaps.append(local.detach().view(_INT_VIEW[w.dtype]))
        apply = self.mask_applier(weights, masks, labels)
        views = [_in_place(w, label) for w, label in zip(locals_, labels)]
        if all(s.device == v.device for s, v in zip(snaps, views)):
            torch._foreach_copy_(views, snaps)
        else:
            for view, snap in zip(views, snaps):
                view.copy_(snap, non_blocking=snap.is_pinned())
        apply()

    def alive_counts(self, masks: list[Any], labels: list[str], process_group: object) -> list[int]:
        counts, groups = [], set()
        for m, label in zip(masks, labels):
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
                raise TypeError(f"{label}: expected a bool torch tensor")
            if _dist.is_dtensor(m):
                local, counted, _, _ = _dist.shard_of(m, label)
                counts.append(local.sum() if counted else torch.zeros((), dtype=torch.int64, device=local.device))
                groups.add(_dist.mesh_group(cast(Any, m).device_mesh))
            else:
                counts.append(m.sum())
        total = torch.stack(counts) if counts else torch.zeros(0, dtype=torch.int64)
        group = _dist.resolve_group(process_group)
        if group is not None:
            groups.add(group)
        for g in groups:
            torch.distributed.all_reduce(total, group=g)
        return [int(c) for c in total.tolist()]

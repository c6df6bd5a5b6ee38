"""Fused passes of the torch-op selection (`_select`) on a GPU: one Triton kernel per unit for the
counting pass, and one for the writing pass, where the torch ops run about seven per unit (the
keys, two comparisons, the in-bracket flags, two counts, the largest key). Opt-in:
``LOTTERY_TICKET_FUSED=1`` (read at each call) runs them on CUDA tensors, and with Triton's own
``TRITON_INTERPRET=1`` (set before Triton is imported) on CPU tensors too, through its
interpreter: slow, it is how the tests check the kernels without a GPU. The torch ops stay the
default and the reference; the masks are bit for bit the same.

Each program of the counting kernel writes its block's alive, kept and NaN counts to a slot of
its own, summed once per selection, so no atomics and one read back, as with the torch ops.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from ._radix import keys

if TYPE_CHECKING:
    from ._buffers import Candidates
    from ._select import Selection
    from ._units import Unit

VARIABLE = "LOTTERY_TICKET_FUSED"
# The weights' bits as loaded by the kernels: the dtypes whose keys are a bit operation.
_BITS = {torch.bfloat16: (torch.int16, 16), torch.float32: (torch.int32, 32), torch.float64: (torch.int64, 64)}
_FLOATS = {bits: dtype for dtype, (_, bits) in _BITS.items()}
# The kernels do no float arithmetic; saying so spares every compile Triton's warning that the
# default for fusing multiplies and adds is about to change.
OPTIONS = {"enable_fp_fusion": False}


class Fused(NamedTuple):
    count_kernel: Any
    write_kernel: Any
    block: int


def kernels_for(device: torch.device, flat: Iterable[torch.Tensor | None]) -> Fused | None:
    """The fused kernels for the flat tensors ``flat`` (weights and survivor flags) on
    ``device``, or None: the torch ops run (also for a strided tensor, which the kernels do not
    read). Raises ValueError for a value of the variable other than 0 or 1, and ImportError
    naming it where it asks for the kernels and Triton is not installed."""
    value = os.environ.get(VARIABLE, "0").strip() or "0"
    if value not in ("0", "1"):
        raise ValueError(f"{VARIABLE}: expected 0 or 1, got {value!r}")
    if value == "0" or (device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1"):
        return None
    if not all(t is None or t.is_contiguous() for t in flat):
        return None
    try:
        from . import _triton  # only now: Triton may not be installed where nobody asks for it
    except ImportError as err:  # torch's CUDA wheels for Windows, say, ship without it
        raise ImportError(f"{VARIABLE}=1: the fused passes need Triton ({err}); set it to 0 for the torch ops") from err
    return Fused(_triton.count_kernel, _triton.write_kernel, _triton.BLOCK)


def _bits(run: Selection, w: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``w``'s bits for the kernels: in the key space's float dtype unless bf16 (f32 space)."""
    if w.dtype != run.float_dtype and not (w.dtype == torch.bfloat16 and not run.wide):
        w = run.buffers().keys.view(run.float_dtype)[: w.numel()].copy_(w)  # exact widening
    view, bits = _BITS[w.dtype]
    return w.view(view), bits


def _on(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Triton launches on the current CUDA device, torch ops on their tensors' own: make the
    tensors' device current (a model on cuda:1 while cuda:0 is current)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _bytes(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return like if t is None else t.view(torch.uint8)  # a dummy pointer where a flag is off


def count(
    run: Selection, fused: Fused, lo: int, hi: int, flat: torch.Tensor | None, found: Candidates
) -> tuple[list[int], list[bool]]:
    """`Selection.count` with one kernel per unit: [alive, kept, in-bracket] counts and NaN per
    piece; the candidates go to ``found``."""
    buffers = run.buffers()
    blocks = [-(-u.n // fused.block) for u in run.units]
    counted = sum(b for u, b in zip(run.units, blocks) if u.counted)
    spare = max((b for u, b in zip(run.units, blocks) if not u.counted), default=0)  # replicas' junk slots
    slots = torch.empty(3, counted + spare, dtype=torch.int32, device=run.device)
    at_slot = 0
    for unit, b in zip(run.units, blocks):
        w, bits = _bits(run, run.packer.weights(unit, buffers.keys.view(run.float_dtype)))
        alive = run.packer.alive(unit)
        keep = flat[unit.base : unit.base + unit.n] if flat is not None else None
        s = at_slot if unit.counted else counted
        with _on(run.device):
            fused.count_kernel[(b,)](
                w, _bytes(alive, w), _bytes(keep, w), buffers.flags.view(torch.uint8), slots[0, s:], slots[1, s:],
                slots[2, s:], unit.n, lo, hi, run.nan_from,
                BITS=bits, HAS_ALIVE=alive is not None, STORE_KEEP=keep is not None, BLOCK=fused.block, **OPTIONS,
            )  # fmt: skip
        at_slot += b if unit.counted else 0
        found.add(unit, buffers.flags, functools.partial(_candidate_keys, w, bits, run.wide))
    alive_n, kept_n, nan_n = slots[:, :counted].sum(1, dtype=torch.int64).tolist()
    nan = [p.counted and run.alive_nan(p) for p in run.pieces] if nan_n else [False] * len(run.pieces)
    return [alive_n, kept_n, found.counted], nan


def _candidate_keys(w: torch.Tensor, bits: int, wide: bool, at: torch.Tensor) -> torch.Tensor:
    return keys(torch.index_select(w, 0, at).view(_FLOATS[bits]), wide)


def write(run: Selection, fused: Fused, unit: Unit, dst: torch.Tensor, threshold: int) -> None:
    """`Selection.write` for one unit without tie budgets: dst = alive and key > threshold
    (``out=`` masks are contiguous: `_ops` refuses others)."""
    w, bits = _bits(run, run.packer.weights(unit, run.buffers().keys.view(run.float_dtype)))
    alive = run.packer.alive(unit)
    with _on(run.device):
        fused.write_kernel[(-(-unit.n // fused.block),)](
            w, _bytes(alive, w), dst.view(torch.uint8), unit.n, threshold,
            BITS=bits, HAS_ALIVE=alive is not None, BLOCK=fused.block, **OPTIONS,
        )  # fmt: skip

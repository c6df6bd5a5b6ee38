"""torch tensors as the library's `ArrayBackend`: zero-copy NumPy views of CPU tensors for the kernels."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

import torch

from .._validation import mask_dtype, unsupported_dtype
from ..backends import Bits
from ..kernels.arrays import BITS_DTYPES, require_in_place

# torch 2.5 (pytorch#132652) bumps a list of version counters in one call.
_BATCHED_VERSIONS = torch.torch_version.TorchVersion(torch.__version__) >= "2.5"

_NAMES = {
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float32: "float32",
    torch.float64: "float64",
}


def _increment_each(xs: list[torch.Tensor]) -> None:
    for x in xs:
        torch.autograd.graph.increment_version(x)


def _require_cpu(t: torch.Tensor, label: str) -> None:
    # The facade sends device tensors to the torch-op kernels (`_ops`) before reaching here; this
    # guards any other path, so a device tensor never takes a silent host round trip.
    if not t.is_cpu:  # not `t.device.type`: that builds a device object, per tensor per call
        raise ValueError(
            f"{label}: tensor is on {t.device}; the Rust kernels read host memory only "
            "(device tensors run the torch-op kernels: backend='auto' or 'torch')"
        )


def _require_dense(t: torch.Tensor, label: str) -> None:
    if t.layout != torch.strided:
        raise TypeError(f"{label}: {t.layout} tensors are not supported; pass a dense tensor (x.to_dense())")


def _require_writable(t: torch.Tensor, label: str) -> None:
    # torch's own rule for in-place ops: an inference tensor is frozen outside inference mode.
    if t.is_inference() and not torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{label}: inplace update to an inference tensor outside InferenceMode is not allowed "
            "(torch refuses it too); clone it outside inference mode first"
        )


class TorchArrays:
    """The `ArrayBackend` of torch tensors (registered by ``lottery_ticket.torch``)."""

    name = "torch"

    def owns(self, x: object) -> bool:
        return isinstance(x, torch.Tensor)

    def float_bits(self, x: Any, label: str, *, writable: bool) -> Bits:
        _require_cpu(x, label)
        _require_dense(x, label)
        name = _NAMES.get(x.dtype)
        if name is None:
            raise unsupported_dtype(label, x.dtype)
        t = x.detach()
        if not writable:
            t = t.contiguous()
        # bf16 has no NumPy dtype: view its bits as int16 first (same storage, zero-copy).
        arr = (t.view(torch.int16) if name == "bfloat16" else t).numpy()
        if writable:
            _require_writable(x, label)
            require_in_place(arr, label)
        return Bits(label, arr.view(BITS_DTYPES[name]), name, tuple(t.shape))

    def mask_array(self, x: Any, label: str) -> np.ndarray:
        _require_cpu(x, label)
        _require_dense(x, label)
        mask_dtype(label, x.dtype, is_bool=x.dtype == torch.bool)
        result: np.ndarray = x.detach().numpy()
        return result

    def from_numpy(self, array: np.ndarray) -> Any:
        return torch.from_numpy(array)

    def from_bits(self, array: np.ndarray, dtype: str) -> Any:
        if dtype == "bfloat16":  # NumPy has no bf16: through int16, which torch views as bf16
            return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(array.view(dtype))

    def write_notifier(self, xs: list[Any]) -> Callable[[], None]:
        """Bump the autograd version counters, as torch's in-place ops do, so that a graph that
        saved one of ``xs`` before the write raises at ``backward()`` instead of using stale
        values. One call for the list where torch takes one (a MaskApplier runs every step)."""
        versioned = [x for x in xs if not x.is_inference()]  # inference tensors have no counter
        if _BATCHED_VERSIONS:
            return partial(torch.autograd.graph.increment_version, versioned)
        return partial(_increment_each, versioned)

    def storage_address(self, x: Any) -> int:
        return int(x.data_ptr())

    def layouts(self, xs: list[Any]) -> list[tuple[Any, ...]]:
        return [(type(x), x.data_ptr(), x.dtype, x.shape, x.stride()) for x in xs]

    def to_saved(self, x: Any, label: str) -> tuple[np.ndarray, str]:
        if hasattr(x, "full_tensor"):  # a DTensor: a ticket holds the whole tensor
            x = x.full_tensor()
        _require_dense(x, label)
        t = x.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16), "bfloat16"
        try:
            arr: np.ndarray = t.numpy()
        except TypeError as err:
            raise TypeError(f"{label}: dtype {t.dtype} cannot be saved") from err
        return arr, arr.dtype.name

    def from_saved(self, array: np.ndarray, dtype: str) -> Any:
        t = torch.from_numpy(array.copy())
        return t.view(torch.bfloat16) if dtype == "bfloat16" else t

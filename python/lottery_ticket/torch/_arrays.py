"""torch tensors as zero-copy NumPy views for the kernels (CPU), and the CUDA dispatch point."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._arrays import BITS_DTYPES, SUPPORTED, Bits, require_in_place

_NAMES = {
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float32: "float32",
    torch.float64: "float64",
}


def _require_cpu(t: torch.Tensor, label: str) -> None:
    # Dispatch point for accelerator tensors: they must never take a silent host round trip.
    if t.device.type != "cpu":
        raise ValueError(
            f"{label}: tensor is on {t.device}; the kernels run on CPU tensors only in this "
            "version and never copy device tensors to the host behind your back"
        )


def float_bits(t: torch.Tensor, label: str, *, writable: bool) -> Bits:
    _require_cpu(t, label)
    name = _NAMES.get(t.dtype)
    if name is None:
        raise TypeError(f"{label}: dtype {t.dtype} is not supported; expected {SUPPORTED}")
    t = t.detach()
    if not writable:
        t = t.contiguous()
    # bf16 has no NumPy dtype: view its bits as int16 first (same storage, zero-copy).
    arr = (t.view(torch.int16) if name == "bfloat16" else t).numpy()
    if writable:
        require_in_place(arr, label)
    return Bits(label, arr.view(BITS_DTYPES[name]), name, tuple(t.shape))


def mask_array(t: torch.Tensor, label: str) -> np.ndarray:
    _require_cpu(t, label)
    if t.dtype != torch.bool:
        raise TypeError(f"{label}: masks must have dtype bool, got {t.dtype}")
    return t.detach().numpy()


def from_numpy(array: np.ndarray) -> Any:
    """A CPU tensor sharing ``array``'s memory (zero-copy; it keeps the array alive)."""
    return torch.from_numpy(array)

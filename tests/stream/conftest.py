"""Small generated safetensors checkpoints and an independent reading of what pruning them means."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.torch import load_file

import torch
from lottery_ticket import apply_masks, global_magnitude_masks


def offset_order(files: Sequence[Path]) -> list[str]:
    """Tensor names in checkpoint order, read straight from the JSON headers: files sorted by
    name, then tensors by their first data offset."""
    names = []
    for path in sorted(files, key=lambda p: p.name):
        raw = path.read_bytes()
        header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
        header.pop("__metadata__", None)
        names += sorted(header, key=lambda n: header[n]["data_offsets"][0])
    return names


def load_all(files: Sequence[Path]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        tensors.update(load_file(path))
    return tensors


def expected(
    files: Sequence[Path], sparsity: float, chosen: Callable[[str, torch.Tensor], bool], scope: str = "global"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(masks, pruned tensors) by the in-memory kernels on the chosen tensors in checkpoint order."""
    tensors = load_all(files)
    order = [n for n in offset_order(files) if chosen(n, tensors[n])]
    masks = global_magnitude_masks({n: tensors[n] for n in order}, sparsity, scope=scope)
    pruned = {n: t.clone() for n, t in tensors.items()}
    apply_masks({n: pruned[n] for n in order}, masks)
    return masks, pruned


def default_choice(name: str, tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() and tensor.dim() >= 2


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical (so +0.0 and -0.0 differ, and NaN equals itself)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        width = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        return bool(torch.equal(a.view(width), b.view(width)))
    return bool(torch.equal(a, b))


def write_raw(path: Path, header: Mapping[str, Any], data: bytes, length: int | None = None) -> Path:
    """A file in safetensors layout with whatever header we like (for the bad-input table)."""
    raw = json.dumps(header).encode()
    path.write_bytes((len(raw) if length is None else length).to_bytes(8, "little") + raw + data)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to check that nothing was modified or added)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


class Helpers:
    """The helpers above, for test modules (``--import-mode=importlib`` cannot import conftest)."""

    offset_order = staticmethod(offset_order)
    load_all = staticmethod(load_all)
    expected = staticmethod(expected)
    default_choice = staticmethod(default_choice)
    same_bits = staticmethod(same_bits)
    write_raw = staticmethod(write_raw)
    snapshot = staticmethod(snapshot)


@pytest.fixture
def h() -> type[Helpers]:
    return Helpers

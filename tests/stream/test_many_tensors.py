"""A checkpoint of many small tensors: each read through its own buffer (the cost stays linear in
the tensor count), few kernel calls, and the dry run counts exactly what a real run prunes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytest

from lottery_ticket import prune_checkpoint
from lottery_ticket.safetensors_stream import _write


def many(path: Path, count: int, seed: int = 0) -> Path:
    """``count`` f32 2x2 tensors back to back (a 200,000-tensor header is 14 MB of JSON)."""
    header, offset = {}, 0
    for i in range(count):
        header[f"model.layers.{i}.weight"] = {"dtype": "F32", "shape": [2, 2], "data_offsets": [offset, offset + 16]}
        offset += 16
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    data = np.random.default_rng(seed).standard_normal(offset // 4).astype(np.float32)
    data[::7] = 0.5  # ties at the threshold spread over many tensors
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data.tobytes())
    return path


class ExtensionCalls(Protocol):  # the `extension_calls` fixture of conftest.py
    def assert_own_buffers(self, name: str) -> None: ...


def test_each_tensor_is_read_through_its_own_buffer(tmp_path: Path, extension_calls: ExtensionCalls) -> None:
    # Views of one map sharing one buffer object made every tensor's borrow check scan all the
    # others (quadratic in the tensor count; the cost is measured in benches/test_many_tensors.py).
    path = many(tmp_path / "m.safetensors", 2_000)
    dry = prune_checkpoint(path, None, 0.5, dry_run=True, progress=False)
    real = prune_checkpoint(path, tmp_path / "o.safetensors", 0.5, progress=False)
    assert dry.pruned == real.pruned == round(0.5 * 8_000)
    extension_calls.assert_own_buffers("select_threshold")


def test_small_neighbours_are_counted_in_few_kernel_calls_with_the_exact_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = many(tmp_path / "m.safetensors", 20_000)
    calls: list[int] = []
    real = _write.write_pruned_counted

    def counted(src: Any, *args: Any) -> Any:
        calls.append(src[0].size)
        return real(src, *args)

    monkeypatch.setattr(_write, "write_pruned_counted", counted)
    monkeypatch.setattr(_write, "SLICE_BYTES", 64 << 10)  # several runs, ties across their ends
    dry = prune_checkpoint(path, None, 0.5, dry_run=True, progress=False)
    assert len(calls) <= 20, f"{len(calls)} kernel calls for 20,000 tensors"
    calls.clear()
    real_run = prune_checkpoint(path, tmp_path / "o.safetensors", 0.5, progress=False)
    assert dry.tensors == real_run.tensors and dry.pruned == round(0.5 * 80_000)

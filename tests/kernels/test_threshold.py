"""The streaming threshold (`_threshold`) against `global_magnitude_masks`: writing every tensor
pruned by the threshold, in order, gives the weights with the masks applied, bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import torch
from lottery_ticket import global_magnitude_masks
from lottery_ticket.kernels.threshold import RawTensor, Threshold, ThresholdWriter, select_threshold, write_pruned

TIED = np.array([0.0, -0.0, 0.5, -0.5, 1.0, -2.0, np.inf])


def applied_bits(w: Any, mask: np.ndarray) -> np.ndarray:
    """The bits of `w` with pruned entries set to +0.0 (zero bits), as unsigned ints."""
    bits = w.view(torch.int16).numpy().view(np.uint16) if isinstance(w, torch.Tensor) else w.view(f"u{w.itemsize}")
    return np.where(mask, bits, 0).astype(bits.dtype)


def raw(w: Any) -> RawTensor:
    if isinstance(w, torch.Tensor):  # bf16: the bits a safetensors memmap would give
        return RawTensor(w.view(torch.int16).numpy().view(np.uint16), "bfloat16")
    return RawTensor(w.view(f"u{w.itemsize}"), w.dtype.name)


def stream(weights: list[Any], threshold: Threshold, masks: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Write every tensor through a ThresholdWriter into fresh bit buffers, in order."""
    writer = ThresholdWriter(threshold)
    outs = []
    for i, w in enumerate(weights):
        src = raw(w)
        dst = RawTensor(np.full_like(src.bits, 0xA5), src.dtype)
        writer.write(src, dst, mask=None if masks is None else masks[i], name=f"t{i}")
        outs.append(dst.bits)
    assert writer.ties_remaining == 0
    return outs


def model(rng: np.random.Generator, tied: bool) -> list[Any]:
    out: list[Any] = []
    for dtype in ["float16", "bfloat16", "float32", "float64", "float32"]:
        shape = tuple(int(d) for d in rng.integers(1, 40, size=rng.integers(1, 3)))
        values = rng.choice(TIED, shape) if tied else rng.standard_normal(shape)
        if dtype == "bfloat16":
            out.append(torch.from_numpy(values).to(torch.bfloat16))
        else:
            out.append(values.astype(dtype))
    return out


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("with_masks", [False, True])
def test_streaming_matches_global_masks(tied: bool, with_masks: bool) -> None:
    rng = np.random.default_rng([tied, with_masks])
    for _ in range(8):
        weights = model(rng, tied)
        masks = [rng.random(tuple(w.shape)) < 0.7 for w in weights] if with_masks else None
        alive = sum(int(m.sum()) for m in masks) if masks else sum(int(np.prod(tuple(w.shape))) for w in weights)
        for amount in [0, 0.0, 1.0, 0.3, 0.5, 1, alive // 3, alive]:
            want = global_magnitude_masks(weights, amount, masks)
            threshold = select_threshold([raw(w) for w in weights], amount, masks)
            want = [np.asarray(m) for m in want]
            kept = sum(int(m.sum()) for m in want)
            assert (threshold.alive, threshold.alive - threshold.pruned) == (alive, kept)
            for got, w, m in zip(stream(weights, threshold, masks), weights, want):
                np.testing.assert_array_equal(got, applied_bits(w, m))


def test_above_the_sample_size() -> None:
    """Past 2^18 elements the bracket is estimated from a sample; bf16 ties are heavy there."""
    rng = np.random.default_rng(3)
    weights = [
        torch.from_numpy(rng.standard_normal((300, 700))).to(torch.bfloat16),
        rng.standard_normal(90_001).astype(np.float32),
    ]
    for amount in [0.5, 0.9, 123_457]:
        threshold = select_threshold([raw(w) for w in weights], amount)
        want = [np.asarray(m) for m in global_magnitude_masks(weights, amount)]
        for got, w, m in zip(stream(weights, threshold), weights, want):
            np.testing.assert_array_equal(got, applied_bits(w, m))


def test_float_arrays_and_dicts_are_accepted_like_global_masks() -> None:
    rng = np.random.default_rng(5)
    weights = {"a": rng.choice(TIED, (30, 7)).astype(np.float32), "b": torch.from_numpy(rng.choice(TIED, 50))}
    want = global_magnitude_masks(weights, 0.45)
    threshold = select_threshold(weights, 0.45)
    assert (threshold.key_width_bits, threshold.alive) == (64, 260)
    writer = ThresholdWriter(threshold)
    for name, w in weights.items():
        out = torch.empty_like(w) if isinstance(w, torch.Tensor) else np.empty_like(w)
        writer.write(w, out, name=name)
        keep = np.asarray(want[name])
        np.testing.assert_array_equal(np.asarray(out), np.where(keep, np.asarray(w), 0))
        assert not np.signbit(np.asarray(out)[~keep]).any(), "pruned entries are +0.0"
    assert writer.ties_remaining == 0


def test_memory_mapped_files(tmp_path: Path) -> None:
    """Read-only memmap in, writable memmap out: the streaming path of a checkpoint."""
    rng = np.random.default_rng(9)
    values = rng.choice(TIED, 5000) * rng.random(5000)
    bf16 = torch.from_numpy(values).to(torch.bfloat16)
    src_path, dst_path = tmp_path / "in.bin", tmp_path / "out.bin"
    bf16.view(torch.int16).numpy().tofile(src_path)
    src = np.memmap(src_path, dtype=np.uint16, mode="r", shape=(50, 100))
    dst = np.memmap(dst_path, dtype=np.uint16, mode="w+", shape=(50, 100))
    threshold = select_threshold([RawTensor(src, "bfloat16")], 0.6)
    assert (
        write_pruned(RawTensor(src, "bfloat16"), RawTensor(dst, "bfloat16"), threshold, threshold.ties_pruned)
        == threshold.ties_pruned
    )
    dst.flush()
    want = global_magnitude_masks([bf16.reshape(50, 100)], 0.6)[0].numpy()
    np.testing.assert_array_equal(np.fromfile(dst_path, dtype=np.uint16).reshape(50, 100), np.where(want, src, 0))


def test_nan_among_alive_weights_names_the_tensor() -> None:
    w = {"a": np.ones(3, np.float32), "b": np.array([1.0, np.nan])}
    with pytest.raises(ValueError, match=r"weights\['b'\].*NaN"):
        select_threshold(w, 0.5)
    threshold = select_threshold(w, 1, masks={"a": np.ones(3, bool), "b": np.array([True, False])})
    assert (threshold.alive, threshold.pruned) == (4, 1)
    out = np.full(2, 7.0)
    with pytest.raises(ValueError, match=r"weights\['b'\].*NaN"):
        write_pruned(w["b"], out, threshold, 0, name="b")


OUT = np.full(3, 7.0, np.float32)  # every bad write_pruned call targets it: it must stay 7


def bad_calls() -> list[tuple[str, Any, type[Exception], str]]:
    w = np.array([1.0, -2.0, 3.0], dtype=np.float32)
    t = select_threshold([w], 1)
    bits = w.view(np.uint32)
    read_only = np.zeros(3, np.float32)
    read_only.setflags(write=False)
    return [
        ("amount", lambda: select_threshold([w], 1.5), ValueError, "amount"),
        ("count", lambda: select_threshold([w], 4), ValueError, "amount"),
        ("raw-dtype", lambda: select_threshold([RawTensor(bits, "int32")], 1), TypeError, "weights"),
        ("raw-width", lambda: select_threshold([RawTensor(bits, "float16")], 1), TypeError, "weights"),
        ("raw-strided", lambda: select_threshold([RawTensor(bits[::2], "float32")], 1), ValueError, "contiguous"),
        ("masks", lambda: select_threshold([w], 1, masks=[np.ones(2, bool)]), ValueError, "masks"),
        ("dst-dtype", lambda: write_pruned(w, np.zeros(3), t, 0), TypeError, "dst"),
        ("dst-shape", lambda: write_pruned(w, np.zeros(4, np.float32), t, 0), ValueError, "dst"),
        ("dst-readonly", lambda: write_pruned(w, read_only, t, 0), ValueError, "read-only"),
        ("dst-is-src", lambda: write_pruned(w, w, t, 0), ValueError, "shares memory"),
        ("ties", lambda: write_pruned(w, OUT, t, 2), ValueError, "ties_remaining"),
        ("ties-type", lambda: write_pruned(w, OUT, t, True), TypeError, "ties_remaining"),
        ("threshold", lambda: write_pruned(w, OUT, (0, 32, 0, 0, 0), 0), TypeError, "threshold"),  # type: ignore[arg-type]
        ("mask-shape", lambda: write_pruned(w, OUT, t, 0, mask=np.ones(2, bool)), ValueError, "mask"),
        ("mask-overlaps-dst", lambda: write_pruned(w, OUT, t, 0, mask=OUT.view(bool)[:3]), ValueError, "shares memory"),
    ]


@pytest.mark.parametrize("case", bad_calls(), ids=lambda c: c[0])
def test_bad_input_is_rejected_before_writing(case: tuple[str, Any, type[Exception], str]) -> None:
    _, call, error, match = case
    with pytest.raises(error, match=match):
        call()
    assert (OUT == 7).all(), "nothing written"

"""The torch-op selection's device code paths (what CUDA tensors take), run on host tensors.

`_device.is_host` answering False sends CPU tensors down every branch a GPU takes: device-sized
chunks and packing, comparisons written straight into the flags, counts by `sum`, the plain
`nonzero` compaction, buffers from `torch.empty`, the sorted sample and candidates, and the
running tie budget. Their masks must be the Rust kernels' bit for bit, as on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from test_torch_backend import (
    CUDA,
    DTYPES,
    KERNEL_COUNT_N,
    POOL,
    assert_same,
    full_size_kernels,
    one_chunk,
    random_case,
)
from torch.profiler import ProfilerActivity, profile

import torch
from lottery_ticket import global_magnitude_masks
from lottery_ticket.torch import _buffers, _device, _select


@pytest.fixture
def device_paths(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_device, "is_host", lambda device: False)
    monkeypatch.setattr(_select, "SAMPLE_ALL", 0)  # sample, bracket and compact even small calls
    yield


def ops_of(call: Callable[[], object]) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    return {e.key for e in prof.key_averages()}


def test_the_paths_are_the_device_ones(device_paths: None) -> None:
    """The seam reaches every branch: a sort instead of the sample's histograms, one `nonzero` a
    unit and no host comparison scratch."""
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(300, 200, generator=gen), torch.randn(70_000, generator=gen)]
    ops = ops_of(lambda: global_magnitude_masks(weights, 0.3, backend="torch"))
    assert "aten::sort" in ops and "aten::index_add_" not in ops
    buffers = _buffers.Buffers(1000, torch.int32, torch.device("cpu"))
    assert buffers.compared.numel() == 0
    flags = torch.zeros(2 * _buffers.WORD_COMPACTION_ABOVE, dtype=torch.bool)
    flags[[3, 70_000]] = True
    ops = ops_of(lambda: _buffers.positions_of(flags, flags.numel()))
    assert "aten::nonzero" in ops and "aten::index_select" not in ops  # one plain nonzero, no words
    assert _buffers.positions_of(flags, flags.numel()).tolist() == [3, 70_000]


@pytest.mark.parametrize("chunk", [_select.CHUNK, 7])
def test_bit_identical_to_the_rust_kernels(device_paths: None, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """Random cases of every dtype (ties, signed zeros, infinities, subnormals, dead weights),
    global and per layer, as fractions and counts; 7-element chunks split every tensor."""
    monkeypatch.setattr(_select, "CHUNK", chunk)
    gen = torch.Generator().manual_seed(11 + chunk)
    for trial in range(20):
        weights, masks = random_case(gen, trial)
        alive = [int(m.sum()) for m in masks] if masks is not None else [w.numel() for w in weights]
        if sum(alive) == 0:
            continue
        for amount in [0.0, 0.3, 0.77, 1.0, 1, sum(alive) // 2]:
            assert_same(
                global_magnitude_masks(weights, amount, masks),
                global_magnitude_masks(weights, amount, masks, backend="torch"),
            )
        layer = [global_magnitude_masks(weights, 0.4, masks, "layer", backend=b) for b in ("rust", "torch")]
        assert_same(*layer)


@pytest.mark.parametrize("miss", ["bracket", "overflow", None])
def test_ties_misses_and_later_rounds_in_place(device_paths: None, monkeypatch: pytest.MonkeyPatch, miss: str) -> None:
    """Heavy ties across a packed unit and chunked tensors; the radix fallback (a bracket that
    misses, candidates over their budget) with its tie budgets; rounds written over the survivor
    masks (`out=`), as the pruner runs them."""
    monkeypatch.setattr(_select, "CHUNK", 5000)
    if miss == "bracket":
        monkeypatch.setattr(_select, "BRACKET_SIGMAS", 0.0)
    elif miss == "overflow":
        monkeypatch.setattr(_select, "MIN_CANDIDATES", 10)
        monkeypatch.setattr(_select, "CANDIDATE_SHARE", 1 << 40)
    gen = torch.Generator().manual_seed(5)
    weights = [POOL[torch.randint(len(POOL), shape, generator=gen)].to(dtype) for shape, dtype in [
        ((40, 30), torch.float32), ((17,), torch.bfloat16), ((120, 100), torch.float16), ((9, 3), torch.float32),
    ]]  # fmt: skip
    rust = global_magnitude_masks(weights, 0.2)
    ours = global_magnitude_masks(weights, 0.2, backend="torch")
    assert_same(rust, ours)
    for amount in [0.25, 0.5, 3]:
        rust = global_magnitude_masks(weights, amount, rust)
        global_magnitude_masks(weights, amount, ours, backend="torch", out=ours)
        assert_same(rust, ours)


def test_wide_keys_with_f64(device_paths: None) -> None:
    """An f64 tensor puts every dtype in the f64 key space (int64 keys, the wide sort)."""
    gen = torch.Generator().manual_seed(6)
    weights = [torch.randn(50_000, generator=gen, dtype=torch.float64) * 1e-30]
    weights += [torch.randn(20_000, generator=gen).to(d) for d in DTYPES[:3]]
    for amount in [0.1, 0.5, 12_345]:
        assert_same(
            global_magnitude_masks(weights, amount),
            global_magnitude_masks(weights, amount, backend="torch"),
        )


def test_nan_among_alive_weights_still_raises(device_paths: None) -> None:
    w = torch.randn(70_000)
    w[123] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        global_magnitude_masks([w], 0.3, backend="torch")
    masks = [torch.ones(70_000, dtype=torch.bool)]
    masks[0][123] = False  # dead NaN: ignored
    assert_same(global_magnitude_masks([w], 0.3, masks), global_magnitude_masks([w], 0.3, masks, backend="torch"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_selection_runs_seven_full_size_kernels_on_a_device(device_paths: None, dtype: torch.dtype) -> None:
    """What the GPU guide counts: keys; >= lo and >= hi, each narrowed inside its own kernel; in
    the bracket; the kept count; the largest key; the compaction. Survivor masks add the and
    and their count (two kernels); a round in place adds one writing pass (keys, > threshold,
    and survivors)."""
    n = KERNEL_COUNT_N
    w, m, widen = one_chunk(dtype)
    ops = full_size_kernels(lambda: global_magnitude_masks(w, 0.5, backend="torch"), n)
    assert len(ops) == 7 + widen, ops
    # The comparisons' copies (on the host torch narrows through a temporary) and no other: the
    # kept count reads the flags as words, not as a bool-to-int64 copy (what `sum` would make).
    assert ops.count("aten::copy_") == 2 + widen and "aten::nonzero" in ops, ops
    # survivor masks: the and, and their count (clamped to bytes of 0 or 1, then read as words)
    ops = full_size_kernels(lambda: global_magnitude_masks(w, 0.5, m, backend="torch"), n)
    assert len(ops) == 10 + widen and "aten::clamp" in ops, ops
    assert ops.count("aten::copy_") == 2 + widen, ops
    ops = full_size_kernels(lambda: global_magnitude_masks(w, 0.5, m, backend="torch", out=m), n)
    assert len(ops) == 13 + 2 * widen, ops


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_cuda_selection_runs_the_kernels_the_device_paths_count(dtype: torch.dtype) -> None:
    """On a GPU the same counts as above, with no copy but the bf16 widening: each comparison
    narrows inside its own kernel and no count makes an int64 copy of the flags."""
    n = KERNEL_COUNT_N
    w, m, widen = one_chunk(dtype)
    w, m = [t.cuda() for t in w], [t.cuda() for t in m]
    ops = full_size_kernels(lambda: global_magnitude_masks(w, 0.5, backend="torch"), n)
    assert len(ops) == 7 + widen and ops.count("aten::copy_") == widen, ops
    ops = full_size_kernels(lambda: global_magnitude_masks(w, 0.5, m, backend="torch"), n)
    assert len(ops) == 10 + widen, ops
    ops = full_size_kernels(lambda: global_magnitude_masks(w, 0.5, m, backend="torch", out=m), n)
    assert len(ops) == 13 + 2 * widen, ops

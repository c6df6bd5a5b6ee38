"""The torch-op backend (`backend="torch"`, what CUDA tensors run) against the Rust kernels, on CPU."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import torch
from lottery_ticket import global_magnitude_masks
from lottery_ticket.torch import _radix, _select
from lottery_ticket.torch._ops import TorchKernels
from lottery_ticket.torch._ranks import OneProcess

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
# Ties within and across dtypes, +-0, inf, an f32 subnormal (0 in f16/bf16) and the smallest one.
POOL = torch.tensor(
    [0.0, -0.0, 0.5, -0.5, 1.0, -2.0, float("inf"), -float("inf"), 1e-40, -1e-45, 3.0e-8], dtype=torch.float64
)
CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device: no GPU is lent to this task; the torch-op path is tested on CPU",
)


def random_case(gen: torch.Generator, trial: int) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    weights = []
    for _ in range(int(torch.randint(1, 6, (1,), generator=gen))):
        dtype = DTYPES[int(torch.randint(0, 4, (1,), generator=gen))] if trial % 3 else torch.float32
        shape = (int(torch.randint(1, 9, (1,), generator=gen)), int(torch.randint(1, 9, (1,), generator=gen)))
        if trial % 2:
            w = POOL[torch.randint(len(POOL), shape, generator=gen)]
        else:
            scale = 10.0 ** float(torch.randint(-44, 3, (1,), generator=gen))  # subnormal ranges too
            w = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
        weights.append(w.to(dtype))
    if trial % 5 == 0:  # one empty tensor (two in one call trip the Rust path's borrow check today)
        weights.insert(trial % len(weights), torch.zeros(0, 3))
    masks = [torch.rand(w.shape, generator=gen) > 0.3 for w in weights] if trial % 4 == 1 else None
    return weights, masks


def assert_same(rust: list[torch.Tensor], ours: list[torch.Tensor]) -> None:
    for a, b in zip(rust, ours):
        assert b.dtype == torch.bool and b.shape == a.shape and b.device == a.device
        assert torch.equal(a, b)


@pytest.mark.parametrize("chunk", [_select.CHUNK, 7])
def test_bit_identical_to_the_rust_kernels_on_random_cases(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(_select, "CHUNK", chunk)  # 7: ties and tensors split over many chunks
    gen = torch.Generator().manual_seed(chunk)
    for trial in range(25 if chunk > 7 else 10):
        weights, masks = random_case(gen, trial)
        alive = [int(m.sum()) for m in masks] if masks is not None else [w.numel() for w in weights]
        if sum(alive) == 0:
            continue
        for amount in [0.0, 0.3, 0.5, 0.77, 1.0, 0, 1, sum(alive) // 2, sum(alive)]:
            assert_same(
                global_magnitude_masks(weights, amount, masks),
                global_magnitude_masks(weights, amount, masks, backend="torch"),
            )
        for amount in [0.0, 0.4, 1.0, min(alive)]:
            layer = [global_magnitude_masks(weights, amount, masks, "layer", backend=b) for b in ("rust", "torch")]
            assert_same(*layer)


def test_dict_inputs_and_repeated_rounds_match() -> None:
    gen = torch.Generator().manual_seed(3)
    weights = {f"w{i}": torch.randn(20, 30, generator=gen).to(d) for i, d in enumerate(DTYPES)}
    rust = torch_ = None
    for amount in [0.2, 0.5, 100, 0.9]:
        rust = global_magnitude_masks(weights, amount, rust)
        torch_ = global_magnitude_masks(weights, amount, torch_, backend="torch")
        assert list(torch_) == list(weights)
        assert_same(list(rust.values()), list(torch_.values()))


def test_strided_weights_masks_and_out_match() -> None:
    """Flat views with a stride (a column, every third weight) stay views through the selection
    (``out=``, the survivor masks themselves, must be contiguous)."""
    gen = torch.Generator().manual_seed(4)
    weights = [torch.randn(400, 300, generator=gen)[:, 7], torch.randn(900_000, generator=gen)[::3]]
    masks = [(torch.rand(400, 2, generator=gen) > 0.2)[:, 1], (torch.rand(900_000, generator=gen) > 0.2)[::3]]
    assert not any(t.is_contiguous() for t in weights + masks)
    for survivors in (None, masks):
        assert_same(
            global_magnitude_masks(weights, 0.4, survivors),
            global_magnitude_masks(weights, 0.4, survivors, backend="torch"),
        )
    out = [m.contiguous() for m in masks]
    global_magnitude_masks(weights, 0.4, out, backend="torch", out=out)
    assert_same(global_magnitude_masks(weights, 0.4, masks), out)


def test_histogram_equals_bincount() -> None:
    digits = torch.randint(0, 17, (1000,), dtype=torch.int32)
    out = torch.ones(18, dtype=torch.int64)
    _radix.histogram(digits, out)
    assert torch.equal(out, 1 + torch.bincount(digits, minlength=18))


@pytest.mark.parametrize("wide", [False, True])
def test_sorted_selection_equals_the_radix_select(wide: bool) -> None:
    """The GPU's one-process path (`kth_sorted`) against the histograms, dead keys and ties too."""
    gen = torch.Generator().manual_seed(int(wide))
    dtype = torch.int64 if wide else torch.int32
    for trial in range(30):
        n = int(torch.randint(1, 3000, (1,), generator=gen))
        top = 1 << (62 if wide else 30) if trial % 2 else 50  # wide-spread keys, or many ties
        t = torch.randint(0, top, (n,), generator=gen, dtype=torch.int64).to(dtype)
        t[torch.rand(n, generator=gen) < 0.2] = -1  # dead
        alive = int((t >= 0).sum())
        for rank in {1, alive, max(1, alive // 3), max(1, alive // 2)}:
            if alive:
                expected = _radix.kth_key(lambda t=t: [t], rank, wide, OneProcess(), t.device)[:2]
                assert _radix.kth_sorted(torch.sort(t).values, rank) == expected


def test_nan_among_alive_weights_raises_and_leaves_inputs_untouched() -> None:
    weights = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, float("nan")], dtype=torch.bfloat16)]
    masks = [torch.tensor([True, True]), torch.tensor([True, True])]
    before = [w.clone() for w in weights]
    with pytest.raises(ValueError, match=r"weights\[1\]: contains NaN"):
        global_magnitude_masks(weights, 0.5, masks, backend="torch")
    with pytest.raises(ValueError, match=r"weights\[1\]: contains NaN"):
        global_magnitude_masks(weights, 1, masks, "layer", backend="torch")
    for w, b in zip(weights, before):
        assert torch.equal(w.view(torch.uint8), b.view(torch.uint8))
    # Small tensors share a unit: the error names the one holding the NaN, masked or not.
    small = [torch.randn(100), torch.randn(100), torch.randn(100)]
    small[1][3] = float("nan")
    for survivors in (None, [torch.ones(100, dtype=torch.bool)] * 3):
        with pytest.raises(ValueError, match=r"weights\[1\]: contains NaN"):
            global_magnitude_masks(small, 0.5, survivors, backend="torch")
    # A NaN among pruned weights is not ranked.
    masks[1][1] = False
    assert_same(
        global_magnitude_masks(weights, 0.5, masks), global_magnitude_masks(weights, 0.5, masks, backend="torch")
    )


def test_amount_errors_match_the_rust_kernels() -> None:
    weights = [torch.ones(3), torch.ones(2)]
    for scope in ("global", "layer"):
        messages = []
        for backend in ("rust", "torch"):
            with pytest.raises(ValueError, match="amount: cannot prune") as err:
                global_magnitude_masks(weights, 6 if scope == "global" else 3, scope=scope, backend=backend)  # type: ignore[arg-type]
            messages.append(str(err.value))
        assert messages[0] == messages[1]


def test_bad_backend_arguments_name_the_argument() -> None:
    w = [torch.tensor([1.0, 2.0])]
    with pytest.raises(ValueError, match="backend: expected 'auto', 'rust' or a framework"):
        global_magnitude_masks(w, 1, backend="cuda")
    with pytest.raises(ValueError, match="process_group: the Rust kernels run in one process"):
        global_magnitude_masks(w, 1, backend="rust", process_group=True)
    with pytest.raises(TypeError, match="process_group: expected a torch.distributed ProcessGroup"):
        global_magnitude_masks(w, 1, backend="torch", process_group=object())
    with pytest.raises(TypeError, match="process_group: selection across ranks needs torch tensors"):
        global_magnitude_masks([np.ones(2)], 1, process_group=True)
    if not torch.distributed.is_initialized():
        with pytest.raises(ValueError, match="process_group: torch.distributed is not initialized"):
            global_magnitude_masks(w, 1, process_group=True)
    with pytest.raises(TypeError, match=r"weights\[0\]: expected a torch tensor"):
        global_magnitude_masks([np.ones(2)], 1, backend="torch")
    with pytest.raises(ValueError, match=r"weights\[1\]: tensor is on the meta device"):
        global_magnitude_masks([w[0], torch.empty(2, device="meta")], 1, backend="torch")
    assert w[0].tolist() == [1.0, 2.0]


def test_torch_applier_writes_positive_zero_bits_and_keeps_survivors() -> None:
    kernels = TorchKernels()
    weights = [torch.tensor([-1.5, float("nan"), -0.0, 2.0]), torch.tensor([-3.0, 4.0], dtype=torch.bfloat16)]
    masks = [torch.tensor([False, False, True, True]), torch.tensor([False, True])]
    apply = kernels.mask_applier(weights, masks, ["weights[0]", "weights[1]"])
    apply()
    assert weights[0].view(torch.int32).tolist() == [
        0,
        0,
        torch.tensor(-0.0).view(torch.int32).item(),
        torch.tensor(2.0).view(torch.int32).item(),
    ]
    assert weights[1].tolist() == [0.0, 4.0] and weights[1].view(torch.int16)[0].item() == 0
    snaps = [torch.tensor([7.0, 8.0, 9.0, 10.0]), torch.tensor([5.0, 6.0], dtype=torch.bfloat16)]
    kernels.rewind(weights, snaps, masks, ["weights[0]", "weights[1]"])
    assert weights[0].tolist() == [0.0, 0.0, 9.0, 10.0] and weights[1].tolist() == [0.0, 6.0]
    with pytest.raises(TypeError, match=r"snapshots\[1\]: dtype"):
        kernels.rewind(weights, [snaps[0], snaps[1].float()], masks, ["weights[0]", "weights[1]"])
    assert weights[0].tolist() == [0.0, 0.0, 9.0, 10.0]
    weights[0].data = torch.zeros(4)
    with pytest.raises(RuntimeError, match="storage was replaced"):
        apply()


def test_alive_counts_of_the_torch_kernels() -> None:
    masks = [torch.tensor([True, False, True]), torch.zeros(0, dtype=torch.bool)]
    assert TorchKernels().alive_counts(masks, ["masks[0]", "masks[1]"], None) == [2, 0]


@CUDA
def test_cuda_tensors_run_the_torch_ops_in_place_and_match_the_cpu() -> None:
    from lottery_ticket import MaskApplier, alive_counts, apply_masks, rewind

    gen = torch.Generator().manual_seed(5)
    for trial in range(20):
        weights, masks = random_case(gen, trial)
        cuda = [w.cuda() for w in weights]
        cuda_masks = [m.cuda() for m in masks] if masks is not None else None
        for amount in [0.0, 0.5, 1.0]:
            got = global_magnitude_masks(cuda, amount, cuda_masks)
            assert all(g.is_cuda for g in got)
            assert_same(global_magnitude_masks(weights, amount, masks), [g.cpu() for g in got])
    w = [torch.randn(100, 10, device="cuda")]
    m = global_magnitude_masks(w, 0.5)
    apply_masks(w, m)
    assert alive_counts(m) == [500] and int((w[0] != 0).sum()) == 500
    snap = [torch.randn(100, 10, device="cuda")]
    rewind(w, snap, m)
    assert torch.equal(w[0], snap[0] * m[0])
    MaskApplier(w, m)()
    with pytest.raises(ValueError, match=r"masks\[0\]: on cpu"):
        global_magnitude_masks(w, 0.5, [m[0].cpu()])
    with pytest.raises(ValueError, match="backend: 'rust' runs on host memory"):
        global_magnitude_masks(w, 0.5, backend="rust")


def spy_on_fallback(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record each digit level of a radix select over every weight (the fallback)."""
    calls: list[int] = []
    every_key = _select.Selection.every_key

    def spied(self: _select.Selection) -> Any:
        calls.append(1)
        return every_key(self)

    monkeypatch.setattr(_select.Selection, "every_key", spied)
    return calls


@pytest.mark.parametrize("dtype", DTYPES)
def test_sampled_bracket_matches_the_rust_kernels(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    monkeypatch.setattr(_select, "SAMPLE_ALL", 0)  # sample even these small tensors
    monkeypatch.setattr(_select, "CHUNK", 3000)
    fallbacks = spy_on_fallback(monkeypatch)
    gen = torch.Generator().manual_seed(11)
    weights = [torch.randn(n, generator=gen, dtype=torch.float64).to(dtype) for n in (5000, 3, 7000)]
    masks = [torch.rand(w.shape, generator=gen) > 0.25 for w in weights]
    for current in (None, masks):
        for amount in [0.01, 0.3, 0.5, 0.99, 1, 4000]:
            assert_same(
                global_magnitude_masks(weights, amount, current),
                global_magnitude_masks(weights, amount, current, backend="torch"),
            )
    assert not fallbacks  # every bracket held the k-th key


def test_bracket_misses_and_candidate_overflow_fall_back_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_select, "BRACKET_SIGMAS", 0.0)  # a bracket of +-2 sampled ranks: it misses
    fallbacks = spy_on_fallback(monkeypatch)
    gen = torch.Generator().manual_seed(12)
    weights = [torch.randn(150_000, generator=gen), POOL[torch.randint(len(POOL), (50_000,), generator=gen)].float()]
    masks = [torch.rand(w.shape, generator=gen) > 0.1 for w in weights]
    for amount in [0.2, 0.45, 0.7, 99_999]:
        assert_same(
            global_magnitude_masks(weights, amount, masks),
            global_magnitude_masks(weights, amount, masks, backend="torch"),
        )
    assert fallbacks
    monkeypatch.setattr(_select, "BRACKET_SIGMAS", 5.0)
    monkeypatch.setattr(_select, "MIN_CANDIDATES", 10)  # the candidates overflow their budget
    monkeypatch.setattr(_select, "CANDIDATE_SHARE", 1 << 40)
    before = len(fallbacks)
    assert_same(global_magnitude_masks(weights, 0.5), global_magnitude_masks(weights, 0.5, backend="torch"))
    assert len(fallbacks) > before


@pytest.mark.parametrize("backend", ["rust", "torch"])
def test_out_masks_are_written_in_place_and_equal_fresh_masks(backend: str) -> None:
    gen = torch.Generator().manual_seed(13)
    weights = {"a": torch.randn(300, 40, generator=gen), "b": torch.randn(77, generator=gen).bfloat16()}
    masks = {k: torch.rand(w.shape, generator=gen) > 0.2 for k, w in weights.items()}
    for amount in [0.3, 0.5, 10, 0.0]:
        expected = global_magnitude_masks(weights, amount, masks)
        addresses = {k: m.data_ptr() for k, m in masks.items()}
        got = global_magnitude_masks(weights, amount, masks, backend=backend, out=masks)
        assert got is masks and {k: m.data_ptr() for k, m in got.items()} == addresses
        assert_same(list(expected.values()), list(got.values()))
    layer = global_magnitude_masks(weights, 0.5, masks, "layer")
    global_magnitude_masks(weights, 0.5, masks, "layer", backend=backend, out=masks)
    assert_same(list(layer.values()), list(masks.values()))


@pytest.mark.parametrize("backend", ["rust", "torch"])
def test_out_errors_leave_the_masks_untouched(backend: str) -> None:
    weights = [torch.randn(200_000), torch.tensor([1.0, float("nan"), 2.0])]
    masks = [torch.rand(200_000) > 0.5, torch.tensor([True, True, False])]
    before = [m.clone() for m in masks]
    with pytest.raises(ValueError, match=r"weights\[1\]: contains NaN"):
        global_magnitude_masks(weights, 0.5, masks, backend=backend, out=masks)
    masks[1][1] = False
    before[1][1] = False
    with pytest.raises(ValueError, match="amount: cannot prune"):
        global_magnitude_masks(weights, 10**6, masks, backend=backend, out=masks)
    assert_same(before, masks)
    with pytest.raises(ValueError, match=r"out\[0\]: must be the survivor mask itself"):
        global_magnitude_masks(weights, 0.5, masks, backend=backend, out=[before[0], masks[1]])
    with pytest.raises(ValueError, match="out: masks are written in place"):
        global_magnitude_masks(weights, 0.5, backend=backend, out=masks)
    assert_same(before, masks)


# Operations that only make views or metadata: no pass over the elements.
_VIEWS = {
    "aten::view", "aten::reshape", "aten::_reshape_alias", "aten::slice", "aten::as_strided", "aten::alias",
    "aten::detach", "aten::expand", "aten::to", "aten::flatten", "aten::unsqueeze", "aten::squeeze",
    "aten::select", "aten::narrow", "aten::split", "aten::split_with_sizes", "aten::lift_fresh", "aten::empty",
    "aten::empty_strided", "aten::empty_like", "aten::resize_", "aten::detach_", "aten::contiguous", "detach",
}  # fmt: skip
# Gathers and scatters through a small index (the sample, the candidates): they touch only the
# indexed elements of their full-size input.
_INDEXED = {"aten::index", "aten::index_select", "aten::index_put_", "aten::_index_put_impl_", "aten::index_fill_"}
_ITEM_SIZE = {"long int": 8, "double": 8, "int": 4, "float": 4, "short int": 2, "c10::Half": 2, "c10::BFloat16": 2}


def full_size_kernels(run: Callable[[], object], n: int) -> list[str]:
    """Operations that read or write a tensor of ``n`` or more bytes (a bool per weight, or a
    view of those bools as wider words) and hand no such work to a child operation (so a
    composite op counts once, by its kernels). A parent's own pass beside a busy child goes
    uncounted: a comparison into an output of another dtype computes into a temporary and
    copies it over, and this rule once counted that as one kernel (`_buffers.compare`)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        run()

    def nbytes(shape: Any, dtype: str) -> int:
        if not isinstance(shape, list) or not shape:
            return 0
        return math.prod(shape) * _ITEM_SIZE.get(dtype, 1)

    # FunctionEvent.input_dtypes is new in torch 2.12; older torch keeps the dtypes on the
    # Kineto event that a CPU op's FunctionEvent takes its id from.
    kineto = {k.correlation_id(): k.dtypes() for k in prof.profiler.kineto_results.events()}

    def dtypes(e: Any) -> list[str]:
        found = getattr(e, "input_dtypes", None)
        return list(found) if found is not None else list(kineto.get(e.id, []))

    def big(e: Any) -> bool:
        return any(nbytes(s, d) >= n for s, d in zip(e.input_shapes, dtypes(e)))

    events = [e for e in prof.events() if big(e)]
    names = []
    for e in events:
        busy_child = any(big(c) and c.name not in _VIEWS | _INDEXED for c in e.cpu_children)
        if e.name not in _VIEWS | _INDEXED and not busy_child:
            names.append(e.name)
    return names


KERNEL_COUNT_N = 1 << 20  # sampled (above SAMPLE_ALL), one chunk


def one_chunk(dtype: torch.dtype) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    """A weight of ``KERNEL_COUNT_N`` elements, survivor masks for it, and the kernels its dtype
    adds to each pass over the keys (bf16 widens to f32 keys first: one copy)."""
    gen = torch.Generator().manual_seed(14)
    w = [torch.randn(KERNEL_COUNT_N, generator=gen).to(dtype)]
    m = [torch.rand(KERNEL_COUNT_N, generator=gen) > 0.2]
    return w, m, int(dtype != torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_selection_runs_nine_full_size_kernels_on_the_host(dtype: torch.dtype) -> None:
    n = KERNEL_COUNT_N
    w, m, widen = one_chunk(dtype)
    # keys; >= lo and >= hi, each into the key-typed scratch and narrowed into bools (a GPU
    # narrows inside the comparison: two kernels fewer); in the bracket; the kept count; the
    # largest key (NaN); the candidates
    ops = full_size_kernels(lambda: global_magnitude_masks(w, 0.5, backend="torch"), n)
    assert len(ops) == 9 + widen, ops
    assert ops.count("aten::ge") == 2 and ops.count("aten::copy_") == 2 + widen, ops
    assert "aten::sort" not in ops and "aten::cat" not in ops and "aten::bucketize" not in ops
    # survivor masks: the mask ands them, and they are counted (two reductions over bools)
    ops = full_size_kernels(lambda: global_magnitude_masks(w, 0.5, m, backend="torch"), n)
    assert len(ops) == 11 + widen, ops
    # in place: the counting pass, then one writing pass (keys, > threshold narrowed, and survivors)
    ops = full_size_kernels(lambda: global_magnitude_masks(w, 0.5, m, backend="torch", out=m), n)
    assert len(ops) == 15 + 2 * widen, ops

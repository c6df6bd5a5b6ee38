"""The torch-op selection packs small tensors into shared units (`torch._units`): the same masks
as the Rust kernels, and a number of ops that does not grow with the number of tensors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import torch
from lottery_ticket import global_magnitude_masks
from lottery_ticket.torch import _select, _units
from lottery_ticket.torch._ranks import Piece

POOL = torch.tensor([0.0, -0.0, 0.5, -0.5, 1.0, -2.0, 1e-40, 3.0e-8], dtype=torch.float64)


def many_tensors(gen: torch.Generator, count: int, dtypes: list[torch.dtype], tied: bool) -> list[torch.Tensor]:
    out = []
    for i in range(count):
        n = int(torch.randint(0, 3000, (1,), generator=gen)) if i % 7 else 0  # every 7th is empty
        w = POOL[torch.randint(len(POOL), (n,), generator=gen)] if tied else torch.randn(n, generator=gen).double()
        out.append(w.to(dtypes[i % len(dtypes)]))
    return out


@pytest.fixture(params=["host", "device-like"])
def packing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Small chunks and a sample even at this size; "device-like": pack every tensor that fits
    a chunk, as a GPU does."""
    monkeypatch.setattr(_select, "SAMPLE_ALL", 0)
    monkeypatch.setattr(_select, "CHUNK", 5000)
    if request.param == "device-like":
        monkeypatch.setattr(_units, "HOST_PACK_BELOW", 1 << 40)
    return str(request.param)


def test_bad_input_leaves_the_out_masks_untouched(packing: str) -> None:
    gen = torch.Generator().manual_seed(8)
    weights = many_tensors(gen, 20, [torch.float32], tied=False)
    weights[5] = torch.tensor([1.0, float("nan"), 2.0])
    masks = [torch.rand(w.shape, generator=gen) > 0.3 for w in weights]
    masks[5][:] = True
    before = [m.clone() for m in masks]
    with pytest.raises(ValueError, match=r"weights\[5\]: contains NaN"):
        global_magnitude_masks(weights, 0.5, masks, backend="torch", out=masks)
    weights[5][1] = 0.5
    with pytest.raises(ValueError, match="amount: cannot prune"):
        global_magnitude_masks(weights, 10**9, masks, backend="torch", out=masks)
    assert all(torch.equal(a, b) for a, b in zip(masks, before))


@pytest.mark.parametrize(
    "dtypes", [[torch.float32], [torch.bfloat16], [torch.float16, torch.bfloat16, torch.float32], [torch.float64]]
)
@pytest.mark.parametrize("tied", [False, True])
def test_packed_units_give_the_rust_kernels_masks(packing: str, dtypes: list[torch.dtype], tied: bool) -> None:
    gen = torch.Generator().manual_seed(len(dtypes) + 10 * tied)
    weights = many_tensors(gen, 40, dtypes, tied)
    masks = [torch.rand(w.shape, generator=gen) > 0.3 for w in weights]
    for current in (None, masks):
        for amount in [0.01, 0.3, 0.5, 0.9, 1, 5000]:
            expected = global_magnitude_masks(weights, amount, current)
            assert all(
                torch.equal(a, b)
                for a, b in zip(expected, global_magnitude_masks(weights, amount, current, backend="torch"))
            )
            if current is not None:  # in place: packed units scatter into the caller's masks
                out = [m.clone() for m in masks]
                global_magnitude_masks(weights, amount, out, backend="torch", out=out)
                assert all(torch.equal(a, b) for a, b in zip(expected, out))


def test_a_missed_bracket_spends_tie_budgets_piece_by_piece(packing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_select, "BRACKET_SIGMAS", 0.0)  # the bracket misses: the radix select and budgets
    gen = torch.Generator().manual_seed(5)
    weights = many_tensors(gen, 30, [torch.float32, torch.bfloat16], tied=True)
    masks = [torch.rand(w.shape, generator=gen) > 0.2 for w in weights]
    for amount in [0.25, 0.5, 0.75, 777]:
        expected = global_magnitude_masks(weights, amount, masks)
        out = [m.clone() for m in masks]
        global_magnitude_masks(weights, amount, out, backend="torch", out=out)
        assert all(torch.equal(a, b) for a, b in zip(expected, out))


def test_units_never_mix_replicas_with_counted_pieces() -> None:
    pieces = [Piece(torch.ones(n), None, f"w{i}", counted=i != 2) for i, n in enumerate([3, 4, 5, 0, 6, 100])]
    units = _units.plan(pieces, chunk=10, pack=True)
    assert [[(s.piece, s.start, s.stop) for s in u.spans] for u in units] == [
        [(0, 0, 3), (1, 0, 4)],  # 3 + 4 fit a chunk of 10
        [(2, 0, 5)],  # a replica alone
        [(4, 0, 6)],  # the empty piece has no span; 6 more would overflow the chunk
        *[[(5, s, s + 10)] for s in range(0, 100, 10)],  # a large piece is cut into chunks
    ] and [u.base for u in units] == [0, 7, 12, *range(18, 118, 10)]
    assert [u.counted for u in units][:3] == [True, False, True]
    unpacked = _units.plan(pieces, chunk=10, pack=False)
    assert all(not u.packed for u in unpacked) and len(unpacked) == 14


def kernel_ops(run: Callable[[], object]) -> int:
    """Profiled aten ops that run a kernel (views, allocations and casts that copy nothing left out)."""
    from torch.profiler import ProfilerActivity, profile

    free = {"aten::view", "aten::reshape", "aten::_reshape_alias", "aten::slice", "aten::as_strided", "aten::alias",
            "aten::detach", "aten::expand", "aten::to", "aten::split", "aten::split_with_sizes", "aten::empty",
            "aten::empty_strided", "aten::lift_fresh", "aten::detach_", "detach", "aten::narrow", "aten::select",
            "aten::resize_", "aten::unbind", "aten::lift_fresh_copy", "aten::set_", "aten::result_type"}  # fmt: skip
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return sum(1 for e in prof.events() if e.name.startswith("aten::") and e.name not in free and e.cpu_parent is None)


def test_ops_per_selection_do_not_grow_with_the_number_of_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_units, "HOST_PACK_BELOW", 1 << 40)  # as on a GPU, where each op is a launch
    gen = torch.Generator().manual_seed(6)
    total = 600_000
    ops = {}
    for count in (6, 600):
        weights = [torch.randn(total // count, generator=gen) for _ in range(count)]
        masks = [torch.rand(w.shape, generator=gen) > 0.2 for w in weights]
        global_magnitude_masks(weights, 0.3, masks, backend="torch")  # warm
        ops[count] = kernel_ops(lambda w=weights, m=masks: global_magnitude_masks(w, 0.3, m, backend="torch", out=m))
    # The 600-tensor model runs within a few ops of the 6-tensor one (per tensor: ~12 ops unpacked).
    print(ops)
    assert ops[600] <= ops[6] + 20, ops


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: no GPU is lent to this task; packing is tested on CPU"
)
@pytest.mark.parametrize("sigmas", [_select.BRACKET_SIGMAS, 0.0])  # 0: the bracket misses
def test_many_tensors_on_cuda_match_the_rust_kernels(monkeypatch: pytest.MonkeyPatch, sigmas: float) -> None:
    monkeypatch.setattr(_select, "SAMPLE_ALL", 0)
    monkeypatch.setattr(_select, "BRACKET_SIGMAS", sigmas)
    gen = torch.Generator().manual_seed(7)
    for dtypes, tied in [([torch.float32], False), ([torch.bfloat16, torch.float16, torch.float32], True)]:
        weights = many_tensors(gen, 60, dtypes, tied)
        masks = [torch.rand(w.shape, generator=gen) > 0.3 for w in weights]
        on_gpu = [w.cuda() for w in weights]
        for current in (None, masks):
            for amount in [0.2, 0.5, 1000]:
                expected = global_magnitude_masks(weights, amount, current)
                out = None if current is None else [m.cuda() for m in current]
                got = global_magnitude_masks(on_gpu, amount, out, out=out)
                assert all(g.is_cuda and torch.equal(g.cpu(), e) for g, e in zip(got, expected))

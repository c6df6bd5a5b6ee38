"""Host buffers of the torch-op path and the drop-in (`lottery_ticket.torch._buffers`)."""

from __future__ import annotations

from typing import Any

import pytest

import torch
from lottery_ticket.torch._buffers import Buffers, compare, count_true, empty, empty_like, positions_of, prefaulted


@pytest.mark.parametrize("make", [empty, prefaulted])
@pytest.mark.parametrize("dtype", [torch.bool, torch.int32, torch.int64, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 4097, 1 << 20])
def test_empty_has_the_length_dtype_and_device_asked_for(make: Any, dtype: torch.dtype, n: int) -> None:
    t = make(n, dtype, torch.device("cpu"))
    assert t.shape == (n,) and t.dtype == dtype and t.device.type == "cpu" and t.is_contiguous()
    t.fill_(1)  # writable, and its own memory
    assert int(t.to(torch.int64).sum()) == n


def test_empty_like_keeps_shape_and_the_memory_format_of_strided_tensors() -> None:
    w = torch.randn(4, 3, 5, 5).bfloat16()
    like = empty_like(w)
    assert like.shape == w.shape and like.dtype == w.dtype and like.is_contiguous()
    channels_last = w.to(memory_format=torch.channels_last)
    assert empty_like(channels_last).stride() == channels_last.stride()


@pytest.mark.parametrize("n", [0, 5, 8, 1000, (1 << 16) + 3, 1 << 18])
def test_positions_of_equals_nonzero_at_every_size_and_density(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    buffers = Buffers(max(n, 1), torch.int32, torch.device("cpu"))
    for density in (0.0, 0.003, 0.5, 1.0):
        flags = torch.rand(n, generator=gen) < density
        buffers.flags[:n] = flags
        buffers.flags[n:] = True  # stale padding must not leak into the result
        assert torch.equal(positions_of(buffers.flags, n), torch.nonzero(flags).reshape(-1))


@pytest.mark.parametrize("key_dtype", [torch.int32, torch.int64])
def test_compare_writes_the_bool_comparison_in_place_without_a_temporary(key_dtype: torch.dtype) -> None:
    from torch.profiler import ProfilerActivity, profile

    n = 10_000
    keys = torch.randint(0, 1 << 30, (n,), dtype=key_dtype, generator=torch.Generator().manual_seed(3))
    buffers = Buffers(n + 5, key_dtype, torch.device("cpu"))
    backing = torch.ones(n + 1, dtype=torch.bool)
    flags = backing[1:]  # a unit's slice of a larger mask
    for op in (torch.ge, torch.gt, torch.eq):
        bound = int(keys[17])
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            compare(op, keys, bound, flags, buffers.compared)
        assert torch.equal(flags, op(keys, bound))
        assert int(flags.view(torch.uint8).max()) <= 1  # valid bools
        assert bool(backing[0])  # nothing written outside the slice
        # A key-sized temporary per call is what faulted pages in again and again (the bound's
        # own 0-d tensor is allocated and is not one).
        made = [e for e in prof.events() if e.name in ("aten::empty", "aten::empty_like", "aten::empty_strided")]
        assert all(e.input_shapes[0] in ([], [[]], [0]) for e in made), [(e.name, e.input_shapes) for e in made]


@pytest.mark.parametrize("n", [0, 1, 7, 1023, 1024, 1031, 5000, (1 << 16) + 3])
@pytest.mark.parametrize("offset", [0, 1, 5, 8])
def test_count_true_equals_count_nonzero_at_every_size_offset_and_density(n: int, offset: int) -> None:
    gen = torch.Generator().manual_seed(n + offset)
    for density in (0.0, 0.3, 1.0):
        backing = torch.rand(n + offset, generator=gen) < density
        flags = backing[offset:]  # a unit's slice of a larger mask: any storage offset
        for written in (True, False):
            counted = count_true(flags, written=written)
            assert int(counted) == int(torch.count_nonzero(flags)), (n, offset, density, written)
            assert counted.dtype == torch.int64


@pytest.mark.parametrize("host", [True, False])
def test_count_true_counts_a_callers_bytes_that_are_not_0_or_1(monkeypatch: pytest.MonkeyPatch, host: bool) -> None:
    """A caller's bool mask may hold any nonzero byte (a uint8 buffer viewed as bool): every one
    counts once, on the host path and on the device path (which clamps before reading words)."""
    from lottery_ticket.torch import _device

    monkeypatch.setattr(_device, "is_host", lambda device: host)
    gen = torch.Generator().manual_seed(9)
    raw = torch.randint(0, 256, (5000,), generator=gen, dtype=torch.uint8)
    raw[torch.rand(5000, generator=gen) < 0.5] = 0
    before = raw.clone()
    flags = raw[3:].view(torch.bool)
    assert int(count_true(flags)) == int((before[3:] != 0).sum())
    assert torch.equal(raw, before)  # the caller's bytes are not rewritten

"""Host buffers of the torch-op path and the drop-in (`lottery_ticket.torch._buffers`)."""

from __future__ import annotations

from typing import Any

import pytest

import torch
from lottery_ticket.torch._buffers import Buffers, bytes_of, count_true, empty, empty_like, positions_of, prefaulted


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


def test_comparisons_written_through_bytes_of_are_the_bool_comparisons() -> None:
    keys = torch.randint(0, 1 << 30, (10_000,), dtype=torch.int32, generator=torch.Generator().manual_seed(3))
    flags = torch.zeros(10_000, dtype=torch.bool)
    for op in (torch.ge, torch.gt, torch.eq):
        view = bytes_of(flags)
        op(keys, int(keys[17]), out=view)
        assert view.data_ptr() == flags.data_ptr()  # written in place, not into a copy
        assert torch.equal(flags, op(keys, int(keys[17])))
        assert int(flags.view(torch.uint8).max()) <= 1  # valid bools


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

"""Host buffers with huge pages, and the temporaries and compaction of the torch-op selection's chunked
passes (`_select`), and the candidates they compact."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..kernels.buffer_cache import host_buffer
from . import _device

if TYPE_CHECKING:
    from ._units import Unit

# From this many elements on, candidates are compacted a word (8 flags) at a time.
WORD_COMPACTION_ABOVE = 1 << 16


def positions_of(flags: torch.Tensor, n: int) -> torch.Tensor:
    """Ascending positions of the True entries among the first ``n`` of ``flags`` (a buffer from
    `Buffers`: 8-byte aligned, room to pad to whole words). One nonzero over 8-byte words, then
    one over the bytes of the few words holding any: a nonzero over every byte is the slowest
    op of the counting pass on the host. Small pieces take the plain nonzero (fewer ops), and so
    does a GPU: there the plain one is a fast pass, and each nonzero waits for the device once."""
    if n < WORD_COMPACTION_ABOVE or not _device.is_host(flags.device):
        return torch.nonzero(flags[:n]).reshape(-1)
    padded = -(-n // 8) * 8
    flags[n:padded] = False
    words = flags[:padded].view(torch.int64)
    hit = torch.nonzero(words).reshape(-1)
    rows, cols = torch.nonzero(torch.index_select(words, 0, hit).view(torch.bool).view(-1, 8)).unbind(1)
    return torch.index_select(hit, 0, rows) * 8 + cols


def compare(
    op: Callable[..., torch.Tensor], keys: torch.Tensor, bound: int, flags: torch.Tensor, scratch: torch.Tensor
) -> None:
    """``flags = op(keys, bound)`` (``torch.ge``, ``gt`` or ``eq``) for bool ``flags``, with
    no temporary. On the host torch's comparisons into bool run a scalar loop, several times
    slower than a comparison into the keys' own dtype plus a narrowing copy; but given an
    integer ``out`` of another dtype, torch allocates a key-sized temporary per call, and once
    glibc has handed that memory back to the system each call faults it in again (the
    performance page has the counts). So the comparison writes
    ``scratch`` (a key-dtype buffer at least as long, reused) and one copy narrows it into the
    flags' bytes. On a GPU the narrowing happens inside the comparison's kernel."""
    n = keys.numel()
    if not _device.is_host(flags.device):
        op(keys, bound, out=flags.view(torch.uint8))
        return
    op(keys, bound, out=scratch[:n])
    flags.view(torch.uint8).copy_(scratch[:n])


# Flags a row of the host count sums: 128 words of 8, so no byte lane of a row's sum exceeds 128.
_ROW_WORDS = 128
_ROW = 8 * _ROW_WORDS


def count_true(flags: torch.Tensor, *, written: bool = False) -> torch.Tensor:
    """How many of the 1-D bool ``flags`` are True (an int64 tensor). torch's reductions over
    bools convert them to int64 first, on a GPU too: a `sum` reads a byte and moves sixteen more
    per flag, and holds eight bytes a flag at once (512 MB for a GPU chunk). The host's
    ``count_nonzero`` runs a byte-at-a-time loop. Flags this library ``written`` (each byte 0 or
    1) are read as int64 words instead, summed per row of 128 words (each byte lane of a row's sum
    then counts at most 128 flags, so no lane carries into the next), and the rows' bytes summed;
    an unaligned head and a tail under a row are counted directly. A caller's masks, whose bytes
    need not be 0 or 1, keep ``count_nonzero`` on the host; on a GPU they are clamped to 0 or 1
    first (a byte a flag written, not eight) and counted as words."""
    if not written:
        if _device.is_host(flags.device):
            return torch.count_nonzero(flags)
        flags = flags.view(torch.uint8).clamp(max=1).view(torch.bool)
    n = flags.numel()
    head = min(n, -flags.storage_offset() % 8)
    rows = (n - head) // _ROW
    if rows == 0:
        return torch.count_nonzero(flags)
    body = flags[head : head + rows * _ROW].view(torch.int64).view(rows, _ROW_WORDS).sum(1)
    total = body.view(torch.uint8).sum(dtype=torch.int64)
    for rest in (flags[:head], flags[head + rows * _ROW :]):
        if rest.numel():
            total = total + torch.count_nonzero(rest)
    return total


def empty(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised 1-D tensor. On the host from NumPy, which asks the kernel for transparent
    huge pages on large arrays (torch's CPU allocator does not): first-touching it then takes
    far fewer page faults (`kernels.arrays.new_masks` does the same for the Rust kernels), and
    none when a previous call's buffer of that size is reused (`kernels.buffer_cache`)."""
    return _host_or_device(n, dtype, device, prefault=False)


def prefaulted(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`empty`, with its host pages faulted in by this thread (a byte written per page) before
    torch's ops write it chunk by chunk: when two of torch's threads first-touch the same huge
    pages a chunk at a time, faulting them in took several times longer than this one pass."""
    return _host_or_device(n, dtype, device, prefault=True)


_PAGE = 4096


def _host_or_device(n: int, dtype: torch.dtype, device: torch.device, prefault: bool) -> torch.Tensor:
    if not _device.is_host(device) or n == 0:
        return torch.empty(n, dtype=dtype, device=device)
    size = torch.empty((), dtype=dtype).element_size()
    raw = host_buffer(n * size)
    if prefault:
        raw[::_PAGE] = 0
    return torch.from_numpy(raw).view(dtype)


def empty_like(t: torch.Tensor) -> torch.Tensor:
    """`empty` in ``t``'s shape, dtype and device (``torch.empty_like`` where ``t`` is not
    contiguous, to keep its memory format)."""
    if not t.is_contiguous():
        return torch.empty_like(t)
    return empty(t.numel(), t.dtype, t.device).view(t.shape)


class Buffers:
    """Chunk-sized temporaries shared by every chunk of one selection: a buffer per chunk would
    fault its pages in again on the host (freed blocks this size go back to the system)."""

    def __init__(self, size: int, key_dtype: torch.dtype, device: torch.device) -> None:
        self.keys = empty(size, key_dtype, device)
        self.flags = empty(-(-size // 8) * 8, torch.bool, device)
        # The host comparisons' results before narrowing (`compare`); a GPU needs none.
        self.compared = empty(size if _device.is_host(device) else 0, key_dtype, device)
        self._spare: torch.Tensor | None = None

    def spare(self, n: int) -> torch.Tensor:
        """A second bool buffer (only some passes need one)."""
        if self._spare is None:
            self._spare = empty(len(self.flags), torch.bool, self.flags.device)
        return self._spare[:n]


@dataclass
class Candidates:
    """In-bracket alive weights, collected unit by unit until more than ``cap``: flat positions in
    the concatenation of every piece (ascending) and keys, a tensor of each per unit."""

    cap: int
    positions: list[torch.Tensor] = field(default_factory=list)
    keys: list[torch.Tensor] = field(default_factory=list)
    counted: int = 0  # those of counted pieces
    collected: int = 0
    overflow: bool = False

    def add(self, unit: Unit, flags: torch.Tensor, keys_at: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """The candidates ``flags`` (a `Buffers` flag buffer) marks in ``unit``; ``keys_at``: their
        keys from their positions in the unit."""
        if self.overflow:
            return
        at = positions_of(flags, unit.n)
        self.counted += at.numel() if unit.counted else 0
        self.collected += at.numel()
        self.positions.append(at + unit.base)
        self.keys.append(keys_at(at))
        self.overflow = self.collected > self.cap
        if self.overflow:  # the radix select over every weight will run: free them now
            self.positions, self.keys = [], []

"""The passes over the memory-mapped input: threshold selection, then the fused prune-and-write.

Memory stays bounded whatever the checkpoint size: the inputs are file mappings (page cache,
not anonymous memory) the kernels read in place, and the only anonymous buffers are the output
blocks (`BlockWriter`) and one slice's mask, reused from slice to slice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._files import allocate
from ..kernels.arrays import BITS_DTYPES
from ..kernels.threshold import RawTensor, Threshold, select_threshold, write_pruned_counted
from ..safetensors_header import FLOAT_DTYPES, CheckpointError, Header, TensorInfo
from ..ticket.stream import TicketStream
from ._blocks import BlockWriter
from ._guard import InputGuard

# Most bytes handed to one `write_pruned` call (an output block may end a slice sooner): large
# enough that per-call overhead vanishes, small enough that a slice's mask (one byte per
# element, for a ticket) stays a few MB.
SLICE_BYTES = 8 << 20

Progress = Callable[[int], None]


@dataclass
class Cursor:
    """One ranking's threshold and how many of its tied weights are still to prune (in order)."""

    threshold: Threshold
    ties_left: int


def bits_view(mapped: np.ndarray, t: TensorInfo) -> np.ndarray:
    """A pruned tensor's raw bits as the unsigned ints the kernels read (flat, zero-copy)."""
    dtype = FLOAT_DTYPES[t.dtype]
    itemsize = np.dtype(BITS_DTYPES[dtype]).itemsize
    if t.begin % itemsize and t.nbytes:
        # The kernels read aligned slices; the writers we know align tensors (safetensors
        # sorts them by alignment), so a misaligned one comes from an unusual writer.
        raise CheckpointError(
            f"{t.file}: tensor {t.name!r} starts at byte {t.begin}, not a multiple of {itemsize}; re-save the file to prune it"
        )
    # A view of its own buffer object: views sharing one base make the extension's borrow
    # checks compare each tensor with every other (quadratic in the tensor count).
    return np.frombuffer(memoryview(mapped.data)[t.begin : t.end], dtype=BITS_DTYPES[dtype])


def select(views: Sequence[np.ndarray], tensors: Sequence[TensorInfo], sparsity: float, scope: str) -> list[Cursor]:
    """The threshold pass: one cursor per tensor (shared by all of them for a global ranking).

    Raises `CheckpointError` for NaN among the pruned tensors, before anything is written.
    """
    raw = [RawTensor(v, FLOAT_DTYPES[t.dtype]) for v, t in zip(views, tensors)]
    try:
        if scope == "global":
            shared = select_threshold(raw, sparsity)
            cursor = Cursor(shared, shared.ties_pruned)
            return [cursor] * len(tensors)
        cursors = []
        for tensor in raw:
            threshold = select_threshold([tensor], sparsity)
            cursors.append(Cursor(threshold, threshold.ties_pruned))
        return cursors
    except ValueError as err:
        # The kernels name a tensor of a list by its index; say which file and name it is.
        found = re.match(r"weights\[(\d+)\]: (.*)", str(err), flags=re.S)
        if found is None:
            raise
        t = tensors[int(found.group(1)) if scope == "global" else len(cursors)]
        raise CheckpointError(f"{t.file}: tensor {t.name!r} {found.group(2)}") from None


def count_pruned(
    tensors: Sequence[TensorInfo],
    maps: dict[Path, np.ndarray],
    cursors: dict[str, Cursor],
    before_read: Callable[[Path], None],
    progress: Progress,
) -> dict[str, int]:
    """What the write pass would prune in each tensor, without writing (a dry run).

    Small tensors lying back to back in one file, of one dtype and one ranking, are counted by
    one kernel call over their joint bytes: the per-call overhead would otherwise dominate a
    checkpoint of many small tensors. That needs a threshold key above zero, where the pruned
    weights are exactly the copy's zero bits (every kept weight is nonzero).
    """
    counts: dict[str, int] = {}
    i = 0
    while i < len(tensors):
        t = tensors[i]
        cursor = cursors[t.name]
        j = i + 1
        if cursor.threshold.key > 0:
            limit = t.begin + SLICE_BYTES
            while j < len(tensors) and _joins(tensors[j - 1], tensors[j], cursors) and tensors[j].end <= limit:
                j += 1
        before_read(t.file)
        if j - i == 1:
            counts[t.name] = prune_tensor(t, bits_view(maps[t.file], t), None, cursor, None, progress)
        else:
            counts.update(_count_run(tensors[i:j], maps[t.file], cursor))
            progress(tensors[j - 1].end - t.begin)
        i = j
    return counts


def _joins(a: TensorInfo, b: TensorInfo, cursors: dict[str, Cursor]) -> bool:
    same = a.file == b.file and a.end == b.begin and a.dtype == b.dtype and cursors[a.name] is cursors[b.name]
    return same and a.size > 0 and b.size > 0


def _count_run(run: Sequence[TensorInfo], mapped: np.ndarray, cursor: Cursor) -> dict[str, int]:
    first, last = run[0], run[-1]
    joint = TensorInfo(first.name, first.dtype, (sum(t.size for t in run),), first.begin, last.end, first.file)
    source = bits_view(mapped, joint)
    target = np.empty_like(source)
    dtype = FLOAT_DTYPES[first.dtype]
    used, _ = write_pruned_counted(
        RawTensor(source, dtype), RawTensor(target, dtype), cursor.threshold, cursor.ties_left
    )
    cursor.ties_left -= used
    starts = np.cumsum([0] + [t.size for t in run[:-1]])
    zeros = np.add.reduceat((target == 0).astype(np.int64), starts)
    return {t.name: int(z) for t, z in zip(run, zeros)}


def prune_tensor(
    t: TensorInfo,
    view: np.ndarray,
    out: BlockWriter | None,
    cursor: Cursor,
    ticket: TicketStream | None,
    progress: Progress,
) -> int:
    """Write the pruned copy of one tensor as the next bytes of ``out``, slice by slice; returns
    how many weights it pruned. With no ``out`` (a dry run) it only counts.

    Each slice is pruned by the kernel straight into the output block (no copy after), so a
    slice ends where the block does, at any element of the tensor.
    """
    dtype = FLOAT_DTYPES[t.dtype]
    step = max(8, SLICE_BYTES // view.itemsize // 8 * 8)
    width = min(step, view.size)
    scratch = np.empty(width, dtype=view.dtype) if out is None else None
    mask = np.empty(width, dtype=np.bool_) if ticket is not None else None
    packer = _MaskPacker(ticket, t.name) if ticket is not None else None
    marks = _TicketMarks(cursor.threshold.key)
    pruned, start = 0, 0
    while start < view.size:
        count = min(step, view.size - start)
        if out is None:
            assert scratch is not None
            target = scratch[:count]
        else:
            target = out.take(count * view.itemsize).view(view.dtype)
        source = view[start : start + target.size]
        used, kept = write_pruned_counted(
            RawTensor(source, dtype), RawTensor(target, dtype), cursor.threshold, cursor.ties_left
        )
        cursor.ties_left -= used
        pruned += source.size - kept
        if packer is not None and mask is not None:
            marks.zeros_left += used
            marks.mark(source, target, mask[: source.size])
            packer.add(mask[: source.size])
        progress(source.nbytes)
        start += source.size
    if packer is not None:
        packer.finish()
    return pruned


class _MaskPacker:
    """Packs one tensor's mask into the ticket slice by slice. Packed slices concatenate only at
    multiples of 8 elements, and slices end where output blocks do, so the few bits past the
    last whole byte wait for the next slice."""

    def __init__(self, ticket: TicketStream, name: str) -> None:
        self.ticket, self.name = ticket, name
        self.element = 0
        self.carry = np.empty(0, dtype=np.bool_)

    def add(self, mask: np.ndarray) -> None:
        if self.carry.size:
            mask = np.concatenate([self.carry, mask])
        whole = mask.size // 8 * 8
        if whole:
            self.ticket.write(self.name, self.element, mask[:whole])
            self.element += whole
        self.carry = mask[whole:].copy()

    def finish(self) -> None:
        if self.carry.size:
            self.ticket.write(self.name, self.element, self.carry)


class _TicketMarks:
    """Marks the kept weights of a written copy for the ticket, slice by slice (the kernel counts
    them; only a ticket needs them one by one).

    The kernel writes +0.0 where it prunes. With a threshold key above zero every kept weight is
    nonzero, so the copy's zeros are exactly the pruned weights. A zero threshold prunes only
    tied zeros: in each slice, the first ``zeros_left`` (as the kernel reported) of its +-0.
    """

    def __init__(self, key: int) -> None:
        self.key = key
        self.zeros_left = 0

    def mark(self, source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> None:
        if self.key > 0:
            np.not_equal(target, 0, out=mask)
            return
        mask[...] = True
        magnitude = np.array(np.iinfo(source.dtype).max >> 1, dtype=source.dtype)  # clears the sign bit
        block = 1 << 20  # bounds the index array, whatever the slice size
        for start in range(0, source.size, block):
            if self.zeros_left == 0:
                return
            zeros = np.flatnonzero((source[start : start + block] & magnitude) == 0)[: self.zeros_left]
            mask[start + zeros] = False
            self.zeros_left -= zeros.size


def write_shard(
    header: Header,
    mapped: np.ndarray,
    target: Path,
    cursors: dict[str, Cursor],
    ticket: TicketStream | None,
    progress: Progress,
    guard: InputGuard,
) -> dict[str, int]:
    """Write the pruned copy of one shard to ``target``: the same header bytes (names, offsets,
    metadata) and the same layout, pruned tensors zeroed where pruned. Returns pruned counts.

    The tensors tile the file in offset order (validated when the header was read), so the
    output is produced front to back through one :class:`BlockWriter`.
    """
    allocate(target, header.file_size)
    counts = {}
    with BlockWriter(target, header.file_size) as out:
        out.copy(mapped[: header.header_bytes], progress)
        for t in header.tensors:
            guard.before_read(header.path)
            if t.name in cursors:
                counts[t.name] = prune_tensor(t, bits_view(mapped, t), out, cursors[t.name], ticket, progress)
            else:
                out.copy(mapped[t.begin : t.end], progress)
    return counts

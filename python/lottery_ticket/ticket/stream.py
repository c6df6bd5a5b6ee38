"""A ticket file written mask by mask, in the exact format of `lottery_ticket.ticket`.

`Ticket.save` builds every packed mask in memory; a 7 B model's masks are ~900 MB packed, more
than the streaming budget. Here the file is laid out up front (every packed size is known from
the shapes, and every number of the JSON document from the threshold pass), the masks are
bit-packed into a memory map as the write pass produces them, and the format's `Checksum` is
fed at the end by reading the packed masks back in name order; the digest has a fixed width, so
the header is rewritten in place with the same length.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._files import allocate
from ..config import LotteryTicketConfig, RewindStrategy
from .format import Checksum, document, metadata

_PLACEHOLDER = "0" * 64  # same width as a SHA-256 hex digest
_HASH_BLOCK = 1 << 24


class TicketStream:
    """Packed masks streamed into ``path`` (a temporary file; the caller renames it).

    Args:
        path: the file to create.
        masks: ``(name, shape)`` of every pruned tensor, in checkpoint order.
        sparsity: the requested sparsity (the config's target).
        scope: ``"global"`` or ``"layer"``.
        pruned: the number of weights pruned in all (known after the threshold pass).
    """

    def __init__(
        self, path: Path, masks: Sequence[tuple[str, tuple[int, ...]]], sparsity: float, scope: str, pruned: int
    ) -> None:
        total = sum(math.prod(shape) for _, shape in masks)
        config = LotteryTicketConfig(sparsity, 1, RewindStrategy.none(), scope == "global")
        self._doc = document(
            framework="numpy",
            mask_shapes=dict(masks),
            snapshot_dtypes={},
            config=config.to_dict(),
            sparsity_history=[pruned / total if total else 0.0],
            metrics=[],
            rewind_iteration=None,
            iterations_per_round=None,
            importance="magnitude",
        )
        # safetensors.numpy.save orders same-dtype tensors by name; we lay them out the same way.
        self._packed = {f"mask/{name}": (math.prod(shape) + 7) // 8 for name, shape in masks}
        self._offsets: dict[str, int] = {}
        position = 0
        for key in sorted(self._packed):
            self._offsets[key] = position
            position += self._packed[key]
        self._data_bytes = position
        self._data_start = 8 + len(self._header(_PLACEHOLDER))
        self.path = path
        allocate(path, self._data_start + self._data_bytes)
        self._map = np.memmap(path, dtype=np.uint8, mode="r+")

    def _header(self, digest: str) -> bytes:
        entries: dict[str, object] = {"__metadata__": metadata(self._doc, digest)}
        for key in sorted(self._packed):
            start = self._offsets[key]
            entries[key] = {
                "dtype": "U8",
                "shape": [self._packed[key]],
                "data_offsets": [start, start + self._packed[key]],
            }
        raw = json.dumps(entries, separators=(",", ":")).encode()
        return raw + b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, like safetensors writes it

    def write(self, name: str, element: int, mask: np.ndarray) -> None:
        """Pack ``mask`` (bool/uint8, flat) as the elements from ``element`` on of ``name``'s mask.

        ``element`` must be a multiple of 8 except for the tensor's last slice, so that packed
        slices concatenate into the packed whole.
        """
        packed = np.packbits(mask.ravel().view(np.bool_))
        start = self._data_start + self._offsets[f"mask/{name}"] + element // 8
        self._map[start : start + packed.size] = packed

    def finish(self) -> None:
        """Compute the digest over the packed masks and write the final header."""
        checksum = Checksum(self._doc)
        for key in sorted(self._packed):
            count = self._packed[key]
            checksum.tensor(key, np.uint8, (count,))
            start = self._data_start + self._offsets[key]
            for block in range(start, start + count, _HASH_BLOCK):
                checksum.update(self._map[block : min(block + _HASH_BLOCK, start + count)])
        header = self._header(checksum.hexdigest())
        del self._map
        with open(self.path, "r+b") as f:
            f.write(len(header).to_bytes(8, "little") + header)

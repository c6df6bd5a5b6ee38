"""The inputs held still: mapped once, and checked for changes before every read that matters.

The two passes read the inputs through memory maps. A file rewritten in place between them would
give an output pruned by a threshold computed on other data (a wrong count, silently); a file
cut short under a map kills the process with SIGBUS at the first read past its new end. So each
shard is opened once (the map and every check see the same file, even if its name is replaced),
its size and modification time are recorded against its header, the size is checked before each
tensor is read and everything again after each pass. A change is a `CheckpointError` naming
the file, before anything is renamed into place. What no check can catch is a file cut short
during one kernel call (the threshold pass is one call over all tensors): that still ends the
process with SIGBUS, and the next run of the same output removes its temp entries.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from ..safetensors_header import CheckpointError, Header


class InputGuard:
    """Open maps of ``shards`` (``maps[path]``: the whole file as read-only bytes) and the checks."""

    def __init__(self, shards: Sequence[Header]) -> None:
        self.maps: dict[Path, np.ndarray] = {}
        self._files: dict[Path, tuple[int, int, int]] = {}  # path -> (fd, size, mtime_ns)
        try:
            for header in shards:
                fd = os.open(header.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                stat = os.fstat(fd)
                self._files[header.path] = (fd, header.file_size, stat.st_mtime_ns)
                self._check_size(header.path)
                # No MADV_SEQUENTIAL: it lets the kernel drop pages soon after they are read,
                # and the write pass reads every page again right after the threshold pass.
                self.maps[header.path] = np.frombuffer(
                    mmap.mmap(fd, header.file_size, access=mmap.ACCESS_READ), dtype=np.uint8
                )
        except BaseException:
            self.close()
            raise

    def _check_size(self, path: Path) -> None:
        fd, size, _ = self._files[path]
        now = os.fstat(fd).st_size
        if now != size:
            raise CheckpointError(
                f"{path}: the input changed while pruning ({now} bytes, {size} when its header was read); nothing written"
            )

    def before_read(self, path: Path) -> None:
        """Check that ``path`` still has its size (a read past a cut end would be SIGBUS)."""
        self._check_size(path)

    def check(self) -> None:
        """Check every file's size and modification time (a rewrite in place changes the latter)."""
        for path, (fd, _, mtime) in self._files.items():
            self._check_size(path)
            if os.fstat(fd).st_mtime_ns != mtime:
                raise CheckpointError(f"{path}: the input was modified while pruning; nothing written")

    def close(self) -> None:
        self.maps.clear()  # the maps close when the last view of them goes
        for fd, _, _ in self._files.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._files.clear()

    def __enter__(self) -> InputGuard:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

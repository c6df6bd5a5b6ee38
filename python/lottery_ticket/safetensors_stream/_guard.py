"""The inputs held still: mapped once, watched while mapped, and checked for changes.

The two passes read the inputs through memory maps. A file rewritten in place between them would
give an output pruned by a threshold computed on other data (a wrong count, silently); a file
cut short under a map would kill the process with SIGBUS at the first read past its new end, and
no check before a read can rule that out (the threshold pass is one kernel call over all
tensors). So each shard is opened once (the map and every check see the same file, even if its
name is replaced), its size and modification time are recorded against its header, and its map
is watched (`_core.watch_mapping`): a read past a cut end, at any moment and in any code, reads
zeros and flags the map instead. Flags and sizes are checked before each tensor is read, and
everything again after each pass, also when the pass raised: what it computed or raised from
zeros is discarded. A change is a `CheckpointError` naming the file, before anything is renamed
into place. (Windows refuses to cut a mapped file short; there the watch never fires.)
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from .. import _core
from ..safetensors_header import CheckpointError, Header


class InputGuard:
    """Open maps of ``shards`` (``maps[path]``: the whole file as read-only bytes) and the checks."""

    def __init__(self, shards: Sequence[Header]) -> None:
        self.maps: dict[Path, np.ndarray] = {}
        self._files: dict[Path, tuple[int, int, int]] = {}  # path -> (fd, size, mtime_ns)
        self._watches: dict[Path, int] = {}  # path -> token of its map's watch
        try:
            for header in shards:
                fd = os.open(header.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                stat = os.fstat(fd)
                self._files[header.path] = (fd, header.file_size, stat.st_mtime_ns)
                self._check_size(header.path)
                # No MADV_SEQUENTIAL: it lets the kernel drop pages soon after they are read,
                # and the write pass reads every page again right after the threshold pass.
                mapped = np.frombuffer(mmap.mmap(fd, header.file_size, access=mmap.ACCESS_READ), dtype=np.uint8)
                self.maps[header.path] = mapped
                self._watches[header.path] = _core.watch_mapping(mapped)
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
        """Check that ``path`` read no zeros past a cut end so far and still has its size."""
        if _core.mapping_faulted(self._watches[path]):
            raise CheckpointError(
                f"{path}: the input changed while pruning (cut short while being read); nothing written"
            )
        self._check_size(path)

    def check(self) -> None:
        """Check every file's reads, size and modification time (a rewrite in place changes the
        latter)."""
        for path, (fd, _, mtime) in self._files.items():
            self.before_read(path)
            if os.fstat(fd).st_mtime_ns != mtime:
                raise CheckpointError(f"{path}: the input was modified while pruning; nothing written")

    @contextlib.contextmanager
    def checked(self) -> Iterator[None]:
        """Run a pass, then `check`, also when the pass raised: a read cut short gave it zeros,
        so what it computed or raised from them is discarded."""
        try:
            yield
        finally:
            self.check()

    def close(self) -> None:
        for token in self._watches.values():  # before the maps can close
            _core.unwatch_mapping(token)
        self._watches.clear()
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

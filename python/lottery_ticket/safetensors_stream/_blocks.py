"""A shard's output assembled in file order into large aligned blocks, which a background
thread writes while the next block is being filled.

The output is produced strictly in file order (the header, then every tensor by offset: the
input was validated to have no gaps or overlaps), so each byte is written once into a block and
each block goes to the file in one call. Blocks are written with ``O_DIRECT`` where the file
system takes it: from our buffers straight to the disk, without a page-cache copy. A buffered
write must find and fill a fresh page-cache page for every 4 KiB of output, which is most of
the cost of copying a file; and a multi-GB output in the page cache would evict the input being
read, the very pages a checkpoint bigger than memory needs. Where ``O_DIRECT`` is refused
(tmpfs on old kernels, some network or FUSE file systems) the same blocks go through the page
cache. Systems without it: macOS bypasses its cache with ``F_NOCACHE`` (no alignment needed),
Windows writes through the cache; and where ``os.pwrite`` is missing (Windows) a block is
written by seek and write, which is safe because the writer thread alone uses the descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import numpy as np

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

# Large enough that each write call streams at the disk's speed, small enough that the buffers
# stay a small part of the memory budget. A multiple of every O_DIRECT alignment (the logical
# block size: 512 or 4096) and of every element size, so no element straddles two blocks.
BLOCK_BYTES = 8 << 20
# Buffers in flight: one filled by the caller while the others wait for or are in the disk.
DEPTH = 4
ALIGN = 4096


_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


def _open(path: Path) -> tuple[int, bool]:
    """The file opened for writing, and whether writes must be ``O_DIRECT``-aligned."""
    direct = getattr(os, "O_DIRECT", 0)
    if direct:
        try:
            return os.open(path, os.O_WRONLY | _BINARY | direct), True
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
    fd = os.open(path, os.O_WRONLY | _BINARY)
    nocache = getattr(fcntl, "F_NOCACHE", None)
    if not direct and nocache is not None:
        with contextlib.suppress(OSError):  # the page cache, then
            fcntl.fcntl(fd, nocache, 1)
    return fd, False


def _pwrite(fd: int, data: memoryview, offset: int) -> int:
    if hasattr(os, "pwrite"):
        return os.pwrite(fd, data, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.write(fd, data)


class BlockWriter:
    """Writes ``size`` bytes to the existing file ``path``, in order, through aligned blocks.

    The caller asks for the next bytes of the file with :meth:`take` (a view it fills at once)
    or copies them from the input with :meth:`copy`. ``direct`` says whether the blocks bypass
    the page cache.
    """

    def __init__(self, path: Path, size: int, direct: bool = True) -> None:
        self.path = path
        self.size = size
        if direct:
            self._fd, self.direct = _open(path)
        else:
            self._fd, self.direct = os.open(path, os.O_WRONLY | _BINARY), False
        self._buffers = [mmap.mmap(-1, BLOCK_BYTES) for _ in range(DEPTH)]  # page-aligned
        self._free: queue.Queue[int] = queue.Queue()
        for i in range(1, DEPTH):
            self._free.put(i)
        self._pending: queue.Queue[tuple[int, int, int] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._current, self._block_start, self._filled = 0, 0, 0
        self._thread = threading.Thread(target=self._drain, name="lottery-ticket-writer", daemon=True)
        self._thread.start()

    @property
    def position(self) -> int:
        """File offset of the next byte to be taken."""
        return self._block_start + self._filled

    def take(self, nbytes: int) -> np.ndarray:
        """A writable uint8 view of the next ``min(nbytes, room in the block)`` bytes of the file;
        the caller must fill it before the next call."""
        if self._filled == BLOCK_BYTES:
            self._flush()
        count = min(nbytes, BLOCK_BYTES - self._filled, self.size - self.position)
        view = np.frombuffer(self._buffers[self._current], dtype=np.uint8, count=count, offset=self._filled)
        self._filled += count
        return view

    def copy(self, source: np.ndarray, progress: Callable[[int], None]) -> None:
        """The next ``source.size`` bytes of the file are ``source`` (e.g. a slice of the input map)."""
        done = 0
        while done < source.size:
            view = self.take(source.size - done)
            view[...] = source[done : done + view.size]
            done += view.size
            progress(view.size)

    def _flush(self) -> None:
        self._raise_if_failed()
        nbytes = self._filled
        if self.direct and nbytes % ALIGN:
            # O_DIRECT writes whole blocks: the last one is padded and the file cut back after.
            pad = -nbytes % ALIGN
            self._buffers[self._current][nbytes : nbytes + pad] = bytes(pad)
            nbytes += pad
        self._pending.put((self._current, self._block_start, nbytes))
        self._block_start += self._filled
        self._current, self._filled = self._free.get(), 0

    def _drain(self) -> None:
        while (job := self._pending.get()) is not None:
            index, offset, nbytes = job
            if self._error is None:
                try:
                    self._write(self._buffers[index], offset, nbytes)
                except BaseException as err:  # re-raised by the caller's thread
                    self._error = err
            self._free.put(index)

    def _write(self, buffer: mmap.mmap, offset: int, nbytes: int) -> None:
        data = memoryview(buffer)[:nbytes]
        while data:
            try:
                written = _pwrite(self._fd, data, offset)
            except OSError as err:
                if not (self.direct and err.errno == errno.EINVAL):
                    raise
                # The file system opened the file for O_DIRECT but refuses the write: go on
                # through the page cache.
                os.close(self._fd)
                self._fd, self.direct = os.open(self.path, os.O_WRONLY | _BINARY), False
                continue
            data, offset = data[written:], offset + written

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, OSError) and error.filename is None:  # say which file (a full disk)
                raise OSError(error.errno, error.strerror, str(self.path)) from error
            raise error

    def close(self) -> None:
        """Write the last block, wait for every write, cut the padding off; raises a write's error."""
        try:
            if self.position != self.size:
                raise RuntimeError(f"{self.path.name}: {self.position} of {self.size} bytes produced")
            if self._filled:
                self._flush()
            self._stop()
            self._raise_if_failed()
            if os.fstat(self._fd).st_size != self.size:
                os.ftruncate(self._fd, self.size)
        finally:
            self._stop()
            os.close(self._fd)

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._pending.put(None)
            self._thread.join()

    def abort(self) -> None:
        """Stop without completing the file (the caller removes it)."""
        self._stop()
        os.close(self._fd)

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

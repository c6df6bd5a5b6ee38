"""Crash-safe file writes: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically.

    The bytes go to a temporary file in the same folder (so the rename cannot cross file
    systems), are fsynced, and the file is renamed over ``path``; on POSIX the folder is then
    fsynced too, so the rename itself survives a crash. On any failure the temporary file is
    removed and ``path`` is left as it was.

    Args:
        path: the file to create or replace; its folder must exist.
        data: the complete new contents.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.bin"
        >>> write_atomic(target, b"hello")
        >>> target.read_bytes()
        b'hello'
    """
    path = Path(path)
    folder = path.parent
    mode = _mode_for(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        # mkstemp creates 0600 files; give the result the mode a plain open() would have.
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, or the umask default (0666 & ~umask) for a new file."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_folder(folder: Path) -> None:
    # Windows cannot open a folder as a file; its rename durability is the file system's affair.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

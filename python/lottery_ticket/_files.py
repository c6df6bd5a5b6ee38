"""Crash-safe file writes: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import contextlib
import os
import secrets
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
    fd, tmp = _create_temp(path)
    try:
        # A replaced file keeps its permissions; a new one has the umask default that the
        # kernel applied when creating the temporary file (reading the umask would mean
        # setting it, a race with other threads creating files).
        with contextlib.suppress(FileNotFoundError):
            if hasattr(os, "fchmod"):
                os.fchmod(fd, path.stat().st_mode & 0o7777)
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


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new file beside ``path`` (same file system, so the rename is atomic), mode 0666 & ~umask."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _fsync_folder(folder: Path) -> None:
    # Windows cannot open a folder as a file; its rename durability is the file system's affair.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Crash-safe file writes: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: stale temp files are recognised by age alone
    fcntl = None  # type: ignore[assignment]

# Temp files are `.<name, shortened to fit>.<random>.lt-tmp`: recognisable as ours, so a killed
# save's leftovers can be removed by the next save of the same file and nothing else is touched.
TEMP_SUFFIX = ".lt-tmp"
# Earlier versions wrote `.<name>.<8 hex>.tmp` (never shortened): removed too when stale.
_LEGACY_SUFFIX = ".tmp"
_TOKEN_HEX = 8


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically.

    The bytes go to a temporary file in the same folder (so the rename cannot cross file
    systems), are fsynced, and the file is renamed over ``path``; on POSIX the folder is then
    fsynced too, so the rename itself survives a crash. On any failure the temporary file is
    removed and ``path`` is left as it was. A symlink is followed: its target is replaced and the
    link stays. Temporary files left by killed saves of the same file are removed afterwards
    (only ours: our name pattern, older than this write, and not locked by a live writer).

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
    # Replace what a symlink points to, not the link (realpath also resolves links in folders).
    path = Path(os.path.realpath(path))
    folder = path.parent
    started = time.time()
    fd, tmp = _create_temp(path)
    try:
        _lock(fd)
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
    remove_stale_temps(path, before=started)


def _temp_stem(path: Path) -> str:
    """``.<name>.`` with the name shortened (in bytes) so the whole temp name fits NAME_MAX."""
    try:
        limit = os.pathconf(path.parent, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):
        limit = 255
    room = limit - len(f"..{'0' * _TOKEN_HEX}{TEMP_SUFFIX}")
    name = os.fsencode(path.name)[:room].decode(errors="ignore")
    return f".{name}."


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new file beside ``path`` (same file system, so the rename is atomic), mode 0666 & ~umask."""
    stem = _temp_stem(path)
    while True:
        tmp = path.with_name(f"{stem}{secrets.token_hex(_TOKEN_HEX // 2)}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _lock(fd: int) -> None:
    # Held until the file is closed (or its writer dies): marks the temp file as being written.
    if fcntl is not None:
        with contextlib.suppress(OSError):  # file systems without locks: age alone decides
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def remove_stale_temps(path: Path, before: float) -> list[Path]:
    """Remove our temp files for ``path`` last modified before ``before`` that no live writer
    holds locked (a concurrent save of the same file keeps its own); returns what was removed."""
    stem = _temp_stem(path)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        if not (_is_ours(entry.name, stem, TEMP_SUFFIX) or _is_ours(entry.name, f".{path.name}.", _LEGACY_SUFFIX)):
            continue
        with contextlib.suppress(OSError):
            if not entry.is_file(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_mtime >= before:
                continue
            if _is_locked(entry.path):
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _is_ours(name: str, stem: str, suffix: str) -> bool:
    token = name[len(stem) : len(name) - len(suffix)]
    return (
        name.startswith(stem)
        and name.endswith(suffix)
        and len(token) == _TOKEN_HEX
        and all(c in "0123456789abcdef" for c in token)
    )


def _is_locked(file: str) -> bool:
    if fcntl is None:
        return False
    fd = os.open(file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _fsync_folder(folder: Path) -> None:
    # Windows cannot open a folder as a file; its rename durability is the file system's affair.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

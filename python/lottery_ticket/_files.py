"""Every file the package writes: one temp-name scheme, atomic replacement, fsync, disk space
reserved up front, and locks, on POSIX and Windows alike.

Temp entries (files, or a directory staging a checkpoint) are ``.<name, shortened to fit
NAME_MAX>.<8 hex>.lt-tmp`` beside their destination: the same folder, so the final rename is
atomic, and a name recognisable as ours, so the leftovers of a killed writer are removed by the
next write of the same destination and nothing else is touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: a lock file stands in for flock, and age alone marks a stale temp
    fcntl = None  # type: ignore[assignment]

TEMP_SUFFIX = ".lt-tmp"
LOCK_NAME = ".lottery-ticket.lt-lock"
# Earlier versions wrote `.<name>.<8 hex>.tmp` and `.<name>.partial-<8 chars>`: removed too when stale.
_LEGACY_SUFFIX = ".tmp"
_LEGACY_PARTIAL = ".partial-"
_TOKEN_HEX = 8
# A lock file older than this was left by a dead writer: the section it guards is a few renames.
_STALE_LOCK_SECONDS = 60.0


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
    path = resolve(path)
    started = time.time()
    fd, tmp = create_temp(path)
    try:
        keep_mode(fd, path)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_path(path.parent)
    remove_stale_temps(path, before=started)


def resolve(path: str | os.PathLike[str]) -> Path:
    """``path`` with every symlink followed (in folders too), as every writer here treats it: a
    link's target is what gets replaced, and the link stays."""
    return Path(os.path.realpath(path))


def keep_mode(fd: int, path: Path) -> None:
    """Give the temp file ``fd`` the mode of the file it replaces, if any. A new file keeps the
    umask default the kernel applied at creation (reading the umask would mean setting it, a race
    with other threads creating files)."""
    with contextlib.suppress(FileNotFoundError):
        if hasattr(os, "fchmod"):
            os.fchmod(fd, path.stat().st_mode & 0o7777)


def _temp_stem(path: Path) -> str:
    """``.<name>.`` with the name shortened (in bytes) so the whole temp name fits NAME_MAX."""
    try:
        limit = os.pathconf(path.parent, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):
        limit = 255
    room = limit - len(f"..{'0' * _TOKEN_HEX}{TEMP_SUFFIX}")
    name = os.fsencode(path.name)[:room].decode(errors="ignore")
    return f".{name}."


def create_temp(path: Path) -> tuple[int, Path]:
    """A new file beside ``path``, mode 0666 & ~umask, open for writing and locked (marks it as
    being written until closed, or until its writer dies)."""
    stem = _temp_stem(path)
    while True:
        tmp = path.with_name(f"{stem}{secrets.token_hex(_TOKEN_HEX // 2)}{TEMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        _lock(fd)
        return fd, tmp


def create_temp_dir(path: Path) -> tuple[int | None, Path]:
    """A new directory beside ``path``, mode 0777 & ~umask, and the descriptor holding its lock
    (None where folders cannot be locked); close the descriptor when done."""
    stem = _temp_stem(path)
    while True:
        tmp = path.with_name(f"{stem}{secrets.token_hex(_TOKEN_HEX // 2)}{TEMP_SUFFIX}")
        try:
            os.mkdir(tmp, 0o777)
        except FileExistsError:
            continue
        if fcntl is None:
            return None, tmp
        fd = os.open(tmp, os.O_RDONLY)
        _lock(fd)
        return fd, tmp


def remove_temp(path: Path) -> None:
    """Remove a temp file or directory of ours (missing is fine)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _lock(fd: int) -> None:
    if fcntl is not None:
        with contextlib.suppress(OSError):  # file systems without locks: age alone decides
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def remove_stale_temps(path: Path, before: float) -> list[Path]:
    """Remove our temp entries for ``path`` last modified before ``before`` that no live writer
    holds locked (a concurrent write of the same destination keeps its own); returns what was
    removed. Directories are removed only where locks tell a live writer from a dead one."""
    stem = _temp_stem(path)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        if not _is_temp_of(entry.name, stem, path.name):
            continue
        with contextlib.suppress(OSError):
            is_dir = entry.is_dir(follow_symlinks=False)
            if not (is_dir or entry.is_file(follow_symlinks=False)):
                continue
            if entry.stat(follow_symlinks=False).st_mtime >= before or (is_dir and fcntl is None):
                continue
            if _is_locked(entry.path):
                continue
            if is_dir:
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _is_temp_of(name: str, stem: str, target: str) -> bool:
    return (
        _is_ours(name, stem, TEMP_SUFFIX, "0123456789abcdef")
        or _is_ours(name, f".{target}.", _LEGACY_SUFFIX, "0123456789abcdef")
        or _is_ours(name, f".{target}{_LEGACY_PARTIAL}", "", "abcdefghijklmnopqrstuvwxyz0123456789_")
    )


def _is_ours(name: str, stem: str, suffix: str, alphabet: str) -> bool:
    token = name[len(stem) : len(name) - len(suffix)]
    return (
        name.startswith(stem)
        and name.endswith(suffix)
        and len(token) == _TOKEN_HEX
        and all(c in alphabet for c in token)
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


def fsync_path(path: Path) -> None:
    """fsync a file, or a folder (so that renames in it survive a power loss). Windows cannot
    open a folder as a file; there the rename's durability is the file system's affair."""
    if os.name != "posix" and path.is_dir():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def allocate(path: Path, size: int) -> None:
    """Create ``path`` with ``size`` bytes of disk reserved, so that a full disk fails here,
    before the long pass, and cleanly (writing through a memory map to a full disk would kill
    the process with SIGBUS instead). Where the system cannot reserve (no ``posix_fallocate``:
    macOS, Windows; or a file system refusing it) the file is sparse instead."""
    with open(path, "wb") as f:
        reserve = getattr(os, "posix_fallocate", None)
        try:
            if size and reserve is not None:
                reserve(f.fileno(), 0, size)
                return
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise OSError(errno.ENOSPC, f"no space left on the device for {size} bytes", str(path)) from None
        f.truncate(size)


@contextlib.contextmanager
def locked(folders: Iterable[Path]) -> Iterator[None]:
    """Hold an exclusive lock on each folder while the block runs: writers that replace several
    files together (a checkpoint and its ticket) take it so that two of them never interleave.
    Folders are locked in sorted order, so two writers never wait on each other in a cycle."""
    held: list[tuple[int | None, Path]] = []
    try:
        for folder in sorted(set(folders)):
            held.append(_lock_folder(folder))
        yield
    finally:
        for fd, lock_file in reversed(held):
            if fd is not None:
                os.close(fd)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(lock_file)


def _lock_folder(folder: Path) -> tuple[int | None, Path]:
    if fcntl is not None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                os.close(fd)
                raise
        return fd, folder
    # No flock (Windows): a lock file created exclusively; one left by a dead writer goes stale.
    lock_file = folder / LOCK_NAME
    while True:
        try:
            os.close(os.open(lock_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return None, lock_file
        except FileExistsError:
            with contextlib.suppress(OSError):
                if time.time() - lock_file.stat().st_mtime > _STALE_LOCK_SECONDS:
                    os.unlink(lock_file)
                    continue
            time.sleep(0.01)

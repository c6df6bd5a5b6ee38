"""Where the pruned checkpoint goes, and how it appears there atomically.

Everything is first written under temporary names beside the destination (same file system, so
the final step is a rename): a ``.NAME.partial-XXXX`` directory for a directory output, a
``.NAME.partial-XXXX`` file for a single-file output. Only when every file is complete and
fsynced is it renamed to its final name, so an interrupted run leaves at most a hidden partial
entry (removed on any exception) and never a half-written checkpoint under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..safetensors_header import CheckpointError
from ._inputs import Checkpoint


@dataclass
class OutputPlan:
    """The validated destination. ``is_dir``: OUT is a directory of same-named shards."""

    final: Path
    is_dir: bool
    ticket: Path | None
    stage: Path | None = None
    ticket_stage: Path | None = None
    written: list[Path] = field(default_factory=list)

    def shard_path(self, name: str) -> Path:
        """Where the staged copy of shard ``name`` is written."""
        assert self.stage is not None
        return self.stage / name if self.is_dir else self.stage


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def plan_output(
    checkpoint: Checkpoint, out: str | os.PathLike[str], ticket: str | os.PathLike[str] | None, nbytes: int
) -> OutputPlan:
    """Validate OUT (and the ticket path) against the inputs; writes nothing.

    OUT is a file when the input is one ``.safetensors`` file and OUT ends in ``.safetensors``
    (an existing file there is replaced atomically); otherwise it is a new directory (it may
    exist only if empty) receiving the shards under their own names, the rewritten index and
    the directory's other files.
    """
    final = Path(out)
    is_dir = not (checkpoint.single_file and final.name.endswith(".safetensors"))
    for p in checkpoint.input_paths:
        if _same(final, p) or (is_dir and final.exists() and _same(final / p.name, p)):
            raise CheckpointError(f"out: {final} is an input ({p}); write the pruned checkpoint elsewhere")
    if not final.parent.is_dir():
        raise CheckpointError(f"out: folder {final.parent} does not exist")
    if is_dir and final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise CheckpointError(
            f"out: {final} exists and is not an empty directory; choose a new path (or .safetensors for one file)"
        )
    if not is_dir and final.is_dir():
        raise CheckpointError(f"out: {final} is a directory; give a file name ending in .safetensors")
    ticket_path = Path(ticket) if ticket is not None else None
    if ticket_path is not None:
        for p in [*checkpoint.input_paths, final]:
            if _same(ticket_path, p):
                raise CheckpointError(f"ticket: {ticket_path} is also {'the output' if p == final else 'an input'}")
        if not ticket_path.parent.is_dir():
            raise CheckpointError(f"ticket: folder {ticket_path.parent} does not exist")
        if ticket_path.is_dir():
            raise CheckpointError(f"ticket: {ticket_path} is a directory")
    free = shutil.disk_usage(final.parent).free
    if free < nbytes:
        raise CheckpointError(
            f"out: {final.parent} has {free / 2**30:.1f} GiB free, the output needs {nbytes / 2**30:.1f} GiB"
        )
    return OutputPlan(final, is_dir, ticket_path)


@contextlib.contextmanager
def staged(plan: OutputPlan) -> Iterator[OutputPlan]:
    """Create the temporary destination; remove it (and the staged ticket) if the block raises."""
    prefix = f".{plan.final.name}.partial-"
    try:
        if plan.is_dir:
            plan.stage = Path(tempfile.mkdtemp(prefix=prefix, dir=plan.final.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, dir=plan.final.parent)
            os.close(fd)
            plan.stage = Path(name)
        if plan.ticket is not None:
            fd, name = tempfile.mkstemp(prefix=f".{plan.ticket.name}.partial-", dir=plan.ticket.parent)
            os.close(fd)
            plan.ticket_stage = Path(name)
        yield plan
    except BaseException:
        for path in (plan.stage, plan.ticket_stage):
            if path is not None and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path is not None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        raise


def copy_extra_files(checkpoint: Checkpoint, plan: OutputPlan) -> None:
    """Copy the input directory's other files and write the index (same shard names)."""
    assert plan.stage is not None
    for path in checkpoint.extra_files:
        shutil.copyfile(path, plan.stage / path.name)
    if checkpoint.index_path is not None and checkpoint.index is not None:
        (plan.stage / checkpoint.index_path.name).write_text(
            json.dumps(checkpoint.index, indent=2) + "\n", encoding="utf-8"
        )


def allocate(path: Path, size: int) -> None:
    """Create ``path`` with ``size`` bytes of disk reserved, so that a full disk fails here, before
    the long pass, and cleanly (writing the ticket through its memory map to a full disk would
    kill the process with SIGBUS instead, leaving its temporary files behind)."""
    with open(path, "wb") as f:
        try:
            if size:
                os.posix_fallocate(f.fileno(), 0, size)
        except (AttributeError, OSError) as err:
            if isinstance(err, OSError) and err.errno == errno.ENOSPC:
                raise CheckpointError(f"out: no space left on the device for {path.name} ({size} bytes)") from None
            f.truncate(size)  # a file system that cannot reserve: a sparse file instead


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(plan: OutputPlan, sync: bool) -> None:
    """Rename the ticket and the checkpoint into place; with ``sync``, fsync every staged file
    first (and the folders after), so that even a power loss cannot leave a renamed file whose
    data never reached the disk. The rename alone already covers an interrupted process."""
    assert plan.stage is not None
    if plan.is_dir:
        for path in plan.stage.iterdir():
            if sync:
                fsync_path(path)
        os.chmod(plan.stage, 0o777 & ~_umask())  # mkdtemp makes 0700 directories
    else:
        os.chmod(plan.stage, 0o666 & ~_umask())
    if sync:
        fsync_path(plan.stage)
    if plan.ticket is not None and plan.ticket_stage is not None:
        os.chmod(plan.ticket_stage, 0o666 & ~_umask())
        if sync:
            fsync_path(plan.ticket_stage)
        os.replace(plan.ticket_stage, plan.ticket)
        if sync:
            fsync_path(plan.ticket.parent)
    if plan.is_dir:
        os.rename(plan.stage, plan.final)  # replaces only a missing or empty directory
    else:
        os.replace(plan.stage, plan.final)
    if sync:
        fsync_path(plan.final.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

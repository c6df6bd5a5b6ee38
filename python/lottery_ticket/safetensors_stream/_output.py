"""Where the pruned checkpoint goes, and how it appears there atomically.

Every destination is checked before the work starts, and everything is first written under
temp names beside its destination (`lottery_ticket._files`: same folder, so the final step is
a rename): a temp directory for a directory output, a temp file for a single-file output and
for the ticket. Only when every file is complete (and fsynced) are they renamed into place,
under one lock on their folders, the checkpoint first and the ticket last: two runs writing
the same destinations never leave a checkpoint of one and a ticket of the other, and a run that
fails never replaces anything. An interrupted run leaves at most a hidden temp entry, removed
on any exception, or by the next run of the same destination if the process was killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .._files import create_temp, create_temp_dir, fsync_path, keep_mode, locked, remove_stale_temps, remove_temp
from .._files import resolve as _resolve
from ..safetensors_header import CheckpointError
from ._inputs import Checkpoint


@dataclass
class OutputPlan:
    """The validated destinations (symlinks followed). ``is_dir``: OUT is a directory of
    same-named shards; ``ticket_inside``: the ticket is written into that directory."""

    final: Path
    is_dir: bool
    ticket: Path | None
    ticket_inside: bool = False
    started: float = field(default_factory=time.time)
    stage: Path | None = None
    ticket_stage: Path | None = None
    held: list[int] = field(default_factory=list)  # descriptors holding the temp entries' locks

    def shard_path(self, name: str) -> Path:
        """Where the staged copy of shard ``name`` is written."""
        assert self.stage is not None
        return self.stage / name if self.is_dir else self.stage


def human(nbytes: float) -> str:
    """``nbytes`` in binary units: 512 bytes, 3.5 KiB, 1.2 GiB."""
    if nbytes < 1024:
        return f"{int(nbytes)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        nbytes /= 1024
        if nbytes < 1024 or unit == "TiB":
            break
    return f"{nbytes:.1f} {unit}"


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _link_note(given: Path, final: Path) -> str:
    return f" (a link to {final})" if given.is_symlink() else ""


def plan_output(
    checkpoint: Checkpoint,
    out: str | os.PathLike[str],
    ticket: str | os.PathLike[str] | None,
    *,
    nbytes: int,
    ticket_bytes: int,
) -> OutputPlan:
    """Validate OUT (and the ticket path) against the inputs and the disk; writes nothing.

    OUT is a file when the input is one ``.safetensors`` file and OUT ends in ``.safetensors``
    (an existing file there is replaced atomically); otherwise it is a new directory (it may
    exist only if empty) receiving the shards under their own names, the rewritten index and
    the directory's other files. A symlink is followed, for OUT as for the ticket (as
    `Ticket.save` does): its target is written and the link stays.
    """
    given = Path(out)
    final = _resolve(given)
    is_dir = not (checkpoint.single_file and given.name.endswith(".safetensors"))
    where = f"{given}{_link_note(given, final)}"
    for p in checkpoint.input_paths:
        if _same(final, p) or (is_dir and final.exists() and _same(final / p.name, p)):
            raise CheckpointError(f"out: {where} is an input ({p}); write the pruned checkpoint elsewhere")
    if not final.parent.is_dir():
        raise CheckpointError(f"out: folder {final.parent} does not exist")
    if is_dir and final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise CheckpointError(
            f"out: {where} exists and is not an empty directory; choose a new path (or .safetensors for one file)"
        )
    if not is_dir and final.is_dir():
        raise CheckpointError(f"out: {where} is a directory; give a file name ending in .safetensors")
    plan = OutputPlan(final, is_dir, None)
    if ticket is not None:
        _plan_ticket(plan, checkpoint, Path(ticket))
    need: dict[int, tuple[Path, int]] = {}
    for folder, size in ((final.parent, nbytes), (plan.ticket.parent if plan.ticket else final.parent, ticket_bytes)):
        if plan.ticket_inside:
            folder = final.parent
        device = os.stat(folder).st_dev
        need[device] = (folder, need.get(device, (folder, 0))[1] + size)
    for folder, size in need.values():
        free = shutil.disk_usage(folder).free
        if free < size:
            raise CheckpointError(f"out: {folder} has {human(free)} free, the output needs {human(size)}")
    return plan


def _plan_ticket(plan: OutputPlan, checkpoint: Checkpoint, given: Path) -> None:
    ticket = _resolve(given)
    where = f"{given}{_link_note(given, ticket)}"
    for p in [*checkpoint.input_paths, plan.final]:
        if _same(ticket, p):
            raise CheckpointError(f"ticket: {where} is also {'the output' if p == plan.final else 'an input'}")
    plan.ticket = ticket
    if plan.is_dir and ticket.parent == plan.final:
        # Inside the output directory: staged in it, so both appear with one rename.
        taken = {h.path.name for h in checkpoint.shards} | {p.name for p in checkpoint.extra_files}
        taken |= {checkpoint.index_path.name} if checkpoint.index_path is not None else set()
        if ticket.name in taken:
            raise CheckpointError(f"ticket: {where} would replace the output's own {ticket.name}")
        plan.ticket_inside = True
        return
    if not ticket.parent.is_dir():
        raise CheckpointError(f"ticket: folder {ticket.parent} does not exist")
    if ticket.is_dir():
        raise CheckpointError(f"ticket: {where} is a directory")


@contextlib.contextmanager
def staged(plan: OutputPlan) -> Iterator[OutputPlan]:
    """Create the temp entries; remove them if the block raises. Close their locks either way."""
    try:
        if plan.is_dir:
            fd, plan.stage = create_temp_dir(plan.final)
            plan.held += [fd] if fd is not None else []
        else:
            fd, plan.stage = create_temp(plan.final)
            plan.held.append(fd)
            keep_mode(fd, plan.final)
        if plan.ticket is not None and plan.ticket_inside:
            plan.ticket_stage = plan.stage / plan.ticket.name
        elif plan.ticket is not None:
            fd, plan.ticket_stage = create_temp(plan.ticket)
            plan.held.append(fd)
            keep_mode(fd, plan.ticket)
        yield plan
    except BaseException:
        for path in (plan.stage, plan.ticket_stage):
            if path is not None:
                remove_temp(path)
        raise
    finally:
        _release(plan)


def _release(plan: OutputPlan) -> None:
    for fd in plan.held:
        with contextlib.suppress(OSError):
            os.close(fd)
    plan.held.clear()


def copy_extra_files(checkpoint: Checkpoint, plan: OutputPlan) -> None:
    """Copy the input directory's other files and write the index (same shard names). A
    symlinked file is copied by content (a Hugging Face cache snapshot links every file into
    its blob store: the output must not point there)."""
    assert plan.stage is not None
    for path in checkpoint.extra_files:
        shutil.copyfile(path, plan.stage / path.name)
    if checkpoint.index_path is not None and checkpoint.index is not None:
        (plan.stage / checkpoint.index_path.name).write_text(
            json.dumps(checkpoint.index, indent=2) + "\n", encoding="utf-8"
        )


def commit(plan: OutputPlan, sync: bool) -> None:
    """Rename the checkpoint, then the ticket, into place, under one lock on their folders.

    With ``sync``, every staged file is fsynced first (and the folders after), so that even a
    power loss cannot leave a renamed file whose data never reached the disk; the renames alone
    already cover an interrupted process. The destinations are checked again under the lock: one
    that another writer created meanwhile is an error, and nothing is replaced.
    """
    assert plan.stage is not None
    if sync:
        for path in plan.stage.iterdir() if plan.is_dir else ():
            fsync_path(path)
        fsync_path(plan.stage)
        if plan.ticket_stage is not None and not plan.ticket_inside:
            fsync_path(plan.ticket_stage)
    if os.name != "posix":
        _release(plan)  # Windows cannot rename a file that is open
    folders = [plan.final.parent] + ([plan.ticket.parent] if plan.ticket is not None else [])
    with locked(folders):
        if plan.is_dir and plan.final.exists() and (not plan.final.is_dir() or any(plan.final.iterdir())):
            raise CheckpointError(f"out: {plan.final} was created by another writer during the run; nothing replaced")
        if not plan.is_dir and plan.final.is_dir():
            raise CheckpointError(f"out: {plan.final} became a directory during the run; nothing replaced")
        if plan.ticket is not None and not plan.ticket_inside and plan.ticket.is_dir():
            raise CheckpointError(f"ticket: {plan.ticket} became a directory during the run; nothing replaced")
        if plan.is_dir:
            if os.name != "posix" and plan.final.is_dir():
                os.rmdir(plan.final)  # Windows renames onto no directory, even an empty one
            os.rename(plan.stage, plan.final)  # replaces only a missing or empty directory
        else:
            os.replace(plan.stage, plan.final)
        if sync:
            fsync_path(plan.final.parent)
        if plan.ticket is not None and plan.ticket_stage is not None and not plan.ticket_inside:
            try:
                os.replace(plan.ticket_stage, plan.ticket)
            except OSError as err:
                remove_temp(plan.ticket_stage)
                raise OSError(
                    err.errno,
                    f"the checkpoint is in place but the ticket could not be: {err.strerror}",
                    str(plan.ticket),
                ) from None
            if sync:
                fsync_path(plan.ticket.parent)
    for written in (plan.final, plan.ticket):
        if written is not None:
            remove_stale_temps(written, before=plan.started)

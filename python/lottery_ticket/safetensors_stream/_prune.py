"""`prune_checkpoint`: one-shot magnitude pruning of a safetensors checkpoint, streamed."""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import NameFilter, select_names
from ..safetensors_header import FLOAT_DTYPES, CheckpointError, TensorInfo
from ..ticket.stream import TicketStream
from ._guard import InputGuard
from ._inputs import Checkpoint, PathLike, open_checkpoint
from ._output import OutputPlan, commit, copy_extra_files, plan_output, staged
from ._write import Cursor, bits_view, count_pruned, select, write_shard


@dataclass(frozen=True)
class TensorRow:
    """One tensor of the checkpoint: ``pruned`` is None for a tensor copied unchanged."""

    name: str
    file: str
    dtype: str
    shape: tuple[int, ...]
    pruned: int | None

    @property
    def total(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class PruneSummary:
    """What `prune_checkpoint` did (or, for a dry run, would do)."""

    out: Path | None
    ticket: Path | None
    sparsity: float
    scope: str
    dry_run: bool
    tensors: tuple[TensorRow, ...]
    nbytes: int  # bytes of the checkpoint (and of the output)

    @property
    def prunable(self) -> int:
        """Number of weights in the pruned tensors."""
        return sum(r.total for r in self.tensors if r.pruned is not None)

    @property
    def pruned(self) -> int:
        return sum(r.pruned or 0 for r in self.tensors)

    @property
    def achieved_sparsity(self) -> float:
        """Fraction of the prunable weights pruned."""
        return self.pruned / self.prunable if self.prunable else 0.0

    def table(self) -> str:
        """A per-tensor table (what ``lottery-ticket prune --dry-run`` prints)."""
        width = max([len(r.name) for r in self.tensors] + [6])
        lines = [f"{'tensor':<{width}}  {'dtype':>5}  {'shape':>16}  {'pruned':>12}  {'total':>12}  sparsity"]
        for r in self.tensors:
            shape = "x".join(map(str, r.shape)) or "scalar"
            if r.pruned is None:
                lines.append(f"{r.name:<{width}}  {r.dtype:>5}  {shape:>16}  {'-':>12}  {r.total:>12}  (copied)")
            else:
                share = r.pruned / r.total if r.total else 0.0
                lines.append(
                    f"{r.name:<{width}}  {r.dtype:>5}  {shape:>16}  {r.pruned:>12}  {r.total:>12}  {share:.2%}"
                )
        lines.append(
            f"{self.pruned} of {self.prunable} prunable weights pruned ({self.achieved_sparsity:.2%}, "
            f"scope {self.scope}), {sum(r.pruned is not None for r in self.tensors)} of {len(self.tensors)} tensors"
        )
        return "\n".join(lines)


def _check_sparsity(sparsity: object) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        raise TypeError(f"sparsity: expected a fraction in [0, 1), got {type(sparsity).__name__}")
    value = float(sparsity)
    if math.isnan(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"sparsity: must lie in [0, 1), got {value}")
    return value


def _default_prunable(name: str, tensor: TensorInfo) -> bool:
    return tensor.dtype in FLOAT_DTYPES and tensor.ndim >= 2


def prunable_tensors(checkpoint: Checkpoint, include: NameFilter, exclude: NameFilter) -> list[TensorInfo]:
    """The tensors to prune, in checkpoint order (default: F16/BF16/F32/F64 tensors with >= 2 dims)."""
    tensors = checkpoint.tensors
    chosen = set(select_names([(t.name, t) for t in tensors], _default_prunable, include, exclude))
    result = [t for t in tensors if t.name in chosen]
    for t in result:
        if t.dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                f"{t.file}: tensor {t.name!r} has dtype {t.dtype}; only F16, BF16, F32 and F64 tensors can be pruned"
            )
    return result


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]

    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, dynamic_ncols=True) as bar:
        yield bar.update


def prune_checkpoint(
    inputs: PathLike | Sequence[PathLike],
    out: PathLike | None,
    sparsity: float,
    *,
    scope: str = "global",
    include: NameFilter = None,
    exclude: NameFilter = None,
    ticket: PathLike | None = None,
    dry_run: bool = False,
    progress: bool = True,
    sync: bool = True,
) -> PruneSummary:
    """Prune ``sparsity`` of the prunable weights of a safetensors checkpoint by magnitude.

    The masks are exactly those of ``global_magnitude_masks(tensors, sparsity, scope=scope)``
    on the prunable tensors in checkpoint order: shards sorted by file name, then tensors by data
    offset within a file. The input is memory-mapped and read twice (threshold pass, then the
    pass writing the output), with bounded anonymous memory whatever the checkpoint size.

    Args:
        inputs: a ``.safetensors`` file, several shards, a ``*.safetensors.index.json`` or a
            directory holding them.
        out: the output: a ``.safetensors`` file for a one-file input, else a new directory
            receiving the shards under the same names, the rewritten index and the other files
            of the input's directory (that of the index, when an index is given). Not needed
            for a dry run. A symlink is followed (its target is written).
        sparsity: fraction in [0, 1) of the prunable weights to prune.
        scope: ``"global"`` (one ranking over all tensors) or ``"layer"`` (each tensor alone).
        include: which tensors to prune instead of the default (F16/BF16/F32/F64 tensors with >= 2
            dims): glob pattern(s) on the name or a predicate ``(name, TensorInfo) -> bool``.
        exclude: tensors removed from the choice (e.g. ``["*embed*", "lm_head.*"]``).
        ticket: also write the masks as a ticket file (``Ticket.load``, ``lottery-ticket inspect``);
            it appears after the checkpoint, and a ticket inside the output directory with it.
        dry_run: compute the per-tensor counts without writing anything.
        progress: show a progress bar over bytes (tqdm) on stderr.
        sync: fsync the output before renaming it into place, so that it survives a power
            loss (the run then waits for the disk); without it an interrupted process still
            never leaves a half-written checkpoint under the final name.

    Returns:
        A `PruneSummary` with the per-tensor counts.

    Raises:
        CheckpointError: a bad input, index or output path, NaN among the pruned weights, or an
            input that changed during the run; nothing is written.
    """
    sparsity = _check_sparsity(sparsity)
    if scope not in ("global", "layer"):
        raise ValueError(f"scope: expected 'global' or 'layer', got {scope!r}")
    if out is None and not dry_run:
        raise ValueError("out: required unless dry_run=True")
    checkpoint = open_checkpoint(inputs)
    chosen = prunable_tensors(checkpoint, include, exclude)
    nbytes = sum(h.file_size for h in checkpoint.shards)
    plan = None
    if not dry_run:
        assert out is not None
        ticket_bytes = sum((t.size + 7) // 8 for t in chosen) if ticket is not None else 0
        plan = plan_output(checkpoint, out, ticket, nbytes=nbytes, ticket_bytes=ticket_bytes)
    with InputGuard(checkpoint.shards) as guard, staged(plan) if plan else contextlib.nullcontext():
        views = [bits_view(guard.maps[t.file], t) for t in chosen]
        selected_bytes = sum(v.nbytes for v in views)
        with _progress_bar(progress, selected_bytes + (selected_bytes if dry_run else nbytes), "prune") as advance:
            guard.check()
            with guard.checked():
                cursors = select(views, chosen, sparsity, scope)
            advance(selected_bytes)
            by_name = {t.name: c for t, c in zip(chosen, cursors)}
            with guard.checked():
                if plan is None:
                    counts = count_pruned(chosen, guard.maps, by_name, guard.before_read, advance)
                else:
                    counts = _write_all(checkpoint, plan, guard, by_name, chosen, sparsity, scope, advance)
            del views
            _check_counts(chosen, cursors, counts)
            if plan is not None:
                commit(plan, sync)
    rows = tuple(TensorRow(t.name, t.file.name, t.dtype, t.shape, counts.get(t.name)) for t in checkpoint.tensors)
    given_out = Path(out) if plan is not None and out is not None else None
    given_ticket = Path(ticket) if plan is not None and ticket is not None else None
    return PruneSummary(given_out, given_ticket, sparsity, scope, dry_run, rows, nbytes)


def _check_counts(chosen: list[TensorInfo], cursors: list[Cursor], counts: dict[str, int]) -> None:
    """The write pass pruned what the threshold pass promised (else the data changed between them,
    even within one tick of the file's clock)."""
    promised: dict[int, tuple[Cursor, int]] = {}
    for t, c in zip(chosen, cursors):
        promised[id(c)] = (c, promised.get(id(c), (c, 0))[1] + counts[t.name])
    for cursor, pruned in promised.values():
        if pruned != cursor.threshold.pruned or cursor.ties_left:
            files = ", ".join(sorted({str(t.file) for t in chosen}))
            raise CheckpointError(
                f"{files}: the input changed while pruning ({pruned} weights pruned, "
                f"{cursor.threshold.pruned} promised by the threshold pass); nothing written"
            )


def _write_all(
    checkpoint: Checkpoint,
    plan: OutputPlan,
    guard: InputGuard,
    cursors: dict[str, Cursor],
    chosen: list[TensorInfo],
    sparsity: float,
    scope: str,
    advance: Callable[[int], None],
) -> dict[str, int]:
    distinct = {id(c): c for c in cursors.values()}  # a global ranking shares one cursor
    pruned_total = sum(c.threshold.pruned for c in distinct.values())
    counts: dict[str, int] = {}
    stream = None
    if plan.ticket_stage is not None:
        stream = TicketStream(plan.ticket_stage, [(t.name, t.shape) for t in chosen], sparsity, scope, pruned_total)
    for header in checkpoint.shards:
        target = plan.shard_path(header.path.name)
        counts.update(write_shard(header, guard.maps[header.path], target, cursors, stream, advance, guard))
    if stream is not None:
        stream.finish()
    if plan.is_dir:
        copy_extra_files(checkpoint, plan)
    return counts

"""`Ticket`: a found winning ticket (masks + rewind snapshot + history), saved as safetensors.

File format (no pickle): one safetensors file whose tensors are

* ``mask/<name>``: the mask bit-packed with ``np.packbits`` (uint8, C order),
* ``snapshot/<name>``: the whole model state at the rewind point (bf16 stored as its uint16 bits),
* optionally ``state/<name>`` and ``rng/<name>`` (resume checkpoints only),

and whose safetensors metadata holds ``format = "lottery-ticket"``, ``version`` and ``ticket``, a
JSON document with the mask shapes, snapshot dtypes, strategy, config, history, metrics and a
SHA-256 over the format, version, document and every tensor's bytes, so truncated, corrupted,
edited or foreign files are rejected (`lottery_ticket.ticket.format` builds the document and
checks every byte read; version-1 files, whose checksum left the document out, are still read).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._files import write_atomic
from ..backends import array_backend, backend_named
from ..config import LotteryTicketConfig, RewindStrategy
from ..kernels.arrays import contiguous
from . import format as _ticket_format
from .format import FORMAT, VERSION, Corrupted

__all__ = ["FORMAT", "VERSION", "Ticket", "metrics_row", "read_file", "write_file"]


@dataclass
class Ticket:
    """A winning ticket: which weights survive and what the survivors are rewound to.

    Attributes:
        masks: parameter name -> bool NumPy array (True = kept), in model order.
        snapshot: the whole model state (every parameter and buffer) at the rewind point, as
            torch tensors for a torch model or NumPy arrays for a dict model.
        config: the configuration that produced the ticket (``strategy`` is its rewind strategy).
        sparsity_history: overall sparsity after each pruning round.
        metrics: one dict per training round: round, density, sparsity, remaining + yours.
        rewind_iteration: iteration the snapshot was taken at (0 for init; None when the
            strategy keeps trained weights).
        iterations_per_round: optimizer steps counted in round 0 (None if never counted).
        importance: what pruning ranked (``"magnitude"``, ``"random"``, ``"snip"``, ...).
    """

    masks: dict[str, np.ndarray]
    snapshot: dict[str, Any]
    config: LotteryTicketConfig
    sparsity_history: list[float] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    rewind_iteration: int | None = 0
    iterations_per_round: int | None = None
    importance: str = "magnitude"

    @property
    def strategy(self) -> RewindStrategy:
        return self.config.rewind_strategy

    @property
    def total_parameters(self) -> int:
        """Number of prunable weights."""
        return int(sum(m.size for m in self.masks.values()))

    @property
    def remaining_parameters(self) -> int:
        """Number of prunable weights kept."""
        return int(sum(np.count_nonzero(m) for m in self.masks.values()))

    @property
    def density(self) -> float:
        return self.remaining_parameters / self.total_parameters if self.total_parameters else 1.0

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    def compression_ratio(self) -> float:
        """``total / remaining`` (``inf`` when nothing remains)."""
        remaining = self.remaining_parameters
        return self.total_parameters / remaining if remaining else math.inf

    def layer_table(self) -> list[dict[str, Any]]:
        """One row per pruned tensor: name, shape, total, remaining, sparsity."""
        rows = []
        for name, mask in self.masks.items():
            kept = int(np.count_nonzero(mask))
            rows.append(
                {
                    "name": name,
                    "shape": tuple(mask.shape),
                    "total": int(mask.size),
                    "remaining": kept,
                    "sparsity": 1.0 - kept / mask.size if mask.size else 0.0,
                }
            )
        return rows

    def summary(self) -> str:
        """A human-readable summary with the per-layer table (what ``lottery-ticket inspect`` prints)."""
        lines = [
            f"strategy     {self.strategy}   rounds {self.config.pruning_rounds}   "
            f"scope {'global' if self.config.global_pruning else 'layer'}   importance {self.importance}",
            f"sparsity     {self.sparsity:.2%}   density {self.density:.2%}   "
            f"compression {self.compression_ratio():.1f}x",
            f"parameters   {self.remaining_parameters} of {self.total_parameters} prunable weights kept",
        ]
        for row in self.metrics:
            extra = "  ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in RESERVED_METRICS)
            lines.append(f"  round {row['round']:>3}  density {row['density']:.2%}  {extra}".rstrip())
        width = max(len(r["name"]) for r in self.layer_table()) if self.masks else 4
        lines.append(f"{'layer':<{width}}  {'shape':>16}  {'kept':>10}  {'total':>10}  sparsity")
        for r in self.layer_table():
            shape = "x".join(map(str, r["shape"]))
            lines.append(
                f"{r['name']:<{width}}  {shape:>16}  {r['remaining']:>10}  {r['total']:>10}  {r['sparsity']:.2%}"
            )
        return "\n".join(lines)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the ticket atomically (temp file in the same folder, fsync, rename)."""
        write_file(path, self)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Ticket:
        """Read a ticket written by `save`; raises ``ValueError`` for a damaged or foreign file."""
        return read_file(path)[0]


# The columns every metrics row has; `train_fn` may not return metrics with these names.
# Metric names every row carries already; a trainer's own metrics may not reuse them.
RESERVED_METRICS = ("round", "density", "sparsity", "remaining")


def metrics_row(
    round_index: int, density: float, remaining: int, returned: Mapping[str, float] | None
) -> dict[str, Any]:
    """One ``Ticket.metrics`` row: the round's reserved columns plus the metrics ``train_fn`` returned.

    Args:
        round_index: the training round (0 = dense).
        density: fraction of the prunable weights alive in that round.
        remaining: number of prunable weights alive.
        returned: what ``train_fn`` returned: ``{name: real number}`` or None.

    Returns:
        ``{"round", "density", "sparsity", "remaining", **returned}`` with the metrics as floats.

    Example:
        >>> metrics_row(1, 0.5, 50, {"acc": 0.9})
        {'round': 1, 'density': 0.5, 'sparsity': 0.5, 'remaining': 50, 'acc': 0.9}
    """
    row: dict[str, Any] = {"round": round_index, "density": density, "sparsity": 1.0 - density, "remaining": remaining}
    if returned is None:
        return row
    if not isinstance(returned, Mapping):
        raise TypeError(f"train_fn: expected a mapping of metrics or None, got {type(returned).__name__}")
    for key, value in returned.items():
        if not isinstance(key, str) or key in RESERVED_METRICS:
            raise ValueError(
                f"train_fn: metric name {key!r} is not a str or is reserved ({', '.join(RESERVED_METRICS)})"
            )
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"train_fn: metric {key!r} must be a real number, got {type(value).__name__}")
        row[key] = float(value)
    return row


def _to_numpy(value: Any, label: str) -> tuple[str, np.ndarray, str]:
    """(framework, host array, dtype name) of an array; framework arrays are copied to NumPy."""
    backend = array_backend(value)
    if backend is not None:
        return (backend.name, *backend.to_saved(value, label))
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{label}: expected an array, got {type(value).__name__}")
    # Files hold native little-endian bytes whatever order the model used (safetensors has no
    # byte order); 0-d arrays stay 0-d.
    native = value.astype(value.dtype.newbyteorder("<"), copy=False)
    return "numpy", contiguous(native), native.dtype.name


def _from_numpy(arr: np.ndarray, dtype: str, framework: str) -> Any:
    return arr if framework == "numpy" else backend_named(framework).from_saved(arr, dtype)


def _encode(group: str, arrays: Mapping[str, Any], tensors: dict[str, np.ndarray]) -> tuple[dict[str, str], set[str]]:
    """Add ``arrays`` to ``tensors`` under ``group/``; returns their dtype names and frameworks."""
    dtypes, frameworks = {}, set()
    for name, value in arrays.items():
        framework, arr, dtype = _to_numpy(value, f"{group}[{name!r}]")
        tensors[f"{group}/{name}"] = arr
        dtypes[name] = dtype
        frameworks.add(framework)
    return dtypes, frameworks


def write_file(
    path: str | os.PathLike[str],
    ticket: Ticket,
    state: Mapping[str, Any] | None = None,
    rng: Mapping[str, np.ndarray] | None = None,
    resume: dict[str, Any] | None = None,
) -> None:
    """Save ``ticket`` (plus, for checkpoints, the live model ``state``, RNG state and ``resume`` info)."""
    from safetensors.numpy import save

    tensors: dict[str, np.ndarray] = {}
    snapshot_dtypes, frameworks = _encode("snapshot", ticket.snapshot, tensors)
    state_dtypes = _encode("state", state, tensors)[0] if state is not None else None
    framework = next((f for f in sorted(frameworks) if f != "numpy"), "numpy")
    for name, mask in ticket.masks.items():
        tensors[f"mask/{name}"] = np.packbits(np.asarray(mask, dtype=np.bool_).ravel())
    for name, value in (rng or {}).items():
        tensors[f"rng/{name}"] = contiguous(np.asarray(value))
    doc = _ticket_format.document(
        framework=framework,
        mask_shapes={name: mask.shape for name, mask in ticket.masks.items()},
        snapshot_dtypes=snapshot_dtypes,
        config=ticket.config.to_dict(),
        sparsity_history=ticket.sparsity_history,
        metrics=ticket.metrics,
        rewind_iteration=ticket.rewind_iteration,
        iterations_per_round=ticket.iterations_per_round,
        importance=ticket.importance,
        state_dtypes=state_dtypes,
        rng=list(rng) if rng is not None else None,
        resume=resume,
    )
    sha256 = _ticket_format.digest(tensors, doc, VERSION)
    data = save(tensors, metadata=_ticket_format.metadata(doc, sha256))
    write_atomic(path, data)


def read_file(
    path: str | os.PathLike[str],
) -> tuple[Ticket, dict[str, Any] | None, dict[str, np.ndarray] | None, dict[str, Any] | None]:
    """Load ``(ticket, state, rng, resume)`` from a file written by `write_file`.

    Raises ``ValueError`` naming ``path`` for a damaged, edited or foreign file (the header is
    checked before the data is read), ``OSError`` when it cannot be read.
    """
    if os.fspath(path) == "":
        raise ValueError("path: empty file name")
    try:
        doc, tensors = _ticket_format.read(path)
        return _decode(doc, tensors)
    except Corrupted as err:
        raise ValueError(f"{path}: {err}") from None
    except (TypeError, ValueError) as err:  # values the schema admits but the config refuses
        raise ValueError(f"{path}: corrupted ticket file: {err}") from None


def _decode(
    doc: dict[str, Any], tensors: dict[str, np.ndarray]
) -> tuple[Ticket, dict[str, Any] | None, dict[str, np.ndarray] | None, dict[str, Any] | None]:
    framework = doc["framework"]
    if framework != "numpy":
        backend_named(framework)  # a clear error before decoding when the framework is missing
    masks = {}
    for name, shape in zip(doc["mask_names"], doc["mask_shapes"]):
        count = int(np.prod(shape, dtype=np.int64))
        masks[name] = np.unpackbits(tensors[f"mask/{name}"], count=count).astype(np.bool_).reshape(shape)

    def group(prefix: str, dtypes: dict[str, str]) -> dict[str, Any]:
        return {n: _from_numpy(tensors[f"{prefix}/{n}"], d, framework) for n, d in dtypes.items()}

    ticket = Ticket(
        masks=masks,
        snapshot=group("snapshot", doc["snapshot_dtypes"]),
        config=LotteryTicketConfig.from_dict(doc["config"]),
        sparsity_history=[float(s) for s in doc["sparsity_history"]],
        metrics=list(doc["metrics"]),
        rewind_iteration=doc["rewind_iteration"],
        iterations_per_round=doc["iterations_per_round"],
        importance=str(doc.get("importance", "magnitude")),  # files from before the option
    )
    state = group("state", doc["state_dtypes"]) if doc["state_dtypes"] is not None else None
    rng = {n: tensors[f"rng/{n}"] for n in doc["rng"]} if doc["rng"] is not None else None
    return ticket, state, rng, doc["resume"]

"""The ticket file format, in one place: the JSON document, its checksum and the file's reader.

Every writer (`Ticket.save` / `write_file`, `TicketStream`) builds its document with `document`,
its checksum with `Checksum` and its safetensors metadata with `metadata`; every byte read from
disk is checked here before anything is built from it:

1. the safetensors header alone is read and validated first (`safetensors_header.parse_header`:
   size limit, tensors tiling the data, no duplicate keys), so a huge or foreign file is refused
   without reading its data; then the ticket's own metadata is checked;
2. the data is read through safetensors (memory-mapped);
3. the document is checked against its schema (`check_document`), then the checksum is compared.

Version 2 checksums the format, version, document (canonical JSON) and every tensor; version 1
(older files) checksummed only the tensors and is still read.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..safetensors_header import MAX_HEADER_BYTES, HeaderError, load_json, parse_header

FORMAT = "lottery-ticket"
VERSION = "2"
READABLE_VERSIONS = ("1", "2")
MAX_HEADER = MAX_HEADER_BYTES  # the safetensors reader's limit on the header, in bytes


class Corrupted(ValueError):
    """The file is damaged, foreign, or its contents contradict each other."""


def canonical(doc: Mapping[str, Any]) -> bytes:
    """One byte string per document, whatever spacing or key order a file holds it in."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def document(
    *,
    framework: str,
    mask_shapes: Mapping[str, Sequence[int]],
    snapshot_dtypes: Mapping[str, str],
    config: Mapping[str, Any],
    sparsity_history: Sequence[float],
    metrics: Sequence[Mapping[str, Any]],
    rewind_iteration: int | None,
    iterations_per_round: int | None,
    importance: str,
    state_dtypes: Mapping[str, str] | None = None,
    rng: Sequence[str] | None = None,
    resume: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document of a ticket (without its ``sha256``), as `check_document` reads it.

    Args:
        framework: ``"numpy"`` or the array backend the snapshot came from.
        mask_shapes: pruned tensor name -> shape, in model order (``mask/<name>`` tensors).
        snapshot_dtypes: name -> dtype name of every ``snapshot/<name>`` tensor.
        config: ``LotteryTicketConfig.to_dict()``.
        sparsity_history, metrics, rewind_iteration, iterations_per_round, importance: the
            `Ticket` fields of the same names.
        state_dtypes, rng, resume: resume checkpoints only: the live ``state/<name>`` dtypes,
            the ``rng/<name>`` names and the run's resume record.
    """
    return {
        "framework": framework,
        "mask_names": list(mask_shapes),
        "mask_shapes": [[int(d) for d in shape] for shape in mask_shapes.values()],
        "snapshot_dtypes": dict(snapshot_dtypes),
        "state_dtypes": dict(state_dtypes) if state_dtypes is not None else None,
        "rng": sorted(rng) if rng is not None else None,
        "config": dict(config),
        "sparsity_history": list(sparsity_history),
        "metrics": list(metrics),
        "rewind_iteration": rewind_iteration,
        "iterations_per_round": iterations_per_round,
        "importance": importance,
        "resume": dict(resume) if resume is not None else None,
    }


def metadata(doc: Mapping[str, Any], sha256: str) -> dict[str, str]:
    """The safetensors ``__metadata__`` of a ticket file: format, version and the document."""
    return {"format": FORMAT, "version": VERSION, "ticket": json.dumps({**doc, "sha256": sha256})}


class Checksum:
    """The ticket's SHA-256, fed piece by piece so that in-memory and streamed writers agree.

    Created with the document (version 2 covers the format, version and document without its
    ``sha256``; version 1 covered only the tensors); then, for every tensor in name order,
    `tensor` once and `update` with its bytes in as many pieces as convenient.
    """

    def __init__(self, doc: Mapping[str, Any] | None, version: str = VERSION) -> None:
        self._sha = hashlib.sha256()
        self._last: str | None = None
        if version != "1":
            self._sha.update(f"{FORMAT}|{version}|".encode())
            self._sha.update(canonical({k: v for k, v in (doc or {}).items() if k != "sha256"}))

    def tensor(self, name: str, dtype: np.dtype[Any] | type, shape: Sequence[int]) -> None:
        """Start tensor ``name``; its bytes follow through `update`."""
        if self._last is not None and name <= self._last:
            raise ValueError(f"checksum: tensor {name!r} comes after {self._last!r}; tensors go in name order")
        self._last = name
        self._sha.update(f"{name}|{np.dtype(dtype).str}|{tuple(int(d) for d in shape)}|".encode())

    def update(self, data: np.ndarray | bytes) -> None:
        """The next bytes of the current tensor (arrays in C order)."""
        if isinstance(data, np.ndarray):  # its bytes, without a copy when already contiguous
            self._sha.update(np.ascontiguousarray(data).reshape(-1).view(np.uint8).data)
        else:
            self._sha.update(data)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def digest(tensors: Mapping[str, np.ndarray], doc: Mapping[str, Any] | None, version: str) -> str:
    """`Checksum` of ``doc`` and the whole ``tensors`` (names, dtypes, shapes and bytes)."""
    checksum = Checksum(doc, version)
    for name in sorted(tensors):
        arr = tensors[name]
        checksum.tensor(name, arr.dtype, arr.shape)
        checksum.update(arr)
    return checksum.hexdigest()


def read_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """The safetensors metadata of ``path`` after checking the header against the file size;
    reads only the header. Raises `Corrupted` (a ``ValueError``) or ``OSError``."""
    with open(path, "rb") as f:
        try:
            header = parse_header(f, Path(path))
        except HeaderError as err:
            raise Corrupted(f"not a readable ticket file (truncated or not safetensors): {err.reason}") from None
    meta = header.metadata or {}
    if meta.get("format") != FORMAT:
        raise Corrupted(f"not a lottery-ticket file (format {meta.get('format')!r})")
    if meta.get("version") not in READABLE_VERSIONS:
        raise Corrupted(
            f"unsupported ticket version {meta.get('version')!r} (this library reads {', '.join(READABLE_VERSIONS)})"
        )
    if "ticket" not in meta:
        raise Corrupted("corrupted ticket file: no ticket document")
    return meta


def read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(document, tensors)`` of a ticket file, header, schema and checksum verified."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    meta = read_header(path)
    try:
        tensors = load_file(os.fspath(path))
    except (SafetensorError, ValueError, TypeError) as err:
        raise Corrupted(f"not a readable ticket file (truncated or not safetensors): {err}") from None
    try:
        doc = load_json(meta["ticket"])
    except ValueError as err:
        raise Corrupted(f"corrupted ticket file: {err}") from None
    check_document(doc, tensors)
    if digest(tensors, doc, meta["version"]) != doc["sha256"]:
        raise Corrupted("corrupted ticket file: checksum mismatch")
    return doc, tensors


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise Corrupted(f"corrupted ticket file: {what}")


def _str_map(x: object, what: str) -> dict[str, str]:
    _require(isinstance(x, dict) and all(isinstance(v, str) for v in x.values()), f"{what} is not a name -> dtype map")
    assert isinstance(x, dict)
    return x


def _optional_count(x: object, what: str) -> None:
    _require(x is None or (isinstance(x, int) and not isinstance(x, bool) and x >= 0), f"{what} is not a count")


def check_document(doc: object, tensors: Mapping[str, np.ndarray]) -> None:
    """Raise `Corrupted` unless ``doc`` has the schema `document` builds and agrees with
    ``tensors`` (every named tensor present, no other, mask sizes matching their shapes)."""
    _require(isinstance(doc, dict), "the document is not an object")
    assert isinstance(doc, dict)
    keys = {
        "framework",
        "mask_names",
        "mask_shapes",
        "snapshot_dtypes",
        "state_dtypes",
        "rng",
        "config",
        "sparsity_history",
        "metrics",
        "rewind_iteration",
        "iterations_per_round",
        "resume",
        "sha256",
    }
    # "importance" (what pruning ranked) is optional: files written before it existed lack it.
    _require(
        keys <= set(doc) <= keys | {"importance"},
        f"fields {sorted((set(doc) ^ keys) - {'importance'})} missing or unexpected",
    )
    _require(isinstance(doc.get("importance", ""), str), "importance is not a string")
    _require(
        isinstance(doc["framework"], str) and isinstance(doc["sha256"], str), "framework or sha256 is not a string"
    )
    names, shapes = doc["mask_names"], doc["mask_shapes"]
    _require(isinstance(names, list) and all(isinstance(n, str) for n in names), "mask_names is not a list of names")
    _require(len(set(names)) == len(names), "mask_names has duplicates")
    _require(isinstance(shapes, list) and len(shapes) == len(names), "mask_shapes does not match mask_names")
    expected = set()
    for name, shape in zip(names, shapes):
        _require(
            isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape),
            f"mask_shapes[{name!r}] is not a shape",
        )
        packed = tensors.get(f"mask/{name}")
        count = math.prod(shape)
        _require(
            packed is not None and packed.dtype == np.uint8 and packed.shape == ((count + 7) // 8,),
            f"mask {name!r} does not hold the {count} bits of its shape {tuple(shape)}",
        )
        assert packed is not None
        _require(count % 8 == 0 or not packed[-1] & (0xFF >> (count % 8)), f"mask {name!r} has bits past its shape")
        expected.add(f"mask/{name}")
    for group in ("snapshot", "state"):
        dtypes = doc[f"{group}_dtypes"]
        if group == "state" and dtypes is None:
            continue
        for name, dtype in _str_map(dtypes, f"{group}_dtypes").items():
            arr = tensors.get(f"{group}/{name}")
            stored = "uint16" if dtype == "bfloat16" else dtype
            _require(arr is not None and arr.dtype.name == stored, f"{group} {name!r} is missing or not {dtype}")
            expected.add(f"{group}/{name}")
    rng = doc["rng"]
    _require(
        rng is None or (isinstance(rng, list) and all(isinstance(n, str) for n in rng)), "rng is not a list of names"
    )
    for name in rng or []:
        _require(f"rng/{name}" in tensors, f"rng state {name!r} is missing")
        expected.add(f"rng/{name}")
    _require(set(tensors) == expected, f"unexpected tensors {sorted(set(tensors) - expected)[:3]}")
    _require(isinstance(doc["config"], dict), "config is not an object")
    history = doc["sparsity_history"]
    _require(
        isinstance(history, list) and all(_is_real(s) for s in history), "sparsity_history is not a list of numbers"
    )
    metrics = doc["metrics"]
    _require(isinstance(metrics, list) and all(_is_metrics_row(r) for r in metrics), "metrics rows are malformed")
    _optional_count(doc["rewind_iteration"], "rewind_iteration")
    _optional_count(doc["iterations_per_round"], "iterations_per_round")
    _require(doc["resume"] is None or isinstance(doc["resume"], dict), "resume is not an object")


def _is_metrics_row(row: object) -> bool:
    if not isinstance(row, dict) or not _is_int(row.get("round")):
        return False
    return all(isinstance(k, str) and (k == "round" or _is_real(v)) for k, v in row.items()) and "density" in row

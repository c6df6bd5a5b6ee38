"""The ticket file's container: safetensors header checks, the checksum and the JSON document's schema.

Kept apart from `ticket` (which maps Tickets to and from this form) so that every byte read from
disk is checked in one place before anything is built from it:

1. the safetensors header alone (8 bytes + at most `MAX_HEADER` bytes) is read and validated
   first, so a huge or foreign file is refused without reading its data;
2. the data is read through safetensors (memory-mapped);
3. the document is checked against its schema, then the checksum is compared.

Version 2 checksums the format, version, document (canonical JSON) and every tensor; version 1
(older files) checksummed only the tensors and is still read.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

FORMAT = "lottery-ticket"
VERSION = "2"
READABLE_VERSIONS = ("1", "2")
# safetensors' own limit on the header; a larger length field means a damaged or foreign file.
MAX_HEADER = 100_000_000


class Corrupted(ValueError):
    """The file is damaged, foreign, or its contents contradict each other."""


def canonical(doc: Mapping[str, Any]) -> bytes:
    """One byte string per document, whatever spacing or key order a file holds it in."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def digest(tensors: Mapping[str, np.ndarray], doc: Mapping[str, Any] | None, version: str) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes; from version 2 also over the
    format, the version and the document (without its ``sha256`` field)."""
    h = hashlib.sha256()
    if version != "1":
        h.update(f"{FORMAT}|{version}|".encode())
        h.update(canonical({k: v for k, v in (doc or {}).items() if k != "sha256"}))
    for name in sorted(tensors):
        arr = tensors[name]
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def read_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """The safetensors metadata of ``path`` after checking the header against the file size;
    reads only the header. Raises `Corrupted` (a ``ValueError``) or ``OSError``."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise Corrupted("not a readable ticket file (truncated or not safetensors): too short")
        length = int.from_bytes(head, "little")
        if not 2 <= length <= min(MAX_HEADER, size - 8):
            raise Corrupted(f"not a readable ticket file (truncated or not safetensors): header length {length}")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise Corrupted("not a readable ticket file (truncated or not safetensors): header is not JSON") from None
    if not isinstance(header, dict):
        raise Corrupted("not a readable ticket file (truncated or not safetensors): header is not an object")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)):
            raise Corrupted(f"not a readable ticket file (truncated or not safetensors): tensor {name!r}")
        end = max(end, offsets[1])
    if end != size - 8 - length:
        raise Corrupted(
            f"not a readable ticket file (truncated or not safetensors): {size - 8 - length} data bytes, header says {end}"
        )
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise Corrupted(f"not a lottery-ticket file (format {found!r})")
    if meta.get("version") not in READABLE_VERSIONS:
        raise Corrupted(
            f"unsupported ticket version {meta.get('version')!r} (this library reads {', '.join(READABLE_VERSIONS)})"
        )
    if not isinstance(meta.get("ticket"), str):
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
        doc = json.loads(meta["ticket"])
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
    """Raise `Corrupted` unless ``doc`` has the schema `ticket.write_file` writes and agrees with
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

"""safetensors headers, read and validated without touching the tensor data.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON (UTF-8, may be
padded with spaces) and the data buffer. Each JSON entry except ``__metadata__`` is a tensor
``{"dtype", "shape", "data_offsets": [begin, end]}`` with offsets relative to the buffer. Like the
reference implementation, we require the tensors sorted by offset to tile the buffer exactly: no
gap, no overlap, ``end - begin`` equal to the size the dtype and shape imply, and the buffer
ending where the file ends. Only the header is read, so a 6 GB file validates in microseconds.

The one reader for checkpoints (`lottery_ticket.safetensors_stream`) and tickets
(`lottery_ticket.ticket.format`, which adds its metadata checks); `load_json` is the one JSON
parser for headers, index files and ticket documents.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

# Same bound as the reference implementation: a larger header is a corrupt length field.
MAX_HEADER_BYTES = 100_000_000
# No file this library reads nests deeper than a few levels; far deeper is damage or an attack.
MAX_JSON_DEPTH = 64

# safetensors dtype -> bits per element. Every dtype is copied through byte for byte; only the
# ones in FLOAT_DTYPES can be pruned (the kernels rank IEEE half/bfloat/single/double).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip
FLOAT_DTYPES: dict[str, str] = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
FLOATING = frozenset(FLOAT_DTYPES) | {"F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"}


class CheckpointError(ValueError):
    """A checkpoint, index or output path that cannot be used; the message names the file."""


class HeaderError(CheckpointError):
    """A file that is not valid safetensors; ``reason`` is the message without the file's name
    (tickets report it under their own wording)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors file, as its header describes it.

    ``include``/``exclude`` predicates receive this object as their ``tensor`` argument.
    """

    name: str
    dtype: str  # safetensors spelling: "F32", "BF16", "I64", ...
    shape: tuple[int, ...]
    begin: int  # absolute byte offsets in the file
    end: int
    file: Path

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def is_floating(self) -> bool:
        return self.dtype in FLOATING


@dataclass(frozen=True)
class Header:
    """A validated safetensors file: its tensors in data-offset order and its metadata."""

    path: Path
    header_bytes: int  # 8 + N: where the data buffer starts
    file_size: int
    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str] | None = field(default=None)


def load_json(text: str | bytes) -> Any:
    """Parse JSON as every file this library reads holds it: no key twice in one object and at
    most `MAX_JSON_DEPTH` levels of nesting. Raises ``ValueError`` with a one-line message (never
    ``RecursionError``, whatever the input)."""
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    # Checked here too: a depth just under the interpreter's limit parses, then breaks whoever
    # walks or re-encodes the value (the ticket checksum does).
    pending: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, (dict, list)) else []
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        pending.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice")
        result[key] = value
    return result


def read_header(path: str | os.PathLike[str]) -> Header:
    """Read and validate the header of ``path``; raises `CheckpointError` naming the file (a
    `HeaderError` when the file is not valid safetensors)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return parse_header(f, path)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read: {err.strerror or err}") from None


def parse_header(f: BinaryIO, path: Path) -> Header:
    """Validate the header of the open file ``f`` (named ``path`` in messages and `TensorInfo`);
    raises `HeaderError`, or ``OSError`` when it cannot be read."""
    size = os.fstat(f.fileno()).st_size
    prefix = f.read(8)
    if len(prefix) < 8:
        raise HeaderError(path, f"not a safetensors file ({size} bytes, shorter than the 8-byte header length)")
    length = int.from_bytes(prefix, "little")
    if not 2 <= length <= MAX_HEADER_BYTES:  # the shortest JSON object is 2 bytes
        raise HeaderError(path, f"not a safetensors file (header length {length})")
    if length + 8 > size:
        raise HeaderError(
            path, f"not a safetensors file or truncated (header length {length} but the file has {size} bytes)"
        )
    raw = f.read(length)
    try:
        doc = load_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise HeaderError(path, f"not a safetensors file (header is not JSON: {err})") from None
    if not isinstance(doc, dict):
        raise HeaderError(path, "not a safetensors file (header is not a JSON object)")
    metadata = doc.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise HeaderError(path, "__metadata__ must map strings to strings")
    data_start = 8 + length
    tensors = sorted(
        (_tensor(path, name, entry, data_start) for name, entry in doc.items()), key=lambda t: (t.begin, t.end, t.name)
    )
    _check_tiling(path, tensors, data_start, size)
    return Header(path, data_start, size, tuple(tensors), metadata)


def _tensor(path: Path, name: str, entry: object, data_start: int) -> TensorInfo:
    where = f"tensor {name!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise HeaderError(path, f"{where}: expected exactly the keys dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BITS:
        raise HeaderError(path, f"{where}: unknown dtype {dtype!r} (known: {', '.join(DTYPE_BITS)})")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise HeaderError(path, f"{where}: shape must be a list of non-negative ints, got {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise HeaderError(path, f"{where}: data_offsets must be [begin, end] ints, got {offsets!r}")
    begin, end = offsets
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if not 0 <= begin <= end:
        raise HeaderError(path, f"{where}: data_offsets {offsets} are not an increasing pair of non-negative ints")
    if bits % 8 or end - begin != bits // 8:
        raise HeaderError(
            path, f"{where}: data_offsets {offsets} span {end - begin} bytes but {dtype} {shape} needs {bits / 8:g}"
        )
    return TensorInfo(name, dtype, tuple(shape), data_start + begin, data_start + end, path)


def _check_tiling(path: Path, tensors: list[TensorInfo], data_start: int, size: int) -> None:
    """Tensors sorted by offset must cover the data buffer exactly, and the buffer end the file."""
    position = data_start
    previous = "the header"
    for t in tensors:
        if t.begin < position:
            raise HeaderError(
                path, f"tensor {t.name!r} (bytes {t.begin - data_start}..{t.end - data_start}) overlaps {previous}"
            )
        if t.begin > position:
            raise HeaderError(
                path,
                f"{t.begin - position} bytes before tensor {t.name!r} belong to no tensor (offsets do not tile the data)",
            )
        position, previous = t.end, f"tensor {t.name!r}"
    if position > size:
        raise HeaderError(
            path, f"truncated or header lying about offsets: tensors end at byte {position} but the file has {size}"
        )
    if position < size:
        raise HeaderError(path, f"{size - position} bytes after the last tensor belong to no tensor")

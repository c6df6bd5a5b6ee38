"""What a checkpoint is on disk: one file, several shards, an index JSON or a directory.

Checkpoint order (the order of the global ranking, hence of tie-breaking) is: shards sorted by
file name, then tensors within a file by data offset. For a file written by
``safetensors.numpy.save_file`` that is not the dict's order: the writer sorts by dtype
alignment and then by name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from ..safetensors_header import CheckpointError, Header, TensorInfo, load_json, read_header

PathLike = Union[str, "os.PathLike[str]"]
INDEX_SUFFIX = ".safetensors.index.json"
# Files of an input directory that are not copied to the output: weights in other formats would
# be unpruned dense copies sitting beside the pruned ones.
_OTHER_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx", ".safetensors")


@dataclass(frozen=True)
class Checkpoint:
    """A validated input checkpoint.

    Attributes:
        shards: the safetensors files, sorted by file name.
        index_path: the ``*.safetensors.index.json`` read, if any (rewritten beside the output).
        index: its parsed JSON.
        directory: the input directory, when one was given.
        extra_files: other files of that directory (config, tokenizer), copied to the output.
    """

    shards: tuple[Header, ...]
    index_path: Path | None = None
    index: dict[str, Any] | None = None
    directory: Path | None = None
    extra_files: tuple[Path, ...] = ()

    @property
    def tensors(self) -> list[TensorInfo]:
        """Every tensor, in checkpoint order."""
        return [t for shard in self.shards for t in shard.tensors]

    @property
    def single_file(self) -> bool:
        """One plain ``.safetensors`` file was given (no index, no directory)."""
        return len(self.shards) == 1 and self.index_path is None and self.directory is None

    @property
    def input_paths(self) -> list[Path]:
        paths = [h.path for h in self.shards] + list(self.extra_files)
        paths += [p for p in (self.index_path, self.directory) if p is not None]
        return paths


def open_checkpoint(inputs: PathLike | Sequence[PathLike]) -> Checkpoint:
    """Resolve ``inputs`` and validate every header; raises `CheckpointError` naming the file."""
    paths = [Path(inputs)] if isinstance(inputs, (str, os.PathLike)) else [Path(p) for p in inputs]
    if not paths:
        raise CheckpointError("inputs: expected a .safetensors file, shards, an index JSON or a directory; got none")
    for p in paths:
        if not p.exists():
            raise CheckpointError(f"{p}: no such file or directory")
    single = [p for p in paths if p.is_dir() or p.name.endswith(".json")]
    if single and len(paths) > 1:
        raise CheckpointError(f"{single[0]}: a directory or an index must be the only input")
    if single and single[0].is_dir():
        return _from_directory(single[0])
    if single:
        # The index's folder holds the model's other files (config, tokenizer), as a directory does.
        return _from_index(single[0], None, _extra_files(single[0].parent, single[0]))
    return _from_files(paths)


def _from_files(paths: list[Path]) -> Checkpoint:
    seen: dict[str, Path] = {}
    for p in paths:
        if p.name in seen:
            raise CheckpointError(f"{p}: same file name as {seen[p.name]}; shards keep their names in the output")
        seen[p.name] = p
    headers = tuple(read_header(p) for p in sorted(paths, key=lambda p: p.name))
    _check_unique_names(headers)
    return Checkpoint(headers)


def _from_directory(folder: Path) -> Checkpoint:
    indexes = sorted(folder.glob("*" + INDEX_SUFFIX))
    if len(indexes) > 1:
        names = ", ".join(p.name for p in indexes)
        raise CheckpointError(f"{folder}: several index files ({names}); pass the one to use")
    extra = _extra_files(folder, indexes[0] if indexes else None)
    if indexes:
        return _from_index(indexes[0], folder, extra)
    shards = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    if not shards:
        raise CheckpointError(f"{folder}: no .safetensors file or {INDEX_SUFFIX} in this directory")
    checkpoint = _from_files(shards)
    return Checkpoint(checkpoint.shards, directory=folder, extra_files=extra)


def _extra_files(folder: Path, index: Path | None) -> tuple[Path, ...]:
    """The files of ``folder`` copied beside the output: not hidden, not the index (rewritten),
    not another index (``pytorch_model.bin.index.json`` lists weights that are not copied), not
    weights in another format. A symlink counts as the file it points to."""
    return tuple(
        p
        for p in sorted(folder.iterdir())
        if p.is_file()
        and not p.name.startswith(".")
        and p != index
        and not p.name.endswith(_OTHER_WEIGHT_SUFFIXES + (".index.json",))
    )


def _from_index(index_path: Path, folder: Path | None, extra: tuple[Path, ...] = ()) -> Checkpoint:
    try:
        index = load_json(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{index_path}: not a readable index JSON: {err}") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointError(f"{index_path}: expected a JSON object with a 'weight_map' of tensor name -> shard file")
    shard_names = sorted(set(weight_map.values()))
    for name in shard_names:
        if Path(name).name != name or name in ("", ".", ".."):
            raise CheckpointError(f"{index_path}: shard {name!r} is not a plain file name in the index's folder")
        if not (index_path.parent / name).is_file():
            raise CheckpointError(f"{index_path}: shard {name!r} named by the index does not exist")
    headers = tuple(read_header(index_path.parent / name) for name in shard_names)
    _check_unique_names(headers)
    for header in headers:
        for t in header.tensors:
            if weight_map.get(t.name) != header.path.name:
                listed = weight_map.get(t.name)
                where = f"lists it in {listed!r}" if listed else "does not list it"
                raise CheckpointError(f"{header.path}: holds tensor {t.name!r} but the index {index_path.name} {where}")
    held = {t.name for h in headers for t in h.tensors}
    missing = [n for n in weight_map if n not in held]
    if missing:
        raise CheckpointError(f"{index_path}: tensor {missing[0]!r} is not in shard {weight_map[missing[0]]!r}")
    return Checkpoint(headers, index_path, index, folder, extra)


def _check_unique_names(headers: Sequence[Header]) -> None:
    owner: dict[str, Path] = {}
    for header in headers:
        for t in header.tensors:
            if t.name in owner:
                raise CheckpointError(
                    f"{header.path}: tensor {t.name!r} is also in {owner[t.name]} (duplicate name across shards)"
                )
            owner[t.name] = header.path

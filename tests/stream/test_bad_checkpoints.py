"""The bad-input table: each case is a clear error naming the file or argument, nothing written."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from lottery_ticket import prune_checkpoint
from lottery_ticket.cli import main as cli_main
from lottery_ticket.safetensors_header import read_header
from lottery_ticket.safetensors_stream import CheckpointError

F32 = {"dtype": "F32", "shape": [2, 2]}


def good(folder: Path, name: str = "model.safetensors", **tensors: np.ndarray) -> Path:
    save_file(tensors or {"w.weight": np.arange(16, dtype=np.float32).reshape(4, 4) - 8}, folder / name)
    return folder / name


def raw(h: Any, folder: Path, header: dict[str, Any], data: bytes = bytes(16), length: int | None = None) -> Path:
    return h.write_raw(folder / "model.safetensors", header, data, length)


# case -> (build the inputs in a folder, what the message must say)
Builder = Callable[[Any, Path], Any]
CASES: dict[str, tuple[Builder, str]] = {
    "not safetensors": (
        lambda h, d: (d / "notes.safetensors").write_text("hello, world: no header") and d / "notes.safetensors",
        r"notes\.safetensors: not a safetensors file",
    ),
    "shorter than 8 bytes": (
        lambda h, d: (d / "tiny.safetensors").write_bytes(b"\x01\x02") and d / "tiny.safetensors",
        r"tiny\.safetensors: not a safetensors file",
    ),
    "header not json": (
        lambda h, d: (d / "m.safetensors").write_bytes(b"\x0a" + bytes(7) + b"{not json}") and d / "m.safetensors",
        r"m\.safetensors: not a safetensors file \(header is not JSON",
    ),
    "header a list": (
        lambda h, d: (d / "m.safetensors").write_bytes(b"\x02" + bytes(7) + b"[]") and d / "m.safetensors",
        r"m\.safetensors: .*not a JSON object",
    ),
    "duplicate key": (
        lambda h, d: (
            (d / "m.safetensors").write_bytes(len(b := b'{"a":{},"a":{}}').to_bytes(8, "little") + b)
            and d / "m.safetensors"
        ),
        r"m\.safetensors: .*'a' appears twice",
    ),
    "truncated": (lambda h, d: _truncate(good(d)), r"model\.safetensors: truncated or header lying about offsets"),
    "header length past the end": (
        lambda h, d: raw(h, d, {"w": {**F32, "data_offsets": [0, 16]}}, length=10**6),
        r"model\.safetensors: not a safetensors file or truncated",
    ),
    "offsets past the end": (
        lambda h, d: raw(h, d, {"w": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]}}),
        r"model\.safetensors: truncated or header lying",
    ),
    "overlap": (
        lambda h, d: raw(
            h, d, {"a": {**F32, "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
        ),
        r"model\.safetensors: tensor '(a|b)' .*overlaps tensor",
    ),
    "gap": (
        lambda h, d: raw(h, d, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}),
        r"model\.safetensors: 8 bytes before tensor 'a' belong to no tensor",
    ),
    "trailing bytes": (
        lambda h, d: raw(h, d, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}),
        r"model\.safetensors: 8 bytes after the last tensor",
    ),
    "size disagrees with shape": (
        lambda h, d: raw(h, d, {"a": {"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 16]}}),
        r"model\.safetensors: tensor 'a': data_offsets \[0, 16\] span 16 bytes but F32 \[3, 2\] needs 24",
    ),
    "reversed offsets": (
        lambda h, d: raw(h, d, {"a": {**F32, "data_offsets": [16, 0]}}),
        r"model\.safetensors: tensor 'a': data_offsets",
    ),
    "unknown dtype": (
        lambda h, d: raw(h, d, {"a": {"dtype": "F12", "shape": [4], "data_offsets": [0, 16]}}),
        r"model\.safetensors: tensor 'a': unknown dtype 'F12'",
    ),
    "bad shape": (
        lambda h, d: raw(h, d, {"a": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}),
        r"model\.safetensors: tensor 'a': shape",
    ),
    "extra key": (
        lambda h, d: raw(h, d, {"a": {**F32, "data_offsets": [0, 16], "strides": [2, 1]}}),
        r"model\.safetensors: tensor 'a': expected exactly the keys",
    ),
    "bad metadata": (
        lambda h, d: raw(h, d, {"__metadata__": {"n": 1}, "a": {**F32, "data_offsets": [0, 16]}}),
        r"model\.safetensors: __metadata__ must map strings to strings",
    ),
    "duplicate across shards": (
        lambda h, d: [good(d, "a.safetensors"), good(d, "b.safetensors")],
        r"b\.safetensors: tensor 'w\.weight' is also in .*a\.safetensors",
    ),
    "same shard name twice": (lambda h, d: [good(d), good(_sub(d, "x"))], r"model\.safetensors: same file name as"),
    "missing shard": (
        lambda h, d: _index(d, {"w.weight": "model.safetensors", "v.weight": "model-2.safetensors"}),
        r"index\.json: shard 'model-2\.safetensors' named by the index does not exist",
    ),
    "shard outside the folder": (
        lambda h, d: _index(d, {"w.weight": "../model.safetensors"}),
        r"shard '\.\./model\.safetensors' is not a plain file name",
    ),
    "index without weight_map": (
        lambda h, d: (
            (d / "model.safetensors.index.json").write_text('{"metadata": {}}') and d / "model.safetensors.index.json"
        ),
        r"index\.json: expected a JSON object with a 'weight_map'",
    ),
    "index misses a tensor": (
        lambda h, d: _index(d, {}, ("w.weight", "v.weight")),
        r"model\.safetensors: holds tensor 'v\.weight' but the index .* does not list it",
    ),
    "index names an absent tensor": (
        lambda h, d: _index(d, {"w.weight": "model.safetensors", "ghost": "model.safetensors"}),
        r"index\.json: tensor 'ghost' is not in shard",
    ),
    "two indexes": (
        lambda h, d: (
            [_index(d, {"w.weight": "model.safetensors"}), (d / "b.safetensors.index.json").write_text("{}")] and d
        ),
        r"several index files",
    ),
    "empty directory": (lambda h, d: d, r"no \.safetensors file or .*index\.json in this directory"),
    "missing input": (lambda h, d: d / "nope.safetensors", r"nope\.safetensors: no such file or directory"),
    "directory among files": (lambda h, d: [good(d), d], r"a directory or an index must be the only input"),
    "NaN among prunable weights": (
        lambda h, d: good(d, w=np.array([[1.0, np.nan]], np.float32)),
        r"model\.safetensors: tensor 'w' contains NaN among alive weights",
    ),
    "misaligned tensor": (
        lambda h, d: raw(
            h,
            d,
            {
                "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                "b": {"dtype": "F16", "shape": [1, 7], "data_offsets": [2, 16]},
            },
        ),
        r"model\.safetensors: tensor 'b' starts at byte \d+, not a multiple of 2",
    ),
    "include picks an int tensor": (
        lambda h, d: good(d, w=np.ones((2, 2), np.float32), ids=np.arange(4)),
        r"tensor 'ids' has dtype I64; only F16, BF16, F32 and F64",
    ),
}
OPTIONS: dict[str, dict[str, Any]] = {"include picks an int tensor": {"include": ["w", "ids"]}}


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:-5])
    return path


def _sub(folder: Path, name: str) -> Path:
    (folder / name).mkdir()
    return folder / name


def _index(folder: Path, weight_map: dict[str, str], names: tuple[str, ...] = ("w.weight",)) -> Path:
    save_file({n: np.ones((2, 2), np.float32) for n in names}, folder / "model.safetensors")
    if not weight_map:
        weight_map = {names[0]: "model.safetensors"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder / "model.safetensors.index.json"


@pytest.mark.parametrize("case", CASES)
def test_bad_checkpoint_is_a_clear_error_and_nothing_is_written(case: str, h: Any, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    build, message = CASES[case]
    inputs = build(h, folder)
    before = h.snapshot(folder)
    with pytest.raises(CheckpointError, match=message):
        prune_checkpoint(
            inputs, tmp_path / "out", 0.5, ticket=tmp_path / "t.safetensors", progress=False, **OPTIONS.get(case, {})
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    assert h.snapshot(folder) == before


@pytest.mark.parametrize("case", ["truncated", "missing shard", "NaN among prunable weights", "unknown dtype"])
def test_cli_reports_a_bad_checkpoint_in_one_line_with_status_2(
    case: str, h: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = CASES[case][0](h, folder)
    argv = [str(p) for p in (inputs if isinstance(inputs, list) else [inputs])]
    assert cli_main(["prune", *argv, "-s", "0.5", "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lottery-ticket prune: ") and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(CASES[case][1], err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("sparsity", "error", "message"),
    [(1.0, ValueError, r"sparsity: must lie in \[0, 1\)"), (-0.1, ValueError, "sparsity"), (float("nan"), ValueError, "sparsity"),
     ("0.5", TypeError, "sparsity: expected a fraction"), (True, TypeError, "sparsity")],
)  # fmt: skip
def test_bad_sparsity(sparsity: Any, error: type[Exception], message: str, tmp_path: Path) -> None:
    src = good(tmp_path)
    with pytest.raises(error, match=message):
        prune_checkpoint(src, tmp_path / "out.safetensors", sparsity, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


@pytest.mark.parametrize("argv", [["-s", "1"], ["-s", "half"], ["-s", "0.5", "--scope", "row"]])
def test_cli_rejects_bad_options(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["prune", str(good(tmp_path)), "-o", str(tmp_path / "o"), *argv])
    assert exit_info.value.code == 2
    assert "--s" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_needs_out_unless_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["prune", str(good(tmp_path)), "-s", "0.5"]) == 2
    assert "--out is required" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("out", "ticket", "message"),
    [
        (lambda d: d / "model.safetensors", None, r"out: .*model\.safetensors is an input"),
        (lambda d: d, None, r"out: .* is an input"),
        (lambda d: d / "missing" / "out", None, r"out: folder .*missing does not exist"),
        (lambda d: d / "full", None, r"out: .*full exists and is not an empty directory"),
        (
            lambda d: d / "o.safetensors",
            lambda d: d / "model.safetensors",
            r"ticket: .*model\.safetensors is also an input",
        ),
        (lambda d: d / "o.safetensors", lambda d: d / "o.safetensors", r"ticket: .* is also the output"),
        (
            lambda d: d / "o.safetensors",
            lambda d: d / "nowhere" / "t.safetensors",
            r"ticket: folder .*nowhere does not exist",
        ),
    ],
    ids=[
        "out is the input file",
        "out is the input folder",
        "no parent",
        "non-empty dir",
        "ticket is input",
        "ticket is out",
        "ticket folder",
    ],
)
def test_bad_output_paths(h: Any, tmp_path: Path, out: Any, ticket: Any, message: str) -> None:
    src = good(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    before = h.snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=message):
        prune_checkpoint(src, out(tmp_path), 0.5, ticket=ticket(tmp_path) if ticket else None, progress=False)
    assert h.snapshot(tmp_path) == before


def test_headers_are_read_without_reading_the_data(tmp_path: Path) -> None:
    # A sparse file: a valid header announcing 4 GiB of data that was never written.
    header = json.dumps({"big": {"dtype": "F32", "shape": [2**30], "data_offsets": [0, 2**32]}}).encode()
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + 2**32)
    parsed = read_header(path)
    assert parsed.tensors[0].size == 2**30 and parsed.tensors[0].nbytes == 2**32


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_nan_names_its_tensor_in_either_scope(scope: str, tmp_path: Path) -> None:
    save_file(
        {"a.weight": np.ones((2, 2)), "b.weight": np.array([[1.0, np.nan]]), "c.weight": np.ones((2, 2))},
        tmp_path / "m.safetensors",
    )
    with pytest.raises(CheckpointError, match=r"m\.safetensors: tensor 'b\.weight' contains NaN"):
        prune_checkpoint(tmp_path / "m.safetensors", tmp_path / "o.safetensors", 0.5, scope=scope, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize("where", ["header", "index"])
def test_deeply_nested_json_is_a_one_line_error(where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    if where == "header":
        source = folder / "model.safetensors"
        source.write_bytes(len(DEEP).to_bytes(8, "little") + DEEP.encode())
    else:
        good(folder)
        source = folder / "model.safetensors.index.json"
        source.write_text('{"weight_map": {"w.weight": "model.safetensors"}, "metadata": ' + DEEP + "}")
    with pytest.raises(CheckpointError, match=f"{re.escape(source.name)}: .*nested deeper than") as caught:
        prune_checkpoint(source, tmp_path / "out.safetensors", 0.5, progress=False)
    assert "\n" not in str(caught.value)
    assert cli_main(["prune", str(source), "-s", "0.5", "-o", str(tmp_path / "out.safetensors"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lottery-ticket prune: ") and err.count("\n") == 1 and "nested deeper than" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_json_depth_is_bounded_whatever_the_interpreter_allows() -> None:
    from lottery_ticket.safetensors_header import MAX_JSON_DEPTH, load_json

    def nested(depth: int) -> str:
        return '{"a": ' * (depth - 1) + "[1]" + "}" * (depth - 1)

    assert load_json(nested(MAX_JSON_DEPTH)) is not None and load_json('"text"') == "text"
    for depth in (MAX_JSON_DEPTH + 1, 500):  # both parse in Python; the bound refuses them
        with pytest.raises(ValueError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
            load_json(nested(depth))
    with pytest.raises(ValueError, match="key 'a' appears twice"):
        load_json('{"a": 1, "a": 2}')

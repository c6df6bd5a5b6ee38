"""An input changed while `prune` runs (rewritten in place, cut short) is a clear error, never a
wrong count or a SIGBUS, and the run leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from lottery_ticket import prune_checkpoint
from lottery_ticket.safetensors_stream import CheckpointError, _prune, _write


def shards(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in (1, 2):
        save_file({f"l{i}.weight": rng.standard_normal((64, 64)).astype(np.float32)}, folder / f"m-{i}.safetensors")
    return folder


def rewrite_in_place(path: Path, keep_mtime: bool) -> None:
    """Same size, every weight now large: pruning it by the old threshold prunes nothing."""
    stat = path.stat()
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    raw[start:] = np.full((len(raw) - start) // 4, 1e6, np.float32).tobytes()
    with open(path, "r+b") as f:
        f.write(raw)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns if keep_mtime else stat.st_mtime_ns + 10**9))


def after_threshold_pass(monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    real = _prune.select

    def select_then_change(*args: Any) -> Any:
        result = real(*args)
        change()
        return result

    monkeypatch.setattr(_prune, "select", select_then_change)


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["mtime-changed", "mtime-kept"])
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_an_input_rewritten_between_the_passes_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_mtime: bool, dry_run: bool
) -> None:
    folder = shards(tmp_path / "in")
    after_threshold_pass(monkeypatch, lambda: rewrite_in_place(folder / "m-2.safetensors", keep_mtime))
    # With the mtime kept, the pruned count disagrees with the threshold pass's promise.
    message = r"m-2\.safetensors.*: the input (was modified|changed) while pruning"
    with pytest.raises(CheckpointError, match=message):
        prune_checkpoint(
            folder, tmp_path / "out", 0.5, ticket=tmp_path / "t.safetensors", dry_run=dry_run, progress=False
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_an_input_cut_short_between_the_passes_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = shards(tmp_path / "in")
    after_threshold_pass(monkeypatch, lambda: os.truncate(folder / "m-1.safetensors", 100))
    with pytest.raises(CheckpointError, match=r"m-1\.safetensors: the input changed while pruning \(100 bytes"):
        prune_checkpoint(folder, tmp_path / "out", 0.5, ticket=tmp_path / "t.safetensors", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_an_input_cut_short_during_the_write_pass_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = shards(tmp_path / "in")
    save_file(
        {"a.weight": np.ones((8, 8), np.float32), "b.weight": np.full((8, 8), 2.0, np.float32)},
        folder / "m-3.safetensors",
    )
    real = _write.prune_tensor

    def cut_after_first(t: Any, *args: Any) -> int:
        done = real(t, *args)
        if t.name == "a.weight":
            os.truncate(folder / "m-3.safetensors", 120)
        return done

    monkeypatch.setattr(_write, "prune_tensor", cut_after_first)
    with pytest.raises(CheckpointError, match=r"m-3\.safetensors: the input changed while pruning"):
        prune_checkpoint(folder, tmp_path / "out", 0.5, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


CUT = """
import os, sys
from lottery_ticket.cli import main
from lottery_ticket.safetensors_stream import _prune
real = _prune.select
def select_then_cut(*args):
    result = real(*args)
    os.truncate(sys.argv[1], 100)
    return result
_prune.select = select_then_cut
sys.exit(main(["prune", sys.argv[1], "-s", "0.5", "-o", sys.argv[2], "--no-progress"]))
"""


def test_the_cli_reports_a_cut_input_instead_of_dying_by_sigbus(tmp_path: Path) -> None:
    src = tmp_path / "m.safetensors"
    save_file({"w.weight": np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)}, src)
    done = subprocess.run(
        [sys.executable, "-c", CUT, str(src), str(tmp_path / "o.safetensors")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 2, done.stderr
    assert "m.safetensors: the input changed while pruning" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]

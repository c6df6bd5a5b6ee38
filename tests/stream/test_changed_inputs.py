"""An input changed while `prune` runs (rewritten in place, cut short) is a clear error, never a
wrong count or a SIGBUS, and the run leaves nothing behind."""

from __future__ import annotations

import os
import signal
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


# Cut inside a kernel call, after every check the pass makes before it: only the kernel's own
# reads (one call over all tensors for the threshold pass, one per slice for the write pass)
# meet the missing pages. A regression is SIGBUS, hence the subprocess.
CUT_IN_KERNEL = """
import os, resource, sys
from lottery_ticket.cli import main
from lottery_ticket.safetensors_stream import _write
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
kernel, src = sys.argv[1], sys.argv[2]
real = getattr(_write, kernel)
def cut_then_run(*args):
    os.truncate(src, 100)
    return real(*args)
setattr(_write, kernel, cut_then_run)
sys.exit(main(["prune", src, "-s", "0.5", "--no-progress", *sys.argv[3:]]))
"""


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


@pytest.mark.skipif(sys.platform == "win32", reason="Windows refuses to cut a mapped file short")
@pytest.mark.parametrize("kernel", ["select_threshold", "write_pruned_counted"])
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_an_input_cut_short_during_a_kernel_call_is_an_error_not_sigbus(
    tmp_path: Path, kernel: str, dry_run: bool
) -> None:
    src = tmp_path / "m.safetensors"
    rng = np.random.default_rng(0)
    save_file({"w.weight": rng.standard_normal((256, 256)).astype(np.float32)}, src)
    out = ["--dry-run"] if dry_run else ["-o", str(tmp_path / "o.safetensors"), "--ticket", str(tmp_path / "t")]
    done = run_script(CUT_IN_KERNEL, kernel, str(src), *out)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert (
        done.stderr
        == f"lottery-ticket prune: {src}: the input changed while pruning (cut short while being read); nothing written\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


# Watches one map, then reads a cut one that nobody watches: that SIGBUS must still kill.
FOREIGN_FAULT = """
import mmap, os, resource, sys
import numpy as np
from lottery_ticket import _core
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
def mapped(path):
    with open(path, "wb") as f:
        f.write(b"\\1" * (1 << 20))
    fd = os.open(path, os.O_RDONLY)
    return np.frombuffer(mmap.mmap(fd, 1 << 20, access=mmap.ACCESS_READ), dtype=np.uint8)
watched, other = mapped(sys.argv[1]), mapped(sys.argv[2])
token = _core.watch_mapping(watched)
os.truncate(sys.argv[1], 100)
print(int(watched.sum()), _core.mapping_faulted(token), flush=True)
os.truncate(sys.argv[2], 100)
print(int(other.sum()), flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="Windows refuses to cut a mapped file short")
def test_a_sigbus_outside_the_watched_maps_still_kills_the_process(tmp_path: Path) -> None:
    done = run_script(FOREIGN_FAULT, str(tmp_path / "watched"), str(tmp_path / "other"))
    assert done.stdout == "100 True\n", done.stderr
    assert done.returncode == -signal.SIGBUS, (done.returncode, done.stderr)

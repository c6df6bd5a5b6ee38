"""The code paths of systems without ``os.pwrite`` (Windows), ``O_DIRECT`` (macOS, Windows) or
``fcntl`` (Windows), forced here by removing them: the same bytes as the Linux path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from lottery_ticket import LotteryTicketConfig, Ticket, _files, prune_checkpoint
from lottery_ticket.safetensors_stream import _blocks


def run(folder: Path, name: str) -> dict[str, bytes]:
    """Prune the directory checkpoint into ``name``, with a ticket; saves a ticket too."""
    out = folder / name
    out.mkdir()
    prune_checkpoint(folder / "in", out / "model", 0.4, ticket=out / "t.safetensors", progress=False)
    ticket = Ticket(masks={"w": np.ones(3, bool)}, snapshot={"w": np.arange(3.0)}, config=LotteryTicketConfig(0.5, 1))
    ticket.save(out / "saved.safetensors")
    ticket.save(out / "saved.safetensors")  # a replacement, with the stale-temp sweep
    # (Ticket.save's metadata order varies from save to save: compared by what it loads.)
    loaded = Ticket.load(out / "saved.safetensors")
    assert loaded.masks["w"].tolist() == [True] * 3 and loaded.snapshot["w"].tolist() == [0.0, 1.0, 2.0]
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "saved.safetensors"
    }


class FakeFcntl:
    """macOS's fcntl as far as the writer uses it: ``F_NOCACHE`` (which Linux lacks)."""

    F_NOCACHE = 48

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def fcntl(self, fd: int, command: int, value: int) -> int:
        self.calls.append((command, value))
        return 0


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(3)
    for i in (1, 2):
        w = {f"l{i}.weight": rng.standard_normal((300, 70)).astype(np.float32), f"l{i}.bias": np.ones(70, np.float32)}
        save_file(w, tmp_path / "in" / f"model-{i}.safetensors")
    return tmp_path


def test_without_pwrite_o_direct_and_fcntl_the_outputs_are_identical(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_blocks, "BLOCK_BYTES", 4 * _blocks.ALIGN)  # many blocks, unaligned ends
    linux = run(folder, "linux")
    monkeypatch.delattr(os, "pwrite")
    monkeypatch.delattr(os, "O_DIRECT", raising=False)
    monkeypatch.setattr(_blocks, "fcntl", None)
    monkeypatch.setattr(_files, "fcntl", None)
    written: list[bool] = []
    real_init = _blocks.BlockWriter.__init__

    def record(self: Any, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        written.append(self.direct)

    monkeypatch.setattr(_blocks.BlockWriter, "__init__", record)
    assert run(folder, "windows") == linux
    assert written == [False, False]
    assert not any(p.name.startswith(".") for p in folder.rglob("*")), "a temp or lock file was left"


def test_macos_bypasses_the_cache_with_f_nocache(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    linux = run(folder, "linux")
    fake = FakeFcntl()
    monkeypatch.delattr(os, "O_DIRECT", raising=False)
    monkeypatch.setattr(_blocks, "fcntl", fake)
    assert run(folder, "macos") == linux
    assert fake.calls == [(FakeFcntl.F_NOCACHE, 1)] * 2  # one per shard


def test_the_lock_file_scheme_serialises_writers_and_clears_a_dead_ones_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_files, "fcntl", None)
    lock_file = tmp_path / _files.LOCK_NAME
    with _files.locked([tmp_path]):
        assert lock_file.exists()
    assert not lock_file.exists()
    lock_file.write_bytes(b"")
    os.utime(lock_file, (0, 0))  # left by a writer that died holding it
    with _files.locked([tmp_path, tmp_path]):
        pass
    assert not lock_file.exists()

"""`BlockWriter`: a shard's output written front to back through aligned blocks, O_DIRECT where
the file system takes it, the page cache otherwise, write errors surfacing in the caller."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lottery_ticket import prune_checkpoint
from lottery_ticket.safetensors_stream import _blocks
from lottery_ticket.safetensors_stream._blocks import BlockWriter


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_blocks, "BLOCK_BYTES", 2 * _blocks.ALIGN)


def _direct_works(folder: Path) -> bool:
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    try:
        os.close(os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | flag, 0o644))
    except OSError:
        return False
    return True


def _write(path: Path, data: bytes, pieces: int, direct: bool = True) -> BlockWriter:
    """Write ``data`` with alternating takes and copies of uneven sizes."""
    path.write_bytes(b"\xff" * len(data))  # what `allocate` leaves: a file of the final size
    source = np.frombuffer(data, dtype=np.uint8)
    cuts = np.linspace(0, len(data), pieces + 1).astype(int)
    with BlockWriter(path, len(data), direct=direct) as out:
        for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
            if i % 2:
                out.copy(source[a:b], lambda n: None)
                continue
            while a < b:
                view = out.take(b - a)
                view[...] = source[a : a + view.size]
                a += view.size
    return out


@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, 8192, 3 * 8192 + 5])
@pytest.mark.parametrize("direct", [True, False])
def test_every_byte_lands_once_and_the_padding_is_cut(tmp_path: Path, size: int, direct: bool) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    out = _write(tmp_path / "f", data, pieces=7, direct=direct)
    assert (tmp_path / "f").read_bytes() == data
    assert out.direct == (direct and _direct_works(tmp_path))
    assert not any(t.name == "lottery-ticket-writer" for t in threading.enumerate())


def test_a_file_system_refusing_o_direct_writes_falls_back_to_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _direct_works(tmp_path):
        # Only a file system that takes O_DIRECT at open can refuse it at write; elsewhere the
        # page-cache path already runs in every other test.
        pytest.skip("this file system refuses O_DIRECT at open; the other tests cover the page-cache path")
    real, calls = os.pwrite, []

    def refuse_first(fd: int, data: Any, offset: int) -> int:
        calls.append(offset)
        if len(calls) == 1:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(_blocks.os, "pwrite", refuse_first)
    data = bytes(range(256)) * 100
    out = _write(tmp_path / "f", data, pieces=3)
    assert (tmp_path / "f").read_bytes() == data and not out.direct and calls[0] == calls[1] == 0


def test_a_full_disk_mid_write_names_the_file_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.numpy import save_file

    folder = tmp_path / "in"
    folder.mkdir()
    save_file({"a.weight": np.ones((64, 64), np.float32)}, folder / "m.safetensors")
    real = os.pwrite

    def full(fd: int, data: Any, offset: int) -> int:
        if offset >= 2 * _blocks.ALIGN:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(_blocks.os, "pwrite", full)
    with pytest.raises(
        OSError, match=r"No space left on device: '.*\.out\.safetensors\.[0-9a-f]{8}\.lt-tmp'"
    ) as raised:
        prune_checkpoint(folder / "m.safetensors", tmp_path / "out.safetensors", 0.5, progress=False)
    assert raised.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    assert not any(t.name == "lottery-ticket-writer" for t in threading.enumerate())


def test_an_interrupt_stops_the_writer_thread_and_closes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(5 * 8192))
    with pytest.raises(KeyboardInterrupt), BlockWriter(path, 5 * 8192) as out:
        out.take(3 * 8192)
        out.take(8192)
        raise KeyboardInterrupt
    assert not any(t.name == "lottery-ticket-writer" for t in threading.enumerate())
    with pytest.raises(OSError):
        os.fstat(out._fd)


def test_closing_short_of_the_size_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(100))
    with pytest.raises(RuntimeError, match="f: 40 of 100 bytes produced"), BlockWriter(path, 100) as out:
        out.take(40)

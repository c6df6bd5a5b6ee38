"""write_atomic: temp names that fit NAME_MAX, symlinks followed, stale temp files of ours removed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lottery_ticket._files import TEMP_SUFFIX, create_temp, remove_stale_temps, write_atomic


def stale_temp(target: Path, age: float = 60.0) -> Path:
    """A temp file as a save killed mid-write leaves it (ours, unlocked, older than now)."""
    fd, tmp = create_temp(target)
    os.write(fd, b"partial")
    os.close(fd)
    os.utime(tmp, (time.time() - age, time.time() - age))
    return tmp


def test_longest_file_name_is_written(tmp_path: Path) -> None:
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    target = tmp_path / ("t" * (limit - len(".safetensors")) + ".safetensors")
    write_atomic(target, b"data")
    assert target.read_bytes() == b"data"
    assert os.listdir(tmp_path) == [target.name]


def test_multibyte_long_name_is_cut_on_a_character_boundary(tmp_path: Path) -> None:
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    target = tmp_path / ("é" * ((limit - 4) // 2) + ".bin")
    write_atomic(target, b"x")
    assert target.read_bytes() == b"x"


def test_symlink_target_is_replaced_and_link_kept(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "ticket.safetensors"
    target.write_bytes(b"old")
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    write_atomic(link, b"new")
    assert link.is_symlink()
    assert target.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["link.safetensors", "real"]


def test_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "missing")
    write_atomic(link, b"x")
    assert link.is_symlink() and (tmp_path / "missing").read_bytes() == b"x"


def test_stale_temp_files_of_the_same_target_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.safetensors"
    stale = [stale_temp(target) for _ in range(3)]
    other_target = stale_temp(tmp_path / "other.safetensors")
    legacy = tmp_path / ".ckpt.safetensors.0123abcd.tmp"  # what earlier versions left behind
    legacy.write_bytes(b"partial")
    os.utime(legacy, (0, 0))
    foreign = [tmp_path / ".ckpt.safetensors.1234.tmp", tmp_path / f".ckpt.safetensors.nothex{TEMP_SUFFIX}"]
    for f in foreign:
        f.write_bytes(b"not ours")
        os.utime(f, (0, 0))
    write_atomic(target, b"new")
    assert not any(p.exists() for p in [*stale, legacy])
    assert other_target.exists() and all(f.exists() for f in foreign)
    assert target.read_bytes() == b"new"


def test_temp_file_of_a_live_writer_is_kept(tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl", reason="locks are POSIX; elsewhere age alone decides")
    target = tmp_path / "ckpt.safetensors"
    fd, live = create_temp(target)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        os.utime(live, (0, 0))
        assert remove_stale_temps(target, before=time.time()) == []
        assert live.exists()
    finally:
        os.close(fd)
    assert remove_stale_temps(target, before=time.time()) == [live]


def test_temp_files_newer_than_the_write_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "t.bin"
    young = stale_temp(target, age=-60)  # mtime after the write started: another save's
    write_atomic(target, b"x")
    assert young.exists()

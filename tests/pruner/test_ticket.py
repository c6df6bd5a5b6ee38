"""Ticket: derived numbers, safetensors round trip, damaged files, atomic writes, `inspect`."""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import torch
from lottery_ticket import LotteryTicketConfig, LotteryTicketPruner, RewindStrategy, Ticket
from lottery_ticket._files import write_atomic
from lottery_ticket.cli import inspect as inspect_command
from lottery_ticket.cli import main
from torch import nn


def cli_main(argv: list[str]) -> int:
    # The `inspect` subcommand as cli.py wires it (configure + run), without the other subcommands.
    parser = argparse.ArgumentParser(prog="lottery-ticket inspect")
    inspect_command.configure(parser)
    return inspect_command.run(parser.parse_args(argv[1:]))


def trained_ticket(dtype: torch.dtype = torch.float32) -> Ticket:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 9), nn.BatchNorm1d(9), nn.Linear(9, 3)).to(dtype)
    pruner = LotteryTicketPruner(0.7, 2, RewindStrategy.early(iteration=1))
    x = torch.randn(16, 7, dtype=dtype)

    def train(net: nn.Module, round_index: int) -> dict[str, float]:
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            net(x).float().square().mean().backward()
            opt.step()
        return {"accuracy": 0.5 + round_index / 10}

    return pruner.run(model, train, progress=False)


def assert_same(a: Ticket, b: Ticket) -> None:
    assert list(a.masks) == list(b.masks)
    assert all(np.array_equal(a.masks[k], b.masks[k]) and b.masks[k].dtype == np.bool_ for k in a.masks)
    assert list(a.snapshot) == list(b.snapshot)
    for k, v in a.snapshot.items():
        w = b.snapshot[k]
        assert type(w) is type(v)
        assert w.dtype == v.dtype and tuple(w.shape) == tuple(v.shape)
        assert torch.equal(v, w) if isinstance(v, torch.Tensor) else np.array_equal(v, w), k
    assert (a.config, a.sparsity_history, a.metrics) == (b.config, b.sparsity_history, b.metrics)
    assert (a.rewind_iteration, a.iterations_per_round) == (b.rewind_iteration, b.iterations_per_round)


def test_numbers_follow_the_masks() -> None:
    ticket = Ticket(
        masks={"a": np.array([True, False, False, True]), "b": np.zeros((2, 3), dtype=bool)},
        snapshot={"a": np.zeros(4), "b": np.zeros((2, 3))},
        config=LotteryTicketConfig(0.8, 2),
    )
    assert (ticket.total_parameters, ticket.remaining_parameters) == (10, 2)
    assert ticket.density == pytest.approx(0.2) and ticket.sparsity == pytest.approx(0.8)
    assert ticket.compression_ratio() == pytest.approx(5.0)
    assert ticket.strategy == RewindStrategy.init()
    assert ticket.layer_table() == [
        {"name": "a", "shape": (4,), "total": 4, "remaining": 2, "sparsity": 0.5},
        {"name": "b", "shape": (2, 3), "total": 6, "remaining": 0, "sparsity": 1.0},
    ]
    empty = Ticket({"a": np.zeros(3, dtype=bool)}, {"a": np.zeros(3)}, LotteryTicketConfig(0.5, 1))
    assert empty.compression_ratio() == float("inf")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64, torch.float16])
def test_torch_ticket_round_trips_exactly(tmp_path: Path, dtype: torch.dtype) -> None:
    ticket = trained_ticket(dtype)
    assert ticket.snapshot["1.num_batches_tracked"].dtype == torch.int64
    path = tmp_path / "t.safetensors"
    ticket.save(path)
    assert_same(ticket, Ticket.load(path))
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]  # no temp file left behind


def test_numpy_ticket_round_trips_and_masks_are_bit_packed(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    model = {"w": rng.normal(size=(33, 17)).astype(np.float16), "b": np.arange(5, dtype=np.int32)}
    ticket = LotteryTicketPruner(0.9, 3, RewindStrategy.none(), include="w").find_ticket(model)
    path = tmp_path / "n.ticket"
    ticket.save(str(path))
    loaded = Ticket.load(str(path))
    assert_same(ticket, loaded)
    assert path.stat().st_size < 33 * 17 * 2 + 5 * 4 + 33 * 17 // 8 + 4000  # packed masks: bits, not bytes


def test_save_overwrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    path.write_bytes(b"old")
    ticket = trained_ticket()
    ticket.save(path)
    assert_same(ticket, Ticket.load(path))


def test_damaged_and_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    trained_ticket().save(path)
    data = path.read_bytes()
    (tmp_path / "truncated").write_bytes(data[: len(data) - 10])
    corrupted = bytearray(data)
    corrupted[-3] ^= 0x40
    (tmp_path / "corrupted").write_bytes(bytes(corrupted))
    (tmp_path / "garbage").write_bytes(b"\x00\x01 not a ticket at all")
    (tmp_path / "empty").write_bytes(b"")
    save_file({"x": np.zeros(3, dtype=np.float32)}, str(tmp_path / "foreign"))
    save_file(
        {"x": np.zeros(3, dtype=np.float32)},
        str(tmp_path / "future"),
        metadata={"format": "lottery-ticket", "version": "99"},
    )
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    header["__metadata__"]["ticket"] = "{not json"
    raw = json.dumps(header).encode()
    raw += b" " * (header_len - len(raw)) if len(raw) <= header_len else b""
    if len(raw) == header_len:
        (tmp_path / "badjson").write_bytes(data[:8] + raw + data[8 + header_len :])
    expectations = {
        "truncated": "truncated",
        "corrupted": "checksum",
        "garbage": "not a readable ticket",
        "empty": "not a readable ticket",
        "foreign": "not a lottery-ticket file",
        "future": "version",
        "badjson": "corrupted",
    }
    for name, match in expectations.items():
        if (tmp_path / name).exists():
            with pytest.raises(ValueError, match=match):
                Ticket.load(tmp_path / name)
    assert (tmp_path / "badjson").exists()
    with pytest.raises(FileNotFoundError):
        Ticket.load(tmp_path / "missing")


def test_inspect_prints_summary_and_layer_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.safetensors"
    ticket = trained_ticket()
    ticket.save(path)
    assert cli_main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "early:1" in out and f"{ticket.sparsity:.2%}" in out
    assert f"{ticket.remaining_parameters} of {ticket.total_parameters}" in out
    for row in ticket.layer_table():
        assert row["name"] in out and f"{row['sparsity']:.2%}" in out
    assert "accuracy=0.7" in out  # per-round metrics
    (tmp_path / "bad").write_bytes(b"junk")
    assert main(["inspect", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "not a readable ticket" in err and len(err.splitlines()) == 1


def test_write_atomic_replaces_the_file_and_fsyncs_file_then_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[bool] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.chdir(tmp_path)
    Path("out.bin").write_bytes(b"old contents")
    write_atomic("out.bin", b"new")
    assert Path("out.bin").read_bytes() == b"new"
    assert synced == ([False, True] if os.name == "posix" else [False])  # the file, then its folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_write_atomic_failure_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ticket.safetensors"
    path.write_bytes(b"old contents")

    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(OSError, match="disk full"):
            write_atomic(path, b"new contents that never land")
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ticket.safetensors"]
    # A failing rename (the target is a folder) cleans up too.
    (tmp_path / "folder").mkdir()
    with pytest.raises(OSError):
        write_atomic(tmp_path / "folder", b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "ticket.safetensors"]


def test_write_atomic_gives_new_files_the_umask_mode_and_keeps_an_existing_mode(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.bin"
        write_atomic(fresh, b"x")
        assert fresh.stat().st_mode & 0o777 == 0o644
        kept = tmp_path / "kept.bin"
        kept.write_bytes(b"old")
        kept.chmod(0o640)
        write_atomic(kept, b"new")
        assert kept.stat().st_mode & 0o777 == 0o640 and kept.read_bytes() == b"new"
    finally:
        os.umask(umask)

"""Bad command lines for every subcommand: exit status 2, one line on stderr naming the option or
file, no traceback, and no file created or changed (issue #14 row 10)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lottery_ticket.cli import main
from lottery_ticket.cli._errors import UserError
from lottery_ticket.cli.bench import check_memory
from lottery_ticket.cli.bench.workloads import WorkloadSpec
from lottery_ticket.cli.demo import prepare_out

# (id, argv with {tmp} for the test's folder, what stderr must name)
CASES: list[tuple[str, list[str], str]] = [
    ("no-command", [], "COMMAND"),
    ("unknown-command", ["prune-everything"], "prune-everything"),
    ("demo-out-is-a-file", ["demo", "--quick", "--out", "{tmp}/file"], "--out"),
    ("demo-out-etc-passwd", ["demo", "--quick", "--out", "/etc/passwd"], "--out"),
    ("demo-out-under-a-file", ["demo", "--quick", "--out", "{tmp}/file/sub"], "--out"),
    (
        "demo-early-past-iterations",
        ["demo", "--rewind", "early:5", "--iterations", "1", "--out", "{tmp}/d"],
        "--rewind",
    ),
    ("demo-rewind-garbage", ["demo", "--rewind", "sideways"], "--rewind"),
    ("demo-late-one", ["demo", "--rewind", "late:1.0"], "--rewind"),
    ("demo-seeds-zero", ["demo", "--seeds", "0"], "--seeds"),
    ("demo-rounds-text", ["demo", "--rounds", "many"], "--rounds"),
    ("demo-iterations-negative", ["demo", "--iterations", "-3"], "--iterations"),
    ("demo-unknown-option", ["demo", "--fast"], "--fast"),
    ("bench-params-huge", ["bench", "--params", "1e12", "--no-memory"], "--params"),
    ("bench-params-tiny", ["bench", "--params", "10"], "--params"),
    ("bench-params-text", ["bench", "--params", "lots"], "--params"),
    ("bench-dtype", ["bench", "--dtype", "f64"], "--dtype"),
    ("bench-mix", ["bench", "--mix", "vgg"], "--mix"),
    ("bench-seed-text", ["bench", "--seed", "x"], "--seed"),
    ("inspect-empty-name", ["inspect", ""], "TICKET"),
    ("inspect-missing", ["inspect", "{tmp}/missing.safetensors"], "missing.safetensors"),
    ("inspect-folder", ["inspect", "{tmp}"], "Is a directory"),
    ("inspect-garbage", ["inspect", "{tmp}/file"], "not a readable ticket"),
    ("inspect-no-argument", ["inspect"], "TICKET"),
]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"" for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize(("argv", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_user_error_is_one_line_and_exit_2(
    argv: list[str], names: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_bytes(b"keep me")
    before = snapshot(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        status = main(args)
    except SystemExit as exit_info:  # argparse
        status = exit_info.code  # type: ignore[assignment]
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.count("\n") == 1, captured.err
    assert names in captured.err and "Traceback" not in captured.err
    assert captured.out == ""
    assert snapshot(tmp_path) == before, "a file was created or changed"


def test_bench_refuses_params_that_do_not_fit_in_memory() -> None:
    with pytest.raises(UserError, match=r"--params: 5e\+09 f32 weights need ~41\.9 GiB of memory, 16\.0 GiB are free"):
        check_memory(WorkloadSpec("bert", 5_000_000_000), 16 << 30)
    check_memory(WorkloadSpec("bert", 110_000_000), 16 << 30)  # the default fits


def test_demo_refuses_an_unwritable_out_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    # CI runs as root, whom permission bits do not stop: make the access check answer as for a user.
    monkeypatch.setattr(os, "access", lambda path, mode, **kwargs: Path(path) != locked)
    with pytest.raises(UserError, match="--out: .* is not writable"):
        prepare_out(locked)


def test_case_ids_are_unique() -> None:
    assert len({c[0] for c in CASES}) == len(CASES)


def test_prune_out_a_link_to_a_full_folder_is_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    (tmp_path / "in").mkdir()
    save_file({"w.weight": np.ones((4, 4), np.float32)}, tmp_path / "in" / "m.safetensors")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("mine")
    (tmp_path / "link").symlink_to(tmp_path / "full")
    before = snapshot(tmp_path)
    status = main(["prune", str(tmp_path / "in"), "-s", "0.5", "-o", str(tmp_path / "link"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "out: " in err and "(a link to " in err and "exists and is not an empty directory" in err
    assert snapshot(tmp_path) == before

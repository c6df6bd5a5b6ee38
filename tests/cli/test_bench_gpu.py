"""`lottery-ticket bench --device cuda` (`cli.bench.gpu`): its harness runs on CPU tensors here;
the GPU table itself needs a lent GPU (`benches/gpu.py`)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import torch
from lottery_ticket import cli
from lottery_ticket.cli.bench import gpu

CPU = torch.device("cpu")


def test_every_method_gives_a_row_for_every_case() -> None:
    cases = gpu.suite(scale=1e-4, big=True)
    assert [c.dtype for c in cases] == [torch.float32, torch.bfloat16, torch.float32]
    assert cases[2].params > cases[0].params  # the big mix
    lines = list(gpu.table(cases, CPU, "test host", budget_s=0.05))
    assert "test host" in lines[0] and lines[2].startswith("| workload | method | median | spread |")
    per_case = len(gpu.methods()) + 1  # and the fused passes over the torch ops
    assert len(lines[4:]) == len(cases) * per_case
    summaries = lines[4 + per_case - 1 :: per_case]
    rows = [line for line in lines[4:] if line not in summaries]
    for summary, case in zip(summaries, cases):
        assert summary.startswith(f"| {case.label} | fused ÷ torch ops | fresh "), summary
        assert "x, in place " in summary or "x?, in place " in summary, summary
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2].endswith(" ms"), row  # measured
        # with its spread, unless its calls outlasted the row's budget before a spread was known
        # (a slow moment of the host)
        assert cells[3].endswith("%") or cells[5] in ("noisy (1 rounds)", "noisy (2 rounds)"), row
        assert cells[5] in ("", "noisy") or cells[5].startswith("noisy ("), row  # no method failed


def test_the_masks_are_checked_before_anything_is_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu.check(CPU)  # ours and the fused passes (the torch ops on CPU tensors) equal the Rust kernels

    def wrong(ws: list[torch.Tensor]) -> list[torch.Tensor]:
        masks = gpu.global_magnitude_masks(ws, gpu.AMOUNT)
        masks[0].view(-1)[0] ^= True
        return masks

    monkeypatch.setattr(gpu, "_ours", wrong)
    with pytest.raises(AssertionError, match="ours: masks on cpu differ from the Rust kernels'"):
        gpu.check(CPU)


def _clock(durations: Iterator[float]) -> Callable[[], float]:
    """A clock whose timed calls (a reading before and after each) last ``durations`` in turn."""
    now, reads = 0.0, itertools.count()

    def read() -> float:
        nonlocal now
        if next(reads) % 2:
            now += next(durations)
        return now

    return read


def test_the_fused_passes_are_compared_with_the_ops_they_replace() -> None:
    steady, row = gpu.Row(2e-3, 0.01, None, ""), gpu.Row(4e-3, 0.01, None, "")
    rows = dict.fromkeys(gpu.methods(), row)
    rows["ours, fused Triton passes"] = steady
    rows["ours, fused, a later round in place"] = gpu.Row(6e-3, 0.3, None, "noisy (30 rounds)")
    assert gpu.fused_ratios(rows) == "fresh 0.50x, in place 1.50x?"
    rows["ours"] = gpu.Row(None, None, None, "OutOfMemoryError: CUDA out of memory")
    assert gpu.fused_ratios(rows) == "fresh —, in place 1.50x?"


def test_without_triton_the_fused_rows_say_so_and_the_rest_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_triton(method: Callable[[list[torch.Tensor]], object]) -> Callable[[list[torch.Tensor]], object]:
        def run(ws: list[torch.Tensor]) -> object:
            raise ImportError("LOTTERY_TICKET_FUSED=1: the fused passes need Triton (No module named 'triton')")

        return run

    monkeypatch.setattr(gpu, "_fused", no_triton)
    gpu.check(CPU)  # the torch ops are still checked; there are no fused passes to check
    row = gpu.measure(lambda: no_triton(gpu._ours)([]), CPU)
    assert row.median_s is None and row.note.startswith("ImportError: LOTTERY_TICKET_FUSED=1: the fused passes need")


def test_rows_repeat_until_stable_or_say_they_are_noisy() -> None:
    steady = gpu.measure(lambda: None, CPU, clock=_clock(itertools.repeat(1e-3)))
    assert steady.note == "" and steady.median_s == pytest.approx(1e-3) and steady.spread == pytest.approx(0)
    jumpy = gpu.measure(lambda: None, CPU, budget_s=1.0, clock=_clock(itertools.cycle([1e-3, 3e-3])))
    assert jumpy.note == "noisy (30 rounds)" and jumpy.spread == pytest.approx(2 / 3)


def test_a_failing_method_is_a_row_with_its_error() -> None:
    def too_big() -> None:
        raise RuntimeError("numel: integer multiplication overflow\nmore detail")

    row = gpu.measure(too_big, CPU)
    assert row.median_s is None and row.note == "RuntimeError: numel: integer multiplication overflow"


def test_the_fused_switch_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOTTERY_TICKET_FUSED", "0")
    with gpu.fused_passes():
        assert gpu.os.environ["LOTTERY_TICKET_FUSED"] == "1"
    assert gpu.os.environ["LOTTERY_TICKET_FUSED"] == "0"


def test_cuda_without_a_gpu_names_the_argument(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["bench", "--device", "cuda", "--params", "1e5"]) != 0
    assert "--device cuda: no CUDA device here" in capsys.readouterr().err


def test_an_unknown_device_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--device", "tpu"])
    assert exit_info.value.code == 2 and "--device" in capsys.readouterr().err


SCRIPT = Path(__file__).resolve().parents[2] / "benches" / "gpu_check.sh"
# A stand-in for python3 on a GPU machine: the machine check passes, the plain tests pass, the
# fused tests fail and the bench prints a row, then sleeps for FAKE_SLEEP seconds.
FAKE_PYTHON = """#!/usr/bin/env bash
case "$1 ${2:-}" in
  "- ") cat > /dev/null; echo "fake GPU" ;;
  "-m pytest") if [ "${LOTTERY_TICKET_FUSED:-0}" = 1 ]; then echo "1 failed"; exit 1; fi; echo "9 passed" ;;
  "-m lottery_ticket") echo "| 110M bert f32 | fused ÷ torch ops | fresh 0.50x |"; sleep "${FAKE_SLEEP:-0}" ;;
  *) exit 3 ;;
esac
"""


def _gpu_check(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    run_env = {**os.environ, "PYTHON": str(fake), **env}
    run_env.pop("OUT", None)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=run_env, timeout=60)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "ten"], "--budget must be whole seconds, got 'ten'"),
        (["--wheel", "no-such.whl"], "--wheel: no such file: no-such.whl"),
        (["--fast"], "unknown argument '--fast'"),
        (["--out"], "--out needs a value"),
    ],
)
def test_the_gpu_check_refuses_bad_arguments_before_it_runs_anything(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "results"
    done = _gpu_check(tmp_path, *args, "--out", str(out)) if args != ["--out"] else _gpu_check(tmp_path, *args)
    assert done.returncode == 2 and message in done.stderr
    assert not out.exists()


def test_the_gpu_check_stops_without_a_gpu(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = _gpu_check(tmp_path, "--out", str(out), PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")  # none here
    assert done.returncode == 2 and "no CUDA device here: nothing to check" in done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["machine.txt"]  # no step ran


def test_the_gpu_check_runs_every_step_and_reports_each(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = _gpu_check(tmp_path, "--out", str(out), "--budget", "4", FAKE_SLEEP="30")
    assert done.returncode == 1  # a step failed
    summary = (out / "summary.txt").read_text().splitlines()
    assert summary == ["tests: rc 0", "tests-fused: rc 1", "bench: rc 124 (timed out)"]
    assert "fused ÷ torch ops" in (out / "bench.log").read_text() and "fused ÷ torch ops" in done.stdout
    again = _gpu_check(tmp_path, "--out", str(out), "--budget", "10", LOTTERY_TICKET_FUSED="0")
    assert again.returncode == 1  # the script sets the fused switch itself for its second step

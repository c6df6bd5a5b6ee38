"""`lottery-ticket bench --device cuda` (`cli.bench.gpu`): its harness runs on CPU tensors here;
the GPU table itself needs a lent GPU (`benches/gpu.py`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

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
    rows = lines[4:]
    assert len(rows) == len(cases) * len(gpu.methods())
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2].endswith(" ms") and cells[3].endswith("%"), row  # measured, with its spread
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

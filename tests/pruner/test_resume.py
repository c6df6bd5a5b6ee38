"""Resume: a run killed mid-way (SIGKILL) continues from its last complete round, identically."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import torch
from lottery_ticket import LotteryTicketPruner, RewindStrategy, Ticket
from lottery_ticket.pruner import CHECKPOINT_NAME
from lottery_ticket.ticket import read_file
from torch import nn

SCRIPT = Path(__file__).with_name("_resume_script.py")


def run_script(ckpt: Path, out: Path, log: Path, *extra: str) -> int:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(ckpt), str(out), str(log), *extra], capture_output=True, timeout=300
    )
    return proc.returncode


def run_in_process(ckpt: Path, out: Path, log: Path) -> None:
    spec = importlib.util.spec_from_file_location("_resume_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    try:
        module.run(str(ckpt), str(out), str(log))
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)


def rounds_called(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()]


def test_killed_run_resumes_from_last_complete_round(tmp_path: Path) -> None:
    ref_out, out = tmp_path / "reference.safetensors", tmp_path / "resumed.safetensors"
    run_in_process(tmp_path / "ref", ref_out, tmp_path / "ref.log")  # the same code, uninterrupted
    assert rounds_called(tmp_path / "ref.log") == [0, 1, 2, 3, 4, 5]

    ckpt, log = tmp_path / "ckpt", tmp_path / "run.log"
    assert run_script(ckpt, out, log, "3") == -signal.SIGKILL
    assert not out.exists()
    partial, state, rng, resume = read_file(ckpt / CHECKPOINT_NAME)
    assert resume is not None and resume["next_round"] == 3 and state is not None and rng is not None
    assert [m["round"] for m in partial.metrics] == [0, 1, 2]

    run_in_process(ckpt, out, log)  # a fresh model and pruner, as after a restart
    assert rounds_called(log) == [0, 1, 2, 3, 3, 4, 5]  # rounds 0-2 were not trained again
    reference, resumed = Ticket.load(ref_out), Ticket.load(out)
    assert resumed.metrics == reference.metrics  # same losses and NumPy draws: RNG state restored
    assert all(np.array_equal(resumed.masks[k], reference.masks[k]) for k in reference.masks)
    assert all(torch.equal(resumed.snapshot[k], reference.snapshot[k]) for k in reference.snapshot)

    # A finished checkpoint returns the ticket without training again.
    run_in_process(ckpt, out, log)
    assert rounds_called(log) == [0, 1, 2, 3, 3, 4, 5]
    assert Ticket.load(out).metrics == reference.metrics


def test_checkpoint_from_another_configuration_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4))
    calls = []
    LotteryTicketPruner(0.5, 2).run(model, lambda m, r: calls.append(r), checkpoint_dir=tmp_path, progress=False)
    assert calls == [0, 1, 2] and (tmp_path / CHECKPOINT_NAME).exists()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    other = LotteryTicketPruner(0.5, 3, RewindStrategy.none())
    with pytest.raises(ValueError, match="different configuration"):
        other.run(model, lambda m, r: None, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="other tensors"):
        LotteryTicketPruner(0.5, 2).run(
            nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)), lambda m, r: None, checkpoint_dir=tmp_path, progress=False
        )
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("options", "message"),
    [({"importance": "random"}, "importance='magnitude', this run has importance='random'"), ({"seed": 5}, "seed=0")],
)
def test_checkpoint_of_another_method_is_refused(tmp_path: Path, options: dict[str, object], message: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    LotteryTicketPruner(0.5, 2).run(model, lambda m, r: None, checkpoint_dir=tmp_path, progress=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls: list[int] = []
    pruner = LotteryTicketPruner(0.5, 2, **options)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        pruner.run(model, lambda m, r: calls.append(r), checkpoint_dir=tmp_path, progress=False)
    assert calls == [] and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def _train(net: nn.Module, r: int) -> dict[str, float]:
    if r == 2 and getattr(net, "crash", False):
        raise KeyboardInterrupt
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        net(torch.linspace(-1, 1, 12).reshape(2, 6)).square().sum().backward()
        opt.step()
    return {"w": float(net[0].weight.detach().abs().sum())}


def test_checkpoint_written_before_the_whole_run_state_was_recorded_resumes(tmp_path: Path) -> None:
    """Older checkpoints' resume record held only next_round, round, step and capture_step."""
    from lottery_ticket.ticket import write_file

    def model(crash: bool = False) -> nn.Module:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 3))
        net.crash = crash  # type: ignore[assignment]
        return net

    reference = LotteryTicketPruner(0.7, 3, "early:1").run(model(), _train, progress=False)
    with pytest.raises(KeyboardInterrupt):
        LotteryTicketPruner(0.7, 3, "early:1").run(model(crash=True), _train, checkpoint_dir=tmp_path, progress=False)
    path = tmp_path / CHECKPOINT_NAME
    ticket, state, rng, record = read_file(path)
    assert record is not None and record["next_round"] == 2 and record["seed"] == 0
    old = {k: record[k] for k in ("next_round", "round", "step", "capture_step", "numpy_rng")}
    write_file(path, ticket, state=state, rng=rng, resume=old)

    resumed = LotteryTicketPruner(0.7, 3, "early:1").run(model(), _train, checkpoint_dir=tmp_path, progress=False)
    assert resumed.metrics == reference.metrics
    assert all(np.array_equal(resumed.masks[k], reference.masks[k]) for k in reference.masks)
    assert all(torch.equal(resumed.snapshot[k], reference.snapshot[k]) for k in reference.snapshot)

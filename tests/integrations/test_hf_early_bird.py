"""`LotteryTicketTrainerCallback` with `EarlyBird` rounds in real `transformers.Trainer` runs (a
2-layer BERT built locally, CPU): rounds end once the mask settles, the last trains in full,
sparsity stays exact, and resuming from a checkpoint taken mid-round ends the same rounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import torch

transformers = pytest.importorskip("transformers")

import test_hf as HF  # noqa: E402

from lottery_ticket import EarlyBird, LotteryTicketConfig, Ticket  # noqa: E402
from lottery_ticket.hf import LotteryTicketTrainerCallback  # noqa: E402
from lottery_ticket.pruner.resume import read_state_file  # noqa: E402

ROUNDS, STEPS = 2, 6
# Candidates after steps 1, 2 and 3 of a round; Adam at lr 1e-3 moves the weights too little in
# a step to change half of the mask, so every round but the last ends at its step 3.
BIRD = EarlyBird(every_steps=1, window=2, tolerance=0.5)


class StepRecorder(HF.Recorder):  # type: ignore[misc, name-defined]
    """`Recorder` that also notes the Trainer's step at each round's start."""

    def __init__(self, callback: LotteryTicketTrainerCallback) -> None:
        super().__init__(callback)
        self.start_steps: list[int] = []

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        before = len(self.round_starts)
        super().on_step_begin(args, state, control, **kw)
        if len(self.round_starts) > before:
            self.start_steps.append(state.global_step)


def train(
    out: Path, bird: EarlyBird | None = BIRD, seed: int = 0, resume: str | None = None, **extra: Any
) -> tuple[Any, Any, LotteryTicketTrainerCallback, StepRecorder]:
    model = HF.bert(seed)
    config = LotteryTicketConfig(0.8, ROUNDS, "init", early_bird=bird)
    callback = LotteryTicketTrainerCallback(config, steps_per_round=STEPS)
    recorder = StepRecorder(callback)
    args = HF.arguments(out, max_steps=(ROUNDS + 1) * STEPS, **extra)
    trainer = transformers.Trainer(model, args, train_dataset=HF.Tokens(), callbacks=[callback, recorder])
    trainer.train(resume_from_checkpoint=resume)
    return model, trainer, callback, recorder


def test_rounds_end_when_the_mask_settles_and_the_last_trains_in_full(tmp_path: Path) -> None:
    w0 = {k: v.clone() for k, v in HF.bert().state_dict().items()}
    model, trainer, _, rec = train(tmp_path)
    assert rec.start_steps == [0, 3, 6]  # rounds of 6 steps ended at their step 3
    assert trainer.state.global_step == 6 + STEPS  # the last round trained all 6 steps
    kept = [LotteryTicketConfig(0.8, ROUNDS).remaining_after(r, HF.pruned_total(model)) for r in range(ROUNDS + 1)]
    assert [s["kept"] for s in rec.round_starts] == kept
    assert rec.nonzero_pruned == 0
    for start in rec.round_starts[1:]:
        assert start["opt_state"] == 0
        for name, value in w0.items():  # rewound to W0 under the new masks
            mask = start["masks"].get(name)
            assert torch.equal(start["state"][name], value if mask is None else value * mask), name
    ticket = Ticket.load(tmp_path / "lottery-ticket.safetensors")
    assert ticket.remaining_parameters == kept[-1]
    assert [r["early_bird_step"] for r in ticket.metrics] == [3.0, 3.0, 6.0]
    assert [r["early_bird_stopped"] for r in ticket.metrics] == [1.0, 1.0, 0.0]
    rounds = [e for e in trainer.state.log_history if "lottery_ticket/round" in e]
    assert [e["step"] for e in rounds] == [3, 6, 12] and [e["lottery_ticket/remaining"] for e in rounds] == kept


def test_resuming_mid_round_ends_the_same_rounds_at_the_same_steps(tmp_path: Path) -> None:
    full, _, callback, _ = train(tmp_path, save_strategy="steps", save_steps=2)
    masks = {n: m.clone() for n, m in callback.pruner.masks.items()}
    weights = {k: v.clone() for k, v in full.state_dict().items()}
    saved = read_state_file(tmp_path / "checkpoint-2" / "lottery-ticket.safetensors")
    assert saved.state.early_bird is not None and len(saved.state.early_bird["candidates"]) == 2
    assert saved.state.early_bird["checked"] == 2 and saved.extra["round_start"] == 0
    resumed, trainer, callback2, rec = train(
        tmp_path, seed=7, resume=str(tmp_path / "checkpoint-2"), save_strategy="steps", save_steps=2
    )
    assert rec.start_steps == [2, 3, 6] and trainer.state.global_step == 12
    for name, mask in masks.items():
        assert torch.equal(mask, callback2.pruner.masks[name])
    for name, value in weights.items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert callback.ticket is not None and callback2.ticket is not None
    assert [r["early_bird_step"] for r in callback2.ticket.metrics] == [3.0, 3.0, 6.0]


def test_without_early_bird_rounds_keep_their_length(tmp_path: Path) -> None:
    _, trainer, callback, rec = train(tmp_path, None)
    assert rec.start_steps == [0, 6, 12] and trainer.state.global_step == 18
    assert callback.ticket is not None and all("early_bird_step" not in r for r in callback.ticket.metrics)

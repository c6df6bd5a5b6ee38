"""`LotteryTicketTrainerCallback` in real `transformers.Trainer` runs: a 2-layer BERT built locally
(tiny vocabulary, random tokens, no hub access), CPU, a few steps."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from the hub: the model is built from a config
transformers = pytest.importorskip("transformers")

from lottery_ticket import LotteryTicketConfig, LotteryTicketPruner, RewindStrategy, Ticket  # noqa: E402
from lottery_ticket.hf import LotteryTicketTrainerCallback  # noqa: E402

ROUNDS, STEPS = 2, 2
LR = 1e-3


def bert(seed: int = 0) -> Any:
    config = transformers.BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2,
    )  # fmt: skip
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(config)


class Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int = 32, seed: int = 1) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 40, (n, 12), generator=gen)
        self.labels = (self.ids[:, 0] % 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def pruned_total(model: Any) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


class Recorder(transformers.TrainerCallback):  # type: ignore[misc]
    """After the lottery-ticket callback: the state right after each rewind, weights after each step."""

    def __init__(self, callback: LotteryTicketTrainerCallback) -> None:
        self.callback = callback
        self.round_starts: list[dict[str, Any]] = []
        self.after_step: dict[int, dict[str, torch.Tensor]] = {}
        self.nonzero_pruned = 0

    def on_step_begin(
        self,
        args: Any,
        state: Any,
        control: Any,
        model: Any = None,
        optimizer: Any = None,
        lr_scheduler: Any = None,
        **kw: Any,
    ) -> None:
        pruner = self.callback.pruner
        if not self.round_starts or self.round_starts[-1]["round"] != pruner.round:
            self.round_starts.append(
                {
                    "round": pruner.round,
                    "kept": int(sum(int(m.sum()) for m in pruner.masks.values())),
                    "state": {k: v.clone() for k, v in model.state_dict().items()},
                    "masks": {n: m.clone() for n, m in pruner.masks.items()},  # later rounds write over them
                    "lr": lr_scheduler.get_last_lr()[0],
                    "opt_state": len(optimizer.state),
                }
            )

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.after_step[state.global_step] = {k: v.clone() for k, v in model.state_dict().items()}
        params = dict(model.named_parameters())
        for name, mask in self.callback.pruner.masks.items():
            self.nonzero_pruned += int(torch.count_nonzero(params[name].detach()[~mask]))


def arguments(out: Path, **extra: Any) -> Any:
    values: dict[str, Any] = {
        "output_dir": str(out), "max_steps": (ROUNDS + 1) * STEPS, "per_device_train_batch_size": 8,
        "learning_rate": LR, "lr_scheduler_type": "linear", "logging_steps": 1, "save_strategy": "no",
        "report_to": [], "use_cpu": True, "disable_tqdm": True, "seed": 0,
    }  # fmt: skip
    return transformers.TrainingArguments(**{**values, **extra})


def train(
    out: Path, strategy: str, seed: int = 0, resume: str | None = None, **extra: Any
) -> tuple[Any, Any, LotteryTicketTrainerCallback, Recorder]:
    model = bert(seed)
    callback = LotteryTicketTrainerCallback(LotteryTicketConfig(0.8, ROUNDS, strategy), steps_per_round=STEPS)
    recorder = Recorder(callback)
    trainer = transformers.Trainer(
        model, arguments(out, **extra), train_dataset=Tokens(), callbacks=[callback, recorder]
    )
    trainer.train(resume_from_checkpoint=resume)
    return model, trainer, callback, recorder


def expected_kept(total: int) -> list[int]:
    return [LotteryTicketConfig(0.8, ROUNDS).remaining_after(r, total) for r in range(ROUNDS + 1)]


@pytest.mark.parametrize("strategy", ["init", "early:1", "lr"])
def test_trainer_rounds_prune_exactly_and_rewind_as_the_strategy_says(tmp_path: Path, strategy: str) -> None:
    w0 = {k: v.clone() for k, v in bert().state_dict().items()}
    model, trainer, callback, rec = train(tmp_path, strategy)
    starts = rec.round_starts
    assert [s["round"] for s in starts] == [0, 1, 2]
    assert [s["kept"] for s in starts] == expected_kept(pruned_total(model))
    assert rec.nonzero_pruned == 0
    assert trainer.state.global_step == (ROUNDS + 1) * STEPS
    kind = RewindStrategy.parse(strategy).kind
    target = w0 if kind == "init" else rec.after_step[1] if kind == "early" else None
    for r, start in enumerate(starts[1:], 1):
        assert start["opt_state"] == 0  # Adam moments cleared at every rewind
        for name, mask in start["masks"].items():
            assert torch.count_nonzero(start["state"][name][~mask]) == 0
        if target is not None:  # every tensor of the state back at W0 / W1, survivors masked
            for name, value in target.items():
                mask = start["masks"].get(name)
                assert torch.equal(start["state"][name], value if mask is None else value * mask), (r, name)
        else:
            trained = rec.after_step[r * STEPS]
            assert torch.equal(
                start["state"]["bert.embeddings.word_embeddings.weight"],
                trained["bert.embeddings.word_embeddings.weight"],
            )
    # Linear decay over 6 steps: the LR is back at its start (init, lr) or at step 1 (early:1).
    expected_lr = LR * (1 - 1 / 6) if kind == "early" else LR
    assert starts[1]["lr"] == pytest.approx(expected_lr)
    params = dict(model.named_parameters())
    for name, mask in callback.pruner.masks.items():
        assert torch.count_nonzero(params[name].detach()[~mask]) == 0
    ticket = Ticket.load(tmp_path / "lottery-ticket.safetensors")
    assert ticket.remaining_parameters == expected_kept(pruned_total(model))[-1]
    assert [row["round"] for row in ticket.metrics] == [0, 1, 2]
    assert all("loss" in row for row in ticket.metrics)
    history = trainer.state.log_history
    assert any("lottery_ticket/sparsity" in entry and "loss" in entry for entry in history)
    rounds = [e for e in history if "lottery_ticket/round" in e]
    assert [e["lottery_ticket/remaining"] for e in rounds] == expected_kept(pruned_total(model))


def test_resuming_from_a_trainer_checkpoint_gives_the_same_ticket(tmp_path: Path) -> None:
    full, _, callback, _ = train(tmp_path, "early:1", save_strategy="steps", save_steps=3)
    masks = {n: m.clone() for n, m in callback.pruner.masks.items()}
    weights = {k: v.clone() for k, v in full.state_dict().items()}
    mid = tmp_path / "checkpoint-3"  # inside round 1
    assert Ticket.load(mid / "lottery-ticket.safetensors").sparsity_history == callback.ticket.sparsity_history[:1]  # type: ignore[union-attr]
    resumed, _, callback2, _ = train(tmp_path, "early:1", seed=7, resume=str(mid), save_strategy="steps", save_steps=3)
    assert callback2.pruner.round == ROUNDS
    for name, mask in masks.items():
        assert torch.equal(mask, callback2.pruner.masks[name])
    for name, value in weights.items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_attach_works_on_the_trainers_accelerated_optimizer(tmp_path: Path) -> None:
    _, trainer, callback, _ = train(tmp_path, "none")
    assert type(trainer.optimizer).__name__ == "AcceleratedOptimizer"
    assert callback.pruner.round == ROUNDS


def test_bad_arguments_name_the_argument(tmp_path: Path) -> None:
    config = LotteryTicketConfig(0.5, 2)
    with pytest.raises(ValueError, match="steps_per_round: expected an int >= 1, got 0"):
        LotteryTicketTrainerCallback(config, steps_per_round=0)
    with pytest.raises(TypeError, match="steps_per_round: expected an int >= 1, got str"):
        LotteryTicketTrainerCallback(config, steps_per_round="5")  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match="pruner_or_config: expected a LotteryTicketPruner, a LotteryTicketConfig or a Ticket, got dict"
    ):
        LotteryTicketTrainerCallback({"target_sparsity": 0.5}, steps_per_round=5)  # type: ignore[arg-type]
    model = bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    callback = LotteryTicketTrainerCallback(LotteryTicketPruner(0.5, 2), steps_per_round=3)
    trainer = transformers.Trainer(model, arguments(tmp_path), train_dataset=Tokens(), callbacks=[callback])
    with pytest.raises(
        ValueError,
        match="steps_per_round: 2 pruning rounds of 3 steps need 9 optimizer steps, but the Trainer stops after max_steps=6",
    ):
        trainer.train()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])

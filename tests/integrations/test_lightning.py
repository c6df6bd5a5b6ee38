"""`LotteryTicketCallback` in real `lightning.Trainer` fits (CPU, a tiny module, a few steps)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

import torch

pl = pytest.importorskip("lightning.pytorch")

import _lightning_module as H  # noqa: E402

from lottery_ticket import LotteryTicketConfig, LotteryTicketPruner, RewindStrategy, Ticket  # noqa: E402
from lottery_ticket.lightning import LotteryTicketCallback  # noqa: E402

pytestmark = [
    # Lightning's advice for real runs, not errors in a 4-batch CPU test.
    pytest.mark.filterwarnings("ignore:The '(train|val)_dataloader' does not have many workers"),
    # Lightning's own use of a torch pytree API that newer torch deprecates.
    pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"),
]

ROUNDS = 2
BATCHES = 4  # per epoch: 64 samples / 16


class Recorder(pl.Callback):  # type: ignore[misc]
    """Placed after the lottery-ticket callback: sees each round's state right after the rewind."""

    def __init__(self, callback: LotteryTicketCallback) -> None:
        self.callback = callback
        self.round_starts: list[dict[str, Any]] = []
        self.after_step: dict[int, dict[str, torch.Tensor]] = {}
        self.nonzero_pruned = 0

    def _record(self, trainer: Any, module: Any) -> None:
        pruner = self.callback.pruner
        if not self.round_starts or self.round_starts[-1]["round"] != pruner.round:
            self.round_starts.append(
                {
                    "round": pruner.round,
                    "kept": int(sum(int(m.sum()) for m in pruner.masks.values())),
                    "state": {k: v.clone() for k, v in module.state_dict().items()},
                    "masks": {n: m.clone() for n, m in pruner.masks.items()},  # later rounds write over them
                    "lr": trainer.optimizers[0].param_groups[0]["lr"],
                    "opt_state": len(trainer.optimizers[0].state),
                }
            )

    def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
        self._record(trainer, module)

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        self._record(trainer, module)

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.after_step[trainer.global_step] = {k: v.clone() for k, v in module.state_dict().items()}
        params = dict(module.named_parameters())
        for name, mask in self.callback.pruner.masks.items():
            self.nonzero_pruned += int(torch.count_nonzero(params[name].detach()[~mask]))


def fit(
    root: Path, strategy: str, *, checkpoints: bool = False, **per_round: int
) -> tuple[Any, LotteryTicketCallback, Recorder]:
    module = H.TinyModule()
    callback = LotteryTicketCallback(
        LotteryTicketConfig(0.75, ROUNDS, strategy), **(per_round or {"epochs_per_round": 1})
    )
    recorder = Recorder(callback)
    callbacks: list[Any] = [callback, recorder]
    if checkpoints:
        callbacks.append(
            pl.callbacks.ModelCheckpoint(dirpath=root / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
        )
    kwargs = H.trainer_kwargs(str(root))
    kwargs["enable_checkpointing"] = checkpoints
    trainer = pl.Trainer(max_epochs=10, callbacks=callbacks, **kwargs)
    trainer.fit(module, H.loader(), H.loader(32))
    return module, callback, recorder


def expected_kept(total: int) -> list[int]:
    config = LotteryTicketConfig(0.75, ROUNDS)
    return [config.remaining_after(r, total) for r in range(ROUNDS + 1)]


@pytest.mark.parametrize("strategy", ["init", "early:3", "late:0.5", "lr", "none"])
def test_rounds_prune_exactly_and_rewind_as_the_strategy_says(tmp_path: Path, strategy: str) -> None:
    w0 = {k: v.clone() for k, v in H.TinyModule().state_dict().items()}
    module, callback, rec = fit(tmp_path, strategy)
    total = 24 * 8 + 3 * 24
    starts = rec.round_starts
    assert [s["round"] for s in starts] == [0, 1, 2]
    assert [s["kept"] for s in starts] == expected_kept(total)
    assert rec.nonzero_pruned == 0
    for start in starts[1:]:
        assert start["opt_state"] == 0  # momentum buffers cleared at every rewind
        for name, mask in start["masks"].items():
            assert torch.count_nonzero(start["state"][name][~mask]) == 0
    kind = RewindStrategy.parse(strategy).kind
    # late:0.5 of a 4-step round captures step 2.
    target = (
        w0
        if kind == "init"
        else rec.after_step[3]
        if kind == "early"
        else rec.after_step[2]
        if kind == "late"
        else None
    )
    for r, start in enumerate(starts[1:], 1):
        if target is not None:  # survivors and every buffer (BatchNorm statistics) back at W0 / W3
            for name, value in target.items():
                mask = start["masks"].get(name)
                expected = value if mask is None else value * mask
                assert torch.equal(start["state"][name], expected), (r, name)
        else:  # lr / none keep the trained weights of the round before
            trained = rec.after_step[r * BATCHES]
            assert torch.equal(start["state"]["net.0.bias"], trained["net.0.bias"])
    # StepLR(step_size=2, gamma=0.5) stepped per optimizer step.
    lr_at_rewind = {
        "init": 0.1,
        "lr": 0.1,
        "early": 0.1 * 0.5 ** (3 // 2),
        "late": 0.1 * 0.5 ** (2 // 2),
        "none": 0.1 * 0.5 ** (BATCHES // 2),
    }[kind]
    assert starts[1]["lr"] == pytest.approx(lr_at_rewind)
    # Pruned weights are exactly zero after training; the saved ticket loads.
    params = dict(module.named_parameters())
    for name, mask in callback.pruner.masks.items():
        assert torch.count_nonzero(params[name].detach()[~mask]) == 0
    ticket = Ticket.load(tmp_path / "lottery-ticket.safetensors")
    assert ticket.remaining_parameters == expected_kept(total)[-1]
    assert [row["round"] for row in ticket.metrics] == [0, 1, 2]
    assert all("val_loss" in row for row in ticket.metrics)


def test_rounds_are_logged_through_the_trainer_logger(tmp_path: Path) -> None:
    fit(tmp_path, "init")
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("lottery_ticket/round")]
    total = 24 * 8 + 3 * 24
    assert [int(float(r["lottery_ticket/round"])) for r in rows] == [0, 1, 2]
    assert [int(float(r["lottery_ticket/remaining"])) for r in rows] == expected_kept(total)
    assert [round(float(r["lottery_ticket/sparsity"]), 6) for r in rows] == [
        round(1 - k / total, 6) for k in expected_kept(total)
    ]
    assert all(r["lottery_ticket/val_loss"] for r in rows)


def test_steps_per_round_counts_optimizer_steps(tmp_path: Path) -> None:
    _, _, rec = fit(tmp_path, "early:2", steps_per_round=3)
    total = 24 * 8 + 3 * 24
    assert [s["round"] for s in rec.round_starts] == [0, 1, 2]
    assert [s["kept"] for s in rec.round_starts] == expected_kept(total)
    assert max(rec.after_step) == 3 * (ROUNDS + 1)  # stopped after the last round
    for start in rec.round_starts[1:]:
        for name, mask in start["masks"].items():
            assert torch.equal(start["state"][name], rec.after_step[2][name] * mask)


@pytest.mark.filterwarnings("ignore:The dirpath has changed from")
def test_resuming_mid_imp_from_a_lightning_checkpoint_gives_the_same_ticket(tmp_path: Path) -> None:
    full, callback, _ = fit(tmp_path / "full", "early:3", checkpoints=True)
    mid = tmp_path / "full" / "ckpt" / "epoch=1.ckpt"  # round 1 done, round 2 not yet pruned
    saved = torch.load(mid, weights_only=True)["callbacks"][callback.state_key]
    assert saved["pruner"]["round"] == 1 and saved["pruner"]["snapshot"] is not None
    module = H.TinyModule(seed=5)  # different init: everything must come from the checkpoint
    callback2 = LotteryTicketCallback(LotteryTicketConfig(0.75, ROUNDS, "early:3"), epochs_per_round=1)
    # Lightning asks for the callbacks that wrote the file; this one writes elsewhere (a fresh folder).
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "resumed" / "ckpt", save_top_k=-1, every_n_epochs=1)
    trainer = pl.Trainer(max_epochs=10, callbacks=[callback2, saver], **H.trainer_kwargs(str(tmp_path / "resumed")))
    trainer.fit(module, H.loader(), H.loader(32), ckpt_path=str(mid))
    assert callback2.pruner.round == ROUNDS
    for name, mask in callback.pruner.masks.items():
        assert torch.equal(mask, callback2.pruner.masks[name])
    for (name, a), b in zip(full.state_dict().items(), module.state_dict().values()):
        assert torch.equal(a, b), name
    assert callback2.ticket is not None and callback.ticket is not None
    assert callback2.ticket.sparsity_history == callback.ticket.sparsity_history
    assert [r["val_loss"] for r in callback2.ticket.metrics] == [r["val_loss"] for r in callback.ticket.metrics]


def test_a_pruner_with_include_selects_the_tensors(tmp_path: Path) -> None:
    pruner = LotteryTicketPruner(0.5, 1, include="net.0.weight")
    callback = LotteryTicketCallback(pruner, steps_per_round=2)
    trainer = pl.Trainer(max_epochs=10, callbacks=[callback], **H.trainer_kwargs(str(tmp_path)))
    trainer.fit(H.TinyModule(), H.loader(), H.loader(32))
    assert list(pruner.masks) == ["net.0.weight"]
    assert int(pruner.masks["net.0.weight"].sum()) == 96
    assert trainer.global_step == 4


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"epochs_per_round": 1, "steps_per_round": 2},
            ValueError,
            "epochs_per_round, steps_per_round: pass exactly one",
        ),
        ({}, ValueError, "epochs_per_round, steps_per_round: pass exactly one"),
        ({"epochs_per_round": 0}, ValueError, "epochs_per_round: expected an int >= 1, got 0"),
        ({"steps_per_round": -3}, ValueError, "steps_per_round: expected an int >= 1, got -3"),
        ({"steps_per_round": 2.5}, TypeError, "steps_per_round: expected an int >= 1, got float"),
        ({"epochs_per_round": True}, TypeError, "epochs_per_round: expected an int >= 1, got bool"),
        ({"epochs_per_round": 1, "ticket_path": 3}, TypeError, "ticket_path: expected a path"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        LotteryTicketCallback(LotteryTicketConfig(0.5, 2), **kwargs)


def test_wrong_pruner_type_and_too_short_fits_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(
        TypeError,
        match="pruner_or_config: expected a LotteryTicketPruner, a LotteryTicketConfig or a Ticket, got float",
    ):
        LotteryTicketCallback(0.9, epochs_per_round=1)  # type: ignore[arg-type]
    module = H.TinyModule()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    callback = LotteryTicketCallback(LotteryTicketConfig(0.5, 2), epochs_per_round=2)
    trainer = pl.Trainer(max_epochs=5, callbacks=[callback], **H.trainer_kwargs(str(tmp_path)))
    with pytest.raises(
        ValueError, match="epochs_per_round: 2 pruning rounds of 2 epochs need max_epochs >= 6, got max_epochs=5"
    ):
        trainer.fit(module, H.loader(), H.loader(32))
    for name, value in module.state_dict().items():
        assert torch.equal(value, before[name])
    callback = LotteryTicketCallback(LotteryTicketConfig(0.5, 2), steps_per_round=3)
    trainer = pl.Trainer(max_steps=8, callbacks=[callback], **H.trainer_kwargs(str(tmp_path)))
    with pytest.raises(ValueError, match="steps_per_round: 2 pruning rounds of 3 steps need 9 optimizer steps"):
        trainer.fit(module, H.loader(), H.loader(32))


def test_a_callback_reused_for_a_second_fit_starts_afresh(tmp_path: Path) -> None:
    callback = LotteryTicketCallback(LotteryTicketConfig(0.75, ROUNDS), steps_per_round=2)
    for attempt in range(2):
        trainer = pl.Trainer(max_epochs=10, callbacks=[callback], **H.trainer_kwargs(str(tmp_path / str(attempt))))
        trainer.fit(H.TinyModule(), H.loader(), H.loader(32))
        assert callback.ticket is not None
        assert [row["round"] for row in callback.ticket.metrics] == [0, 1, 2]
        assert callback.ticket.remaining_parameters == expected_kept(24 * 8 + 3 * 24)[-1]

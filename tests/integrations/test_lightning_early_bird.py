"""`LotteryTicketCallback` with `EarlyBird` rounds in real Lightning fits (CPU, a tiny module):
rounds end once the mask settles, the last trains in full, sparsity stays exact, and resuming
from a checkpoint taken mid-round ends the same rounds at the same steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import torch

pl = pytest.importorskip("lightning.pytorch")

from test_lightning import H, Recorder  # noqa: E402
from test_lightning_fixed import Overflowing  # noqa: E402

from lottery_ticket import EarlyBird, LotteryTicketConfig, Ticket  # noqa: E402
from lottery_ticket.lightning import LotteryTicketCallback  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:The '(train|val)_dataloader' does not have many workers"),
    pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"),
    # A resumed fit writes its checkpoints to a folder of its own.
    pytest.mark.filterwarnings("ignore:The dirpath has changed from"),
]

ROUNDS = 2
TOTAL = 24 * 8 + 3 * 24  # the pruned weights of the tiny module
# Candidates after steps 2, 4 and 6 of a round; masks of a tiny net moved by six SGD steps differ
# in far fewer than half of their weights, so every round but the last ends at its step 6.
BIRD = EarlyBird(every_steps=2, window=2, tolerance=0.5)


class StepRecorder(Recorder):  # type: ignore[misc, valid-type]
    """`Recorder` that also notes the trainer's step at each round's start."""

    def __init__(self, callback: LotteryTicketCallback) -> None:
        super().__init__(callback)
        self.start_steps: list[int] = []

    def _record(self, trainer: Any, module: Any) -> None:
        before = len(self.round_starts)
        super()._record(trainer, module)
        if len(self.round_starts) > before:
            self.start_steps.append(trainer.global_step)


def fit(
    root: Path,
    bird: EarlyBird | None = BIRD,
    *,
    module: Any = None,
    ckpt: Path | None = None,
    trainer_extra: dict[str, Any] | None = None,
    **per_round: int,
) -> tuple[Any, LotteryTicketCallback, StepRecorder, Any]:
    module = module if module is not None else H.TinyModule()
    callback = LotteryTicketCallback(
        LotteryTicketConfig(0.75, ROUNDS, "init", early_bird=bird), **(per_round or {"steps_per_round": 8})
    )
    recorder = StepRecorder(callback)
    saver = pl.callbacks.ModelCheckpoint(dirpath=root / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    kwargs = {**H.trainer_kwargs(str(root)), "enable_checkpointing": True, **(trainer_extra or {})}
    trainer = pl.Trainer(max_epochs=10, callbacks=[callback, recorder, saver], **kwargs)
    trainer.fit(module, H.loader(), H.loader(32), ckpt_path=str(ckpt) if ckpt is not None else None)
    return module, callback, recorder, trainer


def expected_kept() -> list[int]:
    config = LotteryTicketConfig(0.75, ROUNDS)
    return [config.remaining_after(r, TOTAL) for r in range(ROUNDS + 1)]


def test_rounds_of_steps_end_when_the_mask_settles_and_the_last_trains_in_full(tmp_path: Path) -> None:
    w0 = {k: v.clone() for k, v in H.TinyModule().state_dict().items()}
    module, callback, rec, trainer = fit(tmp_path)
    assert rec.start_steps == [0, 6, 12]  # rounds of 8 steps ended at their step 6
    assert trainer.global_step == 12 + 8  # the last round trained all 8 steps
    assert [s["kept"] for s in rec.round_starts] == expected_kept()
    assert rec.nonzero_pruned == 0
    for start in rec.round_starts[1:]:  # the usual rewind to W0 under the new masks
        for name, value in w0.items():
            mask = start["masks"].get(name)
            assert torch.equal(start["state"][name], value if mask is None else value * mask), name
    ticket = Ticket.load(tmp_path / "lottery-ticket.safetensors")
    assert ticket.remaining_parameters == expected_kept()[-1]
    assert [r["early_bird_step"] for r in ticket.metrics] == [6.0, 6.0, 8.0]
    assert [r["early_bird_stopped"] for r in ticket.metrics] == [1.0, 1.0, 0.0]
    assert [r["round"] for r in ticket.metrics] == [0, 1, 2] and all("train_loss" in r for r in ticket.metrics)
    params = dict(module.named_parameters())
    for name, mask in callback.pruner.masks.items():
        assert torch.count_nonzero(params[name].detach()[~mask]) == 0


def test_rounds_of_epochs_end_at_the_end_of_the_epoch_the_mask_settled_in(tmp_path: Path) -> None:
    _, callback, rec, trainer = fit(tmp_path, epochs_per_round=3)
    # 4 steps per epoch: the mask settles at step 6 of a round, in its second epoch.
    assert rec.start_steps == [0, 8, 16]
    assert trainer.current_epoch == 7 and trainer.global_step == 16 + 3 * 4  # the last round: 3 epochs
    assert [s["kept"] for s in rec.round_starts] == expected_kept()
    assert callback.ticket is not None
    assert [r["early_bird_step"] for r in callback.ticket.metrics] == [6.0, 6.0, 12.0]
    assert all("val_loss" in r for r in callback.ticket.metrics)


def test_a_skipped_amp_step_is_checked_at_the_trainers_count(tmp_path: Path) -> None:
    from lightning.pytorch.plugins import MixedPrecision

    precision = MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))
    extra = {"plugins": [precision], "deterministic": False}
    _, callback, rec, _ = fit(tmp_path, module=Overflowing(at=5), trainer_extra=extra)  # step 6 skipped
    assert torch.equal(rec.after_step[6]["net.0.weight"], rec.after_step[5]["net.0.weight"])
    assert rec.start_steps == [0, 6, 12]
    assert callback.ticket is not None and callback.ticket.metrics[0]["early_bird_step"] == 6.0


@pytest.mark.parametrize("epoch", [0, 1])
def test_resuming_mid_round_ends_the_same_rounds_at_the_same_steps(tmp_path: Path, epoch: int) -> None:
    full, callback, _, _ = fit(tmp_path / "full")
    mid = tmp_path / "full" / "ckpt" / f"epoch={epoch}.ckpt"  # step 4 (2 candidates) or 8 (round 1, 1 candidate)
    saved = torch.load(mid, weights_only=True)["callbacks"][callback.state_key]
    assert len(saved["pruner"]["early_bird"]["candidates"]) == [2, 1][epoch]
    assert saved["round_start"] == [0, 6][epoch]
    resumed, callback2, rec2, trainer2 = fit(tmp_path / "resumed", module=H.TinyModule(seed=5), ckpt=mid)
    assert trainer2.global_step == 20 and rec2.start_steps[1:] == [6, 12][epoch:]
    for name, mask in callback.pruner.masks.items():
        assert torch.equal(mask, callback2.pruner.masks[name])
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert callback.ticket is not None and callback2.ticket is not None
    assert callback2.ticket.metrics == callback.ticket.metrics


def test_without_early_bird_rounds_keep_their_length(tmp_path: Path) -> None:
    _, callback, rec, trainer = fit(tmp_path, None)
    assert rec.start_steps == [0, 8, 16] and trainer.global_step == 24
    assert callback.ticket is not None and all("early_bird_step" not in r for r in callback.ticket.metrics)


def test_a_damaged_round_start_in_a_checkpoint_is_refused(tmp_path: Path) -> None:
    _, callback, _, _ = fit(tmp_path / "full")
    mid = tmp_path / "full" / "ckpt" / "epoch=0.ckpt"
    checkpoint = torch.load(mid, weights_only=True)
    for bad, match in ((-1, "round_start: expected an int >= 0"), (99, "its round began at step 99, after step 4")):
        checkpoint["callbacks"][callback.state_key]["round_start"] = bad
        torch.save(checkpoint, tmp_path / "bad.ckpt")
        with pytest.raises(ValueError, match=match):
            fit(tmp_path / "bad", ckpt=tmp_path / "bad.ckpt")

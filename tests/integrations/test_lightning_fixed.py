"""`LotteryTicketCallback` and the trainer's step count under mixed precision (skipped steps), and
fine-tuning with a fixed `Ticket` (real Lightning fits on CPU)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import torch

pl = pytest.importorskip("lightning.pytorch")

from test_lightning import H, Recorder  # noqa: E402

from lottery_ticket import LotteryTicketConfig, LotteryTicketPruner, Ticket  # noqa: E402
from lottery_ticket.lightning import LotteryTicketCallback  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:The '(train|val)_dataloader' does not have many workers"),
    pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"),
]


class Overflowing(H.TinyModule):  # type: ignore[misc, name-defined]
    """Its loss is infinite at one global step, so a ``GradScaler`` skips that optimizer step."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        return loss * float("inf") if self.trainer.global_step == self.at else loss


def amp_fit(root: Path, strategy: str, skip_at: int) -> tuple[LotteryTicketCallback, Recorder]:
    from lightning.pytorch.plugins import MixedPrecision

    callback = LotteryTicketCallback(LotteryTicketConfig(0.75, 2, strategy), steps_per_round=4)
    recorder = Recorder(callback)
    precision = MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))
    kwargs = {**H.trainer_kwargs(str(root)), "deterministic": False}
    trainer = pl.Trainer(max_epochs=10, callbacks=[callback, recorder], plugins=[precision], **kwargs)
    trainer.fit(Overflowing(skip_at), H.loader(), H.loader(32))
    return callback, recorder


@pytest.mark.parametrize(("strategy", "capture"), [("late:0.9", 4), ("early:2", 2)])
def test_skipped_amp_steps_count_as_steps_of_the_round(tmp_path: Path, strategy: str, capture: int) -> None:
    callback, rec = amp_fit(tmp_path, strategy, skip_at=1)
    assert torch.equal(rec.after_step[2]["net.0.weight"], rec.after_step[1]["net.0.weight"])  # step 2 was skipped
    assert callback.ticket is not None and callback.ticket.rewind_iteration == capture
    assert callback.ticket.iterations_per_round == 4
    assert [s["round"] for s in rec.round_starts] == [0, 1, 2]
    for start in rec.round_starts[1:]:  # rewound to the weights after trainer step `capture`
        for name, mask in start["masks"].items():
            assert torch.equal(start["state"][name], rec.after_step[capture][name] * mask)
    assert rec.nonzero_pruned == 0


def fixed_fit(root: Path, ticket: Ticket, *, seed: int = 7, ckpt: str | None = None, **extra: Any) -> Any:
    module = H.TinyModule(seed=seed)
    callback = LotteryTicketCallback(ticket)
    recorder = Recorder(callback)
    saver = pl.callbacks.ModelCheckpoint(dirpath=root / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    kwargs = {**H.trainer_kwargs(str(root)), "enable_checkpointing": True, **extra}
    trainer = pl.Trainer(max_epochs=3, callbacks=[callback, recorder, saver], **kwargs)
    trainer.fit(module, H.loader(), H.loader(32), ckpt_path=ckpt)
    return module, callback, recorder


def found_ticket() -> Ticket:
    return LotteryTicketPruner(0.8, 2).find_ticket(H.TinyModule(seed=3))


def test_a_fixed_ticket_fine_tunes_from_its_snapshot_with_exact_zeros(tmp_path: Path) -> None:
    ticket = found_ticket()
    module, callback, rec = fixed_fit(tmp_path, ticket, accumulate_grad_batches=2)
    first = rec.round_starts[0]["state"]
    for name, value in ticket.snapshot.items():  # the ticket's weights (seed 3), not the module's (seed 7)
        mask = ticket.masks.get(name)
        assert torch.equal(first[name], value if mask is None else value * torch.from_numpy(mask)), name
    params = dict(module.named_parameters())
    for name, mask in ticket.masks.items():
        assert torch.count_nonzero(params[name].detach()[~torch.from_numpy(mask)]) == 0
    assert not torch.equal(params["net.3.bias"].detach(), ticket.snapshot["net.3.bias"])  # it trained
    assert rec.nonzero_pruned == 0 and max(rec.after_step) == 3 * 2  # 3 epochs of 2 accumulated steps
    saved = Ticket.load(tmp_path / "lottery-ticket.safetensors")
    assert all((saved.masks[n] == m).all() for n, m in ticket.masks.items())
    assert callback.ticket is not None and len(callback.ticket.metrics) == 1


@pytest.mark.filterwarnings("ignore:The dirpath has changed from")
def test_a_masks_only_ticket_keeps_the_model_weights_and_resumes(tmp_path: Path) -> None:
    ticket = dataclasses.replace(found_ticket(), snapshot={})
    w0 = H.TinyModule(seed=7).state_dict()
    full, _, rec = fixed_fit(tmp_path / "full", ticket)
    for name, value in rec.round_starts[0]["state"].items():  # the module's own weights, masked
        mask = ticket.masks.get(name)
        assert torch.equal(value, w0[name] if mask is None else w0[name] * torch.from_numpy(mask)), name
    mid = tmp_path / "full" / "ckpt" / "epoch=0.ckpt"
    resumed, _, _ = fixed_fit(tmp_path / "resumed", ticket, seed=11, ckpt=str(mid))
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    other = dataclasses.replace(ticket, masks={n: ~m for n, m in ticket.masks.items()})
    with pytest.raises(ValueError, match="fine-tuning another ticket"):
        fixed_fit(tmp_path / "other", other, ckpt=str(mid))


def test_a_fixed_ticket_takes_no_round_length() -> None:
    with pytest.raises(ValueError, match="epochs_per_round, steps_per_round: a fixed ticket has no rounds"):
        LotteryTicketCallback(found_ticket(), epochs_per_round=1)

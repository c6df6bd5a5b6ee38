"""IMP inside one ``lightning.Trainer.fit``: `LotteryTicketCallback`.

Five lines::

    from lottery_ticket import LotteryTicketConfig
    from lottery_ticket.lightning import LotteryTicketCallback

    callback = LotteryTicketCallback(LotteryTicketConfig(0.9, 5, "early:100"), epochs_per_round=2)
    trainer = lightning.Trainer(max_epochs=12, callbacks=[callback])   # (5 + 1) rounds x 2 epochs
    trainer.fit(model, data); callback.ticket.save("ticket.safetensors")

Round r trains E epochs (or S optimizer steps); at the start of the next one, after that round's
validation, logging and scheduler steps, the callback prunes (global, exact) and rewinds as the
strategy says: the whole model state from the snapshot (init, early, late), optimizer state
cleared, the LR scheduler back to its start (init, lr) or to step k (early, late). After every
optimizer step the pruned weights are set back to exactly zero. Training stops after round
``pruning_rounds``; the ticket is saved to ``ticket_path`` (default: the trainer's
``default_root_dir``/lottery-ticket.safetensors) and kept as ``callback.ticket``.

With ``LotteryTicketConfig(..., early_bird=EarlyBird(...))`` a round ends as soon as the mask
the next pruning would give has settled (checked every ``every_steps`` optimizer steps of the
trainer's ``global_step``, counted from the round's start): with ``steps_per_round`` at the next
step, with ``epochs_per_round`` at the end of that epoch. The last round trains in full, so the
fit may stop before ``max_epochs`` / ``max_steps``; each ``ticket.metrics`` row records
``early_bird_step`` (the step the mask settled at) and ``early_bird_stopped``. Checkpoints keep
the round's early-bird candidates, so ``ckpt_path=`` ends the same rounds at the same steps.

Each finished round is logged through the trainer's loggers as ``lottery_ticket/<column>``
(round, density, sparsity, remaining, and the round's last value of every scalar metric the
module logged). The run state is part of Lightning checkpoints (``state_dict``), so
``trainer.fit(..., ckpt_path=...)`` resumes mid-IMP. Under DDP every rank prunes its replica and
the ranks compare a digest of their masks: different masks raise instead of training on. Steps
are the trainer's ``global_step``, which counts optimizer steps mixed precision skips.

Given a `Ticket` instead, the callback fine-tunes with the ticket's masks fixed: no rounds, the
snapshot loaded at the start when the ticket has one, the masks applied then and after every
optimizer step; the ticket is part of the checkpoints and written at the end as above.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

import torch

from ._callbacks import TICKET_NAME, RoundDriver, as_pruner, check_path, round_length
from .config import LotteryTicketConfig
from .pruner import LotteryTicketPruner
from .ticket import Ticket
from .torch._optim import unwrap_optimizer

__all__ = ["LotteryTicketCallback"]


class LotteryTicketCallback(Callback):
    """Iterative magnitude pruning with rewinding, driven by a Lightning ``Trainer``.

    Args:
        pruner_or_config: a `LotteryTicketPruner` (to choose tensors with include/exclude), a
            `LotteryTicketConfig`, or a `Ticket` to fine-tune with its masks fixed.
        epochs_per_round: epochs per IMP round (E); the fit needs ``(pruning_rounds + 1) * E``.
        steps_per_round: optimizer steps per round (S) instead of epochs; neither for a `Ticket`.
        ticket_path: where the ticket is written at the end of the fit (rank zero).
    """

    def __init__(
        self,
        pruner_or_config: LotteryTicketPruner | LotteryTicketConfig | Ticket,
        *,
        epochs_per_round: int | None = None,
        steps_per_round: int | None = None,
        ticket_path: str | os.PathLike[str] | None = None,
    ) -> None:
        pruner, fixed = as_pruner(pruner_or_config)
        if fixed is None:
            self.unit, self.per_round = round_length(epochs_per_round, steps_per_round)
        elif epochs_per_round is not None or steps_per_round is not None:
            raise ValueError("epochs_per_round, steps_per_round: a fixed ticket has no rounds; pass neither")
        else:
            self.unit, self.per_round = "fixed", 1
        self.ticket_path = check_path(ticket_path, "ticket_path")
        self.pruner = pruner
        self.ticket: Ticket | None = None
        self._driver = RoundDriver(pruner, fixed, unit=self.unit, per_round=self.per_round)
        self._loaded: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return str(self._generate_state_key(unit=self.unit, per_round=self.per_round))

    @property
    def _needed(self) -> int:
        return (self.pruner.config.pruning_rounds + 1) * self.per_round

    def _check_trainer(self, trainer: pl.Trainer) -> int | None:
        """Check the fit is long enough; returns T, the optimizer steps per round (when known)."""
        rounds = self.pruner.config.pruning_rounds
        if self.unit == "fixed":
            return None
        if self.unit == "steps":
            if trainer.estimated_stepping_batches < self._needed:
                raise ValueError(
                    f"steps_per_round: {rounds} pruning rounds of {self.per_round} steps need {self._needed} "
                    f"optimizer steps, but the trainer stops after {trainer.estimated_stepping_batches}"
                )
            return self.per_round
        if trainer.max_epochs is not None and 0 <= trainer.max_epochs < self._needed:
            raise ValueError(
                f"epochs_per_round: {rounds} pruning rounds of {self.per_round} epochs need max_epochs >= "
                f"{self._needed}, got max_epochs={trainer.max_epochs}"
            )
        batches = trainer.num_training_batches
        if math.isinf(batches):
            return None
        return self.per_round * math.ceil(int(batches) / trainer.accumulate_grad_batches)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        steps = self._check_trainer(trainer)
        optimizers = [unwrap_optimizer(o, "trainer.optimizers") for o in trainer.optimizers]
        schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
        if len(schedulers) > 1 and self.unit != "fixed" and self.pruner.strategy.kind != "none":
            raise ValueError(
                f"lr_schedulers: the callback rewinds one LR scheduler, configure_optimizers returned {len(schedulers)}"
            )
        state, self._loaded = self._loaded, None
        self._driver.start(
            pl_module,
            optimizers,
            scheduler=schedulers[0] if schedulers else None,
            iterations_per_round=steps,
            state=state,
            global_step=trainer.global_step,
            epoch=trainer.current_epoch,
        )

    def _advance(self, trainer: pl.Trainer) -> None:
        finished = self._driver.advance(lambda d: _gather(trainer, d), trainer.global_step, trainer.current_epoch)
        for row in finished:
            _log(trainer, row)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.unit == "epochs":
            self._advance(trainer)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.unit == "steps":
            self._advance(trainer)
        else:
            self._driver.sync(trainer.global_step)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.unit != "steps":
            return
        step = trainer.global_step
        self._driver.sync(step)  # a skipped step's early-bird check, before its round's metrics
        if self._driver.round_over(step) or self._driver.fit_done(step):
            self._driver.observe(trainer.callback_metrics)
        if self._driver.fit_done(step):
            trainer.should_stop = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._driver.started and not trainer.sanity_checking:
            self._driver.observe(trainer.callback_metrics)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._driver.observe(trainer.callback_metrics)
        if self.unit == "epochs" and self._driver.fit_done(trainer.global_step, trainer.current_epoch + 1):
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.ticket, last = self._driver.finish(trainer.global_step)
        if last is not None:
            _log(trainer, last)
        if trainer.is_global_zero:
            path = self.ticket_path if self.ticket_path is not None else Path(trainer.default_root_dir) / TICKET_NAME
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.ticket.save(path)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._driver.detach()

    def state_dict(self) -> dict[str, Any]:
        return self._driver.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Applied in on_train_start, once the trainer has built the optimizers and restored the model.
        self._loaded = dict(state_dict) if state_dict else None


def _gather(trainer: pl.Trainer, digest: int) -> list[int]:
    gathered = trainer.strategy.all_gather(torch.tensor([digest], dtype=torch.int64))
    return [int(d) for d in gathered.reshape(-1).tolist()]


def _log(trainer: pl.Trainer, row: dict[str, Any]) -> None:
    if trainer.is_global_zero:
        metrics = {f"lottery_ticket/{k}": float(v) for k, v in row.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

"""IMP inside one ``transformers.Trainer.train``: `LotteryTicketTrainerCallback`.

Five lines::

    from lottery_ticket import LotteryTicketConfig
    from lottery_ticket.hf import LotteryTicketTrainerCallback

    callback = LotteryTicketTrainerCallback(LotteryTicketConfig(0.9, 5, "early:100"), steps_per_round=1000)
    args = TrainingArguments("out", max_steps=6000)   # (5 + 1) rounds x 1000 steps
    Trainer(model, args, train_dataset=data, callbacks=[callback]).train()

Round r trains S optimizer steps (the Trainer's ``global_step``); at the start of the next step,
after that step's logging, evaluation and checkpoint, the callback prunes (global, exact) and
rewinds as the strategy says: the whole model state from the snapshot (init, early, late),
optimizer state cleared, the LR scheduler back to its start (init, lr) or to step k (early,
late). The Trainer hands callbacks accelerate's ``AcceleratedOptimizer``; the pruner hooks the
torch optimizer inside it, so pruned weights are exactly zero after every step. Training stops
after round ``pruning_rounds`` (``max_steps`` must allow ``(pruning_rounds + 1) * S``).

With ``LotteryTicketConfig(..., early_bird=EarlyBird(...))`` a round ends at the next step once
the mask the next pruning would give has settled (checked every ``every_steps`` optimizer steps
of ``global_step``, counted from the round's start); the last round trains in full, so training
may stop before ``max_steps``, and each ``ticket.metrics`` row records ``early_bird_step`` and
``early_bird_stopped``. A checkpoint keeps the round's early-bird candidates, so resuming ends the
same rounds at the same steps.

Every Trainer log line gets ``lottery_ticket/sparsity`` (in ``trainer.state.log_history`` and in
the callbacks after this one, e.g. the progress printer); each finished round adds a
``lottery_ticket/round`` entry to the log history. Each Trainer checkpoint gets
``lottery-ticket.safetensors`` (a ticket ``Ticket.load`` reads, plus the run state), so
``trainer.train(resume_from_checkpoint=...)`` resumes mid-IMP (the state is read from
``output_dir``/checkpoint-<step>, where the Trainer writes and finds its checkpoints; resuming
from a checkpoint elsewhere is an error naming the missing file); the final ticket goes to
``ticket_path`` (default: ``output_dir``/lottery-ticket.safetensors) and ``callback.ticket``.
Steps are the Trainer's ``global_step``, which counts optimizer steps mixed precision skips.

Given a `Ticket` instead (``LotteryTicketTrainerCallback(Ticket.load(path))``), the callback
fine-tunes with the ticket's masks fixed: no rounds, the snapshot loaded at the start when the
ticket has one, the masks applied then and after every optimizer step; checkpoints and the end
of training get the ticket file as above.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

import torch

from ._callbacks import TICKET_NAME, RoundDriver, as_pruner, check_path, positive_int
from .config import LotteryTicketConfig
from .pruner import LotteryTicketPruner
from .pruner.resume import read_state_file, write_state_file
from .ticket import Ticket
from .torch._optim import unwrap_optimizer

__all__ = ["LotteryTicketTrainerCallback"]

# The Trainer names its checkpoint folders `checkpoint-<global_step>` (transformers' PREFIX_CHECKPOINT_DIR).
_CHECKPOINT_PREFIX = "checkpoint"


class LotteryTicketTrainerCallback(TrainerCallback):
    """Iterative magnitude pruning with rewinding, driven by a Hugging Face ``Trainer``.

    Args:
        pruner_or_config: a `LotteryTicketPruner` (to choose tensors with include/exclude), a
            `LotteryTicketConfig`, or a `Ticket` to fine-tune with its masks fixed.
        steps_per_round: optimizer steps per IMP round (S); none for a `Ticket`.
        ticket_path: where the ticket is written when training ends (main process).
    """

    def __init__(
        self,
        pruner_or_config: LotteryTicketPruner | LotteryTicketConfig | Ticket,
        *,
        steps_per_round: int | None = None,
        ticket_path: str | os.PathLike[str] | None = None,
    ) -> None:
        pruner, fixed = as_pruner(pruner_or_config)
        if fixed is not None and steps_per_round is not None:
            raise ValueError("steps_per_round: a fixed ticket has no rounds; leave it out")
        self.per_round = positive_int(steps_per_round, "steps_per_round") if fixed is None else None
        self.ticket_path = check_path(ticket_path, "ticket_path")
        self.pruner = pruner
        self.ticket: Ticket | None = None
        self._driver = RoundDriver(pruner, fixed, per_round=self.per_round or 1)

    @property
    def _needed(self) -> int:
        """Optimizer steps the rounds take (0 with a fixed ticket: any length will do)."""
        if self.per_round is None:
            return 0
        return (self.pruner.config.pruning_rounds + 1) * self.per_round

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        rounds = self.pruner.config.pruning_rounds
        if state.max_steps < self._needed:
            raise ValueError(
                f"steps_per_round: {rounds} pruning rounds of {self.per_round} steps need {self._needed} "
                f"optimizer steps, but the Trainer stops after max_steps={state.max_steps}"
            )
        saved = None
        if state.global_step > 0:  # resumed from checkpoint-<global_step>
            path = Path(str(args.output_dir)) / f"{_CHECKPOINT_PREFIX}-{state.global_step}" / TICKET_NAME
            if not path.is_file():
                raise ValueError(
                    f"resume_from_checkpoint: no lottery-ticket state at {path} (the run resumed at step {state.global_step})"
                )
            found = read_state_file(path)
            extra = found.extra
            if not {"rows", "pending"} <= set(extra):
                raise ValueError(f"resume_from_checkpoint: {path} holds no lottery-ticket callback state")
            saved = {**extra, "pruner": found.state.to_dict()}
        optimizer = unwrap_optimizer(kwargs.get("optimizer"), "optimizer")
        self._driver.start(
            kwargs["model"],
            [optimizer],
            scheduler=kwargs.get("lr_scheduler"),
            iterations_per_round=self.per_round,
            state=saved,
            global_step=state.global_step,
        )

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.per_round is None:
            return
        finished = self._driver.advance(_gather, state.global_step)
        for row in finished:
            state.log_history.append({**{f"lottery_ticket/{k}": v for k, v in row.items()}, "step": state.global_step})

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self._driver.fit_done(state.global_step):
            control.should_training_stop = True

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs is None or not self._driver.started:
            return
        self._driver.observe(logs)
        sparsity = 1.0 - self.pruner.density
        logs["lottery_ticket/sparsity"] = sparsity
        # The Trainer appended a copy of `logs` to the history just before calling back.
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1]["lottery_ticket/sparsity"] = sparsity

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.is_world_process_zero and self._driver.started:
            folder = Path(str(args.output_dir)) / f"{_CHECKPOINT_PREFIX}-{state.global_step}"
            write_state_file(
                folder / TICKET_NAME, self.pruner.ticket(), self.pruner.run_state(), self._driver.progress()
            )

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self._driver.started:
            return
        self.ticket, last = self._driver.finish(state.global_step)
        if last is not None:
            state.log_history.append({**{f"lottery_ticket/{k}": v for k, v in last.items()}, "step": state.global_step})
        if state.is_world_process_zero:
            path = self.ticket_path if self.ticket_path is not None else Path(str(args.output_dir)) / TICKET_NAME
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.ticket.save(path)


def _gather(digest: int) -> list[int]:
    """Every rank's mask digest (just this one outside torch.distributed)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [digest]
    gathered = [torch.zeros(1, dtype=torch.int64) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, torch.tensor([digest], dtype=torch.int64))
    return [int(t.item()) for t in gathered]

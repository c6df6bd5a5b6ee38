"""`LotteryTicketTrainerCallback(ticket)`: real `transformers.Trainer` runs fine-tuning a tiny BERT
with a fixed ticket (gradient accumulation, checkpoints, resume)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import torch

transformers = pytest.importorskip("transformers")

import test_hf as T  # noqa: E402

from lottery_ticket import LotteryTicketPruner, Ticket  # noqa: E402
from lottery_ticket.hf import LotteryTicketTrainerCallback  # noqa: E402


def fine_tune(out: Path, ticket: Ticket, *, seed: int = 7, resume: str | None = None) -> tuple[Any, Any]:
    model = T.bert(seed)
    callback = LotteryTicketTrainerCallback(ticket)
    args = T.arguments(out, max_steps=4, gradient_accumulation_steps=2, save_strategy="steps", save_steps=2)
    trainer = transformers.Trainer(model, args, train_dataset=T.Tokens(), callbacks=[callback])
    trainer.train(resume_from_checkpoint=resume)
    return model, callback


def test_a_fixed_ticket_fine_tunes_with_exact_zeros_and_resumes(tmp_path: Path) -> None:
    ticket = LotteryTicketPruner(0.7, 2).find_ticket(T.bert(seed=3))
    model, callback = fine_tune(tmp_path, ticket)
    params = dict(model.named_parameters())
    for name, mask in ticket.masks.items():
        weight = params[name].detach()
        assert torch.count_nonzero(weight[~torch.from_numpy(mask)]) == 0
    assert not torch.equal(params["classifier.bias"].detach(), ticket.snapshot["classifier.bias"])  # it trained
    # Started from the ticket's snapshot (seed 3), not the model's own weights (seed 7): an
    # embedding row no batch touches keeps the snapshot's value.
    unused = 0  # token 0 never occurs in T.Tokens (ids are drawn from 1..39)
    emb = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(params[emb].detach()[unused], ticket.snapshot[emb][unused])
    saved = Ticket.load(tmp_path / "checkpoint-2" / "lottery-ticket.safetensors")
    assert all((saved.masks[n] == m).all() for n, m in ticket.masks.items())
    assert (
        callback.ticket is not None
        and Ticket.load(tmp_path / "lottery-ticket.safetensors").masks.keys() == ticket.masks.keys()
    )

    weights = {k: v.clone() for k, v in model.state_dict().items()}
    resumed, _ = fine_tune(tmp_path, ticket, seed=11, resume=str(tmp_path / "checkpoint-2"))
    for name, value in weights.items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_a_fixed_ticket_takes_no_round_length() -> None:
    ticket = LotteryTicketPruner(0.5, 1).find_ticket(T.bert())
    with pytest.raises(ValueError, match="steps_per_round: a fixed ticket has no rounds"):
        LotteryTicketTrainerCallback(ticket, steps_per_round=2)

"""Bad input to the pruner layer (pruner, builder, config, strategies, tickets): the right exception,
a message naming the argument, and every model array and file bit-identical afterwards."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import torch
from lottery_ticket import LotteryTicketConfig, LotteryTicketPruner, MaskApplier, RewindStrategy, Ticket
from lottery_ticket.ticket import metrics_row
from torch import nn


def model() -> dict[str, np.ndarray]:
    return {"w": np.arange(1.0, 9.0, dtype=np.float32).reshape(2, 4), "b": np.ones(3, np.float32)}


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))


def started(m: Any, **kwargs: Any) -> LotteryTicketPruner:
    pruner = LotteryTicketPruner(0.5, 2, **kwargs)
    pruner.start(m)
    return pruner


def ticket_for(m: Any) -> Ticket:
    return LotteryTicketPruner(0.5, 1).find_ticket(m)


def other_ticket() -> Ticket:
    return ticket_for({"w": np.ones((2, 5), np.float32), "b": np.ones(3, np.float32)})


def replace_w(m: dict[str, np.ndarray], _: int) -> None:
    m["w"] = m["w"] * 2


P = LotteryTicketPruner
# (id, builds (model or None, call), exception, what the message must name)
Case = tuple[str, Callable[[], tuple[Any, Callable[[], Any]]], type[Exception], str]
CASES: list[Case] = [
    ("sparsity-one", lambda: (None, lambda: P(1.0, 2)), ValueError, "target_sparsity"),
    ("sparsity-nan", lambda: (None, lambda: P(float("nan"), 2)), ValueError, "target_sparsity"),
    ("sparsity-str", lambda: (None, lambda: P("0.5", 2)), TypeError, "target_sparsity"),  # type: ignore[arg-type]
    ("rounds-zero", lambda: (None, lambda: P(0.5, 0)), ValueError, "pruning_rounds"),
    ("rounds-float", lambda: (None, lambda: P(0.5, 2.0)), TypeError, "pruning_rounds"),  # type: ignore[arg-type]
    ("rounds-missing", lambda: (None, lambda: P(0.5)), TypeError, "pruning_rounds"),
    ("strategy-garbage", lambda: (None, lambda: P(0.5, 2, "sideways")), ValueError, "strategy"),
    ("strategy-int", lambda: (None, lambda: P(0.5, 2, 5)), TypeError, "strategy"),  # type: ignore[arg-type]
    ("global-str", lambda: (None, lambda: P(0.5, 2, global_pruning="yes")), TypeError, "global_pruning"),  # type: ignore[arg-type]
    ("include-int", lambda: (None, lambda: P(0.5, 2, include=5)), TypeError, "include"),  # type: ignore[arg-type]
    ("exclude-ints", lambda: (None, lambda: P(0.5, 2, exclude=[1, 2])), TypeError, "exclude"),  # type: ignore[list-item]
    ("iterations-zero", lambda: (None, lambda: P(0.5, 2, iterations_per_round=0)), ValueError, "iterations_per_round"),
    ("config-dict", lambda: (None, lambda: P(config={"a": 1})), TypeError, "config"),  # type: ignore[arg-type]
    ("builder-unset", lambda: (None, lambda: P.builder().target_sparsity(0.5).build()), ValueError, "pruning_rounds"),
    ("early-negative", lambda: (None, lambda: RewindStrategy.early(-1)), ValueError, "iteration"),
    ("late-one", lambda: (None, lambda: RewindStrategy.late(1.0)), ValueError, "fraction"),
    ("parse-int", lambda: (None, lambda: RewindStrategy.parse(3)), TypeError, "strategy"),  # type: ignore[arg-type]
    (
        "from-dict-missing",
        lambda: (None, lambda: LotteryTicketConfig.from_dict({"target_sparsity": 0.5})),
        ValueError,
        "data",
    ),
    ("from-dict-list", lambda: (None, lambda: LotteryTicketConfig.from_dict([])), TypeError, "data"),  # type: ignore[arg-type]
    (
        "remaining-round",
        lambda: (None, lambda: LotteryTicketConfig(0.5, 2).remaining_after(3, 10)),
        ValueError,
        "round_index",
    ),
    ("metrics-reserved", lambda: (None, lambda: metrics_row(0, 1.0, 3, {"round": 1.0})), ValueError, "train_fn"),
    ("metrics-str", lambda: (None, lambda: metrics_row(0, 1.0, 3, {"acc": "high"})), TypeError, "train_fn"),
    # models
    ("model-list", lambda: (None, lambda: P(0.5, 2).start([np.ones(3)])), TypeError, "model"),
    ("model-entry-list", lambda: (None, lambda: P(0.5, 2).start({"w": [1.0, 2.0]})), TypeError, "model['w']"),
    ("include-none-match", lambda: (m := model(), lambda: P(0.5, 2, include="nope*").start(m)), ValueError, "include"),
    (
        "late-needs-T",
        lambda: (m := model(), lambda: P(0.5, 2, RewindStrategy.late(0.5)).start(m)),
        ValueError,
        "iterations_per_round",
    ),
    (
        "start-optimizer-str",
        lambda: (m := model(), lambda: P(0.5, 2).start(m, optimizer="sgd")),
        TypeError,
        "optimizer",
    ),
    ("start-scheduler-int", lambda: (m := model(), lambda: P(0.5, 2).start(m, scheduler=3)), TypeError, "scheduler"),
    ("on-step-negative", lambda: (m := model(), lambda: started(m).on_step(-1)), ValueError, "iteration"),
    ("attach-numpy", lambda: (m := model(), lambda: started(m).attach(object())), TypeError, "optimizer"),
    ("attach-not-optimizer", lambda: (m := net(), lambda: started(m).attach("x")), TypeError, "optimizer"),
    ("rewind-optimizer-str", lambda: (m := model(), lambda: started(m).rewind(optimizer="x")), TypeError, "optimizer"),
    ("rewind-scheduler-str", lambda: (m := model(), lambda: started(m).rewind(scheduler="x")), TypeError, "scheduler"),
    ("not-started", lambda: (None, lambda: P(0.5, 2).prune()), RuntimeError, "start"),
    ("train-fn-none", lambda: (m := model(), lambda: P(0.5, 2).run(m, None, progress=False)), TypeError, "train_fn"),  # type: ignore[arg-type]
    (
        "train-fn-replaces",
        lambda: (m := model(), lambda: P(0.5, 1, include="w").run(m, replace_w, progress=False)),
        RuntimeError,
        "model['w']",
    ),
    (
        "train-fn-returns-list",
        lambda: (m := model(), lambda: P(0.5, 1).run(m, lambda *_: [1.0], progress=False)),
        TypeError,
        "train_fn",
    ),
    (
        "apply-ticket-str",
        lambda: (m := model(), lambda: P(0.5, 1).apply_ticket(m, "t.safetensors")),
        TypeError,
        "ticket",
    ),
    (
        "apply-ticket-shape",
        lambda: (m := model(), lambda: P(0.5, 1).apply_ticket(m, other_ticket())),
        ValueError,
        "ticket.snapshot['w']",
    ),
    (
        "apply-ticket-torch-to-numpy",
        lambda: (m := model(), lambda: P(0.5, 1).apply_ticket(m, ticket_for(net()))),
        ValueError,
        "masks",
    ),
    (
        "apply-ticket-dtype",
        lambda: (
            m := {k: v.astype(np.float64) for k, v in model().items()},
            lambda: P(0.5, 1).apply_ticket(m, ticket_for(model())),
        ),
        TypeError,
        "ticket.snapshot",
    ),
    (
        "applier-mask-shape",
        lambda: (m := model(), lambda: MaskApplier(m, {"w": np.ones(8, bool), "b": np.ones(3, bool)})),
        ValueError,
        "masks['w']",
    ),
    ("ticket-load-empty", lambda: (None, lambda: Ticket.load("")), ValueError, "path"),
]


def arrays_of(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return list(obj.values())
    if isinstance(obj, nn.Module):
        return list(obj.state_dict().values())
    return []


def raw(x: Any) -> bytes:
    if isinstance(x, torch.Tensor):
        return bytes(x.detach().contiguous().view(torch.uint8).numpy())
    return bytes(np.ascontiguousarray(x).view(np.uint8))


@pytest.mark.parametrize(("build", "error", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(
    build: Callable[[], tuple[Any, Callable[[], Any]]],
    error: type[Exception],
    names: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    target, call = build()
    keys = list(target) if isinstance(target, dict) else None
    before = [raw(a) for a in arrays_of(target)]
    with pytest.raises(error) as info:
        call()
    assert names in str(info.value), f"message {str(info.value)!r} does not name {names!r}"
    if names != "model['w']":  # except where train_fn itself rebinds the entry
        assert keys is None or list(target) == keys
        assert [raw(a) for a in arrays_of(target)] == before, "an input was modified"
    assert list(tmp_path.iterdir()) == [], "a file was written"


def test_ticket_save_to_a_missing_folder_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ticket_for(model()).save(tmp_path / "missing" / "t.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_case_ids_are_unique() -> None:
    assert len({c[0] for c in CASES}) == len(CASES)

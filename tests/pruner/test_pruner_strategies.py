"""Which values end up where, for every rewind strategy, on a small torch model with buffers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import torch
from lottery_ticket import LotteryTicketPruner, RewindStrategy
from torch import nn

STEPS = 12
PRUNED = ("0.weight", "3.weight")


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # Linear + BatchNorm (buffers: running stats, num_batches_tracked) + Linear.
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Recorder:
    """train_fn that records entry state, masks, per-step states (round 0) and trained state."""

    def __init__(self, pruner: LotteryTicketPruner) -> None:
        self.pruner = pruner
        self.entry: list[dict[str, torch.Tensor]] = []
        self.masks: list[dict[str, np.ndarray]] = []
        self.trained: list[dict[str, torch.Tensor]] = []
        self.steps0: list[dict[str, torch.Tensor]] = []
        gen = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(32, 5, generator=gen), torch.randint(0, 3, (32,), generator=gen)

    def __call__(self, model: nn.Module, round_index: int) -> dict[str, float]:
        self.entry.append(copy_state(model))
        self.masks.append({k: v.numpy().copy() for k, v in self.pruner.masks.items()})
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for _ in range(STEPS):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(self.x), self.y)
            loss.backward()
            opt.step()
            if round_index == 0:
                self.steps0.append(copy_state(model))
        self.trained.append(copy_state(model))
        return {"loss": loss.item()}


def run(strategy: RewindStrategy, **kwargs: Any) -> tuple[Recorder, Any, dict[str, torch.Tensor]]:
    model = small_model()
    w0 = copy_state(model)
    pruner = LotteryTicketPruner(target_sparsity=0.8, pruning_rounds=3, rewind_strategy=strategy, **kwargs)
    rec = Recorder(pruner)
    ticket = pruner.run(model, rec, progress=False)
    return rec, ticket, w0


def expected_mask(
    trained: dict[str, torch.Tensor], previous: dict[str, np.ndarray], keep: int
) -> dict[str, np.ndarray]:
    """Reference: keep the `keep` largest |w| among previously alive weights, over both tensors."""
    mags = np.concatenate([np.where(previous[n].ravel(), np.abs(trained[n].numpy().ravel()), -1.0) for n in PRUNED])
    kept = np.zeros(mags.size, dtype=bool)
    kept[np.argsort(-mags, kind="stable")[:keep]] = True
    out, start = {}, 0
    for n in PRUNED:
        size = previous[n].size
        out[n] = kept[start : start + size].reshape(previous[n].shape)
        start += size
    return out


def assert_state(
    actual: dict[str, torch.Tensor], source: dict[str, torch.Tensor], masks: dict[str, np.ndarray]
) -> None:
    assert set(actual) == set(source)
    for name, value in actual.items():
        want = source[name].clone()
        if name in masks:
            want[~torch.from_numpy(masks[name])] = 0
        assert torch.equal(value, want), name


def check_masks_follow_trained_magnitudes(rec: Recorder) -> None:
    total = sum(rec.masks[0][n].size for n in PRUNED)
    for r in range(1, 4):
        keep = round(total * 0.2 ** (r / 3))
        want = expected_mask(rec.trained[r - 1], rec.masks[r - 1], keep)
        assert all(np.array_equal(rec.masks[r][n], want[n]) for n in PRUNED)
        assert sum(int(m.sum()) for m in rec.masks[r].values()) == keep


def test_round_zero_trains_the_dense_model_from_w0() -> None:
    rec, ticket, w0 = run(RewindStrategy.init())
    assert all(torch.equal(rec.entry[0][k], w0[k]) for k in w0)
    assert all(m.all() for m in rec.masks[0].values())
    assert [m["round"] for m in ticket.metrics] == [0, 1, 2, 3]


def test_init_rewinds_the_whole_state_to_w0() -> None:
    rec, ticket, w0 = run(RewindStrategy.init())
    check_masks_follow_trained_magnitudes(rec)
    for r in range(1, 4):
        # Biases, BatchNorm weights and running statistics come back to W0 too, not only the masks' tensors.
        assert_state(rec.entry[r], w0, rec.masks[r])
        assert not torch.equal(rec.trained[r - 1]["1.running_mean"], w0["1.running_mean"])
    assert all(torch.equal(ticket.snapshot[k], w0[k]) for k in w0)
    assert ticket.rewind_iteration == 0


@pytest.mark.parametrize(
    ("strategy", "k"), [(RewindStrategy.early(iteration=4), 4), (RewindStrategy.late(fraction=0.25), 3)]
)
def test_early_and_late_rewind_to_the_weights_at_iteration_k(strategy: RewindStrategy, k: int) -> None:
    rec, ticket, _ = run(strategy, iterations_per_round=STEPS)
    w_k = rec.steps0[k - 1]  # the state after k optimizer steps
    check_masks_follow_trained_magnitudes(rec)
    for r in range(1, 4):
        assert_state(rec.entry[r], w_k, rec.masks[r])
    assert all(torch.equal(ticket.snapshot[n], w_k[n]) for n in w_k)
    assert ticket.rewind_iteration == k and ticket.iterations_per_round == STEPS


def test_early_zero_is_w0() -> None:
    rec, _, w0 = run(RewindStrategy.early(iteration=0))
    assert_state(rec.entry[2], w0, rec.masks[2])


@pytest.mark.parametrize("strategy", [RewindStrategy.learning_rate(), RewindStrategy.none()])
def test_lr_and_none_keep_the_trained_state(strategy: RewindStrategy) -> None:
    rec, ticket, _ = run(strategy)
    check_masks_follow_trained_magnitudes(rec)
    for r in range(1, 4):
        assert_state(rec.entry[r], rec.trained[r - 1], rec.masks[r])
    # The ticket's snapshot is the state the last round started from.
    assert all(torch.equal(ticket.snapshot[k], rec.entry[3][k]) for k in rec.entry[3])
    assert ticket.rewind_iteration == (0 if strategy.kind == "lr" else None)


def test_model_ends_as_the_last_round_trained_it_and_metrics_are_complete() -> None:
    model = small_model()
    pruner = LotteryTicketPruner(0.8, 3)
    rec = Recorder(pruner)
    ticket = pruner.run(model, rec, progress=False)
    assert all(torch.equal(v, rec.trained[-1][k]) for k, v in model.state_dict().items())
    total = 8 * 5 + 3 * 8
    assert [m["remaining"] for m in ticket.metrics] == [round(total * 0.2 ** (r / 3)) for r in range(4)]
    assert set(ticket.metrics[0]) == {"round", "density", "sparsity", "remaining", "loss"}
    assert ticket.metrics[-1]["sparsity"] == pytest.approx(1 - 13 / 64)
    assert ticket.sparsity_history == pytest.approx([1 - m["remaining"] / total for m in ticket.metrics[1:]])


def test_early_beyond_round_zero_length_is_a_clear_error() -> None:
    model = small_model()
    pruner = LotteryTicketPruner(0.5, 2, RewindStrategy.early(iteration=STEPS + 1))
    with pytest.raises(RuntimeError, match=f"iteration {STEPS + 1}.*only {STEPS}"):
        pruner.run(model, Recorder(pruner), progress=False)


def test_late_needs_iterations_per_round() -> None:
    model = small_model()
    before = copy_state(model)
    pruner = LotteryTicketPruner(0.5, 2, RewindStrategy.late(0.5))
    with pytest.raises(ValueError, match="iterations_per_round"):
        pruner.run(model, Recorder(pruner), progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

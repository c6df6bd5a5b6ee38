"""torch models as a careless user has them: tied weights, parameters replaced mid-run, autograd
graphs alive across an in-place write, inference and sparse tensors (issue #14, rows 6-8, 10)."""

from __future__ import annotations

import pytest

import torch
from lottery_ticket import (
    LotteryTicketPruner,
    MaskApplier,
    RewindStrategy,
    apply_masks,
    global_magnitude_masks,
    rewind,
)
from lottery_ticket.torch import _arrays as torch_arrays
from torch import nn


class Tied(nn.Module):
    """A language-model head tied to its embedding (`dec.weight` is `emb.weight`)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 4)
        self.hidden = nn.Linear(4, 4)
        self.dec = nn.Linear(4, 10, bias=False)
        self.dec.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.hidden(self.emb(x)))


def test_tied_weight_is_one_prunable_tensor_with_one_mask() -> None:
    model = Tied()
    ticket = LotteryTicketPruner(0.5, 2).find_ticket(model)
    assert list(ticket.masks) == ["hidden.weight"]  # default: Linear weights, never the embedding dec is tied to
    assert ticket.total_parameters == 16


@pytest.mark.parametrize("include", [["dec.weight"], "dec.*", lambda name, _: name == "dec.weight"])
def test_tied_name_in_include_resolves_to_the_shared_parameter(include: object) -> None:
    ticket = LotteryTicketPruner(0.5, 1, include=include).find_ticket(Tied())  # type: ignore[arg-type]
    assert list(ticket.masks) == ["emb.weight"] and ticket.remaining_parameters == 20


def test_tied_model_run_keeps_both_names_masked_and_the_ticket_applies() -> None:
    model = Tied()
    x = torch.randint(0, 10, (32,))

    def train(net: nn.Module, _: int) -> None:
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()

    ticket = LotteryTicketPruner(0.75, 2, include=["dec.weight", "hidden.weight"]).run(model, train, progress=False)
    assert model.dec.weight is model.emb.weight
    assert int((model.emb.weight != 0).sum()) <= int(ticket.masks["emb.weight"].sum())
    fresh = Tied()
    LotteryTicketPruner(0.75, 2).apply_ticket(fresh, ticket)
    assert fresh.dec.weight is fresh.emb.weight
    assert torch.equal(
        fresh.emb.weight != 0, torch.from_numpy(ticket.masks["emb.weight"]) & (ticket.snapshot["emb.weight"] != 0)
    )


def test_the_same_storage_twice_is_refused_by_the_kernels() -> None:
    state = Tied().state_dict()
    before = state["emb.weight"].clone()
    with pytest.raises(ValueError, match=r"weights\['dec.weight'\]: shares memory with weights\['emb.weight'\]"):
        global_magnitude_masks(state, 1)
    with pytest.raises(ValueError, match="shares memory"):
        apply_masks(state, {k: torch.ones(v.shape, dtype=torch.bool) for k, v in state.items()})
    assert torch.equal(state["emb.weight"], before)


def replace_by_assign(net: nn.Module) -> None:
    net.load_state_dict({k: v.clone() + 1 for k, v in net.state_dict().items()}, assign=True)


def replace_layer(net: nn.Module) -> None:
    net[0] = nn.Linear(4, 4)  # type: ignore[index]


@pytest.mark.parametrize("replace", [replace_by_assign, replace_layer])
def test_parameter_replaced_during_train_fn_is_a_clear_error(replace: object) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(RuntimeError, match=r"model: parameter '0.weight' was replaced during train_fn"):
        LotteryTicketPruner(0.75, 1).run(model, lambda net, _: replace(net), progress=False)  # type: ignore[operator]


def test_parameter_replaced_before_prune_in_the_step_wise_api() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    pruner = LotteryTicketPruner(0.5, 2)
    pruner.start(model)
    replace_by_assign(model)
    with pytest.raises(RuntimeError, match="'0.weight' was replaced since start"):
        pruner.prune()
    with pytest.raises(RuntimeError, match="'0.weight' was replaced since start"):
        pruner.rewind()


def test_storage_swapped_under_a_parameter_is_followed() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    pruner = LotteryTicketPruner(0.5, 1, RewindStrategy.none())

    def train(net: nn.Module, _: int) -> None:
        net[0].weight.data = torch.full((4, 4), 3.0)  # type: ignore[index]
        opt = torch.optim.SGD(net.parameters(), lr=0.0)
        opt.step()  # the step hook re-masks through fresh views

    ticket = pruner.run(model, train, progress=False)
    assert int((model[0].weight == 0).sum()) == 16 - ticket.remaining_parameters


def test_in_place_write_bumps_the_version_counter_like_torch() -> None:
    lin = nn.Linear(4, 3)
    x = torch.randn(2, 4, requires_grad=True)
    loss = torch.tanh(lin(x)).sum()
    version = lin.weight._version
    apply_masks([lin.weight], [torch.ones(3, 4, dtype=torch.bool)])
    assert lin.weight._version == version + 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    snapshot = lin.weight.detach().clone()
    rewind([lin.weight], [snapshot], [torch.ones(3, 4, dtype=torch.bool)])
    assert lin.weight._version == version + 2


@pytest.mark.parametrize("batched", [True, False], ids=["one-call", "per-tensor"])
def test_every_written_tensor_gets_its_version_bump(monkeypatch: pytest.MonkeyPatch, batched: bool) -> None:
    # torch < 2.5 bumps one counter per call: both ways must reach every written tensor, once.
    monkeypatch.setattr(torch_arrays, "_BATCHED_VERSIONS", batched)
    weights = [torch.randn(6, 5), torch.randn(7)]
    with torch.inference_mode():
        frozen = torch.randn(3)  # no version counter: skipped, not an error
    masks = global_magnitude_masks(weights, 0.5)
    applier = MaskApplier(weights, masks)
    before = [w._version for w in weights]
    applier()
    applier()
    assert [w._version for w in weights] == [v + 2 for v in before]
    mask_versions = [m._version for m in masks]
    global_magnitude_masks(weights, 0.2, masks=masks, out=masks)
    assert [m._version for m in masks] == [v + 1 for v in mask_versions]
    with torch.inference_mode():
        apply_masks(weights + [frozen], masks + [torch.ones(3, dtype=torch.bool)])
    assert [w._version for w in weights] == [v + 3 for v in before]


def test_inference_tensors_are_refused_outside_inference_mode_and_written_inside() -> None:
    with torch.inference_mode():
        w = torch.ones(4)
    mask = torch.tensor([True, False, True, False])
    with pytest.raises(RuntimeError, match=r"weights\[0\]: inplace update to an inference tensor"):
        apply_masks([w], [mask])
    assert torch.equal(w, torch.ones(4))
    with torch.inference_mode():
        apply_masks([w], [mask])
        assert w.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert global_magnitude_masks([w], 2)[0].tolist() == [True, False, True, False]  # reading is fine


def test_sparse_tensors_are_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match=r"weights\[0\]: torch.sparse_coo tensors are not supported"):
        global_magnitude_masks([torch.ones(3).to_sparse()], 1)
    with pytest.raises(TypeError, match=r"masks\[0\]: torch.sparse_coo"):
        apply_masks([torch.ones(3)], [torch.ones(3, dtype=torch.bool).to_sparse()])

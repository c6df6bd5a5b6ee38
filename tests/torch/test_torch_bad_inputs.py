"""Bad input through the torch adapter (tensors, modules, the global_unstructured drop-in): the right
exception, a message naming the argument, and every parameter, buffer and tensor bit-identical."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from torch.nn.utils import prune

import lottery_ticket.torch as ltt
import torch
from lottery_ticket import LotteryTicketPruner, apply_masks, global_magnitude_masks, rewind
from torch import nn


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def inference_tensor() -> torch.Tensor:
    with torch.inference_mode():
        return torch.ones(3)


def ones(*shape: int) -> torch.Tensor:
    return torch.ones(shape, dtype=torch.bool)


def replaced_by_assign(model: nn.Module, _: int) -> None:
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, assign=True)


Build = Callable[[], tuple[list[Any], Callable[[], Any]]]
T = torch.ones
# (id, builds (tensors/modules to watch, call), exception, what the message must name)
CASES: list[tuple[str, Build, type[Exception], str]] = [
    (
        "select-int-tensor",
        lambda: ([w := torch.arange(3)], lambda: global_magnitude_masks([w], 1)),
        TypeError,
        "weights[0]",
    ),
    (
        "select-complex",
        lambda: ([w := T(3, dtype=torch.complex64)], lambda: global_magnitude_masks([w], 1)),
        TypeError,
        "weights[0]",
    ),
    ("select-meta", lambda: ([], lambda: global_magnitude_masks([T(3, device="meta")], 1)), ValueError, "weights[0]"),
    ("select-sparse", lambda: ([], lambda: global_magnitude_masks([T(3).to_sparse()], 1)), TypeError, "weights[0]"),
    (
        "select-mask-float",
        lambda: ([w := T(3)], lambda: global_magnitude_masks([w], 1, masks=[T(3)])),
        TypeError,
        "masks[0]",
    ),
    (
        "select-same-tensor",
        lambda: ([w := T(3)], lambda: global_magnitude_masks({"a": w, "b": w.view(3)}, 1)),
        ValueError,
        "weights['b']",
    ),
    (
        "apply-inference",
        lambda: ([w := inference_tensor()], lambda: apply_masks([w], [ones(3)])),
        RuntimeError,
        "weights[0]",
    ),
    (
        "apply-non-contiguous",
        lambda: ([w := T(3, 2)], lambda: apply_masks([w.T], [ones(2, 3)])),
        ValueError,
        "weights[0]",
    ),
    ("apply-mask-shape", lambda: ([w := T(3)], lambda: apply_masks([w], [ones(4)])), ValueError, "masks[0]"),
    (
        "apply-sparse-mask",
        lambda: ([w := T(3)], lambda: apply_masks([w], [ones(3).to_sparse()])),
        TypeError,
        "masks[0]",
    ),
    (
        "apply-tied",
        lambda: ([w := T(4)], lambda: apply_masks({"emb": w, "dec": w}, {"emb": ones(4), "dec": ones(4)})),
        ValueError,
        "weights['dec']",
    ),
    (
        "rewind-inference",
        lambda: ([w := inference_tensor()], lambda: rewind([w], [T(3)], [ones(3)])),
        RuntimeError,
        "weights[0]",
    ),
    (
        "rewind-bf16-snapshot",
        lambda: ([w := T(3)], lambda: rewind([w], [T(3, dtype=torch.bfloat16)], [ones(3)])),
        TypeError,
        "snapshots[0]",
    ),
    # the drop-in
    ("drop-in-not-iterable", lambda: ([net()], lambda: ltt.global_unstructured(5, amount=1)), TypeError, "parameters"),
    (
        "drop-in-bad-pair",
        lambda: ([m := net()], lambda: ltt.global_unstructured([(m[0],)], amount=1)),
        TypeError,
        "parameters[0]",
    ),
    (
        "drop-in-no-tensor",
        lambda: ([m := net()], lambda: ltt.global_unstructured([(m[0], "nope")], amount=1)),
        TypeError,
        "parameters[0]",
    ),
    (
        "drop-in-buffer",
        lambda: ([m := net()], lambda: ltt.global_unstructured([(m[1], "running_mean")], amount=1)),
        TypeError,
        "parameters[0]",
    ),
    (
        "drop-in-twice",
        lambda: ([m := net()], lambda: ltt.global_unstructured([(m[0], "weight")] * 2, amount=1)),
        ValueError,
        "parameters[1]",
    ),
    (
        "drop-in-method",
        # other methods go to torch's function, which refuses a structured one before any change
        lambda: (
            [m := net()],
            lambda: ltt.global_unstructured([(m[0], "weight")], prune.LnStructured, amount=1, n=1, dim=0),
        ),
        TypeError,
        "pruning_method",
    ),
    (
        "drop-in-scores-list",
        lambda: ([m := net()], lambda: ltt.global_unstructured([(m[0], "weight")], importance_scores=[], amount=1)),
        TypeError,
        "importance_scores",
    ),
    (
        "drop-in-amount",
        lambda: ([m := net()], lambda: ltt.global_unstructured([(m[0], "weight")], amount=1.5)),
        ValueError,
        "amount",
    ),
    (
        "drop-in-amount-bool",
        lambda: ([m := net()], lambda: ltt.global_unstructured([(m[0], "weight")], amount=True)),
        TypeError,
        "amount",
    ),
    # the pruner on modules
    (
        "pruner-include-none",
        lambda: ([m := net()], lambda: LotteryTicketPruner(0.5, 1, include="nope").start(m)),
        ValueError,
        "include",
    ),
    (
        "pruner-replaced",
        lambda: ([], lambda: LotteryTicketPruner(0.5, 1).run(net(), replaced_by_assign, progress=False)),
        RuntimeError,
        "'0.weight'",
    ),
    (
        "pruner-attach-other",
        lambda: ([m := net()], lambda: _started(m).attach(torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1))),
        ValueError,
        "optimizer",
    ),
    (
        "apply-ticket-other-net",
        lambda: ([m := net()], lambda: LotteryTicketPruner(0.5, 1).apply_ticket(m, _ticket(nn.Linear(4, 3)))),
        ValueError,
        "masks",
    ),
]


def _started(model: nn.Module) -> LotteryTicketPruner:
    pruner = LotteryTicketPruner(0.5, 1)
    pruner.start(model)
    return pruner


def _ticket(model: nn.Module) -> Any:
    return LotteryTicketPruner(0.5, 1, include="weight").find_ticket(model)


def tensors_of(watched: list[Any]) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for x in watched:
        out += list(x.state_dict().values()) if isinstance(x, nn.Module) else [x]
    return out


def raw(t: torch.Tensor) -> bytes:
    with torch.inference_mode(t.is_inference()):
        t = t.detach().reshape(-1)  # 0-d tensors (num_batches_tracked) cannot be viewed as bytes
        if t.is_complex():
            t = torch.view_as_real(t)
        return bytes(t.contiguous().view(torch.uint8).numpy())


@pytest.mark.parametrize(("build", "error", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(build: Build, error: type[Exception], names: str) -> None:
    watched, call = build()
    before = [raw(t) for t in tensors_of(watched)]
    hooks = [len(m._forward_pre_hooks) for m in watched if isinstance(m, nn.Module) for m in m.modules()]
    with pytest.raises(error) as info:
        call()
    assert names in str(info.value), f"message {str(info.value)!r} does not name {names!r}"
    assert [raw(t) for t in tensors_of(watched)] == before, "an input was modified"
    assert hooks == [len(m._forward_pre_hooks) for m in watched if isinstance(m, nn.Module) for m in m.modules()]


def test_case_ids_are_unique() -> None:
    assert len({c[0] for c in CASES}) == len(CASES)

"""Networks and the SGD training loop of ``lottery-ticket demo --study`` (rewinding science).

* **The network.** A 1-D CNN for MNIST-1D (three Conv1d layers of 32 channels, the last two
  with stride 2, then one Linear layer), He-normal weights and zero biases: deeper than the
  MLP of the default demo and trained the way rewinding to W0 is known to fail on (Frankle
  et al. 2020): SGD with momentum at a high learning rate without warmup.
* **The schedule.** ``T`` steps; the learning rate drops tenfold at ``2T/3``. A round that
  starts from a rewind point k (``early:k``, ``late:f``) trains the rest of the schedule,
  steps k..T; ``init`` and ``lr`` train all T steps from step 0; ``none`` fine-tunes the
  trained weights for T steps at the final learning rate (Renda et al. 2020's baseline).
* **Greydanus's MLP.** 40-500-500-10 ReLU, Adam (lr 1e-2, batch 100), as in the MNIST-1D
  paper's lottery experiment; its accuracy is the best test accuracy over training, as they report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .data import DemoData

CHANNELS = 32
SGD_LEARNING_RATE = 0.1
SGD_MOMENTUM = 0.9
BATCH_SIZE = 100
# Where the learning rate drops tenfold, as a fraction of the schedule.
DROP_AT = 2 / 3
GREYDANUS_SIZES = (40, 500, 500, 10)
GREYDANUS_LEARNING_RATE = 1e-2
# How often Greydanus-protocol runs evaluate the test set (for the best accuracy over training).
EVAL_EVERY = 100


def conv_net(seed: int) -> torch.nn.Sequential:
    """The studies' 1-D CNN, initialised from ``seed`` by a private generator.

    Example:
        >>> [n for n, p in conv_net(0).named_parameters() if n.endswith("weight")]
        ['conv1.weight', 'conv2.weight', 'conv3.weight', 'fc.weight']
    """
    from collections import OrderedDict

    import torch
    from torch import nn

    layers = OrderedDict(
        [
            ("shape", nn.Unflatten(1, (1, 40))),
            ("conv1", nn.Conv1d(1, CHANNELS, 5, padding=2)),
            ("relu1", nn.ReLU()),
            ("conv2", nn.Conv1d(CHANNELS, CHANNELS, 3, stride=2, padding=1)),
            ("relu2", nn.ReLU()),
            ("conv3", nn.Conv1d(CHANNELS, CHANNELS, 3, stride=2, padding=1)),
            ("relu3", nn.ReLU()),
            ("flat", nn.Flatten()),
            ("fc", nn.Linear(CHANNELS * 10, 10)),
        ]
    )
    net = nn.Sequential(layers)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv1d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
    return net


def greydanus_mlp(seed: int) -> torch.nn.Sequential:
    """40-500-500-10 ReLU MLP, Gaussian Glorot weights, zero biases."""
    from .train import lenet_300_100

    return lenet_300_100(seed, GREYDANUS_SIZES)


@dataclass(frozen=True)
class Outcome:
    """One training run: test accuracy at the end and best over training, steps taken."""

    accuracy: float
    best_accuracy: float
    steps: int

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "best_accuracy": self.best_accuracy, "steps": self.steps}


def error(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Classification error of ``model`` on ``(x, y)``, in [0, 1]."""
    import torch

    with torch.inference_mode():
        return float((model(x).argmax(dim=1) != y).float().mean())


def _batches(x: torch.Tensor, y: torch.Tensor, batch_seed: int, batch_size: int) -> Any:
    """Minibatches ``(x, y)`` in an order reshuffled every epoch (the ragged tail dropped); each
    epoch gathers the shuffled data once, and its batches are slices of it."""
    import torch

    generator = torch.Generator().manual_seed(batch_seed)
    n = x.shape[0]
    while True:
        order = torch.randperm(n, generator=generator)
        shuffled_x, shuffled_y = x[order], y[order]
        for i in range(0, n - batch_size + 1, batch_size):
            yield shuffled_x[i : i + batch_size], shuffled_y[i : i + batch_size]


def train_sgd(
    model: torch.nn.Module,
    data: DemoData,
    *,
    total: int,
    batch_seed: int,
    start: int = 0,
    fine_tune: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> Outcome:
    """Steps ``start``..``total`` of the step schedule (SGD, momentum), or ``total`` steps at the
    final learning rate when ``fine_tune``; stops early when ``should_stop()`` turns True."""
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=SGD_LEARNING_RATE, momentum=SGD_MOMENTUM)
    batches = _batches(data.train_x, data.train_y, batch_seed, BATCH_SIZE)
    model.train()
    steps = 0
    for step in range(0 if fine_tune else start, total):
        if should_stop is not None and should_stop():
            break
        dropped = fine_tune or step >= DROP_AT * total
        for group in optimizer.param_groups:
            group["lr"] = SGD_LEARNING_RATE * (0.1 if dropped else 1.0)
        x, y = next(batches)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call, unused-ignore]
        optimizer.step()
        steps += 1
    model.eval()
    accuracy = 1.0 - error(model, data.test_x, data.test_y)
    return Outcome(accuracy, accuracy, steps)


def train_adam(
    model: torch.nn.Module,
    data: DemoData,
    *,
    total: int,
    batch_seed: int,
    masks: dict[str, torch.Tensor] | None = None,
) -> Outcome:
    """Greydanus's recipe: Adam for ``total`` steps; the best test accuracy over training too.
    ``masks`` are re-applied after every step (for networks no pruner watches). The Adam is
    `BufferedAdam`: torch's arithmetic without its per-step temporaries."""
    import torch

    from ...kernels import MaskApplier
    from .buffered_adam import BufferedAdam

    params = dict(model.named_parameters())
    # Validated once here rather than at every step.
    reapply_masks = MaskApplier({n: params[n] for n in masks}, masks) if masks is not None else None
    optimizer = BufferedAdam(model.parameters(), lr=GREYDANUS_LEARNING_RATE)
    batches = _batches(data.train_x, data.train_y, batch_seed, BATCH_SIZE)
    best = 0.0
    for step in range(1, total + 1):
        x, y = next(batches)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call, unused-ignore]
        optimizer.step()
        if reapply_masks is not None:
            reapply_masks()
        if step % EVAL_EVERY == 0 or step == total:
            accuracy = 1.0 - error(model, data.test_x, data.test_y)
            best = max(best, accuracy)
    return Outcome(accuracy, best, total)

"""The experiment behind ``lottery-ticket demo``: iterative magnitude pruning plus controls.

For each seed, ``LotteryTicketPruner`` runs IMP on LeNet-300-100 (global magnitude pruning of
the Linear weights, biases excluded, 20% of the survivors per round). In every round the
pruner hands us the rewound, masked network (the *winning ticket* candidate) and we train it;
beside it, with the same masks and the same minibatch order, we train the paper's controls:

* **random re-init**: a fresh Glorot initialisation (a seed never used for a ticket) under the
  ticket's mask, i.e. the same sparse architecture without the lucky initial weights;
* **random mask** (``--random-masks``): the original W0 under a random mask that keeps the same
  number of weights in each layer, i.e. the same initial weights without the learned structure.

Both controls are re-masked after every optimizer step; the pruner keeps the ticket masked.
The other methods of ``--method`` (one-shot, random, SNIP, supermask) live in ``methods``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .data import DATA_SETS, DemoData
from .train import DEFAULT_EVAL_EVERY, lenet_300_100, train

if TYPE_CHECKING:
    import torch

# Frankle & Carbin prune 20% of the remaining weights per round.
PRUNE_FRACTION_PER_ROUND = 0.2
NETWORKS = ("ticket", "reinit", "random_mask")
# --method choices, in the order they run and are shown.
METHODS = ("imp", "one-shot", "random", "snip", "supermask")
# The network (results key) each method other than imp trains, by round.
METHOD_NETWORKS = {"one-shot": "one_shot", "random": "random", "snip": "snip"}


@dataclass(frozen=True)
class DemoConfig:
    """What to run: data set, methods, seeds, rounds, training recipe, rewind strategy, controls.

    ``rounds`` rounds of 20% leave ``0.8 ** rounds`` of the weights (15 -> 3.5%, 20 -> 1.2%).
    Training defaults (iterations, learning rate, batch size) are the data set's recipe.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    rounds: int = DATA_SETS["mnist1d"].rounds
    iterations: int = DATA_SETS["mnist1d"].iterations
    eval_every: int = DEFAULT_EVAL_EVERY
    rewind: str = "init"
    random_masks: bool = False
    data: str = "mnist1d"
    methods: tuple[str, ...] = ("imp",)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("seeds: need at least one seed")
        if self.rounds < 1:
            raise ValueError(f"rounds: must be >= 1, got {self.rounds}")
        if self.iterations < 1:
            raise ValueError(f"iterations: must be >= 1, got {self.iterations}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every: must be >= 1, got {self.eval_every}")
        if self.data not in DATA_SETS:
            raise ValueError(f"data: expected one of {', '.join(DATA_SETS)}, got {self.data!r}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods: expected some of {', '.join(METHODS)}, got {list(self.methods)}")
        # One run per method, in the canonical order, whatever order they were asked in.
        object.__setattr__(self, "methods", tuple(m for m in METHODS if m in self.methods))

    @property
    def target_sparsity(self) -> float:
        """Sparsity after the last round: ``1 - 0.8 ** rounds``."""
        return 1.0 - (1.0 - PRUNE_FRACTION_PER_ROUND) ** self.rounds

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return DATA_SETS[self.data].layer_sizes

    @property
    def networks(self) -> tuple[str, ...]:
        """Which networks are trained per round (imp's ticket and controls, then the methods)."""
        nets: list[str] = []
        if "imp" in self.methods:
            nets += NETWORKS if self.random_masks else NETWORKS[:2]
        return tuple(nets + [METHOD_NETWORKS[m] for m in self.methods if m in METHOD_NETWORKS])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        recipe = DATA_SETS[self.data]
        return {
            "data": self.data,
            "methods": list(self.methods),
            "seeds": list(self.seeds),
            "rounds": self.rounds,
            "iterations": self.iterations,
            "eval_every": self.eval_every,
            "learning_rate": recipe.learning_rate,
            "batch_size": recipe.batch_size,
            "layer_sizes": list(recipe.layer_sizes),
            "rewind": self.rewind,
            "random_masks": self.random_masks,
            "prune_fraction_per_round": PRUNE_FRACTION_PER_ROUND,
            "target_sparsity": self.target_sparsity,
        }

    def train(self, model: torch.nn.Module, data: DemoData, batch_seed: int, masks: Any = None) -> dict[str, float]:
        """Train ``model`` with this configuration's recipe; the ``TrainResult`` as metrics."""
        recipe = DATA_SETS[self.data]
        return train(
            model,
            data,
            iterations=self.iterations,
            batch_seed=batch_seed,
            eval_every=self.eval_every,
            masks=masks,
            learning_rate=recipe.learning_rate,
            batch_size=recipe.batch_size,
        ).as_metrics()


def derived_seed(*parts: int) -> int:
    """A well-mixed 31-bit seed from integers (seed, round, network), stable across runs."""
    import numpy as np

    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] & 0x7FFFFFFF)


def _weights(model: torch.nn.Module, names: Any) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {name: params[name] for name in names}


def random_masks_like(masks: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Random bool masks keeping, in every tensor, as many entries as ``masks`` does.

    Args:
        masks: ``{name: bool tensor}`` (e.g. a ticket's masks).
        seed: seeds the random positions.

    Returns:
        New masks with the same names, shapes and per-tensor True counts.

    Example:
        >>> import torch
        >>> m = random_masks_like({"w": torch.tensor([True, False, True, False])}, seed=0)
        >>> int(m["w"].sum())
        2
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    result = {}
    for name, mask in masks.items():
        keep = int(mask.sum())
        flat = torch.zeros(mask.numel(), dtype=torch.bool)
        flat[torch.randperm(mask.numel(), generator=generator)[:keep]] = True
        result[name] = flat.reshape(mask.shape)
    return result


def check_ticket_state(
    model: torch.nn.Module, masks: dict[str, torch.Tensor], initial: dict[str, torch.Tensor] | None
) -> None:
    """Raise ``RuntimeError`` unless every pruned weight of ``model`` is exactly zero and, when
    ``initial`` is given, every surviving weight equals its value there (a correct rewind to W0).

    The demo calls this before and after training each ticket, so a masking or rewinding bug
    shows up as an error instead of as a subtly wrong figure.
    """
    import torch

    params = dict(model.named_parameters())
    for name, mask in masks.items():
        weight = params[name].detach()
        if bool((weight[~mask] != 0).any()):
            raise RuntimeError(f"{name}: pruned weights are not zero (masking bug)")
        if initial is not None and not torch.equal(weight[mask], initial[name][mask]):
            raise RuntimeError(f"{name}: surviving weights differ from W0 after rewinding")


def train_masked(
    model: torch.nn.Module,
    masks: dict[str, torch.Tensor],
    data: DemoData,
    config: DemoConfig,
    batch_seed: int,
) -> dict[str, Any]:
    """Zero the masked weights of ``model``, train it keeping them zero; metrics plus density."""
    from ...kernels import apply_masks

    apply_masks(_weights(model, masks), masks)
    metrics: dict[str, Any] = config.train(model, data, batch_seed, masks)
    return {**metrics, **mask_density(masks)}


def mask_density(masks: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``{"density": overall, "layer_density": {name: fraction}}`` of bool masks."""
    kept = {name: int(m.sum()) for name, m in masks.items()}
    total = sum(m.numel() for m in masks.values())
    return {"density": sum(kept.values()) / total, "layer_density": {n: kept[n] / masks[n].numel() for n in masks}}


def run_seed(
    seed: int,
    data: DemoData,
    config: DemoConfig,
    on_round_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """IMP with controls for one seed.

    Args:
        seed: initialisation seed of the ticket network (controls derive their own seeds).
        data: the data split.
        config: rounds, iterations, rewind strategy, controls.
        on_round_done: called with each finished row (for progress display).

    Returns:
        One row per round (0 = dense): ``{"seed", "round", "density", "remaining_percent",
        "ticket": {...}, "reinit": {...}}`` plus ``"random_mask"`` when enabled; each network
        entry holds ``TrainResult`` fields, ``density`` and ``layer_density``.

    Example:
        >>> from lottery_ticket.cli.demo.data import load_digits_split
        >>> rows = run_seed(0, load_digits_split(), DemoConfig(rounds=1, iterations=30, data="digits"))
        >>> [(row["round"], round(row["density"], 2)) for row in rows]
        [(0, 1.0), (1, 0.8)]
    """
    from ... import LotteryTicketPruner, RewindStrategy

    sizes = config.layer_sizes
    model = lenet_300_100(seed, sizes)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    rewinds_to_init = config.rewind == "init"
    pruner = LotteryTicketPruner(
        target_sparsity=config.target_sparsity,
        pruning_rounds=config.rounds,
        rewind_strategy=RewindStrategy.parse(config.rewind),
        global_pruning=True,
        iterations_per_round=config.iterations,
    )
    rows: list[dict[str, Any]] = []

    def train_round(net: torch.nn.Module, round_index: int) -> dict[str, float]:
        # The same minibatch order for the ticket and its controls: a paired comparison.
        batch_seed = derived_seed(seed, round_index, 0)
        masks = {name: mask.clone() for name, mask in pruner.masks.items()}
        check_ticket_state(net, masks, initial if rewinds_to_init else None)
        ticket = {**config.train(net, data, batch_seed), **mask_density(masks)}
        check_ticket_state(net, masks, None)
        row: dict[str, Any] = {
            "seed": seed,
            "round": round_index,
            "density": float(pruner.density),
            "remaining_percent": 100.0 * float(pruner.density),
            "ticket": ticket,
            "reinit": train_masked(
                lenet_300_100(derived_seed(seed, round_index, 1), sizes), masks, data, config, batch_seed
            ),
        }
        if config.random_masks:
            shuffled = random_masks_like(masks, derived_seed(seed, round_index, 2))
            # lenet_300_100(seed) rebuilds exactly the ticket's W0 (private generator).
            row["random_mask"] = train_masked(lenet_300_100(seed, sizes), shuffled, data, config, batch_seed)
        rows.append(row)
        if on_round_done is not None:
            on_round_done(row)
        nets = [n for n in NETWORKS if n in row]
        return {f"{n}_{k}": v for n in nets for k, v in row[n].items() if isinstance(v, float)}

    pruner.run(model, train_round, progress=False)
    return rows

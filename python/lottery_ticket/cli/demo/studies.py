"""``lottery-ticket demo --study NAME``: which rewind strategy to use, and why, on MNIST-1D.

* ``rewind``: the same IMP schedule (global, 20% per round) with init, early:k, late:f, lr and
  none side by side (Renda et al. 2020's comparison), on the 1-D CNN of ``science``.
* ``stability``: for each rewind point k, the instability (error barrier, Frankle et al. 2020)
  of the dense network at W_k and of the sparse IMP network rewound to W_k, beside the sparse
  network's accuracy: IMP finds matching subnetworks from the k where the sparse net is stable.
* ``early-bird``: IMP with and without `EarlyBird` rounds: accuracy against total training steps.
* ``greydanus``: the MNIST-1D paper's lottery experiment (layer-wise pruning, rewinding to W0)
  with our pruner, beside a random-pruning control and the paper's numbers.

Every run is deterministic on one thread (`torch.use_deterministic_algorithms`, denormals flushed:
`parallel.study_arithmetic`); a study's runs are independent, so ``jobs`` worker processes share
them out (`parallel`) with the same results; each study writes ``study-NAME.json`` and
``study-NAME.png``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .data import DemoData
from .experiment import derived_seed, random_masks_like
from .parallel import Call, run_calls, study_arithmetic
from .science import conv_net, error, greydanus_mlp, train_adam, train_sgd

STUDIES = ("rewind", "stability", "early-bird", "greydanus")
RATE = 0.2  # of the survivors per round, everywhere


@dataclass(frozen=True)
class StudyConfig:
    """Sizes of a study run: seeds, IMP rounds, steps per round, rewind point, stability points."""

    seeds: tuple[int, ...]
    rounds: int
    iterations: int
    rewind_k: int  # early:k of the rewind and early-bird studies
    rewind_ks: tuple[int, ...]  # the stability study's scan
    points: int  # along each linear path
    every_steps: int  # EarlyBird's period


PRESETS = {
    "full": {
        "rewind": StudyConfig((0, 1), 10, 1000, 50, (), 11, 50),
        "stability": StudyConfig((0, 1), 8, 1000, 50, (0, 10, 25, 50, 100, 250), 11, 50),
        "early-bird": StudyConfig((0, 1), 10, 1000, 50, (), 11, 25),
        "greydanus": StudyConfig((0, 1), 14, 6000, 0, (), 11, 50),
    },
    "quick": {
        "rewind": StudyConfig((0,), 2, 90, 6, (), 5, 10),
        "stability": StudyConfig((0,), 2, 90, 6, (0, 6), 5, 10),
        "early-bird": StudyConfig((0,), 2, 90, 6, (), 5, 5),
        "greydanus": StudyConfig((0,), 2, 100, 0, (), 5, 10),
    },
}
# Greydanus 2020, table of the lottery experiment: test accuracy in %, two runs each.
GREYDANUS_PAPER = {
    "dense": [64.8, 66.4],
    "ticket": {"91": [75.0, 72.9], "96": [70.4, 71.5]},
    "random": {"91": [62.3, 62.1], "96": [51.5, 50.3]},
}


def _imp(
    seed: int, data: DemoData, config: StudyConfig, strategy: str, early_bird: Any = None
) -> tuple[list[dict[str, Any]], Any, Any]:
    """IMP on the CNN of ``seed`` with ``strategy``: (a row per round, pruner, model)."""
    from ... import LotteryTicketPruner

    model = conv_net(seed)
    pruner = LotteryTicketPruner(
        1.0 - (1.0 - RATE) ** config.rounds,
        config.rounds,
        strategy,
        iterations_per_round=config.iterations,
        early_bird=early_bird,
    )
    rows: list[dict[str, Any]] = []

    def train_round(net: Any, r: int) -> dict[str, float]:
        start = pruner.rewind_iteration if r else 0
        outcome = train_sgd(
            net,
            data,
            total=config.iterations,
            batch_seed=derived_seed(seed, r),
            start=start or 0,
            fine_tune=r > 0 and strategy == "none",
            should_stop=(lambda: pruner.should_stop) if early_bird is not None else None,
        )
        rows.append({"round": r, "remaining_percent": 100 * pruner.density, **outcome.to_dict()})
        return {"accuracy": outcome.accuracy}

    pruner.run(model, train_round, progress=False)
    return rows, pruner, model


def _imp_rows(seed: int, data: DemoData, config: StudyConfig, strategy: str, early_bird: Any = None) -> Any:
    """`_imp`'s rows alone (what a worker process sends back)."""
    return _imp(seed, data, config, strategy, early_bird)[0]


Tick = Callable[[], None]


def study_rewind(data: DemoData, config: StudyConfig, tick: Tick, jobs: int = 1) -> dict[str, Any]:
    strategies = ("init", f"early:{config.rewind_k}", "late:0.1", "lr", "none")
    pairs = [(strategy, seed) for strategy in strategies for seed in config.seeds]
    found = run_calls([(_imp_rows, (seed, data, config, strategy)) for strategy, seed in pairs], jobs, tick)
    runs: dict[str, list[Any]] = {s: [] for s in strategies}
    for (strategy, _), rows in zip(pairs, found):
        runs[strategy].append(rows)
    return {"strategies": list(strategies), "runs": runs}


def _stability_point(seed: int, k: int, data: DemoData, config: StudyConfig) -> dict[str, Any]:
    """IMP rewound to W_k for ``seed``, then the instability of the dense and the sparse network at W_k."""
    from ...torch import instability

    measured: dict[str, Any] = {"seed": seed, "k": k}

    def rest(net: Any, copy_seed: int) -> None:
        train_sgd(net, data, total=config.iterations, batch_seed=derived_seed(seed, 99, copy_seed), start=k)

    def evaluate(net: Any) -> float:
        return error(net, data.test_x, data.test_y)

    rows, pruner, _ = _imp(seed, data, config, f"early:{k}")
    ticket = pruner.ticket()
    dense = conv_net(seed)
    dense.load_state_dict(ticket.snapshot)  # the whole state at W_k, unpruned
    sparse = conv_net(seed)
    pruner.apply_ticket(sparse, ticket)  # W_k under the final masks
    for name, net, masks in (("dense", dense, None), ("sparse", sparse, ticket.masks)):
        result = instability(net, rest, evaluate, seeds=(1, 2), points=config.points, masks=masks)
        measured[name] = {"barrier": result.barrier, "errors": list(result.errors)}
    measured["dense_accuracy"] = rows[0]["accuracy"]
    measured["sparse_accuracy"] = rows[-1]["accuracy"]
    measured["remaining_percent"] = rows[-1]["remaining_percent"]
    return measured


def study_stability(data: DemoData, config: StudyConfig, tick: Tick, jobs: int = 1) -> dict[str, Any]:
    calls: list[Call] = [(_stability_point, (seed, k, data, config)) for seed in config.seeds for k in config.rewind_ks]
    return {"points": run_calls(calls, jobs, tick)}


def study_early_bird(data: DemoData, config: StudyConfig, tick: Tick, jobs: int = 1) -> dict[str, Any]:
    from ... import EarlyBird

    bird = EarlyBird(every_steps=config.every_steps, window=5, tolerance=0.1)
    strategy = f"early:{config.rewind_k}"
    options = (("full", None), ("early-bird", bird))
    calls: list[Call] = [
        (_imp_rows, (seed, data, config, strategy, option)) for seed in config.seeds for _, option in options
    ]
    found = iter(run_calls(calls, jobs, tick))
    runs: dict[str, list[Any]] = {"full": [], "early-bird": []}
    for _ in config.seeds:
        for name, _ in options:
            runs[name].append(next(found))
    return {"strategy": strategy, "early_bird": bird.to_dict(), "runs": runs}


def _greydanus_data(data: DemoData) -> DemoData:
    """The paper trains on all 4000 training signals: ours plus the validation part."""
    import torch

    return DemoData(
        torch.cat([data.train_x, data.val_x]),
        torch.cat([data.train_y, data.val_y]),
        data.val_x,
        data.val_y,
        data.test_x,
        data.test_y,
    )


def _greydanus_seed(seed: int, data: DemoData, config: StudyConfig) -> tuple[list[Any], list[Any]]:
    """Layer-wise IMP (20% of every layer per round, rewinding to W0) and its random-pruning
    control for one seed: (ticket rows, control rows)."""
    import torch

    from ... import LotteryTicketPruner

    pruner = LotteryTicketPruner(0.5, config.rounds, "init", global_pruning=False, layer_rates={"*": RATE})
    rows: list[dict[str, Any]] = []
    controls: list[dict[str, Any]] = []

    def train_round(net: Any, r: int) -> None:
        outcome = train_adam(net, data, total=config.iterations, batch_seed=derived_seed(seed, r))
        rows.append({"round": r, "remaining_percent": 100 * pruner.density, **outcome.to_dict()})
        if r:  # random masks of the same per-layer sparsity, on the same W0
            masks = random_masks_like(pruner.masks, derived_seed(seed, r, 2))
            control = greydanus_mlp(seed)
            with torch.no_grad():
                for name, p in control.named_parameters():
                    if name in masks:
                        p.mul_(masks[name])
            got = train_adam(control, data, total=config.iterations, batch_seed=derived_seed(seed, r), masks=masks)
            controls.append({"round": r, "remaining_percent": 100 * pruner.density, **got.to_dict()})

    pruner.run(greydanus_mlp(seed), train_round, progress=False)
    return rows, controls


def study_greydanus(data: DemoData, config: StudyConfig, tick: Tick, jobs: int = 1) -> dict[str, Any]:
    data = _greydanus_data(data)
    found = run_calls([(_greydanus_seed, (seed, data, config)) for seed in config.seeds], jobs, tick)
    runs: dict[str, list[Any]] = {"ticket": [rows for rows, _ in found], "random": [controls for _, controls in found]}
    return {"paper": GREYDANUS_PAPER, "runs": runs}


RUNNERS = {
    "rewind": study_rewind,
    "stability": study_stability,
    "early-bird": study_early_bird,
    "greydanus": study_greydanus,
}


def run_study(name: str, preset: str, data: DemoData, tick: Tick, jobs: int = 1) -> dict[str, Any]:
    """Run study ``name`` at ``preset`` size ("quick" or "full") on ``jobs`` processes; JSON-ready results."""
    config = PRESETS[preset][name]
    restore = study_arithmetic()
    try:
        found = RUNNERS[name](data, config, tick, jobs)
    finally:
        restore()
    return {"study": name, "preset": preset, "config": asdict(config), **found}

"""The methods ``lottery-ticket demo --method`` compares with IMP, each through the library's API.

Every method starts from the same W0 as the seed's ticket (``lenet_300_100(seed)``) and trains
with the ticket's minibatch order of the same round, so differences come from the masks alone:

* **one-shot**: train the dense network once, then for each round r one global magnitude
  selection of the *trained* weights straight to ``0.8 ** r`` remaining
  (``LotteryTicketPruner(pruning_rounds=1).find_ticket``), rewind to W0, train.
* **random**: ``importance="random"``: a uniformly random global subset of the weights with
  exactly the kept count, at W0 (the random-pruning control).
* **snip**: ``importance=Snip(loss_fn, batches)``: SNIP's sensitivities at W0 on the first
  ``SNIP_BATCHES`` training minibatches, one global selection, no training before pruning.
* **supermask**: the weights stay frozen at W0 and only a mask is learned (Zhou et al. 2019);
  its density is whatever the learned mask keeps, so it is one point per seed, not a curve.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .data import DATA_SETS, DemoData
from .experiment import METHOD_NETWORKS, PRUNE_FRACTION_PER_ROUND, DemoConfig, derived_seed, mask_density, train_masked
from .train import lenet_300_100

if TYPE_CHECKING:
    import torch

# SNIP (Lee et al. 2019) scores one minibatch; a few make the scores less noisy on small data.
SNIP_BATCHES = 5
# The scores of a supermask need far larger steps than weights (Zhou et al. use SGD at 100);
# measured on MNIST-1D with Adam (seed 0, 1500 iterations): 0.02 -> 34%, 0.1 -> 40%, 0.3 -> 37%.
SUPERMASK_LEARNING_RATE = 0.1


def _mask_maker(method: str, seed: int, data: DemoData, config: DemoConfig) -> Callable[[torch.nn.Module, float], Any]:
    """``make(model, sparsity) -> masks`` for a method other than imp and supermask."""
    from ... import LotteryTicketPruner
    from ...torch import Snip

    if method == "one-shot":
        return lambda trained, sparsity: LotteryTicketPruner(sparsity, 1).find_ticket(trained).masks
    if method == "random":
        return lambda w0, sparsity: (
            LotteryTicketPruner(sparsity, 1, importance="random", seed=derived_seed(seed, 3)).find_ticket(w0).masks
        )
    if method == "snip":
        import torch

        size = DATA_SETS[config.data].batch_size
        batches = [
            (data.train_x[i * size : (i + 1) * size], data.train_y[i * size : (i + 1) * size])
            for i in range(SNIP_BATCHES)
        ]

        def loss_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])

        snip = Snip(loss_fn, batches)
        return lambda w0, sparsity: LotteryTicketPruner(sparsity, 1, importance=snip).find_ticket(w0).masks
    raise ValueError(f"method: no mask maker for {method!r}")


def run_masked_method(
    method: str,
    seed: int,
    data: DemoData,
    config: DemoConfig,
    trained: torch.nn.Module | None = None,
    on_round_done: Callable[[], None] | None = None,
) -> dict[int, dict[str, Any]]:
    """Rounds 1..R of ``method`` (one-shot, random or snip) for one seed.

    Args:
        trained: one-shot only: the dense network of ``seed`` after round 0's training.

    Returns:
        ``{round: metrics}`` with ``TrainResult`` fields, ``density`` and ``layer_density``.
    """
    import torch

    sizes = config.layer_sizes
    source = lenet_300_100(seed, sizes) if method != "one-shot" else trained
    if source is None:
        raise ValueError("trained: one-shot prunes the trained dense network; pass it")
    make = _mask_maker(method, seed, data, config)
    results = {}
    for round_index in range(1, config.rounds + 1):
        sparsity = 1.0 - (1.0 - PRUNE_FRACTION_PER_ROUND) ** round_index
        masks = {n: torch.from_numpy(m) for n, m in make(source, sparsity).items()}
        model = lenet_300_100(seed, sizes)
        results[round_index] = train_masked(model, masks, data, config, derived_seed(seed, round_index, 0))
        if on_round_done is not None:
            on_round_done()
    return results


def run_supermask(seed: int, data: DemoData, config: DemoConfig) -> dict[str, Any]:
    """Learn a supermask on the frozen W0 of ``seed``; evaluation uses the deterministic mask.

    Returns:
        ``TrainResult`` fields (at the early-stop iteration of the sampled-mask training) plus
        the learned ``density`` and ``layer_density``.
    """
    import torch

    from ...torch import supermask

    model = supermask.to_supermask(lenet_300_100(seed, config.layer_sizes), seed=derived_seed(seed, 4))
    recipe = DATA_SETS[config.data]
    generator_state = torch.get_rng_state()
    torch.manual_seed(derived_seed(seed, 5))  # the Bernoulli samples
    try:
        from .train import train

        result = train(
            model,
            data,
            iterations=config.iterations,
            batch_seed=derived_seed(seed, 0, 0),
            eval_every=config.eval_every,
            learning_rate=SUPERMASK_LEARNING_RATE,
            batch_size=recipe.batch_size,
        )
    finally:
        torch.set_rng_state(generator_state)
    described = supermask.describe(model)
    return {**result.as_metrics(), "density": described["density"], "layer_density": described["layer_density"]}


def run_methods(
    seed: int,
    data: DemoData,
    config: DemoConfig,
    rows: list[dict[str, Any]],
    on_round_done: Callable[[], None] | None = None,
) -> dict[str, Any] | None:
    """Add the other methods' networks to ``rows`` (one per round, made by IMP or here) in place.

    Returns:
        The supermask's result for this seed when asked for, else None.
    """
    by_round = {row["round"]: row for row in rows}
    for round_index in range(config.rounds + 1):
        if round_index not in by_round:
            remaining = 100.0 * (1.0 - PRUNE_FRACTION_PER_ROUND) ** round_index
            by_round[round_index] = {
                "seed": seed,
                "round": round_index,
                "density": remaining / 100.0,
                "remaining_percent": remaining,
            }
            rows.append(by_round[round_index])
    rows.sort(key=lambda row: int(row["round"]))
    asked = [m for m in METHOD_NETWORKS if m in config.methods]
    # Round 0 of every method is the dense network of this seed: the same W0 and batches as
    # IMP's round 0, so IMP's result is reused and one-shot prunes that trained network.
    trained = None
    dense = by_round[0].get("ticket")
    if asked and (dense is None or "one-shot" in asked):
        trained = lenet_300_100(seed, config.layer_sizes)
        full = {n: p.detach() != 0 for n, p in trained.named_parameters() if n.endswith("weight")}
        dense = {**config.train(trained, data, derived_seed(seed, 0, 0)), **mask_density(full)}
    for method in asked:
        by_round[0][METHOD_NETWORKS[method]] = dense
        for round_index, metrics in run_masked_method(method, seed, data, config, trained, on_round_done).items():
            by_round[round_index][METHOD_NETWORKS[method]] = metrics
    return run_supermask(seed, data, config) if "supermask" in config.methods else None

"""How many weights each pruning round keeps, and the masks that keep exactly them."""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from .. import kernels
from ..config import LotteryTicketConfig


def plan_masks(
    config: LotteryTicketConfig,
    weights: Mapping[str, Any],
    masks: Mapping[str, Any],
    round_index: int,
    process_group: Any = None,
    *,
    in_place: bool = False,
) -> Any:
    """Masks after pruning round ``round_index`` (1-based): exact kept counts, by the kernels.

    With ``process_group`` each rank passes its shards and every count is over all ranks. With
    ``in_place`` the new masks are written over ``masks`` where all are writable (no fresh mask
    memory in a later round); read-only masks (e.g. loaded from a file) get fresh ones."""
    if in_place and not all(_writable(m) for m in masks.values()):
        in_place = False
    alive = kernels.alive_counts(dict(masks), process_group=process_group)
    if process_group is None:
        sizes = {n: int(np.prod(tuple(w.shape), dtype=np.int64)) for n, w in weights.items()}
    else:  # alive + dead: the global sizes of the shards, without a collective per tensor shape
        dead = kernels.alive_counts({n: ~m for n, m in masks.items()}, process_group=process_group)
        sizes = {n: alive[n] + dead[n] for n in weights}
    # Tensors with a layer rate are pruned alone; the others follow the schedule together
    # (global) or alone.
    alone = [n for n in weights if config.layer_rate(n) is not None]
    pooled = [n for n in weights if n not in alone]
    result = {}
    if config.global_pruning and pooled:
        keep = config.remaining_after(round_index, sum(sizes[n] for n in pooled))
        current = {n: masks[n] for n in pooled}
        result.update(
            kernels.global_magnitude_masks(
                {n: weights[n] for n in pooled},
                sum(alive[n] for n in pooled) - keep,
                current,
                "global",
                process_group=process_group,
                out=current if in_place else None,
            )
        )
    for name in alone if config.global_pruning else list(weights):
        w = weights[name]
        keep = config.remaining_after(round_index, sizes[name], name)
        current = {name: masks[name]}
        result.update(
            kernels.global_magnitude_masks(
                {name: w},
                alive[name] - keep,
                current,
                "global",
                process_group=process_group,
                out=current if in_place else None,
            )
        )
    return {n: result[n] for n in weights}


def plan_schedule(
    config: LotteryTicketConfig, weights: Mapping[str, Any], masks: Mapping[str, Any], process_group: Any = None
) -> tuple[Any, list[float]]:
    """Every round of the schedule on the same weights (one-shot): the final masks, written over
    ``masks`` round after round, and the sparsity after each round."""
    total = sum(kernels.alive_counts(dict(masks), process_group=process_group).values())
    history = []
    for r in range(1, config.pruning_rounds + 1):
        masks = plan_masks(config, weights, masks, r, process_group, in_place=True)
        history.append(1.0 - sum(kernels.alive_counts(dict(masks), process_group=process_group).values()) / total)
    return masks, history


def check_layer_rates(config: LotteryTicketConfig, names: Collection[str]) -> None:
    """Refuse a ``layer_rates`` pattern that matches none of the pruned tensors (a typo would
    otherwise silently leave the layer on the schedule)."""
    for pattern, _ in config.layer_rates:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            listed = ", ".join(list(names)[:8])
            raise ValueError(f"layer_rates: {pattern!r} matches none of the pruned tensors ({listed})")


def _writable(mask: Any) -> bool:
    flags = getattr(mask, "flags", None)  # NumPy arrays; framework tensors are writable
    return flags is None or bool(flags.writeable)

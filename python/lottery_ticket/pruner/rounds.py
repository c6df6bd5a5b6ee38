"""How many weights each pruning round keeps, and the masks that keep exactly them."""

from __future__ import annotations

from collections.abc import Mapping
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
    if config.global_pruning:
        keep = config.remaining_after(round_index, sum(sizes.values()))
        current = dict(masks)
        out = current if in_place else None
        return kernels.global_magnitude_masks(
            dict(weights), sum(alive.values()) - keep, current, "global", process_group=process_group, out=out
        )
    result = {}
    for name, w in weights.items():
        keep = config.remaining_after(round_index, sizes[name])
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
    return result


def _writable(mask: Any) -> bool:
    flags = getattr(mask, "flags", None)  # NumPy arrays; framework tensors are writable
    return flags is None or bool(flags.writeable)

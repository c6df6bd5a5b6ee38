"""The checks benchmark rows pass on their first result: masks, and the sums of a read."""

from __future__ import annotations

from typing import Any

from .workloads import Workload


def check_masks(workload: Workload, masks: list[Any]) -> None:
    """Exactly ``k`` pruned; everything below the k-th smallest magnitude pruned, above it kept."""
    import torch

    assert len(masks) == len(workload.weights), "one mask per weight tensor"
    thr, pruned = workload.threshold, 0
    for w, mask in zip(workload.weights, masks):
        m = torch.as_tensor(mask)
        assert m.dtype == torch.bool and m.shape == w.shape, "bool mask shaped like its weight"
        magnitude = w.abs()
        assert not bool((m & (magnitude < thr)).any()), "a weight below the threshold was kept"
        assert bool((m | (magnitude <= thr)).all()), "a weight above the threshold was pruned"
        pruned += m.numel() - int(m.sum())
    assert pruned == workload.k, f"pruned {pruned} weights, expected exactly {workload.k}"


def check_sums(workload: Workload, sums: list[Any]) -> None:
    """One sum per weight tensor, each right to the rounding of its dtype's accumulation."""
    tolerance = 1e-4 if workload.spec.dtype == "f32" else 1e-2  # bf16 and f16 sums round
    assert len(sums) == len(workload.weights), "one sum per weight tensor"
    for w, s in zip(workload.weights, sums):
        exact = w.double().sum().item()
        assert abs(s.item() - exact) <= tolerance * w.double().abs().sum().item() + 1e-6, "wrong sum"

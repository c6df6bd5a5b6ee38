"""The DeviceKernels seam: the facade hands device arrays to a registered framework's kernels."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

import lottery_ticket as lt
from lottery_ticket import backends


class OnDevice:
    """An array 'on a device': the host kernels must never read it."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = array.shape


class FakeKernels:
    name = "fakeops"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def claims(self, arrays: Sequence[tuple[Sequence[str], Sequence[object]]], process_group: object) -> bool:
        return any(isinstance(v, OnDevice) for _, values in arrays for v in values)

    def select_masks(
        self, weights: list[Any], labels: list[str], amount: int | float, masks: Any, scope: str, process_group: object
    ) -> list[Any]:
        self.calls.append(f"select {labels} {amount} {scope} {process_group}")
        return [OnDevice(np.ones(w.shape, dtype=bool)) for w in weights]

    def mask_applier(self, weights: list[Any], masks: list[Any], labels: list[str]) -> Any:
        self.calls.append("applier")
        kernels = self

        class Applier:
            def __call__(self) -> None:
                kernels.calls.append("apply")

            def is_current(self) -> bool:
                return True

        return Applier()

    def rewind(self, weights: list[Any], snapshots: list[Any], masks: list[Any], labels: list[str]) -> None:
        self.calls.append("rewind")

    def alive_counts(self, masks: list[Any], labels: list[str], process_group: object) -> list[int]:
        return [int(m.array.sum()) for m in masks]


@pytest.fixture
def fake() -> Iterator[FakeKernels]:
    kernels = FakeKernels()
    backends.register_device_kernels(kernels)
    yield kernels
    del backends._DEVICE_KERNELS["fakeops"]


def test_device_arrays_go_to_the_registered_kernels(fake: FakeKernels) -> None:
    w = {"a": OnDevice(np.arange(4.0))}
    masks = lt.global_magnitude_masks(w, 0.5, scope="layer")
    assert isinstance(masks["a"], OnDevice)
    lt.apply_masks(w, masks)
    lt.rewind(w, w, masks)
    assert lt.alive_counts(masks) == {"a": 4}
    assert fake.calls == ["select [\"weights['a']\"] 0.5 layer None", "applier", "apply", "rewind"]
    # Host arrays keep the Rust kernels; "rust" refuses device arrays; a forced name is used.
    assert lt.global_magnitude_masks([np.arange(4.0)], 1)[0].tolist() == [False, True, True, True]
    with pytest.raises(ValueError, match="backend: 'rust' runs on host memory"):
        lt.global_magnitude_masks(list(w.values()), 1, backend="rust")
    lt.global_magnitude_masks([np.arange(4.0)], 1, backend="fakeops")
    assert fake.calls[-1].startswith("select")

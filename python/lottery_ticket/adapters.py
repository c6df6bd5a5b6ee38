"""A ``dict[str, np.ndarray]`` model as the pruner sees it (the NumPy twin of `torch._model`),
and `adapter_for`, which picks the adapter for a model.

Every float entry is pruned by default; arrays are updated in place, masks are NumPy bool
arrays, and there is no RNG state to checkpoint and no optimizer to hook.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from .checkpoint import check_state
from .config import NameFilter, select_names


def _is_numpy_array(value: object) -> bool:
    return isinstance(value, np.ndarray)


class NumpyDictAdapter:
    """The pruner's view of a ``dict[str, np.ndarray]`` model (arrays are updated in place)."""

    framework = "numpy"

    def __init__(self, model: dict[str, Any], include: NameFilter, exclude: NameFilter, names: Collection[str] | None) -> None:
        for key, value in model.items():
            if not isinstance(value, np.ndarray):
                raise TypeError(f"model[{key!r}]: expected a NumPy array, got {type(value).__name__}")
        self.model = model
        if names is None:
            names = select_names(list(model.items()), lambda _, a: a.dtype.kind == "f", include, exclude)
        missing = [n for n in names if n not in model]
        if missing:
            raise ValueError(f"masks: {missing[0]!r} is not an entry of the model")
        self.prunable: dict[str, Any] = {n: model[n] for n in names}

    def state(self) -> dict[str, Any]:
        """A copy of every entry of the model."""
        return {k: v.copy() for k, v in self.model.items()}

    def load_state(self, snapshot: Mapping[str, Any], skip: Collection[str]) -> None:
        """Copy ``snapshot`` into the live arrays in place, except the names in ``skip``."""
        for name, array in self.model.items():
            if name not in skip:
                np.copyto(array, snapshot[name])

    def check_state(self, snapshot: Mapping[str, Any], arg: str) -> None:
        """Raise unless ``snapshot`` has exactly the model's names, shapes and dtypes."""
        check_state(snapshot, self.model, arg, is_array=_is_numpy_array, kind="a NumPy array")

    def full_masks(self) -> dict[str, Any]:
        return {n: np.ones(a.shape, dtype=np.bool_) for n, a in self.prunable.items()}

    def masks_from_numpy(self, masks: Mapping[str, np.ndarray]) -> dict[str, Any]:
        return {n: np.array(m, dtype=np.bool_) for n, m in masks.items()}

    @staticmethod
    def masks_to_numpy(masks: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return {n: np.array(m, dtype=np.bool_) for n, m in masks.items()}

    def rng_state(self) -> dict[str, np.ndarray]:
        return {}

    def set_rng_state(self, state: Mapping[str, np.ndarray]) -> None:
        pass

    def step_watcher(self, callback: Callable[[], None]) -> Any:
        return None

    @staticmethod
    def unwrap_optimizer(optimizer: Any, arg: str = "optimizer") -> Any:
        """Optimizers of NumPy models are the user's own objects: nothing to unwrap."""
        return optimizer


def adapter_for(model: Any, include: NameFilter = None, exclude: NameFilter = None, names: Collection[str] | None = None) -> Any:
    """The framework adapter of ``model`` (a torch ``nn.Module`` or a dict of NumPy arrays)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from .torch._model import TorchModuleAdapter

        return TorchModuleAdapter(model, include, exclude, names)
    if isinstance(model, dict):
        return NumpyDictAdapter(model, include, exclude, names)
    raise TypeError(f"model: expected a torch.nn.Module or a dict of NumPy arrays, got {type(model).__name__}")

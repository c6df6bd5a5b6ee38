"""What the pruner needs of a model (`ModelAdapter`), the registry that finds it, and the NumPy adapter.

The pruner is framework-neutral: it sees a model only through a `ModelAdapter`. A
``dict[str, np.ndarray]`` is handled here (`NumpyDictAdapter`); frameworks register their own
adapters with `register_model_adapter` when imported (``lottery_ticket.torch`` does for
``nn.Module``), and `adapter_for` imports a framework's adapter on first use through the
``lottery_ticket.frameworks`` entry points (see `backends`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

import numpy as np

from .backends import load_framework_of
from .config import NameFilter, select_names


class Hook(Protocol):
    """A removable registration."""

    def remove(self) -> None: ...


class StepWatcher(Protocol):
    """Calls the pruner after every optimizer step that updates the pruned weights."""

    def install_global(self) -> Hook:
        """Watch every optimizer that owns a pruned weight, until the hook is removed."""
        ...

    def attach(self, optimizer: Any) -> Hook:
        """Watch one optimizer."""
        ...

    def reset_optimizers(self) -> None:
        """Clear the state (momentum, moments) of the optimizers seen stepping."""
        ...


class ModelAdapter(Protocol):
    """A model as the pruner sees it.

    ``prunable`` maps names to the live weight arrays that are pruned (updated in place); masks
    are arrays of the model's framework.
    """

    prunable: dict[str, Any]

    def state(self, device: str | None = None) -> dict[str, Any]:
        """A copy of the whole model state (every parameter and buffer), on ``device`` if given."""
        ...

    def load_state(self, snapshot: Mapping[str, Any], skip: Collection[str]) -> None:
        """Copy ``snapshot`` into the live model in place, except the names in ``skip``."""
        ...

    def check_state(self, snapshot: Mapping[str, Any], arg: str) -> None:
        """Raise unless ``snapshot`` matches the model's state names, shapes and dtypes."""
        ...

    def check_live(self, when: str) -> None:
        """Raise ``RuntimeError`` naming a ``prunable`` array the model no longer holds (replaced
        rather than updated in place; ``when`` says when, e.g. ``"during train_fn"``)."""
        ...

    def full_masks(self) -> dict[str, Any]:
        """All-True masks for the prunable weights."""
        ...

    def masks_from_numpy(self, masks: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Masks of the model's framework from NumPy bool arrays (copies)."""
        ...

    def masks_to_numpy(self, masks: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """NumPy bool copies of the model's masks."""
        ...

    def rng_state(self) -> dict[str, np.ndarray]:
        """The framework's RNG state, for checkpoints."""
        ...

    def set_rng_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore `rng_state`."""
        ...

    def step_watcher(self, callback: Callable[[], None]) -> StepWatcher | None:
        """Optimizer hooks calling ``callback`` after each step, or None without optimizers."""
        ...

    def unwrap_optimizer(self, optimizer: Any, arg: str = "optimizer") -> Any:
        """The framework's optimizer inside a trainer's wrapper (accelerate, Lightning, DeepSpeed); None stays None."""
        ...


AdapterFactory = Callable[[Any, NameFilter, NameFilter, "Collection[str] | None"], ModelAdapter]
_ADAPTERS: list[tuple[Callable[[object], bool], AdapterFactory]] = []


def register_model_adapter(owns: Callable[[object], bool], factory: AdapterFactory) -> None:
    """Use ``factory(model, include, exclude, names)`` for every model where ``owns(model)``."""
    _ADAPTERS.append((owns, factory))


def adapter_for(
    model: Any, include: NameFilter = None, exclude: NameFilter = None, names: Collection[str] | None = None
) -> ModelAdapter:
    """The adapter of ``model``: a registered framework's, or the NumPy one for a dict of arrays."""
    for owns, factory in _ADAPTERS:
        if owns(model):
            return factory(model, include, exclude, names)
    if load_framework_of(type(model)):
        return adapter_for(model, include, exclude, names)
    if isinstance(model, dict):
        return NumpyDictAdapter(model, include, exclude, names)
    raise TypeError(f"model: expected a torch.nn.Module or a dict of NumPy arrays, got {type(model).__name__}")


def check_state(
    snapshot: Mapping[str, Any],
    live: Mapping[str, Any],
    arg: str,
    *,
    is_array: Callable[[object], bool],
    kind: str,
    owner: str = "the model's",
) -> None:
    """Raise unless ``snapshot`` has exactly the names, shapes and dtypes of ``live``.

    Nothing is modified, so callers check a whole state before loading any of it.

    Args:
        snapshot: name -> array to check (e.g. a ticket's snapshot or a checkpoint's state).
        live: name -> the model's array (anything with ``shape`` and ``dtype``).
        arg: how the caller names ``snapshot`` in error messages.
        is_array: whether an entry is an array of the model's framework.
        kind: that array kind in words, e.g. ``"a NumPy array"``.
        owner: the model's state in words, e.g. ``"the model's state_dict"``.

    Raises:
        ValueError: names or a shape differ. TypeError: an entry is not an array of the
        model's kind, or a dtype differs.

    Example:
        >>> import numpy as np
        >>> live = {"w": np.zeros(2, np.float32)}
        >>> check_state({"w": np.ones(2, np.float32)}, live, "snapshot", is_array=lambda a: isinstance(a, np.ndarray), kind="a NumPy array")
    """
    if set(snapshot) != set(live):
        extra = sorted(set(snapshot) ^ set(live))
        raise ValueError(f"{arg}: names differ from {owner} (first: {extra[0]!r})")
    for name, array in live.items():
        other = snapshot[name]
        if not is_array(other):
            raise TypeError(f"{arg}[{name!r}]: expected {kind}, got {type(other).__name__}")
        if tuple(other.shape) != tuple(array.shape):
            raise ValueError(
                f"{arg}[{name!r}]: shape {tuple(other.shape)} differs from the model's {tuple(array.shape)}"
            )
        if other.dtype != array.dtype:
            raise TypeError(f"{arg}[{name!r}]: dtype {other.dtype} differs from the model's {array.dtype}")


def _is_numpy_array(value: object) -> bool:
    return isinstance(value, np.ndarray)


class NumpyDictAdapter:
    """A ``dict[str, np.ndarray]`` model: every float entry is pruned by default, arrays are
    updated in place, masks are NumPy bool arrays; no RNG state and no optimizer to hook."""

    def __init__(
        self, model: dict[str, Any], include: NameFilter, exclude: NameFilter, names: Collection[str] | None
    ) -> None:
        for key, value in model.items():
            if not isinstance(value, np.ndarray):
                raise TypeError(f"model[{key!r}]: expected a NumPy array, got {type(value).__name__}")
        self.model = model
        if names is None:
            names = select_names(list(model.items()), lambda _, a: a.dtype.kind == "f", include, exclude)
        missing = [n for n in names if n not in model]
        if missing:
            raise ValueError(f"masks: {missing[0]!r} is not an entry of the model")
        # The same array under two keys is one tensor (tied weights): pruned once, under its first key.
        first: dict[int, str] = {}
        canonical = {key: first.setdefault(id(array), key) for key, array in model.items()}
        self.prunable: dict[str, Any] = {n: model[n] for n in dict.fromkeys(canonical[n] for n in names)}

    def state(self, device: str | None = None) -> dict[str, Any]:
        if device is not None:
            raise ValueError(f"snapshot_device: NumPy models keep their snapshot in host memory, got {device!r}")
        return {k: v.copy() for k, v in self.model.items()}

    def load_state(self, snapshot: Mapping[str, Any], skip: Collection[str]) -> None:
        for name, array in self.model.items():
            if name not in skip:
                np.copyto(array, snapshot[name])

    def check_state(self, snapshot: Mapping[str, Any], arg: str) -> None:
        check_state(snapshot, self.model, arg, is_array=_is_numpy_array, kind="a NumPy array")

    def check_live(self, when: str) -> None:
        for name, array in self.prunable.items():
            if self.model.get(name) is not array:
                raise RuntimeError(
                    f"model[{name!r}]: array was replaced {when} (model[{name!r}] = ...): its mask would no "
                    f"longer apply; update it in place (model[{name!r}][...] = ..., np.copyto) instead"
                )

    def full_masks(self) -> dict[str, Any]:
        return {n: np.ones(a.shape, dtype=np.bool_) for n, a in self.prunable.items()}

    def masks_from_numpy(self, masks: Mapping[str, np.ndarray]) -> dict[str, Any]:
        return {n: np.array(m, dtype=np.bool_) for n, m in masks.items()}

    def masks_to_numpy(self, masks: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return {n: np.array(m, dtype=np.bool_) for n, m in masks.items()}

    def rng_state(self) -> dict[str, np.ndarray]:
        return {}

    def set_rng_state(self, state: Mapping[str, np.ndarray]) -> None:
        pass

    def step_watcher(self, callback: Callable[[], None]) -> StepWatcher | None:
        return None

    @staticmethod
    def unwrap_optimizer(optimizer: Any, arg: str = "optimizer") -> Any:
        """Optimizers of NumPy models are the user's own objects: nothing to unwrap."""
        return optimizer

"""The argument checks every entry point shares, with their messages.

Each check returns the value in its canonical type or raises naming the argument: ``TypeError``
for a value of the wrong type, ``ValueError`` for a value of the right type that cannot be used.
Messages start with the argument (``amount: ...``, ``weights['fc.weight']: ...``) so that a
caller, and every backend, reports the same fault the same way.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, overload

import numpy as np

from .backends import SUPPORTED

# A parameter filter: a glob pattern on the name ("fc*.weight"), several patterns, or a predicate
# called with (name, tensor).
NameFilter = str | Sequence[str] | Callable[[str, Any], bool] | None

# The kernels take a u64 count; larger ints would not fit, and no model has that many weights.
MAX_COUNT = 2**64 - 1


def integer(
    value: object,
    arg: str,
    *,
    at_least: int | None = None,
    at_most: int | None = None,
    type_error: type[Exception] = TypeError,
) -> int:
    """``value`` as an int: an integral number but not a bool, within the bounds given.

    ``type_error``: the class raised for a value that is not an int (a few options report every
    bad value as ``ValueError``).
    """
    if at_least is not None and at_most is not None:
        wanted = f"an int in [{at_least}, {at_most}]"
    elif at_least is not None:
        wanted = f"an int >= {at_least}"
    else:
        wanted = "an int" if at_most is None else f"an int <= {at_most}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise type_error(f"{arg}: expected {wanted}, got {type(value).__name__}")
    result = int(value)
    if (at_least is not None and result < at_least) or (at_most is not None and result > at_most):
        raise ValueError(f"{arg}: expected {wanted}, got {result}")
    return result


def real(
    value: object,
    arg: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float: a real number (not a bool), not NaN, within the interval given."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{arg}: expected a real number, got {type(value).__name__}")
    result = float(value)
    if math.isnan(result):
        raise ValueError(f"{arg}: got NaN")
    below = low is not None and (result <= low if low_open else result < low)
    above = high is not None and (result >= high if high_open else result > high)
    if below or above:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{arg}: must lie in {interval}, got {result}")
    return result


def boolean(value: object, arg: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{arg}: expected a bool, got {type(value).__name__}")
    return value


def amount(value: object) -> int | float:
    """A pruning ``amount``: an int count >= 0, or a float fraction in [0, 1]."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError("amount: expected an int count or a float fraction, got a bool")
    if isinstance(value, numbers.Integral):
        if int(value) < 0:
            raise ValueError(f"amount: a count must be >= 0, got {value}")
        if int(value) > MAX_COUNT:
            raise ValueError(f"amount: a count cannot exceed the number of alive weights, got {value}")
        return int(value)
    if isinstance(value, numbers.Real):
        fraction = float(value)
        if math.isnan(fraction) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"amount: a fraction must lie in [0, 1], got {fraction}")
        return fraction
    raise TypeError(f"amount: expected an int count or a float fraction, got {type(value).__name__}")


class AmountError(ValueError):
    """``amount`` is more weights than are alive: known only once the alive weights are counted,
    so the kernels raise it; ``label`` names the tensor when one tensor of a layer-wise
    selection is at fault. The Rust kernels word it the same way."""

    def __init__(self, amount: int | float, alive: int, label: str | None = None) -> None:
        self.amount, self.alive, self.label = amount, alive, label
        where = f" in {label}" if label is not None else ""
        super().__init__(f"amount: cannot prune {amount} weights: only {alive} are alive{where}")

    def located(self, label: str) -> AmountError:
        """The same error, naming the tensor it occurred in."""
        return AmountError(self.amount, self.alive, label)


SCOPES = ("global", "layer")


def scope(value: object) -> str:
    if value not in SCOPES:
        raise ValueError(f"scope: expected 'global' or 'layer', got {value!r}")
    return str(value)


class Label(str):
    """How a message names one entry of a list or dict argument: ``weights[0]``,
    ``masks['fc.weight']``. It keeps its parts, so the entry of another argument at the same
    position is named without parsing the text."""

    __slots__ = ()  # a label per tensor per call: no instance dict (the parts are parsed on use)

    def __new__(cls, arg: str, key: str) -> Label:
        return super().__new__(cls, f"{arg}[{key}]")

    @property
    def arg(self) -> str:
        """The argument's name (names hold no ``[``)."""
        return self[: self.index("[")]

    @property
    def key(self) -> str:
        """The index, or the repr of the dict key."""
        return self[self.index("[") + 1 : -1]

    def of(self, arg: str) -> Label:
        """The label of the entry of ``arg`` at this position."""
        return Label(arg, self.key)


def labels(arg: str, names: list[Hashable] | None, count: int) -> Labels:
    """Labels (`Label`) of the ``count`` entries of ``arg``: indices for a list, key reprs for a dict."""
    return Labels(arg, names, count)


class Labels(Sequence[str]):
    """The labels of one argument's entries, each made when asked for: a call over many tensors
    names only the one that fails."""

    __slots__ = ("arg", "names", "size")

    def __init__(self, arg: str, names: list[Hashable] | None, count: int) -> None:
        self.arg, self.names, self.size = arg, names, count

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, i: int) -> Label: ...
    @overload
    def __getitem__(self, i: slice) -> list[Label]: ...
    def __getitem__(self, i: int | slice) -> Label | list[Label]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.size))]
        if not -self.size <= i < self.size:
            raise IndexError(i)
        i %= self.size
        return Label(self.arg, str(i) if self.names is None else repr(self.names[i]))

    def __iter__(self) -> Iterator[Label]:
        if self.names is None:
            return (Label(self.arg, str(i)) for i in range(self.size))
        return (Label(self.arg, repr(n)) for n in self.names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(other) == self.size and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which are unhashable

    def __repr__(self) -> str:
        return repr(list(self))


def relabel(label: str, arg: str) -> Label:
    """``label`` (a `Label`, or text such as ``"weights[0]"``) for the same entry of ``arg``."""
    if isinstance(label, Label):
        return label.of(arg)
    _, bracket, rest = label.partition("[")
    if not bracket or not rest.endswith("]"):
        raise ValueError(f"labels: expected an entry label such as 'weights[0]', got {label!r}")
    return Label(arg, rest[:-1])


def quoted(names: list[Hashable] | None) -> list[str]:
    """Names as messages show them (``repr``), for the Rust kernels to use verbatim."""
    return [repr(n) for n in names] if names is not None else []


# -- arrays: the messages every backend (NumPy, torch ops) raises for the same fault ------------


def unsupported_dtype(label: str, dtype: object) -> TypeError:
    return TypeError(f"{label}: dtype {dtype} is not supported; expected {SUPPORTED}")


def mask_dtype(label: str, dtype: object, *, is_bool: bool) -> None:
    if not is_bool:
        raise TypeError(f"{label}: masks must have dtype bool, got {dtype}")


def same_shape(label: str, shape: Sequence[int], expected: Sequence[int], *, of: str = "the weight's") -> None:
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{label}: shape {tuple(shape)} differs from {of} shape {tuple(expected)}")


def same_dtype(label: str, dtype: object, expected: object, *, of: str = "the weight's") -> None:
    if dtype != expected:
        raise TypeError(f"{label}: dtype {dtype} differs from {of} dtype {expected}")


def storage_replaced(label: str) -> RuntimeError:
    return RuntimeError(f"{label}: storage was replaced since the MaskApplier was built; build a new one")


def name_filter(spec: object, arg: str) -> NameFilter:
    """``spec`` if it is a `NameFilter` (None, a glob, a sequence of globs or a predicate)."""
    if spec is None or isinstance(spec, str) or callable(spec):
        return spec
    if isinstance(spec, Sequence) and not isinstance(spec, bytes) and all(isinstance(p, str) for p in spec):
        return spec
    raise TypeError(
        f"{arg}: expected a glob pattern, a list of patterns or a predicate(name, tensor), got {type(spec).__name__}"
    )


def optional_path(value: object, arg: str) -> str | os.PathLike[str] | None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{arg}: expected a path or None, got {type(value).__name__}")
    return value

"""What to prune and how to rewind: `RewindStrategy`, `LotteryTicketConfig` and parameter selection.

Everything here is plain data (frozen, comparable, printable, JSON-serialisable) and validated on
construction: invalid values raise ``ValueError``/``TypeError`` instead of being clamped.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._validation import NameFilter as NameFilter
from ._validation import boolean, integer, name_filter, real

StrategyKind = Literal["init", "early", "late", "lr", "none"]


def check_iterations_per_round(value: object) -> int | None:
    """``iterations_per_round`` (T, optimizer steps per round) as an int >= 1, or None."""
    if value is None:
        return None
    return integer(value, "iterations_per_round", at_least=1, type_error=ValueError)


@dataclass(frozen=True)
class RewindStrategy:
    """Where surviving weights go after each pruning round.

    * ``init()``: back to the initial weights W0 (Frankle & Carbin 2019).
    * ``early(iteration=k)``: back to the weights after k optimizer steps of the first round
      (Frankle et al. 2019, "Stabilizing the LTH").
    * ``late(fraction=f)``: back to the weights after ``round(f * T)`` steps, T being the number
      of steps of the first round (it must be known up front: ``iterations_per_round``).
    * ``learning_rate()``: keep the trained weights, rewind only the LR schedule (Renda et al. 2020).
    * ``none()``: keep the trained weights and the schedule (standard prune + fine-tune).

    ``str(strategy)`` is ``"init"``, ``"early:100"``, ``"late:0.1"``, ``"lr"`` or ``"none"``, and
    ``RewindStrategy.parse`` reads it back.

    Example:
        >>> RewindStrategy.parse("early:100") == RewindStrategy.early(iteration=100)
        True
    """

    kind: StrategyKind
    iteration: int | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("init", "early", "late", "lr", "none"):
            raise ValueError(f"kind: expected init, early, late, lr or none, got {self.kind!r}")
        if self.kind == "early":
            object.__setattr__(self, "iteration", integer(self.iteration, "iteration", at_least=0))
        elif self.iteration is not None:
            raise ValueError(f"iteration: only early() takes an iteration, not {self.kind}")
        if self.kind == "late":
            f = real(self.fraction, "fraction", low=0.0, high=1.0, low_open=True, high_open=True)
            object.__setattr__(self, "fraction", f)
        elif self.fraction is not None:
            raise ValueError(f"fraction: only late() takes a fraction, not {self.kind}")

    @classmethod
    def init(cls) -> RewindStrategy:
        """Rewind survivors to the initial weights W0."""
        return cls("init")

    @classmethod
    def early(cls, iteration: int) -> RewindStrategy:
        """Rewind survivors to the weights after ``iteration`` optimizer steps of round 0."""
        return cls("early", iteration=iteration)

    @classmethod
    def late(cls, fraction: float) -> RewindStrategy:
        """Rewind survivors to the weights after ``round(fraction * T)`` steps of round 0."""
        return cls("late", fraction=fraction)

    @classmethod
    def learning_rate(cls) -> RewindStrategy:
        """Keep trained weights; rewind only the learning-rate schedule."""
        return cls("lr")

    @classmethod
    def none(cls) -> RewindStrategy:
        """Keep trained weights and schedule (standard pruning)."""
        return cls("none")

    @classmethod
    def parse(cls, text: str) -> RewindStrategy:
        """Read ``"init"``, ``"early:K"``, ``"late:F"``, ``"lr"`` or ``"none"``."""
        if not isinstance(text, str):
            raise TypeError(f"strategy: expected a string, got {type(text).__name__}")
        kind, _, arg = text.strip().partition(":")
        if kind in ("init", "lr", "none"):
            if arg:
                raise ValueError(f"strategy: {kind!r} takes no argument, got {text!r}")
            return cls(kind)  # type: ignore[arg-type]
        try:
            if kind == "early":
                return cls.early(int(arg))
            if kind == "late":
                return cls.late(float(arg))
        except ValueError as err:
            raise ValueError(f"strategy: cannot read {text!r}: {err}") from None
        raise ValueError(f"strategy: expected init, early:K, late:F, lr or none, got {text!r}")

    @property
    def rewinds_weights(self) -> bool:
        """True when survivors go back to a snapshot (init, early, late)."""
        return self.kind in ("init", "early", "late")

    def __str__(self) -> str:
        if self.kind == "early":
            return f"early:{self.iteration}"
        if self.kind == "late":
            return f"late:{self.fraction!r}"
        return self.kind


@dataclass(frozen=True)
class EarlyBird:
    """End a training round once the mask the next pruning would give has settled (You et al. 2020).

    Every ``every_steps`` optimizer steps the pruner computes the mask the next pruning would
    give; the round ends (``pruner.should_stop`` turns True) once the normalised Hamming distance
    between the newest such mask and each of the ``window`` before it is below ``tolerance``.
    The final round always trains in full. You et al. use ``window=5``, ``tolerance=0.1``.

    Example:
        >>> EarlyBird(every_steps=50).to_dict()
        {'every_steps': 50, 'window': 5, 'tolerance': 0.1}
    """

    every_steps: int
    window: int = 5
    tolerance: float = 0.1

    def __post_init__(self) -> None:
        for arg in ("every_steps", "window"):
            object.__setattr__(self, arg, integer(getattr(self, arg), arg, at_least=1))
        object.__setattr__(self, "tolerance", real(self.tolerance, "tolerance", low=0.0, high=1.0, low_open=True))

    def to_dict(self) -> dict[str, Any]:
        return {"every_steps": self.every_steps, "window": self.window, "tolerance": self.tolerance}


# Per-tensor pruning rates: ((glob pattern, fraction of the survivors pruned per round), ...).
LayerRates = tuple[tuple[str, float], ...]


def _check_layer_rates(value: object) -> LayerRates:
    if value is None:
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise TypeError(f"layer_rates: expected {{pattern: rate}}, got {type(value).__name__}")
    result = []
    for item in items:
        if not isinstance(item, tuple) or len(item) != 2:
            raise TypeError(f"layer_rates: expected {{pattern: rate}} or (pattern, rate) pairs, got {item!r}")
        pattern, rate = item
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"layer_rates: a pattern must be a non-empty string, got {pattern!r}")
        r = real(rate, f"layer_rates[{pattern!r}]", low=0.0, high=1.0, high_open=True)
        result.append((pattern, r))
    return tuple(result)


@dataclass(frozen=True)
class LotteryTicketConfig:
    """Target sparsity, number of IMP rounds, rewind strategy and pruning scope.

    After round k of n, exactly ``round(N * (1 - s) ** (k / n))`` of the N prunable weights
    remain (per tensor when ``global_pruning`` is False), so the last round hits the target.

    ``layer_rates`` (``{glob pattern: rate}``, first match wins) prunes each matching tensor
    alone by its own rate per round: after round k a matched tensor of N weights keeps exactly
    ``round(N * (1 - rate) ** k)`` (Frankle & Carbin: 20% for fully connected layers, 10% for
    the output layer); the other tensors follow the schedule above, and ``target_sparsity``
    speaks for them only. ``early_bird`` (an `EarlyBird`) ends rounds once the mask settles.

    Example:
        >>> cfg = LotteryTicketConfig(0.9, 10)
        >>> round(cfg.prune_rate_per_round, 3)
        0.206
        >>> cfg.remaining_after(10, 1000)
        100
    """

    target_sparsity: float
    pruning_rounds: int
    rewind_strategy: RewindStrategy = dataclasses.field(default_factory=RewindStrategy.init)
    global_pruning: bool = True
    layer_rates: LayerRates = ()
    early_bird: EarlyBird | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_rates", _check_layer_rates(self.layer_rates))
        if self.early_bird is not None and not isinstance(self.early_bird, EarlyBird):
            raise TypeError(f"early_bird: expected an EarlyBird or None, got {type(self.early_bird).__name__}")
        s = real(self.target_sparsity, "target_sparsity", low=0.0, high=1.0, high_open=True)
        object.__setattr__(self, "target_sparsity", s)
        object.__setattr__(self, "pruning_rounds", integer(self.pruning_rounds, "pruning_rounds", at_least=1))
        if isinstance(self.rewind_strategy, str):
            object.__setattr__(self, "rewind_strategy", RewindStrategy.parse(self.rewind_strategy))
        if not isinstance(self.rewind_strategy, RewindStrategy):
            raise TypeError(f"rewind_strategy: expected a RewindStrategy, got {type(self.rewind_strategy).__name__}")
        boolean(self.global_pruning, "global_pruning")

    @property
    def prune_rate_per_round(self) -> float:
        """Fraction of the survivors pruned each round: ``1 - (1 - s) ** (1 / n)``."""
        return 1.0 - float((1.0 - self.target_sparsity) ** (1.0 / self.pruning_rounds))

    def layer_rate(self, name: str) -> float | None:
        """The per-round rate of tensor ``name`` from ``layer_rates`` (None: it follows the schedule)."""
        return next((rate for pattern, rate in self.layer_rates if fnmatch.fnmatchcase(name, pattern)), None)

    def remaining_after(self, round_index: int, total: int, name: str | None = None) -> int:
        """How many of ``total`` weights survive after ``round_index`` pruning rounds (of tensor
        ``name`` when given: its layer rate applies if it has one)."""
        k = integer(round_index, "round_index", at_least=0, at_most=self.pruning_rounds)
        rate = self.layer_rate(name) if name is not None else None
        if rate is not None:
            return round(total * float((1.0 - rate) ** k))
        return round(total * float((1.0 - self.target_sparsity) ** (k / self.pruning_rounds)))

    def with_rewind_strategy(self, strategy: RewindStrategy | str) -> LotteryTicketConfig:
        """A copy with another rewind strategy."""
        return dataclasses.replace(self, rewind_strategy=strategy)  # type: ignore[arg-type]

    def with_global_pruning(self, enabled: bool) -> LotteryTicketConfig:
        """A copy ranking all tensors together (True) or each tensor alone (False)."""
        return dataclasses.replace(self, global_pruning=enabled)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the strategy as its string)."""
        return {
            "target_sparsity": self.target_sparsity,
            "pruning_rounds": self.pruning_rounds,
            "rewind_strategy": str(self.rewind_strategy),
            "global_pruning": self.global_pruning,
            # Only when set, so files written before these options read the same.
            **({"layer_rates": dict(self.layer_rates)} if self.layer_rates else {}),
            **({"early_bird": self.early_bird.to_dict()} if self.early_bird is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LotteryTicketConfig:
        """Inverse of `to_dict`; raises ``TypeError``/``ValueError`` naming what is wrong."""
        if not isinstance(data, dict):
            raise TypeError(f"data: expected a dict from to_dict(), got {type(data).__name__}")
        fields = ("target_sparsity", "pruning_rounds", "rewind_strategy", "global_pruning")
        optional = ("layer_rates", "early_bird")
        if not set(fields) <= set(data) <= set(fields + optional):
            odd = sorted((set(fields) - set(data)) | (set(map(str, data)) - set(fields + optional)))
            raise ValueError(f"data: expected the keys {', '.join(fields)}; missing or unexpected: {', '.join(odd)}")
        bird = data.get("early_bird")
        if bird is not None and not isinstance(bird, dict):
            raise TypeError(f"early_bird: expected a dict from to_dict(), got {type(bird).__name__}")
        return cls(
            data["target_sparsity"],
            data["pruning_rounds"],
            RewindStrategy.parse(data["rewind_strategy"]),
            data["global_pruning"],
            layer_rates=data.get("layer_rates", ()),
            early_bird=EarlyBird(**bird) if bird is not None else None,
        )


def check_name_filter(spec: object, arg: str) -> NameFilter:
    """``spec`` if it is a `NameFilter` (None, a glob, a sequence of globs or a predicate)."""
    return name_filter(spec, arg)


def _matches(spec: NameFilter, name: str, tensor: Any) -> bool:
    if callable(spec):
        return bool(spec(name, tensor))
    patterns = [spec] if isinstance(spec, str) else list(spec or [])
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def select_names(
    candidates: Sequence[tuple[str, Any]],
    default: Callable[[str, Any], bool],
    include: NameFilter,
    exclude: NameFilter,
) -> list[str]:
    """Names of the tensors to prune, in model order.

    ``include`` (when given) replaces the default choice; ``exclude`` then removes names.
    """
    include, exclude = name_filter(include, "include"), name_filter(exclude, "exclude")
    chosen = [
        name
        for name, tensor in candidates
        if (default(name, tensor) if include is None else _matches(include, name, tensor))
        and not (exclude is not None and _matches(exclude, name, tensor))
    ]
    if not chosen:
        names = ", ".join(name for name, _ in candidates[:8]) or "none"
        raise ValueError(
            f"include/exclude: no parameters selected for pruning (candidates: {names}); "
            "pass include= a pattern or predicate matching the tensors to prune"
        )
    return chosen

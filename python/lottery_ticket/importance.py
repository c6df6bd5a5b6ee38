"""Importance scores: what the pruner ranks when it prunes (the weights' magnitude by default).

Whatever the scores, pruning goes through the one exact selection of the kernels
(`kernels.global_magnitude_masks` over the scores, with the current masks): the alive entries
with the smallest ``|score|`` are pruned, with the same kept counts, the same tie order (earlier
tensor, then earlier row-major index, first) and the same scope rules (``"global"``: one
ranking and count over all tensors; layer scope: each tensor alone). Only the scores change:

* ``"magnitude"``: the weights themselves (no copy), as in Frankle & Carbin.
* ``"random"``: the random-pruning control. Every weight gets an i.i.d. uniform score in
  [0, 1) from NumPy's PCG64 seeded by ``seed``, the same scores at every round (so masks stay
  nested and the final mask does not depend on the number of rounds). The survivors are then a
  uniformly random subset with exactly the counts magnitude pruning would keep: the same total
  under global scope (layers get whatever share chance gives them), the same count per tensor
  under layer scope. Scores are float64, so ties (which would favour earlier weights) are
  practically impossible.
* a callable ``(name, weight) -> scores``: one float array of the weight's shape per tensor
  (NumPy, or the weight's own array kind), finite. Ranked by ``|score|`` like weights, so
  return non-negative scores where the sign carries meaning.
* a model scorer: an object with a ``name`` and ``model_scores(model, weights) -> {name:
  scores}``, for scores that need the whole model and data, e.g.
  ``lottery_ticket.torch.Snip(loss_fn, batches)`` (SNIP, Lee et al. 2019).

Scores are computed and checked before anything changes, so a bad score raises (naming the
tensor) with the masks and weights untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ._validation import integer, same_shape
from .backends import array_backend
from .kernels import arrays as _arrays

NAMES = ("magnitude", "random")


@runtime_checkable
class ModelScorer(Protocol):
    """Scores that need the whole model (and usually data), such as SNIP's."""

    name: str

    def model_scores(self, model: Any, weights: Mapping[str, Any]) -> Mapping[str, Any]:
        """``{name: scores}`` for every entry of ``weights`` (the model's prunable tensors)."""
        ...


ScoreFn = Callable[[str, Any], Any]
Importance = str | ScoreFn | ModelScorer


def random_scores(weights: Mapping[str, Any], seed: int) -> dict[str, np.ndarray]:
    """I.i.d. uniform float64 scores in [0, 1), one array per weight, reproducible by ``seed``.

    Example:
        >>> import numpy as np
        >>> w = {"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float16)}
        >>> s = random_scores(w, seed=7)
        >>> [(n, v.shape, v.dtype.name) for n, v in s.items()]
        [('a', (2, 3), 'float64'), ('b', (4,), 'float64')]
        >>> bool((random_scores(w, seed=7)["b"] == s["b"]).all())
        True
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    return {name: rng.random(tuple(w.shape)) for name, w in weights.items()}


def _in_kind_of(scores: np.ndarray, weight: Any) -> Any:
    # The kernels return masks of the scores' array kind; the pruner needs the model's kind.
    backend = array_backend(weight)
    return backend.from_numpy(scores) if backend is not None else scores


# The exponent bits of each float format: all ones means inf or NaN.
_EXPONENT = {"float16": 0x7C00, "bfloat16": 0x7F80, "float32": 0x7F800000, "float64": 0x7FF0000000000000}


def check_scores(scores: Any, weight: Any, label: str) -> Any:
    """``scores`` for ``weight`` after checking them (raises naming ``label``), in the weight's
    array kind: a float array (NumPy or the weight's kind) of the same shape, all finite."""
    backend = array_backend(scores)
    if backend is None and not isinstance(scores, np.ndarray):
        raise TypeError(f"{label}: expected an array of scores, got {type(scores).__name__}")
    weight_backend = array_backend(weight)
    if backend is not None and (weight_backend is None or weight_backend.name != backend.name):
        raise TypeError(f"{label}: expected a NumPy array or an array of the weight's kind, got a {backend.name} array")
    bits = _arrays.float_bits(scores, label, writable=False)  # float dtypes only, host memory
    same_shape(label, bits.shape, weight.shape)
    exponent = bits.bits.dtype.type(_EXPONENT[bits.dtype])
    if bool(np.any((bits.bits & exponent) == exponent)):
        raise ValueError(f"{label}: scores must be finite (NaN or inf found)")
    return _in_kind_of(scores, weight) if isinstance(scores, np.ndarray) else scores


@dataclass(frozen=True)
class ImportanceRule:
    """A validated ``importance=`` option: its ``name`` (recorded in tickets) and how to score."""

    name: str
    seed: int
    source: Any = None  # the callable or model scorer, else None

    def scores(self, model: Any, weights: Mapping[str, Any]) -> Mapping[str, Any]:
        """The scores to rank for the prunable ``weights`` of ``model`` (checked)."""
        if self.name == "magnitude" and self.source is None:
            return weights
        if self.name == "random" and self.source is None:
            return {n: _in_kind_of(s, weights[n]) for n, s in random_scores(weights, self.seed).items()}
        if isinstance(self.source, ModelScorer):
            found = self.source.model_scores(model, weights)
            if not isinstance(found, Mapping) or set(found) != set(weights):
                got = sorted(found) if isinstance(found, Mapping) else type(found).__name__
                raise ValueError(
                    f"importance: {self.name}.model_scores must return one entry per weight {sorted(weights)}, got {got}"
                )
            return {n: check_scores(found[n], w, f"importance[{n!r}]") for n, w in weights.items()}
        return {n: check_scores(self.source(n, w), w, f"importance({n!r})") for n, w in weights.items()}


def resolve(importance: object, seed: object = 0) -> ImportanceRule:
    """Check the pruner's ``importance`` and ``seed`` options (raises naming the argument).

    Example:
        >>> resolve("random", seed=3)
        ImportanceRule(name='random', seed=3, source=None)
    """
    seed = integer(seed, "seed", at_least=0, type_error=ValueError)
    if isinstance(importance, str):
        if importance == "snip":
            raise ValueError(
                "importance: 'snip' needs a loss and minibatches; pass "
                "importance=lottery_ticket.torch.Snip(loss_fn, batches)"
            )
        if importance not in NAMES:
            raise ValueError(f"importance: expected 'magnitude', 'random', a callable or a scorer, got {importance!r}")
        return ImportanceRule(importance, seed)
    if isinstance(importance, ModelScorer):
        if not isinstance(importance.name, str):
            raise TypeError(f"importance: the scorer's name must be a str, got {type(importance.name).__name__}")
        return ImportanceRule(importance.name, seed, importance)
    if callable(importance):
        return ImportanceRule(
            f"callable:{getattr(importance, '__name__', type(importance).__name__)}", seed, importance
        )
    raise TypeError(
        f"importance: expected 'magnitude', 'random', a callable (name, weight) -> scores or a scorer, got {type(importance).__name__}"
    )

"""Benchmark workloads: the tensor shapes of ResNet-50 / BERT-base layer mixes at any size, as weights.

Shared by ``benches/`` (pytest-benchmark) and ``lottery-ticket bench`` so both time the same
tensors. A workload is described by a small, picklable :class:`WorkloadSpec` (also a string
token, so a subprocess can rebuild the exact same weights from a seed) and materialised as
torch CPU tensors by :func:`materialize`. torch is imported lazily.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

# The pruning step every benchmark performs: 20% of the weights, one Lottery Ticket round.
AMOUNT = 0.2

Mix = Literal["bert", "resnet"]
DType = Literal["f32", "bf16"]
Shape = tuple[int, ...]


def bert_shapes(hidden: int, layers: int = 12, vocab: int = 30522) -> list[Shape]:
    """Every weight and bias of a BERT encoder (BERT-base at ``hidden=768``: 109.5 M)."""
    h = hidden
    shapes: list[Shape] = [(vocab, h), (512, h), (2, h), (h,), (h,)]
    for _ in range(layers):
        for _ in range(4):  # query, key, value, attention output
            shapes += [(h, h), (h,)]
        shapes += [(h,), (h,), (4 * h, h), (4 * h,), (h, 4 * h), (h,), (h,), (h,)]
    return shapes + [(h, h), (h,)]  # pooler


def resnet50_shapes(width: float) -> list[Shape]:
    """Conv, batch-norm and classifier tensors of ResNet-50 with channels scaled by ``width``."""

    def ch(c: int) -> int:
        return max(1, round(c * width))

    def bn(c: int) -> list[Shape]:
        return [(c,), (c,)]

    stem = ch(64)
    shapes: list[Shape] = [(stem, 3, 7, 7), *bn(stem)]
    inputs = stem
    for blocks, mid_channels in ((3, 64), (4, 128), (6, 256), (3, 512)):
        mid, out = ch(mid_channels), ch(4 * mid_channels)
        for block in range(blocks):
            shapes += [(mid, inputs, 1, 1), *bn(mid), (mid, mid, 3, 3), *bn(mid), (out, mid, 1, 1), *bn(out)]
            if block == 0:  # projection shortcut
                shapes += [(out, inputs, 1, 1), *bn(out)]
            inputs = out
    classes = max(2, round(1000 * width))
    return shapes + [(classes, inputs), (classes,)]


def count(shapes: list[Shape]) -> int:
    return sum(math.prod(s) for s in shapes)


def _closest(size: int, shapes_at: dict[int, list[Shape]]) -> list[Shape]:
    return min(shapes_at.values(), key=lambda shapes: abs(count(shapes) - size))


def mix_shapes(mix: Mix, params: int) -> list[Shape]:
    """Shapes of ``mix`` scaled (hidden size or channel width) to the closest total to ``params``."""
    if mix == "bert":
        lo, hi = 1, 1
        while count(bert_shapes(hi)) < params:
            hi *= 2
        while hi - lo > 1:  # count grows with the hidden size: bisect for the crossing
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if count(bert_shapes(mid)) < params else (lo, mid)
        return _closest(params, {h: bert_shapes(h) for h in (lo, hi)})
    lo_w, hi_w = 1e-3, 1.0
    while count(resnet50_shapes(hi_w)) < params:
        hi_w *= 2
    for _ in range(60):
        mid_w = (lo_w + hi_w) / 2
        lo_w, hi_w = (mid_w, hi_w) if count(resnet50_shapes(mid_w)) < params else (lo_w, mid_w)
    return _closest(params, {0: resnet50_shapes(lo_w), 1: resnet50_shapes(hi_w)})


def human(n: float) -> str:
    """``109_482_240 -> '109.5M'``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(int(n))


@dataclass(frozen=True)
class WorkloadSpec:
    """What to generate: a layer mix at a size and dtype, from a seed."""

    mix: Mix
    params: int  # requested size; the actual count is `len` of the generated tensors
    dtype: DType = "f32"
    seed: int = 0
    shapes: list[Shape] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.mix not in ("bert", "resnet"):
            raise ValueError(f"mix: expected 'bert' or 'resnet', got {self.mix!r}")
        if self.dtype not in ("f32", "bf16"):
            raise ValueError(f"dtype: expected 'f32' or 'bf16', got {self.dtype!r}")
        if self.params < 1000:
            raise ValueError(f"params: expected at least 1000 weights, got {self.params}")
        object.__setattr__(self, "shapes", mix_shapes(self.mix, self.params))

    @property
    def numel(self) -> int:
        return count(self.shapes)

    @property
    def bytes_per_weight(self) -> int:
        return 4 if self.dtype == "f32" else 2

    @property
    def label(self) -> str:
        name = "BERT-like" if self.mix == "bert" else "ResNet-50-like"
        return f"{name} {human(self.numel)} {self.dtype}"

    @property
    def token(self) -> str:
        """``mix:params:dtype:seed``, parsed back by :meth:`parse`."""
        return f"{self.mix}:{self.params}:{self.dtype}:{self.seed}"

    @classmethod
    def parse(cls, token: str) -> WorkloadSpec:
        mix, params, dtype, seed = token.split(":")
        return cls(mix, int(params), dtype, int(seed))  # type: ignore[arg-type]


@dataclass
class Workload:
    """Materialised weights plus the exact answer every benchmark is checked against."""

    spec: WorkloadSpec
    weights: list[torch.Tensor]
    k: int  # weights pruned by one step: round-half-even(AMOUNT * numel), as torch and ours
    _threshold: float | None = None

    @property
    def threshold(self) -> float:
        """The k-th smallest magnitude (1-based): every correct mask prunes below it, keeps above."""
        if self._threshold is None:
            self._threshold = _kth_magnitude(self.weights, self.k)
        return self._threshold


def _kth_magnitude(weights: list[torch.Tensor], k: int) -> float:
    flat = np.concatenate([w.float().numpy().ravel() for w in weights])
    np.abs(flat, out=flat)
    flat.partition(k - 1)
    kth = flat[k - 1]
    # The definition, checked independently of how it was found.
    below, at_most = np.count_nonzero(flat < kth), np.count_nonzero(flat <= kth)
    assert below < k <= at_most, "reference threshold is not the k-th smallest magnitude"
    return float(kth)


def materialize(spec: WorkloadSpec) -> Workload:
    """Normal weights with a per-tensor ``1/sqrt(fan_in)`` scale (layers differ, as after training)."""
    import torch

    generator = torch.Generator().manual_seed(spec.seed)
    dtype = torch.float32 if spec.dtype == "f32" else torch.bfloat16
    weights = []
    for shape in spec.shapes:
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        w = torch.randn(shape, generator=generator).mul_(1.0 / math.sqrt(fan_in))
        weights.append(w if dtype == torch.float32 else w.to(dtype))
    k = round(AMOUNT * spec.numel)
    if k < 1:
        raise ValueError(f"params: {spec.numel} weights are too few to prune {AMOUNT:.0%} of")
    return Workload(spec, weights, k)


def suite(scale: float = 1.0, big: bool = False) -> list[WorkloadSpec]:
    """The issue's workloads (25 M ResNet-50, 110 M BERT f32 and bf16, optionally 440 M), scaled."""
    specs = [
        WorkloadSpec("resnet", round(25.5e6 * scale)),
        WorkloadSpec("bert", round(110e6 * scale)),
        WorkloadSpec("bert", round(110e6 * scale), "bf16"),
    ]
    if big:
        specs.append(WorkloadSpec("bert", round(440e6 * scale)))
    return specs

"""Benchmark workloads: the tensor shapes of BERT-base, ResNet-50 (all tensors, or its 54 conv and
classifier weights), LeNet-300-100 and uniform 20 M-element slabs, at any size, as weights.

Shared by ``benches/`` (pytest-benchmark) and ``lottery-ticket bench`` so both time the same
tensors. A workload is described by a small, picklable :class:`WorkloadSpec` (also a string
token, so a subprocess can rebuild the exact same weights from a seed) and materialised as
torch CPU tensors by :func:`materialize`. torch is imported lazily.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

# The pruning step every benchmark performs unless a workload says otherwise: 20% of the
# weights, one Lottery Ticket round.
AMOUNT = 0.2
SLAB = 20_000_000  # elements per tensor of the "slabs" mix (the cliff case)
# Above this many weights the reference threshold comes from bit histograms instead of a
# concatenated copy (2.2 B bf16 would need 8.8 GB as f32).
HISTOGRAM_ABOVE = 200_000_000

Mix = Literal["bert", "resnet", "conv", "lenet", "slabs"]
MIXES = ("bert", "resnet", "conv", "lenet", "slabs")
DType = Literal["f32", "bf16", "f16"]
DTYPES = ("f32", "bf16", "f16")
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


def conv_shapes(width: float) -> list[Shape]:
    """ResNet-50's 53 conv weights and its classifier weight: what IMP on ResNet-50 prunes."""
    return [s for s in resnet50_shapes(width) if len(s) > 1]


def lenet_shapes(scale: float) -> list[Shape]:
    """LeNet-300-100's weights (266 K at ``scale=1``), hidden layers scaled."""
    h1, h2 = max(1, round(300 * scale)), max(1, round(100 * scale))
    return [(h1, 784), (h2, h1), (10, h2)]


def slab_shapes(params: int) -> list[Shape]:
    """``params`` weights in tensors of ``SLAB`` elements (the last one shorter)."""
    full, rest = divmod(params, SLAB)
    shapes: list[Shape] = [(SLAB,)] * full
    return shapes + [(rest,)] if rest else shapes


def _scaled(shapes_at: Callable[[float], list[Shape]], params: int) -> list[Shape]:
    """``shapes_at(x)`` for the x whose total is closest to ``params`` (totals grow with x)."""
    lo, hi = 1e-3, 1.0
    while count(shapes_at(hi)) < params:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(shapes_at(mid)) < params else (lo, mid)
    return _closest(params, {0: shapes_at(lo), 1: shapes_at(hi)})


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
    if mix == "slabs":
        return slab_shapes(params)
    return _scaled({"resnet": resnet50_shapes, "conv": conv_shapes, "lenet": lenet_shapes}[mix], params)


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
    amount: float = AMOUNT  # the fraction one step prunes
    shapes: list[Shape] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.mix not in MIXES:
            raise ValueError(f"mix: expected one of {', '.join(MIXES)}, got {self.mix!r}")
        if not 0.0 < self.amount < 1.0:
            raise ValueError(f"amount: expected a fraction in (0, 1), got {self.amount}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {', '.join(DTYPES)}, got {self.dtype!r}")
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
        name = {
            "bert": "BERT-like",
            "resnet": "ResNet-50-like",
            "conv": "ResNet-50 convs",
            "lenet": "LeNet-300-100-like",
            "slabs": f"{human(SLAB)} slabs",
        }[self.mix]
        at = "" if self.amount == AMOUNT else f" @{self.amount:g}"
        return f"{name} {human(self.numel)} {self.dtype}{at}"

    @property
    def token(self) -> str:
        """``mix:params:dtype:seed:amount``, parsed back by :meth:`parse`."""
        return f"{self.mix}:{self.params}:{self.dtype}:{self.seed}:{self.amount!r}"

    @classmethod
    def parse(cls, token: str) -> WorkloadSpec:
        mix, params, dtype, seed, amount = token.split(":")
        return cls(mix, int(params), dtype, int(seed), float(amount))  # type: ignore[arg-type]


@dataclass
class Workload:
    """Materialised weights plus the exact answer every benchmark is checked against."""

    spec: WorkloadSpec
    weights: list[torch.Tensor]
    k: int  # weights pruned by one step: round-half-even(amount * numel), as torch and ours
    _threshold: float | None = None

    @property
    def threshold(self) -> float:
        """The k-th smallest magnitude (1-based): every correct mask prunes below it, keeps above."""
        if self._threshold is None:
            self._threshold = _kth_magnitude(self.weights, self.k)
        return self._threshold


def _kth_magnitude(weights: list[torch.Tensor], k: int) -> float:
    if sum(w.numel() for w in weights) > HISTOGRAM_ABOVE:
        return _kth_by_histogram(weights, k)
    flat = np.concatenate([w.float().numpy().ravel() for w in weights])
    np.abs(flat, out=flat)
    flat.partition(k - 1)
    kth = flat[k - 1]
    # The definition, checked independently of how it was found.
    below, at_most = np.count_nonzero(flat < kth), np.count_nonzero(flat <= kth)
    assert below < k <= at_most, "reference threshold is not the k-th smallest magnitude"
    return float(kth)


def _magnitude_bits(w: torch.Tensor) -> np.ndarray:
    """|w|'s bits as uint32, ordered like |w| (bf16 and f16 widened exactly to f32)."""
    import torch

    if w.dtype == torch.bfloat16:
        return (w.reshape(-1).view(torch.int16).numpy().view(np.uint16) & 0x7FFF).astype(np.uint32) << 16
    return w.reshape(-1).float().numpy().view(np.uint32) & np.uint32(0x7FFF_FFFF)


def _kth_by_histogram(weights: list[torch.Tensor], k: int) -> float:
    """The k-th smallest magnitude from two 16-bit digit histograms of the magnitude bits."""
    high = np.zeros(1 << 16, dtype=np.int64)
    for w in weights:
        high += np.bincount(_magnitude_bits(w) >> 16, minlength=1 << 16)
    top = int(np.searchsorted(np.cumsum(high), k))
    before = int(high[:top].sum())
    low = np.zeros(1 << 16, dtype=np.int64)
    for w in weights:
        bits = _magnitude_bits(w)
        low += np.bincount(bits[(bits >> 16) == top] & 0xFFFF, minlength=1 << 16)
    bottom = int(np.searchsorted(np.cumsum(low), k - before))
    return float(np.array([(top << 16) | bottom], dtype=np.uint32).view(np.float32)[0])


def torch_dtype(name: DType) -> torch.dtype:
    """The torch dtype of a workload's dtype name."""
    import torch

    return {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[name]


def materialize(spec: WorkloadSpec) -> Workload:
    """Normal weights with a per-tensor ``1/sqrt(fan_in)`` scale (layers differ, as after training)."""
    import torch

    generator = torch.Generator().manual_seed(spec.seed)
    dtype = torch_dtype(spec.dtype)
    weights = []
    for shape in spec.shapes:
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        w = torch.randn(shape, generator=generator).mul_(1.0 / math.sqrt(fan_in))
        weights.append(w if dtype == torch.float32 else w.to(dtype))
    k = round(spec.amount * spec.numel)
    if k < 1:
        raise ValueError(f"params: {spec.numel} weights are too few to prune {spec.amount:.0%} of")
    return Workload(spec, weights, k)


# What each workload of the suite measures (method keys, see `methods`): the table rows,
# each with its peers, and no peer where it would only cost time (torch.prune at 560 M).
BERT_KEYS = (
    "floor",
    "numpy",
    "torch_prune",
    "ours",
    "ours_1thread",
    "ours_cold",
    "ours_masked",
    "ours_in_place",
    "mask_bytes",
    "ours_torch",
    "kthvalue",
    "drop_in",
    "drop_in_grad",
    "drop_in_again",
    "ours_apply",
    "torch_mul",
    "ours_rewind",
    "torch_where",
)
SUITE_KEYS: dict[tuple[str, str], tuple[str, ...]] = {
    ("bert", "f32"): BERT_KEYS,
    ("bert", "bf16"): ("floor", "numpy", "ours", "ours_masked", "ours_in_place"),
    ("bert", "f16"): ("floor", "numpy", "ours", "ours_masked", "ours_in_place"),
    ("conv", "f32"): ("floor", "numpy", "ours", "ours_masked", "mask_bytes"),
    ("lenet", "f32"): (
        "floor",
        "numpy",
        "ours",
        "ours_masked",
        "torch_prune",
        "drop_in",
        "drop_in_grad",
        "drop_in_again",
        "ours_apply",
        "applier",
        "torch_mul",
    ),
    ("slabs", "f32"): ("floor", "ours"),
    ("slabs", "bf16"): ("floor", "ours"),
}


def suite(scale: float = 1.0, big: bool = False) -> list[WorkloadSpec]:
    """The suite's workloads, scaled: 110 M BERT f32, bf16 and f16, ResNet-50's 25 M conv weights,
    LeNet-300-100, and the cliff sweep (20 M-element slabs at amount 0.5: 110 M and 560 M f32,
    110 M and, with ``big``, 2.2 B bf16, more than 2^31 weights in one call)."""

    def n(params: float) -> int:
        return max(2000, round(params * scale))

    specs = [
        WorkloadSpec("bert", n(110e6)),
        WorkloadSpec("bert", n(110e6), "bf16"),
        WorkloadSpec("bert", n(110e6), "f16"),
        WorkloadSpec("conv", n(25.5e6)),
        WorkloadSpec("lenet", n(266_200)),
        WorkloadSpec("slabs", n(110e6), amount=0.5),
        WorkloadSpec("slabs", n(560e6), amount=0.5),
        WorkloadSpec("slabs", n(110e6), "bf16", amount=0.5),
    ]
    if big:
        specs.append(WorkloadSpec("slabs", n(2.2e9), "bf16", amount=0.5))
    return specs


def suite_keys(spec: WorkloadSpec) -> tuple[str, ...]:
    return SUITE_KEYS[(spec.mix, spec.dtype)]

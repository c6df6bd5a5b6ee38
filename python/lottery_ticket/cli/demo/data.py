"""The demo's data sets: MNIST-1D (the default) and scikit-learn's digits, as fixed splits.

* **MNIST-1D** (Greydanus 2020, "Scaling down deep learning"; PyPI ``mnist1d``): 5000 signals
  of length 40 in 10 classes, generated locally by ``mnist1d.data.make_dataset`` from its
  templates with the package's default arguments and seed (no download). Its own 4000 / 1000
  train / test split is kept; 500 validation signals are carved from the training part (used
  only to pick the early-stop iteration), leaving 3500 for training. Made for small-scale
  science: an MLP reaches only ~60-65%, so sparse networks run out of capacity early and the
  lottery-ticket effect is large.
* **digits** (``--data digits``): ``sklearn.datasets.load_digits`` (1797 8x8 images, shipped
  with scikit-learn), pixels scaled to [0, 1], a stratified 1257 / 180 / 360 split.

Splits never change with the seed: only initialisation and batch order do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

SPLIT_SEED = 0
MNIST1D_VALIDATION = 500
DIGITS_TEST, DIGITS_VALIDATION = 360, 180


@dataclass(frozen=True)
class DemoData:
    """A fixed train / validation / test split as float32 / int64 tensors."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


@dataclass(frozen=True)
class DataSet:
    """A data set and the demo's training recipe for it (Frankle & Carbin's, scaled to it)."""

    name: str
    description: str
    layer_sizes: tuple[int, ...]  # LeNet-300-100-shaped MLP: inputs-300-100-10
    learning_rate: float
    batch_size: int
    iterations: int  # training iterations per round (Adam)
    rounds: int  # default pruning rounds of 20%


DATA_SETS = {
    # Measured (seed 1, 15 rounds): the dense network's validation loss bottoms out at ~300 of
    # 1500 iterations, sparse tickets at 3.5% near the end; longer training changed little.
    "mnist1d": DataSet(
        "mnist1d",
        "MNIST-1D (mnist1d.make_dataset defaults): 3500 train / 500 validation / 1000 test",
        (40, 300, 100, 10),
        2e-3,
        100,
        1500,
        15,
    ),
    # See train.DIGITS_ITERATIONS for why 1000 iterations and 20 rounds.
    "digits": DataSet(
        "digits",
        "sklearn.datasets.load_digits: 1257 train / 180 validation / 360 test, fixed split",
        (64, 300, 100, 10),
        1.2e-3,
        60,
        1000,
        20,
    ),
}


def _tensors(*arrays: Any) -> DemoData:
    import numpy as np

    import torch

    return DemoData(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))


def load_mnist1d() -> DemoData:
    """MNIST-1D generated locally with ``mnist1d``'s default arguments (seed 42).

    ``make_dataset`` seeds NumPy's and Python's global generators; their states are restored
    afterwards so that loading the data changes nothing else in the process.

    Example:
        >>> data = load_mnist1d()
        >>> tuple(data.train_x.shape), tuple(data.val_x.shape), tuple(data.test_x.shape)
        ((3500, 40), (500, 40), (1000, 40))
    """
    import random

    import numpy as np
    from mnist1d.data import get_dataset_args, make_dataset  # type: ignore[import-untyped, unused-ignore]

    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        generated = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    x = np.asarray(generated["x"], dtype=np.float32)
    y = np.asarray(generated["y"], dtype=np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    val, train = order[:MNIST1D_VALIDATION], order[MNIST1D_VALIDATION:]
    test_x = np.asarray(generated["x_test"], dtype=np.float32)
    test_y = np.asarray(generated["y_test"], dtype=np.int64)
    return _tensors(x[train], y[train], x[val], y[val], test_x, test_y)


def load_digits_split() -> DemoData:
    """Load sklearn's digits and split them (train / validation / test) the same way every time.

    Example:
        >>> data = load_digits_split()
        >>> tuple(data.train_x.shape), tuple(data.test_x.shape)
        ((1257, 64), (360, 64))
    """
    import numpy as np

    # scikit-learn ships no type information
    from sklearn.datasets import load_digits  # type: ignore[import-untyped, unused-ignore]
    from sklearn.model_selection import train_test_split  # type: ignore[import-untyped, unused-ignore]

    images, labels = load_digits(return_X_y=True)
    x = (np.asarray(images, dtype=np.float32) / 16.0).astype(np.float32)
    y = np.asarray(labels, dtype=np.int64)
    rest_x, test_x, rest_y, test_y = train_test_split(x, y, test_size=DIGITS_TEST, stratify=y, random_state=SPLIT_SEED)
    train_x, val_x, train_y, val_y = train_test_split(
        rest_x, rest_y, test_size=DIGITS_VALIDATION, stratify=rest_y, random_state=SPLIT_SEED
    )
    return _tensors(train_x, train_y, val_x, val_y, test_x, test_y)


def load(name: str) -> DemoData:
    """The split of data set ``name`` (``"mnist1d"`` or ``"digits"``)."""
    if name == "mnist1d":
        return load_mnist1d()
    if name == "digits":
        return load_digits_split()
    raise ValueError(f"--data: expected one of {', '.join(DATA_SETS)}, got {name!r}")

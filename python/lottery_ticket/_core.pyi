"""Typed surface of the Rust extension. Use the documented wrappers in lottery_ticket.kernels."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "__version__",
    "alive_counts",
    "apply_masks",
    "mapping_faulted",
    "mask_products",
    "ones_of",
    "rewind",
    "scanner",
    "select_masks",
    "select_masks_in_place",
    "select_threshold",
    "unwatch_mapping",
    "watch_mapping",
    "write_pruned",
]
__version__: str

def scanner() -> str: ...
def select_masks(
    weights: Sequence[npt.NDArray[np.uint16] | npt.NDArray[np.uint32] | npt.NDArray[np.uint64]],
    dtypes: Sequence[str],
    masks: Sequence[npt.NDArray[np.uint8]] | None,
    out: npt.NDArray[np.uint8] | None,
    amount: int | float,
    scope: str,
    names: Sequence[str],
    state: tuple[
        Sequence[npt.NDArray[np.uint16] | npt.NDArray[np.uint32] | npt.NDArray[np.uint64]],
        Sequence[npt.NDArray[np.uint16] | npt.NDArray[np.uint32] | npt.NDArray[np.uint64]] | None,
    ]
    | None = None,
) -> tuple[int, int]: ...
def select_masks_in_place(
    weights: Sequence[npt.NDArray[np.uint16] | npt.NDArray[np.uint32] | npt.NDArray[np.uint64]],
    dtypes: Sequence[str],
    masks: Sequence[npt.NDArray[np.uint8]],
    amount: int | float,
    scope: str,
    names: Sequence[str],
) -> tuple[int, int]: ...
def apply_masks(
    weights: Sequence[npt.NDArray[np.uint16] | npt.NDArray[np.uint32] | npt.NDArray[np.uint64]],
    masks: Sequence[npt.NDArray[np.uint8]],
    names: Sequence[str],
) -> None: ...
def mask_products(
    weights: Sequence[npt.NDArray[np.uint16] | npt.NDArray[np.uint32] | npt.NDArray[np.uint64]],
    dtypes: Sequence[str],
    keep: Sequence[npt.NDArray[np.uint8]],
    previous: Sequence[npt.NDArray[np.uint16] | npt.NDArray[np.uint32] | npt.NDArray[np.uint64] | None],
    masks: Sequence[npt.NDArray[np.uint16] | npt.NDArray[np.uint32] | npt.NDArray[np.uint64]],
    products: Sequence[npt.NDArray[np.uint16] | npt.NDArray[np.uint32] | npt.NDArray[np.uint64]] | None,
    names: Sequence[str],
) -> None: ...
def ones_of(
    masks: Sequence[npt.NDArray[np.uint16] | npt.NDArray[np.uint32] | npt.NDArray[np.uint64] | None],
    dtypes: Sequence[str],
    out: npt.NDArray[np.uint8],
    sizes: Sequence[int],
    names: Sequence[str],
) -> None: ...
def rewind(
    weights: Sequence[npt.NDArray[np.uint16] | npt.NDArray[np.uint32] | npt.NDArray[np.uint64]],
    snapshots: Sequence[npt.NDArray[np.uint16] | npt.NDArray[np.uint32] | npt.NDArray[np.uint64]],
    masks: Sequence[npt.NDArray[np.uint8]],
    names: Sequence[str],
) -> None: ...
def alive_counts(masks: Sequence[npt.NDArray[np.uint8]]) -> list[int]: ...
def select_threshold(
    weights: Sequence[npt.NDArray[np.uint16] | npt.NDArray[np.uint32] | npt.NDArray[np.uint64]],
    dtypes: Sequence[str],
    masks: Sequence[npt.NDArray[np.uint8]] | None,
    amount: int | float,
    names: Sequence[str],
) -> tuple[int, int, int, int, int]: ...
def write_pruned(
    src: npt.NDArray[np.uint16] | npt.NDArray[np.uint32] | npt.NDArray[np.uint64],
    dtype: str,
    dst: npt.NDArray[np.uint16] | npt.NDArray[np.uint32] | npt.NDArray[np.uint64],
    key: int,
    key_width_bits: int,
    ties_remaining: int,
    mask: npt.NDArray[np.uint8] | None = None,
    name: str | None = None,
) -> tuple[int, int]: ...
def watch_mapping(map: npt.NDArray[np.uint8]) -> int: ...
def mapping_faulted(token: int) -> bool: ...
def unwatch_mapping(token: int) -> bool: ...

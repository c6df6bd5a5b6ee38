"""torch.nn.utils.prune's pruned state (a float mask and the masked weight) from the kernels:
from given bool masks (`mask_products`), or written by the selection itself
(`global_magnitude_state`), which reads each weight once for all three outputs; and the
survivors a later pruning ranks again (`ranked_again`)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

import numpy as np

from .. import _core, _validation
from . import arrays as _arrays
from . import view_cache as _plan
from .buffer_cache import host_array
from .gc_pause import gc_paused


@gc_paused
def mask_products(weights: Any, keep: Any, *, previous: Any = None, products: bool = True) -> tuple[Any, Any]:
    """``torch.nn.utils.prune``'s state for bool masks, in one pass over the weights: per weight,
    its mask in the weight's dtype (1.0 kept, 0.0 pruned) and the product ``mask * weight`` (a
    float multiply, so a pruned negative weight gives -0.0 and an infinite one NaN, as torch's
    product does). Two conversions by array ops would each write fresh pages. float32 and
    float64 outputs of 64 MiB or more in one call are written past the CPU caches (x86-64),
    which would not hold them anyway.

    ``weights``: float host arrays (float16, bfloat16, float32, float64; bf16 products from
    its bits, the same values); ``keep``: bool masks of their shapes, in the
    same container. ``previous``: optional float masks of an earlier pruning, in that container
    too (an entry may be None: pruned for the first time), each of its weight's shape and
    dtype, combined as torch's ``PruningContainer`` combines a repeated pruning: an entry whose
    previous mask is 1 was ranked and takes ``keep``; any other previous value is multiplied
    in once more (0 stays 0, a custom 0.5 becomes 0.25). Returns ``(masks, products)``: new
    arrays of the weights' framework, in that container (list or dict); ``products`` is None
    when not asked for (``products=False``: a product that autograd must record is the
    caller's to compute).

    Example:
        >>> import numpy as np
        >>> masks, products = mask_products([np.array([2.0, -3.0])], [np.array([True, False])])
        >>> masks[0].tolist(), products[0].tolist()
        ([1.0, 0.0], [2.0, -0.0])
        >>> again, _ = mask_products([np.array([2.0, -3.0])], [np.array([False, True])], previous=masks)
        >>> again[0].tolist()
        [0.0, 0.0]
    """
    names, values = _arrays.items(weights, "weights")
    keep_values = _arrays.matching_items(keep, "keep", names, len(values))
    labels = _validation.labels("weights", names, len(values))
    views = [_arrays.float_bits(v, label, writable=False) for v, label in zip(values, labels)]
    keep_labels = _validation.labels("keep", names, len(values))
    keep_views = [
        _arrays.own_buffer(_arrays.mask_bytes(k, label, v.shape))
        for k, label, v in zip(keep_values, keep_labels, views)
    ]
    previous_bits = _previous_bits(previous, names, views)
    masks, made = _state_buffers(views, products)
    _core.mask_products(
        [v.bits for v in views],
        [v.dtype for v in views],
        keep_views,
        previous_bits,
        masks,
        made,
        _validation.quoted(names),
    )
    typed = _typed(names, values, views)
    return typed(masks), None if made is None else typed(made)


def _previous_bits(previous: Any, names: list[Hashable] | None, views: list[_arrays.Bits]) -> list[np.ndarray | None]:
    """Bit views of `mask_products`' ``previous`` masks (None entries stay None), each checked
    against its weight's shape and dtype."""
    if previous is None:
        return [None] * len(views)
    values = _arrays.matching_items(previous, "previous", names, len(views))
    labels = _validation.labels("previous", names, len(views))
    bits: list[np.ndarray | None] = []
    for value, label, view in zip(values, labels, views):
        if value is None:
            bits.append(None)
            continue
        mask = _arrays.float_bits(value, label, writable=False)
        if mask.dtype != view.dtype or mask.shape != view.shape:
            raise ValueError(
                f"{label}: dtype {mask.dtype} and shape {mask.shape}, but its weight has {view.dtype} {view.shape}"
            )
        bits.append(mask.bits)
    return bits


class PrunedState(NamedTuple):
    """`global_magnitude_state`'s result, each in the weights' container (list or dict)."""

    keep: Any
    """bool masks (True = kept), as `global_magnitude_masks` returns them, or None
    (``keep=False``)."""
    masks: Any
    """float masks in each weight's dtype: 1.0 kept, 0.0 pruned (torch's ``name_mask``)."""
    products: Any
    """``mask * weight`` as torch's float multiply makes it, or None (``products=False``)."""


@gc_paused
def global_magnitude_state(
    weights: Any,
    amount: int | float,
    masks: Any = None,
    scope: str = "global",
    *,
    products: bool = True,
    keep: bool = True,
) -> PrunedState:
    """`global_magnitude_masks` and `mask_products` of its masks in one pass over the weights:
    the bool masks, torch.prune's float masks and (unless ``products=False``) the masked
    weights, equal to what the two calls return, bit for bit.

    The selection writes the float mask and product of each piece of the weights right after
    ranking it, while those weights are still in the CPU cache, where the two calls read every
    weight and mask byte a second time: what ``lottery_ticket.torch.global_unstructured``
    runs for a first pruning.

    Args:
        weights: list or dict of float host arrays (NumPy or torch CPU; f16, bf16, f32, f64).
        amount, masks, scope: as `global_magnitude_masks`.
        products: False leaves the products to the caller (a product autograd must record).
        keep: False returns no bool masks (``keep`` None): each piece's is ranked into a
            scratch that stays in the CPU cache, one byte a weight less written to memory,
            for a caller that needs only torch.prune's state (the drop-in's first pruning).

    Returns:
        A `PrunedState` ``(keep, masks, products)``: new arrays of the weights' framework; each
        float mask and product is an array of its own.

    Example:
        >>> import numpy as np
        >>> keep, masks, products = global_magnitude_state([np.array([0.5, -0.1, 2.0, -3.0])], 2)
        >>> keep[0].tolist(), masks[0].tolist(), products[0].tolist()
        ([False, False, True, True], [0.0, 0.0, 1.0, 1.0], [0.0, -0.0, 2.0, -3.0])
    """
    names, values = _arrays.items(weights, "weights")
    amount = _validation.amount(amount)
    _validation.scope(scope)
    views, current = _arrays.ranking_views(names, values, masks, _plan.read_views)
    buffer, fresh = _arrays.new_masks(values, [b.shape for b in views]) if keep else (None, None)
    float_masks, made = _state_buffers(views, products)
    _core.select_masks(
        [b.bits for b in views],
        [b.dtype for b in views],
        current,
        buffer,
        amount,
        scope,
        _validation.quoted(names),
        state=(float_masks, made),
    )
    typed = _typed(names, values, views)
    bools = None if fresh is None else _arrays.shaped_like(names, fresh)
    return PrunedState(bools, typed(float_masks), None if made is None else typed(made))


def _state_buffers(views: list[_arrays.Bits], products: bool) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Uninitialised float masks and (with ``products``) products for ``views``' weights: one
    array per tensor, never views of one buffer, as each becomes a module's own buffer;
    allocated as the weights' bits (NumPy has no bf16), then viewed in their dtype."""
    masks = [host_array(v.shape, v.bits.dtype) for v in views]
    return masks, [host_array(v.shape, v.bits.dtype) for v in views] if products else None


def _typed(names: list[Hashable] | None, values: list[Any], views: list[_arrays.Bits]) -> Any:
    """What turns result bits (one array per weight) into arrays of the weights' framework and
    float dtypes, in their container."""
    wrap = _arrays.float_wrappers(values)

    def typed(arrays: list[np.ndarray]) -> Any:
        return _arrays.shaped_like(names, [w(a, v.dtype) for w, a, v in zip(wrap, arrays, views)])

    return typed


@gc_paused
def ranked_again(masks: Sequence[Any], likes: Sequence[Any]) -> list[Any]:
    """The survivors torch.prune's ``PruningContainer`` ranks again: bool masks, True where an
    entry of a float mask is exactly 1.0 (a pruned 0.0 stays pruned; a custom value such as 0.5
    is multiplied in, not ranked), all True where ``masks[i]`` is None (never pruned).

    ``masks``: float host arrays (f16, bf16, f32, f64) or None, each of ``likes[i]``'s shape;
    ``likes``: the arrays whose shapes and array kind the result takes (the pruned parameters).
    One parallel pass: NumPy's comparison ran on one core. Returns views of one new buffer
    (`global_magnitude_masks` writes over them with ``out=``).

    Example:
        >>> import numpy as np
        >>> [m.tolist() for m in ranked_again([np.array([1.0, 0.0, 0.5]), None], [np.zeros(3), np.zeros(2)])]
        [[True, False, False], [True, True]]
    """
    if len(masks) != len(likes):
        raise ValueError(f"masks: {len(masks)} entries for {len(likes)} tensors")
    shapes = [tuple(like.shape) for like in likes]
    labels = _validation.labels("masks", None, len(masks))
    views = [None if m is None else _arrays.float_bits(m, label, writable=False) for m, label in zip(masks, labels)]
    for view, shape in zip(views, shapes):
        if view is not None:
            _validation.same_shape(view.label, view.shape, shape)
    buffer, fresh = _arrays.new_masks(likes, shapes)
    _core.ones_of(
        [None if v is None else v.bits for v in views],
        [v.dtype if v is not None else "" for v in views],
        buffer,
        [math.prod(shape) for shape in shapes],
        _validation.quoted(None),
    )
    return fresh

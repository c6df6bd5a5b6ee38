"""Triton kernels of the fused passes (`_fused`). Imported only when they are asked for:
torch's CUDA wheels ship Triton, other installs may not.

Keys are made from the weights' bits alone (no float conversion, so nothing a compiler flag
could flush to zero): bf16 bits shifted into the f32 key space, f32 and f64 bits with the sign
cleared, the same keys as `_radix.keys`. Other dtypes are widened by torch before they come here.
"""

# No `from __future__ import annotations`: Triton reads the `tl.constexpr` annotations. The
# bounds are not specialised on: they change every round, and each value would compile a kernel.

import triton
import triton.language as tl

# Weights per program: a streaming kernel, so a few thousand per program keeps enough bytes in
# flight per SM; the interpreter, which runs programs one by one, wants few programs too.
BLOCK = 4096


@triton.jit
def _key(bits, BITS: tl.constexpr):
    """The magnitude key of a weight's bits (see the module's docstring)."""
    if BITS == 16:  # bf16: the f32 key of the widened value
        key = (bits.to(tl.int32) & 0x7FFF) << 16
    elif BITS == 32:
        key = bits & 0x7FFF_FFFF
    else:
        key = bits & 0x7FFF_FFFF_FFFF_FFFF
    return key


@triton.jit(do_not_specialize=["lo", "hi", "nan_from"])
def count_kernel(
    bits_ptr, alive_ptr, keep_ptr, inside_ptr, alive_n_ptr, kept_n_ptr, nan_n_ptr,
    n, lo, hi, nan_from,
    BITS: tl.constexpr, HAS_ALIVE: tl.constexpr, STORE_KEEP: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Per weight: kept (alive, key >= lo) into keep, in the bracket (kept, key < hi) into
    inside; per program: its alive, kept and alive-NaN counts."""
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    inbounds = offs < n
    key = _key(tl.load(bits_ptr + offs, mask=inbounds, other=0), BITS)
    live = inbounds
    if HAS_ALIVE:
        live = live & (tl.load(alive_ptr + offs, mask=inbounds, other=0) != 0)
    keep = live & (key >= lo)
    if STORE_KEEP:
        tl.store(keep_ptr + offs, keep.to(tl.uint8), mask=inbounds)
    tl.store(inside_ptr + offs, (keep & (key < hi)).to(tl.uint8), mask=inbounds)
    tl.store(alive_n_ptr + pid, tl.sum(live.to(tl.int32), axis=0))
    tl.store(kept_n_ptr + pid, tl.sum(keep.to(tl.int32), axis=0))
    tl.store(nan_n_ptr + pid, tl.sum((live & (key >= nan_from)).to(tl.int32), axis=0))


@triton.jit(do_not_specialize=["threshold"])
def write_kernel(
    bits_ptr, alive_ptr, dst_ptr, n, threshold,
    BITS: tl.constexpr, HAS_ALIVE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """dst = alive and key > threshold (dst may be the survivor flags themselves: each
    program reads a weight's flag before it writes it)."""
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    inbounds = offs < n
    key = _key(tl.load(bits_ptr + offs, mask=inbounds, other=0), BITS)
    keep = key > threshold
    if HAS_ALIVE:
        keep = keep & (tl.load(alive_ptr + offs, mask=inbounds, other=0) != 0)
    tl.store(dst_ptr + offs, keep.to(tl.uint8), mask=inbounds)

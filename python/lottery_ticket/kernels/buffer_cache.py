"""Large host buffers the kernels return, kept for a later call once every array over them is dropped.

A result buffer above glibc's mmap threshold (32 MiB at most) goes back to the kernel when it is
freed, and the next call's buffer of that size is faulted in again: the kernel zeroes each page
before the kernels write it, a pass over the buffer that at BERT scale costs about as much as
the selection's own pass. IMP asks for the same sizes round after round, so each buffer handed
out is remembered here, and a later request of exactly that size takes it back once nothing
else holds it: its reference count says that only this cache does. No array over it is alive
then, so no caller can see the memory change (a raw address kept without a reference is
already a use after free).

What is remembered is bounded by `limit` bytes, held buffers included (oldest forgotten
first): after the caller drops everything, at most `limit` bytes stay with the process until a
later call reuses them or `release` forgets them. Buffers under `MIN_BYTES` are not kept:
glibc's heap already reuses those.
"""

from __future__ import annotations

import math
import mmap
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# Below this, a freed buffer stays in glibc's heap and is reused without faults.
MIN_BYTES = 1 << 20
VARIABLE = "LOTTERY_TICKET_BUFFER_CACHE_MIB"
# Reference counts read per request at most: a size whose many buffers are all held (every
# round's masks kept) allocates after these instead of reading them all, call after call.
MAX_CHECKS = 16
# Two rounds of an IMP loop whose results overlap (`masks = f(w, p, masks=masks)`) hold two
# buffers of each size; the drop-in adds float masks and products (9 bytes a weight for f32).
# An eighth of the memory covers that for the models the machine can train, and stays small
# beside them where memory is short.
MEMORY_SHARE = 8
FALLBACK_LIMIT = 2 << 30  # where the physical memory cannot be read (Windows)


def default_limit() -> int:
    """An eighth of the physical memory, or 2 GiB where it cannot be read."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return FALLBACK_LIMIT
    return total // MEMORY_SHARE if total > 0 else FALLBACK_LIMIT


DEFAULT_LIMIT = default_limit()


@dataclass(frozen=True)
class BufferCacheStats:
    """What `buffer_cache_stats` reports.

    Attributes:
        limit: bytes the cache may remember (0: off).
        remembered: bytes of the buffers it remembers, held by callers or not.
        reusable: bytes of those no caller holds (what `release_buffers` would free now).
        hits: requests served by a remembered buffer.
        misses: requests that allocated (of a size the cache keeps).
    """

    limit: int
    remembered: int
    reusable: int
    hits: int
    misses: int


class BufferCache:
    """Uninitialised uint8 buffers by exact size, reused once unreferenced (see the module)."""

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self._by_size: dict[int, OrderedDict[int, np.ndarray]] = {}  # size -> id -> buffer, oldest first
        self._order: OrderedDict[int, int] = OrderedDict()  # id -> size, least recently handed out first
        self._remembered = 0
        self._hits = 0
        self._misses = 0
        self._limit = check_limit(limit, "limit")
        # The reference count of a buffer only the cache holds; 0: counts prove nothing here.
        self._unheld = self._calibrate() if _exact_refcounts() else 0

    def take(self, nbytes: int) -> np.ndarray:
        """An uninitialised uint8 buffer of ``nbytes`` (a remembered one when one is free)."""
        if nbytes < MIN_BYTES or nbytes > self._limit or not self._unheld:
            return np.empty(nbytes, dtype=np.uint8)
        with self._lock:
            group = self._by_size.get(nbytes, OrderedDict())
            for _ in range(min(len(group), MAX_CHECKS)):
                key = next(iter(group))
                # To the back either way: a held buffer (masks kept for good) is looked at after
                # the others next time, so buffers held for long never stand before free ones.
                group.move_to_end(key)
                if self._is_free(group, key):
                    self._order.move_to_end(key)
                    self._hits += 1
                    return group[key]
            self._misses += 1
            buffer = fresh_pages(nbytes)
            self._remember(buffer)
            return buffer

    def _is_free(self, group: OrderedDict[int, np.ndarray], key: int) -> bool:
        return self._count(group, key) <= self._unheld

    def _remember(self, buffer: np.ndarray) -> None:
        key = id(buffer)  # unique while remembered: the cache keeps the buffer alive
        self._by_size.setdefault(buffer.nbytes, OrderedDict())[key] = buffer
        self._order[key] = buffer.nbytes
        self._remembered += buffer.nbytes
        self._shrink_to(self._limit)

    def _shrink_to(self, limit: int) -> None:
        while self._remembered > limit:
            key, size = self._order.popitem(last=False)
            group = self._by_size[size]
            del group[key]
            if not group:
                del self._by_size[size]
            self._remembered -= size

    def _calibrate(self) -> int:
        buffer = np.empty(0, dtype=np.uint8)
        group = OrderedDict([(id(buffer), buffer)])
        del buffer  # now only `group` holds it, as a remembered buffer no caller holds
        self._unheld = sys.maxsize
        return self._count(group, next(iter(group)))

    def _count(self, group: OrderedDict[int, np.ndarray], key: int) -> int:
        # `_calibrate` counts an unheld buffer through this same code: the references the count
        # itself makes differ between interpreter versions.
        buffer = group[key]
        return sys.getrefcount(buffer)

    def set_limit(self, limit: int) -> None:
        """Remember at most ``limit`` bytes from now on (forgetting the oldest beyond it)."""
        limit = check_limit(limit, "limit")
        with self._lock:
            self._limit = limit
            self._shrink_to(limit)

    def release(self) -> int:
        """Forget every buffer; returns the bytes of those no caller held (freed now)."""
        with self._lock:
            freed = self._reusable()
            self._shrink_to(0)
        return freed

    def stats(self) -> BufferCacheStats:
        with self._lock:
            return BufferCacheStats(self._limit, self._remembered, self._reusable(), self._hits, self._misses)

    def _reusable(self) -> int:
        return sum(size for size, group in self._by_size.items() for key in group if self._is_free(group, key))

    def _after_fork(self) -> None:
        # A lock another thread held at the fork would stay taken in the child forever.
        self._lock = threading.Lock()


def fresh_pages(nbytes: int) -> np.ndarray:
    """An uninitialised uint8 buffer on pages of its own (private to this process, also across
    ``fork``), page-aligned: glibc's ``malloc`` puts a large buffer at any 16-byte offset once
    its mmap threshold has risen (it does after any large free, up to 32 MiB), and the Rust
    core streams two outputs past the caches only when they start at the same offset within a
    cache line (the drop-in's float masks and products: a third slower on ordinary stores).
    Huge pages are asked for where the kernel offers them, as NumPy does for its own."""
    flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    if not flags:  # Windows (no MAP_PRIVATE): NumPy's own allocation, as before
        return np.empty(nbytes, dtype=np.uint8)
    pages = mmap.mmap(-1, nbytes, flags=flags)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        pages.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(pages, dtype=np.uint8)


def _exact_refcounts() -> bool:
    """Whether a reference count proves a buffer unreferenced: CPython with its GIL."""
    gil = getattr(sys, "_is_gil_enabled", None)
    return sys.implementation.name == "cpython" and (gil is None or gil())


def check_limit(limit: object, name: str) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"{name}: expected an int number of bytes, got {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"{name}: expected bytes >= 0, got {limit}")
    return limit


def limit_from_environment(environ: Mapping[str, str] = os.environ) -> int:
    """``LOTTERY_TICKET_BUFFER_CACHE_MIB`` in bytes (a whole number of MiB, 0 turns the cache
    off), or `DEFAULT_LIMIT` (an eighth of the physical memory) where it is unset."""
    text = environ.get(VARIABLE)
    if text is None or not text.strip():
        return DEFAULT_LIMIT
    try:
        mib = int(text)
    except ValueError:
        raise ValueError(f"{VARIABLE}: expected a whole number of MiB (0 turns the cache off), got {text!r}") from None
    if mib < 0:
        raise ValueError(f"{VARIABLE}: expected a whole number of MiB >= 0, got {text!r}")
    return mib << 20


CACHE = BufferCache(limit_from_environment())
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=CACHE._after_fork)


def host_buffer(nbytes: int) -> np.ndarray:
    """An uninitialised uint8 host buffer of ``nbytes`` for a result the kernels write whole."""
    return CACHE.take(nbytes)


def host_array(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """`host_buffer` as an uninitialised array of ``shape`` and ``dtype``."""
    dtype = np.dtype(dtype)
    return host_buffer(math.prod(shape) * dtype.itemsize).view(dtype).reshape(shape)


def release_buffers() -> int:
    """Free the result buffers the cache keeps for reuse and forget the ones callers still hold.

    Returns:
        The bytes freed (remembered buffers no array referred to any more).

    Example:
        >>> import numpy as np
        >>> from lottery_ticket import buffer_cache_stats, global_magnitude_masks, release_buffers
        >>> masks = global_magnitude_masks([np.ones(1 << 21, np.float32)], 0.5)
        >>> del masks  # its 2 MiB buffer waits for a call of that size...
        >>> freed = release_buffers()  # ...or goes now
        >>> buffer_cache_stats().remembered
        0
    """
    return CACHE.release()


def set_buffer_cache_limit(nbytes: int) -> None:
    """Keep at most ``nbytes`` of result buffers for reuse (0 turns the cache off); the oldest
    beyond it are forgotten now. The initial limit is ``LOTTERY_TICKET_BUFFER_CACHE_MIB`` (MiB)
    or an eighth of the physical memory.

    Raises:
        TypeError: ``nbytes`` is not an int.
        ValueError: ``nbytes`` is negative.
    """
    CACHE.set_limit(check_limit(nbytes, "nbytes"))


def buffer_cache_stats() -> BufferCacheStats:
    """The cache's limit, the bytes it remembers and could reuse now, and its hits and misses."""
    return CACHE.stats()

"""lottery-ticket: find and apply Lottery Ticket Hypothesis winning tickets fast.

The kernels (exact global magnitude selection, mask application, rewinding) run in Rust over
NumPy arrays and torch CPU tensors, zero-copy. See ``lottery_ticket.kernels`` for the exact
semantics (tie order, NaN policy, amount rules).
"""

from ._core import __version__
from .config import EarlyBird, LotteryTicketConfig, RewindStrategy
from .kernels import (
    BufferCacheStats,
    MaskApplier,
    alive_counts,
    apply_masks,
    buffer_cache_stats,
    global_magnitude_masks,
    release_buffers,
    rewind,
    set_buffer_cache_limit,
)
from .pruner import LotteryTicketPruner
from .safetensors_stream import prune_checkpoint
from .ticket import Ticket

__all__ = [
    "BufferCacheStats",
    "EarlyBird",
    "LotteryTicketConfig",
    "LotteryTicketPruner",
    "MaskApplier",
    "RewindStrategy",
    "Ticket",
    "__version__",
    "alive_counts",
    "apply_masks",
    "buffer_cache_stats",
    "global_magnitude_masks",
    "prune_checkpoint",
    "release_buffers",
    "rewind",
    "set_buffer_cache_limit",
]

"""lottery-ticket: find and apply Lottery Ticket Hypothesis winning tickets fast.

The kernels (exact global magnitude selection, mask application, rewinding) run in Rust over
NumPy arrays and torch CPU tensors, zero-copy. See ``lottery_ticket.kernels`` for the exact
semantics (tie order, NaN policy, amount rules).
"""

from ._core import __version__
from .config import EarlyBird, LotteryTicketConfig, RewindStrategy
from .kernels import MaskApplier, alive_counts, apply_masks, global_magnitude_masks, rewind
from .pruner import LotteryTicketPruner
from .safetensors_stream import prune_checkpoint
from .ticket import Ticket

__all__ = [
    "EarlyBird",
    "LotteryTicketConfig",
    "LotteryTicketPruner",
    "MaskApplier",
    "RewindStrategy",
    "Ticket",
    "__version__",
    "alive_counts",
    "apply_masks",
    "global_magnitude_masks",
    "prune_checkpoint",
    "rewind",
]

"""Prune safetensors checkpoints bigger than memory (`prune_checkpoint`, ``lottery-ticket prune``).

The input is parsed from its headers, memory-mapped and read twice; the output is written as it
is produced, under temporary names renamed into place at the end. See `prune_checkpoint`.
"""

from ..safetensors_header import CheckpointError, TensorInfo
from ._prune import PruneSummary, TensorRow, prune_checkpoint

__all__ = ["CheckpointError", "PruneSummary", "TensorInfo", "TensorRow", "prune_checkpoint"]

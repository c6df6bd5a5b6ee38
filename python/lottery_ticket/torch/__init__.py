"""The torch adapter: the only part of lottery_ticket that imports torch.

Importing ``lottery_ticket`` never imports torch; this package is loaded when a tensor or a
module is first passed in, or when its drop-in is imported explicitly::

    import lottery_ticket.torch as ltt
    ltt.global_unstructured(parameters, prune.L1Unstructured, amount=0.2)  # torch's signature
"""

from . import supermask
from ._prune import global_unstructured
from .snip import Snip, snip_scores

__all__ = ["Snip", "global_unstructured", "snip_scores", "supermask"]

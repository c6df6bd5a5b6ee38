"""The torch adapter: the only part of the library that imports torch.

Importing ``lottery_ticket`` never imports torch. This package registers torch tensors (an
`ArrayBackend`) and ``nn.Module`` models (a model adapter) with the library; it is imported on
first use, through the ``lottery_ticket.frameworks`` entry point, when a tensor or module is
passed in, or explicitly for its drop-in::

    import lottery_ticket.torch as ltt
    ltt.global_unstructured(parameters, prune.L1Unstructured, amount=0.2)  # torch's signature
"""

from torch import nn

from ..adapters import register_model_adapter
from ..backends import register_array_backend, register_device_kernels
from ._arrays import TorchArrays
from ._model import TorchModuleAdapter, prunable_names
from ._ops import TorchKernels
from ._prune import PrunePatch, global_unstructured, patch_prune
from .snip import Snip, snip_scores
from .stability import Instability, instability

register_array_backend(TorchArrays())
register_device_kernels(TorchKernels())
register_model_adapter(lambda model: isinstance(model, nn.Module), TorchModuleAdapter)

from . import supermask  # noqa: E402  (after registration: it builds tickets of torch models)

__all__ = [
    "Instability",
    "PrunePatch",
    "Snip",
    "TorchModuleAdapter",
    "global_unstructured",
    "instability",
    "patch_prune",
    "prunable_names",
    "snip_scores",
    "supermask",
]

"""What a pruned module's forward pre-hooks are, to compare ours with torch's."""

from __future__ import annotations

from typing import Any

from torch.nn.utils import prune

from torch import nn


def hook_kinds(module: nn.Module) -> list[Any]:
    kinds: list[Any] = []
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, prune.PruningContainer):
            kinds.append(("container", hook._tensor_name, [type(m).__name__ for m in hook]))
        else:
            kinds.append((type(hook).__name__, getattr(hook, "_tensor_name", None)))
    return kinds

"""Whether the torch-op selection takes its host or its device code paths.

The two differ only where costs differ: chunk sizes and packing (`_select`, `_units`), how a
comparison lands in bools, how flags are counted and compacted (`_buffers`), how buffers are
allocated, and whether the sample's and the candidates' k-th key comes from histograms or a
sort (`_radix`). Every such branch asks `is_host`, looked up on this module at each call, so a
test can send host tensors down the device paths and compare their masks bit for bit with the
Rust kernels' (`tests/torch/test_device_paths.py`): the paths a GPU takes are checked where no
GPU is lent.
"""

from __future__ import annotations

import torch


def is_host(device: torch.device) -> bool:
    return device.type == "cpu"

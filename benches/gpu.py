"""GPU benchmark: exact global magnitude selection on CUDA tensors, ours beside the peers.

Run ``python benches/gpu.py`` on a machine with CUDA (``pytest benches/gpu.py`` also works; it
skips without CUDA), or ``lottery-ticket bench --device cuda`` from an installed wheel: the same
table (`lottery_ticket.cli.bench.gpu` has the workloads and methods). This script runs the
110 M BERT-base mix in f32 and bf16 and the 4 B f32 mix.
"""

from __future__ import annotations

import sys

import pytest

import torch
from lottery_ticket.cli.bench import gpu
from lottery_ticket.cli.bench.hygiene import read_machine


def main() -> str:
    device = torch.device("cuda", torch.cuda.current_device())
    gpu.check(device)
    lines = []
    for line in gpu.table(gpu.suite(big=True), device, read_machine().summary()):
        print(line, flush=True)
        lines.append(line)
    return "\n".join(lines)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: the GPU benchmark needs one (none lent to this task)"
)
def test_gpu_benchmark() -> None:
    main()


if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("no CUDA device: skipped")
        sys.exit(0)
    main()

"""Helper for tests/pruner/test_resume.py: run IMP with checkpoints; optionally SIGKILL itself mid-run.

usage: python _resume_script.py CHECKPOINT_DIR OUT_TICKET LOG [KILL_AT_ROUND]
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

import torch
from lottery_ticket import LotteryTicketPruner, RewindStrategy
from torch import nn


def run(checkpoint_dir: str, out: str, log: str, kill_at: int = -1) -> None:
    """Run IMP on a seeded model, log each round called, SIGKILL at the start of `kill_at`."""
    torch.manual_seed(0)
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    x, y = torch.randn(64, 8), torch.randint(0, 4, (64,))
    pruner = LotteryTicketPruner(0.9, 5, RewindStrategy.early(iteration=2))

    def train(net: nn.Module, round_index: int) -> dict[str, float]:
        with open(log, "a") as f:
            f.write(f"{round_index}\n")
        if round_index == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        for _ in range(6):
            batch = torch.randperm(64)[:16]  # global torch RNG: restored from the checkpoint
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
            loss.backward()
            opt.step()
        return {"loss": loss.item(), "noise": float(np.random.rand())}  # global NumPy RNG too

    pruner.run(model, train, checkpoint_dir=checkpoint_dir, progress=False).save(out)


if __name__ == "__main__":
    run(*sys.argv[1:4], *map(int, sys.argv[4:5]))

"""`LotteryTicketCallback` under Lightning DDP: 2 CPU processes (gloo on 127.0.0.1) prune identically,
and ranks whose replicas diverged are stopped by the mask-digest check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning.pytorch")

from lottery_ticket import LotteryTicketConfig

SCRIPT = Path(__file__).with_name("_lightning_ddp.py")


def test_ddp_ranks_compute_the_same_masks_and_divergence_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    total = 24 * 8 + 3 * 24
    for rank, result in enumerate(results):
        assert result["rank"] == rank and result["world_size"] == 2
        assert result["round"] == 2
        assert result["kept"] == LotteryTicketConfig(0.75, 2).remaining_after(2, total)
        assert result["nonzero_pruned"] == 0
        assert "ranks computed different masks in round 1" in result["diverged"]
    assert results[0]["digest"] == results[1]["digest"]

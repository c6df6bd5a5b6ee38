"""A save killed at a random point (SIGKILL) leaves the old file or the new one, never a torn one;
its temp file is removed by the next save of the same file.
``LT_KILLS`` sets the number of kills (``make fuzz`` runs many)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lottery_ticket import LotteryTicketConfig, Ticket
from lottery_ticket._files import TEMP_SUFFIX

KILLS = int(os.environ.get("LT_KILLS", "8"))

SAVER = """
import sys, numpy as np
from lottery_ticket import LotteryTicketPruner, RewindStrategy
path = sys.argv[1]
rng = np.random.default_rng(0)
model = {"w": rng.normal(size=(512, 512)).astype(np.float32)}
pruner = LotteryTicketPruner(0.5, 1, RewindStrategy.none())
print("ready", flush=True)
for i in range(10**9):
    model["w"][0, 0] = i  # every save differs
    pruner.find_ticket(model).save(path)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_saves_killed_at_random_points_leave_a_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "ticket.safetensors"
    rng = random.Random(0)
    for _ in range(KILLS):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        if path.exists():  # a kill before the first rename leaves no file at all, never a torn one
            ticket = Ticket.load(path)
            assert ticket.masks["w"].shape == (512, 512)
    ticket = Ticket(
        masks={"w": np.ones(2, bool)}, snapshot={"w": np.ones(2, np.float32)}, config=LotteryTicketConfig(0.5, 1)
    )
    ticket.save(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "a stale temp file was left behind"
    assert not any(p.name.endswith(TEMP_SUFFIX) for p in tmp_path.iterdir())

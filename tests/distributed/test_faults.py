"""A fault on one rank, or calls that differ between ranks, make every rank raise the same clear
error within seconds, never a hang until the process-group timeout or a silent wrong mask."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch.distributed as dist

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _faults import TIMEOUT_S, cases, weights

from lottery_ticket import global_magnitude_masks

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo"
)
WORKER = Path(__file__).parent / "_faults.py"

WORLD = 2
# Case -> (exception every rank raises, what its message says).
EXPECTED: dict[str, tuple[str, str]] = {
    "fractions_differ": ("ValueError", "amount: ranks pass different amounts (0.7 on rank 0, 0.3 on rank 1)"),
    "count_and_fraction": ("ValueError", "amount: ranks pass different amounts (1000 on rank 0, 0.5 on rank 1)"),
    "scopes_differ": ("ValueError", "scope: ranks pass different scopes ('global' on rank 0, 'layer' on rank 1)"),
    "bad_amount_on_one_rank": ("ValueError", "amount: a fraction must lie in [0, 1], got 1.5 (raised on rank 1)"),
    "empty_list_on_one_rank": ("ValueError", "weights: expected at least one array, got none (raised on rank 1)"),
    "rust_backend_on_one_rank": ("ValueError", "process_group: the Rust kernels run in one process; use backend="),
    "numpy_on_one_rank": ("TypeError", "process_group: selection across ranks needs torch tensors"),
    "bad_mask_on_one_rank": ("TypeError", "masks[0]: masks must have dtype bool, got torch.uint8 (raised on rank 0)"),
    "layer_counts_differ": (
        "ValueError",
        "weights: ranks pass different numbers of tensors (1 on rank 0, 2 on rank 1)",
    ),
    "count_above_alive": ("AmountError", "amount: cannot prune 1000000 weights: only 34 are alive"),
    "alive_counts_lengths": ("ValueError", "masks: ranks pass different numbers of tensors (1 on rank 0, 2 on rank 1)"),
    "alive_counts_bad_mask": ("TypeError", "masks[1]: expected a bool torch tensor (raised on rank 1)"),
    "pruner_pipeline_split": (
        "ValueError",
        "masks: ranks pass different numbers of tensors (2 on rank 0, 3 on rank 1)",
    ),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], list[dict[str, np.ndarray]]]:
    out, port = tmp_path_factory.mktemp("faults"), str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(r), str(WORLD), port, str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(WORLD)
    ]
    logs = []
    try:
        for p in procs:  # a hang would end at the gloo timeout in each case; this bounds the whole run
            logs.append(p.communicate(timeout=len(EXPECTED) * TIMEOUT_S + 120)[0].decode())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} failed:\n{log}"
    raised = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
    return raised, [dict(np.load(out / f"rank{r}.npz")) for r in range(WORLD)]


def test_every_case_is_tested() -> None:
    assert set(cases(0)) == set(EXPECTED)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_every_rank_raises_the_same_clear_error_within_seconds(
    outcomes: tuple[list[dict[str, Any]], list[dict[str, np.ndarray]]], case: str
) -> None:
    raised, _ = outcomes
    kind, message = EXPECTED[case]
    got = [r[case] for r in raised]
    for rank, outcome in enumerate(got):
        assert outcome["type"] == kind and message in outcome["message"], (rank, outcome)
        assert outcome["seconds"] < TIMEOUT_S / 2, (rank, outcome)  # not a collective's timeout
    assert len({(o["type"], o["message"]) for o in got}) == 1, got


def test_the_group_stays_in_step_after_the_faults(
    outcomes: tuple[list[dict[str, Any]], list[dict[str, np.ndarray]]],
) -> None:
    _, saved = outcomes
    local = [weights(0), weights(1)[:1]]
    want = global_magnitude_masks([w for ws in local for w in ws], 0.5)
    got = [saved[r][f"after/{i}"] for r in range(WORLD) for i in range(len(local[r]))]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w.numpy())
    assert 0 < sum(int(g.sum()) for g in got) < sum(g.size for g in got)
    assert isinstance(want[0], torch.Tensor)

"""Exact selection across gloo ranks (local processes on 127.0.0.1) equals one process's selection."""

from __future__ import annotations

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
from _cases import dtensor_cases, plain_cases

from lottery_ticket import global_magnitude_masks

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo"
)
WORKER = Path(__file__).parent / "_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(world: int, out: Path, device_paths: bool = False) -> list[dict[str, np.ndarray]]:
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(r), str(world), port, str(out)] + ["device-paths"] * device_paths,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(world)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=240)[0].decode())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} failed:\n{log}"
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(world)]


_LAUNCHED: dict[tuple[int, bool], list[dict[str, np.ndarray]]] = {}


def _launched(
    world: int, tmp_path_factory: pytest.TempPathFactory, device_paths: bool = False
) -> tuple[int, list[dict[str, np.ndarray]]]:
    """One launch per world size serves every test (starting ranks is the slow part). With
    ``device_paths`` the ranks select down the branches a GPU takes (see `_worker`)."""
    key = (world, device_paths)
    if key not in _LAUNCHED:
        folder = tmp_path_factory.mktemp(f"world{world}" + ("-device-paths" if device_paths else ""))
        _LAUNCHED[key] = _launch(world, folder, device_paths)
    return world, _LAUNCHED[key]


@pytest.fixture(
    params=[(2, False), (4, False), (2, True), (4, True)],
    ids=["2-ranks", "4-ranks", "2-ranks-device-paths", "4-ranks-device-paths"],
)
def ranks(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[int, list[dict[str, np.ndarray]]]:
    return _launched(*request.param[:1], tmp_path_factory, device_paths=request.param[1])


def _single(weights: list[torch.Tensor], amount: Any, masks: Any, scope: str) -> list[np.ndarray]:
    return [m.numpy() for m in global_magnitude_masks(weights, amount, masks, scope)]  # type: ignore[arg-type]


def test_plain_tensors_equal_one_process_in_rank_order(ranks: tuple[int, list[dict[str, np.ndarray]]]) -> None:
    world, saved = ranks
    for name, case in plain_cases(world).items():
        weights, masks = case["weights"], case["masks"]
        if case["scope"] == "global":
            # One process over every rank's tensors, rank after rank.
            flat_w = [w for local in weights for w in local]
            flat_m = [m for local in masks for m in local] if masks is not None else None
            want = _single(flat_w, case["amount"], flat_m, "global")
            got = [saved[r][f"{name}/{i}"] for r in range(world) for i in range(len(weights[r]))]
        else:
            # Layer scope: the i-th tensors of all ranks are the shards of tensor i.
            want, got = [], []
            for i in range(len(weights[0])):
                shards = [weights[r][i].reshape(-1) for r in range(world)]
                alive = [masks[r][i].reshape(-1) for r in range(world)] if masks is not None else None
                want += _single(shards, case["amount"], alive, "global")
                got += [saved[r][f"{name}/{i}"].reshape(-1) for r in range(world)]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w, err_msg=name)
    assert any(not m.all() for m in got)


def test_dtensors_equal_one_process_on_the_whole_tensors(ranks: tuple[int, list[dict[str, np.ndarray]]]) -> None:
    world, saved = ranks
    cases = dtensor_cases(world)
    assert any(name.startswith("2d") for name in cases) == (world == 4)
    assert any("cols" in name for name in cases)  # interleaved shards (Shard(1)) on every mesh
    for name, case in cases.items():
        want = _single(case["weights"], case["amount"], case["masks"], case["scope"])
        for i, w in enumerate(want):
            np.testing.assert_array_equal(saved[0][f"{name}/{i}"], w, err_msg=name)


def test_partial_placement_is_refused_on_every_rank(ranks: tuple[int, list[dict[str, np.ndarray]]]) -> None:
    world, saved = ranks
    for r in range(world):
        message = str(saved[r]["partial_refused"])
        assert message.startswith("weights[0]: DTensor placement") and "Partial" in message, message


def test_fsdp2_imp_run_ends_with_the_single_process_masks(tmp_path_factory: pytest.TempPathFactory) -> None:
    _, saved = _launched(2, tmp_path_factory)  # the FSDP2 run is made by the 2-rank launch
    keys = [k.partition("/")[2] for k in saved[0] if k.startswith("fsdp/")]
    assert len(keys) == 3
    for key in keys:
        np.testing.assert_array_equal(saved[0][f"fsdp/{key}"], saved[0][f"fsdp_single/{key}"], err_msg=key)
    total = sum(saved[0][f"fsdp/{k}"].size for k in keys)
    alive = sum(int(saved[0][f"fsdp/{k}"].sum()) for k in keys)
    assert alive == round(total * 0.2)

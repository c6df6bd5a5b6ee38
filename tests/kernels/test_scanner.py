"""The selection's block scanners (AVX-512, AVX2, portable) give the same masks, and the
``LOTTERY_TICKET_SIMD`` cap that chooses among them is read and checked at import."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lottery_ticket import _core

# Masks of a fresh, a later (masks=) and an in-place (out=) round of f32, bf16 and f16 weights,
# with sizes off the 32-weight block, as one digest. Large enough (> 2^14 weights) to be sampled,
# so the bracket's provisional middle and the fix-up run.
_DIGEST = """
import hashlib, numpy as np, torch
from lottery_ticket import _core, global_magnitude_masks
g = torch.Generator().manual_seed(0)
h = hashlib.sha256()
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    ws = [torch.randn(n, generator=g).mul_(s).to(dtype) for n, s in ((70_001, 1.0), (33, 4.0), (40_000, 0.1))]
    fresh = global_magnitude_masks(ws, 0.3)
    later = global_magnitude_masks(ws, 0.25, fresh)
    in_place = [m.clone() for m in fresh]
    global_magnitude_masks(ws, 1234, in_place, out=in_place)
    for m in (*fresh, *later, *in_place):
        h.update(m.numpy().tobytes())
print(_core.scanner(), h.hexdigest())
"""


def _run(code: str, simd: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LOTTERY_TICKET_SIMD"}
    if simd is not None:
        env["LOTTERY_TICKET_SIMD"] = simd
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_the_scanner_is_named() -> None:
    assert _core.scanner() in ("avx512", "avx2", "portable")


def test_every_scanner_gives_the_same_masks() -> None:
    runs = {simd: _run(_DIGEST, simd) for simd in ("avx512", "avx2", "portable")}
    for simd, run in runs.items():
        assert run.returncode == 0, (simd, run.stderr)
    names = {simd: run.stdout.split()[0] for simd, run in runs.items()}
    digests = {run.stdout.split()[1] for run in runs.values()}
    assert names["portable"] == "portable"
    assert names["avx2"] in ("avx2", "portable")  # a cap, never a raise above the CPU
    assert len(digests) == 1, runs


@pytest.mark.parametrize("value", ["avx1024", "AVX2", " avx2"])
def test_an_unknown_cap_fails_the_import_naming_the_variable(value: str) -> None:
    run = _run("import lottery_ticket", value)
    assert run.returncode != 0
    assert "ValueError: LOTTERY_TICKET_SIMD: expected avx512, avx2 or portable" in run.stderr

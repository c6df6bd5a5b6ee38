"""The built wheel installs and works where no Rust toolchain exists.

``make wheel`` (run here; a no-op when dist/ is up to date) builds the abi3 wheel and the sdist;
the wheel goes into a fresh virtualenv with only its runtime dependencies, with every folder
holding cargo/rustc/rustup removed from PATH, and then prunes a small NumPy model and answers
``lottery-ticket --version`` from outside the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lottery_ticket

ROOT = Path(__file__).resolve().parents[2]
TOOLCHAIN = ("cargo", "rustc", "rustup")

PRUNE = """
import numpy as np, lottery_ticket as lt, shutil, sys
assert shutil.which("cargo") is None and shutil.which("rustc") is None
assert lt.__file__.startswith(sys.prefix), lt.__file__  # the installed copy, not the source tree
rng = np.random.default_rng(0)
model = {"w1": rng.standard_normal((64, 32), dtype=np.float32), "w2": rng.standard_normal((32, 10), dtype=np.float32)}
ticket = lt.LotteryTicketPruner(0.8, 2).find_ticket(model)
print(ticket.remaining_parameters, ticket.total_parameters)
"""


def _path_without_rust() -> str:
    kept = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not any((Path(d) / t).exists() for t in TOOLCHAIN)
    ]
    return os.pathsep.join(kept)


def _uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(found).exists():
        pytest.fail("uv is needed to install the wheel (it is in requirements-dev.txt)")
    return found


def test_wheel_installs_and_runs_without_a_rust_toolchain(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.fail("make is needed to build the wheel (`make wheel`)")
    subprocess.run(["make", "-s", "wheel"], cwd=ROOT, check=True, timeout=900)
    version = lottery_ticket.__version__
    wheels = sorted((ROOT / "dist").glob(f"lottery_ticket-{version}-*.whl"))
    assert len(wheels) == 1, wheels
    assert "-cp310-abi3-" in wheels[0].name  # one wheel for CPython 3.10 and later
    assert (ROOT / "dist" / f"lottery_ticket-{version}.tar.gz").is_file()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "CARGO_HOME", "RUSTUP_HOME")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), _path_without_rust()])
    subprocess.run(
        [_uv(), "pip", "install", "--quiet", "--python", str(python), str(wheels[0])], env=env, check=True, timeout=600
    )

    run = subprocess.run([str(python), "-c", PRUNE], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    # 2 rounds to 80%: round(2368 * 0.2) = 474 of 64*32 + 32*10 weights remain.
    assert run.stdout.split() == ["474", "2368"]
    cli = subprocess.run(
        [str(venv / "bin" / "lottery-ticket"), "--version"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.strip() == f"lottery-ticket {version}"

"""The built wheel installs and works where no Rust toolchain exists.

``make wheel`` (run here; a no-op when dist/ is up to date) builds the abi3 wheel and the sdist;
the wheel goes into a fresh virtualenv with only its runtime dependencies, with every folder
holding cargo/rustc/rustup removed from PATH, and then prunes a small NumPy model and answers
``lottery-ticket --version`` from outside the source tree. On Linux the wheel is manylinux_2_17,
which ``auditwheel show`` confirms from the symbols it links; its metadata carries Cargo.toml's
version, the license and the project's links.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
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


def _cargo_version() -> str:
    package = (ROOT / "Cargo.toml").read_text().split("[package]", 1)[1].split("\n[", 1)[0]
    found = re.search(r'^version\s*=\s*"([^"]+)"', package, flags=re.M)
    assert found is not None
    return found.group(1)


@pytest.fixture(scope="module")
def wheel() -> Path:
    """This machine's wheel, built by ``make wheel``."""
    if shutil.which("make") is None:
        pytest.fail("make is needed to build the wheel (`make wheel`)")
    subprocess.run(["make", "-s", "wheel"], cwd=ROOT, check=True, timeout=1800)
    version = lottery_ticket.__version__
    # `make wheel-aarch64` may have added another architecture's wheel beside it.
    wheels = sorted(w for w in (ROOT / "dist").glob(f"lottery_ticket-{version}-*.whl") if platform.machine() in w.name)
    assert len(wheels) == 1, wheels
    assert "-cp310-abi3-" in wheels[0].name  # one wheel for CPython 3.10 and later
    return wheels[0]


@pytest.mark.skipif(sys.platform != "linux", reason="manylinux tags and auditwheel exist on Linux only")
def test_the_linux_wheel_is_manylinux_2_17_by_its_symbols(wheel: Path) -> None:
    tag = f"manylinux_2_17_{platform.machine()}"
    assert tag in wheel.name
    auditwheel = Path(sys.executable).with_name("auditwheel")
    shown = subprocess.run([str(auditwheel), "show", str(wheel)], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert f'consistent with the following platform tag: "{tag}"' in " ".join(shown.stdout.split())


def test_the_wheel_and_sdist_carry_one_version_the_license_and_the_links(wheel: Path) -> None:
    version = _cargo_version()
    with zipfile.ZipFile(wheel) as zf:
        info = f"lottery_ticket-{version}.dist-info"
        meta = HeaderParser().parsestr(zf.read(f"{info}/METADATA").decode())
        assert "MIT License" in zf.read(f"{info}/licenses/LICENSE").decode()
    assert meta["Name"] == "lottery-ticket" and meta["Version"] == version == lottery_ticket.__version__
    assert meta["License-Expression"] == "MIT" and meta["Requires-Python"] == ">=3.10"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL", []))
    assert {"Homepage", "Documentation", "Repository", "Changelog"} <= set(urls), urls
    assert "Programming Language :: Rust" in meta.get_all("Classifier", [])
    with tarfile.open(ROOT / "dist" / f"lottery_ticket-{version}.tar.gz") as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {
        "LICENSE",
        "Cargo.toml",
        "Cargo.lock",
        "pyproject.toml",
        "rust/lib.rs",
        "python/lottery_ticket/__init__.py",
    } <= names
    assert not any(n.startswith(("target/", ".venv/")) for n in names)


def test_wheel_installs_and_runs_without_a_rust_toolchain(tmp_path: Path, wheel: Path) -> None:
    version = lottery_ticket.__version__
    wheels = [wheel]

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

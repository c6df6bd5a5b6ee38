"""One version: Cargo.toml's, as the package, the command and the changelog state it.

The wheel's metadata is checked against the same number in tests/packaging/test_wheel.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import lottery_ticket
from lottery_ticket.cli import main

ROOT = Path(__file__).resolve().parents[1]


def cargo_version() -> str:
    """The ``version`` of Cargo.toml's ``[package]`` table."""
    text = (ROOT / "Cargo.toml").read_text()
    package = re.search(r"^\[package\]\n(.*?)(?=^\[)", text, flags=re.S | re.M)
    assert package is not None, "Cargo.toml has no [package] table"
    found = re.search(r'^version\s*=\s*"([^"]+)"', package.group(1), flags=re.M)
    assert found is not None, "Cargo.toml's [package] has no version"
    return found.group(1)


def test_cargo_toml_is_the_only_place_a_version_is_written() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:[-.]?(?:a|b|rc|dev)\d*)?", cargo_version())
    project = re.search(r"^\[project\]\n(.*?)(?=^\[)", (ROOT / "pyproject.toml").read_text(), flags=re.S | re.M)
    assert project is not None
    assert re.search(r'^dynamic\s*=\s*\[[^\]]*"version"', project.group(1), flags=re.M)
    assert not re.search(r"^version\s*=", project.group(1), flags=re.M)


def test_the_package_reports_cargo_tomls_version() -> None:
    assert lottery_ticket.__version__ == cargo_version()


def test_the_command_reports_cargo_tomls_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"lottery-ticket {cargo_version()}"
    run = subprocess.run(
        [sys.executable, "-m", "lottery_ticket", "--version"], capture_output=True, text=True, timeout=120, check=True
    )
    assert run.stdout.strip() == f"lottery-ticket {cargo_version()}"


def test_the_changelog_has_a_section_for_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert re.search(rf"^## \[{re.escape(cargo_version())}\]", changelog, flags=re.M)
    assert re.search(rf"^\[{re.escape(cargo_version())}\]: https://", changelog, flags=re.M)

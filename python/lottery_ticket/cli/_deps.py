"""Optional dependencies of the subcommands, checked before any work starts.

A subcommand module may define ``requires(args) -> list[Requirement]``; `missing` looks each one
up without importing it, so a missing package is reported in milliseconds, not after a minute
of training.
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple


class Requirement(NamedTuple):
    module: str  # the import name, e.g. "sklearn"
    package: str  # what pip installs, e.g. "scikit-learn"
    extra: str  # the lottery-ticket extra that brings it, e.g. "demo"


TORCH = Requirement("torch", "torch", "torch")


def missing(requirements: list[Requirement]) -> list[Requirement]:
    """The requirements whose module cannot be found."""
    return [r for r in requirements if importlib.util.find_spec(r.module) is None]


def message(command: str, absent: list[Requirement]) -> str:
    """One line naming what is missing and the extra that installs it."""
    packages = ", ".join(sorted({r.package for r in absent}))
    extras = ",".join(sorted({r.extra for r in absent}))
    return f'lottery-ticket {command}: needs {packages}; install it with: pip install "lottery-ticket[{extras}]"'

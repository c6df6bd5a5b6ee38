"""A pytest plugin for `test_fused.py`'s run of the torch-op tests through the fused Triton
kernels (under Triton's interpreter): counts the fused passes that ran, so a run in which the
torch ops quietly served every call fails instead of passing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lottery_ticket.torch import _fused

RAN = {"count": 0, "write": 0}


def _counted(name: str) -> Any:
    inner = getattr(_fused, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        RAN[name] += 1
        return inner(*args, **kwargs)

    return wrapper


def pytest_configure(config: pytest.Config) -> None:
    for name in RAN:
        setattr(_fused, name, _counted(name))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    print(f"\nfused passes run: {json.dumps(RAN)}")
    if min(RAN.values()) == 0:
        session.exitstatus = 1

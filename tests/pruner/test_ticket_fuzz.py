"""Fuzzing Ticket.load and the checkpoint reader with damaged files (hypothesis).

Property: a damaged file is refused with ``ValueError`` (never another exception, a crash or a
huge allocation), or it loads exactly what was saved; a refused checkpoint leaves the model
untouched. ``make test`` runs a bounded number of files; ``make fuzz`` runs many more
(``LT_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lottery_ticket import LotteryTicketConfig, LotteryTicketPruner, RewindStrategy, Ticket
from lottery_ticket.adapters import NumpyDictAdapter
from lottery_ticket.pruner.resume import read_checkpoint, write_checkpoint

EXAMPLES = int(os.environ.get("LT_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
CONFIG = LotteryTicketConfig(0.5, 2, RewindStrategy.none())


def numpy_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "fc": rng.normal(size=(6, 5)).astype(np.float32),
        "b": rng.normal(size=3).astype(np.float16),
        "step": np.array(4, np.int64),
    }


@cache
def original_files() -> tuple[bytes, bytes]:
    """A ticket and a checkpoint, as bytes (written once, then mutated in memory)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        ticket = LotteryTicketPruner(config=CONFIG, include=["fc", "b"]).find_ticket(numpy_model())
        ticket.metrics.append({"round": 0, "density": 1.0, "sparsity": 0.0, "remaining": 33, "loss": 0.25})
        ticket.save(Path(folder) / "t")
        adapter = NumpyDictAdapter(numpy_model(), ["fc", "b"], None, None)
        resume = {"next_round": 1, "round": 0, "step": 3, "capture_step": None}
        write_checkpoint(Path(folder) / "c", ticket, adapter, resume)
        return (Path(folder) / "t").read_bytes(), (Path(folder) / "c").read_bytes()


def header_end(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """One to three damages: byte flips (mostly in the header), a cut, inserted bytes, an edited
    JSON number or string in the header, or a swapped length field."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip-header", "flip", "cut", "insert", "number", "length", "zero-run"]))
        end = min(header_end(bytes(out)), len(out)) if len(out) >= 8 else len(out)
        if not out:
            break
        if kind == "flip-header" and end > 8:
            i = draw(st.integers(8, end - 1))
            out[i] ^= draw(st.integers(1, 255))
        elif kind == "flip":
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del out[draw(st.integers(0, len(out) - 1)) :]
        elif kind == "insert":
            i = draw(st.integers(0, len(out)))
            out[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "number" and end > 8:
            digits = [i for i in range(8, end) if chr(out[i]).isdigit()]
            if digits:
                i = draw(st.sampled_from(digits))
                out[i] = ord(draw(st.sampled_from("0123456789")))
        elif kind == "length" and len(out) >= 8:
            out[:8] = draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little")
        elif kind == "zero-run":
            i = draw(st.integers(0, len(out) - 1))
            n = draw(st.integers(1, 64))
            out[i : i + n] = bytes(len(out[i : i + n]))
    return bytes(out)


def same(a: Ticket, b: Ticket) -> bool:
    return (
        list(a.masks) == list(b.masks)
        and all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
        and all(
            np.array_equal(a.snapshot[k], b.snapshot[k]) and a.snapshot[k].dtype == b.snapshot[k].dtype
            for k in a.snapshot
        )
        and json.dumps([a.config.to_dict(), a.sparsity_history, a.metrics, a.rewind_iteration, a.iterations_per_round])
        == json.dumps([b.config.to_dict(), b.sparsity_history, b.metrics, b.rewind_iteration, b.iterations_per_round])
    )


@cache
def scratch() -> Path:
    """One folder for the fuzzed files (hypothesis reruns a test body, not its fixtures)."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="lt-fuzz-"))


def load(data: bytes, name: str = "t.safetensors") -> Ticket:
    path = scratch() / name
    path.write_bytes(data)
    return Ticket.load(path)


@FUZZ
@given(st.data())
def test_damaged_ticket_files_are_refused_or_load_unchanged(data: st.DataObject) -> None:
    original, _ = original_files()
    bad = data.draw(damaged(original))
    try:
        loaded = load(bad)
    except ValueError:
        return
    assert same(loaded, load(original, "reference.safetensors")), "a damaged file loaded different content"


@FUZZ
@given(st.data())
def test_damaged_checkpoints_are_refused_before_the_model_is_touched(data: st.DataObject) -> None:
    _, original = original_files()
    bad = data.draw(damaged(original))
    path = scratch() / "c.safetensors"
    path.write_bytes(bad)
    model = {k: np.zeros_like(v) for k, v in numpy_model().items()}
    adapter = NumpyDictAdapter(model, ["fc", "b"], None, None)
    state = np.random.get_state()
    try:
        _, resume = read_checkpoint(path, CONFIG, adapter)
    except ValueError:
        assert all(not v.any() for v in model.values()), "a refused checkpoint changed the model"
        return
    finally:
        np.random.set_state(state)
    assert resume["next_round"] == 1 and all(np.array_equal(model[k], v) for k, v in numpy_model().items())

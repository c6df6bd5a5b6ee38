"""Ticket files, version 2: the checksum covers the metadata, shapes are checked against the data,
version-1 files still load, and only the header of a bad file is read (issue #14 rows 4, 9)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from lottery_ticket import LotteryTicketConfig, LotteryTicketPruner, RewindStrategy, Ticket
from lottery_ticket.cli import main
from lottery_ticket.ticket import format as fmt
from lottery_ticket.ticket import read_file


def numpy_ticket() -> Ticket:
    rng = np.random.default_rng(0)
    model = {
        "fc": rng.normal(size=(16, 8)).astype(np.float32),
        "b": rng.normal(size=8).astype(">f8"),
        "step": np.array(7, np.int64),
    }
    return LotteryTicketPruner(0.75, 2, RewindStrategy.none(), include=["fc", "b"]).find_ticket(model)


def header_of(data: bytes) -> tuple[int, dict[str, object]]:
    length = int.from_bytes(data[:8], "little")
    return length, json.loads(data[8 : 8 + length])


def with_header(data: bytes, header: dict[str, object]) -> bytes:
    """``data`` with its header replaced."""
    length, _ = header_of(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    return len(raw).to_bytes(8, "little") + raw + data[8 + length :]


def edit_document(data: bytes, change: object) -> bytes:
    _, header = header_of(data)
    meta = header["__metadata__"]
    assert isinstance(meta, dict)
    doc = json.loads(meta["ticket"])
    change(doc)  # type: ignore[operator]
    meta["ticket"] = json.dumps(doc, separators=(",", ":"))
    return with_header(data, header)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "t.safetensors"
    numpy_ticket().save(path)
    return path, path.read_bytes()


def test_zero_d_and_foreign_byte_order_entries_round_trip(saved: tuple[Path, bytes]) -> None:
    ticket = Ticket.load(saved[0])
    assert ticket.snapshot["step"].shape == () and ticket.snapshot["step"].item() == 7
    assert ticket.snapshot["b"].dtype == np.float64 and ticket.snapshot["b"].dtype.isnative
    assert ticket.snapshot["b"].tolist() == numpy_ticket().snapshot["b"].tolist()


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("target_sparsity", lambda d: d["config"].update(target_sparsity=0.5)),
        ("mask_shapes", lambda d: d["mask_shapes"].__setitem__(0, [16, 9])),
        ("sparsity_history", lambda d: d["sparsity_history"].append(0.9)),
        ("rewind_iteration", lambda d: d.update(rewind_iteration=3)),
        ("resume", lambda d: d.update(resume={"next_round": 1})),
    ],
)
def test_an_edited_document_is_refused(tmp_path: Path, saved: tuple[Path, bytes], field: str, change: object) -> None:
    bad = tmp_path / "edited.safetensors"
    bad.write_bytes(edit_document(saved[1], change))
    with pytest.raises(ValueError, match="corrupted ticket file"):
        Ticket.load(bad)


def test_every_single_digit_edit_of_the_header_is_refused_or_harmless(
    tmp_path: Path, saved: tuple[Path, bytes]
) -> None:
    data = saved[1]
    length, _ = header_of(data)
    original = Ticket.load(saved[0])
    digits = [m.start() + 8 for m in re.finditer(rb"\d", data[8 : 8 + length])]
    loaded_differently = refused = 0
    for position in digits:
        edited = bytearray(data)
        edited[position] = ord("1") if edited[position] != ord("1") else ord("2")
        bad = tmp_path / "digit.safetensors"
        bad.write_bytes(bytes(edited))
        try:
            ticket = Ticket.load(bad)
        except ValueError:
            refused += 1
            continue
        loaded_differently += ticket.summary() != original.summary()
    assert loaded_differently == 0 and refused == len(digits) > 50


def test_mask_shape_that_contradicts_its_data_is_refused_even_with_a_valid_checksum(saved: tuple[Path, bytes]) -> None:
    from safetensors.numpy import load

    _, header = header_of(saved[1])
    doc = json.loads(header["__metadata__"]["ticket"])  # type: ignore[index]
    tensors = load(saved[1])
    doc["mask_shapes"][0] = [16, 9]  # 144 bits, but the data holds 128
    doc["sha256"] = fmt.digest(tensors, doc, fmt.VERSION)
    with pytest.raises(fmt.Corrupted, match="does not hold the 144 bits"):
        fmt.check_document(doc, tensors)
    doc["mask_shapes"][0] = [2, 63]  # 126 bits fit in 16 bytes but the last 2 are set
    ones = dict(tensors, **{"mask/fc": np.full(16, 255, np.uint8)})
    with pytest.raises(fmt.Corrupted, match="bits past its shape"):
        fmt.check_document(doc, ones)


def version_1_file(ticket: Ticket) -> bytes:
    """A ticket as version 1 wrote it: the checksum over the tensors alone."""
    tensors = {f"mask/{n}": np.packbits(m.ravel()) for n, m in ticket.masks.items()}
    tensors.update({f"snapshot/{n}": np.ascontiguousarray(v) for n, v in ticket.snapshot.items()})
    doc = {
        "framework": "numpy",
        "mask_names": list(ticket.masks),
        "mask_shapes": [list(m.shape) for m in ticket.masks.values()],
        "snapshot_dtypes": {n: v.dtype.name for n, v in ticket.snapshot.items()},
        "state_dtypes": None,
        "rng": None,
        "config": ticket.config.to_dict(),
        "sparsity_history": ticket.sparsity_history,
        "metrics": ticket.metrics,
        "rewind_iteration": ticket.rewind_iteration,
        "iterations_per_round": ticket.iterations_per_round,
        "resume": None,
    }
    doc["sha256"] = fmt.digest(tensors, None, "1")
    return save(tensors, metadata={"format": "lottery-ticket", "version": "1", "ticket": json.dumps(doc)})


def test_version_1_files_still_load(tmp_path: Path) -> None:
    ticket = LotteryTicketPruner(0.5, 1, include="w").find_ticket({"w": np.arange(1.0, 9.0).reshape(2, 4)})
    path = tmp_path / "v1.safetensors"
    path.write_bytes(version_1_file(ticket))
    loaded = Ticket.load(path)
    assert loaded.config == ticket.config and np.array_equal(loaded.masks["w"], ticket.masks["w"])
    assert np.array_equal(loaded.snapshot["w"], ticket.snapshot["w"])


def test_a_huge_file_with_a_bad_header_is_refused_from_its_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = tmp_path / "x.safetensors"
    with open(huge, "wb") as f:
        f.truncate(6 << 30)  # sparse: no disk used
    assert main(["inspect", str(huge)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "header length 0" in err and "Traceback" not in err
    with open(huge, "r+b") as f:
        f.write((1 << 40).to_bytes(8, "little"))
    with pytest.raises(ValueError, match="header length"):
        fmt.read_header(huge)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: h["__metadata__"].pop("ticket"),
        lambda h: h["__metadata__"].update(ticket="[]"),
        lambda h: h["__metadata__"].update(ticket='{"mask_names": 5}'),
        lambda h: h["__metadata__"].update(version="3"),
        lambda h: h.update({"__metadata__": "x"}),
        lambda h: h["mask/fc"].update(data_offsets=[0, 1 << 50]),
    ],
    ids=["no-document", "document-list", "document-fields", "version", "metadata-str", "offsets"],
)
def test_inspect_never_prints_a_traceback(
    tmp_path: Path, saved: tuple[Path, bytes], mutate: object, capsys: pytest.CaptureFixture[str]
) -> None:
    _, header = header_of(saved[1])
    mutate(header)  # type: ignore[operator]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(with_header(saved[1], header))
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and str(bad) in err


def test_checkpoint_resume_record_is_checked(tmp_path: Path) -> None:
    model = {"w": np.arange(1.0, 9.0), "step": np.array(0, np.int64)}
    pruner = LotteryTicketPruner(0.5, 2, RewindStrategy.none(), include="w")

    def train(m: dict[str, np.ndarray], r: int) -> None:
        m["step"] += 1

    pruner.run(model, train, checkpoint_dir=tmp_path, progress=False)
    assert model["step"].shape == () and model["step"].item() == 3
    _, _, _, resume = read_file(tmp_path / "imp-checkpoint.safetensors")
    assert resume is not None and resume["next_round"] == 3
    from lottery_ticket.pruner.resume import resume_problem

    keys = {"numpy": np.zeros(624, np.uint32)}
    assert resume_problem(resume, keys, 2) is None
    assert "next_round" in str(resume_problem({**resume, "next_round": 9}, keys, 2))
    assert "RNG keys" in str(resume_problem(resume, {}, 2))
    assert LotteryTicketConfig.from_dict(LotteryTicketConfig(0.5, 2).to_dict()) == LotteryTicketConfig(0.5, 2)


DEEP = "[" * 5000 + "]" * 5000


def deep_header_file(path: Path) -> Path:
    path.write_bytes(len(DEEP).to_bytes(8, "little") + DEEP.encode())
    return path


@pytest.mark.parametrize("where", ["document", "document field", "header"])
def test_deeply_nested_json_is_a_one_line_error(
    tmp_path: Path, saved: tuple[Path, bytes], where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "deep.safetensors"
    if where == "header":
        deep_header_file(bad)
    else:
        _, header = header_of(saved[1])
        meta = header["__metadata__"]
        assert isinstance(meta, dict)
        doc = json.loads(meta["ticket"])
        doc["resume"] = "deep"
        meta["ticket"] = DEEP if where == "document" else json.dumps(doc).replace('"deep"', DEEP)
        bad.write_bytes(with_header(saved[1], header))
    with pytest.raises(ValueError, match="nested deeper than") as caught:
        Ticket.load(bad)
    assert "\n" not in str(caught.value) and str(bad) in str(caught.value)
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nested deeper than" in err and "Traceback" not in err

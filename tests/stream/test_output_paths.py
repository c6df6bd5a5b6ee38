"""Where `prune_checkpoint` writes: every destination checked before the work, checkpoint and
ticket renamed together under one lock (checkpoint first), symlinks followed, long names, and
nothing replaced when a run fails."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lottery_ticket import Ticket, prune_checkpoint
from lottery_ticket._files import create_temp_dir
from lottery_ticket.safetensors_stream import CheckpointError, _output, _prune


def model(folder: Path, name: str = "model.safetensors", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    save_file({"a.weight": rng.standard_normal((32, 16)).astype(np.float32)}, folder / name)
    return folder / name


def agree(checkpoint: Path, ticket: Path) -> bool:
    """The ticket's masks are the checkpoint's nonzero weights (the input has no zeros)."""
    weights = load_file(checkpoint)["a.weight"]
    return bool(np.array_equal(Ticket.load(ticket).masks["a.weight"], weights != 0))


def test_a_ticket_inside_an_empty_output_directory_appears_with_it(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    src = model(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    prune_checkpoint(src.parent, out, 0.5, ticket=out / "t.safetensors", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "t.safetensors"]
    assert agree(out / "model.safetensors", out / "t.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_a_ticket_named_like_an_output_file_is_refused_before_the_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in").mkdir()
    src = model(tmp_path / "in")
    monkeypatch.setattr(_prune, "select", lambda *a: pytest.fail("the threshold pass ran"))
    with pytest.raises(CheckpointError, match=r"ticket: .*would replace the output's own model\.safetensors"):
        prune_checkpoint(src.parent, tmp_path / "out", 0.5, ticket=tmp_path / "out" / "model.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_out_a_symlink_to_an_empty_directory_writes_into_its_target(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    src = model(tmp_path / "in")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    prune_checkpoint(src.parent, tmp_path / "link", 0.5, ticket=tmp_path / "t.safetensors", progress=False)
    assert (tmp_path / "link").is_symlink()
    assert agree(tmp_path / "real" / "model.safetensors", tmp_path / "t.safetensors")


@pytest.mark.parametrize("target", ["full", "file"])
def test_out_a_symlink_to_an_unusable_target_is_refused_before_the_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    (tmp_path / "in").mkdir()
    src = model(tmp_path / "in")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("mine")
    (tmp_path / "file").write_text("mine")
    (tmp_path / "link").symlink_to(tmp_path / target)
    monkeypatch.setattr(_prune, "select", lambda *a: pytest.fail("the threshold pass ran"))
    with pytest.raises(CheckpointError, match=rf"out: .*link \(a link to .*{target}\) exists and is not an empty"):
        prune_checkpoint(src.parent, tmp_path / "link", 0.5, progress=False)


def test_a_ticket_symlink_is_followed_like_ticket_save(tmp_path: Path) -> None:
    src = model(tmp_path)
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "t.safetensors").write_bytes(b"old")
    link = tmp_path / "t.safetensors"
    link.symlink_to(tmp_path / "store" / "t.safetensors")
    prune_checkpoint(src, tmp_path / "o.safetensors", 0.5, ticket=link, progress=False)
    assert link.is_symlink() and agree(tmp_path / "o.safetensors", tmp_path / "store" / "t.safetensors")


def test_a_failed_final_rename_replaces_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = model(tmp_path)
    out, ticket = tmp_path / "o.safetensors", tmp_path / "t.safetensors"
    prune_checkpoint(src, out, 0.3, ticket=ticket, progress=False)
    before = {p.name: p.read_bytes() for p in (out, ticket)}
    real = os.replace

    def fail_on_checkpoint(a: Any, b: Any) -> None:
        if Path(b) == out:
            raise OSError(5, "Input/output error")
        real(a, b)

    monkeypatch.setattr(_output.os, "replace", fail_on_checkpoint)
    with pytest.raises(OSError, match="Input/output error"):
        prune_checkpoint(src, out, 0.9, ticket=ticket, progress=False)
    assert {p.name: p.read_bytes() for p in (out, ticket)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "o.safetensors", "t.safetensors"]


def test_concurrent_runs_leave_a_checkpoint_and_ticket_of_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run A pauses right after its first rename; run B, started meanwhile, must not rename its
    # files in between (it waits for A's lock), else A's second file lands after B's pair.
    src = model(tmp_path)
    out, ticket = tmp_path / "o.safetensors", tmp_path / "t.safetensors"
    real, paused = os.replace, threading.Event()

    def slow_after_first_rename(a: Any, b: Any) -> None:
        real(a, b)
        if threading.current_thread().name == "A" and not paused.is_set():
            paused.set()
            time.sleep(1.0)

    monkeypatch.setattr(_output.os, "replace", slow_after_first_rename)
    errors: list[BaseException] = []

    def run(sparsity: float) -> None:
        try:
            prune_checkpoint(src, out, sparsity, ticket=ticket, progress=False)
        except BaseException as err:  # reported by the assertion below
            errors.append(err)

    a = threading.Thread(target=run, args=(0.3,), name="A")
    a.start()
    assert paused.wait(60)
    run(0.9)
    a.join()
    assert errors == [] and agree(out, ticket)
    assert Ticket.load(ticket).sparsity == pytest.approx(0.9, abs=0.01)  # B committed last, both files


def test_a_directory_output_created_by_another_writer_during_the_run_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in").mkdir()
    src = model(tmp_path / "in")
    out, ticket = tmp_path / "out", tmp_path / "t.safetensors"
    ticket.write_bytes(b"old ticket")
    real = _prune.select

    def other_writer(*args: Any) -> Any:
        out.mkdir()
        (out / "theirs").write_text("theirs")
        return real(*args)

    monkeypatch.setattr(_prune, "select", other_writer)
    with pytest.raises(CheckpointError, match=r"out: .*out was created by another writer during the run"):
        prune_checkpoint(src.parent, out, 0.5, ticket=ticket, progress=False)
    assert [p.name for p in out.iterdir()] == ["theirs"] and ticket.read_bytes() == b"old ticket"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "t.safetensors"]


@pytest.mark.parametrize("directory", [False, True], ids=["file", "directory"])
def test_the_longest_legal_names_are_written(tmp_path: Path, directory: bool) -> None:
    (tmp_path / "in").mkdir()
    src = model(tmp_path / "in")
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    out = tmp_path / ("o" * (limit - 3 - len(".safetensors")) + ".safetensors")
    ticket = tmp_path / ("t" * (limit - 3 - len(".safetensors")) + ".safetensors")
    prune_checkpoint(src.parent if directory else src, out, 0.5, ticket=ticket, progress=False)
    assert agree(out / "model.safetensors" if directory else out, ticket)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in", out.name, ticket.name])


def test_the_free_space_error_uses_human_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = model(tmp_path)
    monkeypatch.setattr(_output.shutil, "disk_usage", lambda path: _Usage())
    with pytest.raises(CheckpointError, match=r"has 100 bytes free, the output needs 2\.\d KiB"):
        prune_checkpoint(src, tmp_path / "o.safetensors", 0.5, progress=False)
    assert _output.human(3 * 2**30 + 2**29) == "3.5 GiB" and _output.human(1023) == "1023 bytes"


class _Usage:
    free = 100


def test_a_killed_runs_temp_directory_is_removed_by_the_next_run(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    src = model(tmp_path / "in")
    out = tmp_path / "out"
    fd, stale = create_temp_dir(out)  # what a run killed mid-pass leaves (its lock died with it)
    (stale / "model.safetensors").write_bytes(b"partial")
    if fd is not None:
        os.close(fd)
    legacy = tmp_path / ".out.partial-abc_1234"
    legacy.mkdir()
    for path in (stale, legacy):
        os.utime(path, (time.time() - 60, time.time() - 60))
    prune_checkpoint(src.parent, out, 0.5, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_an_index_as_input_copies_the_folders_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    model(folder)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a.weight": "model.safetensors"}}))
    (folder / "config.json").write_text('{"hidden_size": 16}')
    (folder / "pytorch_model.bin.index.json").write_text("{}")  # lists weights that are not copied
    prune_checkpoint(folder / "model.safetensors.index.json", tmp_path / "out", 0.5, progress=False)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["config.json", "model.safetensors", "model.safetensors.index.json"]


def test_symlinked_extra_files_are_copied_by_content(tmp_path: Path) -> None:
    # A Hugging Face cache snapshot: every file is a symlink into the blob store.
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshot"
    blobs.mkdir()
    snapshot.mkdir()
    model(blobs, "0123abcd")
    (blobs / "4567ef").write_text('{"hidden_size": 16}')
    (snapshot / "model.safetensors").symlink_to(blobs / "0123abcd")
    (snapshot / "config.json").symlink_to(blobs / "4567ef")
    prune_checkpoint(snapshot, tmp_path / "out", 0.5, progress=False)
    config = tmp_path / "out" / "config.json"
    assert not config.is_symlink() and config.read_text() == '{"hidden_size": 16}'

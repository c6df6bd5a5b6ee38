"""`prune_checkpoint` gives the in-memory kernels' masks, byte-exact outputs and loadable tickets."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file
from safetensors.torch import load_file
from safetensors.torch import save_file as save_torch

import torch
from lottery_ticket import Ticket, prune_checkpoint
from lottery_ticket.cli import main as cli_main
from lottery_ticket.safetensors_stream import _write


def mixed(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """f16/f32/f64 matrices, a 1-d bias, an int tensor, an empty matrix, a scalar, signed zeros,
    infinities, subnormals."""
    w = {
        "layers.0.weight": rng.standard_normal((48, 40)).astype(np.float32),
        "layers.0.bias": rng.standard_normal(40).astype(np.float32),
        "layers.1.weight": rng.standard_normal((32, 24)).astype(np.float16),
        "head.weight": rng.standard_normal((24, 10)),
        "position_ids": np.arange(64, dtype=np.int64)[None],
        "empty.weight": np.zeros((0, 4), np.float32),
        "scale": np.array(2.0, np.float32),
    }
    w["layers.0.weight"][0, :6] = [0.0, -0.0, np.inf, -np.inf, 1e-42, -1e-42]
    w["layers.1.weight"][1, :3] = [-0.0, 0.0, np.float16(6e-8)]
    return w


def check_run(
    h: Any, files: list[Path], out_files: list[Path], ticket: Path | None, sparsity: float, scope: str = "global"
) -> None:
    masks, pruned = h.expected(files, sparsity, h.default_choice, scope)
    written = h.load_all(out_files)
    assert written.keys() == pruned.keys()
    for name in pruned:
        assert h.same_bits(written[name], pruned[name]), name
    if ticket is not None:
        loaded = Ticket.load(ticket)
        assert list(loaded.masks) == list(masks)  # checkpoint order
        for name, mask in masks.items():
            assert np.array_equal(loaded.masks[name], mask.numpy()), name


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("sparsity", [0.0, 0.37, 0.5, 0.999])
def test_one_file_matches_the_in_memory_kernels(
    h: Any, rng: np.random.Generator, tmp_path: Path, sparsity: float, scope: str
) -> None:
    src = tmp_path / "model.safetensors"
    save_file(mixed(rng), src, metadata={"format": "pt", "note": "kept"})
    out, ticket = tmp_path / "pruned.safetensors", tmp_path / "ticket.safetensors"
    summary = prune_checkpoint(src, out, sparsity, scope=scope, ticket=ticket, progress=False)
    check_run(h, [src], [out], ticket, sparsity, scope)
    # Same header bytes: names, offsets and metadata unchanged; non-pruned tensors byte for byte.
    raw_in, raw_out = src.read_bytes(), out.read_bytes()
    assert raw_out[: 8 + int.from_bytes(raw_in[:8], "little")] == raw_in[: 8 + int.from_bytes(raw_in[:8], "little")]
    assert summary.prunable == 48 * 40 + 32 * 24 + 24 * 10
    if scope == "global":
        assert summary.pruned == round(sparsity * summary.prunable)
    assert {r.name for r in summary.tensors if r.pruned is None} == {"position_ids", "layers.0.bias", "scale"}
    assert Ticket.load(ticket).sparsity == pytest.approx(summary.achieved_sparsity)


def test_sparsity_zero_copies_the_file_byte_for_byte(rng: np.random.Generator, tmp_path: Path) -> None:
    src = tmp_path / "model.safetensors"
    save_file(mixed(rng), src)
    prune_checkpoint(src, tmp_path / "out.safetensors", 0.0, progress=False)
    assert (tmp_path / "out.safetensors").read_bytes() == src.read_bytes()


def test_bf16_and_f32_mixed(h: Any, tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "a.weight": torch.randn(40, 30, generator=gen).to(torch.bfloat16),
        "b.weight": torch.randn(20, 20, generator=gen),
        "c.weight": torch.randn(16, 8, generator=gen).to(torch.float16),
    }
    tensors["a.weight"][0, :2] = torch.tensor([-0.0, float("inf")])
    src = tmp_path / "bf16.safetensors"
    save_torch(tensors, src)
    out, ticket = tmp_path / "out.safetensors", tmp_path / "t.safetensors"
    prune_checkpoint(src, out, 0.6, ticket=ticket, progress=False)
    check_run(h, [src], [out], ticket, 0.6)
    assert load_file(out)["a.weight"].dtype == torch.bfloat16


def test_ties_break_by_shard_name_then_data_offset(tmp_path: Path) -> None:
    # Every weight has magnitude 0.5, so the order alone decides: shard names sorted, then
    # offsets (safetensors writes f64 before f32 before f16, whatever the dict order).
    half = {
        "x.f16": np.full((4, 4), -0.5, np.float16),
        "y.f32": np.full((4, 4), 0.5, np.float32),
        "z.f64": np.full((2, 4), 0.5),
    }
    save_file(half, tmp_path / "model-00002-of-00002.safetensors")
    save_file({"a.first": np.full((2, 4), 0.5, np.float32)}, tmp_path / "model-00001-of-00002.safetensors")
    ticket = tmp_path / "t.safetensors"
    inputs = [tmp_path / "model-00002-of-00002.safetensors", tmp_path / "model-00001-of-00002.safetensors"]
    summary = prune_checkpoint(inputs, tmp_path / "out", 20 / 48, ticket=ticket, progress=False)
    masks = Ticket.load(ticket).masks
    assert list(masks) == ["a.first", "z.f64", "y.f32", "x.f16"]
    assert not masks["a.first"].any() and not masks["z.f64"].any()
    assert masks["y.f32"].ravel().tolist() == [False] * 4 + [True] * 12
    assert masks["x.f16"].all()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in sorted(inputs)]
    assert [r.pruned for r in summary.tensors] == [8, 8, 4, 0]


def test_index_directory_output_keeps_names_index_and_other_files(
    h: Any, rng: np.random.Generator, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    shards = {
        "model-00001-of-00002.safetensors": {"embed.weight": rng.standard_normal((30, 8)).astype(np.float32)},
        "model-00002-of-00002.safetensors": {
            "block.weight": rng.standard_normal((8, 8)).astype(np.float32),
            "lm_head.weight": rng.standard_normal((8, 30)).astype(np.float32),
        },
    }
    weight_map = {}
    for name, tensors in shards.items():
        save_file(tensors, model / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
    index = {"metadata": {"total_size": 4 * (240 + 64 + 240)}, "weight_map": weight_map}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "pytorch_model.bin").write_bytes(b"dense weights in another format")
    before = h.snapshot(model)
    files = [model / n for n in shards]
    for source, out in (
        (model, tmp_path / "from_dir"),
        (model / "model.safetensors.index.json", tmp_path / "from_index"),
    ):
        prune_checkpoint(source, out, 0.5, exclude=["embed.*", "lm_head.*"], progress=False)
        _, pruned = h.expected(files, 0.5, lambda n, t: n == "block.weight")
        written = h.load_all([out / n for n in shards])
        assert all(h.same_bits(written[n], pruned[n]) for n in pruned)
        assert json.loads((out / "model.safetensors.index.json").read_text()) == index
    assert (tmp_path / "from_dir" / "config.json").read_text() == '{"hidden_size": 8}'
    assert not (tmp_path / "from_dir" / "pytorch_model.bin").exists()
    assert h.snapshot(model) == before  # inputs untouched


def test_include_patterns_and_predicates(h: Any, rng: np.random.Generator, tmp_path: Path) -> None:
    src = tmp_path / "m.safetensors"
    save_file(mixed(rng), src)
    chosen = {"layers.0.bias", "head.weight"}
    ticket = tmp_path / "t.safetensors"
    prune_checkpoint(src, tmp_path / "a.safetensors", 0.3, include=["*.bias", "head.*"], ticket=ticket, progress=False)
    check = h.expected([src], 0.3, lambda n, t: n in chosen)[0]
    assert {n: m.tolist() for n, m in check.items()} == {n: m.tolist() for n, m in Ticket.load(ticket).masks.items()}
    # A predicate sees the header's TensorInfo (dtype, shape) instead of a loaded tensor.
    summary = prune_checkpoint(src, None, 0.3, include=lambda n, t: t.dtype == "F16", dry_run=True, progress=False)
    assert [r.name for r in summary.tensors if r.pruned is not None] == ["layers.1.weight"]


def test_dry_run_writes_nothing_and_counts_like_a_real_run(rng: np.random.Generator, tmp_path: Path) -> None:
    src = tmp_path / "m.safetensors"
    save_file(mixed(rng), src)
    dry = prune_checkpoint(src, tmp_path / "out.safetensors", 0.42, dry_run=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    real = prune_checkpoint(src, tmp_path / "out.safetensors", 0.42, progress=False)
    assert dry.tensors == real.tensors and dry.dry_run and not real.dry_run
    assert "layers.1.weight" in dry.table() and "(copied)" in dry.table()


def test_an_interrupted_run_leaves_no_output_and_no_temporary_files(
    rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    save_file({"a.weight": rng.standard_normal((8, 8))}, folder / "model-1.safetensors")
    save_file({"b.weight": rng.standard_normal((8, 8))}, folder / "model-2.safetensors")
    real = _write.write_shard
    calls = []

    def fail_on_second_shard(*args: Any, **kwargs: Any) -> dict[str, int]:
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr("lottery_ticket.safetensors_stream._prune.write_shard", fail_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        prune_checkpoint(folder, tmp_path / "out", 0.5, ticket=tmp_path / "t.safetensors", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_an_existing_output_file_is_replaced(rng: np.random.Generator, tmp_path: Path) -> None:
    src, out = tmp_path / "m.safetensors", tmp_path / "out.safetensors"
    save_file(mixed(rng), src)
    out.write_bytes(b"old")
    prune_checkpoint(src, out, 0.5, progress=False)
    assert load_file(out).keys() == load_file(src).keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "out.safetensors"]


def test_slices_smaller_than_a_tensor_give_the_same_result(
    h: Any, rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Large tensors are written slice by slice; ties and packed masks must carry across slices.
    src = tmp_path / "m.safetensors"
    w = {"a.weight": np.round(rng.standard_normal((37, 29)), 1).astype(np.float32), "b.weight": np.full((3, 7), 0.5)}
    save_file(w, src)
    monkeypatch.setattr(_write, "SLICE_BYTES", 40)
    prune_checkpoint(src, tmp_path / "o.safetensors", 0.61, ticket=tmp_path / "t.safetensors", progress=False)
    check_run(h, [src], [tmp_path / "o.safetensors"], tmp_path / "t.safetensors", 0.61)


def test_cli_prunes_and_the_ticket_is_inspectable(
    rng: np.random.Generator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "m.safetensors"
    save_file(mixed(rng), src)
    out, ticket = tmp_path / "o.safetensors", tmp_path / "t.safetensors"
    argv = ["prune", str(src), "--sparsity", "0.5", "--out", str(out), "--ticket", str(ticket), "--exclude", "head.*"]
    assert cli_main([*argv, "--no-progress", "--no-sync"]) == 0
    assert "pruned 1344 of 2688 weights" in capsys.readouterr().out
    assert cli_main(["inspect", str(ticket)]) == 0
    printed = capsys.readouterr().out
    assert "layers.1.weight" in printed and "head.weight" not in printed
    assert cli_main(["prune", str(src), "-s", "0.5", "--dry-run", "--exclude", "head.*"]) == 0
    captured = capsys.readouterr()
    assert "1344 of 2688 prunable weights pruned" in captured.out and "dry run: nothing written" in captured.out
    assert "prune" in captured.err  # the progress bar


def test_nan_outside_the_pruned_tensors_is_copied_and_nan_in_a_later_shard_stops_everything(
    rng: np.random.Generator, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    save_file({"a.weight": rng.standard_normal((4, 4)), "a.bias": np.array([np.nan, 1.0])}, folder / "m-1.safetensors")
    prune_checkpoint(folder, tmp_path / "ok", 0.5, progress=False)
    assert torch.isnan(load_file(tmp_path / "ok" / "m-1.safetensors")["a.bias"][0])
    save_file({"b.weight": np.array([[1.0, np.nan]])}, folder / "m-2.safetensors")
    with pytest.raises(ValueError, match=r"m-2\.safetensors: tensor 'b\.weight' contains NaN"):
        prune_checkpoint(folder, tmp_path / "out", 0.5, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "ok"]


@pytest.mark.parametrize("sparsity", [0.1, 0.3])
def test_a_zero_threshold_prunes_the_first_zeros_only(
    h: Any, rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sparsity: float
) -> None:
    # A third of the weights are +-0 (an already sparse model): pruning fewer than that makes
    # the threshold zero itself, where the output's zeros no longer tell pruned from kept.
    w = rng.standard_normal((60, 20)).astype(np.float32)
    w[rng.random(w.shape) < 0.35] = 0.0
    w[:, ::3] *= -1
    src = tmp_path / "m.safetensors"
    save_file({"a.weight": w, "b.weight": np.where(w[:20] > 0, w[:20], -0.0).astype(np.float16)}, src)
    monkeypatch.setattr(_write, "SLICE_BYTES", 64)
    summary = prune_checkpoint(
        src, tmp_path / "o.safetensors", sparsity, ticket=tmp_path / "t.safetensors", progress=False
    )
    check_run(h, [src], [tmp_path / "o.safetensors"], tmp_path / "t.safetensors", sparsity)
    assert summary.pruned == round(sparsity * 1600)
    dry = prune_checkpoint(src, None, sparsity, dry_run=True, progress=False)
    assert dry.tensors == summary.tensors


@pytest.mark.parametrize("direct", [True, False], ids=["o-direct", "page-cache"])
def test_output_blocks_ending_inside_tensors_give_the_same_result(
    h: Any, rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    # Small blocks put block ends at odd elements of the tensors (f16/f32/f64): the kernel's
    # slices end there, and the ticket's packed masks must still concatenate. Both write paths
    # (O_DIRECT where the file system takes it, the page cache otherwise) give the same bytes.
    from lottery_ticket.safetensors_stream import _blocks

    monkeypatch.setattr(_blocks, "BLOCK_BYTES", 8192)
    if not direct:
        monkeypatch.setattr(_blocks, "_open", lambda path: (os.open(path, os.O_WRONLY), False))
    src = tmp_path / "m.safetensors"
    w = mixed(rng)
    w["big.weight"] = rng.standard_normal((101, 53)).astype(np.float32)
    save_file(w, src, metadata={"k": "v"})
    prune_checkpoint(src, tmp_path / "o.safetensors", 0.3, ticket=tmp_path / "t.safetensors", progress=False)
    check_run(h, [src], [tmp_path / "o.safetensors"], tmp_path / "t.safetensors", 0.3)
    raw_in, raw_out = src.read_bytes(), (tmp_path / "o.safetensors").read_bytes()
    assert len(raw_out) == len(raw_in)
    assert raw_out[: 8 + int.from_bytes(raw_in[:8], "little")] == raw_in[: 8 + int.from_bytes(raw_in[:8], "little")]

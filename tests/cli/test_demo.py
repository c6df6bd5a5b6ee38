"""`lottery-ticket demo`: the quick run end to end, and the pieces it is built from."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import torch
from lottery_ticket.cli import build_parser, demo, main
from lottery_ticket.cli.demo import report as demo_report
from lottery_ticket.cli.demo.data import load_digits_split, load_mnist1d
from lottery_ticket.cli.demo.experiment import METHODS, DemoConfig, derived_seed, random_masks_like
from lottery_ticket.cli.demo.train import lenet_300_100, train

QUICK_SEEDS, QUICK_ROUNDS = demo.QUICK["seeds"], demo.QUICK["rounds"]
WEIGHTS = ("fc1.weight", "fc2.weight", "fc3.weight")
TOTAL_WEIGHTS = 40 * 300 + 300 * 100 + 100 * 10
# Every network the quick run trains per round: IMP's ticket and controls, then the methods.
NETWORKS = ("ticket", "reinit", "random_mask", "one_shot", "random", "snip")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("demo") / "out"
    argv = ["demo", "--quick", "--method", *METHODS, "--random-masks", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    return out, json.loads((out / demo.RESULTS_NAME).read_text())


def test_quick_demo_writes_a_png(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = quick_run
    png = (out / demo.FIGURE_NAME).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert sorted(p.name for p in out.iterdir()) == sorted([demo.FIGURE_NAME, demo.RESULTS_NAME])


def test_quick_demo_json_structure(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    config = results["config"]
    assert config["data"] == "mnist1d" and config["methods"] == list(METHODS)
    assert config["layer_sizes"] == [40, 300, 100, 10]
    assert config["seeds"] == list(range(QUICK_SEEDS))
    assert config["rounds"] == QUICK_ROUNDS and config["rewind"] == "init" and config["random_masks"]
    assert math.isclose(config["target_sparsity"], 1 - 0.8**QUICK_ROUNDS)
    runs = results["runs"]
    assert sorted((r["seed"], r["round"]) for r in runs) == [
        (s, k) for s in range(QUICK_SEEDS) for k in range(QUICK_ROUNDS + 1)
    ]
    assert [e["round"] for e in results["summary"]] == list(range(QUICK_ROUNDS + 1))
    assert all(e["seeds"] == QUICK_SEEDS and set(NETWORKS) <= set(e) for e in results["summary"])
    assert [r["seed"] for r in results["supermask_runs"]] == list(range(QUICK_SEEDS))
    assert results["supermask"]["seeds"] == QUICK_SEEDS
    assert results["checks"]["dense_accuracy_points"] == pytest.approx(
        100 * results["summary"][0]["ticket"]["test_accuracy"]["mean"]
    )


def test_quick_demo_densities_follow_the_schedule(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    for seed in range(QUICK_SEEDS):
        rows = sorted((r for r in results["runs"] if r["seed"] == seed), key=lambda r: r["round"])
        for row in rows:
            # 20% of the survivors per round, rounded to whole weights, for every method.
            expected = round(TOTAL_WEIGHTS * 0.8 ** row["round"]) / TOTAL_WEIGHTS
            assert row["density"] == pytest.approx(expected, abs=1.5 / TOTAL_WEIGHTS)
            assert row["remaining_percent"] == pytest.approx(100 * row["density"])
            for net in NETWORKS:
                assert row[net]["density"] == pytest.approx(expected, abs=1.5 / TOTAL_WEIGHTS)
                assert set(row[net]["layer_density"]) == set(WEIGHTS)
                assert all(0 < d <= 1 for d in row[net]["layer_density"].values())
        densities = [r["density"] for r in rows]
        assert densities[0] == 1.0 and all(a > b for a, b in zip(densities, densities[1:]))
        # Global random pruning spreads the survivors evenly; magnitude pruning does not.
        last = rows[-1]
        assert all(abs(d - last["density"]) < 0.05 for d in last["random"]["layer_density"].values())
        ticket_layers = last["ticket"]["layer_density"].values()
        assert max(ticket_layers) - min(ticket_layers) > 0.05
    remaining = [e["remaining_percent"] for e in results["summary"]]
    assert all(a > b for a, b in zip(remaining, remaining[1:]))


def test_quick_demo_values_are_sane(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    iterations = results["config"]["iterations"]
    runs = [row[net] for row in results["runs"] for net in NETWORKS] + results["supermask_runs"]
    for metrics in runs:
        assert 0.0 <= metrics["test_accuracy"] <= 1.0
        assert 0.0 <= metrics["final_test_accuracy"] <= 1.0
        assert 1 <= metrics["early_stop_iteration"] <= iterations
        assert math.isfinite(metrics["min_val_loss"]) and metrics["min_val_loss"] > 0
    # Even 200 iterations put the dense network far above chance (10%) on MNIST-1D.
    dense = results["summary"][0]
    assert dense["ticket"]["test_accuracy"]["mean"] > 0.4
    # Round 0 of every method is the very same dense training (same W0, same batches).
    assert all(dense[net]["test_accuracy"] == dense["ticket"]["test_accuracy"] for net in NETWORKS if net != "reinit")
    for entry in results["summary"]:
        for net in NETWORKS:
            stats = entry[net]["test_accuracy"]
            assert 0.0 <= stats["mean"] <= 1.0 and stats["std"] >= 0.0
    supermask = results["supermask"]
    assert 0.05 < supermask["density"]["mean"] < 0.95 and supermask["test_accuracy"]["mean"] > 0.15


def test_demo_prints_the_table_on_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nested" / "out"
    argv = ["demo", "--data", "digits", "--quick", "--seeds", "1", "--rounds", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "winning ticket acc %" in printed and "random re-init acc %" in printed
    assert re.search(r"^\s*0\s+100%\s", printed, re.M) and re.search(r"^\s*1\s+80%\s", printed, re.M)
    assert str(out / demo.RESULTS_NAME) in printed
    results = json.loads((out / demo.RESULTS_NAME).read_text())
    assert results["config"]["seeds"] == [0] and "random_mask" not in results["runs"][0]
    assert results["config"]["data"] == "digits" and results["config"]["layer_sizes"][0] == 64
    assert results["supermask"] is None and "supermask" not in printed


def test_methods_without_imp_still_get_the_dense_round(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["demo", "--quick", "--method", "random", "--seeds", "1", "--rounds", "2", "--iterations", "30"]
    assert main([*argv, "--no-progress", "--out", str(out)]) == 0
    results = json.loads((out / demo.RESULTS_NAME).read_text())
    assert results["checks"] is None
    assert [sorted(r) for r in results["runs"]] == [["density", "random", "remaining_percent", "round", "seed"]] * 3
    assert results["runs"][0]["random"]["density"] == 1.0
    assert "random pruning acc %" in capsys.readouterr().out


def test_options_override_quick_and_parse_rewind() -> None:
    args = build_parser().parse_args(["demo", "--quick", "--rounds", "7", "--rewind", "early:50"])
    config = demo.build_config(args)
    assert config.rounds == 7 and config.iterations == demo.QUICK["iterations"]
    assert config.seeds == tuple(range(QUICK_SEEDS)) and config.rewind == "early:50"
    full = demo.build_config(build_parser().parse_args(["demo"]))
    assert full.seeds == (0, 1, 2) and full.rounds == 15 and full.rewind == "init" and full.iterations == 1500
    assert full.data == "mnist1d" and full.methods == ("imp",) and full.target_sparsity == pytest.approx(1 - 0.8**15)
    digits = demo.build_config(build_parser().parse_args(["demo", "--data", "digits"]))
    assert digits.rounds == 20 and digits.iterations == 1000 and digits.layer_sizes == (64, 300, 100, 10)
    several = demo.build_config(build_parser().parse_args(["demo", "--method", "snip", "--method", "imp", "random"]))
    assert several.methods == ("imp", "random", "snip") and several.networks == ("ticket", "reinit", "random", "snip")


@pytest.mark.parametrize(
    "argv",
    [["--rewind", "sideways"], ["--seeds", "0"], ["--iterations", "x"], ["--method", "magic"], ["--data", "cifar"]],
)
def test_bad_options_are_rejected_by_the_parser(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["demo", *argv])
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_mnist1d_is_generated_locally_the_same_way_every_time() -> None:
    import random

    np_state, py_state = np.random.get_state(), random.getstate()
    a, b = load_mnist1d(), load_mnist1d()
    # make_dataset seeds the global generators; the loader puts them back.
    assert np.array_equal(np.random.get_state()[1], np_state[1]) and random.getstate() == py_state
    assert a.train_x.shape == (3500, 40) and a.val_x.shape == (500, 40) and a.test_x.shape == (1000, 40)
    assert a.train_x.dtype == torch.float32 and a.train_y.dtype == torch.int64
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert min(torch.bincount(a.test_y, minlength=10).tolist()) > 70  # all ten classes, roughly balanced
    train_rows = {tuple(r) for r in a.train_x.tolist()}
    assert not any(tuple(r) in train_rows for r in a.val_x.tolist() + a.test_x.tolist())


def test_out_must_be_a_directory(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("keep me")
    assert main(["demo", "--quick", "--no-progress", "--out", str(target)]) == 2
    assert target.read_text() == "keep me"


def test_data_split_is_fixed_and_disjoint() -> None:
    a, b = load_digits_split(), load_digits_split()
    assert a.train_x.shape == (1257, 64) and a.val_x.shape == (180, 64) and a.test_x.shape == (360, 64)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.train_y, b.train_y)
    assert float(a.train_x.min()) >= 0.0 and float(a.train_x.max()) <= 1.0
    train_rows = {tuple(r) for r in a.train_x.tolist()}
    # Digits has a few duplicate images; almost none may be shared between train and test.
    assert sum(tuple(r) in train_rows for r in a.test_x.tolist()) <= 5


def test_model_init_is_seeded_glorot() -> None:
    a, b, c = lenet_300_100(3), lenet_300_100(3), lenet_300_100(4)
    assert [n for n, _ in a.named_parameters()] == [
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
        "fc3.weight",
        "fc3.bias",
    ]
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert torch.equal(pa["fc1.weight"], pb["fc1.weight"]) and not torch.equal(pa["fc1.weight"], pc["fc1.weight"])
    assert float(pa["fc2.bias"].detach().abs().sum()) == 0.0
    assert float(pa["fc2.weight"].detach().std()) == pytest.approx((2 / 400) ** 0.5, rel=0.05)


def test_train_keeps_masked_weights_zero() -> None:
    model = lenet_300_100(0)
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(2)
    masks = {name: torch.rand(params[name].shape, generator=gen) < 0.3 for name in WEIGHTS}
    with torch.no_grad():
        for name in WEIGHTS:
            params[name].mul_(masks[name])
    result = train(model, load_digits_split(), iterations=60, batch_seed=0, eval_every=20, masks=masks)
    for name in WEIGHTS:
        assert bool((params[name][~masks[name]] == 0).all())
        assert bool((params[name][masks[name]] != 0).any())
    assert 0.0 <= result.test_accuracy <= 1.0 and result.early_stop_iteration in (20, 40, 60)


def test_train_rejects_bad_arguments() -> None:
    data = load_digits_split()
    with pytest.raises(ValueError, match="iterations"):
        train(lenet_300_100(0), data, iterations=0, batch_seed=0)
    with pytest.raises(ValueError, match="masks"):
        train(lenet_300_100(0), data, iterations=5, batch_seed=0, masks={"fc9.weight": torch.ones(1, dtype=torch.bool)})


def test_random_masks_keep_per_tensor_counts() -> None:
    gen = torch.Generator().manual_seed(0)
    masks = {"a": torch.rand(30, 20, generator=gen) < 0.1, "b": torch.rand(7, generator=gen) < 0.5}
    shuffled = random_masks_like(masks, seed=5)
    for name, mask in masks.items():
        assert shuffled[name].shape == mask.shape and shuffled[name].dtype == torch.bool
        assert int(shuffled[name].sum()) == int(mask.sum())
    assert not torch.equal(shuffled["a"], masks["a"])
    assert torch.equal(random_masks_like(masks, seed=5)["a"], shuffled["a"])


def test_derived_seeds_differ_per_round_and_network() -> None:
    seeds = {derived_seed(s, r, n) for s in range(3) for r in range(16) for n in range(3)}
    assert len(seeds) == 3 * 16 * 3 and all(0 <= s < 2**31 for s in seeds)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="seeds"):
        DemoConfig(seeds=())
    with pytest.raises(ValueError, match="rounds"):
        DemoConfig(rounds=0)


def test_science_checks_and_table_from_a_known_summary() -> None:
    def entry(k: int, ticket: float, reinit: float) -> dict[str, Any]:
        stats = {
            "test_accuracy": {"mean": 0.0, "std": 0.01},
            "early_stop_iteration": {"mean": 100.0, "std": 0.0},
            "final_test_accuracy": {"mean": 0.0, "std": 0.0},
        }
        return {
            "round": k,
            "remaining_percent": 100 * 0.8**k,
            "seeds": 3,
            "ticket": {**stats, "test_accuracy": {"mean": ticket, "std": 0.01}},
            "reinit": {**stats, "test_accuracy": {"mean": reinit, "std": 0.02}},
        }

    accs = [0.97, 0.975, 0.965, 0.955, 0.96]
    summary = [entry(k, a, a - 0.01) for k, a in enumerate(accs)]
    summary += [entry(k, 0.95, 0.94 if k < 13 else 0.92) for k in range(5, 16)]
    checks = demo_report.science_checks(summary)
    # Round 3 (51.2%) is 1.5 points below dense: matching stops at round 2 (64%).
    assert checks["ticket_matches_dense_down_to_percent"] == pytest.approx(64.0)
    assert list(checks["reinit_gap_points"]) == [f"{100 * 0.8**k:.2f}" for k in range(1, 16)]
    assert checks["reinit_gap_points"]["5.50"] == pytest.approx(3.0)
    assert checks["ticket_beats_reinit_at_high_sparsity"]
    assert checks["ticket_beats_reinit_from_percent"] == pytest.approx(100 * 0.8**13)
    summary[14] = entry(14, 0.95, 0.94)  # 4.4% remaining: only 1 point ahead
    checks = demo_report.science_checks(summary)
    assert not checks["ticket_beats_reinit_at_high_sparsity"]
    assert checks["ticket_beats_reinit_from_percent"] == pytest.approx(100 * 0.8**15)
    summary[15] = entry(15, 0.95, 0.94)
    assert demo_report.science_checks(summary)["ticket_beats_reinit_from_percent"] is None
    table = demo_report.format_table(summary, ["ticket", "reinit"])
    assert " 97.0 ± 1.0" in table and " 96.0 ± 2.0" in table and " 3.52% " in table
    assert len(table.splitlines()) == 17


def test_summarize_mean_and_sample_std() -> None:
    rows = [
        {
            "round": 0,
            "remaining_percent": 100.0,
            "ticket": {"test_accuracy": a, "early_stop_iteration": i, "final_test_accuracy": a},
        }
        for a, i in [(0.9, 100), (0.8, 200), (0.7, 300)]
    ]
    stats = demo_report.summarize(rows, ["ticket"])[0]["ticket"]
    assert stats["test_accuracy"]["mean"] == pytest.approx(0.8)
    assert stats["test_accuracy"]["std"] == pytest.approx(0.1)
    assert stats["early_stop_iteration"] == pytest.approx({"mean": 200.0, "std": 100.0})


def test_write_atomic_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    demo_report.write_json(path, {"a": 1})
    demo_report.write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_check_ticket_state_catches_masking_and_rewinding_bugs() -> None:
    from lottery_ticket.cli.demo.experiment import check_ticket_state

    model = lenet_300_100(0)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = {n: initial[n].abs() > 0.05 for n in WEIGHTS}
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in WEIGHTS:
            params[name].mul_(masks[name])
    check_ticket_state(model, masks, initial)  # a correct rewind passes
    with torch.no_grad():
        params["fc2.weight"][~masks["fc2.weight"]] = 1e-3
    with pytest.raises(RuntimeError, match="fc2.weight: pruned weights are not zero"):
        check_ticket_state(model, masks, None)
    with torch.no_grad():
        params["fc2.weight"].mul_(masks["fc2.weight"])
        params["fc3.weight"][masks["fc3.weight"]] += 1e-3
    with pytest.raises(RuntimeError, match="fc3.weight: surviving weights differ from W0"):
        check_ticket_state(model, masks, initial)


def test_demo_runs_with_early_rewinding(tmp_path: Path) -> None:
    out = tmp_path / "early"
    argv = ["demo", "--quick", "--seeds", "1", "--rounds", "1", "--iterations", "60", "--rewind", "early:20"]
    assert main([*argv, "--no-progress", "--out", str(out)]) == 0
    results = json.loads((out / demo.RESULTS_NAME).read_text())
    assert results["config"]["rewind"] == "early:20" and results["config"]["iterations"] == 60
    assert [r["round"] for r in results["runs"]] == [0, 1] and results["config"]["data"] == "mnist1d"
    assert results["runs"][1]["density"] == pytest.approx(0.8, abs=1e-4)


def test_parallel_seeds_give_the_same_results(tmp_path: Path) -> None:
    argv = ["demo", "--quick", "--method", "imp", "snip", "--rounds", "1", "--iterations", "30", "--no-progress"]
    results = []
    for jobs in ("1", "2"):
        assert main([*argv, "--jobs", jobs, "--out", str(tmp_path / jobs)]) == 0
        results.append(json.loads((tmp_path / jobs / demo.RESULTS_NAME).read_text()))
    assert [r["environment"]["jobs"] for r in results] == [1, 2]
    assert results[0]["runs"] == results[1]["runs"] and results[0]["summary"] == results[1]["summary"]

"""`lottery-ticket bench` at a tiny size, and the benchmark pieces it shares with `benches/`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lottery_ticket import cli, global_magnitude_masks
from lottery_ticket.cli.bench.measure import in_subprocess
from lottery_ticket.cli.bench.methods import BY_KEY, METHODS, ONE_THREAD, ONE_THREAD_LABEL, check_masks
from lottery_ticket.cli.bench.table import Measurement, Report
from lottery_ticket.cli.bench.workloads import AMOUNT, WorkloadSpec, bert_shapes, count, materialize, resnet50_shapes


def test_bench_prints_every_method_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    assert cli.main(["bench", "--params", "1e5", "--no-memory", "--markdown", str(out)]) == 0
    printed = capsys.readouterr()
    for label in [m.label for m in METHODS] + [ONE_THREAD_LABEL]:
        row = next(line for line in printed.out.splitlines() if f"| {label} " in line)
        assert "skipped" not in row and "—" not in row.split("|")[3], row  # a measured median
    assert "mask step ≥ 100x faster than torch.prune" in printed.out
    assert "BERT-like" in printed.out
    assert out.read_text() == printed.out
    assert "ours on 1 thread" in printed.err  # the progress bar


def test_bench_bf16_resnet_mix(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--params", "2e4", "--dtype", "bf16", "--mix", "resnet", "--no-memory"]) == 0
    assert "ResNet-50-like" in capsys.readouterr().out


@pytest.mark.parametrize("params", ["10", "lots", "-5e6"])
def test_bench_rejects_bad_params(params: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--params", params])
    assert exit_info.value.code == 2
    assert "--params" in capsys.readouterr().err


def test_peak_memory_measured_in_a_fresh_process() -> None:
    spec = WorkloadSpec("bert", 200_000)
    answer = in_subprocess("ours", spec, timed=True, threads=1)
    assert answer["rounds"] >= 1 and answer["median_s"] > 0
    # The bound on ours: at most 64 MiB beyond the masks it returns.
    assert answer["peak_extra_bytes"] is not None and 0 <= answer["peak_extra_bytes"] <= 64 << 20


def test_workload_shapes_match_the_real_models() -> None:
    assert count(bert_shapes(768)) == 109_482_240  # BERT-base, every weight and bias
    assert abs(count(resnet50_shapes(1.0)) - 25_557_032) < 60_000  # ResNet-50 (BN: weight+bias only)
    for mix, smallest in (("bert", 200_000), ("resnet", 5_000)):  # BERT's vocabulary: >= 31k weights
        for params in (smallest, 1_000_000, 30_000_000):
            assert abs(WorkloadSpec(mix, params).numel - params) / params < 0.1  # type: ignore[arg-type]
    spec = WorkloadSpec("resnet", 50_000, "bf16", seed=3)
    assert WorkloadSpec.parse(spec.token) == spec


def test_workload_is_reproducible_and_reference_exact() -> None:
    spec = WorkloadSpec("bert", 20_000, "bf16")
    a, b = materialize(spec), materialize(spec)
    assert all(torch.equal(x, y) for x, y in zip(a.weights, b.weights))
    assert a.weights[0].dtype == torch.bfloat16 and a.k == round(AMOUNT * spec.numel)
    flat = torch.cat([w.float().abs().reshape(-1) for w in a.weights])
    assert a.threshold == float(flat.sort().values[a.k - 1])


def test_checks_catch_wrong_answers() -> None:
    workload = materialize(WorkloadSpec("resnet", 20_000))
    masks = global_magnitude_masks(workload.weights, AMOUNT)
    check_masks(workload, masks)
    biggest = max(range(len(masks)), key=lambda i: int(workload.weights[i].abs().argmax()))
    flipped = [m.clone() for m in masks]
    flat = flipped[biggest].view(-1)
    flat[workload.weights[biggest].abs().argmax()] = False  # prune a large weight instead
    with pytest.raises(AssertionError):
        check_masks(workload, flipped)
    with pytest.raises(AssertionError):
        check_masks(workload, masks[:-1])
    method = BY_KEY["ours_apply"]
    state = method.prepare(workload)
    with pytest.raises(AssertionError):  # not applied yet: the check must notice
        method.check(workload, state, None)
    method.run(state)
    method.check(workload, state, None)


def _measured(spec: WorkloadSpec, key: str, seconds: float, extra_mib: float | None = None) -> Measurement:
    task = BY_KEY[key].task if key in BY_KEY else "mask"
    extra = None if extra_mib is None else int(extra_mib * (1 << 20))
    return Measurement(spec, key, key, task, median_s=seconds, rounds=1, peak_extra_bytes=extra)


def test_table_ratios_and_verdicts() -> None:
    small, big = WorkloadSpec("resnet", 25_500_000), WorkloadSpec("bert", 440_000_000)
    report = Report()
    times = {
        "floor": 0.02, "numpy": 0.4, "torch_prune": 11.7, "ours": 0.08, "drop_in": 0.5,
        "ours_apply": 0.03, "torch_mul": 0.025, "ours_rewind": 0.05, "torch_where": 0.02,
        ONE_THREAD: 0.15,
    }
    for key, seconds in times.items():
        report.record(_measured(small, key, seconds, extra_mib=3 if key == "ours" else None))
    # 440M: per-weight time 1.2x the 25M point's (within ±30%), memory above 64 MiB.
    per_weight = 0.08 / small.numel * 1.2
    report.record(_measured(big, "ours", per_weight * big.numel, extra_mib=100))
    text = report.render()
    rows = {line.split("|")[1].strip() + "@" + line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("|")}
    verdict = {key: line.split("|")[4].strip() for key, line in rows.items()}
    at_small = "@" + small.label
    assert verdict["mask step ≥ 100x faster than torch.prune" + at_small] == "pass"  # 146x
    assert verdict["mask step ≥ 5x faster than numpy partition" + at_small] == "pass"  # 5x
    assert verdict["mask step ≤ 5x the read floor" + at_small] == "pass"  # 4x
    assert verdict["extra memory ≤ 64 MiB beyond the masks" + at_small] == "pass"
    assert verdict["apply_masks ≤ 1.5x torch mul_" + at_small] == "pass"  # 1.2x
    assert verdict["rewind ≤ 1.5x torch where" + at_small] == "FAIL"  # 2.5x
    assert verdict["extra memory ≤ 64 MiB beyond the masks@" + big.label] == "FAIL"
    assert verdict["mask step ≥ 100x faster than torch.prune@" + big.label] == "n/a"
    assert verdict["(info) drop-in vs torch.prune" + at_small] == "info"
    linear = next(line for line in text.splitlines() if "time linear" in line)
    assert "×1.20" in linear and linear.rstrip(" |").endswith("pass")
    ratio_row = next(line for line in text.splitlines() if "| torch_prune " in line)
    assert "146x" in ratio_row  # × ours


def test_table_needs_a_big_point_for_linearity() -> None:
    report = Report()
    report.record(_measured(WorkloadSpec("bert", 1_000_000), "ours", 0.01))
    line = next(line for line in report.render().splitlines() if "time linear" in line)
    assert line.rstrip(" |").endswith("n/a")

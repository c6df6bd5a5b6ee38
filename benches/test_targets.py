"""The targets' verdicts: given from the measured ratios on an idle machine, withheld otherwise."""

from __future__ import annotations

from lottery_ticket.cli.bench.hygiene import Machine
from lottery_ticket.cli.bench.table import Measurement, Report
from lottery_ticket.cli.bench.workloads import WorkloadSpec
from targets import targets_table


def machine(load: float, busy: tuple[str, ...] = ()) -> Machine:
    return Machine(load, busy, "test CPU", 2, 2, 2)


def report_of(times: dict[tuple[WorkloadSpec, str], float], at: Machine) -> Report:
    report = Report(at)
    for (spec, key), seconds in times.items():
        m = Measurement(spec, key, key, "mask")
        m.median_s, m.rounds, m.spread = seconds, 5, 0.01
        report.record(m)
    return report


def verdicts(table: str) -> dict[str, str]:
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ") and "target" not in line]
    return {row[1].strip(): row[4].strip() for row in rows}


def test_verdicts_on_an_idle_machine_and_withheld_on_a_busy_one() -> None:
    bert, lenet = WorkloadSpec("bert", 110_000_000), WorkloadSpec("lenet", 266_200)
    times = {
        (bert, "floor"): 0.10,
        (bert, "ours"): 0.18,  # 1.8x the floor: pass
        (bert, "ours_in_place"): 0.16,  # 1.6x: FAIL (<= 1.5x)
        (bert, "ours_torch"): 1.5,  # 15x: pass
        (lenet, "numpy"): 0.9e-3,
        (lenet, "ours"): 0.1e-3,  # 9x: FAIL (>= 10x)
    }
    idle = verdicts(targets_table(report_of(times, machine(0.1)), machine(0.2)))
    assert idle["110M f32, fresh masks ≤ 2x read floor"] == "pass"
    assert idle["110M f32, a later round in place ≤ 1.5x floor"] == "FAIL"
    assert idle["torch-op backend on host tensors ≤ 20x floor"] == "pass"
    assert idle["LeNet-300-100 size ≥ 10x NumPy"] == "FAIL"
    assert "(its bytes alone" not in targets_table(report_of(times, machine(0.1)))  # not measured: no note
    times[(bert, "mask_bytes")] = 0.14
    table = targets_table(report_of(times, machine(0.1)), machine(0.2))
    assert "1.60x the floor (its bytes alone: 1.40x)" in table  # shown, not judged: still FAIL
    assert verdicts(table)["110M f32, a later round in place ≤ 1.5x floor"] == "FAIL"
    assert idle["110M bf16 ≤ 3x its read floor"] == "n/a"
    for before, after in [(machine(0.9), machine(0.1)), (machine(0.1), machine(0.1, ("cc1 (42) 95%",)))]:
        table = targets_table(report_of(times, before), after)
        assert set(verdicts(table).values()) <= {"withheld (noisy)", "n/a"}
        assert "verdicts withheld: the machine was not idle" in table


def test_cliff_is_time_per_weight_between_slab_sizes() -> None:
    small, big = WorkloadSpec("slabs", 110_000_000, amount=0.5), WorkloadSpec("slabs", 560_000_000, amount=0.5)
    one = report_of({(small, "ours"): 0.05}, machine(0.0))
    line = next(line for line in targets_table(one).splitlines() if "no cliff: f32" in line)
    assert line.rstrip(" |").endswith("n/a")  # one size only
    two = report_of({(small, "ours"): 0.05, (big, "ours"): 0.05 / small.numel * big.numel * 1.3}, machine(0.0))
    line = next(line for line in targets_table(two).splitlines() if "no cliff: f32" in line)
    assert "×1.30" in line and line.rstrip(" |").endswith("FAIL")
    # Timed beside the floor, the ratio's growth is what counts: the big row caught a slower
    # machine (its floor too), so per weight beyond the memory's own it did not grow.
    for spec, ratio in ((small, 2.0), (big, 2.1)):
        m = two.get(spec, "ours")
        assert m is not None
        m.ratios = {"floor": ratio}
    line = next(line for line in targets_table(two).splitlines() if "no cliff: f32" in line)
    assert "×1.05 ‡" in line and line.rstrip(" |").endswith("pass")


def test_floor_targets_read_the_paired_ratio() -> None:
    bert = WorkloadSpec("bert", 110_000_000)
    report = report_of({(bert, "floor"): 0.010, (bert, "ours"): 0.025}, machine(0.1))  # medians: 2.5x
    assert verdicts(targets_table(report))["110M f32, fresh masks ≤ 2x read floor"] == "FAIL"
    paired = report.get(bert, "ours")
    assert paired is not None
    paired.ratios = {"floor": 1.9}  # timed beside the floor, round by round
    table = targets_table(report)
    assert verdicts(table)["110M f32, fresh masks ≤ 2x read floor"] == "pass" and "1.90x the floor ‡" in table


def test_peer_targets_read_the_ratio_paired_with_the_peer() -> None:
    lenet, conv = WorkloadSpec("lenet", 266_200), WorkloadSpec("conv", 25_500_000)
    # Timed minutes apart, NumPy's row caught the machine fast and ours slow: the medians say 8x.
    times = {(lenet, "numpy"): 0.0017, (lenet, "ours"): 0.0002125, (conv, "numpy"): 0.18, (conv, "ours"): 0.012}
    report = report_of(times, machine(0.1))
    assert verdicts(targets_table(report))["LeNet-300-100 size ≥ 10x NumPy"] == "FAIL"
    ours = report.get(lenet, "ours")
    assert ours is not None
    ours.ratios = {"floor": 6.0, "numpy": 0.08}  # round by round, ours took 8% of NumPy's time
    table = targets_table(report)
    assert verdicts(table)["LeNet-300-100 size ≥ 10x NumPy"] == "pass" and "12.50x faster ‡" in table
    assert "15.00x faster" in table and "15.00x faster ‡" not in table  # the conv rows were not paired

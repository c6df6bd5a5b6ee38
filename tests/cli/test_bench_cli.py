"""`lottery-ticket bench` at a tiny size, and the benchmark pieces it shares with `benches/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import torch
from lottery_ticket import _core, cli, global_magnitude_masks
from lottery_ticket.cli.bench.hygiene import (
    WAIT_POLL_S,
    WARM_S,
    Machine,
    Rounds,
    busy_processes,
    numpy_simd,
    read_machine,
    repeat_until_stable,
    wait_until_idle,
)
from lottery_ticket.cli.bench.measure import in_subprocess, measure_method
from lottery_ticket.cli.bench.methods import BY_KEY, METHODS, ONE_THREAD_LABEL, check_masks, paired_with
from lottery_ticket.cli.bench.table import Measurement, Report
from lottery_ticket.cli.bench.workloads import (
    AMOUNT,
    WorkloadSpec,
    _kth_by_histogram,
    bert_shapes,
    count,
    materialize,
    resnet50_shapes,
    suite,
    suite_keys,
)


def test_bench_prints_every_method_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    assert cli.main(["bench", "--params", "1e5", "--no-memory", "--markdown", str(out)]) == 0
    printed = capsys.readouterr()
    for label in [m.label for m in METHODS] + [ONE_THREAD_LABEL]:
        row = next(line for line in printed.out.splitlines() if f"| {label} " in line)
        assert "skipped" not in row and "—" not in row.split("|")[3], row  # a measured median
    # Measurements and comparisons only, with what they were measured under; targets are benches/'.
    assert "target" not in printed.out and "issue" not in printed.out and "verdict" not in printed.out
    assert "load average" in printed.out and "ours on" in printed.out and "torch on" in printed.out
    assert f"({_core.scanner()} scanner)" in printed.out
    # NumPy's partition is the peer of the NumPy-relative rows, and its speed follows its SIMD.
    assert f"numpy {np.__version__} (SIMD {numpy_simd()})" in printed.out
    assert "BERT-like" in printed.out
    assert out.read_text() == printed.out
    assert "ours on 1 thread" in printed.err  # the progress bar


def test_bench_bf16_resnet_mix(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--params", "2e4", "--dtype", "bf16", "--mix", "resnet", "--no-memory"]) == 0
    assert "ResNet-50-like" in capsys.readouterr().out


def test_bench_f16_conv_mix(capsys: pytest.CaptureFixture[str]) -> None:
    """f16 (half-precision checkpoints): every method answers correctly and gets a number."""
    assert cli.main(["bench", "--params", "3e4", "--dtype", "f16", "--mix", "conv", "--no-memory"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "workload" not in line]
    assert "ResNet-50 convs" in out and " f16" in out
    assert rows and all("skipped" not in row for row in rows)


def test_bench_suite_measures_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --params the suite runs (tiny here): every row gets a number."""
    assert cli.main(["bench", "--scale", "0.0002", "--big", "--no-memory"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "workload" not in line]
    assert rows and all("skipped" not in row for row in rows)
    for label in ("ResNet-50 convs", "LeNet-300-100-like", "slabs", "a later round", "MaskApplier call", "out=masks"):
        assert label in out
    assert "torch-op backend" in out


def test_suite_covers_the_issue_rows() -> None:
    specs = suite()
    conv = next(s for s in specs if s.mix == "conv")
    assert len(conv.shapes) == 54 and abs(conv.numel - 25.5e6) < 0.1e6  # ResNet-50: 53 convs + fc
    lenet = next(s for s in specs if s.mix == "lenet")
    assert lenet.shapes == [(300, 784), (100, 300), (10, 100)] and lenet.numel == 266_200
    slabs = [s for s in suite(big=True) if s.mix == "slabs"]
    assert {s.amount for s in slabs} == {0.5} and all(shape[0] <= 20_000_000 for s in slabs for shape in s.shapes)
    assert max(s.numel for s in slabs) > 2**31  # the bf16 point crosses 32-bit indexing
    assert "ours_masked" in suite_keys(specs[0]) and "applier" in suite_keys(lenet)
    assert {s.dtype for s in specs if s.mix == "bert"} == {"f32", "bf16", "f16"}


@pytest.mark.parametrize("dtype", ["f64", "fp16", "F16"])
def test_bench_rejects_an_unknown_dtype(dtype: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--dtype", dtype])
    assert exit_info.value.code == 2
    assert "--dtype" in capsys.readouterr().err
    with pytest.raises(ValueError, match="dtype: expected one of f32, bf16, f16"):
        WorkloadSpec("bert", 20_000, dtype)  # type: ignore[arg-type]


@pytest.mark.parametrize("seconds", ["-1", "soon", "nan", "1e9"])
def test_bench_rejects_a_bad_wait(seconds: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--wait-idle", seconds])
    assert exit_info.value.code == 2
    assert "--wait-idle" in capsys.readouterr().err


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
    # The issue's bound on ours: at most 64 MiB beyond the masks it returns.
    assert answer["peak_extra_bytes"] is not None and 0 <= answer["peak_extra_bytes"] <= 64 << 20


def test_workload_shapes_match_the_real_models() -> None:
    assert count(bert_shapes(768)) == 109_482_240  # BERT-base, every weight and bias
    assert abs(count(resnet50_shapes(1.0)) - 25_557_032) < 60_000  # ResNet-50 (BN: weight+bias only)
    for mix, smallest in (("bert", 200_000), ("resnet", 5_000)):  # BERT's vocabulary: >= 31k weights
        for params in (smallest, 1_000_000, 30_000_000):
            assert abs(WorkloadSpec(mix, params).numel - params) / params < 0.1  # type: ignore[arg-type]
    spec = WorkloadSpec("resnet", 50_000, "bf16", seed=3, amount=0.35)
    assert WorkloadSpec.parse(spec.token) == spec


def test_workload_is_reproducible_and_reference_exact() -> None:
    spec = WorkloadSpec("bert", 20_000, "bf16")
    a, b = materialize(spec), materialize(spec)
    assert all(torch.equal(x, y) for x, y in zip(a.weights, b.weights))
    assert a.weights[0].dtype == torch.bfloat16 and a.k == round(AMOUNT * spec.numel)
    flat = torch.cat([w.float().abs().reshape(-1) for w in a.weights])
    assert a.threshold == float(flat.sort().values[a.k - 1])


@pytest.mark.parametrize("dtype", ["f32", "bf16", "f16"])
def test_histogram_reference_matches_sorting(dtype: str) -> None:
    """The big workloads' reference threshold (two 16-bit digit histograms) is the k-th magnitude."""
    workload = materialize(WorkloadSpec("slabs", 30_000, dtype, amount=0.5))  # type: ignore[arg-type]
    flat = torch.cat([w.float().abs().reshape(-1) for w in workload.weights]).sort().values
    for k in (1, workload.k, flat.numel()):
        assert _kth_by_histogram(workload.weights, k) == float(flat[k - 1])


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
    later = BY_KEY["ours_masked"]
    state = later.prepare(workload)
    masks = later.run(state)
    later.check(workload, state, masks)
    revived = [m.clone() for m in masks]
    first_pruned = int((~state.survivors[0]).reshape(-1).nonzero()[0])
    revived[0].view(-1)[first_pruned] = True  # a weight pruned in the first round comes back
    with pytest.raises(AssertionError):
        later.check(workload, state, revived)
    bytes_row = BY_KEY["mask_bytes"]
    state = bytes_row.prepare(workload)
    sums = bytes_row.run(bytes_row.setup(state))
    bytes_row.check(workload, state, sums)  # the masks read and written back unchanged
    with pytest.raises(AssertionError):
        bytes_row.check(workload, state, [s + 1 for s in sums])
    state.masks[0].view(-1)[0] ^= True
    with pytest.raises(AssertionError):
        bytes_row.check(workload, state, sums)


def _measured(spec: WorkloadSpec, key: str, seconds: float, extra_mib: float | None = None) -> Measurement:
    task = BY_KEY[key].task if key in BY_KEY else "mask"
    extra = None if extra_mib is None else int(extra_mib * (1 << 20))
    return Measurement(spec, key, key, task, median_s=seconds, rounds=1, peak_extra_bytes=extra)


def test_table_ratios_and_noisy_rows() -> None:
    bert = WorkloadSpec("bert", 110_000_000)
    times = {"floor": 0.02, "torch_prune": 11.7, "ours": 0.036, "drop_in": 0.05}
    for machine, noisy in [(Machine(0.1, (), "cpu", 2, 2, 2), False), (Machine(1.7, (), "cpu", 2, 2, 2), True)]:
        report = Report(machine)
        for key, seconds in times.items():
            m = _measured(bert, key, seconds)
            m.spread = 0.09 if key == "drop_in" else 0.01  # drop_in never settled
            report.record(m)
        text = report.render()
        assert f"load average {machine.load_average:.2f}" in text
        rows = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| BERT")}
        assert "325x" in rows["torch_prune"]  # × ours
        assert "1.80x" in rows["ours"]  # × read floor
        assert rows["drop_in"].rstrip(" |").endswith("9.0% noisy")
        assert rows["ours"].rstrip(" |").endswith("1.0% noisy" if noisy else "1.0%")
    assert "not idle" not in Report(Machine(0.1, (), "cpu", 2, 2, 2)).render()
    assert "every row is noisy" in Report().render()  # load not recorded


def test_machine_is_idle_only_below_the_load_limit_with_no_busy_process() -> None:
    assert read_machine(load=lambda: 0.2, busy=lambda: ()).idle
    assert not read_machine(load=lambda: 0.6, busy=lambda: ()).idle
    busy = read_machine(load=lambda: 0.0, busy=lambda: ("cc1 (7) 90%",))
    assert not busy.idle and "cc1 (7) 90%" in busy.why_not_idle()


def test_after_our_own_run_only_other_processes_make_the_machine_busy() -> None:
    # The load average right after a run still counts the run's own threads.
    after = read_machine(load=lambda: 1.9, busy=lambda: (), after_own_run=True)
    assert after.idle and "load average 1.90" in after.summary()
    shared = read_machine(load=lambda: 1.9, busy=lambda: ("cc1 (7) 90%",), after_own_run=True)
    assert not shared.idle and shared.why_not_idle() == "busy: cc1 (7) 90%"


class FakeClock:
    """Time that passes only when slept through."""

    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


def test_a_wait_for_an_idle_machine_ends_when_it_is_idle() -> None:
    loads, clock, said = iter([1.4, 0.9, 0.3, 0.1]), FakeClock(), []
    machine = wait_until_idle(
        60,
        lambda: read_machine(load=lambda: next(loads), busy=lambda: ()),
        sleep=clock.sleep,
        clock=lambda: clock.now,
        say=said.append,
    )
    assert machine.idle and machine.load_average == 0.3
    assert clock.now == 2 * WAIT_POLL_S
    assert len(said) == 1 and "load average 1.40 > 0.5" in said[0]


def test_a_wait_gives_up_at_its_limit_and_says_the_rows_will_be_noisy() -> None:
    clock, said = FakeClock(), []
    machine = wait_until_idle(
        12,
        lambda: read_machine(load=lambda: 0.1, busy=lambda: ("cc1 (7) 90%",)),
        sleep=clock.sleep,
        clock=lambda: clock.now,
        say=said.append,
    )
    assert not machine.idle and clock.now == 12
    assert "cc1 (7) 90%" in said[0] and "noisy" in said[-1]


def test_no_wait_reads_the_machine_once() -> None:
    reads: list[Machine] = []

    def read() -> Machine:
        reads.append(read_machine(load=lambda: 2.0, busy=lambda: ()))
        return reads[-1]

    def no_sleep(seconds: float) -> None:
        raise AssertionError("slept")

    machine = wait_until_idle(0, read, sleep=no_sleep, say=lambda line: None)
    assert reads == [machine] and not machine.idle


def test_busy_processes_sees_another_process_using_the_cpu() -> None:
    import subprocess
    import sys

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert any(f"({spinner.pid})" in entry for entry in busy_processes(0.5))
    finally:
        spinner.kill()
        spinner.wait()


def test_rounds_repeat_until_their_spread_is_small() -> None:
    def timed(durations: list[float]) -> Rounds:
        now = [0.0]
        pending = iter(durations)

        def clock() -> float:
            return now[0]

        def run(_: object) -> None:
            now[0] += next(pending)

        return repeat_until_stable(run, lambda: None, budget_s=10.0, clock=clock)

    settled = timed([2.0, 1.0, 1.01, 1.0, 1.02] + [1.0] * 30)
    assert settled.stable and len(settled.times) == 6 and settled.median_s == pytest.approx(1.0)  # 2.0 left the window
    noisy = timed([1.0, 1.5] * 30)  # never within 5%: stops at the budget, not stable
    assert not noisy.stable and len(noisy.times) == 8 and noisy.spread == pytest.approx(1 / 3)
    slow = timed([12.0, 12.0])  # one round over the whole budget: one round, spread unknown
    assert len(slow.times) == 1 and slow.spread is None and not slow.stable


def test_paired_rounds_time_the_reference_before_each_round() -> None:
    now, calls = [0.0], []

    def clock() -> float:
        return now[0]

    def step(name: str, seconds: list[float]) -> object:
        durations = iter(seconds)

        def run(_: object) -> None:
            calls.append(name)
            now[0] += next(durations)

        return run

    def after_cold(seconds: list[float]) -> list[float]:
        # Each timed call of a paired round follows an untimed one of itself (here a slow, cold one).
        return [t for timed in seconds for t in (100.0, timed)]

    # The machine slows down mid-run: each round's own ratio stays 2.5, the medians' would not.
    floor = step("floor", after_cold([1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0]))
    ours = step("ours", after_cold([2.5, 2.5, 5.0, 5.0, 5.0, 5.0, 5.0]))
    rounds = repeat_until_stable(
        ours, lambda: None, references={"floor": (floor, lambda: None)}, budget_s=1000.0, clock=clock
    )
    assert calls[:8] == ["floor", "floor", "ours", "ours"] * 2
    # Stable once the slow-down has left the recent window: 7 rounds, each with its reference.
    assert rounds.references["floor"] == [1.0, 1.0] + [2.0] * 5 and rounds.times == [2.5, 2.5] + [5.0] * 5
    assert rounds.ratio_to("floor") == pytest.approx(2.5) and rounds.ratios == {"floor": pytest.approx(2.5)}
    unpaired = repeat_until_stable(step("x", [1.0] * 5), lambda: None, clock=clock)
    assert unpaired.ratio_to("floor") is None and unpaired.ratios == {}
    # A paired ratio is a median of WINDOW pairs: steady rounds settle at 5 where unpaired ones stop at 3.
    steady = repeat_until_stable(
        step("a", [1.0] * 20), lambda: None, references={"b": (step("b", [1.0] * 20), lambda: None)}, clock=clock
    )
    assert steady.stable and len(steady.times) == 5
    assert len(repeat_until_stable(step("c", [1.0] * 9), lambda: None, clock=clock).times) == 3
    # Paired rounds spend the budget on every timed call, and still run WINDOW of them.
    slow = repeat_until_stable(
        step("y", [1.0] * 20),
        lambda: None,
        references={"z": (step("z", [3.0] * 20), lambda: None)},
        budget_s=8.0,
        clock=clock,
    )
    assert len(slow.times) == 5 and len(slow.references["z"]) == 5


def test_paired_calls_follow_warm_s_of_their_own_untimed_work() -> None:
    # Threads that slept can share one CPU until the scheduler has seen them busy: a fast call
    # is repeated untimed until WARM_S has passed, a slow one is warmed by one call.
    now, calls = [0.0], []

    def step(name: str, seconds: float) -> object:
        def run(_: object) -> None:
            calls.append(name)
            now[0] += seconds

        return run

    fast, slow = WARM_S / 2.5, WARM_S * 4  # three untimed calls pass WARM_S; one does
    rounds = repeat_until_stable(
        step("ours", fast),
        lambda: None,
        references={"floor": (step("floor", slow), lambda: None)},
        clock=lambda: now[0],
    )
    assert calls[:6] == ["floor", "floor", "ours", "ours", "ours", "ours"]
    assert rounds.times[0] == pytest.approx(fast) and rounds.references["floor"][0] == pytest.approx(slow)
    calls.clear()
    repeat_until_stable(step("alone", fast), lambda: None, clock=lambda: now[0])
    assert calls[:3] == ["alone"] * 3 and len(calls) == 3  # unpaired rounds run back to back, unwarmed


def test_rounds_paired_with_the_floor_and_a_peer_time_both_before_each_round() -> None:
    now, calls = [0.0], []

    def step(name: str, seconds: float, slower_after: int) -> object:
        def run(_: object) -> None:
            calls.append(name)
            # Another tenant takes half the core from the fourth round on (each round calls each
            # row twice, the first untimed): every call slows alike.
            now[0] += seconds * (1.5 if calls.count(name) > slower_after else 1.0)

        return run

    references = {"floor": (step("floor", 1.0, 6), lambda: None), "numpy": (step("numpy", 20.0, 6), lambda: None)}
    rounds = repeat_until_stable(
        step("ours", 2.0, 6), lambda: None, references=references, budget_s=1000.0, clock=lambda: now[0]
    )
    assert calls[:6] == ["floor", "floor", "numpy", "numpy", "ours", "ours"]
    assert len(rounds.times) == len(rounds.references["floor"]) == len(rounds.references["numpy"])
    assert rounds.ratios == {"floor": pytest.approx(2.0), "numpy": pytest.approx(0.1)}
    assert rounds.stable and len(rounds.times) == 8  # the slow-down left the window of five


def test_pairing_is_chosen_where_a_target_compares_rows() -> None:
    bert, conv, lenet = (
        WorkloadSpec("bert", 110_000_000),
        WorkloadSpec("conv", 25_500_000),
        WorkloadSpec("lenet", 266_200),
    )
    assert paired_with("ours", bert) == ("floor",)  # NumPy at BERT size is too slow to time every round
    # The peer first, the floor (which leaves the weights in cache, as for the peer) right before ours.
    assert paired_with("ours", conv) == ("numpy", "floor") and paired_with("ours", lenet) == ("numpy", "floor")
    assert paired_with("ours_in_place", bert) == ("floor",) and paired_with("ours_torch", bert) == ("floor",)
    assert paired_with("mask_bytes", bert) == ("floor",)  # what its bytes alone take, round by round
    assert paired_with("applier", lenet) == ("torch_mul",)
    assert paired_with("drop_in", bert) == () and paired_with("numpy", conv) == ()


def test_measure_method_times_the_paired_rows_beside_it() -> None:
    lenet = WorkloadSpec("lenet", 266_200)
    seen: list[tuple[str, ...]] = []

    def timer(run: Any, setup: Any, references: Any) -> Rounds:
        seen.append(tuple(references))
        return repeat_until_stable(run, setup, references=references, budget_s=0.05)

    m = measure_method(BY_KEY["ours"], materialize(lenet), timer=timer, memory=False)
    assert seen == [("numpy", "floor")]
    assert set(m.ratios) == {"floor", "numpy"} and 0 < m.ratios["numpy"] < 1  # ours beats NumPy's partition
    assert m.floor_ratio == m.ratios["floor"] and m.rounds >= 5


def test_paired_floor_ratio_is_what_the_table_and_targets_read() -> None:
    bert = WorkloadSpec("bert", 110_000_000)
    report = Report(Machine(0.1, (), "cpu", 2, 2, 2))
    for key, seconds in {"floor": 0.020, "ours": 0.050, "numpy": 0.5}.items():
        report.record(_measured(bert, key, seconds))
    assert report.floor_ratio(bert, "ours") == pytest.approx(2.5)  # unpaired: the medians' ratio
    paired = _measured(bert, "ours", 0.050)
    paired.ratios = {"floor": 1.9}  # the floor ran slower beside it than in its own row
    report.record(paired)
    assert report.floor_ratio(bert, "ours") == 1.9
    rows = {line.split("|")[2].strip(): line for line in report.render().splitlines() if line.startswith("| BERT")}
    assert "1.90x ‡" in rows["ours"] and "10.0x" in rows["numpy"] and "‡" not in rows["numpy"]
    # The floor's own row says how fast this run read memory (its ratios move with it).
    rate = bert.numel * 4 / 0.020 / 1e9
    assert f"20.0 ms ({rate:.0f} GB/s)" in rows["floor"] and "GB/s" not in rows["ours"]
    assert "‡ = paired" in report.render()
    assert report.floor_ratio(bert, "drop_in") is None
    # Paired with NumPy too: NumPy's ratio to ours is the inverse of ours' paired ratio to NumPy.
    paired.ratios = {"floor": 1.9, "numpy": 0.05}
    assert report.ratio(bert, "numpy", "ours") == pytest.approx(20.0) and report.ratio(bert, "ours", "numpy") == 0.05
    assert report.paired_ratio(bert, "numpy", "floor") is None  # NumPy was not timed beside the floor
    rows = {line.split("|")[2].strip(): line for line in report.render().splitlines() if line.startswith("| BERT")}
    assert "20.0x ‡" in rows["numpy"]


def test_numpy_simd_names_a_target_this_cpu_has() -> None:
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    simd = numpy_simd()
    assert simd == "baseline" or (simd in __cpu_dispatch__ and __cpu_features__[simd])
    # The widest: no target NumPy lists after it is available here.
    later = __cpu_dispatch__[__cpu_dispatch__.index(simd) + 1 :] if simd != "baseline" else __cpu_dispatch__
    assert not any(__cpu_features__.get(name) for name in later)

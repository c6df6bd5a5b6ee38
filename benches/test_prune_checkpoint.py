"""`make bench`: `prune_checkpoint` on generated multi-GB checkpoints, side by side with the copy
floor (`shutil.copyfile` of the same files, warm page cache) and with what users do today
(`safetensors.torch.load_file` + `torch.nn.utils.prune.global_unstructured` + `save_file`).

Checkpoints are generated on the fly under the temp folder and deleted after their tests. Ours
and the peer each run in a fresh interpreter while this process samples its ``RssAnon`` (anonymous
memory: page cache and file mappings excluded) from ``/proc/PID/status``; the kernel records only
the peak of the total RSS (``VmHWM``), which counts the mapped checkpoint. Results are asserted:
exact counts and one threshold separating every pruned weight from every kept one, and masks
identical to the in-memory kernels on the small checkpoint.

Every method runs ``LT_BENCH_ROUNDS`` times (default 3); the table gives the fastest round and
the median. On a virtual machine whose free memory goes back to the host, a writer through the
page cache (``copyfile``) pays a host fault for every fresh page it fills, so its time varies
several-fold from run to run; the fastest round is the fair floor.

Knobs: ``LT_BENCH_SCALE`` multiplies the checkpoint sizes (e.g. ``0.01`` for a quick dry run);
``LT_BENCH_ROUNDS`` the rounds per method; this table is written beside the side-by-side one
(``LT_BENCH_OUT``, default ``.benchmarks/table.md``), as ``prune_checkpoint.md``.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from checkpoints import (
    OURS,
    PEER,
    SPECS,
    Checkpoint,
    Spec,
    check_against_kernels,
    check_threshold,
    generate,
    memory_cgroup,
    warm,
    watched,
)
from lottery_ticket._files import fsync_path
from lottery_ticket.cli.bench.table import write_text

ROUNDS = max(1, int(os.environ.get("LT_BENCH_ROUNDS", "3")))
SPARSITY = 0.5
BUDGET_MIB = 256
ROWS: list[dict[str, Any]] = []


@pytest.fixture(scope="module", params=SPECS, ids=[s.label.replace(" ", "-").replace(",", "") for s in SPECS])
def checkpoint(request: pytest.FixtureRequest) -> Iterator[Checkpoint]:
    spec: Spec = request.param
    root = Path(tempfile.mkdtemp(prefix="lt-prune-bench-"))
    try:
        folder = root / "in"
        folder.mkdir()
        yield Checkpoint(spec, folder, generate(spec, folder))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _record(
    spec: Spec,
    method: str,
    seconds: list[float] | None,
    peak: int | None,
    note: str = "",
    base: int = 0,
    cpu: list[float] | None = None,
) -> None:
    """One row: the fastest of the rounds (and its CPU seconds), the median in the note."""
    best = min(range(len(seconds)), key=seconds.__getitem__) if seconds else None
    if seconds and len(seconds) > 1:
        note = f"median {statistics.median(seconds):.2f} s of {len(seconds)}" + (f"; {note}" if note else "")
    row = {
        "checkpoint": spec.label,
        "weights": spec.numel,
        "method": method,
        "seconds": None if best is None else seconds[best],  # type: ignore[index]
        "peak": peak,
    }
    ROWS.append({**row, "note": note, "base": base, "cpu": None if best is None or cpu is None else cpu[best]})


def _cpu() -> float:
    """CPU seconds of this process so far (user + system): unlike wall time, not inflated while
    other processes hold the CPUs."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


FLOOR = "copy floor: copyfile"
FLOOR_SYNC = "copy floor: copyfile + fsync"
FLOOR_DIRECT = "direct-I/O copy floor: the same bytes through our block writer, + fsync"
OURS_SYNC = "ours: prune_checkpoint (fsync, the default)"
OURS_NO_SYNC = "ours: prune_checkpoint --no-sync"
OURS_SMALL_MEMORY = "ours, in 1 GiB of memory (input evicted first)"


def _seconds(spec: Spec, method: str) -> float | None:
    return next((r["seconds"] for r in ROWS if r["checkpoint"] == spec.label and r["method"] == method), None)


def test_copy_floor(checkpoint: Checkpoint, benchmark: Any, tmp_path: Path) -> None:
    """shutil.copyfile of every shard (warm cache); then fsync: the same bytes written durably."""
    warm(checkpoint.files)
    out = tmp_path / "copy"
    times: dict[str, list[float]] = {"copied": [], "synced": [], "cpu_copied": [], "cpu_synced": []}

    def copy() -> None:
        out.mkdir()
        start, cpu_start = time.perf_counter(), _cpu()
        for path in checkpoint.files:
            shutil.copyfile(path, out / path.name)
        times["copied"].append(time.perf_counter() - start)
        times["cpu_copied"].append(_cpu() - cpu_start)
        for path in checkpoint.files:
            fsync_path(out / path.name)
        times["synced"].append(time.perf_counter() - start)
        times["cpu_synced"].append(_cpu() - cpu_start)
        sizes = [(out / p.name).stat().st_size for p in checkpoint.files]
        assert sizes == [p.stat().st_size for p in checkpoint.files]
        shutil.rmtree(out)

    benchmark.pedantic(copy, rounds=ROUNDS, iterations=1)
    _record(checkpoint.spec, FLOOR, times["copied"], None, cpu=times["cpu_copied"])
    _record(checkpoint.spec, FLOOR_SYNC, times["synced"], None, cpu=times["cpu_synced"])


def test_direct_copy_floor(checkpoint: Checkpoint, benchmark: Any, tmp_path: Path) -> None:
    """The input's bytes copied unchanged through the writer `prune` uses (O_DIRECT blocks, a
    background thread), then fsync: the floor of the write path itself."""
    from lottery_ticket.safetensors_stream._blocks import BlockWriter

    warm(checkpoint.files)
    out = tmp_path / "copy"
    seconds: list[float] = []
    cpu: list[float] = []

    def copy() -> None:
        out.mkdir()
        start, cpu_start = time.perf_counter(), _cpu()
        for path in checkpoint.files:
            mapped = np.memmap(path, dtype=np.uint8, mode="r")
            (out / path.name).touch()
            with BlockWriter(out / path.name, mapped.size) as writer:
                writer.copy(mapped, lambda n: None)
            fsync_path(out / path.name)
            del mapped
        seconds.append(time.perf_counter() - start)
        cpu.append(_cpu() - cpu_start)
        shutil.rmtree(out)

    benchmark.pedantic(copy, rounds=ROUNDS, iterations=1)
    _record(checkpoint.spec, FLOOR_DIRECT, seconds, None, cpu=cpu)


@pytest.mark.parametrize("sync", [True, False], ids=["fsync", "no-sync"])
def test_ours(checkpoint: Checkpoint, benchmark: Any, tmp_path: Path, sync: bool) -> None:
    """prune_checkpoint in a fresh interpreter; counts and the threshold checked on the output."""
    warm(checkpoint.files)
    source = checkpoint.folder if checkpoint.spec.shards > 1 else checkpoint.files[0]
    out = tmp_path / ("out" if checkpoint.spec.shards > 1 else "out.safetensors")
    small = checkpoint.spec is SPECS[0]
    ticket = tmp_path / "ticket.safetensors" if small and sync else None
    answers: list[tuple[dict[str, Any], int]] = []

    def remove_output() -> None:
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink(missing_ok=True)

    def run() -> None:
        remove_output()  # the previous round's, checked below only for the last round
        answers.append(watched(OURS, str(source), str(out), str(SPARSITY), str(ticket or ""), "1" if sync else ""))

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    try:
        answer = answers[-1][0]
        assert answer["prunable"] == checkpoint.spec.numel - sum(
            math.prod(s) for _, s in checkpoint.spec.tensors() if len(s) == 1
        )
        assert all(a["pruned"] == round(SPARSITY * answer["prunable"]) for a, _ in answers)
        outputs = [out / p.name for p in checkpoint.files] if checkpoint.spec.shards > 1 else [out]
        check_threshold(checkpoint.files, outputs, answer["pruned"], checkpoint.spec.dtype)
        if ticket is not None:
            check_against_kernels(checkpoint.files, ticket, SPARSITY)
    finally:  # the disk is shared: multi-GB outputs go as soon as they are checked
        remove_output()
    peak = max(p for _, p in answers)
    note = f"RssAnon {answer['base'] / 2**20:.0f} MiB after imports"
    _record(
        checkpoint.spec,
        OURS_SYNC if sync else OURS_NO_SYNC,
        [a["seconds"] for a, _ in answers],
        peak,
        note,
        cpu=[a["cpu"] for a, _ in answers],
    )
    assert peak <= BUDGET_MIB * 2**20, f"peak RssAnon {peak / 2**20:.0f} MiB over the {BUDGET_MIB} MiB budget"


MEMORY_LIMIT = 1 << 30


def test_ours_bigger_than_memory(checkpoint: Checkpoint, benchmark: Any, tmp_path: Path) -> None:
    """prune_checkpoint inside a 1 GiB memory cgroup (page cache included): the checkpoint is
    several times bigger than the memory the run may use, so the input comes from disk; the
    bytes it reads from disk (``/proc/PID/io``) say how many times it read the input."""
    if checkpoint.spec is SPECS[0]:  # fits in 1 GiB: nothing to show
        pytest.skip("the small checkpoint fits in the cgroup")
    nbytes = sum(p.stat().st_size for p in checkpoint.files)
    with memory_cgroup(MEMORY_LIMIT) as group:
        if group is None:  # a benchmark of the machine's abilities, not a feature: say why it is absent
            pytest.skip("no memory cgroup can be created here (needs root and a cgroup memory controller)")
        source = checkpoint.folder if checkpoint.spec.shards > 1 else checkpoint.files[0]
        out = tmp_path / ("out" if checkpoint.spec.shards > 1 else "out.safetensors")
        for path in checkpoint.files:  # start cold: nothing of the input in memory
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        answer, peak = benchmark.pedantic(
            lambda: watched(OURS, str(source), str(out), str(SPARSITY), "", "1", cgroup=group), rounds=1, iterations=1
        )
    assert answer["pruned"] == round(SPARSITY * answer["prunable"])
    reads = answer["read_bytes"] / nbytes
    note = f"cold start in a 1 GiB memory cgroup: read {reads:.2f}x the input from disk"
    _record(checkpoint.spec, OURS_SMALL_MEMORY, [answer["seconds"]], peak, note, cpu=[answer["cpu"]])
    assert peak <= BUDGET_MIB * 2**20
    assert reads <= 2.1, note  # the threshold pass and the write pass (and a small sample)


def test_torch_prune(checkpoint: Checkpoint, benchmark: Any, tmp_path: Path) -> None:
    """load_file + global_unstructured + save_file, where it fits in memory."""
    from lottery_ticket.cli.bench.measure import available_memory

    spec = checkpoint.spec
    small = next((r for r in ROWS if r["checkpoint"] == SPECS[0].label and r["method"].startswith("torch")), None)
    if spec is not SPECS[0] and small is not None:
        # What the small run needed per weight beyond the interpreter with torch imported.
        need = small["base"] + (small["peak"] - small["base"]) / SPECS[0].numel * spec.numel
        if need > 0.5 * available_memory():  # the machine is shared: leave the others room
            note = f"not run: needs ~{need / 2**30:.0f} GiB (scaled from the small run), {available_memory() / 2**30:.0f} GiB available"
            _record(spec, "torch.prune (load_file + global_unstructured + save_file)", None, int(need), note)
            pytest.skip(note)
    warm(checkpoint.files)
    source = checkpoint.folder
    answer, peak = benchmark.pedantic(
        lambda: watched(PEER, str(source), str(tmp_path / "peer"), str(SPARSITY)), rounds=1, iterations=1
    )
    shutil.rmtree(tmp_path / "peer", ignore_errors=True)
    prunable = spec.numel - sum(math.prod(s) for _, s in spec.tensors() if len(s) == 1)
    assert answer["pruned"] == round(SPARSITY * prunable)
    _record(
        spec,
        "torch.prune (load_file + global_unstructured + save_file)",
        [answer["seconds"]],
        peak,
        base=answer["base"],
    )


@pytest.fixture(scope="module", autouse=True)
def table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not ROWS:
        return
    lines = [
        "| checkpoint | weights | method | seconds (fastest round) | vs its copy floor | vs direct-I/O floor | CPU seconds | vs floor's CPU | peak RssAnon | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ROWS:
        spec = next(s for s in SPECS if s.label == r["checkpoint"])
        floor_method = FLOOR_SYNC if r["method"] in (FLOOR_SYNC, OURS_SYNC, FLOOR_DIRECT, OURS_SMALL_MEMORY) else FLOOR
        floor = _seconds(spec, floor_method)
        floor_cpu = next(
            (f["cpu"] for f in ROWS if f["checkpoint"] == spec.label and f["method"] == floor_method), None
        )
        ratio = f"{r['seconds'] / floor:.2f}x" if r["seconds"] and floor else "—"
        direct = _seconds(spec, FLOOR_DIRECT)
        vs_direct = (
            f"{r['seconds'] / direct:.2f}x" if r["seconds"] and direct and r["method"].startswith("ours") else "—"
        )
        cpu_ratio = f"{r['cpu'] / floor_cpu:.2f}x" if r["cpu"] and floor_cpu else "—"
        seconds = f"{r['seconds']:.2f}" if r["seconds"] is not None else "—"
        cpu = f"{r['cpu']:.2f}" if r["cpu"] is not None else "—"
        peak = f"{r['peak'] / 2**20:,.0f} MiB" if r["peak"] else "—"
        cells = [
            r["checkpoint"],
            f"{r['weights'] / 1e6:,.0f} M",
            r["method"],
            seconds,
            ratio,
            vs_direct,
            cpu,
            cpu_ratio,
            peak,
            r["note"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines.append(f"\n(load average {load:.1f} on {os.cpu_count()} CPUs when the table was written)")
    text = "\n".join(lines) + "\n"
    # Beside the side-by-side table: one knob for both (a file there, so not a folder here).
    out = Path(os.environ.get("LT_BENCH_OUT", ".benchmarks/table.md")).parent / "prune_checkpoint.md"
    write_text(out, text)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("\nlottery-ticket prune, side by side:\n" + text)

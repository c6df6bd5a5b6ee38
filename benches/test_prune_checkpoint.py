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

import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lottery_ticket import Ticket, global_magnitude_masks
from lottery_ticket._files import fsync_path
from lottery_ticket.cli.bench.table import write_text

SCALE = float(os.environ.get("LT_BENCH_SCALE", "1"))
ROUNDS = max(1, int(os.environ.get("LT_BENCH_ROUNDS", "3")))
SPARSITY = 0.5
BUDGET_MIB = 256
ROWS: list[dict[str, Any]] = []


@dataclass(frozen=True)
class Spec:
    """A LLaMA-like checkpoint: embeddings, ``layers`` blocks of attention + MLP matrices (and
    their 1-d norms, copied), an output head."""

    label: str
    dtype: str  # "bf16" | "f32"
    hidden: int
    intermediate: int
    layers: int
    vocab: int
    shards: int

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        h, i = self.hidden, self.intermediate
        out = [("model.embed_tokens.weight", (self.vocab, h))]
        for layer in range(self.layers):
            p = f"model.layers.{layer}."
            out += [(p + f"self_attn.{n}_proj.weight", (h, h)) for n in "qkvo"]
            out += [
                (p + "mlp.gate_proj.weight", (i, h)),
                (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i)),
            ]
            out += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
        return out + [("model.norm.weight", (h,)), ("lm_head.weight", (self.vocab, h))]

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for _, s in self.tensors())


def _scaled(label: str, dtype: str, hidden: int, inter: int, layers: int, shards: int) -> Spec:
    factor = math.sqrt(SCALE)  # matrices scale with the square of the widths
    return Spec(
        label,
        dtype,
        max(8, int(hidden * factor) // 8 * 8),
        max(8, int(inter * factor) // 8 * 8),
        layers,
        max(8, int(32000 * factor)),
        shards,
    )


SPECS = [
    _scaled("small bf16, 4 shards", "bf16", 512, 1376, 8, 4),
    _scaled("2.2B bf16, 4 shards", "bf16", 2560, 6912, 26, 4),
    _scaled("1B f32, 1 file", "f32", 2048, 5632, 18, 1),
]


def generate(spec: Spec, folder: Path) -> list[Path]:
    """Write the checkpoint in safetensors layout without holding it in memory (N(0, 0.02) weights)."""
    rng = np.random.default_rng(0)
    tensors = spec.tensors()
    per_shard = math.ceil(len(tensors) / spec.shards)
    files, weight_map = [], {}
    for s in range(spec.shards):
        part = tensors[s * per_shard : (s + 1) * per_shard]
        name = "model.safetensors" if spec.shards == 1 else f"model-{s + 1:05d}-of-{spec.shards:05d}.safetensors"
        width = 2 if spec.dtype == "bf16" else 4
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for tensor_name, shape in part:
            nbytes = math.prod(shape) * width
            header[tensor_name] = {
                "dtype": spec.dtype.upper(),
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
            weight_map[tensor_name] = name
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with open(folder / name, "wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            for _, shape in part:
                left = math.prod(shape)
                while left:
                    n = min(left, 1 << 24)
                    values = rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
                    f.write(
                        (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
                        if spec.dtype == "bf16"
                        else values.tobytes()
                    )
                    left -= n
        files.append(folder / name)
    if spec.shards > 1:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return files


@dataclass
class Checkpoint:
    spec: Spec
    folder: Path
    files: list[Path]


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


def _warm(files: list[Path]) -> None:
    for path in files:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def _rss_anon(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def watched(code: str, *args: str, cgroup: Path | None = None) -> tuple[dict[str, Any], int]:
    """Run ``code`` in a fresh interpreter, sampling its RssAnon; (its JSON answer, peak bytes).
    With ``cgroup``, the interpreter runs inside that memory cgroup from its first instruction."""
    join = None if cgroup is None else lambda: (cgroup / "cgroup.procs").write_text(str(os.getpid()))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=join,
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _rss_anon(proc.pid))
        time.sleep(0.002)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"subprocess failed ({proc.returncode}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), peak


OURS = """
import json, sys, time
from pathlib import Path
from lottery_ticket import prune_checkpoint
def anon():
    return next(int(l.split()[1]) * 1024 for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("RssAnon:"))
import resource
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
base = anon()
start, cpu_start = time.perf_counter(), cpu()
s = prune_checkpoint(sys.argv[1], sys.argv[2], float(sys.argv[3]), ticket=sys.argv[4] or None, progress=False, sync=bool(sys.argv[5]))
read = next(int(l.split()[1]) for l in Path("/proc/self/io").read_text().splitlines() if l.startswith("read_bytes:"))
print(json.dumps({"seconds": time.perf_counter() - start, "cpu": cpu() - cpu_start, "pruned": s.pruned, "prunable": s.prunable, "base": base, "read_bytes": read}))
"""

PEER = """
import json, sys, time
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
from torch.nn.utils import prune
base = next(int(l.split()[1]) * 1024 for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("RssAnon:"))
start = time.perf_counter()
src, out, amount = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
shards = {p.name: load_file(p) for p in sorted(src.glob("*.safetensors"))}
holders = []
for tensors in shards.values():
    for name, t in tensors.items():
        if t.is_floating_point() and t.dim() >= 2:
            m = torch.nn.Module()
            m.weight = torch.nn.Parameter(t, requires_grad=False)
            holders.append((tensors, name, m))
prune.global_unstructured([(m, "weight") for _, _, m in holders], pruning_method=prune.L1Unstructured, amount=amount)
pruned = sum(int((m.weight_mask == 0).sum()) for _, _, m in holders)
for tensors, name, m in holders:
    prune.remove(m, "weight")
    tensors[name] = m.weight.data
out.mkdir()
for name, tensors in shards.items():
    save_file(tensors, out / name)
print(json.dumps({"seconds": time.perf_counter() - start, "pruned": pruned, "base": base}))
"""


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
    _warm(checkpoint.files)
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

    _warm(checkpoint.files)
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
    _warm(checkpoint.files)
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
        _check_threshold(checkpoint.files, outputs, answer["pruned"], checkpoint.spec.dtype)
        if ticket is not None:
            _check_against_kernels(checkpoint.files, ticket)
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


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[Path | None]:
    """A memory cgroup capping page cache and anonymous memory together at ``limit`` bytes (v2
    ``memory.max`` or v1 ``memory.limit_in_bytes``); None where this process may not make one."""
    candidates = [(Path("/sys/fs/cgroup"), "memory.max"), (Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes")]
    for root, knob in candidates:
        if not (root / "cgroup.procs").exists() or (
            knob == "memory.max" and not (root / "cgroup.controllers").exists()
        ):
            continue
        if knob == "memory.max" and "memory" not in (root / "cgroup.subtree_control").read_text():
            continue
        group = root / f"lt-prune-bench-{os.getpid()}"
        try:
            group.mkdir()
            (group / knob).write_text(str(limit))
        except OSError:
            with contextlib.suppress(OSError):
                group.rmdir()
            continue
        try:
            yield group
        finally:
            with contextlib.suppress(OSError):
                group.rmdir()
        return
    yield None


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


def _check_threshold(inputs: list[Path], outputs: list[Path], pruned: int, dtype: str) -> None:
    """Streamed: the output's zeros are the pruned weights (the threshold is above zero here),
    there are exactly ``pruned`` of them, and every pruned |w| <= every kept |w|."""
    from lottery_ticket.safetensors_header import read_header

    bits, sign = (np.uint16, 0x7FFF) if dtype == "bf16" else (np.uint32, 0x7FFFFFFF)
    zeros, max_pruned, min_kept = 0, 0, np.iinfo(bits).max
    for src, dst in zip(inputs, outputs):
        a, b = np.memmap(src, dtype=np.uint8, mode="r"), np.memmap(dst, dtype=np.uint8, mode="r")
        for t in read_header(src).tensors:
            if t.ndim < 2:
                assert np.array_equal(a[t.begin : t.end], b[t.begin : t.end])
                continue
            for start in range(t.begin, t.end, 1 << 26):
                stop = min(start + (1 << 26), t.end)
                x, y = a[start:stop].view(bits), b[start:stop].view(bits)
                gone = y == 0
                zeros += int(np.count_nonzero(gone))
                keys = x & bits(sign)
                max_pruned = max(max_pruned, int(np.max(keys, where=gone, initial=0)))
                min_kept = min(min_kept, int(np.min(keys, where=~gone, initial=min_kept)))
                assert np.array_equal(y[~gone], x[~gone])
        del a, b
    assert zeros == pruned and max_pruned <= min_kept


def _check_against_kernels(files: list[Path], ticket: Path | None) -> None:
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted(files):  # checkpoint order: shards by name; our generator writes in offset order
        tensors.update({n: t for n, t in load_file(path).items() if t.dim() >= 2})
    expected = global_magnitude_masks(tensors, SPARSITY)
    assert ticket is not None
    got = Ticket.load(ticket).masks
    assert list(got) == list(expected)
    assert all(np.array_equal(got[n], expected[n].numpy()) for n in expected)


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
    _warm(checkpoint.files)
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

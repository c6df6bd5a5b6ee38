"""The checkpoints `test_prune_checkpoint` prunes and how it watches a run: LLaMA-like
safetensors checkpoints generated on the fly, the scripts ours and the peer run in a fresh
interpreter (sampled for ``RssAnon``), a memory cgroup, and the checks of an output."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lottery_ticket import Ticket, global_magnitude_masks

SCALE = float(os.environ.get("LT_BENCH_SCALE", "1"))


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


def warm(files: list[Path]) -> None:
    """Read every file once, so the page cache holds it."""
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


def check_threshold(inputs: list[Path], outputs: list[Path], pruned: int, dtype: str) -> None:
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


def check_against_kernels(files: list[Path], ticket: Path | None, sparsity: float) -> None:
    """The ticket ``prune_checkpoint`` wrote holds the masks the in-memory kernels select."""
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted(files):  # checkpoint order: shards by name; our generator writes in offset order
        tensors.update({n: t for n, t in load_file(path).items() if t.dim() >= 2})
    expected = global_magnitude_masks(tensors, sparsity)
    assert ticket is not None
    got = Ticket.load(ticket).masks
    assert list(got) == list(expected)
    assert all(np.array_equal(got[n], expected[n].numpy()) for n in expected)

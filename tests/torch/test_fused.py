"""The fused Triton passes of the torch-op selection (`torch._fused`, ``LOTTERY_TICKET_FUSED=1``).

Without a GPU they run through Triton's interpreter, which must be switched on before Triton is
imported: the torch-op tests run again in a process of their own with it on, and must pass
there with the fused passes serving the calls (`fused_plugin` counts them)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import torch
from lottery_ticket import global_magnitude_masks
from lottery_ticket.torch import _fused

HERE = Path(__file__).parent
# The differential tests against the Rust kernels (random cases, ties, +-0, inf, subnormals, every
# dtype, packed small tensors, out= in place, bad inputs; across gloo ranks, DTensor replicas
# too, whose ranks inherit the switches); the profiler's count of torch ops is not theirs to pass.
TORCH_OP_TESTS = [
    HERE / name
    for name in (
        "test_torch_backend.py",
        "test_torch_packing.py",
        "test_device_paths.py",  # a GPU's chunks and packing around the fused passes
        "test_kernels_torch.py",
        "test_torch_bad_inputs.py",
    )
] + [HERE.parent / "distributed" / "test_distributed.py"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: no GPU is lent to this task")


def test_the_torch_op_tests_pass_through_the_fused_kernels() -> None:
    pytest.importorskip("triton", reason="Triton ships with torch's Linux wheels; not installed here")
    env = dict(
        os.environ,
        TRITON_INTERPRET="1",
        LOTTERY_TICKET_FUSED="1",
        PYTHONPATH=os.pathsep.join(p for p in [str(HERE), os.environ.get("PYTHONPATH")] if p),
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "fused_plugin", "-k", "not full_size"]
        + [str(path) for path in TORCH_OP_TESTS],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    counts = json.loads(done.stdout.split("fused passes run: ")[1].splitlines()[0])
    assert counts["count"] > 100 and counts["write"] > 100, counts


def test_a_bad_switch_value_names_the_variable_and_leaves_the_masks_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    weights = [torch.randn(100), torch.randn(30)]
    masks = [torch.rand(100) > 0.5, torch.rand(30) > 0.5]
    before = [m.clone() for m in masks]
    monkeypatch.setenv("LOTTERY_TICKET_FUSED", "yes")
    with pytest.raises(ValueError, match="LOTTERY_TICKET_FUSED: expected 0 or 1, got 'yes'"):
        global_magnitude_masks(weights, 0.5, masks, backend="torch", out=masks)
    assert all(torch.equal(m, b) for m, b in zip(masks, before))
    # The Rust kernels never read it.
    assert len(global_magnitude_masks(weights, 0.5)) == 2


def without_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make importing the kernels fail, as where Triton is not installed."""
    import lottery_ticket.torch

    monkeypatch.delattr(lottery_ticket.torch, "_triton", raising=False)
    monkeypatch.setitem(sys.modules, "lottery_ticket.torch._triton", None)


def test_asking_for_the_fused_passes_without_triton_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    without_triton(monkeypatch)
    monkeypatch.setenv("LOTTERY_TICKET_FUSED", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # CPU tensors then ask for the kernels too
    weights = [torch.randn(100), torch.randn(30)]
    masks = [torch.rand(100) > 0.5, torch.rand(30) > 0.5]
    before = [m.clone() for m in masks]
    with pytest.raises(ImportError, match="LOTTERY_TICKET_FUSED=1: the fused passes need Triton .*set it to 0"):
        global_magnitude_masks(weights, 0.5, masks, backend="torch", out=masks)
    assert all(torch.equal(m, b) for m, b in zip(masks, before))
    monkeypatch.setenv("LOTTERY_TICKET_FUSED", "0")
    assert len(global_magnitude_masks(weights, 0.5, backend="torch")) == 2


@pytest.mark.parametrize("value", ["0", "", "1"])
def test_the_fused_passes_are_opt_in_and_for_cuda_tensors(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("LOTTERY_TICKET_FUSED", value)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    flat, strided = [torch.zeros(8), None], [torch.zeros(8)[::2], None]
    assert _fused.kernels_for(torch.device("cpu"), flat) is None  # without the interpreter: the torch ops
    cuda = torch.device("cuda")
    if value != "1":
        assert _fused.kernels_for(cuda, flat) is None
        return
    pytest.importorskip("triton", reason="Triton ships with torch's Linux wheels; not installed here")
    fused = _fused.kernels_for(cuda, flat)  # compiled on first launch: no GPU needed here
    assert fused is not None and fused.block > 0
    assert _fused.kernels_for(cuda, strided) is None  # the kernels read contiguous memory only


def test_the_kernels_compile_for_a_gpu_without_one(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Every variant compiles to a Hopper cubin (Triton ships its own ptxas), which the
    interpreter does not check; aligned f32 moves 16 bytes a load and store and converts no float, and no
    variant spills registers to memory (a memory-bound kernel that spills moves more bytes)."""
    pytest.importorskip("triton", reason="Triton ships with torch's Linux wheels; not installed here")
    monkeypatch.setenv("TRITON_ALWAYS_COMPILE", "1")  # a cached kernel would skip ptxas and its report
    monkeypatch.setenv("TRITON_DUMP_PTXAS_LOG", "1")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from lottery_ticket.torch import _triton

    target = GPUTarget("cuda", 90, 32)
    aligned = {(i,): [["tt.divisibility", 16]] for i in range(8)}  # what launches on aligned chunks get
    aligned_write = {(i,): [["tt.divisibility", 16]] for i in range(4)}  # its pointers and n
    compiled = 0
    for bits, has_alive, keep, align in itertools.product((16, 32, 64), (False, True), (False, True), (False, True)):
        if align and bits != 32:
            continue
        bound, pointer = ("i64" if bits == 64 else "i32"), f"*i{bits}"
        count = ["bits_ptr", "alive_ptr", "keep_ptr", "inside_ptr", "alive_n_ptr", "kept_n_ptr", "nan_n_ptr"]
        signature = dict.fromkeys(count, "*u8") | {"bits_ptr": pointer, "n": "i32", "lo": bound, "hi": bound}
        signature |= dict.fromkeys(["alive_n_ptr", "kept_n_ptr", "nan_n_ptr"], "*i32") | {"nan_from": bound}
        signature |= dict.fromkeys(["BITS", "HAS_ALIVE", "STORE_KEEP", "BLOCK"], "constexpr")
        constants = {"BITS": bits, "HAS_ALIVE": has_alive, "STORE_KEEP": keep, "BLOCK": _triton.BLOCK}
        ptx = triton.compile(
            ASTSource(_triton.count_kernel, signature, constants, aligned if align else None),
            target=target,
            options=_fused.OPTIONS,
        ).asm["ptx"]
        assert "cvt.f" not in ptx and "cvt.rn" not in ptx  # keys from bits: no float conversion
        if align:
            assert "ld.global.v4.b32" in ptx and "st.global.v4.b32" in ptx
        compiled += 1
        if not keep:
            write = {"bits_ptr": pointer, "alive_ptr": "*u8", "dst_ptr": "*u8", "n": "i32", "threshold": bound}
            write |= dict.fromkeys(["BITS", "HAS_ALIVE", "BLOCK"], "constexpr")
            constants = {"BITS": bits, "HAS_ALIVE": has_alive, "BLOCK": _triton.BLOCK}
            ptx = triton.compile(
                ASTSource(_triton.write_kernel, write, constants, aligned_write if align else None),
                target=target,
                options=_fused.OPTIONS,
            ).asm["ptx"]
            if align:
                assert "ld.global.v4.b32" in ptx and "st.global.v4.b32" in ptx
            compiled += 1
    reports = [line for line in capfd.readouterr().out.splitlines() if "spill stores" in line]
    assert len(reports) == compiled == 24, reports  # 16 counting and 8 writing variants
    assert all("0 bytes spill stores, 0 bytes spill loads" in line for line in reports), reports


@CUDA
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_fused_cuda_masks_equal_the_rust_kernels(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    monkeypatch.setenv("LOTTERY_TICKET_FUSED", "1")
    gen = torch.Generator().manual_seed(5)
    weights = [(torch.randn(n, generator=gen) * 1e-3).to(dtype) for n in (3000, 700_000, 5, 1_500_000)]
    weights[1][::7] = 0.0  # ties
    cuda = [w.cuda() for w in weights]
    expected = global_magnitude_masks(weights, 0.3)
    got = global_magnitude_masks(cuda, 0.3)
    assert all(torch.equal(g.cpu(), e) for g, e in zip(got, expected))
    later = global_magnitude_masks(weights, 0.5, expected)
    global_magnitude_masks(cuda, 0.5, got, out=got)  # a later round in place
    assert all(torch.equal(g.cpu(), e) for g, e in zip(got, later))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (none lent to this task)")
def test_fused_kernels_launch_on_the_tensors_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOTTERY_TICKET_FUSED", "1")
    weights = [torch.randn(300_000), torch.randn(5000)]
    last = torch.device("cuda", torch.cuda.device_count() - 1)
    with torch.cuda.device(0):  # another device is current
        got = global_magnitude_masks([w.to(last) for w in weights], 0.3)
    assert all(g.device == last and torch.equal(g.cpu(), e) for g, e in zip(got, global_magnitude_masks(weights, 0.3)))

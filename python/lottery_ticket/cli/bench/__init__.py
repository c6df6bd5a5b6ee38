"""``lottery-ticket bench``: global pruning steps against their peers, on this machine.

Without ``--params``/``--mix``/``--dtype`` it runs the suite, the same workloads and methods as
``make bench`` (110 M BERT-like f32, bf16 and f16, ResNet-50's conv weights, LeNet-300-100,
the 20 M-slab cliff sweep, ``--big`` adds ~2.2 B bf16), scaled by ``--scale``. With any of them
it builds one layer mix of ``--params`` weights and times every method on it. Each method is
checked for a correct answer and timed beside its peers: the read floor (a sum over each
tensor), NumPy partition, torch kthvalue, ``torch.nn.utils.prune.global_unstructured``, ours
(fresh and with existing masks, the torch drop-in, on all threads and on one), and
``apply_masks`` / ``MaskApplier`` / ``rewind`` next to torch's in-place equivalents. Prints the
same table as ``make bench`` (``benches/``), measurements and comparisons only, with the load
average, CPU model and thread counts it was measured under (``hygiene``); targets and their
verdicts live in ``benches/``. ``--device cuda`` times the GPU methods instead (`gpu`).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .._deps import TORCH, Requirement
from .._errors import UserError
from .workloads import DTYPES, MIXES, WorkloadSpec, torch_dtype

if TYPE_CHECKING:
    from .hygiene import Machine


def _weight_count(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of weights such as 110e6, got {text!r}") from None
    if not value >= 1000 or value > 1e12:
        raise argparse.ArgumentTypeError(f"expected between 1e3 and 1e12 weights, got {text}")
    return round(value)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value <= 86_400:  # also NaN
        raise argparse.ArgumentTypeError(f"expected between 0 and 86400 seconds, got {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params",
        type=_weight_count,
        metavar="N",
        help="one workload of this many weights (default: the suite; 110e6 alone)",
    )
    parser.add_argument("--dtype", choices=DTYPES, help="weight dtype of one workload (default f32)")
    parser.add_argument(
        "--mix",
        choices=MIXES,
        help="layer mix of one workload: BERT-like (default), ResNet-50-like (all tensors), ResNet-50 "
        "convs, LeNet-300-100-like, or 20M-element slabs",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="suite only: multiply every workload's size (e.g. 0.05)"
    )
    parser.add_argument("--big", action="store_true", help="suite only: add the ~2.2B bf16 point")
    parser.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the peak-memory measurement (one fresh process per method)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu (default): NumPy arrays and CPU tensors; cuda: the current CUDA device, ours (torch ops, "
        "and the fused Triton passes) beside topk, kthvalue and torch.prune",
    )
    parser.add_argument("--markdown", metavar="PATH", help="also write the table to this Markdown file")
    parser.add_argument(
        "--wait-idle",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for an idle machine (load average <= 0.5, no other busy process); "
        "default 0: start at once (rows are marked noisy on a busy machine)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")


def requires(args: argparse.Namespace) -> list[Requirement]:
    """The peers are torch's."""
    return [TORCH]


def check_memory(spec: WorkloadSpec, free: int) -> None:
    """Refuse a workload that cannot even be generated here (the methods that do not fit beside
    it are skipped one by one later, with the reason in the table)."""
    # The weights, the masks of one call and a copy of the weights for the in-place methods.
    need = spec.numel * (2 * spec.bytes_per_weight + 1)
    if need > 0.8 * free:
        raise UserError(
            f"--params: {spec.numel:.3g} {spec.dtype} weights need ~{need / 2**30:.1f} GiB of memory, "
            f"{free / 2**30:.1f} GiB are free here"
        )


def machine_when_ready(args: argparse.Namespace) -> Machine:
    """The machine the table is measured on, after ``--wait-idle``'s wait."""
    from .hygiene import wait_until_idle

    return wait_until_idle(args.wait_idle)


def run_cuda(args: argparse.Namespace) -> int:
    import torch

    from . import gpu
    from .table import write_text

    if not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device here (torch.cuda.is_available() is False)")
    if args.params is None and args.mix is None and args.dtype is None:
        cases = gpu.suite(args.scale, big=args.big)
    else:
        dtype = torch_dtype(args.dtype or "f32")
        params = args.params or 110_000_000
        cases = [
            gpu.Case(
                f"{params / 1e6:.4g}M {args.mix or 'bert'} {args.dtype or 'f32'}", args.mix or "bert", params, dtype
            )
        ]
    device = torch.device("cuda", torch.cuda.current_device())
    gpu.check(device)
    lines = []
    for line in gpu.table(cases, device, machine_when_ready(args).summary(), args.seed):
        print(line, flush=True)
        lines.append(line)
    if args.markdown:
        write_text(args.markdown, "\n".join(lines) + "\n")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.device == "cuda":
        return run_cuda(args)
    from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]

    from .measure import available_memory, measure_method, measure_one_thread, memory_measured
    from .methods import BY_KEY, ONE_THREAD, ROW_ORDER
    from .table import Report, write_text
    from .workloads import materialize, suite, suite_keys

    if args.params is None and args.mix is None and args.dtype is None:
        cases = [(spec, suite_keys(spec)) for spec in suite(args.scale, big=args.big)]
    else:
        spec = WorkloadSpec(args.mix or "bert", args.params or 110_000_000, args.dtype or "f32", args.seed)
        cases = [(spec, tuple(ROW_ORDER))]
    for spec, _ in cases:
        check_memory(spec, available_memory())
    report = Report(machine_when_ready(args))
    steps = sum(len(keys) + 1 for _, keys in cases)
    with tqdm(total=steps, desc="generating weights", unit="step", file=sys.stderr) as progress:
        for spec, keys in cases:
            progress.set_description(f"generating {spec.label}")
            workload = materialize(spec)
            progress.update()
            for key in keys:
                if key == ONE_THREAD:
                    progress.set_description("ours on 1 thread")
                    report.record(measure_one_thread(spec))
                else:
                    progress.set_description(BY_KEY[key].label)
                    memory = not args.no_memory and memory_measured(spec, key)
                    report.record(measure_method(BY_KEY[key], workload, memory=memory))
                progress.update()
            del workload
    table = report.render()
    print(table, end="")
    if args.markdown:
        write_text(args.markdown, table)
    return 0

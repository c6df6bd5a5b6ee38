"""``lottery-ticket bench``: one global pruning step against its peers, on this machine.

Builds a BERT-like (or ResNet-50-like) layer mix of ``--params`` weights and times, side by side
and each checked for a correct answer: the read floor (a sum over each tensor), NumPy partition,
torch kthvalue, ``torch.nn.utils.prune.global_unstructured``, ours (masks and the torch drop-in,
on all threads and on one), and ``apply_masks`` / ``rewind`` next to torch's in-place
equivalents. Prints the same table as ``make bench`` (``benches/``): the code is shared.
"""

from __future__ import annotations

import argparse
import sys

from .._deps import TORCH, Requirement
from .._errors import UserError
from .workloads import WorkloadSpec


def _weight_count(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of weights such as 110e6, got {text!r}") from None
    if not value >= 1000 or value > 1e12:
        raise argparse.ArgumentTypeError(f"expected between 1e3 and 1e12 weights, got {text}")
    return round(value)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params", type=_weight_count, default=110_000_000, metavar="N",
        help="number of weights in the workload (default 110e6, BERT-base size)",
    )
    parser.add_argument("--dtype", choices=("f32", "bf16"), default="f32", help="weight dtype (default f32)")
    parser.add_argument(
        "--mix", choices=("bert", "resnet"), default="bert",
        help="layer mix: BERT-like (few large tensors) or ResNet-50-like (many small ones)",
    )
    parser.add_argument(
        "--no-memory", action="store_true",
        help="skip the peak-memory measurement (one fresh process per method)",
    )
    parser.add_argument("--markdown", metavar="PATH", help="also write the table to this Markdown file")
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


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]

    from .measure import available_memory, measure_method, measure_one_thread
    from .methods import METHODS
    from .table import Report, write_text
    from .workloads import materialize

    spec = WorkloadSpec(args.mix, args.params, args.dtype, args.seed)
    check_memory(spec, available_memory())
    report = Report()
    with tqdm(total=len(METHODS) + 2, desc="generating weights", unit="step", file=sys.stderr) as progress:
        workload = materialize(spec)
        progress.update()
        for method in METHODS:
            progress.set_description(method.label)
            report.record(measure_method(method, workload, memory=not args.no_memory))
            progress.update()
        progress.set_description("ours on 1 thread")
        report.record(measure_one_thread(spec))
        progress.update()
    table = report.render()
    print(table, end="")
    if args.markdown:
        write_text(args.markdown, table)
    return 0

"""``lottery-ticket prune INPUT... --sparsity S --out OUT``: prune a safetensors checkpoint.

Streams checkpoints bigger than memory (see `lottery_ticket.prune_checkpoint`). Cheap to import:
the library loads only when the command runs.
"""

from __future__ import annotations

import argparse
import sys


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``prune``."""
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="a .safetensors file, several shards, a *.safetensors.index.json or a directory holding them",
    )
    parser.add_argument(
        "--sparsity", "-s", type=_fraction, required=True, help="fraction of the prunable weights to prune, in [0, 1)"
    )
    parser.add_argument(
        "--out",
        "-o",
        help="output: a .safetensors file for a one-file input, else a new directory (same shard names, rewritten index)",
    )
    parser.add_argument(
        "--scope",
        choices=("global", "layer"),
        default="global",
        help="one global ranking (default) or each tensor alone",
    )
    parser.add_argument(
        "--include",
        nargs="+",
        action="extend",
        metavar="PATTERN",
        help="glob patterns of the tensors to prune (default: F16, BF16, F32 and F64 tensors with >= 2 dimensions)",
    )
    parser.add_argument(
        "--exclude",
        nargs="+",
        action="extend",
        metavar="PATTERN",
        help="glob patterns of tensors to leave unpruned, e.g. '*embed_tokens*' 'lm_head.*'",
    )
    parser.add_argument(
        "--ticket", metavar="FILE", help="also write the masks as a ticket file (read by `lottery-ticket inspect`)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the per-tensor table without writing anything")
    parser.add_argument(
        "--no-sync",
        action="store_true",
        help="do not fsync the output before renaming it into place (faster; not safe against a power loss)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Prune; exit status 2 with a one-line reason for a bad input, option or output path."""
    from ..safetensors_stream import prune_checkpoint

    if args.out is None and not args.dry_run:
        print("lottery-ticket prune: --out is required (or --dry-run)", file=sys.stderr)
        return 2
    try:
        summary = prune_checkpoint(
            args.inputs,
            args.out,
            args.sparsity,
            scope=args.scope,
            include=args.include,
            exclude=args.exclude,
            ticket=args.ticket,
            dry_run=args.dry_run,
            progress=not args.no_progress,
            sync=not args.no_sync,
        )
    except (ValueError, TypeError, OSError) as err:  # CheckpointError is a ValueError
        print(f"lottery-ticket prune: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(summary.table())
        print("dry run: nothing written")
        return 0
    print(
        f"pruned {summary.pruned} of {summary.prunable} weights ({summary.achieved_sparsity:.2%}, scope {summary.scope}) "
        f"-> {summary.out}" + (f", ticket {summary.ticket}" if summary.ticket else "")
    )
    return 0

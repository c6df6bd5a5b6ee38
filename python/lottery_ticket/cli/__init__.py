"""The `lottery-ticket` command (also `python -m lottery_ticket`).

Each subcommand lives in its own module exposing ``configure(parser)``, ``run(args) -> int`` and
optionally ``requires(args)`` (its optional dependencies, checked before ``run``: a missing one
exits with status 2 and the extra to install). A user error (bad option, unusable file or folder)
is a `UserError`: one line on stderr, exit status 2, no traceback. Subcommand modules import nothing heavy at module
level, so `lottery-ticket --help` stays fast and never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ._deps import message, missing
from ._errors import OneLineParser, UserError

# subcommand -> (module implementing it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "lottery_ticket.cli.demo",
        "reproduce the Lottery Ticket result on MNIST-1D (and compare pruning methods)",
    ),
    "inspect": ("lottery_ticket.cli.inspect", "summarise a saved ticket file"),
    "bench": ("lottery_ticket.cli.bench", "time one global pruning step against peers on this machine"),
    "prune": ("lottery_ticket.cli.prune", "prune a safetensors checkpoint (streamed: bigger than memory is fine)"),
}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = OneLineParser(prog="lottery-ticket", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_module=module)
        importlib.import_module(module).configure(cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(args._module)
    requires = getattr(module, "requires", None)
    absent = missing(requires(args)) if requires is not None else []
    if absent:
        print(message(args.command, absent), file=sys.stderr)
        return 2
    try:
        result: int = module.run(args)
    except UserError as err:
        print(f"lottery-ticket {args.command}: {err}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())

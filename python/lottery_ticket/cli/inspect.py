"""``lottery-ticket inspect TICKET``: print a saved ticket's summary and per-layer table.

Cheap to import (the CLI imports every subcommand for ``--help``): numpy and safetensors load
only when the command runs.
"""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``inspect``."""
    parser.add_argument("ticket", metavar="TICKET", help="a ticket file written by Ticket.save")


def run(args: argparse.Namespace) -> int:
    """Print the summary; exit status 1 (with the reason on stderr) for a missing or bad file."""
    from ..ticket import Ticket

    try:
        ticket = Ticket.load(args.ticket)
    except (OSError, ValueError) as err:
        print(f"lottery-ticket inspect: {err}", file=sys.stderr)
        return 1
    print(f"ticket       {args.ticket}")
    print(ticket.summary())
    return 0

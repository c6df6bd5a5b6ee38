"""``lottery-ticket inspect TICKET``: print a saved ticket's summary and per-layer table.

Cheap to import (the CLI imports every subcommand for ``--help``): numpy and safetensors load
only when the command runs.
"""

from __future__ import annotations

import argparse

from ._errors import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``inspect``."""
    parser.add_argument("ticket", metavar="TICKET", help="a ticket file written by Ticket.save")


def run(args: argparse.Namespace) -> int:
    """Print the summary; a missing, unreadable or bad file is a `UserError` (exit status 2).

    The file's header is checked before its data is read, so a huge or foreign file is refused
    at once.
    """
    from ..ticket import Ticket

    if not args.ticket:
        raise UserError("TICKET: empty file name")
    try:
        ticket = Ticket.load(args.ticket)
    except ValueError as err:
        raise UserError(str(err)) from None
    except OSError as err:
        raise UserError(f"{args.ticket}: cannot read: {err.strerror or err}") from None
    print(f"ticket       {args.ticket}")
    print(ticket.summary())
    return 0

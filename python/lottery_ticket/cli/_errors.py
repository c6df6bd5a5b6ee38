"""User errors of the command line: one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
from typing import NoReturn


class UserError(Exception):
    """A mistake in the command line or in what it names (a file, a folder): the message says
    which option and why; `lottery_ticket.cli.main` prints it as one line and exits with 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (the usage block buries the message)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

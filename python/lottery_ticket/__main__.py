"""`python -m lottery_ticket` runs the `lottery-ticket` command."""

import sys

from .cli import main

sys.exit(main())

"""`python -m lookalike.cli`: the command line."""

import sys

from lookalike.cli import run

sys.exit(run())

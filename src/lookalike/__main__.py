"""The `lookalike` command: the console script and `python -m lookalike`.

Ctrl-C is handled from this module's first line on. The CLI's imports take tens of
milliseconds; an interrupt during them must end with exit code 130 and one line, not
a traceback. (The package's own ``__init__`` imports nothing, so little runs before.)
"""

import os
import signal
import sys


def _interrupted_while_starting(signum: int, frame: object) -> None:
    os.write(2, b"interrupted\n")
    os._exit(130)  # nothing to clean up yet: only imports ran


def main() -> int:
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    from lookalike.cli import run

    return run()


if __name__ == "__main__":
    sys.exit(main())

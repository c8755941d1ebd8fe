"""The `lookalike` command line: a thin layer over the library's stage functions.

Each command's parser and handler sit together in a module of this package (index, query
with info and export, learn: evaluate and train, groups: duplicates and groups, listing,
demo, serve); `arguments` holds what they share. A handler parses nothing itself, calls
the library, and prints; errors become exit codes here, in `main`.

Exit codes: 0 success; 1 the run finished but skipped some files (index), or the
query answered but its --sheet has tiles of files it could not read (moved, deleted);
2 bad input or arguments (a LookalikeError, or argparse: one line each);
3 the collection is busy; 130 interrupted. Tracebacks only with --debug.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lookalike.cli.arguments import (
    ENVIRONMENT,
    EXIT_INTERRUPTED,
    LISTED_REGISTRIES,
    Parser,
    epilog,
    output_options,
)
from lookalike.cli.demo import add_demo_parser, cmd_demo
from lookalike.cli.groups import (
    add_duplicates_parser,
    add_groups_parser,
    cmd_duplicates,
    cmd_groups,
)
from lookalike.cli.index import add_index_parser, cmd_index
from lookalike.cli.learn import add_evaluate_parser, add_train_parser, cmd_evaluate, cmd_train
from lookalike.cli.listing import add_list_parser, cmd_list
from lookalike.cli.query import (
    add_export_parser,
    add_info_parser,
    add_query_parser,
    cmd_export,
    cmd_info,
    cmd_query,
)
from lookalike.cli.serve import add_serve_parser, cmd_serve
from lookalike.errors import LookalikeError
from lookalike.load.names import safe_display
from lookalike.version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="lookalike",
        description="Find images that look alike in your own collection.",
        epilog=epilog(),
        parents=[output_options(suppress=False)],
    )
    parser.add_argument("-V", "--version", action="version", version=f"lookalike {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Every command takes --quiet/--verbose after its name too.
    output = output_options(suppress=True)

    def add_command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[output], **kwargs)

    for add_parser in (
        add_index_parser,
        add_query_parser,
        add_info_parser,
        add_export_parser,
        add_evaluate_parser,
        add_train_parser,
        add_duplicates_parser,
        add_groups_parser,
        add_list_parser,
        add_demo_parser,
        add_serve_parser,
    ):
        add_parser(add_command)
    return parser


COMMANDS = {
    "index": cmd_index,
    "query": cmd_query,
    "info": cmd_info,
    "export": cmd_export,
    "evaluate": cmd_evaluate,
    "train": cmd_train,
    "duplicates": cmd_duplicates,
    "groups": cmd_groups,
    "demo": cmd_demo,
    "serve": cmd_serve,
    **{kind: cmd_list for kind in LISTED_REGISTRIES},
}


def _run(args: argparse.Namespace) -> int:
    collection = getattr(args, "collection", None)
    if collection is None:
        return COMMANDS[args.command](args)
    from lookalike.fileio import disk_full_is_an_error

    # Not only `index` writes: evaluate caches blocks, query writes sheets, train a model.
    with disk_full_is_an_error(collection):
        return COMMANDS[args.command](args)


def _run_logged(args: argparse.Namespace) -> int:
    """`_run`, with what ran and how long it took in the debug log (--verbose)."""
    import logging
    import platform
    import time

    log = logging.getLogger(__name__)
    log.debug(
        "lookalike %s, Python %s on %s; %s",
        __version__,
        platform.python_version(),
        platform.platform(),
        {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    )
    for name in ENVIRONMENT:
        if name in os.environ:
            log.debug("%s=%s", name, os.environ[name])
    start = time.perf_counter()
    code = _run(args)
    log.debug("%s: exit code %d after %.2f s", args.command, code, time.perf_counter() - start)
    return code


def _configure_logging(verbose: bool) -> None:
    """The package's log records to stderr as "lookalike: warning: ..." lines; --verbose
    adds the debug records, with the module that wrote each."""
    import logging

    class LineFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            where = f"{record.name}: " if verbose else ""
            return f"lookalike: {record.levelname.lower()}: {where}{super().format(record)}"

    package = logging.getLogger("lookalike")
    for old in [h for h in package.handlers if h.get_name() == "lookalike-cli"]:
        package.removeHandler(old)  # main() called again in one process (tests)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name("lookalike-cli")
    handler.setFormatter(LineFormatter())
    package.addHandler(handler)
    package.setLevel(logging.DEBUG if verbose else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    debug = False
    try:
        args = build_parser().parse_args(argv)
        debug = args.debug
        _configure_logging(args.verbose)
        return _run_logged(args)
    except LookalikeError as exc:
        if debug:
            raise
        print(f"lookalike: error: {safe_display(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `lookalike query ... | head`: the reader left; that is not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def run() -> int:
    """`main` with Python's Ctrl-C back (an entry point may have set its own for the imports)."""
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED

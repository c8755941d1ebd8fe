"""The command line's shared argparse plumbing: the parser class, help placeholders filled
from the registries, argument types, exit codes and the environment it documents."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from lookalike.load.names import safe_display

if TYPE_CHECKING:
    from lookalike.registry import Registry


EXIT_SKIPPED = 1


EXIT_INTERRUPTED = 130


NAME_MAX = 255  # bytes in one file name (Linux, macOS); longer ones make os.stat raise


# The environment variables lookalike reads, for the --help epilog (and the README's
# "Environment" section); tests/cli/test_cli_conventions.py checks that every os.environ
# read of the package is listed.
ENVIRONMENT = {
    "LOOKALIKE_CACHE_DIR": "where the ONNX exports of the backbones and the weights' "
    "hashes are kept (default: $XDG_CACHE_HOME/lookalike, else ~/.cache/lookalike)",
    "LOOKALIKE_RUNTIME": "how the CNN runs: auto (default: ONNX Runtime when installed), "
    "onnx, or torch (eager PyTorch, should ONNX Runtime misbehave)",
    "LOOKALIKE_CACHE_MIN_PICTURES": "collections of this many pictures or more keep the "
    "blocks `evaluate` computes in their cache/ folder (default 1000; 0: every collection)",
    "XDG_CACHE_HOME": "the user cache folder LOOKALIKE_CACHE_DIR defaults into",
    "BROWSER": "the web browser `serve --open` starts (Python's webbrowser module)",
}


# Placeholders in help texts, filled from the registries only when help is shown
# (importing the detectors, backbones and index backends takes about half a second).
REGISTRY_PLACEHOLDERS = (
    "{presets}",
    "{evaluated_presets}",
    "{detectors}",
    "{backbones}",
    "{index_backends}",
)


# The commands that list a registry, one line per name (`lookalike presets` ...).
LISTED_REGISTRIES = {
    "presets": "pipeline presets (index --preset)",
    "detectors": "head detectors (index --detector)",
    "backbones": "CNN backbones (index --backbone)",
    "indexes": "vector index backends (index --index-backend)",
}


def registry(kind: str) -> Registry[Any]:
    """The registry a listing command or help placeholder names, its members registered."""
    if kind == "presets":
        from lookalike.config import PRESETS as found
    elif kind == "detectors":
        from lookalike.detect import DETECTORS as found
    elif kind == "backbones":
        from lookalike.embed import BACKBONES as found
    else:
        from lookalike.index import INDEXES as found
    return found


def registry_names(placeholder: str) -> str:
    """The registered names a help placeholder stands for, comma-separated."""
    if placeholder == "{evaluated_presets}":
        from lookalike.config import preset_names_for_evaluation

        return " ".join(preset_names_for_evaluation())
    kind = {"{index_backends}": "indexes"}.get(placeholder, placeholder.strip("{}"))
    return ", ".join(registry(kind).names())


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help with the registries' names filled in, and the line breaks of
    descriptions and epilogs kept (each line is wrapped on its own, hanging under its
    text after a two-space gap, as argparse lays out options)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        for placeholder in REGISTRY_PLACEHOLDERS:
            if text and placeholder in text:
                text = text.replace(placeholder, registry_names(placeholder))
        return text

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import re
        import textwrap

        lines = []
        for line in text.splitlines():
            hang = re.match(r"\s*\S+\s{2,}", line)  # "  NAME   what it is": under "what"
            lines.append(
                textwrap.fill(
                    line.strip(),
                    width,
                    initial_indent=indent + line[: len(line) - len(line.lstrip())],
                    subsequent_indent=indent + " " * (hang.end() if hang else 0),
                )
                if line.strip()
                else ""
            )
        return "\n".join(lines)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other error of the CLI."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def output_options(suppress: bool) -> argparse.ArgumentParser:
    """--quiet and --verbose, before the command or after it. After it (`suppress`) they
    set nothing unless given, so that `lookalike -q index ...` is not undone."""
    default: Any = argparse.SUPPRESS if suppress else False
    options = Parser(add_help=False)
    levels = options.add_mutually_exclusive_group()
    levels.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        default=default,
        help="no progress bars, info lines or request log on stderr (results, warnings and "
        "errors still print)",
    )
    levels.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=default,
        help="debug logging on stderr",
    )
    return options


def epilog() -> str:
    width = max(len(name) for name in ENVIRONMENT) + 2
    lines = [f"  {name:<{width}}{text}" for name, text in ENVIRONMENT.items()]
    return "\n".join(
        [
            "Results go to stdout; progress bars, info lines, warnings and errors to stderr.",
            "Exit codes: 0 done; 1 done, but some files were skipped or unreadable; 2 bad "
            "input or arguments; 3 the collection is busy; 130 interrupted.",
            "",
            "environment variables:",
            *lines,
        ]
    )


def at_least(low: int, also: int | None = None):
    """An argparse type: a whole number >= low (or exactly `also`, a special value)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low and value != also:
            extra = f" (or {also})" if also is not None else ""
            raise argparse.ArgumentTypeError(f"must be at least {low}{extra}, got {value}")
        return value

    return parse


def port_number(text: str) -> int:
    value = at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {value}")
    return value


def query_argument(text: str) -> str:
    """The query as given, refused early where the file system cannot take it. A name that
    is not UTF-8 (surrogates in argv) is kept: the catalog stores such names as bytes."""
    for part in Path(text).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise argparse.ArgumentTypeError(
                f"a file name of {len(os.fsencode(part))} bytes ({safe_display(part[:40])}...): "
                f"no file name is longer than {NAME_MAX} bytes"
            )
    return text


def info(args: argparse.Namespace, text: str) -> None:
    """An info line: to stderr, beside the progress bars, and not with --quiet."""
    if not args.quiet:
        print(text, file=sys.stderr)


def add_collection(p: argparse.ArgumentParser) -> None:
    p.add_argument("collection", type=Path, help="collection folder (made by lookalike index)")


# Adds one subcommand's parser (with the shared --quiet/--verbose) and returns it.
AddCommand = Callable[..., argparse.ArgumentParser]

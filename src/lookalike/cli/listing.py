"""`lookalike presets`, `detectors`, `backbones`, `indexes`: what exists, one line each."""

from __future__ import annotations

import argparse

from lookalike.cli.arguments import LISTED_REGISTRIES, AddCommand, registry


def add_list_parser(add_command: AddCommand) -> None:
    """The commands that list a registry (presets, detectors, backbones, indexes)."""
    for kind, what in LISTED_REGISTRIES.items():
        add_command(kind, help=f"list the {what}", description=f"The {what}, one per line.")


def cmd_list(args: argparse.Namespace) -> int:
    """`lookalike presets` (detectors, backbones, indexes): one line per registered name."""
    described = registry(args.command).describe()
    width = max(map(len, described), default=0)
    for name, text in described.items():
        print(f"{name:<{width}}  {text}".rstrip())
    return 0

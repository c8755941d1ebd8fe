"""`lookalike demo`: the main job on the built-in sample."""

from __future__ import annotations

import argparse
from pathlib import Path

from lookalike.cli.arguments import AddCommand, at_least


def add_demo_parser(add_command: AddCommand) -> None:
    """The `demo` command's arguments."""
    p = add_command(
        "demo",
        help="generate the built-in sample, index it, query, evaluate",
        description="Draws a labelled sample of anime-style characters "
        "(no data from outside), indexes it, writes contact sheets and the "
        "evaluation table into --out.",
    )
    p.add_argument("--out", type=Path, default=Path("lookalike-demo"), help="output folder")
    p.add_argument(
        "--characters",
        type=at_least(1),
        default=12,
        help="characters drawn in the sample (default 12)",
    )
    p.add_argument(
        "--per-character",
        type=at_least(1),
        default=20,
        help="images drawn of each character (default 20)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the drawing: the same seed, the same sample"
    )
    p.add_argument(
        "--backbone", default=None, help="CNN backbone: {backbones} (default efficientnet-lite0)"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from lookalike.demo.run import run_demo

    return run_demo(
        args.out,
        characters=args.characters,
        per_character=args.per_character,
        seed=args.seed,
        backbone=args.backbone,
        progress=not args.quiet,
    )

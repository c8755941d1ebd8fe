"""`lookalike serve`: the local web page and its API."""

from __future__ import annotations

import argparse
from pathlib import Path

from lookalike.cli.arguments import AddCommand, add_collection, port_number


def add_serve_parser(add_command: AddCommand) -> None:
    """The `serve` command's arguments."""
    p = add_command(
        "serve",
        help="browse the collection and query it in a web page (and a JSON API)",
        description="Serve a gallery of the collection with look-alike search, "
        "a head-versus-whole slider, uploads and label filters, plus the JSON API "
        "(described at /api/openapi.json). Read-only; Ctrl-C stops it.",
    )
    add_collection(p)
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)"
    )
    p.add_argument(
        "--port", type=port_number, default=8000, help="port (default 8000; 0 picks a free one)"
    )
    p.add_argument(
        "--labels", help="label filters: 'folders' (parent folder name) or a CSV with 'file'"
    )
    p.add_argument(
        "--evaluation",
        type=Path,
        help="evaluation JSON to show (default: COLL/evaluation.json, written by evaluate)",
    )
    p.add_argument(
        "--open",
        action="store_true",
        help="open the page in the web browser ($BROWSER where set)",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from lookalike.web import serve

    try:
        serve(
            args.collection,
            args.host,
            args.port,
            args.labels,
            args.evaluation,
            open_browser=args.open,
            request_log=not args.quiet,
        )
    except KeyboardInterrupt:
        print("stopped")
    return 0

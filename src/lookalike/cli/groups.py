"""`lookalike duplicates` and `groups`: pictures grouped without labels."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lookalike.cli.arguments import EXIT_SKIPPED, AddCommand, add_collection, at_least, info
from lookalike.load.names import safe_display


def _add_table_formats(p: argparse.ArgumentParser) -> None:
    formats = p.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    formats.add_argument("--csv", action="store_true", help="print CSV, one row per file")


def _print_rows(args: argparse.Namespace, as_json: Any, header: list[str], rows: list) -> None:
    """JSON, CSV or an aligned table of `rows` (file names printed safely in the table)."""
    if args.json:
        print(json.dumps(as_json, indent=2))
        return
    if args.csv:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return
    print("  ".join(header))
    for row in rows:
        print("  ".join(safe_display(str(c)) for c in row))


def add_duplicates_parser(add_command: AddCommand) -> None:
    """The `duplicates` command's arguments."""
    p = add_command(
        "duplicates",
        help="groups of near-duplicate pictures (re-saves, resizes, crops, recolours)",
        description="Groups of pictures that are the same art: perceptual hashes of the "
        "indexed files (and of their crops) at most --threshold bits apart. Each group "
        "names the file to keep (most pixels, then most bytes, then by path). Nothing is "
        "deleted.",
    )
    add_collection(p)
    p.add_argument(
        "--threshold",
        type=at_least(0),
        default=6,  # duplicates.DEFAULT_THRESHOLD (not imported: start-up time)
        help="most differing bits of the 64-bit hashes (default 6; 8 finds more crops and "
        "edits, and pairs some different pictures: check the groups)",
    )
    _add_table_formats(p)


def cmd_duplicates(args: argparse.Namespace) -> int:
    from lookalike.groups.duplicates import find_duplicates

    report = find_duplicates(args.collection, args.threshold)
    rows = [
        [n, "keep" if f is g.keep else "", f.path, f.width, f.height, f.size, f.distance]
        for n, g in enumerate(report.groups, 1)
        for f in g.files
    ]
    header = ["group", "keep", "path", "width", "height", "bytes", "distance"]
    _print_rows(args, report.to_json(), header, rows)
    if not (args.json or args.csv):
        extra = sum(len(g.others) for g in report.groups)
        print(
            f"{len(report.groups)} group(s) of near duplicates among {report.compared} "
            f"pictures ({extra} beside the ones to keep); nothing was deleted"
        )
    for path, reason in report.unreadable:
        print(f"lookalike: warning: {safe_display(path)}: {reason}: not compared", file=sys.stderr)
    return EXIT_SKIPPED if report.unreadable else 0


def add_groups_parser(add_command: AddCommand) -> None:
    """The `groups` command's arguments."""
    p = add_command(
        "groups",
        help="the collection clustered into characters (or people), without labels",
        description="Clusters the stored vectors into groups (characters, or people with "
        "the photo preset), each with a representative picture. --labels-out writes a "
        "labels CSV (group_N, or the names of --names) that train and evaluate read.",
    )
    add_collection(p)
    p.add_argument(
        "--min-size",
        type=at_least(1),
        default=3,
        help="smallest group listed (default 3); smaller ones are listed as ungrouped",
    )
    p.add_argument("--names", type=Path, help="CSV 'group,name' naming groups (group_3,Saber)")
    p.add_argument("--labels-out", type=Path, help="write the labels CSV (file,character) here")
    p.add_argument("--sheets", type=Path, help="write a contact sheet per group into this folder")
    _add_table_formats(p)


def cmd_groups(args: argparse.Namespace) -> int:
    from lookalike.groups.clusters import find_groups, read_names, write_labels, write_sheets
    from lookalike.store.collection import Collection

    coll = Collection.open(args.collection)
    names = read_names(args.names) if args.names else None
    report = find_groups(coll, args.min_size, names)
    rows = [
        [g.name, "representative" if m == g.representative else "", m.id, m.path]
        for g in report.groups
        for m in g.members
    ]
    _print_rows(args, report.to_json(), ["group", "representative", "id", "path"], rows)
    if not (args.json or args.csv):
        print(
            f"{len(report.groups)} group(s) of {args.min_size} or more; "
            f"{len(report.ungrouped)} picture(s) in no group"
        )
    if args.labels_out:
        write_labels(report, args.labels_out)
        info(args, f"labels: {safe_display(args.labels_out)}")
    if args.sheets:
        written = write_sheets(report, coll, args.sheets)
        info(args, f"{len(written)} sheet(s) in {safe_display(args.sheets)}")
    return 0

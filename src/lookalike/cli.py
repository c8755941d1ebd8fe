"""The `lookalike` command line: a thin layer over the library's stage functions.

Exit codes: 0 success; 1 the run finished but skipped some files (index) ;
2 bad input or arguments (a LookalikeError); 3 the collection is busy;
130 interrupted. Tracebacks only with --debug.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from lookalike import __version__
from lookalike.errors import LookalikeError

EXIT_SKIPPED = 1


def _add_pipeline_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        help="pipeline preset: default, v1, v2, v3, v4, photo "
        "(default: 'default' for a new collection, the stored one otherwise)",
    )
    p.add_argument("--detector", help="face detector: animeface (anime art), haar (photos), none")
    p.add_argument("--backbone", help="CNN backbone: efficientnet-lite0 (default), -lite1, -lite2")
    p.add_argument("--index-backend", help="ANN backend: annoy (default), exact, hnswlib, faiss")
    p.add_argument("--trees", type=int, help="Annoy: number of trees (build time knob)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookalike",
        description="Find images that look alike in your own collection.",
    )
    parser.add_argument("--version", action="version", version=f"lookalike {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "index",
        help="index a folder of images into a collection",
        description="Index every image under FOLDER (recursively). Running it "
        "again processes only new and changed files and drops deleted ones; an "
        "interrupted run resumes where it stopped. Exit code 1 if files were "
        "skipped (listed by `lookalike info COLL --errors`).",
    )
    p.add_argument("folder", type=Path, help="folder of images")
    p.add_argument("--collection", "-c", type=Path, required=True, help="collection folder")
    _add_pipeline_options(p)
    p.add_argument("--batch-size", type=int, default=32, help="images per embedding batch")
    p.add_argument("--wait", action="store_true", help="wait if another run holds the collection")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "query",
        help="what looks like this image?",
        description="Find the k images most like IMAGE_OR_ID: an image file "
        "(inside or outside the collection), a path relative to the indexed "
        "folder, or an item id. The query itself is never among the results.",
    )
    p.add_argument("collection", type=Path, help="collection folder")
    p.add_argument("query", help="image file, path inside the indexed folder, or item id")
    p.add_argument("-k", type=int, default=4, help="number of results (default 4)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--sheet", type=Path, help="write a contact sheet PNG: the query, then results")

    p = sub.add_parser("info", help="describe a collection")
    p.add_argument("collection", type=Path)
    p.add_argument("--errors", action="store_true", help="list the files that were skipped")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "evaluate",
        help="measure retrieval quality with labels",
        description="Leave-one-out retrieval among the labelled images: "
        "precision@k, mAP@k, the ANN backend's recall@k against exact search, a "
        "feel score (colour similarity of the whole images) and dims per preset.",
    )
    p.add_argument("collection", type=Path)
    p.add_argument(
        "--labels",
        required=True,
        help="'folders' (parent folder name = label) or a CSV with a 'file' column",
    )
    p.add_argument("--task", help="label column of the CSV to use (default: the first)")
    p.add_argument(
        "--preset",
        action="append",
        dest="presets",
        help="preset to evaluate (repeatable; default v1 v2 v3 v4 default)",
    )
    p.add_argument("-k", type=int, default=4)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "demo",
        help="generate the built-in sample, index it, query, evaluate",
        description="Draws a labelled sample of anime-style characters "
        "(no data from outside), indexes it, writes contact sheets and the "
        "evaluation table into --out.",
    )
    p.add_argument("--out", type=Path, default=Path("lookalike-demo"), help="output folder")
    p.add_argument("--characters", type=int, default=12)
    p.add_argument("--per-character", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default=None, help="backbone (default efficientnet-lite0)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return parser


def _config_from_args(args: argparse.Namespace):
    from lookalike.collection import Collection
    from lookalike.config import IndexConfig, get_preset

    if args.preset:
        config = get_preset(args.preset)
    elif Collection.exists(args.collection):
        config = Collection.open(args.collection).config
    else:
        config = get_preset("default")
    changes = {"detector": args.detector, "backbone": args.backbone}
    if args.index_backend or args.trees:
        params = dict(config.index.params)
        backend = args.index_backend or config.index.backend
        if backend != config.index.backend:
            params = {}
        if args.trees:
            params["n_trees"] = args.trees
        changes["index"] = IndexConfig(backend, params)
    return config.with_options(**changes)


def cmd_index(args: argparse.Namespace) -> int:
    from lookalike.indexer import Indexer

    config = _config_from_args(args)
    indexer = Indexer(
        args.folder, args.collection, config, batch_size=args.batch_size, progress=not args.quiet
    )
    try:
        summary = indexer.run(wait=args.wait)
    except KeyboardInterrupt:
        print(
            "interrupted: finished batches are kept; run the same command to resume",
            file=sys.stderr,
        )
        return 130
    print("\n".join(summary.lines()))
    return EXIT_SKIPPED if summary.skipped else 0


def cmd_query(args: argparse.Namespace) -> int:
    from lookalike.search import Searcher

    searcher = Searcher(args.collection)
    result = searcher.query(args.query, k=args.k)
    if args.sheet:
        from lookalike.render import SheetItem, contact_sheet

        root = searcher.collection.root
        query_path = (
            root / searcher.collection.catalog.get_many([result.query_id])[result.query_id].path
            if result.query_id is not None
            else Path(result.query)
        )
        head = SheetItem(
            query_path,
            query_path.name,
            None,
            result.query_head_box,
            result.query_fallback,
        )
        tiles = [
            SheetItem(root / m.path, m.path, m.score, m.head_box, m.fallback)
            for m in result.matches
        ]
        contact_sheet(head, tiles, args.sheet)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(f"query: {result.query}")
        print(f"{'rank':>4}  {'score':>7}  {'id':>6}  path")
        for rank, m in enumerate(result.matches, 1):
            print(f"{rank:>4}  {m.score:7.4f}  {m.id:>6}  {m.path}")
        if args.sheet:
            print(f"contact sheet: {args.sheet}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from lookalike.collection import Collection

    coll = Collection.open(args.collection)
    catalog = coll.catalog
    if args.errors:
        errors = [r.to_json() for r in catalog.by_status("error")]
        if args.json:
            print(json.dumps(errors, indent=2))
        else:
            for e in errors:
                print(f"{e['path']}: {e['error']}")
            print(f"{len(errors)} file(s) skipped")
        return 0
    manifest = dict(coll.manifest)
    manifest["catalog"] = catalog.counts()
    manifest["being_written"] = coll.is_locked()
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    config = coll.config
    counts = manifest.get("counts", {})
    print(f"collection: {coll.path}")
    print(f"root:       {coll.root}")
    print(f"preset:     {config.preset} ({', '.join(config.block_keys)})")
    print(f"backbone:   {config.backbone}   detector: {config.detector}")
    print(f"index:      {config.index.backend} {config.index.params}")
    print(f"generation: {manifest.get('generation') or 'none committed yet'}")
    print(f"indexed:    {counts.get('indexed', 0)} images, dims {manifest.get('dims', {})}")
    print(f"files:      {manifest['catalog']}")
    if manifest["being_written"]:
        print("an index run is writing this collection now")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lookalike.collection import Collection
    from lookalike.config import preset_names_for_evaluation
    from lookalike.evaluate import detection_rate, evaluate, markdown_table, to_json
    from lookalike.labels import load_labels

    coll = Collection.open(args.collection)
    gen = coll.require_generation()
    paths = [r.path for r in coll.catalog.get_many(gen.ids.tolist()).values()]
    labels = load_labels(args.labels, paths)
    presets = args.presets or preset_names_for_evaluation()
    scores = evaluate(coll, labels, presets, k=args.k, task=args.task, progress=not args.quiet)
    rate = detection_rate(coll)
    print(to_json(scores, rate) if args.json else markdown_table(scores, rate))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lookalike.demo import run_demo

    return run_demo(
        args.out,
        characters=args.characters,
        per_character=args.per_character,
        seed=args.seed,
        backbone=args.backbone,
        progress=not args.quiet,
    )


COMMANDS = {
    "index": cmd_index,
    "query": cmd_query,
    "info": cmd_info,
    "evaluate": cmd_evaluate,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LookalikeError as exc:
        if args.debug:
            raise
        print(f"lookalike: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

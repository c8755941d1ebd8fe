"""`lookalike index`: its arguments, turned into a settings request for the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lookalike.cli.arguments import EXIT_SKIPPED, AddCommand, at_least

if TYPE_CHECKING:
    from lookalike.indexing.settings import Requested


def _add_pipeline_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        help="pipeline preset: {presets} (v5 needs --model; default: 'default' for a new "
        "collection, the stored one otherwise)",
    )
    p.add_argument(
        "--detector",
        help="face detector: {detectors} (animeface: anime art, haar: photos; default: the "
        "preset's)",
    )
    p.add_argument(
        "--detector-size",
        type=_sizes,
        help="animeface: the copy sizes it searches, in turn while no face is found "
        "(default 384,768; 384 alone is faster and misses small faces in full pictures)",
    )
    p.add_argument(
        "--detector-angles",
        type=_angles,
        help="animeface: turned copies searched when no face is found upright, in degrees "
        "(e.g. 45,-45: faces found in 0.917 of anime-full-dev's anime pictures against 0.887, "
        "at more detector time: benchmarks/quality.md; default none, '' turns them off)",
    )
    p.add_argument(
        "--detector-upper",
        type=float,
        help="animeface: the top share of the larger copies searched (e.g. 0.6: 26%% less "
        "detector CPU, misses low faces; default 1, the whole picture)",
    )
    p.add_argument(
        "--fallback",
        choices=["salient", "top"],  # config.Fallback (not imported: start-up time)
        help="head view when no face is found: salient (default: the strongest part of the "
        "CNN's feature map) or top (the top-centre square)",
    )
    p.add_argument(
        "--backbone", help="CNN backbone: {backbones} (default: the preset's, efficientnet-lite0)"
    )
    p.add_argument(
        "--index-backend",
        help="ANN backend: {index_backends} (default auto: exact up to 10k items, usearch "
        "above; milvus through --store)",
    )
    p.add_argument("--trees", type=at_least(1), help="Annoy: number of trees (build time knob)")
    p.add_argument(
        "--search-k",
        type=at_least(1, also=-1),
        help="Annoy: nodes inspected per query (query time knob; default 10000, -1: Annoy's own)",
    )


def _int_list(example: str, what: str) -> Callable[[str], list[int]]:
    """An argparse type: comma-separated integers ('' is none)."""

    def parse(text: str) -> list[int]:
        try:
            return [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {what} like {example}, got {text!r}"
            ) from None

    return parse


_sizes = _int_list("384,768", "sizes")
_angles = _int_list("45,-45", "angles")


def _requested(args: argparse.Namespace) -> Requested:
    """The settings `index` was asked to change (the library decides what they give)."""
    from lookalike.indexing.settings import Requested

    return Requested(
        preset=args.preset,
        detector=args.detector,
        detector_sizes=args.detector_size,
        detector_angles=args.detector_angles,
        detector_upper=args.detector_upper,
        backbone=args.backbone,
        fallback=args.fallback,
        index_backend=args.index_backend,
        trees=args.trees,
        search_k=args.search_k,
        model_dir=args.model,
        store=args.store,
    )


def add_index_parser(add_command: AddCommand) -> None:
    """The `index` command's arguments."""
    p = add_command(
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
    p.add_argument(
        "--model",
        "--head",  # its name before "head" came to mean the crop only
        type=Path,
        help="trained model (from `lookalike train`) for preset v5; an indexed collection "
        "switches to it from its stored boxes, its other blocks re-used",
    )
    p.add_argument(
        "--moved-from",
        type=Path,
        metavar="OLD_FOLDER",
        help="the folder the collection indexed before it was moved to FOLDER: files keep "
        "their ids and vectors",
    )
    p.add_argument("--batch-size", type=at_least(1), default=32, help="images per embedding batch")
    p.add_argument("--wait", action="store_true", help="wait if another run holds the collection")
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="where decode, detect and embed run: this process (default) or Ray",
    )
    p.add_argument("--ray-address", help="join this Ray cluster (default: start a local Ray)")
    p.add_argument(
        "--ray-workers", type=at_least(1), default=2, help="Ray embedding actors (default 2)"
    )
    p.add_argument(
        "--store",
        help="keep the vectors in Milvus: milvus:PATH (Milvus Lite file) or milvus://HOST:PORT",
    )


def cmd_index(args: argparse.Namespace) -> int:
    from lookalike.engines import create_engine
    from lookalike.indexing.indexer import Indexer
    from lookalike.indexing.settings import settings_for

    config = settings_for(args.collection, _requested(args))
    indexer = Indexer(
        args.folder,
        args.collection,
        config,
        batch_size=args.batch_size,
        progress=not args.quiet,
        engine=create_engine(args.engine, args.ray_address, args.ray_workers),
        processes=True,
        moved_from=args.moved_from,
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

"""`lookalike query`, `info` and `export`: reading an indexed collection."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lookalike.cli.arguments import (
    EXIT_SKIPPED,
    AddCommand,
    add_collection,
    at_least,
    query_argument,
)
from lookalike.load.names import safe_display

if TYPE_CHECKING:
    from lookalike.store.collection import Generation


def add_query_parser(add_command: AddCommand) -> None:
    """The `query` command's arguments."""
    p = add_command(
        "query",
        help="what looks like this image?",
        description="Find the k images most like IMAGE_OR_ID: an image file "
        "(inside or outside the collection), a path relative to the indexed "
        "folder, or an item id. The query itself is never among the results.",
    )
    add_collection(p)
    p.add_argument(
        "query",
        type=query_argument,
        help="image file, path inside the indexed folder, or item id",
    )
    p.add_argument("-k", type=at_least(1), default=4, help="number of results (default 4)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--min-score",
        type=float,
        help="leave out results under this cosine score (the score column); says so when "
        "nothing passes",
    )
    p.add_argument(
        "--min-probability",
        type=_probability,
        help="leave out results whose probability of showing the same character (the P(same) "
        "column, calibrated per preset on the dev sets) is under this, from 0 to 1",
    )
    p.add_argument(
        "--sheet",
        type=Path,
        help="write a contact sheet, the query then its results; the suffix chooses the "
        "format: .png, .jpg/.jpeg or .webp (an existing file is written into, never replaced)",
    )
    p.add_argument(
        "--face",
        type=at_least(0),
        default=0,
        help="which face of a query picture with several asks: 0 (default) the best found, "
        "1 the next, ... (lookalike info --json lists each picture's faces)",
    )


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {value:g}")
    return value


def cmd_query(args: argparse.Namespace) -> int:
    from lookalike.search.searcher import Searcher, Threshold
    from lookalike.search.sheet import query_sheet

    if args.sheet:
        from lookalike.render.sheets import check_sheet_target

        check_sheet_target(args.sheet)  # before the query: a bad target fails at once
    searcher = Searcher(args.collection)
    threshold = Threshold(args.min_score, args.min_probability)
    result = searcher.query(args.query, k=args.k, threshold=threshold, face=args.face)
    unreadable = query_sheet(searcher, result, args.sheet) if args.sheet else []
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        asked = f" (id {result.query_id})" if result.query_id is not None else ""
        print(f"query: {safe_display(result.query_path)}{asked}")
        if result.query_fallback:
            print("head crop: no face found in the query, the fallback crop was used")
        elif result.query_faces > 1:
            print(f"face: {result.query_face} of the {result.query_faces} found (--face N)")
        print(f"{'rank':>4}  {'score':>7}  {'P(same)':>7}  {'id':>6}  path")
        for rank, m in enumerate(result.matches, 1):
            p = "n/a" if m.probability is None else f"{m.probability:.2f}"
            face = f"  (face {m.face})" if m.face else ""  # matched through another face
            print(f"{rank:>4}  {m.score:7.4f}  {p:>7}  {m.id:>6}  {safe_display(m.path)}{face}")
        for note in result.notes():
            print(note)
        if args.sheet:
            print(f"contact sheet: {safe_display(args.sheet)}")
    for path, reason in unreadable:
        warning = f"{safe_display(path)}: {reason}: a grey tile in the sheet"
        print(f"lookalike: warning: {warning}", file=sys.stderr)
    # Like an index run that skipped files: the answer is complete, the sheet is not.
    return EXIT_SKIPPED if unreadable else 0


def add_info_parser(add_command: AddCommand) -> None:
    """The `info` command's arguments."""
    p = add_command(
        "info",
        help="describe a collection",
        description="The collection's settings, generation, counts of files and of the faces "
        "found per picture, and whether an index run is writing it now.",
    )
    add_collection(p)
    p.add_argument("--errors", action="store_true", help="list the files that were skipped")
    p.add_argument("--json", action="store_true", help="print JSON (the manifest) instead")


def cmd_info(args: argparse.Namespace) -> int:
    from lookalike.store.collection import Collection

    coll = Collection.open(args.collection)
    catalog = coll.catalog
    gen = coll.generation()
    if gen is not None:  # what it describes is there and readable
        gen.check_sources()
        gen.check_derived()
    if args.errors:
        errors = [r.to_json() for r in catalog.by_status("error")]
        if args.json:
            print(json.dumps(errors, indent=2))
        else:
            for e in errors:
                print(f"{safe_display(e['path'])}: {e['error']}")
            print(f"{len(errors)} file(s) skipped")
        return 0
    manifest = dict(coll.manifest)
    manifest["catalog"] = catalog.counts()
    manifest["faces_per_picture"] = catalog.face_counts()
    manifest["being_written"] = coll.is_locked()
    chosen = _chosen_index(coll.config.index.backend, gen)
    if chosen is not None:
        manifest["index_chosen"] = {"backend": chosen[0], "params": chosen[1]}
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    config = coll.config
    counts = manifest.get("counts", {})
    print(f"collection: {safe_display(coll.path)}")
    print(f"root:       {safe_display(coll.root)}")
    print(f"preset:     {config.preset} ({', '.join(config.block_keys)})")
    print(f"backbone:   {config.backbone}   detector: {config.detector}")
    index_text = f"{config.index.backend} {config.index.params}"
    if chosen is not None:
        from lookalike.index.auto import describe_choice

        index_text += f" -> {describe_choice(*chosen)}"
    print(f"index:      {index_text}")
    print(f"generation: {manifest.get('generation') or 'none committed yet'}")
    print(f"indexed:    {counts.get('indexed', 0)} images, dims {manifest.get('dims', {})}")
    print(f"files:      {manifest['catalog']}")
    faces = manifest["faces_per_picture"]
    print(
        f"faces:      {faces['0']} pictures with none (fallback head view), {faces['1']} with "
        f"one, {faces['2']} with two, {faces['3+']} with three or more"
    )
    if manifest["being_written"]:
        print("an index run is writing this collection now")
    return 0


def _chosen_index(backend: str, gen: Generation | None) -> tuple[str, dict] | None:
    """What the committed `auto` index chose, and with which parameters (None: another
    backend, or nothing committed)."""
    if backend != "auto" or gen is None:
        return None
    from lookalike.index.auto import saved_choice

    return saved_choice(gen.path / "index")


def add_export_parser(add_command: AddCommand) -> None:
    """The `export` command's arguments."""
    p = add_command(
        "export",
        help="write ids, paths, sizes, faces, labels and vectors for other tools",
        description="Write the collection's items as clip-retrieval lays out embeddings: "
        "OUT/img_emb/img_emb_0.npy (the fused vectors, one row per item), OUT/ids.npy, and "
        "OUT/metadata/metadata_0.parquet or .csv (id, path, root, width, height, bytes, "
        "sha256, faces, head box, fallback, labels), rows in the order of the vectors.",
    )
    add_collection(p)
    p.add_argument("--out", type=Path, required=True, help="folder to write into")
    p.add_argument(
        "--format",
        choices=["parquet", "csv", "npy"],  # export.FORMATS (not imported: start-up time)
        default="csv",
        help="metadata as parquet (needs pyarrow: pip install 'lookalike[export]'), csv "
        "(default), or npy (the vectors and ids only)",
    )
    p.add_argument(
        "--labels", help="add label columns: 'folders' (parent folder name) or a CSV with 'file'"
    )


def cmd_export(args: argparse.Namespace) -> int:
    from lookalike.store.export import export_collection

    summary = export_collection(args.collection, args.out, args.format, args.labels)
    print("\n".join(safe_display(line) for line in summary.lines()))
    return 0

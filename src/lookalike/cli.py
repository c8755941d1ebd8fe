"""The `lookalike` command line: a thin layer over the library's stage functions.

Exit codes: 0 success; 1 the run finished but skipped some files (index), or the
query answered but its --sheet has tiles of files it could not read (moved, deleted);
2 bad input or arguments (a LookalikeError, or argparse: one line each);
3 the collection is busy; 130 interrupted. Tracebacks only with --debug.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from lookalike.errors import LookalikeError
from lookalike.load.names import safe_display
from lookalike.version import __version__

if TYPE_CHECKING:
    from lookalike.load.labels import Labels
    from lookalike.registry import Registry
    from lookalike.search.searcher import QueryResult, Searcher
    from lookalike.store.collection import Collection
    from lookalike.train.options import TrainOptions

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


def _output_options(suppress: bool) -> argparse.ArgumentParser:
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


def _epilog() -> str:
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
        help="ANN backend: {index_backends} (default auto: exact up to 10k items, hnswlib "
        "above; milvus through --store)",
    )
    p.add_argument("--trees", type=at_least(1), help="Annoy: number of trees (build time knob)")
    p.add_argument(
        "--search-k",
        type=at_least(1, also=-1),
        help="Annoy: nodes inspected per query (query time knob; default 10000, -1: Annoy's own)",
    )


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {value:g}")
    return value


def _sizes(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 384,768, got {text!r}") from None


def _add_training_options(p: argparse.ArgumentParser) -> None:
    """How a v5 model trains (train, and evaluate --train-fraction); defaults measured in
    docs/v5.md."""
    defaults = _train_defaults()
    p.add_argument(
        "--network",
        default=defaults.network,
        help=f"the network tuned on the labels (default {defaults.network}; "
        "efficientnet-lite0 and -lite1 are faster)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=defaults.epochs,
        help=f"training epochs (default {defaults.epochs})",
    )
    p.add_argument(
        "--layers",
        choices=["all", "last"],
        default=defaults.layers,
        help="what trains: every layer but the stem (default) or the last stage only",
    )
    p.add_argument(
        "--input-size",
        type=int,
        default=defaults.input_size,
        help="side of the training inputs (default: "
        + (str(defaults.input_size) if defaults.input_size else "the network's own")
        + "); the tuned network embeds at its own size",
    )
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default=defaults.precision,
        help=f"training arithmetic (default {defaults.precision}; bf16: bfloat16 autocast, fast "
        "on CPUs with AVX-512 BF16 and on GPUs)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help="share of the labelled images held out to print accuracy per epoch and choose the "
        "number of epochs, after which a final round trains on all of them (default "
        f"{defaults.val_fraction}: the fixed schedule, on all of them)",
    )
    p.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda")


def _train_defaults() -> TrainOptions:
    from lookalike.train.options import TrainOptions

    return TrainOptions()


def _training_options(args: argparse.Namespace) -> TrainOptions:
    """The TrainOptions of the options `_add_training_options` added (train and evaluate)."""
    from lookalike.train.options import TrainOptions

    return TrainOptions(
        network=args.network,
        epochs=args.epochs,
        layers=args.layers,
        input_size=args.input_size,
        precision=args.precision,
        val_fraction=args.val_fraction,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )


def info(args: argparse.Namespace, text: str) -> None:
    """An info line: to stderr, beside the progress bars, and not with --quiet."""
    if not args.quiet:
        print(text, file=sys.stderr)


def _add_table_formats(p: argparse.ArgumentParser) -> None:
    formats = p.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    formats.add_argument("--csv", action="store_true", help="print CSV, one row per file")


def _add_collection(p: argparse.ArgumentParser) -> None:
    p.add_argument("collection", type=Path, help="collection folder (made by lookalike index)")


# Adds one subcommand's parser (with the shared --quiet/--verbose) and returns it.
AddCommand = Callable[..., argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="lookalike",
        description="Find images that look alike in your own collection.",
        epilog=_epilog(),
        parents=[_output_options(suppress=False)],
    )
    parser.add_argument("-V", "--version", action="version", version=f"lookalike {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Every command takes --quiet/--verbose after its name too.
    output = _output_options(suppress=True)

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


def _requested(args: argparse.Namespace):
    """The settings `index` was asked to change (the library decides what they give)."""
    from lookalike.indexing.settings import Requested

    return Requested(
        preset=args.preset,
        detector=args.detector,
        detector_sizes=args.detector_size,
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


def add_query_parser(add_command: AddCommand) -> None:
    """The `query` command's arguments."""
    p = add_command(
        "query",
        help="what looks like this image?",
        description="Find the k images most like IMAGE_OR_ID: an image file "
        "(inside or outside the collection), a path relative to the indexed "
        "folder, or an item id. The query itself is never among the results.",
    )
    _add_collection(p)
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


def cmd_query(args: argparse.Namespace) -> int:
    from lookalike.search.searcher import Searcher, Threshold

    if args.sheet:
        from lookalike.render.sheets import check_sheet_target

        check_sheet_target(args.sheet)  # before the query: a bad target fails at once
    searcher = Searcher(args.collection)
    threshold = Threshold(args.min_score, args.min_probability)
    result = searcher.query(args.query, k=args.k, threshold=threshold, face=args.face)
    query_path, query_name = _query_file(searcher, result)
    unreadable = _write_sheet(searcher, result, query_path, query_name, args.sheet)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        asked = f" (id {result.query_id})" if result.query_id is not None else ""
        print(f"query: {safe_display(query_name)}{asked}")
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


def _query_file(searcher: Searcher, result: QueryResult) -> tuple[Path, str]:
    """The query's image file, and its name in the form the results are named in: a
    picture of the collection by its path inside the indexed folder (whether it was asked
    by id, by that path or by a path to the file), any other file as it was given."""
    name = result.query_path
    return (Path(name) if result.query_id is None else searcher.collection.root / name), name


def _write_sheet(
    searcher: Searcher, result: QueryResult, query_path: Path, query_name: str, out: Path | None
) -> list[tuple[Path, str]]:
    """The contact sheet of a query, when `out` is given; returns the images it could not
    read (moved, deleted)."""
    if out is None:
        return []
    from lookalike.render.sheets import SheetItem, contact_sheet

    root = searcher.collection.root
    head = SheetItem(query_path, query_name, None, result.query_head_box, result.query_fallback)
    tiles = [
        SheetItem(root / m.path, m.path, m.score, m.head_box, m.fallback) for m in result.matches
    ]
    return contact_sheet(head, tiles, out).unreadable


def add_info_parser(add_command: AddCommand) -> None:
    """The `info` command's arguments."""
    p = add_command(
        "info",
        help="describe a collection",
        description="The collection's settings, generation, counts of files and of the faces "
        "found per picture, and whether an index run is writing it now.",
    )
    _add_collection(p)
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
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    config = coll.config
    counts = manifest.get("counts", {})
    print(f"collection: {safe_display(coll.path)}")
    print(f"root:       {safe_display(coll.root)}")
    print(f"preset:     {config.preset} ({', '.join(config.block_keys)})")
    print(f"backbone:   {config.backbone}   detector: {config.detector}")
    print(f"index:      {config.index.backend} {config.index.params}")
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


def _collection_and_labels(args: argparse.Namespace) -> tuple[Collection, Labels]:
    """The collection and --labels, checked against the files it indexes."""
    from lookalike.load.labels import load_labels
    from lookalike.store.collection import Collection

    coll = Collection.open(args.collection)
    gen = coll.require_generation()
    paths = [r.path for r in coll.catalog.get_many(gen.ids.tolist()).values()]
    return coll, load_labels(args.labels, paths)


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
    _add_collection(p)
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


def add_evaluate_parser(add_command: AddCommand) -> None:
    """The `evaluate` command's arguments."""
    p = add_command(
        "evaluate",
        help="measure retrieval quality with labels",
        description="Leave-one-out retrieval among the labelled images: "
        "precision@k, mAP@k, the ANN backend's recall@k against exact search, a "
        "feel score (colour similarity of the whole images) and dims per preset.",
    )
    _add_collection(p)
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
        metavar="PRESET",
        help="preset to evaluate: {presets} (repeatable; default {evaluated_presets})",
    )
    p.add_argument(
        "-k", type=at_least(1), default=4, help="the k of precision@k, mAP@k (default 4)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--train-fraction",
        type=float,
        help="train a v5 model on this stratified fraction of the labelled images and score "
        "every preset on the rest only (queries and gallery); adds v5 to the presets",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the training")
    _add_training_options(p)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lookalike.config import preset_names_for_evaluation
    from lookalike.evaluate.evaluation import detection_rate, evaluate, markdown_table, to_json
    from lookalike.fileio import atomic_write_bytes

    coll, labels = _collection_and_labels(args)
    presets = args.presets or preset_names_for_evaluation()
    if args.train_fraction is not None:
        from lookalike.embed.trained_model import OUTPUTS
        from lookalike.evaluate.evaluation import evaluate_held_out

        held = evaluate_held_out(
            coll,
            labels,
            args.presets or [*presets, "v5"],
            args.train_fraction,
            k=args.k,
            task=args.task,
            seed=args.seed,
            options=_training_options(args),
            outputs=OUTPUTS,
            progress=not args.quiet,
        )
        scores = held.scores
        trained = f", v5 trained in {held.train_seconds:.0f} s" if held.train_seconds else ""
        info(
            args,
            f"labels of {len(held.train_paths)} images used for training; scored on the "
            f"other {len(held.test_paths)}{trained}",
        )
    else:
        scores = evaluate(coll, labels, presets, k=args.k, task=args.task, progress=not args.quiet)
    rate = detection_rate(coll, labels.column(args.task))  # over the labelled pictures
    # Kept beside the collection so that `lookalike serve` can show the table.
    atomic_write_bytes(coll.path / "evaluation.json", to_json(scores, rate).encode() + b"\n")
    print(to_json(scores, rate) if args.json else markdown_table(scores, rate))
    return 0


def add_train_parser(add_command: AddCommand) -> None:
    """The `train` command's arguments."""
    p = add_command(
        "train",
        help="train a v5 model on your labels (multi-task)",
        description="Tune a network of its own on the labelled images, with one classifier per "
        "label column (task), on both views (head crop and whole image). The model is saved as "
        "safetensors + model.json; use it with "
        "`lookalike index FOLDER -c COLL --preset v5 --model MODEL_DIR`.",
    )
    _add_collection(p)
    p.add_argument(
        "--labels",
        required=True,
        help="'folders' (one task, character = parent folder) or a CSV: a 'file' column and "
        "one column per task (an empty cell: no label)",
    )
    p.add_argument("--tasks", help="comma-separated label columns to learn (default: all)")
    _add_training_options(p)
    p.add_argument(
        "--output",
        choices=["probs", "logits", "embedding"],
        default="probs",
        help="the retrieval vector: task probabilities (default), logits, or the embedding "
        "(the tuned network's GeM)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the training (views, order, init)")
    p.add_argument("--out", type=Path, help="model folder (default: COLL/model)")


def cmd_train(args: argparse.Namespace) -> int:
    from lookalike.embed.trained_model import save_model
    from lookalike.train import train_model

    coll, labels = _collection_and_labels(args)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    options = _training_options(args)
    out = args.out or coll.path / "model"
    model, result = train_model(coll, labels, tasks, options, output=args.output, out=out)
    save_model(out, model.config, model.classifiers)
    for task in model.config.tasks:
        accuracy = result.val_accuracy.get(task.name)
        shown = f"{accuracy:.3f}" if accuracy is not None else "n/a"
        print(f"task {task.name}: {len(task.classes)} classes, validation accuracy {shown}")
    model_dir, root, path = (safe_display(p) for p in (out, coll.root, coll.path))
    minutes, seconds = divmod(round(result.seconds), 60)
    print(
        f"trained {result.epochs} epochs in {minutes} min {seconds} s; model saved in {model_dir}"
    )
    from lookalike.invocation import lookalike_command

    words = shlex.join(["index", root, "-c", path, "--preset", "v5", "--model", model_dir])
    print(f"use it: {lookalike_command()} {words}")
    return 0


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
    _add_collection(p)
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
    _add_collection(p)
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


def add_serve_parser(add_command: AddCommand) -> None:
    """The `serve` command's arguments."""
    p = add_command(
        "serve",
        help="browse the collection and query it in a web page (and a JSON API)",
        description="Serve a gallery of the collection with look-alike search, "
        "a head-versus-whole slider, uploads and label filters, plus the JSON API "
        "(described at /api/openapi.json). Read-only; Ctrl-C stops it.",
    )
    _add_collection(p)
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


if __name__ == "__main__":
    sys.exit(run())

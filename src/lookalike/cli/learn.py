"""`lookalike evaluate` and `train`: scoring presets on labels, and teaching v5 your labels."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from lookalike.cli.arguments import AddCommand, add_collection, at_least, info
from lookalike.embed.model_files import DEFAULT_OUTPUT, OUTPUTS
from lookalike.load.names import safe_display

if TYPE_CHECKING:
    from lookalike.load.labels import Labels
    from lookalike.store.collection import Collection
    from lookalike.train.options import TrainOptions


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
        "--frozen-blocks",
        type=int,
        default=defaults.frozen_blocks,
        help="with --layers all: the leading network blocks kept as ImageNet trained them "
        f"(default {defaults.frozen_blocks}; 0: every block trains)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help=f"pictures per training step (default {defaults.batch_size})",
    )
    p.add_argument(
        "--input-size",
        type=int,
        default=defaults.input_size,
        help="side of the training inputs (default: "
        + (str(defaults.input_size) if defaults.input_size else "the network's own")
        + "; 0: the network's own); the tuned network embeds at its own size",
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
        frozen_blocks=args.frozen_blocks,
        batch_size=args.batch_size,
        input_size=args.input_size,
        precision=args.precision,
        val_fraction=args.val_fraction,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )


def _collection_and_labels(args: argparse.Namespace) -> tuple[Collection, Labels]:
    """The collection and --labels, checked against the files it indexes."""
    from lookalike.load.labels import load_labels
    from lookalike.store.collection import Collection

    coll = Collection.open(args.collection)
    gen = coll.require_generation()
    paths = [r.path for r in coll.catalog.get_many(gen.ids.tolist()).values()]
    return coll, load_labels(args.labels, paths)


def add_evaluate_parser(add_command: AddCommand) -> None:
    """The `evaluate` command's arguments."""
    p = add_command(
        "evaluate",
        help="measure retrieval quality with labels",
        description="Leave-one-out retrieval among the labelled images: "
        "precision@k, mAP@k, the ANN backend's recall@k against exact search, a "
        "feel score (colour similarity of the whole images) and dims per preset.",
    )
    add_collection(p)
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
        "--per-label",
        action="store_true",
        help="also print each label's precision@k, worst first, and the labels its queries "
        "found instead (always in --json and evaluation.json)",
    )
    p.add_argument(
        "--train-fraction",
        type=float,
        help="train a v5 model on this stratified fraction of the labelled images and score "
        "every preset on the rest only (queries and gallery); adds v5 to the presets",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the training")
    _add_training_options(p)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lookalike.evaluate.report import evaluate_collection

    coll, labels = _collection_and_labels(args)
    report = evaluate_collection(
        coll,
        labels,
        args.presets,
        k=args.k,
        task=args.task,
        train_fraction=args.train_fraction,
        seed=args.seed,
        options=_training_options(args),
        progress=not args.quiet,
    )
    if report.held is not None:
        held = report.held
        trained = f", v5 trained in {held.train_seconds:.0f} s" if held.train_seconds else ""
        info(
            args,
            f"labels of {len(held.train_paths)} images used for training; scored on the "
            f"other {len(held.test_paths)}{trained}",
        )
    print(report.to_json() if args.json else report.table(args.per_label))
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
    add_collection(p)
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
        choices=list(OUTPUTS),
        default=DEFAULT_OUTPUT,
        help="the retrieval vector: task probabilities, logits, the embedding (the tuned "
        "network's GeM), or probabilities and embedding side by side (probs+embedding, the "
        "default)",
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

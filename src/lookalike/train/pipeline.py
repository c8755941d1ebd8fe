"""From a labelled collection to a trained model.

The model tunes a network of its own on the labelled images (network.py). A collection
switched to it (`index --model`, indexing/switch.py) gets its v5 blocks from the images,
once per model (cached); its other blocks stay as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.embed.extractor import FeatureExtractor
from lookalike.embed.model_files import DEFAULT_OUTPUT
from lookalike.embed.trained_model import ModelConfig, Output, TrainedModel, save_network
from lookalike.errors import ImageLoadError, LabelsError, LookalikeError
from lookalike.load.images import load_image
from lookalike.load.labels import Labels
from lookalike.store.collection import Collection
from lookalike.train.data import encode_targets
from lookalike.train.network import NetworkResult, check_trainable, train_network
from lookalike.train.options import TrainOptions


def train_model(
    coll: Collection,
    labels: Labels,
    tasks: Sequence[str] | None = None,
    options: TrainOptions | None = None,
    output: Output = DEFAULT_OUTPUT,
    rows: Sequence[int] | None = None,
    out: Path | None = None,
) -> tuple[TrainedModel, NetworkResult]:
    """Train a model on the labelled items of `coll` (only `rows` of its generation, if given).

    `output`: the retrieval vector, "probs+embedding" by default: the article's task
    probabilities (far better than the embedding on the built-in sample's six tasks) beside
    the embedding (better on full pictures), docs/v5.md round 6. The network is written into
    `out` (the model folder), which the model then needs; the model itself is saved by the
    caller (`save_model`).
    """
    options = options or TrainOptions()
    if out is None:
        raise LookalikeError("training saves a network with the model: pass --out DIR")
    check_trainable(options)
    gen = coll.require_generation()
    ids = gen.ids.tolist()
    records = coll.catalog.get_many(ids)
    paths = [records[i].path for i in ids]
    candidates = np.arange(len(ids)) if rows is None else np.asarray(rows, dtype=np.int64)
    specs, targets = encode_targets(labels, [paths[r] for r in candidates], tasks)
    labelled = targets.labelled
    if labelled.sum() < 2:
        raise LabelsError("fewer than two images have labels for the chosen tasks")
    chosen, targets = candidates[labelled], targets[labelled]
    ext = FeatureExtractor(coll.config)
    # The pixels, not stored features: the network is tuned on random views of them, so no
    # backbone output can be re-used. Detection is (the stored head boxes); the decode is
    # once per run, where every epoch runs the network forward and back on each picture.
    views = [
        ext.views_from_box(_image(coll, records[ids[r]].path), gen.head_boxes[r]) for r in chosen
    ]
    tuned = train_network(views, targets, specs, options)
    config = ModelConfig(
        tasks=tuple(specs),
        network=options.network,
        backbone_hash=save_network(Path(out), options.network, tuned.backbone_state),
        embed_dim=int(tuned.classifiers.weights[0].shape[1]),
        output=output,
        trained={
            "images": len(chosen),
            "seed": options.seed,
            "epochs": tuned.epochs,
            "layers": options.layers,
            "input_size": options.input_size,
            "precision": options.precision,
            "start_size": options.start_size,
            "frozen_blocks": options.frozen_blocks,
            "backbone_lr": options.backbone_lr,
            "classifier_lr": options.classifier_lr,
            "batch_size": options.batch_size,
            "val_fraction": options.val_fraction,
            "val_accuracy": tuned.val_accuracy,
            "seconds": round(tuned.seconds, 1),
            "cpu_seconds": round(tuned.cpu_seconds, 1),
        },
    )
    return TrainedModel(config, tuned.classifiers, Path(out)), tuned


def _image(coll: Collection, path: str) -> Image.Image:
    try:
        return load_image(coll.root / path)
    except ImageLoadError as exc:
        raise LookalikeError(
            f"{exc.path}: {exc.reason}; the folder changed since indexing, re-run index"
        ) from exc

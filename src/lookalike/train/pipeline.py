"""From a labelled collection to a trained head, and from a head to a collection's v5 vectors.

The head tunes a network of its own on the labelled images (network.py); its v5 blocks are
computed from the images (once per head, cached); the collection's other blocks stay as
they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.config import PipelineConfig
from lookalike.embed.extractor import FeatureExtractor
from lookalike.errors import ImageLoadError, LabelsError, LookalikeError
from lookalike.fuse.fitting import fit_fused_index
from lookalike.load.images import load_image
from lookalike.load.labels import Labels
from lookalike.store.blocks import blocks_for
from lookalike.store.collection import Collection
from lookalike.train.data import encode_targets
from lookalike.train.head import Head, HeadConfig, load_head, save_network
from lookalike.train.network import NetworkResult, Output, check_trainable, train_network
from lookalike.train.options import TrainOptions


def train_head(
    coll: Collection,
    labels: Labels,
    tasks: Sequence[str] | None = None,
    options: TrainOptions | None = None,
    output: Output = "probs",
    rows: Sequence[int] | None = None,
    out: Path | None = None,
) -> tuple[Head, NetworkResult]:
    """Train a head on the labelled items of `coll` (only `rows` of its generation, if given).

    `output`: the retrieval vector, "probs" by default, as the article (measured as good as
    the embedding on one task and better on six, docs/v5.md). The network is written into
    `out` (the head folder), which the head then needs; the head itself is saved by the
    caller (`save_head`).
    """
    options = options or TrainOptions()
    if out is None:
        raise LookalikeError("training saves a network with the head: pass --out DIR")
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
    config = HeadConfig(
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
            "val_fraction": options.val_fraction,
            "val_accuracy": tuned.val_accuracy,
            "seconds": round(tuned.seconds, 1),
        },
    )
    return Head(config, tuned.classifiers, Path(out)), tuned


def _image(coll: Collection, path: str) -> Image.Image:
    try:
        return load_image(coll.root / path)
    except ImageLoadError as exc:
        raise LookalikeError(
            f"{exc.path}: {exc.reason}; the folder changed since indexing, re-run index"
        ) from exc


def can_switch_in_place(coll: Collection, wanted: PipelineConfig) -> bool:
    """True when `coll` must and can be switched to `wanted` (which names a head) from its
    stored boxes: only what is computed from stored features differs (not boxes or
    backbone), or the head in `wanted.head_dir` is not the one that computed the stored v5
    blocks (trained again into the same folder, say)."""
    stored = coll.config
    fields = ("preset", "blocks", "fusion", "index", "head_dir")
    same = replace(stored, **{f: getattr(wanted, f) for f in fields})
    if same != wanted:
        return False
    other_head = bool(wanted.head_dir) and (
        coll.head_fingerprint != load_head(Path(wanted.head_dir)).fingerprint
    )
    return stored != wanted or other_head


def switch_to_head(coll: Collection, config: PipelineConfig, progress: bool = True) -> None:
    """Commit a generation of `coll` computed with `config` (which names a head) from the
    blocks already stored or cached: the head's network reads each image once, from its
    stored head box, for the v5 blocks, and for any other block never computed."""
    if not config.head_dir:
        raise LabelsError(f"preset {config.preset!r} has no head; pass --head HEAD_DIR")
    head = load_head(config.head_dir)
    ext = FeatureExtractor(config)
    with coll.write_lock():
        coll.reload()
        gen = coll.require_generation()
        blocks = blocks_for(coll, gen, config.block_keys, ext, progress=progress)
        fuser, fused, index = fit_fused_index(config, blocks)
        coll.manifest["config"] = config.to_dict()
        coll.manifest["head_fingerprint"] = head.fingerprint  # what computed the v5 blocks
        coll.commit(gen.ids, gen.head_boxes, blocks, fuser, fused, index, coll.manifest["counts"])

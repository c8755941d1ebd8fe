"""From a labelled collection to a trained head, and from a head to a collection's v5 vectors.

A frozen head's input is the appearance blocks of the `v5` preset (its base features, read
from the preset at run time), on the collection's backbone. They come from `blocks_for`, so
they are computed at most once per collection: training again, or switching a collection to
another frozen head, never reads the images a second time. A `finetune` head is a network of
its own (network.py): it trains on the images, and its v5 blocks are computed from the
images (once per head, cached); the collection's other blocks stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.blockstore import blocks_for
from lookalike.collection import Collection, new_index
from lookalike.config import VIEWS, PipelineConfig, get_preset
from lookalike.errors import ImageLoadError, LabelsError, LookalikeError
from lookalike.features import HEAD_FEATURE, FeatureExtractor, split_key
from lookalike.fuse import Fuser
from lookalike.images import load_image
from lookalike.labels import Labels
from lookalike.train.augment import augmented_blocks
from lookalike.train.data import MISSING, encode_targets
from lookalike.train.head import Head, HeadConfig, load_head, save_network
from lookalike.train.model import Output, stack_features
from lookalike.train.network import check_finetunable, finetune_network
from lookalike.train.trainer import MODES, TrainOptions, TrainResult, fit_head


def base_extractor(config: PipelineConfig) -> FeatureExtractor:
    """The head's base features: the v5 preset's other blocks, on the backbone and detector
    of `config`. (Chosen by measurement, see docs/v5.md: CNN GeM at two depths and a 3x3
    colour layout beat the pooled features and global histogram by 0.03.)"""
    v5 = get_preset("v5")
    blocks = tuple(b for b in v5.blocks if b.feature != HEAD_FEATURE)
    return FeatureExtractor(
        v5.with_options(
            blocks=blocks,
            backbone=config.backbone,
            backbone_options=config.backbone_options,
            detector=config.detector,
        )
    )


def base_keys(features: Sequence[str]) -> list[str]:
    return [f"{view}.{f}" for view in VIEWS for f in features]


def train_head(
    coll: Collection,
    labels: Labels,
    tasks: Sequence[str] | None = None,
    options: TrainOptions | None = None,
    output: Output = "probs",
    rows: Sequence[int] | None = None,
    extractor: FeatureExtractor | None = None,
    out: Path | None = None,
) -> tuple[Head, TrainResult]:
    """Train a head on the labelled items of `coll` (only `rows` of its generation, if given).

    `output`: the retrieval vector, "probs" by default in both modes, as the article (for a
    finetune head measured as good as its embedding on one task and better on six,
    docs/v5.md). The `finetune` mode writes its network into `out` (the head folder), which
    it then needs; the head itself is saved by the caller (`save_head`).
    """
    options = options or TrainOptions()
    if options.mode not in MODES:
        raise LookalikeError(f"unknown training mode {options.mode!r}; one of {', '.join(MODES)}")
    if options.mode == "finetune":
        if out is None:
            raise LookalikeError("--mode finetune saves a network with the head: pass --out DIR")
        check_finetunable(options.finetune_backbone)
    ext = extractor or base_extractor(coll.config)
    gen = coll.require_generation()
    ids = gen.ids.tolist()
    records = coll.catalog.get_many(ids)
    paths = [records[i].path for i in ids]
    candidates = np.arange(len(ids)) if rows is None else np.asarray(rows, dtype=np.int64)
    specs, targets = encode_targets(labels, [paths[r] for r in candidates], tasks)
    labelled = (targets != MISSING).any(axis=1)
    if labelled.sum() < 2:
        raise LabelsError("fewer than two images have labels for the chosen tasks")
    chosen, targets = candidates[labelled], targets[labelled]
    trained = {"images": len(chosen), "seed": options.seed}
    if options.mode == "finetune":
        views = [
            ext.views_from_box(_image(coll, records[ids[r]].path), gen.head_boxes[r])
            for r in chosen
        ]
        network = options.finetune_backbone
        tuned = finetune_network(network, views, targets, specs, options)
        config = HeadConfig(
            tasks=tuple(specs),
            backbone_hash=save_network(Path(out), network, tuned.backbone_state),
            features={},
            output=output,
            embed_dim=int(tuned.classifiers.weights[0].shape[1]),
            mode="finetune",
            network=network,
            trained={
                **trained,
                "epochs": options.finetune_epochs,
                "finetune_layers": options.finetune_layers,
                "best_epoch": tuned.best_epoch,
                "val_accuracy": tuned.val_accuracy,
                "seconds": round(tuned.seconds, 1),
            },
        )
        result = TrainResult(tuned.classifiers, tuned.best_epoch, tuned.val_accuracy, tuned.seconds)
        return Head(config, tuned.classifiers, Path(out)), result

    # Each feature once, for both views: one head serves crops and whole images.
    features = list(dict.fromkeys(split_key(k)[1] for k in ext.config.block_keys))
    keys = base_keys(features)
    blocks = blocks_for(coll, gen, keys, ext, progress=options.progress)

    def inputs(source: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return [
            stack_features({f: source[f"{v}.{f}"][chosen] for f in features}, features)
            for v in VIEWS
        ]

    augmented = augmented_blocks(
        coll, gen, keys, ext, options.augmentations, progress=options.progress
    )
    result = fit_head(
        inputs(blocks), targets, specs, options, [x for a in augmented for x in inputs(a)]
    )
    config = HeadConfig(
        tasks=tuple(specs),
        backbone_hash=ext.backbone_hash(keys),
        features={f: int(blocks[f"{VIEWS[0]}.{f}"].shape[1]) for f in features},
        output=output,
        hidden=options.hidden,
        embed_dim=options.embed_dim,
        trained={
            **trained,
            "best_epoch": result.best_epoch,
            "val_accuracy": result.val_accuracy,
            "seconds": round(result.seconds, 1),
            "augmentations": list(options.augmentations),
        },
    )
    return Head(config, result.model), result


def _image(coll: Collection, path: str) -> Image.Image:
    try:
        return load_image(coll.root / path)
    except ImageLoadError as exc:
        raise LookalikeError(
            f"{exc.path}: {exc.reason}; the folder changed since indexing, re-run index"
        ) from exc


def head_blocks(
    head: Head, blocks: Mapping[str, np.ndarray], backbone_hash: str
) -> dict[str, np.ndarray]:
    """The v5 block of each view, from that view's base blocks."""
    return {
        f"{view}.{HEAD_FEATURE}": head.vectors(
            {f: np.asarray(blocks[f"{view}.{f}"]) for f in head.features}, backbone_hash
        )
        for view in VIEWS
    }


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
    features already stored or cached: the images are read only for features never computed.
    """
    if not config.head_dir:
        raise LabelsError(f"preset {config.preset!r} has no head; pass --head HEAD_DIR")
    head = load_head(config.head_dir)
    ext = FeatureExtractor(config)
    keys = base_keys(head.features)
    others = [k for k in config.block_keys if split_key(k)[1] != HEAD_FEATURE]
    with coll.write_lock():
        coll.reload()
        gen = coll.require_generation()
        if head.reads_images:  # its network reads the views: one pass computes what is missing
            blocks = blocks_for(coll, gen, config.block_keys, ext, progress=progress)
        else:
            wanted = list(dict.fromkeys(keys + others))
            blocks = blocks_for(coll, gen, wanted, ext, progress=progress)
            blocks.update(head_blocks(head, blocks, ext.backbone_hash(keys)))
        used = {k: blocks[k] for k in config.block_keys}
        fuser = Fuser(config.blocks, config.fusion).fit(used)
        fused = fuser.transform(used)
        index = new_index(config)
        index.build(fused)
        coll.manifest["config"] = config.to_dict()
        coll.manifest["head_fingerprint"] = head.fingerprint  # what computed the v5 blocks
        # The base blocks are kept too, so the next head finds them in the generation.
        coll.commit(gen.ids, gen.head_boxes, blocks, fuser, fused, index, coll.manifest["counts"])

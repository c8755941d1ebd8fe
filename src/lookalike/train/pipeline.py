"""From a labelled collection to a trained head, and from a head to a collection's v5 vectors.

The head's input is the features the unlabelled `default` preset uses (read from the preset
at run time), on the collection's backbone. They come from `blocks_for`, so they are
computed at most once per collection: training again, or switching a collection to another
head, never reads the images a second time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from lookalike.blockstore import blocks_for
from lookalike.collection import Collection, new_index
from lookalike.config import VIEWS, PipelineConfig, get_preset
from lookalike.errors import LabelsError
from lookalike.features import HEAD_FEATURE, FeatureExtractor, split_key
from lookalike.fuse import Fuser
from lookalike.labels import Labels
from lookalike.train.data import MISSING, encode_targets
from lookalike.train.head import Head, HeadConfig, load_head
from lookalike.train.model import Output, stack_features
from lookalike.train.trainer import TrainOptions, TrainResult, fit_head


def base_extractor(config: PipelineConfig) -> FeatureExtractor:
    """The `default` preset's features, on the backbone and detector of `config`."""
    base = get_preset("default").with_options(backbone=config.backbone, detector=config.detector)
    return FeatureExtractor(base)


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
) -> tuple[Head, TrainResult]:
    """Train a head on the labelled items of `coll` (only `rows` of its generation, if given)."""
    options = options or TrainOptions()
    gen = coll.require_generation()
    ids = gen.ids.tolist()
    records = coll.catalog.get_many(ids)
    paths = [records[i].path for i in ids]
    ext = extractor or base_extractor(coll.config)
    # Each feature once, for both views: one head serves crops and whole images.
    features = list(dict.fromkeys(split_key(k)[1] for k in ext.config.block_keys))
    keys = base_keys(features)
    blocks = blocks_for(coll, gen, keys, ext, progress=options.progress)
    candidates = np.arange(len(ids)) if rows is None else np.asarray(rows, dtype=np.int64)
    specs, targets = encode_targets(labels, [paths[r] for r in candidates], tasks)
    labelled = (targets != MISSING).any(axis=1)
    if labelled.sum() < 2:
        raise LabelsError("fewer than two images have labels for the chosen tasks")
    chosen, targets = candidates[labelled], targets[labelled]
    views = [
        stack_features({f: blocks[f"{v}.{f}"][chosen] for f in features}, features) for v in VIEWS
    ]
    result = fit_head(views, targets, specs, options)
    config = HeadConfig(
        tasks=tuple(specs),
        backbone_hash=ext.backbone_hash(keys),
        features={f: int(blocks[f"{VIEWS[0]}.{f}"].shape[1]) for f in features},
        output=output,
        hidden=options.hidden,
        embed_dim=options.embed_dim,
        trained={
            "images": len(chosen),
            "best_epoch": result.best_epoch,
            "val_accuracy": result.val_accuracy,
            "seconds": round(result.seconds, 1),
            "seed": options.seed,
        },
    )
    return Head(config, result.model), result


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


def can_switch_in_place(stored: PipelineConfig, wanted: PipelineConfig) -> bool:
    """True when only what is computed from stored features differs (not boxes or backbone)."""
    fields = ("preset", "blocks", "fusion", "index", "head_dir")
    same = replace(stored, **{f: getattr(wanted, f) for f in fields})
    return same == wanted and stored != wanted


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
        blocks = blocks_for(coll, gen, list(dict.fromkeys(keys + others)), ext, progress=progress)
        blocks.update(head_blocks(head, blocks, ext.backbone_hash(keys)))
        used = {k: blocks[k] for k in config.block_keys}
        fuser = Fuser(config.blocks, config.fusion).fit(used)
        fused = fuser.transform(used)
        index = new_index(config)
        index.build(fused)
        coll.manifest["config"] = config.to_dict()
        # The base blocks are kept too, so the next head finds them in the generation.
        coll.commit(gen.ids, gen.head_boxes, blocks, fuser, fused, index, coll.manifest["counts"])

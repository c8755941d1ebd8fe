"""Which base features should the v5 head read? The recipe table of docs/v5.md.

On an indexed, labelled collection: the labelled images are split in halves (stratified,
seed 0, as `evaluate --train-fraction 0.5`), a head is trained on one half with
`fit_head` for each recipe, and precision@4 is measured on the other half for the head's
outputs alone and fused with the base appearance vector (the v5 preset's other blocks).
Features come from `blocks_for` (cached in the collection), augmented ones from
`augmented_blocks`.

    .venv/bin/python experiments/v5_recipes.py COLL --labels folders   (at commit 5014312)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from lookalike.train.model import stack_features

from lookalike.config import VIEWS, get_preset
from lookalike.evaluate.evaluation import exact_top_k, labelled_rows, precision_and_map
from lookalike.fuse.fuser import l2_normalize
from lookalike.load.labels import load_labels
from lookalike.store.blocks import blocks_for
from lookalike.store.collection import Collection
from lookalike.train import (
    TrainOptions,
    base_extractor,
    encode_targets,
    fit_head,
    stratified_split,
)
from lookalike.train.augment import AUGMENTATIONS, augmented_blocks

RECIPES = (
    ("pooled", "hsv"),
    ("gem", "gem_mid", "hsv_grid3"),
    ("gem", "gem_mid", "avg_mid", "hsv_grid3", "hsv"),
)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--labels", default="folders")
    parser.add_argument("--augment", action="store_true", help="also train with 3 augmentations")
    args = parser.parse_args(argv)

    coll = Collection.open(args.collection)
    gen = coll.require_generation()
    records = coll.catalog.get_many(gen.ids.tolist())
    paths = [records[int(i)].path for i in gen.ids]
    labels = load_labels(args.labels, paths)
    rows, y = labelled_rows(coll, labels, None)
    train_part, test_part = stratified_split(y.tolist(), 0.5, 0)
    train, test = rows[train_part], rows[test_part]
    ext = base_extractor(coll.config)
    features = sorted({f for recipe in RECIPES for f in recipe})
    keys = [f"{v}.{f}" for v in VIEWS for f in features]
    blocks = blocks_for(coll, gen, keys, ext)
    augmented = augmented_blocks(coll, gen, keys, ext, AUGMENTATIONS) if args.augment else []
    tasks, targets = encode_targets(labels, [paths[r] for r in train])
    appearance = [b for b in get_preset("v5").blocks if b.feature != "v5"]
    look = np.concatenate([b.weight * l2_normalize(blocks[b.key]) for b in appearance], axis=1)

    def p4(vectors: np.ndarray) -> float:
        neighbours = exact_top_k(l2_normalize(vectors), 4)
        return round(precision_and_map(neighbours, y[test_part])[0], 3)

    for recipe in RECIPES:

        def stacked(
            source: dict[str, np.ndarray], part: np.ndarray, view: str, recipe=recipe
        ) -> np.ndarray:
            return stack_features({f: source[f"{view}.{f}"][part] for f in recipe}, recipe)

        start = time.perf_counter()
        result = fit_head(
            [stacked(blocks, train, v) for v in VIEWS],
            targets,
            tasks,
            TrainOptions(progress=False),
            [stacked(a, train, v) for a in augmented for v in VIEWS],
        )
        scores = {}
        for output in ("probs", "embedding"):
            v5 = np.concatenate(
                [
                    l2_normalize(result.model.vectors(stacked(blocks, test, v), output))
                    for v in VIEWS
                ],
                axis=1,
            )
            scores[output] = p4(v5)
            for weight in (1, 2):
                fused = np.concatenate([l2_normalize(v5), weight * l2_normalize(look[test])], 1)
                scores[f"{output} + appearance x{weight}"] = p4(fused)
        seconds = time.perf_counter() - start
        print(f"{'+'.join(recipe)} (aug {len(augmented)}): {scores}, {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()

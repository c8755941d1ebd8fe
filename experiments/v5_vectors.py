"""Which fusion of a finetune head's vectors retrieves best? (docs/v5.md, round 4)

After `lookalike evaluate COLL --labels L --train-fraction F --mode finetune` the held-out
model is in `COLL/cache/held-out-model/` and its v5 blocks are cached. This scores, on the
same held-out half (same seed), the head's `--output` (probs, logits or the tuned
embedding) alone (each view, both), with query expansion, and fused with the `v5` preset's
appearance blocks or the `default` preset's blocks at several weights: no training.

    .venv/bin/python experiments/v5_vectors.py COLL [--labels folders] [--seed 0] [--output O]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from lookalike.config import Block, FusionConfig
from lookalike.embed.extractor import FeatureExtractor
from lookalike.embed.sources import MODEL_FEATURE
from lookalike.embed.trained_model import load_model
from lookalike.evaluate.evaluation import (
    FEEL_BLOCK,
    held_out_vectors,
    labelled_rows,
    preset_like,
    score_vectors,
)
from lookalike.load.labels import load_labels
from lookalike.store.blocks import blocks_for
from lookalike.store.collection import Collection
from lookalike.train import stratified_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--labels", default="folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-fraction", type=float, default=0.5)
    parser.add_argument("--output", choices=["probs", "logits", "embedding"], default="probs")
    args = parser.parse_args()

    coll = Collection.open(args.collection)
    gen = coll.require_generation()
    records = coll.catalog.get_many(gen.ids.tolist())
    rows, y = labelled_rows(
        coll, load_labels(args.labels, [records[int(i)].path for i in gen.ids]), None
    )
    _, test_part = stratified_split(y.tolist(), args.train_fraction, args.seed)
    test_rows, y_test = rows[test_part], y[test_part]
    head = load_model(coll.cache_dir / "held-out-model")
    v5 = preset_like("v5", coll.config).with_options(model_dir=str(head.path))
    default = preset_like("default", coll.config)
    appearance = [b for b in v5.blocks if b.feature != MODEL_FEATURE]
    network = FeatureExtractor(v5, model=head.with_output(args.output))
    blocks = blocks_for(coll, gen, ["head.v5", "whole.v5"], network, progress=False)
    keys = dict.fromkeys([*default.block_keys, *(b.key for b in appearance), FEEL_BLOCK])
    blocks |= blocks_for(coll, gen, list(keys), FeatureExtractor(coll.config), progress=False)
    feel = blocks[FEEL_BLOCK][test_rows]

    def score(name: str, fused: Sequence[Block], fusion: FusionConfig | None = None) -> None:
        config = v5.with_options(blocks=tuple(fused), fusion=fusion or FusionConfig())
        vectors = held_out_vectors(config, {b.key: blocks[b.key] for b in fused}, test_rows)
        s = score_vectors(name, config, vectors, y_test, feel, 4)
        print(f"{name}: P@4 {s.precision_at_k:.3f}, feel {s.feel:.3f}, {s.dims} dims", flush=True)

    def both(weight: float = 1.0) -> list[Block]:
        return [Block("head", MODEL_FEATURE, weight), Block("whole", MODEL_FEATURE, weight)]

    print(f"head {head.path}: output {args.output}, {head.config.trained}")
    score("head view alone", both()[:1])
    score("whole view alone", both()[1:])
    score("both views", both())
    score("both views + query expansion (k 3)", both(), FusionConfig(expand_k=3))
    for weight in (1.0, 1.5, 2.0, 3.0):
        score(f"v5 preset: appearance blocks + both views at {weight}", both(weight) + appearance)
    for weight in (1.0, 2.0, 3.0):
        score(f"default blocks + both views at {weight}", both(weight) + list(default.blocks))
        score(
            f"default blocks + both views at {weight}, pseudo-label LDA",
            both(weight) + list(default.blocks),
            default.fusion,
        )


if __name__ == "__main__":
    main()

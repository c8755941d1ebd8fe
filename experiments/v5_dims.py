"""How small the v5 vector can be: held-out P@4 of v5 with its fused vector reduced by PCA
(issue 16 item 1, issue 18 item 5).

The collection's labels (folders) train one v5 network on a stratified half, as
`lookalike evaluate --train-fraction 0.5` does; then `v5` as the preset fuses it and the
same blocks reduced to each of `--dims` (PCA fitted on the collection without labels,
`FusionConfig.out_dim`) are scored on the other half with the same network. The network
is saved in the collection's cache (`held-out-model`); `--reuse-head` scores again with it
(the same split: seed 0) instead of training a second time.

    python experiments/v5_dims.py anime-faces-dev.coll --dims 0 256 128
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from lookalike.config import PRESETS, get_preset
from lookalike.evaluate.evaluation import evaluate_held_out
from lookalike.load.labels import load_labels
from lookalike.store.collection import Collection


def register_reduced(dim: int) -> str:
    """A preset like `v5` with its fused vector reduced to `dim` (0: not reduced)."""
    name = f"v5-pca{dim}" if dim else "v5-wide"
    base = get_preset("v5")
    fusion = dataclasses.replace(base.fusion, out_dim=dim or None)
    config = dataclasses.replace(base, preset=name, fusion=fusion)
    PRESETS.register(name, f"v5 reduced to {dim} dims (experiments/v5_dims.py)")(lambda: config)
    return name


def reuse_saved_head(coll: Collection) -> None:
    """Make evaluate_held_out score with the network an earlier run saved."""
    import lookalike.train as train
    from lookalike.embed.trained_model import load_model

    saved = load_model(coll.cache_dir / "held-out-model")

    @dataclasses.dataclass
    class Reused:
        seconds: float | None = None

    train.train_model = lambda *args, **kwargs: (saved, Reused())  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection", type=Path, help="an indexed collection, labels = folders")
    parser.add_argument("--dims", type=int, nargs="+", default=[0, 256, 128])
    parser.add_argument("--reuse-head", action="store_true", help="score with the saved head")
    args = parser.parse_args()
    coll = Collection.open(args.collection)
    if args.reuse_head:
        reuse_saved_head(coll)
    gen = coll.require_generation()
    records = coll.catalog.get_many(gen.ids.tolist())
    labels = load_labels("folders", [r.path for r in records.values()])
    presets = [register_reduced(d) for d in args.dims] + ["default"]
    held_out = evaluate_held_out(coll, labels, presets, 0.5, progress=False)
    print(f"train s: {held_out.train_seconds}")
    print("| preset | dims | P@4 | mAP@4 | feel |\n| --- | ---: | ---: | ---: | ---: |")
    for score in held_out.scores:
        print(
            f"| {score.preset} | {score.dims} | {score.precision_at_k:.3f} | "
            f"{score.map_at_k:.3f} | {score.feel:.3f} |"
        )


if __name__ == "__main__":
    main()

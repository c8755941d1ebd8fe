"""Issue 18, round 8: held-out P@4 of v5 for training recipes that no CLI flag names.

Runs what `lookalike evaluate COLL --labels folders --train-fraction 0.5 --preset v5
[--seed S]` runs, with TrainOptions fields set by `--set name=value` (start_size,
frozen_blocks, backbone_lr, classifier_lr, warmup, epochs, input_size, ...), and prints
one JSON line: the recipe, P@4 and mAP@4 of each v5 output, and the training's wall and
CPU seconds (`trained` of the held-out model's model.json). docs/v5.md, round 8.
`--reuse` scores the network the last run saved in the collection's cache (same seed)
without training again; `--flip` embeds each view as the mean GeM of it and its mirror
image (test-time flip averaging: twice the network's work when indexing); `--embed-size N`
embeds at N px instead of the network's own (eager torch).

    OMP_NUM_THREADS=1 python experiments/v5_round8.py faces.coll --seed 0 \\
        --set start_size=128 --set epochs=18
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from lookalike.embed.model_files import OUTPUTS
from lookalike.evaluate.evaluation import evaluate_held_out
from lookalike.load.labels import load_labels
from lookalike.store.collection import Collection
from lookalike.train.options import TrainOptions


def options_of(pairs: list[str], seed: int) -> TrainOptions:
    """TrainOptions with each `name=value` of `pairs` (typed as the field's default)."""
    defaults = TrainOptions(seed=seed, progress=False)
    changes: dict[str, object] = {}
    for pair in pairs:
        name, value = pair.split("=", 1)
        changes[name] = type(getattr(defaults, name))(value)
    return dataclasses.replace(defaults, **changes)


def reuse_saved_model(coll: Collection) -> None:
    """Make evaluate_held_out score with the network an earlier run saved."""
    import lookalike.train as train
    from lookalike.embed.trained_model import load_model

    saved = load_model(coll.cache_dir / "held-out-model")

    @dataclasses.dataclass
    class Reused:
        seconds: float | None = None

    train.train_model = lambda *args, **kwargs: (saved, Reused())  # type: ignore[assignment]


def marked(suffix: str) -> None:
    """Every trained model's fingerprint gets `suffix`: no cached block of the plain model
    is read for a variant."""
    from lookalike.embed.trained_model import TrainedModel

    plain = TrainedModel.fingerprint.fget  # type: ignore[attr-defined]
    TrainedModel.fingerprint = property(lambda self: plain(self) + suffix)  # type: ignore[method-assign,assignment]


def embedded_at(size: int) -> None:
    """Lite networks embed at `size` px (eager torch: an ONNX export has its size)."""
    from lookalike.embed import efficientnet_lite

    os.environ["LOOKALIKE_RUNTIME"] = "torch"
    for variant in efficientnet_lite.INPUT_SIZES:
        efficientnet_lite.INPUT_SIZES[variant] = size
    marked(f":size{size}")


def flip_averaged() -> None:
    """Every trained model embeds a view as the mean GeM of it and its mirror image (under a
    fingerprint of its own, so no cached block of the plain model is read)."""
    from PIL import ImageOps

    from lookalike.embed.trained_model import EMBEDDING, TrainedModel
    from lookalike.vectors import l2_normalize

    def image_vectors(self: TrainedModel, images: list) -> np.ndarray:
        mirrored = [ImageOps.mirror(image) for image in images]
        gem = self.network.embed([*images, *mirrored], [EMBEDDING])[EMBEDDING]
        mean = gem[: len(images)] + gem[len(images) :]
        return self.classifiers.vectors(l2_normalize(mean), self.config.output)

    TrainedModel.image_vectors = image_vectors  # type: ignore[method-assign]
    marked(":flip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], dest="pairs")
    parser.add_argument("--reuse", action="store_true", help="score the saved network")
    parser.add_argument("--flip", action="store_true", help="mean GeM of a view and its mirror")
    parser.add_argument("--embed-size", type=int, default=0, help="embed at this size")
    args = parser.parse_args()
    coll = Collection.open(args.collection)
    if args.reuse:
        reuse_saved_model(coll)
    if args.flip:
        flip_averaged()
    if args.embed_size:
        embedded_at(args.embed_size)
    gen = coll.require_generation()
    paths = [r.path for r in coll.catalog.get_many(gen.ids.tolist()).values()]
    options = options_of(args.pairs, args.seed)
    start, cpu = time.perf_counter(), time.process_time()
    held = evaluate_held_out(
        coll,
        load_labels("folders", paths),
        ["v5"],
        0.5,
        seed=args.seed,
        options=options,
        outputs=OUTPUTS,
        progress=False,
    )
    trained = json.loads((coll.cache_dir / "held-out-model" / "model.json").read_text())
    row = {
        "collection": args.collection.name,
        "seed": args.seed,
        "set": args.pairs
        + ["reuse"] * args.reuse
        + ["flip"] * args.flip
        + [f"embed_size={args.embed_size}"] * bool(args.embed_size),
        "scores": {
            s.preset: [round(s.precision_at_k, 3), round(s.map_at_k, 3)] for s in held.scores
        },
        "train_s": trained["trained"]["seconds"],
        "train_cpu_s": trained["trained"]["cpu_seconds"],
        "total_s": round(time.perf_counter() - start),
        "total_cpu_s": round(time.process_time() - cpu),
        "load": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()

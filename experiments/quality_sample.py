"""Do the issue-3 winners generalise? Score them on the built-in generated sample.

The sample (lookalike.demo.sample.generate_sample: 12 characters x 20 images at 384 px,
whole pictures with backgrounds) is scored in two views: `whole` (the picture) and `head`
(the product's head crop: animeface detector, head_box with margin 0.5, top-centre
fallback). Features are cached under --cache as sample-<view>.npz.

    .venv/bin/python experiments/quality_sample.py
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import quality_round2 as r2
from quality_experiments import product_cnn_features
from quality_spatial import spatial_features

from lookalike.demo.sample import generate_sample
from lookalike.detect import create_detector, crop, head_box


def load_sample(root: Path) -> tuple[list[Image.Image], np.ndarray]:
    if not (root / "labels.csv").exists():
        generate_sample(root)
    images, labels = [], []
    with open(root / "labels.csv", newline="") as f:
        for rec in csv.DictReader(f):
            with Image.open(root / rec["file"]) as im:
                images.append(im.convert("RGB"))
            labels.append(rec["character"])
    return images, np.asarray(labels)


def view_features(images: Sequence[Image.Image]) -> dict[str, np.ndarray]:
    feats = dict(product_cnn_features("efficientnet-lite0", images) or {})
    feats |= {f"{k}@224": v for k, v in spatial_features(images, 224).items()}
    arrays = [np.asarray(im, dtype=np.uint8) for im in images]
    for name, fn in r2.COLOUR.items():
        feats[name] = np.stack([fn(a) for a in arrays]).astype(np.float32)
    return feats


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sample", type=Path, default=Path("/tmp/q-sample"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/lookalike-quality"))
    args = ap.parse_args(argv)
    images, labels = load_sample(args.sample)
    detector = create_detector("animeface")
    heads, found = [], 0
    for im in images:
        faces = detector.detect(im)
        box, fallback = head_box(faces, im.size)
        found += not fallback
        heads.append(crop(im, box))
    print(f"sample: {len(images)} images, faces found in {found}", flush=True)
    data: dict[str, dict[str, np.ndarray]] = {}
    for view, ims in (("whole", images), ("head", heads)):
        path = args.cache / f"sample-{view}.npz"
        if not path.exists():
            np.savez(path, **view_features(ims))
        with np.load(path) as z:
            data[view] = {k: z[k] for k in z.files}
    both = {f"{v}.{k}": x for v in data for k, x in data[v].items()}
    t = r2.Table({"sample": both}, {"sample": labels}, sets=("sample",))
    for name, blocks in r2.RECIPES.items():
        for view in ("head", "whole"):
            t.row(
                f"{name} [{view}]",
                [(f"{view}.{n}", w) for n, w in blocks.blocks],
                blocks.rerank,
                blocks.transform,
            )
        mixed = [(f"head.{n}", w) for n, w in blocks.blocks]
        mixed += [(f"whole.{n}", 0.5 * w) for n, w in blocks.blocks]
        t.row(f"{name} [head + 0.5 whole]", mixed, blocks.rerank, blocks.transform)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

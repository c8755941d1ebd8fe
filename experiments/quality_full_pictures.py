"""Full pictures (issue 14): block sets and fallback head views scored on several collections.

Each collection is indexed first with `lookalike index` (the stored faces and boxes are
used as they are); for the pictures without a face, the head blocks are recomputed for
each fallback variant (top-centre square; salient square, optionally grown to a share of
the shorter side). Every block set is then fused as `default` fuses (weighted, pseudo-label
LDA, reduced to 256 dims, no labels) and scored by precision@4 under exact search, labels =
folders (or a CSV with a column). Prints one line per (fallback, block set) with P@4 and
feel per collection; on anime-full-dev also the anime pictures (`a`) and the others (`o`)
apart. `--stored` scores the head views as the collections were indexed, with no fallback
recomputed.

    python experiments/quality_full_pictures.py [--stored] full=/tmp/full.coll \
        faces=/tmp/faces.coll orl=/tmp/orl.coll \
        demo=/tmp/demo/collection:/tmp/demo/sample/labels.csv:character
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from lookalike.config import Block, get_preset
from lookalike.detect.base import top_centre_box
from lookalike.detect.salient import salient_box
from lookalike.embed.extractor import FeatureExtractor
from lookalike.evaluate.evaluation import exact_top_k, feel_score, labelled_rows, precision_and_map
from lookalike.fuse.fuser import Fuser
from lookalike.load.images import load_image
from lookalike.load.labels import load_labels
from lookalike.store.blocks import blocks_for
from lookalike.store.collection import Collection

ANIME = {"ahagon_umiko", "sakura_nene", "suzukaze_aoba", "yagami_kou"}
HEAD = ["head.gem", "head.avg_g3_s4", "head.avg_g3_s5", "head.gem_mid", "head.soft_grid3"]
WHOLE = ["whole.gem", "whole.gem_mid", "whole.soft_grid3", "whole.hsv"]
DEFAULT = [(b.key, b.weight) for b in get_preset("default").blocks]
BLOCK_SETS = {
    "default blocks": DEFAULT,
    "default + whole gem, gem_mid 0.5": [*DEFAULT, ("whole.gem", 0.5), ("whole.gem_mid", 0.5)],
    "default + whole gem 0.5": [*DEFAULT, ("whole.gem", 0.5)],
    "default + whole gem 1": [*DEFAULT, ("whole.gem", 1.0)],
    "gem, gem_mid, colour of both views": [
        *[(f"{v}.{f}", 1.0) for v in ("head", "whole") for f in ("gem", "gem_mid")],
        ("head.soft_grid3", 1.0),
        ("whole.soft_grid3", 0.5),
    ],
}
FALLBACKS = {"top": None, "salient": 0.0, "salient >= 0.5 side": 0.5, "salient >= 0.75": 0.75}
STORED = "stored"  # the head views as indexed: nothing recomputed


def grown(box: tuple[int, int, int, int], size: tuple[int, int], share: float):
    """`box` as a square of at least `share` x the shorter side, inside the picture."""
    w, h = size
    side = min(max(box[2] - box[0], share * min(w, h)), min(w, h))
    left = min(max((box[0] + box[2] - side) / 2, 0), w - side)
    top = min(max((box[1] + box[3] - side) / 2, 0), h - side)
    return (round(left), round(top), round(left + side), round(top + side))


def load(spec: str, fallbacks: list[str]):
    name, _, rest = spec.partition("=")
    path, _, labels = rest.partition(":")
    labels, _, task = labels.partition(":")
    coll = Collection.open(Path(path))
    gen = coll.require_generation()
    records = coll.catalog.get_many(gen.ids.tolist())
    paths = [records[int(i)].path for i in gen.ids]
    rows, y = labelled_rows(coll, load_labels(labels or "folders", paths), task or None)
    ext = FeatureExtractor(coll.config)
    blocks = blocks_for(coll, gen, HEAD + WHOLE, ext, progress=False)
    fallback_rows = [r for r, i in enumerate(gen.ids) if records[int(i)].fallback]
    images = [load_image(coll.root / paths[r]) for r in fallback_rows]
    variants = {
        name_: {} if name_ == STORED else fallback_blocks(ext, images, FALLBACKS[name_])
        for name_ in fallbacks
    }
    return name, blocks, np.array(fallback_rows, dtype=np.int64), variants, rows, y


def fallback_blocks(ext: FeatureExtractor, images: list, share: float | None):
    if not images:
        return {}
    pre = ext.backbone.preprocess
    out: dict[str, list[np.ndarray]] = {k: [] for k in HEAD}
    for start in range(0, len(images), 32):
        part = images[start : start + 32]
        if share is None:
            boxes = [top_centre_box(im.size) for im in part]
        else:
            energy = ext.backbone.embed(part, ["energy"])["energy"]
            boxes = [
                grown(salient_box(e, im.size, pre.input_size, pre.fit), im.size, share)
                for e, im in zip(energy, part, strict=True)
            ]
        views = [ext.views_from_box(im, b) for im, b in zip(part, boxes, strict=True)]
        for key, array in ext.compute(views, HEAD).items():
            out[key].append(array)
    return {k: np.concatenate(v) for k, v in out.items()}


def score(blocks, chosen, rows, y, name) -> str:
    config = tuple(Block(*key.split("."), weight) for key, weight in chosen)
    fusion = get_preset("default").fusion  # as `default` fuses today (256 dims)
    used = {b.key: blocks[b.key] for b in config}
    vectors = Fuser(config, fusion).fit_transform(used)[rows]
    neighbours = exact_top_k(vectors, 4)
    precision, _ = precision_and_map(neighbours, y)
    text = f"{name} {precision:.3f}"
    if set(y) & ANIME:
        hits = (y[neighbours] == y[:, None]).mean(axis=1)
        anime = np.isin(y, list(ANIME))
        text += f" (a {hits[anime].mean():.3f} o {hits[~anime].mean():.3f})"
    return text + f" feel {feel_score(blocks['whole.hsv'][rows], neighbours):.3f}"


def main() -> None:
    args = sys.argv[1:]
    fallbacks = [STORED] if "--stored" in args else list(FALLBACKS)
    sets = [load(spec, fallbacks) for spec in args if spec != "--stored"]
    for fallback in fallbacks:
        for label, chosen in BLOCK_SETS.items():
            parts = []
            for name, blocks, fb_rows, variants, rows, y in sets:
                blocks = dict(blocks)
                for key, array in variants[fallback].items():
                    blocks[key] = blocks[key].copy()
                    blocks[key][fb_rows] = array
                parts.append(score(blocks, chosen, rows, y, name))
            print(f"{fallback:20s} {label:36s} " + " | ".join(parts), flush=True)


if __name__ == "__main__":
    main()

"""Compact blocks (store/codec.py): P@4 and bytes per picture of float16 blocks against codes.

Indexes each dev set into WORK with the codec off (float16 blocks, as a collection under
`CODEC_MIN_ROWS` pictures keeps them), then fuses the stored blocks as the preset does,
once as stored and once through the codec at each `--fraction` asked (fitted on the
collection, whatever its size), and scores both as `lookalike evaluate --labels folders`
does (leave-one-out, exact cosine, P@4, feel). Bytes per picture are of the blocks alone.

    python benchmarks/block_codec.py --work /tmp/codec --fractions 0.03 0.06 0.12
    python benchmarks/block_codec.py --work /tmp/codec --presets default v1 v2 v3 v4

The feel block (`whole.hsv`, read from the cache) stays float16 in every row, as the cache
keeps it: coded, its cosines grow, and the feel score with them (0.753 to 0.860 on
anime-faces-dev).

Sets: anime-faces-dev, orl-faces-dev, anime-full-dev (from ../shared/datasets; absent ones
are skipped) and the built-in sample (drawn into WORK).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lookalike.config import get_preset
from lookalike.demo.sample import sample_folder
from lookalike.embed.extractor import FeatureExtractor
from lookalike.evaluate.evaluation import FEEL_BLOCK, labelled_rows, preset_like, score_vectors
from lookalike.fuse.fitting import fit_fused
from lookalike.indexing.indexer import Indexer
from lookalike.load.labels import load_labels
from lookalike.store import codec
from lookalike.store.blocks import blocks_for
from lookalike.store.collection import Collection

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
# (name, folder under DATASETS or "sample", labels, task)
SETS = [
    ("anime-faces-dev", "anime-faces-dev", "folders", None),
    ("sample", "sample", "labels.csv", "character"),
    ("orl-faces-dev", "orl-faces-dev", "folders", None),
    ("anime-full-dev", "anime-full-dev", "folders", None),
]


def folder_of(work: Path, folder: str) -> Path:
    return DATASETS / folder if folder != "sample" else sample_folder(work / "sample")


def rows_for(work: Path, name: str, folder: str, labels: str, task, fractions, presets):
    root = folder_of(work, folder)
    coll_path = work / f"{name}.default"
    if not Collection.exists(coll_path) or Collection.open(coll_path).generation() is None:
        codec.CODEC_MIN_ROWS = 10**12  # float16 blocks (and caches): the reference
        Indexer(root, coll_path, get_preset("default"), progress=False, processes=True).run()
    coll = Collection.open(coll_path)
    paths = [r.path for r in coll.catalog.by_status("ok")]
    spec = labels if labels == "folders" else str(root / labels)
    rows, y = labelled_rows(coll, load_labels(spec, paths), task)
    gen = coll.require_generation()
    for preset in presets:
        config = preset_like(preset, coll.config)
        keys = list(dict.fromkeys([*config.block_keys, FEEL_BLOCK]))
        codec.CODEC_MIN_ROWS = 10**12  # any cache this computes: float16, the reference
        blocks = blocks_for(coll, gen, keys, FeatureExtractor(config), progress=False)
        stored = {k: np.asarray(blocks[k], np.float32) for k in keys}
        width = sum(stored[k].shape[1] for k in config.block_keys)
        for fraction in [None, *fractions]:
            used = dict(stored)
            size = 2 * width
            if fraction is not None:
                # The preset's blocks, coded as a collection of this size stores them (its
                # own blocks, or the cache `evaluate` reads the others from); the feel block
                # stays float16, as in the cache (store/blocks.py).
                codec.CODEC_MIN_ROWS, codec.CODE_FRACTION = 0, fraction
                coded = codec.code_blocks(used, {}, exact=[FEEL_BLOCK])
                size = sum(coded[k].codes.shape[1] + 4 for k in config.block_keys)
            _, fused = fit_fused(config, {k: used[k] for k in config.block_keys})
            score = score_vectors(preset, config, fused[rows], y, used[FEEL_BLOCK][rows], 4)
            kind = "float16" if fraction is None else f"codes {fraction}"
            yield name, preset, kind, size, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.06])
    parser.add_argument("--sets", nargs="+", default=[s[0] for s in SETS], help="which sets")
    parser.add_argument(
        "--presets",
        nargs="+",
        default=["default"],
        help="presets scored (v1-v4 read the blocks the index run caches for evaluate)",
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print("| set | preset | blocks | B/picture | P@4 | mAP@4 | feel |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name, folder, labels, task in SETS:
        if name not in args.sets:
            continue
        if folder != "sample" and not (DATASETS / folder).is_dir():
            print(f"(skipped {name}: {DATASETS / folder} is not here)")
            continue
        for set_name, preset, kind, size, s in rows_for(
            args.work, name, folder, labels, task, args.fractions, args.presets
        ):
            scores = f"{s.precision_at_k:.3f} | {s.map_at_k:.3f} | {s.feel:.3f}"
            print(f"| {set_name} | {preset} | {kind} | {size} | {scores} |", flush=True)


if __name__ == "__main__":
    main()

"""What the pseudo-label LDA's k-means starts cost: CPU of fitting `default`'s fuser, as a
ratio in one run; and what fitting the codec's bases again with it adds.

    python benchmarks/fit_cost.py COLL --rows 5000 --repeats 3

Fits the collection's preset fuser (without its codec bases: the wide matrices are fitted
the same way, only stored otherwise) on the collection's stored blocks, decoded, tiled to
`--rows` rows with a little noise (5% of each block's spread) so that no row repeats. 5000
is the most rows any fit reads (lowrank.MAX_FIT_ROWS): the cost of a fit of a million
pictures. Each `--starts` value in turn, `--repeats` times; prints the median process CPU
seconds of each and its ratio to the first. Then the codec's bases (store/codec.py) fitted on
the same rows, as a commit that refits the fuser on new pictures fits them again: their
CPU alone, as a ratio to the first fuser fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np

from lookalike.config import PipelineConfig
from lookalike.fuse.fuser import Fuser
from lookalike.store.codec import BlockBasis
from lookalike.store.collection import Collection

NOISE = 0.05


def tiled(coll: Collection, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The preset's blocks of every stored picture, tiled to `rows` rows with noise."""
    gen = coll.require_generation()
    rng = np.random.default_rng(seed)
    out = {}
    for key in coll.config.block_keys:
        block = np.asarray(gen.block(key)[: len(gen.ids)], np.float32)
        picked = block[np.arange(rows) % len(block)]
        spread = block.std(axis=0, keepdims=True)
        out[key] = picked + NOISE * spread * rng.standard_normal(picked.shape, dtype=np.float32)
    return out


def fit_cpu(config: PipelineConfig, blocks: dict[str, np.ndarray], starts: int) -> float:
    fusion = dataclasses.replace(config.fusion, pseudo_lda_starts=starts)
    start = time.process_time()
    Fuser(config.blocks, fusion).fit(blocks)
    return time.process_time() - start


def bases_cpu(blocks: dict[str, np.ndarray]) -> float:
    start = time.process_time()
    for block in blocks.values():
        BlockBasis.fit(block)
    return time.process_time() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("collection", type=Path, help="a `default` collection (anime-faces-dev)")
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--starts", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    coll = Collection.open(args.collection)
    blocks = tiled(coll, args.rows)
    times: dict[int, list[float]] = {s: [] for s in args.starts}
    for _ in range(args.repeats):
        for starts in args.starts:
            times[starts].append(fit_cpu(coll.config, blocks, starts))
    base = statistics.median(times[args.starts[0]])
    print(f"{args.collection}: the fuser fitted on {args.rows} rows, {args.repeats} repeats")
    print("| k-means starts per k | CPU s (each run) | ratio |")
    print("| ---: | ---: | ---: |")
    for starts, values in times.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        median = statistics.median(values)
        print(f"| {starts} | {median:.1f} ({runs}) | {median / base:.2f} |")
    bases = [bases_cpu(blocks) for _ in range(args.repeats)]
    runs = ", ".join(f"{v:.1f}" for v in bases)
    median = statistics.median(bases)
    print(f"the codec's bases: {median:.1f} s ({runs}), {median / base:.2f} of the first fit")


if __name__ == "__main__":
    main()

"""Query latency on a 100k-image collection, through the Python API the CLI uses.

    python benchmarks/query_latency.py --size 100000 --backend annoy

Indexing 100k real images takes hours on 2 cores, so the collection is grown from real
ones: anime-faces-dev (600 images) is indexed with the default preset, then every extra
item is a real item's stored feature blocks plus Gaussian noise (a tenth of each block's
spread), fused by the collection's own fitted fuser and committed as a normal generation
with catalog rows (paths `synthetic/NNNNNNN`). The vectors so have the dims, norms and
cluster structure of real ones; the index backend is built over all of them.

Then, in this process and after loading a `Searcher` (the object `lookalike query` and
the web app use; loading is timed apart, as is process start):

- `query(path)` of an indexed image: the stored vector, ANN search, exact re-rank of the
  candidates, catalog lookup (what the web app's "more like this" does);
- `query_image(file)` of an image from outside the collection: decode, detect, both views
  through the backbone, fuse, then the same search.

Median and p99 for top-10 are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from lookalike.config import get_preset
from lookalike.fuse.fitting import new_index
from lookalike.indexing.indexer import Indexer
from lookalike.search.searcher import Searcher
from lookalike.store.catalog import FileRecord
from lookalike.store.collection import Collection

DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
CHUNK = 5_000  # synthetic rows fused at a time: bounded temporaries
NOISE = 0.1  # of each block's per-dimension spread


def grow(coll: Collection, size: int, seed: int = 0) -> None:
    """Commit a generation of `size` items: the real ones and noisy copies of them."""
    gen = coll.require_generation()
    real_ids = gen.ids
    keys = [b.key for b in coll.config.blocks]
    real = {k: np.asarray(gen.block(k)) for k in keys}
    spread = {k: v.std(axis=0, keepdims=True) for k, v in real.items()}
    fuser = gen.fuser()
    extra = size - len(real_ids)
    rng = np.random.default_rng(seed)
    source = rng.integers(len(real_ids), size=extra)
    blocks = {k: np.empty((size, v.shape[1]), np.float32) for k, v in real.items()}
    fused = np.empty((size, fuser.output_dim), np.float32)
    n_real = len(real_ids)
    for k in keys:
        blocks[k][:n_real] = real[k]
    fused[:n_real] = gen.fused()
    for start in range(0, extra, CHUNK):
        rows = source[start : start + CHUNK]
        part = {
            k: real[k][rows] + NOISE * spread[k] * rng.standard_normal(real[k][rows].shape)
            for k in keys
        }
        at = n_real + start
        for k in keys:
            blocks[k][at : at + len(rows)] = part[k]
        fused[at : at + len(rows)] = fuser.transform(part)
    records = [
        FileRecord(path=f"synthetic/{i:07d}", size=0, mtime_ns=0, status="ok", sha256=f"s{i}")
        for i in range(extra)
    ]
    coll.catalog.upsert(records)
    ids = np.concatenate([real_ids, np.array([r.id for r in records], np.int64)])
    boxes = np.concatenate([gen.head_boxes, gen.head_boxes[source]])
    start = time.perf_counter()
    index = new_index(coll.config)
    index.build(fused)
    print(
        f"built {coll.config.index.backend} over {size} x {fused.shape[1]} in "
        f"{time.perf_counter() - start:.0f} s",
        file=sys.stderr,
    )
    coll.commit(ids, boxes, blocks, fuser, fused, index, {"ok": size})


def latencies_ms(fn: Callable[[object], object], items: Sequence[object]) -> list[float]:
    fn(items[0])  # warm up: lazy model load, ONNX session, page cache
    times = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        times.append(1000 * (time.perf_counter() - start))
    return times


def row(name: str, times: list[float]) -> str:
    p99 = float(np.percentile(times, 99))
    return f"| {name} | {len(times)} | {statistics.median(times):.1f} | {p99:.1f} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--backend", default=None, help="index backend (default: the preset's)")
    parser.add_argument("--queries", type=int, default=200, help="timed queries by path")
    parser.add_argument("--image-queries", type=int, default=50, help="timed outside images")
    parser.add_argument("--keep", type=Path, default=None, help="build the collection here")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="lookalike-latency-"))
    path = args.keep or tmp / "coll"
    try:
        config = get_preset("default")
        if args.backend:
            config = config.with_options(index=type(config.index)(args.backend, {}))
        # The first 500 images are indexed; the rest are the outside queries.
        root = tmp / "images"
        anime = sorted((DATASETS / "anime-faces-dev").glob("*/*.jpg"))
        rng = np.random.default_rng(0)
        order = rng.permutation(len(anime))
        outside = [anime[i] for i in order[500:]]
        for i in order[:500]:
            link = root / anime[i].parent.name / anime[i].name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(anime[i].resolve())
        shutil.rmtree(path, ignore_errors=True)
        Indexer(root, path, config, progress=False).run()
        coll = Collection.open(path)
        grow(coll, args.size)

        start = time.perf_counter()
        searcher = Searcher(Collection.open(path))
        load_s = time.perf_counter() - start
        indexed = [f"synthetic/{i:07d}" for i in rng.integers(args.size - 500, size=args.queries)]
        by_path = latencies_ms(lambda q: searcher.query(q, k=10), indexed)
        images = [outside[i % len(outside)] for i in range(args.image_queries)]
        by_image = latencies_ms(lambda q: searcher.query_image(q, k=10), images)

        cfg = searcher.config
        print(
            f"{len(searcher)} items x {searcher.fused.shape[1]} dims, {cfg.index.backend} "
            f"{cfg.index.params}; Searcher loaded in {load_s:.1f} s\n"
        )
        print("| query | n | median ms | p99 ms |\n|---|---:|---:|---:|")
        print(row("`query(path)`: indexed image, top-10", by_path))
        print(row("`query_image(file)`: outside image, top-10", by_image))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

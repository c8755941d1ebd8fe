"""A collection grown to N items from real vectors, then queried (issue 16, item 4).

The vectors are a real collection's fused vectors (for example anime-faces-dev indexed
with the default preset), each copied N / n times with small Gaussian perturbations
(isotropic, or with `--noise data` shaped like the vectors' own covariance: `noise_shape`
says why both) and made unit-length again. Every size is written through the real commit
path: catalog rows (one per synthetic file), `Collection.commit` with the source's fitted
fuser, the preset's index (`auto`: exact up to 10k, a usearch graph above) built by the
commit. Each item's per-block sources are its source row's int8 codes, as they are (a
source of 500 pictures or more has coded blocks, store/codec.py; a smaller one gives items
without blocks): a query reads and scores them for its per-view scores and P(same) as on a
real collection, their scores are the source rows', and the disk per item includes them.

Measured per size: commit (build) time; disk per item of the generation and the catalog;
recall@10 of the index against exact search; top-10 query p50/p99 through a warm
`Searcher` (`query` of stored items: the answer `lookalike query` prints, per-view scores
and P(same) included), and p50 of the ranking alone (`search_vector` of a stored vector
without its features: the top 10 and their paths); a new `lookalike query COLL ID -k 10
--json` process: wall time and peak RSS.

    python benchmarks/dense_scale.py --source /tmp/dense/final/anime-faces-dev.default \
        --work /tmp/dense/scale --sizes 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lookalike.fuse.fitting import new_index
from lookalike.index.exact import top_k_inner
from lookalike.search.searcher import Searcher
from lookalike.store.catalog import FileRecord
from lookalike.store.codec import CodedBlock
from lookalike.store.collection import Collection, Generation
from lookalike.vectors import as_stored, l2_normalize

CHUNK = 100_000


def folder_bytes(path: Path) -> int:
    """Bytes on disk as `du` counts them: a file with several hard links once."""
    stats = [f.stat() for f in path.rglob("*") if f.is_file()]
    return sum({(st.st_dev, st.st_ino): st.st_size for st in stats}.values())


NOISES = ("isotropic", "data")


def noise_shape(base: np.ndarray, sigma: float, noise: str) -> np.ndarray:
    """A matrix M such that z @ M, z ~ N(0, I), is the noise: `isotropic`, N(0, sigma^2)
    in every dim; `data`, shaped like the base rows' own covariance (their principal
    directions, each with its share of the variance) with the same total variance as the
    isotropic noise, sigma^2 * dims.

    Why both: isotropic noise gives every copy 256 independent directions to differ in, so
    a query's 10 nearest are its own copies ranked by noise alone (a worst case for any
    graph index: intrinsic dimension 256); pictures vary along far fewer directions, which
    the data-shaped noise keeps."""
    dims = base.shape[1]
    if noise == "isotropic":
        return np.eye(dims, dtype=np.float32) * sigma
    variances, directions = np.linalg.eigh(np.cov(base, rowvar=False).astype(np.float64))
    variances = np.clip(variances, 0, None)
    scale = sigma**2 * dims / variances.sum()
    return (np.sqrt(variances * scale)[:, None] * directions.T).astype(np.float32)


def perturbed(
    base: np.ndarray, n: int, sigma: float, seed: int, noise: str = "isotropic"
) -> np.ndarray:
    """n unit vectors: the base rows in turn, each plus noise of `noise_shape`."""
    rng = np.random.default_rng(seed)
    shape = noise_shape(base, sigma, noise)
    out = np.empty((n, base.shape[1]), np.float32)
    for start in range(0, n, CHUNK):
        rows = np.arange(start, min(start + CHUNK, n)) % len(base)
        z = rng.standard_normal((len(rows), base.shape[1]), dtype=np.float32)
        out[start : start + len(rows)] = l2_normalize(base[rows] + z @ shape, in_place=True)
    return out


def tiled_blocks(gen: Generation, rows: np.ndarray) -> dict[str, CodedBlock]:
    """The source's coded blocks of `rows` modulo its size (none where they are not coded)."""
    blocks = {}
    for key in gen.config.block_keys:
        block = gen.block(key)
        if not isinstance(block, CodedBlock):
            return {}
        source = rows % len(block)
        blocks[key] = CodedBlock(
            block.basis, np.asarray(block.codes)[source], np.asarray(block.scales)[source]
        )
    return blocks


def grow(
    source: Collection, path: Path, n: int, sigma: float, noise: str
) -> tuple[Collection, float]:
    gen = source.require_generation()
    # Rounded to float16, as a collection of the source's dense preset stores its vectors.
    fused = as_stored(perturbed(np.asarray(gen.fused(), np.float32), n, sigma, seed=n, noise=noise))
    boxes = np.tile(gen.head_boxes, (n // len(gen.ids) + 1, 1))[:n]
    shutil.rmtree(path, ignore_errors=True)
    coll = Collection.create(path, source.root, source.config, source.weights_hash)
    start = time.perf_counter()
    with coll.write_lock():
        for first in range(0, n, CHUNK):
            coll.catalog.upsert(
                FileRecord(
                    f"synthetic/{i:07d}.jpg",
                    1000,
                    0,
                    "ok",
                    head_box=tuple(int(v) for v in boxes[i]),
                    sha256="",
                )
                for i in range(first, min(first + CHUNK, n))
            )
        ids = np.array([r.id for r in coll.catalog.by_status("ok")], np.int64)
        index = new_index(coll.config)
        index.build(fused)
        counts = {"indexed": n, **coll.catalog.counts()}
        coded = tiled_blocks(gen, np.arange(n))
        coll.commit(ids, boxes, coded, gen.fuser(), fused, index, counts, coded=coded)  # type: ignore[arg-type]
    return coll, time.perf_counter() - start


def add_rows(coll: Collection, source: Collection, share: float, sigma: float, noise: str) -> float:
    """Seconds to grow the committed collection by `share` of its rows through the real
    commit path, adding them to the committed index as an index run that only added
    pictures does (`VectorIndex.extend`, indexing/growth.py): no refit, no rebuild (but a
    build where the index cannot add them, as exact search grown past 10k)."""
    gen, source_gen = coll.require_generation(), source.require_generation()
    n = len(gen.ids)
    extra = as_stored(
        perturbed(
            np.asarray(source_gen.fused(), np.float32),
            max(1, int(n * share)),
            sigma,
            seed=n + 1,
            noise=noise,
        )
    )
    start = time.perf_counter()
    with coll.write_lock():
        first = n
        coll.catalog.upsert(
            FileRecord(f"synthetic/{i:07d}.jpg", 1000, 0, "ok", head_box=(0, 0, 1, 1), sha256="")
            for i in range(first, first + len(extra))
        )
        known = {int(i) for i in gen.ids}
        added = [r.id for r in coll.catalog.by_status("ok") if r.id not in known]
        fused = np.concatenate([np.asarray(gen.fused(), np.float32), extra])
        index = gen.index()
        if index.extends(len(extra)):
            index.extend(extra)
        else:  # as the index run does: exact search grown past its limit becomes a graph
            index = new_index(coll.config)
            index.build(fused)
        ids = np.concatenate([gen.ids, np.array(added, np.int64)])
        boxes = np.concatenate([gen.head_boxes, np.tile([[0, 0, 1, 1]], (len(extra), 1))])
        counts = {"indexed": len(ids), **coll.catalog.counts()}
        coded = {}
        for key, block in tiled_blocks(source_gen, np.arange(n, len(ids))).items():
            stored = gen.block(key)
            assert isinstance(stored, CodedBlock)  # the grown collection's, tiled the same way
            codes = np.concatenate([stored.codes, block.codes])
            coded[key] = CodedBlock(
                block.basis, codes, np.concatenate([stored.scales, block.scales])
            )
        coll.commit(ids, boxes, coded, gen.fuser(), fused, index, counts, coded=coded)  # type: ignore[arg-type]
    return time.perf_counter() - start


def recall_at_10(searcher: Searcher, rows: np.ndarray) -> float:
    queries = np.asarray(searcher.fused[rows], np.float32)
    truth, _ = top_k_inner(queries, np.asarray(searcher.fused), 10)
    found, _ = searcher.index.query(queries, 10)
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)]))


def percentiles(times: list[float]) -> tuple[float, float]:
    ms = np.array(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


# Runs one command and prints its wall seconds and peak RSS (KiB): a parent of its own, so
# RUSAGE_CHILDREN holds that one process only, not the largest child this script ever had.
MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, capture_output=True)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def new_process_query(path: Path, item_id: int) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one `lookalike query` in a fresh process."""
    cmd = [sys.executable, "-m", "lookalike", "query", str(path), str(item_id), "-k", "10"]
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *cmd, "--json"],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ,
    )
    wall, rss_kib = done.stdout.split()
    return float(wall), float(rss_kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="a committed collection")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--sigma", type=float, default=0.02, help="noise per dim")
    parser.add_argument(
        "--noise", choices=NOISES, default="isotropic", help="its shape (noise_shape)"
    )
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the grown collections")
    parser.add_argument(
        "--add", type=float, default=0.01, help="then grow each by this share, incrementally"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure the collections a --keep run left (no commit, no add): queries again",
    )
    args = parser.parse_args()
    # The grown collections have no per-block sources: every query would warn of them
    # on stderr, and the timing would be of the warnings.
    logging.disable(logging.WARNING)
    source = Collection.open(args.source)
    src_gen = source.require_generation()
    blocks = folder_bytes(src_gen.path / "blocks") / len(src_gen.ids)
    print(f"source {args.source}: {len(src_gen.ids)} items, blocks {blocks:.0f} B/item on disk")
    print(
        "| N | index | commit s | disk B/item (gen + catalog) | recall@10 | Searcher p50 ms "
        "| p99 ms | ranking alone p50 ms | new process s | new process peak RSS MiB "
        "| add --add s |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        path = args.work / f"n{n}"
        if args.reuse:
            coll, build_s = Collection.open(path), float("nan")
            n = len(coll.require_generation().ids)
        else:
            coll, build_s = grow(source, path, n, args.sigma, args.noise)
        gen = coll.require_generation()
        disk = (folder_bytes(gen.path) + (path / "catalog.sqlite").stat().st_size) / n
        searcher = Searcher(coll)
        rng = np.random.default_rng(0)
        drawn = rng.choice(n, min(3 * args.queries, n), replace=False)
        rows, warm_rows = drawn[: args.queries], drawn[args.queries : 2 * args.queries]
        rank_rows = drawn[2 * args.queries :]
        recall = recall_at_10(searcher, rows[:200])
        ids = searcher.ids[rows]
        # Warm: as many queries of other items first (the process's caches, the catalog's
        # and the files' pages a query reads), so that p50 is of a warm process.
        for item_id in searcher.ids[warm_rows]:
            searcher.query(str(item_id), k=10)
        times = []
        for item_id in ids:
            start = time.perf_counter()
            searcher.query(str(item_id), k=10)
            times.append(time.perf_counter() - start)
        p50, p99 = percentiles(times)
        # The ranking alone (the top 10 and their paths, no per-view scores or P(same)), of
        # other items than the ones above, not yet asked about.
        ranking = []
        for row in rank_rows:
            item_id, start = int(searcher.ids[row]), time.perf_counter()
            searcher.search_vector(searcher.fused[row], 10, {item_id})
            ranking.append(time.perf_counter() - start)
        rank_p50, _ = percentiles(ranking)
        chosen = getattr(searcher.index, "chosen", searcher.index.name)
        del searcher
        coll.close_catalog()
        wall, rss = new_process_query(path, int(ids[1]))
        add_s = (
            float("nan") if args.reuse else add_rows(coll, source, args.add, args.sigma, args.noise)
        )
        print(
            f"| {n} | {chosen} | {build_s:.1f} | {disk:.0f} | {recall:.3f} | {p50:.2f} | "
            f"{p99:.2f} | {rank_p50:.2f} | {wall:.2f} | {rss:.0f} | {add_s:.1f} |",
            flush=True,
        )
        if not (args.keep or args.reuse):
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()

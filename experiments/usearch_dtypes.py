"""usearch vector types at scale, on `dense_scale.py`'s vectors: f32, f16, i8 and
i8-rotated (lookalike's own int8 codes: index/int8_rotation.py), each with and without
re-scoring its candidates exactly on the float32 vectors (issue 16: p50 < 1 ms at 1M with
recall@10 >= 0.98; i8-rotated is always re-scored).

The vectors are `benchmarks/dense_scale.py`'s: a collection's fused vectors, each copied
N / n times with Gaussian noise (sigma 0.02 per dim) and made unit-length again. Each type
gets a graph built with the `auto` index's settings (M 16, ef_construction 200; other M
with `--ms`), saved,
then opened as a memory-mapped view in a fresh process, as a query process opens it. The
queries are stored items (as `dense_scale.py` queries), one at a time on one thread, after
warm-up queries; `--rescore R` asks the graph for R candidates and orders them by their
exact inner product read from the float32 vectors (memory-mapped too), timed together.

    python experiments/usearch_dtypes.py --source /tmp/dense/faces.coll --items 1000000 \
        --work /tmp/usdtypes
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from dense_scale import perturbed

from lookalike.index.exact import top_k_inner
from lookalike.index.int8_rotation import Int8Rotation
from lookalike.index.usearch_index import ROTATED
from lookalike.store.collection import Collection


def rotation_path(work: Path, n: int) -> Path:
    return work / f"rotation_{n}.npz"


def graph_path(work: Path, n: int, dtype: str, m: int) -> Path:
    """Graphs of M 16 (`auto`'s) keep the name they had before M could be chosen."""
    return work / (f"graph_{n}_{dtype}.usearch" if m == 16 else f"graph_{n}_{dtype}_m{m}.usearch")


def build(work: Path, source: Path, n: int, dtypes: list[str], ms: list[int]) -> None:
    from usearch.index import Index

    vectors_path = work / f"vectors_{n}.npy"
    if not vectors_path.exists():
        base = np.asarray(Collection.open(source).require_generation().fused(), np.float32)
        np.save(vectors_path, perturbed(base, n, 0.02, seed=n))
    vectors = np.load(vectors_path, mmap_mode="r")
    for dtype in dtypes:
        for m in ms:
            path = graph_path(work, n, dtype, m)
            if path.exists():
                continue
            start = time.perf_counter()
            index = Index(
                ndim=vectors.shape[1],
                metric="ip",
                dtype="i8" if dtype == ROTATED else dtype,
                connectivity=m,
                expansion_add=200,
            )
            rows = np.ascontiguousarray(vectors)
            if dtype == ROTATED:
                rotation = Int8Rotation.fit(rows)
                rotation.save(rotation_path(work, n))
                rows = rotation.codes(rows)
            index.add(np.arange(n, dtype=np.uint64), rows)
            index.save(str(path))
            print(
                f"{dtype} M {m}: built {n} in {time.perf_counter() - start:.0f} s, "
                f"{path.stat().st_size / n:.0f} B/item",
                flush=True,
            )


def spread(work: Path, n: int, rows: int = 20_000) -> None:
    """How the vectors' components spread, as they are and turned by `Int8Rotation`: what
    usearch's own int8 cast and the rotated codes each have to represent."""
    vectors = np.asarray(np.load(work / f"vectors_{n}.npy", mmap_mode="r")[:rows], np.float32)
    turned = vectors @ Int8Rotation.fit(vectors).matrix
    print(f"| {rows} of the {n} vectors | largest std of a dim | median abs | largest abs |")
    print("|---|---:|---:|---:|")
    for name, x in (("as they are", vectors), ("rotated", turned)):
        a = np.abs(x)
        print(f"| {name} | {x.std(axis=0).max():.3f} | {np.median(a):.3f} | {a.max():.3f} |")


def measure(
    work: Path,
    n: int,
    graph: str,
    efs: list[int],
    rescores: list[int],
    queries: int,
    warm: int,
) -> list[dict]:
    from usearch.index import Index

    vectors = np.load(work / f"vectors_{n}.npy", mmap_mode="r")
    dtype, m = graph.split(":")
    index = Index.restore(
        str(graph_path(work, n, dtype, int(m))), view=True, enable_key_lookups=False
    )
    rows = np.random.default_rng(1).integers(n, size=queries + warm)
    q = np.asarray(vectors[rows])
    rotation = None
    if dtype == ROTATED:  # each query turned into codes in its timed part, as the index does
        rotation = Int8Rotation.load(rotation_path(work, n), q.shape[1])
        rescores = [r for r in rescores if r] or [20]
    truth, _ = top_k_inner(q[warm : warm + 200], vectors, 10)
    out = []
    for ef in efs:
        index.expansion_search = ef
        for rescore in rescores:
            times, found = [], []
            for i, row in enumerate(q):
                t = time.perf_counter()
                walk = row if rotation is None else rotation.codes(row[None])[0]
                keys = np.asarray(index.search(walk, max(rescore, 10), threads=1).keys)
                if rescore:
                    sims = vectors[np.sort(keys)] @ row
                    keys = np.sort(keys)[np.argsort(-sims)[:10]]
                if i >= warm:
                    times.append(time.perf_counter() - t)
                    found.append(keys[:10])
            ms = np.array(times) * 1000
            recall = np.mean(
                [
                    len(set(a) & set(b.tolist())) / 10
                    for a, b in zip(truth, found[:200], strict=True)
                ]
            )
            out.append(
                {
                    "dtype": dtype,
                    "M": int(m),
                    "ef": ef,
                    "rescore": rescore,
                    "p50_ms": round(float(np.median(ms)), 3),
                    "p99_ms": round(float(np.percentile(ms, 99)), 3),
                    "recall@10": round(float(recall), 4),
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="a committed collection")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--dtypes", nargs="+", default=["f32", "f16", "i8"])
    parser.add_argument("--ms", type=int, nargs="+", default=[16], help="graph connectivity")
    parser.add_argument("--efs", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--rescores", type=int, nargs="+", default=[0, 20, 40])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument(
        "--spread", action="store_true", help="print how the components spread, and stop"
    )
    args = parser.parse_args()
    if args.measure:
        rows = measure(
            args.work, args.items, args.measure, args.efs, args.rescores, args.queries, args.warm
        )
        print(json.dumps(rows))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    if args.spread:
        build(args.work, args.source, args.items, [], args.ms)  # the vectors only
        spread(args.work, args.items)
        return
    build(args.work, args.source, args.items, args.dtypes, args.ms)
    print("| vectors | M | ef | rescore | p50 ms | p99 ms | recall@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    graphs = [f"{dtype}:{m}" for dtype in args.dtypes for m in args.ms]
    for graph in graphs:  # a fresh process each, as a query process opens the graph
        done = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--measure", graph],
            check=True,
            capture_output=True,
            text=True,
        )
        for r in json.loads(done.stdout):
            print(
                f"| {r['dtype']} | {r['M']} | {r['ef']} | {r['rescore']} | {r['p50_ms']} | "
                f"{r['p99_ms']} | {r['recall@10']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

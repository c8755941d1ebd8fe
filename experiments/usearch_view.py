"""Query latency of a saved usearch graph memory-mapped (`view=True`) against loaded into RAM.

Builds a graph of N clustered unit vectors (256 dims, the `auto` index's settings: M 16,
ef_construction 128, ef 128; f32 unless `--dtype`), saves it, then in a fresh process per
mode opens it and times single top-10 queries (after warm-up queries): median, p99, and
recall@10 against exact inner products. Also the open time.

    python experiments/usearch_view.py --items 200000 --work /tmp/usview
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def vectors(n: int, dim: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 50, 1), dim)).astype(np.float32)
    x = centres[rng.integers(len(centres), size=n)] + 0.6 * rng.normal(size=(n, dim))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build(path: Path, n: int, dtype: str) -> None:
    from usearch.index import Index

    index = Index(ndim=256, metric="ip", dtype=dtype, connectivity=16, expansion_add=128)
    index.add(np.arange(n, dtype=np.uint64), vectors(n))
    index.save(str(path))


def measure(path: Path, n: int, view: bool, queries: int, warm: int) -> dict:
    from usearch.index import Index

    start = time.perf_counter()
    if view:
        index = Index.restore(str(path), view=True, enable_key_lookups=False)
    else:
        index = Index.restore(str(path), view=False, enable_key_lookups=False)
    opened = time.perf_counter() - start
    index.expansion_search = 128
    q = vectors(n)[np.random.default_rng(1).integers(n, size=queries + warm)]
    q = q + 0.05 * np.random.default_rng(2).normal(size=q.shape).astype(np.float32)
    times, found = [], []
    for i, row in enumerate(q):
        t = time.perf_counter()
        match = index.search(row, 10, threads=1)
        if i >= warm:
            times.append(time.perf_counter() - t)
            found.append(np.asarray(match.keys))
    ms = np.array(times) * 1000
    # recall@10 against exact inner products, on the first 200 timed queries
    exact = np.argsort(-(q[warm : warm + 200] @ vectors(n).T), axis=1)[:, :10]
    recall = np.mean(
        [len(set(a) & set(b.tolist())) / 10 for a, b in zip(exact, found[:200], strict=True)]
    )
    return {
        "view": view,
        "open_s": round(opened, 3),
        "p50_ms": round(float(np.median(ms)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "recall@10": round(float(recall), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--dtype", default="f32", choices=["f32", "f16", "i8"])
    parser.add_argument("--modes", nargs="+", default=["view", "load", "view", "load"])
    parser.add_argument("--mode", choices=["view", "load"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = args.work / f"graph_{args.items}_{args.dtype}.usearch"
    if args.mode:
        print(json.dumps(measure(path, args.items, args.mode == "view", args.queries, args.warm)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        start = time.perf_counter()
        build(path, args.items, args.dtype)
        print(f"built {args.items} in {time.perf_counter() - start:.0f} s", flush=True)
    for mode in args.modes:  # alternating by default: a noisy machine hits both
        out = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--mode", mode],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        print(out.strip(), flush=True)


if __name__ == "__main__":
    main()

"""Recall@10, speed and memory of every index backend on synthetic or real vectors.

    python benchmarks/ann_backends.py --sizes 100000 --dims 64 256 1024 2048
    python benchmarks/ann_backends.py --real COLL [COLL ...] --dims 64 256 1024 2048

For each size and dimension it builds each backend, measures build time, index
file size and RSS growth per item, recall@10 against the exact backend, batch
throughput and single-query latency, and prints a markdown table.

Synthetic vectors are Gaussian clusters (see `clustered`). With `--real`, the
committed fused vectors of the given indexed collections are stacked instead and
mapped to each `--dims` d by one seeded random Gaussian projection, then
L2-normalised (see `project`): by the Johnson-Lindenstrauss lemma such a map keeps
the pairwise distances, and so the real neighbour structure, at every d (a typical
distance moves by about 1/sqrt(2d): 9% at 64 dims, 4% at 256, under 2% at 1024 and
2048), so every d is the real data's structure, not a synthetic one. Every item
is indexed and `--queries` of them (all, by default, when there are fewer) are the
queries; a query finds itself, for the exact backend as for the others, so recall@10
still compares like with like. These rows show N as "<count> real".
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike.index import VectorIndex, create_index
from lookalike.store.collection import Collection
from lookalike.vectors import l2_normalize

CONFIGS: list[tuple[str, dict[str, object]]] = [
    ("exact", {}),
    ("annoy", {"n_trees": 50}),
    ("annoy", {"n_trees": 50, "search_k": 5000}),
    ("hnswlib", {"M": 16, "ef_construction": 200, "ef": 64}),
]
K = 10
LIBC = ctypes.CDLL("libc.so.6")


def clustered(
    n: int, dim: int, seed: int = 0, clusters: int = 1000, latent: int = 32
) -> np.ndarray:
    """Gaussian clusters in a `latent`-dimensional space, mapped linearly into `dim` dimensions.

    Real embeddings have a low intrinsic dimension; the isotropic noise is scaled by
    1/sqrt(dim) so the neighbour structure, and so the difficulty, is alike at every dim.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, latent), np.float32)
    mixing = rng.standard_normal((latent, dim), np.float32) / np.sqrt(latent)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 50_000):  # bounded temporaries at 1M x 2048
        rows = min(50_000, n - start)
        z = centres[rng.integers(clusters, size=rows)]
        z += 0.5 * rng.standard_normal((rows, latent), np.float32)
        out[start : start + rows] = z @ mixing
        out[start : start + rows] += rng.standard_normal((rows, dim), np.float32) / np.sqrt(dim)
    return out


def real_vectors(paths: list[Path]) -> np.ndarray:
    """The committed fused vectors of these indexed collections, stacked, as float32."""
    parts = []
    for path in paths:
        generation = Collection.open(path).require_generation()
        parts.append(np.asarray(generation.fused(), dtype=np.float32))
    if len({part.shape[1] for part in parts}) > 1:
        raise SystemExit(f"collections differ in fused dims: {[p.shape[1] for p in parts]}")
    return np.concatenate(parts)


def project(vectors: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """Seeded random Gaussian projection to `dim` dimensions, then L2-normalised.

    Johnson-Lindenstrauss: a Gaussian matrix scaled by 1/sqrt(dim) keeps every pairwise
    distance of N points to within a factor 1 +- O(sqrt(log N / dim)), so the real
    neighbour structure survives at any `dim`, below or above the source dimension (above
    it the data keep their intrinsic dimension; only the ambient one grows).
    """
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((vectors.shape[1], dim), np.float32) / np.sqrt(dim)
    return l2_normalize(l2_normalize(vectors) @ matrix)


def rss_bytes() -> int:
    """Resident memory after handing freed heap back, so it counts live memory only."""
    gc.collect()
    LIBC.malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(ids, truth, strict=True)])
    )


def latencies_ms(index: VectorIndex, queries: np.ndarray) -> np.ndarray:
    times = []
    for row in range(len(queries)):
        start = time.perf_counter()
        index.query(queries[row : row + 1], K)
        times.append(time.perf_counter() - start)
    return np.array(times) * 1000


def run_one(
    name: str, params: dict[str, object], items: np.ndarray, queries: np.ndarray, n_latency: int
) -> tuple[dict[str, float], np.ndarray]:
    rss_before = rss_bytes()
    index = create_index(name, **params)
    start = time.perf_counter()
    index.build(items)
    build_s = time.perf_counter() - start
    rss_delta = rss_bytes() - rss_before

    start = time.perf_counter()
    ids, _ = index.query(queries, K)
    batch_s = time.perf_counter() - start
    lat = latencies_ms(index, queries[:n_latency])

    with tempfile.TemporaryDirectory() as tmp:
        index.save(Path(tmp))
        file_bytes = folder_bytes(Path(tmp))
    n = len(items)
    row = {
        "build_s": build_s,
        "qps": len(queries) / batch_s,
        "p50": float(np.median(lat)),
        "p99": float(np.percentile(lat, 99)),
        "file_b": file_bytes / n,
        "rss_b": rss_delta / n,
    }
    return row, ids


def faiss_params(spec: str) -> dict[str, object]:
    """'IVF4096,Flat:nprobe=64' -> factory plus query knobs (nprobe, efSearch) as ints."""
    factory, *knobs = spec.split(":")
    params: dict[str, object] = {"factory": factory}
    for knob in knobs:
        key, _, value = knob.partition("=")
        params[key] = int(value)
    return params


def bench(label: str, items: np.ndarray, queries: np.ndarray, args: argparse.Namespace) -> None:
    """Run every wanted backend on these items and queries; print one table row each."""
    wanted = None if args.backends is None else {"exact", *args.backends}
    n, dim = items.shape
    nlist = 2 ** round(np.log2(4 * np.sqrt(n)))
    faiss = [("faiss", faiss_params(f.format(nlist=nlist))) for f in args.faiss]
    truth = None
    for name, params in CONFIGS + faiss:
        if wanted is not None and name not in wanted:
            continue
        row, ids = run_one(name, params, items, queries, args.latency_queries)
        truth = ids if truth is None else truth  # exact runs first
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        print(
            f"| {label} | {dim} | {name} | {shown} | {row['build_s']:.1f} "
            f"| {recall(ids, truth):.3f} | {row['qps']:.0f} | {row['p50']:.2f} "
            f"| {row['p99']:.2f} | {row['file_b']:.0f} | {row['rss_b']:.0f} |",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 256, 1024, 2048])
    parser.add_argument("--queries", type=int, default=1000, help="batch queries for recall, q/s")
    parser.add_argument("--latency-queries", type=int, default=300, help="single queries timed")
    parser.add_argument(
        "--backends", nargs="+", default=None, help="only these backend names (exact always runs)"
    )
    parser.add_argument(
        "--faiss",
        nargs="*",
        default=["HNSW32"],
        help="FAISS factory strings; IVF<n> may be written IVF{nlist} for about 4*sqrt(N) "
        "lists; query knobs may follow, e.g. 'IVF{nlist},Flat:nprobe=64'",
    )
    parser.add_argument(
        "--real",
        type=Path,
        nargs="+",
        default=None,
        metavar="COLL",
        help="indexed collections: benchmark on their fused vectors (randomly projected to "
        "each --dims) instead of synthetic ones; --sizes is then ignored",
    )
    args = parser.parse_args(argv)

    print(
        "| N | dim | backend | params | build s | recall@10 | batch q/s | p50 ms | p99 ms "
        "| file B/item | RSS B/item |"
    )
    print("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
    if args.real is not None:
        source = real_vectors(args.real)
        n = len(source)
        rows = np.sort(np.random.default_rng(1).permutation(n)[: args.queries])
        for dim in args.dims:
            items = project(source, dim)
            bench(f"{n} real", items, items[rows], args)
            del items
        return
    for n in args.sizes:
        for dim in args.dims:
            data = clustered(n + args.queries, dim)
            bench(str(n), data[:n], data[n:], args)
            del data  # free before the next dim's data is made


if __name__ == "__main__":
    main()

"""Recall and latency of a collection's HNSW graph at several `ef` (the query knob of the
`auto` and `hnswlib` indexes), through the real `Searcher`.

Run it on a collection grown by `dense_scale.py --keep` (or any collection whose `auto`
index chose hnswlib). Recall@10 is against exact search over the stored fused vectors, on
`--queries` stored items; latency is one top-10 `Searcher.query` of a stored item (p50,
p99) and the index's own query alone.

    python benchmarks/hnsw_ef.py /tmp/dense/keep1m/n1000000 --ef 64 96 128 192
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from dense_scale import percentiles, recall_at_10

from lookalike.search.searcher import Searcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection")
    parser.add_argument("--ef", type=int, nargs="+", default=[64, 96, 128, 192])
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # grown collections have no per-block sources to warn of
    searcher = Searcher(args.collection)
    rows = np.random.default_rng(1).choice(len(searcher.ids), args.queries, replace=False)
    ids = searcher.ids[rows[:300]]
    print("| ef | recall@10 | Searcher p50 ms | p99 ms | index alone p50 ms | p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    for ef in args.ef:
        searcher.index.set_query_params(ef=ef)
        recall = recall_at_10(searcher, rows)
        searcher.query(str(ids[0]), k=10)  # warm
        full, alone = [], []
        for item_id in ids:
            start = time.perf_counter()
            searcher.query(str(item_id), k=10)
            full.append(time.perf_counter() - start)
        for vector in np.asarray(searcher.fused[rows[:300]]):
            start = time.perf_counter()
            searcher.index.query(vector[None], 10)
            alone.append(time.perf_counter() - start)
        (p50, p99), (a50, a99) = percentiles(full), percentiles(alone)
        print(
            f"| {ef} | {recall:.4f} | {p50:.2f} | {p99:.2f} | {a50:.3f} | {a99:.3f} |", flush=True
        )


if __name__ == "__main__":
    main()

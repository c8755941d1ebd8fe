"""Where a stored-item query's time goes, on a committed collection, in one warm process.

    OMP_NUM_THREADS=1 python benchmarks/query_cost.py COLL [--queries 300] [--profile]

Top-10 queries of stored items (a fixed random sample), each step timed over the same
items after warm-up queries, in this order, alternating rounds so a change of the
machine's load falls on all of them:

- `index.query`: the collection's index alone (for `auto`'s graph: the walk and its exact
  re-scoring);
- `Searcher.search_vector`: the ranking around it (candidates, catalog rows of the results,
  per-view scores and P(same) where the collection has feature blocks);
- `Searcher.query`: what `lookalike query COLL ID` and the web page run (the stored item's
  row and blocks, then the above).

With `--profile`, the functions that took the most time in `Searcher.query` (cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lookalike.search.searcher import Searcher


def per_call_ms(step: Callable[[int], object], items: np.ndarray) -> float:
    start = time.perf_counter()
    for item in items:
        step(int(item))
    return (time.perf_counter() - start) / len(items) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    # Collections grown by dense_scale.py have no feature blocks: one warning a query.
    logging.disable(logging.WARNING)
    searcher = Searcher(args.collection)
    rng = np.random.default_rng(0)
    items = searcher.ids[rng.choice(len(searcher.ids), min(args.queries, len(searcher.ids)))]
    asks = {int(i): searcher.stored_query(int(i)) for i in items}

    steps: dict[str, Callable[[int], object]] = {
        "index.query": lambda i: searcher.index.query(asks[i].vector[None, :], 11),
        "Searcher.search_vector": lambda i: searcher.search_vector(
            asks[i].vector, 10, {i}, views=asks[i].views, wide=asks[i].wide
        ),
        "Searcher.query": lambda i: searcher.query(str(i), k=10),
    }
    for step in steps.values():  # warm: pages of the files, caches of the catalog
        per_call_ms(step, items[:50])
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(per_call_ms(step, items))
    print(
        f"{args.collection}: {len(searcher.ids)} items, {len(items)} stored-item queries, "
        f"median of {args.rounds} rounds"
    )
    print("| step | mean ms a query |\n|---|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} |")
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        for item in items:
            searcher.query(str(int(item)), k=10)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()

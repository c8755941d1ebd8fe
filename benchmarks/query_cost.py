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

With `--baseline REF`, this code against the `src/` of commit REF (`git archive`, as
`cold_query.py` takes it) on the same collection: each round runs one warm process of each
code in turn (the steps above, measured as one round), so a change of the machine's load
falls on both; printed are each code's medians and this code's ratio to the baseline's.

    OMP_NUM_THREADS=1 python benchmarks/query_cost.py COLL --baseline fca9cfc --rounds 5
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cold_query import REPO, baseline_source

from lookalike.search.searcher import Searcher


def per_call_ms(step: Callable[[int], object], items: np.ndarray) -> float:
    start = time.perf_counter()
    for item in items:
        step(int(item))
    return (time.perf_counter() - start) / len(items) * 1000


def opened(collection: Path, queries: int) -> tuple[Searcher, np.ndarray]:
    """The collection's Searcher and the stored items it is asked about (a fixed sample)."""
    # Collections grown by dense_scale.py have no feature blocks: one warning a query.
    logging.disable(logging.WARNING)
    searcher = Searcher(collection)
    rng = np.random.default_rng(0)
    return searcher, searcher.ids[rng.choice(len(searcher.ids), min(queries, len(searcher.ids)))]


def step_times(searcher: Searcher, items: np.ndarray, rounds: int) -> dict[str, list[float]]:
    """Mean ms a query of each step, one figure per round, in this (warm) process."""
    asks = {int(i): searcher.stored_query(int(i)) for i in items}

    def search_vector(i: int) -> object:
        ask = asks[i]
        if hasattr(ask, "features"):  # since the coded scores (a baseline may be older)
            return searcher.search_vector(ask.vector, 10, {i}, ask.features)
        return searcher.search_vector(ask.vector, 10, {i}, views=ask.views, wide=ask.wide)

    steps: dict[str, Callable[[int], object]] = {
        "index.query": lambda i: searcher.index.query(asks[i].vector[None, :], 11),
        "Searcher.search_vector": search_vector,
        "Searcher.query": lambda i: searcher.query(str(i), k=10),
    }
    for step in steps.values():  # warm: pages of the files, caches of the catalog
        per_call_ms(step, items[:50])
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].append(per_call_ms(step, items))
    return times


def against_baseline(collection: Path, queries: int, rounds: int, ref: str) -> None:
    """Each round: one process of this code, then one of REF's, each measuring one round."""
    with tempfile.TemporaryDirectory() as tmp:
        codes = {"this code": REPO / "src", ref: baseline_source(ref, Path(tmp) / "base")}
        times: dict[str, dict[str, list[float]]] = {code: {} for code in codes}
        for _ in range(rounds):
            for code, src in codes.items():
                env = {**os.environ, "PYTHONPATH": str(src)}
                cmd = [sys.executable, __file__, str(collection), "--queries", str(queries)]
                done = subprocess.run(
                    [*cmd, "--rounds", "1", "--json"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                for name, values in json.loads(done.stdout).items():
                    times[code].setdefault(name, []).extend(values)
    print(f"{collection}: {queries} stored-item queries, median of {rounds} rounds a code")
    print(f"| step | this code ms | {ref} ms | ratio |\n|---|---:|---:|---:|")
    for name in times["this code"]:
        mine, base = (statistics.median(times[c][name]) for c in codes)
        print(f"| {name} | {mine:.2f} | {base:.2f} | {mine / base:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--baseline", help="a commit to compare with, in alternating processes")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        against_baseline(args.collection, args.queries, args.rounds, args.baseline)
        return
    searcher, items = opened(args.collection, args.queries)
    times = step_times(searcher, items, args.rounds)
    if args.json:
        print(json.dumps(times))
        return
    print(f"{args.collection}: {args.queries} stored-item queries, median of {args.rounds} rounds")
    print("| step | mean ms a query |\n|---|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} |")
    if args.profile:  # the warm searcher, the same items
        profile = cProfile.Profile()
        profile.enable()
        for item in items:
            searcher.query(str(int(item)), k=10)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()

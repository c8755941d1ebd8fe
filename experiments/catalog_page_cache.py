"""A stored-item query with the catalog read three ways: SQLite's default page cache (2 MB,
what `Catalog` keeps), a 64 MB one, and SQLite's memory map (`PRAGMA mmap_size`; besides,
a reader that maps the file crashes on an I/O error or when a writer shrinks the file).

Three `Searcher`s on one collection in one process, each given one setting; warm-up
queries, then top-10 queries of stored items not asked before, the settings in turn, so a
change of the machine's speed falls on all three. At a million items the results' catalog
rows lie on pages all over the file (benchmarks/README.md, "Where issue 16 stands").

    OMP_NUM_THREADS=1 python experiments/catalog_page_cache.py /tmp/scale/n1000000
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from lookalike.search.searcher import Searcher

SETTINGS = {
    "SQLite's 2 MB (Catalog's)": "PRAGMA cache_size=-2000",
    "64 MB": "PRAGMA cache_size=-65536",
    "memory map": "PRAGMA mmap_size=1073741824",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--warm", type=int, default=3000, help="warm-up queries, all settings")
    parser.add_argument("--queries", type=int, default=400, help="timed queries a setting")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    searchers = {}
    for name, pragma in SETTINGS.items():
        searchers[name] = Searcher(args.collection)
        searchers[name].collection.catalog._db.execute(pragma)
    ids = next(iter(searchers.values())).ids
    rows = np.random.default_rng(args.seed).choice(
        len(ids), args.warm + args.queries * len(SETTINGS), replace=False
    )
    names = list(SETTINGS)
    for n, row in enumerate(rows[: args.warm]):
        searchers[names[n % len(names)]].query(str(int(ids[row])), k=10)
    times: dict[str, list[float]] = {name: [] for name in names}
    for n, row in enumerate(rows[args.warm :]):
        name = names[n % len(names)]
        start = time.perf_counter()
        searchers[name].query(str(int(ids[row])), k=10)
        times[name].append(time.perf_counter() - start)
    print("| catalog pages | query p50 ms |")
    print("|---|---:|")
    for name, spent in times.items():
        print(f"| {name} | {np.median(spent) * 1000:.3f} |")


if __name__ == "__main__":
    main()

"""Character groups (issue 19): adjusted Rand index and purity of `lookalike groups`
against the folder labels (or a labels CSV column), on indexed collections.

The clustering sees the stored fused vectors only; labels only measure. ARI and purity
are over every labelled picture (those of groups smaller than --min-size included, each
in its own small group: what the clustering said about them).

    lookalike index ../shared/datasets/anime-faces-dev -c /tmp/anime.coll
    lookalike index ../shared/datasets/anime-full-dev -c /tmp/full.coll
    lookalike index ../shared/datasets/orl-faces-dev -c /tmp/orl.coll --preset photo
    lookalike demo --out /tmp/demo
    python benchmarks/groups.py anime-faces-dev=/tmp/anime.coll anime-full-dev=/tmp/full.coll \
        orl-faces-dev=/tmp/orl.coll sample=/tmp/demo/collection:/tmp/demo/sample/labels.csv
    python benchmarks/groups.py --neighbours 5,7,10,14,20,28,40 ...   # another set of counts
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lookalike.evaluate.group_metrics import adjusted_rand_index, purity
from lookalike.groups.clusters import NEIGHBOURS, cluster
from lookalike.load.labels import load_labels
from lookalike.store.collection import Collection


def measure(spec: str, neighbours: tuple[int, ...]) -> list[str]:
    name, _, rest = spec.partition("=")
    path, _, labels_spec = rest.partition(":")
    coll = Collection.open(path)
    gen = coll.require_generation()
    records = coll.catalog.get_many(gen.ids.tolist())
    paths = [records[i].path for i in gen.ids.tolist()]
    labels = load_labels(labels_spec or "folders", paths).column(None)
    start = time.perf_counter()
    found = cluster(np.asarray(gen.fused(), dtype=np.float32), neighbour_counts=neighbours)
    seconds = time.perf_counter() - start
    rows = [i for i, p in enumerate(paths) if labels.get(p)]
    groups = found.assign[rows]
    truth = [labels[paths[i]] for i in rows]
    return [
        name,
        coll.config.preset,
        str(len(rows)),
        str(len(set(truth))),
        str(len(np.unique(found.assign))),
        str(found.neighbours),
        f"{adjusted_rand_index(groups, truth):.3f}",
        f"{purity(groups, truth):.3f}",
        f"{seconds:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sets", nargs="+", help="NAME=COLL or NAME=COLL:LABELS.csv")
    parser.add_argument("--neighbours", default=",".join(map(str, NEIGHBOURS)))
    args = parser.parse_args()
    neighbours = tuple(int(v) for v in args.neighbours.split(","))
    header = ["set", "preset", "pictures", "labels", "groups", "neighbours", "ARI", "purity", "s"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for spec in args.sets:
        print("| " + " | ".join(measure(spec, neighbours)) + " |", flush=True)


if __name__ == "__main__":
    main()

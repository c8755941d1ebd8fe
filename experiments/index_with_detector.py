"""Index a folder with `default` and other animeface options, to score them with `evaluate`.

`lookalike index` exposes only `--detector-size`; this sets any of the detector's options
(`sizes`, `upper`, `angles`, `min_score`) as JSON, in place of the preset's, then
`lookalike evaluate COLL --labels folders` scores the collection:

    python experiments/index_with_detector.py ../shared/datasets/anime-full-dev /tmp/x/a.coll \
        '{"sizes": [384, 768], "upper": 0.6}'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lookalike.config import get_preset
from lookalike.indexing.indexer import Indexer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("collection", type=Path)
    ap.add_argument("options", type=json.loads, help="the detector options, JSON")
    args = ap.parse_args()
    config = get_preset("default").with_options(detector_options=args.options)
    summary = Indexer(args.folder, args.collection, config, progress=False, processes=True).run()
    print(f"{summary.total_indexed} pictures indexed into {args.collection}")


if __name__ == "__main__":
    main()

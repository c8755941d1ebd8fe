"""What the full-picture work costs at index time: CPU per picture, as a ratio in one run.

    python benchmarks/full_picture_cost.py ../shared/datasets/anime-full-dev --pictures 120

Indexes the same pictures (a fixed sample of the folder, every sub-folder in turn) into a
fresh collection with each setting, in this process (`processes=False`, so the process
CPU time is all of it), settings alternating `--repeats` times; prints the median CPU
seconds per picture of each and its ratio to the first:

- before: the settings of before issue 14 (animeface on a 384 px copy only, top-centre
  fallback square, the first face only: face items switched off for this row);
- cascade: the detector cascade (384 then 768) alone;
- default: today's `default` (cascade, salient fallback, every face searchable);
- upper 0.6: `default` with the 768 px copy searched in its top 60% only;
- turned +-45: `default` with the 384 px copy turned by 45 and -45 degrees where no copy
  finds a face (the animeface options `upper` and `angles`, benchmarks/quality.md).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

from lookalike.config import PipelineConfig, get_preset
from lookalike.indexing import indexer
from lookalike.indexing.indexer import Indexer
from lookalike.load.images import iter_image_files
from lookalike.store.faces import FaceItems, head_keys


def sample(folder: Path, n: int) -> list[Path]:
    """n pictures, taken from each sub-folder in turn (sorted, so the same every run)."""
    by_folder: dict[str, list[Path]] = {}
    for path in sorted(iter_image_files(folder)):
        by_folder.setdefault(path.parent.name, []).append(path)
    out: list[Path] = []
    while len(out) < n and any(by_folder.values()):
        for paths in by_folder.values():
            if paths and len(out) < n:
                out.append(paths.pop(0))
    return out


@contextlib.contextmanager
def first_face_only(config: PipelineConfig) -> Iterator[None]:
    """The code before face items: a commit computes none."""
    keys = head_keys(config.block_keys)
    with mock.patch.object(indexer, "compute_face_items", lambda *a, **k: FaceItems.empty(keys)):
        yield


def settings() -> dict[str, tuple[PipelineConfig, bool]]:
    base = get_preset("default")
    return {
        "before": (base.with_options(detector_options={"sizes": [384]}, fallback="top"), False),
        "cascade": (base.with_options(fallback="top"), False),
        "default": (base, True),
        "upper 0.6": (base.with_options(detector_options={"upper": 0.6}), True),
        "turned +-45": (base.with_options(detector_options={"angles": [45, -45]}), True),
    }


def cpu_per_picture(root: Path, config: PipelineConfig, faces: bool, work: Path) -> float:
    coll = work / "coll"
    shutil.rmtree(coll, ignore_errors=True)
    run = Indexer(root, coll, config, progress=False, processes=False)
    patch = contextlib.nullcontext() if faces else first_face_only(config)
    start = time.process_time()
    with patch:
        summary = run.run()
    return (time.process_time() - start) / summary.total_indexed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="a folder of full pictures (anime-full-dev)")
    ap.add_argument("--pictures", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = work / "pictures"
        for i, path in enumerate(sample(args.folder, args.pictures)):
            target = root / path.parent.name / f"{i:04d}{path.suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
        named = settings()
        # One warm-up run loads the backbone, its ONNX export and the detector.
        cpu_per_picture(root, *named["default"], work)
        times: dict[str, list[float]] = {name: [] for name in named}
        for _ in range(args.repeats):
            for name, (config, faces) in named.items():
                times[name].append(cpu_per_picture(root, config, faces, work))
    base = statistics.median(times["before"])
    print(f"{args.pictures} pictures of {args.folder}, {args.repeats} repeats, median CPU")
    print("| setting | CPU ms / picture | ratio to before |")
    print("| --- | ---: | ---: |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {1000 * median:.0f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()

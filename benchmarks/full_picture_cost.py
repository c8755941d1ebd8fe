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

`--baseline COMMIT` measures instead what a user runs: `lookalike index FOLDER -c COLL` in a
new process, this code's and COMMIT's (checked out with `git worktree` into the temporary
folder, run on this environment's packages), alternating. The CPU of each command is its
process's and its children's; the CPU a picture costs is the difference between the
commands on all the pictures and on the first third of them, divided by the pictures
between, so the start-up (imports, loading the weights) is not counted as pictures.

    python benchmarks/full_picture_cost.py ../shared/datasets/anime-full-dev --pictures 120 \
        --baseline d7294a5     # the code when issue 14 was filed
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
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


def command_cpu(src: Path, root: Path, coll: Path) -> float:
    """CPU seconds of `lookalike index ROOT -c COLL` (a new collection) on the code in `src`."""
    shutil.rmtree(coll, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(src)}
    # Both codes' entry points: the baseline's may predate `lookalike/__main__.py`.
    run = "import sys; from lookalike.cli import main; sys.exit(main())"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [sys.executable, "-c", run, "index", str(root), "-c", str(coll)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def against_baseline(pictures: list[Path], commit: str, repeats: int, work: Path) -> None:
    """CPU per picture of `lookalike index`, this code's against `commit`'s (module doc)."""
    repo = Path(__file__).resolve().parents[1]
    old = work / "baseline"
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "--detach", str(old), commit],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        codes = {"this code": repo / "src", commit: old / "src"}
        small = len(pictures) // 3
        roots = {
            n: link_sample(pictures[:n], work / f"pictures{n}") for n in (small, len(pictures))
        }
        for src in codes.values():  # warm-up: each code's ONNX export and caches
            command_cpu(src, roots[small], work / "coll")
        per_picture: dict[str, list[float]] = {name: [] for name in codes}
        for _ in range(repeats):
            for name, src in codes.items():
                cpu = {n: command_cpu(src, root, work / "coll") for n, root in roots.items()}
                per_picture[name].append(
                    (cpu[len(pictures)] - cpu[small]) / (len(pictures) - small)
                )
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(old)])
    base = statistics.median(per_picture[commit])
    print(f"`lookalike index`, {small} and {len(pictures)} pictures, {repeats} repeats, median")
    print(f"| code | CPU ms / picture (each run) | ratio to {commit} |")
    print("| --- | ---: | ---: |")
    for name, values in per_picture.items():
        runs = ", ".join(f"{1000 * v:.0f}" for v in values)
        print(
            f"| {name} | {1000 * statistics.median(values):.0f} ({runs}) | "
            f"{statistics.median(values) / base:.2f} |"
        )


def link_sample(pictures: list[Path], root: Path) -> Path:
    """`pictures` linked into `root`, in folders named as theirs (the labels)."""
    for i, path in enumerate(pictures):
        target = root / path.parent.name / f"{i:04d}{path.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path.resolve())
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="a folder of full pictures (anime-full-dev)")
    ap.add_argument("--pictures", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", help="a commit: `lookalike index` of it against this code's")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pictures = sample(args.folder, args.pictures)
        if args.baseline:
            against_baseline(pictures, args.baseline, args.repeats, work)
            return
        root = link_sample(pictures, work / "pictures")
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

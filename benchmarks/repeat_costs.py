"""What a repeat costs: a no-op `index` and a second `evaluate`, as ratios in one run.

    python benchmarks/repeat_costs.py [--folder ../shared/datasets/anime-full-dev]
                                      [--repeats 3] [--baseline 474381b]

Every step is a `python -m lookalike ...` process of its own, as a user runs it: the wall
time around it (start-up included) and its CPU time (user + system, from the child's
rusage, which a busy machine inflates less). The folder is indexed once (the `default`
preset, real weights); then

  * no-op `index` of the unchanged folder, with the user's cache (ONNX export made) and
    with an empty cache folder (a first run after installing: no export yet), by this
    code and by the baseline commit's (`git archive` of its src/, on the same collection;
    the two alternate, so a change of the machine's load falls on both);
  * `evaluate --labels folders` (the default comparison, v1..default), `--repeats` times
    each: with the cache the index run left, with the collection's cache/ removed (every
    compared block computed from the images: what a first evaluate cost before), and
    right after that one again. Medians; BLAS on one thread (see ONE_THREAD); the
    pictures each run decoded, from its log.

The load average before and after is printed: read ratios and CPU seconds on a shared
machine rather than wall seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / ".." / "shared" / "datasets"


# `lookalike ARGS` with blockstore's log lines on stderr (how many pictures it decoded).
LOGGED = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
from lookalike.cli import run
sys.argv = ["lookalike", *sys.argv[1:]]
raise SystemExit(run())
"""
# A shared machine makes multi-threaded BLAS swing several-fold (the fits of evaluate are
# SVDs): one thread each, so that the evaluate ratios show the decoding they save.
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def decoded(stderr: str) -> int:
    """Pictures evaluate decoded, from blockstore's log line."""
    found = re.search(r"computing .* for (\d+) of \d+ pictures", stderr)
    return int(found.group(1)) if found else 0


def timed(
    args: list[str], src: Path, env: dict[str, str] | None = None, counts: list[int] | None = None
) -> tuple[float, float]:
    """(wall, cpu) seconds of `python -m lookalike ARGS` run with `src` on the path; with
    `counts`, run with logging on, and the pictures it decoded are appended to it."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(src)}
    how = ["-m", "lookalike"] if counts is None else ["-c", LOGGED]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *how, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):  # 1: finished, some files skipped
        sys.exit(f"lookalike {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if counts is not None:
        counts.append(decoded(done.stderr))
    return wall, cpu


def baseline_src(commit: str, into: Path) -> Path:
    """The baseline commit's src/ (no worktree: `git archive`)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "src"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def median(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def row(name: str, value: tuple[float, float], base: tuple[float, float] | None = None) -> str:
    ratio = f" | {value[0] / base[0]:.3f} | {value[1] / base[1]:.3f}" if base else " | | "
    return f"| {name} | {value[0]:.2f} | {value[1]:.2f}{ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=DATASETS / "anime-full-dev")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default="474381b", help="commit to compare the no-op with")
    args = parser.parse_args()
    if not args.folder.is_dir():
        sys.exit(f"{args.folder}: not a folder (needs ../shared/datasets)")
    src = REPO / "src"
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = baseline_src(args.baseline, work)
        coll = work / "coll"
        index = ["index", str(args.folder), "-c", str(coll), "-q"]
        first = timed(index, src)
        print(f"first index ({args.folder.name}): {first[0]:.1f} s wall, {first[1]:.1f} s CPU")

        noop: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for i in range(args.repeats):
            for code, path in (("this code", src), (f"baseline {args.baseline}", base)):
                noop.setdefault((code, "user cache"), []).append(timed(index, path))
                empty = {"LOOKALIKE_CACHE_DIR": str(work / f"empty-cache-{code[0]}{i}")}
                noop.setdefault((code, "empty cache"), []).append(timed(index, path, empty))

        evaluate = ["evaluate", str(coll), "--labels", "folders", "-q"]
        left_by_index = work / "cache-left-by-index"
        shutil.copytree(coll / "cache", left_by_index)
        runs: dict[str, list[tuple[float, float]]] = {}
        counts: dict[str, list[int]] = {}

        def evaluated(name: str) -> None:
            seconds = timed(evaluate, src, ONE_THREAD, counts.setdefault(name, []))
            runs.setdefault(name, []).append(seconds)

        for _ in range(args.repeats):
            shutil.rmtree(coll / "cache")
            shutil.copytree(left_by_index, coll / "cache")
            evaluated("after index")
            shutil.rmtree(coll / "cache")
            evaluated("uncached")
            evaluated("again")
        after_index, uncached, second = (median(runs[k]) for k in runs)

    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print()
    print("| run | wall s | CPU s | wall ratio | CPU ratio |")
    print("| --- | --- | --- | --- | --- |")
    print(row("first index (the baseline of the no-op ratios)", first))
    for (code, cache), pairs in noop.items():
        print(row(f"no-op index, {cache}, {code} (median of {len(pairs)})", median(pairs), first))
    label = {
        "uncached": "evaluate, nothing cached (the baseline of the evaluate ratios)",
        "after index": "evaluate right after index (the cache it left)",
        "again": "evaluate again (after one that computed and cached)",
    }
    for name in ("uncached", "after index", "again"):
        value = {"uncached": uncached, "after index": after_index, "again": second}[name]
        pictures = f", decoded {'/'.join(map(str, counts[name]))} pictures"
        print(row(label[name] + pictures, value, None if name == "uncached" else uncached))


if __name__ == "__main__":
    main()

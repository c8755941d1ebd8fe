"""Cold query time: `lookalike query COLL PICTURE` in a new process, with a picture from
outside the collection, this code against the code of a baseline commit, in one run.

    python benchmarks/cold_query.py [--pictures 40] [--repeats 7] [--baseline 5014312]

The baseline's `src/` is taken from git (`git archive`, no worktree), and each code
indexes the same folder (the first pictures of anime-faces-dev, a few per character)
into a collection of its own, so neither reads the other's format. Both then run with
the same fresh cache folder (ONNX exports) and a bytecode cache of their own (what an
installed package has); one untimed query each fills them (the export is made then).
The timed queries alternate between the two codes, so a change of the machine's load
falls on both. Each is a new `python -m lookalike query ... --json` process: the wall
time around it, and its CPU time (user + system, from the child's rusage), which a busy
machine inflates less. The answers of the two are compared too (same ids in the same
order). The load average before and after is printed: on a shared machine, read the
ratio and the CPU seconds rather than the wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
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

# Where one cold query's time goes, step by step, in a new process of this code.
STAGES = """
import sys, time
clocks = [(time.perf_counter(), time.process_time())]
def step(name):
    clocks.append((time.perf_counter(), time.process_time()))
    (w0, c0), (w1, c1) = clocks[-2:]
    print(f"{name}\t{w1 - w0:.3f}\t{c1 - c0:.3f}")
import lookalike.cli, lookalike.search.searcher
step("imports (cli, search: numpy, PIL, OpenCV, annoy)")
searcher = lookalike.search.searcher.Searcher(sys.argv[1])
step("open the collection (catalog, vectors, index, fuser)")
searcher.extractor.backbone
step("backbone (ONNX Runtime session, or torch)")
searcher.extractor.detector
step("detector (animeface)")
searcher.query(sys.argv[2], k=4)
step("the query: decode, detect, embed both views, fuse, search")
"""


def pick_pictures(source: Path, count: int, into: Path) -> Path:
    """`count` pictures, a few of each character in turn, linked into `into`."""
    characters = sorted(p for p in source.iterdir() if p.is_dir())
    files = [sorted(c.glob("*.jpg")) for c in characters]
    picked = 0
    for rank in range(max(len(f) for f in files)):
        for character, pictures in zip(characters, files, strict=True):
            if picked == count or rank >= len(pictures):
                continue
            (into / character.name).mkdir(parents=True, exist_ok=True)
            (into / character.name / pictures[rank].name).symlink_to(pictures[rank].resolve())
            picked += 1
    return into


def baseline_source(ref: str, into: Path) -> Path:
    """The `src/` folder of commit `ref`, extracted from git."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


class Code:
    """One version of the package: its source folder and the environment it runs in."""

    def __init__(self, name: str, tag: str, src: Path, work: Path, cache: Path) -> None:
        self.name = name
        self.coll = work / f"coll-{tag}"
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            "PYTHONPATH": str(src),
            "PYTHONPYCACHEPREFIX": str(work / f"pycache-{tag}"),
            "LOOKALIKE_CACHE_DIR": str(cache),
        }
        self.env.pop("LOOKALIKE_RUNTIME", None)
        self.walls: list[float] = []
        self.cpus: list[float] = []
        self.answer: list[int] = []

    def lookalike(self, *args: str) -> tuple[str, float, float]:
        """Run the CLI in a new process: (stdout, wall seconds, CPU seconds)."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "lookalike", *args],
            capture_output=True,
            text=True,
            env=self.env,
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode not in (0, 1):  # 1: indexed, some files skipped
            sys.exit(f"{self.name}: lookalike {' '.join(args)} failed:\n{done.stderr}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return done.stdout, wall, cpu

    def stages(self, picture: Path) -> list[tuple[str, float, float]]:
        """(step, wall s, CPU s) of one cold query in a new process (see STAGES)."""
        done = subprocess.run(
            [sys.executable, "-c", STAGES, str(self.coll), str(picture)],
            capture_output=True,
            text=True,
            env=self.env,
            check=True,
        )
        rows = [line.split("\t") for line in done.stdout.splitlines()]
        return [(name, float(wall), float(cpu)) for name, wall, cpu in rows]

    def query(self, picture: Path, record: bool) -> None:
        out, wall, cpu = self.lookalike("query", str(self.coll), str(picture), "--json")
        self.answer = [r["id"] for r in json.loads(out)["results"]]
        if record:
            self.walls.append(wall)
            self.cpus.append(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pictures", type=int, default=40, help="pictures in the collection")
    parser.add_argument("--repeats", type=int, default=7, help="timed queries per code")
    parser.add_argument("--baseline", default="5014312", help="git commit to compare with")
    parser.add_argument(
        "--query", type=Path, default=DATASETS / "seed-cards" / "saber1.jpg", help="the picture"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cold-query-"))
    try:
        pictures = pick_pictures(DATASETS / "anime-faces-dev", args.pictures, work / "pictures")
        cache = work / "cache"
        old_src = baseline_source(args.baseline, work / "baseline")
        codes = [
            Code(f"baseline {args.baseline}", "baseline", old_src, work, cache),
            Code("this code", "new", REPO / "src", work, cache),
        ]
        for code in codes:
            code.lookalike("index", str(pictures), "--collection", str(code.coll), "-q")
            code.query(args.query, record=False)  # fills the caches (exports the model)
        load_before = os.getloadavg()
        for _ in range(args.repeats):
            for code in codes:
                code.query(args.query, record=True)
        load_after = os.getloadavg()
        report(codes, args, load_before, load_after)
        print_stages(codes[1], args.query)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(
    codes: list[Code],
    args: argparse.Namespace,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    base, new = codes
    print(
        f"cold query of {args.query.name} (outside the collection) against {args.pictures} "
        f"pictures, {args.repeats} new processes per code, {os.cpu_count()} cores"
    )
    print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}\n")
    print("| code | wall s, median | wall s, min | CPU s, median | CPU s, min |")
    print("|---|---:|---:|---:|---:|")
    for code in codes:
        print(
            f"| {code.name} | {statistics.median(code.walls):.2f} | {min(code.walls):.2f} "
            f"| {statistics.median(code.cpus):.2f} | {min(code.cpus):.2f} |"
        )
    wall_ratio = statistics.median(base.walls) / statistics.median(new.walls)
    cpu_ratio = statistics.median(base.cpus) / statistics.median(new.cpus)
    print(f"\nbaseline / this code: wall {wall_ratio:.1f}x, CPU {cpu_ratio:.1f}x (medians)")
    print(f"same answer (ids in order): {'yes' if base.answer == new.answer else 'NO'}")


def print_stages(code: Code, picture: Path) -> None:
    print(f"\n{code.name}, one cold query step by step (python -c, timed inside the process):\n")
    print("| step | wall s | CPU s |")
    print("|---|---:|---:|")
    for name, wall, cpu in code.stages(picture):
        print(f"| {name} | {wall:.3f} | {cpu:.3f} |")


if __name__ == "__main__":
    main()

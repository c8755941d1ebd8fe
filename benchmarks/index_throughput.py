"""Indexing throughput: the naive one-image-at-a-time loop against the real `index` path.

    python benchmarks/index_throughput.py --anime 80 --demo 80 --repeats 2

Both run in this process on the same images (anime-faces-dev read in place through
links, plus the built-in demo sample at 384 px drawn into a temporary folder):

- naive: per image, decode, detect (animeface), embed the whole image and the head
  crop with eager PyTorch EfficientNet-Lite0 at batch 1, colour descriptors, and the
  vectors saved at the end;
- real: `lookalike.indexing.indexer.Indexer` with the default preset writing a real collection.

They alternate `--repeats` times (the machine is shared, so absolute numbers are noisy)
and the medians and their ratio are printed. Then the ways tried, each a table row,
the hardware limit (backbone FLOPs over a measured float32 matmul rate) and the peak
memory of `index` at two collection sizes (each in a fresh process).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from lookalike.config import get_preset
from lookalike.demo.sample import generate_sample
from lookalike.detect import Detector, create_detector, head_box
from lookalike.embed import create_backbone
from lookalike.embed.extractor import FeatureExtractor
from lookalike.indexing.indexer import Indexer
from lookalike.load.images import iter_image_files, load_image

DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
Row = tuple[str, str, str]  # way, measurement, note


def prepare_images(folder: Path, n_anime: int, n_demo: int) -> list[Path]:
    """Links to `n_anime` anime-faces-dev images (spread over the characters) + demo images."""
    anime = folder / "anime"
    anime.mkdir(parents=True)
    chars = sorted(p for p in (DATASETS / "anime-faces-dev").iterdir() if p.is_dir())
    files = [sorted(c.glob("*.jpg")) for c in chars]
    for i in range(n_anime):
        src = files[i % len(files)][i // len(files)]
        (anime / f"{src.parent.name}-{src.name}").symlink_to(src.resolve())
    per_char = max(1, -(-n_demo // 8))
    generate_sample(folder / "demo", n_characters=8, images_per_character=per_char, seed=7)
    demo = sorted((folder / "demo").rglob("*.png"))
    for extra in demo[n_demo:]:
        extra.unlink()
    (folder / "demo" / "labels.csv").unlink()
    return list(iter_image_files(folder))


def timed(fn: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds `fn` takes by `clock`: wall time, or `time.process_time` for this process's
    CPU time over all its threads (work, whatever the load)."""
    start = clock()
    fn()
    return clock() - start


def naive_loop(
    paths: Sequence[Path], extractor: FeatureExtractor, keys: Sequence[str], out: Path
) -> None:
    """The article's way: one image at a time through everything, vectors saved at the end."""
    rows: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for path in paths:
        image = load_image(path)
        analysis = extractor.analyse(image)
        blocks = extractor.compute([analysis.views], keys)
        for key in keys:
            rows[key].append(blocks[key][0])
    np.savez(out, **{k: np.stack(v) for k, v in rows.items()})


def real_index(root: Path, coll: Path, extractor: FeatureExtractor, **kw: object) -> None:
    shutil.rmtree(coll, ignore_errors=True)
    indexer = Indexer(root, coll, extractor.config, extractor=extractor, progress=False, **kw)
    summary = indexer.run()
    assert summary.committed and not summary.skipped, summary.lines()


def matmul_gflops(size: int = 2048, repeats: int = 8) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def backbone_gflop(size: int = 224) -> float:
    backbone = create_backbone("efficientnet-lite0", runtime="torch")
    x = torch.zeros(1, size, size, 3)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        backbone._export_module()(x)
    return counter.get_total_flops() / 1e9


def per_image_ms(fn: Callable[[], object], n_images: int, repeats: int = 3) -> float:
    fn()  # warm up (first ORT run, oneDNN kernels)
    return 1000 * statistics.median(timed(fn) for _ in range(repeats)) / n_images


def stage_bound(paths: Sequence[Path], extractor: FeatureExtractor, naive_rate: float) -> None:
    """Per-image cost of each stage of the real path on one core, and the fastest any
    schedule of them could run on all the cores (work / cores: the Amdahl bound)."""
    keys = extractor.config.block_keys
    images = [load_image(p) for p in paths]
    analyses = [extractor.analyse(i) for i in images]
    views = [a.views for a in analyses]
    cnn_keys = [k for k in keys if extractor.needs_backbone([k])]
    hand_keys = [k for k in keys if k not in cnn_keys]
    stages = {
        "decode": lambda: [load_image(p) for p in paths],
        "detect": lambda: [extractor.analyse(i) for i in images],
        "CNN (batches of 32)": lambda: [
            extractor.compute(views[i : i + 32], cnn_keys) for i in range(0, len(views), 32)
        ],
        "descriptors": lambda: extractor.compute(views, hand_keys),
    }
    print(f"stages on the first {len(paths)} images, CPU ms per image (all threads):")
    total = 0.0
    for name, fn in stages.items():
        fn()  # warm up
        ms = 1000 * min(timed(fn, time.process_time) for _ in range(3)) / len(paths)
        total += ms
        print(f"  {name}: {ms:.1f}")
    cores = os.cpu_count() or 1
    bound = 1000 * cores / total
    print(
        f"  sum {total:.1f} CPU ms per image: at most {bound:.1f} img/s on {cores} cores "
        f"= {bound / naive_rate:.2f}x the naive loop (both views)"
    )


def backbone_rows(images: list[Image.Image]) -> list[Row]:
    """Both views of each image = 2 forward passes per image; ms per image."""
    rows: list[Row] = []
    b32 = images[:32]
    for runtime, threads in (("torch", 2), ("torch", 1), ("onnx", 2), ("onnx", 1)):
        torch.set_num_threads(threads)
        bb = create_backbone("efficientnet-lite0", runtime=runtime, threads=threads)
        one = per_image_ms(
            lambda bb=bb: [bb.embed(b32[i : i + 1], ["pooled"]) for i in range(4)], 4
        )
        many = per_image_ms(lambda bb=bb: bb.embed(b32, ["pooled"]), len(b32), repeats=2)
        name = "eager PyTorch (channels_last)" if runtime == "torch" else "ONNX Runtime"
        rows.append((f"{name}, {threads} thread(s), batch 1", f"{2 * one:.0f} ms/img", ""))
        rows.append((f"{name}, {threads} thread(s), batch 32", f"{2 * many:.0f} ms/img", ""))
    torch.set_num_threads(os.cpu_count() or 1)
    return rows


_DETECTOR: dict[str, Detector] = {}  # one per process (the process pool's workers too)


def _load_detect(path: Path) -> bool:
    if "d" not in _DETECTOR:
        _DETECTOR["d"] = create_detector("animeface")
    image = load_image(path)
    return head_box(_DETECTOR["d"].detect(image), image.size, 0.6)[1]


def loader_rows(paths: Sequence[Path]) -> list[Row]:
    """Decode + detect: one thread, two threads (animeface holds the GIL), two processes."""
    n = len(paths)
    rows: list[Row] = []
    serial = timed(lambda: [_load_detect(p) for p in paths])
    rows.append(("decode + detect, 1 thread", f"{n / serial:.1f} img/s", ""))
    with ThreadPoolExecutor(2) as pool:
        threads = timed(lambda: list(pool.map(_load_detect, paths)))
    rows.append(("decode + detect, 2 threads", f"{n / threads:.1f} img/s", "GIL held in animeface"))
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_load_detect, paths[:2]))  # start the workers, load the detector
        procs = timed(lambda: list(pool.map(_load_detect, paths, chunksize=4)))
    rows.append(
        ("decode + detect, 2 processes", f"{n / procs:.1f} img/s", "competes with embedding")
    )
    return rows


def detector_rows(paths: Sequence[Path]) -> list[Row]:
    """Detector input size against faces found, on the demo images and the seed cards."""
    cards = [p for p in sorted((DATASETS / "seed-cards").glob("*")) if "example" not in p.name]
    rows: list[Row] = []
    for name, files in (("demo 384 px", list(paths)), ("seed cards", cards)):
        images = [load_image(p) for p in files]
        for side in (512, 384, 256):
            det = create_detector("animeface", sizes=(side,))
            found: list[int] = []

            def detect_all(
                d: Detector = det, ims: list[Image.Image] = images, out: list[int] = found
            ) -> None:
                out.append(sum(bool(d.detect(i)) for i in ims))

            ms = per_image_ms(detect_all, len(images), 1)
            rows.append(
                (
                    f"detect at max_side {side}, {name}",
                    f"{ms:.0f} ms/img",
                    f"faces in {found[-1]}/{len(images)}",
                )
            )
    return rows


_MEMORY_CHILD = """
import resource, sys, shutil
from pathlib import Path
from lookalike.indexing.indexer import Indexer
shutil.rmtree(sys.argv[2], ignore_errors=True)
Indexer(Path(sys.argv[1]), Path(sys.argv[2]), progress=False).run()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (large) parent.
print([ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0].split()[1])
"""


def peak_rss_mb(root: Path, coll: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(root), str(coll)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.split()[-1]) / 1024


def vectors_mb(coll: Path) -> float:
    """The committed vectors (every stored block and the fused vectors) on disk, MB."""
    gen = max((coll / "generations").iterdir())
    files = [gen / "fused.npy", *(gen / "blocks").glob("*.npy")]
    return sum(f.stat().st_size for f in files) / 2**20


def memory_growth(sizes: Sequence[int]) -> None:
    """Peak RSS of `index` (a fresh process each) against the number of images indexed.

    Sizes above the 600 dev images repeat them under other names (the memory is the same
    for a repeated image as for a new one).
    """
    anime = sorted((DATASETS / "anime-faces-dev").glob("*/*.jpg"))
    order = np.random.default_rng(0).permutation(len(anime))
    print("| images | peak RSS MB | stored vectors MB |\n| ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="lookalike-memory-") as tmp:
        for size in sizes:
            root = Path(tmp) / f"images-{size}"
            root.mkdir()
            for n in range(size):
                src = anime[order[n % len(anime)]]
                name = f"{n // len(anime)}-{src.parent.name}-{src.name}"
                (root / name).symlink_to(src.resolve())
            coll = Path(tmp) / "coll"
            peak = peak_rss_mb(root, coll)
            print(f"| {size} | {peak:.0f} | {vectors_mb(coll):.0f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--anime", type=int, default=80, help="anime-faces-dev images")
    ap.add_argument("--demo", type=int, default=80, help="demo sample images (384 px)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--naive-threads",
        type=int,
        default=None,
        help="torch threads of the naive loop (default: torch's own, one per core)",
    )
    ap.add_argument("--skip-rows", action="store_true", help="only naive vs real")
    ap.add_argument(
        "--memory-sizes",
        type=int,
        nargs="+",
        default=None,
        help="only the peak RSS of `index` on this many anime-faces-dev images, each size",
    )
    args = ap.parse_args()
    if args.memory_sizes:
        memory_growth(args.memory_sizes)
        return

    work = Path(tempfile.mkdtemp(prefix="lookalike-throughput-"))
    try:
        run(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, args: argparse.Namespace) -> None:
    root = work / "images"
    paths = prepare_images(root, args.anime, args.demo)
    n = len(paths)
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {n} images")
    config = get_preset("default")
    naive_x = FeatureExtractor(config, backbone=create_backbone(config.backbone, runtime="torch"))
    real_x = FeatureExtractor(config)  # the product's choice of runtime
    for extractor in (naive_x, real_x):  # load models, open the ONNX session: not timed
        extractor.compute([extractor.analyse(load_image(paths[0])).views], config.block_keys)
    default_threads = torch.get_num_threads()

    # The naive loop embeds both views with the CNN (as the article did); the
    # default preset needs the CNN on the head view only (the whole view is a colour
    # layout), so the loop restricted to the default's blocks is timed too.
    head_cnn = [k.split(".", 1)[1] for k in config.block_keys if naive_x.needs_backbone([k])]
    both_views = [*config.block_keys, *(f"whole.{f}" for f in head_cnn)]
    loops = {"naive, both views": both_views, "naive, default blocks": config.block_keys}
    naive_s: dict[str, list[float]] = {name: [] for name in loops}
    real_s = []
    for _ in range(args.repeats):
        torch.set_num_threads(args.naive_threads or default_threads)
        for name, keys in loops.items():
            naive_s[name].append(
                timed(lambda k=keys: naive_loop(paths, naive_x, k, work / "naive.npz"))
            )
        torch.set_num_threads(default_threads)
        # The CLI's settings: decode + detect in worker processes.
        real_s.append(timed(lambda: real_index(root, work / "coll", real_x, processes=True)))
        print("  " + ", ".join(f"{k} {n / v[-1]:.2f} img/s" for k, v in naive_s.items()), end="")
        print(f", real {n / real_s[-1]:.2f} img/s")
    real_rate = n / statistics.median(real_s)
    threads = args.naive_threads or default_threads
    print(f"real index: {real_rate:.2f} img/s (runtime {real_x.backbone.runtime})")  # type: ignore[attr-defined]
    for name, times in naive_s.items():
        rate = n / statistics.median(times)
        print(f"{name}: {rate:.2f} img/s (median of {args.repeats}, {threads} torch threads)")
        print(f"  ratio real / {name}: {real_rate / rate:.2f}x")
    stage_bound(paths[:48], real_x, n / statistics.median(naive_s["naive, both views"]))

    again = timed(lambda: Indexer(root, work / "coll", progress=False).run())
    print(f"second run, nothing changed: {again:.2f} s for {n} images")

    gflop = 2 * backbone_gflop()  # two views per image
    rate = matmul_gflops()
    print(
        f"backbone: {gflop:.2f} GFLOP/img (two views); float32 matmul {rate:.0f} GFLOP/s; "
        f"limit {rate / gflop:.1f} img/s; real path at {100 * real_rate * gflop / rate:.0f}% of it"
    )
    if args.skip_rows:
        return

    images = [load_image(p) for p in paths[:32]]
    rows = backbone_rows(images)
    demo = [p for p in paths if p.suffix == ".png"][:24]
    rows += loader_rows(paths[:16] + demo[:16])
    rows += detector_rows(demo)
    half = work / "half"
    half.mkdir()
    for i, p in enumerate(paths[::4]):
        (half / f"{i:04d}{p.suffix}").symlink_to(p.resolve())
    for folder, count in ((half, len(paths[::4])), (root, n)):
        rows.append(
            (f"peak RSS of index, {count} images", f"{peak_rss_mb(folder, work / 'm'):.0f} MB", "")
        )
    rows.append(
        (
            "bench process maxrss",
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB",
            "",
        )
    )
    print("\n| way | measured | note |\n| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

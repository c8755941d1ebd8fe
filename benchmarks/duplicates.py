"""Near duplicates (issue 19): precision and recall of `lookalike duplicates` by threshold.

Builds a set in a temporary folder from real pictures of ../shared/datasets: a fixed
sample of distinct pictures (anime-full-dev and anime-faces-dev), and for some of them
edited copies (crops, a resize, a JPEG re-save at low quality, a colour shift, a small
edit: a caption bar drawn over a corner). The truth: the copies of one picture are one
group; every other pair is distinct. Prints, per threshold (differing bits of 64), the
pairwise precision and recall of the groups `find_duplicates`' grouping gives, the recall
per kind of edit, and the hashing speed against a plain decode in the same process.

    python benchmarks/duplicates.py [--sources 300] [--edited 80] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import itertools
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from lookalike.groups.duplicates import close_pairs, connected_groups, hash_files
from lookalike.load.images import iter_image_files, load_image

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SETS = ("anime-full-dev", "anime-faces-dev")
THRESHOLDS = (0, 2, 4, 6, 7, 8, 9, 10, 12, 14)


def crop(share: float) -> Callable[[Image.Image, random.Random], Image.Image]:
    def edit(im: Image.Image, rng: random.Random) -> Image.Image:
        w, h = round(im.width * share), round(im.height * share)
        x, y = rng.randint(0, im.width - w), rng.randint(0, im.height - h)
        return im.crop((x, y, x + w, y + h))

    return edit


def resize(im: Image.Image, rng: random.Random) -> Image.Image:
    return im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.LANCZOS)


def jpeg(im: Image.Image, rng: random.Random) -> Image.Image:
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", quality=30)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def colour(im: Image.Image, rng: random.Random) -> Image.Image:
    hsv = np.asarray(im.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + 20) % 256  # hue turned by about 28 degrees
    shifted = Image.fromarray(hsv, "HSV").convert("RGB")
    return ImageEnhance.Brightness(ImageEnhance.Color(shifted).enhance(1.3)).enhance(1.1)


def caption(im: Image.Image, rng: random.Random) -> Image.Image:
    out = im.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    draw.rectangle((0, int(h * 0.88), int(w * 0.45), h), fill=(255, 255, 255))
    draw.text((4, int(h * 0.9)), "@artist 2026", fill=(0, 0, 0))
    return out


EDITS = {
    "crop 90%": crop(0.9),
    "crop 80%": crop(0.8),
    "resize 50%": resize,
    "jpeg q30": jpeg,
    "colour shift": colour,
    "caption bar": caption,
}


def build_set(folder: Path, sources: int, edited: int, seed: int) -> list[int]:
    """Writes the set; returns each file's source number (the truth), files sorted by name."""
    rng = random.Random(seed)
    pool = sorted(p for name in SETS for p in iter_image_files(DATASETS / name))
    chosen = rng.sample(pool, sources)
    for n, path in enumerate(chosen):
        image = load_image(path)
        image.save(folder / f"{n:04d}_orig.png")
        if n < edited:
            for e, edit in enumerate(EDITS.values()):
                edit(image, rng).save(folder / f"{n:04d}_edit{e}.png")
    files = sorted(folder.iterdir())
    return [int(f.name[:4]) for f in files]


def evaluate(truth: list[int], names: list[str], hashes: np.ndarray) -> None:
    true_pairs = {
        (i, j) for i, j in itertools.combinations(range(len(truth)), 2) if truth[i] == truth[j]
    }
    print(f"{len(truth)} files, {len(true_pairs)} true duplicate pairs\n")
    header = ["threshold", "precision", "recall", "groups", *EDITS]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for t in THRESHOLDS:
        groups = connected_groups(len(truth), close_pairs(hashes, t))
        found = {(i, j) for g in groups for i, j in itertools.combinations(g, 2)}
        hit = found & true_pairs
        precision = len(hit) / len(found) if found else 1.0
        recall = len(hit) / len(true_pairs)
        per_edit = []
        for e in range(len(EDITS)):
            ends = {"_orig.png", f"_edit{e}.png"}
            pairs = [(i, j) for i, j in true_pairs if {names[i][4:], names[j][4:]} == ends]
            per_edit.append(f"{sum(p in found for p in pairs) / len(pairs):.3f}")
        row = [str(t), f"{precision:.3f}", f"{recall:.3f}", str(len(groups)), *per_edit]
        print("| " + " | ".join(row) + " |")


def speed(paths: list[Path]) -> None:
    start = time.perf_counter()
    for p in paths:
        load_image(p)
    decode = time.perf_counter() - start
    start = time.perf_counter()
    hash_files(paths)
    hashing = time.perf_counter() - start
    print(
        f"\nhashing {len(paths)} files: {len(paths) / hashing:.0f} files/s, "
        f"{hashing / decode:.2f} x the time of a plain full decode of the same files"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=int, default=300)
    parser.add_argument("--edited", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lookalike-dups-") as tmp:
        folder = Path(tmp)
        truth = build_set(folder, args.sources, args.edited, args.seed)
        files = sorted(folder.iterdir())
        hashes, readable = hash_files(files)
        assert readable.all()
        evaluate(truth, [f.name for f in files], hashes)
        speed(files)


if __name__ == "__main__":
    main()

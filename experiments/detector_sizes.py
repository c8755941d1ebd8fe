"""Detector settings on full pictures: faces found, CPU ms per picture, and a mosaic to check.

For each animeface setting (one copy size, or a cascade that tries the next size only when
no face was found), on every picture of a labelled folder (labels = sub-folders):
the share of pictures with a face among the `--anime` folders (where every picture has a
face) and among the others (where a "face" is a false one), and the CPU time per picture.
The animeface detector is run once per copy size; a cascade's cost is the sum of the
copies it needed. `--mosaic` draws the pictures whose face only the last setting found,
with its boxes, to check by eye that the extra boxes sit on faces.

    python experiments/detector_sizes.py ../shared/datasets/anime-full-dev \
        --anime ahagon_umiko sakura_nene suzukaze_aoba yagami_kou --mosaic /tmp/extra.png
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from lookalike.detect import create_detector
from lookalike.load.images import iter_image_files, load_image

SIZES = (384, 512, 640, 768, 1024)
CASCADES = ((384, 640), (384, 768), (384, 1024), (384, 640, 1024))


def detect_at_each_size(
    files: list[Path], sizes: tuple[int, ...]
) -> dict[Path, dict[int, tuple[float, list]]]:
    """{file: {size: (cpu ms, boxes)}}: one animeface pass per copy size."""
    detectors = {s: create_detector("animeface", sizes=(s,)) for s in sizes}
    out: dict[Path, dict[int, tuple[float, list]]] = {}
    for n, path in enumerate(files):
        image = load_image(path)
        out[path] = {}
        for size, det in detectors.items():
            start = time.process_time()
            faces = det.detect(image)
            out[path][size] = (1000 * (time.process_time() - start), [f.box for f in faces])
        if n % 100 == 0:
            print(f"{n}/{len(files)} pictures", flush=True)
    return out


def cascade(found: Mapping[Any, Sequence], sizes: Sequence) -> tuple[float, list]:
    """What the cascade of `sizes` (or of any named passes) costs and finds, from the single
    passes' (CPU ms, boxes)."""
    spent = 0.0
    for size in sizes:
        ms, boxes = found[size]
        spent += ms
        if boxes:
            return spent, boxes
    return spent, []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--anime", nargs="+", required=True, help="sub-folders with anime faces")
    parser.add_argument("--mosaic", type=Path, help="PNG of the pictures only 384,768 finds")
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="single copy sizes")
    args = parser.parse_args()
    sizes = tuple(sorted(set(args.sizes) | {s for c in CASCADES for s in c}))
    files = sorted(iter_image_files(args.folder))
    found = detect_at_each_size(files, sizes)
    anime = [f for f in files if f.relative_to(args.folder).parts[0] in args.anime]
    other = [f for f in files if f not in anime]
    print(f"\n{len(anime)} pictures in {', '.join(args.anime)}; {len(other)} others\n")
    print("| setting | faces found (anime) | 'faces' found (others) | CPU ms / picture |")
    print("| --- | ---: | ---: | ---: |")
    settings = [(s,) for s in args.sizes] + list(CASCADES)
    for sizes in settings:
        runs = {f: cascade(found[f], sizes) for f in files}
        rate_a = sum(bool(runs[f][1]) for f in anime) / len(anime)
        rate_o = sum(bool(runs[f][1]) for f in other) / max(len(other), 1)
        ms = sum(r[0] for r in runs.values()) / len(files)
        name = " then ".join(str(s) for s in sizes)
        print(f"| {name} | {rate_a:.3f} | {rate_o:.3f} | {ms:.0f} |")
    if args.mosaic:
        extra = [f for f in anime if not found[f][384][1] and cascade(found[f], (384, 768))[1]]
        draw_mosaic(extra, {f: cascade(found[f], (384, 768))[1] for f in extra}, args.mosaic)
        print(f"\n{len(extra)} pictures only the cascade finds: {args.mosaic}")


def draw_mosaic(files: list[Path], boxes: dict[Path, list], out: Path, tile: int = 256) -> None:
    tiles = []
    for path in files:
        image = load_image(path)
        scale = tile / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)))
        draw = ImageDraw.Draw(image)
        for x0, y0, x1, y1 in boxes[path]:
            corners = [x0 * scale, y0 * scale, x1 * scale, y1 * scale]
            draw.rectangle(corners, outline="lime", width=2)
        draw.text((2, 2), f"{path.parent.name}/{path.name}", fill="red")
        tiles.append(image)
    cols = 6
    sheet = Image.new("RGB", (cols * tile, max(1, -(-len(tiles) // cols)) * tile), "white")
    for i, image in enumerate(tiles):
        sheet.paste(image, ((i % cols) * tile, (i // cols) * tile))
    sheet.save(out)


if __name__ == "__main__":
    main()

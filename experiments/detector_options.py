"""Issue 14, round 2: more animeface settings on full pictures, each pass measured once.

Every picture of a labelled folder (labels = sub-folders) goes through single animeface
passes: the picture on a copy of one long side (`s256` ... `s1024`; no copy is made larger
than the picture); where the 384 px pass finds nothing, the top part of the 768 px copy
(`t0.6@768`: its top 60%) and the 384 px copy turned by +-45 and +-90 degrees (`r45@384`
...); and where the 768 px pass or one of the small first passes finds nothing (the only
pictures a cascade would send further), the 768 px copy turned (`r45@768` ...), mirrored
(`m@768`) and the picture enlarged 1.5x past its own size (`u1.5`). Each pass's faces
(boxes in picture pixels, scores) and its process CPU time are kept in a JSON cache
(`--cache`), so settings are then composed without running the detector again: a cascade
of passes runs the next pass only when the ones before found nothing, and costs the sum of
the passes it ran.

Printed: per setting, the share of the `--anime` pictures with a face (every one has one),
the share of the others with a "face" (all false), CPU ms per picture; `--mosaic DIR`
draws, per setting, the anime pictures it finds and the current default (384 then 768)
does not, and the others' pictures where it puts a false face, to check by eye.

    python experiments/detector_options.py ../shared/datasets/anime-full-dev \
        --anime ahagon_umiko sakura_nene suzukaze_aoba yagami_kou \
        --cache /tmp/det/full.json --mosaic /tmp/det/mosaic

The face crops of anime-faces-dev, each as a 128 px face in a 384 px grey canvas (every
folder has faces; `--anime` names them all):

    python experiments/detector_options.py ../shared/datasets/anime-faces-dev --pad 128 384 \
        --anime $(ls ../shared/datasets/anime-faces-dev) --cache /tmp/det/crops.json
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import time
from pathlib import Path

# experiments/ is the script's folder: sys.path[0]. A pass `cascade` reaches that was not
# measured (the earlier ones found a face, so a cascade never needs it there) is a KeyError.
from detector_sizes import cascade, draw_mosaic
from PIL import Image

from lookalike.load.images import iter_image_files, load_image

SIZES = (256, 320, 384, 512, 640, 768, 1024)
FIRST = ("s256", "s320", "s384")  # first passes after which a cascade may go on
ANGLES = (-90, -45, 45, 90)
ROTATED_SIZES = (384, 768)
GREY = (128, 128, 128)

_detect = None


def _animeface():
    global _detect
    if _detect is None:
        import animeface

        _detect = animeface.detect
    return _detect


def copy_of(image: Image.Image, side: float, upscale: bool = False) -> tuple[Image.Image, float]:
    """The picture on a copy whose long side is `side` (never enlarged unless `upscale`)."""
    scale = side / max(image.size)
    if not upscale:
        scale = min(1.0, scale)
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR), scale


def run_pass(image: Image.Image, name: str) -> tuple[float, list[list[float]]]:
    """One pass: (CPU ms, [[x0, y0, x1, y1, score], ...] in picture pixels)."""
    detect = _animeface()
    start = time.process_time()
    angle, mirror, upscale, top = 0, False, False, 1.0
    if name.startswith("s"):
        side = float(name[1:])
    elif name.startswith("t"):  # the top part of a copy: t0.6@768
        t, s = name[1:].split("@")
        top, side = float(t), float(s)
    elif name.startswith("r"):
        a, s = name[1:].split("@")
        angle, side = int(a), float(s)
    elif name.startswith("m@"):
        mirror, side = True, float(name[2:])
    elif name.startswith("u"):
        side, upscale = float(name[1:]) * max(image.size), True
    else:
        raise ValueError(name)
    copy, scale = copy_of(image, side, upscale)
    if top < 1.0:
        copy = copy.crop((0, 0, copy.width, max(1, round(top * copy.height))))
    if mirror:
        copy = copy.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if angle:
        turned = copy.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=GREY)
    else:
        turned = copy
    faces = []
    for f in detect(turned):
        b = f.face.pos
        cx, cy = b.x + b.width / 2, b.y + b.height / 2
        if angle:  # back from the turned copy: PIL turns counter-clockwise about the centre
            t = math.radians(angle)
            dx, dy = cx - turned.width / 2, cy - turned.height / 2
            cx = copy.width / 2 + math.cos(t) * dx - math.sin(t) * dy
            cy = copy.height / 2 + math.sin(t) * dx + math.cos(t) * dy
        if mirror:
            cx = copy.width - cx
        half = max(b.width, b.height) / 2
        box = [(cx - half) / scale, (cy - half) / scale, (cx + half) / scale, (cy + half) / scale]
        faces.append([round(v, 1) for v in box] + [round(float(f.likelihood), 4)])
    return 1000 * (time.process_time() - start), faces


PAD: tuple[int, int] | None = None  # (face side, canvas side): crops padded into a canvas


def padded(image: Image.Image, face: int, canvas: int) -> Image.Image:
    """A face crop resized to `face` px and pasted in the middle of a grey `canvas`."""
    out = Image.new("RGB", (canvas, canvas), GREY)
    small = image.resize((face, face), Image.Resampling.BILINEAR)
    out.paste(small, ((canvas - face) // 2, (canvas - face) // 2))
    return out


TOPS = ("t0.5@768", "t0.6@768", "t0.7@768")


def wanted(out: dict[str, tuple[float, list]]) -> list[str]:
    """The passes a picture needs, given those it had (the later ones run only where a
    cascade could reach them)."""
    names = [f"s{s}" for s in SIZES]
    if all(n in out for n in names):
        if not out["s384"][1]:
            names += list(TOPS) + [f"r{a}@384" for a in ANGLES]
        if not out["s768"][1] and any(not out[n][1] for n in FIRST):
            names += [f"r{a}@{s}" for s in ROTATED_SIZES for a in ANGLES] + ["m@768", "u1.5"]
    return [n for n in names if n not in out]


def measure(job: tuple[str, dict]) -> tuple[str, dict[str, tuple[float, list]]]:
    path, out = job
    image = load_image(path).convert("RGB")
    if PAD:
        image = padded(image, *PAD)
    while todo := wanted(out):
        out.update({name: run_pass(image, name) for name in todo})
    return path, out


def measure_all(files: list[Path], cache: Path, workers: int) -> dict[str, dict]:
    """Every picture's passes, from the cache where it has them."""
    done: dict[str, dict] = json.loads(cache.read_text()) if cache.exists() else {}
    todo = [(str(f), done.get(str(f), {})) for f in files]
    todo = [job for job in todo if wanted(job[1])]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for n, (path, out) in enumerate(pool.imap_unordered(measure, todo, chunksize=4)):
            done[path] = out
            if n % 50 == 0:
                print(f"{n}/{len(todo)} pictures", flush=True)
                cache.write_text(json.dumps(done))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(done))
    return done


SETTINGS: list[tuple[str, ...]] = [
    ("s256",),
    ("s320",),
    ("s384",),
    ("s768",),
    ("s384", "s768"),  # the default today
    ("s256", "s640"),
    ("s256", "s768"),
    ("s320", "s640"),
    ("s320", "s768"),
    ("s384", "s640"),
    ("s256", "s512", "s1024"),
    ("s384", "s768", "u1.5"),
    ("s384", "s768", "m@768"),
    ("s384", "s768", "r45@384", "r-45@384"),
    ("s384", "s768", "r90@384", "r-90@384"),
    ("s384", "s768", "r45@384", "r-45@384", "r90@384", "r-90@384"),
    ("s384", "s768", "r45@768", "r-45@768"),
    ("s384", "s768", "r45@768", "r-45@768", "r90@768", "r-90@768"),
    ("s320", "s768", "r45@384", "r-45@384"),
    ("s384", "t0.5@768"),
    ("s384", "t0.6@768"),
    ("s384", "t0.7@768"),
    ("s384", "t0.6@768", "r45@384", "r-45@384"),
    ("s384", "t0.6@768", "r45@384", "r-45@384", "r90@384", "r-90@384"),
]
DEFAULT = ("s384", "s768")


def boxes(runs: dict[str, tuple[float, list]], files: list[str]) -> dict[Path, list]:
    """What `draw_mosaic` draws: the boxes of each file's faces, without their scores."""
    return {Path(f): [face[:4] for face in runs[f][1]] for f in files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--anime", nargs="+", required=True, help="sub-folders with anime faces")
    parser.add_argument("--cache", type=Path, required=True, help="JSON of the passes' results")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mosaic", type=Path, help="folder for one PNG per setting")
    parser.add_argument(
        "--pad", nargs=2, type=int, metavar=("FACE", "CANVAS"), help="pad face crops first"
    )
    args = parser.parse_args()
    global PAD
    PAD = tuple(args.pad) if args.pad else None
    files = sorted(iter_image_files(args.folder))
    found = measure_all(files, args.cache, args.workers)
    anime = [str(f) for f in files if f.relative_to(args.folder).parts[0] in args.anime]
    other = [str(f) for f in files if str(f) not in set(anime)]
    print(f"\n{len(anime)} pictures in {', '.join(args.anime)}; {len(other)} others\n")
    print("| setting | faces found (anime) | 'faces' found (others) | CPU ms / picture |")
    print("| --- | ---: | ---: | ---: |")
    base = {f: cascade(found[f], DEFAULT)[1] for f in anime}
    for setting in SETTINGS:
        runs = {f: cascade(found[f], setting) for f in anime + other}
        rate_a = sum(bool(runs[f][1]) for f in anime) / len(anime)
        rate_o = sum(bool(runs[f][1]) for f in other) / max(len(other), 1)
        ms = statistics.mean(r[0] for r in runs.values())
        name = " then ".join(setting)
        print(f"| {name} | {rate_a:.3f} | {rate_o:.3f} | {ms:.0f} |")
        if args.mosaic and setting != DEFAULT:
            args.mosaic.mkdir(parents=True, exist_ok=True)
            gained = [f for f in anime if runs[f][1] and not base[f]]
            false = [f for f in other if runs[f][1]]
            tag = "_".join(setting).replace("@", "at")
            if gained:
                draw_mosaic(
                    [Path(f) for f in gained], boxes(runs, gained), args.mosaic / f"{tag}.png"
                )
            if false:
                draw_mosaic(
                    [Path(f) for f in false], boxes(runs, false), args.mosaic / f"{tag}_others.png"
                )
    missed = [f for f in anime if not base[f]]
    print(f"\n{len(missed)} anime pictures the default misses:")
    for f in missed:
        print("  ", Path(f).relative_to(args.folder))


if __name__ == "__main__":
    main()

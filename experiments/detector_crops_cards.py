"""Issue 14, round 2: animeface settings on face crops and on the seed cards.

For each setting (animeface options as JSON), through the detector itself:
- anime-faces-dev, each crop as a 128 px face in the middle of a 384 px grey canvas: the
  share with a face, the share whose best box is on the face (IoU > 0.3 with the pasted
  square: a check that needs no eye), CPU ms per picture;
- the same crops as they are indexed (256 x 256, tight): the share with a face;
- seed-cards: each card's best box (the two pet photos should get none).

    python experiments/detector_crops_cards.py ../shared/datasets \\
        '{"sizes": [384, 768]}' '{"sizes": [384, 768], "upper": 0.6}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from PIL import Image

from lookalike.detect import create_detector
from lookalike.load.images import iter_image_files, load_image

FACE = (128, 128, 256, 256)


def iou(a, b) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return w * h / (area - w * h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("datasets", type=Path, help="the shared datasets folder")
    ap.add_argument("settings", nargs="+", type=json.loads, help="animeface options, JSON")
    args = ap.parse_args()
    crops = [load_image(p) for p in sorted(iter_image_files(args.datasets / "anime-faces-dev"))]
    cards = sorted(iter_image_files(args.datasets / "seed-cards"))
    print("| setting | padded crops: face | on the face | CPU ms | tight crops: face |")
    print("| --- | ---: | ---: | ---: | ---: |")
    lines = []
    for options in args.settings:
        detector = create_detector("animeface", **options)
        found = on_face = tight = 0
        spent = 0.0
        for crop in crops:
            canvas = Image.new("RGB", (384, 384), (128, 128, 128))
            canvas.paste(crop.resize((128, 128), Image.Resampling.BILINEAR), (128, 128))
            start = time.process_time()
            faces = detector.detect(canvas)
            spent += time.process_time() - start
            found += bool(faces)
            on_face += bool(faces) and iou(faces[0].box, FACE) > 0.3
            tight += bool(detector.detect(crop))
        n = len(crops)
        ms = 1000 * spent / n
        print(
            f"| {json.dumps(options)} | {found / n:.3f} | {on_face / n:.3f} | {ms:.0f} | "
            f"{tight / n:.3f} |",
            flush=True,
        )
        boxes = {p.name: [f.box for f in detector.detect(load_image(p))][:1] for p in cards}
        lines.append(f"{json.dumps(options)}: seed-cards {boxes}")
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()

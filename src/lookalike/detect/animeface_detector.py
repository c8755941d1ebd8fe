"""Anime face detector: nvxs (Yusuke Fujino's detector) through the `animeface` package."""

from __future__ import annotations

import threading
from typing import Any

import PIL
from PIL import Image

from lookalike.detect.base import DETECTORS, DetectionView, Face, best_first
from lookalike.errors import LookalikeError


@DETECTORS.register("animeface", "anime/manga faces with hair, skin and eye colours (animeface)")
class AnimeFaceDetector:
    """Anime faces, best first, with hair/skin/eye colours and part boxes in `parts`.

    Runs on a copy whose longer side is at most `max_side` pixels: on the seed cards
    384 finds the same faces as 1024 and 512, with boxes as close to the full-size ones,
    in half the time of 512; 256 still finds them but its boxes drift (measured in
    benchmarks/index_throughput.py, recorded in benchmarks/README.md).
    `min_score` drops faces whose likelihood is below it.
    """

    name = "animeface"

    def __init__(self, max_side: int = 384, min_score: float = 0.0) -> None:
        major = int(PIL.__version__.split(".")[0])
        if major >= 11:
            # Its C code reads Pillow's internal structs and silently finds nothing on 11+.
            raise LookalikeError(
                f"the animeface detector needs Pillow < 11, found Pillow {PIL.__version__}; "
                "install 'pillow<11' or choose another detector"
            )
        try:
            import animeface
        except ImportError as exc:
            raise LookalikeError(
                f"the animeface detector needs the 'animeface' package ({exc}); "
                "install it with: pip install animeface"
            ) from exc
        self._animeface = animeface
        self.max_side = max_side
        self.min_score = min_score
        self._lock = threading.Lock()  # the native detector is not documented as thread-safe

    def detect(self, image: Image.Image) -> list[Face]:
        view = DetectionView.of(image.convert("RGB"), self.max_side)
        with self._lock:
            found = self._animeface.detect(view.image)
        faces = [self._face(f, view) for f in found if f.likelihood >= self.min_score]
        return best_first(faces)

    @staticmethod
    def _face(f: Any, view: DetectionView) -> Face:  # f: an animeface.Face
        def box(b: Any) -> list[int]:
            return list(view.to_original(b.x, b.y, b.width, b.height))

        def rgb(c: Any) -> list[int]:
            return [int(c.r), int(c.g), int(c.b)]

        parts: dict[str, object] = {
            "hair_color": rgb(f.hair.color),
            "skin_color": rgb(f.skin.color),
            "left_eye_box": box(f.left_eye.pos),
            "left_eye_color": rgb(f.left_eye.color),
            "right_eye_box": box(f.right_eye.pos),
            "right_eye_color": rgb(f.right_eye.color),
            "mouth_box": box(f.mouth.pos),
            "nose": list(view.point(f.nose.pos.x, f.nose.pos.y)),
            "chin": list(view.point(f.chin.pos.x, f.chin.pos.y)),
        }
        pos = f.face.pos
        return Face(
            view.to_original(pos.x, pos.y, pos.width, pos.height), float(f.likelihood), parts
        )

"""Anime face detector: nvxs (Yusuke Fujino's detector) through the `animeface` package."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import PIL
from PIL import Image

from lookalike.detect.base import DETECTORS, Box, DetectionView, Face, best_first
from lookalike.errors import LookalikeError

DEFAULT_SIZES = (384, 768)
_GREY = (128, 128, 128)  # the corners a turned copy gains


def check_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """The cascade's copy sizes, checked: positive and increasing."""
    sizes = tuple(int(s) for s in sizes)
    if not sizes or any(s < 32 for s in sizes) or list(sizes) != sorted(set(sizes)):
        raise LookalikeError(
            f"detector sizes must be increasing pixel sizes of at least 32, got {list(sizes)}"
        )
    return sizes


def check_upper(upper: float, name: str = "the detector's upper share") -> float:
    """The top share of the larger copies searched, checked: in (0, 1]."""
    if not 0.0 < upper <= 1.0:
        raise LookalikeError(f"{name} must be in (0, 1], got {upper}")
    return float(upper)


@DETECTORS.register("animeface", "anime/manga faces with hair, skin and eye colours (animeface)")
class AnimeFaceDetector:
    """Anime faces, best first, with hair/skin/eye colours and part boxes in `parts`.

    A cascade of copies: the picture is searched on a copy whose longer side is
    `sizes[0]` pixels, and only when no face is found there, on the next larger copy,
    and so on. Full-body figures have faces a few dozen pixels wide at 384 px: on the
    204 anime pictures of anime-full-dev, 384 alone finds a face in 81.4%, 768 alone in
    83.8%, the cascade 384 then 768 in 88.7% (of the boxes only the cascade found, 14 of
    15 sit on a face, checked by eye on a mosaic), for the cost of a second pass on the
    misses only (benchmarks/quality.md, "detector size"). A copy no larger than the
    previous one (a small picture) is not searched again.
    `upper` < 1 searches the copies after the first in their top `upper` share only: the
    faces the first copy is too small for are mostly the heads of full-body figures.
    `angles`: when no copy finds a face, the first copy turned by each angle (degrees,
    counter-clockwise) in turn, for heads tilted or lying down; a face found there is the
    upright square about its centre. Both measured in benchmarks/quality.md ("Detector
    options"). `min_score` drops faces whose likelihood is below it.
    """

    name = "animeface"

    def __init__(
        self,
        sizes: Sequence[int] = DEFAULT_SIZES,
        min_score: float = 0.0,
        upper: float = 1.0,
        angles: Sequence[int] = (),
    ) -> None:
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
        self.sizes = check_sizes(sizes)
        self.min_score = min_score
        self.upper = check_upper(upper)
        self.angles = tuple(int(a) for a in angles)
        self._lock = threading.Lock()  # the native detector is not documented as thread-safe

    def detect(self, image: Image.Image) -> list[Face]:
        rgb = image.convert("RGB")
        searched = 0
        for n, size in enumerate(self.sizes):
            view = DetectionView.of(rgb, size)
            if view.image.width <= searched:  # this copy is no larger than the last one
                break
            searched = view.image.width
            copy = view.image
            if n and self.upper < 1.0:  # crop keeps the origin: the view's mapping holds
                copy = copy.crop((0, 0, copy.width, max(1, round(self.upper * copy.height))))
            faces = self._search(copy, view)
            if faces:
                return faces
        first = DetectionView.of(rgb, self.sizes[0])
        for angle in self.angles:
            turned = TurnedView(first, angle)
            faces = self._search(turned.image, turned)
            if faces:
                return faces
        return []

    def _search(self, copy: Image.Image, view: DetectionView | TurnedView) -> list[Face]:
        with self._lock:
            found = self._animeface.detect(copy)
        return best_first([self._face(f, view) for f in found if f.likelihood >= self.min_score])

    @staticmethod
    def _face(f: Any, view: DetectionView | TurnedView) -> Face:  # f: an animeface.Face
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


class TurnedView:
    """A detection copy turned counter-clockwise by `angle` degrees about its centre (the
    corners it gains are grey), with the mapping of what is found on it back to the
    picture: a box becomes the upright square of its longer side about its turned-back
    centre."""

    def __init__(self, view: DetectionView, angle: int) -> None:
        self.view = view
        self.angle = angle
        self.image = view.image.rotate(
            angle, Image.Resampling.BILINEAR, expand=True, fillcolor=_GREY
        )

    def _back(self, x: float, y: float) -> tuple[float, float]:
        """A point of the turned copy on the upright copy."""
        t = math.radians(self.angle)
        dx, dy = x - self.image.width / 2, y - self.image.height / 2
        copy = self.view.image
        return (
            copy.width / 2 + math.cos(t) * dx - math.sin(t) * dy,
            copy.height / 2 + math.sin(t) * dx + math.cos(t) * dy,
        )

    def point(self, x: float, y: float) -> tuple[int, int]:
        return self.view.point(*self._back(x, y))

    def to_original(self, x: float, y: float, width: float, height: float) -> Box:
        cx, cy = self._back(x + width / 2, y + height / 2)
        half = max(width, height) / 2
        return self.view.to_original(cx - half, cy - half, 2 * half, 2 * half)

"""The detector contract, the detector registry, and the head box derived from faces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from PIL import Image

from lookalike.registry import Registry

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Face:
    """One detected face. `box` is (x0, y0, x1, y1) in image pixels, x1/y1 exclusive."""

    box: Box
    score: float  # detector confidence, higher is surer; not comparable across detectors
    parts: dict[str, object] = field(default_factory=dict)  # detector extras, JSON-able

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@runtime_checkable
class Detector(Protocol):
    name: str

    def detect(self, image: Image.Image) -> list[Face]:
        """Faces in `image`, best first."""
        ...


DETECTORS = Registry[Detector]("detector")

# The grey canvas colour around padded images: neutral for colour and edge features.
_PAD_GREY = 128


def best_first(faces: Sequence[Face]) -> list[Face]:
    """Faces by score, higher first; equal scores put the larger face first."""
    return sorted(faces, key=lambda f: (f.score, f.area), reverse=True)


@dataclass(frozen=True)
class DetectionView:
    """The resized (and maybe padded) copy of an image a detector runs on.

    Detectors are both slow on big images and blind to faces that fill the whole
    frame, so they look at a copy whose longer side is at most `max_side`, whose
    shorter side is at least `min_side`, inside a grey border of `pad` x the
    shorter side. `to_original` maps boxes found on the copy back.
    """

    image: Image.Image
    scale: float  # copy pixels per original pixel
    offset: int  # border width in copy pixels
    size: tuple[int, int]  # original (width, height)

    @classmethod
    def of(
        cls, image: Image.Image, max_side: int, min_side: int = 0, pad: float = 0.0
    ) -> DetectionView:
        w, h = image.size
        scale = min(1.0, max_side / max(w, h))
        if min_side and min(w, h) * scale < min_side:
            scale = min(min_side / min(w, h), max_side / max(w, h))
        copy = image
        if scale != 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            copy = image.resize(size, Image.Resampling.BILINEAR)
        offset = round(min(copy.size) * pad)
        if offset:
            fill = _PAD_GREY if copy.mode == "L" else (_PAD_GREY,) * 3
            canvas = Image.new(copy.mode, (copy.width + 2 * offset, copy.height + 2 * offset), fill)
            canvas.paste(copy, (offset, offset))
            copy = canvas
        return cls(copy, scale, offset, (w, h))

    def point(self, x: float, y: float) -> tuple[int, int]:
        """A point of the copy in original pixels, clamped to the image."""
        w, h = self.size
        ox = round((x - self.offset) / self.scale)
        oy = round((y - self.offset) / self.scale)
        return min(max(ox, 0), w), min(max(oy, 0), h)

    def to_original(self, x: float, y: float, width: float, height: float) -> Box:
        """A box of the copy given as (x, y, width, height) as an original (x0, y0, x1, y1)."""
        return (*self.point(x, y), *self.point(x + width, y + height))


def top_centre_box(image_size: tuple[int, int]) -> Box:
    """The top-centre square of side min(w, h): the whole of a square picture, the top of a
    tall card or portrait (where heads usually are), the middle of a wide picture."""
    w, h = image_size
    side = min(w, h)
    x0 = (w - side) // 2
    return (x0, 0, x0 + side, side)


def head_box(
    faces: Sequence[Face], image_size: tuple[int, int], margin: float = 0.5
) -> tuple[Box, bool]:
    """The box of the head to crop for the "head" view, and whether it is a fallback.

    With faces: the best face (highest score, then largest) grown to take in the
    hair, the strongest identity cue of a drawn character: by `margin` x the face
    width on the left and on the right, 1.4 x `margin` x the face height above
    (hair and hair ornaments) and 0.6 x `margin` below (chin and neck). With the
    default 0.5 a square face becomes a square twice its side. The box is then
    clamped to the image, so near an edge it is smaller and not square.

    Without faces (is_fallback True): `top_centre_box`; the pipeline may replace it with
    the salient square (`lookalike.detect.salient`), which needs the backbone.
    """
    w, h = image_size
    if not faces:
        return top_centre_box(image_size), True
    x0, y0, x1, y1 = max(faces, key=lambda f: (f.score, f.area)).box
    fw, fh = x1 - x0, y1 - y0
    grown = (
        round(x0 - margin * fw),
        round(y0 - 1.4 * margin * fh),
        round(x1 + margin * fw),
        round(y1 + 0.6 * margin * fh),
    )
    gx0, gy0 = max(grown[0], 0), max(grown[1], 0)
    gx1, gy1 = min(grown[2], w), min(grown[3], h)
    if gx1 <= gx0 or gy1 <= gy0:  # a face box outside the image: do not crop to nothing
        return head_box([], image_size, margin)
    return (gx0, gy0, gx1, gy1), False


def crop(image: Image.Image, box: Sequence[int]) -> Image.Image:
    """The part of `image` inside `box` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return image.crop((x0, y0, x1, y1))

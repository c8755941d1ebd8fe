"""Face and head detection behind one contract.

`create_detector(name)` gives a `Detector` whose `detect(image)` returns `Face`s,
best first; `head_box` turns them into the crop of the "head" view. Detectors
import their heavy libraries (OpenCV, animeface) only when created.
"""

from __future__ import annotations

from lookalike.detect import animeface_detector, haar, none  # noqa: F401  (they register)
from lookalike.detect.base import DETECTORS, Box, DetectionView, Detector, Face, crop, head_box

__all__ = [
    "DETECTORS",
    "Box",
    "DetectionView",
    "Detector",
    "Face",
    "create_detector",
    "crop",
    "head_box",
    "list_detectors",
]


def create_detector(name: str, **kwargs: object) -> Detector:
    """A detector by registered name; an unknown name raises UnknownNameError with suggestions."""
    return DETECTORS.create(name, **kwargs)


def list_detectors(pattern: str = "*") -> list[str]:
    return DETECTORS.names(pattern)

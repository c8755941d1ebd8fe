"""The detector that finds nothing: every head view falls back to the top-centre square."""

from __future__ import annotations

from PIL import Image

from lookalike.detect.base import DETECTORS, Face


@DETECTORS.register("none", "no detection; the head view is the top-centre square")
class NoDetector:
    name = "none"

    def detect(self, image: Image.Image) -> list[Face]:
        return []

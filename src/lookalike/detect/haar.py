"""Human frontal face detector: OpenCV's Haar cascade (Viola-Jones)."""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from lookalike.detect.base import DETECTORS, DetectionView, Face, best_first
from lookalike.errors import LookalikeError


@DETECTORS.register("haar", "human frontal faces (OpenCV Haar cascade)")
class HaarDetector:
    """Human frontal faces, best first; `score` is the cascade's level weight.

    The cascade misses faces that fill the frame (a passport photo, a face crop),
    so it runs on a copy with a grey border of `pad` x the shorter side, scaled so
    the shorter side is at least `min_side` and the longer at most `max_side`:
    on the 23x28 ORL photos of the shared datasets that takes it from none to all
    200 faces found.
    """

    name = "haar"

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_default.xml",
        scale_factor: float = 1.1,
        min_neighbors: int = 4,
        min_size: int = 24,
        max_side: int = 640,
        min_side: int = 224,
        pad: float = 0.25,
    ) -> None:
        try:
            import cv2
        except ImportError as exc:
            raise LookalikeError(
                f"the haar detector needs OpenCV ({exc}); "
                "install it with: pip install 'opencv-python-headless<5'"
            ) from exc
        if not hasattr(cv2, "CascadeClassifier"):
            raise LookalikeError(
                f"the haar detector needs OpenCV 4, found OpenCV {cv2.__version__} "
                "(OpenCV 5 removed CascadeClassifier); "
                "install it with: pip install 'opencv-python-headless<5'"
            )
        path = cascade if "/" in cascade else cv2.data.haarcascades + cascade
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise LookalikeError(f"cannot load the Haar cascade {path}")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.max_side = max_side
        self.min_side = min_side
        self.pad = pad
        self._lock = threading.Lock()  # a CascadeClassifier is not safe to share across threads

    def detect(self, image: Image.Image) -> list[Face]:
        view = DetectionView.of(image.convert("L"), self.max_side, self.min_side, self.pad)
        with self._lock:
            boxes, _, weights = self._cascade.detectMultiScale3(
                np.asarray(view.image),
                scaleFactor=self.scale_factor,
                minNeighbors=self.min_neighbors,
                minSize=(self.min_size, self.min_size),
                outputRejectLevels=True,
            )
        faces = [
            Face(view.to_original(*(int(v) for v in box)), float(weight), {})
            for box, weight in zip(boxes, np.ravel(weights), strict=True)
        ]
        return best_first(faces)

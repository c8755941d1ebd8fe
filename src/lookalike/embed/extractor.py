"""From an image to its feature blocks: detect the head, cut the views, compute each block.

A block is "<view>.<feature>": the feature is a backbone output when the backbone
offers it (one forward pass gives them all) and a hand-made descriptor otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from lookalike.config import VIEWS, PipelineConfig
from lookalike.detect import Detector, create_detector, crop, head_box
from lookalike.detect.salient import SALIENT_MIN_SIDE, salient_box
from lookalike.embed import Backbone, create_backbone
from lookalike.embed.descriptors import describe, list_descriptors
from lookalike.errors import LookalikeError

if TYPE_CHECKING:
    from lookalike.train.head import Head

# The feature a trained head computes from a view's base features (see lookalike.train).
HEAD_FEATURE = "v5"
# The backbone output the salient fallback reads (the last feature map, cell by cell).
SALIENCY_OUTPUT = "energy"


@dataclass
class Analysis:
    """What detection found in one image, and the head view derived from it."""

    faces: list[dict[str, Any]]
    head_box: tuple[int, int, int, int]
    fallback: bool
    views: dict[str, Image.Image] = field(repr=False, default_factory=dict)


def split_key(key: str) -> tuple[str, str]:
    view, _, feature = key.partition(".")
    if view not in VIEWS or not feature:
        raise ValueError(f"bad feature block {key!r}: expected '<view>.<feature>', view in {VIEWS}")
    return view, feature


class FeatureExtractor:
    """Runs detection and feature computation for one pipeline configuration.

    The backbone and detector are created on first use, so code that only reads
    stored vectors never loads model weights.
    """

    def __init__(
        self,
        config: PipelineConfig,
        backbone: Backbone | None = None,
        detector: Detector | None = None,
        head: Head | None = None,
    ) -> None:
        self.config = config
        self._backbone = backbone
        self._detector = detector
        self._head = head

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = create_backbone(self.config.backbone, **self.config.backbone_options)
        return self._backbone

    @property
    def loaded_backbone(self) -> Backbone | None:
        """The backbone if it was loaded already (to share it without loading it)."""
        return self._backbone

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            self._detector = create_detector(self.config.detector, **self.config.detector_options)
        return self._detector

    def analyse(self, image: Image.Image) -> Analysis:
        faces = self.detector.detect(image)
        box, fallback = head_box(faces, image.size, margin=self.config.head_margin)
        found = [{"box": list(f.box), "score": float(f.score), "parts": f.parts} for f in faces]
        return Analysis(found, box, fallback, {"whole": image, "head": crop(image, box)})

    def settle_fallbacks(self, analyses: Sequence[Analysis]) -> None:
        """Give the pictures without a face the salient head view, in place (one batched
        backbone pass over their whole pictures); a no-op unless the config asks for it and
        fuses a head block, and for pictures too small to be more than their subject."""
        todo = [
            a for a in analyses if a.fallback and min(a.views["whole"].size) >= SALIENT_MIN_SIDE
        ]
        if not todo or self.config.fallback != "salient" or "head" not in self.config.views:
            return
        if SALIENCY_OUTPUT not in self.backbone.outputs:
            return  # a backbone without a feature map: the top-centre square stays
        wholes = [a.views["whole"] for a in todo]
        energy = self.backbone.embed(wholes, [SALIENCY_OUTPUT])[SALIENCY_OUTPUT]
        pre = self.backbone.preprocess
        for analysis, image, grid in zip(todo, wholes, energy, strict=True):
            analysis.head_box = salient_box(grid, image.size, pre.input_size, pre.fit)
            analysis.views["head"] = crop(image, analysis.head_box)

    def views_from_box(self, image: Image.Image, box: Sequence[int]) -> dict[str, Image.Image]:
        """The views of an image whose head box is already known (no detection)."""
        return {"whole": image, "head": crop(image, tuple(int(v) for v in box))}

    def compute(
        self, views: Sequence[dict[str, Image.Image]], keys: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Feature blocks for a batch of images (each given as its views)."""
        wanted: dict[str, list[str]] = {}
        for key in keys:
            view, feature = split_key(key)
            wanted.setdefault(view, []).append(feature)
        out: dict[str, np.ndarray] = {}
        for view, features in wanted.items():
            images = [v[view] for v in views]
            if HEAD_FEATURE in features:
                out[f"{view}.{HEAD_FEATURE}"] = self._head_vectors(view, views)
                features = [f for f in features if f != HEAD_FEATURE]
            # Whatever is not a hand-made descriptor is a backbone output.
            cnn = [f for f in features if self.needs_backbone([f"{view}.{f}"])]
            if cnn:
                for name, array in self.backbone.embed(images, cnn).items():
                    out[f"{view}.{name}"] = np.asarray(array, dtype=np.float32)
            for feature in features:
                if feature not in cnn:
                    out[f"{view}.{feature}"] = describe(feature, images)
        return {key: out[key] for key in keys}

    @property
    def head(self) -> Head:
        """The trained head of the config (loaded on first use; torch is imported then)."""
        if self._head is None:
            if not self.config.head_dir:
                raise LookalikeError(
                    f"preset {self.config.preset!r} uses the {HEAD_FEATURE!r} feature and needs "
                    "a trained head: pass --head HEAD_DIR (make one with `lookalike train`)"
                )
            from lookalike.train.head import load_head

            self._head = load_head(Path(self.config.head_dir))
        return self._head

    def _head_vectors(self, view: str, views: Sequence[dict[str, Image.Image]]) -> np.ndarray:
        return self.head.image_vectors([v[view] for v in views])  # its own network reads them

    def needs_backbone(self, keys: Sequence[str]) -> bool:
        descriptors = set(list_descriptors())
        return any(split_key(k)[1] not in descriptors for k in keys)

    def backbone_hash(self, keys: Sequence[str] | None = None) -> str:
        """The weights the vectors of `keys` depend on ("" when none uses the backbone)."""
        if not self.needs_backbone(self.config.block_keys if keys is None else keys):
            return ""
        # Options such as the middle stage or flip TTA change the vectors as weights do.
        options = json.dumps(self.backbone.options, sort_keys=True)
        return f"{self.config.backbone}:{self.backbone.weights_hash}:{options}"

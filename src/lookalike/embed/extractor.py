"""From an image to its feature blocks: detect the head, cut the views, compute each block.

A block is "<view>.<feature>"; each feature comes from one feature source (sources.py):
the trained model's, a hand-made descriptor, or a backbone output (one forward pass gives
them all).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from lookalike.config import PipelineConfig, split_key
from lookalike.detect import Detector, create_detector, crop, head_box
from lookalike.detect.salient import SALIENT_MIN_SIDE, salient_box
from lookalike.embed import Backbone
from lookalike.embed.sources import SOURCE_ORDER, SOURCES, BackboneSource, FeatureSource

if TYPE_CHECKING:
    from lookalike.embed.trained_model import TrainedModel

# The backbone output the salient fallback reads (the last feature map, cell by cell).
SALIENCY_OUTPUT = "energy"


@dataclass
class Analysis:
    """What detection found in one image, and the head view derived from it."""

    faces: list[dict[str, Any]]
    head_box: tuple[int, int, int, int]
    fallback: bool
    views: dict[str, Image.Image] = field(repr=False, default_factory=dict)


class FeatureExtractor:
    """Runs detection and feature computation for one pipeline configuration.

    The detector and each feature source's weights are loaded on first use, so code that
    only reads stored vectors never loads a model.
    """

    def __init__(
        self,
        config: PipelineConfig,
        backbone: Backbone | None = None,
        detector: Detector | None = None,
        model: TrainedModel | None = None,
    ) -> None:
        self.config = config
        self._detector = detector
        self.sources = [
            SOURCES.create(name, config=config, backbone=backbone, model=model)
            for name in SOURCE_ORDER
        ]

    def source_of(self, key: str) -> FeatureSource:
        """The source that computes block `key`."""
        feature = split_key(key)[1]
        return next(s for s in self.sources if s.offers(feature))

    def trained_keys(self, keys: Iterable[str] | None = None) -> list[str]:
        """The blocks (of `keys`, else of the config) that a source trained on labels computes."""
        keys = self.config.block_keys if keys is None else keys
        return [key for key in keys if self.source_of(key).trained]

    @property
    def _backbone_source(self) -> BackboneSource:
        return next(s for s in self.sources if isinstance(s, BackboneSource))

    @property
    def backbone(self) -> Backbone:
        return self._backbone_source.backbone

    @property
    def loaded_backbone(self) -> Backbone | None:
        """The backbone if it was loaded already (to share it without loading it)."""
        return self._backbone_source.loaded

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
        """Feature blocks for a batch of images (each given as its views): one call of each
        source per view, for all the features it gives."""
        wanted: dict[tuple[str, int], list[str]] = {}
        for key in keys:
            view, feature = split_key(key)
            wanted.setdefault((view, self.sources.index(self.source_of(key))), []).append(feature)
        out: dict[str, np.ndarray] = {}
        for (view, source), features in wanted.items():
            images = [v[view] for v in views]
            for feature, array in self.sources[source].compute(images, features).items():
                out[f"{view}.{feature}"] = array
        return {key: out[key] for key in keys}

    def fingerprint(self, keys: Sequence[str]) -> str:
        """What the vectors of `keys` depend on besides the code ("" when nothing)."""
        parts = dict.fromkeys(self.source_of(k).fingerprint for k in keys)
        return ":".join(p for p in parts if p)

    def fingerprints(self) -> dict[str, str]:
        """What a collection of the config's blocks records: {manifest key: fingerprint}, the
        backbone's always ("" when no block uses it)."""
        out = {"weights_hash": self.backbone_hash()}
        for key in self.config.block_keys:
            source = self.source_of(key)
            if source.manifest_key and source.manifest_key not in out:
                out[source.manifest_key] = source.fingerprint
        return out

    def stored_fits(self, key: str, recorded: dict[str, str]) -> bool:
        """Whether a block `key` stored under the `recorded` fingerprints is what this
        extractor computes (a backbone output of other weights, or a trained model's output
        of another model, is not)."""
        source = self.source_of(key)
        return source.manifest_key is None or source.fits(recorded.get(source.manifest_key, ""))

    def needs_backbone(self, keys: Sequence[str]) -> bool:
        return any(isinstance(self.source_of(k), BackboneSource) for k in keys)

    def backbone_hash(self, keys: Sequence[str] | None = None) -> str:
        """The weights the vectors of `keys` depend on ("" when none uses the backbone)."""
        if not self.needs_backbone(self.config.block_keys if keys is None else keys):
            return ""
        return self._backbone_source.fingerprint

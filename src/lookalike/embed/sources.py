"""Feature sources: what turns the images of a view into feature vectors.

A block key is "<view>.<feature>"; each feature comes from one source, registered by name
like the backbones:

    model        the network trained on the collection's labels (`lookalike train`):
                 the "v5" feature, needs the config's `model_dir`
    descriptors  the hand-made descriptors (colour histograms, ...): fixed code
    backbone     the CNN's outputs (one forward pass gives every output asked for)

The extractor gives a feature to the first source in SOURCE_ORDER that offers it; the
backbone comes last and takes the rest, since its outputs are known only once it is loaded.
Each source says what its vectors depend on (`fingerprint`), under which manifest key a
collection records that (`manifest_key`), and whether vectors stored under a recorded
fingerprint are still its own (`fits`). No other module names the sources' features.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image

from lookalike.config import PipelineConfig
from lookalike.embed.base import Backbone, create_backbone
from lookalike.embed.descriptors import describe, list_descriptors
from lookalike.errors import LookalikeError
from lookalike.registry import Registry

if TYPE_CHECKING:
    from lookalike.embed.trained_model import TrainedModel

# The feature the trained model computes (named by the v5 preset's blocks).
MODEL_FEATURE = "v5"


class FeatureSource(ABC):
    """Computes some features of a view's images, and says what they depend on."""

    # The manifest entry that records `fingerprint` for a collection's stored blocks
    # (None: nothing can change the vectors but lookalike's own code).
    manifest_key: ClassVar[str | None] = None
    # Whether the source is a network trained on labels (evaluate trains one on a part).
    trained: ClassVar[bool] = False

    def __init__(
        self,
        config: PipelineConfig,
        backbone: Backbone | None = None,
        model: TrainedModel | None = None,
    ) -> None:
        """`backbone`, `model`: already loaded ones to use (each source takes its own)."""
        self.config = config
        self._backbone = backbone
        self._model = model

    @abstractmethod
    def offers(self, feature: str) -> bool:
        """Whether this source computes `feature` (without loading any weights)."""

    @abstractmethod
    def compute(
        self, images: Sequence[Image.Image], features: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """{feature: (N, dims) float32} for the images of one view."""

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """What the vectors depend on besides the code ("" when only the code)."""

    def fits(self, stored: str) -> bool:
        """Whether vectors a collection stored under fingerprint `stored` are this source's."""
        return stored == self.fingerprint


SOURCES: Registry[FeatureSource] = Registry("feature source")
SOURCE_ORDER = ("model", "descriptors", "backbone")


class TrainedModelSource(FeatureSource):
    """The "v5" feature: the trained model's retrieval vector of each view."""

    manifest_key = "model_fingerprint"
    trained = True

    @property
    def model(self) -> TrainedModel:
        """The config's trained model (loaded on first use; torch is imported then)."""
        if self._model is None:
            from lookalike.embed.trained_model import load_model

            self._model = load_model(self._folder())
        return self._model

    def _folder(self) -> Path:
        if not self.config.model_dir:
            raise LookalikeError(
                f"preset {self.config.preset!r} uses the {MODEL_FEATURE!r} feature and "
                "needs a trained model: pass --model MODEL_DIR (make one with "
                "`lookalike train`)"
            )
        return Path(self.config.model_dir)

    def offers(self, feature: str) -> bool:
        return feature == MODEL_FEATURE

    def compute(
        self, images: Sequence[Image.Image], features: Sequence[str]
    ) -> dict[str, np.ndarray]:
        # The model's own network reads the images: no backbone output is re-used.
        return {MODEL_FEATURE: self.model.image_vectors(list(images))}

    @property
    def fingerprint(self) -> str:
        if self._model is not None:
            return self._model.fingerprint
        # From the folder's records: an index run with nothing to compute imports no torch.
        from lookalike.embed.model_files import recorded_fingerprint

        return recorded_fingerprint(self._folder())


class DescriptorSource(FeatureSource):
    """The hand-made descriptors (fixed code: nothing to record)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._names = set(list_descriptors())

    def offers(self, feature: str) -> bool:
        return feature in self._names

    def compute(
        self, images: Sequence[Image.Image], features: Sequence[str]
    ) -> dict[str, np.ndarray]:
        return {feature: describe(feature, list(images)) for feature in features}

    @property
    def fingerprint(self) -> str:
        return ""


class BackboneSource(FeatureSource):
    """The CNN backbone's outputs; every feature no other source offers."""

    manifest_key = "weights_hash"

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = create_backbone(self.config.backbone, **self.config.backbone_options)
        return self._backbone

    @property
    def loaded(self) -> Backbone | None:
        """The backbone if it was loaded already (to share it without loading it)."""
        return self._backbone

    def offers(self, feature: str) -> bool:
        return True

    def compute(
        self, images: Sequence[Image.Image], features: Sequence[str]
    ) -> dict[str, np.ndarray]:
        out = self.backbone.embed(list(images), list(features))
        return {name: np.asarray(array, dtype=np.float32) for name, array in out.items()}

    @property
    def fingerprint(self) -> str:
        # Options such as the middle stage or flip TTA change the vectors as weights do.
        options = json.dumps(self.backbone.options, sort_keys=True)
        return f"{self.config.backbone}:{self.backbone.weights_hash}:{options}"

    def fits(self, stored: str) -> bool:
        wanted = self.fingerprint
        # Collections written before the options joined the hash stored "<backbone>:<weights>".
        legacy = stored.count(":") == 1 and wanted.startswith(f"{stored}:")
        return wanted == stored or legacy


SOURCES.register("model", "a network trained on your labels: the v5 feature")(TrainedModelSource)
SOURCES.register("descriptors", "hand-made descriptors: colour histograms, grids")(DescriptorSource)
SOURCES.register("backbone", "the CNN backbone's outputs")(BackboneSource)

"""The backbone contract, its registry, and the preprocessing shared by all backbones."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from PIL import Image

from lookalike.errors import UnknownNameError
from lookalike.registry import Registry

Fit = Literal["pad", "squash"]


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the square input tensor the weights were trained on.

    `fit="pad"` letterboxes the whole image onto a square of the mean colour (which the
    normalisation turns into zeros), so nothing is cropped away and shapes keep their
    proportions; `fit="squash"` stretches it to the square instead.
    """

    input_size: int
    mean: tuple[float, float, float]  # on 0..1 pixel values
    std: tuple[float, float, float]
    fit: Fit = "pad"


class Backbone(Protocol):
    name: str
    preprocess: Preprocess
    outputs: dict[str, int]  # output name -> dimension
    weights_hash: str  # sha256 of the weights file, or a version tag for weightless backbones
    options: dict[str, object]  # JSON-able settings that change the vectors (flip_tta, ...)

    def embed(
        self, images: Sequence[Image.Image], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]: ...


BACKBONES: Registry[Backbone] = Registry("backbone")
DEFAULT_BACKBONE = "efficientnet-lite0"


def create_backbone(name: str = DEFAULT_BACKBONE, **kwargs: object) -> Backbone:
    return BACKBONES.create(name, **kwargs)


def list_backbones(pattern: str = "*") -> list[str]:
    return BACKBONES.names(pattern)


def fit_square(image: Image.Image, preprocess: Preprocess) -> Image.Image:
    """Resize the whole image to the input square (see `Preprocess.fit`), in RGB."""
    size = preprocess.input_size
    image = image if image.mode == "RGB" else image.convert("RGB")
    # BICUBIC on a downscale filters over the source footprint (antialiased);
    # reducing_gap box-reduces huge photos first, which is much faster and looks the same.
    if preprocess.fit == "squash":
        return image.resize((size, size), Image.BICUBIC, reducing_gap=3.0)
    w, h = image.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = image.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
    fill = tuple(round(m * 255) for m in preprocess.mean)
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(resized, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def to_batch(images: Sequence[Image.Image], preprocess: Preprocess) -> np.ndarray:
    """Stack images into a normalised float32 (N, size, size, 3) array (channels last)."""
    size = preprocess.input_size
    batch = np.empty((len(images), size, size, 3), dtype=np.float32)
    for i, image in enumerate(images):
        batch[i] = np.asarray(fit_square(image, preprocess), dtype=np.float32)
    scale = np.float32(255.0) * np.asarray(preprocess.std, dtype=np.float32)
    batch -= np.float32(255.0) * np.asarray(preprocess.mean, dtype=np.float32)
    batch /= scale
    return batch


def check_outputs(requested: Sequence[str], available: dict[str, int], backbone: str) -> None:
    for out in requested:
        if out not in available:
            close = difflib.get_close_matches(out, list(available), n=2, cutoff=0.4)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(
                f"backbone {backbone!r} has no output {out!r}.{hint} Known: {', '.join(available)}."
            )


def gem_np(features: np.ndarray, p: float = 3.0, eps: float = 1e-6) -> np.ndarray:
    """Generalized-mean pooling over the spatial axes of (N, H, W, C) features."""
    clamped = np.maximum(features, eps)
    return np.mean(clamped**p, axis=(1, 2)) ** (1.0 / p)

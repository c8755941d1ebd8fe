"""CNN backbones: `create_backbone(name).embed(images, outputs) -> {output: (N, D) float32}`.

Importing this package registers every backbone but does not import torch; the
EfficientNet-Lite backbones import it when they are created.
"""

from lookalike.embed import efficientnet_lite, fake
from lookalike.embed.base import (
    BACKBONES,
    DEFAULT_BACKBONE,
    Backbone,
    Preprocess,
    create_backbone,
    fit_square,
    list_backbones,
    to_batch,
)

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "Backbone",
    "Preprocess",
    "create_backbone",
    "efficientnet_lite",
    "fake",
    "fit_square",
    "list_backbones",
    "to_batch",
]

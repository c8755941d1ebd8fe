"""v5: a network tuned on the collection's own labels, one classifier per task.

options   what a run is asked to do (TrainOptions; no torch)
data      labels -> tasks and targets (several labels per picture); stratified splits (numpy only)
trainer   the per-task loss and accuracy
augment   the random views the network trains on
network   the training: an EfficientNet-Lite tuned with cosine task classifiers
pipeline  from a labelled collection to a trained model

The trained model itself (saved, loaded and applied) is lookalike.embed.trained_model's: the
pipeline's stages read it without importing training code.

Names are imported on first use, so `lookalike.train.options` and `.data` load no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "TrainOptions": "options",
    "Targets": "data",
    "Task": "data",
    "encode_targets": "data",
    "stratified_split": "data",
    "NetworkResult": "network",
    "train_model": "pipeline",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)

"""A trained model's folder, read without torch: what the model is, and its fingerprint.

Folders written before the rename (`head.json`, `head.safetensors`) are read too. An index
run asks whether the stored v5 blocks are the model's (`recorded_fingerprint`) without
importing torch or reading the weights; loading the model (trained_model.py) checks the
files against these records.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lookalike.errors import LookalikeError
from lookalike.load.labels import Task

# 2: the tuned network is the only kind (the frozen model on stored features is gone).
FORMAT_VERSION = 2
CONFIG_FILE = "model.json"
WEIGHTS_FILE = "classifiers.safetensors"
# The names before "head" came to mean the crop only; folders trained then are read as is.
LEGACY_FILES = ("head.json", "head.safetensors")
# The tuned network (its whole state dict, safetensors).
BACKBONE_FILE = "backbone.safetensors"


# The retrieval vector a trained model gives: task probabilities (the article's), logits, the
# tuned GeM itself, or the probabilities and the GeM side by side (each at unit length).
Output = Literal["probs", "logits", "embedding", "probs+embedding"]
OUTPUTS: tuple[Output, ...] = ("probs", "logits", "embedding", "probs+embedding")
# What `lookalike train` gives by default (docs/v5.md, round 6).
DEFAULT_OUTPUT: Output = "probs+embedding"
# The network output that is trained and compared (GeM of the last feature map).
EMBEDDING = "gem"


class ModelError(LookalikeError):
    """A model folder is missing or damaged, or was written by a lookalike that differs."""


@dataclass(frozen=True)
class ModelConfig:
    tasks: tuple[Task, ...]
    network: str  # the tuned network, e.g. "efficientnet-lite2"
    backbone_hash: str  # "<network>:<sha256 of backbone.safetensors>"
    embed_dim: int  # the network's GeM width (the classifiers' input)
    output: Output = "probs"
    trained: dict[str, Any] = field(default_factory=dict)  # images, epochs, accuracy, seconds

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tasks"] = [t.to_json() for t in self.tasks]
        return {"format_version": FORMAT_VERSION, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        version = data.pop("format_version", None)
        if version == 1 and data.get("network"):  # a tuned network of the first format
            data = {k: v for k, v in data.items() if k not in ("features", "hidden", "mode")}
        elif version == 1 and data.get("mode") == "finetune":
            raise ValueError(
                "a finetune model from an earlier lookalike (the backbone replaced the "
                "collection's); train it again with `lookalike train`"
            )
        elif version == 1:
            raise ValueError(
                "a frozen model, a kind lookalike no longer trains (it scored no better than "
                "the unlabelled default); train a new model with `lookalike train`"
            )
        elif version != FORMAT_VERSION:
            raise ValueError(f"format_version is not {FORMAT_VERSION}")
        data["tasks"] = tuple(Task(t["name"], tuple(t["classes"])) for t in data["tasks"])
        if data.get("output") not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}")
        return cls(**data)


def model_files(folder: Path) -> tuple[Path, Path]:
    """The config and classifier files of a model folder, of either naming."""
    config, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config.is_file() and (folder / LEGACY_FILES[0]).is_file():
        return folder / LEGACY_FILES[0], folder / LEGACY_FILES[1]
    return config, weights


def read_config(folder: Path) -> tuple[ModelConfig, str]:
    """The model's config and the sha256 its classifiers file must have."""
    config_path, weights = model_files(folder)
    if not config_path.is_file() or not weights.is_file():
        raise ModelError(
            f"{folder}: not a trained model (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
            "make one with `lookalike train`"
        )
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
        expected = data.pop("weights_sha256")
        return ModelConfig.from_json(data), expected
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{config_path}: not a model this lookalike reads ({exc})") from exc


def fingerprint(config: ModelConfig, weights_sha256: str) -> str:
    """What the v5 vectors depend on: the classifiers, the network and the output."""
    return f"{weights_sha256}:{config.backbone_hash}:{config.output}"


def recorded_fingerprint(folder: Path) -> str:
    """The fingerprint the model folder's records give (its files are checked on loading)."""
    config, weights_sha256 = read_config(Path(folder))
    return fingerprint(config, weights_sha256)

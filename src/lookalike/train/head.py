"""A trained v5 head on disk: its network, its task classifiers, and `head.json`.

`backbone.safetensors` holds the tuned network's state dict and `head.safetensors` the
task classifiers (tensors only, no pickle); `head.json` says what the head predicts (tasks
and class names), which network it tuned, the sha256 of both files (a changed or missing
file is refused, naming it) and which output is the retrieval vector.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from safetensors.torch import load_file, save_file

from lookalike.embed import Backbone, create_backbone
from lookalike.errors import LookalikeError
from lookalike.fileio import atomic_write_json
from lookalike.train.data import Task
from lookalike.train.network import EMBEDDING, OUTPUTS, Output, TaskClassifiers
from lookalike.vectors import l2_normalize

# 2: the tuned network is the only kind (the frozen head on stored features is gone).
FORMAT_VERSION = 2
CONFIG_FILE = "head.json"
WEIGHTS_FILE = "head.safetensors"
# The tuned network (its whole state dict, safetensors).
BACKBONE_FILE = "backbone.safetensors"


class HeadError(LookalikeError):
    """A head folder is missing or damaged, or was written by a lookalike that differs."""


@dataclass(frozen=True)
class HeadConfig:
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
    def from_json(cls, data: dict[str, Any]) -> HeadConfig:
        data = dict(data)
        version = data.pop("format_version", None)
        if version == 1 and data.get("network"):  # a tuned network of the first format
            data = {k: v for k, v in data.items() if k not in ("features", "hidden", "mode")}
        elif version == 1 and data.get("mode") == "finetune":
            raise ValueError(
                "a finetune head from an earlier lookalike (the backbone replaced the "
                "collection's); train it again with `lookalike train`"
            )
        elif version == 1:
            raise ValueError(
                "a frozen head, a kind lookalike no longer trains (it scored no better than "
                "the unlabelled default); train a new head with `lookalike train`"
            )
        elif version != FORMAT_VERSION:
            raise ValueError(f"format_version is not {FORMAT_VERSION}")
        data["tasks"] = tuple(Task(t["name"], tuple(t["classes"])) for t in data["tasks"])
        if data.get("output") not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}")
        return cls(**data)


class Head:
    """A trained head, ready to turn views into v5 vectors through its tuned network."""

    def __init__(
        self,
        config: HeadConfig,
        classifiers: TaskClassifiers,
        path: Path | None = None,
        weights_sha256: str = "",
    ):
        self.config = config
        self.model = classifiers.eval()
        self.path = path
        self.weights_sha256 = weights_sha256  # of head.safetensors ("" before it is saved)
        self._network: Backbone | None = None

    @property
    def fingerprint(self) -> str:
        """What the v5 vectors depend on: the classifiers, the network and the output."""
        if not self.weights_sha256:
            raise HeadError("an unsaved head has no fingerprint; save it with save_head first")
        return f"{self.weights_sha256}:{self.config.backbone_hash}:{self.config.output}"

    @property
    def network(self) -> Backbone:
        """The tuned network (loaded on first use)."""
        if self._network is None:
            if self.path is None:
                raise HeadError("only a saved head has a network")
            self._network = create_backbone(
                self.config.network, weights_path=self.path / BACKBONE_FILE
            )
        return self._network

    def image_vectors(self, images: list[Image.Image]) -> np.ndarray:
        """(N, dims) float32 retrieval vectors of images (one view each)."""
        gem = self.network.embed(images, [EMBEDDING])[EMBEDDING]
        return self.model.vectors(l2_normalize(gem), self.config.output)

    def with_output(self, output: Output) -> Head:
        """The same weights giving another output (to compare probs, logits, embedding)."""
        config = HeadConfig(**{**asdict(self.config), "tasks": self.config.tasks, "output": output})
        head = Head(config, self.model, self.path, self.weights_sha256)
        head._network = self._network  # the same network, loaded once
        return head


def _save_tensors(path: Path, state: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp)
    tmp.replace(path)


def save_network(folder: Path, network: str, state: Mapping[str, Any]) -> str:
    """Write the tuned network (its state dict) into the head folder; the
    `HeadConfig.backbone_hash` that names it ("<network>:<sha256 of the file>")."""
    path = Path(folder) / BACKBONE_FILE
    _save_tensors(path, state)
    return f"{network}:{_sha256(path)}"


def save_head(folder: Path, config: HeadConfig, classifiers: TaskClassifiers) -> Path:
    folder = Path(folder)
    weights = folder / WEIGHTS_FILE
    _save_tensors(weights, classifiers.state_dict())
    data = config.to_json()
    data["weights_sha256"] = _sha256(weights)
    atomic_write_json(folder / CONFIG_FILE, data)  # written last: a complete head has it
    return folder


def load_head(folder: Path) -> Head:
    folder = Path(folder)
    config_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights.is_file():
        raise HeadError(
            f"{folder}: not a trained head (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
            "make one with `lookalike train`"
        )
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
        expected = data.pop("weights_sha256")
        config = HeadConfig.from_json(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise HeadError(f"{config_path}: not a head this lookalike reads ({exc})") from exc
    if _sha256(weights) != expected:
        raise HeadError(f"{weights}: does not match {CONFIG_FILE} (changed since training?)")
    _check_network(folder, config)
    classifiers = TaskClassifiers(config.embed_dim, [len(t.classes) for t in config.tasks])
    try:
        classifiers.load_state_dict(load_file(weights))
    except (RuntimeError, OSError) as exc:
        raise HeadError(f"{weights}: tensors do not fit {CONFIG_FILE} ({exc})") from exc
    return Head(config, classifiers, folder, expected)


def _check_network(folder: Path, config: HeadConfig) -> None:
    """The network file must be there and be the one the head was trained with."""
    network = folder / BACKBONE_FILE
    if not network.is_file():
        raise HeadError(f"{folder}: a trained head needs its {BACKBONE_FILE}, which is missing")
    if config.backbone_hash != f"{config.network}:{_sha256(network)}":
        raise HeadError(f"{network}: does not match {CONFIG_FILE} (changed since training?)")


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

"""A network trained on a collection's labels (`lookalike train`), on disk and applied.

The model computes the "v5" feature (embed/sources.py): its tuned network reads a view and
its task classifiers turn the network's GeM into the retrieval vector. On disk, a model
folder holds `backbone.safetensors` (the tuned network's state dict) and
`classifiers.safetensors` (the task classifiers): tensors only, no pickle; `model.json` says
what the model predicts (tasks and class names), which network it tuned, the sha256 of both
files (a changed or missing file is refused, naming it) and which output is the retrieval
vector. Folders written before the rename (`head.json`, `head.safetensors`) are read too.
Training is lookalike.train's; this module loads no training code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from lookalike.embed import Backbone, create_backbone
from lookalike.errors import LookalikeError
from lookalike.fileio import atomic_write_json
from lookalike.load.labels import Task
from lookalike.vectors import l2_normalize

# 2: the tuned network is the only kind (the frozen model on stored features is gone).
FORMAT_VERSION = 2
CONFIG_FILE = "model.json"
WEIGHTS_FILE = "classifiers.safetensors"
# The names before "head" came to mean the crop only; folders trained then are read as is.
LEGACY_FILES = ("head.json", "head.safetensors")
# The tuned network (its whole state dict, safetensors).
BACKBONE_FILE = "backbone.safetensors"


# The retrieval vector a trained model gives: task probabilities (the article's), logits, or the
# tuned GeM itself.
Output = Literal["probs", "logits", "embedding"]
OUTPUTS: tuple[Output, ...] = ("probs", "logits", "embedding")
# The network output that is trained and compared (GeM of the last feature map).
EMBEDDING = "gem"
# CosFace: logits = SCALE * (cos - MARGIN on the true classes); measured with these values.
SCALE, MARGIN = 16.0, 0.2


class TaskClassifiers(nn.Module):
    """One cosine classifier per task on a unit-length embedding."""

    def __init__(self, dim: int, task_sizes: Sequence[int]) -> None:
        super().__init__()
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(n, dim) / dim**0.5) for n in task_sizes
        )

    def forward(
        self, z: torch.Tensor, hot: Sequence[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """Each task's logits; with `hot` targets (training), the cosine of each true class
        less MARGIN."""
        logits = []
        for t, w in enumerate(self.weights):
            cos = z @ nn.functional.normalize(w, dim=1).T
            if hot is not None:
                cos = cos - MARGIN * (hot[t] > 0).to(cos.dtype)
            logits.append(SCALE * cos)
        return logits

    @torch.inference_mode()
    def vectors(self, z: np.ndarray, output: Output) -> np.ndarray:
        """The retrieval vector of each embedding row: itself, or the task outputs."""
        if output == "embedding":
            return np.asarray(z, dtype=np.float32)
        logits = self(torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32)))
        parts = logits if output == "logits" else [lg.softmax(dim=1) for lg in logits]
        return torch.cat(parts, dim=1).numpy().astype(np.float32)


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


class TrainedModel:
    """A trained model, ready to turn views into v5 vectors through its tuned network."""

    def __init__(
        self,
        config: ModelConfig,
        classifiers: TaskClassifiers,
        path: Path | None = None,
        weights_sha256: str = "",
    ):
        self.config = config
        self.classifiers = classifiers.eval()
        self.path = path
        self.weights_sha256 = weights_sha256  # of the classifiers file ("" before it is saved)
        self._network: Backbone | None = None

    @property
    def fingerprint(self) -> str:
        """What the v5 vectors depend on: the classifiers, the network and the output."""
        if not self.weights_sha256:
            raise ModelError("an unsaved model has no fingerprint; save it with save_model first")
        return f"{self.weights_sha256}:{self.config.backbone_hash}:{self.config.output}"

    @property
    def network(self) -> Backbone:
        """The tuned network (loaded on first use)."""
        if self._network is None:
            if self.path is None:
                raise ModelError("only a saved model has a network")
            self._network = create_backbone(
                self.config.network, weights_path=self.path / BACKBONE_FILE
            )
        return self._network

    def image_vectors(self, images: list[Image.Image]) -> np.ndarray:
        """(N, dims) float32 retrieval vectors of images (one view each)."""
        gem = self.network.embed(images, [EMBEDDING])[EMBEDDING]
        return self.classifiers.vectors(l2_normalize(gem), self.config.output)

    def with_output(self, output: Output) -> TrainedModel:
        """The same weights giving another output (to compare probs, logits, embedding)."""
        config = ModelConfig(
            **{**asdict(self.config), "tasks": self.config.tasks, "output": output}
        )
        model = TrainedModel(config, self.classifiers, self.path, self.weights_sha256)
        model._network = self._network  # the same network, loaded once
        return model


def _save_tensors(path: Path, state: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp)
    tmp.replace(path)


def save_network(folder: Path, network: str, state: Mapping[str, Any]) -> str:
    """Write the tuned network (its state dict) into the model folder; the
    `ModelConfig.backbone_hash` that names it ("<network>:<sha256 of the file>")."""
    path = Path(folder) / BACKBONE_FILE
    _save_tensors(path, state)
    return f"{network}:{_sha256(path)}"


def save_model(folder: Path, config: ModelConfig, classifiers: TaskClassifiers) -> Path:
    folder = Path(folder)
    weights = folder / WEIGHTS_FILE
    _save_tensors(weights, classifiers.state_dict())
    data = config.to_json()
    data["weights_sha256"] = _sha256(weights)
    atomic_write_json(folder / CONFIG_FILE, data)  # written last: a complete model has it
    return folder


def load_model(folder: Path) -> TrainedModel:
    folder = Path(folder)
    config_path, weights = _model_files(folder)
    if not config_path.is_file() or not weights.is_file():
        raise ModelError(
            f"{folder}: not a trained model (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
            "make one with `lookalike train`"
        )
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
        expected = data.pop("weights_sha256")
        config = ModelConfig.from_json(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{config_path}: not a model this lookalike reads ({exc})") from exc
    if _sha256(weights) != expected:
        raise ModelError(f"{weights}: does not match {CONFIG_FILE} (changed since training?)")
    _check_network(folder, config)
    classifiers = TaskClassifiers(config.embed_dim, [len(t.classes) for t in config.tasks])
    try:
        classifiers.load_state_dict(load_file(weights))
    except (RuntimeError, OSError) as exc:
        raise ModelError(f"{weights}: tensors do not fit {CONFIG_FILE} ({exc})") from exc
    return TrainedModel(config, classifiers, folder, expected)


def _model_files(folder: Path) -> tuple[Path, Path]:
    """The config and classifier files of a model folder, of either naming."""
    config, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config.is_file() and (folder / LEGACY_FILES[0]).is_file():
        return folder / LEGACY_FILES[0], folder / LEGACY_FILES[1]
    return config, weights


def _check_network(folder: Path, config: ModelConfig) -> None:
    """The network file must be there and be the one the model was trained with."""
    network = folder / BACKBONE_FILE
    if not network.is_file():
        raise ModelError(f"{folder}: a trained model needs its {BACKBONE_FILE}, which is missing")
    if config.backbone_hash != f"{config.network}:{_sha256(network)}":
        raise ModelError(f"{network}: does not match {CONFIG_FILE} (changed since training?)")


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

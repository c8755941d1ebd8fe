"""A network trained on a collection's labels (`lookalike train`), saved, loaded and applied.

The model computes the "v5" feature (embed/sources.py): its tuned network reads a view and
its task classifiers turn the network's GeM into the retrieval vector. On disk, a model
folder holds `backbone.safetensors` (the tuned network's state dict) and
`classifiers.safetensors` (the task classifiers): tensors only, no pickle; `model.json` says
what the model predicts (tasks and class names), which network it tuned, the sha256 of both
files (a changed or missing file is refused, naming it) and which output is the retrieval
vector (model_files.py reads it without torch). Training is lookalike.train's; this module
loads no training code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from lookalike.embed import Backbone, create_backbone
from lookalike.embed.model_files import (
    BACKBONE_FILE,
    CONFIG_FILE,
    EMBEDDING,
    OUTPUTS,
    WEIGHTS_FILE,
    ModelConfig,
    ModelError,
    Output,
    fingerprint,
    model_files,
    read_config,
)
from lookalike.fileio import atomic_write_json
from lookalike.vectors import l2_normalize

__all__ = [  # the model folder's names, from the module that reads it without torch
    "EMBEDDING",
    "OUTPUTS",
    "ModelConfig",
    "ModelError",
    "Output",
    "TaskClassifiers",
    "TrainedModel",
    "load_model",
    "save_model",
    "save_network",
]

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
        """The retrieval vector of each unit-length embedding row: itself, the task outputs,
        or the task probabilities (scaled to unit length) beside it, halves of equal weight."""
        z = np.asarray(z, dtype=np.float32)
        if output == "embedding":
            return z
        logits = self(torch.from_numpy(np.ascontiguousarray(z)))
        parts = logits if output == "logits" else [lg.softmax(dim=1) for lg in logits]
        tasks = torch.cat(parts, dim=1).numpy().astype(np.float32)
        if output == "probs+embedding":
            return np.concatenate([l2_normalize(tasks), z], axis=1) / np.sqrt(2, dtype=np.float32)
        return tasks


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
        return fingerprint(self.config, self.weights_sha256)

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
    config, expected = read_config(folder)
    weights = model_files(folder)[1]
    if _sha256(weights) != expected:
        raise ModelError(f"{weights}: does not match {CONFIG_FILE} (changed since training?)")
    _check_network(folder, config)
    classifiers = TaskClassifiers(config.embed_dim, [len(t.classes) for t in config.tasks])
    try:
        classifiers.load_state_dict(load_file(weights))
    except (RuntimeError, OSError) as exc:
        raise ModelError(f"{weights}: tensors do not fit {CONFIG_FILE} ({exc})") from exc
    return TrainedModel(config, classifiers, folder, expected)


def _check_network(folder: Path, config: ModelConfig) -> None:
    """The network file must be there and be the one the model was trained with."""
    network = folder / BACKBONE_FILE
    if not network.is_file():
        raise ModelError(f"{folder}: a trained model needs its {BACKBONE_FILE}, which is missing")
    if config.backbone_hash != f"{config.network}:{_sha256(network)}":
        raise ModelError(f"{network}: does not match {CONFIG_FILE} (changed since training?)")


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

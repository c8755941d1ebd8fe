"""A trained head on disk: `head.safetensors` (tensors only, no pickle) and `head.json`.

`head.json` says what the head was trained on (the feature recipe: backbone, weights hash,
base features and their dims), what it predicts (tasks and class names) and which output
is the retrieval vector. A `finetune` head is a network of its own: it reads the images
(views) through its tuned EfficientNet (`backbone.safetensors`, `HeadConfig.network`) and
its task classifiers, not the collection's stored features. Applying a head to features it
was not trained on would give vectors that look fine and mean nothing, so
`Head.check_features` refuses, naming what differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from lookalike.embed import Backbone, create_backbone
from lookalike.errors import LookalikeError
from lookalike.fileio import atomic_write_json
from lookalike.train.data import Task
from lookalike.train.model import OUTPUTS, MultiTaskHead, Output, stack_features
from lookalike.vectors import l2_normalize

FORMAT_VERSION = 1
CONFIG_FILE = "head.json"
WEIGHTS_FILE = "head.safetensors"
# The fine-tuned backbone of a `finetune` head (the whole state dict, safetensors).
BACKBONE_FILE = "backbone.safetensors"


class HeadError(LookalikeError):
    """A head folder is missing or damaged, or does not fit the features it is given."""


@dataclass(frozen=True)
class HeadConfig:
    tasks: tuple[Task, ...]
    # "<backbone>:<weights sha256>" the base features came from ("" for descriptors only),
    # as FeatureExtractor.backbone_hash gives it.
    backbone_hash: str
    features: dict[str, int]  # base feature name -> dim, in input order (the recipe)
    output: Output = "probs"
    hidden: int = 512
    embed_dim: int = 64
    mode: str = "frozen"
    trained: dict[str, Any] = field(default_factory=dict)  # images, epochs, accuracies, seconds
    # A `finetune` head's own network (e.g. "efficientnet-lite2"); "" for a frozen head.
    network: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tasks"] = [t.to_json() for t in self.tasks]
        # Pairs, not an object: the order is the input order, and JSON writers sort keys.
        data["features"] = [[name, dim] for name, dim in self.features.items()]
        return {"format_version": FORMAT_VERSION, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeadConfig:
        data = dict(data)
        if data.pop("format_version", None) != FORMAT_VERSION:
            raise ValueError(f"format_version is not {FORMAT_VERSION}")
        data["tasks"] = tuple(Task(t["name"], tuple(t["classes"])) for t in data["tasks"])
        data["features"] = {str(name): int(dim) for name, dim in data["features"]}
        if data.get("output") not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}")
        return cls(**data)


class Head:
    """A trained head, ready to turn base features (frozen) or views (finetune) into vectors."""

    def __init__(
        self,
        config: HeadConfig,
        model: nn.Module,  # MultiTaskHead (frozen) or network.TaskClassifiers (finetune)
        path: Path | None = None,
        weights_sha256: str = "",
    ):
        self.config = config
        self.model = model.eval()
        self.path = path
        self.weights_sha256 = weights_sha256  # of head.safetensors ("" before it is saved)
        self._network: Backbone | None = None

    @property
    def fingerprint(self) -> str:
        """What the v5 vectors depend on besides the base features: weights and output."""
        if not self.weights_sha256:
            raise HeadError("an unsaved head has no fingerprint; save it with save_head first")
        return f"{self.weights_sha256}:{self.config.backbone_hash}:{self.config.output}"

    @property
    def reads_images(self) -> bool:
        """True for a `finetune` head: its vectors come from the views through its network."""
        return bool(self.config.network)

    @property
    def network(self) -> Backbone:
        """The tuned network of a `finetune` head (loaded on first use)."""
        if self._network is None:
            if not self.reads_images or self.path is None:
                raise HeadError("only a saved finetune head has a network")
            self._network = create_backbone(
                self.config.network, weights_path=self.path / BACKBONE_FILE
            )
        return self._network

    def image_vectors(self, images: list[Image.Image]) -> np.ndarray:
        """(N, dims) float32 retrieval vectors of images (one view each) of a finetune head."""
        from lookalike.train.network import EMBEDDING

        gem = self.network.embed(images, [EMBEDDING])[EMBEDDING]
        return self.model.vectors(l2_normalize(gem), self.config.output)

    @property
    def features(self) -> list[str]:
        return list(self.config.features)

    def with_output(self, output: Output) -> Head:
        """The same weights giving another output (to compare probs, logits, embedding)."""
        config = HeadConfig(**{**asdict(self.config), "tasks": self.config.tasks, "output": output})
        head = Head(config, self.model, self.path, self.weights_sha256)
        head._network = self._network  # the same network, loaded once
        return head

    def check_features(self, backbone_hash: str, dims: Mapping[str, int]) -> None:
        """Raise HeadError naming every way these base features differ from the training ones."""
        want = self.config
        problems = []
        if want.backbone_hash != backbone_hash:
            problems.append(
                f"backbone {backbone_hash[:30]!r}, trained on {want.backbone_hash[:30]!r}"
            )
        for name, dim in want.features.items():
            if name not in dims:
                problems.append(f"feature {name!r} is missing")
            elif dims[name] != dim:
                problems.append(f"feature {name!r} has {dims[name]} dims, trained on {dim}")
        if problems:
            raise HeadError(
                f"{self.path or 'the head'}: was trained on other features "
                f"({'; '.join(problems)}); train a head for these features with `lookalike train`"
            )

    def vectors(self, base: Mapping[str, np.ndarray], backbone_hash: str) -> np.ndarray:
        """(N, output_dim) float32 from the base features of one view."""
        self.check_features(backbone_hash, {f: int(np.shape(v)[1]) for f, v in base.items()})
        return self.model.vectors(stack_features(base, self.features), self.config.output)


def _save_tensors(path: Path, state: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp)
    tmp.replace(path)


def save_network(folder: Path, network: str, state: Mapping[str, Any]) -> str:
    """Write a finetune head's network (its state dict) into the head folder; the
    `HeadConfig.backbone_hash` that names it ("<network>:<sha256 of the file>")."""
    path = Path(folder) / BACKBONE_FILE
    _save_tensors(path, state)
    return f"{network}:{_sha256(path)}"


def save_head(folder: Path, config: HeadConfig, model: MultiTaskHead) -> Path:
    folder = Path(folder)
    weights = folder / WEIGHTS_FILE
    _save_tensors(weights, model.state_dict())
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
        raise HeadError(f"{config_path}: not a head config this lookalike reads ({exc})") from exc
    if _sha256(weights) != expected:
        raise HeadError(f"{weights}: does not match {CONFIG_FILE} (changed since training?)")
    if config.mode == "finetune":
        _check_network(folder, config)
    model = _build(config)
    try:
        model.load_state_dict(load_file(weights))
    except (RuntimeError, OSError) as exc:
        raise HeadError(f"{weights}: tensors do not fit {CONFIG_FILE} ({exc})") from exc
    return Head(config, model, folder, expected)


def _check_network(folder: Path, config: HeadConfig) -> None:
    """A finetune head's network file must be there and be the one it was trained with."""
    if not config.network:
        raise HeadError(
            f"{folder}: a finetune head from an earlier lookalike (the backbone replaced the "
            "collection's); train it again with `lookalike train --mode finetune`"
        )
    network = folder / BACKBONE_FILE
    if not network.is_file():
        raise HeadError(f"{folder}: a fine-tuned head needs its {BACKBONE_FILE}, which is missing")
    if config.backbone_hash != f"{config.network}:{_sha256(network)}":
        raise HeadError(f"{network}: does not match {CONFIG_FILE} (changed since training?)")


def _build(config: HeadConfig) -> nn.Module:
    sizes: Sequence[int] = [len(t.classes) for t in config.tasks]
    if config.network:
        from lookalike.train.network import TaskClassifiers

        return TaskClassifiers(config.embed_dim, sizes)
    in_dim = sum(config.features.values())
    return MultiTaskHead(in_dim, sizes, hidden=config.hidden, embed_dim=config.embed_dim)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

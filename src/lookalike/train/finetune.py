"""The `finetune` mode: the last stage of EfficientNet-Lite and its head conv train with the head.

It starts from a head trained in the frozen mode (so the new layers start from a good
solution and the input standardisation is already known), then trains that head together
with the backbone's last stage, on the images themselves (both views, randomly mirrored and
shifted every epoch). Batch-norm statistics stay frozen: the batches are small. The epoch
with the best validation accuracy is kept, as in the frozen mode. One epoch costs a forward
pass of the backbone per view of every training image: minutes on a CPU, seconds on a GPU.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from tqdm import tqdm

from lookalike.config import VIEWS
from lookalike.embed import create_backbone
from lookalike.embed.base import to_batch
from lookalike.errors import LookalikeError
from lookalike.features import FeatureExtractor
from lookalike.train.augment import shifted
from lookalike.train.data import Task, stratified_split
from lookalike.train.model import MultiTaskHead
from lookalike.train.trainer import FINETUNE_LAYERS, TrainOptions, accuracy, loss_of


@dataclass
class FinetuneResult:
    model: MultiTaskHead
    backbone_state: dict[str, torch.Tensor]
    best_epoch: int
    val_accuracy: dict[str, float]
    seconds: float


def check_finetunable(backbone: str) -> None:
    """Fail early (before any training) for a backbone this mode cannot train."""
    if not backbone.startswith("efficientnet-lite"):
        raise LookalikeError(
            f"--mode finetune needs an EfficientNet-Lite backbone, not {backbone!r}"
        )


def trainable_parameters(net: nn.Module, layers: str = "last") -> list[nn.Parameter]:
    """Freeze the EfficientNet `net` but the layers to train; those parameters.

    "last": its last stage and head conv (the batch-norm affine parameters with them);
    "all": every layer but the stem, which stays as ImageNet trained it (measured on the CPU
    in benchmarks/v5_full_finetune.py: the better features on anime-faces-dev).
    """
    if layers not in FINETUNE_LAYERS:
        raise LookalikeError(f"unknown finetune layers {layers!r}: use one of {FINETUNE_LAYERS}")
    blocks = list(net._blocks)
    last = blocks[-1]._block_args
    # The last stage: the trailing blocks that share the last block's output width.
    start = 0 if layers == "all" else len(blocks) - 1
    while start > 0 and blocks[start - 1]._block_args.output_filters == last.output_filters:
        start -= 1
    trained = [*blocks[start:], net._conv_head, net._bn1]
    for p in net.parameters():
        p.requires_grad_(False)
    params = [p for module in trained for p in module.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def _augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    image = shifted(image, rng)
    return ImageOps.mirror(image) if rng.random() < 0.5 else image


class _Joint:
    """Backbone outputs (with autograd) and descriptors -> the head's input rows."""

    def __init__(self, extractor: FeatureExtractor, features: Sequence[str], device: str) -> None:
        self.backbone = extractor.backbone
        self.extractor = extractor
        self.features = list(features)
        self.cnn = [f for f in features if extractor.needs_backbone([f"whole.{f}"])]
        self.device = torch.device(device)

    def inputs(self, images: Sequence[Image.Image]) -> torch.Tensor:
        batch = to_batch(images, self.backbone.preprocess)
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device)
        parts = self.backbone.outputs_of(x, self.cnn)
        described = [f for f in self.features if f not in self.cnn]
        if described:
            keys = [f"whole.{f}" for f in described]
            for key, array in self.extractor.compute([{"whole": i} for i in images], keys).items():
                parts[key.split(".", 1)[1]] = torch.from_numpy(array).to(self.device)
        # The same input as `stack_features`: each feature L2-normalised, in recipe order.
        return torch.cat([nn.functional.normalize(parts[f], dim=1) for f in self.features], 1)


def finetune(
    extractor: FeatureExtractor,
    views: Sequence[dict[str, Image.Image]],
    targets: np.ndarray,
    tasks: Sequence[Task],
    features: Sequence[str],
    head: MultiTaskHead,
    options: TrainOptions,
) -> FinetuneResult:
    """Train `head` (from the frozen mode) with the last stage of a fresh copy of the backbone.

    `views`: the views of each training image; `targets`: their (N, tasks) class ids.
    """
    start = time.perf_counter()
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    # A fresh eager copy: the extractor's own backbone (perhaps an ONNX session) stays as is.
    config = extractor.config
    eager = create_backbone(config.backbone, **config.backbone_options, runtime="torch")
    own = FeatureExtractor(config, backbone=eager)
    joint = _Joint(own, features, options.device)
    net = joint.backbone.torch_model().to(joint.device)
    params = trainable_parameters(net, options.finetune_layers)
    net.eval()  # batch-norm statistics stay as trained on ImageNet
    head = copy.deepcopy(head).to(joint.device)
    optimiser = torch.optim.AdamW(
        [{"params": params, "lr": options.lr * 0.1}, {"params": head.parameters()}],
        lr=options.lr * 0.3,
        weight_decay=options.weight_decay,
    )
    strata = [str(v) for v in targets[:, 0]]
    if len(targets) >= 4 and options.val_fraction > 0:
        val_rows, train_rows = stratified_split(strata, options.val_fraction, options.seed)
    else:
        train_rows, val_rows = np.arange(len(targets)), np.zeros(0, dtype=np.int64)
    samples = [(r, v) for r in train_rows for v in VIEWS]
    y_all = torch.from_numpy(targets).to(joint.device)

    def validate() -> tuple[dict[str, float], float]:
        with torch.no_grad():
            x = torch.cat([joint.inputs([views[r][v] for r in val_rows]) for v in VIEWS])
        y = torch.cat([y_all[torch.from_numpy(val_rows)]] * len(VIEWS))
        return accuracy(head, x, y, tasks)

    best = (-1.0, -np.inf)
    best_epoch, best_acc = 0, {}
    best_state = (copy.deepcopy(net.state_dict()), copy.deepcopy(head.state_dict()))
    if len(val_rows):
        acc, val_loss = validate()
        best, best_acc = (float(np.mean(list(acc.values()))), -val_loss), acc
    for epoch in range(1, options.finetune_epochs + 1):
        order = rng.permutation(len(samples))
        bar = tqdm(
            total=len(samples),
            desc=f"fine-tuning, epoch {epoch}",
            unit="view",
            disable=not options.progress,
            file=sys.stderr,
        )
        head.train()
        for batch in np.array_split(order, max(1, -(-len(order) // options.batch_size))):
            picked = [samples[i] for i in batch]
            x = joint.inputs([_augment(views[r][v], rng) for r, v in picked])
            x = x + options.noise * head.std * torch.randn_like(x)
            y = y_all[torch.tensor([r for r, _ in picked])]
            loss = loss_of(head(x)[1], y, options.label_smoothing)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            bar.update(len(picked))
        bar.close()
        if not len(val_rows):
            best_epoch = epoch
            best_state = (copy.deepcopy(net.state_dict()), copy.deepcopy(head.state_dict()))
            continue
        acc, val_loss = validate()
        shown = " ".join(f"{k} {v:.3f}" for k, v in acc.items())
        if options.progress:
            print(f"fine-tune epoch {epoch}  val acc: {shown}", file=sys.stderr)
        score = (float(np.mean(list(acc.values()))), -val_loss)
        if score > best:
            best, best_epoch, best_acc = score, epoch, acc
            best_state = (copy.deepcopy(net.state_dict()), copy.deepcopy(head.state_dict()))
    net.load_state_dict(best_state[0])
    head.load_state_dict(best_state[1])
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return FinetuneResult(
        head.cpu().eval(), state, best_epoch, best_acc, time.perf_counter() - start
    )

"""The `finetune` mode: an EfficientNet-Lite tuned end to end on the collection's labels.

This is the article's v5 network made reproducible on a CPU (docs/v5.md, round 4): every
layer but the stem trains (`layers="all"`, or only the last stage with `"last"`), with one
cosine classifier per task on the network's GeM features. The classifiers compare the
L2-normalised GeM with normalised class weights and train with an additive margin (CosFace,
Wang et al. 2018), so training separates the classes by the very angle that retrieval
compares: the tuned GeM itself is the retrieval embedding. Batch-norm statistics stay as
ImageNet set them (batches of 32 are too small to re-estimate them).

Each epoch sees every training image once, through its head crop or its whole image at
random, through a strong random view (`augment.strong_view`). AdamW with a one-cycle
schedule; a stratified validation split gives per-task accuracy each epoch, and the epoch
with the best one is kept (early stopping after `patience` epochs without progress).
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from lookalike.config import VIEWS
from lookalike.embed import create_backbone
from lookalike.embed.base import to_batch
from lookalike.embed.efficientnet_lite import EfficientNetLite
from lookalike.errors import LookalikeError
from lookalike.train.augment import strong_view
from lookalike.train.data import MISSING, Task, stratified_split
from lookalike.train.model import Output
from lookalike.train.trainer import FINETUNE_LAYERS, TrainOptions, loss_of, task_accuracy

# The network output that is trained and compared (GeM of the last feature map).
EMBEDDING = "gem"
BATCH = 32
# CosFace: logits = SCALE * (cos - MARGIN on the true class); measured with these values.
SCALE, MARGIN = 16.0, 0.2
# One-cycle peak learning rates: the pretrained layers move ten times slower.
BACKBONE_LR, CLASSIFIER_LR = 3e-4, 3e-3


class TaskClassifiers(nn.Module):
    """One cosine classifier per task on a unit-length embedding."""

    def __init__(self, dim: int, task_sizes: Sequence[int]) -> None:
        super().__init__()
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(n, dim) / dim**0.5) for n in task_sizes
        )

    def forward(self, z: torch.Tensor, targets: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each task's logits; with `targets` (training), the true class's cosine less MARGIN."""
        logits = []
        for t, w in enumerate(self.weights):
            cos = z @ nn.functional.normalize(w, dim=1).T
            if targets is not None:
                known = (targets[:, t] != MISSING).unsqueeze(1)
                true = nn.functional.one_hot(targets[:, t].clamp(min=0), cos.shape[1])
                cos = cos - MARGIN * true * known
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


@dataclass
class NetworkResult:
    classifiers: TaskClassifiers
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


def trainable_parameters(net: nn.Module, layers: str = "all") -> list[nn.Parameter]:
    """Freeze the EfficientNet `net` but the layers to train; those parameters.

    "all": every layer but the stem, which stays as ImageNet trained it; "last": the last
    stage and head conv only (with their batch-norm affine parameters).
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


def embed(
    backbone: EfficientNetLite, images: Sequence[Image.Image], device: torch.device
) -> torch.Tensor:
    """Unit-length GeM of each image, with autograd (the training-time forward pass)."""
    x = torch.from_numpy(to_batch(images, backbone.preprocess)).permute(0, 3, 1, 2).to(device)
    return nn.functional.normalize(backbone.outputs_of(x, [EMBEDDING])[EMBEDDING], dim=1)


def finetune_network(
    network: str,
    views: Sequence[dict[str, Image.Image]],
    targets: np.ndarray,
    tasks: Sequence[Task],
    options: TrainOptions,
) -> NetworkResult:
    """Tune a fresh ImageNet `network` and its task classifiers on the labelled images.

    `views`: the views of each training image; `targets`: their (N, tasks) class ids.
    """
    check_finetunable(network)
    start = time.perf_counter()
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    device = torch.device(options.device)
    backbone = cast(EfficientNetLite, create_backbone(network, runtime="torch"))
    net = backbone.torch_model().to(device)
    params = trainable_parameters(net, options.finetune_layers)
    net.eval()  # batch-norm statistics stay as trained on ImageNet
    classifiers = TaskClassifiers(backbone.outputs[EMBEDDING], [len(t.classes) for t in tasks])
    classifiers = classifiers.to(device)
    strata = [str(v) for v in targets[:, 0]]
    if len(targets) >= 4 and options.val_fraction > 0:
        val_rows, train_rows = stratified_split(strata, options.val_fraction, options.seed)
    else:
        train_rows, val_rows = np.arange(len(targets)), np.zeros(0, dtype=np.int64)
    y_all = torch.from_numpy(targets).to(device)
    optimiser = torch.optim.AdamW(
        [{"params": params}, {"params": classifiers.parameters()}],
        weight_decay=options.weight_decay,
    )
    steps = options.finetune_epochs * -(-len(train_rows) // BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=[BACKBONE_LR, CLASSIFIER_LR],
        # At least one warm-up step: below 7 steps the schedule would start at its end (~0).
        total_steps=max(steps, 7),
        pct_start=0.15,
    )

    def validate() -> tuple[dict[str, float], float]:
        with torch.no_grad():  # in chunks: a large validation split must not fill the memory
            z = torch.cat(
                [
                    embed(backbone, [views[r][v] for r in val_rows[i : i + 64]], device)
                    for v in VIEWS
                    for i in range(0, len(val_rows), 64)
                ]
            )
            logits = classifiers(z)
        y = torch.cat([y_all[torch.from_numpy(val_rows)]] * len(VIEWS))
        return task_accuracy(logits, y, tasks), float(loss_of(logits, y, 0.0))

    def snapshot() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return copy.deepcopy(net.state_dict()), copy.deepcopy(classifiers.state_dict())

    # Without a validation split the last epoch is kept: no snapshot is needed. With one,
    # the first epoch always beats this score, so a snapshot exists before it is loaded.
    best: tuple[float, float] = (-1.0, -np.inf)
    best_epoch, best_acc = 0, {}
    best_state: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
    for epoch in range(1, options.finetune_epochs + 1):
        order = rng.permutation(train_rows)
        bar = tqdm(
            total=len(order),
            desc=f"fine-tuning {network}, epoch {epoch}/{options.finetune_epochs}",
            unit="image",
            disable=not options.progress,
            file=sys.stderr,
        )
        total = 0.0
        for i in range(0, len(order), BATCH):
            batch = order[i : i + BATCH]
            images = [strong_view(views[r][VIEWS[rng.integers(len(VIEWS))]], rng) for r in batch]
            y = y_all[torch.from_numpy(batch)]
            loss = loss_of(
                classifiers(embed(backbone, images, device), y), y, options.label_smoothing
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
            bar.update(len(batch))
        bar.close()
        line = f"epoch {epoch}  loss {total / len(order):.3f}"
        if not len(val_rows):
            if options.progress:
                print(f"{line}  (no validation split)", file=sys.stderr)
            best_epoch = epoch
            continue
        acc, val_loss = validate()
        if options.progress:
            shown = " ".join(f"{k} {v:.3f}" for k, v in acc.items())
            print(f"{line}  val acc: {shown}", file=sys.stderr)
        score = (float(np.mean(list(acc.values()))), -val_loss)
        if score >= best:  # ties: the later epoch, further down the one-cycle schedule
            best, best_epoch, best_acc, best_state = score, epoch, acc, snapshot()
        if epoch - best_epoch >= options.patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state[0])
        classifiers.load_state_dict(best_state[1])
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return NetworkResult(
        classifiers.cpu().eval(), state, best_epoch, best_acc, time.perf_counter() - start
    )

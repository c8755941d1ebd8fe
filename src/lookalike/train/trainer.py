"""Training the multi-task head on cached base features (the `frozen` mode).

Every view of a training image is one sample (the head learns crops and whole images
alike). A stratified part of the training images is held out for validation: the epoch
with the best validation accuracy is kept, and training stops when it has not improved for
`patience` epochs. The features are computed once, so augmentation happens in feature
space: dropout on the input and Gaussian noise on the standardised features.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from lookalike.train.data import MISSING, Task, stratified_split
from lookalike.train.model import MultiTaskHead

MODES = ("frozen", "finetune")
FINETUNE_LAYERS = ("last", "all")


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    hidden: int = 512
    embed_dim: int = 64
    dropout: float = 0.3
    noise: float = 0.2  # std of the Gaussian noise on standardised inputs
    label_smoothing: float = 0.1
    val_fraction: float = 0.15
    patience: int = 30
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    # "frozen": the head on cached features; "finetune": a network tuned on the images
    # (network.py), whatever backbone the collection was indexed with.
    mode: str = "frozen"
    finetune_backbone: str = "efficientnet-lite2"
    finetune_epochs: int = 20
    # What `finetune` trains of the network: "all" (every layer but the stem) or "last" (stage).
    finetune_layers: str = "all"
    # Real augmentation (see augment.py): features of these transformed views train too.
    augmentations: tuple[str, ...] = ()


@dataclass
class TrainResult:
    model: nn.Module  # MultiTaskHead (frozen) or TaskClassifiers (finetune)
    best_epoch: int
    val_accuracy: dict[str, float]  # per task, at the best epoch (empty: no validation set)
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def loss_of(logits: list[torch.Tensor], y: torch.Tensor, smoothing: float) -> torch.Tensor:
    total = logits[0].new_zeros(())
    for t, lg in enumerate(logits):
        if (y[:, t] != MISSING).any():
            total = total + nn.functional.cross_entropy(
                lg, y[:, t], ignore_index=MISSING, label_smoothing=smoothing
            )
    return total


def task_accuracy(
    logits: Sequence[torch.Tensor], y: torch.Tensor, tasks: Sequence[Task]
) -> dict[str, float]:
    """Per task, the share of labelled rows whose top class is right."""
    acc = {}
    for t, task in enumerate(tasks):
        known = y[:, t] != MISSING
        if known.any():
            acc[task.name] = float((logits[t][known].argmax(1) == y[known, t]).float().mean())
    return acc


@torch.no_grad()
def accuracy(
    model: MultiTaskHead, x: torch.Tensor, y: torch.Tensor, tasks: Sequence[Task]
) -> tuple[dict[str, float], float]:
    model.eval()
    _, logits = model(x)
    model.train()
    return task_accuracy(logits, y, tasks), float(loss_of(logits, y, 0.0))


def fit_head(
    views: Sequence[np.ndarray],
    targets: np.ndarray,
    tasks: Sequence[Task],
    options: TrainOptions,
    augmented: Sequence[np.ndarray] = (),
) -> TrainResult:
    """Train a head on `views` (one (N, D) input array per view of the same N images).

    `augmented`: more (N, D) arrays of the same images (augmented views), used as training
    samples only, never for validation.
    """
    start = time.perf_counter()
    torch.manual_seed(options.seed)
    device = torch.device(options.device)
    strata = [str(v) for v in targets[:, 0]]
    if len(targets) >= 4 and options.val_fraction > 0:
        val_rows, train_rows = stratified_split(strata, options.val_fraction, options.seed)
    else:
        train_rows, val_rows = np.arange(len(targets)), np.zeros(0, dtype=np.int64)

    def samples(
        rows: np.ndarray, arrays: Sequence[np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.concatenate([v[rows] for v in arrays]).astype(np.float32)
        y = np.concatenate([targets[rows]] * len(arrays))
        return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    x_train, y_train = samples(train_rows, [*views, *augmented])
    x_val, y_val = samples(val_rows, views)
    model = MultiTaskHead(
        x_train.shape[1],
        [len(t.classes) for t in tasks],
        hidden=options.hidden,
        embed_dim=options.embed_dim,
        dropout=options.dropout,
    ).to(device)
    model.mean.copy_(x_train.mean(0))
    # Floored at the average spread: a histogram bin that is almost always empty must
    # not turn its rare non-zero values into huge inputs.
    spread = x_train.std(0)
    model.std.copy_(spread.clamp(min=float(spread.mean())))
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=options.lr, weight_decay=options.weight_decay
    )
    generator = torch.Generator().manual_seed(options.seed)

    best: tuple[float, float] = (-1.0, -np.inf)
    best_state, best_epoch, best_acc = copy.deepcopy(model.state_dict()), 0, {}
    history: list[dict[str, float]] = []
    bar = tqdm(
        range(1, options.epochs + 1),
        desc="training",
        unit="epoch",
        disable=not options.progress,
        file=sys.stderr,
    )
    for epoch in bar:
        order = torch.randperm(len(x_train), generator=generator).to(device)
        total = 0.0
        for batch in order.split(options.batch_size):
            x = x_train[batch]
            # Noise in units of each feature's spread: augmentation of cached features.
            x = x + options.noise * model.std * torch.randn_like(x)
            loss = loss_of(model(x)[1], y_train[batch], options.label_smoothing)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        record = {"epoch": float(epoch), "loss": total / len(x_train)}
        if len(x_val):
            acc, val_loss = accuracy(model, x_val, y_val, tasks)
            record.update({f"val_{k}": v for k, v in acc.items()}, val_loss=val_loss)
            score = (float(np.mean(list(acc.values()))), -val_loss)
            if score > best:
                best, best_epoch, best_acc = score, epoch, acc
                best_state = copy.deepcopy(model.state_dict())
            shown = " ".join(f"{k} {v:.3f}" for k, v in acc.items())
            if options.progress:
                bar.write(
                    f"epoch {epoch:3d}  loss {record['loss']:.3f}  val acc: {shown}",
                    file=sys.stderr,
                )
            if epoch - best_epoch >= options.patience:
                break
        else:
            best_epoch, best_state = epoch, copy.deepcopy(model.state_dict())
        history.append(record)
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model.cpu(), best_epoch, best_acc, time.perf_counter() - start, history)

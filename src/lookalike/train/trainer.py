"""The per-task loss and accuracy of training.

A picture may carry several labels of one task (two characters): its target is then spread
evenly over them (`data.Targets.hot`), and a prediction of any of them is right.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lookalike.train.data import Task


def loss_of(
    logits: Sequence[torch.Tensor], hot: Sequence[torch.Tensor], smoothing: float
) -> torch.Tensor:
    """The sum over tasks of the cross-entropy against each image's label share; images
    without a label of a task do not count for it."""
    total = logits[0].new_zeros(())
    for lg, target in zip(logits, hot, strict=True):
        known = target.sum(dim=1) > 0
        if known.any():
            total = total + nn.functional.cross_entropy(
                lg[known], target[known], label_smoothing=smoothing
            )
    return total


def task_accuracy(
    logits: Sequence[torch.Tensor], hot: Sequence[torch.Tensor], tasks: Sequence[Task]
) -> dict[str, float]:
    """Per task, the share of labelled rows whose top class is one of their labels."""
    acc = {}
    for lg, target, task in zip(logits, hot, tasks, strict=True):
        known = target.sum(dim=1) > 0
        if known.any():
            top = lg[known].argmax(dim=1, keepdim=True)
            acc[task.name] = float((target[known].gather(1, top) > 0).float().mean())
    return acc

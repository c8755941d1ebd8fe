"""The multi-task head: base features of one view -> a shared bottleneck -> one classifier per task.

The same head serves both views (head crop and whole image), as the article's one network
did. The bottleneck is L2-normalised and every task's classifier is a cosine classifier (a
scaled dot product with normalised class weights), so the bottleneck itself is a
cosine-comparable embedding: the `embedding` output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from lookalike.vectors import l2_normalize

Output = Literal["probs", "logits", "embedding"]
OUTPUTS: tuple[Output, ...] = ("probs", "logits", "embedding")


def stack_features(base: Mapping[str, np.ndarray], features: Sequence[str]) -> np.ndarray:
    """The head input: each base feature L2-normalised (none dominates by scale), side by side."""
    return np.concatenate([l2_normalize(base[f]) for f in features], axis=1)


class MultiTaskHead(nn.Module):
    def __init__(
        self,
        in_dim: int,
        task_sizes: Sequence[int],
        hidden: int = 512,
        embed_dim: int = 64,
        dropout: float = 0.3,
        scale: float = 16.0,
    ) -> None:
        super().__init__()
        # Input standardisation, learned from the training set, saved with the weights.
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.trunk = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, embed_dim),
        )
        self.classifiers = nn.ParameterList(
            nn.Parameter(torch.randn(n, embed_dim) / embed_dim**0.5) for n in task_sizes
        )
        self.scale = scale

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.trunk((x - self.mean) / self.std), dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = self.embed(x)
        logits = [self.scale * z @ nn.functional.normalize(w, dim=1).T for w in self.classifiers]
        return z, logits

    @torch.inference_mode()
    def vectors(self, x: np.ndarray, output: Output) -> np.ndarray:
        """The retrieval vector of each row: task outputs side by side, or the embedding."""
        was_training = self.training
        self.eval()
        z, logits = self(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        self.train(was_training)
        if output == "embedding":
            out = z
        elif output == "logits":
            out = torch.cat(logits, dim=1)
        else:
            out = torch.cat([lg.softmax(dim=1) for lg in logits], dim=1)
        return out.numpy().astype(np.float32)

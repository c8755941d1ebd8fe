"""A tiny deterministic numpy backbone for tests: no weights, no torch, milliseconds per image.

It is not random noise: every output is a fixed function of the image's colours and
layout, so images that look alike get nearby vectors and retrieval tests make sense.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from lookalike.embed.base import BACKBONES, Preprocess, check_outputs, gem_np, to_batch

_SIZE = 32
_SEED = 20240601


def _patches(batch: np.ndarray, cell: int) -> np.ndarray:
    """(N, S, S, 3) -> (N, S/cell, S/cell, cell*cell*3): non-overlapping patches."""
    n, s = batch.shape[0], batch.shape[1] // cell
    grid = batch.reshape(n, s, cell, s, cell, 3).transpose(0, 1, 3, 2, 4, 5)
    return grid.reshape(n, s, s, cell * cell * 3)


def _grid3(maps: np.ndarray) -> np.ndarray:
    """(N, S, S, C) -> (N, 9C): the mean of each cell of a 3x3 grid, cell by cell."""
    edges = np.linspace(0, maps.shape[1], 4).round().astype(int)
    cells = [
        maps[:, edges[r] : edges[r + 1], edges[c] : edges[c + 1]].mean(axis=(1, 2))
        for r in range(3)
        for c in range(3)
    ]
    return np.concatenate(cells, axis=1)


class FakeBackbone:
    """Random projections of a 32x32 thumbnail, with CNN-like output names."""

    name = "fake"
    weights_hash = "fake-v1"

    def __init__(self, *, flip_tta: bool = False) -> None:
        rng = np.random.default_rng(_SEED)
        self.preprocess = Preprocess(_SIZE, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
        self.outputs = {
            "pooled": 64,
            "logits": 10,
            "gem": 64,
            "gem_mid": 32,
            "avg_mid": 32,
            "avg_g3_s4": 9 * 32,
            "avg_g3_s5": 9 * 8,
            "energy": 8 * 8,
        }
        # pooled: a linear projection of an 8x8 colour thumbnail (colour and layout);
        # gem / gem_mid: pooled ReLU responses of local patches (colour and texture).
        self._thumb = rng.standard_normal((8 * 8 * 3, 64)).astype(np.float32) / np.sqrt(192)
        self._local = rng.standard_normal((4 * 4 * 3, 64)).astype(np.float32) / np.sqrt(48)
        self._mid = rng.standard_normal((2 * 2 * 3, 32)).astype(np.float32) / np.sqrt(12)
        self._fc = rng.standard_normal((64, 10)).astype(np.float32) / 8
        self._grid5 = rng.standard_normal((32, 8)).astype(np.float32) / np.sqrt(32)
        self.flip_tta = flip_tta
        self.options: dict[str, object] = {"flip_tta": flip_tta}

    def embed(self, images: Sequence[Image.Image], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        check_outputs(outputs, self.outputs, self.name)
        batch = to_batch(images, self.preprocess)
        result = self._forward(batch, outputs)
        if self.flip_tta:
            mirrored = self._forward(batch[:, :, ::-1], outputs)
            result = {o: (result[o] + mirrored[o]) / 2 for o in outputs}
        return {o: v.astype(np.float32, copy=False) for o, v in result.items()}

    def _forward(self, batch: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        n = batch.shape[0]
        small = batch.reshape(n, 8, 4, 8, 4, 3).mean(axis=(2, 4))  # 8x8 colour thumbnail
        pooled = small.reshape(n, 8 * 8 * 3) @ self._thumb
        heads = {
            "pooled": lambda: pooled,
            "logits": lambda: pooled @ self._fc,
            "gem": lambda: gem_np(np.maximum(_patches(batch, 4) @ self._local, 0)),
            "gem_mid": lambda: gem_np(np.maximum(_patches(batch, 2) @ self._mid, 0)),
            "avg_mid": lambda: (_patches(batch, 2) @ self._mid).mean(axis=(1, 2)),
            # 3x3 grid means of the patch responses, cell by cell, like the real backbone.
            "avg_g3_s4": lambda: _grid3(_patches(batch, 2) @ self._mid),
            "avg_g3_s5": lambda: _grid3(_patches(batch, 2) @ self._mid @ self._grid5),
            # How far each 4x4 patch is from the picture's mean colour: flat backgrounds
            # are quiet, like the real backbone's last map.
            "energy": lambda: (
                np.abs(batch - batch.mean(axis=(1, 2), keepdims=True))
                .mean(axis=3)
                .reshape(n, 8, 4, 8, 4)
                .mean(axis=(2, 4))
                .reshape(n, 64)
            ),
        }
        return {o: heads[o]() for o in outputs}


@BACKBONES.register("fake")
def create_fake(**kwargs: object) -> FakeBackbone:
    """Deterministic numpy test backbone (no weights)"""
    return FakeBackbone(**kwargs)  # type: ignore[arg-type]

"""Int8 codes of unit vectors for an HNSW walk: turned by a fixed random rotation, then
scaled by one factor to fill the int8 range (the `i8-rotated` graph of usearch_index.py).

Why: a fused vector's variance sits in its first dimensions (a reduction's leading
components), so usearch's own int8 cast (each unit vector times 127) leaves most of its
components a few levels, and the walk lost the neighbours (recall@10 0.85 at a million
items with 40 re-scored). An orthogonal rotation keeps every inner product and spreads the
variance over all dimensions; one scale for all rows keeps their order, a dot product of
codes being scale^2 times the rows' to within the rounding. The walk reads 256 bytes a
vector instead of float16's 512, and the answer's similarities are re-scored on the
float32 rows (benchmarks/README.md, "usearch at a million").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.errors import CollectionError

# Rows read to choose the scale: the largest rotated component of a sample of the rows
# built on; rows added later beyond it are clipped, which only coarsens their walk.
SCALE_SAMPLE = 100_000
CHUNK = 65_536  # rows turned at once: a bounded temporary, whatever the count


@dataclass(frozen=True)
class Int8Rotation:
    matrix: np.ndarray  # (dim, dim) float32, orthogonal
    scale: float  # int8 units per unit of a rotated component

    @classmethod
    def fit(cls, rows: np.ndarray, seed: int = 0) -> Int8Rotation:
        dim = rows.shape[1]
        rotation, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
        matrix = rotation.astype(np.float32)
        sample = np.asarray(rows[:: max(1, len(rows) // SCALE_SAMPLE)], np.float32)
        top = float(np.abs(sample @ matrix).max(initial=0.0))
        return cls(matrix, 127 / top if top > 0 else 127.0)

    def codes(self, rows: np.ndarray) -> np.ndarray:
        """The rows' int8 codes (n, dim)."""
        out = np.empty(rows.shape, np.int8)
        for start in range(0, len(rows), CHUNK):
            turned = np.asarray(rows[start : start + CHUNK], np.float32) @ self.matrix
            out[start : start + CHUNK] = np.clip(np.rint(turned * self.scale), -127, 127)
        return out

    def save(self, path: Path) -> None:
        """Written to `path` as an npz of plain arrays (no pickles)."""
        with open(path, "wb") as f:
            np.savez(f, matrix=self.matrix, scale=np.float64(self.scale))

    @classmethod
    def load(cls, path: Path, dim: int) -> Int8Rotation:
        try:
            # np.load takes any other content for a pickle, and its refusal says to load it
            # unsafely: the zip signature first, for a message that names the problem.
            with open(path, "rb") as f:
                if f.read(4) != b"PK\x03\x04":
                    raise ValueError("not an npz file")
            with np.load(path, allow_pickle=False) as data:
                matrix, scale = np.asarray(data["matrix"]), float(data["scale"])
        except (OSError, ValueError, KeyError) as exc:
            raise CollectionError(f"{path}: cannot read the graph's rotation ({exc})") from exc
        if matrix.shape != (dim, dim) or matrix.dtype != np.float32 or not scale > 0:
            raise CollectionError(
                f"{path}: holds a {matrix.dtype} {matrix.shape} rotation with scale {scale}, "
                f"expected float32 ({dim}, {dim}) and a positive scale"
            )
        return cls(matrix, scale)

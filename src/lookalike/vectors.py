"""Small vector helpers shared by fusion, indexes and evaluation."""

from __future__ import annotations

import numpy as np


class RowMap:
    """Catalog id -> row of a generation, by binary search: no dict of a million ints
    to build when a query process starts (ids are stored ascending; any order works)."""

    def __init__(self, ids: np.ndarray) -> None:
        self._ids = np.asarray(ids, np.int64)
        ascending = len(self._ids) < 2 or bool(np.all(self._ids[1:] > self._ids[:-1]))
        self._order = None if ascending else np.argsort(self._ids, kind="stable")
        self._sorted = self._ids if self._order is None else self._ids[self._order]

    def get(self, item_id: int) -> int | None:
        pos = int(np.searchsorted(self._sorted, item_id))
        if pos >= len(self._sorted) or self._sorted[pos] != item_id:
            return None
        return pos if self._order is None else int(self._order[pos])

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, (int, np.integer)) and self.get(int(item_id)) is not None

    def __getitem__(self, item_id: int) -> int:
        row = self.get(item_id)
        if row is None:
            raise KeyError(item_id)
        return row

    def __len__(self) -> int:
        return len(self._ids)


def l2_normalize(vectors: np.ndarray, in_place: bool = False) -> np.ndarray:
    """Unit-length float32 copy along the last axis; all-zero rows stay zero (cosine 0).

    `in_place` scales a float32 array itself (no copy of a large array) and returns it.
    """
    out = vectors if in_place and vectors.dtype == np.float32 else np.array(vectors, np.float32)
    # einsum, unlike linalg.norm, makes no temporary of the input's size.
    norms = np.sqrt(np.einsum("...d,...d->...", out, out))[..., None]
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def int8_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row as int8 codes times one float32 scale, a power of two: the smallest with
    every code within +-127. Rows decoded (`from_int8_rows`) and coded again give the same
    codes and scales, so a stored matrix read back and saved again does not drift."""
    matrix = np.asarray(matrix, np.float32)
    peak = np.abs(matrix).max(axis=1) if matrix.size else np.zeros(len(matrix), np.float32)
    scales = np.exp2(np.ceil(np.log2(np.maximum(peak, 1e-30) / 127))).astype(np.float32)
    scales[peak == 0] = 1
    codes = np.clip(np.round(matrix / scales[:, None]), -127, 127).astype(np.int8)
    return codes, scales


def from_int8_rows(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    return np.asarray(codes, np.float32) * np.asarray(scales, np.float32)[:, None]

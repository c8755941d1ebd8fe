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


# A collection stores its dense fused vectors as float16 (fuse/fitting.py, stored_precision):
# half the bytes of float32 (0.5 KB a picture of `default`'s 256 dims), the same P@4
# (benchmarks/README.md, "Where issue 16 stands"). They are rounded to it before anything is
# indexed or scored, so every index, a stored item's query and `evaluate` rank on exactly
# the stored values.
FUSED_DTYPE = np.float16
# A unit row rounded to float16 is unit to within this (each element within 2^-11).
UNIT_TOLERANCE = 1e-3


# Rows converted at a time: the temporary in the narrower type stays this small.
ROW_BLOCK = 65536


def rounded_in_place(array: np.ndarray, dtype: type, rows: int = ROW_BLOCK) -> np.ndarray:
    """`array` (float32) rounded in place to the values `dtype` holds, a block of rows at a
    time (no copy of a million rows in the narrower type)."""
    for start in range(0, len(array), rows):
        part = array[start : start + rows]
        part[...] = part.astype(dtype)
    return array


def as_stored(fused: np.ndarray) -> np.ndarray:
    """Fused vectors (float32) rounded to what a collection stores of them, in place."""
    return rounded_in_place(fused, FUSED_DTYPE)


def stored_losslessly(vectors: np.ndarray) -> np.ndarray:
    """`vectors` as float16 when that loses nothing (they were made `as_stored`), else as
    they are: what a collection and its exact index write to disk."""
    array = np.asarray(vectors)
    if array.dtype == FUSED_DTYPE:
        return array
    for start in range(0, len(array), ROW_BLOCK):  # no float16 copy of a million rows
        part = array[start : start + ROW_BLOCK]
        if not np.array_equal(part.astype(FUSED_DTYPE), part):
            return array
    return array.astype(FUSED_DTYPE)

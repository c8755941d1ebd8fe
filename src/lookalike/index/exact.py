"""Exact search: every query against every vector, in bounded-memory blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lookalike.index.base import BaseIndex, register_index
from lookalike.vectors import stored_losslessly

# A (256, 32768) float32 block of similarities is 32 MiB, whatever N and M are.
QUERY_ROWS = 256
ITEM_ROWS = 32768


def top_k_inner(queries: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of `items` by inner product for each query, best first (k <= len(items))."""
    ids = np.empty((len(queries), k), np.int64)
    sims = np.empty((len(queries), k), np.float32)
    for q0 in range(0, len(queries), QUERY_ROWS):
        block = queries[q0 : q0 + QUERY_ROWS]
        best_ids = np.empty((len(block), 0), np.int64)
        best_sims = np.empty((len(block), 0), np.float32)
        for i0 in range(0, len(items), ITEM_ROWS):
            scores = block @ items[i0 : i0 + ITEM_ROWS].T
            top = _top_columns(scores, k)
            best_ids = np.hstack([best_ids, top + i0])
            best_sims = np.hstack([best_sims, np.take_along_axis(scores, top, 1)])
            keep = _top_columns(best_sims, k)
            best_ids = np.take_along_axis(best_ids, keep, 1)
            best_sims = np.take_along_axis(best_sims, keep, 1)
        order = np.lexsort((best_ids, -best_sims))  # by similarity, equal ones by id
        ids[q0 : q0 + len(block)] = np.take_along_axis(best_ids, order, 1)
        sims[q0 : q0 + len(block)] = np.take_along_axis(best_sims, order, 1)
    return ids, sims


def _top_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indexes of the k largest scores per row, in no particular order."""
    if scores.shape[1] <= k:
        return np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


@register_index
class ExactIndex(BaseIndex):
    """Brute force (numpy matmul): exact, O(N*D) per query; the reference for the others."""

    name = "exact"
    file_name = "exact.npy"

    def __init__(self) -> None:
        super().__init__({}, {})

    def _build(self, data: np.ndarray) -> np.ndarray:
        return data

    def _extend(self, data: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(self._native), data])

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return top_k_inner(queries, self._native, k)

    def _save(self, path: Path) -> None:
        with open(path, "wb") as f:  # a file object, so np.save adds no ".npy" to the temp name
            # float16 when that loses nothing (a collection's fused vectors): the very bytes
            # of its fused.npy, which the commit then links instead of keeping twice.
            np.save(f, stored_losslessly(self._native))

    def _load(self, path: Path, dim: int) -> np.ndarray:
        data = np.load(path, mmap_mode="r")  # paged in by the OS as queries touch it
        if data.ndim != 2 or data.shape[1] != dim or data.dtype not in (np.float32, np.float16):
            raise ValueError(f"expected float (N, {dim}) vectors, not {data.dtype} {data.shape}")
        # float16 rows are widened once, in memory: numpy has no fast float16 product. `auto`
        # searches exactly up to 10,000 rows (10 MB); an explicit exact index of more holds
        # 4 bytes a dimension a row in memory.
        return data if data.dtype == np.float32 else np.asarray(data, np.float32)

    def _count(self, native: np.ndarray) -> int:
        return len(native)

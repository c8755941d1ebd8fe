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

"""usearch: an HNSW graph whose saved file a query process memory-maps instead of reading.

Why it is the `auto` index's graph (benchmarks/README.md, "Dense collections"): a saved
usearch index opens as a read-only view of its file (`Index.restore(path, view=True)`), so
a new `lookalike query` process starts in milliseconds at a million items where hnswlib
reads its whole graph (1.2 GB) first. Its vectors stay float32 by default: float16 ones
halve the file but cap recall@10 at 0.986 on 100k near-duplicate rows, where float32 gives
0.999 (hnswlib 1.000) at ef 128 (measured on benchmarks/dense_scale.py's 100k collection).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.index.base import BaseIndex, check_int, register_index, require

DTYPES = ("f32", "f16", "i8")


@register_index
class UsearchIndex(BaseIndex):
    """usearch HNSW graph (cosine), memory-mapped when loaded; f16 or i8 vectors on request."""

    name = "usearch"
    file_name = "usearch.bin"
    query_knobs: ClassVar[dict[str, int]] = {"ef": 1}

    def __init__(
        self, M: int = 16, ef_construction: int = 128, ef: int = 128, dtype: str = "f32"
    ) -> None:
        self._usearch = require("usearch.index", "usearch", self.name)
        if dtype not in DTYPES:
            raise LookalikeError(f"usearch dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        super().__init__(
            {
                "M": check_int("M", M, 2),
                "ef_construction": check_int("ef_construction", ef_construction, 1),
                "dtype": dtype,
            },
            {"ef": ef},
        )
        self._viewed = False  # whether the native index is a read-only view of a file

    def _build(self, data: np.ndarray) -> Any:
        p = self._build_params
        index = self._usearch.Index(
            ndim=data.shape[1],
            # Inner product on the unit rows the base hands over: the cosine, and 0 for a zero
            # vector (usearch's "cos" calls two zero vectors identical).
            metric="ip",
            dtype=p["dtype"],
            connectivity=p["M"],
            expansion_add=p["ef_construction"],
        )
        index.add(np.arange(len(data), dtype=np.uint64), data)
        return index

    def _extend(self, data: np.ndarray) -> Any:
        # A loaded graph is a read-only view of its file: add to a copy in memory.
        index = self._native.copy() if self._viewed else self._native
        self._viewed = False
        index.add(np.arange(self.count, self.count + len(data), dtype=np.uint64), data)
        return index

    def _apply_query_params(self) -> None:
        self._native.expansion_search = self._query_params["ef"]

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # One thread: a query process answers one request at a time, and usearch's thread
        # pool costs more than it saves on a handful of queries.
        found = self._native.search(queries, k, threads=1)
        # One query row comes back as a `Matches` cut to what it found, several as
        # `BatchMatches` padded to k with `counts` saying how many are real.
        keys = np.full((len(queries), k), -1, np.int64)
        distances = np.full((len(queries), k), np.inf, np.float32)
        found_keys = np.asarray(found.keys).reshape(len(queries), -1)
        width = found_keys.shape[1]
        keys[:, :width] = found_keys
        distances[:, :width] = np.asarray(found.distances).reshape(len(queries), -1)
        counts = np.asarray(getattr(found, "counts", [width])).reshape(-1, 1)
        keys[np.arange(k)[None, :] >= counts] = -1
        return keys, 1 - distances  # distance = 1 - dot; the base masks the missing ones

    def _save(self, path: Path) -> None:
        self._native.save(str(path))

    def _load(self, path: Path, dim: int) -> Any:
        if not path.is_file():
            raise OSError(f"{path.name} is missing")
        # No key table: the keys are the rows, and building the table walks every node of
        # the file (at 100k items 0.46 s against 0.10 s to open, cold).
        index = self._usearch.Index.restore(str(path), view=True, enable_key_lookups=False)
        self._viewed = True
        if index is None or index.ndim != dim:
            raise ValueError("not a usearch index of this collection's vectors")
        return index

    def _count(self, native: Any) -> int:
        return len(native)

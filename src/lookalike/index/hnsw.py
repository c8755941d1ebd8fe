"""hnswlib: a hierarchical navigable small-world graph in cosine space (optional extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lookalike.index.base import BaseIndex, check_int, register_index, require


@register_index
class HnswIndex(BaseIndex):
    """hnswlib HNSW graph (cosine); more M / ef_construction / ef: better recall, slower."""

    name = "hnswlib"
    file_name = "hnswlib.bin"
    query_knobs: ClassVar[dict[str, int]] = {"ef": 1}  # hnswlib searches with max(ef, k) candidates

    def __init__(
        self, M: int = 16, ef_construction: int = 200, seed: int = 100, ef: int = 64
    ) -> None:
        self._hnswlib = require("hnswlib", "hnswlib", self.name)
        super().__init__(
            {
                "M": check_int("M", M, 2),
                "ef_construction": check_int("ef_construction", ef_construction, 1),
                "seed": check_int("seed", seed, 0),
            },
            {"ef": ef},
        )

    def _build(self, data: np.ndarray) -> Any:
        index = self._hnswlib.Index(space="cosine", dim=data.shape[1])
        index.init_index(
            max_elements=len(data),
            M=self._build_params["M"],
            ef_construction=self._build_params["ef_construction"],
            random_seed=self._build_params["seed"],
        )
        index.add_items(data, np.arange(len(data)))
        return index

    def _extend(self, data: np.ndarray) -> Any:
        self._native.resize_index(self.count + len(data))
        self._native.add_items(data, np.arange(self.count, self.count + len(data)))
        return self._native

    def _apply_query_params(self) -> None:
        self._native.set_ef(self._query_params["ef"])

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        labels, distances = self._native.knn_query(queries, k=k)
        return labels.astype(np.int64), (1 - distances).astype(np.float32)  # distance = 1 - cos

    def _save(self, path: Path) -> None:
        self._native.save_index(str(path))

    def _load(self, path: Path, dim: int) -> Any:
        index = self._hnswlib.Index(space="cosine", dim=dim)
        index.load_index(str(path))
        return index

    def _count(self, native: Any) -> int:
        return native.get_current_count()

"""Spotify Annoy: a forest of random-projection trees, memory-mapped when loaded."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import annoy
import numpy as np

from lookalike.index.base import BaseIndex, angular_to_cosine, check_int, register_index


@register_index
class AnnoyIndex(BaseIndex):
    """Annoy random-projection trees (angular); more n_trees or search_k: better recall."""

    name = "annoy"
    file_name = "annoy.ann"
    query_knobs: ClassVar[dict[str, int]] = {
        "search_k": -1
    }  # -1: annoy's default, n_trees * k nodes inspected

    def __init__(self, n_trees: int = 50, seed: int = 0, search_k: int = -1) -> None:
        super().__init__(
            {"n_trees": check_int("n_trees", n_trees, 1), "seed": check_int("seed", seed, 0)},
            {"search_k": search_k},
        )

    def _build(self, data: np.ndarray) -> annoy.AnnoyIndex:
        index = annoy.AnnoyIndex(data.shape[1], "angular")
        index.set_seed(self._build_params["seed"])
        for i, row in enumerate(data):
            index.add_item(i, row.tolist())  # annoy reads a list much faster than an array
        index.build(self._build_params["n_trees"])
        return index

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(queries), k), -1, np.int64)
        sims = np.full((len(queries), k), -np.inf, np.float32)
        search_k = self._query_params["search_k"]
        for row, vector in enumerate(queries):
            found, distances = self._native.get_nns_by_vector(
                vector.tolist(), k, search_k, include_distances=True
            )
            ids[row, : len(found)] = found
            sims[row, : len(found)] = angular_to_cosine(distances)
        return ids, sims

    def _save(self, path: Path) -> None:
        # Annoy re-maps the index from the file it saved; the mapping survives the rename.
        self._native.save(str(path))

    def _load(self, path: Path, dim: int) -> annoy.AnnoyIndex:
        # Annoy prints its own complaint about a damaged file on stderr (beside ours): check
        # first that the file holds whole angular nodes (n_descendants, 2 children: int32,
        # then the float32 vector).
        node, size = 12 + 4 * dim, path.stat().st_size
        if size == 0 or size % node:
            raise ValueError(f"{size} bytes, not a whole number of {node}-byte nodes")
        index = annoy.AnnoyIndex(dim, "angular")
        index.load(str(path))  # memory-mapped: loading is instant and pages are shared
        return index

    def _count(self, native: annoy.AnnoyIndex) -> int:
        return native.get_n_items()

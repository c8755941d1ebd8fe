"""FAISS indexes from a factory string, inner product on unit vectors (optional extra)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.index.base import BaseIndex, register_index, require


def _reason(error: RuntimeError) -> str:
    """FAISS messages start with the C++ function and source line; keep the explanation."""
    return str(error).rsplit(": ", 1)[-1]


@register_index
class FaissIndex(BaseIndex):
    """FAISS by factory string ("Flat", "HNSW32", "IVF1024,PQ16", ...), inner product."""

    name = "faiss"
    file_name = "faiss.index"
    # Each applies only where the index has that part: nprobe to IVF, efSearch to HNSW.
    query_knobs: ClassVar[dict[str, int]] = {"nprobe": 1, "efSearch": 1}

    def __init__(self, factory: str = "HNSW32", nprobe: int = 16, efSearch: int = 64) -> None:
        self._faiss = require("faiss", "faiss-cpu", self.name)
        if not isinstance(factory, str) or not factory.strip():
            raise LookalikeError(f"factory must be a FAISS factory string; got {factory!r}")
        super().__init__({"factory": factory}, {"nprobe": nprobe, "efSearch": efSearch})

    def _build(self, data: np.ndarray) -> Any:
        faiss, factory, n = self._faiss, self._build_params["factory"], len(data)
        try:
            index = faiss.index_factory(data.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise LookalikeError(
                f"FAISS cannot make {factory!r} for {data.shape[1]}-dimensional vectors: "
                f"{_reason(e)}"
            ) from None
        if not index.is_trained:
            ivf = faiss.try_extract_index_ivf(index)
            if ivf is not None and n < ivf.nlist:
                raise LookalikeError(
                    f"FAISS {factory!r} has {ivf.nlist} IVF lists but only {n} vectors to train "
                    f"them; use about {max(1, int(4 * math.sqrt(n)))} lists, or 'HNSW32' or "
                    "'Flat' for a small collection"
                )
            try:
                index.train(data)
            except RuntimeError as e:
                raise LookalikeError(
                    f"FAISS could not train {factory!r} on {n} vectors: {_reason(e)}; "
                    "use 'HNSW32' or 'Flat' for a small collection"
                ) from None
        index.add(data)  # ids are assigned 0..n-1 in order
        return index

    def _apply_query_params(self) -> None:
        space = self._faiss.ParameterSpace()  # reaches through wrappers such as IndexPreTransform
        for key, value in self._query_params.items():
            # Skipped where the index has no part that takes the knob (nprobe on HNSW, ...).
            with contextlib.suppress(RuntimeError):
                space.set_index_parameter(self._native, key, value)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims, ids = self._native.search(queries, k)
        return ids.astype(np.int64), sims.astype(np.float32)

    def _save(self, path: Path) -> None:
        self._faiss.write_index(self._native, str(path))

    def _load(self, path: Path, dim: int) -> Any:
        index = self._faiss.read_index(str(path))
        if index.d != dim:
            raise ValueError(f"it holds {index.d}-dimensional vectors, expected {dim}")
        return index

    def _count(self, native: Any) -> int:
        return native.ntotal

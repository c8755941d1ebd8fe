"""Query expansion on the collection: alpha-QE / database-side augmentation.

Each vector is replaced by the weighted sum of itself and its K nearest
neighbours, each weighted by max(cos, 0) ** alpha, then re-normalised (Radenović
et al., "Fine-tuning CNN image retrieval with no human annotation"). It needs no
labels: the collection's own neighbourhoods pull images of one character
together. A query from outside is expanded the same way with its K nearest
neighbours among the (already expanded) collection vectors.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lookalike.config import PipelineConfig
from lookalike.index import VectorIndex, create_index
from lookalike.vectors import l2_normalize

# Exact neighbours below this many items; above, the ANN index answers (a full
# N x N similarity matrix would not fit).
EXACT_LIMIT = 20_000


def _weights(sims: np.ndarray, alpha: float) -> np.ndarray:
    return np.maximum(sims, 0.0) ** alpha


def nearest_neighbours(
    vectors: np.ndarray, k: int, index: VectorIndex | None = None, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest other rows (ids, cosine similarities)."""
    n = len(vectors)
    k = min(k, n - 1)
    if n > EXACT_LIMIT and index is not None:
        ids, sims = index.query(vectors, k + 1)
        # Drop each row itself wherever the index put it; keep the first k others.
        keep = ids != np.arange(n)[:, None]
        ids = np.array([row[m][:k] for row, m in zip(ids, keep, strict=True)])
        sims = np.array([row[m][:k] for row, m in zip(sims, keep, strict=True)])
        return ids, sims
    ids = np.empty((n, k), np.int64)
    sims = np.empty((n, k), np.float32)
    for start in range(0, n, chunk):
        block = vectors[start : start + chunk] @ vectors.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_sims, axis=1)
        ids[start : start + chunk] = np.take_along_axis(top, order, axis=1)
        sims[start : start + chunk] = np.take_along_axis(top_sims, order, axis=1)
    return ids, sims


def augment_database(
    vectors: np.ndarray,
    k: int,
    alpha: float,
    make_index: Callable[[], VectorIndex] | None = None,
) -> np.ndarray:
    """The collection's vectors after database-side augmentation (unit length).

    `make_index` gives an empty ANN index to find neighbours with when the
    collection is too large for exact search.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if k <= 0 or len(vectors) < 2:
        return vectors
    index = None
    if len(vectors) > EXACT_LIMIT and make_index is not None:
        index = make_index()
        index.build(vectors)
    ids, sims = nearest_neighbours(vectors, k, index)
    out = vectors.copy()  # the vector itself, weight cos(x, x) ** alpha = 1
    for j in range(ids.shape[1]):
        out += _weights(sims[:, j : j + 1], alpha) * vectors[ids[:, j]]
    return l2_normalize(out)


def expand_query(
    vector: np.ndarray, neighbours: np.ndarray, sims: np.ndarray, alpha: float
) -> np.ndarray:
    """One outside query expanded with its neighbours' vectors (rows) and similarities."""
    out = np.asarray(vector, dtype=np.float32).copy()
    out += (_weights(np.asarray(sims)[:, None], alpha) * neighbours).sum(axis=0)
    return l2_normalize(out[None, :])[0]


def expand_collection(fused: np.ndarray, config: PipelineConfig) -> np.ndarray:
    """The preset's query expansion applied to a whole collection's fused vectors."""
    fusion = config.fusion
    if not fusion.expand_k:
        return fused
    return augment_database(
        fused,
        fusion.expand_k,
        fusion.expand_alpha,
        lambda: create_index(config.index.backend, **config.index.params),
    )

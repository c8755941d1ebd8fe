"""Nearest-neighbour indexes: one contract (`VectorIndex`), several backends.

`create_index(name, **params)` makes one; `list_indexes()` names them. Every
backend answers with cosine similarities of L2-normalised vectors, best first.
"""

# Importing the backend modules registers them.
from lookalike.index import (  # noqa: F401
    annoy_index,
    auto,
    exact,
    faiss_index,
    hnsw,
    milvus_index,
    usearch_index,
)
from lookalike.index.base import (
    INDEXES,
    VectorIndex,
    create_index,
    l2_normalize,
    list_indexes,
    load_index,
)
from lookalike.index.milvus_index import IncrementalIndex

__all__ = [
    "INDEXES",
    "IncrementalIndex",
    "VectorIndex",
    "create_index",
    "l2_normalize",
    "list_indexes",
    "load_index",
]

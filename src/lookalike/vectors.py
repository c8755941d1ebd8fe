"""Small vector helpers shared by fusion, indexes and evaluation."""

from __future__ import annotations

import numpy as np


def l2_normalize(vectors: np.ndarray, in_place: bool = False) -> np.ndarray:
    """Unit-length float32 copy along the last axis; all-zero rows stay zero (cosine 0).

    `in_place` scales a float32 array itself (no copy of a large array) and returns it.
    """
    out = vectors if in_place and vectors.dtype == np.float32 else np.array(vectors, np.float32)
    # einsum, unlike linalg.norm, makes no temporary of the input's size.
    norms = np.sqrt(np.einsum("...d,...d->...", out, out))[..., None]
    np.divide(out, norms, out=out, where=norms > 0)
    return out

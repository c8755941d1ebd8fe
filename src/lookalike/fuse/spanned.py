"""A fitted matrix over coded blocks, stored on the blocks' own bases.

A collection of `CODEC_MIN_ROWS` pictures or more stores each feature block as codes on
its principal components (store/codec.py), and the fuser is fitted on the rows decoded
from them. Every such row is the block's mean plus a mix of its components, so whatever
the fuser learns from the rows (means, PCA components, LDA bases) lies in that span too:
its columns over a block are a few coefficients times the block's basis. Stored so, the
fuser's wide matrices (3.1 MB of every 600-picture `default` collection as int8, 8000
columns each) take a few hundred columns, and the codec's bases, stored anyway, give the
wide matrices back when the fuser is loaded.

A layout says which columns of an array lie over which block: ``("basis", key)`` for a
coded block's columns, ``("free", width)`` for columns that are not a block's (pseudo-LDA
projections, a block that was reduced first). An array whose columns over a block do not
lie in its span (fitted on other rows) is not stored so (`compress` says None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np


class Basis(Protocol):
    """A coded block's basis as this module needs it (store/codec.py's BlockBasis)."""

    mean: np.ndarray

    @property
    def span(self) -> np.ndarray:
        """Rows (float64) spanning every row the basis decodes."""
        ...

    @property
    def digest(self) -> str:
        """A name for the basis's values."""
        ...


Segment = tuple[str, "str | int"]  # ("basis", block key) or ("free", width)
# Relative error above which an array is not in its blocks' span (float32 fits: ~1e-6).
SPAN_TOLERANCE = 1e-4


def _widths(layout: Sequence[Segment], bases: Mapping[str, Basis]) -> list[int]:
    return [int(bases[v].mean.shape[0]) if k == "basis" else int(v) for k, v in layout]


def compress(
    array: np.ndarray,
    layout: Sequence[Segment],
    bases: Mapping[str, Basis],
    axis: int = -1,
) -> np.ndarray | None:
    """`array` (1-D or 2-D) with its columns along `axis` over each basis segment replaced by
    coefficients on the basis's `span` rows; None when some segment is not in its block's span."""
    if any(k == "basis" and v not in bases for k, v in layout):
        return None
    matrix = np.atleast_2d(np.asarray(array, np.float64))
    if axis == 0 and np.ndim(array) == 2:
        matrix = matrix.T
    widths = _widths(layout, bases)
    if matrix.shape[1] != sum(widths):
        return None
    parts, col = [], 0
    for (kind, value), width in zip(layout, widths, strict=True):
        segment = matrix[:, col : col + width]
        col += width
        if kind == "free":
            parts.append(segment)
            continue
        rows = bases[str(value)].span
        coefficients = np.linalg.solve(rows @ rows.T, rows @ segment.T).T
        error = np.linalg.norm(coefficients @ rows - segment)
        if error > SPAN_TOLERANCE * max(np.linalg.norm(segment), 1e-30):
            return None
        parts.append(coefficients)
    out = np.hstack(parts).astype(np.float32)
    if np.ndim(array) == 1:
        return out[0]
    return out.T.copy() if axis == 0 else out


def expand(
    coefficients: np.ndarray,
    layout: Sequence[Segment],
    bases: Mapping[str, Basis],
    axis: int = -1,
) -> np.ndarray:
    """The array `compress` was given (float32), from its coefficients."""
    matrix = np.atleast_2d(np.asarray(coefficients, np.float32))
    if axis == 0 and np.ndim(coefficients) == 2:
        matrix = matrix.T
    parts, col = [], 0
    for kind, value in layout:
        if kind == "free":
            parts.append(matrix[:, col : col + int(value)])
            col += int(value)
            continue
        rows = bases[str(value)].span.astype(np.float32)
        parts.append(matrix[:, col : col + len(rows)] @ rows)
        col += len(rows)
    if col != matrix.shape[1]:
        raise ValueError(f"{matrix.shape[1]} coefficients, the layout has {col}")
    out = np.hstack(parts)
    if np.ndim(coefficients) == 1:
        return out[0]
    return np.ascontiguousarray(out.T) if axis == 0 else out

"""Per-view and calibration cosines of stored rows, from their int8 codes, not decoded.

A coded block row is ``x = m + s * u @ C`` (store/codec.py: the block's mean m, its
components C, r x d, the row's int8 codes u and scale s). Its dot product with a query's
unit block ``q`` is ``q.m + s * u.(C q)``: r multiply-adds a row once ``C q`` is made,
instead of decoding d dims; with the Gram matrix ``C C^T`` its norm is as cheap, and a
stored query's ``C q`` too (``(C m + s C C^T u) / |x|``: no pass over d at all; its codes
are read with its results', `CodedScorer.stored_scores`). The
calibration's LDA basis B projected through C once (``C B``, r x 128) gives the rows' LDA
projections the same way. Decoding the k results' 8192 dims and projecting them on the
8192 x 128 basis was two thirds of a stored item's query in `default`
(benchmarks/query_cost.py).

It reproduces `Fuser` (to float32 rounding; tests/search/test_coded_scores.py) where the
fused layout is the plain one: "weighted" mode, no per-block or fused PCA, every block
coded (`default` on 500 pictures or more). Other layouts decode the rows (`Searcher`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lookalike.config import VIEWS
from lookalike.fuse.fuser import Fuser
from lookalike.store.codec import CodedBlock
from lookalike.vectors import l2_normalize


@dataclass(frozen=True)
class _Rows:
    """Stored rows as read for scoring."""

    scaled: np.ndarray  # their codes times their scales, side by side (n x R, float64)
    norms: np.ndarray  # their blocks' norms (n x blocks)
    projected: np.ndarray | None  # their wide vectors' LDA heads (None: not asked for)


@dataclass(frozen=True)
class CodedQuery:
    """A query's side of the blocks' dot products."""

    products: np.ndarray  # C q of each block, its unit block on the components, side by side
    mean_dots: np.ndarray  # m.q of each block
    present: np.ndarray  # whether each block is not all zero
    projected: np.ndarray | None  # its LDA projection, as the wide vector's head holds it


class CodedScorer:
    """The cosines `Searcher` reports, computed on stored rows' codes (see the module).

    The blocks side by side: their codes in R columns, sums over each block's columns
    (`np.add.reduceat`), so that a query makes few array operations a block."""

    def __init__(self, fuser: Fuser, blocks: Mapping[str, CodedBlock]) -> None:
        lda = fuser.lda_
        self._lda = lda if lda is not None and lda.directions_ else None
        self._directions = None
        if self._lda is not None:
            widths = [w.shape[1] for w in self._lda.directions_]
            self._directions = np.hstack(self._lda.directions_).astype(np.float32)
            self._direction_starts = np.cumsum([0, *widths[:-1]])
            self._direction_of = np.repeat(np.arange(len(widths)), widths)
        self._keys = [b.key for b in fuser.blocks]
        data = [blocks[key] for key in self._keys]
        # Plain views of the memory maps: np.memmap's indexing costs more than the few rows.
        self._codes = [np.asarray(d.codes) for d in data]
        self._scales = [np.asarray(d.scales) for d in data]
        self._bases = [d.basis for d in data]
        widths = [len(basis.components) for basis in self._bases]
        self._starts = np.cumsum([0, *widths[:-1]])
        self._block_of = np.repeat(np.arange(len(data)), widths)  # each code column's block
        self._weights = np.array([b.weight for b in fuser.blocks], np.float64)
        self.views = [v for v in VIEWS if any(b.view == v for b in fuser.blocks)]
        self._in_view = np.array([[b.view == v for b in fuser.blocks] for v in self.views], float)
        # Made once, a few ms for `default`'s five blocks.
        self._codes_of = [slice(a, a + w) for a, w in zip(self._starts, widths, strict=True)]
        self._grams = []
        self._components_mean = np.zeros(sum(widths))
        self._mean_squares = np.zeros(len(data))
        self._columns = []  # each block's place in the stacked (wide) vector
        lda_means, lda_components, column = [], [], 0
        for i, basis in enumerate(self._bases):
            components, mean = basis.components, basis.mean
            self._grams.append(components @ components.T)  # float32
            self._components_mean[self._codes_of[i]] = components @ mean
            self._mean_squares[i] = np.dot(mean.astype(np.float64), mean)
            columns = slice(column, column + components.shape[1])
            self._columns.append(columns)
            column = columns.stop
            if self._lda is not None:
                lda_means.append(mean @ self._lda.basis_[columns])
                lda_components.append(components @ self._lda.basis_[columns])
        # The unit blocks' share of the LDA projection x @ B: of each block's mean, of codes.
        self._lda_means = np.array(lda_means, np.float64) if lda_means else None
        self._lda_components = np.vstack(lda_components).astype(np.float32) if lda_means else None

    @staticmethod
    def applies(fuser: Fuser, blocks: Mapping[str, object]) -> bool:
        """Whether the fused layout is the plain one this reproduces (see the module)."""
        return (
            fuser.fusion.mode == "weighted"
            and getattr(fuser, "pca_", None) is None
            and not getattr(fuser, "reducers_", {})
            and all(isinstance(blocks.get(b.key), CodedBlock) for b in fuser.blocks)
        )

    def _block_sums(self, columns: np.ndarray) -> np.ndarray:
        """Sums of each block's code columns (n x R -> n x blocks)."""
        return np.add.reduceat(columns, self._starts, axis=1)

    def _rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows' codes times their scales (n x R, float64), and their blocks' norms."""
        codes = np.concatenate([c[rows] for c in self._codes], axis=1).astype(np.float32)
        scales = np.stack([s[rows] for s in self._scales], axis=1).astype(np.float64)
        scaled = codes * scales[:, self._block_of]  # float64
        squares = self._mean_squares + 2 * self._block_sums(scaled * self._components_mean)
        # u.(C C^T)u on the integer codes in float32 (exact to float32 rounding), each
        # block's own Gram matrix (no zeros multiplied), times the squared scales.
        quadratic = np.empty_like(squares)
        for i, gram in enumerate(self._grams):
            block = codes[:, self._codes_of[i]]
            quadratic[:, i] = ((block @ gram) * block).sum(axis=1)
        squares += quadratic * scales**2
        return scaled, np.sqrt(np.maximum(squares, 0))

    def _projection(self, scaled: np.ndarray, norms: np.ndarray) -> np.ndarray:
        """The rows' stacked unit blocks (before the stacked norm) on the LDA basis."""
        assert self._lda_means is not None and self._lda_components is not None
        shares = _divided(np.broadcast_to(self._weights, norms.shape), norms)
        # float32: the one sizeable product a query makes (rows x R x 128).
        weighted = (scaled * shares[:, self._block_of]).astype(np.float32)
        return shares @ self._lda_means + weighted @ self._lda_components

    def _read(self, rows: np.ndarray, lda: bool) -> _Rows:
        """Stored rows' codes, blocks' norms and, with `lda`, their wide vectors' heads."""
        scaled, norms = self._rows(np.asarray(rows, np.int64))
        projected = None
        if lda and self._lda is not None:
            stacked = np.sqrt((norms > 0) @ self._weights**2)  # the stacked vectors' norms
            projection = _divided(self._projection(scaled, norms), stacked[:, None])
            projected = self._projected(projection)
        return _Rows(scaled, norms, projected)

    # -- the query's side ------------------------------------------------------------
    def _query_of(self, read: _Rows, i: int) -> CodedQuery:
        """Row `i` of `read` as a query."""
        scaled, norms = read.scaled[i], read.norms[i]
        inverse = _divided(np.ones(len(norms)), norms)
        grams = [
            scaled[codes] @ gram for codes, gram in zip(self._codes_of, self._grams, strict=True)
        ]
        products = (self._components_mean + np.concatenate(grams)) * inverse[self._block_of]
        sums = self._block_sums((scaled * self._components_mean)[None, :])[0]
        mean_dots = (self._mean_squares + sums) * inverse
        projected = None if read.projected is None else read.projected[i]
        return CodedQuery(products, mean_dots, norms > 0, projected)

    def image_query(self, blocks: Mapping[str, np.ndarray]) -> CodedQuery:
        """A query from its computed feature blocks (one row each)."""
        products, mean_dots, present, projection = [], [], [], 0.0
        for key, basis, weight, columns in zip(
            self._keys, self._bases, self._weights, self._columns, strict=True
        ):
            unit = l2_normalize(np.asarray(blocks[key], np.float32).reshape(-1))
            products.append(basis.components @ unit)
            mean_dots.append(basis.mean @ unit)
            present.append(unit.any())
            if self._lda is not None:
                projection = projection + weight * (unit @ self._lda.basis_[columns])
        found = np.array(present)
        projected = None
        if self._lda is not None:
            stacked = np.sqrt(self._weights**2 @ found)
            y = np.asarray(projection, np.float64)[None, :]
            projected = self._projected(_divided(y, np.array([[stacked]])))[0]
        return CodedQuery(
            np.concatenate(products).astype(np.float64),
            np.array(mean_dots, np.float64),
            found,
            projected,
        )

    def _projected(self, y: np.ndarray) -> np.ndarray:
        """`PseudoLabelLDA.transform`'s head of x @ B (`y`): its LDA directions, unit-length."""
        assert self._lda is not None
        assert self._directions is not None
        # All directions in one product; each k's part made unit-length, then the whole.
        parts = (y - self._lda.projected_mean).astype(np.float32) @ self._directions
        norms = np.sqrt(np.add.reduceat(parts * parts, self._direction_starts, axis=1))
        parts = _divided(parts, norms[:, self._direction_of])
        return l2_normalize(parts.astype(np.float32)).astype(np.float64)

    # -- the rows' side ----------------------------------------------------------------
    def scores(
        self, rows: np.ndarray, query: CodedQuery, wide: bool
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """For stored `rows`: each view's cosine with the query, as the view fusers'
        vectors (`Fuser.select`) give it, and with `wide` the cosine of their wide
        (calibration) vectors (`Fuser.wide_transform`)."""
        return self._scored(self._read(rows, lda=wide), query, wide)

    def stored_scores(
        self, row: int, rows: np.ndarray, wide: bool
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """`scores` with the stored `row` as the query, read with the rows in one pass."""
        read = self._read(np.concatenate([[row], np.asarray(rows, np.int64)]), lda=wide)
        query = self._query_of(read, 0)
        rest = _Rows(
            read.scaled[1:], read.norms[1:], None if read.projected is None else read.projected[1:]
        )
        return self._scored(rest, query, wide)

    def _scored(
        self, read: _Rows, query: CodedQuery, wide: bool
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        scaled, norms = read.scaled, read.norms
        cosines = _divided(query.mean_dots + self._block_sums(scaled * query.products), norms)
        squared = self._weights**2
        # An all-zero block stays zero (`l2_normalize`): a stacked norm is of the others.
        dots = (cosines * squared) @ self._in_view.T  # of the stacked view vectors
        squares = ((norms > 0) * squared) @ self._in_view.T  # their squared norms
        query_squares = self._in_view @ (query.present * squared)
        views = {
            view: _divided(dots[:, i], np.sqrt(squares[:, i] * query_squares[i])).astype(np.float32)
            for i, view in enumerate(self.views)
        }
        if not wide:
            return views, None
        row_squares, query_square = squares.sum(axis=1), query_squares.sum()
        x_dots = _divided(dots.sum(axis=1), np.sqrt(row_squares * query_square))
        if read.projected is None or query.projected is None:  # the wide vector is the stacked one
            return views, x_dots.astype(np.float32)
        # LDA's output is [projected, x], each unit-length (or zero), made unit-length.
        projected, p = read.projected, query.projected
        row_norms = np.sqrt(np.einsum("ij,ij->i", projected, projected) + (row_squares > 0))
        query_norm = np.sqrt(p @ p + (query_square > 0))
        wides = _divided(projected @ p + x_dots, row_norms * query_norm)
        return views, wides.astype(np.float32)


def _divided(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """a / b, 0 where b is 0 (a zero vector's cosine)."""
    a = np.asarray(a, np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=np.asarray(b) > 0)

"""Per-view and calibration cosines of stored rows, from their int8 codes, not decoded.

A coded block row is ``x = m + s * u @ C`` (store/codec.py: the block's mean m, its
components C, r x d, the row's int8 codes u and scale s). Its dot product with a query's
unit block ``q`` is ``q.m + s * u.(C q)``: r multiply-adds a row once ``C q`` is made,
instead of decoding d dims; with the Gram matrix ``C C^T`` its norm is as cheap, and a
stored query's ``C q`` too (``(C m + s C C^T u) / |x|``: no pass over d at all; its codes
are read with its results', `CodedScorer.stored_scores`). The
calibration's LDA basis B and its directions D projected through C once (``C B D``, r x
the directions, or ``C B`` then ``D`` where the directions outnumber what that saves) give
the rows' LDA projections the same way. Decoding the k results'
8192 dims and projecting them on the 8192 x 128 basis was two thirds of a stored item's
query in `default` (benchmarks/query_cost.py).

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

    codes: np.ndarray  # their int8 codes, the blocks side by side (n x R, float32)
    scales: np.ndarray  # each block's scale (n x blocks, float64)
    norms: np.ndarray  # their blocks' norms (n x blocks)
    projected: np.ndarray | None  # their wide vectors' LDA heads (None: not asked for)


@dataclass(frozen=True)
class CodedQuery:
    """A query's side of the blocks' dot products."""

    products: np.ndarray  # C q of each block in its block's column (R x blocks): u @ this
    mean_dots: np.ndarray  # m.q of each block
    present: np.ndarray  # whether each block is not all zero
    projected: np.ndarray | None  # its LDA projection, as the wide vector's head holds it


class CodedScorer:
    """The cosines `Searcher` reports, computed on stored rows' codes (see the module).

    The blocks side by side: their codes in R columns; per-block sums are products with
    block-diagonal R x blocks matrices, so that a query makes few array operations (each
    costs more than the arithmetic of a dozen rows)."""

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
        self._block_of = np.repeat(np.arange(len(data)), widths)  # each code column's block
        # 1 where a code column is of a block: x @ this sums each block's columns.
        self._in_block = np.eye(len(data))[self._block_of]
        self._weights = np.array([b.weight for b in fuser.blocks], np.float64)
        self.views = [v for v in VIEWS if any(b.view == v for b in fuser.blocks)]
        self._in_view = np.array([[b.view == v for b in fuser.blocks] for v in self.views], float)
        # Made once, a few ms for `default`'s five blocks.
        starts = np.cumsum([0, *widths[:-1]])
        self._codes_of = [slice(a, a + w) for a, w in zip(starts, widths, strict=True)]
        self._grams = []
        components_mean = np.zeros(sum(widths))
        self._mean_squares = np.zeros(len(data))
        self._columns = []  # each block's place in the stacked (wide) vector
        lda_means, lda_components, column = [], [], 0
        for i, basis in enumerate(self._bases):
            components, mean = basis.components, basis.mean
            self._grams.append(components @ components.T)  # float32
            components_mean[self._codes_of[i]] = components @ mean
            self._mean_squares[i] = np.dot(mean.astype(np.float64), mean)
            columns = slice(column, column + components.shape[1])
            self._columns.append(columns)
            column = columns.stop
            if self._lda is not None:
                lda_means.append(mean @ self._lda.basis_[columns])
                lda_components.append(components @ self._lda.basis_[columns])
        self._components_mean = components_mean
        self._mean_products = self._in_block * components_mean[:, None]  # u @ this: u.(C m)
        # The unit blocks' share of the LDA projection x @ B, on to its directions D at once
        # (x @ B @ D): of each block's mean, of the codes; and of the projection's mean.
        self._lda_means = self._projected_mean = None
        self._lda_steps: list[np.ndarray] = []  # the codes' products, in turn, to the directions
        if self._lda is not None and self._directions is not None:
            directions = self._directions.astype(np.float64)
            self._lda_means = np.array(lda_means, np.float64) @ directions
            self._lda_steps = product_steps(np.vstack(lda_components), directions)
            self._projected_mean = self._lda.projected_mean @ directions

    @staticmethod
    def applies(fuser: Fuser, blocks: Mapping[str, object]) -> bool:
        """Whether the fused layout is the plain one this reproduces (see the module)."""
        return (
            fuser.fusion.mode == "weighted"
            and getattr(fuser, "pca_", None) is None
            and not getattr(fuser, "reducers_", {})
            and all(isinstance(blocks.get(b.key), CodedBlock) for b in fuser.blocks)
        )

    def _read(self, rows: np.ndarray, lda: bool) -> _Rows:
        """Stored rows' codes, blocks' norms and, with `lda`, their wide vectors' heads."""
        codes = np.concatenate([c[rows] for c in self._codes], axis=1).astype(np.float32)
        scales = np.stack([s[rows] for s in self._scales], axis=1).astype(np.float64)
        # |m + s u C|^2 = m.m + 2 s u.(C m) + s^2 u (C C^T) u: the last on the integer codes
        # in float32 (exact to float32 rounding), each block's own Gram matrix.
        quadratic = np.stack(
            [
                np.einsum("ij,ij->i", codes[:, of] @ gram, codes[:, of])
                for of, gram in zip(self._codes_of, self._grams, strict=True)
            ],
            axis=1,
        )
        cross = codes @ self._mean_products
        squares = self._mean_squares + 2 * scales * cross + scales**2 * quadratic
        norms = np.sqrt(np.maximum(squares, 0))
        projected = None
        if lda and self._lda is not None:
            stacked = np.sqrt((norms > 0) @ self._weights**2)  # the stacked vectors' norms
            parts = self._projection(codes, scales, norms) / _nonzero(stacked)[:, None]
            projected = self._heads(parts - self._projected_mean)
        return _Rows(codes, scales, norms, projected)

    def _projection(self, codes: np.ndarray, scales: np.ndarray, norms: np.ndarray) -> np.ndarray:
        """The rows' stacked unit blocks (before the stacked norm) on the LDA basis's
        directions."""
        assert self._lda_means is not None and self._lda_steps
        shares = self._weights / _nonzero(norms)
        # float32: the one sizeable product a query makes (rows x R x directions).
        weighted = codes * (scales * shares)[:, self._block_of].astype(np.float32)
        for matrix in self._lda_steps:
            weighted = weighted @ matrix
        return shares @ self._lda_means + weighted

    # -- the query's side ------------------------------------------------------------
    def _query_of(self, read: _Rows, i: int) -> CodedQuery:
        """Row `i` of `read` as a query."""
        codes, scales, norms = read.codes[i], read.scales[i], read.norms[i]
        inverse = 1 / _nonzero(norms)
        # u C C^T on the integer codes in float32, as the rows' norms (`_read`).
        grams = [codes[of] @ gram for of, gram in zip(self._codes_of, self._grams, strict=True)]
        scaled_grams = np.concatenate(grams) * scales[self._block_of]
        products = (self._components_mean + scaled_grams) * inverse[self._block_of]
        mean_dots = (self._mean_squares + scales * (codes @ self._mean_products)) * inverse
        projected = None if read.projected is None else read.projected[i]
        return self._query(products, mean_dots, norms > 0, projected)

    def _query(
        self,
        products: np.ndarray,
        mean_dots: np.ndarray,
        present: np.ndarray,
        projected: np.ndarray | None,
    ) -> CodedQuery:
        return CodedQuery(self._in_block * products[:, None], mean_dots, present, projected)

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
            y = np.asarray(projection, np.float64)[None, :] / _nonzero(np.array([[stacked]]))
            assert self._directions is not None
            parts = (y - self._lda.projected_mean).astype(np.float32) @ self._directions
            projected = self._heads(parts)[0]
        return self._query(
            np.concatenate(products).astype(np.float64),
            np.array(mean_dots, np.float64),
            found,
            projected,
        )

    def _heads(self, parts: np.ndarray) -> np.ndarray:
        """`PseudoLabelLDA.transform`'s head from the centred projection on all its directions
        (`parts`): each k's part made unit-length, then the whole."""
        norms = np.sqrt(np.add.reduceat(parts * parts, self._direction_starts, axis=1))
        parts = parts / _nonzero(norms)[:, self._direction_of]
        return l2_normalize(parts.astype(np.float32)).astype(np.float64)

    # -- the rows' side ----------------------------------------------------------------
    def scores(
        self, rows: np.ndarray, query: CodedQuery, wide: bool
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """For stored `rows`: each view's cosine with the query, as the view fusers'
        vectors (`Fuser.select`) give it, and with `wide` the cosine of their wide
        (calibration) vectors (`Fuser.wide_transform`)."""
        return self._scored(self._read(np.asarray(rows, np.int64), lda=wide), query, wide)

    def stored_scores(
        self, row: int, rows: np.ndarray, wide: bool
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """`scores` with the stored `row` as the query, read with the rows in one pass."""
        read = self._read(np.concatenate([[row], np.asarray(rows, np.int64)]), lda=wide)
        query = self._query_of(read, 0)
        rest = _Rows(
            read.codes[1:],
            read.scales[1:],
            read.norms[1:],
            None if read.projected is None else read.projected[1:],
        )
        return self._scored(rest, query, wide)

    def _scored(
        self, read: _Rows, query: CodedQuery, wide: bool
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        norms = read.norms
        block_dots = query.mean_dots + read.scales * (read.codes @ query.products)
        cosines = block_dots / _nonzero(norms)
        squared = self._weights**2
        # An all-zero block stays zero (`l2_normalize`): a stacked norm is of the others.
        dots = (cosines * squared) @ self._in_view.T  # of the stacked view vectors
        squares = ((norms > 0) * squared) @ self._in_view.T  # their squared norms
        query_squares = self._in_view @ (query.present * squared)
        view_cosines = (dots / _nonzero(np.sqrt(squares * query_squares))).astype(np.float32)
        views = {view: view_cosines[:, i] for i, view in enumerate(self.views)}
        if not wide:
            return views, None
        row_squares, query_square = squares.sum(axis=1), query_squares.sum()
        x_dots = dots.sum(axis=1) / _nonzero(np.sqrt(row_squares * query_square))
        if read.projected is None or query.projected is None:  # the wide vector is the stacked one
            return views, x_dots.astype(np.float32)
        # LDA's output is [projected, x], each unit-length (or zero), made unit-length.
        projected, p = read.projected, query.projected
        row_norms = np.sqrt(np.einsum("ij,ij->i", projected, projected) + (row_squares > 0))
        query_norm = np.sqrt(p @ p + (query_square > 0))
        wides = (projected @ p + x_dots) / _nonzero(row_norms * query_norm)
        return views, wides.astype(np.float32)


def product_steps(first: np.ndarray, second: np.ndarray) -> list[np.ndarray]:
    """The float32 matrices that take a row through `first` then `second`: their product, or
    both in turn where that is fewer multiplications a row (the codes to the LDA basis, R x
    128, then to its directions: with several k-means starts there are more directions than
    the basis has dims, pseudo_lda.py)."""
    rows, inner = first.shape
    if rows * second.shape[1] <= inner * (rows + second.shape[1]):
        return [(first @ second).astype(np.float32)]
    return [first.astype(np.float32), second.astype(np.float32)]


def _nonzero(divisors: np.ndarray | float) -> np.ndarray:
    """`divisors` with inf for 0: a / this is a / divisors, and 0 where a divisor is 0 (a zero
    vector's cosine)."""
    divisors = np.asarray(divisors, np.float64)
    return np.where(divisors > 0, divisors, np.inf)

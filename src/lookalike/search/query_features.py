"""What a query's results are scored against (per-view cosines, P(same)), made on first use."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol

import numpy as np

from lookalike.search.coded_scores import CodedQuery, CodedScorer
from lookalike.search.rerank import ViewScorer


class Searcher(Protocol):
    """What of `lookalike.search.searcher.Searcher` the features are made with."""

    @property
    def coded_scorer(self) -> CodedScorer | None: ...

    def readable_blocks(
        self, rows: np.ndarray, items: np.ndarray
    ) -> dict[str, np.ndarray] | None: ...

    def query_views(
        self, make: Callable[[ViewScorer], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray] | None: ...

    def calibration_vector(self, blocks: dict[str, np.ndarray]) -> np.ndarray | None: ...


class QueryFeatures:
    """A query's feature blocks and the forms its results are scored from, each made when
    first asked for: a stored picture asking a coded collection needs nothing but its row
    (`stored_row`: its codes are read with its results', `CodedScorer.stored_scores`); a
    face item or a picture from outside, its coded form (`coded`); the decoding path, its
    per-view vectors (`views`) and calibration vector (`wide`), made from its blocks
    (decoded for a stored picture)."""

    def __init__(
        self,
        searcher: Searcher,
        blocks: dict[str, np.ndarray] | None = None,
        row: int | None = None,
        item: int = -1,
    ) -> None:
        """Either the `blocks` of a picture from outside the collection (one row each), or the
        stored `row` that asks (`item`: its face item's row, -1 for the picture's own)."""
        self._searcher = searcher
        self._blocks, self._row, self._item = blocks, row, item

    @functools.cached_property
    def blocks(self) -> dict[str, np.ndarray] | None:
        """Its feature blocks (one row each); None where the stored ones are damaged."""
        if self._row is None:
            return self._blocks
        return self._searcher.readable_blocks(np.array([self._row]), np.array([self._item]))

    @functools.cached_property
    def views(self) -> dict[str, np.ndarray] | None:
        """Its per-view vectors; None where its blocks are damaged."""
        blocks = self.blocks
        if blocks is None:
            return None
        return self._searcher.query_views(lambda scorer: scorer.query_vectors(blocks))

    @functools.cached_property
    def wide(self) -> np.ndarray | None:
        """Its calibration vector (`Searcher.calibration_vector`); None where there is none."""
        return None if self.blocks is None else self._searcher.calibration_vector(self.blocks)

    @functools.cached_property
    def coded(self) -> CodedQuery | None:
        """Its side of the coded dot products, from its blocks (for a face item or a picture
        from outside); None where the collection is not scored on codes
        (`Searcher.coded_scorer`) or its blocks are damaged."""
        scorer = self._searcher.coded_scorer
        if scorer is None or self.blocks is None:
            return None
        return scorer.image_query(self.blocks)

    @property
    def stored_row(self) -> int | None:
        """The stored row that asks with its own blocks (None: a face item, or a picture from
        outside the collection)."""
        return self._row if self._item < 0 else None

    @property
    def readable(self) -> bool:
        """Whether its results can have per-view scores (its blocks are not damaged)."""
        if self.stored_row is not None and self._searcher.coded_scorer is not None:
            return True  # its codes are read with its results' (nothing to make first)
        return self.coded is not None or self.views is not None

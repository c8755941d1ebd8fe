"""Exact head-versus-whole re-ranking of a candidate set, from the stored per-block vectors.

The index holds one fused vector per image. To weigh the head view against the
whole image at query time without a new index, each view gets its own vector,
built from that view's blocks exactly as the collection's fitted `Fuser` builds
the fused one (same per-block PCA and normalisation), then L2-normalised. A
candidate's score is then ``w * cos(head) + (1 - w) * cos(whole)``.

For a "weighted" preset without a global PCA the fused cosine is exactly this
score at ``w = head share of the squared block weights`` (`default_head_weight`, where
the page's slider rests). With a dense reduction (the `default` preset's final PCA)
no weight reproduces the fused cosine, so nothing re-weights until the slider is
moved: the first answer is always the index's (docs/web.md, "Ranking").
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lookalike.config import VIEWS
from lookalike.fuse.fuser import Fuser


def view_fusers(fuser: Fuser) -> dict[str, Fuser]:
    """One fitted Fuser per view, over that view's blocks, sharing the per-block state."""
    views = [v for v in VIEWS if any(b.view == v for b in fuser.blocks)]
    return {v: fuser.select([b.key for b in fuser.blocks if b.view == v]) for v in views}


def default_head_weight(fuser: Fuser) -> float | None:
    """The head weight whose score equals the fused cosine; 0.5 where none does exactly."""
    views = {b.view for b in fuser.blocks}
    if views != {"head", "whole"}:
        return None
    if fuser.fusion.mode != "weighted" or fuser.pca_ is not None:
        return 0.5
    squares = {v: sum(b.weight**2 for b in fuser.blocks if b.view == v) for v in views}
    total = squares["head"] + squares["whole"]
    return float(squares["head"] / total) if total > 0 else 0.5


class ViewScorer:
    """Per-view unit vectors of an image's feature blocks (`Searcher` decodes the stored
    blocks of the rows a query needs)."""

    def __init__(self, fuser: Fuser) -> None:
        self.fusers = view_fusers(fuser)

    @property
    def views(self) -> list[str]:
        return list(self.fusers)

    def query_vectors(self, blocks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-view vectors of one image, from its (1, D) feature blocks."""
        return {view: f.transform(blocks)[0] for view, f in self.fusers.items()}


def combine(cosines: Mapping[str, np.ndarray], head_weight: float) -> np.ndarray:
    """``w * head + (1 - w) * whole``: the slider's score."""
    return head_weight * cosines["head"] + (1.0 - head_weight) * cosines["whole"]


def rank(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions of `scores` best first; equal scores by ascending id (`Searcher.search_vector`,
    so `query` and the page order ties alike)."""
    return np.lexsort((ids, -scores))

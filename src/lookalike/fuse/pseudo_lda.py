"""Pseudo-label LDA: a discriminative projection learned from the collection alone.

No labels: k-means on the collection gives pseudo-classes, linear discriminant
analysis finds the directions that separate them, and that is repeated once on
the projected vectors. Several k at once (one LDA each) avoid betting on the
number of characters. The projection is appended to the input vector, not put in
its place (alone it measured worse than the input). With `starts`, each k is clustered
from several k-means starts, each its own LDA: one start's P@4 moves by up to 0.2 from
one seed to the next (the built-in sample), several average that noise out
(benchmarks/quality.md, "k-means starts"). Measured on anime faces (benchmarks/quality.md,
round 2): 0.874 -> 0.912 precision@4 without labels.

A scikit-learn style estimator: `fit` learns from the collection, learned state
ends in `_`, `transform` maps any vector (a query from outside too: the map is
linear per part).

The k-means and the LDA are this module's own, not scikit-learn's `KMeans` and
`LinearDiscriminantAnalysis(solver="eigen", shrinkage=0.1)`: with those in their place
(issue 20) `default` scored lower, P@4 on the built-in sample 0.841 -> 0.798 and on
anime-full-dev 0.745 -> 0.722, 0.827 -> 0.807 on the sample averaged over six fits
(three seeds, three pictures left out), the same on the other sets; `groups` ARI on
orl-faces-dev 0.915 -> 0.893 (experiments/pseudo_lda_stability.py, benchmarks/quality.md).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

from lookalike.fuse.lowrank import sample_rows, top_components, varying
from lookalike.vectors import l2_normalize


def kmeans(x: np.ndarray, k: int, seed: int, iters: int = 50) -> np.ndarray:
    """Cluster ids of the rows: k-means++ seeding, then Lloyd until assignments settle."""
    rng = np.random.default_rng(seed)
    n = len(x)
    sq_norms = np.einsum("ij,ij->i", x, x)

    def sq_distances(c: np.ndarray) -> np.ndarray:  # to one centre, no temporary of x's size
        return np.maximum(sq_norms - 2 * (x @ c) + c @ c, 0)

    centres = [x[rng.integers(n)]]
    d2 = sq_distances(centres[0])
    for _ in range(1, k):
        c = x[rng.choice(n, p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(n)]
        centres.append(c)
        d2 = np.minimum(d2, sq_distances(c))
    c = np.stack(centres)
    assign = np.full(n, -1, dtype=np.int64)
    for _ in range(iters):
        dist = sq_norms[:, None] - 2 * (x @ c.T) + (c**2).sum(1)[None, :]
        new = dist.argmin(axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = x[assign == j]
            if len(members):  # an empty cluster keeps its centre
                c[j] = members.mean(axis=0)
    return assign


def lda_directions(x: np.ndarray, ids: np.ndarray, shrink: float) -> np.ndarray:
    """(D, groups - 1) LDA directions; the within-class scatter is shrunk to its mean
    eigenvalue so that it can be inverted with few rows per group."""
    mu = x.mean(axis=0)
    sw = np.zeros((x.shape[1], x.shape[1]))
    sb = np.zeros_like(sw)
    groups = np.unique(ids)
    for g in groups:
        xg = x[ids == g]
        mg = xg.mean(axis=0)
        sw += (xg - mg).T @ (xg - mg)
        sb += len(xg) * np.outer(mg - mu, mg - mu)
    sw /= len(x)
    sb /= len(x)
    sw = (1 - shrink) * sw + shrink * np.trace(sw) / len(sw) * np.eye(len(sw))
    ev, evec = np.linalg.eigh(sw)
    whiten = evec / np.sqrt(np.maximum(ev, 1e-12))
    ev_b, evec_b = np.linalg.eigh(whiten.T @ sb @ whiten)
    order = np.argsort(-ev_b)[: len(groups) - 1]
    return whiten @ evec_b[:, order]


class PseudoLabelLDA:
    def __init__(
        self,
        ks: Sequence[int] = (10, 20, 30, 40, 50),
        rounds: int = 2,
        pca_dim: int = 128,
        shrink: float = 0.1,
        seed: int = 0,
        starts: int = 1,
    ) -> None:
        self.ks = tuple(ks)
        self.rounds = rounds
        self.pca_dim = pca_dim
        self.shrink = shrink
        self.seed = seed
        self.starts = starts

    def fit(self, x: np.ndarray) -> PseudoLabelLDA:
        # A sample of rows: PCA and k-means need no more, and memory stays bounded.
        x = sample_rows(x, self.seed)
        # Several rows per pseudo-class are needed: small collections use the small k only.
        ks = [k for k in self.ks if k <= len(x) // 4]
        self.mean_ = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.__dict__.pop("projected_mean", None)  # of the mean and basis fitted before
        centred = x - self.mean_
        # At most as many axes as the rows vary along: a collection of fewer than `pca_dim`
        # pictures has fewer, and the rest would be noise outside the blocks' coded span.
        vt = varying(*top_components(centred, self.pca_dim, self.seed))
        self.basis_ = np.ascontiguousarray(vt.T)
        self.directions_: list[np.ndarray] = []
        if not ks:
            return self
        y = centred @ self.basis_
        del centred  # the sample and one transformed copy are all the fit holds from here
        current = l2_normalize(y)
        for r in range(self.rounds):
            self.directions_ = [
                lda_directions(y, kmeans(current, k, seed), self.shrink).astype(np.float32)
                for k in ks
                for seed in self._seeds(r, k)
            ]
            current = self.transform(x)
        return self

    def _seeds(self, round_: int, k: int) -> list[int]:
        """The k-means seeds of one round and k: `starts` of them, each its own LDA (the
        first is the seed of a single start)."""
        return [self.seed + round_ * 100 + k + 1000 * start for start in range(self.starts)]

    def transform(self, x: np.ndarray) -> np.ndarray:
        if not hasattr(self, "mean_"):
            raise RuntimeError("PseudoLabelLDA is not fitted")
        x = np.asarray(x, dtype=np.float32)
        if not self.directions_:  # too small a collection to learn from
            return l2_normalize(x)
        y = x @ self.basis_ - self.projected_mean  # no centred copy of x
        projected = l2_normalize(np.concatenate([l2_normalize(y @ w) for w in self.directions_], 1))
        # [projected, unit x] / sqrt(2), written once into the output (no temporaries of x's size).
        out = np.empty((len(x), projected.shape[1] + x.shape[1]), dtype=np.float32)
        out[:, : projected.shape[1]] = projected
        out[:, projected.shape[1] :] = x
        l2_normalize(out[:, projected.shape[1] :], in_place=True)
        return l2_normalize(out, in_place=True)

    @functools.cached_property
    def projected_mean(self) -> np.ndarray:
        """The mean in the PCA basis, once: a query's transform would read the whole basis
        again for it."""
        return self.mean_ @ self.basis_

    @property
    def output_dim(self) -> int:
        extra = sum(w.shape[1] for w in self.directions_)
        return int(self.mean_.shape[0] + extra) if extra else int(self.mean_.shape[0])

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        arrays = {f"{prefix}/mean": self.mean_, f"{prefix}/basis": self.basis_}
        arrays.update({f"{prefix}/lda/{i}": w for i, w in enumerate(self.directions_)})
        return arrays

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray], prefix: str) -> PseudoLabelLDA:
        fitted = cls()
        fitted.mean_ = data[f"{prefix}/mean"]
        fitted.basis_ = data[f"{prefix}/basis"]
        names = sorted(
            (n for n in data if n.startswith(f"{prefix}/lda/")),
            key=lambda n: int(n.rsplit("/", 1)[1]),
        )
        fitted.directions_ = [data[n] for n in names]
        return fitted

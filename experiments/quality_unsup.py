"""Collection-fitted (unlabelled) transforms and re-rankings for the quality experiments.

Everything here sees only the vectors of the collection; labels are used by the callers
for scoring only. numpy only (no scikit-learn / scipy in the environment).

- `soft_hsv_hist`: HSV histogram with bilinear (linear in each of hue, saturation, value;
  circular in hue) votes into neighbouring bins, per grid cell, Hellinger-normalised.
- `kmeans`: k-means++ seeding + Lloyd iterations (deterministic for a seed).
- `fit_pseudo_lda` / `pseudo_lda`: cluster, fit LDA on the cluster ids, project; iterate;
  the fitted map (`PseudoLda`) applies to vectors it was not fitted on.
- `diffusion_scores`: kNN-graph diffusion (Iscen et al. 2017) on the collection.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lookalike.embed.descriptors.color import WORK_SIZE, to_work_rgb
from lookalike.embed.descriptors.soft import _soft_axis
from lookalike.fuse.pseudo_lda import kmeans, lda_directions

# `_soft_axis` is a private helper of the package, imported on purpose: the public
# `SoftHsvGrid` is soft_hsv_hist without the sat_weight hue part that round 2 also
# scored, so it cannot stand in for it.


def l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------- soft colour histogram


def soft_hsv_hist(
    rgb: np.ndarray,
    bins: tuple[int, int, int] = (18, 4, 4),
    grid: tuple[int, int] = (3, 3),
    sat_weight: float = 0.0,
) -> np.ndarray:
    """Trilinear-vote HSV histogram per grid cell (rows x cols), each cell Hellinger-
    normalised and scaled by 1/sqrt(cells). sat_weight > 0 adds a pure hue histogram
    (18 bins) whose votes are weighted by saturation*value, appended per cell."""
    work = to_work_rgb(rgb)
    hsv = cv2.cvtColor(work, cv2.COLOR_RGB2HSV).astype(np.float64)
    hb, sb, vb = bins
    h0, h1, wh0, wh1 = _soft_axis(hsv[..., 0] / 180.0, hb, True)
    s0, s1, ws0, ws1 = _soft_axis(hsv[..., 1] / 256.0, sb, False)
    v0, v1, wv0, wv1 = _soft_axis(hsv[..., 2] / 256.0, vb, False)
    n = hb * sb * vb
    rows, cols = grid
    ri = np.minimum(np.arange(WORK_SIZE) * rows // WORK_SIZE, rows - 1)
    ci = np.minimum(np.arange(WORK_SIZE) * cols // WORK_SIZE, cols - 1)
    cell = ri[:, None] * cols + ci[None, :]
    cells = rows * cols
    hist = np.zeros(cells * n)
    for hh, wh in ((h0, wh0), (h1, wh1)):
        for ss, ws in ((s0, ws0), (s1, ws1)):
            for vv, wv in ((v0, wv0), (v1, wv1)):
                code = cell * n + (hh * sb + ss) * vb + vv
                hist += np.bincount(code.ravel(), (wh * ws * wv).ravel(), minlength=cells * n)
    hist = hist.reshape(cells, n)
    parts = [hist]
    if sat_weight > 0:
        w = (hsv[..., 1] / 255.0) * (hsv[..., 2] / 255.0)
        hue = np.zeros(cells * hb)
        for hh, wh in ((h0, wh0), (h1, wh1)):
            hue += np.bincount((cell * hb + hh).ravel(), (wh * w).ravel(), minlength=cells * hb)
        parts.append(hue.reshape(cells, hb) * sat_weight)
    out = []
    for p in parts:
        p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
        out.append(np.sqrt(p) / np.sqrt(cells))
    return np.concatenate(out, axis=1).ravel().astype(np.float32)


# ---------------------------------------------------------------- clustering and LDA


@dataclass(frozen=True)
class PseudoLda:
    """A fitted pseudo-LDA map: PCA (mean, basis), then per clustering an LDA basis; the
    output is l2n(concat_k l2n(y @ W_k)), concatenated with mix * l2n(x) when mix > 0."""

    mean: np.ndarray  # (D,)
    basis: np.ndarray  # (D, pca_dim)
    lda: tuple[np.ndarray, ...]  # (pca_dim, k - 1) each
    mix: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = (x - self.mean) @ self.basis
        proj = l2n(np.concatenate([l2n(y @ w) for w in self.lda], axis=1))
        return l2n(np.concatenate([proj, self.mix * l2n(x)], axis=1)) if self.mix > 0 else proj


def fit_pseudo_lda(
    x: np.ndarray,
    ks: tuple[int, ...] = (20, 30, 40),
    rounds: int = 2,
    pca_dim: int = 128,
    shrink: float = 0.1,
    mix: float = 0.0,
    seed: int = 0,
) -> PseudoLda:
    """Unsupervised discriminative projection: PCA to pca_dim; each round clusters the
    current vectors (round 1: the L2-normalised PCA vectors; later rounds: the previous
    round's output) with k-means for every k in ks, fits one LDA per clustering on the
    PCA vectors, and the map of the last round is returned."""
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    basis = vt[:pca_dim].T
    y = (x - mean) @ basis
    cur = l2n(y)
    fitted = PseudoLda(mean, basis, (), mix)
    for r in range(rounds):
        lda = tuple(lda_directions(y, kmeans(cur, k, seed + r * 100 + k), shrink) for k in ks)
        fitted = PseudoLda(mean, basis, lda, mix)
        cur = fitted(x)
    return fitted


def pseudo_lda(x: np.ndarray, *args: object, **kwargs: object) -> np.ndarray:
    """fit_pseudo_lda on x, applied to x."""
    return fit_pseudo_lda(x, *args, **kwargs)(x)


# ---------------------------------------------------------------- diffusion


def diffusion_scores(
    x: np.ndarray, k: int = 10, alpha: float = 0.9, gamma: float = 3.0
) -> np.ndarray:
    """Iscen et al. 2017, database side: the affinity A_ij = max(cos, 0)^gamma over the
    k nearest neighbours, symmetrised by the maximum of A and its transpose; S = D^-1/2 A
    D^-1/2; the scores of item i are row i of (I - alpha S)^-1 (closed form, N x N)."""
    n = len(x)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    nn = np.argsort(-s, axis=1)[:, :k]
    a = np.zeros((n, n))
    rows = np.repeat(np.arange(n), k)
    a[rows, nn.ravel()] = np.maximum(s[rows, nn.ravel()], 0) ** gamma
    a = np.maximum(a, a.T)
    d = a.sum(axis=1)
    dm = 1 / np.sqrt(np.maximum(d, 1e-12))
    sm = a * dm[:, None] * dm[None, :]
    return np.linalg.inv(np.eye(n) - alpha * sm)

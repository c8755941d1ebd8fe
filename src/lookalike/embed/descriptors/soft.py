"""Soft-binned HSV histograms: each pixel votes into its two nearest bins per axis.

Hard bins make two close reds on either side of a bin edge (or of the hue wrap
at 0/180) count as different colours; trilinear voting does not. Measured on
anime faces (benchmarks/quality.md, round 2): 0.844 precision@4 alone against
0.801 for the hard-binned 3x3 grid histogram.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lookalike.embed.descriptors.color import WORK_SIZE, to_work_rgb


def _soft_axis(values: np.ndarray, n: int, circular: bool) -> tuple[np.ndarray, ...]:
    """Two neighbouring bin indices and their linear weights, for values in [0, 1)."""
    pos = values * n - 0.5  # bin centres at (i + 0.5) / n
    lo = np.floor(pos)
    w_hi = pos - lo
    lo = lo.astype(np.int64)
    hi = lo + 1
    if circular:  # hue wraps around
        lo, hi = lo % n, hi % n
    else:  # edge pixels put their whole vote in the edge bin
        lo, hi = np.clip(lo, 0, n - 1), np.clip(hi, 0, n - 1)
    return lo, hi, 1.0 - w_hi, w_hi


@dataclass(frozen=True)
class SoftHsvGrid:
    """Per grid cell, an HSV histogram with trilinear votes, Hellinger-normalised."""

    bins: tuple[int, int, int] = (18, 4, 4)
    grid: tuple[int, int] = (3, 3)

    @property
    def dim(self) -> int:
        hb, sb, vb = self.bins
        return hb * sb * vb * self.grid[0] * self.grid[1]

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        hsv = cv2.cvtColor(to_work_rgb(rgb), cv2.COLOR_RGB2HSV).astype(np.float64)
        hb, sb, vb = self.bins
        h = _soft_axis(hsv[..., 0] / 180.0, hb, True)
        s = _soft_axis(hsv[..., 1] / 256.0, sb, False)
        v = _soft_axis(hsv[..., 2] / 256.0, vb, False)
        rows, cols = self.grid
        n, cells = hb * sb * vb, rows * cols
        r = np.minimum(np.arange(WORK_SIZE) * rows // WORK_SIZE, rows - 1)
        c = np.minimum(np.arange(WORK_SIZE) * cols // WORK_SIZE, cols - 1)
        cell = r[:, None] * cols + c[None, :]
        hist = np.zeros(cells * n)
        for hh, wh in ((h[0], h[2]), (h[1], h[3])):
            for ss, ws in ((s[0], s[2]), (s[1], s[3])):
                for vv, wv in ((v[0], v[2]), (v[1], v[3])):
                    code = cell * n + (hh * sb + ss) * vb + vv
                    hist += np.bincount(code.ravel(), (wh * ws * wv).ravel(), minlength=cells * n)
        hist = hist.reshape(cells, n)
        hist /= np.maximum(hist.sum(axis=1, keepdims=True), 1e-12)
        return (np.sqrt(hist) / np.sqrt(cells)).ravel().astype(np.float32)

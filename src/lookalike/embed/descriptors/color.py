"""Colour histograms of one image: joint bins in HSV or CIE Lab, over the image or its regions.

Every histogram here is L1-normalised and square-rooted (the Hellinger map), so the
cosine of two of them is the Bhattacharyya coefficient of the underlying distributions
and each one is already unit length. A descriptor made of several regions scales each
region's histogram by sqrt(weight) with weights summing to one, so it is unit length too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

# Images are resized to this square before any histogram: the histograms are then
# independent of the input resolution and cheap (a 1000x1000 photo costs the same as a crop).
WORK_SIZE = 96

# A region is (x0, y0, x1, y1) as fractions of the image width and height.
Region = tuple[float, float, float, float]

WHOLE: Region = (0.0, 0.0, 1.0, 1.0)
# On a head crop (face centred, hair above and around): the top band is mostly hair,
# the centre is the face with the eyes.
TOP_BAND: Region = (0.0, 0.0, 1.0, 0.35)
CENTRE: Region = (0.2, 0.3, 0.8, 0.8)


def grid_regions(rows: int, cols: int) -> tuple[Region, ...]:
    """The cells of a rows x cols grid, row by row."""
    return tuple(
        (c / cols, r / rows, (c + 1) / cols, (r + 1) / rows)
        for r in range(rows)
        for c in range(cols)
    )


def to_work_rgb(rgb: np.ndarray) -> np.ndarray:
    """Resize an (H, W, 3) uint8 RGB array to WORK_SIZE x WORK_SIZE."""
    h, w = rgb.shape[:2]
    shrinking = h >= WORK_SIZE and w >= WORK_SIZE
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_NEAREST
    return cv2.resize(np.ascontiguousarray(rgb), (WORK_SIZE, WORK_SIZE), interpolation=interp)


def _hsv_codes(rgb: np.ndarray, bins: tuple[int, int, int]) -> np.ndarray:
    """Joint HSV bin index per pixel, (H, W) int64. OpenCV hue is 0..179."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hb, sb, vb = bins
    h = np.minimum(hsv[..., 0].astype(np.int64) * hb // 180, hb - 1)
    s = hsv[..., 1].astype(np.int64) * sb // 256
    v = hsv[..., 2].astype(np.int64) * vb // 256
    return (h * sb + s) * vb + v


def _lab_codes(rgb: np.ndarray, bins: tuple[int, int, int]) -> np.ndarray:
    """Joint Lab bin index per pixel. 8-bit Lab: L in 0..255, a and b offset by 128;
    a and b of real colours lie within about 128 +- 100, so their bins span 28..228."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.int64)
    lb, ab, bb = bins
    ll = lab[..., 0] * lb // 256
    a = np.clip((lab[..., 1] - 28) * ab // 200, 0, ab - 1)
    b = np.clip((lab[..., 2] - 28) * bb // 200, 0, bb - 1)
    return (ll * ab + a) * bb + b


def _hue_codes(rgb: np.ndarray, bins: tuple[int, int, int]) -> np.ndarray:
    """Hue x saturation bins for chromatic pixels plus grey-level bins for achromatic ones.

    bins = (hue, saturation, grey). A pixel is achromatic when its saturation or value is
    low (its hue is then noise); it goes to one of `grey` lightness bins after the
    hue x saturation bins. Dark and washed-out pixels cannot flip between hues this way.
    """
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.int64)
    hb, sb, gb = bins
    h = np.minimum(hsv[..., 0] * hb // 180, hb - 1)
    s_lo = 40  # saturation below which (of 255) a pixel counts as grey
    s = np.clip((hsv[..., 1] - s_lo) * sb // (256 - s_lo), 0, sb - 1)
    chroma = (hsv[..., 1] >= s_lo) & (hsv[..., 2] >= 40)
    grey = hb * sb + np.minimum(hsv[..., 2] * gb // 256, gb - 1)
    return np.where(chroma, h * sb + s, grey)


_CODERS = {"hsv": _hsv_codes, "lab": _lab_codes, "hue": _hue_codes}


def _n_bins(space: str, bins: tuple[int, int, int]) -> int:
    if space == "hue":
        return bins[0] * bins[1] + bins[2]
    return bins[0] * bins[1] * bins[2]


@dataclass(frozen=True)
class ColorHistogram:
    """A joint colour histogram per region, each region Hellinger-normalised."""

    space: str  # "hsv", "lab" or "hue"
    bins: tuple[int, int, int]
    regions: tuple[Region, ...] = (WHOLE,)
    weights: tuple[float, ...] | None = None  # per region; equal when None

    @property
    def dim(self) -> int:
        return _n_bins(self.space, self.bins) * len(self.regions)

    def _region_weights(self) -> np.ndarray:
        w = np.ones(len(self.regions)) if self.weights is None else np.asarray(self.weights)
        return w / w.sum()

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        work = to_work_rgb(rgb)
        codes = _CODERS[self.space](work, self.bins)
        n = _n_bins(self.space, self.bins)
        out = np.empty((len(self.regions), n), dtype=np.float64)
        for i, (x0, y0, x1, y1) in enumerate(self.regions):
            r0, r1 = round(y0 * WORK_SIZE), max(round(y1 * WORK_SIZE), 1)
            c0, c1 = round(x0 * WORK_SIZE), max(round(x1 * WORK_SIZE), 1)
            cell = codes[r0 : max(r1, r0 + 1), c0 : max(c1, c0 + 1)]
            hist = np.bincount(cell.ravel(), minlength=n).astype(np.float64)
            out[i] = np.sqrt(hist / hist.sum())
        out *= np.sqrt(self._region_weights())[:, None]
        return out.ravel().astype(np.float32)


def concat(parts: Sequence[ColorHistogram], weights: Sequence[float]) -> ConcatDescriptor:
    return ConcatDescriptor(tuple(parts), tuple(weights))


@dataclass(frozen=True)
class ConcatDescriptor:
    """Unit-length parts, each scaled by sqrt(weight / sum of weights), concatenated."""

    parts: tuple[ColorHistogram, ...]
    weights: tuple[float, ...]

    @property
    def dim(self) -> int:
        return sum(p.dim for p in self.parts)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        total = float(sum(self.weights))
        return np.concatenate(
            [
                p(rgb) * np.float32(np.sqrt(w / total))
                for p, w in zip(self.parts, self.weights, strict=True)
            ]
        )

"""The head view of a picture without a face: the square around its most salient part.

Saliency is the channel mean of the backbone's last feature map over the whole picture:
ImageNet features fire on objects, not on flat backgrounds, so the cells that fire
strongest mark the character (a Pokemon, a mascot, a figure seen from behind). Measured on
anime-full-dev's pictures without a detected face (benchmarks/quality.md, "fallback"):
this square beats the top-centre square, and beats taking the whole picture again.
"""

from __future__ import annotations

import math

import numpy as np

from lookalike.detect.base import Box, top_centre_box

# A picture whose shorter side is below this is taken as already framed on its subject
# (a face crop, a thumbnail, a 23 x 28 ORL photo): its head view stays the top-centre
# square, which for a square crop is the whole picture. Measured (benchmarks/quality.md,
# "fallback"): the salient square of a 256 px anime face crop cuts the face (anime-faces-dev
# 0.906 -> 0.845) and of an ORL photo ruins it (0.993 -> 0.545), while full pictures
# (anime-full-dev: 90% have a shorter side of 360 px or more) gain.
SALIENT_MIN_SIDE = 400

# Cells at or above this share of the strongest one make the salient region (measured:
# 0.3, 0.5, 0.7, 0.8, 0.9 in benchmarks/quality.md).
SALIENT_SHARE = 0.7


def salient_box(
    energy: np.ndarray,
    image_size: tuple[int, int],
    input_size: int,
    fit: str,
    share: float = SALIENT_SHARE,
) -> Box:
    """The square (clamped to the picture) around the cells of the (g*g,) `energy` grid at
    or above `share` of its maximum; the grid covers the backbone's input square, onto which
    the picture was letterboxed (`fit="pad"`) or stretched (`fit="squash"`)."""
    w, h = image_size
    g = math.isqrt(len(energy))
    grid = np.asarray(energy, dtype=np.float64).reshape(g, g)
    peak = grid.max()
    if not np.isfinite(peak) or peak <= 0:
        return top_centre_box(image_size)
    rows, cols = np.nonzero(grid >= share * peak)
    cell = input_size / g
    if fit == "pad":
        scale_x = scale_y = input_size / max(w, h)
    else:
        scale_x, scale_y = input_size / w, input_size / h
    off_x, off_y = (input_size - w * scale_x) / 2, (input_size - h * scale_y) / 2
    x0 = max(0.0, (cols.min() * cell - off_x) / scale_x)
    x1 = min(float(w), ((cols.max() + 1) * cell - off_x) / scale_x)
    y0 = max(0.0, (rows.min() * cell - off_y) / scale_y)
    y1 = min(float(h), ((rows.max() + 1) * cell - off_y) / scale_y)
    side = min(max(x1 - x0, y1 - y0, 1.0), float(min(w, h)))
    left = min(max((x0 + x1 - side) / 2, 0.0), w - side)
    top = min(max((y0 + y1 - side) / 2, 0.0), h - side)
    return (round(left), round(top), round(left + side), round(top + side))

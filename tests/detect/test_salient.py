"""The salient fallback: the head view of a picture in which no face is found."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from lookalike.config import get_preset
from lookalike.detect.salient import salient_box
from lookalike.embed.extractor import FeatureExtractor


def grid_with_peak(g: int, row: int, col: int) -> np.ndarray:
    energy = np.full((g, g), 0.1)
    energy[row, col] = 1.0
    return energy.ravel()


def test_a_peak_cell_of_a_stretched_picture_maps_to_its_part_of_the_picture() -> None:
    # 7 x 7 cells over a 224 input; the picture 700 x 1400 stretched onto it.
    box = salient_box(grid_with_peak(7, 0, 6), (700, 1400), 224, "squash")
    x0, y0, x1, y1 = box
    assert x1 == 700 and y0 == 0  # the top-right corner
    assert x1 - x0 == y1 - y0 == 200  # a square as tall as the cell (1400 / 7)


def test_a_letterboxed_picture_maps_through_its_border() -> None:
    # 1000 x 500 letterboxed onto 224: the content spans input rows 56..168 (cells 1.75..5.25).
    box = salient_box(grid_with_peak(7, 3, 0), (1000, 500), 224, "pad")
    x0, y0, _, y1 = box
    # Cell (3, 0) covers input rows 96..128, i.e. picture rows (96 - 56) / 0.224 = 179 to 321.
    assert x0 == 0 and abs(y0 - 179) <= 1 and abs(y1 - 321) <= 1


def test_a_flat_map_falls_back_to_the_top_centre_square() -> None:
    assert salient_box(np.zeros(49), (300, 600), 224, "pad") == (0, 0, 300, 300)


def settled(side: int, blob: tuple[int, int, int, int], fallback: str = "salient"):
    """The analysis of a white `side` px square with one red blob, its fallback settled."""
    image = Image.new("RGB", (side, side), "white")
    ImageDraw.Draw(image).ellipse(blob, fill=(200, 30, 30))
    config = get_preset("default").with_options(detector="none", backbone="fake", fallback=fallback)
    extractor = FeatureExtractor(config)
    analysis = extractor.analyse(image)
    assert analysis.fallback and analysis.head_box == (0, 0, side, side)
    extractor.settle_fallbacks([analysis])
    assert analysis.fallback  # still recorded as a fallback
    return analysis


def test_the_head_view_of_a_faceless_picture_is_around_its_object() -> None:
    analysis = settled(400, (260, 250, 380, 370))
    x0, y0, x1, y1 = analysis.head_box
    assert x0 >= 200 and y0 >= 200  # in the object's quarter, not the top-centre square
    assert 260 < (x0 + x1) / 2 < 380 and 250 < (y0 + y1) / 2 < 370  # centred on the object
    assert analysis.views["head"].size == (x1 - x0, y1 - y0)


def test_a_small_picture_keeps_the_top_centre_square() -> None:
    # A 256 px face crop is its own head: cutting a salient part out of it loses the face.
    assert settled(256, (170, 160, 250, 250)).head_box == (0, 0, 256, 256)


def test_the_top_fallback_keeps_the_top_centre_square() -> None:
    assert settled(400, (260, 250, 380, 370), fallback="top").head_box == (0, 0, 400, 400)

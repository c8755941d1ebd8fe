"""Hand-made descriptors: shapes, unit length, determinism, and that colour means colour."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lookalike.embed.descriptors import (
    DESCRIPTORS,
    describe,
    descriptor_dim,
    get_descriptor,
    list_descriptors,
)
from lookalike.errors import UnknownNameError

NAMES = sorted(DESCRIPTORS)


def _solid(rgb: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def _noisy(seed: int, size: tuple[int, int] = (80, 100)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_registry_lists_the_known_descriptors() -> None:
    assert {"hsv", "hsv_grid3", "hsv_regions", "hair"} <= set(list_descriptors())
    assert list_descriptors("hsv*") == sorted(n for n in NAMES if n.startswith("hsv"))
    assert descriptor_dim("hsv") == 18 * 4 * 4
    assert descriptor_dim("hsv_grid3") == 9 * 18 * 4 * 4


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match="hsv"):
        get_descriptor("hsb")


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_unit_length(name: str) -> None:
    images = [_noisy(0), _solid((200, 30, 30)), _noisy(1, (300, 120))]
    out = describe(name, images)
    assert out.shape == (3, descriptor_dim(name))
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert np.all(out >= 0)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name: str) -> None:
    images = [_noisy(3), _noisy(4)]
    np.testing.assert_array_equal(describe(name, images), describe(name, images))


@pytest.mark.parametrize("name", NAMES)
def test_red_is_nearer_red_than_blue(name: str) -> None:
    def textured(rgb: tuple[int, int, int], seed: int) -> Image.Image:
        rng = np.random.default_rng(seed)
        noise = rng.normal(0, 12, (50, 70, 1))  # shading, not a hue change
        return Image.fromarray(np.clip(np.asarray(rgb) + noise, 0, 255).astype(np.uint8))

    red, other_red = textured((215, 40, 30), 0), textured((200, 45, 30), 1)
    blue = textured((30, 40, 215), 2)
    v = describe(name, [red, other_red, blue])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


@pytest.mark.parametrize("name", NAMES)
def test_grey_images_do_not_crash(name: str) -> None:
    images = [_solid((0, 0, 0)), _solid((128, 128, 128)), _solid((255, 255, 255))]
    images.append(Image.fromarray(np.full((40, 40), 90, np.uint8), mode="L"))
    out = describe(name, images)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # Black and white are different greys.
    assert out[0] @ out[2] < 0.99


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (7, 5)])
def test_tiny_images(name: str, size: tuple[int, int]) -> None:
    out = describe(name, [_noisy(5, size)])
    assert out.shape == (1, descriptor_dim(name))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_empty_input() -> None:
    assert describe("hsv", []).shape == (0, descriptor_dim("hsv"))


def test_layout_descriptors_see_where_the_colour_is() -> None:
    # Red hair on top of a skin-coloured face vs the same colours upside down: the same
    # global histogram, a different layout.
    top = np.zeros((60, 60, 3), np.uint8)
    top[:20] = (200, 30, 30)
    top[20:] = (240, 210, 190)
    flipped = top[::-1].copy()
    a, b = Image.fromarray(top), Image.fromarray(flipped)
    g = describe("hsv", [a, b])
    assert g[0] @ g[1] == pytest.approx(1.0, abs=1e-5)
    for name in ("hsv_grid3", "hsv_regions", "hair"):
        v = describe(name, [a, b])
        assert v[0] @ v[1] < 0.9


def test_hair_band_ignores_the_bottom() -> None:
    base = np.full((90, 90, 3), (40, 60, 200), np.uint8)
    other = base.copy()
    other[60:] = (250, 250, 0)
    v = describe("hair", [Image.fromarray(base), Image.fromarray(other)])
    assert v[0] @ v[1] == pytest.approx(1.0, abs=1e-5)

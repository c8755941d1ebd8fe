"""The i8-rotated graph's codes (lookalike.index.int8_rotation) and the graph built on them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lookalike.errors import CollectionError, LookalikeError
from lookalike.index import create_index, load_index
from lookalike.index.int8_rotation import Int8Rotation
from lookalike.vectors import l2_normalize

DIM = 32
needs_usearch = pytest.mark.skipif(
    importlib.util.find_spec("usearch") is None, reason="usearch is not installed"
)


def lopsided(n: int, seed: int = 0) -> np.ndarray:
    """Unit rows whose variance sits in a few dimensions, as a reduction's leading
    components hold a fused vector's."""
    rng = np.random.default_rng(seed)
    spread = np.geomspace(1.0, 0.02, DIM)
    centres = rng.normal(size=(30, DIM)) * spread
    rows = centres[rng.integers(30, size=n)] + 0.2 * rng.normal(size=(n, DIM)) * spread
    return l2_normalize(rows.astype(np.float32))


def test_the_rotation_keeps_inner_products_and_the_codes_fill_the_int8_range() -> None:
    rows = lopsided(2000)
    rotation = Int8Rotation.fit(rows)
    np.testing.assert_allclose(rotation.matrix @ rotation.matrix.T, np.eye(DIM), atol=1e-5)
    codes = rotation.codes(rows)
    assert codes.dtype == np.int8 and np.abs(codes).max() == 127
    # Rows' dot products from their codes, against the rows' own: the rounding only.
    from_codes = (codes[:50].astype(np.float64) @ codes.T.astype(np.float64)) / rotation.scale**2
    np.testing.assert_allclose(from_codes, rows[:50] @ rows.T, atol=0.02)
    # usearch's own int8 cast (each unit row times 127) leaves the small components a few
    # levels; the rotated codes order each row's neighbours nearly as the rows do.
    truth = np.argsort(-(rows[:50] @ rows.T), axis=1)[:, :10]
    found = np.argsort(-from_codes, axis=1, kind="stable")[:, :10]
    plain = np.rint(rows * 127)
    by_plain = np.argsort(-(plain[:50] @ plain.T), axis=1, kind="stable")[:, :10]

    def recall(ids: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)]))

    assert recall(found) >= 0.9 and recall(found) > recall(by_plain)


def test_rows_past_the_sampled_range_are_clipped_not_wrapped() -> None:
    rotation = Int8Rotation.fit(lopsided(100) * 0.5)
    codes = rotation.codes(lopsided(100, seed=1))  # twice the fitted length
    assert np.abs(codes.astype(int)).max() == 127


def test_a_saved_rotation_loads_and_a_damaged_one_is_named(tmp_path: Path) -> None:
    rotation = Int8Rotation.fit(lopsided(300))
    path = tmp_path / "rotation.npz"
    rotation.save(path)
    loaded = Int8Rotation.load(path, DIM)
    np.testing.assert_array_equal(loaded.matrix, rotation.matrix)
    assert loaded.scale == rotation.scale
    with pytest.raises(CollectionError, match=r"rotation\.npz: holds a float32 \(32, 32\)"):
        Int8Rotation.load(path, DIM + 1)
    path.write_bytes(b"not an npz")
    with pytest.raises(
        CollectionError,
        match=r"rotation\.npz: cannot read the graph's rotation \(not an npz file\)",
    ):
        Int8Rotation.load(path, DIM)


@needs_usearch
def test_the_rotated_graph_needs_rescoring_and_keeps_its_rotation_beside_it(
    tmp_path: Path,
) -> None:
    with pytest.raises(LookalikeError, match="needs rescore >= 1"):
        create_index("usearch", dtype="i8-rotated")
    rows = lopsided(1500)
    index = create_index("usearch", dtype="i8-rotated", rescore=20, M=16)
    index.build(rows)
    index.save(tmp_path)
    loaded = load_index("usearch", tmp_path, DIM)
    ids, sims = loaded.query(rows[:40], 10)
    truth = np.argsort(-(rows[:40] @ rows.T), axis=1)[:, :10]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)]) >= 0.95
    np.testing.assert_allclose(sims, np.take_along_axis(rows[:40] @ rows.T, ids, 1), atol=1e-6)
    loaded.set_query_params(rescore=0)
    with pytest.raises(LookalikeError, match="needs rescore >= 1 to answer"):
        loaded.query(rows[:1], 10)
    del loaded
    (tmp_path / "rotation.npz").unlink()
    with pytest.raises(CollectionError, match=r"rotation\.npz: cannot read"):
        load_index("usearch", tmp_path, DIM)

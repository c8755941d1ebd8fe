"""The fuser stored on the coded blocks' bases (lookalike.fuse.spanned): exact, small, and
refused clearly without the bases it was stored on."""

from __future__ import annotations

import io

import numpy as np
import pytest

from lookalike.config import Block, FusionConfig
from lookalike.errors import CollectionError
from lookalike.fuse.fuser import Fuser
from lookalike.fuse.spanned import compress, expand
from lookalike.store import codec
from lookalike.store.codec import BlockBasis

BLOCKS = (Block("head", "a"), Block("whole", "b", 0.5))
FUSION = FusionConfig(pseudo_lda_ks=(4, 8), out_dim=16, feel_block="whole.b", feel_dim=4)


def _raw(n: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Wide enough that the codes' span (6 % of each block, from FULL_SHARE_ROWS rows) holds
    # the pseudo-LDA's 128 axes.
    centres = rng.normal(size=(12, 2400))
    x = centres[rng.integers(12, size=n)] + 0.3 * rng.normal(size=(n, 2400)) + 1.0
    return {"head.a": x[:, :1500].astype(np.float32), "whole.b": x[:, 1500:].astype(np.float32)}


def _coded(n: int = codec.FULL_SHARE_ROWS) -> tuple[dict[str, np.ndarray], dict[str, BlockBasis]]:
    """Blocks as a collection of n pictures reads them back, and their bases."""
    blocks = _raw(n)
    coded = codec.code_blocks(blocks, {}) if n >= codec.CODEC_MIN_ROWS else {}
    return blocks, codec.bases_of(coded)


def _size(fuser: Fuser) -> int:
    buffer = io.BytesIO()
    np.savez(buffer, **fuser.to_arrays())
    return len(buffer.getvalue())


def test_an_array_in_a_blocks_span_is_its_coefficients_and_comes_back_exactly() -> None:
    rng = np.random.default_rng(1)
    basis = BlockBasis.fit(_raw(200)["whole.b"])
    bases = {"whole.b": basis}
    layout = [("free", 3), ("basis", "whole.b")]
    inside = np.hstack(
        [rng.normal(size=(5, 3)), rng.normal(size=(5, len(basis.span))) @ basis.span]
    )
    coefficients = compress(inside, layout, bases)
    assert coefficients is not None and coefficients.shape == (5, 3 + len(basis.span))
    np.testing.assert_allclose(expand(coefficients, layout, bases), inside, atol=1e-5)
    # Along the first axis (a basis of columns, as the pseudo-LDA keeps it) and 1-D.
    np.testing.assert_allclose(
        expand(compress(inside.T, layout, bases, axis=0), layout, bases, axis=0),
        inside.T,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        expand(compress(inside[0], layout, bases), layout, bases), inside[0], atol=1e-5
    )
    # An array with a part outside the span is not stored so.
    outside = inside + np.hstack([np.zeros((5, 3)), rng.normal(size=(5, 900))])
    assert compress(outside, layout, bases) is None
    assert compress(inside, layout, {}) is None  # nor without its basis


def test_a_fuser_fitted_on_coded_blocks_is_stored_small_and_loads_as_fitted(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(codec, "CODEC_MIN_ROWS", 100)
    monkeypatch.setattr(codec, "MIN_CODED_WIDTH", 1)  # the fake blocks are narrow
    blocks, bases = _coded()
    spanned = Fuser(BLOCKS, FUSION).fit(blocks, bases)
    wide = Fuser(BLOCKS, FUSION).fit(blocks)
    assert _size(spanned) < 0.5 * _size(wide)
    fused = spanned.transform(blocks)
    # The same vectors as the fuser stored wide, but for the int8 rounding of each.
    assert np.einsum("ij,ij->i", fused, wide.transform(blocks)).min() > 0.999
    spanned.save(tmp_path / "fuser.npz")
    loaded = Fuser.load(tmp_path / "fuser.npz", BLOCKS, FUSION, bases)
    np.testing.assert_allclose(loaded.transform(blocks), fused, atol=1e-5)
    outside = _raw(4, seed=3)  # a query's blocks, not coded: the same map
    np.testing.assert_allclose(loaded.transform(outside), spanned.transform(outside), atol=1e-5)
    loaded.save(tmp_path / "again.npz")  # saved again (a commit that only adds rows): as it was
    with np.load(tmp_path / "fuser.npz") as first, np.load(tmp_path / "again.npz") as second:
        assert first.files == second.files
        assert all(np.array_equal(first[name], second[name]) for name in first.files)
    again = Fuser.load(tmp_path / "again.npz", BLOCKS, FUSION, bases)
    np.testing.assert_allclose(again.transform(blocks), fused, atol=1e-5)


def test_a_spanned_fuser_without_its_bases_is_refused_by_name(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(codec, "CODEC_MIN_ROWS", 100)
    monkeypatch.setattr(codec, "MIN_CODED_WIDTH", 1)  # the fake blocks are narrow
    blocks, bases = _coded()
    Fuser(BLOCKS, FUSION).fit(blocks, bases).save(tmp_path / "fuser.npz")
    with pytest.raises(CollectionError, match=r"fuser\.npz.*needs the codec basis of 'head\.a'"):
        Fuser.load(tmp_path / "fuser.npz", BLOCKS, FUSION)
    other = {**bases, "head.a": BlockBasis.fit(_raw(300, seed=9)["head.a"])}
    with pytest.raises(CollectionError, match=r"stored on another codec basis of 'head\.a'"):
        Fuser.load(tmp_path / "fuser.npz", BLOCKS, FUSION, other)


def test_a_small_collections_fuser_is_stored_on_its_bases_too(tmp_path) -> None:
    # 60 pictures: the pseudo-LDA keeps the axes the coded rows vary along (under 128), and
    # the vectors are turned onto their own span (SpanReducer); all of it lies in the
    # blocks' span, and is stored on it.
    fusion = FusionConfig(pseudo_lda_ks=(4, 8), out_dim=128)
    blocks, bases = _coded(60)
    fuser = Fuser(BLOCKS, fusion).fit(blocks, bases)
    assert fuser.reduces and fuser.output_dim <= 61
    meta = fuser.to_arrays()["meta"].tobytes()
    assert b"final/span/components" in meta and b"lda/basis" in meta
    assert _size(fuser) < 0.2 * _size(Fuser(BLOCKS, fusion).fit(blocks))
    fuser.save(tmp_path / "fuser.npz")
    loaded = Fuser.load(tmp_path / "fuser.npz", BLOCKS, fusion, bases)
    outside = _raw(4, seed=3)
    np.testing.assert_allclose(loaded.transform(outside), fuser.transform(outside), atol=1e-5)


def test_a_colour_tail_on_fewer_components_than_its_dims_keeps_those_and_its_span() -> None:
    # 300 pictures code whole.b (900 wide) on 32 components, under the tail's 48 dims: its
    # unit rows vary along those and the mean (the basis's span, 33 rows). The tail keeps
    # those 33 (the rest was solver noise outside the span, and stored the matrix 900
    # wide), the rest of the vector its 16.
    fusion = FusionConfig(pseudo_lda_ks=(4, 8), out_dim=64, feel_block="whole.b", feel_dim=48)
    blocks, bases = _coded(300)
    width = len(bases["whole.b"].span)
    assert width < 48
    fuser = Fuser(BLOCKS, fusion).fit(blocks, bases)
    assert fuser.feel_ is not None and len(fuser.feel_.components_) == width
    assert fuser.output_dim == 16 + width
    assert fuser.to_arrays()["feel/components"].shape[1] < blocks["whole.b"].shape[1]


def test_blocks_not_coded_keep_the_fuser_wide() -> None:
    blocks, bases = _coded(codec.CODEC_MIN_ROWS - 1)  # float16 blocks, no bases
    assert bases == {}
    fuser = Fuser(BLOCKS, FUSION).fit(blocks, bases)
    assert b"spanned" not in fuser.to_arrays()["meta"].tobytes()

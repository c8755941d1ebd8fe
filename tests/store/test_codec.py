"""Compact blocks (store/codec.py): int8 codes on a per-block basis, refitted with the fuser."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from lookalike.errors import CollectionError
from lookalike.indexing import growth
from lookalike.store import codec
from lookalike.store.codec import BlockBasis, CodedBlock, load_bases, save_bases
from tests.end_to_end.test_pipeline import draw, folder, index  # noqa: F401 - the fixture


def low_rank(n: int, width: int = 120, rank: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, width)) + 3.0
    return (x + 0.01 * rng.normal(size=(n, width))).astype(np.float32)


def test_codes_keep_a_redundant_block_and_read_back_by_rows(tmp_path) -> None:
    block = low_rank(200)
    basis = BlockBasis.fit(block)
    assert basis.components.shape == (8, 120)  # 6 % of 120 is 7: at least MIN_CODE_DIMS
    codes, scales = basis.encode(block)
    assert codes.dtype == np.int8 and scales.dtype == np.float32
    decoded = basis.decode(codes, scales)
    assert np.abs(decoded - block).max() < 0.02 * np.abs(block).max()
    stored = CodedBlock(basis, codes, scales)
    assert stored.shape == block.shape and len(stored) == 200
    rows = np.array([5, 0, 199])
    # A few rows decode as the whole block's do, up to float32 rounding: BLAS kernels follow
    # the batch's shape (codec.decode).
    np.testing.assert_allclose(stored[rows], decoded[rows], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stored[7], decoded[7], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(stored, np.float32), decoded)
    save_bases(tmp_path / "codec.npz", {"head.x": basis})
    again = load_bases(tmp_path / "codec.npz")["head.x"]
    np.testing.assert_array_equal(again.components, basis.components)  # fitted as stored
    np.testing.assert_array_equal(again.decode(codes, scales), decoded)


def test_a_zero_row_and_a_small_block_stay_exact() -> None:
    block = low_rank(40, width=6)
    block[3] = BlockBasis.fit(block).mean  # codes all zero: scale 1, no division by zero
    basis = BlockBasis.fit(block)
    assert basis.components.shape == (6, 6)  # never more dims than the block has
    decoded = basis.decode(*basis.encode(block))
    assert np.isfinite(decoded).all()
    assert np.abs(decoded - block).max() < 0.05


def test_small_collections_keep_float16_rows() -> None:
    blocks = {"head.x": low_rank(codec.CODEC_MIN_ROWS - 1, width=600)}
    assert codec.code_blocks(blocks, {}) == {}  # nothing coded


def test_under_lossy_min_rows_a_block_keeps_every_component_its_rows_vary_along() -> None:
    n = codec.LOSSY_MIN_ROWS - 1
    rng = np.random.default_rng(2)
    block = rng.normal(size=(n, 600)).astype(np.float32)  # varies along all n - 1
    coded = codec.code_blocks({"head.x": block}, {})["head.x"]
    assert len(coded.basis.components) == n - 1
    # Only the int8 rounding of codes and components is lost.
    assert np.abs(np.asarray(coded) - block).max() < 0.05 * np.abs(block).max()
    share = BlockBasis.fit(rng.normal(size=(codec.LOSSY_MIN_ROWS, 600)).astype(np.float32))
    assert len(share.components) == codec.MIN_CODE_DIMS  # from there, the share


def test_a_block_whose_rows_do_not_vary_stays_float16() -> None:
    # Copies of one picture: no component to code on (a basis without one failed to encode).
    row = np.random.default_rng(3).normal(size=(1, 600)).astype(np.float32)
    blocks = {"head.x": np.repeat(row, codec.CODEC_MIN_ROWS, axis=0)}
    blocks["head.y"] = low_rank(codec.CODEC_MIN_ROWS, width=600)
    assert codec.code_blocks(blocks, {}).keys() == {"head.y"}


def test_a_basis_kept_while_rows_are_added_is_fitted_on_more_rows() -> None:
    blocks = {"head.x": low_rank(codec.KEPT_BASIS_MIN_ROWS - 1, width=600)}
    assert codec.code_blocks(dict(blocks), {}).keys() == {"head.x"}
    assert codec.code_blocks(blocks, {}, min_rows=codec.KEPT_BASIS_MIN_ROWS) == {}


def test_a_collection_stores_codes_fuses_what_it_stores_and_refits_its_bases_as_it_grows(
    folder,  # noqa: F811
    tmp_path,
    monkeypatch,
) -> None:
    from lookalike.search.searcher import Searcher
    from lookalike.store.collection import Collection

    monkeypatch.setattr(codec, "CODEC_MIN_ROWS", 10)
    monkeypatch.setattr(codec, "MIN_CODED_WIDTH", 1)  # the fake blocks are narrow
    coll = tmp_path / "coll"
    index(folder, coll)
    gen = Collection.open(coll).require_generation()
    keys = gen.config.block_keys
    assert sorted(gen.bases()) == sorted(keys)
    for key in keys:
        assert isinstance(gen.block(key), CodedBlock)
        assert not (gen.path / "blocks" / f"{key}.npy").exists()
        assert np.load(gen.path / "blocks" / f"{key}.codes.npy").dtype == np.int8
    with np.load(gen.path / "blocks" / "codec.npz") as data:
        assert data[f"{keys[0]}/components"].dtype == np.int8  # a quarter of float32
    with np.load(gen.path / "fuser.npz") as data:  # on the bases (fuse/spanned.py)
        assert json.loads(bytes(data["meta"]))["spanned"]
    # The fused vectors are the fuser's of exactly the blocks a reader decodes (stored as
    # float16: 15 pictures are turned onto their span, fuse/fuser.py's SpanReducer).
    stored = {k: np.asarray(gen.block(k), np.float32) for k in keys}
    np.testing.assert_allclose(gen.fuser().transform(stored), gen.fused(), atol=1e-3)
    in_process = [m.path for m in Searcher(coll).query("red/0.png", k=3).matches]
    assert all(p.startswith("red/") for p in in_process)
    # Another process reads the codes (the threshold patched here is not needed to read).
    script = (
        "import json, sys; from lookalike.search.searcher import Searcher; "
        "print(json.dumps([m.path for m in Searcher(sys.argv[1]).query('red/0.png', k=3).matches]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(coll)], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == in_process
    # A commit that refits the fuser on new pictures fits the bases again (on the stored
    # rows as they decode and the new one), and fuses what it then stores.
    codec_before = (gen.path / "blocks" / "codec.npz").read_bytes()
    draw(folder / "red" / "9.png", (250, 10, 10), seed=7)
    index(folder, coll)
    new = Collection.open(coll).require_generation()
    assert new.path != gen.path and len(new.ids) == len(gen.ids) + 1
    assert (new.path / "blocks" / "codec.npz").read_bytes() != codec_before
    stored = {k: np.asarray(new.block(k), np.float32) for k in keys}
    np.testing.assert_allclose(new.fuser().transform(stored), new.fused(), atol=1e-3)
    # A picture added to the committed index (no refit: growth.py) is coded on the kept
    # bases, and the old rows keep their codes; so does a run that only removes one.
    monkeypatch.setattr(growth, "EXTEND_MIN_ROWS", 10)
    codes_before = {k: np.load(new.path / "blocks" / f"{k}.codes.npy") for k in keys}
    codec_before, count = (new.path / "blocks" / "codec.npz").read_bytes(), len(new.ids)
    draw(folder / "red" / "10.png", (245, 12, 8), seed=8)
    index(folder, coll)
    grown = Collection.open(coll).require_generation()
    assert len(grown.ids) == len(new.ids) + 1
    assert (grown.path / "blocks" / "codec.npz").read_bytes() == codec_before
    for key in keys:
        rows = np.isin(grown.ids, new.ids)
        np.testing.assert_array_equal(
            np.load(grown.path / "blocks" / f"{key}.codes.npy")[rows], codes_before[key]
        )
    (folder / "red" / "9.png").unlink()
    index(folder, coll)
    fewer = Collection.open(coll).require_generation()
    assert len(fewer.ids) == count
    assert (fewer.path / "blocks" / "codec.npz").read_bytes() == codec_before


def test_damaged_codes_are_a_clear_error(folder, tmp_path, monkeypatch) -> None:  # noqa: F811
    from lookalike.store.collection import Collection

    monkeypatch.setattr(codec, "CODEC_MIN_ROWS", 10)
    monkeypatch.setattr(codec, "MIN_CODED_WIDTH", 1)  # the fake blocks are narrow
    index(folder, tmp_path / "coll")
    gen = Collection.open(tmp_path / "coll").require_generation()
    key = gen.config.block_keys[0]
    np.save(gen.path / "blocks" / f"{key}.scales.npy", np.ones(3, np.float32))
    with pytest.raises(CollectionError, match=rf"{key}\.codes\.npy.*does not fit its codec"):
        Collection.open(tmp_path / "coll").require_generation().block(key)


def test_blocks_named_exact_keep_float16_rows(monkeypatch) -> None:
    monkeypatch.setattr(codec, "MIN_CODED_WIDTH", 1)  # the fake blocks are narrow
    blocks = {"head.x": low_rank(codec.CODEC_MIN_ROWS), "head.v5": low_rank(codec.CODEC_MIN_ROWS)}
    v5 = blocks["head.v5"].copy()
    coded = codec.code_blocks(blocks, {}, exact=["head.v5"])
    assert list(coded) == ["head.x"]
    np.testing.assert_array_equal(blocks["head.v5"], v5)  # untouched


def test_a_basis_keeps_components_in_proportion_to_its_rows_and_none_the_rows_lack() -> None:
    rows = codec.FULL_SHARE_ROWS
    assert len(BlockBasis.fit(low_rank(rows, 1000, rank=200)).components) == 60  # 6 %
    assert len(BlockBasis.fit(low_rank(rows // 2, 1000, rank=200)).components) == 30
    # Rows that vary along 5 directions (grey photos in colour bins): 5 components, and a
    # span the fuser can be stored on (fuse/spanned.py solves on its Gram matrix).
    flat = BlockBasis.fit(low_rank(rows, 1000, rank=5))
    assert len(flat.components) == 5
    assert np.linalg.cond(flat.span @ flat.span.T) < 10


def test_each_block_is_coded_on_its_own_share_of_components() -> None:
    # The CNN's grids keep three times the share, the whole picture's colour grid half of
    # it, any other block CODE_FRACTION (quality.md, "Code shares by block").
    rows = codec.FULL_SHARE_ROWS
    block = low_rank(rows, 1000, rank=300)
    keys = ["head.avg_g3_s4", "whole.avg_g3_s5", "whole.soft_grid3", "head.soft_grid3", "head.gem"]
    bases = codec.bases_for(dict.fromkeys(keys, block), {})
    assert {k: len(b.components) for k, b in bases.items()} == {
        "head.avg_g3_s4": 180,
        "whole.avg_g3_s5": 180,
        "whole.soft_grid3": 30,
        "head.soft_grid3": 60,
        "head.gem": 60,
    }
    assert codec.code_share("head.gem") == codec.CODE_FRACTION


def test_a_narrow_block_keeps_float16_rows_however_many() -> None:
    # Coded on its 6 % of components (8), a 112-dim block loses what tells people apart.
    n = codec.CODEC_MIN_ROWS
    blocks = {"head.gem_mid": low_rank(n, 112), "head.grid": low_rank(n, codec.MIN_CODED_WIDTH)}
    assert list(codec.code_blocks(blocks, {})) == ["head.grid"]
    assert not codec.worth_coding(10**9, codec.MIN_CODED_WIDTH - 1)


def test_a_float16_basis_of_before_is_kept_as_it_was_saved(tmp_path) -> None:
    block = low_rank(200)
    fitted = BlockBasis.fit(block)
    older = BlockBasis(fitted.mean, np.linspace(-1, 1, fitted.components.size).reshape(8, 120))
    older = BlockBasis(older.mean, older.components.astype(np.float16).astype(np.float32))
    save_bases(tmp_path / "codec.npz", {"head.x": older, "head.y": fitted})
    with np.load(tmp_path / "codec.npz") as data:
        assert data["head.x/components"].dtype == np.float16
        assert data["head.y/components"].dtype == np.int8
    again = load_bases(tmp_path / "codec.npz")
    np.testing.assert_array_equal(again["head.x"].components, older.components)
    np.testing.assert_array_equal(again["head.y"].components, fitted.components)


def test_a_damaged_codec_is_named_by_the_fuser_that_needs_it(folder, tmp_path, monkeypatch) -> None:  # noqa: F811
    from lookalike.store.collection import Collection

    monkeypatch.setattr(codec, "CODEC_MIN_ROWS", 10)
    monkeypatch.setattr(codec, "MIN_CODED_WIDTH", 1)  # the fake blocks are narrow
    index(folder, tmp_path / "coll")
    gen = Collection.open(tmp_path / "coll").require_generation()
    (gen.path / "blocks" / "codec.npz").write_text("garbage")
    with pytest.raises(CollectionError, match=r"blocks/codec\.npz: unreadable"):
        Collection.open(tmp_path / "coll").require_generation().fuser()


@pytest.mark.parametrize("part", ["blocks/codec.npz", "fuser.npz"])
def test_fitted_state_is_deflated_and_a_corrupt_stream_is_named(
    folder,  # noqa: F811
    tmp_path,
    monkeypatch,
    part,
) -> None:
    """The codec's bases and the fuser are stored deflated (their int8 components shrink
    by a fifth to a third); a deflated stream damaged inside is named like any damage."""
    from lookalike.store.collection import Collection

    monkeypatch.setattr(codec, "CODEC_MIN_ROWS", 10)
    monkeypatch.setattr(codec, "MIN_CODED_WIDTH", 1)  # the fake blocks are narrow
    index(folder, tmp_path / "coll")
    path = Collection.open(tmp_path / "coll").require_generation().path / part
    with zipfile.ZipFile(path) as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}
        biggest = max(archive.infolist(), key=lambda i: i.compress_size)
    data = bytearray(path.read_bytes())
    middle = biggest.header_offset + 30 + len(biggest.filename) + biggest.compress_size // 2
    data[middle : middle + 64] = bytes(64)  # zeros in the middle of the deflated stream
    path.write_bytes(bytes(data))
    with pytest.raises(CollectionError, match=rf"{re.escape(part)}: unreadable"):
        Collection.open(tmp_path / "coll").require_generation().fuser()


def test_a_repaired_fuser_is_the_one_that_was_lost(folder, tmp_path, monkeypatch) -> None:  # noqa: F811
    """A run that refits on the same pictures (the fuser was damaged) copies the stored
    rows' codes, so it fits on the very values it fitted on before: the same vectors."""
    from lookalike.store.collection import Collection

    monkeypatch.setattr(codec, "CODEC_MIN_ROWS", 10)
    monkeypatch.setattr(codec, "MIN_CODED_WIDTH", 1)  # the fake blocks are narrow
    coll = tmp_path / "coll"
    index(folder, coll)
    gen = Collection.open(coll).require_generation()
    fused = np.array(gen.fused())
    keys = gen.config.block_keys
    codes = {k: np.load(gen.path / "blocks" / f"{k}.codes.npy") for k in keys}
    scales = {k: np.load(gen.path / "blocks" / f"{k}.scales.npy") for k in keys}
    (gen.path / "fuser.npz").unlink()
    index(folder, coll)
    repaired = Collection.open(coll).require_generation()
    assert repaired.path != gen.path
    np.testing.assert_array_equal(np.asarray(repaired.fused()), fused)
    for key in keys:
        np.testing.assert_array_equal(
            np.load(repaired.path / "blocks" / f"{key}.codes.npy"), codes[key]
        )
        np.testing.assert_array_equal(
            np.load(repaired.path / "blocks" / f"{key}.scales.npy"), scales[key]
        )

"""A cached block's file (lookalike.store.cache_file): float16 rows, or int8 codes from
KEPT_BASIS_MIN_ROWS rows, re-used rows keeping their codes; a trained model's rows never coded."""

from __future__ import annotations

import numpy as np

from lookalike.store import codec
from lookalike.store.cache_file import CachedRows, Pictures, read_cached, write_cached
from tests.store.test_codec import low_rank


def pictures(n: int) -> Pictures:
    # From 1: 32 zero bytes stand for an unknown digest (no file hashes to them).
    digests = np.array([f"{i + 1:064x}" for i in range(n)], dtype="<U64")
    return Pictures(digests, np.tile(np.arange(4, dtype=np.int32), (n, 1)))


def test_a_cache_is_coded_from_kept_basis_min_rows_and_reads_back_what_was_stored(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(codec, "MIN_CODED_WIDTH", 1)  # the fake block is narrow
    n = codec.KEPT_BASIS_MIN_ROWS
    block, path = low_rank(n), tmp_path / "whole.x.npz"
    cached = CachedRows.none(n)
    cached.put(np.arange(n), block)
    assert cached.basis is not None and cached.codes is not None
    write_cached(path, pictures(n), cached)
    again = read_cached(path, pictures(n), head=False)
    assert again.have.all()
    np.testing.assert_array_equal(again.vectors, cached.vectors)
    assert np.abs(again.vectors - block).max() < 0.02 * np.abs(block).max()
    # In another order, with a picture the cache does not have: matched by bytes.
    order = np.array([3, 0, 2])
    shuffled = Pictures(np.append(pictures(n).digests[order], "f" * 64), pictures(4).boxes)
    some = read_cached(path, shuffled, head=False)
    assert some.have.tolist() == [True, True, True, False]
    # Up to float32 rounding of a decode of 3 rows against one of all (codec.decode).
    np.testing.assert_allclose(some.vectors[:3], cached.vectors[order], rtol=1e-6, atol=1e-6)
    assert not some.vectors[3].any()


def test_a_narrow_blocks_cache_stays_float16_however_many() -> None:
    n = codec.KEPT_BASIS_MIN_ROWS
    cached = CachedRows.none(n)
    cached.put(np.arange(n), low_rank(n))  # 120 wide: under MIN_CODED_WIDTH
    assert cached.basis is None


def test_a_trained_models_rows_stay_float16_however_many(tmp_path) -> None:
    n = codec.KEPT_BASIS_MIN_ROWS
    block, path = low_rank(n), tmp_path / "head.v5.npz"
    cached = CachedRows.none(n, compact=False)
    cached.put(np.arange(n), block)
    assert cached.basis is None
    np.testing.assert_array_equal(cached.vectors, block.astype(np.float16).astype(np.float32))
    write_cached(path, pictures(n), cached)
    with np.load(path) as data:
        assert data["vectors"].dtype == np.float16 and "codes" not in data.files
    again = read_cached(path, pictures(n), head=False, compact=False)
    again.put(np.array([0]), block[:1])
    assert again.basis is None


def test_a_cache_written_with_unicode_digests_still_reads(tmp_path) -> None:
    block, path = low_rank(6), tmp_path / "whole.x.npz"
    np.savez(
        path, sha256=pictures(6).digests, boxes=pictures(6).boxes, vectors=block.astype(np.float16)
    )
    found = read_cached(path, pictures(6), head=False)
    assert found.have.all()
    np.testing.assert_array_equal(found.vectors, block.astype(np.float16).astype(np.float32))


def test_a_cache_fits_its_basis_again_once_it_has_grown_by_a_quarter(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(codec, "MIN_CODED_WIDTH", 1)  # the fake blocks are narrow
    n = codec.KEPT_BASIS_MIN_ROWS
    grown = n * 3 // 2
    block, path = low_rank(grown, seed=1), tmp_path / "whole.x.npz"
    cached = CachedRows.none(grown)
    cached.put(np.arange(n), block[:n])
    first = cached.basis
    assert first is not None and cached.fitted_rows == n
    # A few more rows are coded on the kept basis, the stored rows keep their codes.
    codes = cached.codes[:n].copy()  # type: ignore[index]
    cached.put(np.arange(n, n + 10), block[n : n + 10])
    assert cached.basis is first
    np.testing.assert_array_equal(cached.codes[:n], codes)  # type: ignore[index]
    # A quarter more: fitted again on the rows as stored and the new ones, every row coded.
    cached.put(np.arange(n + 10, grown), block[n + 10 :])
    assert cached.basis is not first and cached.fitted_rows == grown
    assert np.abs(cached.vectors - block).max() < 0.02 * np.abs(block).max()
    write_cached(path, pictures(grown), cached)
    again = read_cached(path, pictures(grown), head=False)
    assert again.fitted_rows == grown
    np.testing.assert_array_equal(again.vectors, cached.vectors)
    # A cache written before says nothing of its fit: counted from the rows it holds.
    with np.load(path) as data:
        np.savez(tmp_path / "old.npz", **{k: data[k] for k in data.files if k != "fitted_rows"})
    assert read_cached(tmp_path / "old.npz", pictures(grown), head=False).fitted_rows == grown

"""Issue 16: the dense final vector, the auto index, float16 blocks, the format refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lookalike.config import Block, FusionConfig, get_preset
from lookalike.errors import IncompatibleCollectionError
from lookalike.fuse.fuser import Fuser
from lookalike.index import create_index, load_index
from lookalike.vectors import RowMap, l2_normalize
from tests.end_to_end.test_pipeline import folder, index  # noqa: F401 - the folder fixture
from tests.index.test_index import clustered

BLOCKS = (Block("head", "a"), Block("whole", "b", 0.5))


def _blocks(n: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, 40))
    x = centres[rng.integers(12, size=n)] + 0.3 * rng.normal(size=(n, 40))
    return {"head.a": x[:, :30].astype(np.float32), "whole.b": x[:, 30:].astype(np.float32)}


@pytest.mark.parametrize("ks", [(), (4, 8)])
def test_dense_vector_has_out_dim_and_survives_save_and_load(ks, tmp_path):
    fusion = FusionConfig(pseudo_lda_ks=ks, out_dim=16)
    blocks = _blocks()
    fuser = Fuser(BLOCKS, fusion).fit(blocks)
    fused = fuser.transform(blocks)
    assert fused.shape == (300, 16) and fuser.output_dim == 16
    assert np.allclose(np.linalg.norm(fused, axis=1), 1, atol=1e-5)
    fuser.save(tmp_path / "fuser.npz")
    loaded = Fuser.load(tmp_path / "fuser.npz", BLOCKS, fusion)
    outside = _blocks(5, seed=1)  # a query from outside goes through the same map
    assert np.allclose(loaded.transform(outside), fuser.transform(outside), atol=1e-6)


def test_a_collection_with_fewer_pictures_than_dims_keeps_the_wide_cosines(tmp_path):
    # The dense reduction fitted on the 7 seed cards made a cat Saber's closest look-alike:
    # a smaller collection's vectors are the wide ones turned onto their own span.
    fusion = FusionConfig(pseudo_lda_ks=(4, 8), out_dim=24)
    small, outside = _blocks(16), _blocks(5, seed=1)
    wide = Fuser(BLOCKS, FusionConfig(pseudo_lda_ks=(4, 8))).fit(small)
    fuser = Fuser(BLOCKS, fusion).fit(small)
    assert fuser.reduces and fuser.output_dim <= 16 + 1 < wide.output_dim
    stored, asked = fuser.transform(small), fuser.transform(outside)
    wide_stored, wide_asked = wide.transform(small), wide.transform(outside)
    # The matrix is stored as int8 rows: the cosines to about 1e-2, a query's from outside
    # too (its part outside the span is the last dimension, which the collection's lack).
    np.testing.assert_allclose(stored @ stored.T, wide_stored @ wide_stored.T, atol=0.02)
    assert (stored[:, -1] == 0).all() and (asked[:, -1] > 0.5).all()
    np.testing.assert_allclose(asked @ stored.T, wide_asked @ wide_stored.T, atol=0.02)
    fuser.save(tmp_path / "fuser.npz")
    loaded = Fuser.load(tmp_path / "fuser.npz", BLOCKS, fusion)
    np.testing.assert_allclose(loaded.transform(outside), asked, atol=1e-6)
    assert Fuser(BLOCKS, fusion).fit(_blocks(25)).output_dim == 24


def test_a_small_collection_that_keeps_its_fuser_keeps_the_wide_vector():
    # An external store keeps its first fuser: a span of its first pictures would lose
    # what the pictures added later bring.
    fusion = FusionConfig(pseudo_lda_ks=(4, 8), out_dim=24)
    small = _blocks(16)
    fuser = Fuser(BLOCKS, fusion).fit(small, refitted=False)
    wide = Fuser(BLOCKS, FusionConfig(pseudo_lda_ks=(4, 8))).fit(small)
    assert not fuser.reduces and fuser.output_dim == wide.output_dim
    np.testing.assert_allclose(fuser.transform(small), wide.transform(small), atol=1e-6)


def test_dense_vector_keeps_the_neighbours_of_the_full_one():
    blocks = _blocks()
    full = Fuser(BLOCKS, FusionConfig(pseudo_lda_ks=(4, 8))).fit_transform(blocks)
    dense = Fuser(BLOCKS, FusionConfig(pseudo_lda_ks=(4, 8), out_dim=16)).fit_transform(blocks)
    top = [np.argsort(-(v @ v.T), axis=1)[:, 1:6] for v in (full, dense)]
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(*top, strict=True)])
    assert overlap > 0.6


def test_default_preset_is_at_most_256_dims_on_the_auto_index():
    config = get_preset("default")
    assert config.fusion.out_dim == 256
    assert config.index.backend == "auto"


@pytest.mark.parametrize(("exact_max", "chosen"), [(10_000, "exact"), (100, "usearch")])
def test_auto_index_chooses_by_size_and_loads_what_it_built(exact_max, chosen, tmp_path):
    items, queries = clustered(800), clustered(40, seed=1)
    index = create_index("auto", exact_max=exact_max)
    index.build(items)
    assert index.chosen == chosen
    index.save(tmp_path)
    loaded = load_index("auto", tmp_path, items.shape[1])
    assert loaded.chosen == chosen and loaded.count == 800
    truth = np.argsort(-(l2_normalize(queries) @ l2_normalize(items).T), axis=1)[:, :10]
    found, _ = loaded.query(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)])
    assert recall >= 0.98


def test_an_auto_index_that_chose_hnswlib_before_still_loads(tmp_path):
    import json

    items = clustered(300)
    inner = create_index("hnswlib", M=16, ef_construction=200, ef=128)
    inner.build(items)
    inner.save(tmp_path)
    params = {"exact_max": 100, "M": 16, "ef_construction": 200, "ef": 128}
    meta = {"backend": "auto", "chosen": "hnswlib", "params": params}
    (tmp_path / "auto.json").write_text(json.dumps(meta))
    loaded = load_index("auto", tmp_path, items.shape[1])
    assert loaded.chosen == "hnswlib"
    assert loaded.query(items[:3], 1)[0][:, 0].tolist() == [0, 1, 2]


def test_row_map_finds_rows_of_ids_in_any_order():
    for ids in (np.array([3, 7, 9, 20]), np.array([9, 3, 20, 7])):
        rows = RowMap(ids)
        assert [rows[int(i)] for i in ids] == [0, 1, 2, 3]
        assert 8 not in rows and 21 not in rows and "x" not in rows
        with pytest.raises(KeyError):
            rows[5]


def test_a_small_collection_stores_float16_blocks_and_a_dimension_a_picture(folder, tmp_path):  # noqa: F811
    from lookalike.search.searcher import Searcher
    from lookalike.store.codec import CODEC_MIN_ROWS
    from lookalike.store.collection import Collection

    index(folder, tmp_path / "coll")
    gen = Collection.open(tmp_path / "coll").require_generation()
    assert len(gen.ids) < CODEC_MIN_ROWS
    assert all(gen.block(k).dtype == np.float16 for k in gen.config.block_keys)
    # The wide vectors turned onto their span (SpanReducer), stored as a dense one's.
    assert gen.fused().dtype == np.float16 and gen.fused().shape[1] <= len(gen.ids) + 1
    result = Searcher(tmp_path / "coll").query("red/0.png", k=3)
    assert all(m.path.startswith("red/") for m in result.matches)


def test_a_collection_of_the_previous_format_is_refused_with_re_index(folder, tmp_path):  # noqa: F811
    from lookalike.search.searcher import Searcher

    index(folder, tmp_path / "coll")
    manifest = tmp_path / "coll" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["format_version"] = 1
    manifest.write_text(json.dumps(data))
    with pytest.raises(IncompatibleCollectionError, match="re-index into a new collection"):
        Searcher(tmp_path / "coll")


def test_the_fuser_is_stored_as_int8_matrices_and_earlier_float16_ones_still_load(tmp_path):
    from lookalike.fuse.fuser import SCALE_SUFFIX
    from lookalike.vectors import from_int8_rows, int8_rows

    fusion = FusionConfig(pseudo_lda_ks=(4, 8), out_dim=16)
    blocks = _blocks()
    fuser = Fuser(BLOCKS, fusion).fit(blocks)
    arrays = fuser.to_arrays()
    matrices = [n for n, a in arrays.items() if a.dtype == np.int8]
    assert matrices and all(arrays[n + SCALE_SUFFIX].dtype == np.float32 for n in matrices)
    assert fuser.fitted_rows_ == 300
    fuser.save(tmp_path / "fuser.npz")
    loaded = Fuser.load(tmp_path / "fuser.npz", BLOCKS, fusion)
    # fit ends in the stored form: a loaded fuser makes the very vectors the fitted one made.
    np.testing.assert_array_equal(loaded.transform(blocks), fuser.transform(blocks))
    assert loaded.fitted_rows_ == 300
    # A fuser saved before (float16 matrices, no fitted_rows) reads as it was written.
    older = {n: a for n, a in arrays.items() if not n.endswith(SCALE_SUFFIX)}
    for n in matrices:
        older[n] = from_int8_rows(arrays[n], arrays[n + SCALE_SUFFIX]).astype(np.float16)
    older["meta"] = np.frombuffer(json.dumps({"input_dims": fuser.input_dims_}).encode(), np.uint8)
    np.savez(tmp_path / "old.npz", **older)
    old = Fuser.load(tmp_path / "old.npz", BLOCKS, fusion)
    assert old.fitted_rows_ is None
    np.testing.assert_allclose(old.transform(blocks), fuser.transform(blocks), atol=1e-6)
    # The int8 rows are a fixed point: coding what was decoded gives the same codes.
    codes, scales = int8_rows(np.random.default_rng(2).normal(size=(7, 50)) * 3)
    again = int8_rows(from_int8_rows(codes, scales))
    np.testing.assert_array_equal(again[0], codes)
    np.testing.assert_array_equal(again[1], scales)
    assert np.log2(scales).tolist() == np.round(np.log2(scales)).tolist()  # powers of two

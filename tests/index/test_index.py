"""The index backends against the exact reference, and the contract every backend keeps."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from lookalike.errors import IncompatibleCollectionError, LookalikeError, UnknownNameError
from lookalike.index import create_index, exact, list_indexes, load_index
from lookalike.index.base import angular_to_cosine
from lookalike.vectors import as_stored, l2_normalize

DIM = 24


def _optional(name: str, module: str, **params: object) -> object:
    missing = importlib.util.find_spec(module) is None
    return pytest.param(
        name,
        params,
        marks=pytest.mark.skipif(missing, reason=f"{module} is not installed"),
        id=f"{name}-{'-'.join(map(str, params.values()))}".rstrip("-"),
    )


ANN = [
    pytest.param("annoy", {"n_trees": 50}, id="annoy"),
    _optional("hnswlib", "hnswlib"),
    _optional("faiss", "faiss", factory="HNSW32"),
    _optional("usearch", "usearch"),
    _optional("usearch", "usearch", dtype="f16"),
    _optional("usearch", "usearch", dtype="i8", rescore=40),
    _optional("usearch", "usearch", dtype="i8-rotated", rescore=20),
]
UNTRAINED = [pytest.param("exact", {}, id="exact"), *ANN]
ALL = [*UNTRAINED, _optional("faiss", "faiss", factory="IVF8,Flat")]  # IVF8 trains on >= 8 items


def clustered(n: int, dim: int = DIM, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    points = centres[rng.integers(clusters, size=n)] + 0.35 * rng.normal(size=(n, dim))
    return points.astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered(1500), clustered(60, seed=1)


@pytest.fixture(scope="module")
def reference(data: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Top-10 ids by cosine, computed in float64 with a plain full sort."""
    items, queries = (l2_normalize(a).astype(np.float64) for a in data)
    return np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :10]


def tolerance(name: str, params: dict) -> float:
    """How far a backend's similarities may be from float32 cosines: usearch with float16
    vectors is within 1e-3."""
    return 1e-3 if params.get("dtype") == "f16" else 1e-5


def built(name: str, params: dict, vectors: np.ndarray):
    index = create_index(name, **params)
    index.build(vectors)
    return index


def test_registry_lists_backends_and_suggests_close_names() -> None:
    assert {"annoy", "exact", "faiss", "hnswlib", "usearch"} <= set(list_indexes())
    with pytest.raises(UnknownNameError, match="'annoy'"):
        create_index("anoy")


def test_unknown_parameters_are_clear_errors() -> None:
    with pytest.raises(LookalikeError, match="n_trees"):
        create_index("annoy", ntrees=10)
    with pytest.raises(LookalikeError, match="n_trees must be an integer >= 1"):
        create_index("annoy", n_trees=0)
    with pytest.raises(LookalikeError, match="has no query parameter 'ef'"):
        create_index("annoy").set_query_params(ef=10)


def test_exact_equals_brute_force_across_blocks(data, reference, monkeypatch) -> None:
    # Small blocks so the block-merging path runs many times.
    monkeypatch.setattr(exact, "QUERY_ROWS", 7)
    monkeypatch.setattr(exact, "ITEM_ROWS", 97)
    items, queries = data
    ids, sims = built("exact", {}, items).query(queries, 10)
    np.testing.assert_array_equal(ids, reference)
    assert ids.dtype == np.int64 and sims.dtype == np.float32
    assert np.all(np.diff(sims, axis=1) <= 0)


@pytest.mark.parametrize(("name", "params"), ANN)
def test_ann_recall_and_similarities_agree_with_exact(name, params, data, reference) -> None:
    items, queries = data
    ids, sims = built(name, params, items).query(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, reference, strict=True)])
    assert recall >= 0.9
    expected = np.einsum("md,mkd->mk", l2_normalize(queries), l2_normalize(items)[ids])
    np.testing.assert_allclose(sims, expected, atol=tolerance(name, params))


def test_annoy_angular_distance_converts_to_cosine() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.6, 0.8])
    assert angular_to_cosine(np.linalg.norm(a - b)) == pytest.approx(a @ b)


@pytest.mark.parametrize(("name", "params"), ALL)
def test_save_load_round_trip(name, params, data, tmp_path: Path) -> None:
    items, queries = data
    index = built(name, params, items)
    index.save(tmp_path)
    index.save(tmp_path)  # saving over an earlier save is fine
    loaded = load_index(name, tmp_path, DIM)
    assert loaded.params == index.params and loaded.count == len(items)
    for got, want in zip(loaded.query(queries, 10), index.query(queries, 10), strict=True):
        np.testing.assert_array_equal(got, want)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(("name", "params"), UNTRAINED)
def test_k_larger_than_n_is_padded(name, params) -> None:
    index = built(name, params, clustered(3))
    ids, sims = index.query(clustered(2, seed=5), 5)
    assert ids.shape == sims.shape == (2, 5)
    assert all(sorted(row) == [0, 1, 2] for row in ids[:, :3])
    assert np.all(ids[:, 3:] == -1) and np.all(sims[:, 3:] == -np.inf)
    assert np.all(np.isfinite(sims[:, :3]))


@pytest.mark.parametrize(("name", "params"), UNTRAINED)
def test_single_item(name, params, tmp_path: Path) -> None:
    vector = clustered(1)
    index = built(name, params, vector)
    index.save(tmp_path)
    ids, sims = load_index(name, tmp_path, DIM).query(vector, 2)
    assert ids.tolist() == [[0, -1]]
    assert sims[0, 0] == pytest.approx(1.0, abs=tolerance(name, params))


@pytest.mark.parametrize(("name", "params"), ALL)
def test_empty_index(name, params, tmp_path: Path) -> None:
    index = built(name, params, np.empty((0, DIM), np.float32))
    index.save(tmp_path)
    loaded = load_index(name, tmp_path, DIM)
    for result in (index.query(clustered(2), 3), loaded.query(clustered(2), 3)):
        assert np.all(result[0] == -1) and np.all(result[1] == -np.inf)


@pytest.mark.parametrize(("name", "params"), ALL)
def test_zero_vectors_have_cosine_zero(name, params) -> None:
    items = clustered(40)
    items[7] = 0
    index = built(name, params, items)
    ids, sims = index.query(np.zeros((1, DIM), np.float32), 3)
    assert np.all(ids >= 0)
    np.testing.assert_allclose(sims, 0, atol=1e-6)
    ids, sims = index.query(items[:5] + 0.01, 40)
    np.testing.assert_allclose(sims[ids == 7], 0, atol=1e-6)


@pytest.mark.parametrize(("name", "params"), ALL)
def test_dimension_mismatch(name, params, tmp_path: Path) -> None:
    index = built(name, params, clustered(30))
    with pytest.raises(LookalikeError, match="8 dimensions but the index holds 24"):
        index.query(np.ones((1, 8), np.float32), 3)
    index.save(tmp_path)
    with pytest.raises(IncompatibleCollectionError, match="24-dimensional"):
        load_index(name, tmp_path, 8)


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    index = create_index("exact")
    with pytest.raises(LookalikeError, match="has not been built"):
        index.query(clustered(1), 1)
    with pytest.raises(LookalikeError, match="2-D"):
        index.build(np.ones(DIM, np.float32))
    with pytest.raises(LookalikeError, match="NaN"):
        index.build(np.full((2, DIM), np.nan, np.float32))
    with pytest.raises(LookalikeError, match="no saved annoy index"):
        load_index("annoy", tmp_path, DIM)


def test_annoy_search_k_is_settable_after_load(data, tmp_path: Path) -> None:
    items, queries = data
    built("annoy", {"n_trees": 2}, items).save(tmp_path)
    loaded = load_index("annoy", tmp_path, DIM)
    coarse = loaded.query(queries, 10)[0]
    loaded.set_query_params(search_k=20_000)
    assert loaded.params["search_k"] == 20_000
    assert not np.array_equal(loaded.query(queries, 10)[0], coarse)


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss is not installed")
def test_faiss_ivf_needs_enough_vectors_to_train() -> None:
    with pytest.raises(LookalikeError, match="1024 IVF lists but only 50 vectors"):
        built("faiss", {"factory": "IVF1024,Flat"}, clustered(50))
    with pytest.raises(LookalikeError, match="could not train"):
        built("faiss", {"factory": "PQ4"}, clustered(50))


@pytest.mark.parametrize(("name", "module"), [("hnswlib", "hnswlib"), ("faiss", "faiss")])
def test_missing_optional_library_says_how_to_install(name, module, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(LookalikeError, match=r"pip install 'lookalike\[ann\]'"):
        create_index(name)


def test_merged_block_takes_staged_and_committed_rows_without_concatenating():
    from lookalike.errors import CollectionError
    from lookalike.indexing.indexer import merged_block

    chunks = [np.full((2, 3), 1.0) * np.arange(2)[:, None], np.full((3, 3), 10.0)]
    chunks[1][:, 0] = [10, 11, 12]
    old = np.arange(12, dtype=np.float32).reshape(4, 3) + 100
    from_chunks = np.array([True, False, True, False])
    out = merged_block("head.x", chunks, np.array([4, 1]), old, np.array([3, 0]), from_chunks)
    np.testing.assert_array_equal(out[:, 0], [12, 109, 1, 100])
    assert out.dtype == np.float32
    with pytest.raises(CollectionError, match="neither staged"):
        merged_block("head.x", [], np.array([0]), None, np.array([], np.int64), np.array([True]))


@pytest.mark.skipif(importlib.util.find_spec("usearch") is None, reason="usearch is not installed")
def test_usearch_loads_as_a_memory_mapped_view_and_refuses_a_damaged_file(
    data, tmp_path: Path
) -> None:
    from lookalike.errors import CollectionError

    items, queries = data
    built("usearch", {}, items).save(tmp_path)
    loaded = load_index("usearch", tmp_path, DIM)
    # A view of the file, not a copy in memory: what keeps a new query process's start-up
    # short at a million items.
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(tmp_path / "usearch.bin") in maps.read_text()
    assert loaded.query(queries, 10)[0].shape == (len(queries), 10)
    native = tmp_path / "usearch.bin"
    data_bytes = native.read_bytes()
    del loaded
    native.write_bytes(data_bytes[: len(data_bytes) // 2])
    with pytest.raises(CollectionError, match=r"usearch\.bin: cannot load the usearch index"):
        load_index("usearch", tmp_path, DIM)
    native.unlink()
    with pytest.raises(CollectionError, match=r"usearch\.bin"):
        load_index("usearch", tmp_path, DIM)


EXTENDING = [
    pytest.param("exact", {}, id="exact"),
    _optional("hnswlib", "hnswlib"),
    _optional("usearch", "usearch"),
    _optional("usearch", "usearch", dtype="i8", rescore=40),
    _optional("usearch", "usearch", dtype="i8-rotated", rescore=20),
    pytest.param("auto", {"exact_max": 2000}, id="auto-exact"),
    pytest.param("auto", {"exact_max": 100}, id="auto-usearch"),
]


@pytest.mark.parametrize(("name", "params"), EXTENDING)
def test_extend_a_loaded_index_answers_as_one_built_on_every_row(
    name, params, data, reference, tmp_path: Path
) -> None:
    """An index run that only added pictures adds them to the committed index (issue 16):
    loaded from its files (a read-only view for usearch), grown, saved, loaded again."""
    items, queries = data
    index = built(name, params, items[:1200])
    index.save(tmp_path / "first")
    loaded = load_index(name, tmp_path / "first", DIM)
    assert loaded.extends(300)
    loaded.extend(items[1200:])
    assert loaded.count == len(items)
    loaded.save(tmp_path / "grown")
    grown = load_index(name, tmp_path / "grown", DIM)
    assert grown.count == len(items)
    ids, sims = grown.query(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, reference, strict=True)])
    assert recall >= (1.0 if name == "exact" or params.get("exact_max") == 2000 else 0.95)
    np.testing.assert_allclose(
        sims, np.take_along_axis(queries_cos(queries, items), ids, 1), atol=tolerance(name, params)
    )
    # The first files are untouched: a query process may still be reading them.
    assert load_index(name, tmp_path / "first", DIM).count == 1200


def queries_cos(queries: np.ndarray, items: np.ndarray) -> np.ndarray:
    return l2_normalize(queries) @ l2_normalize(items).T


def test_indexes_that_cannot_add_say_so_and_refuse() -> None:
    annoy = built("annoy", {"n_trees": 5}, clustered(50))
    assert not annoy.extends(1)
    with pytest.raises(LookalikeError, match="cannot add rows"):
        annoy.extend(clustered(1))
    assert not create_index("exact").extends(1)  # nothing built yet
    # auto grown past exact_max would become a graph: it is built anew instead.
    auto = built("auto", {"exact_max": 60}, clustered(50))
    assert auto.extends(10) and not auto.extends(11)
    with pytest.raises(LookalikeError, match="build it again"):
        auto.extend(clustered(11))
    with pytest.raises(LookalikeError, match="dimensions"):
        auto.extend(clustered(1, dim=DIM + 1))


@pytest.mark.skipif(importlib.util.find_spec("usearch") is None, reason="usearch is not installed")
def test_a_rescored_graph_keeps_its_rows_beside_it_and_names_them_when_damaged(
    data, reference, tmp_path: Path
) -> None:
    from lookalike.errors import CollectionError

    items, queries = data
    built("usearch", {"dtype": "i8", "rescore": 40}, items).save(tmp_path)
    rows = tmp_path / "vectors.npy"
    np.testing.assert_array_equal(np.load(rows), l2_normalize(items))
    loaded = load_index("usearch", tmp_path, DIM)
    ids, sims = loaded.query(queries, 10)
    np.testing.assert_allclose(
        sims, np.take_along_axis(queries_cos(queries, items), ids, 1), atol=1e-6
    )  # exact: re-scored on the float32 rows
    assert (np.diff(sims, axis=1) <= 0).all()
    loaded.set_query_params(rescore=0)  # the int8 graph's own similarities
    assert np.abs(loaded.query(queries, 10)[1] - sims).max() > 1e-6
    del loaded
    np.save(rows, l2_normalize(items)[:10])
    with pytest.raises(CollectionError, match=r"vectors\.npy: holds float32 \(10, 24\)"):
        load_index("usearch", tmp_path, DIM)
    rows.unlink()
    with pytest.raises(CollectionError, match=r"vectors\.npy: cannot read"):
        load_index("usearch", tmp_path, DIM)


@pytest.mark.parametrize(
    ("name", "params", "file"),
    [
        pytest.param("exact", {}, "exact.npy", id="exact"),
        pytest.param(
            "usearch",
            {"dtype": "i8-rotated", "rescore": 20},
            "vectors.npy",
            id="usearch",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("usearch") is None, reason="usearch is not installed"
            ),
        ),
    ],
)
def test_vectors_rounded_to_float16_are_saved_as_float16_and_answer_alike(
    name, params, file, data, tmp_path: Path
) -> None:
    # A collection's fused vectors come rounded to float16 (vectors.as_stored): the index
    # keeps them in half the bytes, and loaded it ranks and scores exactly as built.
    items, queries = data
    rounded = as_stored(l2_normalize(items))
    index = built(name, params, rounded)
    index.save(tmp_path)
    assert np.load(tmp_path / file).dtype == np.float16
    np.testing.assert_array_equal(np.load(tmp_path / file), rounded)
    ids, sims = index.query(queries, 10)
    loaded_ids, loaded_sims = load_index(name, tmp_path, DIM).query(queries, 10)
    np.testing.assert_array_equal(loaded_ids, ids)
    np.testing.assert_array_equal(loaded_sims, sims)
    np.testing.assert_allclose(
        sims, np.take_along_axis(l2_normalize(queries) @ rounded.T, ids, 1), atol=1e-6
    )
    # Vectors that float16 would change are saved as they are.
    built(name, params, items).save(tmp_path / "wide")
    assert np.load(tmp_path / "wide" / file).dtype == np.float32


def test_a_ranking_asks_a_rescored_graph_for_what_it_needs_and_others_for_more() -> None:
    """`Searcher` ranks what the index gives exactly: a graph whose best are re-scored gives
    them in exact order already; an approximate search whose effort grows with what is
    asked (Annoy), or exact search whose ties are ranked by id, is asked for more."""
    assert create_index("annoy").candidates(11) == 50
    assert create_index("exact").candidates(20) == 80
    if importlib.util.find_spec("usearch") is not None:
        assert create_index("usearch", rescore=20).candidates(11) == 11
        assert create_index("usearch").candidates(11) == 50
        assert built("auto", {"exact_max": 100}, clustered(150)).candidates(11) == 11
    assert built("auto", {"exact_max": 100}, clustered(50)).candidates(11) == 50


def test_a_saved_auto_index_says_what_it_chose_without_loading_it(tmp_path: Path) -> None:
    from lookalike.errors import CollectionError
    from lookalike.index.auto import describe_choice, saved_choice

    built("auto", {"exact_max": 100}, clustered(50)).save(tmp_path)
    chosen, params = saved_choice(tmp_path)
    assert (chosen, params["exact_max"]) == ("exact", 100)
    assert describe_choice(chosen, params) == "exact search (up to 100 items)"
    graph = {"M": 32, "ef": 64, "dtype": "i8-rotated", "rescore": 40}
    assert describe_choice("usearch", graph) == (
        "usearch graph: M 32, ef 64, rotated int8 codes, 40 re-scored"
    )
    (tmp_path / "auto.json").write_text("{")
    with pytest.raises(CollectionError, match=r"auto\.json: unreadable index metadata"):
        saved_choice(tmp_path)

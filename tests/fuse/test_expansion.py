import numpy as np
import pytest

from lookalike.evaluate.evaluation import exact_top_k, precision_and_map
from lookalike.fuse import expansion
from lookalike.fuse.expansion import augment_database, expand_query, nearest_neighbours
from lookalike.index import create_index
from lookalike.vectors import l2_normalize


def clustered(n_clusters=8, per=12, dim=32, noise=1.5, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    x = np.repeat(centres, per, axis=0) + noise * rng.normal(size=(n_clusters * per, dim))
    return l2_normalize(x), np.repeat(np.arange(n_clusters), per)


def test_exact_neighbours_match_brute_force():
    x, _ = clustered()
    ids, sims = nearest_neighbours(x, 5, chunk=7)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    assert np.array_equal(ids, np.argsort(-sim, axis=1)[:, :5])
    assert np.allclose(sims, np.take_along_axis(sim, ids, axis=1), atol=1e-5)


def test_expansion_pulls_noisy_clusters_together():
    x, y = clustered()
    before, _ = precision_and_map(exact_top_k(x, 4), y)
    after, _ = precision_and_map(exact_top_k(augment_database(x, 3, 3.0), 4), y)
    assert after > before + 0.02


def test_large_collections_find_neighbours_with_the_index(monkeypatch):
    x, _ = clustered(per=30)
    exact = augment_database(x, 3, 3.0)
    monkeypatch.setattr(expansion, "EXACT_LIMIT", 10)
    with_index = augment_database(x, 3, 3.0, lambda: create_index("exact"))
    assert np.allclose(exact, with_index, atol=1e-5)


def test_an_outside_query_is_expanded_like_a_collection_item():
    x, _ = clustered()
    ids, sims = nearest_neighbours(x, 3)
    augmented = augment_database(x, 3, 3.0)
    for i in (0, 17, 50):
        assert np.allclose(expand_query(x[i], x[ids[i]], sims[i], 3.0), augmented[i], atol=1e-5)


@pytest.mark.parametrize("k", [0, 5])
def test_tiny_or_disabled_expansion_leaves_vectors_alone(k):
    x, _ = clustered(n_clusters=1, per=1)
    assert np.array_equal(augment_database(x, k, 3.0), x)

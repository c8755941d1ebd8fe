import numpy as np
import pytest

from lookalike.fuse import lowrank
from lookalike.fuse.fuser import PCA
from lookalike.fuse.lowrank import sample_rows, top_components
from lookalike.fuse.pseudo_lda import PseudoLabelLDA


def low_rank_plus_noise(n=400, dim=300, rank=20, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10, 1, rank)
    signal = (rng.normal(size=(n, rank)) * scales) @ rng.normal(size=(rank, dim)) / np.sqrt(dim)
    return (signal + 0.05 * rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize(
    ("k", "gram_rows"),
    [(200, 2000), (8, 2000), (8, 0)],  # LAPACK (2k >= rank), Gram matrix, randomized
)
def test_top_components_match_the_exact_svd(monkeypatch, k, gram_rows):
    monkeypatch.setattr(lowrank, "GRAM_ROWS", gram_rows)
    x = low_rank_plus_noise(n=300 if k == 200 else 400)
    x -= x.mean(axis=0)
    s, vt = top_components(x, k)
    _, s_exact, vt_exact = np.linalg.svd(x.astype(np.float64), full_matrices=False)
    assert vt.shape == (k, x.shape[1]) and vt.dtype == np.float32
    np.testing.assert_allclose(s, s_exact[:k], rtol=1e-3)
    # The same directions up to sign: |cosine| of each pair of leading vectors is 1.
    cosines = np.abs(np.sum(vt[:8] * vt_exact[:8], axis=1))
    np.testing.assert_allclose(cosines, 1.0, atol=1e-3)


def test_top_components_never_exceed_the_data():
    s, vt = top_components(np.random.default_rng(0).normal(size=(5, 40)), 128)
    assert s.shape == (5,) and vt.shape == (5, 40)


def test_sample_rows_is_bounded_seeded_and_ordered():
    x = np.arange(50, dtype=np.float64)[:, None] * np.ones((1, 3))
    a, b = sample_rows(x, seed=3, limit=10), sample_rows(x, seed=3, limit=10)
    assert a.shape == (10, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.all(np.diff(a[:, 0]) > 0)  # rows keep their order
    assert sample_rows(x, seed=3, limit=100).shape == (50, 3)


def test_fits_read_at_most_the_row_cap(monkeypatch):
    """PCA and pseudo-label LDA fit on a bounded sample, however large the collection."""
    seen: list[int] = []
    real = lowrank.top_components

    def spy(x, k, seed=0):
        seen.append(len(x))
        return real(x, k, seed)

    monkeypatch.setattr(lowrank, "MAX_FIT_ROWS", 60)
    monkeypatch.setattr("lookalike.fuse.fuser.top_components", spy)
    monkeypatch.setattr("lookalike.fuse.pseudo_lda.top_components", spy)
    monkeypatch.setattr(
        "lookalike.fuse.fuser.sample_rows", lambda x, seed: lowrank.sample_rows(x, seed, limit=60)
    )
    monkeypatch.setattr(
        "lookalike.fuse.pseudo_lda.sample_rows",
        lambda x, seed: lowrank.sample_rows(x, seed, limit=60),
    )
    x = low_rank_plus_noise(n=500, dim=64)
    PCA(16).fit(x)
    lda = PseudoLabelLDA((5, 10), pca_dim=16).fit(x)
    assert seen == [60, 60]
    assert lda.transform(x).shape[0] == 500  # the map applies to every row

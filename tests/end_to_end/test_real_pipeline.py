"""The pipeline with the real weights, the real detector and real images."""

import numpy as np
import pytest

from lookalike.config import get_preset
from lookalike.embed import create_backbone
from lookalike.embed.extractor import FeatureExtractor
from lookalike.evaluate.evaluation import exact_top_k
from lookalike.index import create_index
from lookalike.indexing.indexer import Indexer
from lookalike.search.searcher import Searcher

pytestmark = pytest.mark.weights


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("efficientnet-lite0")


@pytest.fixture(scope="module")
def anime_subset(tmp_path_factory, shared_dataset):
    """4 characters x 6 images, linked (not copied) from the shared dataset."""
    anime = shared_dataset("anime-faces-dev")
    root = tmp_path_factory.mktemp("anime")
    for character in sorted(p.name for p in anime.iterdir())[:4]:
        (root / character).mkdir()
        for image in sorted((anime / character).glob("*.jpg"))[:6]:
            (root / character / image.name).symlink_to(image)
    return root


def run_index(root, coll, backbone, **kw):
    config = get_preset("default")
    return Indexer(root, coll, config, FeatureExtractor(config, backbone), progress=False, **kw)


def test_index_and_query_real_anime_faces(anime_subset, tmp_path, backbone):
    coll = tmp_path / "coll"
    summary = run_index(anime_subset, coll, backbone).run()
    assert summary.total_indexed == 24 and not summary.skipped
    searcher = Searcher(coll, FeatureExtractor(get_preset("default"), backbone))
    same = []
    for character in sorted(p.name for p in anime_subset.iterdir()):
        result = searcher.query(
            f"{character}/{sorted(p.name for p in (anime_subset / character).iterdir())[0]}", k=4
        )
        assert len(result.matches) == 4
        same.append(np.mean([m.path.startswith(character + "/") for m in result.matches]))
    # 4 characters: chance is 5/23 of the others; the default preset does far better.
    assert np.mean(same) >= 0.6


def test_exact_and_annoy_agree_on_most_neighbours(anime_subset, tmp_path, backbone):
    coll = tmp_path / "coll"
    run_index(anime_subset, coll, backbone).run()
    fused = np.asarray(Searcher(coll).fused)
    exact = exact_top_k(fused, 4)
    annoy = create_index("annoy", n_trees=20)
    annoy.build(fused)
    ids, _ = annoy.query(fused, 5)
    agree = [
        len(set(row[row != i][:4].tolist()) & set(exact[i].tolist())) / 4
        for i, row in enumerate(ids)
    ]
    assert np.mean(agree) >= 0.9


def test_interrupted_real_run_resumes_to_the_same_vectors(
    anime_subset, tmp_path, backbone, monkeypatch
):
    reference = tmp_path / "ref"
    run_index(anime_subset, reference, backbone, batch_size=8).run()
    from lookalike.store import staging

    real_write = staging.Staging.write
    calls = {"n": 0}

    def dying_write(self, ids, blocks):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_write(self, ids, blocks)

    monkeypatch.setattr(staging.Staging, "write", dying_write)
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run_index(anime_subset, resumed, backbone, batch_size=8).run()
    monkeypatch.setattr(staging.Staging, "write", real_write)
    assert run_index(anime_subset, resumed, backbone, batch_size=8).run().embedded == 16
    a, b = Searcher(reference), Searcher(resumed)
    order_a, order_b = np.argsort(a.ids), np.argsort(b.ids)
    assert np.allclose(a.fused[order_a], b.fused[order_b], atol=1e-5)

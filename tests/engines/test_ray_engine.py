"""`index --engine ray`: a local Ray with 2 embedding actors gives what the single process gives.

Slow (about a minute): starting Ray and its actors (each imports torch) dominates; one Ray
session is shared by the whole module.
"""

import numpy as np
import pytest
from PIL import Image

from lookalike.config import get_preset
from lookalike.engines import create_engine
from lookalike.errors import LookalikeError
from lookalike.indexing.indexer import Indexer
from lookalike.search.searcher import Searcher
from lookalike.store.collection import Collection

COLOURS = {"red": (200, 30, 40), "green": (40, 180, 60), "blue": (30, 60, 200)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray") / "photos"
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        for i in range(5):
            pixels = np.clip(np.array(colour) + rng.integers(-40, 40, size=(48, 40, 3)), 0, 255)
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    (root / "broken.png").write_bytes(b"<html>not an image</html>")
    return root


@pytest.fixture(scope="module")
def engine():
    import ray

    yield create_engine("ray", workers=2)
    ray.shutdown()


def index(folder, coll, config, engine=None):
    return Indexer(folder, coll, config, progress=False, batch_size=4, engine=engine).run()


def assert_same_collection(a, b, atol):
    ga, gb = Collection.open(a).generation(), Collection.open(b).generation()
    assert np.array_equal(ga.ids, gb.ids)
    assert np.array_equal(ga.head_boxes, gb.head_boxes)
    assert np.allclose(np.asarray(ga.fused()), np.asarray(gb.fused()), atol=atol)
    sa, sb = Searcher(a), Searcher(b)
    for rec in sa.collection.catalog.by_status("ok"):
        ra, rb = sa.query(rec.path, k=4).matches, sb.query(rec.path, k=4).matches
        assert [m.path for m in ra] == [m.path for m in rb]
        assert np.allclose([m.score for m in ra], [m.score for m in rb], atol=atol)


@pytest.mark.slow
def test_ray_run_equals_the_single_process_run(folder, tmp_path, engine):
    config = get_preset("default").with_options(backbone="fake", detector="none")
    local = index(folder, tmp_path / "local", config)
    distributed = index(folder, tmp_path / "ray", config, engine)
    for s in (local, distributed):
        assert (s.embedded, s.total_indexed, [p for p, _ in s.skipped]) == (15, 15, ["broken.png"])
    assert_same_collection(tmp_path / "local", tmp_path / "ray", atol=0)
    errors = Collection.open(tmp_path / "ray").catalog.by_status("error")
    assert [(r.path, r.error) for r in errors] == [
        (r.path, r.error) for r in Collection.open(tmp_path / "local").catalog.by_status("error")
    ]
    # A second Ray run has nothing to do.
    assert index(folder, tmp_path / "ray", config, engine).embedded == 0


@pytest.mark.slow
@pytest.mark.weights
def test_ray_run_with_real_weights_equals_the_single_process_run(folder, tmp_path, engine):
    config = get_preset("default").with_options(detector="none")
    index(folder, tmp_path / "local", config)
    index(folder, tmp_path / "ray", config, engine)
    assert_same_collection(tmp_path / "local", tmp_path / "ray", atol=1e-5)


def test_unknown_engine_and_an_address_without_ray_are_refused():
    with pytest.raises(LookalikeError, match="unknown engine 'spark'"):
        create_engine("spark")
    with pytest.raises(LookalikeError, match="--ray-address needs --engine ray"):
        create_engine("local", address="ray://x:10001")

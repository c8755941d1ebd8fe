"""The fast indexing path gives the vectors of the plain one (timings: benchmarks/).

Tolerance: every vector of the fast path (ONNX Runtime, batched) has cosine similarity
>= 0.9999 with the plain one (eager PyTorch, one image at a time); measured: >= 0.99999.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lookalike.config import get_preset
from lookalike.demo.sample import generate_sample
from lookalike.embed import create_backbone
from lookalike.embed.cache import cache_dir
from lookalike.embed.extractor import FeatureExtractor
from lookalike.embed.onnx_runtime import OnnxRunner, min_cosine
from lookalike.errors import LookalikeError
from lookalike.indexing.indexer import Indexer
from lookalike.load.images import load_image
from lookalike.store.collection import Collection

MIN_COSINE = 0.9999
ALL_OUTPUTS = ("pooled", "logits", "gem", "gem_mid", "avg_mid")


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One export for the module, in a folder of its own (not the user's cache)."""
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("cache")
        mp.setenv("LOOKALIKE_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample(tmp_path_factory.mktemp("sample"), 2, 3, seed=3)


def test_min_cosine_is_the_worst_row() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0]], np.float32)
    assert min_cosine(a, a) == pytest.approx(1.0)
    b = np.array([[1.0, 0.0], [1.0, -1.0]], np.float32)
    assert min_cosine(a, b) == pytest.approx(0.0, abs=1e-9)


def test_unknown_runtime_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LookalikeError, match="runtime"):
        create_backbone("efficientnet-lite0", runtime="tensorrt")
    monkeypatch.setenv("LOOKALIKE_RUNTIME", "torch")
    assert create_backbone("efficientnet-lite0").runtime == "torch"  # type: ignore[attr-defined]


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOKALIKE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert cache_dir() == Path("/somewhere/lookalike")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "/home/someone")
    assert cache_dir() == Path("/home/someone/.cache/lookalike")
    monkeypatch.setenv("LOOKALIKE_CACHE_DIR", "/elsewhere")
    assert cache_dir() == Path("/elsewhere")


@pytest.mark.weights
@pytest.mark.parametrize("flip_tta", [False, True])
def test_onnx_runtime_gives_the_eager_vectors(
    onnx_cache: Path, sample: Path, flip_tta: bool
) -> None:
    images = [load_image(p) for p in sorted(sample.rglob("*.png"))]
    fast = create_backbone("efficientnet-lite0", flip_tta=flip_tta, runtime="onnx")
    plain = create_backbone("efficientnet-lite0", flip_tta=flip_tta, runtime="torch")
    got = fast.embed(images, ALL_OUTPUTS)
    for i, image in enumerate(images):  # the plain path: one image at a time
        one = plain.embed([image], ALL_OUTPUTS)
        for out in ALL_OUTPUTS:
            assert min_cosine(got[out][i : i + 1], one[out]) >= MIN_COSINE, (out, i)
    # The export is cached under the weights hash, and the options do not change the key;
    # its record lies beside it.
    runner: OnnxRunner = fast._onnx  # type: ignore[attr-defined]
    cached = sorted(p.name for p in (onnx_cache / "onnx").iterdir())
    assert cached == sorted([runner.path.name, runner.record_path.name])
    assert fast.weights_hash[:16] in runner.path.name


@pytest.mark.weights
def test_a_damaged_export_is_made_again(onnx_cache: Path, sample: Path) -> None:
    image = load_image(next(sample.rglob("*.png")))
    runner: OnnxRunner = create_backbone("efficientnet-lite0", runtime="onnx")._onnx  # type: ignore[attr-defined]
    runner.path.parent.mkdir(parents=True, exist_ok=True)
    runner.path.write_bytes(b"not an onnx graph")
    backbone = create_backbone("efficientnet-lite0", runtime="onnx")
    assert backbone._model is not None  # type: ignore[attr-defined]  # the record did not vouch
    vec = backbone.embed([image], ["pooled"])["pooled"]
    plain = create_backbone("efficientnet-lite0", runtime="torch").embed([image], ["pooled"])
    assert min_cosine(vec, plain["pooled"]) >= MIN_COSINE
    assert runner.path.stat().st_size > 1_000_000  # the real graph again


@pytest.mark.weights
def test_index_gives_the_vectors_of_the_naive_loop(
    onnx_cache: Path, sample: Path, tmp_path: Path
) -> None:
    """The real `index` path (batched, ONNX Runtime, loader threads) against the naive loop."""
    config = get_preset("default")
    Indexer(sample, tmp_path / "coll", config, batch_size=4, progress=False).run()
    coll = Collection.open(tmp_path / "coll")
    gen = coll.require_generation()
    paths = coll.catalog.get_many(gen.ids.tolist())
    naive = FeatureExtractor(config, backbone=create_backbone(config.backbone, runtime="torch"))
    for row, file_id in enumerate(gen.ids.tolist()):
        image = load_image(sample / paths[file_id].path)
        analysis = naive.analyse(image)
        assert tuple(gen.head_boxes[row]) == tuple(analysis.head_box)
        blocks = naive.compute([analysis.views], config.block_keys)
        for key in config.block_keys:
            assert min_cosine(gen.block(key)[row : row + 1], blocks[key]) >= MIN_COSINE, key

"""The cold start of a query: a checked ONNX export opens without torch and answers as the
eager PyTorch path does; the weights hash is remembered while the file stays the same.

Timings are in benchmarks/cold_query.py; here only what must hold whatever the speed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lookalike.embed import create_backbone
from lookalike.embed.cache import HASHES_FILE, weights_sha256
from lookalike.embed.onnx_runtime import OnnxRunner, min_cosine

MIN_COSINE = 0.9999  # as tests/indexing/test_throughput_paths.py: measured >= 0.99999
SRC = Path(__file__).resolve().parents[2] / "src"


def python(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run `code` in a new interpreter (a cold process, as a user's command is)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(SRC), **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_weights_hash_is_remembered_until_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOKALIKE_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"a" * 1000)
    assert weights_sha256(weights) == hashlib.sha256(b"a" * 1000).hexdigest()
    # Remembered: the next call takes the stored digest and does not read the file.
    store = tmp_path / "cache" / HASHES_FILE
    data = json.loads(store.read_text())
    data[str(weights.resolve())]["sha256"] = "0" * 64
    store.write_text(json.dumps(data))
    assert weights_sha256(weights) == "0" * 64
    # The same size written in place, with a new modification time: hashed again.
    before = weights.stat().st_mtime_ns
    weights.write_bytes(b"b" * 1000)
    os.utime(weights, ns=(before + 10**9, before + 10**9))
    assert weights_sha256(weights) == hashlib.sha256(b"b" * 1000).hexdigest()
    # A file put in its place (a reinstalled package): another inode, hashed again.
    other = tmp_path / "new.pth"
    other.write_bytes(b"c" * 1000)
    other.replace(weights)
    assert weights_sha256(weights) == hashlib.sha256(b"c" * 1000).hexdigest()
    store.write_text("{not json")  # a damaged store is started again, not an error
    assert weights_sha256(weights) == hashlib.sha256(b"c" * 1000).hexdigest()


def test_looking_for_onnx_runtime_imports_neither_onnx_nor_torch() -> None:
    # Nor scikit-learn (1.3 s to import): only fits need it, not a query.
    out = python(
        "import sys\n"
        "from lookalike.embed import onnx_runtime\n"
        "onnx_runtime.available()\n"
        "import lookalike.cli, lookalike.search.searcher\n"
        "heavy = ('onnx', 'torch', 'onnxruntime', 'sklearn')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    assert out.strip() == "[]"


# --- with the real weights -----------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache folder of the module's own, with lite0's export checked and recorded."""
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("cache")
        mp.setenv("LOOKALIKE_CACHE_DIR", str(folder))
        mp.delenv("LOOKALIKE_RUNTIME", raising=False)
        first = create_backbone("efficientnet-lite0", runtime="onnx")
        assert first._model is not None  # type: ignore[attr-defined]  # nothing recorded yet
        first.embed([_probe_image()], ["pooled"])  # exports, checks, records
        yield folder


def _probe_image():
    from PIL import Image

    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (180, 260, 3), dtype=np.uint8))


def runner_of(backbone: object) -> OnnxRunner:
    return backbone._onnx  # type: ignore[attr-defined, no-any-return]


EMBED_IN_A_NEW_PROCESS = """
import sys
import numpy as np
from PIL import Image
from lookalike.embed import create_backbone
backbone = create_backbone("efficientnet-lite0", flip_tta=sys.argv[2] == "1")
images = [Image.open(p).convert("RGB") for p in sys.argv[3:]]
vectors = backbone.embed(images, list(backbone.outputs))
np.savez(sys.argv[1], **vectors)
print("torch" in sys.modules, "onnx" in sys.modules)
"""


@pytest.mark.weights
@pytest.mark.parametrize("flip_tta", [False, True])
def test_a_recorded_export_opens_without_torch_and_gives_the_eager_vectors(
    onnx_cache: Path, shared_dataset, tmp_path: Path, flip_tta: bool
) -> None:
    cards = shared_dataset("seed-cards")
    photos = [cards / "saber1.jpg", cards / "img_example1.jpg", cards / "chibi_gil.png"]
    out = tmp_path / "fast.npz"
    env = {"LOOKALIKE_CACHE_DIR": str(onnx_cache)}
    loaded = python(
        EMBED_IN_A_NEW_PROCESS, str(out), str(int(flip_tta)), *map(str, photos), env=env
    )
    assert loaded.split() == ["False", "False"]  # neither torch nor the exporter was imported
    eager = create_backbone("efficientnet-lite0", flip_tta=flip_tta, runtime="torch")
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in photos]
    expected = eager.embed(images, list(eager.outputs))
    with np.load(out) as fast:
        assert sorted(fast.files) == sorted(eager.outputs)
        for name, dim in eager.outputs.items():
            assert fast[name].shape == (len(photos), dim)
            assert min_cosine(fast[name], expected[name]) >= MIN_COSINE, name


@pytest.mark.weights
@pytest.mark.parametrize("change", ["graph", "onnxruntime", "outputs"])
def test_an_export_its_record_does_not_vouch_for_is_checked_again(
    onnx_cache: Path, change: str
) -> None:
    record_path = runner_of(create_backbone("efficientnet-lite0")).record_path
    good = record_path.read_text()
    record = json.loads(good)
    if change == "graph":  # the file differs from what was checked (damaged, replaced)
        record["onnx_sha256"] = "0" * 64
    elif change == "onnxruntime":  # another onnxruntime: its numbers are not yet checked
        record["onnxruntime"] = "0.0.1"
    else:
        record["outputs"] = {"pooled": 1280}
    record_path.write_text(json.dumps(record))
    backbone = create_backbone("efficientnet-lite0")
    assert backbone._model is not None  # type: ignore[attr-defined]  # the eager path, to check
    vec = backbone.embed([_probe_image()], ["gem_mid"])["gem_mid"]
    plain = create_backbone("efficientnet-lite0", runtime="torch")
    assert min_cosine(vec, plain.embed([_probe_image()], ["gem_mid"])["gem_mid"]) >= MIN_COSINE
    assert json.loads(record_path.read_text()) == json.loads(good)  # checked and recorded again
    assert create_backbone("efficientnet-lite0")._model is None  # type: ignore[attr-defined]


QUERY = """
import sys
from lookalike.cli import main
code = main(sys.argv[1:])
print("torch" in sys.modules, file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.weights
@pytest.mark.slow
def test_cli_query_answers_the_same_on_the_fast_and_the_torch_path(
    onnx_cache: Path, shared_dataset, tmp_path: Path
) -> None:
    """Index in one process, then query a picture from outside the collection in new
    processes: through the recorded export (no torch) and through eager PyTorch."""
    anime = shared_dataset("anime-faces-dev")
    root = tmp_path / "pictures"
    for character in sorted(p.name for p in anime.iterdir())[:3]:
        (root / character).mkdir(parents=True)
        for image in sorted((anime / character).glob("*.jpg"))[:5]:
            (root / character / image.name).symlink_to(image)
    coll = tmp_path / "coll"
    env = {"LOOKALIKE_CACHE_DIR": str(onnx_cache)}
    python(QUERY, "index", str(root), "--collection", str(coll), "-q", env=env)
    outside = shared_dataset("seed-cards") / "saber1.jpg"
    answers = {}
    for runtime in ("auto", "torch"):
        done = subprocess.run(
            [sys.executable, "-c", QUERY, "query", str(coll), str(outside), "-k", "8", "--json"],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PYTHONPATH": str(SRC), **env, "LOOKALIKE_RUNTIME": runtime},
        )
        assert done.returncode == 0, done.stderr
        answers[runtime] = (json.loads(done.stdout), done.stderr.split()[-1])
    (fast, fast_torch), (eager, eager_torch) = answers["auto"], answers["torch"]
    assert (fast_torch, eager_torch) == ("False", "True")
    assert [r["id"] for r in fast["results"]] == [r["id"] for r in eager["results"]]
    assert len(fast["results"]) == 8
    np.testing.assert_allclose(
        [r["score"] for r in fast["results"]], [r["score"] for r in eager["results"]], atol=1e-4
    )
    assert fast["query_head_box"] == eager["query_head_box"]

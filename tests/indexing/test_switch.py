"""`index -c C --preset P` on an indexed collection re-uses what it stores (issue 19, item 5).

Each step is a `lookalike index` of its own process, as a user runs it.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lookalike.store.collection import Collection
from tests.end_to_end.test_pipeline import COLOURS, draw
from tests.indexing.test_renames import FAKE, embedded_now, ids_by_path, lookalike, make_folder


@pytest.fixture(autouse=True)
def keep_the_cache(monkeypatch):
    """These tests are of what the cache saves, which collections keep from
    CACHE_MIN_PICTURES pictures on (store/blocks.py): these few keep it too."""
    monkeypatch.setenv("LOOKALIKE_CACHE_MIN_PICTURES", "0")


def stored_preset(coll) -> str:
    return Collection.open(coll).config.preset


def fused(coll) -> np.ndarray:
    return np.asarray(Collection.open(coll).require_generation().fused())


def test_switching_preset_computes_only_the_missing_blocks_and_back_nothing(tmp_path):
    root = make_folder(tmp_path / "cards")
    coll = tmp_path / "coll"
    assert lookalike("index", root, "-c", coll, *FAKE).returncode == 0
    ids, before = ids_by_path(coll), fused(coll)

    # The index run cached the blocks `evaluate` compares (v3's too): without that cache,
    # as a collection indexed before it, the switch computes them.
    shutil.rmtree(coll / "cache")
    to_v3 = lookalike("index", root, "-c", coll, "--preset", "v3", *FAKE)
    assert to_v3.returncode == 0, to_v3.stderr
    assert "settings switched: preset default -> v3" in to_v3.stdout
    assert "computed from the images: head.pooled, whole.pooled (9 images)" in to_v3.stdout
    assert embedded_now(to_v3.stdout) == 0  # no detection, no new files
    assert stored_preset(coll) == "v3" and ids_by_path(coll) == ids
    assert fused(coll).shape == (9, 2 * 64)  # v3: the fake backbone's pooled, both views
    query = lookalike("query", coll, "red/0.png", "--json")
    assert query.returncode == 0, query.stderr
    assert json.loads(query.stdout)["results"][0]["path"].startswith("red/")

    back = lookalike("index", root, "-c", coll, "--preset", "default", *FAKE)
    assert back.returncode == 0, back.stderr
    assert "re-used the stored blocks head.gem, head.avg_g3_s4" in back.stdout
    assert "computed from the images: nothing" in back.stdout
    assert stored_preset(coll) == "default"
    np.testing.assert_allclose(fused(coll), before, atol=1e-5)  # the same vectors again

    # The same settings again: nothing to switch, nothing to do.
    same = lookalike("index", root, "-c", coll, *FAKE)
    assert "settings switched" not in same.stdout and embedded_now(same.stdout) == 0


def test_new_files_after_a_switch_are_embedded_with_the_new_settings(tmp_path):
    root = make_folder(tmp_path / "cards")
    coll = tmp_path / "coll"
    assert lookalike("index", root, "-c", coll, *FAKE).returncode == 0
    (root / "red" / "0.png").rename(root / "red" / "moved.png")
    draw(root / "blue" / "new.png", COLOURS["blue"], seed=123)
    done = lookalike("index", root, "-c", coll, "--preset", "v1", *FAKE)
    assert done.returncode == 0, done.stderr
    assert "preset default -> v1" in done.stdout and embedded_now(done.stdout) == 1
    assert "1 renamed or moved" in done.stdout
    assert fused(coll).shape == (10, 10)  # v1: the fake logits, one row per file


def test_another_detector_means_new_head_crops_and_says_so(shared_dataset, tmp_path):
    cards = shared_dataset("seed-cards")
    coll = tmp_path / "coll"
    fake = ["--backbone", "fake", "-q"]
    first = lookalike("index", cards, "-c", coll, *fake)  # animeface on the real cards
    assert first.returncode == 0, first.stderr
    ids = ids_by_path(coll)
    # The photo preset's detector (its stage-5 backbone option is not the fake one's).
    photo = lookalike("index", cards, "-c", coll, "--detector", "haar", *fake)
    assert photo.returncode == 0, photo.stderr
    assert "preset default -> default; detector changed: new head crops" in (photo.stdout)
    assert "every image is detected and embedded again" in photo.stderr
    assert embedded_now(photo.stdout) == 7 and ids_by_path(coll) == ids
    stored = Collection.open(coll)
    assert stored.config.detector == "haar"
    records = stored.catalog.by_status("ok")
    assert {r.detector for r in records} == {"haar"}
    assert lookalike("query", coll, "saber1.jpg").returncode == 0

"""Repeats cost what changed, nothing more (issue 20, "Slow repeats").

Each step is a `lookalike` process of its own, as a user runs it, with the fake backbone
counting its creations and the images it embeds (printed at exit, read by the test).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.end_to_end.test_pipeline import COLOURS, draw
from tests.indexing.test_renames import FAKE, make_folder

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(autouse=True)
def keep_the_cache(monkeypatch):
    """These tests are of what the cache saves, which collections keep from
    CACHE_MIN_PICTURES pictures on (store/blocks.py): these few keep it too."""
    monkeypatch.setenv("LOOKALIKE_CACHE_MIN_PICTURES", "0")


# `lookalike ARGS...` with the fake backbone's calls counted.
COUNTING = """
import atexit, json, sys
from lookalike.embed.fake import FakeBackbone
calls = {"created": 0, "images": 0}
init, embed = FakeBackbone.__init__, FakeBackbone.embed
def counted_init(self, *args, **kwargs):
    calls["created"] += 1
    init(self, *args, **kwargs)
def counted_embed(self, images, outputs):
    calls["images"] += len(images)
    return embed(self, images, outputs)
FakeBackbone.__init__, FakeBackbone.embed = counted_init, counted_embed
atexit.register(lambda: print("FAKE-CALLS " + json.dumps(calls), file=sys.stderr))
from lookalike.cli import run
sys.argv = ["lookalike", *sys.argv[1:]]
raise SystemExit(run())
"""


def counted(*args: object) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", COUNTING, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    found = re.search(r"^FAKE-CALLS (.*)$", done.stderr, re.M)
    assert found, done.stderr
    return done, json.loads(found.group(1))


def test_a_no_op_index_embeds_nothing_and_says_so(tmp_path):
    root = make_folder(tmp_path / "cards")
    coll = tmp_path / "coll"
    first, calls = counted("index", root, "-c", coll, *FAKE)
    assert first.returncode == 0, first.stderr
    assert calls["images"] > 0 and "images/s" in first.stdout

    again, calls = counted("index", root, "-c", coll, *FAKE)
    assert again.returncode == 0, again.stderr
    assert calls == {"created": 0, "images": 0}  # not even loaded
    assert "nothing changed: 9 pictures" in again.stdout
    assert "images/s" not in again.stdout and "embedded now" not in again.stdout

    # Something changed but nothing to embed: the summary, and no "0.0 images/s".
    (root / "red" / "0.png").unlink()
    removed, calls = counted("index", root, "-c", coll, *FAKE)
    assert removed.returncode == 0, removed.stderr
    assert calls["images"] == 0 and "8 images (0 embedded now" in removed.stdout
    assert "1 removed" in removed.stdout and "images/s" not in removed.stdout


def evaluate(coll: Path, *presets: str) -> tuple[dict, int]:
    chosen = [arg for name in presets for arg in ("--preset", name)]
    done, calls = counted("evaluate", coll, "--labels", "folders", "--json", "-q", *chosen)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), calls["images"]


def test_evaluate_twice_embeds_nothing_the_second_time(tmp_path):
    root = make_folder(tmp_path / "cards")
    coll = tmp_path / "coll"
    assert counted("index", root, "-c", coll, *FAKE)[0].returncode == 0

    # The index pass cached what the default comparison needs: nothing to decode.
    table, images = evaluate(coll)
    assert images == 0 and len(table["presets"]) == 5
    shutil.rmtree(coll / "cache")
    fresh, images = evaluate(coll)
    assert images == 2 * 9 and fresh == table  # v1..v4: both views of every picture, once
    again, images = evaluate(coll)
    assert images == 0 and again == table


def test_a_new_picture_costs_its_own_rows_only(tmp_path):
    root = make_folder(tmp_path / "cards")
    coll = tmp_path / "coll"
    assert counted("index", root, "-c", coll, *FAKE)[0].returncode == 0
    assert evaluate(coll, "photo")[1] == 9  # head.gem_mid: not cached by the index run
    draw(root / "blue" / "new.png", COLOURS["blue"], seed=99)
    assert counted("index", root, "-c", coll, *FAKE)[0].returncode == 0
    grown, images = evaluate(coll, "photo")
    assert images == 1 and grown["presets"][0]["queries"] == 10
    assert evaluate(coll)[1] == 0  # the index run cached the new picture's compared blocks


def test_a_changed_picture_is_computed_again_not_read_from_the_cache(tmp_path):
    root = make_folder(tmp_path / "cards")
    coll = tmp_path / "coll"
    assert counted("index", root, "-c", coll, *FAKE)[0].returncode == 0
    assert evaluate(coll, "photo")[1] == 9  # cached by evaluate
    # The same path (so the same id) with other pixels: its cached rows no longer hold.
    draw(root / "red" / "1.png", COLOURS["green"], seed=1234)
    assert counted("index", root, "-c", coll, *FAKE)[0].returncode == 0
    table, images = evaluate(coll, "photo", "v1")  # v1's whole.logits: cached by the index
    assert images == 1
    shutil.rmtree(coll / "cache")
    fresh, images = evaluate(coll, "photo", "v1")
    assert images == 2 * 9 and fresh == table  # the caches gave what computing gives


def test_a_collection_under_the_cache_threshold_keeps_no_cache_and_scores_alike(
    tmp_path, monkeypatch
):
    """Under CACHE_MIN_PICTURES (1,000) pictures a collection keeps no cache/: `evaluate`
    decodes what it compares each time, with the scores a kept cache gives."""
    monkeypatch.delenv("LOOKALIKE_CACHE_MIN_PICTURES")  # the default
    root = make_folder(tmp_path / "cards")
    coll = tmp_path / "coll"
    assert counted("index", root, "-c", coll, *FAKE)[0].returncode == 0
    assert not (coll / "cache").exists()
    table, images = evaluate(coll)
    assert images == 2 * 9 and not (coll / "cache").exists()
    again, images = evaluate(coll)
    assert images == 2 * 9 and again == table

    monkeypatch.setenv("LOOKALIKE_CACHE_MIN_PICTURES", "9")  # these 9 pictures keep one
    kept, images = evaluate(coll)
    assert images == 2 * 9 and kept == table and list((coll / "cache").rglob("*.npz"))
    assert evaluate(coll) == (table, 0)

    monkeypatch.setenv("LOOKALIKE_CACHE_MIN_PICTURES", "many")
    (coll / "cache").rename(tmp_path / "kept")
    done, _ = counted("evaluate", coll, "--labels", "folders", "-q")
    assert done.returncode == 2
    assert "LOOKALIKE_CACHE_MIN_PICTURES must be a whole number of pictures, not 'many'" in (
        done.stderr
    )

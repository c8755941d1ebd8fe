"""A run that only added pictures adds them to the committed index, keeping the fuser
(issue 16, "incremental adds"); it refits once the collection outgrows the fit by a quarter,
and after a deletion. Each step is a `lookalike` process of its own, with growth.py's
small-collection floor lowered so that 9 pictures count as a large collection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from lookalike.store.collection import Collection
from tests.end_to_end.test_pipeline import draw
from tests.indexing.test_renames import FAKE, make_folder, vectors_by_id

SRC = Path(__file__).resolve().parents[2] / "src"
# `lookalike ARGS...` with refits from 4 fitted rows instead of EXTEND_MIN_ROWS.
SMALL_FLOOR = """
import sys
from lookalike.indexing import growth
growth.EXTEND_MIN_ROWS = 4
from lookalike.cli import run
sys.argv = ["lookalike", *sys.argv[1:]]
raise SystemExit(run())
"""


def lookalike(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SMALL_FLOOR, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=120,
    )


def index(root: Path, coll: Path) -> None:
    done = lookalike("index", root, "-c", coll, *FAKE)
    assert done.returncode == 0, done.stderr


def fitted_rows(coll: Path) -> int:
    gen = Collection.open(coll).require_generation()
    with np.load(gen.path / "fuser.npz") as data:
        return json.loads(bytes(data["meta"]).decode())["fitted_rows"]


def test_added_pictures_join_the_committed_index_until_a_refit_is_due(tmp_path):
    root = make_folder(tmp_path / "cards")  # 9 pictures
    coll = tmp_path / "coll"
    index(root, coll)
    assert fitted_rows(coll) == 9
    before = vectors_by_id(coll)

    draw(root / "red" / "new.png", (250, 30, 30), seed=99)
    draw(root / "blue" / "new.png", (30, 30, 250), seed=98)
    index(root, coll)  # 11 <= 1.25 x 9: grown in place
    gen = Collection.open(coll).require_generation()
    assert fitted_rows(coll) == 9 and gen.index().count == len(gen.ids) == 11
    after = vectors_by_id(coll)
    for item, vector in before.items():  # the stored rows are kept, not fused again
        np.testing.assert_array_equal(after[item], vector)
    assert list(gen.ids[:9]) == list(before)  # the new rows follow the committed ones

    # A new process finds a new picture through the grown index, and asks with one.
    found = lookalike("query", coll, "blue/1.png", "-k", "3", "--json")
    assert found.returncode == 0, found.stderr
    assert "blue/new.png" in [r["path"] for r in json.loads(found.stdout)["results"]]
    asked = lookalike("query", coll, "blue/new.png", "-k", "2", "--json")
    assert asked.returncode == 0, asked.stderr
    assert {r["path"] for r in json.loads(asked.stdout)["results"]} <= {
        "blue/0.png",
        "blue/1.png",
        "blue/2.png",
    }

    draw(root / "green" / "new.png", (30, 250, 30), seed=97)
    index(root, coll)  # 12 > 1.25 x 9: refitted on every row
    assert fitted_rows(coll) == 12

    (root / "red" / "0.png").unlink()
    index(root, coll)  # a deletion: refitted
    assert fitted_rows(coll) == 11
    assert Collection.open(coll).require_generation().index().count == 11


def test_exact_search_keeps_one_copy_of_the_fused_vectors(tmp_path):
    """The exact index's file holds the very vectors of fused.npy: a hard link to it, not
    a second copy on disk (issue 16, "store little")."""
    root = make_folder(tmp_path / "cards")
    coll = tmp_path / "coll"
    index(root, coll)
    gen = Collection.open(coll).require_generation()
    fused, exact = gen.path / "fused.npy", gen.path / "index" / "exact.npy"
    assert fused.stat().st_ino == exact.stat().st_ino and fused.stat().st_nlink == 2
    found = lookalike("query", coll, "red/1.png", "-k", "2", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["results"][0]["path"].startswith("red/")

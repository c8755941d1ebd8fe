"""Renamed and moved files keep their ids and vectors (issue 19, item 4).

Each step runs as a user runs it: `lookalike index` in its own process, then the next one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from lookalike.store.collection import Collection
from tests.end_to_end.test_pipeline import COLOURS, draw

FAKE = ["--backbone", "fake", "--detector", "none", "-q"]


def lookalike(*args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    return subprocess.run(
        [sys.executable, "-m", "lookalike", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def embedded_now(out: str) -> int:
    if re.search(r"^nothing changed: \d+ pictures", out, re.M):  # a run with nothing to do
        return 0
    return int(re.search(r"\((\d+) embedded now", out).group(1))


def ids_by_path(coll: Path) -> dict[str, int]:
    collection = Collection.open(coll)
    return {r.path: r.id for r in collection.catalog.by_status("ok")}


def vectors_by_id(coll: Path) -> dict[int, np.ndarray]:
    gen = Collection.open(coll).require_generation()
    fused = np.asarray(gen.fused())
    return {int(i): fused[row] for row, i in enumerate(gen.ids)}


def make_folder(root: Path) -> Path:
    for name, colour in COLOURS.items():
        for i in range(3):
            draw(root / name / f"{i}.png", colour, seed=i * 7 + len(name))
    return root


def test_renamed_and_moved_files_keep_their_ids_and_are_not_embedded(tmp_path):
    root = make_folder(tmp_path / "cards")
    coll = tmp_path / "coll"
    first = lookalike("index", root, "-c", coll, *FAKE)
    assert first.returncode == 0, first.stderr
    assert embedded_now(first.stdout) == 9
    before = ids_by_path(coll)

    (root / "red" / "0.png").rename(root / "red" / "renamed.png")
    (root / "archive").mkdir()
    (root / "blue" / "1.png").rename(root / "archive" / "old-blue.png")
    os.utime(root / "green" / "2.png")  # touched: same bytes, new mtime
    again = lookalike("index", root, "-c", coll, *FAKE)
    assert again.returncode == 0, again.stderr
    assert embedded_now(again.stdout) == 0
    assert "2 renamed or moved" in again.stdout and "0 removed" in again.stdout

    after = ids_by_path(coll)
    assert after["red/renamed.png"] == before["red/0.png"]
    assert after["archive/old-blue.png"] == before["blue/1.png"]
    assert after["green/2.png"] == before["green/2.png"]
    assert "red/0.png" not in after and len(after) == 9
    # A query by the new name answers with the stored vector.
    query = lookalike("query", coll, "red/renamed.png", "--json")
    assert query.returncode == 0, query.stderr
    assert '"query_id": ' + str(before["red/0.png"]) in query.stdout


def test_a_copy_is_a_new_item_and_a_changed_file_is_embedded_again(tmp_path):
    root = make_folder(tmp_path / "cards")
    coll = tmp_path / "coll"
    assert lookalike("index", root, "-c", coll, *FAKE).returncode == 0
    before = ids_by_path(coll)
    shutil.copy(root / "red" / "1.png", root / "red" / "copy.png")  # the original stays
    draw(root / "blue" / "0.png", COLOURS["green"], seed=99)  # new bytes under the old name
    again = lookalike("index", root, "-c", coll, *FAKE)
    assert again.returncode == 0, again.stderr
    assert embedded_now(again.stdout) == 2
    after = ids_by_path(coll)
    assert after["red/1.png"] == before["red/1.png"]
    assert after["red/copy.png"] not in before.values()


def test_a_moved_folder_is_accepted_with_moved_from(tmp_path):
    root = make_folder(tmp_path / "cards")
    coll = tmp_path / "coll"
    assert lookalike("index", root, "-c", coll, *FAKE).returncode == 0
    before, vectors = ids_by_path(coll), vectors_by_id(coll)
    moved = tmp_path / "cards_moved"
    root.rename(moved)

    refused = lookalike("index", moved, "-c", coll, *FAKE)
    assert refused.returncode == 2
    assert f"--moved-from {root}" in refused.stderr  # the message says how to accept it
    wrong = lookalike("index", moved, "-c", coll, "--moved-from", tmp_path / "elsewhere", *FAKE)
    assert wrong.returncode == 2 and "not that folder" in wrong.stderr

    accepted = lookalike("index", moved, "-c", coll, "--moved-from", root, *FAKE)
    assert accepted.returncode == 0, accepted.stderr
    assert "folder moved" in accepted.stdout and embedded_now(accepted.stdout) == 0
    assert Collection.open(coll).root == moved.resolve()
    assert ids_by_path(coll) == before
    assert all(np.array_equal(vectors[i], v) for i, v in vectors_by_id(coll).items())
    # Later runs need no option, and queries by path find the files in the new place.
    assert embedded_now(lookalike("index", moved, "-c", coll, *FAKE).stdout) == 0
    query = lookalike("query", coll, moved / "green" / "0.png", "--json")
    assert query.returncode == 0 and f'"query_id": {before["green/0.png"]}' in query.stdout

"""The SQLite catalog (lookalike.store.catalog): one row per file seen under the root."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lookalike.errors import CollectionError
from lookalike.store.catalog import Catalog, FileRecord

REPO = Path(__file__).resolve().parents[2]


def record(path: str, status: str = "ok", **fields: object) -> FileRecord:
    """A row with plausible sizes; `fields` override any column."""
    values: dict = {"size": 100, "mtime_ns": 1_000, "sha256": f"sha-{path}", "width": 48}
    values.update(height=64, detector="none")
    values.update(fields)
    return FileRecord(path=path, status=status, **values)


def filled(path: Path) -> Catalog:
    """A writable catalog with two good pictures and one that failed to decode."""
    catalog = Catalog(path)
    catalog.upsert(
        [
            record("b/2.png", faces=[{"box": [1, 2, 3, 4], "score": 0.9}], head_box=(0, 0, 8, 8)),
            record("a/1.png", fallback=True, head_box=(1, 2, 30, 40)),
            record("c/bad.jpg", "error", error="cannot identify image file", sha256=None),
        ]
    )
    return catalog


def test_upsert_fills_in_ids_and_every_field_reads_back(tmp_path: Path) -> None:
    catalog = filled(tmp_path / "catalog.sqlite")
    assert catalog.created
    rec = catalog.by_path("b/2.png")
    assert rec is not None and isinstance(rec.id, int)
    assert rec == record(
        "b/2.png",
        id=rec.id,
        faces=[{"box": [1, 2, 3, 4], "score": 0.9}],
        head_box=(0, 0, 8, 8),
    )
    fallback = catalog.by_path("a/1.png")
    assert fallback is not None and fallback.fallback is True and fallback.faces == []
    assert fallback.head_box == (1, 2, 30, 40)  # a tuple again, not the stored JSON list
    assert catalog.by_path("nowhere.png") is None


def test_upsert_of_a_known_path_updates_the_row_and_keeps_its_id(tmp_path: Path) -> None:
    catalog = filled(tmp_path / "catalog.sqlite")
    first = catalog.by_path("a/1.png")
    assert first is not None
    changed = record("a/1.png", size=555, sha256="other", fallback=False)
    catalog.upsert([changed])
    assert changed.id == first.id
    again = catalog.by_path("a/1.png")
    assert again is not None and (again.size, again.sha256, again.fallback) == (555, "other", False)
    assert again.head_box is None  # the whole row is replaced, not merged
    assert len(catalog.all()) == 3


def test_rows_are_listed_by_path_and_looked_up_by_status_id_and_digest(tmp_path: Path) -> None:
    catalog = filled(tmp_path / "catalog.sqlite")
    everything = catalog.all()
    assert [r.path for r in everything] == ["a/1.png", "b/2.png", "c/bad.jpg"]
    assert [r.path for r in catalog.by_status("ok")] == ["a/1.png", "b/2.png"]
    ids = {r.path: r.id for r in everything}
    found = catalog.get_many([ids["c/bad.jpg"], ids["a/1.png"], 999_999])
    assert set(found) == {ids["c/bad.jpg"], ids["a/1.png"]}  # an unknown id is left out
    assert found[ids["a/1.png"]].path == "a/1.png"
    assert [r.path for r in catalog.by_sha256("sha-b/2.png")] == ["b/2.png"]


def test_get_many_answers_for_more_ids_than_one_statement_takes(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite")
    catalog.upsert([record(f"{n:04d}.png") for n in range(1203)])
    ids = [r.id for r in catalog.all()]
    found = catalog.get_many(reversed(ids))  # any iterable, in chunks of 500
    assert sorted(found) == sorted(ids)
    assert found[ids[1202]].path == "1202.png"


def test_by_sha256_finds_only_pictures_that_were_indexed(tmp_path: Path) -> None:
    catalog = filled(tmp_path / "catalog.sqlite")
    catalog.upsert([record("copy.png", sha256="sha-a/1.png"), record("x", "error", sha256="s")])
    assert sorted(r.path for r in catalog.by_sha256("sha-a/1.png")) == ["a/1.png", "copy.png"]
    assert catalog.by_sha256("s") == []  # the same bytes, but it failed: never a match


def test_errors_are_recorded_with_their_reason_and_counted(tmp_path: Path) -> None:
    catalog = filled(tmp_path / "catalog.sqlite")
    [bad] = catalog.by_status("error")
    assert (bad.path, bad.error, bad.sha256) == ("c/bad.jpg", "cannot identify image file", None)
    assert bad.to_json()["error"] == "cannot identify image file"
    assert catalog.counts() == {"ok": 2, "error": 1}
    # A file that decodes later becomes a good row, its error gone.
    catalog.upsert([record("c/bad.jpg")])
    assert catalog.counts() == {"ok": 3}
    assert catalog.by_path("c/bad.jpg").error is None  # type: ignore[union-attr]


def test_move_gives_a_row_its_new_path_and_keeps_its_id(tmp_path: Path) -> None:
    catalog = filled(tmp_path / "catalog.sqlite")
    old = catalog.by_path("a/1.png")
    assert old is not None and old.id is not None
    catalog.move([(old.id, record("renamed/1.png", size=7, mtime_ns=8))])
    assert catalog.by_path("a/1.png") is None
    new = catalog.by_path("renamed/1.png")
    assert new is not None and (new.id, new.size, new.mtime_ns) == (old.id, 7, 8)
    assert new.sha256 == old.sha256 and new.head_box == old.head_box  # the rest stays


def test_delete_paths_removes_only_those_rows(tmp_path: Path) -> None:
    catalog = filled(tmp_path / "catalog.sqlite")
    catalog.delete_paths(["a/1.png", "not/there.png"])
    assert [r.path for r in catalog.all()] == ["b/2.png", "c/bad.jpg"]


def test_face_counts_bins_the_good_pictures_by_their_faces(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite")
    face = {"box": [0, 0, 1, 1]}
    catalog.upsert(
        [record(f"{n}.png", faces=[face] * n) for n in range(5)]
        + [record("err.png", "error", faces=[face])]  # not indexed: not counted
    )
    assert catalog.face_counts() == {"0": 1, "1": 1, "2": 1, "3+": 2}


def test_listed_gives_what_a_result_shows_as_get_many_reads_it(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite")
    face = {"box": [0, 0, 8, 8], "score": 0.9}
    rows = [
        record(f"{n:04d}.png", width=10 + n, fallback=n % 2 == 0, faces=[face] * (n % 3))
        for n in range(1203)
    ]
    catalog.upsert([*rows, record("caf\udce9.png", sha256="e9")])
    ids = [r.id for r in catalog.all()]
    full, listed = catalog.get_many(ids), catalog.listed(reversed(ids))
    assert sorted(listed) == sorted(ids)  # in chunks of 500, any order
    for i in ids:
        rec = full[i]
        want = (rec.id, rec.path, rec.width, rec.height, rec.fallback, len(rec.faces))
        assert listed[i] == want
    assert {listed[i].path for i in ids} >= {"caf\udce9.png", "1202.png"}


def test_a_name_that_is_not_utf8_is_stored_as_bytes_and_read_back(tmp_path: Path) -> None:
    name = "caf\udce9.png"  # byte 0xE9 of a Latin-1 name, as os.listdir gives it
    catalog = Catalog(tmp_path / "catalog.sqlite")
    catalog.upsert([record(name, sha256="e9")])
    rec = catalog.by_path(name)
    assert rec is not None and rec.path == name
    stored = sqlite3.connect(tmp_path / "catalog.sqlite").execute("SELECT path FROM files")
    assert stored.fetchone()[0] == b"caf\xe9.png"


def test_the_rows_are_there_for_another_process_after_close(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    filled(path).close()
    # Closing leaves WAL mode: a reader needs the file alone, no -wal or -shm beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.sqlite"]
    script = (
        "import json, sys; from lookalike.store.catalog import Catalog; "
        "c = Catalog(sys.argv[1], readonly=True); "
        "print(json.dumps([c.counts(), [r.path for r in c.all()]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert done.returncode == 0, done.stderr
    counts, paths = json.loads(done.stdout)
    assert counts == {"ok": 2, "error": 1}
    assert paths == ["a/1.png", "b/2.png", "c/bad.jpg"]


def test_reopening_for_writing_keeps_the_rows_and_is_not_created_again(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    filled(path).close()
    again = Catalog(path)
    assert not again.created
    assert again.counts() == {"ok": 2, "error": 1}
    again.close()


def test_a_reader_cannot_write_and_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    filled(path).close()
    before = path.read_bytes()
    reader = Catalog(path, readonly=True)
    assert reader.counts() == {"ok": 2, "error": 1}
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.upsert([record("new.png")])
    reader.close()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.sqlite"]


def test_a_reader_of_a_missing_catalog_is_told_to_index_and_nothing_is_made(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.sqlite"
    with pytest.raises(CollectionError, match="the catalog is missing; run `redo` to make it"):
        Catalog(path, readonly=True, repair="`redo`")
    assert not path.exists()


def test_a_reader_of_an_empty_catalog_says_so(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    path.write_bytes(b"")
    with pytest.raises(CollectionError, match=re.escape(f"{path}: the catalog is empty")):
        Catalog(path, readonly=True)


@pytest.mark.parametrize("readonly", [False, True], ids=["writer", "reader"])
def test_a_damaged_catalog_is_a_collection_error_naming_it(tmp_path: Path, readonly: bool) -> None:
    path = tmp_path / "catalog.sqlite"
    path.write_bytes(b"this is not a database, only some text " * 100)
    with pytest.raises(CollectionError) as raised:
        Catalog(path, readonly=readonly, repair="`redo`")
    message = str(raised.value)
    assert message.startswith(f"{path}: damaged catalog (")
    assert message.endswith("delete it and run `redo` again (every image is embedded again)")


def test_a_folder_where_the_catalog_belongs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    path.mkdir()
    for readonly in (False, True):
        with pytest.raises(CollectionError, match="a folder, not the catalog"):
            Catalog(path, readonly=readonly)


def test_to_json_lists_the_public_fields(tmp_path: Path) -> None:
    rec = filled(tmp_path / "catalog.sqlite").by_path("a/1.png")
    assert rec is not None
    out = rec.to_json()
    assert out["head_box"] == [1, 2, 30, 40] and out["fallback"] is True
    assert set(out) == {
        *("id", "path", "status", "error", "sha256", "size", "width", "height"),
        *("detector", "faces", "head_box", "fallback"),
    }
    json.dumps(out)  # plain JSON types only

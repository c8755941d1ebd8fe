"""`lookalike export` and the query JSON's fields for other tools (issue 19, item 6)."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest

from lookalike.errors import LookalikeError
from lookalike.store.export import export_collection
from tests.indexing.test_renames import FAKE, lookalike


@pytest.fixture(scope="module")
def orl_coll(tmp_path_factory, shared_dataset):
    """3 people x 4 real photos of ORL, indexed with the fake backbone in another process."""
    orl = shared_dataset("orl-faces-dev")
    root = tmp_path_factory.mktemp("orl") / "faces"
    for person in ("s1", "s2", "s3"):
        (root / person).mkdir(parents=True)
        for image in sorted((orl / person).glob("*.pgm"))[:4]:
            (root / person / image.name).symlink_to(image)
    coll = root.parent / "coll"
    done = lookalike("index", root, "-c", coll, *FAKE)
    assert done.returncode == 0, done.stderr
    return root, coll


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_export_has_a_row_per_vector_with_sizes_faces_and_labels(orl_coll, tmp_path):
    root, coll = orl_coll
    out = tmp_path / "out"
    done = lookalike("export", coll, "--out", out, "--format", "csv", "--labels", "folders")
    assert done.returncode == 0, done.stderr
    assert "exported 12 items" in done.stdout
    vectors = np.load(out / "img_emb" / "img_emb_0.npy")
    ids = np.load(out / "ids.npy")
    rows = read_csv(out / "metadata" / "metadata_0.csv")
    assert vectors.shape[0] == len(ids) == len(rows) == 12
    assert [int(r["id"]) for r in rows] == ids.tolist()
    # Unit vectors, as stored: rounded to float16 (vectors.as_stored).
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-3)
    for row in rows:
        assert row["label_character"] == row["path"].split("/")[0]
        assert (int(row["width"]), int(row["height"])) == (23, 28)  # ORL photos as stored
        assert int(row["bytes"]) == (root / row["path"]).stat().st_size
        assert json.loads(row["faces"]) == [] and row["n_faces"] == "0"  # detector none
        assert row["root"] == str(root.resolve())
    # A row's vector is the one `query` scores with: the nearest row is the first result.
    first = lookalike("query", coll, rows[0]["path"], "--json", "-k", "1")
    best = json.loads(first.stdout)["results"][0]
    sims = vectors @ vectors[0]
    sims[0] = -np.inf
    assert int(rows[int(np.argmax(sims))]["id"]) == best["id"]


def test_parquet_export_reads_back_with_pyarrow(orl_coll, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    _, coll = orl_coll
    done = lookalike("export", coll, "--out", tmp_path / "out", "--format", "parquet")
    assert done.returncode == 0, done.stderr
    table = pq.read_table(tmp_path / "out" / "metadata" / "metadata_0.parquet")
    assert table.num_rows == 12
    assert {"id", "path", "width", "height", "bytes", "faces", "head_x0"} <= set(table.column_names)
    assert not any(name.startswith("label_") for name in table.column_names)  # no --labels


def test_npy_export_writes_only_the_vectors_and_ids(orl_coll, tmp_path):
    _, coll = orl_coll
    assert lookalike("export", coll, "--out", tmp_path / "o", "--format", "npy").returncode == 0
    assert not (tmp_path / "o" / "metadata").exists()
    assert len(np.load(tmp_path / "o" / "ids.npy")) == 12


def test_parquet_without_pyarrow_says_what_to_install(orl_coll, tmp_path, monkeypatch):
    _, coll = orl_coll
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    with pytest.raises(LookalikeError, match=r"lookalike\[export\]"):
        export_collection(coll, tmp_path / "out", "parquet")
    assert not (tmp_path / "out").exists()  # refused before anything is written
    export_collection(coll, tmp_path / "out", "csv")  # CSV needs nothing more


def test_query_json_carries_root_sizes_and_view_scores(orl_coll):
    root, coll = orl_coll
    done = lookalike("query", coll, "s1/1.pgm", "--json", "-k", "3")
    answer = json.loads(done.stdout)
    assert answer["root"] == str(root.resolve()) and answer["found"] == 3
    for result in answer["results"]:
        assert (result["width"], result["height"]) == (23, 28)
        assert set(result["scores"]) == {"fused", "head", "whole"}
        assert result["scores"]["fused"] == result["score"]


def test_more_results_asked_than_the_collection_has(shared_dataset, tmp_path):
    cards = shared_dataset("seed-cards")
    coll = tmp_path / "coll"
    assert lookalike("index", cards, "-c", coll, *FAKE).returncode == 0
    first = sorted(p.name for p in cards.iterdir() if p.suffix in {".jpg", ".png"})[0]
    table = lookalike("query", coll, first, "-k", "100")
    assert table.returncode == 0, table.stderr
    assert "found 6 of the 100 results asked: the collection has 7 images and the query is " in (
        table.stdout
    )
    answer = json.loads(lookalike("query", coll, first, "-k", "100", "--json").stdout)
    assert answer["k"] == 100 and answer["found"] == 6 and len(answer["results"]) == 6
    assert answer["notes"][0].startswith("found 6 of the 100")

"""The Milvus store, on embedded Milvus Lite files (no server), with the fake backbone."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from lookalike.cli import main
from lookalike.config import IndexConfig, get_preset
from lookalike.errors import LookalikeError
from lookalike.index import create_index
from lookalike.index.milvus_index import MilvusIndex, _client, store_params
from lookalike.indexing.indexer import Indexer
from lookalike.search.searcher import Searcher
from lookalike.store.collection import Collection

COLOURS = {"red": (200, 30, 40), "green": (40, 180, 60), "blue": (30, 60, 200)}


def draw(path, colour, seed):
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.integers(-40, 40, size=(40, 32, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    for n, (name, colour) in enumerate(COLOURS.items()):
        for i in range(6):
            draw(root / name / f"{i}.png", colour, seed=10 * n + i)
    return root


def config(index: IndexConfig):
    default = get_preset("default")
    # Without the dense reduction (a PCA fitted on the data): a store keeps its first fuser,
    # so only a preset that fits nothing answers exactly as a fresh exact collection does.
    fusion = dataclasses.replace(default.fusion, out_dim=None)
    return default.with_options(backbone="fake", detector="none", index=index, fusion=fusion)


def run(folder, coll, index: IndexConfig):
    return Indexer(folder, coll, config(index), progress=False, batch_size=5).run()


def milvus(tmp_path, coll):
    return IndexConfig("milvus", store_params(f"milvus:{tmp_path / 'store.db'}", coll))


def answers(coll, k=5):
    searcher = Searcher(coll)
    return {
        rec.path: [(m.path, round(m.score, 5)) for m in searcher.query(rec.path, k).matches]
        for rec in searcher.collection.catalog.by_status("ok")
    }


def stored(index_config: IndexConfig) -> dict[int, dict]:
    """What the live Milvus collection holds: id -> path, head box, fallback."""
    index = MilvusIndex(**index_config.params)
    client = _client(index.params["uri"])
    rows = client.query(
        index.params["collection"], filter="id >= 0", output_fields=["path", "head_box"]
    )
    return {int(r["id"]): r for r in rows}


def test_store_spec_names_a_lite_file_or_a_server(tmp_path):
    lite = store_params("milvus:x/store.db", tmp_path / "my coll")
    assert lite["uri"].endswith("x/store.db") and lite["uri"].startswith("/")
    assert lite["collection"] == "lookalike_my_coll"
    assert store_params("milvus://db.example:19530", tmp_path)["uri"] == "http://db.example:19530"
    with pytest.raises(LookalikeError, match="milvus:PATH"):
        store_params("postgres://x", tmp_path)


def test_query_results_equal_the_exact_search_of_the_local_collection(folder, tmp_path):
    run(folder, tmp_path / "exact", IndexConfig("exact", {}))
    coll = tmp_path / "coll"
    summary = run(folder, coll, milvus(tmp_path, coll))
    assert summary.total_indexed == 18
    assert answers(coll) == answers(tmp_path / "exact")
    gen = Collection.open(coll).generation()
    rows = stored(milvus(tmp_path, coll))
    assert sorted(rows) == sorted(gen.ids.tolist())
    catalog = Collection.open(coll).catalog.get_many(rows)
    assert all(rows[i]["path"] == catalog[i].path for i in rows)
    assert all(list(rows[i]["head_box"]) == list(catalog[i].head_box) for i in rows)


def test_a_second_run_sends_only_inserts_and_deletes(folder, tmp_path, monkeypatch):
    coll = tmp_path / "coll"
    index = milvus(tmp_path, coll)
    run(folder, coll, index)
    first_fuser = (Collection.open(coll).generation().path / "fuser.npz").read_bytes()
    (folder / "red" / "0.png").unlink()
    draw(folder / "red" / "new.png", COLOURS["red"], seed=99)
    draw(folder / "green" / "new.png", COLOURS["green"], seed=98)
    sent, deleted = [], []
    real_write = MilvusIndex._write

    def spy_write(self, client, name, ids, data, rows, metadata, upsert):
        sent.extend(int(ids[r]) for r in rows)
        return real_write(self, client, name, ids, data, rows, metadata, upsert)

    monkeypatch.setattr(MilvusIndex, "_write", spy_write)
    import pymilvus

    real_delete = pymilvus.MilvusClient.delete
    monkeypatch.setattr(
        pymilvus.MilvusClient,
        "delete",
        lambda self, name, ids, **kw: deleted.extend(ids) or real_delete(self, name, ids=ids, **kw),
    )
    old_id = Collection.open(coll).catalog.by_path("red/0.png").id
    summary = run(folder, coll, index)
    assert (summary.embedded, summary.deleted, summary.total_indexed) == (2, 1, 19)
    catalog = Collection.open(coll).catalog
    new_ids = {catalog.by_path(p).id for p in ("red/new.png", "green/new.png")}
    assert set(sent) == new_ids and deleted == [old_id]
    gen = Collection.open(coll).generation()
    assert sorted(stored(index)) == sorted(gen.ids.tolist())
    assert (gen.path / "fuser.npz").read_bytes() == first_fuser  # fitted once, kept
    run(folder, tmp_path / "exact", IndexConfig("exact", {}))
    assert answers(coll) == answers(tmp_path / "exact")


@pytest.mark.parametrize(("index_type", "extra"), [("HNSW", {}), ("IVF_FLAT", {"nlist": 16})])
def test_recall_at_10_against_exact_search(tmp_path, index_type, extra):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 64))
    vectors = (centres[rng.integers(0, 40, 3000)] + 0.6 * rng.normal(size=(3000, 64))).astype(
        np.float32
    )
    queries = vectors[:200] + 0.1 * rng.normal(size=(200, 64)).astype(np.float32)
    uri = str(tmp_path / "recall.db")
    approx = create_index("milvus", uri=uri, index_type=index_type, **extra)
    approx.build(vectors)
    exact = create_index("exact")
    exact.build(vectors)
    found, sims = approx.query(queries, 10)
    truth, true_sims = exact.query(queries, 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.99
    assert np.allclose(sims[:, 0], true_sims[:, 0], atol=1e-4)
    # Saved and loaded (by a query process), it answers the same.
    approx.save(tmp_path / "saved")
    again = MilvusIndex.load(tmp_path / "saved", 64)
    assert np.array_equal(again.query(queries, 10)[0], found)


def test_cli_index_with_store_then_query(folder, tmp_path, capsys):
    coll = tmp_path / "coll"
    store = f"milvus:{tmp_path / 'cli.db'}"
    args = ["index", str(folder), "-c", str(coll), "-q", "--backbone", "fake"]
    assert main([*args, "--detector", "none", "--store", store]) == 0
    assert Collection.open(coll).config.index.backend == "milvus"
    capsys.readouterr()
    assert main(["query", str(coll), "blue/1.png", "--json", "-k", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["path"].split("/")[0] for r in result["results"]] == ["blue"] * 3

"""End to end on small generated folders, with the fake backbone (no weights)."""

import json
import zlib

import numpy as np
import pytest
from PIL import Image

from lookalike.cli import main
from lookalike.config import get_preset
from lookalike.errors import CollectionError, QueryError
from lookalike.indexing.indexer import Indexer
from lookalike.search.searcher import Searcher
from lookalike.store.collection import Collection

COLOURS = {"red": (200, 30, 40), "green": (40, 180, 60), "blue": (30, 60, 200)}


def draw(path, colour, seed):
    rng = np.random.default_rng(seed)
    pixels = np.empty((64, 48, 3), np.uint8)
    pixels[:] = colour
    noise = rng.integers(-25, 25, size=pixels.shape)
    pixels = np.clip(pixels.astype(int) + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    for name, colour in COLOURS.items():
        for i in range(5):
            # A seed of the name and number, the same in every process (hash() is salted per
            # process unless PYTHONHASHSEED is set).
            draw(root / name / f"{i}.png", colour, seed=zlib.crc32(f"{name}/{i}".encode()) % 1000)
    return root


def fake_config(preset="default"):
    return get_preset(preset).with_options(backbone="fake", detector="none")


def index(folder, coll, preset="default", **kw):
    return Indexer(folder, coll, fake_config(preset), progress=False, **kw).run()


def test_index_then_query_finds_the_same_colour_and_never_itself(folder, tmp_path):
    coll = tmp_path / "coll"
    summary = index(folder, coll)
    assert summary.total_indexed == 15 and summary.embedded == 15 and not summary.skipped
    assert summary.fallbacks == 15  # detector 'none': every head view is the fallback
    result = Searcher(coll).query("red/0.png", k=4)
    assert [m.path.split("/")[0] for m in result.matches] == ["red"] * 4
    assert "red/0.png" not in [m.path for m in result.matches]
    scores = [m.score for m in result.matches]
    assert scores == sorted(scores, reverse=True)


def test_query_with_an_outside_image_and_with_an_indexed_file(folder, tmp_path):
    coll = tmp_path / "coll"
    index(folder, coll)
    outside = tmp_path / "q.png"
    draw(outside, COLOURS["blue"], seed=99)
    searcher = Searcher(coll)
    result = searcher.query(str(outside), k=3)
    assert result.query_id is None
    assert all(m.path.startswith("blue/") for m in result.matches)
    inside = searcher.query(str(folder / "green" / "1.png"), k=3)
    assert inside.query_id is not None
    assert "green/1.png" not in [m.path for m in inside.matches]


def test_second_run_processes_only_new_changed_and_deleted(folder, tmp_path):
    coll = tmp_path / "coll"
    index(folder, coll)
    again = index(folder, coll)
    assert again.embedded == 0 and again.unchanged == 15 and not again.committed
    (folder / "red" / "0.png").unlink()
    draw(folder / "red" / "new.png", COLOURS["red"], seed=5)
    draw(folder / "blue" / "1.png", COLOURS["green"], seed=6)  # changed content
    third = index(folder, coll)
    assert (third.embedded, third.deleted, third.total_indexed) == (2, 1, 15)
    searcher = Searcher(coll)
    paths = {r.path for r in searcher.collection.catalog.all()}
    assert "red/0.png" not in paths and "red/new.png" in paths
    moved = searcher.query("blue/1.png", k=4)
    assert sum(m.path.startswith("green/") for m in moved.matches) >= 3


def test_an_interrupted_run_resumes_to_the_same_result(folder, tmp_path, monkeypatch):
    reference = tmp_path / "ref"
    index(folder, reference, batch_size=4)
    interrupted = tmp_path / "int"
    from lookalike.store import staging

    calls = {"n": 0}
    real_write = staging.Staging.write

    def dying_write(self, ids, blocks):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_write(self, ids, blocks)

    monkeypatch.setattr(staging.Staging, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        index(folder, interrupted, batch_size=4)
    monkeypatch.setattr(staging.Staging, "write", real_write)
    with pytest.raises(CollectionError, match="no committed index yet"):
        Searcher(interrupted)
    resumed = index(folder, interrupted, batch_size=4)
    assert resumed.embedded == 7  # two batches of 4 were kept, 15 - 8 remain
    a, b = Searcher(reference), Searcher(interrupted)
    for path in ["red/1.png", "green/2.png", "blue/3.png"]:
        assert [m.path for m in a.query(path).matches] == [m.path for m in b.query(path).matches]
        ra = a.query(path).matches
        rb = b.query(path).matches
        assert np.allclose([m.score for m in ra], [m.score for m in rb], atol=1e-5)


def test_bad_files_are_recorded_and_the_rest_indexed(folder, tmp_path):
    (folder / "red" / "broken.jpg").write_bytes(b"<html>not an image</html>")
    (folder / "empty.png").write_bytes(b"")
    coll = tmp_path / "coll"
    summary = index(folder, coll)
    assert summary.total_indexed == 15
    assert {p for p, _ in summary.skipped} == {"red/broken.jpg", "empty.png"}
    errors = {r.path: r.error for r in Collection.open(coll).catalog.by_status("error")}
    assert set(errors) == {"red/broken.jpg", "empty.png"}
    assert all(errors.values())


def test_other_settings_on_an_existing_collection_switch_it(folder, tmp_path):
    coll = tmp_path / "coll"
    index(folder, coll)
    switched = index(folder, coll, preset="v1")  # tests/indexing/test_switch.py: what is re-used
    assert switched.switch is not None and switched.switch.new_preset == "v1"
    assert Collection.open(coll).config == fake_config("v1")


def test_a_folder_that_is_not_a_collection_is_refused(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(CollectionError, match="not a lookalike collection"):
        Collection.open(tmp_path / "x")


def test_unknown_query_is_a_clear_error(folder, tmp_path):
    coll = tmp_path / "coll"
    index(folder, coll)
    with pytest.raises(QueryError, match="not an image file"):
        Searcher(coll).query("nope.png")


def test_cli_index_query_info_evaluate(folder, tmp_path, capsys):
    coll = tmp_path / "coll"
    (folder / "bad.jpg").write_bytes(b"garbage")
    code = main(
        ["index", str(folder), "-c", str(coll), "--backbone", "fake", "--detector", "none", "-q"]
    )
    assert code == 1  # finished, but skipped a file
    capsys.readouterr()
    assert (
        main(
            [
                "query",
                str(coll),
                "red/2.png",
                "-k",
                "3",
                "--json",
                "--sheet",
                str(tmp_path / "s.png"),
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert len(out["results"]) == 3 and all(r["path"].startswith("red/") for r in out["results"])
    assert Image.open(tmp_path / "s.png").size[0] > 0
    assert main(["info", str(coll), "--errors"]) == 0
    assert "bad.jpg" in capsys.readouterr().out
    assert main(["info", str(coll), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    indexed = info["catalog"]["ok"]
    assert info["faces_per_picture"] == {"0": indexed, "1": 0, "2": 0, "3+": 0}  # detector none
    assert info["index_chosen"]["backend"] == "exact"  # `auto` on a few pictures
    assert main(["info", str(coll)]) == 0
    assert "index:      auto {} -> exact search (up to 10000 items)" in capsys.readouterr().out
    assert (
        main(
            [
                "evaluate",
                str(coll),
                "--labels",
                "folders",
                "--json",
                "-q",
                "--preset",
                "default",
                "--preset",
                "v1",
            ]
        )
        == 0
    )
    table = json.loads(capsys.readouterr().out)
    by_preset = {p["preset"]: p for p in table["presets"]}
    assert by_preset["default"]["precision_at_k"] == 1.0
    assert 0 <= by_preset["v1"]["ann_recall_at_k"] <= 1
    assert main(["evaluate", str(coll), "--labels", "folders", "-q", "--per-label"]) == 0
    per_label = capsys.readouterr().out.split("default, per label:")[1]
    assert "| red |" in per_label and "| label | queries | P@4 |" in per_label


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lookalike: error:") and "Traceback" not in err


def test_decoding_in_worker_processes_gives_the_same_collection(folder, tmp_path):
    threads = tmp_path / "threads"
    processes = tmp_path / "processes"
    index(folder, threads, batch_size=2)
    Indexer(
        folder, processes, fake_config(), progress=False, batch_size=2, processes=True, workers=2
    ).run()
    a, b = Searcher(threads), Searcher(processes)
    assert np.array_equal(a.ids, b.ids)
    assert np.allclose(a.fused, b.fused, atol=1e-6)
    assert np.array_equal(a.head_boxes, b.head_boxes)


def test_query_expansion_is_applied_to_the_collection_and_to_outside_queries(folder, tmp_path):
    from dataclasses import replace

    config = fake_config()
    expanded = replace(config, fusion=replace(config.fusion, expand_k=2))
    Indexer(folder, tmp_path / "plain", config, progress=False).run()
    Indexer(folder, tmp_path / "qe", expanded, progress=False).run()
    plain, qe = Searcher(tmp_path / "plain"), Searcher(tmp_path / "qe")
    assert not np.allclose(plain.fused, qe.fused)
    assert np.allclose(np.linalg.norm(qe.fused, axis=1), 1.0, atol=1e-5)
    outside = tmp_path / "q.png"
    draw(outside, COLOURS["green"], seed=123)
    result = qe.query(str(outside), k=4)
    assert all(m.path.startswith("green/") for m in result.matches)


def test_cli_annoy_knobs_are_stored_with_the_collection(folder, tmp_path):
    coll = tmp_path / "coll"
    args = ["index", str(folder), "-c", str(coll), "--backbone", "fake", "--detector", "none"]
    assert main([*args, "--trees", "7", "--search-k", "321", "-q"]) == 0
    params = Collection.open(coll).config.index.params
    assert params == {"n_trees": 7, "search_k": 321}
    assert Searcher(coll).index.params["search_k"] == 321

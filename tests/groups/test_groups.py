"""`lookalike groups`: character (or people) groups without labels, their representative,
sheets, names and the labels CSV that `evaluate` and `train` read. Indexed in one process,
grouped in another."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lookalike.evaluate.group_metrics import adjusted_rand_index, purity
from lookalike.groups.clusters import cluster, medoid
from lookalike.load.labels import read_labels_csv
from tests.web.test_web import COLOURS, PER_COLOUR, build_collection


def lookalike(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lookalike", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """Three colour folders of 8 pictures (and one picture linked from outside)."""
    return build_collection(tmp_path_factory.mktemp("groups"))


def folder_of(path: str) -> str:
    return path.split("/")[0]


def test_groups_recover_the_colour_folders_with_a_member_as_representative(colours):
    _, coll = colours
    run = lookalike("groups", str(coll), "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    grouped = [m for g in report["groups"] for m in g["members"]]
    assert len(grouped) + len(report["ungrouped"]) == 3 * PER_COLOUR + 1
    big = [g for g in report["groups"] if g["size"] >= PER_COLOUR]
    assert sorted(folder_of(g["representative"]["path"]) for g in big) == sorted(COLOURS)
    for g in report["groups"]:
        assert g["members"][0] == g["representative"]
        # The one grey picture (linked/) joins some group; the colours never mix.
        assert len({folder_of(m["path"]) for m in g["members"]} - {"linked"}) == 1


def test_names_label_csv_and_evaluate_reads_it(colours, tmp_path):
    _, coll = colours
    names = tmp_path / "names.csv"
    names.write_text("group,name\ngroup_1,first\n")
    labels = tmp_path / "labels.csv"
    run = lookalike("groups", str(coll), "--names", str(names), "--labels-out", str(labels))
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(io.StringIO(labels.read_text())))
    assert {r["character"] for r in rows} >= {"first", "group_2", "group_3"}
    named = {folder_of(r["file"]) for r in rows if r["character"] == "first"}
    assert len(named - {"linked"}) == 1
    assert read_labels_csv(labels).tasks == ["character"]
    evaluated = lookalike("evaluate", str(coll), "--labels", str(labels), "--preset", "default")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "| default |" in evaluated.stdout


def test_csv_output_sheets_and_min_size(colours, tmp_path):
    _, coll = colours
    out = lookalike("groups", str(coll), "--csv", "--sheets", str(tmp_path / "sheets"))
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert {r["representative"] for r in rows} == {"representative", ""}
    sheets = sorted((tmp_path / "sheets").iterdir())
    assert len(sheets) == len({r["group"] for r in rows})
    with Image.open(sheets[0]) as sheet:
        assert sheet.width > 160 * 4 and sheet.height >= 160
    every = json.loads(lookalike("groups", str(coll), "--json", "--min-size", "1").stdout)
    assert every["ungrouped"] == []
    none = json.loads(lookalike("groups", str(coll), "--json", "--min-size", "100").stdout)
    assert none["groups"] == [] and len(none["ungrouped"]) == 3 * PER_COLOUR + 1


def test_bad_names_are_refused_with_the_file_and_line(colours, tmp_path):
    _, coll = colours
    names = tmp_path / "names.csv"
    names.write_text("group,name\ngroup_99,nobody\n")
    run = lookalike("groups", str(coll), "--names", str(names))
    assert run.returncode == 2
    assert "group_99" in run.stderr and "do not exist" in run.stderr
    names.write_text("group,label\n")
    run = lookalike("groups", str(coll), "--names", str(names))
    assert run.returncode == 2 and f"{names}:1: needs a header 'group,name'" in run.stderr


def test_metrics_and_medoid():
    assert adjusted_rand_index([0, 0, 1, 1], ["a", "a", "b", "b"]) == 1.0
    assert adjusted_rand_index([0, 1, 0, 1], ["a", "a", "b", "b"]) < 0
    assert purity([0, 0, 0, 1], ["a", "a", "b", "b"]) == 0.75
    x = np.array([[1, 0.3], [1, -0.3], [1, 0], [1, 0.5]], dtype=np.float32)
    assert medoid(x) == 2  # the middle one


@pytest.mark.weights
@pytest.mark.slow
def test_people_of_orl_are_grouped_with_the_photo_preset(shared_dataset, tmp_path):
    """Six real people of ORL x 10 photos, indexed with the real weights (photo preset)."""
    orl = shared_dataset("orl-faces-dev")
    root = tmp_path / "orl"
    for person in [f"s{n}" for n in range(1, 7)]:
        (root / person).mkdir(parents=True)
        for photo in (orl / person).iterdir():
            (root / person / photo.name).symlink_to(photo)
    coll = tmp_path / "coll"
    indexed = lookalike("index", str(root), "-c", str(coll), "--preset", "photo", "-q")
    assert indexed.returncode == 0, indexed.stderr
    report = json.loads(lookalike("groups", str(coll), "--json", "--min-size", "1").stdout)
    found = {m["path"]: g["name"] for g in report["groups"] for m in g["members"]}
    paths = sorted(found)
    ari = adjusted_rand_index([found[p] for p in paths], [folder_of(p) for p in paths])
    assert len(paths) == 60 and ari >= 0.7


def test_cluster_of_too_few_rows_is_one_group():
    assert cluster(np.eye(2, dtype=np.float32)).assign.tolist() == [0, 0]

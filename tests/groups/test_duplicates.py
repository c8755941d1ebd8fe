"""`lookalike duplicates`: near-duplicate groups of real pictures from ../shared/datasets,
edited here (resized, re-saved, cropped, recoloured), indexed in one process and
grouped in another."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from lookalike.config import get_preset
from lookalike.groups.duplicates import close_pairs, connected_groups, hamming, phash
from lookalike.indexing.indexer import Indexer


def lookalike(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lookalike", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def edited(tmp_path_factory, shared_dataset):
    """Six distinct real pictures; two of them with edited copies. Returns (root, coll,
    truth: the groups as sets of paths, the file each should keep first)."""
    source = sorted(shared_dataset("anime-full-dev").rglob("*.jpg"))[::60][:6]
    root = tmp_path_factory.mktemp("dups") / "pictures"
    root.mkdir()
    pictures = [Image.open(p).convert("RGB") for p in source]
    for n, image in enumerate(pictures):
        image.save(root / f"pic{n}.png")
    a, b = pictures[0], pictures[1]
    a.resize((a.width // 2, a.height // 2), Image.Resampling.LANCZOS).save(root / "a_small.png")
    a.save(root / "a_resaved.jpg", quality=35)
    w, h = b.size
    b.crop((w // 20, h // 20, w - w // 20, h - h // 20)).save(root / "b_crop.png")
    # Smaller than the original: the kept file is the one with the most pixels.
    ImageEnhance.Color(b).enhance(1.4).resize((w * 9 // 10, h * 9 // 10)).save(
        root / "b_colour.png"
    )
    coll = root.parent / "coll"
    config = get_preset("default").with_options(backbone="fake", detector="none")
    Indexer(root, coll, config, progress=False).run()
    truth = {
        "pic0.png": {"pic0.png", "a_small.png", "a_resaved.jpg"},
        "pic1.png": {"pic1.png", "b_crop.png", "b_colour.png"},
    }
    return root, coll, truth


def test_groups_are_the_edited_copies_and_the_largest_is_kept(edited):
    _, coll, truth = edited
    run = lookalike("duplicates", str(coll), "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["compared"] == 10
    found = {
        g["keep"]["path"]: {g["keep"]["path"]} | {o["path"] for o in g["others"]}
        for g in report["groups"]
    }
    assert found == truth
    for group in report["groups"]:
        keep = group["keep"]
        assert keep["distance"] == 0
        for other in group["others"]:  # the kept file has the most pixels
            assert keep["width"] * keep["height"] >= other["width"] * other["height"]


def test_csv_and_table_and_nothing_is_deleted(edited):
    root, coll, _ = edited
    before = sorted(p.name for p in root.iterdir())
    run = lookalike("duplicates", str(coll), "--csv")
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert {r["path"] for r in rows if r["keep"] == "keep"} == {"pic0.png", "pic1.png"}
    assert len(rows) == 6 and {r["group"] for r in rows} == {"1", "2"}
    table = lookalike("duplicates", str(coll))
    assert "2 group(s) of near duplicates among 10 pictures" in table.stdout
    assert "nothing was deleted" in table.stdout
    assert sorted(p.name for p in root.iterdir()) == before


def test_threshold_zero_pairs_identical_hashes_only_and_bad_thresholds_are_refused(edited):
    _, coll, _ = edited
    strict = json.loads(lookalike("duplicates", str(coll), "--json", "--threshold", "0").stdout)
    assert strict["threshold"] == 0
    assert all(o["distance"] == 0 for g in strict["groups"] for o in g["others"])
    run = lookalike("duplicates", str(coll), "--threshold", "40")
    assert run.returncode == 2
    assert "--threshold must be between 0 and 32 bits" in run.stderr


def test_an_unreadable_file_is_named_and_the_rest_still_compared(edited, tmp_path):
    root, coll, _ = edited
    moved = root / "pic5.png"
    keep = tmp_path / "pic5.png"
    moved.rename(keep)
    try:
        run = lookalike("duplicates", str(coll), "--json")
    finally:
        keep.rename(moved)
    assert run.returncode == 1
    assert "pic5.png" in run.stderr and "not compared" in run.stderr
    assert json.loads(run.stdout)["compared"] == 9


def test_phash_of_a_real_picture_survives_a_resave_but_not_another_picture(shared_dataset):
    first, second = sorted(shared_dataset("anime-faces-dev").rglob("*.jpg"))[:2]
    a, b = Image.open(first).convert("RGB"), Image.open(second).convert("RGB")
    buffer = io.BytesIO()
    a.save(buffer, "JPEG", quality=40)
    resaved = Image.open(buffer).convert("RGB")
    same = hamming(np.uint64(phash(a)), np.uint64(phash(resaved)))
    other = hamming(np.uint64(phash(a)), np.uint64(phash(b)))
    assert same <= 4 < other


def test_connected_groups_join_chains_and_drop_singletons():
    hashes = np.array([[0b0], [0b1], [0b11], [0xFFFF_FFFF]], dtype=np.uint64)
    pairs = close_pairs(hashes, 1)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (1, 2)]
    assert connected_groups(4, pairs) == [[0, 1, 2]]


def test_the_path_is_the_last_tie_breaker(tmp_path: Path):
    from lookalike.groups.duplicates import keep_order

    ranked = sorted([(10, 10, 5, "b"), (10, 10, 5, "a"), (10, 10, 9, "c"), (20, 10, 1, "d")])
    ranked.sort(key=lambda r: keep_order(*r))
    assert [r[3] for r in ranked] == ["d", "c", "a", "b"]

"""Every face searchable: a picture with several faces is found through any of them, shown
once with the face that matched, and any of its faces can ask (`query --face N`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lookalike.config import get_preset
from lookalike.detect.base import DETECTORS, Face
from lookalike.embed.faces import face_head_box
from lookalike.errors import DamagedPartError, QueryError
from lookalike.evaluate.evaluation import FaceVectors, exact_top_k
from lookalike.indexing import growth
from lookalike.indexing.indexer import Indexer
from lookalike.search.searcher import Searcher
from lookalike.store import codec
from lookalike.store.collection import Collection
from lookalike.store.faces import MAX_FACES, best_per_owner, extra_faces, fuse_items
from tests.search.test_coded_scores import assert_alike, coded_and_decoding

# Two places a drawn "face" can be, far enough apart that one face's head box (the face
# grown by the margin) holds nothing of the other.
LEFT, RIGHT = (32, 32, 96, 96), (224, 32, 288, 96)
SIZE = (320, 128)
COLOURS = {"red": (210, 30, 40), "blue": (30, 60, 210), "green": (40, 180, 60)}


@DETECTORS.register("test-squares", "test only: the coloured squares at two fixed places")
class SquareDetector:
    """Finds a face where a fixed square is coloured (not grey); the left one scores higher,
    so a picture's first face is its left square."""

    name = "test-squares"

    def detect(self, image: Image.Image) -> list[Face]:
        pixels = np.asarray(image.convert("RGB"), np.float32)
        faces = []
        for box, score in ((LEFT, 2.0), (RIGHT, 1.0)):
            x0, y0, x1, y1 = box
            patch = pixels[y0:y1, x0:x1]
            if np.abs(patch - patch.mean(axis=2, keepdims=True)).mean() > 20:
                faces.append(Face(box, score))
        return faces


def draw(path, left: str | None, right: str | None, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.full((SIZE[1], SIZE[0], 3), 128, np.int32)
    for box, colour in ((LEFT, left), (RIGHT, right)):
        if colour:
            x0, y0, x1, y1 = box
            pixels[y0:y1, x0:x1] = COLOURS[colour]
    pixels += rng.integers(-12, 12, size=pixels.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)


@pytest.fixture
def pictures(tmp_path):
    root = tmp_path / "art"
    for colour in COLOURS:
        for i in range(3):
            draw(root / colour / f"{i}.png", colour, None, seed=10 * len(colour) + i)
    draw(root / "group" / "red_and_blue.png", "red", "blue", seed=99)
    return root


def config():
    return get_preset("default").with_options(backbone="fake", detector="test-squares")


def index(root, coll):
    return Indexer(root, coll, config(), progress=False, processes=False).run()


def test_a_group_picture_is_found_through_its_second_face_and_shown_once(pictures, tmp_path):
    coll = tmp_path / "coll"
    index(pictures, coll)
    searcher = Searcher(coll)
    assert len(searcher.faces) == 1  # the blue face of the group picture

    result = searcher.query("blue/0.png", k=6)
    paths = [m.path for m in result.matches]
    assert len(paths) == len(set(paths))  # each picture once
    group = next(m for m in result.matches if m.path == "group/red_and_blue.png")
    assert group.face == 1  # through its blue face, not its red first face
    assert group.head_box == face_head_box(RIGHT, SIZE, config().head_margin)
    # It ranks with the blue pictures, above every red and green one.
    assert set(paths[:3]) == {"blue/1.png", "blue/2.png", "group/red_and_blue.png"}
    row = searcher.row_of[group.id]
    main_score = float(
        searcher.fused[row] @ searcher.fused[searcher.row_of[result.query_id]]  # type: ignore[index]
    )
    assert group.score > main_score + 0.05  # its blue face is far closer than its red one

    red = searcher.query("red/0.png", k=3)
    via_red = next(m for m in red.matches if m.path == "group/red_and_blue.png")
    assert via_red.face == 0


def test_any_face_of_a_picture_can_ask(pictures, tmp_path):
    coll = tmp_path / "coll"
    index(pictures, coll)
    searcher = Searcher(coll)
    first = searcher.query("group/red_and_blue.png", k=2)
    second = searcher.query("group/red_and_blue.png", k=2, face=1)
    assert (first.query_face, first.query_faces) == (0, 2)
    assert {m.path.split("/")[0] for m in first.matches} == {"red"}
    assert {m.path.split("/")[0] for m in second.matches} == {"blue"}
    assert second.query_head_box == face_head_box(RIGHT, SIZE, config().head_margin)
    # The same picture from outside the collection asks alike, face by face.
    outside = tmp_path / "copy.png"
    shutil.copy(pictures / "group" / "red_and_blue.png", outside)
    from_outside = searcher.query(str(outside), k=2, face=1)
    assert [m.id for m in from_outside.matches] == [m.id for m in second.matches]
    np.testing.assert_allclose(
        [m.score for m in from_outside.matches], [m.score for m in second.matches], atol=1e-4
    )
    with pytest.raises(QueryError, match="no face 2: the picture has 2 face"):
        searcher.query("group/red_and_blue.png", face=2)
    with pytest.raises(QueryError, match="no face 1"):
        searcher.query("red/0.png", face=1)


def test_face_items_are_kept_across_runs_and_made_for_a_generation_without_them(pictures, tmp_path):
    coll = tmp_path / "coll"
    index(pictures, coll)
    before = Searcher(coll).face_fused.copy()
    again = index(pictures, coll)
    assert again.embedded == 0
    gen = Collection.open(coll).require_generation()
    np.testing.assert_array_equal(np.asarray(gen.face_fused()), before)

    # A generation written before face items existed: the next run makes them.
    shutil.rmtree(gen.path / "faces")
    assert len(Searcher(coll).faces) == 0  # still searchable, by first faces only
    third = index(pictures, coll)
    assert third.embedded == 0 and third.committed
    np.testing.assert_allclose(Searcher(coll).face_fused, before, atol=1e-6)


def test_a_damaged_face_part_is_named_and_repaired_by_index(pictures, tmp_path):
    coll = tmp_path / "coll"
    index(pictures, coll)
    gen = Collection.open(coll).require_generation()
    (gen.path / "faces" / "owners.npy").write_bytes(b"not an array")
    with pytest.raises(DamagedPartError, match=r"owners\.npy"):
        Searcher(coll)
    index(pictures, coll)
    assert len(Searcher(coll).faces) == 1


def test_evaluate_scores_a_picture_by_its_best_face():
    # Three pictures; picture 2's second face is a copy of picture 0's vector.
    vectors = np.eye(3, dtype=np.float32)
    faces = FaceVectors(vectors[[0]], np.array([2]))
    assert exact_top_k(vectors, 1, faces)[0].tolist() == [2]
    assert exact_top_k(vectors, 1, faces)[2].tolist() == [0]  # the query's own face is no hit
    # Without the face item, picture 2 is no closer to picture 0 than picture 1 is.
    assert exact_top_k(vectors + 0.01 * np.eye(3, 3, 1, np.float32), 1)[0].tolist() == [1]


def test_face_helpers():
    faces = [{"box": [i, 0, i + 10, 10]} for i in range(12)]
    assert [n for n, _ in extra_faces(faces)] == list(range(1, MAX_FACES))
    assert extra_faces(faces[:1]) == []
    best = best_per_owner(np.array([0.2, 0.9, 0.5]), np.array([7, 8, 7]))
    assert best == {8: (pytest.approx(0.9), 1), 7: (pytest.approx(0.5), 2)}


def test_group_pictures_of_real_art_from_the_command_line(shared_dataset, tmp_path):
    """Index real full pictures (the animeface detector) in one process, ask with the
    second face of a group picture in another."""
    source = shared_dataset("anime-full-dev")
    root = tmp_path / "art"
    group = "sakura_nene/037.jpg"  # four characters
    picked = [group, *(f"{c}/00{i}.jpg" for c in ("sakura_nene", "suzukaze_aoba") for i in "12")]
    for rel in picked:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / rel, root / rel)
    coll = tmp_path / "coll"
    run = [sys.executable, "-m", "lookalike"]
    subprocess.run(
        [*run, "index", str(root), "-c", str(coll), "--backbone", "fake", "-q"],
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [*run, "query", str(coll), group, "--face", "1", "-k", "4", "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    answer = json.loads(out)
    assert answer["query_face"] == 1 and answer["query_faces"] >= 2
    ids = [m["id"] for m in answer["results"]]
    assert len(ids) == len(set(ids)) == 4
    assert all(m["face"] is None or m["face"] >= 0 for m in answer["results"])
    info = json.loads(
        subprocess.run(
            [*run, "info", str(coll), "--json"], check=True, capture_output=True, text=True
        ).stdout
    )
    assert sum(info["faces_per_picture"][n] for n in ("2", "3+")) >= 1


def test_the_web_api_lists_faces_and_asks_with_any_of_them(pictures, tmp_path):
    from lookalike.web import Gallery
    from tests.web.test_web import Running

    coll = tmp_path / "coll"
    index(pictures, coll)
    searcher = Searcher(coll)
    running = Running(Gallery(coll))
    try:
        group_id = searcher.query("group/red_and_blue.png", k=1).query_id
        status, _, item = running.get(f"/api/items/{group_id}")
        assert status == 200 and item["faces"] == [list(LEFT), list(RIGHT)]
        status, _, answer = running.get(f"/api/query?id={group_id}&k=2&face=1")
        assert status == 200
        assert answer["query"]["face"] == 1
        assert answer["query"]["head_box"] == list(face_head_box(RIGHT, SIZE, config().head_margin))
        cli = searcher.query("group/red_and_blue.png", k=2, face=1)
        assert [r["id"] for r in answer["results"]] == [m.id for m in cli.matches]
        # A result found through its second face is boxed there and says which face.
        _, _, blue = running.get("/api/query?path=blue/0.png&k=6")
        group = next(r for r in blue["results"] if r["id"] == group_id)
        assert group["face"] == 1
        assert group["head_box"] == list(face_head_box(RIGHT, SIZE, config().head_margin))
        # An uploaded copy lists its faces and asks with the one picked.
        data = (pictures / "group" / "red_and_blue.png").read_bytes()
        headers = {"Content-Type": "image/png"}
        status, _, upload = running.request(
            "POST", "/api/query?k=2&face=1", body=data, headers=headers
        )
        assert status == 200 and upload["query"]["faces"] == [list(LEFT), list(RIGHT)]
        assert [r["id"] for r in upload["results"]] == [m.id for m in cli.matches]
        # No such face: a 400 that says how many there are.
        status, _, refused = running.get(f"/api/query?id={group_id}&face=2")
        assert status == 400 and "no face 2: the picture has 2 face" in refused["error"]
        status, _, refused = running.request("POST", "/api/query?face=3", data, headers)
        assert status == 400 and "no face 3" in refused["error"]
        status, _, refused = running.get(f"/api/query?id={group_id}&face=-1")
        assert status == 400
    finally:
        running.stop()


def test_a_head_weight_re_ranks_a_picture_on_the_face_that_matched(pictures, tmp_path):
    """The slider's re-ranking scores a group picture by the face it was found through."""
    coll = tmp_path / "coll"
    index(pictures, coll)
    searcher = Searcher(coll)
    row = searcher.row_of[searcher.query("blue/0.png", k=1).query_id]  # type: ignore[index]
    features = searcher.stored_query(int(searcher.ids[row])).features
    assert features.views is not None
    exclude = {int(searcher.ids[row])}
    for weight in (1.0, 0.5):
        matches = searcher.search_vector(
            searcher.fused[row], 6, exclude, features, head_weight=weight, pool=20
        )
        group = next(m for m in matches if m.path == "group/red_and_blue.png")
        assert group.face == 1
        assert group.head_box == face_head_box(RIGHT, SIZE, config().head_margin)
        # The head view's cosine is of the blue face: as close as the blue pictures' own.
        blue = next(m for m in matches if m.path == "blue/1.png")
        assert group.view_scores["head"] > blue.view_scores["head"] - 0.05
        red = next(
            m
            for m in searcher.search_vector(
                searcher.fused[row], 9, exclude, features, head_weight=weight, pool=20
            )
            if m.path == "red/0.png"
        )
        assert group.view_scores["head"] > red.view_scores["head"] + 0.1


def test_coded_blocks_score_a_face_match_as_decoded_ones(pictures, tmp_path, monkeypatch):
    """On coded blocks (store/codec.py) the pictures found through their own blocks are
    scored on their codes and those found through a further face are decoded: together,
    the decoding path's scores (coded_scores.py), with and without a head weight."""
    monkeypatch.setattr(codec, "CODEC_MIN_ROWS", 4)
    monkeypatch.setattr(codec, "MIN_CODED_WIDTH", 1)  # the fake blocks are narrow
    index(pictures, tmp_path / "coll")
    coded, decoding = coded_and_decoding(tmp_path / "coll")
    row = coded.row_of[coded.query("blue/0.png", k=1).query_id]  # type: ignore[index]
    item = int(coded.ids[row])
    for weight in (None, 0.5):
        got, want = (
            s.search_vector(s.fused[row], 6, {item}, s.stored_query(item).features, weight, 20)
            for s in (coded, decoding)
        )
        assert any(m.face == 1 for m in got)  # the group picture, through its blue face
        assert_alike(got, want)


def test_face_items_are_stored_as_codes_on_their_pictures_bases(pictures, tmp_path, monkeypatch):
    """A further face's head blocks are coded on the basis its generation codes the picture
    rows on (0.5 KB a face, not 16 KB of float16), its fused vector made from exactly those
    codes; a run that refits codes it on the new bases, one that grows in place carries its
    codes over unchanged."""
    monkeypatch.setattr(codec, "CODEC_MIN_ROWS", 4)
    monkeypatch.setattr(codec, "MIN_CODED_WIDTH", 1)  # the fake blocks are narrow
    coll = tmp_path / "coll"
    index(pictures, coll)
    gen = Collection.open(coll).require_generation()
    items = gen.face_items()
    assert items is not None and len(items) == 1
    keys = sorted(items.blocks)
    assert keys and sorted(p.name for p in (gen.path / "faces" / "blocks").iterdir()) == sorted(
        f"{k}.{part}.npy" for k in keys for part in ("codes", "scales")
    )
    for key in keys:
        block = items.blocks[key]
        assert isinstance(block, codec.CodedBlock) and block.basis is gen.bases()[key]
    assert gen.face_fused().dtype == gen.fused().dtype  # float16 where the layout is dense
    row_of = {int(i): r for r, i in enumerate(gen.ids.tolist())}
    blocks = {k: gen.block(k) for k in gen.config.block_keys}
    refused = fuse_items(gen.fuser(), items, blocks, row_of)  # type: ignore[arg-type]
    np.testing.assert_allclose(refused, gen.face_fused(), atol=1e-3)
    codes = {k: np.array(items.blocks[k].codes) for k in keys}  # type: ignore[union-attr]

    # A run that refits on a new picture codes the face on the refitted bases.
    draw(pictures / "green" / "9.png", "green", None, seed=7)
    index(pictures, coll)
    later = Collection.open(coll).require_generation()
    items = later.face_items()
    assert items is not None
    for key in keys:
        assert items.blocks[key].basis is later.bases()[key]  # type: ignore[union-attr]
    row_of = {int(i): r for r, i in enumerate(later.ids.tolist())}
    blocks = {k: later.block(k) for k in later.config.block_keys}
    refused = fuse_items(later.fuser(), items, blocks, row_of)  # type: ignore[arg-type]
    np.testing.assert_allclose(refused, later.face_fused(), atol=1e-3)
    codes = {k: np.array(items.blocks[k].codes) for k in keys}  # type: ignore[union-attr]
    # One added to the committed index (growth.py) keeps the bases and the face's codes.
    monkeypatch.setattr(growth, "EXTEND_MIN_ROWS", 4)
    draw(pictures / "green" / "10.png", "green", None, seed=8)
    index(pictures, coll)
    grown = Collection.open(coll).require_generation().face_items()
    assert grown is not None
    for key in keys:
        np.testing.assert_array_equal(grown.blocks[key].codes, codes[key])  # type: ignore[union-attr]

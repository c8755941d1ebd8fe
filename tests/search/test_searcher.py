"""The Searcher (lookalike.search.searcher) against exact cosine search done here in numpy,
on a small collection built with the fake backbone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import CollectionError, QueryError
from lookalike.search.searcher import Match, Searcher, Threshold, candidate_count
from lookalike.store.collection import Collection
from tests.end_to_end.test_pipeline import fake_config, index
from tests.end_to_end.test_reliability import colour_folder

N = 16  # three colours, five pictures each, and a twin
TWIN = "c1/twin.png"  # the pixels of c1/00.png in other bytes: equal scores, another id


@pytest.fixture(scope="module")
def searcher(tmp_path_factory: pytest.TempPathFactory) -> Searcher:
    """Only read by the tests: built once for the module."""
    root = colour_folder(tmp_path_factory.mktemp("searcher") / "photos")
    with Image.open(root / "c1" / "00.png") as image:
        image.save(root / TWIN, compress_level=0)
    index(root, root.parent / "coll")
    return Searcher(root.parent / "coll")


def exact(searcher: Searcher, item: int, k: int) -> list[tuple[int, float]]:
    """(id, cosine) of the k best other items for stored item `item`: a full sort of the
    fused vectors' dot products in float64, ties by ascending id."""
    fused = np.asarray(searcher.fused, np.float64)
    ids = searcher.ids
    row = int(np.flatnonzero(ids == item)[0])
    scores = fused @ fused[row]
    order = [r for r in np.lexsort((ids, -scores)) if r != row][:k]
    return [(int(ids[r]), float(scores[r])) for r in order]


def answer(matches: list[Match]) -> tuple[list[int], list[float]]:
    return [m.id for m in matches], [m.score for m in matches]


def path_of(searcher: Searcher, item: int) -> str:
    return searcher.collection.catalog.get_many([item])[item].path


def test_the_fused_vectors_are_unit_vectors(searcher: Searcher) -> None:
    # What makes their dot product the cosine the tests below compare with (stored as
    # float16: a small collection's are turned onto their span, fuse/fuser.py).
    assert len(searcher) == N
    norms = np.linalg.norm(np.asarray(searcher.fused, np.float32), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-3)


@pytest.mark.parametrize("k", [1, 4, 10])
def test_top_k_is_the_exact_cosine_order(searcher: Searcher, k: int) -> None:
    for item in searcher.ids.tolist():
        result = searcher.query(str(item), k=k)
        ids, scores = answer(result.matches)
        want = exact(searcher, item, k)
        assert ids == [i for i, _ in want]
        assert np.allclose(scores, [s for _, s in want], atol=1e-5)
        assert scores == sorted(scores, reverse=True)


def test_equal_scores_go_by_ascending_id(searcher: Searcher) -> None:
    catalog = searcher.collection.catalog
    twins = sorted(r.id for r in (catalog.by_path("c1/00.png"), catalog.by_path(TWIN)) if r)
    rows = [searcher.row_of[i] for i in twins]
    assert np.array_equal(searcher.fused[rows[0]], searcher.fused[rows[1]])
    result = searcher.query("c1/01.png", k=N)
    ids = [m.id for m in result.matches]
    at = ids.index(twins[0])
    assert ids[at + 1] == twins[1]  # side by side, the lower id first
    assert result.matches[at].score == result.matches[at + 1].score


def test_a_query_by_path_by_id_and_by_file_agree(searcher: Searcher) -> None:
    item = int(searcher.ids[7])
    rel = path_of(searcher, item)
    by_id = searcher.query(str(item), k=5)
    by_path = searcher.query(rel, k=5)
    by_file = searcher.query(str(searcher.collection.root / rel), k=5)
    assert by_id.query_id == by_path.query_id == by_file.query_id == item
    assert answer(by_id.matches) == answer(by_path.matches) == answer(by_file.matches)
    assert by_id.query_path == rel


def test_the_query_item_is_never_among_its_results(searcher: Searcher) -> None:
    for item in searcher.ids.tolist():
        result = searcher.query(str(item), k=N)
        assert item not in [m.id for m in result.matches]
        assert len(result.matches) == N - 1


def test_an_outside_copy_of_an_indexed_file_does_not_find_that_file(
    searcher: Searcher, tmp_path: Path
) -> None:
    item = int(searcher.ids[2])
    copy = tmp_path / "copy.png"
    shutil.copy(searcher.collection.root / path_of(searcher, item), copy)
    result = searcher.query(str(copy), k=N)
    assert result.query_id is None  # not in the collection under this name...
    assert item not in [m.id for m in result.matches]  # ...but the same bytes: excluded
    assert (len(result.matches), result.candidates) == (N - 1, N - 1)


def test_more_results_asked_than_the_collection_has(searcher: Searcher) -> None:
    item = int(searcher.ids[0])
    result = searcher.query(str(item), k=50)
    assert answer(result.matches)[0] == [i for i, _ in exact(searcher, item, 50)]
    assert (result.k, result.size, result.candidates) == (50, N, N - 1)
    assert result.notes()[0] == (
        f"found {N - 1} of the 50 results asked: the collection has {N} images "
        "and the query is one of them"
    )
    assert result.to_json()["found"] == N - 1


def test_min_score_leaves_out_the_results_under_it(searcher: Searcher) -> None:
    item = int(searcher.ids[4])
    want = exact(searcher, item, 6)
    # Halfway between the third and fourth scores: three pass.
    cut = (want[2][1] + want[3][1]) / 2
    result = searcher.query(str(item), k=6, threshold=Threshold(min_score=cut))
    assert [m.id for m in result.matches] == [i for i, _ in want[:3]]
    assert [m.id for m in result.left_out] == [i for i, _ in want[3:]]
    assert all(m.score >= cut for m in result.matches)
    assert f"3 result(s) under minimum score {cut:g} left out" in result.notes()
    assert result.to_json()["min_score"] == cut and result.to_json()["left_out"] == 3


def test_a_min_score_nothing_reaches_says_so(searcher: Searcher) -> None:
    result = searcher.query(str(int(searcher.ids[0])), k=3, threshold=Threshold(min_score=1.01))
    assert result.matches == [] and len(result.left_out) == 3
    assert result.no_good_match
    assert result.notes()[-1].startswith("no good match: no result reaches minimum score 1.01")


def test_per_view_scores_are_the_cosines_of_each_views_vectors(searcher: Searcher) -> None:
    # Each view's vectors of every row, by the view fusers the searcher exposes.
    blocks = searcher.stored_blocks(np.arange(N))
    views = {v: f.transform(blocks) for v, f in searcher.views.fusers.items()}
    assert set(views) == {"head", "whole"}
    item = int(searcher.ids[5])
    row = searcher.row_of[item]
    for match in searcher.query(str(item), k=4).matches:
        other = searcher.row_of[match.id]
        assert set(match.view_scores) == {"head", "whole"}
        for view, vectors in views.items():
            cosine = float(vectors[other] @ vectors[row])
            assert match.view_scores[view] == pytest.approx(cosine, abs=2e-6)
        assert match.fused_score == pytest.approx(match.score)
        assert match.to_json()["scores"] == {"fused": round(match.score, 6), **match.view_scores}


def test_a_head_weight_of_one_ranks_by_the_head_view_alone(searcher: Searcher) -> None:
    item = int(searcher.ids[9])
    row = searcher.row_of[item]
    head = searcher.views.fusers["head"].transform(searcher.stored_blocks(np.arange(N)))
    scores = head @ head[row]
    want = [int(searcher.ids[r]) for r in np.lexsort((searcher.ids, -scores)) if r != row][:5]
    asking = searcher.stored_query(item)
    matches = searcher.search_vector(asking.vector, 5, {item}, asking.features, head_weight=1.0)
    assert [m.id for m in matches] == want
    assert np.allclose([m.score for m in matches], [m.view_scores["head"] for m in matches])


def test_bad_requests_are_query_errors(searcher: Searcher) -> None:
    vector = searcher.fused[0]
    with pytest.raises(QueryError, match="k must be at least 1, got 0"):
        searcher.search_vector(vector, 0, set())
    with pytest.raises(QueryError, match="head_weight needs the query's per-view vectors"):
        searcher.search_vector(vector, 3, set(), head_weight=0.5)
    with pytest.raises(QueryError, match=r"no-such\.png: not an image file, and not a path or id"):
        searcher.query("no-such.png")
    # The fake backbone has no calibration table: a probability cannot be asked for.
    with pytest.raises(QueryError, match="has no calibrated probabilities"):
        searcher.query("1", threshold=Threshold(min_probability=0.5))


def test_a_collection_without_a_committed_generation_cannot_be_searched(tmp_path: Path) -> None:
    Collection.create(tmp_path / "coll", tmp_path, fake_config(), "fake-v1")
    with pytest.raises(CollectionError, match="has no committed index yet"):
        Searcher(tmp_path / "coll")


@pytest.mark.parametrize(
    "size, k, excluded, pool, head_weight, expected",
    [
        (1000, 4, 1, None, None, 50),  # at least 50
        (1000, 20, 1, None, None, 84),  # four times k and the excluded
        (30, 20, 1, None, None, 30),  # never more than the collection
        (1000, 4, 1, 200, None, 50),  # a pool counts only with a head weight
        (1000, 4, 1, 200, 0.5, 201),
    ],
)
def test_candidate_count(
    size: int, k: int, excluded: int, pool: int | None, head_weight: float | None, expected: int
) -> None:
    assert candidate_count(size, k, excluded, pool, head_weight) == expected


def test_threshold_passes_on_score_and_probability() -> None:
    def match(score: float, probability: float | None) -> Match:
        return Match(1, "a.png", score, None, False, probability)

    assert Threshold().passes(match(-1.0, None))
    by_score = Threshold(min_score=0.5)
    assert by_score.passes(match(0.5, None)) and not by_score.passes(match(0.49, None))
    by_probability = Threshold(min_probability=0.8)
    assert by_probability.passes(match(0.0, 0.8))
    assert not by_probability.passes(match(0.9, 0.7))
    assert not by_probability.passes(match(0.9, None))  # uncalibrated: it cannot pass
    assert str(Threshold(0.5, 0.8)) == "minimum score 0.5 and probability 0.8"

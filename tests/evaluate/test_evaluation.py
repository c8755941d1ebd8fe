"""The scoring functions of lookalike.evaluate.evaluation on hand-made vectors and labels,
each answer worked out by hand in the test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lookalike.config import IndexConfig
from lookalike.errors import LabelsError
from lookalike.evaluate.evaluation import (
    FaceVectors,
    LabelScore,
    PresetScore,
    ann_recall,
    detection_rate,
    exact_top_k,
    feel_score,
    label_scores,
    labelled_rows,
    markdown_table,
    per_label_tables,
    precision_and_map,
    score_vectors,
    to_json,
)
from lookalike.load.labels import Labels
from tests.end_to_end.test_pipeline import fake_config
from tests.store.test_catalog import record
from tests.store.test_collection import commit, created

# Unit vectors in the plane at these angles: the nearest by cosine is the nearest by angle.
ANGLES = [0, 10, 30, 100, 220]
# Each row's others by angular distance (degrees away, in brackets):
NEAREST = [
    [1, 2, 3, 4],  # 0:   10 (10), 30 (30), 100 (100), 220 (140)
    [0, 2, 3, 4],  # 10:  0 (10), 30 (20), 100 (90), 220 (150)
    [1, 0, 3, 4],  # 30:  10 (20), 0 (30), 100 (70), 220 (170)
    [2, 1, 0, 4],  # 100: 30 (70), 10 (90), 0 (100), 220 (120)
    [3, 0, 1, 2],  # 220: 100 (120), 0 (140), 10 (150), 30 (170)
]
EXACT = fake_config("v1").with_options(index=IndexConfig("exact"))


def on_circle(degrees: list[float]) -> np.ndarray:
    radians = np.radians(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def test_exact_top_k_orders_the_other_rows_by_cosine() -> None:
    vectors = on_circle(ANGLES)
    assert exact_top_k(vectors, 3).tolist() == [row[:3] for row in NEAREST]
    assert exact_top_k(vectors, 1).tolist() == [[row[0]] for row in NEAREST]


def test_exact_top_k_never_finds_the_row_itself_even_when_k_is_too_large() -> None:
    assert exact_top_k(on_circle(ANGLES), 10).tolist() == NEAREST  # k cut to the 4 others


def test_with_faces_a_picture_scores_by_its_best_face() -> None:
    vectors = on_circle([0, 90, 180])
    # Picture 2 (at 180 degrees) has a second face at 5 degrees: now the nearest to 0.
    faces = FaceVectors(on_circle([5]), owner_rows=np.array([2]))
    assert exact_top_k(vectors, 2).tolist()[0] == [1, 2]
    assert exact_top_k(vectors, 2, faces).tolist()[0] == [2, 1]
    # Picture 1 (90 degrees): 2's face is 85 degrees away, 0 is 90: the face wins there too.
    assert exact_top_k(vectors, 1, faces).tolist() == [[2], [2], [1]]


# a|b holds both labels: it is a hit for a query labelled a and for one labelled b.
LABELS = np.array(["a", "a", "b", "b", "a|b", "c"])
NEIGHBOURS = np.array([[2, 1, 4], [0, 4, 5], [5, 0, 1], [4, 5, 2], [3, 0, 5], [0, 1, 2]])


def test_precision_and_map_at_k_by_hand() -> None:
    # Hits, and the relevant items each query could find (those sharing a label with it):
    #   0 (a):   [0, 1, 1]  relevant 2 (1, 4)        P 2/3  AP (1/2 + 2/3) / 2 = 7/12
    #   1 (a):   [1, 1, 0]  relevant 2 (0, 4)        P 2/3  AP (1 + 1) / 2     = 1
    #   2 (b):   [0, 0, 0]  relevant 2 (3, 4)        P 0    AP 0
    #   3 (b):   [1, 0, 1]  relevant 2 (2, 4)        P 2/3  AP (1 + 2/3) / 2   = 5/6
    #   4 (a|b): [1, 1, 0]  relevant 4, at most k=3  P 2/3  AP (1 + 1) / 3     = 2/3
    #   5 (c):   [0, 0, 0]  relevant 0               P 0    AP 0
    precision, mean_ap = precision_and_map(NEIGHBOURS, LABELS)
    assert precision == pytest.approx(4 * (2 / 3) / 6)
    assert mean_ap == pytest.approx((7 / 12 + 1 + 0 + 5 / 6 + 2 / 3 + 0) / 6)  # 37/72


def test_label_scores_by_hand_worst_label_first() -> None:
    # Each query's misses and their labels (a|b counts under a and under b):
    #   0 (a): misses 2 (b)          1 (a): misses 5 (c)        2 (b): misses 5, 0, 1 (c, a, a)
    #   3 (b): misses 5 (c)          4 (a|b): misses 5 (c)      5 (c): misses 0, 1, 2 (a, a, b)
    assert label_scores(NEIGHBOURS, LABELS) == [
        LabelScore("c", 1, 0.0, [("a", 2), ("b", 1)]),
        LabelScore("b", 3, round((0 + 2 / 3 + 2 / 3) / 3, 4), [("c", 3), ("a", 2)]),
        LabelScore("a", 3, round(2 / 3, 4), [("c", 2), ("b", 1)]),
    ]


def test_per_label_tables_list_each_preset_s_labels_and_their_confusions() -> None:
    score = PresetScore("default", 0.5, 0.5, 1.0, 0.5, 2, 3, 6, label_scores(NEIGHBOURS, LABELS))
    assert per_label_tables([score]).splitlines()[1:] == [
        "default, per label:",
        "",
        "| label | queries | P@3 | most often found instead |",
        "| --- | --- | --- | --- |",
        "| c | 1 | 0.000 | a (2), b (1) |",
        "| b | 3 | 0.444 | c (3), a (2) |",
        "| a | 3 | 0.667 | c (2), b (1) |",
    ]


def test_the_order_of_the_hits_counts_for_map_not_for_precision() -> None:
    labels = np.array(["a", "a", "b"])
    first = precision_and_map(np.array([[1, 2], [0, 2], [0, 1]]), labels)  # hit first
    last = precision_and_map(np.array([[2, 1], [2, 0], [1, 0]]), labels)  # hit second
    # Rows 0 and 1 hit once in two; row 2 (b) has nothing to find.
    assert first[0] == last[0] == pytest.approx(1 / 3)
    # AP of rows 0 and 1: 1 / 1 with the hit first, (1/2) / 1 with it second.
    assert first[1] == pytest.approx(2 / 3) and last[1] == pytest.approx(1 / 3)


def test_a_perfect_ranking_scores_one() -> None:
    labels = np.array(["a", "a", "b", "b"])
    assert precision_and_map(np.array([[1], [0], [3], [2]]), labels) == (1.0, 1.0)


def test_feel_is_the_mean_cosine_of_the_results_whole_images() -> None:
    feel = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])  # not unit: normalised inside
    # cos(0, 1) = 0, cos(1, 2) = cos(2, 0) = 1/sqrt(2)
    assert feel_score(feel, np.array([[1], [2], [0]])) == pytest.approx(math.sqrt(2) / 3)


def test_ann_recall_against_the_exact_answer() -> None:
    vectors = on_circle(ANGLES)
    truth = exact_top_k(vectors, 2)
    assert ann_recall(vectors, truth, EXACT, 2) == 1.0  # the exact backend finds them all
    wrong = truth.copy()
    wrong[0, 1] = 4  # row 0's second neighbour is 2: the index cannot find this one
    assert ann_recall(vectors, wrong, EXACT, 2) == pytest.approx((1 / 2 + 4) / 5)


def test_score_vectors_scores_every_row_against_the_others() -> None:
    vectors = on_circle(ANGLES)
    y = np.array(["a", "a", "a", "b", "b"])
    score = score_vectors("mine", EXACT, vectors, y, np.ones((5, 3)), k=2)
    # Top 2 from NEAREST: 0 [1,2], 1 [0,2], 2 [1,0] all hits; 3 [2,1] none; 4 [3,0] one.
    # AP: 1, 1, 1, 0 and, 4 having one relevant (3) found first, 1.
    assert score == PresetScore(
        preset="mine",
        precision_at_k=round((1 + 1 + 1 + 0 + 1 / 2) / 5, 4),
        map_at_k=round(4 / 5, 4),
        ann_recall_at_k=1.0,
        feel=1.0,  # every feel vector is the same
        dims=2,
        k=2,
        queries=5,
        # b: rows 3 (no hit, found 2 and 1: a) and 4 (one hit, missed 0: a).
        per_label=[LabelScore("b", 2, 0.25, [("a", 3)]), LabelScore("a", 3, 1.0, [])],
    )


def presets() -> list[PresetScore]:
    return [
        PresetScore("v1", 0.5, 0.25, 1.0, 0.8, 10, 4, 12),
        PresetScore("default", 0.9, 0.875, 0.99, 0.7, 256, 4, 12),
    ]


def test_markdown_table_has_a_row_per_preset_and_the_detection_rate() -> None:
    assert markdown_table(presets(), 0.25).splitlines() == [
        "| preset | P@4 | mAP@4 | ANN recall@4 | feel | dims |",
        "| --- | --- | --- | --- | --- | --- |",
        "| v1 | 0.500 | 0.250 | 1.000 | 0.800 | 10 |",
        "| default | 0.900 | 0.875 | 0.990 | 0.700 | 256 |",
        "",
        "12 labelled queries; faces detected in 25.0% of the labelled images.",
    ]


def test_to_json_lists_the_presets_and_the_rounded_detection_rate() -> None:
    out = json.loads(to_json(presets(), 0.123456))
    assert out["detection_rate"] == 0.1235
    assert [p["preset"] for p in out["presets"]] == ["v1", "default"]
    assert out["presets"][1] == presets()[1].to_json()


def test_detection_rate_counts_the_good_pictures_with_a_face(tmp_path: Path) -> None:
    coll = created(tmp_path)
    with coll.write_lock():
        coll.catalog.upsert(
            [
                record("face1.png"),
                record("face2.png"),
                record("none.png", fallback=True),
                record("broken.png", "error"),  # never indexed: not counted
            ]
        )
    assert detection_rate(coll) == pytest.approx(2 / 3)
    assert detection_rate(coll, ["none.png", "face1.png", "unknown.png"]) == 0.5
    assert detection_rate(coll, []) == 0.0


def test_labelled_rows_are_the_generations_rows_with_a_label(tmp_path: Path) -> None:
    coll = created(tmp_path)
    with coll.write_lock():  # ids 1..5 in a new catalog: those the committed rows have
        coll.catalog.upsert([record(f"{n}.png") for n in range(1, 6)])
    commit(coll, n=5)
    labels = Labels(["who"], {"2.png": {"who": "x"}, "4.png": {"who": "y"}, "5.png": {}})
    rows, y = labelled_rows(coll, labels, None)
    assert rows.tolist() == [1, 3] and y.tolist() == ["x", "y"]  # 5.png has no label
    one = Labels(["who"], {"2.png": {"who": "x"}})
    with pytest.raises(LabelsError, match="fewer than two indexed images have labels"):
        labelled_rows(coll, one, "who")

import numpy as np

from lookalike.evaluate.evaluation import precision_and_map, shared_labels


def test_a_result_is_a_hit_when_it_shares_one_label_with_the_query():
    labels = np.array(["a", "a|b", "b", "c"])
    share = shared_labels(labels)
    assert share.tolist() == [
        [True, True, False, False],
        [True, True, True, False],
        [False, True, True, False],
        [False, False, False, True],
    ]
    # Row 0 finds the group picture (a hit), row 2 finds it too, row 3 finds nothing of its.
    neighbours = np.array([[1], [2], [1], [0]])
    precision, mean_ap = precision_and_map(neighbours, labels)
    assert precision == 0.75
    assert mean_ap == 0.75


def test_single_labels_score_as_plain_equality():
    labels = np.array(["x", "x", "y", "y"])
    neighbours = np.array([[1, 2], [2, 0], [3, 0], [0, 2]])
    precision, _ = precision_and_map(neighbours, labels)
    assert precision == 0.5

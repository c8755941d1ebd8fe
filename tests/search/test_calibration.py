"""What a score means (issue 19, item 3): calibrated probabilities, --min-score, "no good match"."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from lookalike.config import get_preset
from lookalike.search.calibration import GOOD_MATCH, calibration_for, fingerprint, fit_isotonic
from tests.indexing.test_renames import FAKE, lookalike, make_folder


def test_isotonic_fit_is_the_monotone_least_squares_step_function():
    x, y = fit_isotonic(np.array([0.4, 0.1, 0.3, 0.2]), np.array([1, 0, 0, 1]))
    # Sorted hits 0, 1, 0, 1: the middle pair violates the order and is pooled to 0.5.
    np.testing.assert_allclose(x, [0.1, 0.25, 0.4])
    np.testing.assert_allclose(y, [0.0, 0.5, 1.0])
    rng = np.random.default_rng(0)
    scores = rng.random(2000)
    hits = rng.random(2000) < scores  # P(hit) = score
    x, y = fit_isotonic(scores, hits)
    assert np.all(np.diff(y) >= 0) and np.all(np.diff(x) > 0) and len(x) <= 40
    assert abs(np.interp(0.5, x, y) - 0.5) < 0.1


def test_the_packaged_table_covers_default_and_photo_with_their_own_settings():
    for preset in ("default", "photo"):
        table = calibration_for(get_preset(preset))
        assert table is not None and table.preset == preset
        assert np.all(np.diff(table.scores) > 0) and np.all(np.diff(table.probabilities) >= 0)
        assert 0.0 <= table.probabilities[0] < GOOD_MATCH < table.probabilities[-1] <= 1.0
    # Other settings give other scores: not calibrated (never a wrong table).
    other = get_preset("default").with_options(backbone="fake")
    assert fingerprint(other) != fingerprint(get_preset("default"))
    assert calibration_for(other) is None and calibration_for(get_preset("v1")) is None


def test_a_collection_fitted_with_one_k_means_start_keeps_its_table():
    """Collections made before format 5 read as fitted with one k-means start per k: their
    settings fingerprint as they did then, and the table fitted for them stays."""
    default = get_preset("default")
    fusion = dataclasses.replace(
        default.fusion, pseudo_lda_starts=1, pseudo_lda_axes=128, feel_weight=0.2
    )
    before = default.with_options(fusion=fusion)
    assert fingerprint(before) != fingerprint(default)
    assert calibration_for(before) is not None and calibration_for(default) is not None


def test_a_collection_fitted_on_128_lda_axes_keeps_its_table():
    """Collections made before format 6 read as fitted on 128 axes (their colour tail at
    0.2): the table fitted for them (three k-means starts, stop 36) stays."""
    default = get_preset("default")
    fusion = dataclasses.replace(default.fusion, pseudo_lda_axes=128, feel_weight=0.2)
    before = default.with_options(fusion=fusion)
    assert fingerprint(before) != fingerprint(default)
    assert calibration_for(before) is not None and calibration_for(default) is not None


@pytest.fixture(scope="module")
def fake_coll(tmp_path_factory):
    root = make_folder(tmp_path_factory.mktemp("cal") / "cards")
    coll = root.parent / "coll"
    assert lookalike("index", root, "-c", coll, *FAKE).returncode == 0
    return coll


def test_min_score_leaves_out_results_and_says_when_nothing_passes(fake_coll):
    full = json.loads(lookalike("query", fake_coll, "red/0.png", "--json", "-k", "4").stdout)
    scores = [r["score"] for r in full["results"]]
    cut = (scores[1] + scores[2]) / 2
    some = json.loads(
        lookalike("query", fake_coll, "red/0.png", "--json", "--min-score", cut).stdout
    )
    assert [r["score"] for r in some["results"]] == scores[:2] and some["left_out"] == 2
    assert not some["no_good_match"] and some["calibration"] is None  # fake: uncalibrated

    none = lookalike("query", fake_coll, "red/0.png", "--min-score", "0.99999")
    assert none.returncode == 0, none.stderr
    assert "no good match: no result reaches minimum score 0.99999 (the best: score" in (
        none.stdout
    )
    answer = json.loads(
        lookalike("query", fake_coll, "red/0.png", "--json", "--min-score", "0.99999").stdout
    )
    assert answer["no_good_match"] and answer["found"] == 0 and answer["results"] == []
    assert answer["left_out"] == 4 and answer["min_score"] == 0.99999


def test_min_probability_needs_a_calibrated_preset(fake_coll):
    done = lookalike("query", fake_coll, "red/0.png", "--min-probability", "0.5")
    assert done.returncode == 2 and "no calibrated probabilities" in done.stderr
    bad = lookalike("query", fake_coll, "red/0.png", "--min-probability", "2")
    assert bad.returncode == 2 and "must be from 0 to 1" in bad.stderr


@pytest.mark.weights
@pytest.mark.slow
def test_photos_and_pets_against_anime_faces_get_no_good_match(shared_dataset, tmp_path):
    """Real weights: 4 characters x 10 anime faces; real photos (a cat, a dog, ORL people)
    are warned about, held-out faces of the indexed characters mostly are not."""
    anime, cards = shared_dataset("anime-faces-dev"), shared_dataset("seed-cards")
    orl = shared_dataset("orl-faces-dev")
    root = tmp_path / "anime"
    held_out = []
    for character in sorted(p.name for p in anime.iterdir())[:4]:
        (root / character).mkdir(parents=True)
        images = sorted((anime / character).glob("*.jpg"))
        for image in images[:10]:
            (root / character / image.name).symlink_to(image)
        held_out.append((character, images[30]))
    coll = tmp_path / "coll"
    assert lookalike("index", root, "-c", coll, "-q").returncode == 0

    def best(query):
        done = lookalike("query", coll, query, "--json", "-k", "1")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    others = [cards / "img_example1.jpg", cards / "img_example2.jpg", orl / "s1" / "1.pgm"]
    for photo in others:
        answer = best(photo)
        assert answer["no_good_match"], (photo, answer["results"])
        assert answer["notes"][-1].startswith("no good match: the best result is probably not")
    table = lookalike("query", coll, cards / "img_example1.jpg")
    assert "no good match" in table.stdout and "P(same)" in table.stdout

    answers = [(c, best(image)) for c, image in held_out]
    right = [a["results"][0]["path"].startswith(c + "/") for c, a in answers]
    probs = [a["results"][0]["probability"] for _, a in answers]
    worst_photo = max(best(p)["results"][0]["probability"] for p in others)
    assert sum(right) >= 3
    assert np.mean(probs) > worst_photo and max(probs) >= GOOD_MATCH

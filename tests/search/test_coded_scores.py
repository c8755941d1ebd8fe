"""Per-view and calibration cosines computed on stored codes (lookalike.search.coded_scores)
against the fuser's own vectors of the decoded rows, and the Searcher's two paths alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.config import Block, FusionConfig
from lookalike.fuse.fuser import Fuser
from lookalike.search.coded_scores import CodedScorer, product_steps
from lookalike.search.searcher import Match, Searcher
from lookalike.store import codec
from lookalike.store.codec import BlockBasis, CodedBlock
from tests.end_to_end.test_pipeline import draw, folder, index  # noqa: F401 - the fixture

N = 240
BLOCKS = (Block("head", "a", 1.0), Block("head", "b", 0.7), Block("whole", "c", 0.2))


def low_rank(rows: int, dims: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    groups = rng.normal(size=(12, dims))[np.arange(rows) % 12]
    return (groups + 0.3 * rng.normal(size=(rows, dims))).astype(np.float32)


def coded_blocks() -> dict[str, CodedBlock]:
    widths = (96, 64, 128)
    raw = {b.key: low_rank(N, d, i) for i, (b, d) in enumerate(zip(BLOCKS, widths, strict=True))}
    coded = {}
    for key, block in raw.items():
        basis = BlockBasis.fit(block)
        coded[key] = CodedBlock(basis, *basis.encode(block))
    return coded


@pytest.fixture(
    scope="module",
    params=[((), 1), ((10, 20), 1), ((10, 20, 30, 40, 50), 3)],
    ids=["no-lda", "pseudo-lda", "pseudo-lda-3-starts"],
)
def fitted(request: pytest.FixtureRequest) -> tuple[Fuser, dict[str, CodedBlock], dict]:
    coded = coded_blocks()
    decoded = {key: np.asarray(block) for key, block in coded.items()}
    ks, starts = request.param
    fusion = FusionConfig(mode="weighted", pseudo_lda_ks=ks, pseudo_lda_starts=starts, out_dim=32)
    return Fuser(BLOCKS, fusion).fit(decoded), coded, decoded


def expected(fuser: Fuser, decoded: dict, query: dict, rows: np.ndarray) -> tuple[dict, np.ndarray]:
    """The cosines as the decoding path computes them: the fusers' vectors of the rows."""
    picked = {key: block[rows] for key, block in decoded.items()}
    views = {}
    for view in ("whole", "head"):
        part = fuser.select([b.key for b in BLOCKS if b.view == view])
        views[view] = part.transform(picked) @ part.transform(query)[0]
    return views, fuser.wide_transform(picked) @ fuser.wide_transform(query)[0]


def test_the_plain_layout_applies_and_others_do_not(fitted) -> None:
    fuser, coded, decoded = fitted
    assert CodedScorer.applies(fuser, coded)
    assert not CodedScorer.applies(fuser, decoded)  # float rows: nothing to score on
    concat = Fuser(BLOCKS, FusionConfig(mode="concat")).fit(decoded)
    assert not CodedScorer.applies(concat, coded)


def test_a_stored_row_scores_as_the_fuser_of_the_decoded_rows(fitted) -> None:
    fuser, coded, decoded = fitted
    asking = 5  # one of the rows scored: its own cosines are 1
    scorer = CodedScorer(fuser, coded)
    rows = np.arange(0, N, 5)
    query = {key: block[[asking]] for key, block in decoded.items()}
    want_views, want_wide = expected(fuser, decoded, query, rows)
    # Its codes read with the rows' (what a stored picture's query does), and its decoded
    # blocks as a query from outside would give them: both the fuser's cosines.
    for views, wide in (
        scorer.stored_scores(asking, rows, wide=True),
        scorer.scores(rows, scorer.image_query(query), wide=True),
    ):
        assert set(views) == {"whole", "head"}
        for view, cosines in views.items():
            np.testing.assert_allclose(cosines, want_views[view], atol=2e-6)
        np.testing.assert_allclose(wide, want_wide, atol=2e-6)
        assert views["head"][1] == pytest.approx(1) and wide[1] == pytest.approx(1)
    _, no_wide = scorer.stored_scores(asking, rows, wide=False)
    assert no_wide is None


def test_an_outside_picture_scores_as_the_fuser_of_its_blocks(fitted) -> None:
    fuser, coded, decoded = fitted
    scorer = CodedScorer(fuser, coded)
    rng = np.random.default_rng(9)
    # Blocks off the stored rows' components: the part outside them counts as the fuser's does.
    query = {
        key: block[[11]] + rng.normal(size=(1, block.shape[1])).astype(np.float32)
        for key, block in decoded.items()
    }
    rows = np.arange(N)
    want_views, want_wide = expected(fuser, decoded, query, rows)
    views, wide = scorer.scores(rows, scorer.image_query(query), wide=True)
    for view, cosines in views.items():
        np.testing.assert_allclose(cosines, want_views[view], atol=2e-6)
    np.testing.assert_allclose(wide, want_wide, atol=2e-6)


def coded_and_decoding(coll: Path) -> tuple[Searcher, Searcher]:
    """Two searchers of a collection with coded blocks: one scoring on the codes, one with
    the coded scorer turned off (the decoding path)."""
    coded, decoding = Searcher(coll), Searcher(coll)
    assert coded.coded_scorer is not None
    decoding.__dict__["coded_scorer"] = None
    return coded, decoding


def assert_alike(got: list[Match], want: list[Match]) -> None:
    """The same results, per-view scores and probabilities, to float32 rounding."""
    assert [m.id for m in got] == [m.id for m in want]
    for a, b in zip(got, want, strict=True):
        assert set(a.view_scores) == set(b.view_scores) and a.view_scores
        for view, score in a.view_scores.items():
            assert score == pytest.approx(b.view_scores[view], abs=2e-6)
        assert (a.probability is None) == (b.probability is None)
        if a.probability is not None:
            assert a.probability == pytest.approx(b.probability, abs=1e-4)


def test_the_searcher_answers_alike_on_codes_and_on_decoded_rows(
    folder,  # noqa: F811
    tmp_path,
    monkeypatch,
) -> None:
    """`query`'s per-view scores and probabilities, from a stored picture and from a file,
    are the decoding path's."""
    monkeypatch.setattr(codec, "CODEC_MIN_ROWS", 10)
    monkeypatch.setattr(codec, "MIN_CODED_WIDTH", 1)  # the fake blocks are narrow
    index(folder, tmp_path / "coll")
    coded, decoding = coded_and_decoding(tmp_path / "coll")
    outside = tmp_path / "outside.png"
    draw(outside, (240, 30, 20), seed=3)
    for asked in ("red/0.png", "blue/1.png", str(outside)):
        assert_alike(coded.query(asked, k=6).matches, decoding.query(asked, k=6).matches)


def test_the_codes_reach_the_lda_directions_in_the_fewest_multiplications() -> None:
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(4, 492)).astype(np.float32)
    on_basis = rng.normal(size=(492, 128))
    for directions, steps in ((145, 1), (435, 2)):  # one k-means start per k, three
        d = rng.normal(size=(128, directions))
        chosen = product_steps(on_basis, d)
        assert len(chosen) == steps
        out = codes
        for matrix in chosen:
            out = out @ matrix
        np.testing.assert_allclose(out, codes @ (on_basis @ d), rtol=1e-4, atol=1e-3)

import numpy as np
import pytest

from lookalike.config import Block, FusionConfig
from lookalike.embed.descriptors import describe
from lookalike.evaluate.evaluation import exact_top_k, precision_and_map
from lookalike.fuse.fuser import Fuser
from lookalike.fuse.pseudo_lda import PseudoLabelLDA, kmeans
from lookalike.vectors import l2_normalize


def clustered(n_clusters=12, per=25, dim=96, seed=0):
    """Clusters that differ in a few directions, hidden under broad shared noise."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((n_clusters, dim))
    centres[:, :8] = rng.normal(size=(n_clusters, 8)) * 3.0
    noise = rng.normal(size=(n_clusters * per, dim)) * np.linspace(1.5, 0.5, dim)
    return l2_normalize(np.repeat(centres, per, axis=0) + noise), np.repeat(
        np.arange(n_clusters), per
    )


def test_kmeans_finds_well_separated_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.1, size=(20, 2)) for c in (0, 5, 10)])
    ids = kmeans(x, 3, seed=1)
    assert len(set(ids[:20])) == len(set(ids[20:40])) == len(set(ids[40:])) == 1
    assert len(set(ids)) == 3


def test_pseudo_label_lda_separates_characters_without_labels():
    x, y = clustered()
    before, _ = precision_and_map(exact_top_k(x, 4), y)
    lda = PseudoLabelLDA((10, 20, 30)).fit(x)
    after, _ = precision_and_map(exact_top_k(lda.transform(x), 4), y)
    assert after > before + 0.04  # measured 0.772 -> 0.839
    assert lda.output_dim == 96 + 9 + 19 + 29


def test_several_k_means_starts_are_one_lda_each_the_first_the_single_starts():
    x, _ = clustered()
    one = PseudoLabelLDA((10, 20), rounds=1).fit(x)
    three = PseudoLabelLDA((10, 20), rounds=1, starts=3).fit(x)
    assert three.output_dim == 96 + 3 * (9 + 19)
    assert len(three.directions_) == 3 * len(one.directions_)
    for single, first in zip(one.directions_, three.directions_[::3], strict=True):
        np.testing.assert_allclose(first, single, atol=1e-5)


def test_several_starts_score_better_over_seeds_than_one():
    """One start is a draw (P@4 moves with the k-means seed); three average it out: their mean
    over six seeds measured 0.842 against 0.830 here (0.850 / 0.842 and 0.793 / 0.784 on two
    other draws of the clusters)."""
    x, y = clustered()

    def mean_precision(starts: int) -> float:
        fits = [PseudoLabelLDA((10, 20, 30), seed=s, starts=starts).fit(x) for s in range(6)]
        return float(
            np.mean([precision_and_map(exact_top_k(f.transform(x), 4), y)[0] for f in fits])
        )

    assert mean_precision(3) > mean_precision(1) + 0.005


def test_small_collections_are_left_as_they_are():
    x, _ = clustered(n_clusters=2, per=5)
    lda = PseudoLabelLDA((10, 20)).fit(x)  # k > N/4: nothing to learn from
    assert np.allclose(lda.transform(x), x, atol=1e-6)


@pytest.mark.parametrize("starts", [1, 3])
def test_the_fitted_projection_survives_save_and_load(tmp_path, starts):
    x, _ = clustered()
    blocks = {"head.a": x[:, :60], "whole.b": x[:, 60:]}
    spec = [Block("head", "a"), Block("whole", "b", 0.5)]
    fusion = FusionConfig(pseudo_lda_ks=(10, 20), pseudo_lda_starts=starts)
    fuser = Fuser(spec, fusion).fit(blocks)
    fused = fuser.transform(blocks)
    assert fused.shape == (300, fuser.output_dim) == (300, 96 + starts * (9 + 19))
    fuser.save(tmp_path / "f.npz")
    again = Fuser.load(tmp_path / "f.npz", spec, fusion)
    assert np.allclose(again.transform(blocks), fused, atol=1e-5)


def test_soft_colour_bins_see_neighbouring_hues_as_alike():
    from PIL import Image

    def flat(h):  # a saturated, bright colour of OpenCV hue h (0..179)
        import cv2

        hsv = np.full((32, 32, 3), (h, 230, 230), np.uint8)
        return Image.fromarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))

    # hues 9 and 11 straddle a bin edge (bins are 10 hue steps wide); 179 and 1 wrap around
    for a, b in ((9, 11), (179, 1)):
        soft = describe("soft_grid3", [flat(a), flat(b)])
        hard = describe("hsv_grid3", [flat(a), flat(b)])
        assert soft[0] @ soft[1] > 0.7 > hard[0] @ hard[1]

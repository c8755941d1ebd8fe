import numpy as np
import pytest

from lookalike.config import Block, FusionConfig, PipelineConfig, get_preset, list_presets
from lookalike.errors import UnknownNameError
from lookalike.fuse.fuser import PCA, Fuser
from lookalike.vectors import l2_normalize


def test_presets_round_trip_through_dict():
    for name in list_presets():
        config = get_preset(name)
        assert PipelineConfig.from_dict(config.to_dict()) == config


def test_article_presets_have_the_documented_views():
    assert get_preset("v1").block_keys == ["whole.logits"]
    assert get_preset("v2").block_keys == ["head.logits"]
    assert get_preset("v3").block_keys == ["head.pooled", "whole.pooled"]
    assert [b.reduce_dim for b in get_preset("v4").blocks] == [512, 512]


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(UnknownNameError, match="'v4'"):
        get_preset("v44")


def _blocks(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return {"head.a": rng.normal(size=(n, 8)) * 10, "whole.b": rng.normal(size=(n, 3))}


def test_weighted_fusion_normalises_each_block_then_weights():
    blocks = _blocks()
    fuser = Fuser([Block("head", "a", 1.0), Block("whole", "b", 0.0)], FusionConfig("weighted"))
    fused = fuser.fit_transform(blocks)
    assert fused.shape == (40, 11)
    assert np.allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)
    # weight 0 removes the second block entirely
    assert np.allclose(fused[:, 8:], 0)
    assert np.allclose(fused[:, :8], l2_normalize(blocks["head.a"]), atol=1e-5)


def test_per_block_pca_reduces_and_survives_save_load(tmp_path):
    blocks = _blocks()
    spec = [Block("head", "a", reduce_dim=4), Block("whole", "b")]
    fusion = FusionConfig("concat", pca_dim=5, whiten=True)
    fuser = Fuser(spec, fusion).fit(blocks)
    fused = fuser.transform(blocks)
    assert fused.shape == (40, 5) and fuser.output_dim == 5
    fuser.save(tmp_path / "f.npz")
    again = Fuser.load(tmp_path / "f.npz", spec, fusion)
    assert np.allclose(again.transform(blocks), fused, atol=1e-6)


def test_pca_never_asks_for_more_components_than_the_data_has():
    x = np.random.default_rng(1).normal(size=(6, 20))
    assert PCA(512).fit(x).components_.shape[0] == 6


def test_transform_checks_feature_counts():
    blocks = _blocks()
    fuser = Fuser([Block("head", "a"), Block("whole", "b")], FusionConfig()).fit(blocks)
    with pytest.raises(ValueError, match="fitted on 8 dims"):
        fuser.transform({"head.a": np.ones((2, 9)), "whole.b": np.ones((2, 3))})


def test_transform_in_chunks_gives_the_rows_of_one_pass(monkeypatch):
    rng = np.random.default_rng(0)
    blocks = (Block("head", "a"), Block("whole", "b", 0.5, reduce_dim=4))
    vectors = {"head.a": rng.normal(size=(90, 12)), "whole.b": rng.normal(size=(90, 8))}
    fuser = Fuser(blocks, FusionConfig(pseudo_lda_ks=(5, 10))).fit(vectors)
    whole = fuser.transform(vectors)
    monkeypatch.setattr("lookalike.fuse.fuser.TRANSFORM_CHUNK", 7)
    np.testing.assert_allclose(fuser.transform(vectors), whole, atol=1e-6)
    assert whole.shape == (90, fuser.output_dim)
    assert fuser.transform({k: v[:0] for k, v in vectors.items()}).shape == (0, fuser.output_dim)

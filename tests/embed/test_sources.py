"""embed/sources.py: each feature comes from one registered source, which says what its
vectors depend on and whether stored ones are still its own."""

import numpy as np
import pytest
from PIL import Image

from lookalike.config import get_preset
from lookalike.embed.extractor import FeatureExtractor
from lookalike.embed.sources import (
    MODEL_FEATURE,
    SOURCE_ORDER,
    SOURCES,
    BackboneSource,
    DescriptorSource,
    TrainedModelSource,
)
from lookalike.errors import LookalikeError

FAKE = get_preset("v5").with_options(backbone="fake", detector="none")


def test_every_source_is_registered_and_asked_in_order():
    assert SOURCES.names() == sorted(SOURCE_ORDER)
    ext = FeatureExtractor(FAKE)
    assert [type(s) for s in ext.sources] == [TrainedModelSource, DescriptorSource, BackboneSource]
    assert isinstance(ext.source_of(f"head.{MODEL_FEATURE}"), TrainedModelSource)
    assert isinstance(ext.source_of("whole.hsv_grid3"), DescriptorSource)
    assert isinstance(ext.source_of("whole.gem"), BackboneSource)  # whatever no other offers
    assert [s.trained for s in ext.sources] == [True, False, False]


def test_fingerprints_name_what_the_vectors_depend_on():
    ext = FeatureExtractor(get_preset("default").with_options(backbone="fake", detector="none"))
    backbone = ext.fingerprint(["whole.gem"])
    assert backbone.startswith("fake:fake-v1:") and ext.fingerprint(["whole.hsv"]) == ""
    assert ext.fingerprint(["whole.gem", "whole.hsv"]) == backbone
    # A collection of these blocks records the backbone's only (no trained model in it).
    assert ext.fingerprints() == {"weights_hash": backbone}
    recorded = {"weights_hash": backbone}
    assert ext.stored_fits("whole.gem", recorded) and ext.stored_fits("whole.hsv", {})
    assert not ext.stored_fits("whole.gem", {"weights_hash": "fake:other:{}"})
    # Collections written before the options joined the hash stored "<backbone>:<weights>".
    assert ext.stored_fits("whole.gem", {"weights_hash": "fake:fake-v1"})


def test_each_source_computes_only_its_features_one_call_per_view():
    ext = FeatureExtractor(get_preset("default").with_options(backbone="fake", detector="none"))
    images = [Image.new("RGB", (64, 64), c) for c in ((200, 10, 10), (10, 10, 200))]
    views = [{"whole": im, "head": im.crop((0, 0, 32, 32))} for im in images]
    keys = ["whole.gem", "head.hsv", "whole.hsv", "head.gem"]
    out = ext.compute(views, keys)
    assert list(out) == keys and all(
        v.shape[0] == 2 and v.dtype == np.float32 for v in out.values()
    )
    alone = ext.sources[SOURCE_ORDER.index("descriptors")].compute(images, ["hsv"])
    np.testing.assert_array_equal(out["whole.hsv"], alone["hsv"])
    assert not np.allclose(out["whole.hsv"][0], out["whole.hsv"][1])  # colour means colour


def test_the_model_feature_without_a_model_says_how_to_make_one():
    ext = FeatureExtractor(FAKE)
    with pytest.raises(LookalikeError, match=r"pass --model MODEL_DIR .*lookalike train"):
        ext.fingerprints()
    # Nothing of it is loaded to route a block or to compute the others.
    assert isinstance(ext.source_of("whole.v5"), TrainedModelSource)
    assert ext.backbone_hash(["whole.gem"]).startswith("fake:")

"""v5 with the real weights on real anime faces: a head trained on a labelled half beats the
untrained default preset on the other half."""

from pathlib import Path

import pytest

from lookalike.collection import Collection
from lookalike.config import get_preset
from lookalike.embed import create_backbone
from lookalike.evaluate import evaluate_held_out
from lookalike.features import FeatureExtractor
from lookalike.indexer import Indexer
from lookalike.labels import folder_labels
from lookalike.train import TrainOptions

ANIME = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "anime-faces-dev"

pytestmark = pytest.mark.weights


def test_head_trained_on_half_beats_the_untrained_preset_on_the_other_half(tmp_path):
    root = tmp_path / "anime"
    for character in sorted(p.name for p in ANIME.iterdir())[:5]:
        (root / character).mkdir(parents=True)
        for image in sorted((ANIME / character).glob("*.jpg"))[:10]:
            (root / character / image.name).symlink_to(image)
    # No detector: the crops are tight faces, so the head view is the fallback crop anyway.
    config = get_preset("default").with_options(detector="none")
    extractor = FeatureExtractor(config, create_backbone("efficientnet-lite0"))
    Indexer(root, tmp_path / "coll", config, extractor, progress=False).run()
    coll = Collection.open(tmp_path / "coll")
    labels = folder_labels([r.path for r in coll.catalog.by_status("ok")])
    held = evaluate_held_out(
        coll, labels, ["default", "v5"], 0.5, k=4, options=TrainOptions(progress=False)
    )
    scores = {s.preset: s.precision_at_k for s in held.scores}
    assert len(held.test_paths) == 25 and not set(held.train_paths) & set(held.test_paths)
    assert scores["v5"] > scores["default"], scores

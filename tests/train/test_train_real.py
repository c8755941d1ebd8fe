"""v5 with the real weights on real anime faces: a model trained on a labelled half beats the
article's best untrained preset on the other half; what the training tunes and stores."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lookalike.cli import main
from lookalike.config import get_preset
from lookalike.embed import create_backbone
from lookalike.embed.extractor import FeatureExtractor
from lookalike.embed.trained_model import OUTPUTS, ModelError, load_model
from lookalike.evaluate.evaluation import evaluate_held_out
from lookalike.indexing.indexer import Indexer
from lookalike.load.images import load_image
from lookalike.load.labels import folder_labels
from lookalike.search.searcher import Searcher
from lookalike.store import blocks as blockstore
from lookalike.store.collection import Collection
from lookalike.train import TrainOptions

pytestmark = pytest.mark.weights


@pytest.fixture
def anime(shared_dataset) -> Path:
    return shared_dataset("anime-faces-dev")


def _link_characters(anime: Path, tmp_path: Path, characters: int, per_character: int) -> Path:
    """The first characters of the shared dataset, linked (not copied) into tmp_path/anime."""
    root = tmp_path / "anime"
    for character in sorted(p.name for p in anime.iterdir() if p.is_dir())[:characters]:
        (root / character).mkdir(parents=True)
        for image in sorted((anime / character).glob("*.jpg"))[:per_character]:
            (root / character / image.name).symlink_to(image)
    return root


def test_model_trained_on_half_beats_the_untrained_preset_on_the_other_half(
    tmp_path, monkeypatch, anime
):
    root = _link_characters(anime, tmp_path, 5, 10)
    monkeypatch.setenv("LOOKALIKE_RUNTIME", "torch")
    # No detector: the crops are tight faces, so the head view is the fallback crop anyway.
    config = get_preset("default").with_options(detector="none")
    extractor = FeatureExtractor(config, create_backbone("efficientnet-lite0"))
    Indexer(root, tmp_path / "coll", config, extractor, progress=False).run()
    coll = Collection.open(tmp_path / "coll")
    labels = folder_labels([r.path for r in coll.catalog.by_status("ok")])
    # Lite0 on 128 px inputs for 6 epochs: about a minute on 2 CPU cores.
    quick = TrainOptions(network="efficientnet-lite0", input_size=128, epochs=6, progress=False)
    held = evaluate_held_out(coll, labels, ["v4", "v5"], 0.5, k=4, options=quick, progress=False)
    scores = {s.preset: s.precision_at_k for s in held.scores}
    assert len(held.test_paths) == 25 and not set(held.train_paths) & set(held.test_paths)
    # v4: the article's best untrained preset (ImageNet features). Against the unlabelled
    # `default` the 25 held-out images are too few to decide; docs/v5.md measures that on
    # the whole dev set.
    assert scores["v5"] > scores["v4"], scores


def test_training_tunes_a_network_of_its_own_and_only_v5_blocks_are_computed(
    tmp_path, monkeypatch, anime
):
    root = _link_characters(anime, tmp_path, 2, 4)
    # Eager PyTorch: no ONNX export of the fine-tuned weights in a unit test.
    monkeypatch.setenv("LOOKALIKE_RUNTIME", "torch")
    coll_path, model_dir = tmp_path / "coll", tmp_path / "model"
    assert main(["index", str(root), "-c", str(coll_path), "--detector", "none", "-q"]) == 0
    coll = Collection.open(coll_path)
    weights_before = coll.weights_hash
    # Lite0 and the last stage only: a quick run (the default tunes every layer of Lite2).
    quick = ["--network", "efficientnet-lite0", "--layers", "last", "--epochs", "1", "-q"]
    train = ["train", str(coll_path), "--labels", "folders", *quick]
    assert main([*train, "--out", str(model_dir)]) == 0
    model = load_model(model_dir)
    assert model.config.output == "probs+embedding"  # the default
    original = create_backbone("efficientnet-lite0", runtime="torch")
    tuned = create_backbone(
        "efficientnet-lite0", weights_path=model_dir / "backbone.safetensors", runtime="torch"
    )
    assert model.config.backbone_hash == f"efficientnet-lite0:{tuned.weights_hash}"
    before, after = original.torch_model().state_dict(), tuned.torch_model().state_dict()
    changed = {k.rsplit(".", 2)[0] for k in before if not torch.equal(before[k], after[k])}
    # Lite0's last stage is its 16th block (320 channels), then the head conv and its norm.
    assert {k.split(".")[0] for k in changed} == {"_blocks", "_conv_head", "_bn1"}
    assert {k.split(".")[1] for k in changed if k.startswith("_blocks")} == {"15"}
    image = load_image(next(root.glob("*/*.jpg")))
    probs = model.with_output("probs").image_vectors([image, image])
    assert probs.shape == (2, 2)  # one task, two characters
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    embedding = model.with_output("embedding").image_vectors([image])
    assert embedding.shape == (1, original.outputs["gem"])
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-5)
    # The default: the probabilities at unit length beside the embedding, halves of equal weight.
    both = model.image_vectors([image])
    unit = probs[:1] / np.linalg.norm(probs[:1])
    np.testing.assert_allclose(both, np.hstack([unit, embedding]) / np.sqrt(2), atol=1e-6)

    read = []
    real = blockstore.load_image
    monkeypatch.setattr(blockstore, "load_image", lambda p: read.append(p) or real(p))
    assert main(["index", str(root), "-c", str(coll_path), "--model", str(model_dir), "-q"]) == 0
    # Each image once, for its v5 blocks only: the collection's own blocks stay as stored.
    assert len(read) == 8
    coll = Collection.open(coll_path)
    assert coll.weights_hash == weights_before and coll.config.preset == "v5"
    assert len(Searcher(coll_path).query(str(next(root.glob("*/*.jpg")))).matches) == 4

    (model_dir / "backbone.safetensors").write_bytes(b"not the trained network")
    with pytest.raises(ModelError, match=r"does not match model\.json"):
        load_model(model_dir)


def test_held_out_evaluation_scores_only_held_out_images(tmp_path, monkeypatch, anime):
    root = _link_characters(anime, tmp_path, 2, 6)
    monkeypatch.setenv("LOOKALIKE_RUNTIME", "torch")
    config = get_preset("default").with_options(detector="none")
    Indexer(root, tmp_path / "coll", config, progress=False).run()
    coll = Collection.open(tmp_path / "coll")
    labels = folder_labels([r.path for r in coll.catalog.by_status("ok")])
    options = TrainOptions(
        network="efficientnet-lite0",
        epochs=2,
        val_fraction=0.34,  # a validation image per character: the early-stopping path
        progress=False,
    )
    held = evaluate_held_out(
        coll, labels, ["v5"], 0.5, k=2, options=options, outputs=OUTPUTS, progress=False
    )
    # The model's own output first, as "v5" (probs+embedding), then the others.
    assert [s.preset for s in held.scores] == ["v5", "v5:probs", "v5:logits", "v5:embedding"]
    assert len(held.test_paths) == 6 and not set(held.train_paths) & set(held.test_paths)
    assert all(0.0 <= s.precision_at_k <= 1.0 and s.queries == 6 for s in held.scores)


def test_layers_all_trains_every_layer_but_the_stem():
    from lookalike.errors import LookalikeError
    from lookalike.train.network import trainable_parameters

    net = create_backbone("efficientnet-lite0", runtime="torch").torch_model()
    last = {id(p) for p in trainable_parameters(net, "last")}
    every = trainable_parameters(net, "all")
    trained = {name.split(".")[0] for name, p in net.named_parameters() if p.requires_grad}
    assert trained == {"_blocks", "_conv_head", "_bn1"}  # not _conv_stem, _bn0
    assert all(p.requires_grad for p in net._blocks[0].parameters())
    assert not any(p.requires_grad for p in net._conv_stem.parameters())
    assert last < {id(p) for p in every}
    with pytest.raises(LookalikeError, match="unknown layers"):
        trainable_parameters(net, "some")
    trainable_parameters(net, "all", frozen_blocks=3)
    assert not any(p.requires_grad for b in net._blocks[:3] for p in b.parameters())
    assert all(p.requires_grad for b in net._blocks[3:] for p in b.parameters())


# Real facts about the anime-full-dev characters, one column each: who, which series, and
# (for the Pokemon only) the type; a picture may lack a label of a task.
SERIES = {"ahagon_umiko": "new_game", "sakura_nene": "new_game", "suzukaze_aoba": "new_game"}
SERIES |= {"yagami_kou": "new_game", "doraemon": "doraemon"}
POKEMON_TYPE = {
    "bulbasaur": "grass",
    "charmander": "fire",
    "squirtle": "water",
    "pikachu": "electric",
    "mewtwo": "psychic",
}


def test_one_network_learns_three_label_columns_and_evaluate_scores_each(
    tmp_path, monkeypatch, capsys, shared_dataset
):
    full = shared_dataset("anime-full-dev")
    root = _link_characters(full, tmp_path, 10, 3)
    monkeypatch.setenv("LOOKALIKE_RUNTIME", "torch")
    coll = tmp_path / "coll"
    # No detector: what is learned from the labels is the point here, not the head boxes.
    assert main(["index", str(root), "-c", str(coll), "--detector", "none", "-q"]) == 0
    rows = ["file,character,series,type"]
    for image in sorted(root.glob("*/*.jpg")):
        who = image.parent.name
        series = SERIES.get(who, "pokemon")
        rows.append(f"{who}/{image.name},{who},{series},{POKEMON_TYPE.get(who, '')}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    model = tmp_path / "model"
    quick = ["--network", "efficientnet-lite0", "--input-size", "96", "--epochs", "2", "-q"]
    assert main(["train", str(coll), "--labels", str(labels), *quick, "--out", str(model)]) == 0
    tasks = {t.name: t.classes for t in load_model(model).config.tasks}
    assert tasks == {
        "character": tuple(sorted(p.name for p in root.iterdir())),
        "series": ("doraemon", "new_game", "pokemon"),
        "type": ("electric", "fire", "grass", "psychic", "water"),
    }
    assert main(["index", str(root), "-c", str(coll), "--model", str(model), "-q"]) == 0
    expected = {"character": 30, "series": 30, "type": 15}  # only the Pokemon have a type
    capsys.readouterr()
    for task, labelled in expected.items():
        args = ["evaluate", str(coll), "--labels", str(labels), "--task", task, "--json"]
        assert main([*args, "--preset", "v5", "-q"]) == 0
        (score,) = json.loads(capsys.readouterr().out)["presets"]
        assert score["preset"] == "v5" and score["queries"] == labelled
        assert 0.0 <= score["precision_at_k"] <= 1.0

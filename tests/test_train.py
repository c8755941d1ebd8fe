"""v5: training a multi-task head on labels, saving it, indexing with it, and scoring it
without leaks. Fake backbone and the built-in drawn sample: no weights, a few seconds."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

import lookalike.train
from lookalike import blockstore, indexer
from lookalike.cli import main
from lookalike.collection import Collection
from lookalike.config import PipelineConfig, get_preset
from lookalike.demo_data import generate_sample
from lookalike.errors import LabelsError, LookalikeError
from lookalike.evaluate import evaluate_held_out
from lookalike.features import FeatureExtractor
from lookalike.indexer import Indexer
from lookalike.labels import load_labels
from lookalike.search import Searcher
from lookalike.train import (
    HeadError,
    TrainOptions,
    encode_targets,
    load_head,
    save_head,
    stratified_split,
    train_head,
)

FAST = TrainOptions(epochs=15, patience=5, progress=False)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return generate_sample(
        tmp_path_factory.mktemp("sample"), n_characters=3, images_per_character=6, size=96
    )


@pytest.fixture(scope="module")
def coll(sample, tmp_path_factory):
    path = tmp_path_factory.mktemp("coll") / "c"
    config = get_preset("default").with_options(backbone="fake", detector="none")
    Indexer(sample, path, config, progress=False).run()
    return Collection.open(path)


def labels_of(coll, spec):
    gen = coll.require_generation()
    return load_labels(spec, [r.path for r in coll.catalog.get_many(gen.ids.tolist()).values()])


def test_train_index_query_from_the_command_line(sample, tmp_path, monkeypatch):
    coll = tmp_path / "coll"
    fake = ["--backbone", "fake", "--detector", "none", "-q"]
    assert main(["index", str(sample), "-c", str(coll), *fake]) == 0
    head = tmp_path / "head"
    args = ["train", str(coll), "--labels", str(sample / "labels.csv"), "--epochs", "10"]
    assert main([*args, "--out", str(head), "-q"]) == 0
    config = json.loads((head / "head.json").read_text())
    assert [t["name"] for t in config["tasks"]] == [
        "character",
        "hair",
        "eyes",
        "outfit",
        "background",
        "expression",
    ]
    assert config["features"] == [["gem", 64], ["gem_mid", 32], ["hsv_grid3", 2592]]
    assert config["backbone_hash"].startswith("fake:fake-v1")

    # Switching the collection to the head re-uses the stored features: no image is read.
    def no_images(*_a, **_k):
        raise AssertionError("an image was read")

    monkeypatch.setattr(blockstore, "load_image", no_images)
    monkeypatch.setattr(indexer, "load_image", no_images)
    assert main(["index", str(sample), "-c", str(coll), "--head", str(head), "-q"]) == 0
    stored = Collection.open(coll)
    assert stored.config.preset == "v5" and stored.config.head_dir == str(head.resolve())
    n_outputs = sum(len(t["classes"]) for t in config["tasks"])
    # The two views' task outputs, and the appearance blocks the head read.
    assert stored.manifest["dims"]["fused"] == 2 * (n_outputs + 64 + 32 + 2592)
    monkeypatch.undo()

    # A query image from outside the collection goes through the head too.
    outside = tmp_path / "query.png"
    outside.write_bytes(next(sample.glob("*/000.png")).read_bytes())
    result = Searcher(coll).query(str(outside))
    assert len(result.matches) == 4


def test_a_head_trained_again_in_its_folder_is_switched_to(sample, tmp_path):
    from lookalike.train import head_blocks

    coll = tmp_path / "coll"
    assert main(["index", str(sample), "-c", str(coll), "--backbone", "fake", "-q"]) == 0
    head = tmp_path / "head"
    train = ["train", str(coll), "--labels", "folders", "--epochs", "5", "--out", str(head)]
    index = ["index", str(sample), "-c", str(coll), "--head", str(head), "-q"]
    blocks = []
    for seed in ("0", "1"):  # the same folder, trained again: other weights
        assert main([*train, "--seed", seed, "-q"]) == 0
        assert main(index) == 0
        stored = Collection.open(coll)
        trained = load_head(head)
        assert stored.head_fingerprint == trained.fingerprint
        gen = stored.require_generation()
        keys = [f"{v}.{f}" for v in ("whole", "head") for f in trained.features]
        hashed = FeatureExtractor(stored.config).backbone_hash(keys)
        expected = head_blocks(trained, {k: gen.block(k) for k in keys}, hashed)
        # Blocks are stored as float16 (collection.BLOCK_DTYPE): equal to its precision.
        np.testing.assert_allclose(gen.block("head.v5"), expected["head.v5"], rtol=2e-3, atol=1e-3)
        blocks.append(np.asarray(gen.block("head.v5")))
    assert not np.allclose(blocks[0], blocks[1])


def test_indexing_a_new_collection_with_a_head(sample, coll, tmp_path):
    head, _ = train_head(coll, labels_of(coll, "folders"), options=FAST)
    save_head(tmp_path / "head", head.config, head.model)
    config = get_preset("v5").with_options(
        backbone="fake", detector="none", head_dir=str(tmp_path / "head")
    )
    summary = Indexer(sample, tmp_path / "v5", config, progress=False).run()
    assert summary.total_indexed == 18
    gen = Collection.open(tmp_path / "v5").require_generation()
    assert gen.block("head.v5").shape == (18, 3)  # one task, three characters


def test_saved_head_gives_the_same_vectors_and_refuses_other_features(coll, tmp_path):
    head, result = train_head(coll, labels_of(coll, "folders"), options=FAST)
    assert set(result.val_accuracy) == {"character"}
    folder = save_head(tmp_path / "h", head.config, head.model)
    loaded = load_head(folder)
    x = {
        f: np.ones((2, d), np.float32)
        for f, d in (("gem", 64), ("gem_mid", 32), ("hsv_grid3", 2592))
    }
    trained_on = head.config.backbone_hash
    np.testing.assert_array_equal(loaded.vectors(x, trained_on), head.vectors(x, trained_on))
    with pytest.raises(HeadError, match="backbone 'efficientnet-lite0:abc'"):
        loaded.vectors(x, "efficientnet-lite0:abc")
    with pytest.raises(HeadError, match="'hsv_grid3' has 10 dims, trained on 2592"):
        loaded.vectors({**x, "hsv_grid3": np.ones((2, 10), np.float32)}, trained_on)
    (folder / "head.safetensors").write_bytes(b"not tensors")
    with pytest.raises(HeadError, match=r"does not match head\.json"):
        load_head(folder)


def test_a_finetune_head_of_the_old_kind_or_without_its_network_is_refused(coll, tmp_path):
    head, _ = train_head(coll, labels_of(coll, "folders"), options=FAST)
    # The earlier finetune mode: a head on the features of a replaced backbone, no network.
    old = replace(head.config, mode="finetune")
    with pytest.raises(HeadError, match="from an earlier lookalike"):
        load_head(save_head(tmp_path / "old", old, head.model))
    missing = replace(head.config, mode="finetune", network="efficientnet-lite0")
    with pytest.raises(HeadError, match=r"needs its backbone\.safetensors, which is missing"):
        load_head(save_head(tmp_path / "missing", missing, head.model))


def test_same_seed_same_head(coll):
    labels = labels_of(coll, "folders")
    a, _ = train_head(coll, labels, options=FAST)
    b, _ = train_head(coll, labels, options=FAST)
    for key, value in a.model.state_dict().items():
        assert np.array_equal(value.numpy(), b.model.state_dict()[key].numpy()), key


def test_label_errors_name_the_task(sample, tmp_path):
    paths = ["a/1.png", "a/2.png", "b/1.png"]
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("file,character,hair\na/1.png,x,red\na/2.png,y,red\nb/1.png,,red\n")
    labels = load_labels(str(csv_path), paths)
    with pytest.raises(LabelsError, match="task 'hair': every labelled image is 'red'"):
        encode_targets(labels, paths)
    with pytest.raises(LabelsError, match="no label column 'eyes'"):
        encode_targets(labels, paths, ["eyes"])
    tasks, targets = encode_targets(labels, paths, ["character"])
    assert tasks[0].classes == ("x", "y") and targets[:, 0].tolist() == [0, 1, -1]


def test_v5_without_a_head_says_what_to_do():
    ext = FeatureExtractor(get_preset("v5").with_options(backbone="fake", detector="none"))
    with pytest.raises(LookalikeError, match="needs a trained head: pass --head"):
        ext.compute([], ["head.v5"])


def test_manifests_written_before_head_dir_still_load():
    data = get_preset("default").to_dict()
    del data["head_dir"]
    assert PipelineConfig.from_dict(data) == get_preset("default")


def test_stratified_split_keeps_every_class_on_both_sides():
    strata = ["a"] * 5 + ["b"] * 2 + ["c"] * 9
    first, rest = stratified_split(strata, 0.5, seed=3)
    assert not set(first) & set(rest) and len(first) + len(rest) == len(strata)
    for value in "abc":
        rows = {i for i, s in enumerate(strata) if s == value}
        assert rows & set(first) and rows & set(rest)
    again = stratified_split(strata, 0.5, seed=3)
    assert np.array_equal(first, again[0])
    with pytest.raises(LabelsError, match="strictly between 0 and 1"):
        stratified_split(strata, 1.0, seed=0)


def test_held_out_protocol_never_scores_a_training_image(sample, coll, monkeypatch):
    labels = labels_of(coll, str(sample / "labels.csv"))
    trained_on, scored = [], []
    real_train, real_score = lookalike.train.train_head, lookalike.evaluate.score_vectors

    def spy_train(coll_, labels_, rows=None, **kw):
        trained_on.append(list(rows))
        return real_train(coll_, labels_, rows=rows, **kw)

    def spy_score(name, config, fused, y, feel, k):
        scored.append(len(fused))
        return real_score(name, config, fused, y, feel, k)

    monkeypatch.setattr(lookalike.train, "train_head", spy_train)
    monkeypatch.setattr(lookalike.evaluate, "score_vectors", spy_score)
    held = evaluate_held_out(
        coll, labels, ["default", "v5"], 0.5, k=2, options=FAST, outputs=("probs", "embedding")
    )
    assert [s.preset for s in held.scores] == ["default", "v5", "v5:embedding"]
    train, test = set(held.train_paths), set(held.test_paths)
    assert not train & test and len(train | test) == 18
    # The head learned from the training rows only, and every row scored is a test row.
    gen = coll.require_generation()
    records = coll.catalog.get_many(gen.ids.tolist())
    assert {records[int(gen.ids[r])].path for r in trained_on[0]} == train
    assert scored == [len(test)] * 3 and all(s.queries == len(test) for s in held.scores)
    with open(sample / "labels.csv", newline="") as handle:
        character = {row["file"]: row["character"] for row in csv.DictReader(handle)}
    counts = [sum(character[p] == c for p in test) for c in set(character.values())]
    assert counts == [3, 3, 3]  # half of each character


def test_augmented_features_train_the_head_and_are_computed_once(coll, monkeypatch):
    labels = labels_of(coll, "folders")
    options = TrainOptions(epochs=5, patience=5, progress=False, augmentations=("flip", "shift"))
    head, _ = train_head(coll, labels, options=options)
    assert head.config.trained["augmentations"] == ["flip", "shift"]
    cached = sorted(p.name for p in coll.cache_dir.rglob("*.flip.npz"))
    features = ("gem", "gem_mid", "hsv_grid3")
    assert cached == [f"{v}.{f}.flip.npz" for v in ("head", "whole") for f in features]

    def no_images(*_a, **_k):
        raise AssertionError("an image was read")

    monkeypatch.setattr(blockstore, "load_image", no_images)
    again, _ = train_head(coll, labels, options=options)  # from the cache: no image read
    for key, value in head.model.state_dict().items():
        assert np.array_equal(value.numpy(), again.model.state_dict()[key].numpy()), key


def test_augmentations_are_fixed_per_item_and_change_the_views(sample):
    from PIL import Image

    from lookalike.train.augment import augment_views

    image = Image.open(next(sample.glob("*/000.png"))).convert("RGB")
    views = {"whole": image, "head": image.crop((0, 0, 60, 60))}
    flipped = augment_views("flip", 7, views)
    assert np.array_equal(np.asarray(flipped["whole"]), np.asarray(image)[:, ::-1])
    a, b = augment_views("shift", 7, views), augment_views("shift", 7, views)
    assert np.array_equal(np.asarray(a["head"]), np.asarray(b["head"]))
    assert a["whole"].size == (round(96 * 0.88), round(96 * 0.88))
    with pytest.raises(LookalikeError, match="unknown augmentation 'blur'"):
        augment_views("blur", 7, views)


def test_strong_views_are_seeded_random_crops_that_leave_the_image_alone(sample):
    from PIL import Image

    from lookalike.train.augment import strong_view

    image = Image.open(next(sample.glob("*/000.png"))).convert("RGB")
    before = np.asarray(image).copy()
    views = [strong_view(image, np.random.default_rng(seed)) for seed in (0, 0, 1)]
    assert np.array_equal(np.asarray(views[0]), np.asarray(views[1]))
    assert not np.array_equal(np.asarray(views[0]), np.asarray(views[2]))
    for view in views:
        w, h = view.size
        assert view.mode == "RGB" and 8 <= w <= 96 and 8 <= h <= 96
    np.testing.assert_array_equal(np.asarray(image), before)  # the source is not drawn on


def test_finetune_needs_a_folder_and_an_efficientnet(coll, tmp_path):
    labels = labels_of(coll, "folders")
    with pytest.raises(LookalikeError, match="pass --out DIR"):
        train_head(coll, labels, options=TrainOptions(mode="finetune", progress=False))
    with pytest.raises(LookalikeError, match="unknown training mode 'partial'"):
        train_head(coll, labels, options=TrainOptions(mode="partial", progress=False))
    options = TrainOptions(mode="finetune", finetune_backbone="fake", progress=False)
    with pytest.raises(LookalikeError, match="needs an EfficientNet-Lite backbone, not 'fake'"):
        train_head(coll, labels, options=options, out=tmp_path / "h")


def test_cached_v5_blocks_depend_on_the_head(coll, sample, tmp_path):
    labels = labels_of(coll, "folders")
    paths = []
    for seed, output in ((0, "probs"), (1, "probs"), (0, "embedding")):
        head, _ = train_head(coll, labels, options=TrainOptions(**{**FAST.__dict__, "seed": seed}))
        folder = save_head(tmp_path / f"h{seed}{output}", head.config, head.model)
        config = get_preset("v5").with_options(
            backbone="fake", detector="none", head_dir=str(folder)
        )
        ext = FeatureExtractor(config, head=load_head(folder).with_output(output))
        paths.append(blockstore._cache_path(coll, ext, "head.v5", ""))
    assert len(set(paths)) == 3


def test_stored_blocks_of_other_weights_are_computed_again(coll, monkeypatch):
    gen = coll.require_generation()
    ext = FeatureExtractor(coll.config)
    cnn = next(k for k in coll.config.block_keys if ext.needs_backbone([k]))
    described = [k for k in coll.config.block_keys if not ext.needs_backbone([k])]
    stored = blockstore.blocks_for(coll, gen, [cnn], ext, progress=False)
    np.testing.assert_array_equal(stored[cnn], gen.block(cnn))
    read = []
    real = blockstore.load_image
    monkeypatch.setattr(blockstore, "load_image", lambda p: read.append(p) or real(p))
    monkeypatch.setitem(coll.manifest, "weights_hash", "fake:other-weights")
    again = blockstore.blocks_for(coll, gen, [cnn, *described], ext, progress=False)
    assert len(read) == 18  # the backbone output again; descriptors came from the store
    for key in described:
        np.testing.assert_array_equal(again[key], gen.block(key))

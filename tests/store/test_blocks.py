"""Feature blocks of a committed generation (lookalike.store.blocks): the stored ones, and
the others computed from the images once and cached per picture as float16."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from lookalike.embed.extractor import FeatureExtractor
from lookalike.load.images import load_image
from lookalike.store.blocks import Computed, Pictures, add_to_cache, blocks_for, keep_in_cache
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
        assert data["sha256"].tolist() == digests  # each row names its file's bytes
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
    with caplog.at_level(logging.WARNING, logger="lookalike.store.blocks"):
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
    pictures = Pictures.of(coll, gen)
    given = np.full((2, 64), 0.5, np.float32)
    add_to_cache(coll, extractor, WHOLE, pictures, np.array([4, 9]), given)
    out, computed = computing(coll, extractor, WHOLE)
    assert computed.pictures == N - 2  # rows 4 and 9 were given
    assert np.array_equal(out[WHOLE][[4, 9]], given)
    others = np.delete(np.arange(N), [4, 9])
    assert np.array_equal(out[WHOLE][others], from_images(coll, extractor, WHOLE)[others])


def test_pictures_are_named_by_their_bytes_and_for_a_head_view_by_their_box(coll) -> None:
    gen = coll.require_generation()
    pictures = Pictures.of(coll, gen)
    first = coll.catalog.get_many([int(gen.ids[0])])[int(gen.ids[0])]
    assert pictures.keys(head=False)[0] == (first.sha256,)
    assert pictures.keys(head=True)[0] == (first.sha256, *gen.head_boxes[0].tolist())

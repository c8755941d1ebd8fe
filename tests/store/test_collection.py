"""The on-disk collection (lookalike.store.collection): manifest, catalog, generations,
the writer's lock, and the errors a missing or damaged one gives."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lookalike.errors import (
    CollectionBusyError,
    CollectionError,
    DamagedPartError,
    IncompatibleCollectionError,
)
from lookalike.fuse.fitting import fit_fused_index
from lookalike.store.catalog import Catalog
from lookalike.store.collection import (
    BLOCK_DTYPE,
    CATALOG,
    FORMAT_VERSION,
    MANIFEST,
    READERS,
    Collection,
    Generation,
    read_manifest,
    round_to_stored,
)
from tests.end_to_end.test_pipeline import fake_config
from tests.store.test_catalog import record

# v3: two raw blocks side by side, so small random blocks fuse without a PCA to fit.
CONFIG = fake_config("v3")
DIMS = {"head.pooled": 8, "whole.pooled": 6}


def blocks_of(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {key: rng.normal(size=(n, d)).astype(np.float32) for key, d in DIMS.items()}


def commit(coll: Collection, n: int = 5, seed: int = 0) -> tuple[Generation, dict]:
    """A generation of `n` random items (ids 1..n) committed; its blocks as given."""
    blocks = blocks_of(n, seed)
    fuser, fused, index = fit_fused_index(CONFIG, blocks)
    ids = np.arange(1, n + 1)
    boxes = np.tile([0, 0, 10, 10], (n, 1))
    gen = coll.commit(ids, boxes, blocks, fuser, fused, index, {"ok": n, "error": 0})
    return gen, blocks


def created(tmp_path: Path) -> Collection:
    return Collection.create(tmp_path / "coll", tmp_path / "photos", CONFIG, "weights-a")


def test_create_writes_a_manifest_and_a_catalog_that_open_reads_back(tmp_path: Path) -> None:
    coll = created(tmp_path)
    assert sorted(p.name for p in coll.path.iterdir()) == [CATALOG, MANIFEST]
    manifest = json.loads((coll.path / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 6
    assert manifest["root"] == str((tmp_path / "photos").resolve())
    assert (manifest["weights_hash"], manifest["generation"]) == ("weights-a", None)
    assert Collection.exists(coll.path) and not Collection.exists(tmp_path)
    opened = Collection.open(coll.path)
    assert opened.config == CONFIG
    assert (opened.root, opened.weights_hash) == ((tmp_path / "photos").resolve(), "weights-a")
    assert opened.generation() is None
    assert opened.catalog.readonly and opened.catalog.all() == []


def test_create_in_an_empty_folder_the_user_made(tmp_path: Path) -> None:
    (tmp_path / "coll").mkdir()
    coll = created(tmp_path)
    assert Collection.open(coll.path).weights_hash == "weights-a"


def test_create_keeps_the_catalog_of_a_collection_that_lost_its_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "coll"
    folder.mkdir()
    old = Catalog(folder / CATALOG)
    old.upsert([record("a.png")])
    old.close()
    coll = created(tmp_path)
    [rec] = coll.catalog.all()
    assert rec.path == "a.png"  # its id stays, so a later run finds it


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: p.write_text("x"), "not a folder; choose a folder for the collection"),
        (lambda p: (p.mkdir(), (p / "x.txt").write_text("x")), "exists and is not empty"),
    ],
    ids=["a-file", "a-folder-of-other-things"],
)
def test_create_refuses_a_place_that_is_not_a_collection(
    tmp_path: Path, make: Callable[[Path], object], problem: str
) -> None:
    make(tmp_path / "coll")
    with pytest.raises(CollectionError, match=problem) as raised:
        created(tmp_path)
    assert str(raised.value).startswith(f"{tmp_path / 'coll'}: ")


def test_opening_a_missing_collection_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(CollectionError) as raised:
        Collection.open(tmp_path / "nope")
    assert (
        str(raised.value)
        == f"{tmp_path / 'nope'}: no such collection (run `lookalike index` first)"
    )


def test_opening_a_folder_without_a_manifest_says_it_is_not_a_collection(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match=re.escape(f"{tmp_path}: not a lookalike collection")):
        Collection.open(tmp_path)


def edit(change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Rewrite the manifest with `change` applied to it (in place; what it returns is unused)."""

    def apply(manifest: Path) -> None:
        data = json.loads(manifest.read_text())
        change(data)
        manifest.write_text(json.dumps(data))

    return apply


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda m: m.write_text("{not json"), "unreadable ("),
        (lambda m: m.write_bytes(b""), "unreadable ("),
        (lambda m: m.write_text("[]"), "not a manifest (a JSON list, not an object)"),
        (edit(lambda d: d.pop("root")), "damaged manifest (no root)"),
        (edit(lambda d: d.update(weights_hash=3)), "root and weights_hash must be text"),
        (
            edit(lambda d: d["config"].pop("blocks")),
            "damaged manifest (config: KeyError('blocks'))",
        ),
        (edit(lambda d: d.update(generation="../x")), "damaged manifest (generation '../x')"),
    ],
    ids=["not-json", "empty", "a-list", "no-root", "hash-a-number", "no-blocks", "bad-generation"],
)
def test_a_damaged_manifest_is_an_error_naming_it_and_saying_how_to_repair(
    tmp_path: Path, damage: Callable[[Path], None], problem: str
) -> None:
    coll = created(tmp_path)
    damage(coll.path / MANIFEST)
    with pytest.raises(CollectionError) as raised:
        Collection.open(coll.path)
    message = str(raised.value)
    assert message.startswith(f"{coll.path / MANIFEST}: ")
    assert problem in message
    assert f"run `lookalike index FOLDER --collection {coll.path}`" in message


@pytest.mark.parametrize("version", [1, 7])
def test_another_format_version_is_refused_with_what_to_do(tmp_path: Path, version: int) -> None:
    coll = created(tmp_path)
    edit(lambda d: d.update(format_version=version))(coll.path / MANIFEST)
    with pytest.raises(IncompatibleCollectionError) as raised:
        read_manifest(coll.path)
    message = str(raised.value)
    assert f"collection format version {version}" in message
    assert "reads versions 2, 3, 4, 5 and 6; re-index into a new collection" in message
    # Only a version-1 collection is told what the new format saves.
    assert ("dense 256-dim vectors" in message) == (version == 1)


@pytest.mark.parametrize("version", [2, 3, 4, 5])
def test_an_older_collection_is_read_and_its_next_commit_marks_it_6(
    tmp_path: Path, version: int
) -> None:
    # Versions 2 to 4 differ in how the codec, the fuser and the fused vectors are saved,
    # which are read either way; their settings name no k-means starts: they were fitted
    # with one, and say so once read. Version 5's name no LDA axes: they were fitted on 128.
    fusion = dataclasses.replace(
        CONFIG.fusion, pseudo_lda_ks=(2,), pseudo_lda_starts=3, pseudo_lda_axes=48
    )
    coll = Collection.create(
        tmp_path / "coll", tmp_path / "photos", dataclasses.replace(CONFIG, fusion=fusion), "w"
    )

    def as_older(manifest: dict) -> None:
        manifest.update(format_version=version)
        del manifest["config"]["fusion"]["pseudo_lda_axes"]
        if version < 5:
            del manifest["config"]["fusion"]["pseudo_lda_starts"]

    edit(as_older)(coll.path / MANIFEST)
    assert read_manifest(coll.path)["format_version"] == version
    opened = Collection.open(coll.path)
    starts = 3 if version == 5 else 1
    assert opened.config.fusion.pseudo_lda_starts == starts
    assert opened.config.fusion.pseudo_lda_axes == 128
    commit(opened)
    assert read_manifest(coll.path)["format_version"] == FORMAT_VERSION == 6
    assert Collection.open(coll.path).config.fusion.pseudo_lda_starts == starts
    assert Collection.open(coll.path).config.fusion.pseudo_lda_axes == 128


def test_dense_fused_vectors_are_stored_once_as_float16(tmp_path: Path) -> None:
    """A reduced layout's fused vectors are rounded to float16 before they are indexed
    (fitting.stored_precision) and stored so; the exact index holds the very bytes, linked:
    2 bytes a dimension a picture, once. Read back, the index answers as built."""
    fusion = dataclasses.replace(CONFIG.fusion, out_dim=4)
    config = dataclasses.replace(CONFIG, fusion=fusion)
    coll = Collection.create(tmp_path / "coll", tmp_path / "photos", config, "weights-a")
    blocks = blocks_of(30, seed=3)
    fuser, fused, index = fit_fused_index(config, blocks)
    assert fuser.reduces and np.array_equal(fused.astype(np.float16), fused)
    gen = coll.commit(np.arange(1, 31), np.zeros((30, 4)), blocks, fuser, fused, index, {})
    stored = gen.path / "fused.npy"
    assert np.load(stored).dtype == np.float16 and stored.stat().st_nlink == 2
    assert (gen.path / "index" / "exact.npy").stat().st_ino == stored.stat().st_ino
    np.testing.assert_array_equal(np.load(stored), fused)
    read = Collection.open(coll.path).require_generation().index()
    for got, want in zip(read.query(fused[:5], 4), index.query(fused[:5], 4), strict=True):
        np.testing.assert_array_equal(got, want)
    # A version-3 collection kept them as float32, its exact index a copy: read alike.
    for path in (stored, gen.path / "index" / "exact.npy"):
        path.unlink()  # one file, linked: each written anew
        np.save(path, fused.astype(np.float32))
    edit(lambda d: d.update(format_version=3))(coll.path / MANIFEST)
    old = Collection.open(coll.path).require_generation()
    assert old.fused().dtype == np.float32
    for got, want in zip(old.index().query(fused[:5], 4), index.query(fused[:5], 4), strict=True):
        np.testing.assert_array_equal(got, want)


def test_vectors_of_other_weights_are_refused(tmp_path: Path) -> None:
    coll = created(tmp_path)
    coll.check_weights("weights-a")  # the same weights: nothing to say
    with pytest.raises(IncompatibleCollectionError) as raised:
        coll.check_weights("weights-b-0123456789abcdef")
    message = str(raised.value)
    assert "other backbone weights (weights-a, now weights-b-01)" in message
    assert message.startswith(f"{coll.path}: ")


def test_a_collection_without_a_generation_says_why_it_cannot_answer(tmp_path: Path) -> None:
    coll = created(tmp_path)
    with pytest.raises(CollectionError, match="has no committed index yet"):
        coll.require_generation()
    with coll.write_lock(), pytest.raises(CollectionError, match="is being built; try again"):
        Collection.open(coll.path).require_generation()


def test_commit_writes_a_generation_that_reads_back(tmp_path: Path) -> None:
    coll = created(tmp_path)
    gen, blocks = commit(coll, n=5)
    assert gen.path == coll.path / "generations" / "gen-000001"
    assert gen.ids.tolist() == [1, 2, 3, 4, 5]
    assert gen.head_boxes.shape == (5, 4)
    for key, values in blocks.items():
        stored = gen.block(key)
        assert stored.dtype == BLOCK_DTYPE  # half the disk: blocks are float16
        assert np.array_equal(stored, values.astype(np.float16))
    assert gen.fused().dtype == np.float32 and gen.fused().shape == (5, 14)
    assert gen.index().count == 5 and gen.fuser().output_dim == 14
    assert gen.face_items() is None and gen.face_fused().shape == (0, 14)
    gen.check_sources()
    gen.check_derived()
    manifest = read_manifest(coll.path)  # what another process reads
    assert manifest["generation"] == "gen-000001"
    assert manifest["counts"] == {"ok": 5, "error": 0}
    assert manifest["dims"] == {"fused": 14, "head.pooled": 8, "whole.pooled": 6}
    assert Collection.open(coll.path).require_generation().path == gen.path


def test_each_commit_is_a_new_generation_and_one_still_read_is_kept(tmp_path: Path) -> None:
    coll = created(tmp_path)
    names = [commit(coll, n=3 + i, seed=i)[0].path.name for i in range(3)]
    assert names == ["gen-000001", "gen-000002", "gen-000003"]
    kept = sorted(p.name for p in (coll.path / "generations").iterdir())
    assert kept == ["gen-000003"]  # nobody reads the others: half the disk
    # A reader (another process, a `serve`) keeps its generation through later commits and
    # reads it whole; the first commit after it is gone removes it.
    reader = Collection.open(coll.path)
    held = reader.require_generation()
    commit(coll, n=6, seed=7)
    commit(coll, n=7, seed=8)
    kept = sorted(p.name for p in (coll.path / "generations").iterdir())
    assert kept == ["gen-000003", "gen-000005"]
    assert len(held.ids) == 5 and held.fused().shape[0] == 5 and held.index().count == 5
    del reader, held
    gc.collect()
    commit(coll, n=8, seed=9)
    assert sorted(p.name for p in (coll.path / "generations").iterdir()) == ["gen-000006"]
    gen = Collection.open(coll.path).require_generation()
    assert gen.path.name == "gen-000006" and len(gen.ids) == 8


def test_a_generation_of_before_the_readers_lock_stays_one_run_longer(tmp_path: Path) -> None:
    coll = created(tmp_path)
    first = commit(coll, n=3)[0].path
    (first / READERS).unlink()  # as written before the lock file
    commit(coll, n=4, seed=1)
    assert first.is_dir()  # a query may still be loading it
    commit(coll, n=5, seed=2)
    assert not first.is_dir()


@pytest.mark.parametrize(
    "damage, part, problem",
    [
        (lambda g: (g / "ids.npy").unlink(), "ids.npy", "missing"),
        (lambda g: (g / "ids.npy").write_bytes(b"garbage"), "ids.npy", "unreadable ("),
        (
            lambda g: np.save(g / "ids.npy", np.zeros((5, 2))),
            "ids.npy",
            "an array of shape (5, 2), not 1-D",
        ),
        (
            lambda g: np.save(g / "fused.npy", np.zeros(5)),
            "fused.npy",
            "an array of shape (5,), not 2-D",
        ),
        (lambda g: (g / "fuser.npz").write_bytes(b"PK"), "fuser.npz", "unreadable ("),
    ],
    ids=["ids-missing", "ids-garbage", "ids-2d", "fused-1d", "fuser-garbage"],
)
def test_a_damaged_part_names_itself_and_the_repair(
    tmp_path: Path, damage: Callable[[Path], object], part: str, problem: str
) -> None:
    coll = created(tmp_path)
    gen, _ = commit(coll)
    damage(gen.path)
    with pytest.raises(DamagedPartError) as raised:
        gen.check_sources()
        gen.check_derived()
    assert raised.value.problem.startswith(f"{gen.path / part}: {problem}")
    assert str(raised.value).endswith(f"; run {coll.repair} to repair it")


def test_parts_of_unequal_rows_are_damage(tmp_path: Path) -> None:
    coll = created(tmp_path)
    gen, _ = commit(coll, n=5)
    np.save(gen.path / "head_boxes.npy", np.zeros((4, 4), np.int32))
    with pytest.raises(DamagedPartError, match=r"head_boxes\.npy: 4 rows, but ids\.npy has 5"):
        gen.check_sources()


def test_a_generation_folder_gone_is_damage(tmp_path: Path) -> None:
    coll = created(tmp_path)
    gen, _ = commit(coll)
    gen.path.rename(gen.path.with_name("elsewhere"))
    with pytest.raises(DamagedPartError, match="this generation is missing"):
        Collection.open(coll.path).require_generation().ids  # noqa: B018


def test_one_writer_at_a_time_and_only_the_writer_may_change_the_catalog(tmp_path: Path) -> None:
    coll = created(tmp_path)
    other = Collection.open(coll.path)
    assert not coll.is_locked()
    with coll.write_lock():
        assert coll.is_locked() and other.is_locked()
        with pytest.raises(CollectionBusyError) as raised, other.write_lock():
            pass
        assert f"another `lookalike index` (pid {os.getpid()}) is writing" in str(raised.value)
        assert not coll.catalog.readonly
        coll.catalog.upsert([record("new.png")])
    assert not coll.is_locked()
    assert coll.catalog.readonly  # reopened read-only once the lock is let go
    assert [r.path for r in coll.catalog.all()] == ["new.png"]


def test_move_root_is_saved_in_the_manifest(tmp_path: Path) -> None:
    coll = created(tmp_path)
    coll.move_root(tmp_path / "moved")
    assert Collection.open(coll.path).root == (tmp_path / "moved").resolve()


def test_round_to_stored_gives_the_float16_values_in_place() -> None:
    block = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    expected = block.astype(np.float16).astype(np.float32)
    assert not np.array_equal(block, expected)  # float16 loses something here
    out = round_to_stored(block, rows=3)  # in parts of 3 rows: 4 parts, the last short
    assert out is block and np.array_equal(block, expected)

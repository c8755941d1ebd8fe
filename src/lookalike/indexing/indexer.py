"""The `index` run: scan a folder, embed what is new or changed, commit a new generation."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from lookalike.config import (
    PipelineConfig,
    blocks_to_compare,
    get_preset,
    preset_names_for_evaluation,
)
from lookalike.embed.extractor import FeatureExtractor
from lookalike.errors import CollectionError, DamagedPartError, ImageLoadError, LookalikeError
from lookalike.fileio import disk_full_is_an_error
from lookalike.fuse.fitting import (
    extend_fused_index,
    fit_fused_index,
    new_index,
    stored_precision,
)
from lookalike.fuse.fuser import Fuser
from lookalike.index import IncrementalIndex, VectorIndex
from lookalike.indexing.decode_pool import DecodePool
from lookalike.indexing.faces import compute_face_items
from lookalike.indexing.growth import grows_in_place
from lookalike.indexing.prepare import LoadedFile, ProcessedBatch, embed_loaded, load_record
from lookalike.indexing.switch import (
    SwitchReport,
    check_switchable,
    redetect_reasons,
    shared_backbone,
    switch_settings,
)
from lookalike.load.images import LoadLimits, file_sha256, iter_image_files
from lookalike.load.names import safe_display
from lookalike.store.blocks import add_to_cache, keeps_cache
from lookalike.store.cache_file import Pictures
from lookalike.store.catalog import FileRecord
from lookalike.store.codec import (
    KEPT_BASIS_MIN_ROWS,
    BlockBasis,
    CarriedRows,
    CodedBlock,
    bases_of,
    code_blocks,
)
from lookalike.store.collection import (
    BLOCK_DTYPE,
    Collection,
    Generation,
    round_to_stored,
)
from lookalike.store.faces import (
    FaceItems,
    carried_and_computed,
    coded_on,
    fuse_items,
    head_keys,
)
from lookalike.store.staging import Staging

log = logging.getLogger(__name__)

# Above this many pictures an index run caches only its own blocks: evaluate's exact
# leave-one-out scoring holds an n x n similarity matrix (1.6 GB at 20,000), and the
# compared blocks of EfficientNet-Lite0 take about 9 KB a picture (180 MB at 20,000).
EVALUATE_CACHE_MAX = 20_000


@dataclass
class IndexSummary:
    collection: Path
    scanned: int = 0
    embedded: int = 0
    unchanged: int = 0
    renamed: int = 0  # renamed or moved inside the root: kept their ids and vectors
    moved_root: bool = False  # the collection now indexes its folder's new place
    switch: SwitchReport | None = None  # the collection switched to other settings
    deleted: int = 0
    fallbacks: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0
    committed: bool = False
    total_indexed: int = 0

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    @property
    def nothing_changed(self) -> bool:
        """Whether the run found the folder as the collection has it and wrote nothing."""
        moved = self.embedded or self.renamed or self.deleted or self.moved_root
        return not (moved or self.committed or self.switch is not None)

    def lines(self) -> list[str]:
        out = [f"collection: {safe_display(self.collection)}"]
        if self.nothing_changed:
            out.append(f"nothing changed: {self.total_indexed} pictures ({self.seconds:.1f} s)")
            return out + (self._skipped_lines() if self.skipped else [])
        if self.moved_root:
            out.append("folder moved: the collection indexes the new folder, files kept their ids")
        if self.switch is not None:
            out += self.switch.lines()
        out += [
            f"indexed: {self.total_indexed} images ({self.embedded} embedded now, "
            f"{self.unchanged} unchanged, {self.renamed} renamed or moved, "
            f"{self.deleted} removed)",
            f"head crops from fallback (no face found): {self.fallbacks} of {self.embedded}",
        ]
        out += self._skipped_lines()
        # A rate only where something was embedded: "0.0 images/s" reads as a stall.
        rate = f" ({self.images_per_second:.1f} images/s)" if self.embedded else ""
        out.append(f"time: {self.seconds:.1f} s{rate}")
        return out

    def _skipped_lines(self) -> list[str]:
        out = [f"skipped: {len(self.skipped)}"]
        out += [f"  {safe_display(path)}: {reason}" for path, reason in self.skipped[:20]]
        if len(self.skipped) > 20:
            out.append(f"  ... and {len(self.skipped) - 20} more (lookalike info COLL --errors)")
        return out


def relative_key(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _stat_record(path: Path, root: Path) -> FileRecord:
    rel = relative_key(path, root)
    try:
        st = path.stat()
    except OSError:
        # Broken symlink or vanished file: the loader turns it into a clear reason.
        return FileRecord(rel, 0, 0, "pending")
    return FileRecord(rel, st.st_size, st.st_mtime_ns, "pending")


class Engine(Protocol):
    """Runs decode, detect and embed somewhere else (a Ray cluster), batch by batch."""

    def process(
        self,
        todo: Sequence[FileRecord],
        root: Path,
        config: PipelineConfig,
        limits: LoadLimits,
        batch_size: int,
    ) -> Iterator[ProcessedBatch]: ...


class Indexer:
    def __init__(
        self,
        root: Path,
        collection_path: Path,
        config: PipelineConfig | None = None,
        extractor: FeatureExtractor | None = None,
        batch_size: int = 32,
        limits: LoadLimits | None = None,
        progress: bool = True,
        workers: int | None = None,
        engine: Engine | None = None,
        processes: bool = False,
        moved_from: Path | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise LookalikeError(f"{root}: not a folder")
        self.collection_path = Path(collection_path)
        self.requested = config
        self._extractor = extractor
        self.batch_size = batch_size
        self.limits = limits or LoadLimits()
        self.progress = progress
        self.workers = workers or min(4, os.cpu_count() or 1)
        # Decode + detect in worker processes for big runs. Off by default in the library
        # (spawned workers re-import the caller's __main__); the CLI turns it on.
        self.processes = processes
        self.engine = engine  # None: this process, with a thread pool for decoding
        # The folder the collection indexed before it was moved to `root`.
        self.moved_from = Path(moved_from).resolve() if moved_from else None
        self._moved = False
        self._switch_to: PipelineConfig | None = None  # other settings than the stored ones
        self._weights_checked = False
        self._keys: list[str] = []  # the blocks each embedded file gets (set by _run)

    # -- opening -----------------------------------------------------------------
    def _open(self) -> Collection:
        if Collection.exists(self.collection_path):
            coll = Collection.open(self.collection_path)
            self._moved = self._check_root(coll)
            config = self.requested or coll.config
            if config != coll.config or _trained_blocks_stale(coll, self._extractor_for(config)):
                # Other settings, or a model trained again into the same folder: switched
                # under the lock (switch.py).
                check_switchable(coll, config)
                self._switch_to = config
                return coll
            # The weights are checked only before something is computed (`_check_weights`):
            # a run with nothing to embed never loads the backbone.
            self._extractor_for(config)
            return coll
        if next(iter_image_files(self.root), None) is None:
            raise LookalikeError(
                f"{self.root}: no image files in this folder; nothing to index (no collection "
                "was made)"
            )
        config = self.requested or get_preset("default")
        extractor = self._extractor_for(config)
        return Collection.create(self.collection_path, self.root, config, extractor.backbone_hash())

    def _check_root(self, coll: Collection) -> bool:
        """Whether the collection's folder moved to `root` (--moved-from); other roots are
        refused: a collection named by mistake would lose every file of its own folder."""
        if coll.root == self.root:
            return False
        if self.moved_from == coll.root:
            return True
        if self.moved_from is not None:
            raise LookalikeError(
                f"--moved-from {self.moved_from}: {self.collection_path} indexes {coll.root}, "
                "not that folder"
            )
        raise LookalikeError(
            f"{self.collection_path}: indexes {coll.root}, not {self.root}; use another "
            f"--collection folder, or add --moved-from {coll.root} if that folder moved here "
            "(its files keep their vectors)"
        )

    def _check_weights(self, coll: Collection) -> None:
        """Refuse to add vectors of other weights than the stored ones (loads the backbone)."""
        if not self._weights_checked:
            coll.check_weights(self._extractor_for(coll.config).backbone_hash())
            self._weights_checked = True

    def _extractor_for(self, config: PipelineConfig) -> FeatureExtractor:
        if self._extractor is None or self._extractor.config != config:
            backbone = shared_backbone(self._extractor, config) if self._extractor else None
            self._extractor = FeatureExtractor(config, backbone=backbone)
        return self._extractor

    # -- the run -------------------------------------------------------------------
    def run(self, wait: bool = False) -> IndexSummary:
        start = time.perf_counter()
        with disk_full_is_an_error(self.collection_path):
            summary = self._run(wait)
        summary.seconds = time.perf_counter() - start
        return summary

    def _run(self, wait: bool) -> IndexSummary:
        coll = self._open()
        summary = IndexSummary(coll.path)
        with coll.write_lock(wait=wait):
            coll.reload()
            if self._moved and coll.root != self.root:
                coll.move_root(self.root)
                summary.moved_root = True
            wanted = self._switch_to if self._switch_needed(coll) else None
            redetect = wanted is not None and bool(redetect_reasons(coll, wanted))
            if wanted is not None and redetect:  # every image is embedded again, below
                summary.switch = switch_settings(
                    coll, wanted, self._extractor_for(wanted), self.progress
                )
            else:  # new files of this run get the stored settings; the switch comes after
                self._extractor_for(coll.config)
            gen, rederive = (None, False) if redetect else self._base(coll)
            todo, deleted = self._plan(coll, gen, summary)
            self._keys = blocks_computed(coll.config, summary.scanned)
            if todo:
                self._check_weights(coll)
            self._embed(coll, todo, summary)
            changed = summary.embedded > 0 or bool(deleted) or gen is None or rederive
            changed = changed or _faces_stale(gen)
            if changed or Staging(coll.staging_dir).chunks():
                self._commit(coll, gen, rederive, deleted, summary)
            if wanted is not None and not redetect:
                summary.switch = switch_settings(
                    coll, wanted, self._extractor_for(wanted), self.progress
                )
        if not summary.committed:
            summary.total_indexed = int(coll.manifest.get("counts", {}).get("indexed", 0))
        return summary

    def _switch_needed(self, coll: Collection) -> bool:
        """Whether the switch asked for still holds once the lock is taken (another run may
        have made it meanwhile)."""
        wanted = self._switch_to
        if wanted is None:
            return False
        return wanted != coll.config or _trained_blocks_stale(coll, self._extractor_for(wanted))

    def _base(self, coll: Collection) -> tuple[Generation | None, bool]:
        """The committed generation this run builds on, and whether its fused vectors, fuser
        and index must be made again from its stored blocks.

        What is missing or damaged is repaired, with a warning: without a catalog (its ids
        name the generation's rows) or the generation's ids, head boxes or blocks, every
        image is embedded again; without the rest, it is rebuilt from the stored blocks.
        """
        gen = coll.generation()
        staging = Staging(coll.staging_dir)
        if coll.catalog.created and (gen is not None or staging.chunks()):
            log.warning("%s: no catalog; every image is embedded again", coll.catalog.path)
            staging.clear()
            return None, False
        if gen is None:
            return None, False
        try:
            gen.check_sources()
        except DamagedPartError as exc:
            log.warning("%s; every image is embedded again to repair it", exc.problem)
            return None, False
        try:
            gen.check_derived()
        except DamagedPartError as exc:
            log.warning("%s; rebuilding it from the stored features", exc.problem)
            return gen, True
        return gen, False

    def _plan(
        self, coll: Collection, gen: Generation | None, summary: IndexSummary
    ) -> tuple[list[FileRecord], list[str]]:
        """Which files to (re)process and which rows to drop: by size and mtime, then by
        content, so that a file renamed, moved inside the root or only touched keeps its id
        and its stored vectors."""
        catalog = coll.catalog
        known = {rec.path: rec for rec in catalog.all()}
        have = set(gen.ids.tolist()) if gen else set()
        have |= set(Staging(coll.staging_dir).load(coll.config.block_keys)[0])
        seen: set[str] = set()
        changed: list[FileRecord] = []
        for path in iter_image_files(self.root):
            rec = _stat_record(path, self.root)
            seen.add(rec.path)
            old = known.get(rec.path)
            same_file = old is not None and (old.size, old.mtime_ns) == (rec.size, rec.mtime_ns)
            if same_file and old.status == "ok" and old.id in have:
                summary.unchanged += 1
            elif same_file and old.status == "error":
                summary.skipped.append((old.path, old.error or "error"))
            else:
                changed.append(rec)
        summary.scanned = len(seen)
        vanished = [rec for path, rec in known.items() if path not in seen]
        todo, kept = match_by_content(changed, known, vanished, have, self.root)
        catalog.move(kept)  # before the new rows: a moved file's path is taken by its old row
        moved = {i for i, rec in kept if rec.path not in known}
        summary.renamed = len(moved)
        summary.unchanged += len(kept) - len(moved)
        deleted = [rec.path for rec in vanished if rec.id not in moved]
        summary.deleted = len(deleted)
        catalog.upsert(todo)  # as 'pending': gives each new file its id
        return todo, deleted

    def _load_one(self, rec: FileRecord) -> LoadedFile:
        return load_record(rec, self.root, self.limits, self.extractor)

    @property
    def extractor(self) -> FeatureExtractor:
        assert self._extractor is not None  # set by _open
        return self._extractor

    @contextlib.contextmanager
    def _loader(
        self, n_files: int
    ) -> Iterator[Callable[[Sequence[FileRecord]], Iterator[LoadedFile]]]:
        """A map over files that decodes and detects them in parallel workers."""
        # Processes only pay off when there is enough to do: each one starts a Python.
        if self.processes and n_files >= 4 * self.batch_size and self.workers > 1:
            pool = DecodePool(self.extractor.config, self.root, self.limits, self.workers)
            try:
                yield pool.map
            finally:
                pool.close()
        else:
            threads = ThreadPoolExecutor(self.workers)
            try:
                yield functools.partial(threads.map, self._load_one)
            finally:  # on Ctrl-C, do not decode the queued batches first
                threads.shutdown(cancel_futures=True)

    def _batches(self, todo: Sequence[FileRecord]) -> Iterator[list[LoadedFile]]:
        # Decoding and detection of the next batches overlap the embedding of this one.
        with self._loader(len(todo)) as load:
            pending = []
            for start in range(0, len(todo), self.batch_size):
                pending.append(load(todo[start : start + self.batch_size]))
                if len(pending) > 2:
                    yield list(pending.pop(0))
            for results in pending:
                yield list(results)

    def _processed(self, todo: Sequence[FileRecord]) -> Iterator[ProcessedBatch]:
        if self.engine is not None:
            yield from self.engine.process(
                todo, self.root, self.extractor.config, self.limits, self.batch_size
            )
            return
        for batch in self._batches(todo):
            yield embed_loaded(self.extractor, batch, self._keys)

    def _embed(self, coll: Collection, todo: list[FileRecord], summary: IndexSummary) -> None:
        if not todo:
            return
        staging = Staging(coll.staging_dir)
        bar = tqdm(
            total=len(todo),
            unit="img",
            desc="indexing",
            disable=not self.progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        try:
            for done in self._processed(todo):
                if len(done.ids):
                    staging.write(done.ids, done.blocks)  # vectors first: rows say ok once stored
                coll.catalog.upsert(done.records)
                for rec in done.records:
                    if rec.status != "ok":
                        summary.skipped.append((rec.path, rec.error or ""))
                    else:
                        summary.embedded += 1
                        summary.fallbacks += int(rec.fallback)
                bar.update(len(done.records))
        finally:
            bar.close()

    def _commit(
        self,
        coll: Collection,
        gen: Generation | None,
        rederive: bool,
        deleted: list[str],
        summary: IndexSummary,
    ) -> None:
        config = coll.config
        catalog = coll.catalog
        gone = set(deleted)
        live = [r for r in catalog.by_status("ok") if r.path not in gone]
        staging = Staging(coll.staging_dir)
        staged_row, chunks, _ = staging.load(config.block_keys)
        gen_row = {int(i): row for row, i in enumerate(gen.ids)} if gen else {}

        records = [r for r in live if r.id in staged_row or r.id in gen_row]
        growth = self._growth(coll, gen, rederive, records, set(staged_row), gen_row)
        if growth is not None:  # the committed rows first, in their order, then the new ones
            records.sort(key=lambda r: (r.id in staged_row, gen_row.get(r.id, 0)))
        ids = np.array([r.id for r in records], dtype=np.int64)
        from_stage = np.array([r.id in staged_row for r in records], dtype=bool)
        stage_rows = np.array([staged_row[r.id] for r in records if r.id in staged_row], np.int64)
        gen_rows = np.array([gen_row[r.id] for r in records if r.id not in staged_row], np.int64)
        blocks = {
            key: merged_block(
                key,
                staging.block(chunks, key),  # one block's staged rows in memory at a time
                stage_rows,
                gen.block(key) if gen and gen.has_block(key) else None,
                gen_rows,
                from_stage,
            )
            for key in config.block_keys
        }
        if len(records) == 0:
            raise LookalikeError(
                f"{self.root}: no image could be indexed ({len(summary.skipped)} skipped); "
                "nothing to search"
            )
        trained = self._extractor_for(config).trained_keys()
        # New pictures and a new fuser: the bases are fitted again too, on the stored rows as
        # they decode and the new ones, so a collection that grows into other characters
        # keeps what tells them apart (a basis kept from its first 200 of anime-faces-dev's
        # 600 pictures: P@4 0.865, refitted at each 50 added: 0.917; quality.md).
        refit = (
            from_stage.any() and growth is None and not self._store_keeps_fuser(coll, gen, rederive)
        )
        kept = gen.bases() if gen and not refit else {}
        carried = {
            key: CarriedRows(~from_stage, stored, gen_rows)
            for key in kept
            if gen and isinstance(stored := gen.block(key), CodedBlock)
        }
        # A store updated in place keeps its first bases for good: not fitted on a few rows.
        min_rows = KEPT_BASIS_MIN_ROWS if self._updated_in_place(config) else None
        coded = code_blocks(blocks, kept, exact=trained, carried=carried, min_rows=min_rows)
        if growth is not None and gen is not None:
            fuser, index = growth
            new = {key: block[len(gen.ids) :] for key, block in blocks.items()}
            log.info("adding %d rows to the committed index (no refit)", len(ids) - len(gen.ids))
            fuser, fused, index = extend_fused_index(fuser, gen.fused(), index, new)
        else:
            fuser, fused, index = self._fuse_and_index(
                coll, gen, rederive, records, blocks, set(staged_row), bases_of(coded)
            )
        boxes = np.array([r.head_box for r in records], dtype=np.int32).reshape(-1, 4)
        faces = coded_on(self._face_items(coll, gen, records, set(staged_row)), bases_of(coded))
        row_of = {int(i): row for row, i in enumerate(ids.tolist())}
        face_fused = fuse_items(fuser, faces, blocks, row_of)
        counts = {"indexed": len(records), **catalog.counts()}
        if gen is None:
            # Every block was computed now: record what computed them (extractor.stored_fits).
            # Otherwise the stored blocks keep their record; a switch re-records (switch.py).
            coll.manifest.update(self._extractor_for(config).fingerprints())
        coll.commit(ids, boxes, blocks, fuser, fused, index, counts, faces, face_fused, coded)
        pictures = Pictures(np.array([r.sha256 or "" for r in records], "<U64"), boxes)
        try:  # a cache: the committed generation stands without it
            self._cache_for_evaluate(coll, pictures, chunks, stage_rows, from_stage)
        except OSError as exc:
            log.warning("%s: the blocks evaluate compares were not cached (%s)", coll.path, exc)
        catalog.delete_paths(deleted)
        staging.clear()
        summary.committed = True
        summary.total_indexed = len(records)

    def _cache_for_evaluate(
        self,
        coll: Collection,
        pictures: Pictures,
        chunks: list[Path],
        stage_rows: np.ndarray,
        from_stage: np.ndarray,
    ) -> None:
        """The blocks `evaluate` compares, staged beside the config's from the same pass, go
        to the collection's cache (blockstore.py): its first run decodes none of them."""
        staging = Staging(coll.staging_dir)
        for key in self._keys:
            if key in coll.config.block_keys or not from_stage.any():
                continue
            try:
                parts = staging.block(chunks, key)
            except KeyError:  # staged by a run that did not compute it (or by the Ray engine)
                continue
            every = np.ones(len(stage_rows), dtype=bool)
            vectors = merged_block(key, parts, stage_rows, None, stage_rows[:0], every)
            rows = np.flatnonzero(from_stage)
            add_to_cache(coll, self.extractor, key, pictures, rows, vectors.astype(BLOCK_DTYPE))

    def _face_items(
        self,
        coll: Collection,
        gen: Generation | None,
        records: list[FileRecord],
        fresh: set[int],
    ) -> FaceItems:
        """The face items of the committed pictures: the generation's where the picture is
        unchanged, the others computed now (pictures with several faces only)."""
        previous = None
        if gen is not None:
            try:
                previous = gen.face_items()
            except DamagedPartError as exc:
                log.warning("%s; the face items are computed again", exc.problem)

        def compute(todo: Sequence[FileRecord]) -> FaceItems:
            self._check_weights(coll)
            extractor = self._extractor_for(coll.config)
            items = compute_face_items(todo, self.root, extractor, self.limits, self.progress)
            for block in items.blocks.values():  # fused from exactly what is stored
                round_to_stored(block)
            return items

        keys = head_keys(coll.config.block_keys)
        return carried_and_computed(previous, records, fresh, compute, keys)

    def _fuse_and_index(
        self,
        coll: Collection,
        gen: Generation | None,
        rederive: bool,
        records: list[FileRecord],
        blocks: dict[str, np.ndarray],
        staged: set[int],
        bases: dict[str, BlockBasis],
    ) -> tuple[Fuser, np.ndarray, VectorIndex]:
        """Fit the fuser and build the index; an external store (Milvus) gets only the changes.

        Such a store keeps the fuser fitted by its first commit: refitting (a PCA) would change
        every stored vector, and so rewrite the whole store at every run. `rederive`: the
        generation's fuser or index is damaged, so the store is written again in full.
        """
        config = coll.config
        index = new_index(config)
        if not isinstance(index, IncrementalIndex):
            return fit_fused_index(config, blocks, bases)
        # A store updated in place gets no query expansion: it would rewrite the
        # neighbours of every new item, i.e. most of the store, at every run.
        keep = self._store_keeps_fuser(coll, gen, rederive)
        if gen is not None and keep:
            fuser = gen.fuser()
        else:
            fuser = Fuser(config.blocks, config.fusion).fit(blocks, bases, refitted=False)
        fused = stored_precision(fuser, fuser.transform(blocks))
        ids = np.array([r.id for r in records], dtype=np.int64)
        staged_ids = np.array(sorted(staged), dtype=np.int64)
        # Staged ids too: a run killed after writing the store may have sent some.
        before = np.union1d(gen.ids if gen else np.zeros(0, np.int64), staged_ids)
        fresh = np.intersect1d(ids, staged_ids) if keep else None
        metadata = [
            {"path": r.path, "head_box": r.head_box, "fallback": r.fallback} for r in records
        ]
        index.update(ids, fused, metadata, fresh, np.setdiff1d(before, ids))
        return fuser, fused, index

    @staticmethod
    def _updated_in_place(config: PipelineConfig) -> bool:
        """Whether the preset's index is an external store updated in place (Milvus)."""
        return isinstance(new_index(config), IncrementalIndex)

    @staticmethod
    def _store_keeps_fuser(coll: Collection, gen: Generation | None, rederive: bool) -> bool:
        """Whether the commit keeps the generation's fuser for an external store updated in
        place (`_fuse_and_index`): its vectors, and the bases the fuser is stored on, stay."""
        index = new_index(coll.config)
        return (
            isinstance(index, IncrementalIndex)
            and gen is not None
            and not rederive
            and index.continues(coll.manifest.get("index_params"))
        )

    def _growth(
        self,
        coll: Collection,
        gen: Generation | None,
        rederive: bool,
        records: list[FileRecord],
        staged: set[int],
        committed: dict[int, int],
    ) -> tuple[Fuser, VectorIndex] | None:
        """The committed fuser and index to add this run's new rows to, when growth.py
        allows it (only pictures were added, few next to those the fuser was fitted on);
        else None: the run fits and builds anew. `committed`: the generation's id -> row."""
        if gen is None or rederive or self._updated_in_place(coll.config):
            return None
        kept = {r.id for r in records if r.id in committed and r.id not in staged}
        if len(kept) != len(committed) or len(records) <= len(committed):
            return None
        fuser, index = gen.fuser(), gen.index()
        if not grows_in_place(coll.config, fuser.fitted_rows_, len(kept), len(records), index):
            return None
        return fuser, index


def blocks_computed(config: PipelineConfig, pictures: int) -> list[str]:
    """The blocks an index run computes for each file it embeds: the config's, and those
    `evaluate` compares by default (they come from the same decode and backbone pass, and
    are cached), for collections that keep a cache (store/blocks.py: from 1,000 pictures)
    and of at most EVALUATE_CACHE_MAX pictures."""
    if pictures > EVALUATE_CACHE_MAX or not keeps_cache(pictures):
        return list(config.block_keys)
    compared = blocks_to_compare(config, preset_names_for_evaluation())
    return list(dict.fromkeys([*config.block_keys, *compared]))


def _faces_stale(gen: Generation | None) -> bool:
    """Whether the generation lacks its face items (written before them) or has them
    damaged: then a run with nothing new to embed still commits, computing them."""
    if gen is None:
        return False
    try:
        return gen.face_items() is None
    except DamagedPartError as exc:
        log.warning("%s; the face items are computed again", exc.problem)
        return True


def match_by_content(
    changed: Sequence[FileRecord],
    known: dict[str, FileRecord],
    vanished: Sequence[FileRecord],
    have: set[int],
    root: Path,
) -> tuple[list[FileRecord], list[tuple[int, FileRecord]]]:
    """Split new and changed files into those to embed and those whose content is stored.

    Returns (to embed, kept): kept pairs a stored row's id with the file it is now: a new
    path whose bytes (sha256) are those of a vanished file (renamed or moved; the vectors
    are the same, since they depend on the bytes only), or a known path whose mtime
    changed but not its bytes. Only files of a size some stored row has are hashed.
    """
    stored = [r for r in vanished if r.status == "ok" and r.id in have and r.sha256]
    lost: dict[tuple[int, str], list[FileRecord]] = {}
    for rec in stored:
        lost.setdefault((rec.size, rec.sha256 or ""), []).append(rec)
    sizes = {size for size, _ in lost}
    todo: list[FileRecord] = []
    kept: list[tuple[int, FileRecord]] = []
    for rec in changed:
        old = known.get(rec.path)
        if old is not None:  # the same name: its own stored row, if the bytes did not change
            same = old.status == "ok" and old.id in have and old.size == rec.size
            match = old if same and old.sha256 and _sha256(root / rec.path) == old.sha256 else None
        elif rec.size in sizes and (digest := _sha256(root / rec.path)):
            candidates = lost.get((rec.size, digest))
            match = candidates.pop() if candidates else None
        else:
            match = None
        if match is None or match.id is None:
            todo.append(rec)
        else:
            kept.append((match.id, rec))
    return todo, kept


def _sha256(path: Path) -> str | None:
    """The file's sha256, or None when it cannot be read (its load then says why)."""
    try:
        return file_sha256(path)
    except (ImageLoadError, OSError):
        return None


def merged_block(
    key: str,
    chunks: Sequence[np.ndarray],
    chunk_rows: np.ndarray,
    old: np.ndarray | None,
    old_rows: np.ndarray,
    from_chunks: np.ndarray,
) -> np.ndarray:
    """One block of the next generation, written once into its final array.

    Row i comes from the staged chunks (rows `chunk_rows`, counted across the chunks in
    order) where `from_chunks[i]`, else from the committed generation's `old` (memory-mapped:
    only the rows asked for are read). No concatenated copy of either is made.
    """
    if (from_chunks.any() and not chunks) or (len(old_rows) and old is None):
        raise CollectionError(f"block {key}: some rows are neither staged nor committed")
    dim = chunks[0].shape[1] if chunks else old.shape[1] if old is not None else 0
    out = np.empty((len(from_chunks), dim), dtype=np.float32)
    if len(old_rows):
        out[~from_chunks] = old[old_rows]  # type: ignore[index]
    targets = np.flatnonzero(from_chunks)
    start = 0
    for chunk in chunks:
        inside = (chunk_rows >= start) & (chunk_rows < start + len(chunk))
        out[targets[inside]] = chunk[chunk_rows[inside] - start]
        start += len(chunk)
    return round_to_stored(out)


def _trained_blocks_stale(coll: Collection, extractor: FeatureExtractor) -> bool:
    """Whether the stored blocks of a trained source were computed by another model than
    the extractor's (the same folder trained again, say)."""
    return any(not extractor.stored_fits(k, coll.fingerprints) for k in extractor.trained_keys())


def index_folder(
    root: Path,
    collection: Path,
    config: PipelineConfig | None = None,
    **kwargs: object,
) -> IndexSummary:
    wait = bool(kwargs.pop("wait", False))
    return Indexer(root, collection, config, **kwargs).run(wait=wait)  # type: ignore[arg-type]

"""The `index` run: scan a folder, embed what is new or changed, commit a new generation."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lookalike.catalog import FileRecord
from lookalike.collection import Collection, new_index
from lookalike.config import PipelineConfig, get_preset
from lookalike.errors import ImageLoadError, LookalikeError
from lookalike.features import Analysis, FeatureExtractor
from lookalike.fuse import Fuser
from lookalike.images import LoadLimits, file_sha256, iter_image_files, load_image
from lookalike.staging import Staging


@dataclass
class IndexSummary:
    collection: Path
    scanned: int = 0
    embedded: int = 0
    unchanged: int = 0
    deleted: int = 0
    fallbacks: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0
    committed: bool = False
    total_indexed: int = 0

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [
            f"collection: {self.collection}",
            f"indexed: {self.total_indexed} images ({self.embedded} embedded now, "
            f"{self.unchanged} unchanged, {self.deleted} removed)",
            f"head crops from fallback (no face found): {self.fallbacks} of {self.embedded}",
            f"skipped: {len(self.skipped)}",
        ]
        out += [f"  {path}: {reason}" for path, reason in self.skipped[:20]]
        if len(self.skipped) > 20:
            out.append(f"  ... and {len(self.skipped) - 20} more (lookalike info COLL --errors)")
        out.append(f"time: {self.seconds:.1f} s ({self.images_per_second:.1f} images/s)")
        return out


@dataclass
class _Loaded:
    record: FileRecord
    analysis: Analysis | None


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

    # -- opening -----------------------------------------------------------------
    def _open(self) -> Collection:
        if Collection.exists(self.collection_path):
            coll = Collection.open(self.collection_path)
            if coll.root != self.root:
                raise LookalikeError(
                    f"{self.collection_path}: indexes {coll.root}, not {self.root}; "
                    "use another --collection folder"
                )
            config = self.requested or coll.config
            extractor = self._extractor_for(config)
            coll.check_compatible(config, extractor.backbone_hash())
            return coll
        config = self.requested or get_preset("default")
        extractor = self._extractor_for(config)
        return Collection.create(self.collection_path, self.root, config, extractor.backbone_hash())

    def _extractor_for(self, config: PipelineConfig) -> FeatureExtractor:
        if self._extractor is None or self._extractor.config != config:
            backbone = self._extractor.loaded_backbone if self._extractor else None
            self._extractor = FeatureExtractor(config, backbone=backbone)
        return self._extractor

    # -- the run -------------------------------------------------------------------
    def run(self, wait: bool = False) -> IndexSummary:
        start = time.perf_counter()
        coll = self._open()
        summary = IndexSummary(coll.path)
        with coll.write_lock(wait=wait):
            coll.reload()
            todo, deleted = self._plan(coll, summary)
            self._embed(coll, todo, summary)
            changed = summary.embedded > 0 or bool(deleted) or coll.generation() is None
            if changed or Staging(coll.staging_dir).chunks():
                self._commit(coll, deleted, summary)
        if not summary.committed:
            summary.total_indexed = int(coll.manifest.get("counts", {}).get("indexed", 0))
        summary.seconds = time.perf_counter() - start
        return summary

    def _plan(self, coll: Collection, summary: IndexSummary) -> tuple[list[FileRecord], list[str]]:
        """Which files to (re)process and which rows to drop, by size and mtime."""
        catalog = coll.catalog
        known = {rec.path: rec for rec in catalog.all()}
        gen = coll.generation()
        have = set(gen.ids.tolist()) if gen else set()
        have |= set(Staging(coll.staging_dir).load()[0])
        seen: set[str] = set()
        todo: list[FileRecord] = []
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
                todo.append(rec)
        summary.scanned = len(seen)
        deleted = [p for p in known if p not in seen]
        summary.deleted = len(deleted)
        catalog.upsert(todo)  # as 'pending': gives each new file its id
        return todo, deleted

    def _load_one(self, rec: FileRecord) -> _Loaded:
        path = self.root / rec.path
        try:
            image = load_image(path, self.limits)
            rec.sha256 = file_sha256(path)
        except ImageLoadError as exc:
            rec.status, rec.error = "error", exc.reason
            return _Loaded(rec, None)
        analysis = self.extractor.analyse(image)
        rec.width, rec.height = image.size
        rec.detector = self.extractor.config.detector
        rec.faces, rec.head_box, rec.fallback = analysis.faces, analysis.head_box, analysis.fallback
        rec.status, rec.error = "ok", None
        return _Loaded(rec, analysis)

    @property
    def extractor(self) -> FeatureExtractor:
        assert self._extractor is not None  # set by _open
        return self._extractor

    def _batches(self, todo: Sequence[FileRecord]) -> Iterator[list[_Loaded]]:
        # Decoding and detection of the next batch overlap the embedding of this one.
        with ThreadPoolExecutor(self.workers) as pool:
            pending = []
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start : start + self.batch_size]
                pending.append(pool.map(self._load_one, batch))
                if len(pending) > 1:
                    yield list(pending.pop(0))
            for results in pending:
                yield list(results)

    def _embed(self, coll: Collection, todo: list[FileRecord], summary: IndexSummary) -> None:
        if not todo:
            return
        staging = Staging(coll.staging_dir)
        keys = coll.config.block_keys
        bar = tqdm(
            total=len(todo),
            unit="img",
            desc="indexing",
            disable=not self.progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        try:
            for batch in self._batches(todo):
                good = [item for item in batch if item.analysis is not None]
                if good:
                    views = [item.analysis.views for item in good]  # type: ignore[union-attr]
                    blocks = self.extractor.compute(views, keys)
                    ids = np.array([item.record.id for item in good], dtype=np.int64)
                    staging.write(ids, blocks)  # vectors first: rows only say ok once stored
                coll.catalog.upsert(item.record for item in batch)
                for item in batch:
                    if item.analysis is None:
                        summary.skipped.append((item.record.path, item.record.error or ""))
                    else:
                        summary.embedded += 1
                        summary.fallbacks += int(item.record.fallback)
                bar.update(len(batch))
        finally:
            bar.close()

    def _commit(self, coll: Collection, deleted: list[str], summary: IndexSummary) -> None:
        config = coll.config
        catalog = coll.catalog
        gone = set(deleted)
        live = [r for r in catalog.by_status("ok") if r.path not in gone]
        staged_row, staged_blocks, _ = Staging(coll.staging_dir).load()
        staged = {k: np.concatenate(v) for k, v in staged_blocks.items()}
        gen = coll.generation()
        gen_row = {int(i): row for row, i in enumerate(gen.ids)} if gen else {}

        records = [r for r in live if r.id in staged_row or r.id in gen_row]
        ids = np.array([r.id for r in records], dtype=np.int64)
        blocks: dict[str, np.ndarray] = {}
        for key in config.block_keys:
            old = gen.block(key) if gen and gen.has_block(key) else None
            rows = []
            for r in records:
                if r.id in staged_row:
                    rows.append(staged[key][staged_row[r.id]])
                else:
                    rows.append(old[gen_row[r.id]])  # type: ignore[index]
            dim = rows[0].shape[0] if rows else 0
            blocks[key] = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
        if len(records) == 0:
            raise LookalikeError(
                f"{self.root}: no image could be indexed ({len(summary.skipped)} skipped); "
                "nothing to search"
            )
        fuser = Fuser(config.blocks, config.fusion).fit(blocks)
        fused = fuser.transform(blocks)
        index = new_index(config)
        index.build(fused)
        boxes = np.array([r.head_box for r in records], dtype=np.int32).reshape(-1, 4)
        counts = {"indexed": len(records), **catalog.counts()}
        coll.commit(ids, boxes, blocks, fuser, fused, index, counts)
        catalog.delete_paths(deleted)
        Staging(coll.staging_dir).clear()
        summary.committed = True
        summary.total_indexed = len(records)


def index_folder(
    root: Path,
    collection: Path,
    config: PipelineConfig | None = None,
    **kwargs: object,
) -> IndexSummary:
    wait = bool(kwargs.pop("wait", False))
    return Indexer(root, collection, config, **kwargs).run(wait=wait)  # type: ignore[arg-type]

"""One file through decode and detect, and a batch of them through embed: the steps every
engine runs (the single-process run, its decode workers, Ray), so they sit below all three."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.embed.extractor import Analysis, FeatureExtractor
from lookalike.errors import ImageLoadError
from lookalike.load.images import LoadLimits, file_sha256, load_image
from lookalike.store.catalog import FileRecord


@dataclass
class LoadedFile:
    """One file decoded and detected (analysis None: it failed to load, record says why)."""

    record: FileRecord
    analysis: Analysis | None


@dataclass
class ProcessedBatch:
    """A batch of files through decode, detect and embed: what a run stores (any engine)."""

    records: list[FileRecord]  # every file of the batch, status "ok" or "error"
    ids: np.ndarray  # catalog ids of the ok ones: the rows of `blocks`
    blocks: dict[str, np.ndarray]


def load_record(
    rec: FileRecord, root: Path, limits: LoadLimits, extractor: FeatureExtractor
) -> LoadedFile:
    """Decode and detect one file, filling its catalog record (status ok, or error + reason)."""
    path = root / rec.path
    try:
        image = load_image(path, limits)
        rec.sha256 = file_sha256(path)
    except ImageLoadError as exc:
        rec.status, rec.error = "error", exc.reason
        return LoadedFile(rec, None)
    analysis = extractor.analyse(image)
    rec.width, rec.height = image.size
    rec.detector = extractor.config.detector
    rec.faces, rec.head_box, rec.fallback = analysis.faces, analysis.head_box, analysis.fallback
    rec.status, rec.error = "ok", None
    return LoadedFile(rec, analysis)


def embed_loaded(
    extractor: FeatureExtractor, batch: Sequence[LoadedFile], keys: Sequence[str] = ()
) -> ProcessedBatch:
    """Embed the loaded files of a batch (the single-process and the Ray engine both call it):
    the config's blocks, or `keys` (which hold them) when given."""
    good = [item for item in batch if item.analysis is not None]
    analyses = [item.analysis for item in good if item.analysis is not None]
    extractor.settle_fallbacks(analyses)
    for item, analysis in zip(good, analyses, strict=True):
        item.record.head_box = analysis.head_box
    views = [analysis.views for analysis in analyses]
    blocks = extractor.compute(views, keys or extractor.config.block_keys) if good else {}
    ids = np.array([item.record.id for item in good], dtype=np.int64)
    return ProcessedBatch([item.record for item in batch], ids, blocks)

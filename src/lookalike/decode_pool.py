"""Decoding and face detection in worker processes.

The animeface detector's C code holds Python's GIL, so threads cannot run two
detections at once; separate processes can. Each worker builds its own detector
once (its initializer) and sends back the catalog record and the two views.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lookalike.catalog import FileRecord
from lookalike.config import PipelineConfig
from lookalike.features import FeatureExtractor
from lookalike.images import LoadLimits

if TYPE_CHECKING:
    from lookalike.indexer import _Loaded

_state: dict[str, Any] = {}


def _init(config: dict[str, Any], root: str, limits: LoadLimits) -> None:
    _state["extractor"] = FeatureExtractor(PipelineConfig.from_dict(config))
    _state["root"] = Path(root)
    _state["limits"] = limits


def _load(rec: FileRecord) -> _Loaded:
    from lookalike.indexer import load_record

    return load_record(rec, _state["root"], _state["limits"], _state["extractor"])


class DecodePool:
    """A pool of `workers` processes mapping FileRecords to loaded, detected images."""

    def __init__(
        self, config: PipelineConfig, root: Path, limits: LoadLimits, workers: int
    ) -> None:
        # spawn, not fork: the parent may already run ONNX Runtime / torch threads.
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(config.to_dict(), str(root), limits),
        )

    def map(self, records: Sequence[FileRecord]) -> Iterator[_Loaded]:
        return self._pool.map(_load, records, chunksize=4)

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)

"""Decoding and face detection in worker processes.

The animeface detector's C code holds Python's GIL, so threads cannot run two
detections at once; separate processes can. Each worker builds its own detector
once (its initializer) and sends back the catalog record and the two views.

Workers die with the process that started them, even when it is killed with SIGKILL
(which runs no clean-up): Linux sends them SIGKILL too (PR_SET_PDEATHSIG), and
elsewhere a watchdog thread notices the new parent and exits.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from lookalike.config import PipelineConfig
from lookalike.embed.extractor import FeatureExtractor
from lookalike.indexing.prepare import LoadedFile, load_record
from lookalike.load.images import LoadLimits
from lookalike.store.catalog import FileRecord

_state: dict[str, Any] = {}

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_WATCHDOG_SECONDS = 1.0


def _init(config: dict[str, Any], root: str, limits: LoadLimits, parent: int) -> None:
    _die_with(parent)
    _state["extractor"] = FeatureExtractor(PipelineConfig.from_dict(config))
    _state["root"] = Path(root)
    _state["limits"] = limits


def _die_with(parent: int) -> None:
    """End this worker when process `parent` ends, however it ends."""
    if sys.platform.startswith("linux"):
        # Sent when the thread that started this worker ends: the pool is made, used and
        # closed by one thread (`Indexer._loader`), so that is never before the pool closes.
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="parent-watch").start()


def _watch(parent: int) -> None:
    # Orphans are adopted by init (or a subreaper): the parent pid changes.
    while os.getppid() == parent:
        time.sleep(_WATCHDOG_SECONDS)
    os._exit(1)


def _load(rec: FileRecord) -> LoadedFile:
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
            initargs=(config.to_dict(), str(root), limits, os.getpid()),
        )

    def map(self, records: Sequence[FileRecord]) -> Iterator[LoadedFile]:
        return self._pool.map(_load, records, chunksize=4)

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)

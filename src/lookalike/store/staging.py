"""Feature chunks of an index run that are not committed yet.

Each processed batch is written as one ``.npz`` (no pickle) holding the catalog
ids and one array per block, atomically, so a killed run loses at most the
batch in flight and the next run resumes from the chunks already written.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lookalike.fileio import atomic_save_npz

log = logging.getLogger(__name__)


class Staging:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def chunks(self) -> list[Path]:
        if not self.folder.exists():
            return []
        return sorted(self.folder.glob("chunk-*.npz"))

    def write(self, ids: np.ndarray, blocks: dict[str, np.ndarray]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        existing = self.chunks()
        number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        path = self.folder / f"chunk-{number:07d}.npz"
        arrays = {"ids": ids.astype(np.int64)}
        arrays.update({f"block:{k}": v.astype(np.float32) for k, v in blocks.items()})
        atomic_save_npz(path, arrays)
        return path

    def load(self, keys: Sequence[str]) -> tuple[dict[int, int], list[Path], np.ndarray]:
        """The staged rows: (id -> row, readable chunks, ids), later chunks win.

        Rows count across the returned chunks in order. A chunk that is unreadable, or lacks
        one of the blocks `keys` or a row of one, is discarded with a warning (its images are
        embedded again). The vectors are read (and their checksums checked) here but not
        kept: `block` reads one block at a time.
        """
        ids_parts: list[np.ndarray] = []
        readable: list[Path] = []
        for path in self.chunks():
            try:
                chunk_ids = _checked_ids(path, keys)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                # A chunk is written atomically, so this is outside damage: redo its images.
                log.warning(
                    "%s: damaged staged batch (%s); discarded, its images are embedded again",
                    path,
                    exc,
                )
                path.unlink(missing_ok=True)
                continue
            ids_parts.append(chunk_ids)
            readable.append(path)
        ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype=np.int64)
        row_of = {int(i): row for row, i in enumerate(ids)}  # later rows overwrite earlier
        return row_of, readable, ids

    @staticmethod
    def block(chunks: list[Path], key: str) -> list[np.ndarray]:
        """One block's arrays from the chunks `load` returned, in their order."""
        arrays = []
        for path in chunks:
            with np.load(path, allow_pickle=False) as data:
                arrays.append(data[f"block:{key}"])
        return arrays

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _checked_ids(path: Path, keys: Sequence[str]) -> np.ndarray:
    """The ids of a staged chunk, once every member reads (its CRC) and every block has a row
    per id; raises what numpy and zipfile raise, or ValueError."""
    with np.load(path, allow_pickle=False) as data:
        ids = data["ids"]
        if ids.ndim != 1:
            raise ValueError(f"ids of shape {ids.shape}")
        for key in keys:
            block = data[f"block:{key}"]
            if block.ndim != 2 or len(block) != len(ids):
                raise ValueError(f"block {key} of shape {block.shape} for {len(ids)} ids")
        for key in data.files:  # reading checks each zip member's CRC
            data[key]
    return ids

"""Feature chunks of an index run that are not committed yet.

Each processed batch is written as one ``.npz`` (no pickle) holding the catalog
ids and one array per block, atomically, so a killed run loses at most the
batch in flight and the next run resumes from the chunks already written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from lookalike.fileio import atomic_save_npz


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

    def load(self) -> tuple[dict[int, int], dict[str, list[np.ndarray]], np.ndarray]:
        """All staged vectors: (id -> row, block -> arrays, ids), later chunks win."""
        ids_parts: list[np.ndarray] = []
        blocks: dict[str, list[np.ndarray]] = {}
        for path in self.chunks():
            try:
                data = np.load(path, allow_pickle=False)
                chunk_ids = data["ids"]
                chunk_blocks = {k[6:]: data[k] for k in data.files if k.startswith("block:")}
            except (OSError, ValueError, KeyError):
                # A chunk is written atomically, so this is outside damage: redo its images.
                path.unlink(missing_ok=True)
                continue
            ids_parts.append(chunk_ids)
            for key, array in chunk_blocks.items():
                blocks.setdefault(key, []).append(array)
        ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype=np.int64)
        row_of = {int(i): row for row, i in enumerate(ids)}  # later rows overwrite earlier
        return row_of, blocks, ids

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

"""usearch: an HNSW graph whose saved file a query process memory-maps instead of reading.

Why it is the `auto` index's graph (benchmarks/README.md, "Dense collections"): a saved
usearch index opens as a read-only view of its file (`Index.restore(path, view=True)`), so
a new `lookalike query` process starts in milliseconds at a million items where hnswlib
reads its whole graph (1.2 GB) first.

`rescore`: the graph is walked for that many candidates, which are then ordered by their
exact inner products with the rows, kept beside the graph (`vectors.npy`, memory-mapped;
float16 when that loses nothing, as a collection's fused vectors, which it is linked to, so
it costs no disk). The
graph's vectors: float32, float16 (half the bytes a walk reads, what a query at a million
items waits on), usearch's int8 (which lost the neighbours themselves) or `i8-rotated`
(`auto`'s: int8 codes lookalike makes, int8_rotation.py, a quarter of float32's bytes at
float16's recall); re-scored, the answer's similarities are exact whichever
(benchmarks/README.md, "usearch at a million").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lookalike.errors import CollectionError, LookalikeError
from lookalike.index.base import BaseIndex, atomic_write, check_int, register_index, require
from lookalike.index.int8_rotation import Int8Rotation
from lookalike.vectors import stored_losslessly

ROTATED = "i8-rotated"
DTYPES = ("f32", "f16", "i8", ROTATED)
VECTORS_FILE = "vectors.npy"
ROTATION_FILE = "rotation.npz"  # the i8-rotated graph's rotation and scale


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise LookalikeError(f"usearch dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return dtype


@register_index
class UsearchIndex(BaseIndex):
    """usearch HNSW graph (cosine), memory-mapped when loaded; f16, i8 or i8-rotated vectors
    on request, re-scored exactly on the stored rows with `rescore` (i8-rotated needs it)."""

    name = "usearch"
    file_name = "usearch.bin"
    query_knobs: ClassVar[dict[str, int]] = {"ef": 1, "rescore": 0}

    def __init__(
        self,
        M: int = 16,
        ef_construction: int = 128,
        ef: int = 128,
        dtype: str = "f32",
        rescore: int = 0,
    ) -> None:
        self._usearch = require("usearch.index", "usearch", self.name)
        self._viewed = False  # whether the native index is a read-only view of a file
        self._rows: np.ndarray | None = None  # the rows, kept while rescore > 0
        self._rotation: Int8Rotation | None = None  # what turns rows into i8-rotated codes
        super().__init__(
            {
                "M": check_int("M", M, 2),
                "ef_construction": check_int("ef_construction", ef_construction, 1),
                "dtype": check_dtype(dtype),
            },
            {"ef": ef, "rescore": rescore},
        )
        if dtype == ROTATED and not self._query_params["rescore"]:
            raise LookalikeError(
                f"the {ROTATED} graph needs rescore >= 1: its distances are of int8 codes"
            )

    def _build(self, data: np.ndarray) -> Any:
        p = self._build_params
        index = self._usearch.Index(
            ndim=data.shape[1],
            # Inner product on the unit rows the base hands over: the cosine, and 0 for a zero
            # vector (usearch's "cos" calls two zero vectors identical).
            metric="ip",
            dtype="i8" if p["dtype"] == ROTATED else p["dtype"],
            connectivity=p["M"],
            expansion_add=p["ef_construction"],
        )
        if p["dtype"] == ROTATED:
            self._rotation = Int8Rotation.fit(data)
        index.add(np.arange(len(data), dtype=np.uint64), self._walked(data))
        self._rows = data if self._query_params["rescore"] else None
        return index

    def _extend(self, data: np.ndarray) -> Any:
        # A loaded graph is a read-only view of its file: add to a copy in memory.
        index = self._native.copy() if self._viewed else self._native
        self._viewed = False
        index.add(
            np.arange(self.count, self.count + len(data), dtype=np.uint64), self._walked(data)
        )
        if self._rows is not None:
            self._rows = np.concatenate([self._rows, data])
        return index

    def _walked(self, rows: np.ndarray) -> np.ndarray:
        """Unit rows as the graph holds them: their int8 codes for an i8-rotated one."""
        return rows if self._rotation is None else self._rotation.codes(rows)

    def _apply_query_params(self) -> None:
        self._native.expansion_search = self._query_params["ef"]

    def candidates(self, wanted: int) -> int:
        """Re-scored, the walk's best `rescore` (at least) come in exact order: asking for more
        only widens the walk past its ef, at a cost (recall@10 is measured with 10 asked:
        benchmarks/dense_scale.py)."""
        return wanted if self._query_params["rescore"] else super().candidates(wanted)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rescore = self._query_params["rescore"]
        if rescore and self._rows is None:
            raise LookalikeError(f"this usearch index keeps no {VECTORS_FILE} to re-score on")
        if not rescore and self._rotation is not None:
            raise LookalikeError(f"the {ROTATED} graph needs rescore >= 1 to answer")
        width = min(max(k, rescore), self.count)
        # One thread: a query process answers one request at a time, and usearch's thread
        # pool costs more than it saves on a handful of queries.
        found = self._native.search(self._walked(queries), width, threads=1)
        # One query row comes back as a `Matches` cut to what it found, several as
        # `BatchMatches` padded to `width` with `counts` saying how many are real.
        keys = np.full((len(queries), width), -1, np.int64)
        distances = np.full((len(queries), width), np.inf, np.float32)
        found_keys = np.asarray(found.keys).reshape(len(queries), -1)
        keys[:, : found_keys.shape[1]] = found_keys
        distances[:, : found_keys.shape[1]] = np.asarray(found.distances).reshape(len(queries), -1)
        counts = np.asarray(getattr(found, "counts", [found_keys.shape[1]])).reshape(-1, 1)
        keys[np.arange(width)[None, :] >= counts] = -1
        if not rescore:
            return keys[:, :k], 1 - distances[:, :k]  # distance = 1 - dot; the base masks -1
        return self._rescored(queries, keys, k)

    def _rescored(
        self, queries: np.ndarray, keys: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The candidates `keys` ordered by exact inner products, equal ones by id."""
        assert self._rows is not None
        rows = np.asarray(self._rows[np.maximum(keys, 0).ravel()], np.float32)
        sims = np.einsum("qcd,qd->qc", rows.reshape(*keys.shape, -1), queries)
        sims[keys < 0] = -np.inf
        best = np.lexsort((keys, -sims), axis=1)[:, :k]
        ids = np.take_along_axis(keys, best, 1)
        best_sims = np.take_along_axis(sims, best, 1)
        ids[~np.isfinite(best_sims)] = -1
        return ids, best_sims

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self._query_params["rescore"] and self._rows is not None and self.count:

            def write(tmp: Path) -> None:
                with open(tmp, "wb") as f:  # np.save adds no ".npy" to a file object's name
                    np.save(f, stored_losslessly(self._rows))

            atomic_write(folder / VECTORS_FILE, write)
        if self._rotation is not None:
            atomic_write(folder / ROTATION_FILE, self._rotation.save)
        super().save(folder)  # the metadata last: its presence means the rest is complete

    def _save(self, path: Path) -> None:
        self._native.save(str(path))

    def _load(self, path: Path, dim: int) -> Any:
        if not path.is_file():
            raise OSError(f"{path.name} is missing")
        # No key table: the keys are the rows, and building the table walks every node of
        # the file (at 100k items 0.46 s against 0.10 s to open, cold).
        index = self._usearch.Index.restore(str(path), view=True, enable_key_lookups=False)
        if index is None or index.ndim != dim:
            raise ValueError("not a usearch index of this collection's vectors")
        self._viewed = True
        if self._build_params["dtype"] == ROTATED:
            self._rotation = Int8Rotation.load(path.with_name(ROTATION_FILE), dim)
        if self._query_params["rescore"]:
            self._rows = _rows_file(path.with_name(VECTORS_FILE), len(index), dim)
        return index

    def _count(self, native: Any) -> int:
        return len(native)


def _rows_file(path: Path, count: int, dim: int) -> np.ndarray:
    try:
        # Paged in as candidates are read; a plain ndarray view: np.memmap's indexing
        # costs more than the few rows a query reads.
        rows = np.asarray(np.load(path, mmap_mode="r"))
    except (OSError, ValueError) as exc:
        raise CollectionError(f"{path}: cannot read the rows to re-score on ({exc})") from exc
    if rows.shape != (count, dim) or rows.dtype not in (np.float32, np.float16):
        raise CollectionError(
            f"{path}: holds {rows.dtype} {rows.shape}, expected float ({count}, {dim})"
        )
    return rows

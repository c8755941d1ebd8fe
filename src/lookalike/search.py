"""Answering "what looks like this one?" from a committed collection."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.collection import Collection
from lookalike.errors import ImageLoadError, QueryError
from lookalike.expansion import expand_query
from lookalike.features import Analysis, FeatureExtractor
from lookalike.images import file_sha256, load_image
from lookalike.vectors import RowMap


@dataclass
class Match:
    id: int
    path: str
    score: float
    head_box: tuple[int, int, int, int] | None
    fallback: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "score": round(self.score, 6),
            "head_box": list(self.head_box) if self.head_box else None,
            "fallback": self.fallback,
        }


@dataclass
class QueryResult:
    query: str
    query_id: int | None  # the collection item the query is, when it is one
    query_head_box: tuple[int, int, int, int] | None
    query_fallback: bool
    matches: list[Match]

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "query_id": self.query_id,
            "query_head_box": list(self.query_head_box) if self.query_head_box else None,
            "query_fallback": self.query_fallback,
            "results": [m.to_json() for m in self.matches],
        }


class Searcher:
    """Loads one generation of a collection and answers queries against it.

    Safe to share between threads: the arrays and index are only read, and the
    extractor (lazily loaded models, detectors that are not thread-safe) is used
    by one query at a time.
    """

    def __init__(self, collection: Collection | Path, extractor: FeatureExtractor | None = None):
        self.collection = (
            collection if isinstance(collection, Collection) else Collection.open(collection)
        )
        gen = self.collection.require_generation()
        self.collection.catalog  # noqa: B018 - opened now: a missing one is an error at once
        self.config = self.collection.config
        self.ids = gen.ids
        self.row_of = RowMap(self.ids)
        self.fused = np.asarray(gen.fused())
        self.head_boxes = gen.head_boxes
        self.index = gen.index()
        self.fuser = gen.fuser()
        rows = {"ids.npy": len(self.ids), "fused.npy": len(self.fused), "index": self.index.count}
        gen.check_rows({**rows, "head_boxes.npy": len(self.head_boxes)})
        self.extractor = extractor or FeatureExtractor(self.config)
        self._extractor_lock = threading.Lock()
        self._weights_checked = False

    def __len__(self) -> int:
        return len(self.ids)

    # -- resolving what the user asked about ----------------------------------------
    def resolve(self, query: str) -> tuple[int | None, Path | None]:
        """(collection id, image path): a file on disk, a path inside the root, or an id."""
        catalog = self.collection.catalog
        candidate = Path(query)
        if candidate.is_file():
            root = self.collection.root
            try:
                rel = candidate.resolve().relative_to(root).as_posix()
            except ValueError:
                rel = None
            rec = catalog.by_path(rel) if rel else None
            if rec is None or rec.id not in self.row_of:
                return None, candidate
            return rec.id, candidate
        rec = catalog.by_path(query.replace("\\", "/"))
        if rec is not None and rec.id in self.row_of:
            return rec.id, self.collection.root / rec.path
        if query.isdigit() and int(query) in self.row_of:
            return int(query), None
        raise QueryError(
            f"{query}: not an image file, and not a path or id in the collection "
            f"{self.collection.path}"
        )

    # -- queries ------------------------------------------------------------------
    def query(self, query: str, k: int = 4) -> QueryResult:
        item_id, path = self.resolve(query)
        if item_id is not None:
            row = self.row_of[item_id]
            box = tuple(int(v) for v in self.head_boxes[row])
            rec = self.collection.catalog.get_many([item_id]).get(item_id)
            fallback = bool(rec.fallback) if rec else False
            matches = self.search_vector(self.fused[row], k, exclude={item_id})
            return QueryResult(query, item_id, box, fallback, matches)  # type: ignore[arg-type]
        assert path is not None
        return self.query_image(path, k)

    def query_image(self, path: Path, k: int = 4) -> QueryResult:
        try:
            image = load_image(path)
            sha = file_sha256(path)
        except ImageLoadError as exc:
            raise QueryError(f"{exc.path}: cannot use as a query: {exc.reason}") from exc
        analysis, _, vector = self.embed_image(image)
        # The same file indexed under another name is still the query itself.
        same = {r.id for r in self.collection.catalog.by_sha256(sha) if r.id is not None}
        matches = self.search_vector(vector, k, exclude=same)
        return QueryResult(str(path), None, analysis.head_box, analysis.fallback, matches)

    def embed_image(self, image: Image.Image) -> tuple[Analysis, dict[str, np.ndarray], np.ndarray]:
        """Detect, embed and fuse an outside image: (analysis, its blocks, its query vector)."""
        with self._extractor_lock:
            if not self._weights_checked:
                # Vectors from other weights (an upgraded model package) would be compared
                # silently with the stored ones and give meaningless answers.
                self.collection.check_compatible(self.config, self.extractor.backbone_hash())
                self._weights_checked = True
            analysis = self.extractor.analyse(image)
            self.extractor.settle_fallbacks([analysis])
            blocks = self.extractor.compute([analysis.views], self.config.block_keys)
        return analysis, blocks, self.expand(self.fuser.transform(blocks)[0])

    def expand(self, vector: np.ndarray) -> np.ndarray:
        """The preset's query expansion, with the query's neighbours in the collection."""
        fusion = self.config.fusion
        if not fusion.expand_k or not len(self.ids):
            return vector
        rows, _ = self.index.query(vector[None, :].astype(np.float32), fusion.expand_k)
        rows = rows[0][rows[0] >= 0]
        sims = self.fused[rows] @ vector
        return expand_query(vector, self.fused[rows], sims, fusion.expand_alpha)

    def search_vector(self, vector: np.ndarray, k: int, exclude: set[int]) -> list[Match]:
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        # Ask the ANN index for more candidates than needed, then re-rank them exactly.
        n_candidates = min(len(self.ids), max(4 * (k + len(exclude)), 50))
        rows, _ = self.index.query(vector[None, :].astype(np.float32), n_candidates)
        rows = rows[0][rows[0] >= 0]
        scores = self.fused[rows] @ vector
        order = np.argsort(-scores, kind="stable")
        picked: list[tuple[int, float]] = []
        for i in order:
            item_id = int(self.ids[rows[i]])
            if item_id in exclude:
                continue
            picked.append((int(rows[i]), float(scores[i])))
            if len(picked) == k:
                break
        records = self.collection.catalog.get_many(int(self.ids[r]) for r, _ in picked)
        matches = []
        for row, score in picked:
            rec = records.get(int(self.ids[row]))
            if rec is None:  # deleted by a run that committed after we loaded
                continue
            box = tuple(int(v) for v in self.head_boxes[row])
            matches.append(Match(rec.id, rec.path, score, box, rec.fallback))  # type: ignore[arg-type]
        return matches

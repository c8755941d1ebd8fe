"""What the web page and the HTTP API show, without any HTTP: a read-only view of one
committed generation of a collection (list, look up, query, re-rank, safe file paths).

Everything the catalog says about the items is read once at start; the ranking
(`Searcher.search_vector`, the same as `lookalike query`'s) and its record look-ups run
under one lock, as do model calls (detector, backbone, ANN index), because those
libraries are not all thread-safe.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from lookalike.embed.extractor import FeatureExtractor
from lookalike.errors import (
    ImageLoadError,
    IncompatibleCollectionError,
    LookalikeError,
    QueryError,
)
from lookalike.evaluate.report import EVALUATION_FILE
from lookalike.load.images import LoadLimits, load_image
from lookalike.load.labels import Labels, load_labels
from lookalike.render.sheets import DETECTED_BOX, FALLBACK_BOX
from lookalike.search.calibration import GOOD_MATCH
from lookalike.search.query_features import QueryFeatures
from lookalike.search.rerank import default_head_weight
from lookalike.search.searcher import Searcher
from lookalike.store.collection import Collection
from lookalike.store.faces import MAX_FACES

# Content types accepted for an uploaded query image -> file suffix Pillow can sniff with.
UPLOAD_TYPES = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "image/tiff": ".tif",
}


def css_colour(rgb: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in rgb)


class RequestError(LookalikeError):
    """A request the server refuses, with the HTTP status to answer it with."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class WebLimits:
    max_upload_bytes: int = 16 * 1024 * 1024
    # Uploads are decoded under a tighter pixel bound than indexed files: they come from afar.
    max_upload_pixels: int = 40_000_000
    max_k: int = 200
    max_pool: int = 1000
    default_pool: int = 100
    max_per_page: int = 200


@dataclass(frozen=True)
class Item:
    id: int
    row: int
    path: str
    width: int | None
    height: int | None
    head_box: tuple[int, int, int, int]
    fallback: bool
    labels: dict[str, str]
    # False when the file is a link to outside the indexed root: listed, never served.
    viewable: bool
    # The face boxes of the searchable faces, best first: the page lets one of them ask.
    faces: list[list[int]]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "head_box": list(self.head_box),
            "fallback": self.fallback,
            "labels": self.labels,
            "viewable": self.viewable,
            "faces": self.faces,
        }


def face_boxes(faces: list[dict[str, Any]]) -> list[list[int]]:
    """The boxes of the faces that can ask (`faces.MAX_FACES`), best first."""
    return [[int(v) for v in f["box"]] for f in faces[:MAX_FACES]]


class Gallery:
    def __init__(
        self,
        collection: Path,
        labels: str | None = None,
        evaluation: Path | None = None,
        extractor: FeatureExtractor | None = None,
        limits: WebLimits = WebLimits(),
    ) -> None:
        coll = Collection.open(collection)
        self.collection = coll
        self.limits = limits
        self.searcher = Searcher(coll, extractor)
        self.fuser = self.searcher.fuser
        self.views = self.searcher.views
        self.default_head_weight = default_head_weight(self.fuser)
        self.root = coll.root.resolve()
        self.evaluation_path = Path(evaluation) if evaluation else coll.path / EVALUATION_FILE
        self._model_lock = threading.Lock()
        self._reports_lock = threading.Lock()  # groups and duplicates: computed once
        self._reports: dict[str, dict[str, Any]] = {}
        self._evaluation: tuple[tuple[int, int], dict[str, Any]] | None = None

        ids = self.searcher.ids
        records = coll.catalog.get_many(ids.tolist())
        self.labels: Labels | None = (
            load_labels(labels, [r.path for r in records.values()]) if labels else None
        )
        items = []
        for row, item_id in enumerate(ids.tolist()):
            rec = records.get(item_id)
            if rec is None:
                continue
            x0, y0, x1, y1 = (int(v) for v in self.searcher.head_boxes[row])
            tags = self.labels.by_path.get(rec.path, {}) if self.labels else {}
            viewable = self._inside_root(rec.path) is not None
            box = (x0, y0, x1, y1)
            faces = face_boxes(rec.faces or [])
            items.append(
                Item(
                    item_id,
                    row,
                    rec.path,
                    rec.width,
                    rec.height,
                    box,
                    rec.fallback,
                    tags,
                    viewable,
                    faces,
                )
            )
        self.items = sorted(items, key=lambda i: i.path)
        self.by_id = {i.id: i for i in self.items}
        self.by_path = {i.path: i for i in self.items}
        self.by_row = {i.row: i for i in self.items}
        self.by_sha: dict[str, set[int]] = {}
        for rec in records.values():
            if rec.sha256 and rec.id in self.by_id:
                self.by_sha.setdefault(rec.sha256, set()).add(rec.id)  # type: ignore[arg-type]

    # -- describing ------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        config = self.collection.config
        return {
            "collection": self.collection.path.name,
            "generation": self.collection.manifest.get("generation"),
            "count": len(self.items),
            "preset": config.preset,
            "dims": int(self.searcher.fused.shape[1]),
            "blocks": config.block_keys,
            "backbone": config.backbone,
            "detector": config.detector,
            "index": config.index.backend,
            "views": self.views.views,
            "default_head_weight": self.default_head_weight,
            "labels": self.label_values(),
            "has_evaluation": self.evaluation_path.is_file(),
            # The contact sheets' head-box colours, so page and sheets agree.
            "box_colours": {
                "detected": css_colour(DETECTED_BOX),
                "fallback": css_colour(FALLBACK_BOX),
            },
            "limits": {
                "max_upload_bytes": self.limits.max_upload_bytes,
                "upload_types": sorted(UPLOAD_TYPES),
                "max_k": self.limits.max_k,
                "max_pool": self.limits.max_pool,
                "default_pool": self.limits.default_pool,
                "max_per_page": self.limits.max_per_page,
            },
        }

    def label_values(self) -> dict[str, dict[str, int]]:
        """task -> {label: number of items}, for the page's filters."""
        if self.labels is None:
            return {}
        out: dict[str, dict[str, int]] = {t: {} for t in self.labels.tasks}
        for item in self.items:
            for task, value in item.labels.items():
                if value:
                    out[task][value] = out[task].get(value, 0) + 1
        return {t: dict(sorted(v.items())) for t, v in out.items()}

    def evaluation(self) -> dict[str, Any]:
        """The saved `evaluate` report, re-read whenever its file changes (a run made after
        the server started shows without a restart)."""
        path = self.evaluation_path
        try:
            stat = path.stat()
        except OSError:
            stat = None
        if stat is None or not path.is_file():
            raise RequestError(
                404, f"no evaluation yet: run `lookalike evaluate {self.collection.path}`"
            )
        version = (stat.st_mtime_ns, stat.st_size)
        with self._reports_lock:
            cached = self._evaluation
            if cached is not None and cached[0] == version:
                return cached[1]
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RequestError(404, f"{path.name}: unreadable evaluation ({exc})") from exc
        with self._reports_lock:
            self._evaluation = (version, report)
        return report

    # -- groups and near duplicates (computed on the first request, then kept) ----------
    def groups(self) -> dict[str, Any]:
        from lookalike.groups.clusters import find_groups

        return self._report("groups", lambda: find_groups(self.collection, min_size=2))

    def duplicates(self) -> dict[str, Any]:
        from lookalike.groups.duplicates import find_duplicates

        return self._report("duplicates", lambda: find_duplicates(self.collection))

    def _report(self, name: str, compute: Any) -> dict[str, Any]:
        with self._reports_lock:
            if name not in self._reports:
                report = compute().to_json()
                for group in report["groups"]:  # what a tile needs: boxes, sizes, labels
                    members = group.get("members") or [group["keep"], *group["others"]]
                    for member in members:
                        item = self.by_id.get(member["id"])
                        if item is not None:
                            member.update(item.to_json())
                self._reports[name] = report
            return self._reports[name]

    # -- listing -----------------------------------------------------------------------
    def list_items(
        self,
        offset: int,
        limit: int,
        filters: dict[str, str] | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """A page of the items in path order; `filters`: task -> label; `name`: a part of the
        path, matched case-insensitively (the page's search box)."""
        if offset < 0:
            raise RequestError(400, f"offset must be 0 or more, got {offset}")
        if not 1 <= limit <= self.limits.max_per_page:
            raise RequestError(
                400, f"limit must be between 1 and {self.limits.max_per_page}, got {limit}"
            )
        filters = filters or {}
        known = self.labels.tasks if self.labels else []
        for task in filters:
            if task not in known:
                raise RequestError(
                    400,
                    f"no label {task!r} to filter by; labels: {', '.join(known) or 'none'}",
                )
        needle = (name or "").strip().casefold()
        matching = [
            i
            for i in self.items
            if all(i.labels.get(t) == v for t, v in filters.items()) and needle in i.path.casefold()
        ]
        page = matching[offset : offset + limit]
        return {
            "total": len(matching),
            "offset": offset,
            "limit": limit,
            "name": needle or None,
            "items": [i.to_json() for i in page],
        }

    def item(self, item_id: int) -> Item:
        found = self.by_id.get(item_id)
        if found is None:
            raise RequestError(404, f"no item with id {item_id} in this collection")
        return found

    def item_by_path(self, path: str) -> Item:
        found = self.by_path.get(path)
        if found is None:
            raise RequestError(404, f"{path}: not an indexed image of this collection")
        return found

    # -- files -------------------------------------------------------------------------
    def file_path(self, rel: str) -> Path:
        """The file of an indexed image, given its path relative to the root.

        Only paths the catalog lists are served, and only if the real file (links
        followed) lies inside the indexed root.
        """
        pure = PurePosixPath(rel)
        if (
            not rel
            or "\x00" in rel
            or "\\" in rel
            or pure.is_absolute()
            or any(part in ("", ".", "..") for part in rel.split("/"))
        ):
            raise RequestError(400, f"{rel!r}: not a plain path inside the collection")
        item = self.item_by_path(rel)
        real = self._inside_root(item.path)
        if real is None:
            raise RequestError(403, f"{rel}: the file lies outside the indexed folder")
        if not real.is_file():
            raise RequestError(404, f"{rel}: the file is gone from the indexed folder")
        return real

    def _inside_root(self, rel: str) -> Path | None:
        """The real file (links followed) of `rel`, if that lies inside the root."""
        real = Path(os.path.realpath(self.root / rel))
        return real if real.is_relative_to(self.root) else None

    # -- queries -----------------------------------------------------------------------
    def check_query_options(
        self, k: int, pool: int | None, head_weight: float | None
    ) -> tuple[int, int]:
        if not 1 <= k <= self.limits.max_k:
            raise RequestError(400, f"k must be between 1 and {self.limits.max_k}, got {k}")
        pool = self.limits.default_pool if pool is None else pool
        if not 1 <= pool <= self.limits.max_pool:
            raise RequestError(
                400, f"pool must be between 1 and {self.limits.max_pool}, got {pool}"
            )
        if head_weight is not None:
            if not (math.isfinite(head_weight) and 0.0 <= head_weight <= 1.0):
                raise RequestError(400, f"head_weight must be between 0 and 1, got {head_weight}")
            if len(self.views.views) < 2:
                raise RequestError(
                    400,
                    f"head_weight needs the head and the whole view; preset "
                    f"{self.collection.config.preset!r} has only {self.views.views[0]}",
                )
        return k, max(pool, k)

    def query_item(
        self,
        item: Item,
        k: int,
        pool: int | None = None,
        head_weight: float | None = None,
        min_score: float | None = None,
        face: int = 0,
    ) -> dict[str, Any]:
        k, pool = self.check_query_options(k, pool, head_weight)
        try:
            asking = self.searcher.stored_query(item.id, face, item.path)
        except QueryError as exc:
            raise RequestError(400, str(exc)) from exc
        results = self._rank(asking.vector, asking.features, {item.id}, k, pool, head_weight)
        query = {"kind": "item", **item.to_json(), "head_box": list(asking.head_box)}
        query["face"] = asking.face
        return self._answer(query, results, k, pool, head_weight, min_score)

    def query_upload(
        self,
        data: bytes,
        content_type: str,
        k: int,
        pool: int | None = None,
        head_weight: float | None = None,
        min_score: float | None = None,
        face: int = 0,
    ) -> dict[str, Any]:
        k, pool = self.check_query_options(k, pool, head_weight)
        if len(data) > self.limits.max_upload_bytes:
            raise RequestError(
                413, f"upload of {len(data):,} bytes; the limit is {self.limits.max_upload_bytes:,}"
            )
        suffix = UPLOAD_TYPES.get(content_type)
        if suffix is None:
            raise RequestError(
                415,
                f"upload type {content_type or 'missing'!r}; send the image bytes as one of "
                f"{', '.join(sorted(UPLOAD_TYPES))}",
            )
        if not data:
            raise RequestError(400, "empty upload: send the image bytes as the request body")
        limits = LoadLimits(max_pixels=self.limits.max_upload_pixels)
        with tempfile.TemporaryDirectory(prefix="lookalike-upload-") as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                image = load_image(path, limits)
            except ImageLoadError as exc:
                raise RequestError(400, f"upload: {exc.reason}") from exc
        try:
            analysis, blocks, fused = self.searcher.embed_image(image, face)
        except IncompatibleCollectionError as exc:
            raise RequestError(409, str(exc)) from exc
        except ValueError as exc:  # no such face
            raise RequestError(400, f"upload: no face {face}: the picture {exc}") from exc
        # The same bytes indexed under some name are the query itself.
        exclude = self.by_sha.get(hashlib.sha256(data).hexdigest(), set())
        features = QueryFeatures(self.searcher, blocks)
        results = self._rank(fused, features, exclude, k, pool, head_weight)
        query = {
            "kind": "upload",
            "width": image.width,
            "height": image.height,
            "head_box": list(analysis.head_box),
            "fallback": analysis.fallback,
            "same_as": sorted(exclude),
            "faces": face_boxes(analysis.faces),
            "face": None if analysis.fallback else face,
        }
        return self._answer(query, results, k, pool, head_weight, min_score)

    def _rank(
        self,
        fused: np.ndarray,
        features: QueryFeatures,
        exclude: set[int],
        k: int,
        pool: int,
        head_weight: float | None,
    ) -> list[dict[str, Any]]:
        """The Searcher's own ranking (`query`'s answer), as tiles: never a second one here."""
        if head_weight is not None and not features.readable:
            raise RequestError(409, "head_weight: the stored per-view blocks are damaged")
        with self._model_lock:  # the ANN index is not thread-safe everywhere
            matches = self.searcher.search_vector(
                fused, k, exclude, features, head_weight=head_weight, pool=pool
            )
        results = []
        for match in matches:
            item = self.by_id.get(match.id)
            if item is None:
                continue
            answer = match.to_json()
            results.append(
                {
                    **item.to_json(),
                    # The face that matched, boxed (a picture with several is shown once).
                    "head_box": answer["head_box"],
                    "face": match.face,
                    "score": answer["score"],
                    "scores": answer["scores"],
                    "probability": answer["probability"],
                }
            )
        return results

    def _answer(
        self,
        query: dict[str, Any],
        results: list[dict[str, Any]],
        k: int,
        pool: int,
        head_weight: float | None,
        min_score: float | None = None,
    ) -> dict[str, Any]:
        kept = [r for r in results if min_score is None or r["score"] >= min_score]
        best = kept[0]["probability"] if kept else None
        return {
            "query": query,
            "k": k,
            "pool": pool,
            "head_weight": head_weight,
            "score": "fused" if head_weight is None else "head_weight",
            "views": self.views.views,
            "min_score": min_score,
            "left_out": len(results) - len(kept),
            # Nothing reaches min_score, or the best result is probably another character.
            "no_good_match": not kept or (best is not None and best < GOOD_MATCH),
            "calibration": self.searcher.calibration.source if self.searcher.calibration else None,
            "results": kept,
        }

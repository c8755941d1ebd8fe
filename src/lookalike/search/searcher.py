"""Answering "what looks like this one?" from a committed collection."""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from lookalike.errors import DamagedPartError, ImageLoadError, QueryError
from lookalike.fuse.expansion import expand_query
from lookalike.index.base import widened
from lookalike.load.images import file_sha256, load_image
from lookalike.search.calibration import GOOD_MATCH, calibration_for
from lookalike.search.coded_scores import CodedScorer
from lookalike.search.query_features import QueryFeatures
from lookalike.search.rerank import ViewScorer, combine, rank
from lookalike.store.collection import Collection
from lookalike.store.faces import MAX_FACES, FaceItems, best_per_owner, head_keys, item_blocks
from lookalike.vectors import RowMap

if TYPE_CHECKING:
    from lookalike.embed.extractor import Analysis, FeatureExtractor

log = logging.getLogger(__name__)


@dataclass
class Match:
    id: int
    path: str
    score: float
    head_box: tuple[int, int, int, int] | None
    fallback: bool
    # P(same character) from the preset's calibration table (None: not calibrated).
    probability: float | None = None
    width: int | None = None
    height: int | None = None
    # Cosine of each view alone, as the web API gives them ({"head": ..., "whole": ...}).
    view_scores: dict[str, float] = field(default_factory=dict)
    # The fused cosine; differs from `score` when a head weight ranked (None: the same).
    fused_score: float | None = None
    # Which of the picture's faces matched (0 = its first; None: no face, a fallback view);
    # `head_box` is that face's head box.
    face: int | None = None

    @property
    def fused(self) -> float:
        return self.score if self.fused_score is None else self.fused_score

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "score": round(self.score, 6),
            "probability": None if self.probability is None else round(self.probability, 4),
            "scores": {"fused": round(self.fused, 6), **self.view_scores},
            "width": self.width,
            "height": self.height,
            "head_box": list(self.head_box) if self.head_box else None,
            "face": self.face,
            "fallback": self.fallback,
        }


@dataclass
class QueryResult:
    query: str
    query_id: int | None  # the collection item the query is, when it is one
    query_head_box: tuple[int, int, int, int] | None
    query_fallback: bool
    matches: list[Match]
    root: str = ""  # the indexed folder: each match's path is relative to it
    k: int = 0  # how many results were asked for
    size: int = 0  # items in the collection
    candidates: int = 0  # how many of them could be results (all but the query itself)
    threshold: Threshold = field(default_factory=lambda: Threshold())
    left_out: list[Match] = field(default_factory=list)  # under the threshold
    calibration: str | None = None  # the dev sets the probabilities were fitted on
    query_face: int | None = None  # which face of the query picture asked (None: no face)
    query_faces: int = 0  # how many faces the query picture has
    # The query's file: a collection picture by its path in the indexed folder (however it
    # was asked), any other file as given; the form the matches' paths have.
    query_path: str = ""

    @property
    def no_good_match(self) -> bool:
        """No result passed the threshold, or the best one is probably another character."""
        if not self.matches:
            return True
        best = self.matches[0].probability
        return best is not None and best < GOOD_MATCH

    def notes(self) -> list[str]:
        """What a user should know about this answer, one sentence each."""
        out = []
        found = len(self.matches) + len(self.left_out)
        if found < self.k:
            itself = " and the query is one of them" if self.candidates < self.size else ""
            out.append(
                f"found {found} of the {self.k} results asked: the collection has {self.size} "
                f"images{itself}"
            )
        if self.left_out:
            out.append(f"{len(self.left_out)} result(s) under {self.threshold} left out")
        if self.no_good_match and not self.matches and self.left_out:
            best = self.left_out[0]
            out.append(
                f"no good match: no result reaches {self.threshold} (the best: score "
                f"{best.score:.3f}{_probability_text(best)})"
            )
        elif self.no_good_match and self.matches:
            best = self.matches[0]
            out.append(
                f"no good match: the best result is probably not the same character (score "
                f"{best.score:.3f}{_probability_text(best)})"
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "query_id": self.query_id,
            "query_path": self.query_path,
            "root": self.root,
            "query_head_box": list(self.query_head_box) if self.query_head_box else None,
            "query_fallback": self.query_fallback,
            "query_face": self.query_face,
            "query_faces": self.query_faces,
            "k": self.k,
            "found": len(self.matches),
            "min_score": self.threshold.min_score,
            "min_probability": self.threshold.min_probability,
            "left_out": len(self.left_out),
            "no_good_match": self.no_good_match,
            "calibration": self.calibration,
            "notes": self.notes(),
            "results": [m.to_json() for m in self.matches],
        }


@dataclass
class StoredQuery:
    """What a stored picture (or one of its faces) asks with (`Searcher.stored_query`)."""

    vector: np.ndarray  # its fused vector
    features: QueryFeatures  # what its results' per-view scores and P(same) come from
    head_box: tuple[int, int, int, int]  # the head box that asks
    fallback: bool
    face: int | None  # which face asks (None: no face, a fallback view)
    faces: int  # how many faces the picture has
    path: str  # its path in the indexed folder

    @property
    def views(self) -> dict[str, np.ndarray] | None:
        """Its per-view vectors (None: its blocks are damaged)."""
        return self.features.views


def candidate_count(
    size: int,
    k: int,
    excluded: int,
    pool: int | None,
    head_weight: float | None,
    widen: Callable[[int], int] = widened,
) -> int:
    """How many candidates to ask for before ranking them exactly: `widen` (the index's
    `candidates`) of what the answer needs.

    `pool` counts only when a head weight re-ranks: without one the answer must not depend
    on it, so that the page's first view is `query`'s answer for the same k.
    """
    wanted = widen(k + excluded)
    if head_weight is not None and pool is not None:
        wanted = max(wanted, pool + excluded)
    return min(size, wanted)


@dataclass(frozen=True)
class Threshold:
    """What a result must reach to be shown: a cosine score, a calibrated probability."""

    min_score: float | None = None
    min_probability: float | None = None

    def passes(self, match: Match) -> bool:
        if self.min_score is not None and match.score < self.min_score:
            return False
        if self.min_probability is None:
            return True
        return match.probability is not None and match.probability >= self.min_probability

    def __str__(self) -> str:
        parts = []
        if self.min_score is not None:
            parts.append(f"score {self.min_score:g}")
        if self.min_probability is not None:
            parts.append(f"probability {self.min_probability:g}")
        return "minimum " + " and ".join(parts)


def _probability_text(match: Match) -> str:
    return "" if match.probability is None else f", P(same) {match.probability:.2f}"


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
        gen = self.generation = self.collection.require_generation()
        self.collection.catalog  # noqa: B018 - opened now: a missing one is an error at once
        self.config = self.collection.config
        self.ids = gen.ids
        self.row_of = RowMap(self.ids)
        self.fused = np.asarray(gen.fused())
        self.head_boxes = gen.head_boxes
        self.index = gen.index()
        self.fuser = gen.fuser()
        # Every face of a picture with several is searchable (lookalike.store.faces).
        self.faces = gen.face_items() or FaceItems.empty(head_keys(self.config.block_keys))
        # Widened once (stored as float16): every query scores all of them, and numpy has
        # no fast float16 product; they are few (one per further face).
        self.face_fused = np.asarray(gen.face_fused(), np.float32)
        self._gen = gen
        self._root = str(self.collection.root)  # what each answer names its paths from
        self._views: ViewScorer | None = None
        self.calibration = calibration_for(self.config)
        rows = {"ids.npy": len(self.ids), "fused.npy": len(self.fused), "index": self.index.count}
        gen.check_rows({**rows, "head_boxes.npy": len(self.head_boxes)})
        if len(self.face_fused) != len(self.faces):
            raise gen.damaged(gen.path / "faces" / "fused.npy", "not one row per face item")
        self._extractor = extractor
        self._extractor_lock = threading.Lock()
        self._weights_checked = False

    @property
    def extractor(self) -> FeatureExtractor:
        """What embeds a picture from outside the collection; imported and made on first use,
        so that a query of a stored item loads no detector or feature source."""
        if self._extractor is None:
            from lookalike.embed.extractor import FeatureExtractor

            self._extractor = FeatureExtractor(self.config)
        return self._extractor

    @property
    def views(self) -> ViewScorer:
        """Per-view vectors of the stored blocks (memory-mapped on first use: only the rows
        asked for are read); raises DamagedPartError when a block is missing or damaged."""
        if self._views is None:
            for key in self.config.block_keys:  # opened now: a damaged one raises here
                self._gen.block(key)
            self._views = ViewScorer(self.fuser)
        return self._views

    def query_views(
        self, make: Callable[[ViewScorer], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray] | None:
        """The query's per-view vectors; None where the stored blocks are damaged: the fused
        vectors still answer, without per-view scores (`index` repairs the blocks)."""
        try:
            return make(self.views)
        except DamagedPartError as exc:
            log.warning("%s; results without per-view scores", exc.problem)
            return None

    def __len__(self) -> int:
        return len(self.ids)

    # -- resolving what the user asked about ----------------------------------------
    def resolve(self, query: str) -> tuple[int | None, Path | None]:
        """(collection id, image path): a file on disk, a path inside the root, or an id."""
        catalog = self.collection.catalog
        if os.path.isfile(query):  # os.path, not Path: a query by id makes no Path
            candidate = Path(query)
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
    def query(
        self, query: str, k: int = 4, threshold: Threshold | None = None, face: int = 0
    ) -> QueryResult:
        """The k items most like `query` (a file, a path in the root or an id), best first;
        with a `threshold`, those under it are left out (and listed in `left_out`); `face`:
        which face of a picture with several asks (0: its first, the best found)."""
        if threshold and threshold.min_probability is not None and self.calibration is None:
            raise QueryError(
                f"{self.collection.path}: preset {self.config.preset!r} with these settings "
                "has no calibrated probabilities (benchmarks/calibration.md); use --min-score"
            )
        item_id, path = self.resolve(query)
        if item_id is None:
            assert path is not None
            return self.query_image(path, k, threshold, face)
        asking = self.stored_query(item_id, face, query)
        matches = self.search_vector(asking.vector, k, {item_id}, asking.features)
        result = QueryResult(query, item_id, asking.head_box, asking.fallback, [])
        result.query_face, result.query_faces = asking.face, asking.faces
        result.query_path = asking.path
        return self._finish(result, matches, k, {item_id}, threshold)

    def stored_query(self, item_id: int, face: int = 0, name: str = "") -> StoredQuery:
        """What a stored picture asks with: its row's vectors, or its face `face`'s (1 or
        more: that face item's); QueryError naming `name` when it has no such face."""
        row = self.row_of[item_id]
        rec = self.collection.catalog.listed([item_id]).get(item_id)
        fallback = bool(rec.fallback) if rec else False
        n_faces = rec.faces if rec else 0
        path = rec.path if rec else str(item_id)
        item = -1  # the picture's own row (its first face, or its fallback view)
        if face:
            rows = self.faces.rows_of(item_id)
            match = rows[self.faces.numbers[rows] == face]
            if not len(match):
                searchable = min(n_faces, MAX_FACES)
                raise QueryError(
                    f"{name or item_id}: no face {face}: the picture has {n_faces} face(s) "
                    f"found, {searchable} searchable (faces count from 0)"
                )
            item = int(match[0])
        features = QueryFeatures(self, row=row, item=item)
        if item < 0:
            vector, box_of = np.asarray(self.fused[row], np.float32), self.head_boxes[row]
            asking = None if fallback else 0
        else:
            vector, box_of = self.face_fused[item], self.faces.boxes[item]
            asking, fallback = face, False
        box = tuple(int(v) for v in box_of)
        return StoredQuery(vector, features, box, fallback, asking, n_faces, path)  # type: ignore[arg-type]

    def query_image(
        self, path: Path, k: int = 4, threshold: Threshold | None = None, face: int = 0
    ) -> QueryResult:
        try:
            image = load_image(path)
            sha = file_sha256(path)
        except ImageLoadError as exc:
            raise QueryError(f"{exc.path}: cannot use as a query: {exc.reason}") from exc
        try:
            analysis, blocks, vector = self.embed_image(image, face)
        except ValueError as exc:  # no such face
            raise QueryError(f"{path}: no face {face}: the picture {exc}") from exc
        # The same file indexed under another name is still the query itself.
        same = {r.id for r in self.collection.catalog.by_sha256(sha) if r.id is not None}
        matches = self.search_vector(vector, k, same, QueryFeatures(self, blocks))
        result = QueryResult(str(path), None, analysis.head_box, analysis.fallback, [])
        result.query_face = None if analysis.fallback else face
        result.query_faces = len(analysis.faces)
        result.query_path = str(path)
        return self._finish(result, matches, k, same, threshold)

    def _finish(
        self,
        result: QueryResult,
        matches: list[Match],
        k: int,
        exclude: set[int],
        threshold: Threshold | None,
    ) -> QueryResult:
        result.threshold = threshold or Threshold()
        result.matches = [m for m in matches if result.threshold.passes(m)]
        result.left_out = [m for m in matches if not result.threshold.passes(m)]
        result.root = self._root
        result.k = k
        result.size = len(self.ids)
        result.candidates = result.size - sum(i in self.row_of for i in exclude)
        result.calibration = self.calibration.source if self.calibration else None
        return result

    def embed_image(
        self, image: Image.Image, face: int = 0
    ) -> tuple[Analysis, dict[str, np.ndarray], np.ndarray]:
        """Detect, embed and fuse an outside image: (analysis, its blocks, its query vector);
        `face`: which face gives the head view (0: the best found; ValueError if none such)."""
        from lookalike.embed.faces import choose_face

        with self._extractor_lock:
            if not self._weights_checked:
                # Vectors from other weights (an upgraded model package) would be compared
                # silently with the stored ones and give meaningless answers.
                self.collection.check_weights(self.extractor.backbone_hash())
                self._weights_checked = True
            analysis = self.extractor.analyse(image)
            choose_face(analysis, face, self.config.head_margin)
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

    def search_vector(
        self,
        vector: np.ndarray,
        k: int,
        exclude: set[int],
        features: QueryFeatures | None = None,
        head_weight: float | None = None,
        pool: int | None = None,
    ) -> list[Match]:
        """The k best items for a query vector: THE ranking, that `query` and the web page
        both call, so the two always agree (ids, order and ties).

        `features`: what each match's per-view cosines and P(same) are computed with (none:
        the fused scores alone). Without `head_weight` the score is the fused cosine (the
        index's ranking). With it, the index's best candidates (at least `pool` of them)
        are re-ranked by ``w * cos(head) + (1 - w) * cos(whole)`` of the per-view vectors
        (`rerank.combine`), which leave out what the fused vector learned across views (a
        dense reduction): a different ranking on purpose, asked for by moving the slider.
        Equal scores go by ascending id.
        """
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        vector = np.asarray(vector, np.float32)  # a stored row is float16
        if head_weight is not None and features is None:
            raise QueryError("head_weight needs the query's per-view vectors (head and whole)")
        # The index is asked for what it needs to rank the best exactly; the face items, exact
        # and few, are all looked at as an approximate index would be (`_with_faces`).
        asked = candidate_count(
            len(self.ids), k, len(exclude), pool, head_weight, self.index.candidates
        )
        n_faces = candidate_count(len(self.ids), k, len(exclude), pool, head_weight)
        rows, fused, items = self._candidates(vector, asked, n_faces, exclude)
        # Per-view cosines of every candidate when a head weight ranks by them, else of the k
        # results only: the stored blocks' cosines are most of a query's time.
        order = None if head_weight is not None else rank(fused, self.ids[rows])[:k]
        scored = np.arange(len(rows)) if order is None else order
        cosines, wides = self._view_scores(rows, items, scored, features)
        if head_weight is not None and not cosines:
            raise QueryError("head_weight needs the stored per-view blocks, which are damaged")
        scores = fused
        if order is None:
            scores = combine(cosines, head_weight)  # type: ignore[arg-type]
            order = rank(scores, self.ids[rows])[:k]
        # Probabilities are of the fused score (the calibrated one), whatever ranks.
        probabilities = self._probabilities(fused[order], None if wides is None else wides[order])
        return self._matches(rows, items, order, scores, fused, cosines, probabilities)

    def _view_scores(
        self,
        rows: np.ndarray,
        items: np.ndarray,
        scored: np.ndarray,
        features: QueryFeatures | None,
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """The candidates' per-view cosines with the query (`features`), and the cosines of
        their calibration vectors where P(same) is of those (`wide_calibrated`), each of all
        `rows` (NaN where not `scored`); ({}, None) where the blocks are damaged.

        Pictures scored on their own blocks are scored on their codes where the collection
        allows (`coded_scorer`); those found through a further face (its own float16 head
        blocks) and other layouts are decoded."""
        if features is None or not len(scored):
            return {}, None
        wide = self.wide_calibrated
        cosines = {v: np.full(len(rows), np.nan, np.float32) for v in self.config.views}
        wides = np.full(len(rows), np.nan, np.float32) if wide else None
        coded = self.coded_scorer
        asking = None if coded is None else features.stored_row
        query = None if coded is None or asking is not None else features.coded
        by_codes = coded is not None and (asking is not None or query is not None)
        on_codes = items[scored] < 0 if by_codes else np.zeros(len(scored), bool)
        for part, codes in ((scored[on_codes], True), (scored[~on_codes], False)):
            if not len(part):
                continue
            if codes:
                assert coded is not None
                if asking is not None:  # the stored row, read with the candidates
                    view_cosines, wide_cosines = coded.stored_scores(asking, rows[part], wide)
                else:
                    assert query is not None
                    view_cosines, wide_cosines = coded.scores(rows[part], query, wide)
            else:
                views = features.views
                blocks = self.readable_blocks(rows[part], items[part]) if views else None
                if views is None or blocks is None:
                    return {}, None
                view_cosines = {
                    view: f.transform(blocks) @ views[view] for view, f in self.views.fusers.items()
                }
                asked = features.wide if wide else None
                wide_cosines = None if asked is None else self.fuser.wide_transform(blocks) @ asked
            for view, values in view_cosines.items():
                cosines[view][part] = values
            if wides is not None:
                if wide_cosines is None:
                    wides = None
                else:
                    wides[part] = wide_cosines
        return cosines, wides

    @property
    def wide_calibrated(self) -> bool:
        """Whether P(same) is of the calibration vectors' cosines, not the fused ones (a
        dense reduction: `calibration_vector`)."""
        return self.calibration is not None and self.fuser.reduces

    @functools.cached_property
    def coded_scorer(self) -> CodedScorer | None:
        """What scores stored rows on their codes (coded_scores.py); None where the fused
        layout is another or the blocks are damaged (the decoding path reports it)."""
        try:
            blocks = {b.key: self._gen.block(b.key) for b in self.fuser.blocks}
        except DamagedPartError:
            return None
        return CodedScorer(self.fuser, blocks) if CodedScorer.applies(self.fuser, blocks) else None

    def _matches(
        self,
        rows: np.ndarray,
        items: np.ndarray,
        order: np.ndarray,
        scores: np.ndarray,
        fused: np.ndarray,
        cosines: dict[str, np.ndarray],
        probabilities: list[float | None],
    ) -> list[Match]:
        """The ranked candidates `order` as matches, with their catalog records."""
        # Lists, not numpy scalars: reading each scalar costs more than the arithmetic.
        picked, faces = rows[order], items[order]
        picked_ids = self.ids[picked].tolist()
        records = self.collection.catalog.listed(picked_ids)
        on_face = faces >= 0
        boxes, numbers = np.array(self.head_boxes[picked], np.int64), np.full(len(order), -1)
        if on_face.any():
            boxes[on_face] = self.faces.boxes[faces[on_face]]
            numbers[on_face] = self.faces.numbers[faces[on_face]]
        views = {view: c[order].tolist() for view, c in cosines.items()}
        columns = (boxes.tolist(), numbers.tolist(), scores[order].tolist(), fused[order].tolist())
        matches = []
        for n, (box, number, score, fused_score) in enumerate(zip(*columns, strict=True)):
            rec = records.get(picked_ids[n])
            if rec is None:  # deleted by a run that committed after we loaded
                continue
            match = Match(
                rec.id,
                rec.path,
                score,
                tuple(box),  # type: ignore[arg-type]
                rec.fallback,
                probabilities[n],
                rec.width,
                rec.height,
                {view: round(values[n], 6) for view, values in views.items()},
                fused_score,
                number if number >= 0 else (None if rec.fallback else 0),
            )
            matches.append(match)
        return matches

    def _candidates(
        self, vector: np.ndarray, asked: int, n_faces: int, exclude: set[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidate (rows, fused scores, face item row or -1), each picture scored by its
        best face; the excluded ids left out. The ANN index gives the pictures; the face items
        (one per extra face: few) are scored exactly."""
        found, _ = self.index.query(vector[None, :].astype(np.float32), asked)
        rows = found[0][found[0] >= 0].astype(np.int64)
        scores = self.fused[rows] @ vector
        items = np.full(len(rows), -1, np.int64)
        if len(self.face_fused):
            rows, scores, items = self._with_faces(vector, rows, scores, items, n_faces)
        # A set lookup each: exclude holds one id or a few (np.isin costs more at this size).
        keep = np.array([i not in exclude for i in self.ids[rows].tolist()], bool)
        return rows[keep], scores[keep].astype(np.float32), items[keep]

    def _with_faces(
        self,
        vector: np.ndarray,
        rows: np.ndarray,
        scores: np.ndarray,
        items: np.ndarray,
        n_candidates: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidates raised to their best face item's score; pictures found through a face
        item only are added."""
        face_scores = self.face_fused @ vector
        top = np.argpartition(-face_scores, min(n_candidates, len(face_scores)) - 1)
        top = top[:n_candidates]
        best = best_per_owner(face_scores[top], self.faces.owners[top])
        position = {int(r): i for i, r in enumerate(rows.tolist())}
        rows, scores, items = list(rows), list(scores), list(items)
        for owner, (score, at) in best.items():
            row = self.row_of.get(owner)
            if row is None:
                continue
            i = position.get(row)
            if i is None:
                position[row] = len(rows)
                rows.append(row)
                scores.append(float(self.fused[row] @ vector))
                items.append(-1)
                i = position[row]
            if score > scores[i]:
                scores[i], items[i] = score, int(top[at])
        return np.array(rows, np.int64), np.array(scores, np.float32), np.array(items, np.int64)

    def readable_blocks(self, rows: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray] | None:
        """`_candidate_blocks`, or None where the stored blocks are damaged: the fused vectors
        still answer, without per-view scores or probabilities (`index` repairs them)."""
        try:
            return self._candidate_blocks(rows, items)
        except DamagedPartError as exc:
            log.warning("%s; results without per-view scores or probabilities", exc.problem)
            return None

    def _candidate_blocks(self, rows: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
        """The blocks of each candidate, of the face that matched (item >= 0)."""
        blocks = self.stored_blocks(rows)
        on_face = items >= 0
        if on_face.any():
            for key, face_block in self._face_blocks(items[on_face]).items():
                blocks[key][on_face] = face_block
        return blocks

    def _face_blocks(self, items: np.ndarray) -> dict[str, np.ndarray]:
        owners = np.array([self.row_of[int(o)] for o in self.faces.owners[items]], np.int64)
        return item_blocks(self.faces, items, self.stored_blocks(owners))

    def stored_blocks(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The stored feature blocks of some rows (read from the memory-mapped arrays)."""
        blocks = {}
        for block in self.fuser.blocks:
            blocks[block.key] = np.asarray(self.generation.block(block.key)[rows], np.float32)
        return blocks

    def calibration_vector(self, blocks: dict[str, np.ndarray]) -> np.ndarray | None:
        """The query in the space its scores were calibrated in, when that is not the fused
        vector's (a dense reduction: `Fuser.wide_transform`); None otherwise."""
        return self.fuser.wide_transform(blocks)[0] if self.wide_calibrated else None

    def _probabilities(
        self, scores: np.ndarray, wide_cosines: np.ndarray | None
    ) -> list[float | None]:
        """P(same character) of results given their fused `scores`, or of their calibration
        vectors' `wide_cosines` where it is of those (None where they could not be read)."""
        if self.calibration is None or (self.wide_calibrated and wide_cosines is None):
            return [None] * len(scores)
        return [*self.calibration.of_scores(wide_cosines if self.wide_calibrated else scores)]

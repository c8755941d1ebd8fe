"""Retrieval quality of presets on a labelled collection.

For each preset: precision@k and mAP@k for "same label" under exact cosine
search, the ANN backend's recall@k against exact search, a feel score (how
alike the whole images of the results look, by colour), and the vector size.
Every labelled item queries every other labelled item (leave-one-out), or, with
`evaluate_held_out`, a trained preset (v5) learns from a labelled part and every preset is
scored on the other part only.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.config import (
    FEEL_BLOCK,
    PipelineConfig,
    blocks_to_compare,
    preset_like,
)
from lookalike.embed import Backbone
from lookalike.embed.extractor import FeatureExtractor
from lookalike.embed.model_files import DEFAULT_OUTPUT
from lookalike.errors import LabelsError
from lookalike.fuse.expansion import expand_collection
from lookalike.fuse.fitting import fit_fused, new_index
from lookalike.fuse.fuser import Fuser
from lookalike.load.labels import Labels, label_set
from lookalike.store.blocks import blocks_for
from lookalike.store.collection import Collection, Generation
from lookalike.store.faces import fuse_items, with_face_scores
from lookalike.vectors import l2_normalize

if TYPE_CHECKING:
    from lookalike.embed.trained_model import Output, TrainedModel
    from lookalike.train.options import TrainOptions


@dataclass
class FaceVectors:
    """The fused face items of the scored pictures (`lookalike.store.faces`)."""

    vectors: np.ndarray  # (n, dims)
    owner_rows: np.ndarray  # the scored row (query and gallery position) of each one's picture


@dataclass
class LabelScore:
    """precision@k of the queries with one label, and what their misses were labelled."""

    label: str
    queries: int
    precision_at_k: float
    # The labels the misses had, most often first (label, times; at most CONFUSIONS).
    found_instead: list[tuple[str, int]]


CONFUSIONS = 3


@dataclass
class PresetScore:
    preset: str
    precision_at_k: float
    map_at_k: float
    ann_recall_at_k: float
    feel: float
    dims: int
    k: int
    queries: int
    per_label: list[LabelScore] = field(default_factory=list)  # worst first

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def exact_top_k(vectors: np.ndarray, k: int, faces: FaceVectors | None = None) -> np.ndarray:
    """Row indices of each row's k nearest other rows by cosine similarity; with `faces`, a
    row scores by its best face, as `lookalike query` scores a picture."""
    sims = vectors @ vectors.T
    if faces is not None and len(faces.vectors):
        with_face_scores(sims, vectors @ faces.vectors.T, faces.owner_rows)
    np.fill_diagonal(sims, -np.inf)
    k = min(k, len(vectors) - 1)
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def shared_labels(labels: np.ndarray) -> np.ndarray:
    """(n, n) bool: whether rows i and j share a label (a value `a|b` holds labels a and b)."""
    sets = [label_set(str(value)) for value in labels]
    names = {name: i for i, name in enumerate(sorted(set().union(*sets)))}
    member = np.zeros((len(sets), len(names)), dtype=np.float32)
    for row, labs in enumerate(sets):
        member[row, [names[name] for name in labs]] = 1.0
    return (member @ member.T) > 0


def precision_and_map(neighbours: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """precision@k and mAP@k; a result is a hit when it shares a label with its query."""
    share = shared_labels(labels)
    hits = np.take_along_axis(share, neighbours, axis=1)
    k = neighbours.shape[1]
    precision = hits.mean(axis=1)
    relevant = share.sum(axis=1) - 1
    cumulative = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    ap = (cumulative * hits).sum(axis=1) / np.maximum(np.minimum(relevant, k), 1)
    return float(precision.mean()), float(ap.mean())


def label_scores(neighbours: np.ndarray, labels: np.ndarray) -> list[LabelScore]:
    """precision@k per label (a query labelled `a|b` counts under a and under b) and the
    labels of its misses, worst label first: where a collection's answers go wrong."""
    sets = [label_set(str(value)) for value in labels]
    hits = np.take_along_axis(shared_labels(labels), neighbours, axis=1)
    precision: dict[str, list[float]] = {}
    instead: dict[str, Counter[str]] = {}
    for row, found in enumerate(neighbours):
        missed = Counter(name for n, j in enumerate(found) if not hits[row, n] for name in sets[j])
        for name in sets[row]:
            precision.setdefault(name, []).append(float(hits[row].mean()))
            instead.setdefault(name, Counter()).update(missed)
    scores = [
        LabelScore(
            name,
            len(values),
            round(float(np.mean(values)), 4),
            instead[name].most_common(CONFUSIONS),
        )
        for name, values in precision.items()
    ]
    return sorted(scores, key=lambda s: (s.precision_at_k, s.label))


def ann_recall(vectors: np.ndarray, exact: np.ndarray, config: PipelineConfig, k: int) -> float:
    index = new_index(config)
    index.build(vectors)
    ids, _ = index.query(vectors, k + 1)
    recalls = []
    for row, (found, truth) in enumerate(zip(ids, exact, strict=True)):
        found = [i for i in found.tolist() if i != row and i >= 0][:k]
        recalls.append(len(set(found) & set(truth.tolist())) / len(truth))
    return float(np.mean(recalls))


def feel_score(feel_vectors: np.ndarray, neighbours: np.ndarray) -> float:
    v = l2_normalize(feel_vectors)
    sims = np.einsum("nd,nkd->nk", v, v[neighbours])
    return float(sims.mean())


def evaluate(
    coll: Collection,
    labels: Labels,
    presets: Sequence[str],
    k: int = 4,
    task: str | None = None,
    backbone: Backbone | None = None,
    progress: bool = True,
) -> list[PresetScore]:
    rows, y = labelled_rows(coll, labels, task)
    gen = coll.require_generation()
    base = coll.config
    configs = [preset_like(name, base) for name in presets]
    keys = blocks_to_compare(base, presets)
    extractor = FeatureExtractor(configs[0], backbone=backbone)
    blocks = blocks_for(coll, gen, keys, extractor, progress=progress)
    results = []
    for name, config in zip(presets, configs, strict=True):
        used = {key: blocks[key] for key in config.block_keys}
        # Unsupervised, on the whole collection, as at index time.
        # The collection's own preset fits on its coded blocks as the index run does.
        bases = {k: b for k, b in gen.bases().items() if k in used} if config == base else {}
        fuser, fused = fit_fused(config, used, bases)
        fused = fused[rows]
        # The collection's own preset has its pictures' other faces: scored as queried.
        faces = face_vectors(gen, fuser, used, rows) if config == base else None
        feel = blocks[FEEL_BLOCK][rows]
        results.append(score_vectors(name, config, fused, y, feel, k, faces))
    return results


def face_vectors(
    gen: Generation, fuser: Fuser, blocks: dict[str, np.ndarray], rows: np.ndarray
) -> FaceVectors | None:
    """The fused face items of the pictures in `rows` (None: the generation has none)."""
    items = gen.face_items()
    if items is None or not len(items):
        return None
    position = {int(gen.ids[row]): pos for pos, row in enumerate(rows.tolist())}
    keep = np.array([int(o) in position for o in items.owners.tolist()], dtype=bool)
    items = items.take(np.flatnonzero(keep))
    row_of = {int(i): row for row, i in enumerate(gen.ids.tolist())}
    vectors = fuse_items(fuser, items, blocks, row_of)
    owners = np.array([position[int(o)] for o in items.owners.tolist()], np.int64)
    return FaceVectors(vectors, owners)


def labelled_rows(
    coll: Collection, labels: Labels, task: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Generation rows of the images labelled for `task`, and their labels."""
    gen = coll.require_generation()
    records = coll.catalog.get_many(gen.ids.tolist())
    label_of = labels.column(task)
    rows = [r for r, i in enumerate(gen.ids.tolist()) if records[i].path in label_of]
    if len(rows) < 2:
        raise LabelsError("fewer than two indexed images have labels; nothing to evaluate")
    y = np.array([label_of[records[int(gen.ids[r])].path] for r in rows])
    return np.array(rows, dtype=np.int64), y


def score_vectors(
    name: str,
    config: PipelineConfig,
    fused: np.ndarray,
    y: np.ndarray,
    feel: np.ndarray,
    k: int,
    faces: FaceVectors | None = None,
) -> PresetScore:
    """Scores of one preset: each row queries all the other rows (and nothing else)."""
    neighbours = exact_top_k(fused, k, faces)
    plain = neighbours if faces is None else exact_top_k(fused, k)
    precision, mean_ap = precision_and_map(neighbours, y)
    return PresetScore(
        preset=name,
        precision_at_k=round(precision, 4),
        map_at_k=round(mean_ap, 4),
        # The index holds the pictures' first faces: its recall is against exact search of those.
        ann_recall_at_k=round(ann_recall(fused, plain, config, k), 4),
        feel=round(feel_score(feel, neighbours), 4),
        dims=int(fused.shape[1]),
        k=k,
        queries=len(fused),
        per_label=label_scores(neighbours, y),
    )


@dataclass
class HeldOut:
    """The result of `evaluate_held_out`: scores, and which images trained and which scored."""

    scores: list[PresetScore]
    train_paths: list[str]
    test_paths: list[str]
    train_seconds: float | None  # training time of the v5 model (None: no v5 preset asked)


def evaluate_held_out(
    coll: Collection,
    labels: Labels,
    presets: Sequence[str],
    train_fraction: float,
    k: int = 4,
    task: str | None = None,
    seed: int = 0,
    options: TrainOptions | None = None,
    outputs: Sequence[Output] = (DEFAULT_OUTPUT,),  # the trained model's own: the "v5" row
    progress: bool = True,
) -> HeldOut:
    """Label a stratified `train_fraction` of the images, train v5 on it, score the rest.

    The model learns every label column of the training images only; every preset is then
    scored on the held-out images alone, which are both the queries and the gallery, so a
    training image can neither ask nor be found. The unsupervised fusion (PCA) still sees
    the whole collection, as it does when indexing. A v5 preset gives one row per output
    in `outputs`: "v5" for the model's own output, "v5:<output>" for the others.
    """
    from lookalike.train import stratified_split

    rows, y = labelled_rows(coll, labels, task)
    train_part, test_part = stratified_split(y.tolist(), train_fraction, seed)
    train_rows, test_rows, y_test = rows[train_part], rows[test_part], y[test_part]
    gen = coll.require_generation()
    records = coll.catalog.get_many(gen.ids.tolist())
    path_of = [records[int(i)].path for i in gen.ids]
    base = coll.config
    ext = FeatureExtractor(base)
    model, seconds = None, None
    results = []
    for name in presets:
        config = preset_like(name, base)
        # Blocks of a trained source come from the model trained here on the labelled part.
        trained = ext.trained_keys(config.block_keys)
        plain = [key for key in config.block_keys if key not in trained]
        blocks = blocks_for(coll, gen, [*plain, FEEL_BLOCK], ext, progress=progress)
        feel = blocks[FEEL_BLOCK][test_rows]
        if not trained:
            used = {key: blocks[key] for key in config.block_keys}
            fused = held_out_vectors(config, used, test_rows)
            results.append(score_vectors(name, config, fused, y_test, feel, k))
            continue
        if model is None:
            model, seconds = _held_out_model(coll, labels, options, train_rows)
        vectors = _model_outputs(coll, gen, model, config, trained, outputs, progress)
        # The model's own output first, as "v5"; the others as "v5:<output>".
        for output in sorted(outputs, key=lambda o: o != model.config.output):
            used = {key: blocks[key] for key in plain} | {k: vectors[output][k] for k in trained}
            used = {key: used[key] for key in config.block_keys}
            fused = held_out_vectors(config, used, test_rows)
            label = name if output == model.config.output else f"{name}:{output}"
            results.append(score_vectors(label, config, fused, y_test, feel, k))
    return HeldOut(
        results,
        [path_of[r] for r in train_rows],
        [path_of[r] for r in test_rows],
        seconds,
    )


def _held_out_model(
    coll: Collection, labels: Labels, options: TrainOptions | None, train_rows: np.ndarray
) -> tuple[TrainedModel, float]:
    """The model trained on `train_rows` only, and the seconds it took; saved in the
    collection's cache, where its network is read from."""
    from lookalike.embed.trained_model import load_model, save_model
    from lookalike.train import train_model

    out = coll.cache_dir / "held-out-model"
    model, run = train_model(coll, labels, options=options, rows=train_rows, out=out)
    return load_model(save_model(out, model.config, model.classifiers)), run.seconds


def _model_outputs(
    coll: Collection,
    gen: Generation,
    model: TrainedModel,
    config: PipelineConfig,
    keys: Sequence[str],
    outputs: Sequence[Output],
    progress: bool,
) -> dict[str, dict[str, np.ndarray]]:
    """Blocks `keys` (of the trained source) for each output of `model` (saved), from one
    pass of its network over the views (the outputs are computed from the embedding)."""
    network = FeatureExtractor(
        config.with_options(model_dir=str(model.path)), model=model.with_output("embedding")
    )
    embedded = blocks_for(coll, gen, keys, network, progress=progress)
    return {o: {k: model.classifiers.vectors(v, o) for k, v in embedded.items()} for o in outputs}


def held_out_vectors(
    config: PipelineConfig, used: dict[str, np.ndarray], test_rows: np.ndarray
) -> np.ndarray:
    """Fused vectors of the scored part; expansion sees only that part, never a training
    image, so no training image can shape the gallery."""
    fused = Fuser(config.blocks, config.fusion).fit_transform(used)[test_rows]
    return expand_collection(fused, config)


def detection_rate(coll: Collection, paths: Iterable[str] | None = None) -> float:
    """The share of indexed pictures (of `paths` only, when given) with a detected face."""
    records = coll.catalog.by_status("ok")
    if paths is not None:
        wanted = set(paths)
        records = [r for r in records if r.path in wanted]
    if not records:
        return 0.0
    return sum(not r.fallback for r in records) / len(records)


def markdown_table(scores: Sequence[PresetScore], detection: float) -> str:
    k = scores[0].k if scores else 4
    lines = [
        f"| preset | P@{k} | mAP@{k} | ANN recall@{k} | feel | dims |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in scores:
        lines.append(
            f"| {s.preset} | {s.precision_at_k:.3f} | {s.map_at_k:.3f} | "
            f"{s.ann_recall_at_k:.3f} | {s.feel:.3f} | {s.dims} |"
        )
    queries = scores[0].queries if scores else 0
    lines.append("")
    lines.append(
        f"{queries} labelled queries; faces detected in {detection:.1%} of the labelled images."
    )
    return "\n".join(lines)


def per_label_tables(scores: Sequence[PresetScore]) -> str:
    """One table per preset: each label's precision@k, worst first, and what its queries
    found instead."""
    out = []
    for s in scores:
        out += [
            "",
            f"{s.preset}, per label:",
            "",
            f"| label | queries | P@{s.k} | most often found instead |",
            "| --- | --- | --- | --- |",
        ]
        for row in s.per_label:
            instead = ", ".join(f"{name} ({times})" for name, times in row.found_instead)
            out.append(
                f"| {row.label} | {row.queries} | {row.precision_at_k:.3f} | {instead or '-'} |"
            )
    return "\n".join(out)


def to_json(scores: Sequence[PresetScore], detection: float) -> str:
    return json.dumps(
        {"detection_rate": round(detection, 4), "presets": [s.to_json() for s in scores]},
        indent=2,
    )

"""Feature blocks for every item of a committed generation, whatever preset asks.

Blocks the collection was indexed with come from the generation; others are
computed once from the images (re-using the stored head boxes, so nothing is
detected again) and cached in the collection's ``cache/`` folder.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lookalike.collection import BLOCK_DTYPE, Collection, Generation
from lookalike.errors import ImageLoadError, LookalikeError
from lookalike.features import HEAD_FEATURE, FeatureExtractor, split_key
from lookalike.fileio import atomic_save_npz
from lookalike.images import load_image

log = logging.getLogger(__name__)


def _cache_path(coll: Collection, extractor: FeatureExtractor, key: str) -> Path:
    fingerprint = extractor.backbone_hash([key])
    if split_key(key)[1] == HEAD_FEATURE:
        # v5 vectors depend on the trained head as much as on the backbone.
        fingerprint += f":{extractor.head.fingerprint}"
    tag = hashlib.sha256(fingerprint.encode()).hexdigest()[:16] if fingerprint else "descriptors"
    return coll.cache_dir / tag / f"{key}.npz"


def blocks_for(
    coll: Collection,
    gen: Generation,
    keys: Sequence[str],
    extractor: FeatureExtractor,
    batch_size: int = 32,
    progress: bool = True,
    computed: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Blocks `keys` for every item of `gen`: stored, cached, or computed and cached.

    The keys that had to be computed from the images are appended to `computed`.
    """
    ids = gen.ids
    out: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for key in keys:
        if gen.has_block(key) and _stored_fits(coll, extractor, key):
            out[key] = np.asarray(gen.block(key), np.float32)  # stored as float16
            continue
        cached = _cached(_cache_path(coll, extractor, key), ids)
        if cached is not None:
            out[key] = cached
            continue
        missing.append(key)
    if computed is not None:
        computed.extend(missing)
    if missing:
        fresh = _compute(coll, gen, missing, extractor, batch_size, progress)
        for key, vectors in fresh.items():
            path = _cache_path(coll, extractor, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            stored = vectors.astype(BLOCK_DTYPE)
            atomic_save_npz(path, {"ids": ids, "vectors": stored})
            out[key] = stored.astype(np.float32)  # what a later run reads from the cache
    return {key: out[key] for key in keys}


def keep_in_cache(coll: Collection, gen: Generation, extractor: FeatureExtractor) -> None:
    """Copy the generation's blocks (computed by `extractor`'s settings) into the cache, so
    that they are found again after the collection switches to other settings and back."""
    for key in extractor.config.block_keys:
        if split_key(key)[1] == HEAD_FEATURE or not gen.has_block(key):
            continue  # v5 blocks: the trained head's folder keeps what computes them
        if not _stored_fits(coll, extractor, key):
            continue  # computed by other weights than the extractor's: not its vectors
        path = _cache_path(coll, extractor, key)
        if _cached(path, gen.ids) is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_save_npz(path, {"ids": gen.ids, "vectors": np.asarray(gen.block(key))})


def _cached(path: Path, ids: np.ndarray) -> np.ndarray | None:
    """The cached vectors of `ids`, or None: not cached, for other ids, or damaged (a cache:
    computed again, with a warning)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if not np.array_equal(data["ids"], ids):
                return None
            return np.asarray(data["vectors"], np.float32)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("%s: damaged cached features (%s); computing them again", path, exc)
        return None


def _stored_fits(coll: Collection, extractor: FeatureExtractor, key: str) -> bool:
    """Whether the generation's block `key` is what `extractor` computes: a backbone output
    stored by other weights, or a v5 block stored by another head (or another output, or
    the same folder trained again), is not."""
    if split_key(key)[1] == HEAD_FEATURE and coll.head_fingerprint != extractor.head.fingerprint:
        return False
    if not extractor.needs_backbone([key]):
        return True
    stored, wanted = coll.weights_hash, extractor.backbone_hash([key])
    # Collections written before the options joined the hash stored "<backbone>:<weights>".
    legacy = stored.count(":") == 1 and wanted.startswith(f"{stored}:")
    return wanted == stored or legacy


def _compute(
    coll: Collection,
    gen: Generation,
    keys: list[str],
    extractor: FeatureExtractor,
    batch_size: int,
    progress: bool,
) -> dict[str, np.ndarray]:
    ids = gen.ids
    boxes = gen.head_boxes
    records = coll.catalog.get_many(ids.tolist())

    def views(row: int):
        rec = records.get(int(ids[row]))
        if rec is None:
            raise LookalikeError(f"item {ids[row]} vanished from the catalog; re-run index")
        try:
            image = load_image(coll.root / rec.path)
        except ImageLoadError as exc:
            raise LookalikeError(
                f"{exc.path}: {exc.reason}; the folder changed since indexing, re-run index"
            ) from exc
        return extractor.views_from_box(image, boxes[row])

    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    bar = tqdm(
        total=len(ids),
        unit="img",
        desc=f"computing {', '.join(keys)}",
        disable=not progress,
        file=sys.stderr,
    )
    with ThreadPoolExecutor(2) as pool:
        for start in range(0, len(ids), batch_size):
            batch = list(pool.map(views, range(start, min(start + batch_size, len(ids)))))
            for key, array in extractor.compute(batch, keys).items():
                parts[key].append(array)
            bar.update(len(batch))
    bar.close()
    return {k: np.concatenate(v) for k, v in parts.items()}

"""Feature blocks for every item of a committed generation, whatever preset asks.

Blocks the collection was indexed with come from the generation; others are
computed once from the images (re-using the stored head boxes, so nothing is
detected again) and cached in the collection's ``cache/`` folder.

The cache is kept per picture: each cached row carries the sha256 of its file's bytes
(and, for a head view, the head box it was cut from), under a folder named by the
fingerprint of what computes the feature (backbone weights and options, trained model).
A picture added, changed or removed since the cache was written costs only its own row:
the other rows are re-used, and `evaluate` run twice computes nothing the second time.
Collections under CACHE_MIN_PICTURES pictures keep no cache: their blocks are computed again.
A cache of `KEPT_BASIS_MIN_ROWS` rows or more is kept as int8 codes (store/cache_file.py).
(Caches of the format before this one, keyed by the generation's id list, are computed
again once: a changed file kept its id, so an id alone could name stale vectors.)
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lookalike.config import FEEL_BLOCK, split_key
from lookalike.embed.extractor import FeatureExtractor
from lookalike.errors import ImageLoadError, LookalikeError
from lookalike.load.images import load_image
from lookalike.store.cache_file import CachedRows, Pictures, read_cached, write_cached
from lookalike.store.codec import code_share
from lookalike.store.collection import BLOCK_DTYPE, Collection, Generation

log = logging.getLogger(__name__)

# Blocks computed for `evaluate` (or kept from settings switched away from) stay in cache/
# only from this many pictures on. Below it a second `evaluate` decodes the pictures again:
# on anime-full-dev's 546 illustrations 11-14 s instead of 1.4-1.7 s, where keeping them
# costs 0.27 MB of bases and 0.6 KB a picture, a third of issue 16's 4 KB a picture there.
# From 1,000 pictures on a collection stays within 4 KB a picture with them
# (benchmarks/README.md, "Where issue 16 stands").
# $LOOKALIKE_CACHE_MIN_PICTURES sets another threshold (0: every collection keeps them).
CACHE_MIN_PICTURES = 1_000


def keeps_cache(pictures: int) -> bool:
    """Whether a collection of `pictures` keeps the blocks it computes for `evaluate`."""
    given = os.environ.get("LOOKALIKE_CACHE_MIN_PICTURES", "").strip()
    if not given:
        return pictures >= CACHE_MIN_PICTURES
    if not given.isdigit():
        raise LookalikeError(
            f"LOOKALIKE_CACHE_MIN_PICTURES must be a whole number of pictures, not {given!r}"
        )
    return pictures >= int(given)


@dataclass
class Computed:
    """What `blocks_for` had to compute from the images (the rest was stored or cached)."""

    keys: list[str] = field(default_factory=list)
    pictures: int = 0  # pictures decoded for them


def pictures_of(coll: Collection, gen: Generation) -> Pictures:
    """Who the generation's rows are: each file's sha256 and head box."""
    records = coll.catalog.get_many(gen.ids.tolist())
    digests = [getattr(records.get(int(i)), "sha256", None) or "" for i in gen.ids]
    return Pictures(np.array(digests, dtype="<U64"), np.asarray(gen.head_boxes, np.int32))


def _cache_path(coll: Collection, extractor: FeatureExtractor, key: str) -> Path:
    fingerprint = extractor.fingerprint([key])
    tag = hashlib.sha256(fingerprint.encode()).hexdigest()[:16] if fingerprint else "descriptors"
    return coll.cache_dir / tag / f"{key}.npz"


def blocks_for(
    coll: Collection,
    gen: Generation,
    keys: Sequence[str],
    extractor: FeatureExtractor,
    batch_size: int = 32,
    progress: bool = True,
    computed: Computed | None = None,
) -> dict[str, np.ndarray]:
    """Blocks `keys` for every item of `gen`: stored, cached, or computed and cached.

    Only the pictures some key has no cached row for are decoded, once for all the keys
    (one backbone pass gives every output of a view); `computed` says what that took.
    """
    pictures = pictures_of(coll, gen)
    out: dict[str, np.ndarray] = {}
    partial: dict[str, CachedRows] = {}
    for key in keys:
        if gen.has_block(key) and extractor.stored_fits(key, coll.fingerprints):
            out[key] = np.asarray(gen.block(key), np.float32)  # stored as float16 or codes
            continue
        cached = _read_cached(coll, extractor, key, pictures)
        if cached.complete:
            out[key] = cached.vectors
        else:
            partial[key] = cached
    todo = np.flatnonzero(~np.logical_and.reduce([c.have for c in partial.values()]))
    report = computed if computed is not None else Computed()
    report.keys.extend(partial)
    report.pictures = len(todo) if partial else 0
    if not partial:
        log.info("%s: every block stored or cached; no picture decoded", coll.path)
        return {key: out[key] for key in keys}
    log.info(
        "%s: computing %s for %d of %d pictures",
        coll.path,
        ", ".join(partial),
        len(todo),
        len(gen.ids),
    )
    fresh = _compute(coll, gen, list(partial), extractor, todo, batch_size, progress)
    for key, cached in partial.items():
        missing = np.flatnonzero(~cached.have)
        cached.put(missing, fresh[key][np.searchsorted(todo, missing)])
        if keeps_cache(len(gen.ids)):
            write_cached(_cache_path(coll, extractor, key), pictures, cached)
        out[key] = cached.vectors  # as a cache stores them, kept or not: the same scores
    return {key: out[key] for key in keys}


def add_to_cache(
    coll: Collection,
    extractor: FeatureExtractor,
    key: str,
    pictures: Pictures,
    rows: np.ndarray,
    vectors: np.ndarray,
) -> None:
    """Cache block `key` of `pictures[rows]` (computed by `extractor`'s settings, by an index
    run from the same pass as its own blocks), beside the cached rows of the other
    `pictures`; rows of pictures not among them are dropped. Not below CACHE_MIN_PICTURES."""
    if not keeps_cache(len(pictures.digests)):
        return
    cached = _read_cached(coll, extractor, key, pictures)
    cached.put(rows, vectors)
    write_cached(_cache_path(coll, extractor, key), pictures, cached)


def keep_in_cache(coll: Collection, gen: Generation, extractor: FeatureExtractor) -> None:
    """Copy the generation's blocks (computed by `extractor`'s settings) into the cache, so
    that they are found again after the collection switches to other settings and back
    (from CACHE_MIN_PICTURES pictures on: below, switching back decodes them again)."""
    if not keeps_cache(len(gen.ids)):
        return
    pictures = pictures_of(coll, gen)
    for key in extractor.config.block_keys:
        if not gen.has_block(key) or not extractor.stored_fits(key, coll.fingerprints):
            continue  # computed by other weights than the extractor's: not its vectors
        cached = _read_cached(coll, extractor, key, pictures)
        if not cached.complete:
            missing = np.flatnonzero(~cached.have)
            cached.put(missing, np.asarray(gen.block(key), np.float32)[missing])
            write_cached(_cache_path(coll, extractor, key), pictures, cached)


def _read_cached(
    coll: Collection, extractor: FeatureExtractor, key: str, pictures: Pictures
) -> CachedRows:
    """Block `key`'s cached rows of `pictures`. Two are never coded: a trained model's (as
    in a generation: codec.code_blocks), and the feel block, which `evaluate`'s feel score
    is measured on (coded, its cosines grow: 0.753 to 0.860 on anime-faces-dev)."""
    path = _cache_path(coll, extractor, key)
    compact = key != FEEL_BLOCK and not extractor.trained_keys([key])
    return read_cached(path, pictures, _is_head(key), compact, code_share(key))


def _is_head(key: str) -> bool:
    return split_key(key)[0] == "head"


def _compute(
    coll: Collection,
    gen: Generation,
    keys: list[str],
    extractor: FeatureExtractor,
    rows: np.ndarray,
    batch_size: int,
    progress: bool,
) -> dict[str, np.ndarray]:
    """Blocks `keys` of the generation's `rows` (in that order), from their images."""
    ids = gen.ids
    boxes = gen.head_boxes
    records = coll.catalog.get_many(ids[rows].tolist())

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
        total=len(rows),
        unit="img",
        desc=f"computing {', '.join(keys)}",
        disable=not progress,
        file=sys.stderr,
    )
    with ThreadPoolExecutor(2) as pool:
        for start in range(0, len(rows), batch_size):
            batch = list(pool.map(views, rows[start : start + batch_size].tolist()))
            for key, array in extractor.compute(batch, keys).items():
                parts[key].append(array.astype(BLOCK_DTYPE))
            bar.update(len(batch))
    bar.close()
    return {k: np.concatenate(v) for k, v in parts.items()}

"""Near-duplicate groups: the same picture re-saved, resized, cropped, recoloured or
lightly edited, as imagededup's `find_duplicates` and Immich's duplicate view find them.

The signal is a perceptual hash (pHash: the signs of the lowest 8 x 8 frequencies of a
32 x 32 grey copy against their median, 64 bits), computed on demand from the files:
two pictures are near duplicates when their hashes differ in at most `threshold` bits,
and groups are the connected pairs. The default threshold and the choice of hashing on
demand rather than at index time are measured in benchmarks/duplicates.py
(benchmarks/quality.md#near-duplicates).

Nothing is ever deleted: each group names the file to keep (the most pixels, then the
most bytes, then the first path) and the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.errors import ImageLoadError, LookalikeError
from lookalike.load.images import LoadLimits, load_image
from lookalike.store.collection import Collection

HASH_SIDE = 32  # the grey copy the DCT is taken of
HASH_LOW = 8  # the lowest HASH_LOW x HASH_LOW frequencies make the 64 bits
# Bits. 6: no false pair on the benchmark's set nor on the dev sets; 8 finds more of the
# edited copies but paired different pictures on the dev sets (benchmarks/quality.md).
DEFAULT_THRESHOLD = 6
MAX_THRESHOLD = 32  # half the bits: beyond it any two pictures are "duplicates"
# Decoding a small copy is enough for a 32 x 32 hash (JPEGs shrink while decoding).
HASH_LIMITS = LoadLimits(max_side=512)
PAIR_CHUNK = 256  # rows of the pairwise comparison held at once
CROP_SHARES = (0.9, 0.8)  # crops of this share of each side are hashed too
CROP_GRID = 3
VARIANTS = 1 + len(CROP_SHARES) * CROP_GRID**2


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix: `m @ x @ m.T` is the 2-D DCT of x."""
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


_DCT = _dct_matrix(HASH_SIDE)
_BIT_WEIGHTS = np.uint64(1) << np.arange(HASH_LOW * HASH_LOW, dtype=np.uint64)


def phash(image: Image.Image) -> int:
    """The 64-bit perceptual hash of an image."""
    grey = image.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS)
    low = (_DCT @ np.asarray(grey, dtype=np.float64) @ _DCT.T)[:HASH_LOW, :HASH_LOW].ravel()
    bits = low > np.median(low)
    return int(np.sum(_BIT_WEIGHTS[bits], dtype=np.uint64))


def crop_boxes(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The whole picture, then the CROP_SHARES crops on a CROP_GRID x CROP_GRID grid of
    positions: a crop of the picture lies close to one of them (a shift of a few %)."""
    boxes = [(0, 0, width, height)]
    for share in CROP_SHARES:
        w, h = max(1, round(width * share)), max(1, round(height * share))
        for gy in range(CROP_GRID):
            for gx in range(CROP_GRID):
                x = round((width - w) * gx / (CROP_GRID - 1))
                y = round((height - h) * gy / (CROP_GRID - 1))
                boxes.append((x, y, x + w, y + h))
    return boxes


def picture_hashes(image: Image.Image) -> np.ndarray:
    """(VARIANTS,) uint64: the pHash of the whole picture (first), then of its grid crops."""
    grey = image.convert("L")
    return np.array([phash(grey.crop(b)) for b in crop_boxes(*grey.size)], dtype=np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between 64-bit hashes (broadcast)."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def distances(hashes: np.ndarray, rows: slice) -> np.ndarray:
    """(rows, n) bits between pictures: the whole of one against the whole or a grid crop
    of the other, the closest either way (a crop matches the crop of its original)."""
    whole = hashes[:, 0]
    one_way = hamming(whole[rows, None, None], hashes[None, :, :]).min(axis=2)
    other_way = hamming(hashes[rows, None, :], whole[None, :, None]).min(axis=2)
    return np.minimum(one_way, other_way)


def close_pairs(hashes: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) for i < j at most `threshold` bits apart (`distances`); compared
    in chunks of rows, so memory stays PAIR_CHUNK x n x VARIANTS."""
    hashes = np.asarray(hashes, dtype=np.uint64).reshape(len(hashes), -1)
    pairs = []
    for start in range(0, len(hashes), PAIR_CHUNK):
        block = distances(hashes, slice(start, start + PAIR_CHUNK))
        rows, cols = np.nonzero(block <= threshold)
        rows = rows + start
        keep = rows < cols
        for i, j in zip(rows[keep].tolist(), cols[keep].tolist(), strict=True):
            pairs.append((i, j, int(block[i - start, j])))
    return pairs


def connected_groups(n: int, pairs: Iterable[tuple[int, int, int]]) -> list[list[int]]:
    """The connected components of two or more members (union-find), each sorted."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])


def hash_files(
    paths: Sequence[Path], on_error: Callable[[Path, str], None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(hashes uint64, readable bool) of each file; an unreadable one is reported, not fatal."""
    hashes = np.zeros((len(paths), VARIANTS), dtype=np.uint64)
    readable = np.zeros(len(paths), dtype=bool)
    for n, path in enumerate(paths):
        try:
            hashes[n] = picture_hashes(load_image(path, HASH_LIMITS))
            readable[n] = True
        except ImageLoadError as exc:
            if on_error is not None:
                on_error(path, exc.reason)
    return hashes, readable


@dataclass(frozen=True)
class DuplicateFile:
    id: int
    path: str
    width: int
    height: int
    size: int  # bytes
    distance: int  # bits from the kept file's hash (0 for the kept file)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["bytes"] = data.pop("size")
        return data


@dataclass(frozen=True)
class DuplicateGroup:
    keep: DuplicateFile
    others: list[DuplicateFile]

    @property
    def files(self) -> list[DuplicateFile]:
        return [self.keep, *self.others]

    def to_json(self) -> dict[str, Any]:
        return {"keep": self.keep.to_json(), "others": [f.to_json() for f in self.others]}


@dataclass(frozen=True)
class DuplicateReport:
    threshold: int
    compared: int  # files hashed
    groups: list[DuplicateGroup]
    unreadable: list[tuple[str, str]]  # (path, reason): not compared

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "compared": self.compared,
            "groups": [g.to_json() for g in self.groups],
            "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable],
        }


def keep_order(width: int, height: int, size: int, path: str) -> tuple[int, int, str]:
    """Sort key: the file to keep first (most pixels, then most bytes, then by path)."""
    return (-width * height, -size, path)


def check_threshold(threshold: int) -> int:
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise LookalikeError(
            f"--threshold must be between 0 and {MAX_THRESHOLD} bits (of 64), got {threshold}"
        )
    return threshold


def find_duplicates(
    collection: Collection | Path, threshold: int = DEFAULT_THRESHOLD
) -> DuplicateReport:
    """The near-duplicate groups among the indexed files of a collection (read only)."""
    check_threshold(threshold)
    coll = collection if isinstance(collection, Collection) else Collection.open(collection)
    gen = coll.require_generation()
    records = coll.catalog.get_many(gen.ids.tolist())
    recs = sorted(records.values(), key=lambda r: r.path)
    unreadable: list[tuple[str, str]] = []
    rel = {coll.root / r.path: r.path for r in recs}
    hashes, readable = hash_files(
        [coll.root / r.path for r in recs], lambda p, why: unreadable.append((rel[p], why))
    )
    kept = [r for r, ok in zip(recs, readable, strict=True) if ok]
    hashes = hashes[readable]
    groups = []
    for members in connected_groups(len(kept), close_pairs(hashes, threshold)):
        order = sorted(
            members,
            key=lambda i: keep_order(
                kept[i].width or 0, kept[i].height or 0, kept[i].size, kept[i].path
            ),
        )
        files = [
            DuplicateFile(
                int(kept[i].id),  # type: ignore[arg-type]
                kept[i].path,
                kept[i].width or 0,
                kept[i].height or 0,
                kept[i].size,
                int(distances(hashes, slice(i, i + 1))[0, order[0]]),
            )
            for i in order
        ]
        groups.append(DuplicateGroup(files[0], files[1:]))
    groups.sort(key=lambda g: g.keep.path)
    return DuplicateReport(threshold, len(kept), groups, unreadable)

"""Every face a searchable item: the second and later faces of a picture with several.

A picture's first face (best detector score, then largest) gives its head view and its
row in the generation, as before. Each further face becomes a *face item*: its own head
blocks, the picture's whole-view blocks, fused like any row, tied to the picture by its
catalog id. A query scores a picture by its best face, so a group picture is found
through any of its characters, and shown once, with the face that matched boxed.

Face items are computed when a generation is committed, from the faces the catalog
already holds (a second decode of the pictures with several faces only:
indexing/faces.py), and carried over to later generations while the picture and the
block keys stay the same. This module holds them and scores with them; it reads no image,
so opening a collection loads no detector.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lookalike.config import split_key
from lookalike.fuse.fitting import stored_precision
from lookalike.store.codec import BlockBasis, CodedBlock

if TYPE_CHECKING:
    from lookalike.fuse.fuser import Fuser
    from lookalike.store.catalog import FileRecord

# Faces per picture that become searchable: a crowd scene costs at most 7 more head passes.
MAX_FACES = 8


@dataclass
class FaceItems:
    """The face items of a generation, one row each."""

    owners: np.ndarray  # int64: catalog id of the picture each face is in
    numbers: np.ndarray  # int16: the face's place in the picture's faces (1 = second best)
    boxes: np.ndarray  # int32 (n, 4): its head box in the picture
    blocks: dict[str, np.ndarray | CodedBlock]  # the head-view blocks, (n, dim) each

    @classmethod
    def empty(cls, keys: Sequence[str]) -> FaceItems:
        return cls(
            np.zeros(0, np.int64),
            np.zeros(0, np.int16),
            np.zeros((0, 4), np.int32),
            {key: np.zeros((0, 0), np.float32) for key in keys},
        )

    def __len__(self) -> int:
        return len(self.owners)

    def take(self, rows: np.ndarray) -> FaceItems:
        return FaceItems(
            self.owners[rows],
            self.numbers[rows],
            self.boxes[rows],
            {key: np.asarray(block[rows], np.float32) for key, block in self.blocks.items()},
        )

    def rows_of(self, owner: int) -> np.ndarray:
        return np.flatnonzero(self.owners == owner)


def head_keys(block_keys: Sequence[str]) -> list[str]:
    """The block keys a face item has of its own (the others are its picture's)."""
    return [key for key in block_keys if split_key(key)[0] == "head"]


def extra_faces(faces: Sequence[Mapping[str, object]]) -> list[tuple[int, tuple[int, ...]]]:
    """(number, face box) of each face after the first one, up to MAX_FACES in all."""
    return [(n, tuple(faces[n]["box"])) for n in range(1, min(len(faces), MAX_FACES))]  # type: ignore[arg-type]


def concat(parts: Sequence[FaceItems], keys: Sequence[str]) -> FaceItems:
    parts = [p for p in parts if len(p)]
    if not parts:
        return FaceItems.empty(keys)
    return FaceItems(
        np.concatenate([p.owners for p in parts]),
        np.concatenate([p.numbers for p in parts]),
        np.concatenate([p.boxes for p in parts]),
        {
            key: np.concatenate([np.asarray(p.blocks[key], np.float32) for p in parts])
            for key in keys
        },
    )


def coded_on(items: FaceItems, bases: Mapping[str, BlockBasis]) -> FaceItems:
    """`items` with each head block the generation codes (`bases`) coded on the same basis
    as its picture rows (codec.py): what the commit stores, 0.5 KB a face instead of 16 KB
    of float16, and what their fused vectors are made from."""
    if not len(items):
        return items
    blocks: dict[str, np.ndarray | CodedBlock] = {}
    for key, block in items.blocks.items():
        basis = bases.get(key)
        rows = np.asarray(block, np.float32)
        blocks[key] = rows if basis is None else CodedBlock(basis, *basis.encode(rows))
    return FaceItems(items.owners, items.numbers, items.boxes, blocks)


def carried_and_computed(
    previous: FaceItems | None,
    records: Sequence[FileRecord],
    fresh: set[int],
    compute: Callable[[Sequence[FileRecord]], FaceItems],
    keys: Sequence[str],
) -> FaceItems:
    """The face items of `records`: the previous generation's for pictures that did not
    change (not in `fresh`, same block keys), the others computed."""
    wanted = {r.id: r for r in records if len(r.faces or []) > 1}
    keep = np.zeros(0, np.int64)
    if previous is not None and all(key in previous.blocks for key in keys):
        keep = np.flatnonzero(
            [int(o) in wanted and int(o) not in fresh for o in previous.owners.tolist()]
        )
    carried = previous.take(keep) if previous is not None and len(keep) else None
    have = set(carried.owners.tolist()) if carried is not None else set()
    computed = compute([rec for i, rec in wanted.items() if i not in have])
    parts = [carried, computed] if carried is not None else [computed]
    return concat(
        [FaceItems(p.owners, p.numbers, p.boxes, {k: p.blocks[k] for k in keys}) for p in parts],
        keys,
    )


def item_blocks(
    items: FaceItems, rows: np.ndarray, owner_blocks: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The blocks of face items `rows` as a fuser reads them: the face's own head blocks and
    its picture's other blocks (`owner_blocks`: one row per face item asked for)."""
    out = {key: np.asarray(block, np.float32) for key, block in owner_blocks.items()}
    for key in out:
        if key in items.blocks:
            out[key] = np.asarray(items.blocks[key][rows], np.float32)
    return out


def fuse_items(
    fuser: Fuser, items: FaceItems, blocks: Mapping[str, np.ndarray], row_of: Mapping[int, int]
) -> np.ndarray:
    """The fused vector of every face item (`blocks`: the generation's rows, `row_of`:
    catalog id -> row). No query expansion: a face item is never anyone's neighbour."""
    if not len(items):
        return np.zeros((0, fuser.output_dim), np.float32)
    owner_rows = np.array([row_of[int(o)] for o in items.owners], np.int64)
    owner_blocks = {key: np.asarray(block[owner_rows], np.float32) for key, block in blocks.items()}
    all_rows = np.arange(len(items))
    return stored_precision(fuser, fuser.transform(item_blocks(items, all_rows, owner_blocks)))


def best_per_owner(scores: np.ndarray, owners: np.ndarray) -> dict[int, tuple[float, int]]:
    """owner id -> (its best face item's score, that item's row)."""
    best: dict[int, tuple[float, int]] = {}
    for row in np.argsort(-scores, kind="stable").tolist():
        best.setdefault(int(owners[row]), (float(scores[row]), row))
    return best


def with_face_scores(
    sims: np.ndarray, face_sims: np.ndarray, owner_columns: np.ndarray
) -> np.ndarray:
    """Picture-by-picture similarities `sims` (queries x pictures) raised, in place, to the
    best face item of each picture (`face_sims`: queries x face items)."""
    for item, column in enumerate(owner_columns.tolist()):
        np.maximum(sims[:, column], face_sims[:, item], out=sims[:, column])
    return sims

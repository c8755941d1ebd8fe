"""The face items of the pictures with several faces, decoded and embedded at commit."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lookalike.detect import crop
from lookalike.embed.extractor import FeatureExtractor
from lookalike.embed.faces import face_head_box
from lookalike.errors import ImageLoadError
from lookalike.load.images import DEFAULT_LIMITS, LoadLimits, load_image
from lookalike.store.catalog import FileRecord
from lookalike.store.faces import FaceItems, concat, extra_faces, head_keys

# Pictures decoded and embedded together when face items are computed.
BATCH = 16


def compute_face_items(
    records: Sequence[FileRecord],
    root: Path,
    extractor: FeatureExtractor,
    limits: LoadLimits = DEFAULT_LIMITS,
    progress: bool = True,
) -> FaceItems:
    """The face items of `records` (those with several faces), decoded and embedded now.

    A picture that can no longer be decoded keeps its first face only (it was indexed; a
    later run that finds it broken marks it so).
    """
    keys = head_keys(extractor.config.block_keys)
    todo = [r for r in records if len(r.faces or []) > 1]
    parts: list[FaceItems] = []
    bar = tqdm(total=len(todo), desc="faces", unit="img", disable=not progress or not todo)
    for start in range(0, len(todo), BATCH):
        owners, numbers, boxes, views = [], [], [], []
        for rec in todo[start : start + BATCH]:
            try:
                image = load_image(root / rec.path, limits)
            except ImageLoadError:
                continue
            for number, face in extra_faces(rec.faces):
                box = face_head_box(face, image.size, extractor.config.head_margin)
                owners.append(rec.id)
                numbers.append(number)
                boxes.append(box)
                views.append({"whole": image, "head": crop(image, box)})
        if views:
            parts.append(
                FaceItems(
                    np.array(owners, np.int64),
                    np.array(numbers, np.int16),
                    np.array(boxes, np.int32).reshape(-1, 4),
                    extractor.compute(views, keys),
                )
            )
        bar.update(min(BATCH, len(todo) - start))
    bar.close()
    return concat(parts, keys)

"""Another face of a picture as its head view: `query --face N` and the web page's click."""

from __future__ import annotations

from collections.abc import Sequence

from lookalike.detect import crop, head_box
from lookalike.detect.base import Face
from lookalike.embed.extractor import Analysis


def face_head_box(
    face_box: Sequence[int], image_size: tuple[int, int], margin: float
) -> tuple[int, int, int, int]:
    """The head box of one face, grown as the picture's own head box is (`head_box`)."""
    box, _ = head_box([Face(tuple(int(v) for v in face_box), 1.0)], image_size, margin)  # type: ignore[arg-type]
    return box


def choose_face(analysis: Analysis, number: int, margin: float) -> None:
    """Make face `number` (0 = the best one) the head view of an analysed picture, in
    place; raises ValueError naming how many faces the picture has."""
    if number == 0:
        return
    found = len(analysis.faces)
    if not 0 <= number < found:
        raise ValueError(f"has {found} face{'s' if found != 1 else ''} (faces count from 0)")
    whole = analysis.views["whole"]
    analysis.head_box = face_head_box(analysis.faces[number]["box"], whole.size, margin)  # type: ignore[arg-type]
    analysis.views["head"] = crop(whole, analysis.head_box)
    analysis.fallback = False

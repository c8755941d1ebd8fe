"""The contact sheet of a query's answer (`lookalike query --sheet`)."""

from __future__ import annotations

from pathlib import Path

from lookalike.render.sheets import SheetItem, contact_sheet
from lookalike.search.searcher import QueryResult, Searcher


def query_sheet(searcher: Searcher, result: QueryResult, out: Path) -> list[tuple[Path, str]]:
    """Draw `result` into `out`, the query first; the images it could not read (moved,
    deleted), each with why: grey tiles in the sheet.

    A picture of the collection is named by its path inside the indexed folder (whether it
    was asked by id, by that path or by a path to the file), any other file as it was given.
    """
    root = searcher.collection.root
    name = result.query_path
    query_file = Path(name) if result.query_id is None else root / name
    head = SheetItem(query_file, name, None, result.query_head_box, result.query_fallback)
    tiles = [
        SheetItem(root / m.path, m.path, m.score, m.head_box, m.fallback) for m in result.matches
    ]
    return contact_sheet(head, tiles, out).unreadable

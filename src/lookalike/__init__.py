"""lookalike: find images that look alike in your own collection.

Importing the package is cheap: torch, OpenCV and the index libraries load only
when a backbone, detector or index is created.
"""

from __future__ import annotations

from lookalike.version import __version__

__all__ = [
    "Match",
    "Searcher",
    "__version__",
    "get_preset",
    "index_folder",
    "list_presets",
]


def __getattr__(name: str) -> object:
    # Lazy public API: `from lookalike import index_folder` without importing torch early.
    if name in ("get_preset", "list_presets"):
        from lookalike import config

        return getattr(config, name)
    if name == "index_folder":
        from lookalike.indexing.indexer import index_folder

        return index_folder
    if name in ("Searcher", "Match"):
        from lookalike.search import searcher as search

        return getattr(search, name)
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")

"""Engines that run the decode, detect and embed stages of `lookalike index` elsewhere.

The default (no engine) runs them in the indexing process. `create_engine("ray", ...)`
runs them as a Ray Data pipeline (optional extra `ray`); the indexing process still
plans the run, stages the vectors and commits, so the collection format is the same.
"""

from __future__ import annotations

from lookalike.errors import LookalikeError
from lookalike.indexing.indexer import Engine

ENGINES = ("local", "ray")


def create_engine(name: str, address: str | None = None, workers: int = 2) -> Engine | None:
    """The engine called `name`; None for "local" (the Indexer's own thread pool)."""
    if name == "local":
        if address:
            raise LookalikeError("--ray-address needs --engine ray")
        return None
    if name == "ray":
        from lookalike.engines.ray_engine import RayEngine

        return RayEngine(address=address, workers=workers)
    raise LookalikeError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")

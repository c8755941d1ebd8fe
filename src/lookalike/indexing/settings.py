"""The settings an index run uses: what the user asked for, over what the collection keeps.

`lookalike index` and `index_folder()` name changes only (a preset, a detector, a trained
model ...); everything not named stays as the collection stores it, or as the `default`
preset has it for a new collection. The decisions live here, not in the command line, so
the library and the command give the same settings for the same request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike.config import IndexConfig, PipelineConfig, get_preset
from lookalike.errors import LookalikeError
from lookalike.store.collection import Collection


@dataclass(frozen=True)
class Requested:
    """What an index run was asked to change (None: keep it)."""

    preset: str | None = None
    detector: str | None = None
    detector_sizes: Sequence[int] | None = None  # the animeface detector's scan sizes
    detector_angles: Sequence[int] | None = None  # its turned copies ([]: none)
    detector_upper: float | None = None  # the top share of its larger copies it searches
    backbone: str | None = None
    fallback: str | None = None
    index_backend: str | None = None
    trees: int | None = None  # Annoy's; alone, they choose Annoy
    search_k: int | None = None
    model_dir: Path | None = None  # a trained model: the v5 preset unless another is named
    store: str | None = None  # milvus:PATH or milvus://HOST:PORT


def settings_for(collection: Path, requested: Requested) -> PipelineConfig:
    """The settings of an index run into `collection` that asks for `requested`."""
    stored = Collection.open(collection).config if Collection.exists(collection) else None
    config = get_preset(requested.preset) if requested.preset else stored or get_preset("default")
    changes: dict[str, Any] = {
        "detector": requested.detector,
        "backbone": requested.backbone,
        "fallback": requested.fallback,
    }
    if requested.detector and requested.detector != config.detector:
        changes["detector_options"] = {}  # another detector's settings do not carry over
    animeface = _animeface_options(requested)
    if animeface:
        if (requested.detector or config.detector) != "animeface":
            named = ", ".join(f"--detector-{name}" for name in animeface)
            raise LookalikeError(f"{named}: settings of the animeface detector")
        kept = changes.get("detector_options", config.detector_options)
        changes["detector_options"] = {**kept, **animeface}
    changes["index"] = _index_settings(config.index, requested, Path(collection))
    if requested.model_dir:
        # The model's preset on the stored detector and backbone: an indexed collection
        # switches to a model without repeating its other options.
        config = stored or config
        preset = get_preset(requested.preset or "v5")
        changes.update(preset=preset.preset, blocks=preset.blocks, fusion=preset.fusion)
        changes["model_dir"] = str(Path(requested.model_dir).resolve())
    return config.with_options(**changes)


def _animeface_options(requested: Requested) -> dict[str, Any]:
    """The animeface detector's options asked for, checked as the detector checks them."""
    from lookalike.detect.animeface_detector import check_sizes, check_upper

    options: dict[str, Any] = {}
    if requested.detector_sizes:
        options["sizes"] = list(check_sizes(requested.detector_sizes))
    if requested.detector_angles is not None:
        options["angles"] = [int(a) for a in requested.detector_angles]
    if requested.detector_upper is not None:
        options["upper"] = check_upper(requested.detector_upper, "--detector-upper")
    return options


def _index_settings(
    index: IndexConfig, requested: Requested, collection: Path
) -> IndexConfig | None:
    """The index asked for (None: the config's own)."""
    if requested.store:
        from lookalike.index.milvus_index import store_params

        return IndexConfig("milvus", store_params(requested.store, collection))
    trees_knobs = requested.trees is not None or requested.search_k is not None
    if not (requested.index_backend or trees_knobs):
        return None
    # The tree knobs alone choose Annoy (the default backend, auto, has no trees).
    backend = requested.index_backend or ("annoy" if trees_knobs else None) or index.backend
    params = dict(index.params) if backend == index.backend else {}
    if requested.trees is not None:
        params["n_trees"] = requested.trees
    if requested.search_k is not None:
        params["search_k"] = requested.search_k
    return IndexConfig(backend, params)

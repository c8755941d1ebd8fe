"""Fit, reduce, index: from a collection's feature blocks to its final vectors and their
index, the one way every writer (the index run, a settings switch, `train`) and `evaluate`
make them, so that the vectors they store and score are the same."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lookalike.config import PipelineConfig
from lookalike.fuse.expansion import expand_collection
from lookalike.fuse.fuser import Fuser
from lookalike.fuse.spanned import Basis
from lookalike.index import VectorIndex, create_index
from lookalike.vectors import as_stored


def stored_precision(fuser: Fuser, fused: np.ndarray) -> np.ndarray:
    """`fused` (made by `fuser`) as the collection stores it: a reduced (dense) layout's
    rounded to float16 in place (vectors.as_stored), a wide one's left float32. The wide
    layouts are the article's references, whose disk issue 16 does not count, and there the
    web slider's score at its default weight is the fused cosine itself, to float32."""
    return as_stored(fused) if fuser.reduces else fused


def new_index(config: PipelineConfig) -> VectorIndex:
    """The preset's index backend with its parameters, empty."""
    return create_index(config.index.backend, **config.index.params)


def fit_fused(
    config: PipelineConfig,
    blocks: dict[str, np.ndarray],
    bases: Mapping[str, Basis] | None = None,
) -> tuple[Fuser, np.ndarray]:
    """The preset's fuser fitted on `blocks` without labels, and the collection's final
    vectors: fused, reduced, expanded (query expansion sees the whole collection), then
    rounded to what the collection stores (`stored_precision`). `bases`: those of the coded
    blocks among `blocks`, the fuser's storage (Fuser.fit)."""
    fuser = Fuser(config.blocks, config.fusion).fit(blocks, bases)
    return fuser, stored_precision(fuser, expand_collection(fuser.transform(blocks), config))


def fit_fused_index(
    config: PipelineConfig,
    blocks: dict[str, np.ndarray],
    bases: Mapping[str, Basis] | None = None,
) -> tuple[Fuser, np.ndarray, VectorIndex]:
    """`fit_fused`, and an index built on the vectors."""
    fuser, fused = fit_fused(config, blocks, bases)
    index = new_index(config)
    index.build(fused)
    return fuser, fused, index


def extend_fused_index(
    fuser: Fuser,
    fused: np.ndarray,
    index: VectorIndex,
    new_blocks: dict[str, np.ndarray],
) -> tuple[Fuser, np.ndarray, VectorIndex]:
    """A collection's kept fuser, its stored vectors and its index, grown by the rows of
    `new_blocks`: only those are fused and added (no refit, no rebuild). Only for presets
    without query expansion, which would move the stored vectors' neighbours too."""
    added = stored_precision(fuser, fuser.transform(new_blocks))
    index.extend(added)
    return fuser, np.concatenate([np.asarray(fused, np.float32), added]), index
